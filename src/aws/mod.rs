//! The AWS adapter: the run's identity (STS), ECR authorization tokens, the ECR repository API and its
//! images' push times.
//! Every AWS client of the run is built from one [`Identity`]. Uses `domain` and `report` only (the SDK retries its own calls,
//! within `PLUGIN_TIMEOUT`); never another adapter.

pub mod error;
pub mod identity;
pub mod images;
pub mod repository;
pub mod scan;
pub mod token;

pub use identity::{Identity, assume_from, resolve};
