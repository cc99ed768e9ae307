//! The peer's credentials (`SO_PEERCRED`), read so that every answer the
//! kernel gives is a value: a pid the kernel reports as 0 (the peer's
//! process is not visible in this pid namespace) is `None`, not an error
//! and not an invalid value.
//!
//! This is the one system call the crate does not make through rustix:
//! rustix reads `SO_PEERCRED` straight into its `UCred`, whose pid is a
//! non-zero type, so the kernel's answer for a peer in another pid
//! namespace is an invalid value there (it surfaces as a bogus error). It
//! has no `getsockopt` that takes a plain buffer, so the option is read
//! here with `libc::getsockopt` into `libc::ucred`, whose fields are plain
//! integers.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::size_of;

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::Errno;
use rustix::process::{Gid, Pid, Uid};

use crate::Error;

/// Who the peer of a socket is: the pid, uid and gid the kernel recorded
/// when the sockets were connected (`SO_PEERCRED`).
///
/// The uid and gid are those of the peer's process at `connect` (or
/// `socketpair`) time, mapped into this process's user namespace (65534,
/// the overflow id, when they have no mapping here). The pid is `None` when
/// the peer's process is not visible from this process's pid namespace:
/// a listener in a container with a client outside it, or a worker started
/// in a new pid namespace asking about the pipeline. The pid may also name
/// another process by the time it is read, if the peer has exited.
///
/// # Example
///
/// ```
/// use ipc_unixsocket::{Channel, Credentials};
///
/// let (a, _b) = Channel::<0>::pair()?;
/// let Credentials { pid, uid, .. } = a.peer_credentials()?;
/// assert_eq!(pid, Some(rustix::process::getpid()));
/// assert_eq!(uid, rustix::process::getuid());
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The peer's process, or `None` when it is not visible in this pid
    /// namespace (the kernel reports pid 0).
    pub pid: Option<Pid>,
    /// The peer's user id.
    pub uid: Uid,
    /// The peer's group id.
    pub gid: Gid,
}

/// `pid 1234 uid 0 gid 0`, or `pid (not visible) uid 0 gid 0`.
///
/// # Example
///
/// ```
/// let (a, _b) = ipc_unixsocket::Channel::<0>::pair()?;
/// let shown = a.peer_credentials()?.to_string();
/// assert!(shown.starts_with(&format!("pid {} ", std::process::id())));
/// # Ok::<(), ipc_unixsocket::Error>(())
/// ```
impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {}", pid.as_raw_nonzero())?,
            None => f.write_str("pid (not visible)")?,
        }
        write!(f, " uid {} gid {}", self.uid.as_raw(), self.gid.as_raw())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Credentials {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "pid {=i32} uid {=u32} gid {=u32}",
            self.pid.map_or(0, |pid| pid.as_raw_nonzero().get()),
            self.uid.as_raw(),
            self.gid.as_raw()
        );
    }
}

/// Reads `SO_PEERCRED` of `socket`.
pub(crate) fn peer_credentials(socket: impl AsFd) -> Result<Credentials, Error> {
    let fd = socket.as_fd().as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live, writable `libc::ucred` of `len` bytes and
    // `len` a live `socklen_t`; the kernel writes at most `len` bytes into
    // `cred` (plain integers, valid for any bit pattern) and the new length
    // into `len`. `fd` is borrowed from `socket` for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(errno()).into());
    }
    if len as usize != size_of::<libc::ucred>() {
        return Err(Errno::INVAL.into());
    }
    Ok(Credentials {
        pid: Pid::from_raw(cred.pid),
        uid: Uid::from_raw(cred.uid),
        gid: Gid::from_raw(cred.gid),
    })
}

/// The calling thread's `errno`, right after a failed libc call.
pub(crate) fn errno() -> i32 {
    // SAFETY: `__errno_location` returns a valid pointer to the calling
    // thread's errno, readable for the thread's lifetime.
    unsafe { *libc::__errno_location() }
}
