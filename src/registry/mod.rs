//! Registry: the registry API (`/v2/`) of one registry, as go-containerregistry layers it. An adapter: uses
//! `domain`, `report` and `retry`, never another adapter.
//!
//! - [`http`]: what they all share: a failed request, bounded bodies, error bodies, loopback;
//! - [`transport`]: the client, sending, classifying answers, retries, redirects;
//! - [`auth`]: a registry outside ECR: the token flow, with the user's credentials or none;
//! - [`manifests`]: manifests and referrers, read, written and read back;
//! - [`blobs`]: blobs and upload sessions;
//! - [`copy`]: registry-to-registry verbs (`copy_blob`, `copy_image`, `fan_out`).
//!
//! A registry's answers are untrusted: every body read whole has a limit ([`MANIFEST_LIMIT`],
//! [`ERROR_LIMIT`]); a manifest asked for by digest must hash to it; every blob streamed from a source is
//! hashed as it passes and the copy fails unless it matches its descriptor (digest and size), before any
//! manifest that names it is written. Redirects are followed only to HTTPS (or loopback), at most
//! [`MAX_REDIRECTS`], and never with the token to another host. A client made with
//! [`RegistryClient::foreign`] never sends the ECR token: only the user's credentials for that registry,
//! or none.

mod auth;
mod blobs;
mod copy;
mod http;
mod manifests;
mod transport;

pub use auth::Foreign;
pub use blobs::BlobCopy;
pub use copy::{FanOutTarget, fan_out};
pub use http::{ERROR_LIMIT, HttpFailure};
pub use transport::{Answer, MANIFEST_LIMIT, MAX_REDIRECTS, RegistryClient, classify, prepare};
