//! Valid messages through the crate's own sender and receiver.
//!
//! The input (read through `arbitrary`) picks a channel capacity and a
//! sequence of messages, each with up to 256 data bytes (the buffers' size) and up to the
//! capacity's fds, a direction, a send method (`send`, `try_send`,
//! `Payload::send`) and a receive method (`recv`, `try_recv`, `recv_timeout`,
//! `Payload::recv`, `Payload::try_recv`). Messages queue up (at most 8 per
//! direction) until a step flushes them. What comes out must equal what went
//! in: the data, and the fds in order by identity (`st_dev`, `st_ino`), each
//! close-on-exec; afterwards nothing is left queued and the process holds
//! exactly as many fds as before the input.
#![no_main]

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::Arbitrary;
use heapless::Vec as StackVec;
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};
use ipc_unixsocket_fuzz::{Fixtures, MAX_RAW_FDS, identity, is_cloexec, open_fds};
use libfuzzer_sys::fuzz_target;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

const DATA: usize = 256;
const MAX_STEPS: usize = 32;
const MAX_QUEUED: usize = 8;

#[derive(Arbitrary, Debug)]
struct Input {
    capacity: Capacity,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Capacity {
    Zero,
    One,
    Two,
    Three,
    Four,
    Seven,
    Sixteen,
}

#[derive(Arbitrary, Debug)]
struct Step {
    data: Data,
    /// Fixture picks: `% 13`, 0..12 a memfd, 12 `/dev/null`.
    fds: Vec<u8>,
    backwards: bool,
    send: SendVia,
    recv: RecvVia,
    flush: bool,
}

/// The data of a message: spelled out, or generated so that long messages
/// (up to the full 256 bytes) are cheap to reach.
#[derive(Arbitrary, Debug)]
enum Data {
    Bytes(Vec<u8>),
    /// `len % 257` bytes counting up from `first`.
    Counting {
        first: u8,
        len: u16,
    },
    /// Exactly 256 bytes counting up from `first`.
    Full {
        first: u8,
    },
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        let counting = |first: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| first.wrapping_add(i.to_le_bytes()[0]))
                .collect()
        };
        match *self {
            Self::Bytes(ref bytes) => bytes[..bytes.len().min(DATA)].to_vec(),
            Self::Counting { first, len } => counting(first, usize::from(len) % (DATA + 1)),
            Self::Full { first } => counting(first, DATA),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum SendVia {
    Send,
    TrySend,
    Frame,
    Payload,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RecvVia {
    Recv,
    TryRecv,
    RecvTimeout,
    Frame,
    FrameTimeout,
    Payload,
    PayloadTry,
}

/// A message in flight: what must come out, and how it is to be read.
struct Queued {
    data: Vec<u8>,
    ids: Vec<(u64, u64)>,
    via: RecvVia,
}

fuzz_target!(|input: Input| {
    let fixtures = Fixtures::get();
    let baseline = open_fds();
    match input.capacity {
        Capacity::Zero => run::<0>(fixtures, &input.steps),
        Capacity::One => run::<1>(fixtures, &input.steps),
        Capacity::Two => run::<2>(fixtures, &input.steps),
        Capacity::Three => run::<3>(fixtures, &input.steps),
        Capacity::Four => run::<4>(fixtures, &input.steps),
        Capacity::Seven => run::<7>(fixtures, &input.steps),
        Capacity::Sixteen => run::<16>(fixtures, &input.steps),
    }
    assert_eq!(
        open_fds(),
        baseline,
        "the process's fd count changed: an fd leaked or was closed twice"
    );
});

fn pick(fixtures: &Fixtures, pick: u8) -> BorrowedFd<'_> {
    match usize::from(pick) % (MAX_RAW_FDS + 1) {
        MAX_RAW_FDS => fixtures.devnull.as_fd(),
        i => fixtures.memfds[i].as_fd(),
    }
}

fn run<const N: usize>(fixtures: &Fixtures, steps: &[Step]) {
    let (a, b) = Channel::<N>::pair().expect("socketpair");
    // Queues of messages sent from a to b, and from b to a.
    let mut queues = [VecDeque::new(), VecDeque::new()];
    for step in steps.iter().take(MAX_STEPS) {
        let data = step.data.bytes();
        let fds: Vec<BorrowedFd<'_>> = step
            .fds
            .iter()
            .take(N)
            .map(|&i| pick(fixtures, i))
            .collect();
        let (sender, receiver, queue) = if step.backwards {
            (&b, &a, &mut queues[1])
        } else {
            (&a, &b, &mut queues[0])
        };
        send(sender, &data, &fds, step.send);
        queue.push_back(Queued {
            data,
            ids: fds.iter().map(identity).collect(),
            via: step.recv,
        });
        if step.flush || queue.len() >= MAX_QUEUED {
            drain(receiver, queue);
        }
    }
    let [forwards, backwards] = &mut queues;
    drain(&b, forwards);
    drain(&a, backwards);
    for end in [&a, &b] {
        let mut data = [0u8; DATA];
        let mut fds = StackVec::<OwnedFd, N>::new();
        assert_eq!(end.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
    }
}

fn send<const N: usize>(sender: &Channel<N>, data: &[u8], fds: &[BorrowedFd<'_>], via: SendVia) {
    match via {
        SendVia::Send => sender.send(data, fds).expect("send"),
        SendVia::TrySend => sender.try_send(data, fds).expect("try_send"),
        SendVia::Frame => {
            let mut frame = vec![0; HEADER_LEN + data.len()];
            frame[HEADER_LEN..].copy_from_slice(data);
            sender.send_frame(&mut frame, fds).expect("send_frame");
        }
        SendVia::Payload => {
            let mut payload = Payload::<{ HEADER_LEN + DATA }, N>::new();
            payload.extend_from_slice(data).expect("data fits");
            for fd in fds {
                let owned = fd.try_clone_to_owned().expect("dup");
                assert!(payload.fds.push(owned).is_ok(), "fds fit");
            }
            payload.send(sender).expect("Payload::send");
        }
    }
}

fn drain<const N: usize>(receiver: &Channel<N>, queue: &mut VecDeque<Queued>) {
    // Reused for every message: each receive must close what the last left.
    let mut data = [0u8; DATA];
    let mut fds = StackVec::<OwnedFd, N>::new();
    let mut frame = [0u8; HEADER_LEN + DATA];
    let mut payload = Payload::<{ HEADER_LEN + DATA }, N>::new();
    while let Some(want) = queue.pop_front() {
        let (got, data, fds): (Received, &[u8], &[OwnedFd]) = match want.via {
            RecvVia::Recv => (
                receiver.recv(&mut data, &mut fds).expect("recv"),
                &data,
                &fds,
            ),
            RecvVia::TryRecv => (
                receiver.try_recv(&mut data, &mut fds).expect("try_recv"),
                &data,
                &fds,
            ),
            RecvVia::RecvTimeout => (
                receiver
                    .recv_timeout(&mut data, &mut fds, Duration::from_secs(60))
                    .expect("recv_timeout"),
                &data,
                &fds,
            ),
            RecvVia::Frame => (
                receiver
                    .recv_frame(&mut frame, &mut fds)
                    .expect("recv_frame"),
                &frame[HEADER_LEN..],
                &fds,
            ),
            RecvVia::FrameTimeout => (
                receiver
                    .recv_frame_timeout(&mut frame, &mut fds, Duration::from_secs(60))
                    .expect("recv_frame_timeout"),
                &frame[HEADER_LEN..],
                &fds,
            ),
            RecvVia::Payload | RecvVia::PayloadTry => {
                let got = if matches!(want.via, RecvVia::Payload) {
                    payload.recv(receiver).expect("Payload::recv")
                } else {
                    payload.try_recv(receiver).expect("Payload::try_recv")
                };
                assert_eq!(payload.data().len(), got.data_len);
                check(got, payload.data(), &payload.fds, &want);
                continue;
            }
        };
        check(got, &data[..got.data_len.min(DATA)], fds, &want);
    }
}

fn check(got: Received, data: &[u8], fds: &[OwnedFd], want: &Queued) {
    assert_eq!(
        got,
        Received {
            data_len: want.data.len(),
            fd_count: want.ids.len(),
        }
    );
    assert_eq!(data, &want.data[..]);
    let ids: Vec<(u64, u64)> = fds.iter().map(identity).collect();
    assert_eq!(ids, want.ids, "fd identities, in order");
    assert!(fds.iter().all(is_cloexec), "received fds are close-on-exec");
}
