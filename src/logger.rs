//! A [`defmt`] global logger for Linux userspace (features `defmt` and
//! `std`).
//!
//! Upstream defmt ships loggers for microcontrollers only. This one encodes
//! each log frame with [`defmt::Encoder`] (rzcobs, defmt's default) into a
//! 512-byte buffer of the logging thread, and writes the finished frame with
//! one `write(2)` to stderr, or to the fd given to [`set_fd`]. Decode the
//! stream on the host with `defmt-print -e <the binary>`.
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
//! arguments (see "Logging" in the crate's README, which is also the
//! [crate-level documentation](crate), and `docs/logging.md`).
//!
//! # Concurrency, re-entry, long frames
//!
//! There is no lock. Each thread encodes its frames in a buffer of its own
//! (a `thread_local!` without a destructor), and a finished frame reaches the
//! fd in one `write(2)` of at most 512 bytes. A pipe takes such a write whole
//! or not at all (`PIPE_BUF` is 4096), so frames of different threads, and
//! of different processes sharing the pipe, never interleave. (Only an fd
//! that takes part of a write, a regular file on a full disk for instance,
//! gets the rest of the frame in a further write.) Logging never waits for
//! another thread; only a switch of fd does (below), and the one write that a
//! switch from a signal handler leaves to close the replaced fd.
//!
//! - **Re-entry.** A frame started on a thread whose previous frame is not
//!   finished (a [`defmt::Format`] impl that logs, a signal handler that
//!   logs) abandons the unfinished frame: it is dropped and counted in
//!   [`dropped_frames`], and the new frame is written normally. What the
//!   abandoned frame's code writes afterwards is discarded.
//! - **Panics.** A panic that unwinds out of a `Format` impl leaves its frame
//!   unfinished; the next frame on that thread abandons it (counted) and is
//!   written normally. Other threads never notice.
//! - **`fork`.** The child's logger is independent of any frame another
//!   thread of the parent was writing at the time.
//! - **Long frames.** A frame longer than 512 bytes is dropped whole and
//!   counted in [`dropped_frames`]; no part of it is written.
//! - **Which fd.** A frame goes whole to the fd that is set when it is
//!   written (when the log call finishes), even if [`set_fd`] was called
//!   while it was being formatted.
//! - **Handing fds back.** When [`set_fd`] or [`use_stderr`] hands an fd back,
//!   no frame writes to it any more: the call first waits for the writes to
//!   that fd already in progress on other threads (each a single `write(2)`).
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

extern crate std;

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use defmt::Encoder;
use rustix::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use rustix::io::{Errno, write};
use rustix::process::getpid;
use rustix::thread::sched_yield;

/// Bytes of one encoded frame, at most: a frame is one `write(2)`.
const FRAME_CAPACITY: usize = 512;

/// The fd frames go to when no fd is set.
const STDERR: RawFd = 2;

/// The fd part of [`TARGET`] when frames go to stderr.
const NO_FD: RawFd = -1;

/// Where frames go. The low 32 bits are the fd given to [`set_fd`], owned by
/// the logger ([`NO_FD`] for stderr); the high 32 bits are a generation that
/// every switch increments, so that a writer can tell a switch happened.
static TARGET: AtomicU64 = AtomicU64::new(target(0, NO_FD));

/// Writes in progress to an fd given to [`set_fd`], one counter per parity of
/// the target's generation: a switch waits only for the writes to the fd it
/// replaced, never for those to the fd it installed. The high 32 bits are
/// the process id the count belongs to: a child forked while a thread of the
/// parent was writing inherits that count, and the first write in the child
/// replaces it instead of waiting for a thread that does not exist there.
static WRITING: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Frames dropped: abandoned, too long, or refused by the kernel.
static DROPPED: AtomicU32 = AtomicU32::new(0);

/// [`Frame::retired`] when there is no fd for the thread to close.
const NOT_RETIRED: u64 = u64::MAX;

/// The frame of one thread. Every field is a `Cell` or an atomic: a signal
/// handler may start a frame of its own at any point of this thread's frame,
/// and no `&mut` into the frame ever exists.
struct Frame {
    /// `acquire`s minus `release`s on this thread. A frame unwound by a panic
    /// never releases, so this may exceed the number of frames open; only
    /// equality with `live` matters.
    depth: Cell<u32>,
    /// The `depth` of the frame that owns `encoder`, `buf` and `len`; 0 when
    /// none does. An atomic so that `release` claims the frame with one
    /// instruction that a signal handler cannot split.
    live: AtomicU32,
    encoder: Cell<Encoder>,
    buf: Cell<[u8; FRAME_CAPACITY]>,
    /// Bytes encoded; more than `FRAME_CAPACITY` once the frame is too long.
    len: Cell<usize>,
    /// Writes of this thread to a [`set_fd`] fd, per parity as in
    /// [`WRITING`], each from before it counts itself there until after it
    /// no longer does (more than one only when a signal handler's frame
    /// interrupts this thread's write).
    pins: [Cell<u32>; 2],
    /// A [`TARGET`] whose fd a switch made from a signal handler, while this
    /// thread was writing, left to this thread to close; [`NOT_RETIRED`] if
    /// none.
    retired: Cell<u64>,
}

impl Frame {
    const fn new() -> Self {
        Self {
            depth: Cell::new(0),
            live: AtomicU32::new(0),
            encoder: Cell::new(Encoder::new()),
            buf: Cell::new([0; FRAME_CAPACITY]),
            len: Cell::new(0),
            pins: [Cell::new(0), Cell::new(0)],
            retired: Cell::new(NOT_RETIRED),
        }
    }

    /// Appends one encoded byte; past the capacity only counts it.
    fn push(&self, byte: u8) {
        let len = self.len.get();
        let buf: &Cell<[u8]> = &self.buf;
        if let Some(cell) = buf.as_slice_of_cells().get(len) {
            cell.set(byte);
        }
        self.len.set(len.saturating_add(1));
    }

    /// Runs `f` on this frame's encoder if the frame at this depth is still
    /// the live one.
    fn encode(&self, f: impl FnOnce(&mut Encoder, &mut dyn FnMut(&[u8]))) {
        if self.live.load(Ordering::SeqCst) != self.depth.get() {
            return; // abandoned: a newer frame took the buffer
        }
        // A signal handler that logs while the encoder is out sees a fresh
        // one; it abandons this frame, which then discards what follows.
        let mut encoder = self.encoder.replace(Encoder::new());
        f(&mut encoder, &mut |bytes| {
            bytes.iter().for_each(|&b| self.push(b))
        });
        self.encoder.set(encoder);
    }
}

std::thread_local! {
    /// `const` and without `Drop`: no lazy initialisation and no destructor
    /// registration, so it can be used from a signal handler and at any point
    /// of a thread's life.
    static FRAME: Frame = const { Frame::new() };
}

const fn target(generation: u32, fd: RawFd) -> u64 {
    ((generation as u64) << 32) | (fd as u32 as u64)
}

const fn target_fd(target: u64) -> RawFd {
    target as u32 as RawFd
}

const fn parity(target: u64) -> usize {
    ((target >> 32) & 1) as usize
}

/// Sends the frames that follow to `fd`, and returns the fd that was used
/// before (`None` for stderr) so that the caller can close it.
///
/// The logger keeps `fd` open until the next `set_fd` or [`use_stderr`]
/// hands it back. A frame goes whole to the fd that is set when it is
/// written, so a frame that another thread (or a [`defmt::Format`] impl on
/// this thread) is formatting during the switch goes whole to `fd`. Before it
/// returns the previous fd, `set_fd` waits for the `write(2)`s to it that
/// other threads have already begun, so no frame is written to it once the
/// caller has it.
///
/// One case returns `None` although an fd was set: `set_fd` called from a
/// signal handler that interrupted this very thread while it was writing a
/// frame to an fd given to `set_fd`. Waiting would never end, so the logger
/// closes the replaced fd itself once that write and those of other threads
/// to it are done (if that happens twice during one write, the second fd is
/// left open instead).
///
/// # Example
///
/// ```no_run
/// use ipc_unixsocket::logger;
///
/// let (reader, writer) = std::io::pipe().unwrap();
/// assert!(logger::set_fd(writer.into()).is_none()); // was stderr
/// defmt::info!("to the pipe");
/// let writer = logger::use_stderr().expect("the pipe's write end");
/// drop(writer); // the reader sees end-of-file after the frame
/// # drop(reader);
/// ```
pub fn set_fd(fd: OwnedFd) -> Option<OwnedFd> {
    swap_target(fd.into_raw_fd())
}

/// Sends the frames that follow to stderr again, and returns the fd given
/// to [`set_fd`], if any, once no frame writes to it any more (as
/// [`set_fd`] does).
///
/// # Example
///
/// ```no_run
/// use ipc_unixsocket::logger;
///
/// let file = std::fs::File::create("/tmp/ipa.defmt").unwrap();
/// logger::set_fd(file.into());
/// defmt::info!("to the file");
/// let file = logger::use_stderr().expect("the file");
/// drop(file);
/// defmt::info!("to stderr");
/// ```
pub fn use_stderr() -> Option<OwnedFd> {
    swap_target(NO_FD)
}

/// Number of frames dropped since the process started: frames abandoned
/// because a newer frame began on the same thread before they finished
/// (re-entry from a [`defmt::Format`] impl or a signal handler, or a panic
/// that unwound out of the frame), frames longer than 512 bytes, and frames
/// that could not be written (for example `EBADF`, or `EAGAIN` on a
/// non-blocking fd).
///
/// # Example
///
/// ```no_run
/// use ipc_unixsocket::logger;
///
/// defmt::info!("{=[u8]}", [0x55; 600]); // too long for one frame
/// assert_eq!(logger::dropped_frames(), 1);
/// ```
#[must_use]
pub fn dropped_frames() -> u32 {
    DROPPED.load(Ordering::Relaxed)
}

fn drop_frame() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

fn acquire() {
    FRAME.with(|frame| {
        let depth = frame.depth.get().wrapping_add(1);
        frame.depth.set(depth);
        // A frame of this thread that is not finished (the new one is nested
        // in it, or a panic unwound out of it) is abandoned: dropped, and
        // what its code writes from now on is discarded.
        if frame.live.swap(0, Ordering::SeqCst) != 0 {
            drop_frame();
        }
        frame.len.set(0);
        // A fresh encoder starts the frame with a separator, which also keeps
        // it apart from anything else written to the fd before it.
        frame.encoder.set(Encoder::new());
        frame.live.store(depth, Ordering::SeqCst);
        frame.encode(|encoder, push| encoder.start_frame(push));
    });
}

fn write_frame(bytes: &[u8]) {
    FRAME.with(|frame| frame.encode(|encoder, push| encoder.write(bytes, push)));
}

fn release() {
    FRAME.with(|frame| {
        let depth = frame.depth.get();
        frame.encode(|encoder, push| encoder.end_frame(push));
        let buf = frame.buf.get();
        let len = frame.len.get();
        // Claim the frame in one instruction: after this a signal handler's
        // frame no longer abandons it, and before it the handler's frame
        // already did (and counted it).
        let claimed = frame
            .live
            .compare_exchange(depth, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        frame.depth.set(depth.wrapping_sub(1));
        if !claimed {
            return;
        }
        match buf.get(..len) {
            Some(bytes) if write_out(frame, bytes) => {}
            _ => drop_frame(),
        }
    });
}

/// Writes one finished frame to the current target; `false` if the kernel
/// refused it.
fn write_out(frame: &Frame, bytes: &[u8]) -> bool {
    loop {
        let now = TARGET.load(Ordering::SeqCst);
        let raw = target_fd(now);
        if raw == NO_FD {
            return write_all(STDERR, bytes);
        }
        // Count this write under its target's generation, then check that
        // the target did not change meanwhile: a switch swaps `TARGET` before
        // it reads `WRITING`, so either it sees this write or this write sees
        // the new target (all `SeqCst`).
        let pid = own_pid();
        let writing = &WRITING[parity(now)];
        let pins = &frame.pins[parity(now)];
        pins.set(pins.get() + 1);
        enter(writing, pid);
        let ok = (TARGET.load(Ordering::SeqCst) == now).then(|| write_all(raw, bytes));
        leave(writing, pid);
        pins.set(pins.get() - 1);
        // Only the outermost write of this thread closes a retired fd: an
        // interrupted one may still be counted under it.
        if frame.pins.iter().all(|p| p.get() == 0) {
            let retired = frame.retired.replace(NOT_RETIRED);
            if retired != NOT_RETIRED {
                drain(&WRITING[parity(retired)], pid, 0);
                drop(take_fd(target_fd(retired)));
            }
        }
        if let Some(ok) = ok {
            return ok;
        }
    }
}

fn own_pid() -> u32 {
    getpid().as_raw_nonzero().get().cast_unsigned()
}

/// Counts one write in progress for process `pid`.
fn enter(writing: &AtomicU64, pid: u32) {
    let _ = writing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        Some(if (w >> 32) as u32 == pid {
            w + 1
        } else {
            (u64::from(pid) << 32) | 1 // a count inherited over fork
        })
    });
}

/// Uncounts a write that `enter` counted for process `pid`.
fn leave(writing: &AtomicU64, pid: u32) {
    let _ = writing.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        ((w >> 32) as u32 == pid && w as u32 > 0).then(|| w - 1)
    });
}

/// Waits until at most `own` writes of process `pid` are counted.
fn drain(writing: &AtomicU64, pid: u32, own: u32) {
    let mut spins = 0u32;
    loop {
        let w = writing.load(Ordering::SeqCst);
        if (w >> 32) as u32 != pid || w as u32 <= own {
            return;
        }
        if spins < 100 {
            spins += 1;
            core::hint::spin_loop();
        } else {
            sched_yield();
        }
    }
}

fn swap_target(raw: RawFd) -> Option<OwnedFd> {
    let mut old = TARGET.load(Ordering::SeqCst);
    loop {
        let new = target(((old >> 32) as u32).wrapping_add(1), raw);
        match TARGET.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break,
            Err(now) => old = now,
        }
    }
    let old_fd = target_fd(old);
    if old_fd == NO_FD {
        return None;
    }
    let pid = own_pid();
    let writing = &WRITING[parity(old)];
    if FRAME.with(|frame| frame.pins[parity(old)].get()) > 0 {
        // A signal handler interrupted this thread's own write under the
        // same counter, and cannot tell whether that write is counted yet;
        // waiting for it would never end. The interrupted write closes the
        // fd once it and those of other threads are done.
        FRAME.with(|frame| {
            if frame.retired.get() == NOT_RETIRED {
                frame.retired.set(old);
            }
            // else: a second such switch during the same write (from nested
            // handlers); the fd is left open rather than closed too early.
        });
        return None;
    }
    drain(writing, pid, 0);
    Some(take_fd(old_fd))
}

/// Takes back ownership of an fd that [`set_fd`] gave the logger.
fn take_fd(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` came from `into_raw_fd` in `set_fd` and only one switch
    // can remove it from `TARGET`; that switch, or the write it left the
    // close to, waited until no write to it was counted in `WRITING`, and no
    // new write uses it (a write checks `TARGET` after counting itself). So
    // nothing else owns or uses it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Writes all of `bytes` to `raw`; `false` if the kernel refused.
fn write_all(raw: RawFd, mut bytes: &[u8]) -> bool {
    // SAFETY: `raw` is stderr, or the fd `set_fd` gave the logger, read from
    // `TARGET` again after this write was counted in `WRITING`; the switch
    // that removes it waits until no such write is counted (or, from a
    // signal handler on this thread, leaves the close to this thread's
    // outermost write), so it stays open. A closed stderr makes `write` fail
    // with `EBADF`.
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
