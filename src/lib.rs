//! ecr-step as a library: the modules of the one straight line that `main.rs` runs
//! (settings → credentials → token → engine or registry → report). A library so that the fuzz targets
//! and the binary share one copy of the code; see ARCHITECTURE.md.

pub mod aws_error;
pub mod branch;
pub mod check;
pub mod credentials;
pub mod engine;
pub mod files;
pub mod grammar;
pub mod integrations;
pub mod login;
pub mod outputs;
pub mod promote;
pub mod push;
pub mod reference;
pub mod registry;
pub mod registry_client;
pub mod report;
pub mod repository;
pub mod secret;
pub mod settings;
pub mod token;
