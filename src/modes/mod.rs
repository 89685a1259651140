//! Modes: one file per `PLUGIN_MODE`, each with the same signature, `run(&Settings, &Context) -> Done`,
//! the way mini-redis keeps one file per command. Push and promote write tags through the one per-tag loop
//! in [`tags`]. A new mode is a new file here, a `Mode` variant and a `ModeSettings` variant in `settings`.

pub mod check;
pub mod login;
pub mod progress;
pub mod promote;
pub mod push;
pub mod referrers;
pub mod scan;
pub mod tags;

mod context;

pub use context::{Context, Done};

use crate::settings::ModeSettings;
use anyhow::Result;

/// Run the mode the settings chose.
pub async fn run(mode: &ModeSettings, ctx: &Context) -> Result<Done> {
    match mode {
        ModeSettings::Push(settings) => push::run(settings, ctx).await,
        ModeSettings::Promote(settings) => promote::run(settings, ctx).await,
        ModeSettings::Login(settings) => login::run(settings, ctx).await,
        ModeSettings::Check(settings) => check::run(settings, ctx).await,
    }
}
