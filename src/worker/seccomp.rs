//! The seccomp-bpf allowlist of a confined worker, and its filter.
//!
//! The filter is built with seccompiler (rules as data, compiled to BPF by
//! a well-kept crate, no hand-written BPF) and installed by the worker
//! itself in [`take_channel`](super::take_channel), after `exec` and before
//! it reads its first message: see [`Confinement::seccomp`](super::Confinement::seccomp)
//! for why it is not installed between `fork` and `exec`.

extern crate std;

use std::collections::BTreeMap;
use std::vec::Vec;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::Error;

/// The system calls a worker needs to serve typed calls over its channel.
///
/// Measured with `strace -f` on the `serve` worker of
/// `tests/worker_process.rs` (a `Responder` mapping a pool of four memfd
/// buffers and answering 200 calls, then a crash) from the moment its
/// filter is installed: `recvmsg`, `sendmsg`, `close`, `fcntl`, `mmap`,
/// `munmap`, `setsockopt` (`SO_PASSCRED`, to tell a 0-byte record from a
/// hang-up), `sigaltstack` and `exit_group`; `rt_sigaction` and
/// `rt_sigreturn` on a crash. The rest is what the same worker needs on
/// paths that run was spared: waiting with a deadline (`poll`, `ppoll`,
/// `clock_gettime` where the vDSO is missing), the allocator growing and
/// shrinking (`brk`, `mremap`, `madvise`), a lock under contention
/// (`futex`; `sched_yield`, which the defmt logger spins with), a panic or an `abort` (`write` to stderr, `getpid`,
/// `gettid`, `rt_sigprocmask`, and `tgkill` on its own pid only), a
/// buffer's size (`fstat`), and ending (`exit`).
///
/// Not in it, on purpose: `openat` and every other path call, `socket`,
/// `connect`, `execve`, `clone`/`fork`, `kill`, `ptrace`,
/// `process_vm_readv`, `mprotect` (no page becomes executable), `ioctl`.
/// Anything outside the list kills the worker
/// (`SECCOMP_RET_KILL_PROCESS`, reported as `SIGSYS`).
pub const WORKER_SYSCALLS: &[i64] = &[
    // Measured while serving calls.
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_setsockopt,
    libc::SYS_sigaltstack,
    libc::SYS_exit_group,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    // Waiting with a deadline.
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

/// Builds the filter: [`WORKER_SYSCALLS`], `extra`, and `tgkill` on `pid`
/// only; anything else kills the process.
pub(crate) fn build(extra: &[i64], pid: i32) -> Result<BpfProgram, Error> {
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

/// Sets `no_new_privs` and installs `program` on every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`).
pub(crate) fn install(program: &BpfProgram) -> Result<(), Error> {
    seccompiler::apply_filter_all_threads(program).map_err(|error| match error {
        seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => {
            Error::Os(rustix::io::Errno::from_io_error(&io).unwrap_or(rustix::io::Errno::INVAL))
        }
        _ => Error::SeccompUnavailable,
    })
}
