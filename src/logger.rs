//! A [`defmt`] global logger for Linux userspace (feature `defmt`).
//!
//! Upstream defmt ships loggers for microcontrollers only. This one encodes
//! each log frame with [`defmt::Encoder`] (rzcobs, defmt's default), buffers
//! the whole frame in a fixed 512-byte buffer, and writes it with one
//! `write(2)` to stderr, or to the fd given to [`set_fd`]. Decode the stream
//! on the host with `defmt-print -e <the binary>`.
//!
//! # Installing it
//!
//! The logger is not registered with `#[defmt::global_logger]`. It becomes
//! the global logger at link time: the crate's linker script
//! `ipc-unixsocket-defmt.x` maps defmt's logger symbols to this module with
//! `PROVIDE`, which only applies when the binary defines none of its own. So
//! a binary linked with that script logs through this module, and a binary
//! with its own `#[defmt::global_logger]` keeps it, without a duplicate
//! symbol. The crate's own tests, examples and doctests are linked with the
//! script whenever the feature is on; a downstream binary adds two link
//! arguments (see the crate's `docs/defmt.md`).
//!
//! # Concurrency and re-entry
//!
//! The logger is held by one thread at a time, recorded by its thread id:
//! other threads spin briefly, then yield, until it is free, so frames from
//! different threads never interleave. A frame started on a thread that
//! already holds the logger (a signal handler that logs, or a
//! [`defmt::Format`] impl that logs) does not deadlock and does not corrupt
//! the frame in progress: it is dropped and counted in [`dropped_frames`].
//! Frames of up to 512 bytes reach the fd in one `write`, which a pipe keeps
//! whole even when other processes write to the same pipe (`PIPE_BUF` is
//! 4096); a longer frame is written in 512-byte pieces.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ipc_unixsocket::logger;
//!
//! // Frames go to stderr unless told otherwise.
//! let file = std::fs::File::create("/tmp/ipa.defmt")?;
//! let previous = logger::set_fd(file.into());
//! assert!(previous.is_none()); // it was writing to stderr
//! defmt::warn!("sensor {=u8} timed out", 2);
//! # Ok(())
//! # }
//! ```
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use rustix::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use rustix::io::{Errno, write};
use rustix::thread::{gettid, sched_yield};

/// Bytes of one frame kept before they are written.
const FRAME_CAPACITY: usize = 512;

/// The fd frames go to when [`TARGET`] holds none.
const STDERR: RawFd = 2;

/// Thread id of the thread that holds the logger; 0 when it is free.
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Frames the owner started while it already held the logger and that are
/// being dropped. Only the owner thread (or its signal handlers) changes it.
static NESTED: AtomicU32 = AtomicU32::new(0);

/// The fd set with [`set_fd`], owned by the logger; -1 for stderr. Changed
/// only while the logger is held.
static TARGET: AtomicI32 = AtomicI32::new(-1);

/// Frames dropped: nested frames, and frames the kernel refused to take.
static DROPPED: AtomicU32 = AtomicU32::new(0);

/// The frame being encoded.
struct Frame {
    encoder: defmt::Encoder,
    buf: [u8; FRAME_CAPACITY],
    len: usize,
    failed: bool,
}

struct Shared(UnsafeCell<Frame>);

// SAFETY: the frame is only accessed through `frame()`, by the thread that
// holds the logger (recorded in `OWNER`), so it is never shared.
unsafe impl Sync for Shared {}

static FRAME: Shared = Shared(UnsafeCell::new(Frame {
    encoder: defmt::Encoder::new(),
    buf: [0; FRAME_CAPACITY],
    len: 0,
    failed: false,
}));

/// Sends the frames that follow to `fd`, and returns the fd that was used
/// before (`None` for stderr) so that the caller can close it.
///
/// The logger keeps `fd` open until the next `set_fd` or [`use_stderr`]
/// hands it back. The switch waits for the frame in progress on another
/// thread, so no frame is split between two fds.
pub fn set_fd(fd: OwnedFd) -> Option<OwnedFd> {
    swap_target(fd.into_raw_fd())
}

/// Sends the frames that follow to stderr again, and returns the fd given
/// to [`set_fd`], if any.
pub fn use_stderr() -> Option<OwnedFd> {
    swap_target(-1)
}

/// Number of frames dropped since the process started: frames begun on a
/// thread that was already writing one (re-entry), and frames that could not
/// be written (for example `EBADF`, or `EAGAIN` on a non-blocking fd).
#[must_use]
pub fn dropped_frames() -> u32 {
    DROPPED.load(Ordering::Relaxed)
}

fn swap_target(raw: RawFd) -> Option<OwnedFd> {
    let held = lock();
    let old = TARGET.swap(raw, Ordering::Relaxed);
    if held == Lock::Acquired {
        unlock();
    }
    // SAFETY: a non-negative target came from `into_raw_fd` in `set_fd` and
    // has not been handed back since; the swap under the lock removed it
    // from the logger, so the caller becomes its only owner.
    (old >= 0).then(|| unsafe { OwnedFd::from_raw_fd(old) })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// This call took the logger; `unlock` must follow.
    Acquired,
    /// This thread already held it.
    Nested,
}

fn lock() -> Lock {
    let me = gettid().as_raw_nonzero().get();
    let mut spins = 0u32;
    loop {
        match OWNER.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Lock::Acquired,
            Err(owner) if owner == me => return Lock::Nested,
            Err(_) if spins < 100 => {
                spins += 1;
                core::hint::spin_loop();
            }
            Err(_) => sched_yield(),
        }
    }
}

fn unlock() {
    OWNER.store(0, Ordering::Release);
}

/// The frame, for the thread that holds the logger.
///
/// # Safety
///
/// The caller holds the logger (`lock` returned `Acquired` and `unlock` has
/// not run), and drops the reference before it calls `unlock`.
#[allow(clippy::mut_from_ref)]
unsafe fn frame() -> &'static mut Frame {
    // SAFETY: per this function's contract only the owner thread gets here,
    // and a nested frame on that thread (`NESTED > 0`) never calls it.
    unsafe { &mut *FRAME.0.get() }
}

fn acquire() {
    if lock() == Lock::Nested {
        NESTED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: `lock` returned `Acquired`.
    let frame = unsafe { frame() };
    frame.len = 0;
    frame.failed = false;
    let Frame {
        encoder,
        buf,
        len,
        failed,
    } = frame;
    encoder.start_frame(|bytes| push(buf, len, failed, bytes));
}

fn write_frame(bytes: &[u8]) {
    if NESTED.load(Ordering::Relaxed) > 0 {
        return;
    }
    // SAFETY: defmt calls `write` only between `acquire` and `release`, and
    // this is not a nested frame, so this thread holds the logger.
    let Frame {
        encoder,
        buf,
        len,
        failed,
    } = unsafe { frame() };
    encoder.write(bytes, |bytes| push(buf, len, failed, bytes));
}

fn release() {
    if NESTED.load(Ordering::Relaxed) > 0 {
        NESTED.fetch_sub(1, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    {
        // SAFETY: as in `write_frame`.
        let Frame {
            encoder,
            buf,
            len,
            failed,
        } = unsafe { frame() };
        encoder.end_frame(|bytes| push(buf, len, failed, bytes));
        if *len > 0 {
            *failed |= !write_all(&buf[..*len]);
            *len = 0;
        }
        if *failed {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
    unlock();
}

/// Appends encoded bytes to the frame, writing the buffer out first when it
/// is full.
fn push(buf: &mut [u8; FRAME_CAPACITY], len: &mut usize, failed: &mut bool, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        if *len == FRAME_CAPACITY {
            *failed |= !write_all(buf);
            *len = 0;
        }
        let n = bytes.len().min(FRAME_CAPACITY - *len);
        buf[*len..*len + n].copy_from_slice(&bytes[..n]);
        *len += n;
        bytes = &bytes[n..];
    }
}

/// Writes all of `bytes` to the target fd; `false` if the kernel refused.
fn write_all(mut bytes: &[u8]) -> bool {
    let raw = match TARGET.load(Ordering::Relaxed) {
        -1 => STDERR,
        raw => raw,
    };
    // SAFETY: `raw` is stderr, or the fd `set_fd` gave the logger, which stays
    // open until `swap_target` hands it back; that needs the logger, which
    // the caller holds. A closed stderr makes `write` fail with `EBADF`.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

// The logger's entry points, under names of this crate. `ipc-unixsocket-defmt.x`
// makes them defmt's `_defmt_acquire`, `_defmt_flush`, `_defmt_release` and
// `_defmt_write` with `PROVIDE`, that is only in a binary that defines no
// global logger of its own. They have the signatures `#[defmt::global_logger]`
// gives those symbols.

#[unsafe(no_mangle)]
extern "Rust" fn __ipc_unixsocket_defmt_acquire() {
    acquire();
}

#[unsafe(no_mangle)]
extern "Rust" fn __ipc_unixsocket_defmt_flush() {
    // Every frame is written by `release`; nothing is pending.
}

#[unsafe(no_mangle)]
extern "Rust" fn __ipc_unixsocket_defmt_release() {
    release();
}

#[unsafe(no_mangle)]
extern "Rust" fn __ipc_unixsocket_defmt_write(bytes: &[u8]) {
    write_frame(bytes);
}
