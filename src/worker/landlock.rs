//! Landlock: the worker denies itself the file system (and, where the
//! kernel can, TCP and signals to processes outside its domain).
//!
//! Installed by the worker in [`take_channel`](super::take_channel), after
//! `exec`: a ruleset that handles every access right the kernel knows and
//! allows none. Installed before `exec`, it would deny the `exec` itself.
#![allow(unsafe_code)]

use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

use crate::Error;

/// `landlock_create_ruleset` and `landlock_restrict_self`: the same numbers
/// on every architecture (the kernel's common table); rustix has no
/// wrappers.
const SYS_CREATE_RULESET: libc::c_long = 444;
const SYS_RESTRICT_SELF: libc::c_long = 446;
/// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version.
const CREATE_RULESET_VERSION: libc::c_uint = 1;

/// `struct landlock_ruleset_attr` (ABI 6 and later; earlier ABIs read a
/// prefix of it).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// The Landlock ABI version of the running kernel, `None` without
/// Landlock.
pub(crate) fn abi() -> Option<libc::c_long> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // reads no memory and returns the ABI version (or fails).
    let abi = unsafe {
        libc::syscall(
            SYS_CREATE_RULESET,
            core::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (abi >= 1).then_some(abi)
}

/// Restricts the calling thread (and what it starts): every file-system
/// access right is handled and none allowed; TCP bind and connect too (ABI
/// 4); abstract Unix sockets and signals outside the domain (ABI 6). Sets
/// `no_new_privs` first, as Landlock requires.
pub(crate) fn deny_all() -> Result<(), Error> {
    let abi = abi().ok_or(Error::LandlockUnavailable)?;
    let attr = RulesetAttr {
        // EXECUTE .. MAKE_SYM (ABI 1), REFER (2), TRUNCATE (3), IOCTL_DEV (5).
        handled_access_fs: match abi {
            1 => (1 << 13) - 1,
            2 => (1 << 14) - 1,
            3 | 4 => (1 << 15) - 1,
            _ => (1 << 16) - 1,
        },
        // BIND_TCP, CONNECT_TCP.
        handled_access_net: if abi >= 4 { 0b11 } else { 0 },
        // SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL.
        scoped: if abi >= 6 { 0b11 } else { 0 },
    };
    let size: usize = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    // SAFETY: `attr` is a live `struct landlock_ruleset_attr` of at least
    // `size` bytes; the kernel only reads it. A non-negative result is a
    // new fd that nothing else owns.
    let ruleset = unsafe {
        let fd = libc::syscall(SYS_CREATE_RULESET, &raw const attr, size, 0);
        if fd < 0 {
            return Err(Errno::from_raw_os_error(crate::credentials::errno()).into());
        }
        OwnedFd::from_raw_fd(fd as i32)
    };
    rustix::thread::set_no_new_privs(true)?;
    // SAFETY: integers only; `ruleset` is open for the call.
    let rc = unsafe { libc::syscall(SYS_RESTRICT_SELF, ruleset.as_raw_fd(), 0) };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(crate::credentials::errno()).into());
    }
    Ok(())
}
