//! The channel-only worker: the same exchange as `typed`, on the same
//! wire bytes, written by hand over `recv_frame`/`send_frame`, as a worker
//! in another language would: the hello is a byte array compared whole,
//! the call header and the one-byte bodies are read and written in place.
//! No serde, no postcard: what `typed` has more is what the call layer
//! costs.

use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;

use ipc_unixsocket::calls::{CALL_HEADER_LEN, Kind, Rejection};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, heapless, rustix};
use ipc_unixsocket_footprint::{HELLO, MAX_FDS};

/// Where a body starts in a frame.
const BODY: usize = HEADER_LEN + CALL_HEADER_LEN;

fn main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn serve() -> Result<(), Error> {
    let stdin = rustix::io::dup(std::io::stdin().as_fd())?;
    let channel = Channel::<MAX_FDS>::adopt(stdin)?;
    let (mut out, mut inbox) = ([0u8; 64], [0u8; 64]);
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    let len = frame(&mut out, Kind::Hello, [0; 4], &HELLO);
    channel.send_frame(&mut out[..len], &[])?;
    let (mut matched, mut value) = (false, 0);
    loop {
        let got = match channel.recv_frame(&mut inbox, &mut fds) {
            Ok(got) => got,
            Err(Error::Disconnected) => return Ok(()),
            Err(error) if error.is_rejected_record() => continue,
            Err(error) => return Err(error),
        };
        fds.clear(); // no request carries fds: close any
        let Some(data) = inbox[HEADER_LEN..].get(..got.data_len) else {
            continue;
        };
        let Some((&[kind, 0, 0, 0, c0, c1, c2, c3], body)) = data.split_first_chunk() else {
            continue; // no call header
        };
        let cookie = [c0, c1, c2, c3];
        if kind == Kind::Hello as u8 {
            if body != HELLO {
                return Err(Error::ProtocolMismatch {
                    same_name: body.get(1..9) == Some(b"register"),
                    peer_version: 0,
                    differs: ipc_unixsocket::calls::Differs::NONE,
                });
            }
            matched = true;
            continue;
        }
        if kind != Kind::Request as u8 {
            continue;
        }
        let answer = match body {
            _ if !matched => Err(Rejection::Unexpected),
            [0] => Ok(value),
            [1, new] => {
                value = *new;
                Ok(value)
            }
            &[index, ..] if index >= 2 => Err(Rejection::UnknownVariant),
            _ => Err(Rejection::BadBody),
        };
        if cookie == [0; 4] {
            continue; // one-way: no reply
        }
        let len = match answer {
            Ok(value) => frame(&mut out, Kind::Reply, cookie, &[value]),
            Err(rejection) => frame(&mut out, Kind::ErrorReply, cookie, &[rejection as u8]),
        };
        channel.send_frame(&mut out[..len], &[])?;
    }
}

/// Writes the call header and `body` after the v1 header's room; returns
/// the frame's length.
fn frame(out: &mut [u8; 64], kind: Kind, cookie: [u8; 4], body: &[u8]) -> usize {
    let [c0, c1, c2, c3] = cookie;
    out[HEADER_LEN..BODY].copy_from_slice(&[kind as u8, 0, 0, 0, c0, c1, c2, c3]);
    out[BODY..][..body.len()].copy_from_slice(body);
    BODY + body.len()
}
