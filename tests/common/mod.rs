//! Helpers shared by the integration tests: fd accounting, raw records that
//! bypass the crate's sender, memfds and fd identity.
#![allow(dead_code)] // each test crate uses a different subset

pub mod platform;
pub mod signals;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, fstat, memfd_create};
use rustix::io::IoSlice;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

pub mod counting;
pub mod harness;

/// Number of fds this process has open, read from `/proc/self/fd`.
///
/// Left out: the directory handle used for reading (`/proc/...`), and files
/// under `/sys/` that glibc's malloc opens for a moment from whichever
/// thread creates its ninth arena (`/sys/devices/system/cpu/online`), which
/// a count taken meanwhile would see on machines with many cores.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| !target.starts_with("/proc/") && !target.starts_with("/sys/"))
        .count()
}

/// Sends `bytes` as one raw record with `fds` in one SCM_RIGHTS message,
/// bypassing the crate's sender (and its header).
pub fn send_raw(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("raw sendmsg");
    assert_eq!(sent, bytes.len());
}

/// A v1 header for `data_len` bytes and `fd_count` fds.
pub fn header(fd_count: u8, data_len: u32) -> [u8; 8] {
    ipc_unixsocket::Header { fd_count, data_len }.encode()
}

/// A close-on-exec memfd holding `contents`, offset rewound to 0.
pub fn memfd(contents: &[u8]) -> OwnedFd {
    let fd = memfd_create("ipc-test", MemfdFlags::CLOEXEC).expect("memfd_create");
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).expect("write memfd");
    file.seek(SeekFrom::Start(0)).expect("rewind memfd");
    OwnedFd::from(file)
}

/// The whole contents of a memfd (or any seekable fd), read from offset 0.
pub fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    file.seek(SeekFrom::Start(0)).expect("rewind");
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).expect("read");
    contents
}

/// `(st_dev, st_ino)`: two fds with the same identity name the same file.
pub fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = fstat(fd).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialises the tests of one test binary. Tests run on parallel threads
/// and `/proc/self/fd` counts the whole process, so every test in a file
/// that counts fds takes this guard first.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// A test fails; it never hangs.

/// Bound for one whole test of a few receives, joins or waits: far above
/// what any of them takes (milliseconds), so only a hang reaches it.
pub const TEST_BOUND: std::time::Duration = std::time::Duration::from_secs(120);

/// Bound for a long test between two calls of [`Watchdog::kick`]: no
/// message for this long means a receive or send is stuck.
pub const PROGRESS_BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// Panic messages seen so far in this process, for the watchdog's report:
/// libtest captures a test's output and prints it only when the test ends,
/// which a hung test never does.
static PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>").to_string();
            PANICS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("thread '{name}' {info}"));
            previous(info);
        }));
    });
}

/// Fails the whole process, with a message on stderr, if it is not dropped
/// within `bound` of being armed or of the last [`kick`](Self::kick).
///
/// A lost or reordered record, a panic in one thread while another waits
/// for it (a `Barrier`, a scope's join, a `sendmsg` into a full socket), or
/// a child that never exits would otherwise hang the test binary for ever.
/// On expiry it prints what was being waited for and every panic seen so
/// far (libtest would have kept them captured), then exits with status 101,
/// the status of a failed test binary.
///
/// Once armed it allocates nothing and holds two fds (a pipe) until dropped,
/// so arm it before taking an fd baseline or measuring allocations.
pub struct Watchdog {
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    disarm: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for `what` (a test name, say) with `bound`.
    pub fn new(what: &str, bound: std::time::Duration) -> Self {
        record_panics();
        let what = what.to_string();
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
        let (disarmed, disarm) = pipe().expect("watchdog pipe");
        let (ready_read, ready_write) = pipe().expect("watchdog pipe");
        let seen = progress.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                drop(ready_write);
                watch(&what, bound, &seen, &disarmed);
            })
            .expect("spawn watchdog");
        // Armed once the thread runs and has closed its end (end-of-file
        // here): from then on it allocates nothing and holds no other fd.
        let mut byte = [0u8];
        assert_eq!(rustix::io::read(&ready_read, &mut byte), Ok(0));
        Self {
            progress,
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }

    /// Arms a watchdog for the calling test with [`TEST_BOUND`]. libtest
    /// names each test's thread after the test.
    pub fn for_test() -> Self {
        let thread = std::thread::current();
        Self::new(thread.name().unwrap_or("test"), TEST_BOUND)
    }

    /// Records progress: the bound starts again (allocation-free).
    pub fn kick(&self) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the write end wakes the thread with POLLHUP.
        drop(self.disarm.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

/// The watchdog thread: waits for `disarmed` to hang up; each time `bound`
/// passes without it, checks that `progress` moved, and fails otherwise.
fn watch(
    what: &str,
    bound: std::time::Duration,
    progress: &std::sync::atomic::AtomicU64,
    disarmed: &OwnedFd,
) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut seen = progress.load(std::sync::atomic::Ordering::Relaxed);
    let mut deadline = std::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let now = progress.load(std::sync::atomic::Ordering::Relaxed);
            if now == seen {
                expire(what, bound, now);
            }
            seen = now;
            deadline = std::time::Instant::now() + bound;
            continue;
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(disarmed, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return,
            Err(e) => panic!("watchdog poll: {e}"),
        }
    }
}

fn expire(what: &str, bound: std::time::Duration, progress: u64) -> ! {
    use std::io::Write;
    let mut report = format!(
        "\nwatchdog: FAILED: {what}: nothing finished within {bound:?} (progress count \
         {progress}). A receive, send, join or wait never returned: a record was lost or \
         reordered, a peer is stuck, or another thread panicked while this one waited for \
         it.\n"
    );
    let panics = PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if panics.is_empty() {
        report.push_str("watchdog: no panic was seen before this\n");
    }
    for panic in panics.iter() {
        report.push_str(&format!("watchdog: earlier panic: {panic}\n"));
    }
    // Straight to fd 2: libtest's capture would swallow eprintln!.
    let _ = std::io::stderr().write_all(report.as_bytes());
    std::process::exit(101);
}

/// Fails this process at the first panic in any thread, after the usual
/// panic message: for binaries whose threads wait for each other
/// (`Barrier`s, a peer process), where a panicking thread would leave the
/// others waiting for ever.
pub fn exit_on_any_panic(test_name: &'static str) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write;
        previous(info);
        // stderr: stdout may be a pipe to a peer that is gone already.
        let _ = writeln!(
            std::io::stderr(),
            "test {test_name} ... FAILED (a thread panicked; exiting)"
        );
        std::process::exit(101);
    }));
}

/// Shuts `socket` down both ways when dropped during a panic, so that a
/// thread blocked receiving from it or sending to its peer wakes up (with
/// end-of-file or `EPIPE`) and the scope that joins that thread can report
/// the panic instead of hanging.
pub struct ShutdownOnPanic<'a>(pub BorrowedFd<'a>);

impl Drop for ShutdownOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = rustix::net::shutdown(self.0, rustix::net::Shutdown::Both);
        }
    }
}

/// Waits for `child` to exit, at most `bound`; a child still running then
/// is killed, reaped, and the test fails naming `what`.
pub fn wait_child(
    child: &mut std::process::Child,
    what: &str,
    bound: std::time::Duration,
) -> std::process::ExitStatus {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid");
    let pidfd =
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open");
    let deadline = std::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let status = child.wait();
            panic!("{what}: child {pid:?} did not exit within {bound:?}; killed it ({status:?})");
        }
        let timeout = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return child.wait().expect("wait for the child"),
            Err(e) => panic!("poll pidfd: {e}"),
        }
    }
}
