//! The stale-socket race of `Listener::bind`, made deterministic (issue 17:
//! "the stale-socket unlink without the identity re-check: make the race
//! injectable or say it is untested").
//!
//! `bind` on a path where a socket file nobody listens on lies probes it
//! with a `connect`, and removes the file only if that is refused and the
//! file is still the one it probed (same device and inode). Here a seccomp
//! user-notification filter on the binding thread stops the probe's
//! `connect` in the kernel; while it is stopped, the test puts a live
//! listener's socket file at the path, then answers the probe
//! `ECONNREFUSED`. `bind` must see the swap, return `AddressInUse` and
//! leave the live listener's file in place.
//!
//! seccompiler has no user-notification action, so the four-instruction
//! filter is written here by hand. Only where `connect` is its own system
//! call (x86_64, aarch64: not i386, whose rustix goes through
//! `socketcall`).
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ipc_unixsocket::{Error, Listener, Mode};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default)]
struct Notification {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
struct Response {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

/// `SECCOMP_IOCTL_NOTIF_RECV`, `_IOWR('!', 0, struct seccomp_notif)`.
const NOTIF_RECV: libc::c_ulong = 0xC050_2100;
/// `SECCOMP_IOCTL_NOTIF_SEND`, `_IOWR('!', 1, struct seccomp_notif_resp)`.
const NOTIF_SEND: libc::c_ulong = 0xC018_2101;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
const NEW_LISTENER: libc::c_ulong = 1 << 3;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// Installs, on the calling thread, a filter that hands every `connect` to
/// the returned notification fd.
fn stop_connects_on_this_thread() -> OwnedFd {
    let filter = [
        // Load the system call number.
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_connect as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: RET_USER_NOTIF,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at `filter`, both alive for the call; prctl
    // and seccomp read them and return an fd or -1.
    let fd = unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            NEW_LISTENER,
            &raw const program,
        )
    };
    assert!(fd >= 0, "seccomp: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned this new fd, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[test]
fn a_socket_file_swapped_in_after_the_probe_is_not_removed() {
    let dir = std::env::temp_dir().join(format!("ipc-listener-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("daemon.sock");
    // A stale socket file: bound, then closed without unlinking.
    drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
    let live_path = dir.join("live.sock");
    let live = Listener::<0>::bind(&live_path, Mode::from_raw_mode(0o600)).unwrap();
    let live_inode = std::fs::symlink_metadata(&live_path).unwrap().ino();

    let (notify_tx, notify_rx) = mpsc::channel();
    let (bound_tx, bound_rx) = mpsc::channel();
    let binding_path = path.clone();
    let binder = thread::spawn(move || {
        notify_tx.send(stop_connects_on_this_thread()).unwrap();
        let bound = Listener::<0>::bind(&binding_path, Mode::from_raw_mode(0o600));
        // A listener bound against the rule would remove the file on drop:
        // keep it out of the picture.
        bound_tx.send(bound.map(std::mem::forget)).unwrap();
    });
    let notify = notify_rx.recv().unwrap();

    // The probe's connect arrives within seconds, or the test fails.
    let mut watch = [PollFd::new(&notify, PollFlags::IN)];
    let five = Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    assert_eq!(poll(&mut watch, Some(&five)).unwrap(), 1, "no probe");
    let mut stopped = Notification::default();
    // SAFETY: `stopped` is a live `struct seccomp_notif` the kernel fills.
    let rc = unsafe { libc::ioctl(notify.as_raw_fd(), NOTIF_RECV, &raw mut stopped) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(stopped.nr as libc::c_long, libc::SYS_connect);

    // While the probe is stopped, a live listener's file takes the path.
    let swap = dir.join("swap.sock");
    std::fs::hard_link(&live_path, &swap).unwrap();
    std::fs::rename(&swap, &path).unwrap();
    let refused = Response {
        id: stopped.id,
        val: 0,
        error: -libc::ECONNREFUSED,
        flags: 0,
    };
    // SAFETY: `refused` is a live `struct seccomp_notif_resp` the kernel
    // reads.
    let rc = unsafe { libc::ioctl(notify.as_raw_fd(), NOTIF_SEND, &raw const refused) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());

    let bound = bound_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("bind did not return");
    binder.join().unwrap();
    let at_path = std::fs::symlink_metadata(&path).map(|m| m.ino()).ok();
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(bound, Err(Error::AddressInUse));
    assert_eq!(
        at_path,
        Some(live_inode),
        "the live listener's socket file was removed"
    );
}
