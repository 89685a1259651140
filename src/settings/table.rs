//! The one declaration of every `PLUGIN_*` setting: its name, value shape, default, help, whether it is a
//! secret, which modes it applies to, in which modes it is required, and which setting it needs. `--help`
//! is generated from it; the README and `step.yaml` are checked against it by a test; the "does not apply
//! with PLUGIN_MODE=…", "is required" and "is set without …" refusals all come from it (see `rules`).
//!
//! To add a setting: one line here (a new `Key` comes with it), then its parsing in `settings/mod.rs` with
//! `Parser::parse(Key::…, …)`; the README row and step.yaml argument follow (the docs test says so).

use std::fmt;

/// What a run does: the value of `PLUGIN_MODE`. One file per mode under `src/modes/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Push,
    Promote,
    Login,
    Check,
}

impl Mode {
    pub const ALL: &'static [Mode] = &[Mode::Push, Mode::Promote, Mode::Login, Mode::Check];

    pub fn parse(value: &str) -> Result<Mode, String> {
        match value.to_ascii_lowercase().as_str() {
            "push" => Ok(Mode::Push),
            "promote" => Ok(Mode::Promote),
            "login" => Ok(Mode::Login),
            "check" => Ok(Mode::Check),
            _ => Err("push, promote, login or check".to_string()),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Push => "push",
            Mode::Promote => "promote",
            Mode::Login => "login",
            Mode::Check => "check",
        })
    }
}

use Mode::{Check, Login, Promote, Push};
const ALL: &[Mode] = Mode::ALL;
const NONE: &[Mode] = &[];
const WRITES: &[Mode] = &[Push, Promote];
const WRITES_OR_CHECK: &[Mode] = &[Push, Promote, Check];
const OUTPUTS: &[Mode] = &[Push, Promote, Login];
const PROMOTE: &[Mode] = &[Promote];
const PUSH: &[Mode] = &[Push];

/// One setting as documented for users and checked by the rules.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: Key,
    /// The name after `PLUGIN_`, lowercase (`repo` for `PLUGIN_REPO`).
    pub name: &'static str,
    /// The shape of a value, for `--help`.
    pub value: &'static str,
    /// The default, empty when there is none.
    pub default: &'static str,
    pub help: &'static str,
    /// Never echoed in a message.
    pub secret: bool,
    /// The modes it applies to; set in another mode, it is refused.
    pub modes: &'static [Mode],
    /// The modes in which it must be set.
    pub required_in: &'static [Mode],
    /// It means nothing without one of these (a role for its external ID, the other half of a key pair).
    pub needs: &'static [Key],
    /// The value the needed setting must have, for the message (`=KMS`), empty for any.
    pub needs_value: &'static str,
}

impl Setting {
    pub fn env(&self) -> String {
        format!("PLUGIN_{}", self.name.to_ascii_uppercase())
    }

    pub fn applies_in(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }
}

impl Key {
    /// The declaration of this key.
    pub fn setting(self) -> &'static Setting {
        &SETTINGS[self as usize]
    }

    pub fn env(self) -> String {
        self.setting().env()
    }
}

/// The given value, else the default (for the optional parts of a declaration).
macro_rules! given_or {
    ($default:expr) => {
        $default
    };
    ($default:expr, $given:expr) => {
        $given
    };
}

/// Declares [`Key`] and [`SETTINGS`] from one list, in the same order (so `Key as usize` indexes it).
macro_rules! settings {
    ($( $key:ident $name:ident {
        value: $value:literal, default: $default:literal, modes: $modes:expr,
        $( required_in: $required:expr, )?
        $( needs: [$($need:ident),+] $( = $needs_value:literal )?, )?
        $( secret: $secret:literal, )?
        help: $help:literal $(,)?
    } ),* $(,)?) => {
        /// A setting, typed: parsers and rules are picked by key, never by a name written as a string.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Key { $( $key ),* }

        /// Every setting the step accepts, in the order `--help` shows them.
        pub const SETTINGS: &[Setting] = &[
            $( Setting {
                key: Key::$key,
                name: stringify!($name),
                value: $value,
                default: $default,
                help: $help,
                secret: false $(|| $secret)?,
                modes: $modes,
                required_in: given_or!(NONE $(, $required)?),
                needs: given_or!(&[] $(, &[$(Key::$need),+])?),
                needs_value: given_or!("" $($(, $needs_value)?)?),
            }, )*
        ];
    };
}

settings! {
    Mode mode { value: "push|promote|login|check", default: "push", modes: ALL,
        help: "push: a local image through the Docker Engine. promote: copy an image already in a registry. login: write the registry tokens to the docker config for later steps. check: test credentials, token, repository and push permissions, changing nothing." },
    Source source { value: "IMAGE", default: "", modes: WRITES, required_in: WRITES,
        help: "push: a local image in the Docker Engine (name[:tag] or image id), or, with no engine at all, oci:PATH[:REF] (an OCI image layout), oci-archive:PATH[:REF] or docker-archive:PATH[:REF] (docker save, BuildKit, kaniko). promote: repo:tag, repo@sha256:... (in the target registry) or host[:port]/repo:tag (another ECR registry, or any registry: Docker Hub as docker.io/name, GHCR, Quay, read with the docker config's credentials for it or anonymously, never with the ECR token)." },
    PushVia push_via { value: "auto|registry|engine", default: "auto", modes: PUSH,
        help: "push of an engine image. registry: the step moves the bytes itself (exported as docker save does, compressed on every core as it streams out, each layer uploaded while it is compressed; layers a destination already holds are not sent). engine: docker push through the engine. auto: the engine when every destination is the registry an image sharing this one's first layers, at least half of it, was pulled from or pushed to by the engine (it never reads them); for a new image of 64 MB or more to one destination, the engine where the upload rate, measured with 1 MiB, makes docker push finish first, counting on a runner that keeps its engine and PLUGIN_STATE_DIR the export each later rebuild would need after the step's own transfer; else the step. The via: line says why. The engine has its own network, proxy and CAs: where auto took it and it cannot reach or trust a destination, the step sends the image itself. Times: BENCHMARKS.md. Layout and archive sources always go through the registry client." },
    Compression compression { value: "gzip|zstd", default: "gzip", modes: PUSH,
        help: "push: how the layers the step compresses itself are compressed (an engine image through its own transfer, a docker-archive:; an OCI layout's blobs are sent as they are). gzip: what every client pulls. zstd: fewer bytes than gzip at docker's level for a small part of its CPU (BENCHMARKS.md), in an OCI manifest; containerd 1.5 or later and Docker Engine 23 or later pull it, Docker Engine 20.10 does not: check every runtime that pulls the image first. Layers a destination already holds stay as it holds them, gzip or zstd, and an image already there under another tag is not written again. Needs the step's own transfer (not PLUGIN_PUSH_VIA=engine; auto takes it) and gzip for PLUGIN_SOCI." },
    CompressionLevel compression_level { value: "auto|1-9", default: "auto", modes: PUSH,
        help: "push: the gzip level of the layers the step compresses itself (an engine image through its own transfer, a docker-archive:). auto: for an engine image or a docker-archive: with a layer of 32 MiB or more to compress, the level the upload favours, measured with 1 MiB into a cancelled upload session (while the engine prepares its export): 6 (docker's own, about a fifth fewer bytes than 1) where the link is the bottleneck, 1 where the CPU is, 2 between (the compression: line says which and why); else 2 for layers under 32 MiB (nearly 6's bytes for half its CPU: a rebuild's new top layer) and 1 above. BENCHMARKS.md measures them. A layer gets the same digest at the same level on any machine. With PLUGIN_COMPRESSION=zstd: zstd's level, auto being 3 (libzstd's default, which fits every link)." },
    Soci soci { value: "true|false", default: "false", modes: PUSH,
        help: "push: also push a SOCI index (Seekable OCI, index manifest v2), so Fargate and EKS with the SOCI snapshotter start the container before its image is downloaded; worth it for images over 250 MiB. Each layer the step compresses of 10 MiB or more gets a zTOC, built from the compression itself (no containerd, no second pass); an OCI layout's gzip layers are inflated once for theirs, and each image of a multi-platform layout gets its own SOCI index; base layers sent as the registry holds them get none. The tags then hold an OCI index of the image and its SOCI index: the layers and the image id are unchanged, the image manifest's digest is not (ECR_STEP_IMAGE_DIGEST). Needs the step's own transfer (not PLUGIN_PUSH_VIA=engine)." },
    StateDir state_dir { value: "PATH|off", default: "$XDG_STATE_HOME/ecr-step, else ~/.local/state/ecr-step", modes: PUSH,
        help: "push: a directory kept between runs where the runner keeps one (a self-hosted runner's home, a cache volume), in which the step notes each image it pushed through the Docker Engine, and where. The engine remembers the layers it pushed to a repository and docker push skips them there without reading them; the note lets PLUGIN_PUSH_VIA=auto know it, so a rebuild whose previous build went through this engine goes through it again. It also notes how long the last new image took the way auto chose over auto's estimate, so on a runner whose engine (or step) runs slower than the estimate the next new image is weighed at that pace (for a day). A record that already names this engine shows the runner keeps it: auto then weighs a new image with its later rebuilds in mind. And where the engine could not reach a destination, auto sends the image itself there for a day without asking it. A note from another engine is ignored; a stale or damaged one only makes a push slower, never wrong. off: keep nothing." },
    Repo repo { value: "NAME", default: "", modes: WRITES_OR_CHECK, required_in: WRITES_OR_CHECK,
        help: "The target repository in the registry, e.g. team/app." },
    Tags tags { value: "TAG[,TAG...]", default: "latest", modes: WRITES,
        help: "The tags to push, comma separated." },
    Registry registry { value: "HOST[:PORT][,...]", default: "the token's own registry", modes: ALL,
        help: "The target registries, comma separated; each gets its own token and they are served concurrently. For an ECR host the account and region are taken from its name." },
    Region region { value: "REGION", default: "from PLUGIN_REGISTRY, else AWS_REGION", modes: ALL,
        help: "The AWS region of registries that are not ECR hosts, and of the run's STS calls." },
    ReadRoleArn read_role_arn { value: "ARN", default: "", modes: PROMOTE,
        help: "promote: a role, assumed from the run's credentials, that reads the source registry (cross-account pull)." },
    ReadExternalId read_external_id { value: "ID", default: "", modes: PROMOTE, needs: [ReadRoleArn], secret: true,
        help: "External ID for PLUGIN_READ_ROLE_ARN." },
    ReadRegion read_region { value: "REGION", default: "from the source host, else the run's region", modes: PROMOTE,
        help: "promote: the region of the source registry's token." },
    Referrers referrers { value: "all|none|TYPE[,TYPE...]", default: "all", modes: PROMOTE,
        help: "promote: the referrers (signatures, SBOMs, attestations, and what refers to them) copied with the image, with digests unchanged: all, none, or these artifact types (cosign's tags count as application/vnd.dev.cosign.artifact.sig|att|sbom.v1+json)." },
    PromoteVia promote_via { value: "registry|engine", default: "registry", modes: PROMOTE,
        help: "promote: copy registry to registry (no daemon), or pull, tag and push through the Docker Engine." },
    TriggerRoleArn trigger_role_arn { value: "ARN", default: "", modes: ALL,
        help: "Trigger level (highest priority): the role to assume, from the runtime's credentials or with PLUGIN_TRIGGER_WEB_IDENTITY_TOKEN_FILE." },
    TriggerExternalId trigger_external_id { value: "ID", default: "", modes: ALL, needs: [TriggerRoleArn], secret: true,
        help: "External ID for assuming PLUGIN_TRIGGER_ROLE_ARN." },
    TriggerWebIdentityTokenFile trigger_web_identity_token_file { value: "PATH", default: "", modes: ALL, needs: [TriggerRoleArn],
        help: "Web identity token file for PLUGIN_TRIGGER_ROLE_ARN (AssumeRoleWithWebIdentity)." },
    TriggerWebIdentityTokenEnv trigger_web_identity_token_env { value: "VARIABLE", default: "", modes: ALL, needs: [TriggerRoleArn],
        help: "The name of an environment variable holding the web identity token for PLUGIN_TRIGGER_ROLE_ARN (GitLab id_tokens, runners that hand the OIDC token in a variable); never printed." },
    PipelineRoleArn pipeline_role_arn { value: "ARN", default: "", modes: ALL,
        help: "Pipeline level: the role to assume, from the runtime's credentials or with PLUGIN_PIPELINE_WEB_IDENTITY_TOKEN_FILE." },
    PipelineExternalId pipeline_external_id { value: "ID", default: "", modes: ALL, needs: [PipelineRoleArn], secret: true,
        help: "External ID for assuming PLUGIN_PIPELINE_ROLE_ARN." },
    PipelineWebIdentityTokenFile pipeline_web_identity_token_file { value: "PATH", default: "", modes: ALL, needs: [PipelineRoleArn],
        help: "Web identity token file for PLUGIN_PIPELINE_ROLE_ARN (AssumeRoleWithWebIdentity)." },
    PipelineWebIdentityTokenEnv pipeline_web_identity_token_env { value: "VARIABLE", default: "", modes: ALL, needs: [PipelineRoleArn],
        help: "The name of an environment variable holding the web identity token for PLUGIN_PIPELINE_ROLE_ARN; never printed." },
    AccessKey access_key { value: "AKIA...", default: "", modes: ALL, needs: [SecretKey],
        help: "Account level: access key id of static credentials; needs PLUGIN_SECRET_KEY." },
    SecretKey secret_key { value: "SECRET", default: "", modes: ALL, needs: [AccessKey], secret: true,
        help: "Account level: the secret access key that goes with PLUGIN_ACCESS_KEY. Never printed." },
    RoleArn role_arn { value: "ARN", default: "", modes: ALL,
        help: "Account level: a role to assume, from the keys if given, else from the runtime's credentials." },
    ExternalId external_id { value: "ID", default: "", modes: ALL, needs: [RoleArn], secret: true,
        help: "External ID for assuming PLUGIN_ROLE_ARN." },
    IntermediateRole intermediate_role { value: "ARN", default: "", modes: ALL, needs: [RoleArn],
        help: "Account level: a role assumed first; PLUGIN_ROLE_ARN is then assumed from it." },
    IntermediateExternalId intermediate_external_id { value: "ID", default: "", modes: ALL, needs: [IntermediateRole], secret: true,
        help: "External ID for assuming PLUGIN_INTERMEDIATE_ROLE." },
    UseServiceAccount use_service_account { value: "BOOL", default: "false", modes: ALL,
        help: "Account level: use the service account's web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE); no keys allowed." },
    SessionName session_name { value: "NAME", default: "ecr-step-<CI build id>", modes: ALL,
        needs: [TriggerRoleArn, PipelineRoleArn, RoleArn, UseServiceAccount],
        help: "Role session name, shown in CloudTrail." },
    DurationSeconds duration_seconds { value: "SECONDS", default: "3600", modes: ALL,
        needs: [TriggerRoleArn, PipelineRoleArn, RoleArn, UseServiceAccount],
        help: "Lifetime of assumed-role sessions, 900 to 3600." },
    CreateRepository create_repository { value: "BOOL", default: "false", modes: WRITES_OR_CHECK,
        help: "Create the repository when it does not exist, with the repository settings below (check mode: a missing repository is then expected)." },
    TagMutability tag_mutability { value: "MUTABLE|IMMUTABLE|MUTABLE_WITH_EXCLUSION|IMMUTABLE_WITH_EXCLUSION", default: "unchanged (MUTABLE when created)", modes: WRITES,
        help: "Tag mutability of the repository; applied only when set. The *_WITH_EXCLUSION kinds take PLUGIN_TAG_MUTABILITY_EXCLUSIONS, and skip-existing and conflicts follow ECR's matching for each tag." },
    TagMutabilityExclusions tag_mutability_exclusions { value: "FILTER[,FILTER...]", default: "", modes: WRITES, needs: [TagMutability] = "=…_WITH_EXCLUSION",
        help: "Tags excluded from PLUGIN_TAG_MUTABILITY (wildcard filters: * matches any characters; at most 5, each up to 128 characters with at most 2 wildcards), e.g. latest,sha256-*." },
    ScanOnPush scan_on_push { value: "BOOL", default: "unchanged (false when created)", modes: WRITES,
        help: "Scan images on push; applied only when set." },
    Encryption encryption { value: "AES256|KMS", default: "unchanged (AES256 when created)", modes: WRITES,
        help: "Encryption of a created repository; an existing one must already match." },
    KmsKey kms_key { value: "KEY", default: "the AWS managed key", modes: WRITES, needs: [Encryption] = "=KMS",
        help: "KMS key id, ARN or alias for PLUGIN_ENCRYPTION=KMS." },
    RepositoryTags repository_tags { value: "KEY=VALUE[,...]", default: "", modes: WRITES,
        help: "Resource tags of the repository." },
    LifecyclePolicy lifecycle_policy { value: "JSON|PATH", default: "", modes: WRITES,
        help: "Lifecycle policy as JSON text or a path to a JSON file; applied only when set." },
    RepositoryPolicy repository_policy { value: "JSON|PATH", default: "", modes: WRITES,
        help: "Repository policy as JSON text or a path to a JSON file; applied only when set." },
    ScanSeverityThreshold scan_severity_threshold { value: "CRITICAL|HIGH|MEDIUM|LOW", default: "no gate", modes: WRITES,
        help: "After the tags landed, scan the image (starting a scan where the repository does not scan on push), wait for the findings, print counts by severity, and fail the run on a finding at or above this severity." },
    ScanIgnore scan_ignore { value: "CVE-…[,…]", default: "", modes: WRITES, needs: [ScanSeverityThreshold],
        help: "Vulnerability ids that never fail the scan gate (still counted and printed)." },
    ScanTimeout scan_timeout { value: "DURATION", default: "10m", modes: WRITES, needs: [ScanSeverityThreshold],
        help: "Longest wait for the scan's findings before the run fails." },
    ScanAllowUnsupported scan_allow_unsupported { value: "BOOL", default: "false", modes: WRITES, needs: [ScanSeverityThreshold],
        help: "Pass when ECR cannot scan the image (unsupported image, scan failed) instead of failing the run." },
    SkipExisting skip_existing { value: "BOOL", default: "false", modes: WRITES,
        help: "Per tag: skip a tag that already points at this image's digest, push the others (promote always does)." },
    Branch branch { value: "NAME", default: "from the CI's variables", modes: ALL,
        help: "The branch being built, for the branch filters (else CF_BRANCH, BRANCH, DRONE_BRANCH, CI_COMMIT_BRANCH, GITHUB_HEAD_REF, GITHUB_REF_NAME, BUILDKITE_BRANCH, CIRCLE_BRANCH, BRANCH_NAME, GIT_BRANCH)." },
    BranchesOnly branches_only { value: "GLOB[,GLOB...]", default: "", modes: ALL,
        help: "Run only on branches matching one of these globs (* stays within a path segment, ** crosses /)." },
    BranchesExcept branches_except { value: "GLOB[,GLOB...]", default: "", modes: ALL,
        help: "Skip branches matching one of these globs; wins over PLUGIN_BRANCHES_ONLY." },
    IntegrationsFile integrations_file { value: "PATH", default: "", modes: ALL, needs: [Integration],
        help: "A shippable.yml-style file whose integrations: hub: entries supply region and branches." },
    Integration integration { value: "NAME", default: "", modes: ALL, needs: [IntegrationsFile],
        help: "The integrationName of the entry in PLUGIN_INTEGRATIONS_FILE to use; explicit settings win over it." },
    IntegrationDocument integration_document { value: "JSON|PATH", default: "", modes: ALL,
        help: "An \"AWS ECR\" integration document (ci, read, setup blocks; schemas/aws-ecr-integration.schema.json) as JSON text or a path to a JSON file: ci gives the keys and region, setup the role chain and repository policy, read the promote read role. Explicit settings win." },
    OutputFile output_file { value: "PATH", default: "", modes: OUTPUTS,
        help: "Write the outputs (image, digest, registry, tags, images) as JSON to this file." },
    DryRun dry_run { value: "BOOL", default: "false", modes: WRITES,
        help: "Resolve credentials, token, registry and source image, print the plan, push nothing (push and promote; check mode never changes anything, and login mode's only effect is the write)." },
    Timeout timeout { value: "DURATION", default: "5m", modes: ALL,
        help: "Longest wait for an answer or progress from the engine, a registry or an AWS call (90s, 5m, 1h); it also bounds each call's retries, so a call that never answers fails after about this long." },
}

/// The `--help` text, generated from [`SETTINGS`].
pub fn help() -> String {
    let mut out = String::from(
        "ecr-step: push or promote container images into Amazon ECR from a CI pipeline.\n\n\
         Usage: set PLUGIN_* environment variables and run `ecr-step` (no arguments).\n\
         Empty values count as unset. Flags: --help, --version.\n\nSettings:\n",
    );
    for s in SETTINGS {
        out.push_str(&format!("  {:<22} {}\n", s.env(), s.value));
        out.push_str(&format!("      {}\n", s.help));
        if !s.default.is_empty() {
            out.push_str(&format!("      default: {}\n", s.default));
        }
        if s.modes.len() < Mode::ALL.len() {
            let modes: Vec<String> = s.modes.iter().map(Mode::to_string).collect();
            out.push_str(&format!("      modes: {}\n", modes.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_index_the_table_and_every_need_is_declared() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!(s.key as usize, i, "{} is out of order", s.name);
            assert_eq!(s.key.setting().name, s.name);
            for need in s.needs {
                assert_ne!(*need, s.key, "{} needs itself", s.name);
            }
            for mode in s.required_in {
                assert!(
                    s.applies_in(*mode),
                    "{} is required in a mode it does not apply to",
                    s.name
                );
            }
        }
    }

    #[test]
    fn help_lists_every_setting_and_its_modes() {
        let text = help();
        for s in SETTINGS {
            assert!(text.contains(&s.env()), "{} missing from --help", s.env());
        }
        assert!(text.contains("      modes: promote\n"), "{text}");
    }
}
