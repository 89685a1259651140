//! Modes: one file per `PLUGIN_MODE`, each with the same signature, `run(&Settings, &Context) -> Done`,
//! the way mini-redis keeps one file per command. No mode imports another: what push and promote share
//! (destinations, the per-tag loop, the writers, uploads, the scan gate, progress) is in [`write`];
//! `referrers` is promote's. A new mode is a new file here, a `Mode` variant and a `ModeSettings` variant in
//! `settings`.

pub mod check;
pub mod login;
pub mod promote;
pub mod push;
pub mod referrers;
pub mod write;

mod context;

pub use context::{Context, Done, FilesRead, Looked};

use crate::settings::ModeSettings;
use anyhow::Result;
use std::time::Duration;

/// Look at the mode's source before the credentials and token (it needs neither), so that work overlaps
/// theirs: the engine and its image, for a push from the engine; the files read and checked, for a push
/// from files; nothing for the others. Every mode's registry client is prepared meanwhile.
pub async fn look(mode: &ModeSettings, timeout: Duration) -> Looked {
    let look = async {
        match mode {
            ModeSettings::Push(settings) => push::look(settings, timeout).await,
            ModeSettings::Promote(_) | ModeSettings::Login(_) | ModeSettings::Check(_) => Looked::default(),
        }
    };
    let ((), looked) = tokio::join!(crate::registry::prepare(timeout), look);
    looked
}

/// Run the mode the settings chose.
pub async fn run(mode: &ModeSettings, ctx: &Context) -> Result<Done> {
    match mode {
        ModeSettings::Push(settings) => push::run(settings, ctx).await,
        ModeSettings::Promote(settings) => promote::run(settings, ctx).await,
        ModeSettings::Login(settings) => login::run(settings, ctx).await,
        ModeSettings::Check(settings) => check::run(settings, ctx).await,
    }
}
