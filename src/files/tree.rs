//! A directory tree that is untrusted input (an OCI image layout, an unpacked archive): nothing outside it
//! is ever read, and, while unpacking, nothing outside it is ever written.
//!
//! Reading ([`Tree::open_file`]) resolves a name one component at a time, each relative to a directory
//! handle already held, never through the kernel's own path walk: a symbolic link is followed only while
//! its target stays inside the tree (an absolute target, or `..` above the root, is refused), at most
//! [`MAX_LINKS`] links per name, and only a regular file is opened (no device, FIFO or socket). Writing
//! ([`Tree::create_file`], [`Tree::symlink`], [`Tree::hard_link`], [`Tree::dir`]) follows no link at all and
//! never replaces an entry, so an archive's `x -> /elsewhere` followed by `x/file` is refused, and so is a
//! second entry of the same name.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed while resolving one name (Linux's own limit).
pub const MAX_LINKS: usize = 40;

/// A directory whose names are resolved inside it alone.
pub struct Tree {
    root: OwnedFd,
    /// For messages and for the paths of resolved files.
    pub path: PathBuf,
}

/// A regular file found inside a tree: open, with its size and its path (every component a real
/// directory inside the tree at the time it was resolved, no link).
pub struct Found {
    pub file: File,
    pub size: u64,
    /// Relative to the tree's root, links resolved.
    pub name: PathBuf,
    pub path: PathBuf,
}

impl Tree {
    /// The directory `path` (which the user named: a link there is followed).
    pub fn open(path: &Path) -> std::io::Result<Tree> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: a valid C string; the descriptor is owned below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        Ok(Tree {
            root: owned(fd)?,
            path: path.to_path_buf(),
        })
    }

    /// Open the regular file `name` names inside the tree. `Err` says why not, naming `name`.
    pub fn open_file(&self, name: &Path) -> Result<Found, String> {
        let shown = name.display();
        if name.has_root() {
            return Err(format!(
                "`{shown}` is an absolute path: only names inside the input are read"
            ));
        }
        let mut pending: std::collections::VecDeque<OsString> = parts(name);
        // The directories below the root on the way, with their names.
        let mut dirs: Vec<(OwnedFd, OsString)> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                if dirs.pop().is_none() {
                    return Err(format!("`{shown}` leads outside the input (through `..`)"));
                }
                continue;
            }
            let parent = dirs.last().map_or(self.root.as_raw_fd(), |d| d.0.as_raw_fd());
            let c = cstring(&part).map_err(|e| format!("`{shown}`: {e}"))?;
            let handle = at(parent, &c, libc::O_PATH | libc::O_NOFOLLOW)
                .map_err(|e| format!("`{shown}` is not in the input ({e})"))?;
            let stat = fstat(handle.as_raw_fd()).map_err(|e| format!("`{shown}`: {e}"))?;
            match stat.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!("`{shown}` goes through more than {MAX_LINKS} symbolic links"));
                    }
                    let target = read_link(handle.as_raw_fd()).map_err(|e| format!("`{shown}`: {e}"))?;
                    if target.has_root() {
                        return Err(format!(
                            "`{shown}` is a symbolic link to `{}`, outside the input: refused",
                            target.display()
                        ));
                    }
                    for p in parts(&target).into_iter().rev() {
                        pending.push_front(p);
                    }
                }
                libc::S_IFDIR if !pending.is_empty() => dirs.push((handle, part)),
                libc::S_IFDIR => return Err(format!("`{shown}` is a directory, not a file")),
                libc::S_IFREG if pending.is_empty() => {
                    let fd = at(
                        parent,
                        &c,
                        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
                    )
                    .map_err(|e| format!("`{shown}`: {e}"))?;
                    let opened = fstat(fd.as_raw_fd()).map_err(|e| format!("`{shown}`: {e}"))?;
                    if opened.st_mode & libc::S_IFMT != libc::S_IFREG || opened.st_ino != stat.st_ino {
                        return Err(format!("`{shown}` changed while it was opened"));
                    }
                    let mut relative = PathBuf::new();
                    for (_, d) in &dirs {
                        relative.push(d);
                    }
                    relative.push(&part);
                    return Ok(Found {
                        file: File::from(fd),
                        size: opened.st_size as u64,
                        path: self.path.join(&relative),
                        name: relative,
                    });
                }
                libc::S_IFREG => return Err(format!("`{shown}` goes through a file as if it were a directory")),
                other => {
                    return Err(format!(
                        "`{shown}` is {}, not a regular file: refused",
                        kind_of_mode(other)
                    ));
                }
            }
        }
        Err(format!("`{shown}` names the input's own directory, not a file"))
    }

    /// The whole regular file `name`, refused past `limit` bytes (never read further), and its path.
    pub fn read(&self, name: &Path, limit: u64) -> Result<(Vec<u8>, PathBuf), String> {
        let found = self.open_file(name)?;
        if found.size > limit {
            return Err(format!(
                "`{}` is {} bytes, more than the {limit} this kind of file may have",
                name.display(),
                found.size
            ));
        }
        let mut bytes = Vec::with_capacity(found.size as usize);
        (&found.file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading `{}`: {e}", name.display()))?;
        if bytes.len() as u64 > limit {
            return Err(format!("`{}` grew past {limit} bytes while read", name.display()));
        }
        Ok((bytes, found.path))
    }

    /// The directory `name` (plain: no `..`, not absolute), made where missing; no link is followed.
    fn dir_fd(&self, name: &Path) -> std::io::Result<OwnedFd> {
        let mut current: Option<OwnedFd> = None;
        for part in parts(name) {
            let parent = current.as_ref().map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
            let c = cstring(&part)?;
            // SAFETY: a valid descriptor and C string.
            let made = unsafe { libc::mkdirat(parent, c.as_ptr(), 0o700) };
            if made != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            current = Some(
                at(parent, &c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(|e| {
                    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                        std::io::Error::other(format!(
                            "`{}` is not a directory (a link or a file made by an earlier entry): an entry may not \
                         be written through it",
                            Path::new(&part).display()
                        ))
                    } else {
                        e
                    }
                })?,
            );
        }
        match current {
            Some(fd) => Ok(fd),
            // SAFETY: duplicating a descriptor this tree owns.
            None => owned(unsafe { libc::fcntl(self.root.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) }),
        }
    }

    /// Make the directory `name` (plain) and its parents.
    pub fn dir(&self, name: &Path) -> std::io::Result<()> {
        self.dir_fd(name).map(drop)
    }

    /// Create the new regular file `name` (plain), private to this user; an existing entry is an error.
    pub fn create_file(&self, name: &Path) -> std::io::Result<File> {
        let (parent, leaf) = self.parent_of(name)?;
        // SAFETY: a valid descriptor and C string.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                leaf.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        owned(fd).map(File::from)
    }

    /// Create the symbolic link `name` (plain) to `target`, as written (resolved only when read).
    pub fn symlink(&self, name: &Path, target: &Path) -> std::io::Result<()> {
        let (parent, leaf) = self.parent_of(name)?;
        let target = cstring(target.as_os_str())?;
        // SAFETY: valid C strings and descriptor.
        let made = unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), leaf.as_ptr()) };
        if made != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Create `name` (plain) as a hard link to the entry `target` (plain), itself never followed.
    pub fn hard_link(&self, name: &Path, target: &Path) -> std::io::Result<()> {
        let (from_parent, from_leaf) = self.parent_of(target)?;
        let (parent, leaf) = self.parent_of(name)?;
        // SAFETY: valid C strings and descriptors; flags 0: a link is linked as itself.
        let made = unsafe {
            libc::linkat(
                from_parent.as_raw_fd(),
                from_leaf.as_ptr(),
                parent.as_raw_fd(),
                leaf.as_ptr(),
                0,
            )
        };
        if made != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn parent_of(&self, name: &Path) -> std::io::Result<(OwnedFd, CString)> {
        let leaf = name
            .file_name()
            .ok_or_else(|| std::io::Error::other(format!("`{}` names no entry", name.display())))?;
        let parent = self.dir_fd(name.parent().unwrap_or(Path::new("")))?;
        Ok((parent, cstring(leaf)?))
    }
}

/// `path` made relative and plain (no `.`, no `..` above its start); `None` when it leaves its root or is
/// absolute.
pub fn inside(path: &Path) -> Option<PathBuf> {
    let mut plain = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => plain.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !plain.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(plain)
}

/// The names in `path`, `.` and empty ones dropped (`..` kept: the resolver handles it).
fn parts(path: &Path) -> std::collections::VecDeque<OsString> {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(|p| OsStr::from_bytes(p).to_os_string())
        .collect()
}

fn cstring(s: &OsStr) -> std::io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::other("a name with a NUL byte"))
}

fn at(dir: RawFd, name: &CString, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid descriptor and C string.
    owned(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) })
}

fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: a valid descriptor; `stat` is plain data, filled by the call.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// The target of the link open (`O_PATH`) as `fd`.
fn read_link(fd: RawFd) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: a valid descriptor, an empty C string and a buffer of the given length.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(
        buf,
    )))
}

fn kind_of_mode(mode: libc::mode_t) -> &'static str {
    match mode {
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        _ => "not a plain file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("in");
        std::fs::create_dir_all(inner.join("blobs/sha256")).unwrap();
        std::fs::write(inner.join("blobs/sha256/aa"), b"blob").unwrap();
        std::fs::write(dir.path().join("secret"), b"host file").unwrap();
        let tree = Tree::open(&inner).unwrap();
        (dir, tree)
    }

    #[test]
    fn links_inside_are_followed_and_links_out_refused() {
        let (dir, tree) = tree();
        let inner = dir.path().join("in");
        std::os::unix::fs::symlink("blobs/sha256/aa", inner.join("inside")).unwrap();
        std::os::unix::fs::symlink("../secret", inner.join("up")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), inner.join("absolute")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", inner.join("zero")).unwrap();
        std::os::unix::fs::symlink(dir.path(), inner.join("outdir")).unwrap();
        std::os::unix::fs::symlink("loop", inner.join("loop")).unwrap();
        let found = tree.open_file(Path::new("inside")).unwrap();
        assert_eq!(found.name, Path::new("blobs/sha256/aa"));
        assert_eq!(
            tree.read(Path::new("./blobs/../blobs/sha256/aa"), 10).unwrap().0,
            b"blob"
        );
        for (name, want) in [
            ("up", "outside the input"),
            ("absolute", "outside the input"),
            ("zero", "outside the input"),
            ("outdir/secret", "outside the input"),
            ("../secret", "outside the input"),
            ("/etc/passwd", "absolute path"),
            ("loop", "more than 40 symbolic links"),
            ("blobs", "a directory"),
            ("blobs/sha256/aa/x", "through a file"),
            ("missing", "not in the input"),
        ] {
            let e = tree.open_file(Path::new(name)).err().unwrap();
            assert!(e.contains(want), "{name}: {e}");
        }
        assert!(
            tree.read(Path::new("inside"), 3)
                .unwrap_err()
                .contains("more than the 3")
        );
    }

    #[test]
    fn devices_and_fifos_inside_are_refused() {
        let (dir, tree) = tree();
        let fifo = dir.path().join("in/fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(tree.open_file(Path::new("fifo")).err().unwrap().contains("a FIFO"));
    }

    #[test]
    fn writes_follow_no_link_and_replace_nothing() {
        let (dir, tree) = tree();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        tree.symlink(Path::new("x"), &outside).unwrap();
        let e = tree.create_file(Path::new("x/pwned.txt")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(!outside.join("pwned.txt").exists());
        tree.create_file(Path::new("a/b/c")).unwrap();
        assert!(tree.create_file(Path::new("a/b/c")).is_err(), "an entry was replaced");
        assert!(tree.symlink(Path::new("a/b/c"), Path::new("x")).is_err());
        tree.hard_link(Path::new("a/d"), Path::new("a/b/c")).unwrap();
        assert!(tree.open_file(Path::new("a/d")).is_ok());
        assert_eq!(inside(Path::new("a/../../b")), None);
        assert_eq!(inside(Path::new("/b")), None);
        assert_eq!(inside(Path::new("./a/./b/../c")), Some(PathBuf::from("a/c")));
    }
}
