//! Domain: the plain values every stage passes along, and the pure rules about them. No I/O, no printing,
//! no async: everything here can be unit-tested without a server, and everything above may use it.

pub mod branch;
pub mod credentials;
pub mod grammar;
pub mod login;
pub mod manifest;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod repository;
pub mod scan;
pub mod secret;
pub mod source;
pub mod tag;
pub mod target;
