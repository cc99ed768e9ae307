//! Helpers shared by the integration tests: fd accounting, raw records that
//! bypass the crate's sender, memfds and fd identity.
#![allow(dead_code)] // each test crate uses a different subset

pub mod platform;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, fstat, memfd_create};
use rustix::io::IoSlice;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};

/// Number of fds this process has open, read from `/proc/self/fd`.
///
/// Left out: the directory handle used for reading (`/proc/...`), and files
/// under `/sys/` that glibc's malloc opens for a moment from whichever
/// thread creates its ninth arena (`/sys/devices/system/cpu/online`), which
/// a count taken meanwhile would see on machines with many cores.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| !target.starts_with("/proc/") && !target.starts_with("/sys/"))
        .count()
}

/// Sends `bytes` as one raw record with `fds` in one SCM_RIGHTS message,
/// bypassing the crate's sender (and its header).
pub fn send_raw(socket: impl AsFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("raw sendmsg");
    assert_eq!(sent, bytes.len());
}

/// A v1 header for `data_len` bytes and `fd_count` fds.
pub fn header(fd_count: u8, data_len: u32) -> [u8; 8] {
    ipc_unixsocket::Header { fd_count, data_len }.encode()
}

/// A close-on-exec memfd holding `contents`, offset rewound to 0.
pub fn memfd(contents: &[u8]) -> OwnedFd {
    let fd = memfd_create("ipc-test", MemfdFlags::CLOEXEC).expect("memfd_create");
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).expect("write memfd");
    file.seek(SeekFrom::Start(0)).expect("rewind memfd");
    OwnedFd::from(file)
}

/// The whole contents of a memfd (or any seekable fd), read from offset 0.
pub fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    file.seek(SeekFrom::Start(0)).expect("rewind");
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).expect("read");
    contents
}

/// `(st_dev, st_ino)`: two fds with the same identity name the same file.
pub fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = fstat(fd).expect("fstat");
    (stat.st_dev, stat.st_ino)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialises the tests of one test binary. Tests run on parallel threads
/// and `/proc/self/fd` counts the whole process, so every test in a file
/// that counts fds takes this guard first.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
