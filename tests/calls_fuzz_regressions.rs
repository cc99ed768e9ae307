//! Regressions found by the `calls` fuzz target (`fuzz/fuzz_targets/calls.rs`).
//!
//! Each test replays one input shape the fuzzer found, written out by hand:
//! the peer's records go out through a plain `Channel` (or raw `sendmsg`),
//! and what the call layer reports and sends back is pinned.
//!
//! Found in the first minute of fuzzing, by the model rather than the
//! library: a one-way request (cookie 0) whose reply would not fit the
//! responder's outgoing buffer. The responder handles it and reports
//! `Served::OneWay`: a one-way request has no reply, so nothing is encoded
//! and nothing can fail to fit; the same request with a cookie is refused
//! with `Rejection::HandlerFailed` (and an error reply with its cookie), and
//! the responder keeps serving. The model predicted `HandlerFailed` for both.

mod common;

use std::os::fd::OwnedFd;

use common::{open_fds, serial};
use ipc_unixsocket::calls::{
    CallHeader, Hello, Kind, Protocol, Rejection, Responder, Schema, Served,
};
use ipc_unixsocket::{Channel, Error};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
enum Request<'a> {
    Echo(&'a [u8]),
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Schema)]
enum Reply<'a> {
    Echo(&'a [u8]),
}

struct Echo;

impl Protocol for Echo {
    const NAME: &'static str = "fuzz.calls";
    const VERSION: u32 = 3;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = ();
    type Error<'a> = ipc_unixsocket::calls::NoError;
}

/// A record of the call layer: the call header and the body.
fn record(kind: Kind, cookie: u32, body: &[u8]) -> Vec<u8> {
    let mut data = CallHeader { kind, cookie }.encode().to_vec();
    data.extend_from_slice(body);
    data
}

/// `value` in postcard.
fn encoded<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = [0u8; 128];
    postcard::to_slice(value, &mut buf).unwrap().to_vec()
}

/// What the peer receives next: the call header and the body, or `None`.
fn received(peer: &Channel<2>) -> Option<(CallHeader, Vec<u8>)> {
    let mut data = [0u8; 256];
    let mut fds = heapless::Vec::<OwnedFd, 2>::new();
    match peer.try_recv(&mut data, &mut fds) {
        Ok(got) => {
            assert!(fds.is_empty());
            let header = CallHeader::decode(&data[..got.data_len]).expect("a call header");
            Some((header, data[8..got.data_len].to_vec()))
        }
        Err(Error::WouldBlock) => None,
        Err(error) => panic!("the peer's receive: {error}"),
    }
}

#[test]
fn a_one_way_request_whose_reply_would_not_fit_is_handled_as_one_way() {
    let _serial = serial();
    let baseline = open_fds();
    {
        let (peer, end) = Channel::<2>::pair().unwrap();
        // The fuzz target's buffers: 64 bytes out, 128 in.
        let (mut out, mut inbox) = ([0u8; 64], [0u8; 128]);
        let mut responder = Responder::<Echo, 2>::new(end, &mut out, &mut inbox).unwrap();
        let (hello, _) = received(&peer).expect("the responder's hello");
        assert_eq!(hello.kind, Kind::Hello);

        let hello_body = encoded(&Hello::of::<Echo>());
        peer.send(&record(Kind::Hello, 0, &hello_body), &[])
            .unwrap();
        assert_eq!(
            responder.try_serve(|call| Ok(echo(call.request))),
            Ok(Some(Served::Hello))
        );

        // Echo of 47 bytes: the request fits the 128-byte inbox; the reply
        // (16 header bytes, variant, length, 47 bytes) does not fit 64.
        let long = encoded(&Request::Echo(&[0x57; 47]));
        let short = encoded(&Request::Echo(b"hi"));

        // The input the fuzzer found: one-way.
        peer.send(&record(Kind::Request, 0, &long), &[]).unwrap();
        assert_eq!(
            responder.try_serve(|call| Ok(echo(call.request))),
            Ok(Some(Served::OneWay))
        );
        assert_eq!(received(&peer), None, "no reply to a one-way request");

        // The same with a cookie: refused, with that cookie.
        peer.send(&record(Kind::Request, 7, &long), &[]).unwrap();
        assert_eq!(
            responder.try_serve(|call| Ok(echo(call.request))),
            Ok(Some(Served::Refused {
                cookie: 7,
                rejection: Rejection::HandlerFailed
            }))
        );
        let (header, body) = received(&peer).expect("the error reply");
        assert_eq!(
            header,
            CallHeader {
                kind: Kind::ErrorReply,
                cookie: 7
            }
        );
        assert_eq!(body, [Rejection::HandlerFailed as u8]);

        // And the responder keeps serving.
        peer.send(&record(Kind::Request, 8, &short), &[]).unwrap();
        assert_eq!(
            responder.try_serve(|call| Ok(echo(call.request))),
            Ok(Some(Served::Replied { cookie: 8 }))
        );
        let (header, body) = received(&peer).expect("the reply");
        assert_eq!(
            header,
            CallHeader {
                kind: Kind::Reply,
                cookie: 8
            }
        );
        assert_eq!(
            postcard::from_bytes::<Reply<'_>>(&body),
            Ok(Reply::Echo(b"hi"))
        );
        assert_eq!(responder.discarded(), 0);
    }
    assert_eq!(open_fds(), baseline, "every fd closed");
}

fn echo(request: Request<'_>) -> Reply<'_> {
    let Request::Echo(bytes) = request;
    Reply::Echo(bytes)
}
