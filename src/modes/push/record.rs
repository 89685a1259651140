//! The record in `PLUGIN_STATE_DIR`, as push reads and notes it: the images this engine pushed to a
//! repository (docker push skips their layers there), the pace of each way on this engine, and the
//! registries this engine could not reach. Best effort:
//! a record that cannot be read is taken as empty, a note that cannot be written is said, and the push
//! stands either way (the record only ever makes a run slower or faster, never wrong: what a registry holds
//! is confirmed there).

use crate::domain::link::{Paces, Way};
use crate::domain::record::{EnginePushed, Pace, Record, Unreached};
use crate::domain::source::{LocalImage, PulledImage};
use crate::domain::tag::TagOutcome;
use crate::engine::Engine;
use crate::modes::write::tags::HandedBack;
use crate::settings::PushSettings;

/// This engine's paces in the record in `PLUGIN_STATE_DIR` (1 where none is kept), and its ID (`None`
/// without a state directory or an engine that says who it is).
pub(super) async fn paces(engine: &Engine, settings: &PushSettings) -> (Paces, Option<String>) {
    let Some(dir) = settings.state_dir.clone() else {
        return (Paces::default(), None);
    };
    let (record, id) = tokio::join!(read(dir), engine.id());
    let Some(id) = id else {
        return (Paces::default(), None);
    };
    let paces = record.map_or(Paces::default(), |record| record.paces(&id, now()));
    (paces, Some(id))
}

/// Seconds since the epoch (0 on a clock before it: no pace is then used).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What the record in `PLUGIN_STATE_DIR` says of this engine and the destinations.
#[derive(Default)]
pub(super) struct Noted {
    /// The images this engine pushed to the target repository in earlier runs: docker push skips their
    /// layers there, as it does a pulled base's.
    pub pushed: Vec<PulledImage>,
    /// The newest note, within a day, that this engine could not reach one of the destinations.
    pub unreached: Option<Unreached>,
}

/// What the record says of this engine and the registries `hosts`. The engine is asked who it is only
/// when the record names the target repository there, or one of those registries as unreached.
pub(super) async fn noted(engine: &Engine, settings: &PushSettings, hosts: &[String]) -> Noted {
    let Some(dir) = settings.state_dir.clone() else {
        return Noted::default();
    };
    let Some(record) = read(dir).await else {
        return Noted::default();
    };
    let repo = &settings.target.repo;
    if !record.mentions(hosts, repo) {
        return Noted::default();
    }
    match engine.id().await {
        Some(id) => Noted {
            pushed: record.pushed_to(&id, hosts, repo),
            unreached: record.unreached(&id, hosts, now()).cloned(),
        },
        None => Noted::default(),
    }
}

/// Note in `PLUGIN_STATE_DIR` that this engine could not reach the registry it handed `back`, so that for
/// a day `auto` sends the image itself there at once. Best effort, as every note.
pub(super) async fn note_unreached(engine: &Engine, settings: &PushSettings, back: &HandedBack) {
    if settings.state_dir.is_none() {
        return;
    }
    let Some(id) = engine.id().await else {
        return;
    };
    let text = |t: &str| {
        let mut text = crate::domain::excerpt(t.as_bytes(), Unreached::MOST_TEXT);
        while text.len() > Unreached::MOST_TEXT {
            text.pop();
        }
        text
    };
    let unreached = Unreached {
        engine: id,
        host: back.host.clone(),
        cause: text(&back.cause),
        remedy: text(&back.remedy),
        at: now(),
    };
    note_in_state(settings, move |record| record.note_unreached(unreached)).await;
}

/// Seconds since `at` (0 for a time after now).
pub(super) fn seconds_since(at: u64) -> u64 {
    now().saturating_sub(at)
}

/// Note in `PLUGIN_STATE_DIR` that the engine `engine_id` pushed `source` to `host` (the first of
/// `outcomes` the engine wrote, not one found there already), for the next run's `auto`. Best effort: a
/// note that cannot be written is said, and the push stands.
pub(super) async fn note(
    engine_id: String,
    source: &LocalImage,
    settings: &PushSettings,
    host: &str,
    outcomes: &[TagOutcome],
) {
    let Some(digest) = outcomes.iter().find_map(|o| match &o.result {
        Ok(landed) if !landed.skipped => Some(landed.digest.clone()),
        _ => None,
    }) else {
        return;
    };
    let pushed = EnginePushed {
        engine: engine_id,
        image: PulledImage {
            host: host.to_string(),
            repo: settings.target.repo.clone(),
            digest,
            image_id: source.id.clone(),
            layers: source.layers.clone(),
            size: source.size.max(0) as u64,
        },
    };
    note_in_state(settings, move |record| record.note(pushed)).await;
}

/// Make `change` to the record in `PLUGIN_STATE_DIR`, if there is one. Best effort: a note that cannot be
/// written is said, and the push stands.
async fn note_in_state(settings: &PushSettings, change: impl FnOnce(&mut Record) + Send + 'static) {
    let Some(dir) = settings.state_dir.clone() else {
        return;
    };
    let shown = dir.clone();
    let noted = tokio::task::spawn_blocking(move || crate::files::state::note(&dir, change)).await;
    match noted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => crate::report::state_unwritten(&shown, &anyhow::anyhow!(e)),
        Err(e) => crate::report::state_unwritten(&shown, &anyhow::anyhow!("noting stopped: {e}")),
    }
}

/// Note in `PLUGIN_STATE_DIR` how long `way` took on the engine `engine` against its estimate
/// (`elapsed / estimate`), for the next run's weighing.
pub(super) async fn note_pace(settings: &PushSettings, engine: String, way: Way, elapsed: f64, estimate: f64) {
    let pace = Pace {
        engine,
        way,
        pace: elapsed / estimate,
        at: now(),
    };
    note_in_state(settings, move |record| record.note_pace(pace)).await;
}

/// The record in `dir`, read off the async threads (`None` only when that thread stopped; a record that
/// does not read is empty).
async fn read(dir: std::path::PathBuf) -> Option<Record> {
    tokio::task::spawn_blocking(move || crate::files::state::read(&dir))
        .await
        .ok()
}
