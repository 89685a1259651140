//! Engine: drives the Docker Engine through bollard to inspect a local image, tag it and push each tag (and
//! pull, for promote through the engine). An adapter: uses `domain` and `report`, never another adapter.
//!
//! Traps handled here, each a known bollard or engine behaviour:
//! - no API version is negotiated: bollard (0.21) sends every request without a version prefix, so the
//!   engine answers in its own version, which is what an older engine (Debian's, 1.41, against
//!   bollard's 1.53) and a newer one alike need; a bollard that put its version in the path would fail
//!   every e2e test against Debian's engine. The engine is checked with `/_ping`, as the docker CLI does
//!   (`/version` runs `runc` and `docker-init` in dockerd: about 6 ms of every run, before the first
//!   look at the image);
//! - push errors arrive inside the progress stream: every message is checked, the first error ends the push;
//! - `X-Registry-Auth` is sent URL-safe base64 (what the engine decodes), not bollard's standard alphabet;
//! - a stalled stream is cut after `PLUGIN_TIMEOUT` without progress;
//! - a push always names its tag (without one the engine pushes every local tag of the repository).

use crate::domain::login::RegistryLogin;
use crate::domain::reference::Reference;
use crate::domain::source::{LocalImage, PulledImage};
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use bollard::Docker;
use bollard::models::{CreateImageInfo, ErrorDetail, PushImageInfo};
use bollard::query_parameters::{CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use http::HeaderValue;
use std::time::Duration;

/// Local images inspected at most when looking for the image a source was built on.
const CANDIDATES: usize = 64;
/// The bytes of an export handed to its reader at once (the engine sends 32 KiB chunks).
const EXPORT_BATCH: usize = 256 << 10;

/// A connected engine.
pub struct Engine {
    docker: Docker,
    /// Where it was reached, for messages.
    address: String,
    /// The local tags the step made for pushes and has not removed yet: what a cancelled push leaves
    /// behind, for [`Engine::untag_left`].
    made: std::sync::Mutex<Vec<LocalTag>>,
    /// Its ID, asked once ([`Engine::id`]).
    id: tokio::sync::OnceCell<Option<String>>,
    /// Its images as first listed ([`Engine::images`]); `None` when it could not list them.
    images: tokio::sync::OnceCell<Option<Vec<bollard::models::ImageSummary>>>,
}

/// The registry refused the credentials of a push: what a fresh token may cure (the caller renews it once).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// A tag the engine pushed: the digest the registry stored, and the local tag it was pushed under.
pub struct Pushed {
    pub digest: String,
    pub tag: LocalTag,
}

/// The local tag `<registry>/<repo>:<tag>` of a push, and whether the step made it (then it is the step's
/// to remove).
#[derive(Clone)]
pub struct LocalTag {
    name: String,
    source: String,
    made: bool,
}

/// A push that failed for a reason another attempt may not meet (a registry-side race or overload, or a
/// local tag removed by a concurrent run): the caller retries it under the one retry policy. Any other
/// push error is a failure another attempt would repeat.
#[derive(Debug)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transient {}

/// A push the engine could not make because it could not reach or trust the registry: its own network,
/// proxy and trusted CAs, not the step's (a refused connection, an unknown name, a proxy that failed, an
/// untrusted certificate). The step's own transfer, which goes through the step's, may still reach it.
#[derive(Debug)]
pub struct Unreachable {
    /// The message with its fix.
    pub text: String,
    /// What the engine said.
    pub cause: String,
    /// What gives the engine a route to the registry (its proxy, or the registry's CA).
    pub route: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Unreachable {}

/// The engine's export of `reference`, forwarded to `into` in batches of about [`EXPORT_BATCH`] (the
/// engine sends 32 KiB chunks; one hand-over to the reader's thread per batch, not per chunk).
async fn forward_export(
    docker: &Docker,
    address: &str,
    reference: &str,
    into: tokio::sync::mpsc::Sender<Vec<bytes::Bytes>>,
    idle: Duration,
) -> Result<()> {
    let mut stream = docker.export_image(reference);
    let mut batch = Vec::new();
    let mut held = 0;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => bail!(
                "the export of {reference} from the Docker Engine made no progress for {}s",
                idle.as_secs()
            ),
            Ok(None) => {
                if !batch.is_empty() {
                    let _ = into.send(batch).await;
                }
                return Ok(());
            }
            Ok(Some(Err(e))) => bail!(
                "exporting {reference} from the Docker Engine at {address}: {}",
                crate::report::chain(&e)
            ),
            Ok(Some(Ok(bytes))) => {
                held += bytes.len();
                batch.push(bytes);
                if held >= EXPORT_BATCH {
                    held = 0;
                    if into.send(std::mem::take(&mut batch)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Engine {
    /// Connect as the docker CLI does (`DOCKER_HOST`, else the local socket), checked with `/_ping`.
    pub async fn connect(timeout: Duration) -> Result<Engine> {
        let address = docker_host();
        let unreachable = |cause: String| {
            anyhow!(
                "cannot reach the Docker Engine at {address} (from DOCKER_HOST, else the default socket): {cause}. \
                 Mount the engine's socket into the step (-v /var/run/docker.sock:/var/run/docker.sock) or set DOCKER_HOST"
            )
        };
        let docker = Docker::connect_with_defaults()
            .map_err(|e| unreachable(e.to_string()))?
            .with_timeout(timeout);
        tokio::time::timeout(Duration::from_secs(10).min(timeout), docker.ping())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine {
            docker,
            address,
            made: Default::default(),
            id: Default::default(),
            images: Default::default(),
        })
    }

    /// The engine's ID (`docker info`), which another engine (another runner, a fresh docker-in-docker)
    /// does not share; `None` when it cannot tell. Asked once (`docker info` takes about 10 ms).
    pub async fn id(&self) -> Option<String> {
        let asked = async { self.docker.info().await.ok()?.id.filter(|id| !id.is_empty()) };
        self.id.get_or_init(|| asked).await.clone()
    }

    /// The engine's images with their names, listed once, when first asked (a push asks while it signs in):
    /// what the run found there, for the images it was built on and the local tags it makes.
    pub async fn images(&self) -> Option<&[bollard::models::ImageSummary]> {
        let listed = async {
            self.docker
                .list_images(None::<bollard::query_parameters::ListImagesOptions>)
                .await
                .ok()
        };
        self.images.get_or_init(|| listed).await.as_deref()
    }

    /// Look the source image up in the engine's local store.
    pub async fn source_image(&self, reference: &str) -> Result<LocalImage> {
        // Its history (for the layers' sizes) is read meanwhile.
        let (inspected, history) = tokio::join!(
            self.docker.inspect_image(reference),
            self.docker.image_history(reference)
        );
        match inspected {
            Ok(image) => {
                let layers = image.root_fs.and_then(|r| r.layers).unwrap_or_default();
                let layer_sizes = layer_sizes(history.unwrap_or_default(), layers.len());
                Ok(LocalImage {
                    reference: reference.to_string(),
                    id: image.id.unwrap_or_default(),
                    size: image.size.unwrap_or(0),
                    repo_digests: image.repo_digests.unwrap_or_default(),
                    layers,
                    layer_sizes,
                })
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => bail!(
                "PLUGIN_SOURCE={reference}: no such image in the Docker Engine at {}. Build or load it in an \
                 earlier step (docker build -t {reference} .) or fix the name",
                self.address
            ),
            Err(e) => Err(e).with_context(|| format!("inspecting PLUGIN_SOURCE={reference} in the Docker Engine")),
        }
    }

    /// The local images pulled from (or pushed to) one of `hosts`, with their layers: the candidates for
    /// the image `source` was built on. Best effort: an engine that cannot list gives none. At most
    /// [`CANDIDATES`] images are inspected (a shared engine may hold many).
    pub async fn pulled_images(&self, hosts: &[String]) -> Vec<PulledImage> {
        let Some(summaries) = self.images().await else {
            return Vec::new();
        };
        let from_hosts = |d: &&String| hosts.iter().any(|h| d.starts_with(&format!("{h}/")));
        let candidates: Vec<_> = summaries
            .iter()
            .filter(|s| s.repo_digests.iter().any(|d| from_hosts(&d)))
            .take(CANDIDATES)
            .collect();
        // Inspected several at once (each is one round trip to the engine).
        let inspected: Vec<_> = futures_util::stream::iter(candidates.iter().map(|s| self.docker.inspect_image(&s.id)))
            .buffered(8)
            .collect()
            .await;
        let mut pulled = Vec::new();
        for (summary, image) in candidates.into_iter().zip(inspected) {
            let Ok(image) = image else {
                continue;
            };
            let layers = image.root_fs.and_then(|r| r.layers).unwrap_or_default();
            pulled.extend(
                summary
                    .repo_digests
                    .iter()
                    .filter(from_hosts)
                    .filter_map(|d| PulledImage::new(d, &summary.id, &layers, summary.size.max(0) as u64)),
            );
        }
        pulled
    }

    /// Tag `source` as `<registry>/<repo>:<tag>` and push that one tag: the digest the registry stored, and
    /// the local tag to remove with [`Engine::untag`] once the push is read back (a failed push removes it
    /// itself).
    pub async fn push(
        &self,
        login: &RegistryLogin,
        source: &str,
        repo: &str,
        tag: &str,
        idle: Duration,
    ) -> Result<Pushed> {
        let target = format!("{}/{repo}", login.registry.host);
        let local = format!("{target}:{tag}");
        // Whether the step makes the tag: it named no image when the run listed the engine's images (an
        // engine that could not list: taken as there, so it is never removed).
        let there = self
            .images()
            .await
            .is_none_or(|images| images.iter().any(|i| i.repo_tags.contains(&local)));
        let made = LocalTag {
            made: !there,
            name: local.clone(),
            source: source.to_string(),
        };
        // Noted before the tag is asked for: a push cancelled from here on leaves it to `untag_left`.
        if made.made {
            self.made_tags().push(made.clone());
        }
        let tagged = self
            .docker
            .tag_image(
                source,
                Some(TagImageOptionsBuilder::new().repo(&target).tag(tag).build()),
            )
            .await;
        if tagged.is_err() {
            self.made_tags().retain(|t| t.name != made.name);
        }
        tagged.map_err(|e| {
            let text = format!(
                "tagging {source} as {local} in the Docker Engine: {}",
                crate::report::chain(&e)
            );
            // Another run may have removed the shared local tag meanwhile: tag again.
            match is_transient(&text) {
                true => anyhow::Error::new(Transient(text)),
                false => anyhow!("{text}"),
            }
        })?;
        match self.push_tagged(login, &target, repo, tag, idle).await {
            Ok(digest) => Ok(Pushed { digest, tag: made }),
            Err(e) => {
                self.untag(made).await;
                Err(e)
            }
        }
    }

    /// Remove the local tag the step created for a push, so a shared daemon does not collect them: only
    /// while it still names the source image and that image has another name (removing an image's last
    /// name would delete the image). Best effort: a tag left behind is not a failure.
    pub async fn untag(&self, tag: LocalTag) {
        let LocalTag { name, source, made } = tag;
        if !made {
            return;
        }
        self.made_tags().retain(|t| t.name != name);
        let (Ok(ours), Ok(image)) = tokio::join!(self.docker.inspect_image(&name), self.docker.inspect_image(&source))
        else {
            return;
        };
        let other_names = image
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter(|t| **t != name)
            .count();
        if ours.id == image.id && other_names > 0 {
            let options = bollard::query_parameters::RemoveImageOptionsBuilder::new()
                .noprune(true)
                .force(false)
                .build();
            let _ = self.docker.remove_image(&name, Some(options), None).await;
        }
    }

    /// Remove the local tags of pushes that were cancelled before they removed their own (a destination
    /// that failed its preflight while the engine pushed), as [`Engine::untag`] does.
    pub async fn untag_left(&self) {
        let left = std::mem::take(&mut *self.made_tags());
        futures_util::future::join_all(left.into_iter().map(|tag| self.untag(tag))).await;
    }

    fn made_tags(&self) -> std::sync::MutexGuard<'_, Vec<LocalTag>> {
        self.made.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn push_tagged(
        &self,
        login: &RegistryLogin,
        target: &str,
        repo: &str,
        tag: &str,
        idle: Duration,
    ) -> Result<String> {
        let docker = self.with_auth(login)?;
        let stream = docker.push_image(target, Some(PushImageOptionsBuilder::new().tag(tag).build()), None);
        let mut digest = None;
        let what = format!("the push of {target}:{tag}");
        follow(
            stream,
            idle,
            &what,
            |e| push_error(e, login, repo, tag),
            |status| {
                if let Some(found) = digest_in_status(status, tag) {
                    digest = Some(found);
                }
            },
        )
        .await?;
        digest.ok_or_else(|| {
            anyhow!("the engine ended the push of {target}:{tag} without reporting a digest: the push did not complete")
        })
    }
}

/// The uncompressed size of each of an image's `layers` layers, bottom first, from its history (the steps
/// that made a layer, listed newest first; a step that made none has size 0). Empty when the history could not be
/// read or does not pair with the layers (a layer of 0 bytes, say).
fn layer_sizes(history: Vec<bollard::models::ImageHistoryResponseItem>, layers: usize) -> Vec<u64> {
    let sizes: Vec<u64> = history
        .iter()
        .rev()
        .filter(|h| h.size > 0)
        .map(|h| h.size as u64)
        .collect();
    match sizes.len() == layers {
        true => sizes,
        false => Vec::new(),
    }
}

impl Engine {
    /// Export the image as `docker save` would, its bytes sent to `into` as they come (the reader compresses
    /// them as they pass) in batches. Stops quietly when the reader has stopped (its own error says why).
    pub async fn export(
        &self,
        reference: &str,
        into: tokio::sync::mpsc::Sender<Vec<bytes::Bytes>>,
        idle: Duration,
    ) -> Result<()> {
        // A task of its own, on the runtime's workers beside the engine connection's task: every chunk
        // that arrives wakes it, and a wake-up across threads (to the thread waiting on the step as a
        // whole) costs more than the chunk.
        let (docker, address, reference) = (self.docker.clone(), self.address.clone(), reference.to_string());
        let forwarding = tokio::spawn(async move { forward_export(&docker, &address, &reference, into, idle).await });
        forwarding
            .await
            .map_err(|e| anyhow!("the export from the Docker Engine stopped: {e}"))?
    }

    /// A client that sends `login` as `X-Registry-Auth` on every request (push and pull use it).
    fn with_auth(&self, login: &RegistryLogin) -> Result<Docker> {
        let auth = registry_auth(login)?;
        Ok(self.docker.clone().with_request_modifier(move |mut request| {
            request.headers_mut().insert("X-Registry-Auth", auth.clone());
            request
        }))
    }

    /// Pull `repo` at `reference` from `host`, with the login when there is one; returns the local reference.
    pub async fn pull(
        &self,
        host: &str,
        login: Option<&RegistryLogin>,
        repo: &str,
        reference: &Reference,
        idle: Duration,
    ) -> Result<String> {
        let image = format!("{host}/{repo}");
        let (local, options) = match reference {
            Reference::Tag(t) => (
                format!("{image}:{t}"),
                CreateImageOptionsBuilder::new().from_image(&image).tag(t),
            ),
            Reference::Digest(d) => (
                format!("{image}@{d}"),
                CreateImageOptionsBuilder::new().from_image(&format!("{image}@{d}")),
            ),
        };
        let docker = match login {
            Some(login) => self.with_auth(login)?,
            None => self.docker.clone(),
        };
        let stream = docker.create_image(Some(options.build()), None, None);
        let what = format!("the pull of {local}");
        follow(stream, idle, &what, |e| pull_error(e, host), |_| {}).await?;
        Ok(local)
    }
}

/// Follow an engine progress stream to its end: every message is checked and the first error ends it
/// (`explain` says what to fix); a stream with no message for `idle` is cut.
async fn follow<S, ProgressMessage: Progress>(
    mut stream: S,
    idle: Duration,
    what: &str,
    explain: impl Fn(&str) -> anyhow::Error,
    mut on_status: impl FnMut(&str),
) -> Result<()>
where
    S: futures_util::Stream<Item = Result<ProgressMessage, bollard::errors::Error>> + Unpin,
{
    loop {
        let message = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => bail!(
                "{what} made no progress for {}s: the engine or the registry stalled. Raise PLUGIN_TIMEOUT if the \
                 network is this slow",
                idle.as_secs()
            ),
            Ok(None) => return Ok(()),
            Ok(Some(Err(bollard::errors::Error::DockerStreamError { error }))) => return Err(explain(&error)),
            // The engine answered, with the registry's error (a pull it could not start, say): not a lost
            // connection.
            Ok(Some(Err(bollard::errors::Error::DockerResponseServerError { message, .. }))) => {
                return Err(explain(&message));
            }
            Ok(Some(Err(e))) => bail!(
                "{what} lost the connection to the Docker Engine at {}: {}\n  fix: check that the engine is \
                 running and stays up (DOCKER_HOST, else the default socket)",
                docker_host(),
                crate::report::chain(&e)
            ),
            Ok(Some(Ok(message))) => message,
        };
        if let Some(detail) = message.error_detail() {
            let text = detail
                .message
                .clone()
                .unwrap_or_else(|| format!("error code {}", detail.code.unwrap_or(0)));
            return Err(explain(&text));
        }
        if let Some(status) = message.status() {
            on_status(status);
        }
    }
}

/// What push and pull progress messages have in common.
pub trait Progress {
    fn error_detail(&self) -> Option<&ErrorDetail>;
    fn status(&self) -> Option<&str>;
}

impl Progress for PushImageInfo {
    fn error_detail(&self) -> Option<&ErrorDetail> {
        self.error_detail.as_ref()
    }
    fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }
}

impl Progress for CreateImageInfo {
    fn error_detail(&self) -> Option<&ErrorDetail> {
        self.error_detail.as_ref()
    }
    fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }
}

/// Where the engine is: `DOCKER_HOST`, else the default socket.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// The `X-Registry-Auth` header: JSON credentials in URL-safe base64, marked sensitive.
fn registry_auth(login: &RegistryLogin) -> Result<HeaderValue> {
    let json = serde_json::json!({
        "username": login.username,
        "password": login.password.expose(),
        "serveraddress": login.registry.host,
    });
    let mut value = HeaderValue::from_str(&URL_SAFE.encode(json.to_string()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The engine's closing status line of a push: `<tag>: digest: sha256:<hex> size: <n>`.
fn digest_in_status(status: &str, tag: &str) -> Option<String> {
    let rest = status.strip_prefix(tag)?.strip_prefix(": digest: ")?;
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_string())
}

/// A push error from the engine as an error: [`Refused`] when the registry refused the credentials,
/// [`Unreachable`] when the engine could not reach or trust it, [`Transient`] when another attempt may
/// succeed.
fn push_error(message: &str, login: &RegistryLogin, repo: &str, tag: &str) -> anyhow::Error {
    let text = explain(message, login, repo, tag);
    if is_refusal(message) {
        anyhow::Error::new(Refused(text))
    } else if is_unreachable(message) {
        anyhow::Error::new(Unreachable {
            text,
            cause: message.to_string(),
            route: route_from_the_engine(message, &login.registry.host),
        })
    } else if is_transient(message) {
        anyhow::Error::new(Transient(text))
    } else {
        anyhow!("{text}")
    }
}

/// What the engine says of a push that another attempt may not see: a registry-side race or overload, or
/// the shared local tag removed by another run between this run's tag and push.
fn is_transient(message: &str) -> bool {
    let text = message.to_ascii_lowercase();
    [
        "blob unknown",
        "digest invalid",
        "toomanyrequests",
        "too many requests",
        "503",
        "502",
        "500 internal",
        "connection reset",
        // Another run's push removed the shared local tag between this run's tag and push: tag again.
        "does not exist locally",
        "tag does not exist",
        "no such image",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// What the engine says when its own network, proxy or trusted CAs do not take it to the registry (Go's
/// net/http, crypto/x509 and the engine's registry client): before anything was sent.
fn is_unreachable(message: &str) -> bool {
    let text = message.to_ascii_lowercase();
    [
        "x509:",
        "tls: ",
        "server gave http response to https client",
        "proxyconnect",
        "no such host",
        "connect: connection refused",
        "network is unreachable",
        "no route to host",
        "i/o timeout",
        "request canceled while waiting for connection",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// A pull error from the engine (promote through the engine), with what to fix.
fn pull_error(message: &str, host: &str) -> anyhow::Error {
    match is_unreachable(message) {
        true => anyhow!(
            "{message}\n  fix: {}, or set PLUGIN_PROMOTE_VIA=registry (the step then copies the image itself, \
             through its own network, proxy and CAs)",
            route_from_the_engine(message, host)
        ),
        false => anyhow!("{message}\n  fix: check PLUGIN_SOURCE and that the read identity may pull it"),
    }
}

/// Why the engine, unlike the step, cannot reach or trust the registry `host` (from what it said), and what
/// gives it a route there.
fn route_from_the_engine(message: &str, host: &str) -> String {
    let lower = message.to_ascii_lowercase();
    match lower.contains("x509:") || lower.contains("tls: ") {
        true => format!(
            "the Docker Engine does not trust the certificate of {host}: the step's CAs (AWS_CA_BUNDLE, \
             SSL_CERT_FILE) are not the engine's. Put the registry's CA at /etc/docker/certs.d/{host}/ca.crt on \
             the engine's host (or in that host's trust store)"
        ),
        false => format!(
            "the Docker Engine could not reach {host}: it connects with its own network and proxy (HTTPS_PROXY \
             in dockerd's environment), not the step's. Give the engine a route or a proxy to {host}"
        ),
    }
}

fn is_refusal(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("no basic auth credentials")
        || lower.contains("unauthorized")
        || lower.contains("authentication required")
}

/// A push error from the engine, with what to fix.
fn explain(message: &str, login: &RegistryLogin, repo: &str, tag: &str) -> String {
    let registry = &login.registry;
    let lower = message.to_ascii_lowercase();
    let fix = if is_refusal(message) {
        let account = login.token_account.as_deref().unwrap_or("unknown");
        format!(
            "the registry {registry} refused the ECR token (issued for account {account}). Check that \
             PLUGIN_REGISTRY names the account and region the credentials belong to, or that the repository \
             policy of {registry} allows that account"
        )
    } else if lower.contains("name unknown")
        || (lower.contains("does not exist") && !lower.contains("tag does not exist"))
        || lower.contains("repositorynotfound")
    {
        format!(
            "the repository {repo} does not exist in {registry}: create it (aws ecr create-repository --repository-name {repo}) or check PLUGIN_REPO"
        )
    } else if lower.contains("cannot be overwritten") || lower.contains("immutable") {
        format!("the tag {tag} already exists in the immutable repository {repo}: push a new tag (PLUGIN_TAGS)")
    } else if lower.contains("denied") || lower.contains("forbidden") {
        format!(
            "the registry {registry} denied the push: the identity lacks ecr:InitiateLayerUpload, ecr:UploadLayerPart, \
             ecr:CompleteLayerUpload, ecr:BatchCheckLayerAvailability or ecr:PutImage on {repo} \
             (AmazonEC2ContainerRegistryPowerUser grants them)"
        )
    } else if is_unreachable(message) {
        format!(
            "{}, or set PLUGIN_PUSH_VIA=registry (the step then sends the image itself, through its own network, \
             proxy and CAs)",
            route_from_the_engine(message, &registry.host)
        )
    } else if lower.contains("blob unknown") || lower.contains("digest invalid") {
        format!(
            "the registry {registry} lost track of a layer while other pushes of the same image ran (retried): \
             run again, or push from one job at a time"
        )
    } else if lower.contains("toomanyrequests") || lower.contains("429") {
        format!("the registry {registry} throttled the push: run again later")
    } else {
        format!("pushing to {registry} failed; check that the registry is reachable from the engine")
    };
    format!("{message}\n  fix: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::registry::Registry;
    use crate::domain::secret::Secret;

    /// The engine is not asked its API version (see the module's traps): it answers every request in its
    /// own, because bollard puts no version in the path. A bollard that did would need the negotiation
    /// back, and this says so before any engine does.
    #[tokio::test]
    async fn requests_name_no_api_version_so_any_engine_answers_in_its_own() {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let served = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut header = String::new();
                while reader.read_line(&mut header).unwrap() > 2 {
                    header.clear();
                }
                asked.push(line);
                write!(
                    &stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
                )
                .unwrap();
            }
            asked
        });
        let docker = Docker::connect_with_unix(socket.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION).unwrap();
        assert!(
            bollard::API_DEFAULT_VERSION.minor_version > 41,
            "bollard's default API version is no newer than Debian's engine's (1.41): the e2e tests no longer \
             catch a versioned path"
        );
        docker.ping().await.unwrap();
        // "OK" is no image: refused, but asked.
        assert!(docker.inspect_image("app:1").await.is_err());
        let asked = served.join().unwrap();
        assert_eq!(asked[0], "GET /_ping HTTP/1.1\r\n");
        assert_eq!(asked[1], "GET /images/app:1/json HTTP/1.1\r\n");
    }

    #[test]
    fn the_digest_comes_from_the_closing_status_of_the_same_tag() {
        let hex = "a".repeat(64);
        let status = format!("v1: digest: sha256:{hex} size: 528");
        assert_eq!(digest_in_status(&status, "v1"), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_status(&status, "v2"), None);
        assert_eq!(digest_in_status("v1: digest: sha256:abc size: 1", "v1"), None);
        assert_eq!(digest_in_status("Pushed", "v1"), None);
    }

    #[test]
    fn registry_auth_is_url_safe_and_sensitive() {
        // A password whose standard base64 would contain '+' or '/'.
        let login = RegistryLogin {
            registry: Registry::parse("127.0.0.1:5000").unwrap(),
            region: "us-east-1".into(),
            username: "AWS".into(),
            password: Secret::new("???>>>~~~"),
            token_account: None,
        };
        let value = registry_auth(&login).unwrap();
        assert!(value.is_sensitive());
        let text = value.to_str().unwrap();
        assert!(!text.contains('+') && !text.contains('/'), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&URL_SAFE.decode(text).unwrap()).unwrap();
        assert_eq!(json["password"], "???>>>~~~");
        assert_eq!(json["serveraddress"], "127.0.0.1:5000");
    }

    #[test]
    fn registry_races_and_overloads_are_transient_and_the_rest_is_not() {
        assert!(is_transient(
            "errors:\ndigest invalid\nmanifest blob unknown: blob unknown to registry"
        ));
        assert!(is_transient("toomanyrequests: Rate exceeded"));
        assert!(is_transient("received unexpected HTTP status: 503 Service Unavailable"));
        assert!(is_transient("tag does not exist: 127.0.0.1:5000/app:race1"));
        assert!(!is_transient("unauthorized: authentication required"));
        assert!(!is_transient(
            "name unknown: The repository with name 'app' does not exist"
        ));
        let login = RegistryLogin {
            registry: crate::domain::registry::Registry::parse("127.0.0.1:5000").unwrap(),
            region: "us-east-1".into(),
            username: "AWS".into(),
            password: crate::domain::secret::Secret::new("x"),
            token_account: None,
        };
        assert!(push_error("toomanyrequests: Rate exceeded", &login, "app", "v1").is::<Transient>());
        assert!(push_error("unauthorized: authentication required", &login, "app", "v1").is::<Refused>());
        let failed = push_error("name unknown: no such repository", &login, "app", "v1");
        assert!(!failed.is::<Transient>() && !failed.is::<Refused>() && !failed.is::<Unreachable>());
        // What Docker Engine 20.10 says when its own network, proxy or CAs do not reach the registry.
        for said in [
            "Get \"http://reg.test:5999/v2/\": dial tcp 127.0.0.2:5999: connect: connection refused",
            "Get \"https://1.dkr.ecr.eu-west-1.amazonaws.com/v2/\": x509: certificate signed by unknown authority",
            "Get \"https://r/v2/\": proxyconnect tcp: dial tcp 10.0.0.1:3128: i/o timeout",
            "Get \"https://r/v2/\": dial tcp: lookup r on 10.0.0.2:53: no such host",
        ] {
            let e = push_error(said, &login, "app", "v1");
            let unreachable = e.downcast_ref::<Unreachable>().expect(said);
            assert_eq!(unreachable.cause, said);
            assert!(!e.is::<Transient>(), "{said}");
        }
        // A registry's own refusal mid-push is not the engine's route.
        assert!(!push_error("connection reset by peer", &login, "app", "v1").is::<Unreachable>());
    }

    #[test]
    fn push_errors_say_what_to_fix() {
        let login = RegistryLogin {
            registry: Registry::parse("127.0.0.1:5000").unwrap(),
            region: "us-east-1".into(),
            username: "AWS".into(),
            password: Secret::new("pw"),
            token_account: Some("111111111111".into()),
        };
        let e = explain("unauthorized: authentication required", &login, "app", "v1");
        assert!(e.contains("refused the ECR token") && e.contains("111111111111"), "{e}");
        let e = explain(
            "name unknown: The repository with name 'app' does not exist",
            &login,
            "app",
            "v1",
        );
        assert!(e.contains("create-repository"), "{e}");
        let e = explain(
            "denied: not authorized to perform ecr:InitiateLayerUpload",
            &login,
            "app",
            "v1",
        );
        assert!(e.contains("ecr:InitiateLayerUpload") && e.contains("PowerUser"), "{e}");
        let e = explain(
            "Get \"https://127.0.0.1:5000/v2/\": x509: certificate signed by unknown authority",
            &login,
            "app",
            "v1",
        );
        assert!(e.contains("/etc/docker/certs.d/127.0.0.1:5000/ca.crt"), "{e}");
        assert!(e.contains("PLUGIN_PUSH_VIA=registry"), "{e}");
        let e = explain(
            "Get \"https://127.0.0.1:5000/v2/\": proxyconnect tcp: dial tcp: connect: connection refused",
            &login,
            "app",
            "v1",
        );
        assert!(e.contains("dockerd's environment") && !e.contains("certs.d"), "{e}");
        let e = pull_error(
            "Get \"https://src.example:5000/v2/\": x509: certificate signed by unknown authority",
            "src.example:5000",
        )
        .to_string();
        assert!(
            e.contains("/etc/docker/certs.d/src.example:5000/ca.crt") && e.contains("PLUGIN_PROMOTE_VIA=registry"),
            "{e}"
        );
        let e = pull_error("manifest unknown", "src.example:5000").to_string();
        assert!(
            e.contains("check PLUGIN_SOURCE") && !e.contains("PLUGIN_PROMOTE_VIA"),
            "{e}"
        );
    }
}
