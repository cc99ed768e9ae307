//! Worker processes: start an untrusted worker confined, with its end of a
//! channel and nothing else; watch it from the poll loop; learn why it
//! died; start it again.
//!
//! - [`WorkerCommand`] starts a program (or this same binary, re-executed
//!   with an argument) with its channel at a known fd, every other fd
//!   closed, and the [`Confinement`] asked for.
//! - The worker takes its end with [`take_channel`]: one safe call, once.
//! - [`Worker`] is the handle: a pidfd for `poll`, [`Worker::try_wait`] for
//!   the [`ExitReason`] (exit code, signal, seccomp kill), kill and reap on
//!   drop. Watching allocates nothing.
//! - [`Restart`] decides when to start it again, and when to give up.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ipc_unixsocket::worker::{self, Confinement, WorkerCommand};
//!
//! if std::env::args().nth(1).as_deref() == Some("--worker") {
//!     // The worker: its channel, checked, and its seccomp filter installed.
//!     let channel = worker::take_channel::<4>()?;
//!     channel.send(b"ready", &[])?;
//!     return Ok(());
//! }
//! // The pipeline.
//! let mut command = WorkerCommand::current_exe()?;
//! command.arg("--worker").confine(Confinement::strict());
//! let (mut worker, channel) = command.spawn::<4>()?;
//! let mut data = [0u8; 16];
//! let mut fds = heapless::Vec::<rustix::fd::OwnedFd, 4>::new();
//! let got = channel.recv_timeout(&mut data, &mut fds, Duration::from_secs(5))?;
//! assert_eq!(&data[..got.data_len], b"ready");
//! let reason = worker.wait_timeout(Duration::from_secs(5))?;
//! println!("worker {reason:?}");
//! # Ok::<(), ipc_unixsocket::Error>(())
//! ```

extern crate std;

mod confine;
mod exit;
mod landlock;
mod process;
mod restart;
mod seccomp;

use core::sync::atomic::{AtomicBool, Ordering};
use std::vec::Vec;

use rustix::fd::{FromRawFd, OwnedFd, RawFd};

pub use confine::{Confinement, NOBODY, Namespaces};
pub use exit::ExitReason;
pub use process::{Worker, WorkerCommand};
pub use restart::{Decision, Restart};
pub use seccomp::SECCOMP_AVAILABLE;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[cfg_attr(docsrs, doc(cfg(any(target_arch = "x86_64", target_arch = "aarch64"))))]
pub use seccomp::WORKER_SYSCALLS;

use crate::{Channel, Error};

/// The environment variable through which [`WorkerCommand::spawn`] tells
/// the worker where its channel is: the fd number, then, if the worker is
/// to deny itself the file system, `landlock`, and if it is to install the
/// seccomp filter, `seccomp` and the extra system call numbers, separated
/// by spaces (`"3"`, `"3 landlock seccomp 16"`).
///
/// # Example
///
/// ```
/// assert_eq!(ipc_unixsocket::worker::CHANNEL_ENV, "IPC_UNIXSOCKET_WORKER");
/// ```
pub const CHANNEL_ENV: &str = "IPC_UNIXSOCKET_WORKER";

/// The fd number of the worker's channel unless
/// [`WorkerCommand::channel_fd`] says otherwise.
const DEFAULT_CHANNEL_FD: RawFd = 3;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The worker's side: takes its end of the channel [`WorkerCommand::spawn`]
/// placed, once per process, and installs the seccomp filter if the
/// pipeline asked for one.
///
/// Reads [`CHANNEL_ENV`] for the fd number; checks that the fd is open and
/// was inherited across `exec` (its close-on-exec flag is clear: every fd
/// this process opens itself has it set), then, as [`Channel::bind`] does,
/// that it is an `AF_UNIX` `SOCK_SEQPACKET` socket, and marks it
/// close-on-exec so it reaches no process the worker starts. Then, if
/// asked ([`Confinement::landlock`]), denies itself the file system with
/// Landlock; finally, if asked, builds the allowlist filter (`WORKER_SYSCALLS` and the
/// pipeline's extras, with seccompiler) and installs it on every thread
/// (`no_new_privs`, `seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)`): from then on
/// any other system call kills the worker with `SIGSYS`. Call it at the
/// start of the worker's `main`, before it reads anything untrusted.
///
/// # Errors
///
/// - [`Error::ChannelTaken`] on the second call in a process.
/// - [`Error::NoInheritedChannel`] if the process was not started by
///   `WorkerCommand::spawn` (no [`CHANNEL_ENV`], or nothing inherited at
///   its fd).
/// - [`Error::NotSeqpacketSocket`] if the fd is something else (it is
///   closed).
/// - [`Error::SeccompUnavailable`] if the filter cannot be built for this
///   architecture (always on i686 and armv7: see [`SECCOMP_AVAILABLE`];
///   the worker is not left running unfiltered, the error is its to
///   report), [`Error::Os`] if the kernel refuses it.
///
/// # Example
///
/// ```no_run
/// let channel = ipc_unixsocket::worker::take_channel::<4>()?;
/// assert_eq!(
///     ipc_unixsocket::worker::take_channel::<4>().unwrap_err(),
///     ipc_unixsocket::Error::ChannelTaken,
/// );
/// # drop(channel);
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[allow(unsafe_code)] // F_GETFD on a number, and adopting the inherited fd
pub fn take_channel<const MAX_FDS: usize>() -> Result<Channel<MAX_FDS>, Error> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::ChannelTaken);
    }
    let value = std::env::var(CHANNEL_ENV).map_err(|_| Error::NoInheritedChannel)?;
    let mut words = value.split(' ');
    let fd: RawFd = words
        .next()
        .and_then(|word| word.parse().ok())
        .filter(|&fd| fd >= 3)
        .ok_or(Error::NoInheritedChannel)?;
    let (mut landlock, mut seccomp) = (false, None::<Vec<libc::c_long>>);
    for word in words {
        match (word, &mut seccomp) {
            ("landlock", _) => landlock = true,
            ("seccomp", _) => seccomp = Some(Vec::new()),
            (number, Some(extra)) => {
                extra.push(number.parse().map_err(|_| Error::NoInheritedChannel)?);
            }
            (_, None) => return Err(Error::NoInheritedChannel),
        }
    }
    // SAFETY: F_GETFD takes and returns integers; on a closed fd it fails
    // with EBADF and touches nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
        return Err(Error::NoInheritedChannel);
    }
    // SAFETY: the fd is open and was inherited across exec: `spawn` placed
    // it there without close-on-exec for this process to take, and nothing
    // in this process opened it (everything std and this crate open is
    // close-on-exec). `TAKEN` lets only this call make an `OwnedFd` of it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let channel = Channel::adopt(fd)?;
    if landlock {
        landlock::deny_all()?;
    }
    if let Some(extra) = seccomp {
        seccomp::confine(&extra)?;
    }
    Ok(channel)
}
