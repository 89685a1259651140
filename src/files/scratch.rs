//! The step's scratch space: directories of its own under the temporary directory (`TMPDIR`, else `/tmp`),
//! where archives are unpacked and layers compressed.
//!
//! Each is private (0700) and holds a lock (`flock` on `.lock`) while its run lives; it is removed when
//! dropped, which covers every exit the step controls (success, failure, SIGTERM: the runtime's tasks are
//! dropped). A run killed outright leaves its directory behind: the next run to make one removes every
//! stale directory whose lock nobody holds. Where the space is missing, read-only or full, the message
//! names `TMPDIR` and the fix.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const PREFIX: &str = "ecr-step-";

/// The scratch directories of this run that are still in use, for [`remove_all`]; `None` once the run is
/// ending (a directory made after that, by a thread not waited for, is removed at once, not left behind).
static LIVE: std::sync::Mutex<Option<Vec<PathBuf>>> = std::sync::Mutex::new(Some(Vec::new()));
const LOCK: &str = ".lock";

/// A directory of the step's own under the temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    pub path: PathBuf,
    /// Holds the lock that tells later runs this directory is in use.
    _lock: std::fs::File,
}

impl ScratchDir {
    /// A new scratch directory (`what` names its use); stale ones of earlier runs are removed first.
    pub fn new(what: &str) -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        remove_stale(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{PREFIX}{what}-{}-{nanos}", std::process::id());
        // Made under a hidden name and locked there, then renamed: a directory under the name other runs
        // sweep is always locked already (a lock taken after it appeared could be taken first by a sweep).
        let making = base.join(format!(".{name}"));
        let path = base.join(&name);
        std::fs::DirBuilder::new().mode(0o700).create(&making)?;
        let lock = std::fs::File::create(making.join(LOCK)).and_then(|f| {
            // SAFETY: a valid descriptor.
            match unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
                0 => Ok(f),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        let lock = lock.and_then(|f| std::fs::rename(&making, &path).map(|()| f));
        if lock.is_err() {
            let _ = std::fs::remove_dir_all(&making);
        }
        match lock {
            Ok(lock) => {
                let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
                let Some(live) = live.as_mut() else {
                    let _ = std::fs::remove_dir_all(&path);
                    return Err(std::io::Error::other("the run is ending"));
                };
                live.push(path.clone());
                Ok(ScratchDir { path, _lock: lock })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(live) = LIVE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            live.retain(|p| *p != self.path);
        }
    }
}

/// Remove every scratch directory of this run still in use: at the end of a run that stopped with work
/// still going on (a signal, a failure elsewhere), whose threads are not waited for. No scratch
/// directory can be made after this.
pub fn remove_all() {
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    for path in live.into_iter().flatten() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Remove the scratch directories under `base` whose run is gone: their lock can be taken (or, made by a
/// version without locks, their process no longer exists).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let path = entry.path();
        // Only our own directories, never through a link.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let stale = match std::fs::File::open(path.join(LOCK)) {
            // SAFETY: a valid descriptor; the lock is released when the file is closed.
            Ok(f) => (unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) == 0,
            Err(_) => pid_of(name).is_some_and(|pid| {
                // SAFETY: signal 0 only asks whether the process exists.
                unsafe { libc::kill(pid, 0) != 0 && *libc::__errno_location() == libc::ESRCH }
            }),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The process id in `ecr-step-<what>-<pid>-<nanos>`.
fn pid_of(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let _nanos = parts.next()?;
    parts.next()?.parse().ok()
}

/// The temporary directory as the user set it, for messages.
pub fn described() -> String {
    let dir = std::env::temp_dir();
    match std::env::var_os("TMPDIR") {
        Some(_) => format!("TMPDIR={}", dir.display()),
        None => format!("{} (TMPDIR is unset)", dir.display()),
    }
}

/// Check, before any network call, that a scratch directory can be made and written; `Err` names TMPDIR,
/// what it needs and the fix.
pub fn check() -> Result<(), String> {
    let probe = ScratchDir::new("check").and_then(|dir| std::fs::write(dir.path.join("probe"), [0u8; 4096]));
    probe.map_err(|e| {
        format!(
            "the temporary directory {} cannot hold the step's scratch files ({e}): reading an archive or \
             exporting an image needs a writable directory with room for the compressed image\n  fix: set \
             TMPDIR to a writable directory with free space (or mount one at /tmp)",
            described()
        )
    })
}

/// When `error` comes from the scratch space running out of room (or being read-only), the fix, naming
/// TMPDIR.
pub fn explain(error: &anyhow::Error) -> Option<String> {
    let cause = error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .find_map(|e| match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Some("is full"),
            Some(libc::EROFS) => Some("is read-only"),
            _ => None,
        })?;
    Some(format!(
        "the temporary directory {} {cause}: the step keeps the compressed image there while it uploads\n  fix: \
         set TMPDIR to a directory with room for the compressed image, or free space there",
        described()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_directory_is_removed_and_a_live_one_kept() {
        let live = ScratchDir::new("test-live").unwrap();
        // One left by a run that was killed: its lock file exists, nobody holds it.
        let stale = std::env::temp_dir().join(format!("{PREFIX}test-stale-999999-1"));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(LOCK), b"").unwrap();
        let other = ScratchDir::new("test-other").unwrap();
        assert!(!stale.exists(), "the stale directory stayed");
        assert!(live.path.exists(), "a live directory was removed");
        let path = other.path.clone();
        drop(other);
        assert!(!path.exists(), "not removed when dropped");
        assert_eq!(pid_of("ecr-step-docker-archive-1234-99"), Some(1234));
    }
}
