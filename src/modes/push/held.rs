//! What a destination already holds of the image, learnt before anything is exported, compressed or
//! sent: every tag already at this image (a re-run), the image itself under another tag, or the layers it
//! shares with a base the engine pulled or with the repository's other images (each confirmed by a HEAD).
//! See "How the step knows what a destination holds" in ARCHITECTURE.md.

use crate::domain::manifest::Manifest;
use crate::domain::source::{BaseLayers, LocalImage, PulledImage};
use crate::domain::tag::TagOutcome;
use crate::modes::Context;
use crate::modes::write::Verb;
use crate::registry::RegistryClient;
use crate::settings::PushSettings;
use anyhow::anyhow;
use futures_util::StreamExt;

/// The layers `local` shares with `base`, the image it was built on, as the registry it was pulled from
/// holds them. `None` when its manifest cannot be read there, or names no layer the step can borrow (then
/// every layer is compressed here, as without a base).
pub(super) async fn base_layers(
    base: PulledImage,
    local: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<BaseLayers> {
    let login = ctx.logins.iter().find(|l| l.registry.host == base.host)?;
    let read = async {
        let client = RegistryClient::new(login, ctx.common.timeout)?;
        let manifest = client.image_manifest(&base.repo, &base.digest, &base.image_id).await?;
        let manifest = manifest.ok_or_else(|| anyhow!("the registry no longer has it"))?;
        BaseLayers::new(base.clone(), &manifest, &local.layers, settings.compression.zstd()).map_err(|e| anyhow!(e))
    };
    match read.await {
        Ok(layers) => {
            crate::report::base(&layers, local.layers.len());
            Some(layers)
        }
        Err(e) => {
            crate::report::base_unused(&base.reference(), &e);
            None
        }
    }
}

/// What the first destination holds of an image, from its images' manifests.
#[derive(Default)]
pub(super) struct Held {
    /// The image itself (its config is the image id), in every destination: only tags are to be written.
    pub(super) image: Option<Manifest>,
    /// Its other images, to learn which of the image's layers it holds ([`held_layers`]), each with the SOCI
    /// index pushed beside it.
    others: Vec<(Manifest, Option<Manifest>)>,
}

/// The most of a destination's images read to learn what it holds.
const KNOWN_IMAGES: usize = 10;

/// Reads (manifests, configs, HEADs) asked at once while learning what a destination holds: each round of
/// them is a round trip before the first layer can be sent, so a rebuild's few layers and a repository's
/// recent images are asked in one round each (4 at once took three rounds for 10 images, 2 for 6 layers).
const READS_AT_ONCE: usize = 10;

/// `reads`, [`READS_AT_ONCE`] at a time: what each gave, in the order they finished.
async fn at_once<F: std::future::Future>(reads: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures_util::stream::iter(reads)
        .buffer_unordered(READS_AT_ONCE)
        .collect()
        .await
}

/// The first destination's images (the tags being written first, then the most recently pushed others of
/// the repository, at most [`KNOWN_IMAGES`]): the image itself when one is it, in every destination, else
/// the others.
pub(super) async fn held(local: &LocalImage, settings: &PushSettings, ctx: &Context) -> Held {
    let Some(login) = ctx.logins.first() else {
        return Held::default();
    };
    let repo = &settings.target.repo;
    let Ok(client) = RegistryClient::new(login, ctx.common.timeout) else {
        return Held::default();
    };
    // The tags being written, then the most recently pushed images (ECR's API), then the registry's list
    // (newest last, where a registry keeps the order).
    let at = crate::domain::repository::RepositoryAt::of(repo, login);
    let (recent, listed) = tokio::join!(
        crate::aws::images::recent_tags(&ctx.identity, &at),
        client.tags(repo, 1000)
    );
    let mut candidates = settings.target.tags.clone();
    for tag in recent.into_iter().chain(listed.unwrap_or_default().into_iter().rev()) {
        if !candidates.contains(&tag) && !tag.starts_with("sha256-") {
            candidates.push(tag);
        }
    }
    candidates.truncate(KNOWN_IMAGES);
    let client = &client;
    // An index (a SOCI push's tags hold one): this image if it holds it, else its first image, with the
    // SOCI index beside it.
    let read = candidates.iter().map(|tag| async move {
        let manifest = client.manifest(repo, tag).await.ok()??;
        if !manifest.is_index() {
            return Some((manifest, None));
        }
        let images = client.index_images(repo, &manifest).await.ok()?;
        let this = images
            .iter()
            .position(|(m, _)| m.config_digest().as_deref() == Some(local.id.as_str()));
        images.into_iter().nth(this.unwrap_or(0))
    });
    let found = at_once(read).await;
    let (same, others): (Vec<_>, Vec<_>) = found
        .into_iter()
        .flatten()
        .partition(|(m, _)| m.config_digest().as_deref() == Some(local.id.as_str()) && as_asked(m, settings));
    if let Some((manifest, _)) = same.into_iter().next() {
        let mut everywhere = true;
        for other in &ctx.logins[1..] {
            let held = match RegistryClient::new(other, ctx.common.timeout) {
                Ok(c) => c.manifest_digest(repo, &manifest.digest).await.ok().flatten(),
                Err(_) => None,
            };
            everywhere &= held.is_some();
        }
        if everywhere {
            return Held {
                image: Some(manifest),
                others,
            };
        }
    }
    Held { image: None, others }
}

/// The layers of `local` the first destination holds: the image of `held` sharing the most layers with
/// it (its config read for the diff ids), each layer confirmed by a HEAD (a layer deleted since is
/// compressed and sent as any other). The step's compression is deterministic, so a layer pushed before
/// by the step has the digest it would get now; one pushed by another tool is borrowed as that registry
/// holds it, the image's diff ids unchanged.
pub(super) async fn held_layers(
    held: Held,
    local: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<BaseLayers> {
    let repo = settings.target.repo.as_str();
    let login = ctx.logins.first()?;
    let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
    let client = &client;
    let read = held.others.into_iter().map(|(manifest, soci)| async move {
        let config = manifest.config_digest()?;
        let bytes = client
            .small_blob(repo, &config, crate::layout::CONFIG_LIMIT)
            .await
            .ok()??;
        let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let diff_ids: Vec<String> = json["rootfs"]["diff_ids"]
            .as_array()?
            .iter()
            .filter_map(|d| d.as_str().map(String::from))
            .collect();
        Some((manifest, diff_ids, soci))
    });
    let found = at_once(read).await;
    let shared = |diff_ids: &[String]| diff_ids.iter().filter(|d| local.layers.contains(d)).count();
    let (manifest, diff_ids, soci) = found
        .into_iter()
        .flatten()
        .filter(|(_, d, _)| shared(d) > 0)
        .max_by_key(|(_, d, _)| shared(d))?;
    let image = PulledImage {
        host: login.registry.host.clone(),
        repo: repo.to_string(),
        digest: manifest.digest.clone(),
        image_id: manifest.config_digest().unwrap_or_default(),
        size: manifest.layers().map_or(0, |l| l.iter().map(|(d, _)| d.size).sum()),
        layers: diff_ids,
    };
    let mut layers = BaseLayers::new(image, &manifest, &local.layers, settings.compression.zstd()).ok()?;
    let heads = std::mem::take(&mut layers.by_diff_id)
        .into_iter()
        .map(|(diff_id, descriptor)| async move {
            let there = matches!(client.blob_exists(repo, &descriptor.digest).await, Ok(true));
            there.then_some((diff_id, descriptor))
        });
    let confirmed = at_once(heads).await;
    layers.by_diff_id = confirmed.into_iter().flatten().collect();
    layers.confirmed = true;
    // The zTOCs of those layers, from the SOCI index pushed with that image (each confirmed too).
    let held: Vec<String> = layers.by_diff_id.values().map(|d| d.digest.clone()).collect();
    let ztocs = soci
        .map(|soci| crate::domain::soci::ztocs_in(&soci))
        .unwrap_or_default()
        .into_iter()
        .filter(|(layer, _)| held.contains(layer))
        .map(|(layer, ztoc)| async move {
            let there = matches!(client.blob_exists(repo, &ztoc.digest).await, Ok(true));
            there.then_some((layer, ztoc))
        });
    let confirmed = at_once(ztocs).await;
    layers.ztocs = confirmed.into_iter().flatten().collect();
    if layers.by_diff_id.is_empty() {
        return None;
    }
    crate::report::base(&layers, local.layers.len());
    Some(layers)
}

/// When every tag in every destination already holds a manifest whose config is `image` (by id), the
/// outcomes of a run that has nothing to do; `None` as soon as one tag differs (or cannot be read).
pub(super) async fn already_there(
    image: &LocalImage,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<(Vec<TagOutcome>, Option<String>)> {
    let mut outcomes = Vec::new();
    // The image's own manifest when the tags hold an index of it.
    let mut indexed = None;
    for login in &ctx.logins {
        let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
        let label = crate::domain::target::label(&login.registry.host, &settings.target.repo);
        for tag in &settings.target.tags {
            let manifest = client.manifest(&settings.target.repo, tag).await.ok()??;
            let holds = match manifest.is_index() {
                false => {
                    !settings.compression.soci
                        && manifest.config_digest().as_deref() == Some(image.id.as_str())
                        && as_asked(&manifest, settings)
                }
                true => {
                    let images = client.index_images(&settings.target.repo, &manifest).await.ok()?;
                    let this = images.into_iter().find(|(m, soci)| {
                        m.config_digest().as_deref() == Some(image.id.as_str())
                            && (soci.is_some() || !settings.compression.soci)
                            && as_asked(m, settings)
                    });
                    let found = this.is_some();
                    if let Some((m, _)) = this {
                        indexed = Some(m.digest);
                    }
                    found
                }
            };
            if !holds {
                return None;
            }
            let landed = crate::domain::tag::Landed {
                digest: manifest.digest,
                skipped: true,
            };
            outcomes.push(TagOutcome::new(&label, tag, Ok(landed)));
        }
    }
    for outcome in &outcomes {
        crate::report::tag(outcome, None, Verb::Pushed.as_str());
    }
    Some((outcomes, indexed))
}

/// Whether a manifest of this image already in a destination serves as the push the settings ask for: with
/// gzip (the default) none of its layers may be zstd, which not every runtime pulls (a run without
/// PLUGIN_COMPRESSION=zstd after one with it writes a gzip image, not the zstd one again); with zstd, any.
fn as_asked(manifest: &Manifest, settings: &PushSettings) -> bool {
    settings.compression.zstd() || !manifest.has_zstd_layers()
}
