//! The cost of `PLUGIN_SOCI=true`: a new 1 GB image of real files pushed by the step with a SOCI index and
//! without one (three rounds, alternating which goes first, each push into a fresh registry), time and
//! the step's peak RSS. The zTOC comes from the compression itself, so the difference is its bookkeeping:
//! the tar headers read on a thread beside the compression, the seek points' windows, the flatbuffers.

use super::{MB, Row, Sample, measure, median, real_files_image, step_env};
use crate::testbed::{DEFAULT_ACCOUNT, Moto, Registry, Step};

pub fn row(bin: &str, moto: &Moto) -> Row {
    let image = real_files_image(1000 * MB);
    let push = |soci: bool| -> Sample {
        let registry = Registry::start(DEFAULT_ACCOUNT);
        let step = Step::push(moto, &registry, &image, "app")
            .env("PLUGIN_TAGS", "v1")
            .env("PLUGIN_PUSH_VIA", "registry")
            .env("PLUGIN_SOCI", if soci { "true" } else { "false" });
        let sample = measure(bin, &[], &step_env(&step));
        if soci {
            let (bytes, _, _) = registry.manifest("app", "v1").expect("the tag is there");
            assert!(
                String::from_utf8_lossy(&bytes).contains("application/vnd.amazon.soci.index.v2+json"),
                "the SOCI push wrote no SOCI index"
            );
        }
        sample
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..3 {
        if round % 2 == 0 {
            with.push(push(true));
            without.push(push(false));
        } else {
            without.push(push(false));
            with.push(push(true));
        }
    }
    let most = |samples: &[Sample]| samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    let (peak, peak_without) = (most(&with), most(&without));
    let (with, without) = (median(with), median(without));
    let without = Sample {
        rss_mb: peak_without,
        ..without
    };
    Row {
        what: "push, new 1 GB image of real files, PLUGIN_SOCI=true (a zTOC per layer, from the compression)".into(),
        step: Sample { rss_mb: peak, ..with },
        peer: Some(("the same push without SOCI".into(), without)),
        target: "≤ 1.15 × peer, peak RSS ≤ 64 MB".into(),
        met: with.time.as_secs_f64() <= 1.15 * without.time.as_secs_f64() && peak <= 64.0,
        sent: None,
    }
}
