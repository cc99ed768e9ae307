#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod fmt;

#[cfg(feature = "calls")]
#[cfg_attr(docsrs, doc(cfg(feature = "calls")))]
pub mod calls;
mod channel;
mod cmsg;
mod credentials;
mod error;
mod header;
mod listener;
#[cfg(all(feature = "defmt", feature = "std"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "defmt", feature = "std"))))]
pub mod logger;
mod payload;
#[cfg(feature = "worker")]
#[cfg_attr(docsrs, doc(cfg(feature = "worker")))]
pub mod worker;

pub use channel::{Channel, Received};
pub use credentials::Credentials;
pub use error::Error;
pub use header::{HEADER_LEN, Header, MAGIC, MAX_FDS_PER_MESSAGE, VERSION};
pub use listener::{Accepted, Listener};
pub use payload::Payload;
pub use rustix::fs::Mode;
