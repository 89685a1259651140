//! Every CI front end, generated from the settings table (and the outputs list): the Codefresh
//! `step.yaml`, the GitHub Action `action.yml`, the GitLab CI/CD component `templates/ecr-step.yml` and the
//! Drone/Woodpecker/Harness plugin page `docs/plugin.md`. `cargo run --example frontends` writes them;
//! `tests/frontends.rs` fails when a committed file differs from what this module generates.
//!
//! Values are never pasted into YAML unquoted: Codefresh renders each `PLUGIN_X=value` through Go's
//! `printf "%q"` (a double-quoted string whose escapes YAML reads the same), GitHub and GitLab pass inputs
//! through the environment. No argument carries a pattern or an enum, so a templated value such as
//! `${{AWS_ACCESS_KEY_ID}}` is accepted; the binary validates every value before any network call.

use super::table::{Mode, SETTINGS, Setting};
use crate::outputs::OUTPUTS;
use serde_json::{Value, json};

/// The image every front end runs: fully qualified, set from the crate version at release time.
pub const IMAGE: &str = concat!("ghcr.io/ecr-step/ecr-step:", env!("CARGO_PKG_VERSION"));
/// The Dockerfile stage of the image variant with a shell (a static busybox), tagged `<version>-<stage>`:
/// what CIs that run a job's script in the step's image need (GitLab's docker and Kubernetes executors).
pub const SHELL_STAGE: &str = "shell";

const GENERATED: &str = "Generated from src/settings/table.rs by `cargo run --example frontends`: do not edit by hand.";

/// A JSON string, which is also a YAML double-quoted scalar.
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

fn is_bool(s: &Setting) -> bool {
    s.value == "BOOL"
}

/// The default as a value a schema can hold, when the table's default is one (not a description).
fn literal_default(s: &Setting) -> Option<Value> {
    let d = s.default;
    if d.is_empty() || d.contains([' ', '<', '(']) {
        return None;
    }
    Some(match (is_bool(s), d.parse::<u64>()) {
        (true, _) => Value::Bool(d == "true"),
        (false, Ok(n)) if s.value == "SECONDS" => json!(n),
        _ => Value::String(d.to_string()),
    })
}

fn modes_text(s: &Setting) -> String {
    if s.modes.len() == Mode::ALL.len() {
        String::new()
    } else {
        let modes: Vec<String> = s.modes.iter().map(Mode::to_string).collect();
        format!(" Modes: {}.", modes.join(", "))
    }
}

fn description(s: &Setting) -> String {
    format!("{}{}", s.help, modes_text(s))
}

/// The Codefresh arguments schema: every setting, typed, without patterns; the settings each mode
/// requires through `if`/`then` on `mode` (no `mode` means push).
pub fn arguments_schema() -> Value {
    let mut properties = serde_json::Map::new();
    for s in SETTINGS {
        let kind = match (is_bool(s), s.value) {
            (true, _) => "boolean",
            (false, "SECONDS") => "integer",
            _ => "string",
        };
        let mut property = json!({"type": kind, "description": description(s)});
        if let Some(default) = literal_default(s) {
            property["default"] = default;
        }
        properties.insert(s.name.to_string(), property);
    }
    let required = |mode: Mode| -> Vec<&str> {
        SETTINGS
            .iter()
            .filter(|s| s.required_in.contains(&mode))
            .map(|s| s.name)
            .collect()
    };
    let mut all_of = vec![json!({
        "if": {"not": {"required": ["mode"]}},
        "then": {"required": required(Mode::Push)}
    })];
    for mode in Mode::ALL {
        all_of.push(json!({
            "if": {"required": ["mode"], "properties": {"mode": {"const": mode.to_string()}}},
            "then": {"required": required(*mode)}
        }));
    }
    json!({
        "definitions": {},
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": false,
        "patterns": [],
        "required": [],
        "allOf": all_of,
        "properties": properties,
    })
}

fn returns_schema() -> Value {
    let properties: serde_json::Map<String, Value> = OUTPUTS
        .iter()
        .map(|(name, help)| (name.to_string(), json!({"type": "string", "description": help})))
        .collect();
    json!({
        "definitions": {},
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": true,
        "patterns": [],
        "required": [],
        "properties": properties,
    })
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// One Codefresh example: a description and a step's arguments.
fn example(description: &str, step: &str, arguments: &[(&str, &str)]) -> String {
    let mut out = format!(
        "    - description: {description}\n      workflow:\n        {step}:\n          type: ecr-step/ecr-push\n          arguments:\n"
    );
    for (k, v) in arguments {
        out.push_str(&format!("            {k}: {}\n", quoted(v)));
    }
    out
}

/// The Codefresh step-type.
pub fn step_yaml() -> String {
    let mut out = format!("# {GENERATED}\nversion: '1.0'\nkind: step-type\nmetadata:\n");
    out.push_str(&format!(
        "  name: ecr-step/ecr-push\n  version: {}\n  isPublic: true\n  title: Push to Amazon ECR\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(
        "  description: >-\n    Push an image built in an earlier step to Amazon ECR, promote one already in a registry, write a\n    \
         docker login for later steps, or check the connection. Every tag is read back from the registry, so a\n    \
         green step means the image is there.\n",
    );
    out.push_str(
        "  sources:\n    - https://github.com/ecr-step/ecr-step\n  stage: incubating\n  official: false\n  \
         categories:\n    - registry\n    - deployment\n  maintainers:\n    - name: ecr-step maintainers\n  icon:\n    \
         type: svg\n    url: https://raw.githubusercontent.com/ecr-step/ecr-step/main/icon.svg\n    background: '#f4f4f4'\n  \
         examples:\n",
    );
    out.push_str(&example(
        "push",
        "push_to_ecr",
        &[
            ("source", "${{build_image}}"),
            ("repo", "team/app"),
            ("tags", "${{CF_SHORT_REVISION}},latest"),
            ("registry", "123456789012.dkr.ecr.eu-west-2.amazonaws.com"),
            ("access_key", "${{AWS_ACCESS_KEY_ID}}"),
            ("secret_key", "${{AWS_SECRET_ACCESS_KEY}}"),
        ],
    ));
    out.push_str(&example(
        "promote-cross-account",
        "promote_to_prod",
        &[
            ("mode", "promote"),
            (
                "source",
                "111111111111.dkr.ecr.us-east-1.amazonaws.com/central/app:${{CF_SHORT_REVISION}}",
            ),
            ("read_role_arn", "arn:aws:iam::111111111111:role/ecr-read"),
            ("repo", "app"),
            ("tags", "${{CF_SHORT_REVISION}},stable"),
            (
                "registry",
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com,222222222222.dkr.ecr.us-east-2.amazonaws.com",
            ),
            ("pipeline_role_arn", "arn:aws:iam::222222222222:role/ci-push"),
        ],
    ));
    out.push_str(&example(
        "branch-filtered",
        "push_release",
        &[
            ("source", "${{build_image}}"),
            ("repo", "team/app"),
            ("tags", "${{CF_BRANCH_TAG_NORMALIZED}}"),
            ("registry", "123456789012.dkr.ecr.eu-west-2.amazonaws.com"),
            ("branches_only", "main,release/**"),
            ("branches_except", "release/old/*"),
            ("role_arn", "arn:aws:iam::123456789012:role/ci-push"),
        ],
    ));
    out.push_str(&example(
        "login-for-later-steps",
        "ecr_login",
        &[
            ("mode", "login"),
            ("registry", "123456789012.dkr.ecr.eu-west-2.amazonaws.com"),
            ("role_arn", "arn:aws:iam::123456789012:role/ci-pull"),
        ],
    ));
    out.push_str(&example(
        "check-the-integration",
        "test_connection",
        &[
            ("mode", "check"),
            ("repo", "team/app"),
            ("registry", "123456789012.dkr.ecr.eu-west-2.amazonaws.com"),
            ("access_key", "${{AWS_ACCESS_KEY_ID}}"),
            ("secret_key", "${{AWS_SECRET_ACCESS_KEY}}"),
        ],
    ));
    let arguments = serde_json::to_string_pretty(&arguments_schema()).expect("JSON");
    let returns = serde_json::to_string_pretty(&returns_schema()).expect("JSON");
    out.push_str("spec:\n  arguments: |-\n");
    out.push_str(&indent(&arguments, 4));
    out.push_str("  returns: |-\n");
    out.push_str(&indent(&returns, 4));
    out.push_str(&format!(
        "  stepsTemplate: |-\n    push:\n      name: ecr-step\n      image: {IMAGE}\n      volumes:\n        \
         - /var/run/docker.sock:/var/run/docker.sock\n      environment:\n      [[- range $key, $val := .Arguments ]]\n        \
         - [[ printf \"%q\" (printf \"PLUGIN_%s=%v\" (upper $key) $val) ]]\n      [[- end ]]\n  delimiters:\n    \
         left: '[['\n    right: ']]'\n"
    ));
    out
}

/// The GitHub Action: a Docker container action whose inputs are the settings and whose outputs are the
/// `ECR_STEP_*` values the step appends to `$GITHUB_OUTPUT`.
pub fn action_yml() -> String {
    let mut out = format!(
        "# {GENERATED}\nname: ecr-step\ndescription: {}\nauthor: ecr-step maintainers\nbranding:\n  icon: upload-cloud\n  color: orange\ninputs:\n",
        quoted("Push or promote container images into Amazon ECR; a green step means every tag is in the registry.")
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "  {}:\n    description: {}\n    required: false\n",
            s.name,
            quoted(&format!("{} (PLUGIN_{})", description(s), s.name.to_ascii_uppercase()))
        ));
    }
    out.push_str("outputs:\n");
    for (name, help) in OUTPUTS {
        out.push_str(&format!("  {name}:\n    description: {}\n", quoted(help)));
    }
    out.push_str(&format!("runs:\n  using: docker\n  image: docker://{IMAGE}\n  env:\n"));
    for s in SETTINGS {
        out.push_str(&format!("    {}: ${{{{ inputs.{} }}}}\n", s.env(), s.name));
    }
    out
}

/// The GitLab CI/CD component: `spec: inputs:` for every setting plus the job's stage, and one job that
/// passes each input as its `PLUGIN_*` variable.
pub fn gitlab_component() -> String {
    let mut out = format!(
        "# {GENERATED}\nspec:\n  inputs:\n    stage:\n      default: deploy\n      description: The stage the job runs in.\n"
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "    {}:\n      default: ''\n      description: {}\n",
            s.name,
            quoted(&description(s))
        ));
    }
    out.push_str(&format!(
        "---\necr-step:\n  stage: $[[ inputs.stage ]]\n  image:\n    name: {IMAGE}-{SHELL_STAGE}\n    entrypoint: ['']\n  \
         script:\n    - /usr/local/bin/ecr-step\n  variables:\n"
    ));
    for s in SETTINGS {
        out.push_str(&format!("    {}: $[[ inputs.{} ]]\n", s.env(), s.name));
    }
    out
}

/// The Drone / Woodpecker / Harness plugin page: `settings:` become `PLUGIN_*`.
pub fn plugin_page() -> String {
    let mut out = format!(
        "<!-- {GENERATED} -->\n# ecr-step as a Drone, Woodpecker or Harness plugin\n\n\
         The plugin image is `{IMAGE}`. Each key under `settings:` becomes the `PLUGIN_*` variable of the same \
         name (upper case); secrets come `from_secret`. Mount the engine's socket for push mode (not needed for \
         promote, login or check).\n\nDrone (a full pipeline: the socket is a volume of the pipeline):\n\n```yaml\n\
         kind: pipeline\ntype: docker\nname: release\nsteps:\n  - name: push\n    image: {IMAGE}\n    volumes:\n      \
         - name: docker\n        path: /var/run/docker.sock\n    settings:\n      source: app:${{DRONE_COMMIT_SHA}}\n      \
         repo: team/app\n      registry: 123456789012.dkr.ecr.eu-west-2.amazonaws.com\n      access_key:\n        \
         from_secret: aws_access_key_id\n      secret_key:\n        from_secret: aws_secret_access_key\nvolumes:\n  \
         - name: docker\n    host:\n      path: /var/run/docker.sock\n```\n\nWoodpecker (a volume is `host:container`; \
         the repository must be trusted to mount the socket):\n\n```yaml\nsteps:\n  push:\n    image: {IMAGE}\n    \
         volumes:\n      - /var/run/docker.sock:/var/run/docker.sock\n    settings:\n      source: app:${{CI_COMMIT_SHA}}\n      \
         repo: team/app\n      registry: 123456789012.dkr.ecr.eu-west-2.amazonaws.com\n      access_key:\n        \
         from_secret: aws_access_key_id\n      secret_key:\n        from_secret: aws_secret_access_key\n```\n\n\
         | setting | variable | value | default | modes | meaning |\n|---|---|---|---|---|---|\n"
    );
    for s in SETTINGS {
        let modes: Vec<String> = s.modes.iter().map(Mode::to_string).collect();
        out.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
            s.name,
            s.env(),
            s.value.replace('|', "\\|"),
            s.default.replace('|', "\\|"),
            modes.join(", "),
            s.help.replace('|', "\\|")
        ));
    }
    out.push_str("\nOutputs (in `$CF_VOLUME_PATH/env_vars_to_export`, `$GITHUB_OUTPUT` and `PLUGIN_OUTPUT_FILE`):\n\n");
    for (name, help) in OUTPUTS {
        out.push_str(&format!("- `{name}`: {help}\n"));
    }
    out
}
