//! The write machinery push and promote share, as mini-redis's commands share only a connection: a mode's
//! `run` reads its source and hands the image to these; nothing here knows which mode called it, and no
//! mode imports another.
//!
//! - [`destination`]: one destination repository: its client (with the one token renewal) and its label;
//! - [`tags`]: the per-tag loop, the [`Verb`], and the writer that puts a manifest's bytes;
//! - [`engine_push`]: the writer through the Docker Engine (`docker push`);
//! - [`uploads`]: an image read into files uploaded to a destination, and the uploads that follow a
//!   layer while it is compressed;
//! - [`preflight`]: every destination answers before the heavy work starts;
//! - [`scan`]: the scan gate once the tags landed; [`progress`]: the display while copies run.

pub mod destination;
pub mod engine_push;
pub mod preflight;
pub mod progress;
pub mod scan;
pub mod tags;
pub mod uploads;

pub use destination::Destination;
pub use tags::Verb;
