//! One source of truth: the settings the program accepts (`--help`, generated from `SETTINGS`) are exactly
//! those the README reference and `step.yaml` document, and step.yaml's returns are the outputs the step writes.

mod testbed;

use std::collections::BTreeSet;

fn plugin_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("PLUGIN_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        names.insert(name);
    }
    names
}

fn accepted() -> BTreeSet<String> {
    let out = std::process::Command::new(testbed::Step::binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("PLUGIN_"))
        .map(|rest| format!("PLUGIN_{}", rest.split_whitespace().next().unwrap()))
        .collect()
}

fn step_yaml() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/step.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("step.yaml is YAML")
}

fn json_field(yaml: &serde_json::Value, field: &str) -> serde_json::Value {
    serde_json::from_str(yaml["spec"][field].as_str().unwrap_or_else(|| panic!("spec.{field}")))
        .unwrap_or_else(|e| panic!("spec.{field} is not JSON: {e}"))
}

#[test]
fn the_readme_reference_lists_exactly_the_accepted_settings() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: String = readme
        .lines()
        .filter(|l| l.starts_with("| `PLUGIN_"))
        .map(|l| l.split('|').nth(1).unwrap())
        .collect();
    assert_eq!(plugin_names(&rows), accepted());
}

#[test]
fn step_yaml_arguments_are_exactly_the_accepted_settings() {
    let yaml = step_yaml();
    assert_eq!(yaml["kind"], "step-type");
    assert_eq!(yaml["version"], "1.0");
    for field in [
        "name",
        "version",
        "title",
        "description",
        "icon",
        "categories",
        "maintainers",
        "sources",
        "examples",
    ] {
        assert!(!yaml["metadata"][field].is_null(), "metadata.{field} missing");
    }
    let schema = json_field(&yaml, "arguments");
    assert_eq!(schema["additionalProperties"], false);
    let properties = schema["properties"].as_object().unwrap();
    let documented: BTreeSet<String> = properties
        .keys()
        .map(|k| format!("PLUGIN_{}", k.to_ascii_uppercase()))
        .collect();
    assert_eq!(documented, accepted());
    for (name, property) in properties {
        assert!(property["description"].is_string(), "{name} has no description");
        assert!(property["type"].is_string(), "{name} has no type");
    }
    // Every example uses only arguments the schema knows.
    for example in yaml["metadata"]["examples"].as_array().unwrap() {
        for step in example["workflow"].as_object().unwrap().values() {
            for argument in step["arguments"].as_object().unwrap().keys() {
                assert!(
                    properties.contains_key(argument),
                    "example argument {argument} is not in the schema"
                );
            }
        }
    }
    let template = yaml["spec"]["stepsTemplate"].as_str().unwrap();
    assert!(
        template.contains(r#"[[ printf "%q" (printf "PLUGIN_%s=%v" (upper $key) $val) ]]"#),
        "{template}"
    );
    assert_eq!(yaml["spec"]["delimiters"]["left"], "[[");
}

#[test]
fn step_yaml_returns_are_the_outputs_the_step_writes() {
    let returns = json_field(&step_yaml(), "returns");
    let names: BTreeSet<&str> = returns["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let written: BTreeSet<&str> = ecr_step::outputs::OUTPUTS.iter().map(|(name, _)| *name).collect();
    assert!(written.contains("ECR_STEP_DIGEST") && written.contains("ECR_STEP_SKIPPED"));
    assert_eq!(names, written);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in written {
        assert!(readme.contains(name), "{name} is not documented in the README");
    }
}
