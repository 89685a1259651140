//! What every mode runs with ([`Context`]) and how a mode ends ([`Done`]): the one dispatch signature is
//! `run(&ThisModeSettings, &Context) -> Result<Done>`.

use crate::aws::Identity;
use crate::domain::login::RegistryLogin;
use crate::domain::scan::{ScanGate, ScanReport};
use crate::domain::source::LocalImage;
use crate::domain::tag::TagOutcome;
use crate::domain::target::Target;
use crate::engine::Engine;
use crate::settings::Common;
use anyhow::Result;

/// What every mode runs with: the confirmed identity, a login per destination, the common settings, and
/// what was learnt of the source while the credentials were resolved.
pub struct Context {
    pub identity: Identity,
    pub logins: Vec<RegistryLogin>,
    pub common: Common,
    pub looked: Looked,
}

/// What a mode learnt of its source before the credentials and token were there (it needs neither):
/// for a push from the engine, the engine connected (its API version negotiated) and the image inspected.
/// A failure is kept, not raised: the mode says it where it always did (after a destination that does not
/// answer). Taken once by the mode.
#[derive(Default)]
pub struct Looked(std::sync::Mutex<Option<Result<(Engine, LocalImage)>>>);

impl Looked {
    /// The engine and its image, as they were looked at.
    pub fn engine(looked: Result<(Engine, LocalImage)>) -> Looked {
        Looked(std::sync::Mutex::new(Some(looked)))
    }

    /// Take the engine and its image; `None` when nothing was looked at (or it was taken already).
    pub fn take_engine(&self) -> Option<Result<(Engine, LocalImage)>> {
        self.0.lock().expect("not poisoned").take()
    }
}

impl Context {
    /// A registry client per destination that one can be made for, by host, without token renewal: for
    /// head starts (uploads that follow a compression, a fan-out), whose failures the normal copy redoes.
    pub fn head_start_clients(&self) -> Vec<(String, crate::registry::RegistryClient)> {
        self.logins
            .iter()
            .filter_map(|l| {
                let client = crate::registry::RegistryClient::new(l, self.common.timeout).ok()?;
                Some((l.registry.host.clone(), client))
            })
            .collect()
    }
}

/// How a mode ended (a failure is an `Err`).
pub enum Done {
    /// Push or promote: an outcome per tag and destination; the run is green only if every one landed.
    Tags {
        outcomes: Vec<TagOutcome>,
        target: Target,
        /// The scan gate and each destination's scan, when `PLUGIN_SCAN_SEVERITY_THRESHOLD` is set.
        scans: Option<(ScanGate, Vec<ScanReport>)>,
        /// The image manifest's digest when the tags hold an index the step made of it (`PLUGIN_SOCI`).
        image: Option<String>,
    },
    /// A dry run printed its plan (for `target`) and changed nothing.
    DryRun {
        target: Target,
    },
    Login,
    Check,
}

impl Done {
    /// Every tag landed (written or found there, and read back) in every destination.
    pub fn every_tag_landed(&self) -> bool {
        match self {
            Done::Tags { outcomes, .. } => outcomes.iter().all(|o| o.result.is_ok()),
            Done::DryRun { .. } | Done::Login | Done::Check => false,
        }
    }
}
