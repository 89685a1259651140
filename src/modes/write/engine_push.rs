//! The writer through the Docker Engine: push's `PLUGIN_PUSH_VIA=engine` path, and promote through the
//! engine. Each tag is tagged locally and pushed by the engine under the one retry policy; a refused push
//! renews the token once; the tag is read back and must hold what the engine pushed, this image. A registry
//! the engine cannot reach (its own network, proxy and CAs) is handed back to a mode that has another way.

use super::Destination;
use super::tags::{HandedBack, Verb, Writer};
use crate::domain::login::{RegistryLogin, Relogin};
use crate::domain::source::LocalImage;
use crate::engine::{Engine, Pushed, Refused, Transient, Unreachable};
use crate::registry::RegistryClient;
use anyhow::{Result, anyhow};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Writes a tag by tagging the local image `<registry>/<repo>:<tag>` and pushing it through the engine,
/// under the one retry policy; a push the registry refuses renews the token once. What the engine pushed
/// must be this image: its manifest's config is the image id (another run may retag the shared local tag
/// between the tag and the push). Also promote's writer through the engine.
pub struct EnginePush<'a> {
    pub engine: &'a Engine,
    pub image: &'a LocalImage,
    pub login: RegistryLogin,
    pub renewal: Arc<dyn Relogin>,
    pub repo: &'a str,
    pub client: &'a RegistryClient,
    pub timeout: Duration,
    pub verb: Verb,
    /// Whether a registry the engine cannot reach is handed back to the mode ([`HandedBack`]), which has
    /// another way (`PLUGIN_PUSH_VIA=auto`), rather than failed.
    pub hand_back: bool,
    /// The engine could not reach the registry at an earlier tag: every later tag fails at once with it.
    unreachable: Option<String>,
}

impl<'a> EnginePush<'a> {
    /// The writer of `image` through `engine` into the destination `to`.
    pub fn new(
        engine: &'a Engine,
        image: &'a LocalImage,
        to: &'a Destination<'a>,
        timeout: Duration,
        verb: Verb,
    ) -> Self {
        EnginePush {
            engine,
            image,
            login: to.login.clone(),
            renewal: to.renewal.clone(),
            repo: to.repo,
            client: &to.client,
            timeout,
            verb,
            hand_back: false,
            unreachable: None,
        }
    }

    /// A push the engine could not make because it could not reach or trust the registry: handed back to the
    /// mode where it has another way, and said at once for every later tag.
    fn unreachable(&mut self, e: anyhow::Error) -> anyhow::Error {
        let Some(unreachable) = e.downcast_ref::<Unreachable>() else {
            return e;
        };
        self.unreachable = Some(unreachable.text.clone());
        match self.hand_back {
            true => anyhow::Error::new(HandedBack {
                host: self.login.registry.host.clone(),
                cause: unreachable.cause.clone(),
                remedy: unreachable.route.clone(),
                text: unreachable.text.clone(),
            }),
            false => e,
        }
    }

    async fn push(&self, tag: &str) -> Result<Pushed> {
        let what = format!("{}/{}:{tag}", self.login.registry, self.repo);
        let attempt = || {
            self.engine
                .push(&self.login, &self.image.reference, self.repo, tag, self.timeout)
        };
        crate::retry::run(&what, self.timeout, attempt, |e: &anyhow::Error| e.is::<Transient>())
            .await
            .map_err(|gave_up| gave_up.error)
    }
}

impl Writer for EnginePush<'_> {
    const READS_BACK: bool = true;

    fn verb(&self) -> Verb {
        self.verb
    }

    async fn write(&mut self, tag: &str) -> Result<String> {
        if let Some(text) = &self.unreachable {
            return Err(anyhow!("{text}"));
        }
        let pushed = match self.push(tag).await {
            Err(e) if e.is::<Refused>() => match self.renewal.relogin().await {
                Ok(fresh) => {
                    crate::report::token_refreshed(&self.login.registry.host, "the registry refused it");
                    self.login = fresh;
                    self.push(tag).await
                }
                Err(_) => Err(e),
            },
            pushed => pushed,
        };
        let Pushed { digest, tag: local } = pushed.map_err(|e| self.unreachable(e))?;
        // The local tag goes while the tag is read back: it must hold what the engine pushed (read by tag,
        // so the loop need not read it again), and that must be this image.
        let (manifest, ()) = tokio::join!(self.client.manifest(self.repo, tag), self.engine.untag(local));
        let manifest = match manifest? {
            Some(manifest) if manifest.digest == digest => manifest,
            other => {
                let held = other.map(|m| m.digest);
                return Err(self.client.not_written(self.repo, tag, held.as_deref(), &digest));
            }
        };
        match manifest.config_digest() {
            Some(config) if config != self.image.id => Err(anyhow!(
                "the engine pushed image {config} as {registry}/{repo}:{tag}, not PLUGIN_SOURCE={} ({}): another run \
                 retagged {registry}/{repo}:{tag} in the same Docker Engine during this push\n  fix: push different \
                 images to one repository and tag one at a time, or give each run its own tag",
                self.image.reference,
                self.image.id,
                registry = self.login.registry,
                repo = self.repo,
            )),
            _ => Ok(digest),
        }
    }

    fn ours(&self, ours: &BTreeSet<String>) -> String {
        match ours.iter().next() {
            Some(d) => format!("this image is {d}"),
            None => format!(
                "this image ({}) has no digest in {}/{} yet, so it cannot be the same image",
                self.image.reference, self.login.registry, self.repo
            ),
        }
    }
}
