//! A worker in another process, in the spirit of libcamera's IPC test.
//!
//! The test binary re-executes itself as the worker (`cross_process
//! --child <fd>`), handing it the remote end of `Channel::create()`
//! across `exec`. The worker binds the fd and serves commands until told to
//! close; the parent checks every answer and the worker's exit status.
//!
//! Runs with `harness = false`: `common::harness` decides between the parent
//! (the test, run by libtest-mimic on the main thread) and the worker, and
//! nothing else runs in the process while the parent clears `FD_CLOEXEC`
//! and spawns (the watchdog thread only waits in
//! `poll`, and its pipe is close-on-exec). Every answer has a deadline, the
//! worker's exit too, and a watchdog bounds the whole run.

mod common;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::Duration;

use common::{TEST_BOUND, harness, identity, memfd, read_all, wait_child};
use ipc_unixsocket::{Channel, Error};
use rustix::fs::{MemfdFlags, fstat, memfd_create};
use rustix::io::{FdFlags, fcntl_setfd};

const TEST_NAME: &str = "worker_answers_every_command_and_exits_0_on_close";

/// Receive capacity of both ends.
const MAX_FDS: usize = 8;
const MAX_DATA: usize = 4096;

// Commands: the first data byte, then the command's own data and fds.
/// Reverse the bytes that follow; reply with the reversed bytes.
const REVERSE: u8 = b'r';
/// Reply with the summed `st_size` of the passed fds, as a `u64` LE.
const SUM_SIZES: u8 = b's';
/// Concatenate the passed memfds in order into a new memfd; reply with it.
const CONCAT: u8 = b'c';
/// Reply with the peer's pid (`SO_PEERCRED`) and the worker's own pid.
const PIDS: u8 = b'p';
/// Exit with status 0, without a reply.
const CLOSE: u8 = b'q';

// Worker exit statuses other than 0, so a failure names its cause.
const EXIT_BAD_ARGS: u8 = 2;
const EXIT_BIND_FAILED: u8 = 3;
const EXIT_RECV_FAILED: u8 = 4;
const EXIT_SEND_FAILED: u8 = 5;
const EXIT_UNKNOWN_COMMAND: u8 = 6;
const EXIT_PARENT_GONE: u8 = 7;

fn main() -> ExitCode {
    harness::main(
        |args| worker(args.first().and_then(|fd| fd.parse().ok())),
        // Every answer has its own deadline; the watchdog bounds the whole
        // run.
        || vec![harness::test(TEST_NAME, 2 * TEST_BOUND, parent)],
    )
}

// ---- worker ----------------------------------------------------------------

fn worker(fd: Option<RawFd>) -> ExitCode {
    let Some(fd) = fd else {
        return ExitCode::from(EXIT_BAD_ARGS);
    };
    // SAFETY: the parent passed this fd number on the command line after
    // clearing FD_CLOEXEC on it, so it is open in this process, and nothing
    // else here owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let Ok(channel) = Channel::<MAX_FDS>::adopt(fd) else {
        return ExitCode::from(EXIT_BIND_FAILED);
    };

    let mut data = [0u8; MAX_DATA];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    loop {
        let got = match channel.recv(&mut data, &mut fds) {
            Ok(got) => got,
            Err(Error::Disconnected) => return ExitCode::from(EXIT_PARENT_GONE),
            Err(_) => return ExitCode::from(EXIT_RECV_FAILED),
        };
        let Some((&command, args)) = data[..got.data_len].split_first() else {
            return ExitCode::from(EXIT_UNKNOWN_COMMAND);
        };
        let sent = match command {
            REVERSE => {
                let mut reversed = args.to_vec();
                reversed.reverse();
                channel.send(&reversed, &[])
            }
            SUM_SIZES => {
                let total: u64 = fds
                    .iter()
                    .map(|fd| u64::try_from(fstat(fd).expect("fstat").st_size).unwrap())
                    .sum();
                channel.send(&total.to_le_bytes(), &[])
            }
            CONCAT => {
                let joined = memfd_create("concat", MemfdFlags::CLOEXEC).expect("memfd_create");
                let mut file = std::fs::File::from(joined);
                for fd in &fds {
                    std::io::Write::write_all(&mut file, &read_all(fd.as_fd())).expect("write");
                }
                channel.send(&[CONCAT], &[file.as_fd()])
            }
            PIDS => {
                let peer = channel.peer_credentials().expect("SO_PEERCRED");
                let mut reply = [0u8; 8];
                reply[..4].copy_from_slice(
                    &peer
                        .pid
                        .map_or(0, |pid| pid.as_raw_nonzero().get())
                        .to_le_bytes(),
                );
                reply[4..].copy_from_slice(&std::process::id().to_le_bytes());
                channel.send(&reply, &[])
            }
            CLOSE => return ExitCode::SUCCESS,
            _ => return ExitCode::from(EXIT_UNKNOWN_COMMAND),
        };
        if sent.is_err() {
            return ExitCode::from(EXIT_SEND_FAILED);
        }
    }
}

// ---- parent (the test) -----------------------------------------------------

/// Sends one command and returns the answer's data and fds. A worker that
/// hangs fails the test instead of hanging it.
fn ask(
    channel: &Channel<MAX_FDS>,
    command: u8,
    args: &[u8],
    fds: &[BorrowedFd<'_>],
) -> (Vec<u8>, heapless::Vec<OwnedFd, MAX_FDS>) {
    let mut message = vec![command];
    message.extend_from_slice(args);
    channel.send(&message, fds).expect("send a command");
    let mut data = vec![0u8; MAX_DATA];
    let mut got_fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    let got = channel
        .recv_timeout(&mut data, &mut got_fds, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("answer to command {:?}: {e}", command as char));
    assert_eq!(got.fd_count, got_fds.len());
    data.truncate(got.data_len);
    (data, got_fds)
}

fn parent() {
    let (channel, remote) = Channel::<MAX_FDS>::create().unwrap();
    // Inheritable by the child only: no other thread runs in this process.
    fcntl_setfd(&remote, FdFlags::empty()).unwrap();
    let mut child = harness::child_command([remote.as_raw_fd().to_string()])
        .spawn()
        .expect("spawn the worker");
    drop(remote);

    // Reverse a byte string (and the edge cases).
    for text in [
        &b"hello, worker"[..],
        b"",
        b"x",
        &(0..=255).collect::<Vec<u8>>(),
    ] {
        let (answer, fds) = ask(&channel, REVERSE, text, &[]);
        let mut expected = text.to_vec();
        expected.reverse();
        assert_eq!(answer, expected, "reverse of {text:?}");
        assert!(fds.is_empty());
    }
    let long: Vec<u8> = (0..MAX_DATA - 1).map(|i| (i * 7 % 256) as u8).collect();
    let (answer, _) = ask(&channel, REVERSE, &long, &[]);
    assert!(answer.iter().eq(long.iter().rev()), "reverse of 4095 bytes");

    // Summed sizes of the passed fds: memfds and a regular file.
    let sizes = [0usize, 1, 4096, 12345];
    let files: Vec<OwnedFd> = sizes.iter().map(|&n| memfd(&vec![b'z'; n])).collect();
    let manifest = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let manifest_len = manifest.metadata().unwrap().len();
    let mut passed: Vec<BorrowedFd<'_>> = files.iter().map(AsFd::as_fd).collect();
    passed.push(manifest.as_fd());
    let (answer, _) = ask(&channel, SUM_SIZES, &[], &passed);
    let expected = sizes.iter().sum::<usize>() as u64 + manifest_len;
    assert_eq!(answer, expected.to_le_bytes(), "sum of sizes");
    let (answer, _) = ask(&channel, SUM_SIZES, &[], &[]);
    assert_eq!(answer, 0u64.to_le_bytes(), "sum of no sizes");
    let (answer, _) = ask(&channel, SUM_SIZES, &[], &passed[1..2]);
    assert_eq!(answer, 1u64.to_le_bytes());

    // Concatenation of the passed memfds, in order, into a new memfd.
    let parts = [&b"alpha "[..], b"", b"beta ", b"gamma", b"\0\xff"];
    let part_fds: Vec<OwnedFd> = parts.iter().map(|p| memfd(p)).collect();
    let passed: Vec<BorrowedFd<'_>> = part_fds.iter().map(AsFd::as_fd).collect();
    let (answer, joined) = ask(&channel, CONCAT, &[], &passed);
    assert_eq!(answer, [CONCAT]);
    assert_eq!(joined.len(), 1, "one memfd back");
    assert_eq!(read_all(joined[0].as_fd()), b"alpha beta gamma\0\xff");
    for part in &part_fds {
        assert_ne!(identity(&joined[0]), identity(part), "a new memfd");
    }
    // Reversed order gives the reversed concatenation.
    let backwards: Vec<BorrowedFd<'_>> = passed.iter().rev().copied().collect();
    let (_, joined) = ask(&channel, CONCAT, &[], &backwards);
    assert_eq!(read_all(joined[0].as_fd()), b"\0\xffgammabeta alpha ");

    // The kernel knows who is on the other end: the parent made the pair.
    let (answer, _) = ask(&channel, PIDS, &[], &[]);
    let peer_pid = u32::from_le_bytes(answer[..4].try_into().unwrap());
    let worker_pid = u32::from_le_bytes(answer[4..].try_into().unwrap());
    assert_eq!(peer_pid, std::process::id());
    assert_eq!(worker_pid, child.id());

    // Close: the worker exits with status 0 and its end goes away.
    channel.send(&[CLOSE], &[]).unwrap();
    let status = wait_child(&mut child, "the worker", TEST_BOUND);
    assert_eq!(status.code(), Some(0), "worker exit status: {status}");
    let mut data = [0u8; 8];
    let mut fds = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    // Disconnected (not TimedOut) also proves the parent dropped its copy of
    // the remote end.
    assert_eq!(
        channel.recv_timeout(&mut data, &mut fds, Duration::from_secs(120)),
        Err(Error::Disconnected)
    );
    assert_eq!(channel.send(b"r", &[]), Err(Error::Disconnected));
}
