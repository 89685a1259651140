//! The state directory (`PLUGIN_STATE_DIR`): what the step keeps between runs on a runner that keeps it,
//! today the record of the engine's pushes and of each way's pace (`domain::record`), in
//! `engine-pushes.json`.
//!
//! Reading takes no lock: the file is only ever replaced whole (written beside it, then renamed over it),
//! so a reader sees one complete version, read with a bound and only when it is a regular file. Noting a
//! push holds an exclusive lock on `engine-pushes.lock` while it reads, adds and replaces, so two runs at
//! once both land their notes. The directory is made 0700 and the file written 0600. It is not synced:
//! after a crash a record may read as empty, which costs one slower push.

use crate::domain::record::Record;
use std::io::Write;
use std::path::Path;

const FILE: &str = "engine-pushes.json";
const LOCK: &str = "engine-pushes.lock";

/// The record in `dir`; empty when there is none or it does not read (a corrupt record costs speed, never
/// correctness).
pub fn read(dir: &Path) -> Record {
    match super::read_bounded(&dir.join(FILE), Record::MOST_BYTES) {
        Ok(text) => Record::parse(text.as_bytes()),
        Err(_) => Record::default(),
    }
}

/// Make `change` to the record in `dir` (a push or a pace noted), making the directory when missing.
/// `Err` says what failed, with the path.
pub fn note(dir: &Path, change: impl FnOnce(&mut Record)) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |what: &str, e: std::io::Error| format!("{what} {}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| failed("cannot make", e))?;
    let lock = private(&dir.join(LOCK), false).map_err(|e| failed("cannot open the lock in", e))?;
    lock.lock().map_err(|e| failed("cannot lock the record in", e))?;
    let mut record = read(dir);
    change(&mut record);
    let temporary = dir.join(format!(".{FILE}.{}", std::process::id()));
    let written = private(&temporary, true)
        .and_then(|mut f| f.write_all(&record.to_bytes()))
        .and_then(|()| std::fs::rename(&temporary, dir.join(FILE)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(|e| failed("cannot write the record in", e))
    // The lock goes with `lock`.
}

/// `path` opened for writing, made 0600 if new, never through a link; emptied when `truncate`.
fn private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::EnginePushed;
    use crate::domain::source::PulledImage;

    fn pushed(repo: &str, image: u32) -> EnginePushed {
        let digest = |n: u32| format!("sha256:{:064x}", n);
        EnginePushed {
            engine: "engine-a".into(),
            image: PulledImage {
                host: "127.0.0.1:5000".into(),
                repo: repo.into(),
                digest: digest(image + 1_000_000),
                image_id: digest(image),
                layers: vec![digest(1), digest(image)],
                size: 10,
            },
        }
    }

    #[test]
    fn a_note_reads_back_private_and_a_corrupt_record_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(read(&state).is_empty(), "no directory yet: an empty record");
        note(&state, |r| r.note(pushed("app", 1))).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(FILE)), 0o600);
        assert_eq!(read(&state).len(), 1);
        std::fs::write(state.join(FILE), b"{\"pushed\": [ {\"engine\": trunc").unwrap();
        assert!(read(&state).is_empty());
        note(&state, |r| r.note(pushed("app", 2))).unwrap();
        let record = read(&state);
        assert_eq!(record.len(), 1, "the corrupt record is replaced by a sound one");
        let hosts = vec!["127.0.0.1:5000".to_string()];
        assert_eq!(
            record.pushed_to("engine-a", &hosts, "app")[0].image_id,
            pushed("app", 2).image.image_id
        );
    }

    #[test]
    fn a_record_that_is_not_a_regular_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(FILE)).unwrap();
        assert!(read(dir.path()).is_empty());
    }

    #[test]
    fn runs_noting_at_once_keep_the_record_whole_and_lose_no_note() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let writers: Vec<_> = (0..8u32)
            .map(|w| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for i in 0..5 {
                        note(&state, |r| r.note(pushed(&format!("repo-{w}"), w * 100 + i))).unwrap();
                        // A reader meanwhile always sees a whole record.
                        assert!(!read(&state).is_empty());
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let record = read(&state);
        let hosts = vec!["127.0.0.1:5000".to_string()];
        for w in 0..8 {
            let known = record.pushed_to("engine-a", &hosts, &format!("repo-{w}"));
            assert_eq!(known.len(), Record::PER_REPOSITORY, "repo-{w}");
            assert_eq!(
                known[0].image_id,
                pushed("x", w * 100 + 4).image.image_id,
                "the newest first"
            );
        }
    }
}
