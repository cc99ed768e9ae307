//! The `defmt` feature end to end: this test binary runs itself again as a
//! child whose log frames go to stderr through `ipc_unixsocket::logger` (the
//! global logger the crate's linker script installs), provokes known events,
//! and decodes the child's stderr with `defmt-decoder` against this binary's
//! ELF.
//!
//! ```text
//! cargo test --manifest-path defmt-check/Cargo.toml
//! ```
//!
//! `DEFMT_LOG` (set to `trace` in the repository's `.cargo/config.toml`) must
//! let trace messages through when the crate compiles.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use defmt_decoder::{DecodeError, Locations, Table};
use ipc_unixsocket::{Channel, Error, logger};
use rustix::io::IoSlice;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use rustix::process::{Pid, Signal, kill_process_group};

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
    // Parsing the ELF's debug info takes seconds: once per process.
    static TABLE: OnceLock<(Table, Locations)> = OnceLock::new();
    let (table, locations) = TABLE.get_or_init(|| {
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let table = Table::parse(&elf)
            .expect("parse the test binary's ELF")
            .expect("the test binary has a .defmt section");
        let locations = table.get_locations(&elf).expect("locations");
        (table, locations)
    });
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

    // `adopt` refuses a pipe and closes it; the child logged the fd number.
    let pipe = expect_prefix(&logged, "child: pipe fd ");
    expect(
        &logged,
        "warn",
        &format!("adopt: fd {pipe} is not an AF_UNIX SOCK_SEQPACKET socket; closed it"),
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

    // Re-entry: the nested frame is written whole; the outer one it
    // abandoned is dropped and counted.
    expect(&logged, "error", "nested frame, written whole");
    assert!(!logged.iter().any(|l| l.message.contains("outer")));
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
const RECV_DEADLINE: Duration = Duration::from_secs(120);

/// The child's half: each event the parent checks for, in order.
#[test]
fn child_provokes_events() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (a, b) = Channel::<2>::pair().unwrap();
    let mut data = [0u8; 64];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();

    // Bad magic, with one fd attached.
    let memfd = rustix::fs::memfd_create("defmt-frames", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    send_raw(&a, b"XX\x01\x01\x00\x00\x00\x00", memfd.as_fd());
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, RECV_DEADLINE),
        Err(Error::BadMagic { found: *b"XX" })
    );

    a.send(b"hello", &[]).unwrap();
    assert_eq!(
        b.recv_timeout(&mut data, &mut fds, RECV_DEADLINE)
            .unwrap()
            .data_len,
        5
    );

    let (reader, _writer) = rustix::pipe::pipe().unwrap();
    defmt::info!("child: pipe fd {=i32}", reader.as_raw_fd());
    assert_eq!(
        Channel::<1>::adopt(reader).unwrap_err(),
        Error::NotSeqpacketSocket
    );

    drop(a);
    let gone = b
        .recv_timeout(&mut data, &mut fds, RECV_DEADLINE)
        .unwrap_err();
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
        defmt::error!("nested frame, written whole");
        defmt::write!(f, "abandoned");
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

// ---------------------------------------------------------------------------
// The logger under faults. Each case runs in a child of its own (a process
// group of its own too), so that a logger that hangs fails the test within
// `DEADLINE` instead of hanging it, and so that `set_fd` in one case cannot
// redirect the frames of another.
// ---------------------------------------------------------------------------

/// How long a child may run before the test calls it hung and kills it.
const DEADLINE: Duration = Duration::from_secs(30);

/// A command that runs only the test `name` of this binary, as a child.
fn child_command(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Waits for `child` to exit; after `DEADLINE` kills its process group (any
/// process it forked too) and fails the test.
fn finish(child: Child, what: &str) -> Output {
    let group = Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(DEADLINE) {
        Ok(output) => output.expect("wait for the child"),
        Err(_) => {
            let _ = kill_process_group(group, Signal::KILL);
            let output = rx.recv().unwrap().expect("wait for the killed child");
            panic!(
                "{what}: the child did not exit within {DEADLINE:?} and was killed (hung?); \
                 stdout: {}; stderr: {:?}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Runs the child test `name` to completion; fails unless it succeeded.
fn run_child(name: &str) -> Output {
    let output = finish(child_command(name).spawn().expect("spawn the child"), name);
    assert!(
        output.status.success(),
        "{name} failed ({}): {}\nstderr: {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Decodes `stream` and fails unless it is whole frames only: no malformed
/// frame, and no partial frame at the end.
fn decode_whole(stream: &[u8], what: &str) -> Vec<Logged> {
    assert!(
        stream.last().is_none_or(|&b| b == 0),
        "{what}: the stream ends in the middle of a frame: {stream:?}"
    );
    decode(stream)
}

fn messages(logged: &[Logged]) -> Vec<&str> {
    logged.iter().map(|l| l.message.as_str()).collect()
}

/// A panic unwinding out of a `Format` impl mid-frame leaves the logger
/// usable: by the thread that panicked and by every other thread.
#[test]
fn logging_recovers_after_a_format_impl_panics() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let output = run_child("child_panics_mid_frame");
    let logged = decode_whole(&output.stderr, "stderr");
    assert_eq!(
        messages(&logged),
        [
            "after panic: same thread",
            "after panic: other thread",
            "after panic: dropped 1"
        ],
        "{logged:#?}"
    );
}

#[test]
fn child_panics_mid_frame() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    std::panic::set_hook(Box::new(|_| {})); // keep stderr for frames
    let caught = std::panic::catch_unwind(|| defmt::info!("before panic {}", Panics));
    assert!(caught.is_err());
    defmt::info!("after panic: same thread");
    std::thread::spawn(|| defmt::info!("after panic: other thread"))
        .join()
        .unwrap();
    defmt::info!("after panic: dropped {=u32}", logger::dropped_frames());
}

/// Writes part of a frame, then panics.
struct Panics;

impl defmt::Format for Panics {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "half a frame {=u32}", 7);
        panic!("a Format impl panics mid-frame");
    }
}

/// `set_fd` from inside a frame: each fd receives whole frames only.
#[test]
fn set_fd_inside_a_frame_splits_no_frame() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    run_child("child_switches_fd_mid_frame");
}

/// The fd `SwitchFd::format` passes to `set_fd`.
static NEXT_FD: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Calls `set_fd` with the fd in `NEXT_FD`, and closes the fd it gets back.
struct SwitchFd;

impl defmt::Format for SwitchFd {
    fn format(&self, f: defmt::Formatter<'_>) {
        let next = NEXT_FD.lock().unwrap().take().expect("an fd to switch to");
        drop(logger::set_fd(next).expect("the previous pipe"));
        defmt::write!(f, "switched");
    }
}

#[test]
fn child_switches_fd_mid_frame() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let pipes = [(); 3].map(|()| rustix::pipe::pipe().unwrap());
    let [(r1, w1), (r2, w2), (r3, w3)] = pipes;
    assert!(logger::set_fd(w1).is_none());
    *NEXT_FD.lock().unwrap() = Some(w2);
    defmt::info!("short frame {}", SwitchFd);
    *NEXT_FD.lock().unwrap() = Some(w3);
    defmt::info!("long frame {=[u8]} {}", [0x55; 600], SwitchFd);
    defmt::info!("after the switches");
    let dropped = logger::dropped_frames();
    drop(logger::use_stderr().expect("the third pipe"));

    let read = |r: OwnedFd| {
        let mut stream = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut stream).unwrap();
        stream
    };
    let (s1, s2, s3) = (read(r1), read(r2), read(r3));
    let (l1, l2, l3) = (
        decode_whole(&s1, "first pipe"),
        decode_whole(&s2, "second pipe"),
        decode_whole(&s3, "third pipe"),
    );
    // A frame goes to the fd set when it is written, whole.
    assert_eq!(messages(&l1), [""; 0], "{l1:#?}");
    assert_eq!(messages(&l2), ["short frame switched"], "{l2:#?}");
    // The long frame does not fit one write: dropped whole, and counted.
    assert_eq!(messages(&l3), ["after the switches"], "{l3:#?}");
    assert_eq!(dropped, 1);
}

/// `fork` while another thread is in the middle of a frame: the child logs.
#[test]
fn logging_works_in_a_child_forked_mid_frame() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let output = run_child("child_forks_mid_frame");
    let logged = decode_whole(&output.stderr, "stderr");
    let mut got = messages(&logged);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "fork: child exited",
            "fork: forked child logs",
            "fork: frame held open across fork released",
        ],
        "{logged:#?}"
    );
}

/// Holds a frame open: signals `ready`, then waits for a byte on `go`.
struct Gate {
    ready: OwnedFd,
    go: OwnedFd,
}

impl defmt::Format for Gate {
    fn format(&self, f: defmt::Formatter<'_>) {
        assert_eq!(rustix::io::write(&self.ready, b"r"), Ok(1));
        assert_eq!(rustix::io::read(&self.go, &mut [0; 1]), Ok(1));
        defmt::write!(f, "released");
    }
}

#[test]
fn child_forks_mid_frame() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let (ready_r, ready) = rustix::pipe::pipe().unwrap();
    let (go, go_w) = rustix::pipe::pipe().unwrap();
    let holder = std::thread::spawn(move || {
        defmt::info!("fork: frame held open across fork {}", Gate { ready, go });
    });
    assert_eq!(rustix::io::read(&ready_r, &mut [0; 1]), Ok(1));
    // SAFETY: the child only logs (a write(2) of a frame) and calls `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        defmt::info!("fork: forked child logs");
        // SAFETY: ends the forked child without running the parent's atexit
        // handlers or unwinding into the test harness.
        unsafe { libc::_exit(0) };
    }
    assert_eq!(rustix::io::write(&go_w, b"g"), Ok(1));
    holder.join().unwrap();
    let pid = Pid::from_raw(pid).unwrap();
    let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap()
        .1;
    assert_eq!(status.exit_status(), Some(0), "the forked child failed");
    defmt::info!("fork: child exited");
}

/// A frame longer than one write shares a pipe with another process's
/// frames: every frame on the pipe decodes whole.
#[test]
fn a_long_frame_never_interleaves_with_another_process() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let long = child_command("child_writes_a_long_frame")
        .stdin(Stdio::piped())
        .stderr(writer.try_clone().unwrap())
        .spawn()
        .expect("spawn the long-frame child");
    let long_pid = Pid::from_child(&long);
    let mut long = scopeguard_kill(long, long_pid);
    // Wait until the long frame is half written (its `Gate` announces it).
    let stdout = long.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(stdout);
        // Read to the end: the child still writes its test report.
        while std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0 {
            if line.contains("in the gate") {
                let _ = tx.send(());
            }
            line.clear();
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("the long-frame child never reached its gate");

    // Another process writes its frames to the same pipe meanwhile.
    let short = finish(
        child_command("child_writes_short_frames")
            .stderr(writer.try_clone().unwrap())
            .spawn()
            .expect("spawn the short-frames child"),
        "child_writes_short_frames",
    );
    assert!(short.status.success(), "{short:?}");

    let mut long = long.0.take().unwrap();
    std::io::Write::write_all(&mut long.stdin.take().unwrap(), b"go\n").unwrap();
    let output = finish(long, "child_writes_a_long_frame");
    assert!(output.status.success(), "{output:?}");
    drop(writer);

    let mut stream = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(reader), &mut stream).unwrap();
    let logged = decode_whole(&stream, "shared pipe");
    let mut expected: Vec<String> = (0..SHORT_FRAMES)
        .map(|i| format!("short frame {i}"))
        .collect();
    expected.push("long: dropped 1".into());
    assert_eq!(messages(&logged), expected, "{logged:#?}");
}

/// Kills the child's process group if the test fails before it exits.
struct KillOnDrop(Option<Child>, Pid);

fn scopeguard_kill(child: Child, pid: Pid) -> KillOnDrop {
    KillOnDrop(Some(child), pid)
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.is_some() {
            let _ = kill_process_group(self.1, Signal::KILL);
        }
    }
}

const SHORT_FRAMES: u32 = 20;

#[test]
fn child_writes_short_frames() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    for i in 0..SHORT_FRAMES {
        defmt::info!("short frame {=u32}", i);
    }
}

/// Stops in the middle of its frame until the parent says "go" on stdin.
struct StdinGate;

impl defmt::Format for StdinGate {
    fn format(&self, f: defmt::Formatter<'_>) {
        let stdout = rustix::stdio::stdout();
        assert_eq!(rustix::io::write(stdout, b"in the gate\n"), Ok(12));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        defmt::write!(f, "released");
    }
}

#[test]
fn child_writes_a_long_frame() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    defmt::info!("long frame {=[u8]} {}", [0x55; 600], StdinGate);
    defmt::info!("long: dropped {=u32}", logger::dropped_frames());
}

/// A signal handler that logs while its thread is in the middle of a frame:
/// the handler's frame is written whole, the interrupted one is dropped.
#[test]
fn a_signal_handler_that_logs_mid_frame_is_written_whole() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let output = run_child("child_logs_from_a_signal_handler");
    let logged = decode_whole(&output.stderr, "stderr");
    assert_eq!(
        messages(&logged),
        ["signal: from the handler", "signal: dropped 1"],
        "{logged:#?}"
    );
}

extern "C" fn log_from_handler(_: libc::c_int) {
    defmt::info!("signal: from the handler");
}

/// Raises SIGUSR1 in the middle of its frame.
struct Raise;

impl defmt::Format for Raise {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "before the signal");
        // SAFETY: raises a signal whose handler `child_logs_from_a_signal_handler`
        // installed; it runs on this thread before `raise` returns.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        defmt::write!(f, "after the signal");
    }
}

#[test]
fn child_logs_from_a_signal_handler() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let handler = log_from_handler as extern "C" fn(libc::c_int);
    // SAFETY: the handler only logs, which is what the test is about.
    let previous = unsafe { libc::signal(libc::SIGUSR1, handler as libc::sighandler_t) };
    assert_ne!(previous, libc::SIG_ERR);
    defmt::info!("signal: interrupted {}", Raise);
    defmt::info!("signal: dropped {=u32}", logger::dropped_frames());
}

/// `set_fd` while other threads log: every frame reaches one of the fds
/// whole, and none is written to an fd after it was handed back and closed
/// (that write would fail with `EBADF` and count as dropped).
#[test]
fn switching_fds_under_load_loses_no_frame() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    run_child("child_switches_fds_under_load");
}

#[test]
fn child_switches_fds_under_load() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    const LOGGERS: u8 = 2;
    const FRAMES: u16 = 500;
    const SWITCHES: usize = 50;
    let read_in_background = |r: OwnedFd| {
        std::thread::spawn(move || {
            let mut stream = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut stream).unwrap();
            stream
        })
    };
    let mut readers = Vec::new();
    let (r, w) = rustix::pipe::pipe().unwrap();
    readers.push(read_in_background(r));
    assert!(logger::set_fd(w).is_none());
    std::thread::scope(|s| {
        for t in 0..LOGGERS {
            s.spawn(move || {
                for i in 0..FRAMES {
                    defmt::info!("load: thread {=u8} frame {=u16}", t, i);
                }
            });
        }
        for _ in 0..SWITCHES {
            let (r, w) = rustix::pipe::pipe().unwrap();
            readers.push(read_in_background(r));
            // Closed at once: its number is free for the next pipe.
            drop(logger::set_fd(w).expect("the previous pipe"));
        }
    });
    drop(logger::use_stderr().expect("the last pipe"));
    // Whole frames only in each pipe, so the pipes' streams one after the
    // other are whole frames too: decode them at once (parsing the ELF takes
    // a while).
    let mut all = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let stream = reader.join().unwrap();
        assert!(
            stream.last().is_none_or(|&b| b == 0),
            "pipe {i} ends in the middle of a frame: {stream:?}"
        );
        all.extend(stream);
    }
    let frames = decode_whole(&all, "all pipes").len();
    assert_eq!(logger::dropped_frames(), 0);
    assert_eq!(frames, usize::from(LOGGERS) * usize::from(FRAMES));
}

/// `set_fd` from a signal handler that interrupted its own thread while that
/// thread was blocked writing a frame to the fd being replaced: the handler
/// cannot wait for its own thread, so the fd is not handed back; the
/// interrupted write finishes whole and then the logger closes the fd.
#[test]
fn set_fd_from_a_handler_during_its_own_write_leaves_the_close_to_it() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    run_child("child_switches_fd_from_a_handler_during_its_own_write");
}

/// The fd `switch_from_handler` passes to `set_fd`.
static HANDLER_FD: AtomicI32 = AtomicI32::new(-1);
/// What that `set_fd` returned: -1 for `None`, -2 before the handler ran.
static HANDLER_GOT: AtomicI32 = AtomicI32::new(-2);

extern "C" fn switch_from_handler(_: libc::c_int) {
    let raw = HANDLER_FD.swap(-1, Ordering::SeqCst);
    // SAFETY: `raw` came from `into_raw_fd` in the test, and the swap passed
    // it to this one call.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let got = logger::set_fd(fd).map_or(-1, IntoRawFd::into_raw_fd);
    HANDLER_GOT.store(got, Ordering::SeqCst);
}

#[test]
fn child_switches_fd_from_a_handler_during_its_own_write() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // A full pipe: the next frame written to it blocks in write(2).
    let (old_r, old_w) = rustix::pipe::pipe().unwrap();
    let size = rustix::pipe::fcntl_setpipe_size(&old_w, 4096).unwrap();
    assert_eq!(rustix::io::write(&old_w, &vec![0; size]), Ok(size));
    let (new_r, new_w) = rustix::pipe::pipe().unwrap();
    HANDLER_FD.store(new_w.into_raw_fd(), Ordering::SeqCst);
    let handler = switch_from_handler as extern "C" fn(libc::c_int);
    // SAFETY: the handler calls `set_fd`, which is what the test is about.
    let previous = unsafe { libc::signal(libc::SIGUSR2, handler as libc::sighandler_t) };
    assert_ne!(previous, libc::SIG_ERR);
    assert!(logger::set_fd(old_w).is_none());

    let (tid_tx, tid_rx) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        tid_tx.send(rustix::thread::gettid()).unwrap();
        defmt::info!("retire: the interrupted frame");
    });
    let tid = tid_rx.recv().unwrap();
    // Until the writer is blocked in write(2) on the full pipe.
    let syscall = format!("/proc/self/task/{}/syscall", tid.as_raw_nonzero());
    let write = format!("{} ", libc::SYS_write);
    while !std::fs::read_to_string(&syscall)
        .unwrap()
        .starts_with(&write)
    {
        std::thread::yield_now();
    }
    // SAFETY: signals a thread of this process; its handler is installed.
    let sent = unsafe {
        libc::tgkill(
            rustix::process::getpid().as_raw_nonzero().get(),
            tid.as_raw_nonzero().get(),
            libc::SIGUSR2,
        )
    };
    assert_eq!(sent, 0);
    while HANDLER_GOT.load(Ordering::SeqCst) == -2 {
        std::thread::yield_now();
    }
    assert_eq!(
        HANDLER_GOT.load(Ordering::SeqCst),
        -1,
        "an fd its own thread is writing to must not be handed back"
    );

    // Let the write through; end-of-file means the logger closed the fd.
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(old_r), &mut old).unwrap();
    writer.join().unwrap();
    defmt::info!("retire: to the new pipe");
    drop(logger::use_stderr().expect("the new pipe"));
    let mut new = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(new_r), &mut new).unwrap();

    let old = decode_whole(&old, "old pipe");
    assert_eq!(
        messages(&old),
        ["retire: the interrupted frame"],
        "{old:#?}"
    );
    let new = decode_whole(&new, "new pipe");
    assert_eq!(messages(&new), ["retire: to the new pipe"], "{new:#?}");
    assert_eq!(logger::dropped_frames(), 0);
}
