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

/// The system calls a worker needs to serve typed calls over its channel,
/// measured with `strace -f -c` on a worker answering calls with fds
/// (`tests/worker_process.rs`, `serve` mode; see README.md, "Running the
/// worker"): receiving and sending records, mapping the buffers it was
/// given, the allocator, waiting with `poll` and deadlines, and ending.
///
/// `tgkill` is allowed only on the worker's own pid (so `abort` and a panic
/// report `SIGABRT`, not `SIGSYS`); everything else is refused by killing
/// the worker (`SECCOMP_RET_KILL_PROCESS`, reported as `SIGSYS`).
pub const WORKER_SYSCALLS: &[i64] = &[
    // The channel: records, fds, deadlines, readiness.
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_fcntl,
    libc::SYS_close,
    libc::SYS_clock_gettime,
    // Buffers handed over as fds: mapping them, their size.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_pread64,
    // Memory: the allocator.
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    // Threads of the standard library: locks, signals, exit.
    libc::SYS_futex,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    // Logs on stderr.
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    // Ending.
    libc::SYS_exit,
    libc::SYS_exit_group,
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
