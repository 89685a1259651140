//! Files named by settings (policies, integrations files, web identity tokens, docker configs): read
//! with a bound, and only when they are regular files.
//!
//! A path to `/dev/zero`, `/dev/urandom` or a FIFO must never make the step read forever or hang: the file
//! is opened non-blocking (opening a FIFO does not wait for a writer), checked to be a regular file on the
//! open handle (no race with a swap), and read for at most `limit + 1` bytes.

pub mod scratch;
pub mod state;
pub mod tree;

pub use scratch::ScratchDir;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open `path` for reading if it is a regular file (symlinks followed). `Err` says what is wrong, without
/// the path (the caller names the setting).
pub fn open_regular(path: &Path) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file ({}): give the path of a file",
            path.display(),
            kind(&meta)
        ));
    }
    Ok(file)
}

/// The text of the regular file at `path`, refused when it is larger than `limit` bytes or not UTF-8.
pub fn read_bounded(path: &Path, limit: usize) -> Result<String, String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > limit {
        return Err(format!(
            "{} is larger than {limit} bytes, the most this setting takes",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// Check that the regular file at `path` exists and is at most `limit` bytes, without reading it (a file
/// another program reads later, such as a web identity token file).
pub fn check_bounded(path: &Path, limit: u64) -> Result<(), String> {
    let file = open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > limit {
        return Err(format!(
            "{} is {size} bytes; at most {limit} are allowed",
            path.display()
        ));
    }
    Ok(())
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        for (path, want) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/urandom"), "a character device"),
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
        ] {
            let e = read_bounded(path, 1024).unwrap_err();
            assert!(e.contains(want) && e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_at_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, "x".repeat(10)).unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap().len(), 10);
        let e = read_bounded(&path, 9).unwrap_err();
        assert!(e.contains("larger than 9 bytes"), "{e}");
        assert!(check_bounded(&path, 10).is_ok());
        assert!(check_bounded(&path, 9).unwrap_err().contains("10 bytes"));
    }
}
