//! Why a worker process ended.

use core::fmt;

/// How a worker process ended, as `waitid` reported it.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::worker::ExitReason;
///
/// let crashed = ExitReason::Signaled { signal: libc::SIGSYS, core_dumped: false };
/// assert!(crashed.is_seccomp_kill());
/// assert_eq!(crashed.to_string(), "killed by SIGSYS (a system call outside its seccomp allowlist)");
/// assert_eq!(ExitReason::Exited(3).to_string(), "exited with code 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExitReason {
    /// The worker called `exit` (or returned from `main`) with this code.
    Exited(i32),
    /// A signal ended the worker.
    Signaled {
        /// The signal's number (`libc::SIGKILL`, `libc::SIGSEGV`, ...).
        signal: i32,
        /// The kernel wrote a core dump (`CLD_DUMPED`).
        core_dumped: bool,
    },
}

impl ExitReason {
    /// The exit code, if the worker exited.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::ExitReason;
    ///
    /// assert_eq!(ExitReason::Exited(0).code(), Some(0));
    /// assert_eq!(ExitReason::Signaled { signal: libc::SIGKILL, core_dumped: false }.code(), None);
    /// ```
    #[must_use]
    pub const fn code(&self) -> Option<i32> {
        match self {
            Self::Exited(code) => Some(*code),
            Self::Signaled { .. } => None,
        }
    }

    /// The signal that ended the worker, if one did.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::ExitReason;
    ///
    /// let killed = ExitReason::Signaled { signal: libc::SIGKILL, core_dumped: false };
    /// assert_eq!(killed.signal(), Some(libc::SIGKILL));
    /// ```
    #[must_use]
    pub const fn signal(&self) -> Option<i32> {
        match self {
            Self::Exited(_) => None,
            Self::Signaled { signal, .. } => Some(*signal),
        }
    }

    /// Whether the worker was killed by `SIGSYS`: under a seccomp filter
    /// (`SECCOMP_RET_KILL_PROCESS`), a system call outside the allowlist.
    ///
    /// `waitid` reports only the signal: a `SIGSYS` sent with `kill` looks
    /// the same. Under the filter the only sender left is the worker itself
    /// (`tgkill` on its own pid), so there it means the filter, or a worker
    /// that chose to look like it.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::ExitReason;
    ///
    /// assert!(!ExitReason::Exited(0).is_seccomp_kill());
    /// ```
    #[must_use]
    pub const fn is_seccomp_kill(&self) -> bool {
        matches!(self, Self::Signaled { signal, .. } if *signal == libc::SIGSYS)
    }

    /// Whether the worker exited with code 0.
    ///
    /// # Example
    ///
    /// ```
    /// use ipc_unixsocket::worker::ExitReason;
    ///
    /// assert!(ExitReason::Exited(0).success());
    /// assert!(!ExitReason::Exited(1).success());
    /// ```
    #[must_use]
    pub const fn success(&self) -> bool {
        matches!(self, Self::Exited(0))
    }
}

/// The usual name of signal `signal`, or `None` for one without a name here.
pub(crate) const fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exited with code {code}"),
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                match signal_name(signal) {
                    Some(name) => write!(f, "killed by {name}")?,
                    None => write!(f, "killed by signal {signal}")?,
                }
                if signal == libc::SIGSYS {
                    f.write_str(" (a system call outside its seccomp allowlist)")?;
                }
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::ExitReason;

    #[test]
    fn names_the_signal_and_the_core_dump() {
        let segv = ExitReason::Signaled {
            signal: libc::SIGSEGV,
            core_dumped: true,
        };
        assert_eq!(segv.to_string(), "killed by SIGSEGV (core dumped)");
        let rt = ExitReason::Signaled {
            signal: 40,
            core_dumped: false,
        };
        assert_eq!(rt.to_string(), "killed by signal 40");
    }
}
