//! What the step knows of the CI systems it runs in, in one place: which variables name the branch, the
//! build, the workspace every step shares, and where a step's outputs go. Plain data: `branch` reads the
//! branch with it, `credentials` names sessions after the build, `outputs` finds the output files and the
//! shared workspace. A new CI is a few names here.

/// The variables that carry the branch being built, in the order they are read (the first set wins):
/// Codefresh, Codefresh and Shippable, Drone and Woodpecker, GitLab, GitHub Actions (a pull request's head,
/// then the ref), Buildkite, CircleCI, Jenkins multibranch, Jenkins' git plugin.
pub const BRANCH_VARIABLES: &[&str] = &[
    "CF_BRANCH",
    "BRANCH",
    "DRONE_BRANCH",
    "CI_COMMIT_BRANCH",
    "GITHUB_HEAD_REF",
    "GITHUB_REF_NAME",
    "BUILDKITE_BRANCH",
    "CIRCLE_BRANCH",
    "BRANCH_NAME",
    "GIT_BRANCH",
];

/// The variables that carry the build's id, in the order they are read: Codefresh, Drone, GitLab,
/// Woodpecker, GitHub Actions, Buildkite, CircleCI, then Jenkins and the rest.
pub const BUILD_ID_VARIABLES: &[&str] = &[
    "CF_BUILD_ID",
    "DRONE_BUILD_NUMBER",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_NUMBER",
    "GITHUB_RUN_ID",
    "BUILDKITE_BUILD_NUMBER",
    "CIRCLE_BUILD_NUM",
    "BUILD_ID",
    "BUILD_NUMBER",
];

/// The variables that name a directory every step of the pipeline shares: Codefresh, Drone, Woodpecker,
/// GitLab, GitHub Actions.
pub const SHARED_WORKSPACES: &[&str] = &[
    "CF_VOLUME_PATH",
    "DRONE_WORKSPACE",
    "CI_WORKSPACE",
    "CI_PROJECT_DIR",
    "GITHUB_WORKSPACE",
];

/// Codefresh: the shared volume, whose `env_vars_to_export` later steps read.
pub const CODEFRESH_VOLUME: &str = "CF_VOLUME_PATH";
/// Codefresh's file of exported variables, in its volume.
pub const CODEFRESH_EXPORTS: &str = "env_vars_to_export";
/// A Codefresh typed step's metadata directory, where its exports go.
pub const CODEFRESH_META: &str = "/meta";
/// GitHub Actions: the file a step's outputs are appended to.
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";

/// How the user wrote the settings, so a message names a setting the way they wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// A GitHub Action: inputs (`with: source: …`), which the runner also hands over as `INPUT_*`.
    Action,
    /// A Drone or Woodpecker plugin: `settings:` keys.
    Plugin,
    /// Anything else: the `PLUGIN_*` variables themselves.
    Variables,
}

impl FrontEnd {
    /// The front end of this run, from its environment.
    pub fn of(ambient: &std::collections::HashMap<String, String>) -> FrontEnd {
        let set = |k: &str| ambient.get(k).is_some_and(|v| !v.is_empty());
        if ambient.keys().any(|k| k.starts_with("INPUT_")) && set("GITHUB_ACTIONS") {
            FrontEnd::Action
        } else if set("DRONE") || ambient.get("CI").is_some_and(|v| v == "woodpecker") || set("CI_SYSTEM_NAME") {
            FrontEnd::Plugin
        } else {
            FrontEnd::Variables
        }
    }

    /// The setting `name` (`source`) as this front end's user wrote it, its variable in brackets.
    pub fn name(self, name: &str) -> String {
        let variable = format!("PLUGIN_{}", name.to_ascii_uppercase());
        match self {
            FrontEnd::Action => format!("input `{name}` ({variable})"),
            FrontEnd::Plugin => format!("settings.{name} ({variable})"),
            FrontEnd::Variables => variable,
        }
    }

    /// `message` with every setting variable it names (`PLUGIN_SOURCE`) as this front end's user wrote it.
    pub fn words(self, message: &str, known: &[&str]) -> String {
        if self == FrontEnd::Variables {
            return message.to_string();
        }
        let mut out = String::new();
        let mut rest = message;
        while let Some(at) = rest.find("PLUGIN_") {
            out.push_str(&rest[..at]);
            let after = &rest[at + "PLUGIN_".len()..];
            let end = after
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            let name = after[..end].to_ascii_lowercase();
            if known.contains(&name.as_str()) {
                out.push_str(&self.name(&name));
            } else {
                out.push_str(&rest[at..at + "PLUGIN_".len() + end]);
            }
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_settings_as_each_front_end_wrote_them() {
        let known = ["source", "repo"];
        let text = "PLUGIN_SOURCE is required; PLUGIN_REPO=`x` is not allowed; PLUGIN_NOPE stays";
        assert_eq!(FrontEnd::Variables.words(text, &known), text);
        assert_eq!(
            FrontEnd::Action.words(text, &known),
            "input `source` (PLUGIN_SOURCE) is required; input `repo` (PLUGIN_REPO)=`x` is not allowed; PLUGIN_NOPE stays"
        );
        assert!(
            FrontEnd::Plugin
                .words(text, &known)
                .starts_with("settings.source (PLUGIN_SOURCE) is required")
        );
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            FrontEnd::of(&env(&[("GITHUB_ACTIONS", "true"), ("INPUT_SOURCE", "x")])),
            FrontEnd::Action
        );
        assert_eq!(FrontEnd::of(&env(&[("DRONE", "true")])), FrontEnd::Plugin);
        assert_eq!(FrontEnd::of(&env(&[("CI", "woodpecker")])), FrontEnd::Plugin);
        assert_eq!(FrontEnd::of(&env(&[("GITLAB_CI", "true")])), FrontEnd::Variables);
    }
}
