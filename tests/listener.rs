//! Named sockets: `Listener` (paths, abstract names, stale and foreign
//! files, accept, the policy hook) and `Channel::connect`.
//!
//! Clients that must be separate processes (another uid, a `SIGKILL`, 200
//! connections that must not show in the daemon's fd count) are this test
//! binary re-executed with `--exact child_process`: the environment
//! variable `IPC_LISTENER_CHILD` names the role, and without it that entry
//! returns at once. Synchronisation is by the child's stdout lines,
//! `waitpid`, `/proc/PID/task/TID/syscall` and non-blocking accepts of
//! connections known to be queued, never by sleeping. Every test takes
//! `common::serial()`: they count fds and install a signal handler.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::signals::{
    OnTarget, install_handler_without_sa_restart, interrupt_while_blocked, this_thread,
};
use common::{identity, memfd, open_fds, platform, serial};
use ipc_unixsocket::{Channel, Credentials, Error, Listener, Mode, Received};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::{Errno, FdFlags, fcntl_getfd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, socket_with};
use rustix::process::{Gid, Pid, Uid, getpid};

type Fds<const N: usize> = heapless::Vec<OwnedFd, N>;

/// Every wait in this file gives up after this long: a test fails, it never
/// hangs.
const WATCHDOG: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed with its contents.
struct TempDir(PathBuf);

impl TempDir {
    fn new(mode: u32) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ipc-listener-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An abstract name no other test (or run) uses.
fn abstract_name(what: &str) -> Vec<u8> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("ipc-listener-test-{}-{what}-{n}", std::process::id()).into_bytes()
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits)
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Leaves a socket file at `path` that nobody listens on: what a daemon
/// killed without cleaning up leaves behind.
fn make_stale_socket_file(path: &Path) {
    let fd = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    drop(fd);
    assert!(
        std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_socket_file()
    );
}

trait IsSocket {
    fn is_socket_file(&self) -> bool;
}

impl IsSocket for std::fs::FileType {
    fn is_socket_file(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

fn file_id(path: &Path) -> (u64, u64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// Waits until `fd` is readable, then takes one connection without
/// blocking.
fn accept_within<const N: usize>(listener: &Listener<N>) -> ipc_unixsocket::Accepted<N> {
    let mut watch = [PollFd::new(listener, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: WATCHDOG.as_secs() as i64,
        tv_nsec: 0,
    };
    let ready = rustix::io::retry_on_intr(|| poll(&mut watch, Some(&timeout))).unwrap();
    assert_eq!(ready, 1, "no connection within {WATCHDOG:?}");
    listener.try_accept().unwrap()
}

// ---------------------------------------------------------------------------
// Child processes

const CHILD_ENV: &str = "IPC_LISTENER_CHILD";

/// Starts this test binary as a client process in `role`, connecting to
/// `path` (a filesystem path, or `@name` for an abstract name).
fn spawn_child(role: &str, address: &str) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env("IPC_LISTENER_ADDRESS", address)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// The next line a child printed with `say`; libtest's own output is
/// skipped (it may start the same line: `test child_process ... `).
fn next_line(stdout: &mut BufReader<ChildStdout>) -> String {
    loop {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "child ended early");
        if let Some(at) = line.find("child: ") {
            return line[at + "child: ".len()..].trim_end().to_string();
        }
    }
}

fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "child: {what}").unwrap();
    out.flush().unwrap();
}

fn connect_from_env() -> Channel<1> {
    let address = std::env::var("IPC_LISTENER_ADDRESS").unwrap();
    match address.strip_prefix('@') {
        Some(name) => Channel::connect_abstract(name.as_bytes()),
        None => Channel::connect(address.as_str()),
    }
    .unwrap()
}

/// Not a test: the entry point of the child processes above. Without
/// `IPC_LISTENER_CHILD` it returns at once.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut data = [0u8; 4096];
    let mut fds = Fds::<1>::new();
    match role.as_str() {
        // Connects (as `nobody` if asked), says so, sends a greeting, then
        // reports the first thing it receives.
        "greet" | "greet-as-nobody" => {
            if role == "greet-as-nobody" {
                // SAFETY: plain libc calls with valid arguments; they change
                // the ids of every thread of this process.
                unsafe {
                    assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
                    assert_eq!(libc::setgid(NOBODY), 0);
                    assert_eq!(libc::setuid(NOBODY), 0);
                }
            }
            let channel = connect_from_env();
            say("connected");
            channel.send(b"hello", &[]).unwrap();
            match channel.recv_timeout(&mut data, &mut fds, WATCHDOG) {
                Ok(got) => say(&format!(
                    "got {}",
                    String::from_utf8_lossy(&data[..got.data_len])
                )),
                Err(e) => say(&format!("{e:?}")),
            }
        }
        // Connects, fills its socket with numbered 1000-byte records until
        // it would block, says how many, then blocks sending one more.
        "fill-then-block" => {
            let channel = connect_from_env();
            let mut record = [0u8; 1000];
            let mut sent = 0u32;
            loop {
                record[..4].copy_from_slice(&sent.to_le_bytes());
                record[4..].fill(sent as u8);
                match channel.try_send(&record, &[]) {
                    Ok(()) => sent += 1,
                    Err(Error::WouldBlock) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            say(&format!("full {sent}"));
            channel.send(&record, &[]).unwrap();
            say("the blocked send returned");
        }
        // Connects COUNT times in a row: greets, reads the reply (with a
        // memfd) and hangs up.
        "churn" => {
            let count: u32 = std::env::var("IPC_LISTENER_COUNT")
                .unwrap()
                .parse()
                .unwrap();
            for i in 0..count {
                let channel = connect_from_env();
                channel.send(&i.to_le_bytes(), &[]).unwrap();
                let got = channel.recv_timeout(&mut data, &mut fds, WATCHDOG).unwrap();
                assert_eq!((got.data_len, got.fd_count), (4, 1));
                assert_eq!(data[..4], i.to_le_bytes());
            }
            say("done");
        }
        other => panic!("unknown child role {other}"),
    }
    std::process::exit(0);
}

/// Whether a task of process `pid` is blocked in system call `nr` (as
/// `platform::syscall_of` names it).
fn some_task_blocked_in(pid: u32, nr: libc::c_long) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("syscall"))
            .ok()
            .and_then(|line| platform::syscall_of(&line))
            == Some(nr)
    })
}

// ---------------------------------------------------------------------------
// Binding to a path

#[test]
fn stale_socket_file_is_replaced() {
    let _guard = serial();
    let dir = TempDir::new(0o700);
    let path = dir.join("daemon.sock");
    make_stale_socket_file(&path);
    // A second link keeps the stale inode alive, so that its number cannot
    // be reused for the new file.
    std::fs::hard_link(&path, dir.join("stale.sock")).unwrap();
    let stale = file_id(&path);
    assert_eq!(
        Channel::<1>::connect(&path).unwrap_err(),
        Error::Os(Errno::CONNREFUSED)
    );

    let listener = Listener::<1>::bind(&path, mode(0o600)).unwrap();
    assert_ne!(file_id(&path), stale, "the stale file is still there");
    let client = Channel::<1>::connect(&path).unwrap();
    let accepted = accept_within(&listener);
    client.send(b"up", &[]).unwrap();
    let mut data = [0u8; 8];
    let got = accepted
        .channel
        .recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG)
        .unwrap();
    assert_eq!(&data[..got.data_len], b"up");
}

#[test]
fn path_of_a_live_listener_is_refused_and_left_alone() {
    let _guard = serial();
    let dir = TempDir::new(0o700);
    let path = dir.join("daemon.sock");
    let live = Listener::<1>::bind(&path, mode(0o600)).unwrap();
    let id = file_id(&path);

    assert_eq!(
        Listener::<1>::bind(&path, mode(0o600)).unwrap_err(),
        Error::AddressInUse
    );
    assert_eq!(file_id(&path), id);
    // The probe is the one connection in the live listener's queue, and it
    // has hung up.
    let probe = live.try_accept().unwrap();
    assert_eq!(probe.peer.pid, Some(getpid()));
    let mut data = [0u8; 8];
    assert_eq!(
        probe
            .channel
            .recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG),
        Err(Error::Disconnected)
    );
    assert_eq!(live.try_accept().unwrap_err(), Error::WouldBlock);

    // A live listener whose queue is full is refused too (the probe gets
    // EAGAIN), and still not replaced.
    rustix::net::listen(&live, 0).unwrap();
    let _queued = Channel::<1>::connect(&path).unwrap();
    assert_eq!(
        Listener::<1>::bind(&path, mode(0o600)).unwrap_err(),
        Error::AddressInUse
    );
    assert_eq!(file_id(&path), id);
    assert!(live.try_accept().is_ok());
    assert_eq!(live.try_accept().unwrap_err(), Error::WouldBlock);
}

#[test]
fn regular_file_at_the_path_is_left_untouched_and_refused() {
    let _guard = serial();
    let dir = TempDir::new(0o700);
    let path = dir.join("daemon.sock");
    std::fs::write(&path, b"precious calibration data").unwrap();
    let id = file_id(&path);
    let fds = open_fds();

    assert_eq!(
        Listener::<1>::bind(&path, mode(0o600)).unwrap_err(),
        Error::NotASocket
    );
    assert_eq!(file_id(&path), id);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious calibration data");
    assert_eq!(open_fds(), fds);
}

#[test]
fn directory_or_symlink_at_the_path_is_left_untouched_and_refused() {
    let _guard = serial();
    let dir = TempDir::new(0o700);

    let sub = dir.join("daemon.sock");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("inside"), b"kept").unwrap();
    let id = file_id(&sub);
    assert_eq!(
        Listener::<1>::bind(&sub, mode(0o600)).unwrap_err(),
        Error::NotASocket
    );
    assert_eq!(file_id(&sub), id);
    assert_eq!(std::fs::read(sub.join("inside")).unwrap(), b"kept");

    // A symbolic link, even to a stale socket, is not replaced.
    let target = dir.join("stale.sock");
    make_stale_socket_file(&target);
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(
        Listener::<1>::bind(&link, mode(0o600)).unwrap_err(),
        Error::NotASocket
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_socket_file()
    );
}

#[test]
fn socket_file_gets_the_requested_mode_whatever_the_umask() {
    let _guard = serial();
    let dir = TempDir::new(0o700);
    for (umask, bits) in [
        (0o077, 0o666),
        (0o000, 0o600),
        (0o022, 0o660),
        (0o027, 0o777),
    ] {
        let old = rustix::process::umask(mode(umask));
        let path = dir.join(&format!("mode-{bits:o}.sock"));
        let listener = Listener::<1>::bind(&path, mode(bits));
        rustix::process::umask(old);
        let _listener = listener.unwrap();
        let got = std::fs::symlink_metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(got, bits, "umask {umask:o}: mode {got:o}, wanted {bits:o}");
    }
}

#[test]
fn listener_removes_its_own_socket_file_on_drop_and_nothing_else() {
    let _guard = serial();
    let dir = TempDir::new(0o700);
    let path = dir.join("daemon.sock");
    drop(Listener::<1>::bind(&path, mode(0o600)).unwrap());
    assert!(!path.exists(), "socket file left behind");

    // Another daemon replaced the file meanwhile: it is not ours to remove.
    let listener = Listener::<1>::bind(&path, mode(0o600)).unwrap();
    // (The extra link keeps the listener's inode number from being reused.)
    std::fs::hard_link(&path, dir.join("old.sock")).unwrap();
    std::fs::remove_file(&path).unwrap();
    make_stale_socket_file(&path);
    let replacement = file_id(&path);
    drop(listener);
    assert_eq!(file_id(&path), replacement);
}

#[test]
fn names_that_do_not_fit_sockaddr_un_are_refused() {
    let _guard = serial();
    let long = format!("/tmp/{}", "x".repeat(120));
    assert_eq!(
        Listener::<1>::bind(long.as_str(), mode(0o600)).unwrap_err(),
        Error::NameTooLong
    );
    assert_eq!(
        Channel::<1>::connect(long.as_str()).unwrap_err(),
        Error::NameTooLong
    );
    assert_eq!(
        Listener::<1>::bind_abstract(&[b'x'; 108]).unwrap_err(),
        Error::NameTooLong
    );
}

#[test]
fn listener_and_connections_are_close_on_exec() {
    let _guard = serial();
    let name = abstract_name("cloexec");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    let client = Channel::<1>::connect_abstract(&name).unwrap();
    let accepted = accept_within(&listener);
    for fd in [listener.as_fd(), client.as_fd(), accepted.channel.as_fd()] {
        assert!(fcntl_getfd(fd).unwrap().contains(FdFlags::CLOEXEC));
    }
}

// ---------------------------------------------------------------------------
// Abstract names, accept, connect

#[test]
fn abstract_names_bind_connect_and_refuse_a_second_bind() {
    let _guard = serial();
    let name = abstract_name("abstract");
    assert_eq!(
        Channel::<1>::connect_abstract(&name).unwrap_err(),
        Error::Os(Errno::CONNREFUSED)
    );
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    assert_eq!(
        Listener::<1>::bind_abstract(&name).unwrap_err(),
        Error::AddressInUse
    );

    let client = Channel::<1>::connect_abstract_timeout(&name, WATCHDOG).unwrap();
    // The deadline's SO_SNDTIMEO is gone: sends block, they do not time out.
    assert_eq!(
        rustix::net::sockopt::socket_timeout(&client, rustix::net::sockopt::Timeout::Send),
        Ok(None)
    );
    let accepted = accept_within(&listener);
    assert_eq!(accepted.peer.pid, Some(getpid()));
    let frame = memfd(b"frame");
    accepted.channel.send(b"frame 1", &[frame.as_fd()]).unwrap();
    let mut data = [0u8; 16];
    let mut fds = Fds::<1>::new();
    let got = client.recv_timeout(&mut data, &mut fds, WATCHDOG).unwrap();
    assert_eq!(&data[..got.data_len], b"frame 1");
    assert_eq!(identity(&fds[0]), identity(&frame));

    // The name goes with the socket.
    drop(listener);
    let again = Listener::<1>::bind_abstract(&name).unwrap();
    drop(again);
}

#[test]
fn try_accept_on_an_empty_queue_would_block() {
    let _guard = serial();
    let listener = Listener::<1>::bind_abstract(&abstract_name("empty")).unwrap();
    assert_eq!(listener.try_accept().unwrap_err(), Error::WouldBlock);
    assert_eq!(
        listener.try_accept_with(|_| true).unwrap_err(),
        Error::WouldBlock
    );
}

#[test]
fn connect_timeout_gives_up_while_the_backlog_stays_full() {
    let _guard = serial();
    let name = abstract_name("full");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let _queued = Channel::<1>::connect_abstract(&name).unwrap();
    let fds = open_fds();
    assert_eq!(
        Channel::<1>::connect_abstract_timeout(&name, Duration::from_millis(20)).unwrap_err(),
        Error::TimedOut
    );
    assert_eq!(open_fds(), fds);
    // Room again: the same call connects.
    drop(accept_within(&listener));
    assert!(Channel::<1>::connect_abstract_timeout(&name, WATCHDOG).is_ok());
}

// ---------------------------------------------------------------------------
// Signals

const ROUNDS: usize = 20;

/// `Listener::accept` waits in `poll` (the listening socket is
/// non-blocking).
const ACCEPT_WAITS_IN: &[libc::c_long] = &[libc::SYS_ppoll, libc::SYS_accept4];

#[test]
fn accept_resumes_after_signals_without_sa_restart() {
    let _guard = serial();
    install_handler_without_sa_restart();
    let name = abstract_name("eintr-accept");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let acceptor = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            listener.accept()
        });
        let thread = ids_rx.recv().unwrap();
        let on_target = OnTarget::new(thread);
        let done = || acceptor.is_finished();
        if !interrupt_while_blocked(thread, ACCEPT_WAITS_IN, ROUNDS, &done) {
            panic!(
                "accept returned instead of resuming: {:?}",
                acceptor.join().unwrap()
            );
        }
        let handled = on_target.count();
        let client = Channel::<1>::connect_abstract(&name).unwrap();
        let accepted = acceptor.join().unwrap().unwrap();
        // Checked once the acceptor is joined, so that a failure cannot
        // leave it blocked: each interruption was handled by that thread.
        assert_eq!(
            handled, ROUNDS,
            "signals handled by the thread blocked in accept"
        );
        assert_eq!(accepted.peer.pid, Some(getpid()));
        client.send(b"late", &[]).unwrap();
        let mut data = [0u8; 8];
        let got = accepted
            .channel
            .recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG)
            .unwrap();
        assert_eq!(&data[..got.data_len], b"late");
    });
}

#[test]
fn connect_resumes_after_signals_without_sa_restart() {
    let _guard = serial();
    install_handler_without_sa_restart();
    let name = abstract_name("eintr-connect");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    // One queued connection fills a backlog of 0: the next connect waits.
    rustix::net::listen(&listener, 0).unwrap();
    let queued = Channel::<1>::connect_abstract(&name).unwrap();
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let connector = scope.spawn(|| {
            ids_tx.send(this_thread()).unwrap();
            Channel::<1>::connect_abstract(&name)
        });
        let thread = ids_rx.recv().unwrap();
        let on_target = OnTarget::new(thread);
        let done = || connector.is_finished();
        if !interrupt_while_blocked(thread, &[libc::SYS_connect], ROUNDS, &done) {
            panic!(
                "connect returned instead of resuming: {:?}",
                connector.join().unwrap()
            );
        }
        let handled = on_target.count();
        // Room in the queue: the waiting connect completes.
        let first = accept_within(&listener);
        let client = connector.join().unwrap().unwrap();
        // Checked once the connector is joined, so that a failure cannot
        // leave it blocked: each interruption was handled by that thread.
        assert_eq!(
            handled, ROUNDS,
            "signals handled by the thread blocked in connect"
        );
        let second = accept_within(&listener);
        client.send(b"second", &[]).unwrap();
        queued.send(b"first", &[]).unwrap();
        let mut data = [0u8; 8];
        for (accepted, expected) in [(first, &b"first"[..]), (second, b"second")] {
            let got = accepted
                .channel
                .recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG)
                .unwrap();
            assert_eq!(&data[..got.data_len], expected);
        }
    });
}

// ---------------------------------------------------------------------------
// Clients in other processes

/// Planted bug: a refused connection was read before it was closed; only
/// a doc example hung. A refused client that sends nothing must not block
/// `try_accept_with`, which must close the connection unread.
#[test]
fn a_refused_client_that_sends_nothing_does_not_block_try_accept() {
    let _guard = serial();
    let name = abstract_name("silent");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    let client = Channel::<1>::connect_abstract(&name).unwrap();
    let (done, outcome) = std::sync::mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        let refused = listener.try_accept_with(|_| false).map(|_| ());
        done.send((refused, listener.refused())).unwrap();
    });
    let (refused, count) = outcome
        .recv_timeout(Duration::from_secs(5))
        .expect("try_accept_with blocked on a silent refused client");
    assert_eq!(refused, Err(Error::WouldBlock));
    assert_eq!(count, 1);
    acceptor.join().unwrap();
    let mut data = [0u8; 8];
    assert_eq!(
        client.recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG),
        Err(Error::Disconnected)
    );
}

#[test]
fn uid_policy_refuses_another_uid_counts_it_and_admits_an_allowed_one() {
    let _guard = serial();
    assert!(
        Uid::ROOT == rustix::process::getuid(),
        "needs root to setuid"
    );
    let dir = TempDir::new(0o777);
    let path = dir.join("daemon.sock");
    let listener = Listener::<1>::bind(&path, mode(0o777)).unwrap();
    let address = path.to_str().unwrap();

    // `nobody` connects first, root second: both are queued before the
    // daemon looks.
    let (mut nobody, mut nobody_out) = spawn_child("greet-as-nobody", address);
    assert_eq!(next_line(&mut nobody_out), "connected");
    let (mut root, mut root_out) = spawn_child("greet", address);
    assert_eq!(next_line(&mut root_out), "connected");

    let allowed = [Uid::ROOT];
    let mut seen: Vec<Credentials> = Vec::new();
    let accepted = listener
        .try_accept_with(|peer| {
            seen.push(*peer);
            allowed.contains(&peer.uid)
        })
        .unwrap();
    assert_eq!(listener.refused(), 1);
    assert_eq!(listener.try_accept().unwrap_err(), Error::WouldBlock);

    // The credentials name the processes that connected.
    let expected_nobody = Credentials {
        pid: Some(Pid::from_child(&nobody)),
        uid: Uid::from_raw(NOBODY),
        gid: Gid::from_raw(NOBODY),
    };
    let expected_root = Credentials {
        pid: Some(Pid::from_child(&root)),
        uid: Uid::ROOT,
        gid: rustix::process::getgid(),
    };
    assert_eq!(seen, [expected_nobody, expected_root]);
    assert_eq!(accepted.peer, expected_root);

    // The refused client sees its connection closed; the admitted one is
    // served.
    assert_eq!(next_line(&mut nobody_out), "Disconnected");
    let mut data = [0u8; 8];
    let got = accepted
        .channel
        .recv_timeout(&mut data, &mut Fds::<1>::new(), WATCHDOG)
        .unwrap();
    assert_eq!(&data[..got.data_len], b"hello");
    accepted.channel.send(b"welcome", &[]).unwrap();
    assert_eq!(next_line(&mut root_out), "got welcome");
    assert!(nobody.wait().unwrap().success());
    assert!(root.wait().unwrap().success());
}

#[test]
fn client_killed_mid_message_leaves_the_daemon_serving_the_others() {
    let _guard = serial();
    let name = abstract_name("sigkill");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    let other = Channel::<1>::connect_abstract(&name).unwrap();
    let other_served = accept_within(&listener);
    let fds_before = open_fds();

    let (mut victim, mut victim_out) = spawn_child(
        "fill-then-block",
        &format!("@{}", String::from_utf8(name).unwrap()),
    );
    let full: u32 = next_line(&mut victim_out)
        .strip_prefix("full ")
        .unwrap()
        .parse()
        .unwrap();
    let served = accept_within(&listener);
    assert_eq!(served.peer.pid, Some(Pid::from_child(&victim)));
    // Killed while blocked sending record number `full`.
    while !some_task_blocked_in(victim.id(), libc::SYS_sendmsg) {
        assert!(victim.try_wait().unwrap().is_none(), "victim exited");
        std::thread::yield_now();
    }
    victim.kill().unwrap();
    assert_eq!(victim.wait().unwrap().signal(), Some(libc::SIGKILL));

    // Every record it queued arrives whole and in order, then the hang-up;
    // the record it was sending when it died never arrives.
    let mut data = [0u8; 1000];
    let mut fds = Fds::<1>::new();
    for seq in 0..full {
        let got = served.channel.recv_timeout(&mut data, &mut fds, WATCHDOG);
        assert_eq!(
            got,
            Ok(Received {
                data_len: 1000,
                fd_count: 0
            })
        );
        assert_eq!(data[..4], seq.to_le_bytes());
        assert!(data[4..].iter().all(|&b| b == seq as u8));
    }
    assert_eq!(
        served.channel.recv_timeout(&mut data, &mut fds, WATCHDOG),
        Err(Error::Disconnected)
    );
    drop(served);
    let mut rest = String::new();
    victim_out.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("returned"));
    drop(victim_out);

    // The other client is still served, and nothing of the victim is left.
    other.send(b"still there?", &[]).unwrap();
    let got = other_served
        .channel
        .recv_timeout(&mut data, &mut fds, WATCHDOG)
        .unwrap();
    assert_eq!(&data[..got.data_len], b"still there?");
    other_served.channel.send(b"yes", &[]).unwrap();
    let got = other.recv_timeout(&mut data, &mut fds, WATCHDOG).unwrap();
    assert_eq!(&data[..got.data_len], b"yes");
    assert_eq!(open_fds(), fds_before);
    assert_eq!(listener.try_accept().unwrap_err(), Error::WouldBlock);
}

#[test]
fn two_hundred_clients_connecting_and_disconnecting_keep_fds_and_rss_flat() {
    const WARM_UP: u32 = 20;
    const CLIENTS: u32 = 200;
    let _guard = serial();
    let dir = TempDir::new(0o700);
    let path = dir.join("daemon.sock");
    let listener = Listener::<1>::bind(&path, mode(0o600)).unwrap();
    let frame = memfd(b"frame");
    let (mut churn, mut churn_out) = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "churn")
        .env("IPC_LISTENER_ADDRESS", &path)
        .env("IPC_LISTENER_COUNT", (WARM_UP + CLIENTS).to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map(|mut child| {
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .unwrap();

    let mut data = [0u8; 8];
    let mut fds = Fds::<1>::new();
    let mut serve = |i: u32| {
        let accepted = accept_within(&listener);
        assert_eq!(accepted.peer.pid, Some(Pid::from_child(&churn)));
        let got = accepted
            .channel
            .recv_timeout(&mut data, &mut fds, WATCHDOG)
            .unwrap();
        assert_eq!(data[..got.data_len], i.to_le_bytes());
        accepted.channel.send(&data[..4], &[frame.as_fd()]).unwrap();
        assert_eq!(
            accepted.channel.recv_timeout(&mut data, &mut fds, WATCHDOG),
            Err(Error::Disconnected)
        );
    };
    for i in 0..WARM_UP {
        serve(i);
    }
    let (fds_before, rss_before) = (open_fds(), vm_rss_kib());
    for i in WARM_UP..WARM_UP + CLIENTS {
        serve(i);
    }
    let (fds_after, rss_after) = (open_fds(), vm_rss_kib());
    println!(
        "{CLIENTS} clients: daemon fds {fds_before} -> {fds_after}, VmRSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(next_line(&mut churn_out), "done");
    assert!(churn.wait().unwrap().success());
    assert_eq!(fds_after, fds_before);
    assert!(
        rss_after <= rss_before + 256,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(listener.try_accept().unwrap_err(), Error::WouldBlock);
}

// ---------------------------------------------------------------------------
// A slow client

#[test]
fn slow_client_is_dropped_while_a_fast_one_gets_every_frame() {
    const FRAMES: u32 = 3000;
    let _guard = serial();
    let name = abstract_name("slow");
    let listener = Listener::<1>::bind_abstract(&name).unwrap();
    let fast = Channel::<1>::connect_abstract(&name).unwrap();
    let slow = Channel::<1>::connect_abstract(&name).unwrap();
    let mut subscribers = [
        Some(accept_within(&listener).channel),
        Some(accept_within(&listener).channel),
    ];
    let frame = memfd(b"frame buffer");
    let frame_id = identity(&frame);

    std::thread::scope(|scope| {
        // The fast client reads every frame and acknowledges it.
        let reader = scope.spawn(|| {
            let mut data = [0u8; 8];
            let mut fds = Fds::<1>::new();
            for seq in 0..FRAMES {
                let got = fast.recv_timeout(&mut data, &mut fds, WATCHDOG);
                assert_eq!(
                    got,
                    Ok(Received {
                        data_len: 4,
                        fd_count: 1
                    })
                );
                assert_eq!(data[..4], seq.to_le_bytes());
                assert_eq!(identity(&fds[0]), frame_id);
                fast.send(&data[..4], &[]).unwrap();
            }
        });

        // The daemon: each frame to every subscriber without waiting; a
        // full socket drops that subscriber. The next frame goes out when
        // the fast client has acknowledged this one.
        let mut dropped_at = None;
        let mut ack = [0u8; 8];
        for seq in 0..FRAMES {
            for (i, slot) in subscribers.iter_mut().enumerate() {
                let Some(channel) = slot else { continue };
                match channel.try_send(&seq.to_le_bytes(), &[frame.as_fd()]) {
                    Ok(()) => {}
                    Err(Error::WouldBlock) => {
                        assert_eq!(i, 1, "the fast client's socket was full at frame {seq}");
                        *slot = None;
                        dropped_at = Some(seq);
                    }
                    Err(e) => panic!("frame {seq}: {e:?}"),
                }
            }
            let fast_end = subscribers[0].as_ref().unwrap();
            let got = fast_end
                .recv_timeout(&mut ack, &mut Fds::<1>::new(), WATCHDOG)
                .unwrap();
            assert_eq!(ack[..got.data_len], seq.to_le_bytes());
        }
        reader.join().unwrap();

        let dropped_at = dropped_at.expect("the slow client was never dropped");
        println!("slow client dropped at frame {dropped_at} of {FRAMES}");
        // The slow client can still read what was queued, then sees the
        // hang-up.
        let mut data = [0u8; 8];
        let mut fds = Fds::<1>::new();
        for seq in 0..dropped_at {
            slow.recv_timeout(&mut data, &mut fds, WATCHDOG).unwrap();
            assert_eq!(data[..4], seq.to_le_bytes());
        }
        assert_eq!(
            slow.recv_timeout(&mut data, &mut fds, WATCHDOG),
            Err(Error::Disconnected)
        );
    });
}
