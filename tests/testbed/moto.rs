//! [`Moto`]: moto server, the ECR and STS APIs, on a free loopback port.

use super::{ACCESS_KEY, REGION, SECRET_KEY, Server, find_program, free_port, repo_root, spawn, wait_for_port};
use std::process::Command;

/// moto server: ECR and STS on one loopback port.
pub struct Moto {
    _server: Server,
    pub url: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// Start with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to enforce IAM.
    pub fn start_with(envs: &[(&str, &str)]) -> Moto {
        let program = find_program(
            "MOTO_SERVER",
            &[repo_root().join(".testbed/venv/bin/moto_server")],
            "run scripts/install-testbed",
        );
        let port = free_port();
        let port_text = port.to_string();
        let (mut server, log) = spawn(
            &program,
            &["-H", "127.0.0.1", "-p", &port_text],
            envs,
            tempfile::tempdir().unwrap(),
        );
        wait_for_port(&mut server, port, "moto server", &log);
        Moto {
            _server: server,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Moto {
    /// Run the AWS CLI against this moto (`aws <args> --output json`) and return its JSON answer, or the
    /// CLI's error text. Uses the default static keys unless `keys` are given.
    pub fn aws_as(&self, keys: (&str, &str), args: &[&str]) -> Result<serde_json::Value, String> {
        let out = Command::new(repo_root().join(".testbed/venv/bin/aws"))
            .args(args)
            .args(["--endpoint-url", &self.url, "--region", REGION, "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", keys.0)
            .env("AWS_SECRET_ACCESS_KEY", keys.1)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("the AWS CLI in .testbed/venv: run scripts/install-testbed");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        })
    }

    /// Mirror `repo:tag` of `registry` into moto's ECR (PutImage with the real manifest and digest, pushed
    /// now), so the ECR API knows the image: its scan, its push time. Returns the digest.
    pub fn mirror(&self, registry: &super::Registry, repo: &str, tag: &str) -> String {
        let (bytes, media_type, digest) = registry.manifest(repo, tag).expect("the image is in the registry");
        let manifest = String::from_utf8(bytes).unwrap();
        let _ = self.aws_as(
            (ACCESS_KEY, SECRET_KEY),
            &["ecr", "create-repository", "--repository-name", repo],
        );
        self.aws(&[
            "ecr",
            "put-image",
            "--repository-name",
            repo,
            "--image-manifest",
            &manifest,
            "--image-manifest-media-type",
            media_type.split(';').next().unwrap(),
            "--image-tag",
            tag,
            "--image-digest",
            &digest,
        ]);
        digest
    }

    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        self.aws_as((ACCESS_KEY, SECRET_KEY), args)
            .unwrap_or_else(|e| panic!("aws {args:?} failed: {e}"))
    }

    /// An IAM user allowed exactly `actions`, and its access key pair. Needs a moto started with
    /// `INITIAL_NO_AUTH_ACTION_COUNT=3` (these three calls are the unauthenticated ones).
    pub fn user_allowed(&self, actions: &[&str]) -> (String, String) {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
        });
        self.aws(&["iam", "create-user", "--user-name", "ci"]);
        self.aws(&[
            "iam",
            "put-user-policy",
            "--user-name",
            "ci",
            "--policy-name",
            "ci",
            "--policy-document",
            &policy.to_string(),
        ]);
        let key = self.aws(&["iam", "create-access-key", "--user-name", "ci"]);
        let id = key["AccessKey"]["AccessKeyId"].as_str().unwrap().to_string();
        let secret = key["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_string();
        (id, secret)
    }
}
