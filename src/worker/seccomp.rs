//! The seccomp-bpf allowlist of a confined worker, and its filter.
//!
//! The filter is built with seccompiler (rules as data, compiled to BPF by
//! a well-kept crate, no hand-written BPF) and installed by the worker
//! itself in [`take_channel`](super::take_channel), after `exec` and before
//! it reads its first message: see [`Confinement::seccomp`](super::Confinement::seccomp)
//! for why it is not installed between `fork` and `exec`.
//!
//! seccompiler builds filters for x86_64 and aarch64 (and riscv64, which
//! this crate does not test): there the allowlist is written out per
//! architecture. On i686 and armv7 there is no filter, and asking for one
//! fails with [`Error::SeccompUnavailable`], at `spawn` and in
//! `take_channel`.

extern crate std;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::collections::BTreeMap;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::vec::Vec;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::Error;

/// The system calls a worker needs to serve typed calls over its channel,
/// on this architecture (x86_64 and aarch64: seccompiler builds filters
/// for these; elsewhere there is no list, and the seccomp step fails with
/// [`Error::SeccompUnavailable`]).
///
/// Measured on x86_64 with `strace -f` on the `serve` worker of
/// `tests/worker_process.rs` (a `Responder` mapping a pool of four memfd
/// buffers and answering 200 calls, then a crash) from the moment its
/// filter is installed: `recvmsg`, `sendmsg`, `close`, `fcntl`, `mmap`,
/// `munmap`, `setsockopt` (`SO_PASSCRED`, to tell a 0-byte record from a
/// hang-up), `sigaltstack` and `exit_group`; `rt_sigaction` and
/// `rt_sigreturn` on a crash. The rest is what the same worker needs on
/// paths that run was spared: `getsockopt` (`SO_LINGER` of an fd the crate
/// closes for it: one its handler left unclaimed, or one of a rejected
/// record), waiting with a deadline (`poll`, `ppoll`,
/// `clock_gettime` where the vDSO is missing), the allocator growing and
/// shrinking (`brk`, `mremap`, `madvise`), a lock under contention
/// (`futex`; `sched_yield`, which the defmt logger spins with), a panic or an `abort` (`write` to stderr, `getpid`,
/// `gettid`, `rt_sigprocmask`, and `tgkill` on its own pid only), a
/// buffer's size (`fstat`), and ending (`exit`).
///
/// On aarch64 the same needs, in that architecture's system calls (not
/// measured there: see `docs/seccomp-allowlist.md`): it has no `poll`
/// (rustix waits with `ppoll` on every 64-bit target, and glibc's `poll`
/// is a `ppoll` there), and the rest have the same names; `fstat` is
/// rustix's (`__NR_fstat`, which aarch64 has).
///
/// Not in it, on purpose: `openat` and every other path call, `socket`,
/// `connect`, `execve`, `clone`/`fork`, `kill`, `ptrace`,
/// `process_vm_readv`, `mprotect` (no page becomes executable), `ioctl`.
/// Anything outside the list kills the worker
/// (`SECCOMP_RET_KILL_PROCESS`, reported as `SIGSYS`).
///
/// # Example
///
/// ```
/// use ipc_unixsocket::worker::WORKER_SYSCALLS;
///
/// assert!(WORKER_SYSCALLS.contains(&libc::SYS_recvmsg));
/// assert!(!WORKER_SYSCALLS.contains(&libc::SYS_openat));
/// ```
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub const WORKER_SYSCALLS: &[libc::c_long] = &[
    // Measured while serving calls.
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_setsockopt,
    // `SO_LINGER` of every fd the crate closes for the worker (unclaimed,
    // or in a rejected record): not in the measured run, which sent none.
    libc::SYS_getsockopt,
    libc::SYS_sigaltstack,
    libc::SYS_exit_group,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    // Waiting with a deadline (aarch64 has no `poll`).
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_clock_gettime,
    // The allocator and locks.
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    // A panic or an abort, reported as such.
    libc::SYS_write,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rt_sigprocmask,
    // A buffer's size; ending a thread.
    libc::SYS_fstat,
    libc::SYS_exit,
];

/// Whether this build can confine a worker with a seccomp filter: true on
/// x86_64 and aarch64, where seccompiler builds filters and
/// `WORKER_SYSCALLS` is written out; false elsewhere (i686, armv7), where
/// [`WorkerCommand::spawn`](super::WorkerCommand::spawn) refuses a
/// [`Confinement`](super::Confinement) with the seccomp step
/// ([`Error::SeccompUnavailable`]) rather than start a worker without it.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::Error;
/// use ipc_unixsocket::worker::{Confinement, SECCOMP_AVAILABLE, WorkerCommand};
///
/// // The strict profile where there is a filter to install; where there is
/// // none, the same profile without it, chosen in so many words.
/// let profile = Confinement::strict().seccomp(SECCOMP_AVAILABLE);
/// # drop(profile);
/// if !SECCOMP_AVAILABLE {
///     // Asked for anyway: refused before anything starts.
///     let mut command = WorkerCommand::new("true");
///     command.confine(Confinement::none().seccomp(true));
///     assert_eq!(command.spawn::<1>().unwrap_err(), Error::SeccompUnavailable);
/// }
/// ```
pub const SECCOMP_AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Builds the filter ([`WORKER_SYSCALLS`], `extra`, and `tgkill` on this
/// process only; anything else kills the process) and installs it on every
/// thread.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn confine(extra: &[libc::c_long]) -> Result<(), Error> {
    let program = build(extra, rustix::process::getpid().as_raw_nonzero().get())?;
    install(&program)
}

/// No filter can be built here: the seccomp step fails, typed.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn confine(_extra: &[libc::c_long]) -> Result<(), Error> {
    Err(Error::SeccompUnavailable)
}

/// Builds the filter: [`WORKER_SYSCALLS`], `extra`, and `tgkill` on `pid`
/// only; anything else kills the process.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn build(extra: &[libc::c_long], pid: i32) -> Result<BpfProgram, Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = WORKER_SYSCALLS
        .iter()
        .chain(extra)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let own_pid = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        u64::from(pid.unsigned_abs()),
    )
    .map_err(|_| Error::SeccompUnavailable)?;
    rules.insert(
        libc::SYS_tgkill,
        std::vec![SeccompRule::new(std::vec![own_pid]).map_err(|_| Error::SeccompUnavailable)?],
    );
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|_| Error::SeccompUnavailable)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|_| Error::SeccompUnavailable)?;
    filter.try_into().map_err(|_| Error::SeccompUnavailable)
}

/// Sets `no_new_privs` and installs `program` on every thread of the
/// process (`SECCOMP_FILTER_FLAG_TSYNC`).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn install(program: &BpfProgram) -> Result<(), Error> {
    seccompiler::apply_filter_all_threads(program).map_err(|error| match error {
        seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => {
            Error::Os(rustix::io::Errno::from_io_error(&io).unwrap_or(rustix::io::Errno::INVAL))
        }
        _ => Error::SeccompUnavailable,
    })
}
