//! The one retry policy of the step, for registry requests and engine pushes alike: jittered exponential
//! backoff from 200 ms doubling to at most 10 s, at most 5 retries, and none started once the budget
//! (`PLUGIN_TIMEOUT`) has passed since the first attempt, so a failing operation costs about the budget,
//! not the budget times the attempts. (AWS SDK calls use the SDK's own retries under the same budget.)
//! Each retry is reported.

use backon::{ExponentialBuilder, Retryable};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// At most this many retries after the first attempt.
pub const MAX_RETRIES: usize = 5;

/// How an operation failed for good.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: usize,
    pub elapsed: Duration,
}

/// Run `op` until it succeeds, fails with an error `retryable` refuses, runs out of retries, or `budget`
/// has passed. `what` names the operation in the "retrying:" lines.
pub async fn run<T, E, F, Fut>(
    what: &str,
    budget: Duration,
    mut op: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let attempts = AtomicUsize::new(0);
    let counted = || {
        attempts.fetch_add(1, Ordering::SeqCst);
        op()
    };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(MAX_RETRIES)
        .with_jitter();
    counted
        .retry(policy)
        .when(|e| retryable(e) && started.elapsed() < budget)
        .notify(|e, wait| crate::report::retrying(what, wait, &e.to_string()))
        .await
        .map_err(|error| GaveUp {
            error,
            attempts: attempts.load(Ordering::SeqCst),
            elapsed: started.elapsed(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_limit_at_a_refusal_and_at_the_budget() {
        let failing = |retryable: bool| move || async move { Err::<(), _>(if retryable { "503" } else { "400" }) };
        let gave_up = run("x", Duration::from_secs(3600), failing(true), |e| *e == "503")
            .await
            .unwrap_err();
        assert_eq!(gave_up.attempts, MAX_RETRIES + 1);
        let gave_up = run("x", Duration::from_secs(3600), failing(false), |e| *e == "503")
            .await
            .unwrap_err();
        assert_eq!(gave_up.attempts, 1, "a refusal is not retried");
        // The first backoff alone (at least 200 ms) passes a 100 ms budget: one retry at most.
        let gave_up = run("x", Duration::from_millis(100), failing(true), |e| *e == "503")
            .await
            .unwrap_err();
        assert!(gave_up.attempts <= 2, "{} attempts", gave_up.attempts);
        let mut calls = 0;
        let ok = run(
            "x",
            Duration::from_secs(60),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("503") } else { Ok(n) } }
            },
            |e| *e == "503",
        )
        .await;
        assert_eq!(ok.unwrap(), 3);
    }
}
