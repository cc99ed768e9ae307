//! Variant registry, peers (a thread or a re-executed copy of this binary),
//! placement on CPUs, and the measured loops.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::io::{FdFlags, fcntl_setfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

use crate::alloc_count::allocations;
use crate::variants::{
    Crate, CrateFrame, End, HEADROOM, Libcamera, MAX_DATA, Nix, Raw, Sendfd, StdDatagram, Uds,
};

/// A message of this many data bytes tells a peer to stop. No cell uses it.
pub const SENTINEL_LEN: usize = 1;
/// One-way throughput: at most this many messages in flight...
pub const WINDOW: u64 = 32;
/// ...because the sink returns one credit message per this many received.
pub const CREDIT_EVERY: u64 = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    Crate,
    CratePoll,
    CrateFrame,
    Raw,
    RawPoll,
    RawBare,
    Libcamera,
    StdDatagram,
    Nix,
    Sendfd,
    Uds,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Crate,
        Variant::CratePoll,
        Variant::CrateFrame,
        Variant::Raw,
        Variant::RawPoll,
        Variant::RawBare,
        Variant::Libcamera,
        Variant::StdDatagram,
        Variant::Nix,
        Variant::Sendfd,
        Variant::Uds,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Variant::Crate => "crate",
            Variant::CratePoll => "crate-poll",
            Variant::CrateFrame => "crate-frame",
            Variant::Raw => "raw",
            Variant::RawPoll => "raw-poll",
            Variant::RawBare => "raw-bare",
            Variant::Libcamera => "libcamera",
            Variant::StdDatagram => "std-dgram",
            Variant::Nix => "nix",
            Variant::Sendfd => "sendfd",
            Variant::Uds => "uds",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.id() == id)
    }

    pub fn description(self) -> &'static str {
        match self {
            Variant::Crate => "ipc-unixsocket, blocking `recv` (SOCK_SEQPACKET)",
            Variant::CratePoll => "ipc-unixsocket, `poll(POLLIN)` then `try_recv`",
            Variant::CrateFrame => {
                "ipc-unixsocket, `send_frame`/`recv_frame`: header in the buffer's room, one iovec segment"
            }
            Variant::Raw => {
                "floor: raw rustix `sendmsg`/`recvmsg`, SOCK_SEQPACKET, stack cmsg buffer, no validation, blocking"
            }
            Variant::RawPoll => {
                "floor under the same poll loop: `poll(POLLIN)` then raw `recvmsg(MSG_DONTWAIT)`"
            }
            Variant::RawBare => {
                "bare floor: as `raw` but the data alone in one iovec, no 8-byte header (what the header costs)"
            }
            Variant::Libcamera => {
                "libcamera design: SOCK_DGRAM, header datagram `send` then body `sendmsg` with SCM_RIGHTS"
            }
            Variant::StdDatagram => "`std::os::unix::net::UnixDatagram` `send`/`recv`, bytes only",
            Variant::Nix => {
                "nix 0.32 `sendmsg`/`recvmsg` + `ControlMessage::ScmRights`, SOCK_SEQPACKET"
            }
            Variant::Sendfd => "sendfd 0.4 `send_with_fd`/`recv_with_fd` on `UnixDatagram`",
            Variant::Uds => "uds 0.4 `UnixSeqpacketConn::send_fds`/`recv_fds`",
        }
    }

    pub fn bytes_only(self) -> bool {
        self == Variant::StdDatagram
    }

    /// The floor this variant's ratio is taken against.
    pub fn floor(self) -> Variant {
        match self {
            Variant::CratePoll | Variant::RawPoll => Variant::RawPoll,
            _ => Variant::Raw,
        }
    }
}

macro_rules! dispatch {
    ($variant:expr, $function:ident ( $($arg:expr),* )) => {
        match $variant {
            Variant::Crate => $function::<Crate<false>>($($arg),*),
            Variant::CratePoll => $function::<Crate<true>>($($arg),*),
            Variant::CrateFrame => $function::<CrateFrame>($($arg),*),
            Variant::Raw => $function::<Raw<false>>($($arg),*),
            Variant::RawPoll => $function::<Raw<true>>($($arg),*),
            Variant::RawBare => $function::<Raw<false, false>>($($arg),*),
            Variant::Libcamera => $function::<Libcamera>($($arg),*),
            Variant::StdDatagram => $function::<StdDatagram>($($arg),*),
            Variant::Nix => $function::<Nix>($($arg),*),
            Variant::Sendfd => $function::<Sendfd>($($arg),*),
            Variant::Uds => $function::<Uds>($($arg),*),
        }
    };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    Thread,
    Process,
}

impl Shape {
    pub fn id(self) -> &'static str {
        match self {
            Shape::Thread => "thread",
            Shape::Process => "process",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Thread => "threads",
            Shape::Process => "processes",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Reply to every message with one of the same size and fd count.
    Echo,
    /// Count messages; send back an empty credit message every `CREDIT_EVERY`.
    Sink,
}

impl Mode {
    fn id(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Sink => "sink",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlacementKind {
    Pinned,
    Split,
    Unpinned,
}

impl PlacementKind {
    pub fn id(self) -> &'static str {
        match self {
            PlacementKind::Pinned => "pinned",
            PlacementKind::Split => "split",
            PlacementKind::Unpinned => "unpinned",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub kind: PlacementKind,
    /// CPU of the measuring end (the main thread), if pinned.
    pub local: Option<usize>,
    /// CPU of the peer (thread or process), if pinned.
    pub peer: Option<usize>,
}

impl Placement {
    pub fn describe(&self) -> String {
        match self.kind {
            PlacementKind::Pinned => format!(
                "pinned: both ends on CPU {}",
                self.local.map_or("?".into(), |c| c.to_string())
            ),
            PlacementKind::Split => format!(
                "split: measuring end on CPU {}, peer on CPU {}",
                self.local.map_or("?".into(), |c| c.to_string()),
                self.peer.map_or("?".into(), |c| c.to_string())
            ),
            PlacementKind::Unpinned => {
                "unpinned: no affinity set, the scheduler places both ends".into()
            }
        }
    }
}

pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Pins the calling thread to `cpu` (no-op for `None`).
pub fn pin(cpu: Option<usize>) -> io::Result<()> {
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set)?;
    }
    Ok(())
}

/// What a peer reports when it stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerStats {
    pub messages: u64,
    /// Heap allocations made by the peer's loop. Only meaningful for a
    /// process peer (a thread peer shares the process-wide counter).
    pub allocs: u64,
}

enum Peer {
    Thread(JoinHandle<io::Result<PeerStats>>),
    Process(Child),
}

/// The measuring end of one variant with its peer running.
pub trait Bench {
    /// `n` round trips of `data` + `nfds` fds, each timed on its own;
    /// returns the elapsed time and the median single round trip in ns.
    fn pingpong(&mut self, data: &[u8], nfds: usize, n: u64) -> io::Result<(Duration, f64)>;
    /// `n` one-way messages of `data` with at most `WINDOW` in flight;
    /// returns the time until the last one was acknowledged.
    fn stream(&mut self, data: &[u8], n: u64) -> io::Result<Duration>;
    /// Makes room for `n` round-trip latencies, so that measuring never
    /// allocates inside the allocation-counting window.
    fn reserve(&mut self, n: u64);
    /// Stops the peer and returns its report.
    fn stop(&mut self) -> io::Result<PeerStats>;
}

struct Harness<E: End> {
    end: E,
    /// Receive buffer: `HEADROOM` bytes of room, then the data.
    buf: Vec<u8>,
    /// Send buffer, laid out the same way; filled before each timed loop.
    out: Vec<u8>,
    peer: Option<Peer>,
    /// Messages sent in stream mode for which no credit has come back yet.
    uncredited: u64,
    /// Per-round-trip latencies of the last `pingpong` call (ns).
    latencies: Vec<u32>,
}

/// Copies `data` behind the room at the front of `out` (outside the timed
/// loops) and returns the frame to send.
fn fill<'a>(out: &'a mut [u8], data: &[u8]) -> &'a mut [u8] {
    let frame = &mut out[..HEADROOM + data.len()];
    frame[HEADROOM..].copy_from_slice(data);
    frame
}

fn mismatch(what: &str, got: (usize, usize), want: (usize, usize)) -> io::Error {
    io::Error::other(format!(
        "{what}: got {} bytes + {} fds, expected {} bytes + {} fds",
        got.0, got.1, want.0, want.1
    ))
}

impl<E: End> Bench for Harness<E> {
    fn pingpong(&mut self, data: &[u8], nfds: usize, n: u64) -> io::Result<(Duration, f64)> {
        // Sized before the clock starts: the timed loop never allocates.
        self.latencies.clear();
        self.latencies.resize(n as usize, 0);
        let end = &mut self.end;
        let buf = &mut self.buf[..];
        let out = fill(&mut self.out, data);
        let start = Instant::now();
        let mut last = start;
        for slot in self.latencies.iter_mut() {
            end.send(out, nfds)?;
            let got = end.recv(buf)?;
            if got != (data.len(), nfds) {
                return Err(mismatch("echo", got, (data.len(), nfds)));
            }
            let now = Instant::now();
            *slot = u32::try_from((now - last).as_nanos()).unwrap_or(u32::MAX);
            last = now;
        }
        let elapsed = last - start;
        let middle = self.latencies.len() / 2;
        let (_, median, _) = self.latencies.select_nth_unstable(middle);
        Ok((elapsed, f64::from(*median)))
    }

    fn stream(&mut self, data: &[u8], n: u64) -> io::Result<Duration> {
        let end = &mut self.end;
        let buf = &mut self.buf[..];
        let out = fill(&mut self.out, data);
        let start = Instant::now();
        let mut sent = 0;
        while sent < n {
            if self.uncredited < WINDOW {
                end.send(out, 0)?;
                sent += 1;
                self.uncredited += 1;
            } else {
                let got = end.recv(buf)?;
                if got != (0, 0) {
                    return Err(mismatch("credit", got, (0, 0)));
                }
                self.uncredited -= CREDIT_EVERY;
            }
        }
        // Wait for everything sent to be acknowledged (n is a multiple of
        // CREDIT_EVERY, so nothing stays uncredited).
        while self.uncredited >= CREDIT_EVERY {
            let got = end.recv(buf)?;
            if got != (0, 0) {
                return Err(mismatch("credit", got, (0, 0)));
            }
            self.uncredited -= CREDIT_EVERY;
        }
        Ok(start.elapsed())
    }

    fn reserve(&mut self, n: u64) {
        let n = n as usize;
        self.latencies
            .reserve(n.saturating_sub(self.latencies.len()));
    }

    fn stop(&mut self) -> io::Result<PeerStats> {
        let Some(peer) = self.peer.take() else {
            return Ok(PeerStats::default());
        };
        self.end.send(&mut [0u8; HEADROOM + SENTINEL_LEN], 0)?;
        match peer {
            Peer::Thread(handle) => handle
                .join()
                .map_err(|_| io::Error::other("peer thread panicked"))?,
            Peer::Process(child) => {
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    return Err(io::Error::other(format!(
                        "peer process failed: {}",
                        out.status
                    )));
                }
                parse_peer_report(&String::from_utf8_lossy(&out.stdout))
            }
        }
    }
}

impl<E: End> Drop for Harness<E> {
    fn drop(&mut self) {
        if self.peer.is_some() {
            let _ = self.stop();
        }
    }
}

pub fn parse_peer_report(text: &str) -> io::Result<PeerStats> {
    let mut stats = PeerStats::default();
    for word in text.split_whitespace() {
        if let Some(v) = word.strip_prefix("messages=") {
            stats.messages = v.parse().map_err(io::Error::other)?;
        } else if let Some(v) = word.strip_prefix("allocs=") {
            stats.allocs = v.parse().map_err(io::Error::other)?;
        }
    }
    Ok(stats)
}

/// Starts `variant` with its peer on `shape`, placed per `placement`.
pub fn start(
    variant: Variant,
    shape: Shape,
    mode: Mode,
    placement: &Placement,
) -> io::Result<Box<dyn Bench>> {
    dispatch!(variant, start_as(variant, shape, mode, placement))
}

fn start_as<E: End>(
    variant: Variant,
    shape: Shape,
    mode: Mode,
    placement: &Placement,
) -> io::Result<Box<dyn Bench>> {
    let kind = if E::DGRAM {
        SocketType::DGRAM
    } else {
        SocketType::SEQPACKET
    };
    let (local, remote) = socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    let cpu = placement.peer;
    let peer = match shape {
        Shape::Thread => Peer::Thread(
            std::thread::Builder::new()
                .name(format!("peer-{}", variant.id()))
                .spawn(move || {
                    pin(cpu)?;
                    serve(E::from_fd(remote)?, mode)
                })?,
        ),
        Shape::Process => {
            // Only this one fd loses close-on-exec, and only until the
            // child has it; spawns are sequential.
            fcntl_setfd(&remote, FdFlags::empty())?;
            let child = Command::new(std::env::current_exe()?)
                .arg("--peer")
                .arg(variant.id())
                .arg("--fd")
                .arg(remote.as_raw_fd().to_string())
                .arg("--mode")
                .arg(mode.id())
                .arg("--cpu")
                .arg(cpu.map_or("none".to_string(), |c| c.to_string()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()?;
            drop(remote);
            Peer::Process(child)
        }
    };
    Ok(Box::new(Harness {
        end: E::from_fd(local)?,
        buf: vec![0u8; HEADROOM + MAX_DATA],
        out: vec![0u8; HEADROOM + MAX_DATA],
        peer: Some(peer),
        uncredited: 0,
        latencies: Vec::new(),
    }))
}

/// The peer's loop: echo or sink until the sentinel.
fn serve<E: End>(mut end: E, mode: Mode) -> io::Result<PeerStats> {
    let mut buf = vec![0u8; HEADROOM + MAX_DATA];
    let before = allocations();
    let mut messages = 0u64;
    loop {
        let (len, nfds) = end.recv(&mut buf)?;
        if len == SENTINEL_LEN {
            break;
        }
        messages += 1;
        match mode {
            Mode::Echo => end.send(&mut buf[..HEADROOM + len], nfds)?,
            Mode::Sink => {
                if messages.is_multiple_of(CREDIT_EVERY) {
                    end.send(&mut [0u8; HEADROOM], 0)?;
                }
            }
        }
    }
    Ok(PeerStats {
        messages,
        allocs: allocations() - before,
    })
}

/// Entry point of a re-executed peer process:
/// `--peer ID --fd N --mode echo|sink --cpu N|none`.
pub fn peer_main(args: &[String]) -> io::Result<()> {
    let value = |flag: &str| -> io::Result<&str> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .ok_or_else(|| io::Error::other(format!("peer: missing {flag}")))
    };
    // Die with the parent: a SOCK_DGRAM peer never sees end-of-file.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let variant = Variant::from_id(value("--peer")?)
        .ok_or_else(|| io::Error::other("peer: unknown variant"))?;
    let raw: i32 = value("--fd")?.parse().map_err(io::Error::other)?;
    let mode = match value("--mode")? {
        "echo" => Mode::Echo,
        "sink" => Mode::Sink,
        other => return Err(io::Error::other(format!("peer: unknown mode {other}"))),
    };
    let cpu = match value("--cpu")? {
        "none" => None,
        n => Some(n.parse().map_err(io::Error::other)?),
    };
    pin(cpu)?;
    // SAFETY: the parent passed us this fd number and no one else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stats = dispatch!(variant, serve_fd(fd, mode))?;
    println!("messages={} allocs={}", stats.messages, stats.allocs);
    Ok(())
}

fn serve_fd<E: End>(fd: OwnedFd, mode: Mode) -> io::Result<PeerStats> {
    serve(E::from_fd(fd)?, mode)
}
