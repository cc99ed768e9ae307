//! The typed-call section: `calls::Caller::call` / `Responder::serve` round
//! trips side by side with the channel round trip (`send_frame` /
//! `recv_frame`) carrying the same record bytes and fds, the two ways of
//! naming a frame buffer per call, and an emulation of libcamera's
//! `IPCPipeUnixSocket` with its per-message heap work.
//!
//! Method as in the rest of the bench: one instance per variant with its
//! peer (a thread or a re-executed process) running, N round trips per
//! repetition calibrated on the baseline, variants interleaved within each
//! repetition and their order rotated, every round trip also timed on its
//! own, allocations counted over the timed repetitions.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc_unixsocket::calls::{
    Attach, Bytes, CallHeader, Caller, FdSlot, Kind, Protocol, Responder, Schema,
};
use ipc_unixsocket::{Channel, Error as ChannelError, HEADER_LEN};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::{FdFlags, IoSlice, IoSliceMut, fcntl_setfd};
use rustix::net::sockopt::{self, Timeout};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
};
use rustix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

use crate::Config;
use crate::alloc_count::allocations;
use crate::harness::{PeerStats, Placement, Shape, parse_peer_report, pin};
use crate::report::median;
use crate::variants::{MAX_FDS, Memfds};

/// Size of the caller's and responder's record buffers.
const BUF: usize = 8192;
/// Buffers registered by `configure` in the per-frame cells.
const POOL: usize = MAX_FDS;
/// The deadline of a realistic call (libcamera's `sendSync` waits 2 s).
const TIMEOUT: Duration = Duration::from_secs(1);
/// Data length of the channel frame that tells a channel peer to stop.
const STOP_LEN: usize = 1;

// ---------------------------------------------------------------------------
// The protocol.

#[derive(Debug, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
pub enum Request<'a> {
    Echo {
        #[serde(borrow)]
        data: Bytes<'a>,
    },
    EchoFds {
        slots: [FdSlot; MAX_FDS],
        #[serde(borrow)]
        data: Bytes<'a>,
    },
    /// libcamera's `configure`: the buffer pool, once.
    Configure {
        pool: [FdSlot; POOL],
    },
    /// `Echo` with a plain `&[u8]` field: serde hands it to postcard one
    /// byte at a time (`Bytes` is one byte string).
    EchoSlice {
        data: &'a [u8],
    },
    /// A frame naming a buffer registered by `Configure`.
    FrameById {
        frame: u32,
        buffer: u32,
        #[serde(borrow)]
        pad: Bytes<'a>,
    },
    /// The same frame with the buffer's fd attached.
    FrameWithFd {
        frame: u32,
        buffer: FdSlot,
        #[serde(borrow)]
        pad: Bytes<'a>,
    },
    Stop,
}

#[derive(Debug, Serialize, Deserialize, Schema)]
#[postcard(crate = ipc_unixsocket::calls::postcard_schema)]
pub enum Reply<'a> {
    Echo {
        #[serde(borrow)]
        data: Bytes<'a>,
    },
    EchoFds {
        slots: [FdSlot; MAX_FDS],
        #[serde(borrow)]
        data: Bytes<'a>,
    },
    Configured,
    EchoSlice {
        data: &'a [u8],
    },
    FrameDone {
        frame: u32,
        #[serde(borrow)]
        pad: Bytes<'a>,
    },
    Stopped,
}

pub struct BenchProtocol;

impl Protocol for BenchProtocol {
    const NAME: &'static str = "ipc-unixsocket-bench";
    const VERSION: u32 = 1;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply<'a>;
    type Event<'a> = ();
    type Error<'a> = ipc_unixsocket::calls::NoError;
}

/// Postcard length of `value`.
fn body_len<T: Serialize>(value: &T) -> usize {
    let mut scratch = [0u8; BUF];
    postcard::to_slice(value, &mut scratch).map_or(0, |used| used.len())
}

/// The largest `d` for which `make(d)` encodes to exactly `target` bytes.
fn fit<T: Serialize>(target: usize, make: impl Fn(usize) -> T) -> usize {
    (0..=target)
        .rev()
        .find(|&d| body_len(&make(d)) == target)
        .expect("no data length gives the target body size")
}

const SLOTS: [u8; MAX_FDS] = [0, 1, 2, 3];

fn slots() -> [FdSlot; MAX_FDS] {
    // FdSlot is a transparent u8 in postcard: decode the indices.
    postcard::from_bytes(&SLOTS).expect("fd slots decode")
}

// ---------------------------------------------------------------------------
// Cases, variants, cells.

/// What one cell sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Case {
    /// 64-byte request and reply bodies, no fds.
    Small,
    /// 4096-byte request and reply bodies, 4 fds each way.
    Large,
    /// One frame of libcamera's flow: a 64-byte request, a 63-byte reply.
    Frame,
}

impl Case {
    pub const ALL: [Case; 3] = [Case::Small, Case::Large, Case::Frame];

    pub fn id(self) -> &'static str {
        match self {
            Case::Small => "small",
            Case::Large => "large",
            Case::Frame => "frame",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Case::Small => "64 B request and reply body, 0 fds",
            Case::Large => "4096 B request and reply body, 4 fds each way",
            Case::Frame => "per frame: 64 B request, 63 B reply",
        }
    }

    pub fn body(self) -> usize {
        match self {
            Case::Small | Case::Frame => 64,
            Case::Large => 4096,
        }
    }

    pub fn fds(self) -> usize {
        match self {
            Case::Small | Case::Frame => 0,
            Case::Large => MAX_FDS,
        }
    }

    pub fn variants(self) -> &'static [CallVariant] {
        match self {
            Case::Small => &[
                CallVariant::Channel,
                CallVariant::ChannelPoll,
                CallVariant::ChannelRcvtimeo,
                CallVariant::Call,
                CallVariant::CallForever,
                CallVariant::CallSlices,
                CallVariant::IpcPipe,
            ],
            Case::Large => &[
                CallVariant::Channel,
                CallVariant::ChannelPoll,
                CallVariant::ChannelRcvtimeo,
                CallVariant::Call,
                CallVariant::CallForever,
                CallVariant::IpcPipe,
            ],
            Case::Frame => &[CallVariant::FrameById, CallVariant::FrameFd],
        }
    }

    /// The variant the others' ratios are taken against.
    pub fn baseline(self) -> CallVariant {
        self.variants()[0]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CallVariant {
    Channel,
    ChannelPoll,
    ChannelRcvtimeo,
    Call,
    CallForever,
    CallSlices,
    IpcPipe,
    FrameById,
    FrameFd,
}

impl CallVariant {
    pub const ALL: [CallVariant; 9] = [
        CallVariant::Channel,
        CallVariant::ChannelPoll,
        CallVariant::ChannelRcvtimeo,
        CallVariant::Call,
        CallVariant::CallForever,
        CallVariant::CallSlices,
        CallVariant::IpcPipe,
        CallVariant::FrameById,
        CallVariant::FrameFd,
    ];

    pub fn id(self) -> &'static str {
        match self {
            CallVariant::Channel => "channel",
            CallVariant::ChannelPoll => "channel-poll",
            CallVariant::ChannelRcvtimeo => "channel-rcvtimeo",
            CallVariant::Call => "call",
            CallVariant::CallForever => "call-no-deadline",
            CallVariant::CallSlices => "call-slices",
            CallVariant::IpcPipe => "ipcpipe",
            CallVariant::FrameById => "frame-by-id",
            CallVariant::FrameFd => "frame-fd-each",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }

    pub fn description(self) -> &'static str {
        match self {
            CallVariant::Channel => {
                "baseline: `Channel::send_frame`/`recv_frame` echo of the same record bytes (v1 header + call header + postcard body) and fds; blocking"
            }
            CallVariant::ChannelPoll => {
                "the channel echo with a 1 s deadline at the syscall floor: the deadline read from `CLOCK_MONOTONIC`, then per reply the time left read again, one `poll` for `POLLIN` with it, and `try_recv_frame` (what a receive with a deadline costs whoever writes it)"
            }
            CallVariant::ChannelRcvtimeo => {
                "the channel echo on a socket whose `SO_RCVTIMEO` was set to 1 s once, with a blocking `recv_frame` (the alternative to `poll`: no extra system call per receive)"
            }
            CallVariant::Call => {
                "`Caller::call` with a 1 s deadline / `Responder::serve`; fds attached as slots and claimed on the other side"
            }
            CallVariant::CallForever => {
                "`Caller::call` with no deadline (`Duration::MAX`: blocking `recv_frame`) / `Responder::serve`"
            }
            CallVariant::CallSlices => {
                "`call` as above with the data in a plain `&[u8]` field instead of `calls::Bytes` (small case)"
            }
            CallVariant::IpcPipe => {
                "libcamera `IPCPipeUnixSocket` emulation: header datagram + body datagram with SCM_RIGHTS on SOCK_DGRAM, `Vec<u8>` payloads built by a serializer, `Arc<OwnedFd>` as `SharedFD`, `BTreeMap` cookie table, per-send `Vec` cmsg buffers"
            }
            CallVariant::FrameById => {
                "per-frame `call` naming a buffer registered once by `configure` (no fd)"
            }
            CallVariant::FrameFd => {
                "per-frame `call` attaching the frame's fd (the worker claims and closes it)"
            }
        }
    }

    fn instance(self) -> Instance {
        match self {
            CallVariant::Channel | CallVariant::ChannelPoll => Instance::Channel,
            CallVariant::ChannelRcvtimeo => Instance::ChannelRcvtimeo,
            CallVariant::Call
            | CallVariant::CallSlices
            | CallVariant::FrameById
            | CallVariant::FrameFd => Instance::Call,
            CallVariant::CallForever => Instance::CallForever,
            CallVariant::IpcPipe => Instance::IpcPipe,
        }
    }

    /// Bytes on the wire per message of `case` (both datagrams for the
    /// IPCPipe emulation).
    pub fn wire_bytes(self, case: Case) -> usize {
        match self {
            CallVariant::IpcPipe => IPC_HEADER + IPC_MSG_HEADER + case.body(),
            _ => HEADER_LEN + ipc_unixsocket::calls::CALL_HEADER_LEN + case.body(),
        }
    }
}

/// One end with its peer: what actually runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Instance {
    Channel,
    ChannelRcvtimeo,
    Call,
    CallForever,
    IpcPipe,
}

impl Instance {
    fn id(self) -> &'static str {
        match self {
            Instance::Channel => "channel",
            Instance::ChannelRcvtimeo => "channel-rcvtimeo",
            Instance::Call => "call",
            Instance::CallForever => "call-no-deadline",
            Instance::IpcPipe => "ipcpipe",
        }
    }

    fn from_id(id: &str) -> Option<Self> {
        [
            Instance::Channel,
            Instance::ChannelRcvtimeo,
            Instance::Call,
            Instance::CallForever,
            Instance::IpcPipe,
        ]
        .into_iter()
        .find(|i| i.id() == id)
    }
}

/// One measured cell of the typed-call section.
pub struct CallCell {
    pub shape: Shape,
    pub case: Case,
    pub variant: CallVariant,
    pub n: u64,
    /// ns per round trip, one per repetition.
    pub ns: Vec<f64>,
    /// Median single round trip, one per repetition.
    pub typical: Vec<f64>,
    pub allocs: u64,
    /// Round trips those allocations cover.
    pub calls: u64,
}

/// A peer process's own allocation count over its whole loop.
#[derive(serde::Serialize)]
pub struct CallPeerAllocs {
    pub shape: Shape,
    pub instance: &'static str,
    pub messages: u64,
    pub allocs: u64,
}

// ---------------------------------------------------------------------------
// The measuring ends.

trait CallBench {
    /// `lat.len()` round trips of `variant` in `case`, each timed into `lat`
    /// (ns); returns the elapsed time.
    fn run(&mut self, variant: CallVariant, case: Case, lat: &mut [u32]) -> io::Result<Duration>;
    fn stop(&mut self) -> io::Result<PeerStats>;
}

fn channel_error(error: impl Into<ChannelError>) -> io::Error {
    io::Error::other(error.into())
}

/// Times each round trip of `lat.len()`; `rt` gets the round trip's index.
#[inline(always)]
fn timed(lat: &mut [u32], mut rt: impl FnMut(usize) -> io::Result<()>) -> io::Result<Duration> {
    let start = Instant::now();
    let mut last = start;
    for (i, slot) in lat.iter_mut().enumerate() {
        rt(i)?;
        let now = Instant::now();
        *slot = u32::try_from((now - last).as_nanos()).unwrap_or(u32::MAX);
        last = now;
    }
    Ok(last - start)
}

enum Peer {
    Thread(JoinHandle<io::Result<PeerStats>>),
    Process(Child),
}

impl Peer {
    fn join(self) -> io::Result<PeerStats> {
        match self {
            Peer::Thread(handle) => handle
                .join()
                .map_err(|_| io::Error::other("peer thread panicked"))?,
            Peer::Process(child) => {
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    return Err(io::Error::other(format!(
                        "calls peer process failed: {}",
                        out.status
                    )));
                }
                parse_peer_report(&String::from_utf8_lossy(&out.stdout))
            }
        }
    }
}

/// A socket pair with the peer end running `instance`'s worker.
fn spawn(instance: Instance, shape: Shape, placement: &Placement) -> io::Result<(OwnedFd, Peer)> {
    let kind = if instance == Instance::IpcPipe {
        SocketType::DGRAM
    } else {
        SocketType::SEQPACKET
    };
    let (local, remote) = socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    let cpu = placement.peer;
    let peer = match shape {
        Shape::Thread => Peer::Thread(
            std::thread::Builder::new()
                .name(format!("calls-peer-{}", instance.id()))
                .spawn(move || {
                    pin(cpu)?;
                    worker(instance, remote)
                })?,
        ),
        Shape::Process => {
            fcntl_setfd(&remote, FdFlags::empty())?;
            let child = Command::new(std::env::current_exe()?)
                .arg("--calls-peer")
                .arg(instance.id())
                .arg("--fd")
                .arg(remote.as_raw_fd().to_string())
                .arg("--cpu")
                .arg(cpu.map_or("none".to_string(), |c| c.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()?;
            drop(remote);
            Peer::Process(child)
        }
    };
    Ok((local, peer))
}

fn worker(instance: Instance, fd: OwnedFd) -> io::Result<PeerStats> {
    match instance {
        Instance::Channel | Instance::ChannelRcvtimeo => {
            channel_worker(Channel::adopt(fd).map_err(channel_error)?)
        }
        Instance::Call | Instance::CallForever => {
            typed_worker(Channel::adopt(fd).map_err(channel_error)?)
        }
        Instance::IpcPipe => ipcpipe_worker(IpcUnixSocket { fd }),
    }
}

/// Entry point of a re-executed peer: `--calls-peer ID --fd N --cpu N|none`.
pub fn peer_main(args: &[String]) -> io::Result<()> {
    let value = |flag: &str| -> io::Result<&str> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .ok_or_else(|| io::Error::other(format!("calls peer: missing {flag}")))
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let instance = Instance::from_id(value("--calls-peer")?)
        .ok_or_else(|| io::Error::other("calls peer: unknown instance"))?;
    let raw: i32 = value("--fd")?.parse().map_err(io::Error::other)?;
    let cpu = match value("--cpu")? {
        "none" => None,
        n => Some(n.parse().map_err(io::Error::other)?),
    };
    pin(cpu)?;
    // SAFETY: the parent passed us this fd number and no one else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stats = worker(instance, fd)?;
    println!("messages={} allocs={}", stats.messages, stats.allocs);
    Ok(())
}

// --- (1) the channel round trip carrying the same record bytes. ------------

/// The record a typed caller would send for `case`, in a frame with the
/// v1 header's room in front, for `send_frame`.
fn record_frame(case: Case) -> Vec<u8> {
    let data = vec![0xA5u8; BUF];
    let mut frame = vec![0u8; BUF];
    let header = CallHeader {
        kind: Kind::Request,
        cookie: 1,
    }
    .encode();
    let body_at = HEADER_LEN + header.len();
    frame[HEADER_LEN..body_at].copy_from_slice(&header);
    let used = match case {
        Case::Small => {
            let d = small_len();
            postcard::to_slice(
                &Request::Echo {
                    data: Bytes(&data[..d]),
                },
                &mut frame[body_at..],
            )
            .map(|b| b.len())
        }
        Case::Large => {
            let d = large_len();
            postcard::to_slice(
                &Request::EchoFds {
                    slots: slots(),
                    data: Bytes(&data[..d]),
                },
                &mut frame[body_at..],
            )
            .map(|b| b.len())
        }
        Case::Frame => postcard::to_slice(
            &Request::FrameById {
                frame: 0,
                buffer: 0,
                pad: Bytes(&data[..pad_len()]),
            },
            &mut frame[body_at..],
        )
        .map(|b| b.len()),
    }
    .expect("record fits");
    assert_eq!(used, case.body());
    frame.truncate(body_at + used);
    frame
}

fn small_len() -> usize {
    fit(Case::Small.body(), |d| Request::Echo {
        data: Bytes(&[0; BUF][..d]),
    })
}

fn large_len() -> usize {
    fit(Case::Large.body(), |d| Request::EchoFds {
        slots: slots(),
        data: Bytes(&[0; BUF][..d]),
    })
}

fn pad_len() -> usize {
    fit(Case::Frame.body(), |d| Request::FrameById {
        frame: 0,
        buffer: 0,
        pad: Bytes(&[0; BUF][..d]),
    })
}

struct ChannelBench {
    channel: Channel<MAX_FDS>,
    memfds: Memfds,
    fds: heapless::Vec<OwnedFd, MAX_FDS>,
    small: Vec<u8>,
    large: Vec<u8>,
    buf: Vec<u8>,
    peer: Option<Peer>,
}

impl ChannelBench {
    /// The channel echo; with `DEADLINE`, written at the syscall floor with
    /// a 1 s deadline: the same clock reads, `poll` and non-blocking
    /// receive as any receive with a deadline needs.
    #[inline(never)]
    fn channel_loop<const DEADLINE: bool>(
        &mut self,
        case: Case,
        lat: &mut [u32],
    ) -> io::Result<Duration> {
        let nfds = case.fds();
        let frame = match case {
            Case::Large => &mut self.large[..],
            _ => &mut self.small[..],
        };
        let want = frame.len() - HEADER_LEN;
        let fds = self.memfds.borrowed();
        let (channel, buf, received) = (&self.channel, &mut self.buf[..], &mut self.fds);
        timed(lat, |_| {
            let got = if DEADLINE {
                let deadline = monotonic() + TIMEOUT;
                channel
                    .send_frame(frame, &fds[..nfds])
                    .map_err(channel_error)?;
                loop {
                    let left = deadline.saturating_sub(monotonic());
                    let left = Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: left.subsec_nanos().into(),
                    };
                    match poll(&mut [PollFd::new(channel, PollFlags::IN)], Some(&left)) {
                        Ok(0) => return Err(io::Error::other("channel-poll: timed out")),
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(errno) => return Err(errno.into()),
                    }
                    match channel.try_recv_frame(buf, received) {
                        Err(ChannelError::WouldBlock) => {}
                        got => break got.map_err(channel_error)?,
                    }
                }
            } else {
                channel
                    .send_frame(frame, &fds[..nfds])
                    .map_err(channel_error)?;
                channel.recv_frame(buf, received).map_err(channel_error)?
            };
            // Close what came, as the typed caller does with its claims.
            received.clear();
            if (got.data_len, got.fd_count) != (want, nfds) {
                return Err(io::Error::other("channel echo: wrong size"));
            }
            Ok(())
        })
    }
}

/// `CLOCK_MONOTONIC`.
fn monotonic() -> Duration {
    let t = clock_gettime(ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl CallBench for ChannelBench {
    fn run(&mut self, variant: CallVariant, case: Case, lat: &mut [u32]) -> io::Result<Duration> {
        match variant {
            CallVariant::ChannelPoll => self.channel_loop::<true>(case, lat),
            _ => self.channel_loop::<false>(case, lat),
        }
    }

    fn stop(&mut self) -> io::Result<PeerStats> {
        let Some(peer) = self.peer.take() else {
            return Ok(PeerStats::default());
        };
        let mut frame = [0u8; HEADER_LEN + STOP_LEN];
        self.channel
            .send_frame(&mut frame, &[])
            .map_err(channel_error)?;
        peer.join()
    }
}

/// Echoes every frame with as many of its own memfds as it received.
#[inline(never)]
fn channel_worker(channel: Channel<MAX_FDS>) -> io::Result<PeerStats> {
    let memfds = Memfds::new()?;
    let fds = memfds.borrowed();
    let mut buf = vec![0u8; BUF];
    let mut received = heapless::Vec::<OwnedFd, MAX_FDS>::new();
    let before = allocations();
    let mut messages = 0;
    loop {
        let got = channel
            .recv_frame(&mut buf, &mut received)
            .map_err(channel_error)?;
        received.clear();
        if got.data_len == STOP_LEN {
            break;
        }
        messages += 1;
        channel
            .send_frame(&mut buf[..HEADER_LEN + got.data_len], &fds[..got.fd_count])
            .map_err(channel_error)?;
    }
    Ok(PeerStats {
        messages,
        allocs: allocations() - before,
    })
}

// --- (2) typed calls. -------------------------------------------------------

struct TypedBench {
    caller: Caller<'static, BenchProtocol, MAX_FDS, 1>,
    timeout: Duration,
    memfds: Memfds,
    data: Vec<u8>,
    small: usize,
    large: usize,
    pad: usize,
    peer: Option<Peer>,
}

impl TypedBench {
    fn new(fd: OwnedFd, timeout: Duration, peer: Peer) -> io::Result<Self> {
        // The caller borrows its two buffers for as long as it lives; the
        // bench keeps it in a box for the whole run, so they are leaked
        // (two per instance).
        let out: &'static mut [u8] = Box::leak(vec![0u8; BUF].into_boxed_slice());
        let inbox: &'static mut [u8] = Box::leak(vec![0u8; BUF].into_boxed_slice());
        let channel = Channel::adopt(fd).map_err(channel_error)?;
        let caller = Caller::new(channel, out, inbox).map_err(channel_error)?;
        let mut bench = Self {
            caller,
            timeout,
            memfds: Memfds::new()?,
            data: vec![0xA5u8; BUF],
            small: small_len(),
            large: large_len(),
            pad: pad_len(),
            peer: Some(peer),
        };
        bench.configure()?;
        Ok(bench)
    }

    /// libcamera's `configure`: the buffer pool passed once, as fd slots.
    fn configure(&mut self) -> io::Result<()> {
        let fds = self.memfds.borrowed();
        let mut attach = Attach::<MAX_FDS>::new();
        let mut pool = slots();
        for (slot, fd) in pool.iter_mut().zip(fds) {
            *slot = attach.attach(fd).map_err(channel_error)?;
        }
        let (reply, _) = self
            .caller
            .call(
                &Request::Configure { pool },
                attach.as_slice(),
                Duration::from_secs(10),
                |_, _| {},
            )
            .map_err(channel_error)?;
        match reply {
            Reply::Configured => Ok(()),
            other => Err(io::Error::other(format!("configure: {other:?}"))),
        }
    }

    #[inline(never)]
    fn typed_echo_loop(&mut self, case: Case, lat: &mut [u32]) -> io::Result<Duration> {
        let (caller, timeout) = (&mut self.caller, self.timeout);
        let fds = self.memfds.borrowed();
        match case {
            Case::Small => {
                let request = Request::Echo {
                    data: Bytes(&self.data[..self.small]),
                };
                let want = self.small;
                timed(lat, |_| {
                    let (reply, _) = caller
                        .call(&request, &[], timeout, |_, _| {})
                        .map_err(channel_error)?;
                    match reply {
                        Reply::Echo { data } if data.0.len() == want => Ok(()),
                        other => Err(io::Error::other(format!("echo: {other:?}"))),
                    }
                })
            }
            _ => {
                let data = Bytes(&self.data[..self.large]);
                let want = self.large;
                timed(lat, |_| {
                    let mut attach = Attach::<MAX_FDS>::new();
                    let mut slots = slots();
                    for (slot, fd) in slots.iter_mut().zip(fds) {
                        *slot = attach.attach(fd).map_err(channel_error)?;
                    }
                    let request = Request::EchoFds { slots, data };
                    let (reply, mut claims) = caller
                        .call(&request, attach.as_slice(), timeout, |_, _| {})
                        .map_err(channel_error)?;
                    match reply {
                        Reply::EchoFds { slots, data } if data.0.len() == want => {
                            for slot in slots {
                                drop(claims.claim(slot).map_err(channel_error)?);
                            }
                            Ok(())
                        }
                        other => Err(io::Error::other(format!("echo fds: {other:?}"))),
                    }
                })
            }
        }
    }

    /// The small echo with the data in a plain `&[u8]` field.
    #[inline(never)]
    fn typed_slice_loop(&mut self, lat: &mut [u32]) -> io::Result<Duration> {
        let (caller, timeout) = (&mut self.caller, self.timeout);
        let request = Request::EchoSlice {
            data: &self.data[..self.small],
        };
        let want = self.small;
        timed(lat, |_| {
            let (reply, _) = caller
                .call(&request, &[], timeout, |_, _| {})
                .map_err(channel_error)?;
            match reply {
                Reply::EchoSlice { data } if data.len() == want => Ok(()),
                other => Err(io::Error::other(format!("echo slice: {other:?}"))),
            }
        })
    }

    #[inline(never)]
    fn typed_frame_loop<const WITH_FD: bool>(&mut self, lat: &mut [u32]) -> io::Result<Duration> {
        let (caller, timeout) = (&mut self.caller, self.timeout);
        let fds = self.memfds.borrowed();
        let pad = Bytes(&self.data[..self.pad]);
        timed(lat, |i| {
            // Frame numbers below 128 keep every request the same size.
            let frame = (i % 128) as u32;
            let buffer = frame as usize % POOL;
            let mut attach = Attach::<MAX_FDS>::new();
            let request = if WITH_FD {
                let slot = attach.attach(fds[buffer]).map_err(channel_error)?;
                Request::FrameWithFd {
                    frame,
                    buffer: slot,
                    pad,
                }
            } else {
                Request::FrameById {
                    frame,
                    buffer: buffer as u32,
                    pad,
                }
            };
            let (reply, _) = caller
                .call(&request, attach.as_slice(), timeout, |_, _| {})
                .map_err(channel_error)?;
            match reply {
                Reply::FrameDone { frame: done, .. } if done == frame => Ok(()),
                other => Err(io::Error::other(format!("frame: {other:?}"))),
            }
        })
    }
}

impl CallBench for TypedBench {
    fn run(&mut self, variant: CallVariant, case: Case, lat: &mut [u32]) -> io::Result<Duration> {
        match variant {
            CallVariant::FrameById => self.typed_frame_loop::<false>(lat),
            CallVariant::FrameFd => self.typed_frame_loop::<true>(lat),
            CallVariant::CallSlices => self.typed_slice_loop(lat),
            _ => self.typed_echo_loop(case, lat),
        }
    }

    fn stop(&mut self) -> io::Result<PeerStats> {
        let Some(peer) = self.peer.take() else {
            return Ok(PeerStats::default());
        };
        self.caller
            .notify(&Request::Stop, &[])
            .map_err(channel_error)?;
        peer.join()
    }
}

/// The worker: echoes, keeps the pool `configure` registered, handles
/// frames by id or by attached fd.
#[inline(never)]
fn typed_worker(channel: Channel<MAX_FDS>) -> io::Result<PeerStats> {
    let memfds = Memfds::new()?;
    let mine = memfds.borrowed();
    let (mut out, mut inbox) = (vec![0u8; BUF], vec![0u8; BUF]);
    let mut responder = Responder::<BenchProtocol, MAX_FDS>::new(channel, &mut out, &mut inbox)
        .map_err(channel_error)?;
    let mut pool = heapless::Vec::<OwnedFd, POOL>::new();
    let before = allocations();
    let mut messages = 0;
    loop {
        let mut stop = false;
        let served = responder
            .serve(|call| {
                let fds = call.fds;
                Ok(match call.request {
                    Request::Echo { data } => Reply::Echo { data },
                    Request::EchoSlice { data } => Reply::EchoSlice { data },
                    Request::EchoFds { slots, data } => {
                        for slot in slots {
                            drop(fds.claim(slot)?);
                        }
                        let mut reply = slots;
                        for (slot, fd) in reply.iter_mut().zip(mine) {
                            *slot = call.reply_fds.attach(fd)?;
                        }
                        Reply::EchoFds { slots: reply, data }
                    }
                    Request::Configure { pool: slots } => {
                        pool.clear();
                        for slot in slots {
                            let _ = pool.push(fds.claim(slot)?);
                        }
                        Reply::Configured
                    }
                    Request::FrameById { frame, buffer, pad } => {
                        let fd = pool.get(buffer as usize).ok_or(ChannelError::BadBody)?;
                        black_box(fd.as_raw_fd());
                        Reply::FrameDone { frame, pad }
                    }
                    Request::FrameWithFd { frame, buffer, pad } => {
                        let fd = fds.claim(buffer)?;
                        black_box(fd.as_raw_fd());
                        drop(fd);
                        Reply::FrameDone { frame, pad }
                    }
                    Request::Stop => {
                        stop = true;
                        Reply::Stopped
                    }
                })
            })
            .map_err(channel_error)?;
        if stop {
            break;
        }
        if matches!(served, ipc_unixsocket::calls::Served::Replied { .. }) {
            messages += 1;
        }
    }
    Ok(PeerStats {
        messages,
        allocs: allocations() - before,
    })
}

// --- (4) libcamera's IPCPipeUnixSocket, emulated. ---------------------------

/// `IPCUnixSocket`'s header datagram: `{ uint32_t data; uint8_t fds; }`,
/// 8 bytes with padding.
const IPC_HEADER: usize = 8;
/// `IPCMessage::Header`: `{ uint32_t cmd; uint32_t cookie; }`.
const IPC_MSG_HEADER: usize = 8;
const CMD_ECHO: u32 = 1;
const CMD_STOP: u32 = 0xffff;

/// `SharedFD`: a reference-counted fd (`std::shared_ptr<Descriptor>`).
type SharedFd = Arc<OwnedFd>;

/// `IPCUnixSocket::Payload`: `std::vector<uint8_t> data; std::vector<int32_t> fds;`.
#[derive(Default)]
struct Payload {
    data: Vec<u8>,
    fds: Vec<RawFd>,
}

#[derive(Clone, Copy)]
struct MsgHeader {
    cmd: u32,
    cookie: u32,
}

/// `IPCMessage`: header, `std::vector<uint8_t>`, `std::vector<SharedFD>`.
struct IpcMessage {
    header: MsgHeader,
    data: Vec<u8>,
    fds: Vec<SharedFd>,
}

impl IpcMessage {
    fn new(header: MsgHeader) -> Self {
        Self {
            header,
            data: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// `IPCMessage(IPCUnixSocket::Payload &)`: copies the data behind the
    /// header into a new vector and wraps every fd in a `SharedFD` (one
    /// `make_shared` each). Takes the fds: they are owned from here on.
    fn from_payload(payload: &mut Payload) -> Self {
        let mut message = Self::peek(payload);
        message.fds = payload
            .fds
            .drain(..)
            // SAFETY: the kernel installed these fds for this payload and
            // nothing else owns them.
            .map(|fd| Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
            .collect();
        message
    }

    /// The header and a copy of the data, the fds left in the payload
    /// (what `readyRead` builds to find the cookie).
    fn peek(payload: &Payload) -> Self {
        let h = &payload.data[..IPC_MSG_HEADER];
        Self {
            header: MsgHeader {
                cmd: u32::from_ne_bytes([h[0], h[1], h[2], h[3]]),
                cookie: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
            },
            data: payload.data[IPC_MSG_HEADER..].to_vec(),
            fds: Vec::new(),
        }
    }

    /// `IPCMessage::payload()`: a new data vector (header + data) and the
    /// raw fds.
    fn payload(&self) -> Payload {
        let mut data = vec![0u8; IPC_MSG_HEADER + self.data.len()];
        data[..4].copy_from_slice(&self.header.cmd.to_ne_bytes());
        data[4..8].copy_from_slice(&self.header.cookie.to_ne_bytes());
        data[IPC_MSG_HEADER..].copy_from_slice(&self.data);
        let mut fds = Vec::with_capacity(self.fds.len());
        for fd in &self.fds {
            fds.push(fd.as_raw_fd());
        }
        Payload { data, fds }
    }
}

/// `IPADataSerializer<std::vector<uint8_t>>`-like: a fresh vector with a
/// `u32` length and the bytes, appended byte by byte.
fn serialize_blob(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(blob.len() as u32).to_ne_bytes());
    for &byte in blob {
        out.push(byte);
    }
    out
}

fn deserialize_blob(data: &[u8]) -> io::Result<(Vec<u8>, &[u8])> {
    let len = data
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| io::Error::other("ipcpipe: short blob"))?;
    let blob = data
        .get(4..4 + len)
        .ok_or_else(|| io::Error::other("ipcpipe: short blob"))?;
    Ok((blob.to_vec(), &data[4 + len..]))
}

/// `IPADataSerializer<SharedFD>::serialize`: a data vector with the
/// "valid" flag and an fd vector with a copy of the `SharedFD`.
fn serialize_fd(fd: &SharedFd) -> (Vec<u8>, Vec<SharedFd>) {
    let mut data = Vec::new();
    data.extend_from_slice(&1u32.to_ne_bytes());
    (data, vec![Arc::clone(fd)])
}

/// The message data for `blob` and `fds` as a generated proxy builds it:
/// each parameter serialized into its own vectors, appended.
fn build(blob: &[u8], fds: &[SharedFd], message: &mut IpcMessage) {
    let buf = serialize_blob(blob);
    message.data.extend_from_slice(&buf);
    for fd in fds {
        let (buf, fvec) = serialize_fd(fd);
        message.data.extend_from_slice(&buf);
        message.fds.extend(fvec);
    }
}

/// Reads back what `build` wrote: the blob as a new vector and the
/// `SharedFD`s.
fn parse(message: &IpcMessage, nfds: usize) -> io::Result<(Vec<u8>, Vec<SharedFd>)> {
    let (blob, mut rest) = deserialize_blob(&message.data)?;
    let mut fds = Vec::new();
    for i in 0..nfds {
        if rest.len() < 4 {
            return Err(io::Error::other("ipcpipe: short fd list"));
        }
        rest = &rest[4..];
        let fd = message
            .fds
            .get(i)
            .ok_or_else(|| io::Error::other("ipcpipe: missing fd"))?;
        fds.push(Arc::clone(fd));
    }
    Ok((blob, fds))
}

/// `IPCUnixSocket` on `SOCK_DGRAM`: a header datagram, then the body with
/// the fds. Blocking, flags 0, no event loop (its cheapest version).
struct IpcUnixSocket {
    fd: OwnedFd,
}

impl IpcUnixSocket {
    fn send(&self, payload: &Payload) -> io::Result<()> {
        let len = (payload.data.len() as u32).to_ne_bytes();
        let header = [
            len[0],
            len[1],
            len[2],
            len[3],
            payload.fds.len() as u8,
            0,
            0,
            0,
        ];
        rustix::net::send(&self.fd, &header, SendFlags::empty())?;
        // sendData: `std::vector<uint8_t> buf(CMSG_SPACE(num * sizeof(uint32_t)))`.
        let num = payload.fds.len().min(MAX_FDS);
        let mut buf = vec![MaybeUninit::new(0u8); rustix::cmsg_space!(ScmRights(num))];
        // SAFETY: the fds are open for the duration of the send (the
        // message holding them outlives it).
        let borrowed: heapless::Vec<BorrowedFd<'_>, MAX_FDS> = payload.fds[..num]
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        let mut control = SendAncillaryBuffer::new(&mut buf);
        if num > 0 {
            control.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        let iov = [IoSlice::new(&payload.data)];
        sendmsg(&self.fd, &iov, &mut control, SendFlags::empty())?;
        Ok(())
    }

    fn receive(&self) -> io::Result<Payload> {
        let mut header = [0u8; IPC_HEADER];
        let (got, _) = rustix::net::recv(&self.fd, &mut header[..], RecvFlags::empty())?;
        if got != IPC_HEADER {
            return Err(io::Error::other("ipcpipe: short header"));
        }
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let num = usize::from(header[4]).min(MAX_FDS);
        let mut payload = Payload {
            data: vec![0u8; len],
            fds: vec![-1; num],
        };
        let mut buf = vec![MaybeUninit::new(0u8); rustix::cmsg_space!(ScmRights(num))];
        let mut control = RecvAncillaryBuffer::new(&mut buf);
        let mut iov = [IoSliceMut::new(&mut payload.data)];
        let msg = recvmsg(&self.fd, &mut iov, &mut control, RecvFlags::empty())?;
        if msg.bytes != len {
            return Err(io::Error::other("ipcpipe: short body"));
        }
        let mut at = 0;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    match payload.fds.get_mut(at) {
                        Some(slot) => *slot = fd.into_raw_fd(),
                        None => drop(fd),
                    }
                    at += 1;
                }
            }
        }
        payload.fds.truncate(at);
        Ok(payload)
    }
}

/// `IPCPipeUnixSocket::CallData`.
struct CallData {
    response: Option<Payload>,
    done: bool,
}

struct IpcPipeBench {
    socket: IpcUnixSocket,
    memfds: Vec<SharedFd>,
    data: Vec<u8>,
    calls: BTreeMap<u32, CallData>,
    cookie: u32,
    peer: Option<Peer>,
}

impl IpcPipeBench {
    /// The proxy method plus `IPCPipeUnixSocket::sendSync`: serialize, send,
    /// wait for the reply with our cookie, rebuild it as an `IPCMessage`,
    /// deserialize.
    fn send_sync(&mut self, blob: &[u8], nfds: usize) -> io::Result<(Vec<u8>, Vec<SharedFd>)> {
        self.cookie = self.cookie.wrapping_add(1);
        let cookie = self.cookie;
        let mut message = IpcMessage::new(MsgHeader {
            cmd: CMD_ECHO,
            cookie,
        });
        build(blob, &self.memfds[..nfds], &mut message);
        // IPCPipeUnixSocket::call(in.payload(), &response, cookie).
        let payload = message.payload();
        self.calls.insert(
            cookie,
            CallData {
                response: None,
                done: false,
            },
        );
        self.socket.send(&payload)?;
        while !self.calls.get(&cookie).is_some_and(|c| c.done) {
            self.ready_read()?;
        }
        let mut response = self
            .calls
            .remove(&cookie)
            .and_then(|c| c.response)
            .ok_or_else(|| io::Error::other("ipcpipe: no response"))?;
        // sendSync: *out = IPCMessage(response).
        let reply = IpcMessage::from_payload(&mut response);
        parse(&reply, nfds)
    }

    /// `IPCPipeUnixSocket::readyRead`: receive, look the cookie up, hand the
    /// payload to the waiting call.
    fn ready_read(&mut self) -> io::Result<()> {
        let payload = self.socket.receive()?;
        let message = IpcMessage::peek(&payload);
        match self.calls.get_mut(&message.header.cookie) {
            Some(call) => {
                call.response = Some(payload);
                call.done = true;
            }
            // An unexpected message would be an event: dropped here.
            None => close_all(payload),
        }
        Ok(())
    }

    #[inline(never)]
    fn ipcpipe_loop(&mut self, case: Case, lat: &mut [u32]) -> io::Result<Duration> {
        let nfds = case.fds();
        // The blob's length prefix and each fd's flag are part of the
        // body: the message data is `case.body()` bytes.
        let len = case.body() - 4 - 4 * nfds;
        let blob = std::mem::take(&mut self.data);
        let result = timed(lat, |_| {
            let (reply, fds) = self.send_sync(&blob[..len], nfds)?;
            if reply.len() != len || fds.len() != nfds {
                return Err(io::Error::other("ipcpipe: wrong reply"));
            }
            Ok(())
        });
        self.data = blob;
        result
    }
}

fn close_all(payload: Payload) {
    for fd in payload.fds {
        // SAFETY: received for this payload, owned by nothing else.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

impl CallBench for IpcPipeBench {
    fn run(&mut self, _: CallVariant, case: Case, lat: &mut [u32]) -> io::Result<Duration> {
        self.ipcpipe_loop(case, lat)
    }

    fn stop(&mut self) -> io::Result<PeerStats> {
        let Some(peer) = self.peer.take() else {
            return Ok(PeerStats::default());
        };
        let message = IpcMessage::new(MsgHeader {
            cmd: CMD_STOP,
            cookie: 0,
        });
        self.socket.send(&message.payload())?;
        peer.join()
    }
}

/// The IPA proxy worker: receive, rebuild as `IPCMessage`, deserialize,
/// "call the IPA", serialize the reply with its own fds, send.
#[inline(never)]
fn ipcpipe_worker(socket: IpcUnixSocket) -> io::Result<PeerStats> {
    let memfds: Vec<SharedFd> = Memfds::new()?
        .into_fds()
        .into_iter()
        .map(Arc::new)
        .collect();
    let before = allocations();
    let mut messages = 0;
    loop {
        let mut payload = socket.receive()?;
        let nfds = payload.fds.len();
        let message = IpcMessage::from_payload(&mut payload);
        if message.header.cmd == CMD_STOP {
            break;
        }
        messages += 1;
        let (blob, fds) = parse(&message, nfds)?;
        black_box(&fds);
        let mut response = IpcMessage::new(message.header);
        build(&blob, &memfds[..nfds], &mut response);
        socket.send(&response.payload())?;
    }
    Ok(PeerStats {
        messages,
        allocs: allocations() - before,
    })
}

// ---------------------------------------------------------------------------
// The section's loop.

fn start(
    instance: Instance,
    shape: Shape,
    placement: &Placement,
) -> io::Result<Box<dyn CallBench>> {
    let (fd, peer) = spawn(instance, shape, placement)?;
    if instance == Instance::ChannelRcvtimeo {
        sockopt::set_socket_timeout(&fd, Timeout::Recv, Some(TIMEOUT))?;
    }
    Ok(match instance {
        Instance::Channel | Instance::ChannelRcvtimeo => Box::new(ChannelBench {
            channel: Channel::adopt(fd).map_err(channel_error)?,
            memfds: Memfds::new()?,
            fds: heapless::Vec::new(),
            small: record_frame(Case::Small),
            large: record_frame(Case::Large),
            buf: vec![0u8; BUF],
            peer: Some(peer),
        }),
        Instance::Call => Box::new(TypedBench::new(fd, TIMEOUT, peer)?),
        Instance::CallForever => Box::new(TypedBench::new(fd, Duration::MAX, peer)?),
        Instance::IpcPipe => Box::new(IpcPipeBench {
            socket: IpcUnixSocket { fd },
            memfds: Memfds::new()?
                .into_fds()
                .into_iter()
                .map(Arc::new)
                .collect(),
            data: vec![0xA5u8; BUF],
            calls: BTreeMap::new(),
            cookie: 0,
            peer: Some(peer),
        }),
    })
}

/// Runs every selected cell of the section on `shape`.
pub fn run_section(
    config: &Config,
    shape: Shape,
    cells: &mut Vec<CallCell>,
    peers: &mut Vec<CallPeerAllocs>,
) -> io::Result<()> {
    let wanted = |v: &CallVariant| config.calls_variants.contains(v);
    let mut instances: Vec<(Instance, Box<dyn CallBench>)> = Vec::new();
    for case in &config.calls_cases {
        for variant in case.variants().iter().filter(|v| wanted(v)) {
            let instance = variant.instance();
            if !instances.iter().any(|(i, _)| *i == instance) {
                instances.push((instance, start(instance, shape, &config.placement)?));
            }
        }
    }
    let mut lat: Vec<u32> = Vec::new();
    for &case in &config.calls_cases {
        let active: Vec<CallVariant> = case.variants().iter().copied().filter(wanted).collect();
        if active.is_empty() {
            continue;
        }
        let bench_of = |instances: &mut Vec<(Instance, Box<dyn CallBench>)>, v: CallVariant| {
            instances
                .iter()
                .position(|(i, _)| *i == v.instance())
                .expect("instance started")
        };
        let op = |instances: &mut Vec<(Instance, Box<dyn CallBench>)>,
                  v: CallVariant,
                  n: u64,
                  lat: &mut Vec<u32>|
         -> io::Result<(Duration, f64)> {
            lat.clear();
            lat.resize(n as usize, 0);
            let at = bench_of(instances, v);
            let elapsed = instances[at].1.run(v, case, lat)?;
            let middle = lat.len() / 2;
            let (_, m, _) = lat.select_nth_unstable(middle);
            Ok((elapsed, f64::from(*m)))
        };
        let n = match config.fixed_n {
            Some(n) => n,
            None => {
                // Calibrated on the first variant (the baseline).
                let probe =
                    Duration::from_secs_f64((config.rep_ms / 4.0).clamp(2.0, 20.0) / 1000.0);
                let mut n = 8;
                let elapsed = loop {
                    let (elapsed, _) = op(&mut instances, active[0], n, &mut lat)?;
                    if elapsed >= probe || n >= 1 << 22 {
                        break elapsed;
                    }
                    n *= 2;
                };
                let per_op = elapsed.as_secs_f64() / n as f64;
                ((config.rep_ms / 1000.0) / per_op).clamp(32.0, 4.0e6) as u64
            }
        };
        let warm = (n / 16).clamp(4, 512);
        lat.reserve(n as usize);
        for &v in &active {
            op(&mut instances, v, (n / 4).max(warm), &mut lat)?;
        }
        let mut found: Vec<CallCell> = active
            .iter()
            .map(|&variant| CallCell {
                shape,
                case,
                variant,
                n,
                ns: Vec::with_capacity(config.reps),
                typical: Vec::with_capacity(config.reps),
                allocs: 0,
                calls: n * config.reps as u64,
            })
            .collect();
        for rep in 0..config.reps {
            for k in 0..active.len() {
                let slot = (k + rep) % active.len();
                op(&mut instances, active[slot], warm, &mut lat)?;
                let before = allocations();
                let (elapsed, typical) = op(&mut instances, active[slot], n, &mut lat)?;
                let after = allocations();
                let cell = &mut found[slot];
                cell.ns.push(elapsed.as_nanos() as f64 / n as f64);
                cell.typical.push(typical);
                cell.allocs += after - before;
            }
        }
        let mut line = format!("{:7} calls {:5} n={n:6}:", shape.id(), case.id());
        for cell in &found {
            line += &format!(" {}={:.0}", cell.variant.id(), median(&cell.ns));
        }
        eprintln!("{line}");
        cells.extend(found);
    }
    for (instance, mut bench) in instances {
        let stats = bench.stop()?;
        if shape == Shape::Process {
            peers.push(CallPeerAllocs {
                shape,
                instance: instance.id(),
                messages: stats.messages,
                allocs: stats.allocs,
            });
        }
    }
    Ok(())
}
