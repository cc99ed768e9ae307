//! The `defmt` feature end to end: this test binary runs itself again as a
//! child whose log frames go to stderr through `ipc_unixsocket::logger` (the
//! global logger the crate's linker script installs), provokes known events,
//! and decodes the child's stderr with `defmt-decoder` against this binary's
//! ELF.
//!
//! ```text
//! cargo test --features defmt --test defmt_frames
//! ```
//!
//! `DEFMT_LOG` (set to `trace` in `.cargo/config.toml`) must let trace
//! messages through when the crate compiles.
#![cfg(feature = "defmt")]

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};

use defmt_decoder::{DecodeError, Table};
use ipc_unixsocket::{Channel, Error, logger};
use rustix::io::IoSlice;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

/// Set in the child's environment: only then does `child_provokes_events` act.
const CHILD: &str = "IPC_UNIXSOCKET_DEFMT_FRAMES_CHILD";

const THREADS: u8 = 4;
const FRAMES_PER_THREAD: u16 = 100;

/// One decoded frame: level, where it was logged, and message.
#[derive(Debug)]
struct Logged {
    level: String,
    file: String,
    message: String,
}

/// Decodes a whole stream of frames; a malformed frame fails the test.
fn decode(stream: &[u8]) -> Vec<Logged> {
    assert!(
        option_env!("DEFMT_LOG").is_some(),
        "build with DEFMT_LOG=trace (.cargo/config.toml sets it)"
    );
    let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let table = Table::parse(&elf)
        .expect("parse the test binary's ELF")
        .expect("the test binary has a .defmt section");
    let locations = table.get_locations(&elf).expect("locations");
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    let mut logged = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => logged.push(Logged {
                level: frame.level().map_or("", |l| l.as_str()).to_owned(),
                file: locations
                    .get(&frame.index())
                    .map_or_else(String::new, |l| l.file.display().to_string()),
                message: frame.display_message().to_string(),
            }),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => panic!(
                "malformed frame after {logged:#?}; stream: {:?}",
                String::from_utf8_lossy(stream)
            ),
        }
    }
    logged
}

/// Finds the one frame with this message, at this level.
fn expect<'a>(logged: &'a [Logged], level: &str, message: &str) -> &'a Logged {
    let found: Vec<_> = logged.iter().filter(|l| l.message == message).collect();
    assert_eq!(found.len(), 1, "{message:?} once in {logged:#?}");
    assert_eq!(found[0].level, level, "level of {message:?}");
    found[0]
}

#[test]
fn frames_decode_to_the_expected_messages() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_provokes_events", "--exact", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the child");
    assert!(
        child.status.success(),
        "child failed: {}\nstderr: {:?}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let logged = decode(&child.stderr);

    // A record with bad magic and one fd: rejected, its fd closed.
    let rejected = expect(
        &logged,
        "warn",
        "rejected record of 8 bytes: BadMagic { found: [88, 88] }; closed 1 fds",
    );
    // The location is the call site in the crate, not the log shim.
    assert!(
        rejected.file.ends_with("src/channel.rs"),
        "logged from {}",
        rejected.file
    );

    // A valid message, traced on both ends.
    expect(&logged, "trace", "sent 5 data bytes, 0 fds");
    expect(
        &logged,
        "trace",
        "received Received { data_len: 5, fd_count: 0 }",
    );

    // `bind` refuses a pipe and closes it; the child logged the fd number.
    let pipe = expect_prefix(&logged, "child: pipe fd ");
    expect(
        &logged,
        "warn",
        &format!("bind: fd {pipe} is not an AF_UNIX SOCK_SEQPACKET socket; closed it"),
    );

    // The peer goes away: both directions report it.
    expect(&logged, "debug", "recv: peer disconnected");
    expect(&logged, "debug", "send: peer disconnected");

    // The crate's public types format through defmt.
    expect(&logged, "info", "child: error Disconnected");
    expect(
        &logged,
        "info",
        "child: header Header { fd_count: 2, data_len: 300 }",
    );

    // Re-entry: the nested frame is dropped, the outer one is whole.
    expect(&logged, "info", "child: outer frame intact");
    assert!(!logged.iter().any(|l| l.message.contains("nested")));
    expect(&logged, "info", "child: dropped frames 1");

    // Threads logging at once: every frame whole, none lost.
    let mut seen = BTreeSet::new();
    for l in &logged {
        if let Some(rest) = l.message.strip_prefix("child: thread ") {
            assert!(seen.insert(rest.to_owned()), "{rest} twice");
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(THREADS) * usize::from(FRAMES_PER_THREAD)
    );
    expect(&logged, "info", "child: done");
}

fn expect_prefix(logged: &[Logged], prefix: &str) -> String {
    let found: Vec<_> = logged
        .iter()
        .filter_map(|l| l.message.strip_prefix(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{prefix:?} once in {logged:#?}");
    found[0].to_owned()
}

/// How long the child waits for a record it has queued itself: a lost one
/// fails the child (and so the parent) instead of hanging both.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The child's half: each event the parent checks for, in order.
#[test]
fn child_provokes_events() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (a, b) = Channel::<2>::pair().unwrap();
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::new();

    // Bad magic, with one fd attached.
    let memfd = rustix::fs::memfd_create("defmt-frames", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    send_raw(&a, b"XX\x01\x01\x00\x00\x00\x00", memfd.as_fd());
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, DEADLINE),
        Err(Error::BadMagic { found: *b"XX" })
    );

    a.send(b"hello", &[]).unwrap();
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, DEADLINE)
            .unwrap()
            .data_len,
        5
    );

    let (reader, _writer) = rustix::pipe::pipe().unwrap();
    defmt::info!("child: pipe fd {=i32}", reader.as_raw_fd());
    assert_eq!(
        Channel::<1>::bind(reader).unwrap_err(),
        Error::NotSeqpacketSocket
    );

    drop(a);
    let gone = b.recv_timeout(&mut data, &mut fds, DEADLINE).unwrap_err();
    assert_eq!(b.send(b"anyone?", &[]), Err(Error::Disconnected));
    defmt::info!("child: error {}", gone);
    defmt::info!(
        "child: header {}",
        ipc_unixsocket::Header {
            fd_count: 2,
            data_len: 300
        }
    );

    assert_eq!(logger::dropped_frames(), 0);
    defmt::info!("child: outer frame {}", Reenter);
    defmt::info!("child: dropped frames {=u32}", logger::dropped_frames());

    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in 0..FRAMES_PER_THREAD {
                    defmt::info!("child: thread {=u8} frame {=u16}", t, i);
                }
            });
        }
    });
    defmt::info!("child: done");
}

/// Logs from inside its `format`: a frame started while this thread is
/// already writing one.
struct Reenter;

impl defmt::Format for Reenter {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::error!("nested frame, must be dropped");
        defmt::write!(f, "intact");
    }
}

/// Sends `bytes` as one raw record with `fd`, bypassing the crate's header.
fn send_raw(socket: impl AsFd, bytes: &[u8], fd: rustix::fd::BorrowedFd<'_>) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
    assert_eq!(sent, bytes.len());
}

/// `set_fd` sends frames to another fd, and `use_stderr` hands it back.
#[test]
fn set_fd_redirects_frames() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    assert!(logger::set_fd(writer).is_none(), "was writing to stderr");
    defmt::info!("to the pipe {=u32}", 42);
    let writer = logger::use_stderr().expect("the pipe's write end");
    drop(writer);
    let mut stream = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(reader), &mut stream).unwrap();
    let logged = decode(&stream);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    expect(&logged, "info", "to the pipe 42");
}
