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
