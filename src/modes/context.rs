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
/// for a push from the engine, the engine connected (it answered `/_ping`) and the image inspected;
/// for a push from files (a layout, an archive), their reading and checking under way. A failure is kept,
/// not raised: the mode says it where it always did (after a destination that does not answer). Taken
/// once by the mode.
#[derive(Default)]
pub struct Looked(std::sync::Mutex<Option<Seen>>);

enum Seen {
    Engine(Box<Result<(Engine, LocalImage)>>),
    Files(FilesRead),
}

/// Files being read and checked on a blocking thread (nothing is sent from there): what they hold once
/// read, and, for a layout, the blobs announced meanwhile for uploads that may start early.
pub struct FilesRead {
    pub reading: tokio::task::JoinHandle<Result<crate::layout::Opened>>,
    pub announced: Option<tokio::sync::mpsc::UnboundedReceiver<crate::layout::Growing>>,
}

impl Looked {
    /// The engine and its image, as they were looked at.
    pub fn engine(looked: Result<(Engine, LocalImage)>) -> Looked {
        Looked(std::sync::Mutex::new(Some(Seen::Engine(Box::new(looked)))))
    }

    /// Files whose reading started.
    pub fn files(read: FilesRead) -> Looked {
        Looked(std::sync::Mutex::new(Some(Seen::Files(read))))
    }

    /// Take the engine and its image; `None` when nothing was looked at (or it was taken already).
    pub fn take_engine(&self) -> Option<Result<(Engine, LocalImage)>> {
        self.take(|seen| match seen {
            Seen::Engine(looked) => Ok(*looked),
            other => Err(other),
        })
    }

    /// Take the files being read; `None` when their reading did not start (or it was taken already).
    pub fn take_files(&self) -> Option<FilesRead> {
        self.take(|seen| match seen {
            Seen::Files(read) => Ok(read),
            other => Err(other),
        })
    }

    /// Take what `pick` accepts; what it gives back stays.
    fn take<T>(&self, pick: impl FnOnce(Seen) -> std::result::Result<T, Seen>) -> Option<T> {
        let mut seen = self.0.lock().expect("not poisoned");
        match pick(seen.take()?) {
            Ok(taken) => Some(taken),
            Err(kept) => {
                *seen = Some(kept);
                None
            }
        }
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
