//! The network path to a destination, as a run measured it, and which way of pushing a new image it
//! favours (`PLUGIN_PUSH_VIA=auto`): the step's own transfer compresses every layer on every core but
//! first waits for the engine's export and sends level 1's larger output; `docker push` reads the layers
//! at once and sends docker's smaller level 6, one layer per core. Over a fast link the first wins, over
//! a slow one the second. Pure arithmetic: the measurement is `registry`'s, the choice `modes::push`'s.

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
}

// Rates of this project's machine (2 cores; BENCHMARKS.md), per MB of uncompressed layer, from the
// application image there (six layers, 165 MB of real files): the engine's export before its first byte
// and through `docker save` (1.7 s), docker push's gzip at level 6 per core (Go's compress/gzip: 3.6 s
// on 2 cores, with its upload), the step's level 1 per core, and how much gzip leaves of real files at
// levels 1 and 6 (84 MB and 68 MB).
const EXPORT_MB_PER_S: f64 = 100.0;
const DOCKER_GZIP_MB_PER_S: f64 = 25.0;
const STEP_GZIP_MB_PER_S: f64 = 100.0;
const LEVEL_1_LEAVES: f64 = 0.51;
const LEVEL_6_LEAVES: f64 = 0.41;

/// Whether `docker push` is the faster way to push `source` over `uplink`, and why (for the `via:`
/// line). `to_compress`: the uncompressed bytes of the layers the destination lacks (the step sends only
/// those; an engine with no record of the destination sends every layer); `cores`: this machine's.
pub fn engine_is_faster_over(
    source: &LocalImage,
    to_compress: u64,
    level: Compression,
    uplink: &Uplink,
    cores: usize,
) -> (bool, String) {
    let mb = |b: u64| b as f64 / 1e6;
    let sizes: Vec<u64> = match source.layer_sizes.len() == source.layers.len() {
        true => source.layer_sizes.clone(),
        false => vec![source.size.max(0) as u64],
    };
    let total: u64 = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let rate = uplink.bytes_per_second.max(1.0) / 1e6;
    // docker push: each layer compressed on a core of its own, sent as it is compressed.
    let (cores, layer_cores) = (cores.max(1) as f64, cores.clamp(1, sizes.len().max(1)) as f64);
    let engine_sends = mb(total) * LEVEL_6_LEAVES;
    let engine = (mb(largest) / DOCKER_GZIP_MB_PER_S)
        .max(mb(total) / (layer_cores * DOCKER_GZIP_MB_PER_S))
        .max(engine_sends / rate);
    // The step: the whole image exported, the missing layers compressed in blocks on every core and sent.
    let leaves = match level.level_for(to_compress) {
        1..=5 => LEVEL_1_LEAVES,
        _ => LEVEL_6_LEAVES,
    };
    let step_sends = mb(to_compress) * leaves;
    let step = mb(total) / EXPORT_MB_PER_S + (mb(to_compress) / (cores * STEP_GZIP_MB_PER_S)).max(step_sends / rate);
    let faster = engine < step;
    let why = format!(
        "the upload to {} ran at {rate:.0} MB/s: docker push would send about {engine_sends:.0} MB (every layer, \
         level 6) in about {engine:.1} s, the step's own transfer about {step_sends:.0} MB after exporting {:.0} \
         MB in about {step:.1} s ({})",
        uplink.host,
        mb(total),
        match faster {
            true => "PLUGIN_PUSH_VIA=registry moves every byte through the step instead",
            false => "PLUGIN_PUSH_VIA=engine pushes through the engine instead",
        }
    );
    (faster, why)
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
        let (engine, why) = engine_is_faster_over(&image, all, Compression::Auto, &at(25.0), 2);
        assert!(engine, "{why}");
        assert!(why.contains("ran at 25 MB/s"), "{why}");
        let (engine, why) = engine_is_faster_over(&image, all, Compression::Auto, &at(300.0), 2);
        assert!(!engine, "{why}");
    }

    #[test]
    fn a_rebuild_whose_layers_the_destination_holds_stays_with_the_step_even_over_a_slow_link() {
        // docker push with no record of the destination sends all 165 MB; the step only the 12 MB app.
        let image = application();
        let (engine, why) = engine_is_faster_over(&image, 12_000_000, Compression::Auto, &at(25.0), 2);
        assert!(!engine, "{why}");
    }

    #[test]
    fn one_large_layer_stays_with_the_step_over_a_slow_link() {
        // docker push compresses a layer on one core: 200 MB take it longer than the step's export and
        // level 1's larger output over 25 MB/s.
        let mut image = application();
        image.layer_sizes = vec![200_000_000];
        image.layers.truncate(1);
        image.size = 200_000_000;
        let (engine, why) = engine_is_faster_over(&image, 200_000_000, Compression::Auto, &at(25.0), 2);
        assert!(!engine, "{why}");
    }
}
