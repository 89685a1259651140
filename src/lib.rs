//! ecr-step as a library: the stages of the one straight line that `main.rs` runs,
//! settings → credentials → token → source → destinations → report, so that the fuzz targets and the
//! binary share one copy of the code. ARCHITECTURE.md is the map.
//!
//! # The dependency rule
//!
//! Modules are layered; a module may use the layers below it and never one above. Within the adapter
//! layer, no adapter uses another. `tests/architecture.rs` reads every `crate::` path and fails on an
//! arrow this rule forbids, and on any cycle between files.
//!
//! ```text
//! main (the binary)
//!   modes          one file per PLUGIN_MODE, and the per-tag loop they share
//!   settings       PLUGIN_* → typed settings per mode (reads the files settings name)
//!   aws | registry | engine | layout | outputs
//!                  adapters: the AWS APIs, the registry /v2/ API, the Docker Engine, images in files
//!                  (OCI layouts, archives), what later steps read
//!   files | retry  bounded reads of regular files, untrusted trees, scratch space; the one retry policy
//!   report         every line the user reads
//!   domain         plain values and pure rules: no I/O, no printing
//! ```

pub mod aws;
pub mod domain;
pub mod engine;
pub mod files;
pub mod layout;
pub mod modes;
pub mod outputs;
pub mod registry;
pub mod report;
pub mod retry;
pub mod settings;
