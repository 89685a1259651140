//! The AWS adapter: the run's identity (STS), ECR authorization tokens, and the ECR repository API.
//! Every AWS client of the run is built from one [`Identity`]. Uses `domain` and `report` only (the SDK retries its own calls,
//! within `PLUGIN_TIMEOUT`); never another adapter.

pub mod error;
pub mod identity;
pub mod repository;
pub mod scan;
pub mod token;

pub use identity::{Identity, assume_from, resolve};
