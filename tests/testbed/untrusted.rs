//! Hostile inputs, built by the tests themselves: archives ([`Archive`]) and OCI layouts ([`Layout`]) with
//! whatever entries a hostile build could write, and [`Rogue`], a source registry that answers what the test
//! scripts (wrong bytes, endless lists, redirects) and records every request it got.

use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn digest(bytes: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One entry of a tar, written as it is (no check of its name: that is the point).
#[derive(Clone)]
pub enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    HardLink(String, String),
    CharDevice(String),
}

/// A tar archive of raw entries, in order.
#[derive(Clone, Default)]
pub struct Archive {
    pub entries: Vec<Entry>,
}

impl Archive {
    pub fn with(mut self, entry: Entry) -> Archive {
        self.entries.push(entry);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_mtime(0);
            let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match entry {
                Entry::File(n, d) => (n, tar::EntryType::Regular, d, None),
                Entry::Dir(n) => (n, tar::EntryType::Directory, &[], None),
                Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, &[], Some(t)),
                Entry::HardLink(n, t) => (n, tar::EntryType::Link, &[], Some(t)),
                Entry::CharDevice(n) => (n, tar::EntryType::Char, &[], None),
            };
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_cksum();
            tar.append(&header, data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// A small valid image: one layer (a tar of one file, unique to `seed`), its config naming its diff id.
pub struct SmallImage {
    pub layer: Vec<u8>,
    pub diff_id: String,
    pub config: Vec<u8>,
}

impl SmallImage {
    pub fn new(seed: &str) -> SmallImage {
        let content = format!("hello from {seed}\n").repeat(100);
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_data(&mut header, "hello.txt", content.as_bytes()).unwrap();
        let layer = tar.into_inner().unwrap();
        let diff_id = digest(&layer);
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        SmallImage {
            layer,
            diff_id,
            config: serde_json::to_vec(&config).unwrap(),
        }
    }

    /// `docker save`'s form: `config.json`, `layer.tar` and `manifest.json` naming `config` and `layers`.
    pub fn docker_archive(&self, config: &str, layers: &[&str]) -> Archive {
        Archive::default()
            .with(Entry::File("config.json".into(), self.config.clone()))
            .with(Entry::File("layer.tar".into(), self.layer.clone()))
            .with(Entry::File("manifest.json".into(), docker_manifest(config, layers)))
    }

    /// The layer, gzip-compressed.
    pub fn gzip_layer(&self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.layer).unwrap();
        gz.finish().unwrap()
    }
}

/// `manifest.json` of a docker archive.
pub fn docker_manifest(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!([{"Config": config, "RepoTags": ["app:v1"], "Layers": layers}])).unwrap()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image layout in a directory of the test's.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf() }
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }

    /// Store `bytes` as a blob; its descriptor (`media_type`, digest, size).
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = digest(bytes);
        std::fs::write(self.blob_path(&d), bytes).unwrap();
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }

    /// Store the image's config, gzip layer and manifest; the manifest's descriptor.
    pub fn image(&self, image: &SmallImage) -> Value {
        let config = self.blob("application/vnd.oci.image.config.v1+json", &image.config);
        let layer = self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &image.gzip_layer());
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    /// Store an index of `children`; its descriptor.
    pub fn index(&self, children: &[Value]) -> Value {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
        self.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }

    /// `index.json` naming `top`.
    pub fn top(&self, top: &Value) {
        let index = json!({"schemaVersion": 2, "manifests": [top]});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// What the rogue answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

pub enum Body {
    Bytes(Vec<u8>),
    /// This many zero bytes, streamed (never held).
    Zeros(u64),
}

impl Answer {
    pub fn ok(content_type: &str, bytes: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::Bytes(bytes),
        }
    }

    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    pub fn redirect(to: &str) -> Answer {
        Answer {
            status: 307,
            headers: vec![("Location".into(), to.into())],
            body: Body::Bytes(Vec::new()),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request the rogue got.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: bool,
}

/// One request, for a handler that looks at its credentials too.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
}

type Handler = dyn Fn(&Request) -> Answer + Send + Sync;

/// An HTTP server on loopback that answers each request with what `handler(method, path)` says, one
/// request a connection, recording what it got.
pub struct Rogue {
    /// `127.0.0.1:<port>`.
    pub host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Rogue {
    pub fn start(handler: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> Rogue {
        Rogue::start_on("127.0.0.1", move |r: &Request| handler(r.method, r.path))
    }

    /// On the loopback address `ip` (another host than 127.0.0.1), with a handler that sees credentials.
    pub fn start_on(ip: &str, handler: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Rogue {
        let listener = super::listen(ip);
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (handler, seen) = (handler.clone(), s.clone());
                        std::thread::spawn(move || serve(client, &*handler, &seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Rogue {
            host,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut client: TcpStream, handler: &Handler, seen: &Mutex<Vec<Seen>>) {
    client.set_nonblocking(false).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let header = |name: &str| {
        text.lines()
            .skip(1)
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: u64 = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let _ = std::io::copy(&mut (&mut client).take(length), &mut std::io::sink());
    let authorization = header("authorization");
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.is_some(),
    });
    let answer = handler(&Request {
        method: &method,
        path: &path,
        authorization: authorization.as_deref(),
    });
    let size = match &answer.body {
        Body::Bytes(b) => b.len() as u64,
        Body::Zeros(n) => *n,
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {size}\r\nConnection: close\r\n",
        answer.status
    );
    for (k, v) in &answer.headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    if client.write_all(out.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    match answer.body {
        Body::Bytes(b) => {
            let _ = client.write_all(&b);
        }
        Body::Zeros(mut n) => {
            let chunk = vec![0u8; 64 << 10];
            while n > 0 {
                let k = n.min(chunk.len() as u64);
                if client.write_all(&chunk[..k as usize]).is_err() {
                    return;
                }
                n -= k;
            }
        }
    }
}

/// What a registry holds, served by [`registry_answer`]: manifests by tag and digest, blobs by digest.
#[derive(Default, Clone)]
pub struct Store {
    pub manifests: BTreeMap<String, (String, Vec<u8>)>,
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Store {
    /// A store holding `image` as `app:v1` (an OCI manifest, gzip layer): and the manifest's digest.
    pub fn with_image(image: &SmallImage) -> (Store, String) {
        let mut store = Store::default();
        let config = store.blob("application/vnd.oci.image.config.v1+json", &image.config);
        let layer = store.blob("application/vnd.oci.image.layer.v1.tar+gzip", &image.gzip_layer());
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let d = digest(&bytes);
        store
            .manifests
            .insert("v1".into(), (OCI_MANIFEST.into(), bytes.clone()));
        store.manifests.insert(d.clone(), (OCI_MANIFEST.into(), bytes));
        (store, d)
    }

    fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Value {
        let d = digest(bytes);
        self.blobs.insert(d.clone(), bytes.to_vec());
        json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    }
}

/// A registry's answer from `store` for repository `app`: `/v2/`, manifests, blobs; 404 otherwise.
pub fn registry_answer(store: &Store, method: &str, path: &str) -> Answer {
    if path == "/v2/" {
        return Answer::status(200);
    }
    if let Some(reference) = path.strip_prefix("/v2/app/manifests/") {
        return match store.manifests.get(reference) {
            Some((media_type, bytes)) => {
                Answer::ok(media_type, bytes.clone()).header("Docker-Content-Digest", &digest(bytes))
            }
            None => Answer::status(404),
        };
    }
    if let Some(d) = path.strip_prefix("/v2/app/blobs/") {
        return match store.blobs.get(d) {
            Some(bytes) => Answer::ok("application/octet-stream", bytes.clone()),
            None => Answer::status(404),
        };
    }
    let _ = method;
    Answer::status(404)
}
