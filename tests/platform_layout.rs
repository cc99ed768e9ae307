//! The premises of `tests/common/platform.rs`, checked against the kernel on
//! the target: how many fds a receiver's control buffer takes (its capacity
//! plus the room for credentials and the alignment slack, while no
//! credentials arrive) and when `MSG_CTRUNC` is set, and how
//! `/proc/self/task/TID/syscall` names a thread blocked in the crate's
//! socket calls. The slack and truncation tests elsewhere derive their
//! expected outcomes from these helpers, so a wrong helper fails here first.

mod common;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{header, platform, send_raw};
use ipc_unixsocket::{Channel, Received};
use rustix::io::IoSliceMut;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

/// Receives one record with a raw `recvmsg` into a control buffer of
/// `CMSG_SPACE(12) + CMSG_SPACE(4 * capacity)` bytes, as the crate's
/// (`platform::control_space`): the fds installed and `MSG_CTRUNC`.
fn raw_delivery(socket: impl AsFd, capacity: usize) -> (usize, bool) {
    // u64s so that the buffer starts aligned for `cmsghdr` on every target,
    // and rustix's alignment takes nothing off its length.
    let space = platform::control_space(capacity);
    let mut words = vec![MaybeUninit::<u64>::uninit(); space.div_ceil(8)];
    // SAFETY: the same allocation viewed as bytes; MaybeUninit has no
    // validity requirement and u8 no alignment requirement.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<MaybeUninit<u8>>(), space)
    };
    let mut control = RecvAncillaryBuffer::new(bytes);
    let mut data = [0u8; 16];
    let msg = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("raw recvmsg");
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    (fds.len(), msg.flags.contains(ReturnFlags::CTRUNC))
}

#[test]
fn the_kernel_installs_what_the_layout_predicts() {
    let devnull = std::fs::File::open("/dev/null").expect("open /dev/null");
    let (writer, reader) = Channel::<1>::pair().expect("socketpair");
    for capacity in [0, 1, 2, 3, 4, 5, 7, 8, 252, 253] {
        let slack = platform::slack(capacity);
        // The room for credentials, CMSG_SPACE(12), holds fds while no
        // credentials arrive. 64-bit: a 16-byte cmsghdr and 8-byte
        // alignment, so that room is 32 bytes (8 fds), and one fd of
        // alignment slack past an odd capacity; 32-bit: a 12-byte cmsghdr
        // and 4-byte alignment, 24 bytes (6 fds), no alignment slack.
        let expected_slack = if cfg!(target_pointer_width = "64") {
            8 + capacity % 2
        } else {
            6
        };
        assert_eq!(slack, expected_slack, "slack of capacity {capacity}");
        let most = ipc_unixsocket::MAX_FDS_PER_MESSAGE;
        let around = (1..=capacity + slack + 3).filter(|&n| n <= most && n + 3 > capacity);
        for sent in around {
            let fds: Vec<BorrowedFd<'_>> = (0..sent).map(|_| devnull.as_fd()).collect();
            send_raw(&writer, &header(0, 0), &fds);
            assert_eq!(
                raw_delivery(&reader, capacity),
                platform::delivery(sent, capacity),
                "{sent} fds into CMSG_SPACE(12) + CMSG_SPACE(4 * {capacity})"
            );
        }
    }
}

/// Waits up to 10 s until thread `tid` is blocked in system call `nr` (as
/// `platform::syscall_of` names it). Returns whether it was seen blocked.
fn seen_blocked_in(tid: i32, nr: libc::c_long) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = format!("/proc/self/task/{tid}/syscall");
    while Instant::now() < deadline {
        let line = std::fs::read_to_string(&path).expect("read syscall");
        if platform::syscall_of(&line) == Some(nr) {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

#[test]
fn blocked_recv_is_seen_in_recvmsg_and_recv_timeout_in_ppoll() {
    let (writer, reader) = Channel::<1>::pair().expect("socketpair");
    for (nr, timed) in [(libc::SYS_recvmsg, false), (libc::SYS_ppoll, true)] {
        std::thread::scope(|scope| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let reader = &reader;
            let receiver = scope.spawn(move || {
                tid_tx
                    .send(rustix::thread::gettid().as_raw_nonzero().get())
                    .unwrap();
                let mut data = [0u8; 8];
                let mut fds = heapless::Vec::<OwnedFd, 1>::new();
                if timed {
                    reader.recv_timeout(&mut data, &mut fds, Duration::from_secs(60))
                } else {
                    reader.recv(&mut data, &mut fds)
                }
            });
            let tid = tid_rx.recv().unwrap();
            let seen = seen_blocked_in(tid, nr);
            writer.send(b"wake", &[]).expect("send");
            assert_eq!(
                receiver.join().unwrap(),
                Ok(Received {
                    data_len: 4,
                    fd_count: 0
                })
            );
            assert!(seen, "receiver never seen blocked in system call {nr}");
        });
    }
}

#[test]
fn blocked_send_is_seen_in_sendmsg() {
    let (writer, reader) = Channel::<1>::pair().expect("socketpair");
    let full = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (writer, full) = (&writer, &full);
        let sender = scope.spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            // Fill the socket, then block in one more send.
            while writer.try_send(&[0; 1024], &[]).is_ok() {}
            full.store(true, Ordering::SeqCst);
            writer.send(&[1; 1024], &[])
        });
        let tid = tid_rx.recv().unwrap();
        while !full.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let seen = seen_blocked_in(tid, libc::SYS_sendmsg);
        // Drain until the blocked send's record arrives.
        let mut data = [0u8; 1024];
        let mut fds = heapless::Vec::<OwnedFd, 1>::new();
        loop {
            reader.recv(&mut data, &mut fds).expect("recv");
            if data[0] == 1 {
                break;
            }
        }
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert!(seen, "sender never seen blocked in sendmsg");
    });
}

#[test]
fn blocked_connect_is_seen_in_connect() {
    let name = format!("ipc-platform-layout-{}-connect", std::process::id()).into_bytes();
    let listener = ipc_unixsocket::Listener::<1>::bind_abstract(&name).expect("bind");
    // One queued connection fills a backlog of 0: the next connect waits.
    rustix::net::listen(&listener, 0).expect("listen");
    let _queued = Channel::<1>::connect_abstract(&name).expect("connect");
    std::thread::scope(|scope| {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let name = &name;
        let connector = scope.spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            Channel::<1>::connect_abstract(name)
        });
        let tid = tid_rx.recv().unwrap();
        let seen = seen_blocked_in(tid, libc::SYS_connect);
        // Room in the queue: the waiting connect completes.
        let first = listener.try_accept().expect("accept the queued one");
        let client = connector.join().unwrap().expect("the waiting connect");
        drop((first, client));
        assert!(seen, "connector never seen blocked in connect");
    });
}
