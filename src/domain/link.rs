//! The network path to a destination, as a run measured it, and which way of pushing a new image it
//! favours (`PLUGIN_PUSH_VIA=auto`): the step's own transfer compresses every layer on every core but
//! first waits for the engine's export and sends level 1's larger output; `docker push` reads the layers
//! at once and sends docker's smaller level 6, one layer per core. Over a fast link the first wins, over
//! a slow one the second. The same rate picks the gzip level of the layers the step compresses under
//! `PLUGIN_COMPRESSION_LEVEL=auto` ([`Uplink::level`]): level 6's fewer bytes where the link is the
//! bottleneck, level 1's speed where the CPU is. Both estimates use rates of one machine; where a runner
//! keeps its state, each way's estimate is scaled by how long that way took there against its estimate
//! the last time it was taken ([`Paces`], kept in `domain::record`), so an engine slower than the model
//! (or a step slower) costs one push, not every push. On a runner that keeps its engine and record, a
//! new image is weighed with its rebuilds: after the step's own transfer each one exports the whole image
//! again, after docker push the engine reads only the new layers. Pure arithmetic: the measurement is
//! `registry`'s, the choice `modes::push`'s.

use super::source::{Compression, LocalImage};

/// The upload rate to a destination: a probe of [`Uplink::PROBE`] bytes into an upload session that is
/// then cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub host: String,
    pub bytes_per_second: f64,
}

impl Uplink {
    /// Bytes sent to measure a link (cancelled, never stored).
    pub const PROBE: usize = 1 << 20;
    /// Images smaller than this (uncompressed) are not worth the probe: the own transfer is taken.
    pub const WORTH_PROBING: u64 = 64 << 20;

    fn mb_per_s(&self) -> f64 {
        self.bytes_per_second.max(1.0) / 1e6
    }

    /// The gzip level that sends layers soonest over this link with `cores`: 1, 2 or 6. A layer's upload
    /// follows its compression, so each level takes the longer of compressing and sending; the higher
    /// levels send less for more CPU, so level 6 wins where the link is the bottleneck (below about
    /// 35 MB/s on 2 cores here), level 1 where the CPU is (above about 80 MB/s), level 2 between.
    pub fn level(&self, cores: usize) -> u32 {
        let rate = self.mb_per_s();
        let per_mb = |level: u32| {
            let (gzip, leaves) = level_rates(level);
            (1.0 / (cores.max(1) as f64 * gzip)).max(leaves / rate)
        };
        [6, 2, 1]
            .into_iter()
            .min_by(|a, b| per_mb(*a).total_cmp(&per_mb(*b)))
            .unwrap_or(1)
    }
}

/// The step's gzip speed per core (MB/s) and what it leaves, at `level`.
fn level_rates(level: u32) -> (f64, f64) {
    match level {
        0 | 1 => (STEP_GZIP_MB_PER_S, LEVEL_1_LEAVES),
        2 | 3 => (STEP_GZIP_2_MB_PER_S, LEVEL_2_LEAVES),
        _ => (STEP_GZIP_6_MB_PER_S, LEVEL_6_LEAVES),
    }
}

// Rates of this project's machine (2 cores; BENCHMARKS.md), per MB of uncompressed layer, from the
// application image there (six layers, 165 MB of real files): the engine's export before its first byte
// and through `docker save` (1.7 s), docker push's gzip at level 6 per core (Go's compress/gzip: 3.6 s
// on 2 cores, with its upload), the step's level 1 per core, and how much gzip leaves of real files at
// levels 1 and 6 (84 MB and 68 MB).
const EXPORT_MB_PER_S: f64 = 100.0;
const DOCKER_GZIP_MB_PER_S: f64 = 25.0;
const STEP_GZIP_MB_PER_S: f64 = 100.0;
// The step's levels 2 and 6 per core, against level 1's (its gzip alone on tars of this machine's
// libraries and programs: on 2 cores, level 1 286 to 356 MB/s, level 2 202 to 237, level 6 118 to 142),
// and what level 2 leaves (a tenth more than level 6: 0.40 against 0.36 of programs).
const STEP_GZIP_2_MB_PER_S: f64 = 77.0;
const STEP_GZIP_6_MB_PER_S: f64 = 40.0;
const LEVEL_2_LEAVES: f64 = 0.45;
const LEVEL_1_LEAVES: f64 = 0.51;
const LEVEL_6_LEAVES: f64 = 0.41;

/// The two ways of pushing a new image from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Way {
    /// `docker push` through the engine.
    Engine,
    /// The step's own transfer.
    Step,
}

/// How long each way took on this runner against its estimate, the last time it was taken (1: as
/// estimated, 2: twice as long, 1 where none was noted); each estimate is scaled by its way's pace. And
/// whether the runner keeps its engine and its record between runs (`rebuilt_here`: this engine was noted
/// in an earlier run), so a new image's next rebuild will run on this engine too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paces {
    pub engine: f64,
    pub step: f64,
    /// Whether docker push's pace here was noted (within a day), not taken as 1.
    pub engine_noted: bool,
    pub rebuilt_here: bool,
}

impl Default for Paces {
    fn default() -> Self {
        Paces {
            engine: 1.0,
            step: 1.0,
            engine_noted: false,
            rebuilt_here: false,
        }
    }
}

impl Paces {
    /// The least and most pace used: a noted pace beyond them is taken as them.
    pub const RANGE: std::ops::RangeInclusive<f64> = 0.25..=4.0;

    fn of(&self, way: Way) -> f64 {
        let pace = match way {
            Way::Engine => self.engine,
            Way::Step => self.step,
        };
        match pace.is_finite() {
            true => pace.clamp(*Self::RANGE.start(), *Self::RANGE.end()),
            false => 1.0,
        }
    }
}

/// A weighing: the faster way over the link, why (for the `via:` line), and its estimate before pacing
/// (seconds), which the time it takes is noted against.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighed {
    pub way: Way,
    pub why: String,
    pub estimate: f64,
}

/// The two ways of pushing an image from the engine, as a function of the upload rate: what each sends
/// and about how long it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Ways {
    /// Uncompressed MB of the image, of its largest layer, and of the layers the destination lacks.
    total: f64,
    largest: f64,
    to_compress: f64,
    /// The step's gzip level (under `auto`, the one the rate picks: [`Uplink::level`]).
    level: Compression,
    cores: f64,
    /// The cores docker push compresses on: one per layer.
    layer_cores: f64,
}

/// About how long a way takes, and the MB it sends.
struct Estimate {
    seconds: f64,
    sends: f64,
}

impl Ways {
    /// `source` to a destination lacking `to_compress` of its uncompressed bytes (the step sends only
    /// those layers; an engine with no record of the destination sends every layer), compressed by the
    /// step at `level`, on `cores`.
    pub fn new(source: &LocalImage, to_compress: u64, level: Compression, cores: usize) -> Ways {
        let mb = |b: u64| b as f64 / 1e6;
        let sizes: Vec<u64> = match source.layer_sizes.len() == source.layers.len() {
            true => source.layer_sizes.clone(),
            false => vec![source.size.max(0) as u64],
        };
        Ways {
            total: mb(sizes.iter().sum()),
            largest: mb(sizes.iter().copied().max().unwrap_or(0)),
            to_compress: mb(to_compress),
            level,
            cores: cores.max(1) as f64,
            layer_cores: cores.clamp(1, sizes.len().max(1)) as f64,
        }
    }

    /// docker push at `rate` MB/s: each layer compressed on a core of its own, sent as it is compressed.
    fn engine(&self, rate: f64) -> Estimate {
        let sends = self.total * LEVEL_6_LEAVES;
        let compress =
            (self.largest / DOCKER_GZIP_MB_PER_S).max(self.total / (self.layer_cores * DOCKER_GZIP_MB_PER_S));
        Estimate {
            seconds: compress.max(sends / rate),
            sends,
        }
    }

    /// The step at `rate` MB/s: the whole image exported, the missing layers compressed in blocks on every
    /// core and sent.
    fn step(&self, rate: f64) -> Estimate {
        let level = match self.level {
            Compression::Auto => Uplink {
                host: String::new(),
                bytes_per_second: rate * 1e6,
            }
            .level(self.cores as usize),
            Compression::Level(level) => level,
        };
        let (gzip, leaves) = level_rates(level);
        let sends = self.to_compress * leaves;
        let compress = self.to_compress / (self.cores * gzip);
        Estimate {
            seconds: self.total / EXPORT_MB_PER_S + compress.max(sends / rate),
            sends,
        }
    }

    /// The rates the model is weighed over: 0.5 MB/s to about 5 GB/s, each a quarter above the last.
    fn rates() -> impl Iterator<Item = f64> {
        (0..=40).map(|i| 0.5 * 1.26f64.powi(i))
    }

    /// The export a new image's next rebuild would need after the step's own transfer, on a runner that
    /// keeps its engine and record (`paces.rebuilt_here`), at the step's pace: seconds, 0 where none is
    /// counted (a fresh runner, or a rebuild whose other layers the destination holds).
    fn next_export(&self, paces: &Paces) -> f64 {
        match paces.rebuilt_here && self.to_compress >= self.total {
            true => self.total / EXPORT_MB_PER_S * paces.of(Way::Step),
            false => 0.0,
        }
    }

    /// The faster way at `rate` MB/s at `paces`, with docker push's time and the step's (its next
    /// rebuild's export counted), each paced.
    fn faster_at(&self, rate: f64, paces: &Paces) -> (Way, f64, f64) {
        let engine = self.engine(rate).seconds * paces.of(Way::Engine);
        let step = self.step(rate).seconds * paces.of(Way::Step) + self.next_export(paces);
        match engine < step {
            true => (Way::Engine, engine, step),
            false => (Way::Step, engine, step),
        }
    }

    /// Whether the faster way by the model depends on the link (from 0.5 MB/s to 5 GB/s): else measuring
    /// it would change nothing (a rebuild whose other layers the destination holds stays with the step at
    /// any rate). The paces are left out here, so a way slow once is weighed (and its pace noted) again.
    pub fn depend_on_the_link(&self) -> bool {
        let model = Paces::default();
        let first = self.faster_at(0.5, &model).0;
        Self::rates().any(|rate| self.faster_at(rate, &model).0 != first)
    }

    /// Whether docker push finishes first at every rate once a new image's next rebuild is counted
    /// (`paces.rebuilt_here`: the step's own transfer would leave that rebuild a whole export), both by the
    /// model and at `paces`: then the upload need not be measured ([`Ways::weigh_at_every_rate`]). Never
    /// on a fresh runner, where the choice depends on the link ([`Ways::depend_on_the_link`]), nor before
    /// docker push's pace here is noted: a push through the engine that measured nothing has no estimate
    /// to note a pace against, so until one did, an engine slower than the model would go unseen.
    pub fn engine_at_every_rate(&self, paces: &Paces) -> bool {
        let model = Paces {
            rebuilt_here: paces.rebuilt_here,
            ..Paces::default()
        };
        let engine_first =
            |rate: f64| self.faster_at(rate, &model).0 == Way::Engine && self.faster_at(rate, paces).0 == Way::Engine;
        paces.engine_noted && Self::rates().all(engine_first)
    }

    /// The weighing where docker push finishes first at every rate ([`Ways::engine_at_every_rate`]), and
    /// why, with no rate: the upload was not measured, so no estimate is given to note a pace against.
    pub fn weigh_at_every_rate(&self, paces: &Paces) -> Weighed {
        let why = format!(
            "{}: with that export counted, docker push (about {:.0} MB, every layer, level 6) finishes first at any \
             upload rate, so the upload was not measured (PLUGIN_PUSH_VIA=registry moves every byte through the \
             step instead)",
            self.rebuild_charged(self.next_export(paces)),
            // (What docker push sends does not depend on the rate.)
            self.engine(1.0).sends,
        );
        Weighed {
            way: Way::Engine,
            why,
            estimate: 0.0,
        }
    }

    /// What the next rebuild's export (`seconds`) means, as the `via:` line says it.
    fn rebuild_charged(&self, seconds: f64) -> String {
        format!(
            "this runner keeps its engine and record, so the next rebuild would export those {:.0} MB again (about \
             {seconds:.1} s) after the step's own transfer, and read only its new layers after docker push",
            self.total
        )
    }

    /// The faster way over `uplink` at `paces`, and why. On a runner that keeps its engine and record
    /// (`paces.rebuilt_here`), a new image's way also decides its rebuilds': pushed through the engine, the
    /// engine keeps a record of its layers there and the next rebuild reads only its new layers; pushed by
    /// the step, the engine has none, and the next rebuild exports the whole image again. That export is
    /// counted against the step's own transfer (rebuilds are what CI pushes most).
    pub fn weigh(&self, uplink: &Uplink, paces: &Paces) -> Weighed {
        let rate = uplink.mb_per_s();
        let (engine, step) = (self.engine(rate), self.step(rate));
        let next_export = self.next_export(paces);
        let (way, engine_takes, _) = self.faster_at(rate, paces);
        let step_takes = step.seconds * paces.of(Way::Step);
        let paced = |way: Way| match paces.of(way) {
            pace if (pace - 1.0).abs() < 0.05 => String::new(),
            pace => format!(" (it took {pace:.1} × its estimate here last time)"),
        };
        let rebuild = match next_export > 0.0 {
            true => format!("; {}", self.rebuild_charged(next_export)),
            false => String::new(),
        };
        let why = format!(
            "the upload to {} ran at {rate:.0} MB/s: docker push would send about {:.0} MB (every layer, level 6) in \
             about {engine_takes:.1} s{}, the step's own transfer about {:.0} MB after exporting {:.0} MB in about \
             {step_takes:.1} s{}{rebuild} ({})",
            uplink.host,
            engine.sends,
            paced(Way::Engine),
            step.sends,
            self.total,
            paced(Way::Step),
            match way {
                Way::Engine => "PLUGIN_PUSH_VIA=registry moves every byte through the step instead",
                Way::Step => "PLUGIN_PUSH_VIA=engine pushes through the engine instead",
            }
        );
        let estimate = match way {
            Way::Engine => engine.seconds,
            Way::Step => step.seconds,
        };
        Weighed { way, why, estimate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The application image of BENCHMARKS.md: six layers, 165 MB.
    fn application() -> LocalImage {
        let sizes: Vec<u64> = [5, 90, 60, 1, 2, 12].iter().map(|mb| mb * 1_000_000).collect();
        LocalImage {
            reference: "app".into(),
            id: "sha256:1".into(),
            size: sizes.iter().sum::<u64>() as i64,
            repo_digests: vec![],
            layers: (0..sizes.len()).map(|i| format!("sha256:{i}")).collect(),
            layer_sizes: sizes,
        }
    }

    fn at(mb_per_s: f64) -> Uplink {
        Uplink {
            host: "registry".into(),
            bytes_per_second: mb_per_s * 1e6,
        }
    }

    #[test]
    fn a_new_image_goes_through_the_engine_over_a_slow_link_and_through_the_step_over_a_fast_one() {
        let image = application();
        let all = image.size as u64;
        let ways = Ways::new(&image, all, Compression::Auto, 2);
        let weighed = ways.weigh(&at(25.0), &Paces::default());
        assert_eq!(weighed.way, Way::Engine, "{}", weighed.why);
        assert!(weighed.why.contains("ran at 25 MB/s"), "{}", weighed.why);
        assert!(!weighed.why.contains("estimate here"), "{}", weighed.why);
        let weighed = ways.weigh(&at(300.0), &Paces::default());
        assert_eq!(weighed.way, Way::Step, "{}", weighed.why);
    }

    #[test]
    fn a_rebuild_whose_layers_the_destination_holds_stays_with_the_step_even_over_a_slow_link() {
        // docker push with no record of the destination sends all 165 MB; the step only the 12 MB app.
        let image = application();
        let ways = Ways::new(&image, 12_000_000, Compression::Auto, 2);
        let weighed = ways.weigh(&at(25.0), &Paces::default());
        assert_eq!(weighed.way, Way::Step, "{}", weighed.why);
        // At any rate: the link is not worth measuring.
        assert!(!ways.depend_on_the_link());
        let new = Ways::new(&image, image.size as u64, Compression::Auto, 2);
        assert!(new.depend_on_the_link());
    }

    #[test]
    fn the_level_is_6_where_the_link_is_the_bottleneck_1_where_the_cpu_is_and_2_between() {
        assert_eq!(at(5.0).level(2), 6);
        assert_eq!(at(25.0).level(2), 6, "the testbed's link");
        assert_eq!(at(50.0).level(2), 2);
        assert_eq!(at(120.0).level(2), 1, "loopback, as measured here");
        assert_eq!(at(1000.0).level(2), 1);
        // More cores make the higher levels cheaper, so they pay on faster links.
        assert_eq!(at(120.0).level(4), 2);
        assert_eq!(at(60.0).level(8), 6);
    }

    #[test]
    fn one_large_layer_stays_with_the_step_over_a_slow_link() {
        // docker push compresses a layer on one core: 200 MB take it longer than the step's export and
        // level 1's larger output over 25 MB/s.
        let mut image = application();
        image.layer_sizes = vec![200_000_000];
        image.layers.truncate(1);
        image.size = 200_000_000;
        let ways = Ways::new(&image, 200_000_000, Compression::Auto, 2);
        let weighed = ways.weigh(&at(25.0), &Paces::default());
        assert_eq!(weighed.way, Way::Step, "{}", weighed.why);
    }

    #[test]
    fn on_a_runner_that_keeps_its_engine_a_new_image_goes_the_way_its_rebuilds_go_fastest() {
        // Over a fast link the step's own transfer pushes the application image first; but on a runner
        // that keeps its engine, every later rebuild would then export all 170 MB again, where after docker
        // push the engine reads only the new layers.
        let image = application();
        let ways = Ways::new(&image, image.size as u64, Compression::Auto, 2);
        let kept = Paces {
            rebuilt_here: true,
            ..Paces::default()
        };
        assert_eq!(ways.weigh(&at(300.0), &Paces::default()).way, Way::Step);
        let weighed = ways.weigh(&at(300.0), &kept);
        assert_eq!(weighed.way, Way::Engine, "{}", weighed.why);
        assert!(
            weighed
                .why
                .contains("the next rebuild would export those 170 MB again (about 1.7 s)"),
            "{}",
            weighed.why
        );
        // The estimate noted against is this push's alone.
        assert!((weighed.estimate - ways.engine(300.0).seconds).abs() < 1e-9);
        // With that export counted, docker push is first at every rate: once its pace here is known, the
        // upload need not be measured, and the line says why without one (no estimate, so no pace is
        // noted against it).
        let known = Paces {
            engine_noted: true,
            ..kept
        };
        assert!(ways.engine_at_every_rate(&known));
        assert!(
            !ways.engine_at_every_rate(&kept),
            "docker push's pace here is measured first"
        );
        assert!(
            !ways.engine_at_every_rate(&Paces {
                engine_noted: true,
                ..Paces::default()
            }),
            "a fresh runner measures"
        );
        let unmeasured = ways.weigh_at_every_rate(&known);
        assert_eq!(unmeasured.way, Way::Engine);
        assert_eq!(unmeasured.estimate, 0.0);
        assert!(
            unmeasured.why.starts_with(
                "this runner keeps its engine and record, so the next rebuild would export those 170 MB again \
                 (about 1.7 s)"
            ) && unmeasured
                .why
                .contains("docker push (about 70 MB, every layer, level 6) finishes first at any")
                && unmeasured.why.contains("so the upload was not measured"),
            "{}",
            unmeasured.why
        );
        // An engine that took four times its estimate here last time: the link decides again.
        let slow_engine = Paces { engine: 4.0, ..known };
        assert!(!ways.engine_at_every_rate(&slow_engine));
        assert_eq!(ways.weigh(&at(300.0), &slow_engine).way, Way::Step);
        // A rebuild (the destination holds the rest) is not a new image: no rebuild of it is counted.
        let rebuild = Ways::new(&image, 12_000_000, Compression::Auto, 2);
        let weighed = rebuild.weigh(&at(300.0), &kept);
        assert_eq!(weighed.way, Way::Step, "{}", weighed.why);
        assert!(!weighed.why.contains("next rebuild"), "{}", weighed.why);
        assert!(!rebuild.engine_at_every_rate(&known));
        // One large layer: docker push compresses it on one core, which costs more than the next export.
        let mut single = application();
        single.layer_sizes = vec![200_000_000];
        single.layers.truncate(1);
        single.size = 200_000_000;
        let ways = Ways::new(&single, 200_000_000, Compression::Auto, 2);
        let weighed = ways.weigh(&at(300.0), &kept);
        assert_eq!(weighed.way, Way::Step, "{}", weighed.why);
        assert!(weighed.why.contains("next rebuild"), "{}", weighed.why);
        assert!(!ways.engine_at_every_rate(&known));
    }

    #[test]
    fn a_way_slower_here_than_its_estimate_is_weighed_at_the_pace_it_took() {
        let image = application();
        let ways = Ways::new(&image, image.size as u64, Compression::Auto, 2);
        let first = ways.weigh(&at(25.0), &Paces::default());
        assert_eq!(first.way, Way::Engine, "{}", first.why);
        // docker push took twice its estimate here: the step's own transfer is faster now.
        let slow_engine = Paces {
            engine: 2.0,
            ..Paces::default()
        };
        let second = ways.weigh(&at(25.0), &slow_engine);
        assert_eq!(second.way, Way::Step, "{}", second.why);
        assert!(second.why.contains("docker push would send"), "{}", second.why);
        assert!(
            second.why.contains("(it took 2.0 × its estimate here last time)"),
            "{}",
            second.why
        );
        // The estimate noted against is the model's, not the paced one (else paces would compound).
        assert!((second.estimate - ways.step(25.0).seconds).abs() < 1e-9);
        // Both slower alike: the choice is the model's.
        let both = ways.weigh(
            &at(25.0),
            &Paces {
                engine: 1.5,
                step: 1.5,
                ..Paces::default()
            },
        );
        assert_eq!(both.way, Way::Engine, "{}", both.why);
        // A pace past the range is taken as its end, and one that is not a number as 1.
        let wild = ways.weigh(
            &at(25.0),
            &Paces {
                engine: 1e9,
                step: f64::NAN,
                ..Paces::default()
            },
        );
        let capped = ways.weigh(
            &at(25.0),
            &Paces {
                engine: 4.0,
                ..Paces::default()
            },
        );
        assert_eq!(wild.why, capped.why);
    }
}
