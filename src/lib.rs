#![doc = include_str!("../README.md")]
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]
// The README shows a `build.rs` for binaries using `defmt`: its `fn main` is
// the point of the example.
#![allow(clippy::needless_doctest_main)]

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
// Built on every target; its seccomp step only where seccompiler builds
// filters (x86_64, aarch64): see `worker::SECCOMP_AVAILABLE`.
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

/// The `heapless` this crate is built with: [`heapless::Vec`] is the fd
/// vector of every receive. Name it through this re-export and its version
/// cannot drift from the crate's.
pub use heapless;
/// The `rustix` this crate is built with: `OwnedFd`, `BorrowedFd`, `Errno`
/// and `Mode` in the signatures are its types. Name it through this
/// re-export and its version cannot drift from the crate's.
pub use rustix;

/// The maintainer pages under `docs/`, so that `cargo test --doc` compiles
/// their code blocks as it does the README's.
#[cfg(doctest)]
mod docs {
    #[doc = include_str!("../docs/checks.md")]
    struct Checks;
    #[doc = include_str!("../docs/fuzzing.md")]
    struct Fuzzing;
    #[doc = include_str!("../docs/logging.md")]
    struct Logging;
    #[doc = include_str!("../docs/performance.md")]
    struct Performance;
    #[doc = include_str!("../docs/platforms.md")]
    struct Platforms;
    #[doc = include_str!("../docs/testing.md")]
    struct Testing;
    #[doc = include_str!("../docs/threat-model.md")]
    struct ThreatModel;
    #[doc = include_str!("../docs/wire-format.md")]
    struct WireFormat;
}
