//! The confinement profile of a worker: each step separate, named and
//! opt-in, in the style of minijail and crosvm.
//!
//! Every step but seccomp runs in the child between `fork` and `exec`
//! ([`Confinement::apply_in_child`]), where only async-signal-safe work is
//! allowed: everything it needs (paths, uid maps) is built before `fork`,
//! and it makes system calls only, through rustix.

extern crate std;

use core::fmt::Write as _;
use std::vec::Vec;

use rustix::fs::{Mode, OFlags, open};
use rustix::io::{Errno, write};
use rustix::process::{Gid, Resource, Rlimit, Uid, setrlimit};
use rustix::thread::UnshareFlags;

/// The namespaces a worker gets of its own (`unshare` between `fork` and
/// `exec`). Combine with `|`.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::worker::Namespaces;
///
/// let ns = Namespaces::NET | Namespaces::IPC;
/// assert!(ns.contains(Namespaces::NET));
/// assert!(!ns.contains(Namespaces::MOUNT));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Namespaces(u32);

impl Namespaces {
    /// No namespace of its own.
    pub const NONE: Self = Self(0);
    /// A network namespace (`CLONE_NEWNET`): only a loopback device, down.
    /// `socket(AF_INET)` still works; nothing is reachable.
    pub const NET: Self = Self(UnshareFlags::NEWNET.bits());
    /// An IPC namespace (`CLONE_NEWIPC`): no System V IPC objects or POSIX
    /// message queues of the pipeline's.
    pub const IPC: Self = Self(UnshareFlags::NEWIPC.bits());
    /// A UTS namespace (`CLONE_NEWUTS`): its own host name.
    pub const UTS: Self = Self(UnshareFlags::NEWUTS.bits());
    /// A mount namespace (`CLONE_NEWNS`): mounts the worker could make do
    /// not reach the pipeline's. The file system it sees is the same.
    pub const MOUNT: Self = Self(UnshareFlags::NEWNS.bits());
    /// A pid namespace (`CLONE_NEWPID`): the worker is pid 2 of its own
    /// namespace and cannot name a process of the pipeline's to signal or
    /// trace it (its `/proc` is still the pipeline's: no fresh one is
    /// mounted). `unshare(CLONE_NEWPID)` only
    /// moves the caller's future children, so the child of `fork` becomes a
    /// small supervisor outside the namespace: it starts the namespace's
    /// init (pid 1, which reaps orphans and keeps the namespace alive) and
    /// then the worker (pid 2, its own child, which goes on to `exec`),
    /// waits for the worker, and ends the same way: the same exit code, or
    /// killed by the same signal (never with a core dump, so that the
    /// supervisor, a copy of the pipeline, writes none). [`Worker::pid`](super::Worker::pid)
    /// and the pidfd name the supervisor; killing it kills the namespace.
    pub const PID: Self = Self(UnshareFlags::NEWPID.bits());
    /// A user namespace (`CLONE_NEWUSER`), entered first, for a pipeline
    /// that is not root: it lets an unprivileged pipeline create the other
    /// namespaces. The worker's uid and gid are mapped to themselves (its
    /// only ids), `setgroups` is denied, and `exec` leaves it no
    /// capabilities (its uid inside is not 0).
    pub const USER: Self = Self(UnshareFlags::NEWUSER.bits());

    /// Whether every namespace of `other` is in `self`.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::Namespaces;
    ///
    /// assert!(Namespaces::UTS.contains(Namespaces::NONE));
    /// ```
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Namespaces {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// How a worker is confined: each step opt-in, documented and tested on
/// its own. [`Confinement::none`] confines nothing; [`Confinement::strict`]
/// is the default profile.
///
/// Order in the child, as minijail does it: parent-death signal and fd
/// placement (always), then the user namespace, the other namespaces,
/// rlimits, supplementary groups, gid and uid, `no_new_privs`; `exec`; and
/// Landlock and the seccomp filter last, installed by the worker itself in
/// [`take_channel`](super::take_channel).
///
/// # Example
///
/// ```no_run
/// use ipc_unixsocket::worker::{Confinement, Namespaces};
///
/// let profile = Confinement::none()
///     .no_new_privs(true)
///     .namespaces(Namespaces::NET | Namespaces::IPC)
///     .limit_open_files(32)
///     .seccomp(true)
///     .allow_syscalls(&[libc::SYS_ioctl]);
/// # drop(profile);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    pub(crate) no_new_privs: bool,
    pub(crate) namespaces: Namespaces,
    pub(crate) ids: Option<(u32, u32)>,
    pub(crate) open_files: Option<u64>,
    pub(crate) address_space: Option<u64>,
    pub(crate) core_size: Option<u64>,
    pub(crate) seccomp: bool,
    pub(crate) extra_syscalls: Vec<libc::c_long>,
    pub(crate) landlock: bool,
}

/// The uid and gid [`Confinement::strict`] gives a worker started by root:
/// `nobody` and `nogroup` on Debian.
pub const NOBODY: u32 = 65534;

impl Confinement {
    /// Confines nothing: the worker runs as the pipeline does (it still
    /// gets only its channel and stdio, and dies with the pipeline).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none();
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The default profile: `no_new_privs`; pid, network, IPC, UTS and
    /// mount namespaces (with a user namespace first when the pipeline is not
    /// root); uid and gid [`NOBODY`] without supplementary groups when the
    /// pipeline is root; at most 64 open files, 4 GiB of address space, no
    /// core dumps; the seccomp allowlist `WORKER_SYSCALLS`.
    ///
    /// The seccomp step is in it on every architecture: where there is no
    /// filter to install (i686, armv7: [`SECCOMP_AVAILABLE`](super::SECCOMP_AVAILABLE)
    /// is false) [`spawn`](super::WorkerCommand::spawn) refuses the profile
    /// with [`Error::SeccompUnavailable`](crate::Error::SeccompUnavailable)
    /// rather than start a worker with less than was asked for. Leave the
    /// step out there in so many words:
    /// `Confinement::strict().seccomp(SECCOMP_AVAILABLE)`.
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::strict();
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn strict() -> Self {
        let root = rustix::process::geteuid().is_root();
        let base = Namespaces::PID
            | Namespaces::NET
            | Namespaces::IPC
            | Namespaces::UTS
            | Namespaces::MOUNT;
        let profile = Self::none()
            .no_new_privs(true)
            .namespaces(if root { base } else { base | Namespaces::USER })
            .limit_open_files(64)
            .limit_address_space(4 << 30)
            .limit_core_size(0)
            .seccomp(true);
        if root {
            profile.user(NOBODY, NOBODY)
        } else {
            profile
        }
    }

    /// `prctl(PR_SET_NO_NEW_PRIVS)`: `exec` of a set-uid binary or one with
    /// file capabilities grants nothing.
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().no_new_privs(true);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn no_new_privs(mut self, on: bool) -> Self {
        self.no_new_privs = on;
        self
    }

    /// Namespaces of its own (`unshare`), see [`Namespaces`].
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::{Confinement, Namespaces};
    ///
    /// let profile = Confinement::none().namespaces(Namespaces::NET);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Another uid and gid (`setresgid`, `setresuid`), with every
    /// supplementary group dropped (`setgroups(0, NULL)`). Needs root (or
    /// `CAP_SETUID` and `CAP_SETGID`).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().user(65534, 65534);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.ids = Some((uid, gid));
        self
    }

    /// `RLIMIT_NOFILE`: the worker can hold at most `count` fds (and
    /// receives no more: the kernel truncates `SCM_RIGHTS` past it).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().limit_open_files(16);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn limit_open_files(mut self, count: u64) -> Self {
        self.open_files = Some(count);
        self
    }

    /// `RLIMIT_AS`: the worker's address space, in bytes (mapped buffers
    /// count).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().limit_address_space(1 << 30);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn limit_address_space(mut self, bytes: u64) -> Self {
        self.address_space = Some(bytes);
        self
    }

    /// `RLIMIT_CORE`: the largest core dump the worker may leave (0: none,
    /// so no frame it held reaches the disk).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().limit_core_size(0);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn limit_core_size(mut self, bytes: u64) -> Self {
        self.core_size = Some(bytes);
        self
    }

    /// A seccomp-bpf allowlist: `WORKER_SYSCALLS` (written out for x86_64
    /// and aarch64) plus [`allow_syscalls`](Self::allow_syscalls); any
    /// other system call kills the worker (`SIGSYS`).
    ///
    /// On architectures where seccompiler builds no filter (i686, armv7:
    /// [`SECCOMP_AVAILABLE`](super::SECCOMP_AVAILABLE) is false),
    /// [`spawn`](super::WorkerCommand::spawn) fails with
    /// [`Error::SeccompUnavailable`](crate::Error::SeccompUnavailable) for
    /// a profile with this step, before it starts anything: never a worker
    /// silently left unfiltered. The other steps work there.
    ///
    /// The filter is built (with seccompiler) and installed by the worker
    /// in [`take_channel`](super::take_channel), after `exec` and before it
    /// reads its first message. Installed before `exec`, it would have to
    /// allow `execve` (and whatever the dynamic loader does) for ever
    /// after: a compromised worker could then `exec` anything. The price:
    /// only a worker that calls `take_channel` is filtered, which a worker
    /// built on this crate does before it touches untrusted data; the
    /// pipeline can check with [`Worker::is_seccomp_filtered`](super::Worker::is_seccomp_filtered).
    /// The allowlist travels in the environment variable
    /// [`CHANNEL_ENV`](super::CHANNEL_ENV).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::none().seccomp(true);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn seccomp(mut self, on: bool) -> Self {
        self.seccomp = on;
        self
    }

    /// Landlock: the worker denies itself every file-system access (open,
    /// read, write, execute, create, remove, ... any path), TCP `bind` and
    /// `connect` (Landlock ABI 4), and signals and abstract Unix sockets
    /// outside its own domain (ABI 6): a ruleset that handles every right
    /// the kernel knows and allows none. Refused calls fail with `EACCES`
    /// or `EPERM` instead of killing the worker. Installed by the worker
    /// in [`take_channel`](super::take_channel), before the seccomp filter
    /// (installed before `exec`, it would deny the `exec`), on the calling
    /// thread: take the channel before starting threads. Not in
    /// [`strict`](Self::strict): kernels without Landlock refuse it
    /// ([`Error::LandlockUnavailable`](crate::Error::LandlockUnavailable)).
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::strict().landlock(true);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn landlock(mut self, on: bool) -> Self {
        self.landlock = on;
        self
    }

    /// Adds system calls (numbers, `libc::SYS_*` of the target
    /// architecture) to the seccomp allowlist.
    ///
    /// # Example
    ///
    /// ```
    /// let profile = ipc_unixsocket::worker::Confinement::strict()
    ///     .allow_syscalls(&[libc::SYS_ioctl]);
    /// # drop(profile);
    /// ```
    #[must_use]
    pub fn allow_syscalls(mut self, syscalls: &[libc::c_long]) -> Self {
        self.extra_syscalls.extend_from_slice(syscalls);
        self
    }

    /// What the child needs, built before `fork`.
    pub(crate) fn prepare(&self) -> Prepared {
        let mut prepared = Prepared {
            namespaces: self.namespaces,
            ids: self.ids,
            no_new_privs: self.no_new_privs,
            limits: [
                (Resource::Nofile, self.open_files),
                (Resource::As, self.address_space),
                (Resource::Core, self.core_size),
            ],
            uid_map: heapless::String::new(),
            gid_map: heapless::String::new(),
        };
        if self.namespaces.contains(Namespaces::USER) {
            let uid = rustix::process::geteuid().as_raw();
            let gid = rustix::process::getegid().as_raw();
            // 32 bytes hold "4294967295 4294967295 1\n".
            let _ = writeln!(prepared.uid_map, "{uid} {uid} 1");
            let _ = writeln!(prepared.gid_map, "{gid} {gid} 1");
        }
        prepared
    }
}

/// A [`Confinement`] ready for the child: no allocation left to do.
#[derive(Debug)]
pub(crate) struct Prepared {
    namespaces: Namespaces,
    ids: Option<(u32, u32)>,
    no_new_privs: bool,
    limits: [(Resource, Option<u64>); 3],
    uid_map: heapless::String<32>,
    gid_map: heapless::String<32>,
}

impl Prepared {
    /// Runs every step but seccomp, in the child between `fork` and `exec`:
    /// system calls only, no allocation.
    #[allow(unsafe_code)] // unshare: rustix marks it unsafe
    pub(crate) fn apply_in_child(&self) -> Result<(), Errno> {
        if self.namespaces.contains(Namespaces::USER) {
            // SAFETY: the child of `fork` has one thread, so no other
            // thread can observe the change of user namespace.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER)? };
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", self.uid_map.as_bytes())?;
            write_file(c"/proc/self/gid_map", self.gid_map.as_bytes())?;
        }
        let others = UnshareFlags::from_bits_retain(self.namespaces.0) - UnshareFlags::NEWUSER;
        if !others.is_empty() {
            // SAFETY: as above; FILES is never among the flags.
            unsafe { rustix::thread::unshare_unsafe(others)? };
        }
        if self.namespaces.contains(Namespaces::PID) {
            // Returns in the worker only.
            pid_namespace::split()?;
        }
        for (resource, limit) in self.limits {
            if let Some(limit) = limit {
                setrlimit(
                    resource,
                    Rlimit {
                        current: Some(limit),
                        maximum: Some(limit),
                    },
                )?;
            }
        }
        if let Some((uid, gid)) = self.ids {
            rustix::thread::set_thread_groups(&[])?;
            let gid = Gid::from_raw(gid);
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            let uid = Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        }
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
        }
        Ok(())
    }
}

/// The processes of a pid namespace: see [`Namespaces::PID`]. Everything
/// here runs in the child of `fork` (one thread, a copy of the pipeline):
/// raw system calls only, no allocation, no libc function that takes a
/// lock (`fork` would run the `atfork` handlers, which may wait for a lock
/// held by a thread of the pipeline that does not exist here, so the forks
/// are raw `clone` calls).
#[allow(unsafe_code)]
mod pid_namespace {
    use rustix::io::Errno;
    use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions, getpid, setrlimit, waitpid};

    /// Starts init, then the worker; returns in the worker, never in the
    /// supervisor or in init.
    pub(super) fn split() -> Result<(), Errno> {
        // Init holds the write end of this pipe until its parent-death
        // signal is set: the worker starts only once it is.
        let mut ready = [0; 2];
        // SAFETY: pipe2 writes two fds into the array it is given.
        if unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Errno::from_raw_os_error(crate::credentials::errno()));
        }
        let init = fork()?;
        if init == 0 {
            let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
            run_init();
        }
        // SAFETY: both fds are this process's own, from pipe2 above; the
        // read returns 0 (end of file) once init has closed its copy.
        unsafe {
            libc::close(ready[1]);
            let mut byte = 0u8;
            while libc::read(ready[0], (&raw mut byte).cast(), 1) < 0
                && crate::credentials::errno() == libc::EINTR
            {}
            libc::close(ready[0]);
        }
        match fork()? {
            0 => {
                // The worker: it dies with its supervisor.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            }
            worker => supervise(worker, init),
        }
    }

    /// `clone(SIGCHLD)`: a `fork` without libc's `atfork` handlers.
    fn fork() -> Result<i32, Errno> {
        // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child
        // gets a copy of this single-threaded process and returns here.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
        if pid < 0 {
            return Err(Errno::from_raw_os_error(crate::credentials::errno()));
        }
        Ok(pid as i32)
    }

    /// pid 1: keeps the namespace alive and its orphans reaped, and dies
    /// with the supervisor (which takes every process of the namespace
    /// with it). Its parent-death signal is set already.
    fn run_init() -> ! {
        close_from(3);
        // SAFETY: setting a disposition takes integers only; with SIGCHLD
        // ignored the kernel reaps this process's children itself.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        loop {
            let _ = rustix::event::poll(&mut [], None);
        }
    }

    /// The process the pipeline watches: waits for the worker and ends
    /// the way it ended.
    fn supervise(worker: i32, init: i32) -> ! {
        close_from(3);
        // SAFETY: as above; SIGCHLD must not be ignored here, or the
        // worker's status would be lost.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        let status = wait(worker);
        // The namespace goes with the worker; init is reaped here, so no
        // zombie is left to whoever would inherit it.
        if let Some(init) = Pid::from_raw(init) {
            let _ = rustix::process::kill_process(init, Signal::KILL);
        }
        let _ = wait(init);
        let Some(status) = status else { exit(127) };
        if let Some(code) = status.exit_status() {
            exit(code);
        }
        if let Some(signal) = status.terminating_signal() {
            // No core dump: this process is a copy of the pipeline.
            let none = Rlimit {
                current: Some(0),
                maximum: Some(0),
            };
            let _ = setrlimit(Resource::Core, none);
            // SAFETY: a disposition and a mask: integers and a local set.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                let mut all = core::mem::zeroed::<libc::sigset_t>();
                libc::sigfillset(&mut all);
                libc::sigprocmask(libc::SIG_UNBLOCK, &all, core::ptr::null_mut());
            }
            if let Some(signal) = Signal::from_named_raw(signal) {
                let _ = rustix::process::kill_process(getpid(), signal);
            }
        }
        exit(127)
    }

    /// Waits for child `pid` to end (`EINTR` retried).
    fn wait(pid: i32) -> Option<rustix::process::WaitStatus> {
        loop {
            match waitpid(Pid::from_raw(pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => return Some(status),
                Err(Errno::INTR) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// `close_range(first, ~0, 0)`: the channel and std's status pipe
    /// must stay with the worker only.
    fn close_from(first: u32) {
        // SAFETY: close_range takes integers; nothing in this process
        // uses the fds it closes (it never returns to std's code).
        unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    }

    /// `_exit(code)`.
    fn exit(code: i32) -> ! {
        // SAFETY: ends the process without running anything of the
        // pipeline's (no atexit handlers, no buffered output).
        unsafe { libc::_exit(code) }
    }
}

/// Writes `bytes` to the file at `path` with one `write`.
fn write_file(path: &core::ffi::CStr, bytes: &[u8]) -> Result<(), Errno> {
    let fd = open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    write(&fd, bytes)?;
    Ok(())
}
