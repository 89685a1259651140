//! [`Image`]: local images in the machine's Docker Engine, made without pulls, and the step's own image.

use super::repo_root;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static IMAGES: AtomicUsize = AtomicUsize::new(0);

/// A local image made from random bytes with `docker import`; removed (with every tag the test gave it)
/// when dropped.
pub struct Image {
    pub name: String,
    pub id: String,
}

impl Image {
    /// An image of one layer holding `bytes` random bytes.
    pub fn random(bytes: usize) -> Image {
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        let name = format!("ecr-step-test-{}-{n}:src", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        // Streamed: images of a gigabyte are never held in memory.
        let mut payload = std::fs::File::create(dir.path().join("payload.bin")).unwrap();
        let mut random = std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), bytes as u64);
        std::io::copy(&mut random, &mut payload).unwrap();
        std::fs::write(dir.path().join("name.txt"), &name).unwrap();
        import(dir.path(), name)
    }
}

impl Image {
    /// A one-layer image of a directory's files (`tar | docker import`).
    pub fn from_dir(dir: &Path) -> Image {
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        import(dir, format!("ecr-step-test-dir-{}-{n}:src", std::process::id()))
    }

    /// `base` and `layers` layers, each a text file of `bytes` or a little more, new to every call: gzip
    /// squeezes it to little, so a slow link's bytes stay few.
    pub fn text(base: &Image, layers: usize, bytes: usize) -> Image {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dirs: Vec<_> = (0..layers).map(|_| tempfile::tempdir().unwrap()).collect();
        for (i, dir) in dirs.iter().enumerate() {
            let mut text = String::with_capacity(bytes + 64);
            let mut line = 0usize;
            while text.len() <= bytes {
                text.push_str(&format!(
                    "line {line:>9} of layer {i} of image {call} of {}\n",
                    std::process::id()
                ));
                line += 1;
            }
            std::fs::write(dir.path().join("data.txt"), text).unwrap();
        }
        let names: Vec<String> = (0..layers).map(|i| format!("part{i}")).collect();
        let layers: Vec<(&str, &str)> = names
            .iter()
            .zip(&dirs)
            .map(|(name, dir)| (name.as_str(), dir.path().to_str().unwrap()))
            .collect();
        Image::build(&base.name, &layers)
    }

    /// `FROM from`, then one layer per `(name, host directory)` (`ADD name.tar /name/`, the directory's
    /// files), then `CMD ["/bin/sh", "-c", "echo ran"]`: built by the engine's classic builder, no pulls.
    pub fn build(from: &str, layers: &[(&str, &str)]) -> Image {
        let context = tempfile::tempdir().unwrap();
        let mut dockerfile = format!("FROM {from}\n");
        for (name, dir) in layers {
            let tar = context.path().join(format!("{name}.tar"));
            let ok = Command::new("tar")
                .args(["-C", dir, "-chf", tar.to_str().unwrap(), "."])
                .status()
                .unwrap()
                .success();
            assert!(ok, "tar of {dir}");
            dockerfile.push_str(&format!("ADD {name}.tar /{name}/\n"));
        }
        dockerfile.push_str("CMD [\"/bin/sh\", \"-c\", \"echo ran\"]\n");
        std::fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        let name = format!("ecr-step-test-built-{}-{n}:src", std::process::id());
        docker(&["build", "-q", "-t", &name, context.path().to_str().unwrap()]);
        let id = docker(&["image", "inspect", "-f", "{{.Id}}", &name]).trim().to_string();
        Image { name, id }
    }
}

/// `tar -C dir -c . | docker import - name`, streamed (images of a gigabyte are never held in memory).
fn import(dir: &Path, name: String) -> Image {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = Command::new("docker")
        .args(["import", "-", &name])
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker CLI");
    let out = import.wait_with_output().unwrap();
    assert!(tar.wait().unwrap().success());
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Image { name, id }
}

impl Image {
    /// A base image made from files of this host, with the shared libraries `ldd` lists for them and for
    /// `libraries_of`, for building the step's Dockerfile where no base image can be pulled.
    pub fn from_host_files(files: &[&str], libraries_of: &[&str]) -> Image {
        let n = IMAGES.fetch_add(1, Ordering::SeqCst);
        let name = format!("ecr-step-test-base-{}-{n}:local", std::process::id());
        let root = tempfile::tempdir().unwrap();
        let mut all: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        for file in files.iter().chain(libraries_of) {
            let ldd = Command::new("ldd").arg(file).output().unwrap();
            for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
                if path.starts_with('/') {
                    all.push(path.to_string());
                }
            }
        }
        for file in &all {
            let target = root.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(file, &target).unwrap_or_else(|e| panic!("copying {file}: {e}"));
        }
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .output()
            .unwrap();
        let mut import = Command::new("docker")
            .args(["import", "-", &name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        let out = import.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image {
            name,
            id: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.id]).output();
    }
}

/// The layer diff ids of a local image, as the engine lists them (JSON).
pub fn diff_ids(reference: &str) -> String {
    docker(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", reference])
        .trim()
        .to_string()
}

/// The chain id of the local image `reference`'s layers (what containerd names its unpacked root
/// filesystem by): its first diff id, then each next one hashed with the chain so far.
pub fn chain_id(reference: &str) -> String {
    use sha2::Digest as _;
    let layers: Vec<String> = serde_json::from_str(&diff_ids(reference)).expect("the diff ids as JSON");
    let mut layers = layers.into_iter();
    let first = layers.next().expect("an image has a layer");
    layers.fold(first, |chain, diff_id| {
        let hash = sha2::Sha256::digest(format!("{chain} {diff_id}").as_bytes());
        format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
    })
}

/// Whether the engine holds a local image by this name (`docker image inspect` succeeds).
pub fn in_engine(name: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", name])
        .output()
        .expect("docker CLI")
        .status
        .success()
}

/// Run the docker CLI; panics with its output when it fails. Returns stdout.
pub fn docker(args: &[&str]) -> String {
    docker_with(None, args)
}

/// Run the docker CLI with the docker config directory `config` (`docker --config`), else its default;
/// panics with its output when it fails. Returns stdout.
pub fn docker_with(config: Option<&Path>, args: &[&str]) -> String {
    let mut command = Command::new("docker");
    // Every build here takes the classic builder: no base can be pulled for BuildKit's own, and
    // `build_step_image` reads the classic builder's output.
    command.env("DOCKER_BUILDKIT", "0");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let out = command.args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "docker {args:?}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The step's container image, built through the repository's Dockerfile from a builder assembled from this
/// host (no pulls; the final stage is FROM scratch), with `binary` put in the context as `prebuilt/ecr-step` (stripped when asked).
pub fn build_step_image(binary: &Path, strip: bool) -> Image {
    build_step_image_stage(binary, strip, None)
}

/// [`build_step_image`] of a named stage of the Dockerfile (`shell`: the variant with a shell).
pub fn build_step_image_stage(binary: &Path, strip: bool, stage: Option<&str>) -> Image {
    let root = repo_root();
    let context = tempfile::tempdir().unwrap();
    for file in ["Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), context.path().join(file)).unwrap();
    }
    copy_tree(&root.join("src"), &context.path().join("src"));
    std::fs::create_dir_all(context.path().join("prebuilt")).unwrap();
    let prebuilt = context.path().join("prebuilt/ecr-step");
    std::fs::copy(binary, &prebuilt).unwrap();
    if strip {
        assert!(Command::new("strip").arg(&prebuilt).status().unwrap().success());
    }
    // The builder: a shell, cp, mkdir, the CA bundle, and the libraries the binary links (which the
    // Dockerfile copies into the final stage, FROM scratch).
    let builder = Image::from_host_files(
        &[
            "/bin/sh",
            "/bin/cp",
            "/bin/mkdir",
            "/bin/busybox",
            "/etc/ssl/certs/ca-certificates.crt",
        ],
        &[binary.to_str().unwrap()],
    );
    let n = IMAGES.fetch_add(1, Ordering::SeqCst);
    let tag = format!("ecr-step-test-image-{}-{n}:latest", std::process::id());
    // A label of its own makes every build a distinct image: two tests that build the same stage from the
    // same binary would otherwise share one image id, and one's clean-up (by id) would remove the other's.
    let label = format!("ecr-step-test-build={tag}");
    // `--no-cache`: the images this build makes are its own, so removing them below cannot race another
    // build that took one from the cache (the build stage, FROM a builder of its own, never hits it anyway).
    let mut args = vec!["build", "--no-cache", "--label", &label, "--build-arg"];
    let builder_arg = format!("BUILDER_IMAGE={}", builder.name);
    args.push(&builder_arg);
    if let Some(stage) = stage {
        args.extend(["--target", stage]);
    }
    args.extend(["-t", &tag, context.path().to_str().unwrap()]);
    // The classic builder (as `docker` runs every build): its output lists each step's image, which the
    // clean-up below reads.
    let output = docker(&args);
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", &tag]).trim().to_string();
    // The classic builder keeps every step's image, and builds every stage before the target, the `shell`
    // stage too: left, they would hold about 160 MB per build in the engine, and `builder` cannot be
    // removed while the build stage's images are its children. The step's image needs only its own
    // parents. The list starts with `builder` itself (the build stage's FROM). Removing an image also
    // removes its parents that nothing else needs, so most of these find their image gone already; what
    // is checked is the outcome: only the image's parents are left.
    let made = built_images(&output);
    let image = id.trim_start_matches("sha256:");
    for step in made.iter().rev().filter(|step| !image.starts_with(step.as_str())) {
        let _ = Command::new("docker").args(["rmi", step]).output();
    }
    let mut kept = std::collections::HashSet::new();
    let mut at = id.clone();
    while !at.is_empty() {
        kept.insert(at.trim_start_matches("sha256:")[..12].to_string());
        at = docker(&["image", "inspect", "-f", "{{.Parent}}", &at])
            .trim()
            .to_string();
    }
    for step in made.iter().filter(|step| !kept.contains(step.as_str())) {
        let gone = !Command::new("docker")
            .args(["image", "inspect", step])
            .output()
            .unwrap()
            .status
            .success();
        assert!(gone, "the build of {tag} left its step image {step} in the engine");
    }
    Image { name: tag, id }
}

/// The images a classic-builder `docker build` made, in order: the ids of its ` ---> 0123456789ab` lines.
fn built_images(output: &str) -> Vec<String> {
    let mut ids: Vec<String> = output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("---> "))
        .filter(|id| id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect();
    ids.dedup();
    ids
}
