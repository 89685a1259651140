//! The way and the level for the link: under `PLUGIN_PUSH_VIA=auto`, which way (the engine or the step's
//! own transfer) is faster at the upload rate measured to the destination, and under
//! `PLUGIN_COMPRESSION_LEVEL=auto`, the level that rate favours. Both say why (`via:`, `compression:`).

use super::record;
use crate::domain::link::{Uplink, Way, Ways, Weighed};
use crate::domain::source::{BaseLayers, Compressing, Compression, LocalImage};
use crate::engine::Engine;
use crate::modes::Context;
use crate::registry::RegistryClient;
use crate::settings::PushSettings;

/// The faster way at the upload rate measured to the only destination, each way at its pace on this
/// engine (the `via:` line says why, either way); that rate, where it was measured; and the engine's ID to
/// note the pace of the way taken against (`None` without a state directory). Measured only where the
/// choice depends on the rate: not where docker push finishes first at any rate on a runner that keeps its
/// engine (a new image whose rebuilds would each export it again after the step's own transfer). `None`
/// when not weighed.
pub(super) async fn weigh_over_the_link(
    engine: &Engine,
    local: &LocalImage,
    held: Option<&BaseLayers>,
    settings: &PushSettings,
    ctx: &Context,
) -> Option<(Weighed, Option<Uplink>, Option<String>)> {
    let ways = Ways::new(local, missing_bytes(local, held), settings.compression.level, cores());
    if !ways.depend_on_the_link() {
        return None;
    }
    // The record is read first (a local file; the engine's ID was asked while the step signed in): on a
    // runner that keeps its engine, it can make the probe's megabyte needless.
    let (paces, engine_id) = record::paces(engine, settings).await;
    let (weighed, uplink) = match ways.engine_at_every_rate(&paces) {
        true => (ways.weigh_at_every_rate(&paces), None),
        false => {
            let uplink = slowest_uplink(&settings.target.repo, ctx).await?;
            (ways.weigh(&uplink, &paces), Some(uplink))
        }
    };
    match weighed.way {
        Way::Engine => crate::report::via_engine(&weighed.why),
        Way::Step => crate::report::via_own_transfer(&weighed.why),
    }
    Some((weighed, uplink, engine_id))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The slowest upload rate among the destinations, each measured at once; `None` when one cannot be.
async fn slowest_uplink(repo: &str, ctx: &Context) -> Option<Uplink> {
    let measured = futures_util::future::join_all(ctx.logins.iter().map(|login| async move {
        let client = RegistryClient::new(login, ctx.common.timeout).ok()?;
        client.measure_uplink(repo).await
    }))
    .await;
    let measured: Option<Vec<Uplink>> = measured.into_iter().collect();
    measured?
        .into_iter()
        .min_by(|a, b| a.bytes_per_second.total_cmp(&b.bytes_per_second))
}

/// How the layers the step compresses are written: as the settings say, except that under
/// `PLUGIN_COMPRESSION_LEVEL=auto`, where a large layer is to be compressed, the level is the one the
/// slowest destination's measured upload rate favours (`uplink`, when measured already; else measured
/// now: for an engine image, while the engine prepares its export). The `compression:` line says why. Small layers alone (a
/// rebuild's new top layer) are not worth the probe's bytes: level 2 is near the best at any rate.
pub(super) async fn compression_for_the_link(
    local: &LocalImage,
    held: Option<&BaseLayers>,
    uplink: Option<Uplink>,
    settings: &PushSettings,
    ctx: &Context,
) -> Compressing {
    let given = settings.compression;
    // (zstd's level fits every link: see `Compressing::ZSTD_AUTO`.)
    if given.zstd() || given.level != Compression::Auto || settings.dry_run || !large_layer_missing(local, held) {
        return given;
    }
    let uplink = match uplink {
        Some(uplink) => uplink,
        None => match slowest_uplink(&settings.target.repo, ctx).await {
            Some(uplink) => uplink,
            None => return given,
        },
    };
    let level = uplink.level(cores());
    crate::report::level_for_the_link(level, &uplink);
    Compressing {
        level: Compression::Level(level),
        ..given
    }
}

/// Whether a layer of `local` not in `held` is large ([`Compression::SMALL_LAYER`] or more; where the
/// engine did not tell the layers' sizes, whether those layers are that large in all).
fn large_layer_missing(local: &LocalImage, held: Option<&BaseLayers>) -> bool {
    let is_held = |diff_id: &String| held.is_some_and(|h| h.by_diff_id.contains_key(diff_id));
    if local.layer_sizes.len() == local.layers.len() {
        let sizes = local.layers.iter().zip(&local.layer_sizes);
        return sizes
            .filter(|(d, _)| !is_held(d))
            .any(|(_, s)| *s >= Compression::SMALL_LAYER);
    }
    missing_bytes(local, held) >= Compression::SMALL_LAYER
}

/// The uncompressed bytes of the layers of `local` not in `held`.
fn missing_bytes(local: &LocalImage, held: Option<&BaseLayers>) -> u64 {
    let is_held = |diff_id: &String| held.is_some_and(|h| h.by_diff_id.contains_key(diff_id));
    if local.layer_sizes.len() == local.layers.len() {
        let sizes = local.layers.iter().zip(&local.layer_sizes);
        return sizes.filter(|(d, _)| !is_held(d)).map(|(_, s)| s).sum();
    }
    let missing = local.layers.iter().filter(|d| !is_held(d)).count() as u64;
    local.size.max(0) as u64 * missing / local.layers.len().max(1) as u64
}
