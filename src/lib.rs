#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod fmt;

mod channel;
mod cmsg;
mod error;
mod header;
mod listener;
#[cfg(feature = "defmt")]
pub mod logger;
mod payload;

pub use channel::{Channel, Received};
pub use error::Error;
pub use header::{HEADER_LEN, Header, MAGIC, MAX_FDS_PER_MESSAGE, VERSION};
pub use listener::{Accepted, Listener};
pub use payload::Payload;
pub use rustix::fs::Mode;
pub use rustix::net::UCred;
