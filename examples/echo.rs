//! `echo <FD>`: the reference peer for interop tests written in other
//! languages.
//!
//! It adopts an inherited `AF_UNIX` `SOCK_SEQPACKET` socket and sends back
//! every valid wire-format v1 message it receives. Its behaviour is part of
//! the crate's API; a peer in another language can rely on every rule below
//! (`interop/echo_interop.py` checks them from Python).
//!
//! ```text
//! cargo build --example echo
//! target/debug/examples/echo <FD>
//! ```
//!
//! # Behaviour
//!
//! - `FD` is the decimal number of an open `AF_UNIX` `SOCK_SEQPACKET` socket
//!   inherited from the parent (for example through Python's
//!   `subprocess.Popen(..., pass_fds=[fd])`). Echo takes ownership of it and
//!   sets `FD_CLOEXEC` on it.
//! - Receive capacity: 4096 data bytes and 8 fds per message
//!   (`Channel<8>`).
//! - Every valid message is sent back unchanged as exactly one record: the
//!   same data bytes and the same fds in the same order (the kernel installs
//!   new fd numbers in the peer, naming the same open files). Replies leave
//!   in the order the messages arrived. Echo closes its own copies of the
//!   fds before it reads the next message.
//! - Every rejected record (short, bad magic, wrong version, length
//!   mismatch, fd-count mismatch, data over 4096 bytes, more than 8 fds)
//!   gets no reply, and exactly one line on stderr,
//!   `echo: rejected record: <reason>`; its fds are closed and echo reads the
//!   next record.
//! - When the peer closes its end, echo exits with status 0 and prints
//!   nothing. Queued messages are echoed first. If the peer is gone by the
//!   time a reply is sent, that is a close too: status 0.
//! - Echo never writes to stdout.
//!
//! # Exit status
//!
//! | status | when | stderr |
//! |--------|------|--------|
//! | 0 | the peer closed the socket | nothing (apart from the rejection lines) |
//! | 1 | `FD` is not an `AF_UNIX` `SOCK_SEQPACKET` socket, or any other error | `echo: <error>` |
//! | 2 | bad usage: no argument, more than one, not a number, 0–2 (a standard stream), or not an open fd | a usage message |
//!
//! Checking that `FD` is open reads `/proc/self/fd`, so echo needs `/proc`.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use ipc_unixsocket::{Channel, Error};

/// Receive capacity for the data bytes of one message.
const MAX_DATA: usize = 4096;
/// Receive (and send) capacity for the fds of one message.
const MAX_FDS: usize = 8;

const USAGE: &str = "usage: echo <FD>
  FD  number of an inherited AF_UNIX SOCK_SEQPACKET socket (3 or more)";

fn main() -> ExitCode {
    let fd = match inherited_fd(std::env::args().skip(1)) {
        Ok(fd) => fd,
        Err(problem) => {
            eprintln!("echo: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let channel = match Channel::<MAX_FDS>::adopt(fd) {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!("echo: {error}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&channel) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Echoes messages until the peer closes its end (`Ok`) or a fatal error.
fn serve(channel: &Channel<MAX_FDS>) -> Result<(), Error> {
    let mut data = [0u8; MAX_DATA];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    loop {
        match channel.recv(&mut data, &mut fds) {
            Ok(got) => {
                let mut borrowed = heapless::Vec::<BorrowedFd<'_>, MAX_FDS>::new();
                for fd in &fds {
                    // Cannot fail: both vectors hold at most MAX_FDS.
                    let _ = borrowed.push(fd.as_fd());
                }
                match channel.send(&data[..got.data_len], &borrowed) {
                    Ok(()) => {}
                    Err(Error::Disconnected) => return Ok(()),
                    Err(error) => return Err(error),
                }
                drop(borrowed);
                fds.clear(); // close our copies now, not at the next recv
            }
            Err(Error::Disconnected) => return Ok(()),
            Err(error) if error.is_rejected_record() => {
                eprintln!("echo: rejected record: {error}");
            }
            Err(error) => return Err(error),
        }
    }
}

/// Parses the one argument and takes ownership of the fd it names.
fn inherited_fd(mut args: impl Iterator<Item = String>) -> Result<OwnedFd, String> {
    let (Some(arg), None) = (args.next(), args.next()) else {
        return Err("expected exactly one argument".into());
    };
    let fd: RawFd = arg
        .parse()
        .map_err(|_| format!("{arg:?} is not an fd number"))?;
    if fd < 3 {
        return Err(format!(
            "fd {fd} is a standard stream (or negative), not a socket"
        ));
    }
    // Check the fd is open without touching it: an `OwnedFd` must name an
    // open fd, and std aborts debug builds that close one that is not.
    if let Err(error) = std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")) {
        return Err(format!("fd {fd} is not open ({error})"));
    }
    // SAFETY: `fd` is open (checked just above; this process is
    // single-threaded, so nothing can close it in between) and nothing else
    // in this process owns it: std only uses 0, 1 and 2, which are refused,
    // and this program opened nothing before this point. The parent passed
    // it for us to own, and it is adopted exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
