//! How a long transfer shows while it runs: push and promote run their copies under [`ticking`], which
//! shows each destination's [`Progress`] every [`progress_interval`] (nothing in the first seconds).

use crate::report::{Progress, progress_interval};

/// Run `work`, showing each of `shown` while it runs; each is finished when it ends.
pub async fn ticking<T>(work: impl std::future::Future<Output = T>, shown: &[&Progress]) -> T {
    let ticker = async {
        loop {
            tokio::time::sleep(progress_interval()).await;
            shown.iter().for_each(|p| p.print());
        }
    };
    let done = tokio::select! {
        done = work => done,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    shown.iter().for_each(|p| p.finish());
    done
}
