//! Every CI front end comes from the settings table: the committed `step.yaml`, `action.yml`,
//! `templates/ecr-step.yml` and `docs/plugin.md` are exactly what `settings::frontends` generates; the
//! Codefresh schema accepts every example and requires per mode what the binary requires (checked by
//! Python's jsonschema); the Codefresh template renders valid YAML that passes every value byte for byte,
//! quotes, newlines and `$` included; the action and the component name every setting and output.

use ecr_step::outputs::OUTPUTS;
use ecr_step::settings::{SETTINGS, frontends};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;

fn file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

#[test]
fn committed_front_ends_are_what_the_table_generates() {
    for (path, generated) in [
        ("step.yaml", frontends::step_yaml()),
        ("action.yml", frontends::action_yml()),
        ("templates/ecr-step.yml", frontends::gitlab_component()),
        ("docs/plugin.md", frontends::plugin_page()),
    ] {
        assert!(
            file(path) == generated,
            "{path} differs from what the settings table generates: run `cargo run --example frontends`"
        );
    }
    assert!(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/icon.svg")).is_file());
    let step = yaml(&file("step.yaml"));
    assert_eq!(
        step["metadata"]["icon"]["url"],
        "https://raw.githubusercontent.com/ecr-step/ecr-step/main/icon.svg"
    );
    let template = step["spec"]["stepsTemplate"].as_str().unwrap();
    let image = format!("image: {}", frontends::IMAGE);
    assert!(template.contains(&image) && frontends::IMAGE.contains('/') && frontends::IMAGE.contains('.'));
}

/// Validate `documents` against the step.yaml arguments schema with Python's jsonschema: the error count of each.
fn jsonschema_errors(documents: &[Value]) -> Vec<usize> {
    let schema = yaml(&file("step.yaml"))["spec"]["arguments"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.testbed/venv/bin/python"))
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema = json.loads(sys.argv[1])\n\
             jsonschema.Draft7Validator.check_schema(schema)\n\
             v = jsonschema.Draft7Validator(schema)\n\
             print(json.dumps([len(list(v.iter_errors(d))) for d in json.loads(sys.argv[2])]))",
            &schema,
            &Value::Array(documents.to_vec()).to_string(),
        ])
        .output()
        .expect("python from scripts/install-testbed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_codefresh_schema_takes_every_example_and_templated_values_and_requires_per_mode() {
    let step = yaml(&file("step.yaml"));
    let examples: Vec<Value> = step["metadata"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            e["workflow"]
                .as_object()
                .unwrap()
                .values()
                .map(|s| s["arguments"].clone())
        })
        .collect();
    let modes: BTreeSet<&str> = examples.iter().map(|e| e["mode"].as_str().unwrap_or("push")).collect();
    assert_eq!(
        modes,
        BTreeSet::from(["push", "promote", "login", "check"]),
        "an example per mode"
    );
    let errors = jsonschema_errors(&examples);
    assert!(errors.iter().all(|e| *e == 0), "examples refused: {errors:?}");
    // (document, valid): what the binary requires in each mode, and templated values anywhere.
    let cases = [
        (json!({}), false),
        (json!({"source": "app:1", "repo": "team/app"}), true),
        (json!({"mode": "push", "repo": "team/app"}), false),
        (json!({"mode": "promote", "repo": "team/app"}), false),
        (json!({"mode": "promote", "source": "app:1", "repo": "app"}), true),
        (json!({"mode": "login"}), true),
        (json!({"mode": "login", "registry": "${{REGISTRY}}"}), true),
        (json!({"mode": "check"}), false),
        (json!({"mode": "check", "repo": "${{REPO}}"}), true),
        (
            json!({"source": "a", "repo": "b", "access_key": "${{AWS_ACCESS_KEY_ID}}", "region": "${{REGION}}"}),
            true,
        ),
        (json!({"source": "a", "repo": "b", "unknown": "x"}), false),
    ];
    let documents: Vec<Value> = cases.iter().map(|(d, _)| d.clone()).collect();
    for ((document, valid), errors) in cases.iter().zip(jsonschema_errors(&documents)) {
        assert_eq!(errors == 0, *valid, "{document}: {errors} error(s)");
    }
}

/// The stepsTemplate rendered as Codefresh renders it: Go's text/template with sprig and the step-type's
/// delimiters (`scripts/codefresh-render`, built once with Debian's Go and sprig), `.Arguments` holding
/// `arguments`.
fn render(template: &str, arguments: &[(&str, &str)]) -> String {
    static RENDERER: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> = std::sync::OnceLock::new();
    let (dir, renderer) = RENDERER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("render");
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/codefresh-render/main.go");
        let out = std::process::Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(&source)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", dir.path().join("cache"))
            .output()
            .expect("go (Debian golang-go): run scripts/install-testbed");
        assert!(
            out.status.success(),
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, binary)
    });
    let file = dir.path().join(format!("template-{}", std::process::id()));
    std::fs::write(&file, template).unwrap();
    let json: serde_json::Map<String, serde_json::Value> = arguments
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let mut child = std::process::Command::new(renderer)
        .arg(&file)
        .args(["[[", "]]"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        serde_json::Value::Object(json).to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_steps_template_renders_valid_yaml_that_passes_every_value_byte_for_byte() {
    let template = yaml(&file("step.yaml"))["spec"]["stepsTemplate"]
        .as_str()
        .unwrap()
        .to_string();
    let hostile = [
        "don't stop",
        "say \"hi\"",
        "line one\nline two",
        "$HOME ${{CF_BRANCH}} $(id)",
        "back\\slash: # not a comment",
        "tab\there",
        "[not, a, list]",
        "{\"rules\":[{\"description\":\"don't keep untagged\"}]}",
        "é ü ✓",
        "bell\u{7} del\u{7f} esc\u{1b}",
        "",
        "- dash",
    ];
    let mut cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("source", "app:1"), ("repo", "team/app")],
        vec![
            ("mode", "promote"),
            ("source", "central/app:1"),
            ("repo", "app"),
            ("tags", "1,stable"),
        ],
        vec![
            ("mode", "login"),
            ("registry", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
        ],
        vec![("mode", "check"), ("repo", "team/app"), ("dry_run", "false")],
    ];
    for value in hostile {
        cases.push(vec![("lifecycle_policy", value), ("repo", "a'b")]);
    }
    for arguments in cases {
        let rendered = render(&template, &arguments);
        let parsed = yaml(&rendered);
        let environment: Vec<&str> = parsed["push"]["environment"]
            .as_array()
            .unwrap_or_else(|| panic!("no environment list:\n{rendered}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut expected: Vec<String> = arguments
            .iter()
            .map(|(k, v)| format!("PLUGIN_{}={v}", k.to_ascii_uppercase()))
            .collect();
        expected.sort();
        assert_eq!(environment, expected, "rendered:\n{rendered}");
        assert_eq!(parsed["push"]["image"], frontends::IMAGE);
    }
}

#[test]
fn the_action_and_the_component_carry_every_setting_and_output() {
    let names: BTreeSet<String> = SETTINGS.iter().map(|s| s.name.to_string()).collect();
    let action = yaml(&file("action.yml"));
    let inputs: BTreeSet<String> = action["inputs"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(inputs, names);
    let outputs: BTreeSet<String> = action["outputs"].as_object().unwrap().keys().cloned().collect();
    let declared: BTreeSet<String> = OUTPUTS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(outputs, declared);
    assert_eq!(action["runs"]["using"], "docker");
    assert_eq!(action["runs"]["image"], format!("docker://{}", frontends::IMAGE));
    for s in SETTINGS {
        assert_eq!(
            action["runs"]["env"][s.env()],
            format!("${{{{ inputs.{} }}}}", s.name),
            "{}",
            s.name
        );
        assert!(
            action["inputs"][s.name]["description"]
                .as_str()
                .unwrap()
                .contains(&s.env())
        );
    }
    let component = file("templates/ecr-step.yml");
    let (spec, job) = component.split_once("\n---\n").expect("spec, then the job");
    let spec = yaml(spec);
    let job = yaml(job);
    let mut inputs: BTreeSet<String> = spec["spec"]["inputs"].as_object().unwrap().keys().cloned().collect();
    assert!(inputs.remove("stage"));
    assert_eq!(inputs, names);
    // GitLab's schema takes an input's description of at most 1024 characters.
    for (name, input) in spec["spec"]["inputs"].as_object().unwrap() {
        let length = input["description"].as_str().unwrap_or("").chars().count();
        assert!(
            length <= 1024,
            "the component's input {name} has a description of {length} characters"
        );
    }
    for s in SETTINGS {
        assert_eq!(
            job["ecr-step"]["variables"][s.env()],
            format!("$[[ inputs.{} ]]", s.name)
        );
    }
    // GitLab runs the job's script through a shell in its image: the variant with one, named by its stage.
    let variant = format!("{}-{}", frontends::IMAGE, frontends::SHELL_STAGE);
    assert_eq!(job["ecr-step"]["image"]["name"], variant.as_str());
    let dockerfile = file("Dockerfile");
    assert!(
        dockerfile.contains(&format!("FROM scratch AS {}\n", frontends::SHELL_STAGE)),
        "the Dockerfile has no stage {}",
        frontends::SHELL_STAGE
    );
    let last = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last.starts_with("scratch\n"),
        "the default (last) stage must be the image without a shell"
    );
    let page = file("docs/plugin.md");
    for s in SETTINGS {
        assert!(
            page.contains(&format!("`{}`", s.env())),
            "{} missing from docs/plugin.md",
            s.env()
        );
    }
}
