//! What the three binaries share: the protocol of the exchange (for
//! `typed` and `drive`) and its bytes on the wire (for `channel`, which
//! speaks it by hand, and for `drive`, which checks them).
//!
//! The exchange: the two hellos, then requests `Set(n)` (reply `n`) and
//! `Get` (reply the last `n` set, 0 at first), each with its cookie; no
//! fds, though both workers take one per record (`MAX_FDS = 1`), as a
//! worker that receives buffers does.

use ipc_unixsocket::calls::{NoError, Protocol, Schema};
use serde::{Deserialize, Serialize};

/// The request enum: two variants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
pub enum Request {
    /// Answer the value set last.
    Get,
    /// Remember `0` and answer it.
    Set(u8),
}

/// The protocol: a one-byte register.
pub struct Register;

impl Protocol for Register {
    const NAME: &'static str = "register";
    const VERSION: u32 = 1;
    type Request<'a> = Request;
    type Reply<'a> = u8;
    type Event<'a> = ();
    type Error<'a> = NoError;
}

/// The fds one record may carry, in both workers.
pub const MAX_FDS: usize = 1;

/// The body of `Register`'s hello in postcard (see `ipc_unixsocket::calls::Hello`):
/// the name (length, then UTF-8), the version, and the four schema hashes.
/// `drive` checks it against what the call layer encodes.
pub const HELLO: [u8; 42] = [
    8, b'r', b'e', b'g', b'i', b's', b't', b'e', b'r', 1, //
    0x50, 0x68, 0x1e, 0x15, 0xbf, 0x06, 0x56, 0xc9, // request
    0xc7, 0x74, 0xbe, 0x71, 0x7c, 0x25, 0x26, 0x81, // reply
    0x85, 0xf2, 0xbe, 0x71, 0x7c, 0x6f, 0x26, 0x81, // event
    0x0b, 0xe6, 0xbd, 0x71, 0x7c, 0xd1, 0x25, 0x81, // error
];
