//! The step's record of what this runner's Docker Engine pushed, and where (kept in `PLUGIN_STATE_DIR`).
//!
//! The engine remembers every layer it pushed and the repository it pushed it to (docker's v2 metadata),
//! and `docker push` skips such a layer there after a HEAD, without reading it. The engine does not show
//! that memory; the repo digest that would show it goes when the step removes its local tag after a push
//! through the engine. So after each such push the step notes the image and the repository, and
//! `PLUGIN_PUSH_VIA=auto` reads the note as it reads an image the engine pulled from there
//! ([`PulledImage`]). A note is a hint: a wrong one (another engine, a layer the registry lost) makes a push
//! slower, since docker push then sends those layers, never wrong.
//!
//! Beside the pushes, the record keeps each way's pace on each engine ([`Pace`]): how long the last new
//! image `auto` weighed took that way against its estimate, so the next weighing on that runner starts
//! from what the runner did, not from the model's rates alone. A pace older than [`Pace::KEPT`] is not
//! used, so a runner that was slow once is weighed by the model again a day later.
//!
//! And each registry this engine could not reach when `auto` sent a push through it ([`Unreached`]): for a
//! day `auto` then sends the image itself at once, rather than wait for the engine to fail again (dockerd
//! waits 30 s for a connection that times out). A push the engine then makes there clears the note.
//!
//! The record is untrusted input: it is parsed with a bound, every entry is checked, and anything that
//! does not read is dropped.

use super::link::{Paces, Way};
use super::source::PulledImage;
use serde::{Deserialize, Serialize};

/// One push through the engine: which engine, and the image as it is now in which repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginePushed {
    /// The engine's ID (`docker info`): another engine has no memory of this push.
    pub engine: String,
    /// The image pushed: `host`, `repo`, the manifest digest the registry stored, its id, diff ids and
    /// size in the engine.
    #[serde(flatten)]
    pub image: PulledImage,
}

impl EnginePushed {
    /// Whether every field reads as what it says (digests as sha256 digests, names printable and short).
    fn is_sound(&self) -> bool {
        let digest = |d: &str| {
            d.strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let image = &self.image;
        is_name(&self.engine)
            && is_name(&image.host)
            && is_name(&image.repo)
            && digest(&image.digest)
            && digest(&image.image_id)
            && !image.layers.is_empty()
            && image.layers.len() <= Record::MOST_LAYERS
            && image.layers.iter().all(|l| digest(l))
    }

    fn same_place(&self, other: &EnginePushed) -> bool {
        self.engine == other.engine && self.image.host == other.image.host && self.image.repo == other.image.repo
    }
}

/// How long one way took on one engine against `auto`'s estimate, the last time it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// The engine's ID (`docker info`).
    pub engine: String,
    pub way: Way,
    /// The time taken over the estimate.
    pub pace: f64,
    /// When, in seconds since the epoch.
    pub at: u64,
}

impl Pace {
    /// How long a pace is used (and a note that an engine could not reach a registry).
    pub const KEPT: u64 = 24 * 60 * 60;

    fn is_sound(&self) -> bool {
        is_name(&self.engine) && self.pace.is_finite() && self.pace > 0.0
    }
}

/// A registry this runner's engine could not reach or trust (a refused or timed-out connection, an
/// unknown name, a proxy or a certificate it would not take), the last time `auto` sent a push through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreached {
    /// The engine's ID (`docker info`).
    pub engine: String,
    pub host: String,
    /// What the engine said.
    pub cause: String,
    /// What would give the engine a route there.
    pub remedy: String,
    /// When, in seconds since the epoch.
    pub at: u64,
}

impl Unreached {
    /// The most bytes of a cause or remedy kept.
    pub const MOST_TEXT: usize = 1024;

    fn is_sound(&self) -> bool {
        let text = |t: &str| t.len() <= Self::MOST_TEXT && !t.chars().any(char::is_control);
        is_name(&self.engine) && is_name(&self.host) && text(&self.cause) && text(&self.remedy)
    }
}

/// Whether a name in the record (an engine ID, a host, a repository) reads as one: printable, no `@`,
/// at most 256 bytes.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
}

/// The record: the most recent pushes through the engine, newest first, bounded; and each way's pace on
/// each engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(deserialize_with = "each_that_reads")]
    pushed: Vec<EnginePushed>,
    /// Absent in a record written before paces were kept.
    #[serde(default, deserialize_with = "each_that_reads")]
    paces: Vec<Pace>,
    /// Absent in a record written before these were kept.
    #[serde(default, deserialize_with = "each_that_reads")]
    unreached: Vec<Unreached>,
}

/// The entries of a list that read as `T` (one another version wrote differently is dropped, not the
/// record).
fn each_that_reads<'de, D, T>(list: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let entries = Vec::<serde_json::Value>::deserialize(list)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect())
}

impl Record {
    /// The most bytes of a record read (a larger file is not read, and is replaced at the next note).
    pub const MOST_BYTES: usize = 1 << 20;
    /// The most pushes kept in all.
    pub const MOST_PUSHES: usize = 64;
    /// The most pushes kept for one repository of one engine (a few branches' images).
    pub const PER_REPOSITORY: usize = 4;
    /// The most layers of an image noted (overlay2 stacks at most 128): with [`Record::MOST_PUSHES`], a
    /// full record stays under [`Record::MOST_BYTES`].
    pub const MOST_LAYERS: usize = 128;
    /// The most paces kept (two per engine).
    pub const MOST_PACES: usize = 16;
    /// The most registries an engine could not reach kept, of all engines.
    pub const MOST_UNREACHED: usize = 16;

    /// The record in `bytes`; empty when they do not read as one (corrupt, truncated, another format),
    /// without the entries that are not sound.
    pub fn parse(bytes: &[u8]) -> Record {
        if bytes.len() > Self::MOST_BYTES {
            return Record::default();
        }
        let mut record: Record = serde_json::from_slice(bytes).unwrap_or_default();
        record.pushed.retain(EnginePushed::is_sound);
        record.pushed.truncate(Self::MOST_PUSHES);
        record.paces.retain(Pace::is_sound);
        record.paces.truncate(Self::MOST_PACES);
        record.unreached.retain(Unreached::is_sound);
        record.unreached.truncate(Self::MOST_UNREACHED);
        record
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Note a push (first, as the newest); the same image in the same place is noted once, and the oldest
    /// go past the bounds.
    pub fn note(&mut self, pushed: EnginePushed) {
        if !pushed.is_sound() {
            return;
        }
        // The engine reached that registry.
        self.unreached
            .retain(|u| !(u.engine == pushed.engine && u.host == pushed.image.host));
        self.pushed
            .retain(|p| !(p.same_place(&pushed) && p.image.image_id == pushed.image.image_id));
        self.pushed.insert(0, pushed);
        let mut seen: Vec<&EnginePushed> = Vec::new();
        let mut keep = Vec::new();
        for p in &self.pushed {
            let here = seen.iter().filter(|s| s.same_place(p)).count();
            keep.push(here < Self::PER_REPOSITORY);
            seen.push(p);
        }
        let mut keep = keep.into_iter();
        self.pushed.retain(|_| keep.next().unwrap_or(false));
        self.pushed.truncate(Self::MOST_PUSHES);
    }

    /// The images `engine` pushed to `repo` in one of `hosts`, as images the engine knows there.
    pub fn pushed_to(&self, engine: &str, hosts: &[String], repo: &str) -> Vec<PulledImage> {
        self.pushed
            .iter()
            .filter(|p| p.engine == engine && p.image.repo == repo && hosts.contains(&p.image.host))
            .map(|p| p.image.clone())
            .collect()
    }

    /// Whether any engine's push to `repo` in one of `hosts`, or any engine's failure to reach one of
    /// `hosts`, is noted (else no engine need be asked who it is).
    pub fn mentions(&self, hosts: &[String], repo: &str) -> bool {
        self.pushed
            .iter()
            .any(|p| p.image.repo == repo && hosts.contains(&p.image.host))
            || self.unreached.iter().any(|u| hosts.contains(&u.host))
    }

    /// Note that an engine could not reach a registry (first, as the newest, in place of an older note of
    /// that engine and registry).
    pub fn note_unreached(&mut self, unreached: Unreached) {
        if !unreached.is_sound() {
            return;
        }
        self.unreached
            .retain(|u| !(u.engine == unreached.engine && u.host == unreached.host));
        self.unreached.insert(0, unreached);
        self.unreached.truncate(Self::MOST_UNREACHED);
    }

    /// The newest note, within a day ([`Pace::KEPT`]) before `now`, that `engine` could not reach one of
    /// `hosts`.
    pub fn unreached(&self, engine: &str, hosts: &[String], now: u64) -> Option<&Unreached> {
        self.unreached
            .iter()
            .find(|u| u.engine == engine && hosts.contains(&u.host) && u.at <= now && now - u.at <= Pace::KEPT)
    }

    /// Note how long a way took (first, as the newest, in place of that way's pace on that engine).
    pub fn note_pace(&mut self, pace: Pace) {
        if !pace.is_sound() {
            return;
        }
        self.paces.retain(|p| !(p.engine == pace.engine && p.way == pace.way));
        self.paces.insert(0, pace);
        self.paces.truncate(Self::MOST_PACES);
    }

    /// Each way's pace on `engine` noted within [`Pace::KEPT`] before `now` (seconds since the epoch); 1
    /// where none is (and whether docker push's is). And whether `engine` is in the record at all (a push
    /// or a pace of any age): then this runner kept its engine and its record since an earlier run.
    pub fn paces(&self, engine: &str, now: u64) -> Paces {
        let noted = |way: Way| {
            self.paces
                .iter()
                .find(|p| p.engine == engine && p.way == way && p.at <= now && now - p.at <= Pace::KEPT)
                .map(|p| p.pace)
        };
        Paces {
            engine: noted(Way::Engine).unwrap_or(1.0),
            step: noted(Way::Step).unwrap_or(1.0),
            engine_noted: noted(Way::Engine).is_some(),
            rebuilt_here: self.pushed.iter().any(|p| p.engine == engine)
                || self.paces.iter().any(|p| p.engine == engine),
        }
    }

    pub fn len(&self) -> usize {
        self.pushed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pushed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn pushed(engine: &str, repo: &str, image: u8) -> EnginePushed {
        EnginePushed {
            engine: engine.into(),
            image: PulledImage {
                host: "127.0.0.1:5000".into(),
                repo: repo.into(),
                digest: digest(image.wrapping_add(100)),
                image_id: digest(image),
                layers: vec![digest(1), digest(2), digest(image)],
                size: 1000,
            },
        }
    }

    #[test]
    fn a_noted_push_reads_back_as_an_image_the_engine_knows_there_and_only_there() {
        let mut record = Record::default();
        record.note(pushed("engine-a", "app", 7));
        let again = Record::parse(&record.to_bytes());
        assert_eq!(again, record);
        let hosts = vec!["127.0.0.1:5000".to_string()];
        let known = again.pushed_to("engine-a", &hosts, "app");
        assert_eq!(known.len(), 1);
        assert_eq!(known[0].image_id, digest(7));
        assert_eq!(known[0].reference(), format!("127.0.0.1:5000/app@{}", digest(107)));
        assert!(again.mentions(&hosts, "app") && !again.mentions(&hosts, "other"));
        // Another engine, repository or registry knows nothing of it.
        assert!(again.pushed_to("engine-b", &hosts, "app").is_empty());
        assert!(again.pushed_to("engine-a", &hosts, "other").is_empty());
        assert!(
            again
                .pushed_to("engine-a", &["127.0.0.1:5001".to_string()], "app")
                .is_empty()
        );
    }

    #[test]
    fn a_corrupt_or_hostile_record_reads_as_empty_or_without_its_bad_entries() {
        for bytes in [
            &b""[..],
            b"{",
            b"not json at all",
            b"[1,2,3]",
            b"{\"pushed\": 5}",
            &[0xff, 0xfe, 0x00][..],
        ] {
            assert!(Record::parse(bytes).is_empty(), "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut record = Record::default();
        record.note(pushed("engine-a", "app", 7));
        let mut json: serde_json::Value = serde_json::from_slice(&record.to_bytes()).unwrap();
        let mut bad = json["pushed"][0].clone();
        bad["layers"][0] = "sha256:../../etc/passwd".into();
        json["pushed"].as_array_mut().unwrap().push(bad);
        let mut bad = json["pushed"][0].clone();
        bad["repo"] = "app\nok: forged".into();
        json["pushed"].as_array_mut().unwrap().push(bad);
        let parsed = Record::parse(json.to_string().as_bytes());
        assert_eq!(parsed, record, "only the sound entry is kept");
        // Too large to read at all.
        let large = vec![b' '; Record::MOST_BYTES + 1];
        assert!(Record::parse(&large).is_empty());
    }

    fn pace(engine: &str, way: Way, pace: f64, at: u64) -> Pace {
        Pace {
            engine: engine.into(),
            way,
            pace,
            at,
        }
    }

    #[test]
    fn a_pace_is_used_for_its_engine_and_way_for_a_day_and_a_record_without_paces_still_reads() {
        let now = 1_800_000_000;
        let mut record = Record::default();
        record.note(pushed("engine-a", "app", 7));
        let before_paces = String::from_utf8(record.to_bytes())
            .unwrap()
            .replace(",\"paces\":[]", "");
        assert!(!before_paces.contains("paces"), "{before_paces}");
        assert_eq!(
            Record::parse(before_paces.as_bytes()),
            record,
            "a record of an earlier step"
        );
        // No pace yet, but the engine is known: this runner kept it since an earlier run.
        let kept = Paces {
            rebuilt_here: true,
            ..Paces::default()
        };
        assert_eq!(record.paces("engine-a", now), kept);

        record.note_pace(pace("engine-a", Way::Engine, 2.5, now - 60));
        record.note_pace(pace("engine-a", Way::Engine, 2.0, now - 30));
        record.note_pace(pace("engine-b", Way::Step, 1.5, now - 30));
        let again = Record::parse(&record.to_bytes());
        assert_eq!(again, record);
        let paces = again.paces("engine-a", now);
        assert_eq!(
            (paces.engine, paces.step),
            (2.0, 1.0),
            "the newest of a way replaces the older"
        );
        assert!(paces.engine_noted);
        assert!(
            !again.paces("engine-b", now).engine_noted,
            "only the step's is noted there"
        );
        assert_eq!(again.paces("engine-b", now).step, 1.5);
        assert!(
            again.paces("engine-b", now).rebuilt_here,
            "a pace alone says the engine was here"
        );
        assert_eq!(
            again.paces("engine-c", now),
            Paces::default(),
            "another engine's pace is not used, nor is it this runner's"
        );
        // A day later, or noted in the future (a clock set back), it is not used; the engine is still known.
        assert_eq!(again.paces("engine-a", now + Pace::KEPT + 31), kept);
        assert_eq!(again.paces("engine-a", now - 3600), kept);
    }

    #[test]
    fn a_hostile_pace_is_dropped_and_the_paces_stay_bounded() {
        let now = 1_800_000_000;
        let mut record = Record::default();
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            record.note_pace(pace("engine-a", Way::Engine, bad, now));
        }
        record.note_pace(pace("engine\nforged", Way::Engine, 2.0, now));
        assert_eq!(record.paces("engine-a", now), Paces::default());
        assert_eq!(record.paces("engine\nforged", now), Paces::default());
        // An entry that is not a pace, or not a sound one, is dropped; the rest of the record stays.
        let mut json = serde_json::json!({"pushed": [pushed("engine-a", "app", 7)]});
        json["paces"] = serde_json::json!([
            {"engine": "engine-a", "way": "engine", "pace": -3.0, "at": now},
            {"engine": "engine-a", "way": "teleport", "pace": 2.0, "at": now},
            {"engine": "engine-a", "way": "step", "pace": "fast", "at": now},
            {"engine": "engine-a", "way": "step", "pace": 1.25, "at": now},
        ]);
        let parsed = Record::parse(json.to_string().as_bytes());
        assert_eq!(parsed.len(), 1, "the pushes stay");
        assert_eq!(
            parsed.paces("engine-a", now),
            Paces {
                engine: 1.0,
                step: 1.25,
                engine_noted: false,
                rebuilt_here: true,
            }
        );
        for engine in 0..40 {
            record.note_pace(pace(&format!("engine-{engine}"), Way::Step, 1.5, now));
        }
        let parsed = Record::parse(&record.to_bytes());
        assert_eq!(parsed.paces("engine-39", now).step, 1.5);
        assert_eq!(parsed.paces("engine-0", now), Paces::default(), "the oldest went");
        assert_eq!(parsed.paces.len(), Record::MOST_PACES);
    }

    #[test]
    fn the_record_keeps_the_newest_pushes_within_its_bounds() {
        let mut record = Record::default();
        for image in 0..10 {
            record.note(pushed("engine-a", "app", image));
        }
        let hosts = vec!["127.0.0.1:5000".to_string()];
        let known = record.pushed_to("engine-a", &hosts, "app");
        let ids: Vec<String> = known.iter().map(|p| p.image_id.clone()).collect();
        assert_eq!(ids, vec![digest(9), digest(8), digest(7), digest(6)]);
        // The same image noted again moves to the front, once.
        record.note(pushed("engine-a", "app", 7));
        let ids: Vec<String> = record
            .pushed_to("engine-a", &hosts, "app")
            .iter()
            .map(|p| p.image_id.clone())
            .collect();
        assert_eq!(ids, vec![digest(7), digest(9), digest(8), digest(6)]);
        for n in 0..200u32 {
            record.note(pushed("engine-a", &format!("repo-{n}"), 3));
        }
        assert_eq!(record.len(), Record::MOST_PUSHES);
        assert!(
            record.pushed_to("engine-a", &hosts, "app").is_empty(),
            "the oldest went"
        );
        // The largest record the bounds allow still reads.
        let mut full = Record::default();
        for n in 0..Record::MOST_PUSHES as u32 {
            let mut p = pushed("e".repeat(256).as_str(), &format!("{}{n}", "r".repeat(250)), 3);
            p.image.host = "h".repeat(256);
            p.image.layers = vec![digest(1); Record::MOST_LAYERS];
            full.note(p);
        }
        assert_eq!(full.len(), Record::MOST_PUSHES);
        assert!(full.to_bytes().len() <= Record::MOST_BYTES);
        assert_eq!(Record::parse(&full.to_bytes()), full);
    }

    fn unreached(engine: &str, host: &str, at: u64) -> Unreached {
        Unreached {
            engine: engine.into(),
            host: host.into(),
            cause: "dial tcp 127.0.0.2:443: connect: connection refused".into(),
            remedy: "set HTTPS_PROXY in dockerd's environment".into(),
            at,
        }
    }

    #[test]
    fn an_unreached_registry_is_noted_for_its_engine_and_host_for_a_day_until_the_engine_pushes_there() {
        let now = 1_800_000_000;
        let hosts = vec!["127.0.0.1:5000".to_string()];
        let mut record = Record::default();
        assert!(!record.mentions(&hosts, "app"));
        record.note_unreached(unreached("engine-a", "127.0.0.1:5000", now - 60));
        let again = Record::parse(&record.to_bytes());
        assert_eq!(again, record);
        // Whatever the repository: the engine asks who it is.
        assert!(again.mentions(&hosts, "any"));
        assert_eq!(again.unreached("engine-a", &hosts, now).map(|u| u.at), Some(now - 60));
        assert!(again.unreached("engine-b", &hosts, now).is_none());
        assert!(
            again
                .unreached("engine-a", &["127.0.0.1:5001".to_string()], now)
                .is_none()
        );
        // A day later, or noted in the future (a clock set back), it is not used.
        assert!(again.unreached("engine-a", &hosts, now - 60 + Pace::KEPT + 1).is_none());
        assert!(again.unreached("engine-a", &hosts, now - 61).is_none());
        // A newer note replaces the older; a push by that engine there clears it, another engine's does not.
        record.note_unreached(unreached("engine-a", "127.0.0.1:5000", now));
        record.note_unreached(unreached("engine-b", "127.0.0.1:5000", now));
        assert_eq!(record.unreached.len(), 2);
        record.note(pushed("engine-a", "app", 7));
        assert!(record.unreached("engine-a", &hosts, now).is_none());
        assert!(record.unreached("engine-b", &hosts, now).is_some());
        // Bounded, and a hostile note (a control character, a long text) is not kept.
        for i in 0..40 {
            record.note_unreached(unreached("engine-a", &format!("host-{i}:443"), now));
        }
        assert_eq!(record.unreached.len(), Record::MOST_UNREACHED);
        let mut json: serde_json::Value = serde_json::from_slice(&record.to_bytes()).unwrap();
        json["unreached"][0]["cause"] = "refused\nok: forged".into();
        json["unreached"][1]["remedy"] = "x".repeat(Unreached::MOST_TEXT + 1).into();
        json["unreached"][2]["at"] = "yesterday".into();
        let parsed = Record::parse(json.to_string().as_bytes());
        assert_eq!(parsed.unreached.len(), Record::MOST_UNREACHED - 3);
        assert_eq!(parsed.pushed, record.pushed);
    }
}
