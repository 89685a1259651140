//! Before the heavy work (exporting, reading or compressing an image): every destination answers `/v2/`
//! with its token (over TLS, through the proxy, signed in) and its repository exists (or will be created),
//! so a red run comes in about a second, not after a 1 GB export. Each registry's own answer is shown.

use super::Destination;
use crate::modes::Context;
use anyhow::Result;

/// Every destination, at once; the first failure, naming its registry.
pub async fn destinations_answer(ctx: &Context, repo: &str, created: bool) -> Result<()> {
    let checks = ctx.logins.iter().map(|login| async move {
        let to = Destination::open(login, repo, ctx)?;
        // Both at once; the sign-in's own failure is said first.
        let probe = async {
            match created {
                true => Ok(()),
                false => to.client.probe_upload(repo).await,
            }
        };
        let (signed_in, probed) = tokio::join!(to.client.ping(), probe);
        signed_in?;
        probed
    });
    for checked in futures_util::future::join_all(checks).await {
        checked?;
    }
    Ok(())
}
