//! What the tests need to know about the target's control messages and
//! system calls, derived from the C library and the kernel's rules rather
//! than from 64-bit constants.
//!
//! A receiver's control buffer (src/cmsg.rs) is `CMSG_SPACE(12)`, room for
//! an `SCM_CREDENTIALS` message, plus `CMSG_SPACE(4 * N)` for `N` fds. While
//! no credentials arrive (`SO_PASSCRED` off), the kernel may fill all of it
//! with fds, more than `N`: on 64-bit Linux `struct cmsghdr` is 16 bytes and
//! control messages are aligned to 8 (room for 8 fds in the credentials'
//! room, and one more past an odd `N`, the alignment slack); on 32-bit
//! Linux the header is 12 bytes and the alignment 4 (room for 6, no slack).
//! Fds past that room are cut off with `MSG_CTRUNC`.

use std::ffi::c_int;
use std::mem::size_of;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// `CMSG_SPACE(len)` of the target, from the C library.
pub fn cmsg_space(len: usize) -> usize {
    let len = u32::try_from(len).expect("small control message");
    // SAFETY: CMSG_SPACE is a pure computation on its argument.
    usize::try_from(unsafe { libc::CMSG_SPACE(len) }).expect("fits usize")
}

/// `CMSG_LEN(len)` of the target, from the C library.
pub fn cmsg_len(len: usize) -> usize {
    let len = u32::try_from(len).expect("small control message");
    // SAFETY: CMSG_LEN is a pure computation on its argument.
    usize::try_from(unsafe { libc::CMSG_LEN(len) }).expect("fits usize")
}

/// The most fds the kernel installs from one `SCM_RIGHTS` message into a
/// control buffer of `space` bytes: whole ints after the header
/// (`CMSG_LEN(0)`), as `scm_detach_fds` counts them.
pub fn fds_fitting_in(space: usize) -> usize {
    space.saturating_sub(cmsg_len(0)) / size_of::<c_int>()
}

/// The bytes of a receiver's control buffer for capacity `capacity`: room
/// for an `SCM_CREDENTIALS` message (`CMSG_SPACE(12)`) and for `capacity`
/// fds (`CMSG_SPACE(4 * capacity)`).
pub fn control_space(capacity: usize) -> usize {
    cmsg_space(size_of::<libc::ucred>()) + cmsg_space(capacity * size_of::<c_int>())
}

/// The most fds a receiver of capacity `capacity` gets from the kernel
/// while no credentials arrive (`SO_PASSCRED` off): the capacity plus the
/// credentials' room and the alignment slack.
pub fn fds_fitting(capacity: usize) -> usize {
    fds_fitting_in(control_space(capacity))
}

/// The fds the kernel delivers past `capacity` without `MSG_CTRUNC` while
/// no credentials arrive: the credentials' room (8 fds on 64-bit, 6 on
/// 32-bit) plus one for an odd capacity on 64-bit.
pub fn slack(capacity: usize) -> usize {
    fds_fitting(capacity) - capacity
}

/// What the kernel does with one record carrying `sent` fds for a receiver
/// of capacity `capacity`, while no credentials arrive: `(installed,
/// MSG_CTRUNC)`.
pub fn delivery(sent: usize, capacity: usize) -> (usize, bool) {
    let fit = fds_fitting(capacity);
    (sent.min(fit), sent > fit)
}

/// The system call a `/proc/self/task/TID/syscall` line names, as the
/// target's `libc::SYS_*` number of the direct call, or `None` when the
/// thread is not in a system call.
///
/// Where rustix makes socket calls through `socketcall(2)` (i386), the line
/// names `SYS_socketcall` with the sub-call in the first argument; that is
/// mapped to the direct call (`SYS_CONNECT` to `SYS_connect`, `SYS_SENDMSG`
/// to `SYS_sendmsg`, `SYS_RECVMSG` to `SYS_recvmsg`, `SYS_ACCEPT4` to
/// `SYS_accept4`). On 32-bit targets `ppoll_time64` is named `SYS_ppoll`.
pub fn syscall_of(line: &str) -> Option<libc::c_long> {
    let mut fields = line.split_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    #[cfg(target_arch = "x86")]
    if nr == libc::SYS_socketcall {
        let arg = fields.next()?.trim_start_matches("0x");
        // linux/net.h: SYS_CONNECT 3, SYS_SENDMSG 16, SYS_RECVMSG 17,
        // SYS_ACCEPT4 18.
        return match libc::c_long::from_str_radix(arg, 16).ok()? {
            3 => Some(libc::SYS_connect),
            16 => Some(libc::SYS_sendmsg),
            17 => Some(libc::SYS_recvmsg),
            18 => Some(libc::SYS_accept4),
            _ => Some(nr),
        };
    }
    // `ppoll_time64`: 414 on every 32-bit architecture (libc does not name
    // it for all of them).
    #[cfg(target_pointer_width = "32")]
    if nr == 414 {
        return Some(libc::SYS_ppoll);
    }
    Some(nr)
}

/// The soft `RLIMIT_NOFILE` lowered so that exactly `free` more fds can be
/// opened in this process, until dropped (which restores it).
///
/// The kernel gives a new fd the lowest free number below the limit, so
/// the limit is set just past the `free`-th free number. A receive that
/// installs a record's fds stops at the first that no longer fits (`EMFILE`
/// inside `scm_detach_fds`) and sets `MSG_CTRUNC`: a record of more than
/// `free` fds arrives truncated within any capacity, whatever room the
/// control buffer has. Take it under `common::serial()`, after every
/// fd the test needs is open: nothing else may open fds while it lives.
/// Neither taking nor dropping it allocates.
#[must_use = "the limit is restored when this is dropped"]
pub struct FdLimit {
    previous: Rlimit,
}

impl FdLimit {
    pub fn leaving(free: usize) -> Self {
        let previous = getrlimit(Resource::Nofile);
        let mut found = 0;
        let mut fd: c_int = 0;
        while found < free {
            // SAFETY: F_GETFD only reads the flags of whatever fd has this
            // number, or fails with EBADF when none has.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                found += 1;
            }
            fd += 1;
        }
        let limit = Rlimit {
            current: Some(u64::try_from(fd).expect("non-negative")),
            maximum: previous.maximum,
        };
        assert!(
            previous
                .current
                .is_none_or(|current| current >= limit.current.unwrap()),
            "RLIMIT_NOFILE {previous:?} is already below {limit:?}"
        );
        setrlimit(Resource::Nofile, limit).expect("lower RLIMIT_NOFILE");
        Self { previous }
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        setrlimit(Resource::Nofile, self.previous).expect("restore RLIMIT_NOFILE");
    }
}
