//! Starting a worker ([`WorkerCommand`]) and watching it ([`Worker`]).
#![allow(unsafe_code)]

extern crate std;

use core::time::Duration;
use std::borrow::ToOwned;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::vec::Vec;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::process::{
    Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus, getpid, getppid, pidfd_open,
    pidfd_send_signal, set_parent_process_death_signal, waitid,
};

use super::confine::{Confinement, Prepared};
use super::exit::ExitReason;
use super::{CHANNEL_ENV, DEFAULT_CHANNEL_FD, SECCOMP_AVAILABLE};
use crate::Channel;
use crate::Error;
use crate::channel::{monotonic_now, timespec};

/// How to start a worker: a program, its arguments, environment and
/// working directory as with [`std::process::Command`], the fd number its
/// channel gets, and its [`Confinement`].
///
/// Each [`spawn`](Self::spawn) creates a fresh channel, so one
/// `WorkerCommand` starts the worker again after a crash.
///
/// What the worker inherits: fds 0, 1 and 2 (the pipeline's, as `Command`
/// does, unless [`null_stdio`](Self::null_stdio) or
/// [`stderr`](Self::stderr) say otherwise) and its end of the channel at [`channel_fd`](Self::channel_fd) (3 unless told
/// otherwise). Every other fd is closed at `exec`, whatever its
/// close-on-exec flag: the child marks them all close-on-exec
/// (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`) between `fork` and `exec`,
/// then `dup2`s the channel to its number. The parent never clears
/// `FD_CLOEXEC` on anything, so a child started meanwhile by another
/// thread inherits nothing of it.
///
/// # Example
///
/// ```no_run
/// use ipc_unixsocket::worker::{Confinement, WorkerCommand};
///
/// // This same binary, re-executed with an argument: the usual IPA pattern.
/// let mut command = WorkerCommand::current_exe()?;
/// command.arg("--worker").confine(Confinement::strict());
/// let (mut worker, channel) = command.spawn::<4>()?;
/// channel.send(b"hello", &[])?;
/// # drop(worker);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    current_dir: Option<PathBuf>,
    channel_fd: RawFd,
    confinement: Confinement,
    null_stdio: bool,
    stderr: Option<Arc<OwnedFd>>,
}

impl WorkerCommand {
    /// A worker running `program` (looked up in `PATH` as `Command` does),
    /// unconfined until [`confine`](Self::confine).
    ///
    /// # Example
    ///
    /// ```
    /// let command = ipc_unixsocket::worker::WorkerCommand::new("/usr/libexec/ipa-worker");
    /// # drop(command);
    /// ```
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            current_dir: None,
            channel_fd: DEFAULT_CHANNEL_FD,
            confinement: Confinement::none(),
            null_stdio: false,
            stderr: None,
        }
    }

    /// A worker running this same binary (`std::env::current_exe`), to be
    /// told apart by an argument.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the path of the running binary cannot be read.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::current_exe()?;
    /// command.arg("--worker");
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn current_exe() -> Result<Self, Error> {
        std::env::current_exe()
            .map(Self::new)
            .map_err(|error| io_error(&error))
    }

    /// Adds an argument.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.arg("--sensor").arg("imx219");
    /// ```
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.args(["--sensor", "imx219"]);
    /// ```
    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Sets an environment variable for the worker.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.env("RUST_BACKTRACE", "1");
    /// ```
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable from the worker's environment.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.env_remove("LD_PRELOAD");
    /// ```
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the worker with an empty environment (plus the variables
    /// set with [`env`](Self::env) and the crate's [`CHANNEL_ENV`]).
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.env_clear().env("LANG", "C");
    /// ```
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The worker's working directory.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.current_dir("/");
    /// ```
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The fd number of the worker's end of the channel (3 by default).
    ///
    /// # Panics
    ///
    /// If `fd` is below 3: 0, 1 and 2 are stdio.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.channel_fd(10);
    /// ```
    pub fn channel_fd(&mut self, fd: RawFd) -> &mut Self {
        assert!(fd >= 3, "fds 0, 1 and 2 are stdio");
        self.channel_fd = fd;
        self
    }

    /// Gives the worker `/dev/null` as stdin, stdout and stderr (unless
    /// [`stderr`](Self::stderr) names another), instead of the pipeline's
    /// own: a terminal on stdin is something a compromised worker could
    /// use.
    ///
    /// # Example
    ///
    /// ```
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.null_stdio();
    /// ```
    pub fn null_stdio(&mut self) -> &mut Self {
        self.null_stdio = true;
        self
    }

    /// Gives each worker a duplicate of `fd` as its stderr (a log pipe or
    /// file, say).
    ///
    /// # Example
    ///
    /// ```
    /// let log = std::fs::File::create(std::env::temp_dir().join("ipa-worker.log"))?;
    /// let mut command = ipc_unixsocket::worker::WorkerCommand::new("worker");
    /// command.null_stdio().stderr(log.into());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stderr(&mut self, fd: OwnedFd) -> &mut Self {
        self.stderr = Some(Arc::new(fd));
        self
    }

    /// How the worker is confined (none by default).
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::{Confinement, WorkerCommand};
    ///
    /// let mut command = WorkerCommand::new("worker");
    /// command.confine(Confinement::strict());
    /// ```
    pub fn confine(&mut self, confinement: Confinement) -> &mut Self {
        self.confinement = confinement;
        self
    }

    /// Starts the worker and returns its handle and the pipeline's end of a
    /// fresh channel; the worker takes its end with
    /// [`take_channel`](super::take_channel).
    ///
    /// Makes a `socketpair`, then `fork` and `exec` through
    /// `std::process::Command` (which may allocate), and a `pidfd_open`. In
    /// the child, between `fork` and `exec`: `PR_SET_PDEATHSIG(SIGKILL)`
    /// (the worker dies with the thread that started it: start workers
    /// from a thread that lives as long as the pipeline), a check that the
    /// parent is still there, `close_range(CLOSE_RANGE_CLOEXEC)`, `dup2` of
    /// the channel to its number, and the confinement steps.
    ///
    /// # Errors
    ///
    /// - [`Error::SeccompUnavailable`] if the confinement asks for the
    ///   seccomp step where no filter can be built (i686, armv7: see
    ///   [`SECCOMP_AVAILABLE`](super::SECCOMP_AVAILABLE)), before anything
    ///   is started.
    /// - [`Error::Os`] with the errno of whatever failed: the socket pair,
    ///   the `fork`, a confinement step in the child (`EPERM` for a step
    ///   that needs privileges, say), the `exec` (`ENOENT` for a missing
    ///   program).
    ///
    /// Nothing is left running then.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::worker::{ExitReason, WorkerCommand};
    ///
    /// let (mut worker, channel) = WorkerCommand::new("true").spawn::<4>()?;
    /// assert_eq!(worker.wait_timeout(Duration::from_secs(5))?, Some(ExitReason::Exited(0)));
    /// # drop(channel);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn spawn<const MAX_FDS: usize>(&self) -> Result<(Worker, Channel<MAX_FDS>), Error> {
        if self.confinement.seccomp && !SECCOMP_AVAILABLE {
            return Err(Error::SeccompUnavailable);
        }
        let (local, remote) = Channel::<MAX_FDS>::create()?;
        let prepared = self.confinement.prepare();
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if self.env_clear {
            command.env_clear();
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.env(CHANNEL_ENV, self.channel_env());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if self.null_stdio {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
        if let Some(fd) = &self.stderr {
            command.stderr(fd.try_clone().map_err(|error| io_error(&error))?);
        }
        let parent = getpid();
        let source = remote.as_raw_fd();
        let target = self.channel_fd;
        // SAFETY: the closure runs in the child between fork and exec and
        // is async-signal-safe: it makes system calls only (through rustix,
        // or libc where rustix has no wrapper) and allocates nothing; what
        // it reads (`prepared`, two integers) was built before the fork.
        unsafe {
            command.pre_exec(move || {
                in_child(parent, source, target, &prepared).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|error| io_error(&error))?;
        drop(remote);
        let pid = Pid::from_child(&child);
        // The child is not reaped yet, so its pid names it until we wait.
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => pidfd,
            Err(errno) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(errno.into());
            }
        };
        debug!("started worker pid {=i32}", pid.as_raw_nonzero().get());
        Ok((
            Worker {
                pid,
                pidfd,
                exit: None,
            },
            local,
        ))
    }

    /// The value of [`CHANNEL_ENV`]: the fd number, then `landlock` and
    /// `seccomp` (with the extra system calls) if the worker is to restrict
    /// itself.
    fn channel_env(&self) -> OsString {
        use core::fmt::Write as _;
        let mut value = std::format!("{}", self.channel_fd);
        if self.confinement.landlock {
            value.push_str(" landlock");
        }
        if self.confinement.seccomp {
            value.push_str(" seccomp");
            for nr in &self.confinement.extra_syscalls {
                let _ = write!(value, " {nr}");
            }
        }
        value.into()
    }
}

/// Everything the child does between `fork` and `exec`: system calls
/// only, no allocation.
fn in_child(parent: Pid, source: RawFd, target: RawFd, confine: &Prepared) -> Result<(), Errno> {
    set_parent_process_death_signal(Some(Signal::KILL))?;
    // The parent may have gone before the line above: then nothing would
    // ever send the signal.
    if getppid() != Some(parent) {
        return Err(Errno::SRCH);
    }
    mark_cloexec_from(3)?;
    if source == target {
        // SAFETY: `source` is the channel's fd, open for the whole spawn.
        let fd = unsafe { BorrowedFd::borrow_raw(source) };
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    } else {
        // SAFETY: dup2 takes two integers and touches no memory; `target`
        // is replaced in this child only (std's status pipe is never at
        // `target`: its read end is closed before this runs and its write
        // end is allocated after it, at a higher number, unless another
        // thread closes fds during the spawn).
        if unsafe { libc::dup2(source, target) } < 0 {
            return Err(Errno::from_raw_os_error(crate::credentials::errno()));
        }
    }
    confine.apply_in_child()
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: every fd from `first` on
/// is closed at `exec` (std's own status pipe stays open until then).
/// rustix has no wrapper for `close_range`.
fn mark_cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes three integers and touches no memory; with
    // CLOSE_RANGE_CLOEXEC it only sets flags, closing nothing now.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(crate::credentials::errno()))
    }
}

/// The errno of an `io::Error` from `std::process::Command`.
fn io_error(error: &std::io::Error) -> Error {
    Error::Os(Errno::from_io_error(error).unwrap_or(Errno::INVAL))
}

/// A running (or ended, not yet dropped) worker: its pid and a pidfd to
/// watch it with.
///
/// The pidfd ([`AsFd`]) becomes readable when the worker ends: put it in
/// the `poll` beside the channel and the timers, then
/// [`try_wait`](Self::try_wait) says why. Neither allocates.
///
/// Dropping the handle of a worker that has not been reaped kills it
/// (`SIGKILL`) and reaps it, so no worker outlives its handle and none is
/// left a zombie; [`detach`](Self::detach) lets it run on instead.
///
/// A process that reaps every child with `wait(-1)` (or ignores
/// `SIGCHLD`) takes the exit status away from the handle: `try_wait` then
/// fails with `ECHILD`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use ipc_unixsocket::worker::WorkerCommand;
///
/// let (mut worker, _channel) = WorkerCommand::new("sleep").arg("10").spawn::<4>()?;
/// worker.kill()?;
/// let reason = worker.wait_timeout(Duration::from_secs(5))?.expect("killed");
/// assert_eq!(reason.signal(), Some(libc::SIGKILL));
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[derive(Debug)]
pub struct Worker {
    pid: Pid,
    pidfd: OwnedFd,
    exit: Option<ExitReason>,
}

impl Worker {
    /// The worker's process id, in the pipeline's pid namespace; with
    /// [`Namespaces::PID`](super::Namespaces::PID), that of its supervisor.
    ///
    /// # Example
    ///
    /// ```
    /// let (worker, _channel) = ipc_unixsocket::worker::WorkerCommand::new("sleep").arg("10").spawn::<1>()?;
    /// println!("worker {}", worker.pid());
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// Why the worker ended, without blocking: `None` while it runs.
    ///
    /// Makes one `waitid(P_PIDFD, WEXITED | WNOHANG)` (retried on `EINTR`),
    /// which reaps the worker once it has ended; later calls return the
    /// same reason without a system call. Allocates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `waitid` fails (`ECHILD` if something else reaped
    /// the worker).
    ///
    /// # Example
    ///
    /// ```
    /// let (mut worker, _channel) = ipc_unixsocket::worker::WorkerCommand::new("sleep").arg("10").spawn::<1>()?;
    /// if let Some(reason) = worker.try_wait()? {
    ///     eprintln!("worker {reason}");
    /// }
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "waitid")]
    pub fn try_wait(&mut self) -> Result<Option<ExitReason>, Error> {
        if self.exit.is_none() {
            self.exit = self.wait(WaitIdOptions::NOHANG)?;
        }
        Ok(self.exit)
    }

    /// Waits at most `timeout` for the worker to end, and says why: `None`
    /// if it still runs then.
    ///
    /// `poll` on the pidfd up to a fixed `CLOCK_MONOTONIC` deadline
    /// (`EINTR` retried), then [`try_wait`](Self::try_wait).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `poll` or `waitid` fails.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipc_unixsocket::worker::{ExitReason, WorkerCommand};
    ///
    /// let (mut worker, _channel) = WorkerCommand::new("false").spawn::<1>()?;
    /// let reason = worker.wait_timeout(Duration::from_secs(5))?;
    /// assert_eq!(reason, Some(ExitReason::Exited(1)));
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitReason>, Error> {
        let deadline = monotonic_now() + timeout;
        while self.exit.is_none() {
            let left = deadline.saturating_sub(monotonic_now());
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match poll(&mut fds, Some(&timespec(left))) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.try_wait()?;
                }
                Err(Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(self.exit)
    }

    /// Sends `SIGKILL` to the worker through its pidfd (never to a process
    /// that reused its pid). Does nothing once the worker is reaped.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `pidfd_send_signal` fails.
    ///
    /// # Example
    ///
    /// ```
    /// let (mut worker, _channel) = ipc_unixsocket::worker::WorkerCommand::new("sleep").arg("10").spawn::<1>()?;
    /// worker.kill()?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[doc(alias = "pidfd_send_signal")]
    pub fn kill(&mut self) -> Result<(), Error> {
        if self.exit.is_some() {
            return Ok(());
        }
        match pidfd_send_signal(&self.pidfd, Signal::KILL) {
            // ESRCH: it has ended already, and waits to be reaped.
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Whether the kernel filters the worker's system calls with seccomp:
    /// the `Seccomp:` line of `/proc/PID/status` is 2 (filter mode). A
    /// worker started with [`Confinement::seccomp`] reports true once it
    /// has called [`take_channel`](super::take_channel). In a pid
    /// namespace, where the handle names the worker's supervisor, the
    /// supervisor's children are read too (`/proc/PID/task/PID/children`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if the file cannot be read (the worker has been
    /// reaped: `ENOENT`).
    ///
    /// # Example
    ///
    /// ```
    /// let (worker, _channel) = ipc_unixsocket::worker::WorkerCommand::new("sleep").arg("10").spawn::<1>()?;
    /// assert!(!worker.is_seccomp_filtered()?);
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    pub fn is_seccomp_filtered(&self) -> Result<bool, Error> {
        let pid = self.pid();
        let filtered = |pid: &str| {
            std::fs::read_to_string(std::format!("/proc/{pid}/status")).map(|status| {
                status
                    .lines()
                    .any(|line| line.split_whitespace().eq(["Seccomp:", "2"]))
            })
        };
        if filtered(&std::format!("{pid}")).map_err(|error| io_error(&error))? {
            return Ok(true);
        }
        let children = std::fs::read_to_string(std::format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default();
        Ok(children
            .split_whitespace()
            .any(|child| filtered(child).unwrap_or(false)))
    }

    /// Lets the worker run on after the handle is gone, and returns its
    /// pidfd: reaping it (`waitid(P_PIDFD)`) is the caller's job now.
    ///
    /// # Example
    ///
    /// ```
    /// let (worker, _channel) = ipc_unixsocket::worker::WorkerCommand::new("sleep").arg("10").spawn::<1>()?;
    /// let pidfd = worker.detach();
    /// // Still running; ending and reaping it is ours to do now.
    /// use rustix::{fd::AsFd, process};
    /// process::pidfd_send_signal(&pidfd, process::Signal::KILL)?;
    /// process::waitid(process::WaitId::PidFd(pidfd.as_fd()), process::WaitIdOptions::EXITED)?;
    /// # Ok::<(), ipc_unixsocket::Error>(())
    /// ```
    #[must_use = "the worker becomes a zombie when it ends unless the pidfd is waited on"]
    pub fn detach(self) -> OwnedFd {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again nor dropped, so the pidfd is
        // moved out exactly once.
        unsafe { core::ptr::read(&this.pidfd) }
    }

    /// One `waitid(P_PIDFD, WEXITED | options)`, `EINTR` retried.
    fn wait(&self, options: WaitIdOptions) -> Result<Option<ExitReason>, Error> {
        loop {
            match waitid(
                WaitId::PidFd(self.pidfd.as_fd()),
                WaitIdOptions::EXITED | options,
            ) {
                Ok(status) => return Ok(status.as_ref().and_then(reason)),
                Err(Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

/// The reason in a `waitid` status, `None` if it reports no exit.
fn reason(status: &WaitIdStatus) -> Option<ExitReason> {
    if let Some(code) = status.exit_status() {
        return Some(ExitReason::Exited(code));
    }
    status
        .terminating_signal()
        .map(|signal| ExitReason::Signaled {
            signal,
            core_dumped: status.dumped(),
        })
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.kill();
            // SIGKILL cannot be caught: this wait ends as soon as the
            // kernel has torn the worker down.
            if let Ok(reason) = self.wait(WaitIdOptions::empty()) {
                debug!("dropped worker: {}", reason);
            }
        }
    }
}

impl AsFd for Worker {
    /// The pidfd: readable once the worker has ended.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}
