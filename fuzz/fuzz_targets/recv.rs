//! The whole receive path over a real socket pair.
//!
//! Each input is a sequence of raw records that the target writes with
//! `sendmsg`, bypassing the crate's sender, one record at a time; a
//! `Channel<4>` (or `Channel<3>`, `Channel<1>`) with a 64-byte buffer reads
//! each with `try_recv`, and the outcome must be exactly what
//! [`expected_outcome`] predicts. Then a good message sent with the crate
//! must still arrive intact, and the process must hold exactly as many fds
//! as before the input.
//!
//! Input layout (every input is accepted):
//!
//! ```text
//! byte 0          flags: 0x01 hang up: after the last record, queue the good
//!                 message and close the sender, so the last record and the
//!                 good message are read from a dead peer, then expect
//!                 Disconnected.
//!                 0x06 the receiver: 0x00 or 0x02 Channel<4>, 0x04
//!                 Channel<3>, 0x06 Channel<1> (odd capacities leave room
//!                 for one fd past the capacity in the control buffer)
//! then up to 16 records, each:
//!   byte          control: low nibble % 13 = number of fds to attach (0..=12)
//!                 0x10 write "IP" 1 into bytes 0..3 of the record
//!                 0x20 write the number of fds into byte 3
//!                 0x40 write the record length - 8 into bytes 4..8 (LE)
//!                 0x80 attach only memfds (else /dev/null at even positions)
//!   2 bytes       record length, u16 LE, at most 4096
//!   length bytes  the record (zero-padded if the input ends first)
//! ```
#![no_main]

use heapless::Vec as StackVec;
use ipc_unixsocket::{Channel, Error, HEADER_LEN, MAGIC, VERSION};
use ipc_unixsocket_fuzz::{
    Fixtures, MAX_RAW_FDS, expected_outcome, identity, is_cloexec, open_fds, send_raw,
    turns_on_credentials,
};
use libfuzzer_sys::fuzz_target;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

const DATA_CAPACITY: usize = 64;
const MAX_RECORDS: usize = 16;
const MAX_RECORD_LEN: usize = 4096;

const HANG_UP: u8 = 0x01;

const FIX_MAGIC: u8 = 0x10;
const FIX_FD_COUNT: u8 = 0x20;
const FIX_DATA_LEN: u8 = 0x40;
const ALL_MEMFDS: u8 = 0x80;

const GOOD_DATA: &[u8] = b"a good message after the junk";

struct RawRecord {
    bytes: Vec<u8>,
    fds: usize,
    all_memfds: bool,
}

fn parse(mut input: &[u8]) -> Vec<RawRecord> {
    let mut records = Vec::new();
    while records.len() < MAX_RECORDS {
        let Some((&[control, l0, l1], rest)) = input.split_first_chunk::<3>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([l0, l1])).min(MAX_RECORD_LEN);
        let take = len.min(rest.len());
        let mut bytes = rest[..take].to_vec();
        bytes.resize(len, 0);
        input = &rest[take..];

        let fds = usize::from(control & 0x0f) % (MAX_RAW_FDS + 1);
        if control & FIX_MAGIC != 0 {
            let fix = [MAGIC[0], MAGIC[1], VERSION];
            let n = bytes.len().min(3);
            bytes[..n].copy_from_slice(&fix[..n]);
        }
        if control & FIX_FD_COUNT != 0 && bytes.len() > 3 {
            bytes[3] = u8::try_from(fds).expect("at most 12 fds");
        }
        if control & FIX_DATA_LEN != 0 && bytes.len() >= HEADER_LEN {
            let data_len = u32::try_from(bytes.len() - HEADER_LEN).expect("at most 4096 bytes");
            bytes[4..8].copy_from_slice(&data_len.to_le_bytes());
        }
        records.push(RawRecord {
            bytes,
            fds,
            all_memfds: control & ALL_MEMFDS != 0,
        });
    }
    records
}

fuzz_target!(|input: &[u8]| {
    let fixtures = Fixtures::get();
    let baseline = open_fds();
    let (flags, records) = match input.split_first() {
        Some((&flags, rest)) => (flags, parse(rest)),
        None => (0, Vec::new()),
    };
    let hang_up = flags & HANG_UP != 0;

    match (flags >> 1) & 0b11 {
        0 | 1 => check::<4>(fixtures, &records, hang_up),
        2 => check::<3>(fixtures, &records, hang_up),
        _ => check::<1>(fixtures, &records, hang_up),
    }

    assert_eq!(
        open_fds(),
        baseline,
        "the process's fd count changed: an fd leaked or was closed twice"
    );
});

fn check<const N: usize>(fixtures: &Fixtures, records: &[RawRecord], hang_up: bool) {
    let (writer, reader) = Channel::<N>::pair().expect("socketpair");
    let mut writer = Some(writer);
    let mut data = [0u8; DATA_CAPACITY];
    // Never cleared here: each receive must close what the last one left.
    let mut fds = StackVec::<OwnedFd, N>::new();
    // Whether the reader has turned SO_PASSCRED on (after an empty record).
    let mut credentials = false;

    for (i, record) in records.iter().enumerate() {
        let sent: Vec<BorrowedFd<'_>> = (0..record.fds)
            .map(|k| fixtures.pick(k, record.all_memfds))
            .collect();
        let sender = writer.as_ref().expect("sender still open");
        send_raw(sender, &record.bytes, &sent);
        if hang_up && i + 1 == records.len() {
            send_good(sender, fixtures);
            writer = None;
        }

        let got = reader.try_recv(&mut data, &mut fds);
        let want = expected_outcome(&record.bytes, record.fds, N, DATA_CAPACITY, credentials);
        credentials |= turns_on_credentials(&record.bytes, record.fds);
        let context = || {
            format!(
                "record {i}: {} bytes starting {:02x?}, {} fds sent, capacity {N}",
                record.bytes.len(),
                &record.bytes[..record.bytes.len().min(16)],
                record.fds,
            )
        };
        match (got, want) {
            (Ok(got), Ok((data_len, fd_count))) => {
                assert_eq!(
                    (got.data_len, got.fd_count),
                    (data_len, fd_count),
                    "{}",
                    context()
                );
                assert_eq!(
                    &data[..data_len],
                    &record.bytes[HEADER_LEN..],
                    "data: {}",
                    context()
                );
                assert_fds_match(&fds, &sent, &context);
            }
            (Err(got), Err(want)) => {
                assert_eq!(got, want, "{}", context());
                assert!(got.is_rejected_record(), "{got:?}: {}", context());
                assert!(fds.is_empty(), "fds left after {got:?}: {}", context());
                assert!(!got.to_string().is_empty());
            }
            (got, want) => panic!("got {got:?}, want {want:?}: {}", context()),
        }
    }

    match writer.take() {
        Some(sender) => {
            // Every record was consumed by exactly one receive.
            assert_eq!(reader.try_recv(&mut data, &mut fds), Err(Error::WouldBlock));
            send_good(&sender, fixtures);
            recv_good(&reader, fixtures, &mut data, &mut fds);
            if hang_up {
                // No records: hang up now.
                drop(sender);
                assert_eq!(
                    reader.try_recv(&mut data, &mut fds),
                    Err(Error::Disconnected)
                );
            }
        }
        None => {
            recv_good(&reader, fixtures, &mut data, &mut fds);
            assert_eq!(
                reader.try_recv(&mut data, &mut fds),
                Err(Error::Disconnected)
            );
        }
    }
}

fn good_fds<const N: usize>(fixtures: &Fixtures) -> StackVec<BorrowedFd<'_>, N> {
    let all = [
        fixtures.memfds[0].as_fd(),
        fixtures.devnull.as_fd(),
        fixtures.memfds[MAX_RAW_FDS - 1].as_fd(),
    ];
    all.into_iter().take(N).collect()
}

fn send_good<const N: usize>(sender: &Channel<N>, fixtures: &Fixtures) {
    sender
        .try_send(GOOD_DATA, &good_fds::<N>(fixtures))
        .expect("send the good message");
}

fn recv_good<const N: usize>(
    reader: &Channel<N>,
    fixtures: &Fixtures,
    data: &mut [u8],
    fds: &mut StackVec<OwnedFd, N>,
) {
    let sent = good_fds::<N>(fixtures);
    let got = reader
        .try_recv(data, fds)
        .expect("the good message after the junk");
    assert_eq!(got.data_len, GOOD_DATA.len());
    assert_eq!(got.fd_count, sent.len());
    assert_eq!(&data[..got.data_len], GOOD_DATA);
    assert_fds_match(fds, &sent, &|| String::from("the good message"));
}

fn assert_fds_match(got: &[OwnedFd], sent: &[BorrowedFd<'_>], context: &dyn Fn() -> String) {
    assert_eq!(got.len(), sent.len(), "fd count: {}", context());
    for (k, (got, sent)) in got.iter().zip(sent).enumerate() {
        assert_eq!(identity(got), identity(sent), "fd {k}: {}", context());
        assert!(
            is_cloexec(got),
            "fd {k} is not close-on-exec: {}",
            context()
        );
    }
}
