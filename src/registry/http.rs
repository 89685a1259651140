//! The plain HTTP pieces every part of the registry stack shares: a failed request ([`HttpFailure`]), a
//! body read with a limit, a registry's error body as a message, and what counts as a loopback host.

use futures_util::StreamExt;
use reqwest::Response;
use std::fmt;

/// The most of an error answer's body read, for its message.
pub const ERROR_LIMIT: u64 = 64 << 10;

/// A failed request; `retryable` when another attempt may succeed (429, 5xx, a broken connection).
#[derive(Debug)]
pub struct HttpFailure {
    pub message: String,
    pub retryable: bool,
    /// The registry that failed (a copy's source, or its target), for the fix.
    pub at: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpFailure {}

/// `: CODE message` from a registry's JSON error body (escaped and shortened), empty when there is none.
pub(super) fn registry_error(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match json["errors"].as_array().and_then(|e| e.first()) {
        Some(e) => {
            let text = format!(
                "{} {}",
                e["code"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
            format!(": {}", crate::domain::excerpt(text.as_bytes(), 300))
        }
        None => String::new(),
    }
}

/// A response's body, refused past `limit` bytes (by its length when declared, else as it arrives).
pub(super) async fn read_limited(response: Response, limit: u64) -> Result<Vec<u8>, String> {
    if let Some(length) = response.content_length().filter(|l| *l > limit) {
        return Err(format!("an answer of {length} bytes, more than the {limit} allowed"));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| crate::report::chain(&e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(format!("an answer of more than the {limit} bytes allowed"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name == "[::1]" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}
