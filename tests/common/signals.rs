//! Interrupting a thread blocked in a system call: a `SIGUSR1` handler
//! installed without `SA_RESTART`, aimed with `pthread_kill` at a thread
//! only once `/proc/self/task/TID/syscall` shows it blocked in an expected
//! call, each delivery confirmed before the next step.
//!
//! The handler and its counters are process-wide: a test binary that uses
//! them serialises its tests (`common::serial()`).

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::platform;

/// Deliveries handled anywhere in the process.
static DELIVERED: AtomicUsize = AtomicUsize::new(0);
/// The thread whose deliveries `ON_TARGET` counts (a kernel tid).
static TARGET: AtomicI32 = AtomicI32::new(0);
/// Deliveries handled on the `TARGET` thread.
static ON_TARGET: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_delivery(_signal: libc::c_int) {
    // gettid is a plain system call: async-signal-safe.
    if rustix::thread::gettid().as_raw_nonzero().get() == TARGET.load(Ordering::SeqCst) {
        ON_TARGET.fetch_add(1, Ordering::SeqCst);
    }
    DELIVERED.fetch_add(1, Ordering::SeqCst);
}

/// Installs `count_delivery` for `SIGUSR1` with `sa_flags = 0`: no
/// `SA_RESTART`, so the kernel makes interrupted socket calls fail with
/// `EINTR` instead of restarting them.
pub fn install_handler_without_sa_restart() {
    // SAFETY: `sigaction` is given a zero-initialised (valid) `struct
    // sigaction` whose handler is an `extern "C" fn(c_int)` that only
    // touches atomics and calls gettid (async-signal-safe), an emptied
    // mask, and no flags. The old action is not requested (null pointer is
    // allowed).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count_delivery as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        assert_eq!(libc::sigemptyset(&mut action.sa_mask), 0);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
}

/// Identifies a thread both ways: the kernel tid for `/proc`, and the
/// `pthread_t` for `pthread_kill`.
#[derive(Clone, Copy)]
pub struct ThreadIds {
    pub tid: i32,
    pub pthread: libc::pthread_t,
}

pub fn this_thread() -> ThreadIds {
    ThreadIds {
        tid: rustix::thread::gettid().as_raw_nonzero().get(),
        // SAFETY: pthread_self has no preconditions.
        pthread: unsafe { libc::pthread_self() },
    }
}

/// Counts the deliveries handled on one thread from the moment it is made:
/// `interrupt` only sees that some handler ran, anywhere in the process.
pub struct OnTarget {
    before: usize,
}

impl OnTarget {
    /// Starts counting the deliveries handled on `thread` (one thread at a
    /// time: a later `OnTarget` takes over the count).
    pub fn new(thread: ThreadIds) -> Self {
        TARGET.store(thread.tid, Ordering::SeqCst);
        Self {
            before: ON_TARGET.load(Ordering::SeqCst),
        }
    }

    /// Deliveries handled on the thread since `new`.
    pub fn count(&self) -> usize {
        ON_TARGET.load(Ordering::SeqCst) - self.before
    }
}

/// The system call thread `tid` of this process is blocked in, if any, as
/// `platform::syscall_of` names it.
pub fn blocked_in(tid: i32) -> Option<libc::c_long> {
    let line = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    platform::syscall_of(&line)
}

/// Spins (yielding) until thread `tid` is blocked in one of `calls`, or
/// `done()`. Returns whether it was seen blocked.
pub fn wait_until_blocked_in(tid: i32, calls: &[libc::c_long], done: &dyn Fn() -> bool) -> bool {
    loop {
        if blocked_in(tid).is_some_and(|nr| calls.contains(&nr)) {
            return true;
        }
        if done() {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Sends `SIGUSR1` to `thread` and waits until its handler has run (or the
/// thread is done). Returns whether the handler ran.
pub fn interrupt(thread: ThreadIds, done: &dyn Fn() -> bool) -> bool {
    let before = DELIVERED.load(Ordering::SeqCst);
    // SAFETY: `thread.pthread` belongs to a scoped thread that has not been
    // joined yet (the caller holds its handle), so the id is still valid.
    let sent = unsafe { libc::pthread_kill(thread.pthread, libc::SIGUSR1) };
    assert_eq!(sent, 0, "pthread_kill");
    loop {
        if DELIVERED.load(Ordering::SeqCst) > before {
            return true;
        }
        if done() {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Interrupts `thread` `rounds` times, each time only once it is blocked in
/// one of `calls`, then waits until it is blocked in one of them once more
/// (it resumed). Returns `false` as soon as the thread stops blocking
/// instead.
pub fn interrupt_while_blocked(
    thread: ThreadIds,
    calls: &[libc::c_long],
    rounds: usize,
    done: &dyn Fn() -> bool,
) -> bool {
    for _ in 0..rounds {
        if !wait_until_blocked_in(thread.tid, calls, done) || !interrupt(thread, done) {
            return false;
        }
    }
    wait_until_blocked_in(thread.tid, calls, done)
}

/// What happened to a wait that was interrupted every time it was seen
/// blocked in one of the system calls named, at most once per `pace`.
pub struct Interrupted<T> {
    pub result: T,
    pub elapsed: Duration,
    pub interruptions: usize,
    /// Still waiting when interrupting stopped, after `give_up`.
    pub gave_up: bool,
}

/// Runs `wait` on a thread and interrupts it each time it is blocked in
/// one of `calls`, then sleeps `pace` (zero: as fast as the signals are handled),
/// until it returns or `give_up` has passed; then joins it. The sleep only
/// spaces the signals out; each one still waits for the thread to block.
pub fn interrupt_wait<T: Send>(
    calls: &[libc::c_long],
    wait: impl FnOnce() -> T + Send,
    pace: Duration,
    give_up: Duration,
) -> Interrupted<T> {
    let (ids_tx, ids_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(move || {
            ids_tx.send(this_thread()).unwrap();
            let start = Instant::now();
            let result = wait();
            (result, start.elapsed())
        });
        let thread = ids_rx.recv().unwrap();
        let done = || waiter.is_finished();
        let started = Instant::now();
        let mut interruptions = 0;
        while !done() && started.elapsed() < give_up {
            if wait_until_blocked_in(thread.tid, calls, &done) && interrupt(thread, &done) {
                interruptions += 1;
                if !pace.is_zero() {
                    std::thread::sleep(pace);
                }
            }
        }
        let gave_up = !done();
        let (result, elapsed) = waiter.join().unwrap();
        Interrupted {
            result,
            elapsed,
            interruptions,
            gave_up,
        }
    })
}
