//! Property tests of valid messages through the crate's own sender and
//! receiver over a real socket pair, mirroring the `roundtrip` fuzz target so
//! that a plain `cargo test` on stable exercises the same properties: what
//! comes out equals what went in (data, and fds in order by identity, each
//! close-on-exec), nothing is left queued, and no fd leaks.

mod common;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Watchdog, identity, memfd, open_fds, serial};
use ipc_unixsocket::{Channel, Error, HEADER_LEN, Payload, Received};
use proptest::prelude::*;
use rustix::io::{FdFlags, fcntl_getfd};

/// Size of every data buffer, and so the largest message.
const DATA: usize = 256;
/// Messages queued in one direction before they are read.
const MAX_QUEUED: usize = 8;

/// Distinct files to send: six memfds and `/dev/null`. Created once, before
/// any fd baseline is taken.
fn fixtures() -> &'static [OwnedFd] {
    static FIXTURES: OnceLock<Vec<OwnedFd>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mut files: Vec<OwnedFd> = (0..6u8).map(|i| memfd(&[i; 3])).collect();
        files.push(
            std::fs::File::open("/dev/null")
                .expect("open /dev/null")
                .into(),
        );
        files
    })
}

#[derive(Debug, Clone, Copy)]
enum SendVia {
    Send,
    TrySend,
    Frame,
    Payload,
}

#[derive(Debug, Clone, Copy)]
enum RecvVia {
    Recv,
    TryRecv,
    RecvTimeout,
    Frame,
    FrameTimeout,
    Payload,
    PayloadTry,
}

#[derive(Debug, Clone)]
struct Message {
    data: Vec<u8>,
    /// Indices into [`fixtures`].
    fds: Vec<usize>,
    backwards: bool,
    send: SendVia,
    recv: RecvVia,
    /// Read everything queued in this direction after sending this one.
    flush: bool,
}

fn message(max_fds: usize) -> impl Strategy<Value = Message> {
    let data = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..=DATA),
        1 => prop::collection::vec(any::<u8>(), DATA..=DATA),
    ];
    let fds = prop::collection::vec(0..7usize, 0..=max_fds);
    let send = prop_oneof![
        Just(SendVia::Send),
        Just(SendVia::TrySend),
        Just(SendVia::Frame),
        Just(SendVia::Payload)
    ];
    let recv = prop_oneof![
        Just(RecvVia::Recv),
        Just(RecvVia::TryRecv),
        Just(RecvVia::RecvTimeout),
        Just(RecvVia::Frame),
        Just(RecvVia::FrameTimeout),
        Just(RecvVia::Payload),
        Just(RecvVia::PayloadTry),
    ];
    (data, fds, any::<bool>(), send, recv, any::<bool>()).prop_map(
        |(data, fds, backwards, send, recv, flush)| Message {
            data,
            fds,
            backwards,
            send,
            recv,
            flush,
        },
    )
}

fn messages(max_fds: usize) -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(message(max_fds), 0..24)
}

struct Queued {
    data: Vec<u8>,
    ids: Vec<(u64, u64)>,
    via: RecvVia,
}

fn send<const N: usize>(
    sender: &Channel<N>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    via: SendVia,
) -> Result<(), Error> {
    match via {
        SendVia::Send => sender.send(data, fds),
        SendVia::TrySend => sender.try_send(data, fds),
        SendVia::Frame => {
            let mut frame = vec![0; HEADER_LEN + data.len()];
            frame[HEADER_LEN..].copy_from_slice(data);
            sender.send_frame(&mut frame, fds)
        }
        SendVia::Payload => {
            let mut payload = Payload::<{ HEADER_LEN + DATA }, N>::new();
            payload.extend_from_slice(data).expect("data fits");
            for fd in fds {
                let owned = fd.try_clone_to_owned().expect("dup");
                assert!(payload.fds.push(owned).is_ok(), "fds fit");
            }
            payload.send(sender)
        }
    }
}

fn check(
    got: Result<Received, Error>,
    data: &[u8],
    fds: &[OwnedFd],
    want: &Queued,
) -> Result<(), TestCaseError> {
    let got = got.map_err(|e| TestCaseError::fail(format!("receive failed: {e:?}")))?;
    prop_assert_eq!(
        got,
        Received {
            data_len: want.data.len(),
            fd_count: want.ids.len(),
        }
    );
    prop_assert_eq!(&data[..got.data_len.min(data.len())], &want.data[..]);
    let ids: Vec<(u64, u64)> = fds.iter().map(identity).collect();
    prop_assert_eq!(ids, want.ids.clone(), "fd identities, in order");
    for fd in fds {
        let flags = fcntl_getfd(fd).expect("F_GETFD");
        prop_assert!(
            flags.contains(FdFlags::CLOEXEC),
            "received fd is close-on-exec"
        );
    }
    Ok(())
}

fn drain<const N: usize>(
    receiver: &Channel<N>,
    queue: &mut VecDeque<Queued>,
) -> Result<(), TestCaseError> {
    // Reused for every message: each receive must close what the last left.
    let mut data = [0u8; DATA];
    let mut fds = heapless::Vec::<OwnedFd, N>::new();
    let mut frame = [0u8; HEADER_LEN + DATA];
    let mut payload = Payload::<{ HEADER_LEN + DATA }, N>::new();
    while let Some(want) = queue.pop_front() {
        match want.via {
            RecvVia::Recv => check(receiver.recv(&mut data, &mut fds), &data, &fds, &want)?,
            RecvVia::TryRecv => check(receiver.try_recv(&mut data, &mut fds), &data, &fds, &want)?,
            RecvVia::RecvTimeout => {
                // The message is already queued: the timeout is never reached.
                let got = receiver.recv_timeout(&mut data, &mut fds, Duration::from_secs(60));
                check(got, &data, &fds, &want)?;
            }
            RecvVia::Frame => {
                let got = receiver.recv_frame(&mut frame, &mut fds);
                check(got, &frame[HEADER_LEN..], &fds, &want)?;
            }
            RecvVia::FrameTimeout => {
                let got =
                    receiver.recv_frame_timeout(&mut frame, &mut fds, Duration::from_secs(60));
                check(got, &frame[HEADER_LEN..], &fds, &want)?;
            }
            RecvVia::Payload | RecvVia::PayloadTry => {
                let got = if matches!(want.via, RecvVia::Payload) {
                    payload.recv(receiver)
                } else {
                    payload.try_recv(receiver)
                };
                if let Ok(got) = got {
                    prop_assert_eq!(payload.data().len(), got.data_len);
                }
                check(got, payload.data(), &payload.fds, &want)?;
            }
        }
    }
    Ok(())
}

fn roundtrip<const N: usize>(messages: &[Message]) -> Result<(), TestCaseError> {
    let files = fixtures();
    let _serial = serial();
    // A lost record would leave a blocking receive below waiting for ever.
    let _watchdog = Watchdog::for_test();
    let baseline = open_fds();
    {
        let (a, b) = Channel::<N>::pair().expect("socketpair");
        // Messages from a to b, and from b to a.
        let mut queues = [VecDeque::new(), VecDeque::new()];
        for message in messages {
            let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(|&i| files[i].as_fd()).collect();
            let (sender, receiver, queue) = if message.backwards {
                (&b, &a, &mut queues[1])
            } else {
                (&a, &b, &mut queues[0])
            };
            let sent = send(sender, &message.data, &fds, message.send);
            prop_assert_eq!(sent, Ok(()));
            queue.push_back(Queued {
                data: message.data.clone(),
                ids: fds.iter().map(identity).collect(),
                via: message.recv,
            });
            if message.flush || queue.len() >= MAX_QUEUED {
                drain(receiver, queue)?;
            }
        }
        let [forwards, backwards] = &mut queues;
        drain(&b, forwards)?;
        drain(&a, backwards)?;
        for end in [&a, &b] {
            let mut data = [0u8; DATA];
            let mut fds = heapless::Vec::<OwnedFd, N>::new();
            prop_assert_eq!(end.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
        }
    }
    prop_assert_eq!(open_fds(), baseline, "fd count back to the baseline");
    Ok(())
}

proptest! {
    #[test]
    fn messages_arrive_intact_with_no_fd_capacity(messages in messages(0)) {
        roundtrip::<0>(&messages)?;
    }

    #[test]
    fn messages_arrive_intact_with_one_fd(messages in messages(1)) {
        roundtrip::<1>(&messages)?;
    }

    #[test]
    fn messages_arrive_intact_with_three_fds(messages in messages(3)) {
        roundtrip::<3>(&messages)?;
    }

    #[test]
    fn messages_arrive_intact_with_four_fds(messages in messages(4)) {
        roundtrip::<4>(&messages)?;
    }
}
