//! A camera pipeline and its untrusted image-processing worker (the IPA).
//!
//! ```text
//! cargo run --example camera_ipa
//! ```
//!
//! The pipeline process spawns the worker (this same binary, re-executed
//! with a channel fd number as its only argument), checks with
//! `SO_PEERCRED` who is on the other end, and hands it six frame buffers:
//! 320×240 8-bit luma images in sealed memfds, one per tick of a 100 ms
//! frame timer. No image data goes through the socket; only the fd does.
//! The worker maps each buffer read-only, computes the mean luma and a
//! 16-bin histogram, and replies. The pipeline drives the frame timer and the
//! channel from one `poll` loop, checks every reply against its own
//! computation, and prints one line per frame. Finally it kills the worker
//! with `SIGKILL`, notices through the channel (`Error::Disconnected`),
//! reaps it and exits 0.
//!
//! # Who is on the other end
//!
//! `SO_PEERCRED` (`Channel::peer_credentials`) reports the process that
//! *created* the peer socket. On a `socketpair` both ends are created by the
//! caller, so on the channel from [`Channel::create`] it names the pipeline
//! itself, never the worker it is handed to. To authenticate the worker, the
//! pipeline uses that first channel only to bootstrap: the worker creates the
//! frame channel with `Channel::create` and sends one end back. The kernel
//! recorded the worker as that socket pair's creator, so `peer_credentials`
//! on the pipeline's end names the worker's pid and uid. The pid cannot be
//! reused while the worker is an unreaped child. A worker that sends any
//! other socket fails the check; anything that is not a `SOCK_SEQPACKET`
//! socket fails `Channel::adopt`.
//!
//! # The protocol
//!
//! After that check, the two sides speak typed calls
//! (`ipc_unixsocket::calls`): the `Ipa` protocol below, following
//! libcamera's IPA flow. `init` names the sensor; `configure` hands the
//! worker the whole pool of frame buffers once, as fd slots, and the worker
//! maps them all ("mapBuffers"); then each frame is a call naming a buffer
//! by its index, carrying no fd. While the pipeline waits for a frame's
//! statistics, the worker emits an event with the sensor controls for the
//! next frame (libcamera's `setSensorControls` signal); `stop` ends the
//! stream. The messages are Rust enums, encoded with postcard; no byte
//! offsets.
//!
//! The pipeline treats the worker as untrusted: statistics that differ from
//! its own computation, or a call that fails, stop the demo with an error.

use std::error::Error as StdError;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use ipc_unixsocket::calls::{
    Attach, Call, CallError, Caller, Cookie, FdSlot, Incoming, Protocol, Responder, Schema,
};
use ipc_unixsocket::{Channel, Error};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat, memfd_create};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::process::{Pid, getgid, getpid, getuid};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};
use serde::{Deserialize, Serialize};

type Result<T, E = Box<dyn StdError>> = std::result::Result<T, E>;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const STRIDE: usize = WIDTH;
const FRAMES: u32 = 6;
const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// The pipeline gives up if nothing at all happens for this long.
const WATCHDOG: Duration = Duration::from_secs(2);

const HELLO: &[u8] = b"ipa hello v1";
const BINS: usize = 16;
/// The pool: one buffer per frame of the demo.
const BUFFERS: usize = FRAMES as usize;
/// The largest message is `configure`: far below this.
const MESSAGE: usize = 256;

// ---------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------

/// The IPA interface, as libcamera's `.mojom` files describe one.
struct Ipa;

impl Protocol for Ipa {
    const NAME: &'static str = "ipc-unixsocket.example.ipa";
    const VERSION: u32 = 1;
    type Request<'a> = Request<'a>;
    type Reply<'a> = Reply;
    type Event<'a> = Event;
    type Error<'a> = IpaError;
}

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Request<'a> {
    /// Load the tuning for this sensor.
    Init {
        sensor: &'a str,
    },
    /// The whole buffer pool: sealed memfds of `STRIDE * HEIGHT` bytes of
    /// 8-bit luma (the format both sides are built with).
    Configure {
        buffers: [FdSlot; BUFFERS],
    },
    /// Compute the statistics of this frame, held in pool buffer `buffer`.
    ProcessStats {
        frame: u32,
        buffer: u32,
    },
    Stop,
}

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Reply {
    Initialised,
    Configured { mapped: u32 },
    Stats { frame: u32, stats: Stats },
    Stopped,
}

/// How the worker's handlers fail: the pipeline gets it typed
/// (`CallError::Handler`), apart from the crate's own errors.
#[derive(Debug, Serialize, Deserialize, Schema)]
enum IpaError {
    /// The buffer in this slot is not a sealed frame of the right size.
    UnusableBuffer { slot: u8 },
    /// The frame names a buffer of the pool that was never configured.
    NotConfigured { buffer: u32 },
}

impl std::fmt::Display for IpaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnusableBuffer { slot } => write!(f, "buffer in slot {slot} is unusable"),
            Self::NotConfigured { buffer } => write!(f, "buffer {buffer} was never configured"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Schema)]
enum Event {
    /// The exposure and gain (8.8 fixed point) to use for frame `frame`.
    SetSensorControls {
        frame: u32,
        exposure_us: u32,
        gain_q8: u16,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, outcome) = match args.as_slice() {
        [] => ("camera_ipa", pipeline()),
        [fd] => ("ipa worker", worker(fd)),
        _ => {
            eprintln!("usage: camera_ipa          (the pipeline; it spawns the worker)");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{role}: error: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------

/// One frame buffer of the pool, with what the pipeline expects back.
struct Frame {
    number: u32,
    buffer: OwnedFd,
    expected: Stats,
    sent_at: Option<Instant>,
    /// The cookie of its call while it is in flight.
    cookie: Option<Cookie>,
}

fn pipeline() -> Result<()> {
    // The frame buffers: sealed memfds, filled before streaming starts.
    let mut frames = (1..=FRAMES).map(Frame::new).collect::<Result<Vec<_>>>()?;

    let (bootstrap, mut worker) = spawn_worker()?;
    let result = authenticate(bootstrap, &worker)
        .and_then(|channel| stream(channel, &mut worker, &mut frames));
    if result.is_err() {
        // Do not leave the worker behind; it would exit on its own once it
        // sees the channel close, but there is no reason to wait for that.
        let _ = worker.kill();
        let _ = worker.wait();
    }
    result
}

/// Spawns the worker; returns the bootstrap channel and the child.
fn spawn_worker() -> Result<(Channel<1>, Child)> {
    let (bootstrap, remote) = Channel::<1>::create()?;
    // The remote end is close-on-exec, and stays so in this process. The
    // child clears the flag on its own copy, between fork and exec, so that
    // only the worker inherits it; we drop our copy right after the spawn.
    let remote_fd = remote.as_raw_fd();
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(remote_fd.to_string());
    // SAFETY: the closure runs in the child between fork and exec and makes
    // one async-signal-safe call (fcntl); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(remote_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(remote);
    println!(
        "pipeline: pid {}, uid {}; spawned the IPA worker, pid {}",
        getpid(),
        getuid().as_raw(),
        child.id()
    );
    Ok((bootstrap, child))
}

/// Receives the frame channel from the worker and checks, with
/// `SO_PEERCRED`, that the worker created it.
fn authenticate(bootstrap: Channel<1>, worker: &Child) -> Result<Channel<BUFFERS>> {
    let worker_pid = Pid::from_child(worker);
    let creator = bootstrap.peer_credentials()?;
    println!(
        "pipeline: bootstrap channel: SO_PEERCRED names {creator} (socketpair records its creator: this pipeline)"
    );

    // The worker answers with the frame channel, a socket pair it created.
    let mut hello = [0u8; HELLO.len()];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    let got = bootstrap.recv_timeout(&mut hello, &mut fds, WATCHDOG)?;
    let (true, 1, Some(end)) = (&hello[..got.data_len] == HELLO, got.fd_count, fds.pop()) else {
        return Err("the worker's hello is not a greeting with one fd".into());
    };
    let channel = Channel::<BUFFERS>::adopt(end)?; // refuses anything but SOCK_SEQPACKET
    drop(bootstrap);

    let peer = channel.peer_credentials()?;
    if peer.pid != Some(worker_pid) || peer.uid != getuid() || peer.gid != getgid() {
        return Err(format!(
            "frame channel belongs to {peer}, expected the worker: pid {worker_pid} uid {} gid {}",
            getuid().as_raw(),
            getgid().as_raw()
        )
        .into());
    }
    println!("pipeline: frame channel: SO_PEERCRED names {peer}: the worker, as expected");
    Ok(channel)
}

/// `init` and `configure`, then the poll loop: one frame per timer tick,
/// replies and events as they come; then `stop`, and the worker's death.
fn stream(channel: Channel<BUFFERS>, worker: &mut Child, frames: &mut [Frame]) -> Result<()> {
    let (mut out, mut inbox) = ([0u8; MESSAGE], [0u8; MESSAGE]);
    let mut ipa = Caller::<Ipa, BUFFERS, BUFFERS>::new(channel, &mut out, &mut inbox)?;
    let print_event = |event: Event, _| println!("pipeline: event {event:?}");

    let init = Request::Init { sensor: "imx219" };
    let (reply, _) = ipa.call(&init, &[], WATCHDOG, print_event)?;
    println!("pipeline: init -> {reply:?}");

    {
        // The pool goes over once, as fd slots: frames name buffers by index.
        let mut pool = Attach::<BUFFERS>::new();
        let mut buffers = [None; BUFFERS];
        for (slot, frame) in buffers.iter_mut().zip(frames.iter()) {
            *slot = Some(pool.attach(frame.buffer.as_fd())?);
        }
        let configure = Request::Configure {
            buffers: buffers.map(|slot| slot.expect("one slot per buffer")),
        };
        let (reply, _) = ipa.call(&configure, pool.as_slice(), WATCHDOG, print_event)?;
        println!("pipeline: configure ({BUFFERS} buffers as fd slots) -> {reply:?}");
    }

    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
    )?;
    set_timer(&timer, Some(FRAME_INTERVAL))?;
    println!(
        "pipeline: streaming {FRAMES} frames of {WIDTH}x{HEIGHT} luma, one every {} ms; each call names a buffer, no fd",
        FRAME_INTERVAL.as_millis()
    );
    let mut next_frame = 0;
    let mut verified = 0;
    while verified < frames.len() {
        let mut watch = [
            PollFd::new(&timer, PollFlags::IN),
            PollFd::new(&ipa, PollFlags::IN),
        ];
        // Wake for the timer, the channel, or the first call's deadline.
        let wait = ipa.until_next_deadline().unwrap_or(WATCHDOG).min(WATCHDOG);
        match poll(&mut watch, Some(&timespec(wait))) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
        if watch[0].revents().contains(PollFlags::IN) {
            let mut expirations = [0u8; 8];
            match rustix::io::read(&timer, &mut expirations) {
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(errno) => return Err(errno.into()),
            }
            if let Some(frame) = frames.get_mut(next_frame) {
                let request = Request::ProcessStats {
                    frame: frame.number,
                    buffer: next_frame as u32,
                };
                // Stamp first: the worker may reply before start returns.
                frame.sent_at = Some(Instant::now());
                frame.cookie = Some(ipa.start(&request, &[], Some(WATCHDOG))?);
                next_frame += 1;
            }
            if next_frame == frames.len() {
                set_timer(&timer, None)?;
            }
        }
        // Everything that is ready, in order: poll never blocks.
        while let Some(incoming) = ipa.try_incoming()? {
            match incoming {
                Incoming::Reply {
                    cookie,
                    reply: Reply::Stats { frame, stats },
                    ..
                } => {
                    check_stats(cookie, frame, stats, frames)?.print();
                    verified += 1;
                }
                Incoming::Event { event, .. } => println!("pipeline: event {event:?}"),
                Incoming::HandlerError { cookie, error } => {
                    return Err(format!("the worker refused {cookie}: {error}").into());
                }
                Incoming::Failed { cookie, error } => {
                    return Err(format!("{cookie} failed: {error}").into());
                }
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
    }

    let (reply, _) = ipa.call(&Request::Stop, &[], WATCHDOG, print_event)?;
    println!("pipeline: stop -> {reply:?}");
    println!(
        "pipeline: all {verified} frames verified; killing the worker (pid {}) with SIGKILL",
        worker.id()
    );
    worker.kill()?;
    let killed_at = Instant::now();
    poll(
        &mut [PollFd::new(&ipa, PollFlags::IN)],
        Some(&timespec(WATCHDOG)),
    )?;
    match ipa.try_incoming() {
        Err(Error::Disconnected) => {}
        other => return Err(format!("after the kill: {other:?}").into()),
    }
    println!(
        "pipeline: the channel reports Error::Disconnected (\"{}\") {:.1} ms after the kill",
        Error::Disconnected,
        killed_at.elapsed().as_secs_f64() * 1e3
    );
    let status = worker.wait()?;
    println!("pipeline: reaped the worker: {status}");
    if status.signal() != Some(9) {
        return Err(format!("the worker ended with {status}, not SIGKILL").into());
    }
    println!("pipeline: done");
    Ok(())
}

/// Checks a frame's statistics against the pipeline's own.
fn check_stats(
    cookie: Cookie,
    number: u32,
    stats: Stats,
    frames: &mut [Frame],
) -> Result<&mut Frame> {
    let frame = frames
        .iter_mut()
        .find(|frame| frame.cookie == Some(cookie))
        .ok_or_else(|| format!("a reply for cookie {cookie}, which is not in flight"))?;
    if number != frame.number || stats != frame.expected {
        return Err(format!(
            "frame {}: the worker's statistics differ from the pipeline's:\n  worker:   frame {number} {stats:?}\n  pipeline: {:?}",
            frame.number, frame.expected
        )
        .into());
    }
    frame.cookie = None;
    Ok(frame)
}

impl Frame {
    fn new(number: u32) -> Result<Self> {
        let mut pixels = vec![0u8; STRIDE * HEIGHT];
        synthesize(number - 1, &mut pixels);
        let expected = Stats::compute(&pixels, WIDTH, HEIGHT, STRIDE);

        let fd = memfd_create("frame", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&pixels)?;
        let buffer = OwnedFd::from(file);
        // The worker can neither change the image nor truncate it under us.
        fcntl_add_seals(
            &buffer,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )?;
        Ok(Self {
            number,
            buffer,
            expected,
            sent_at: None,
            cookie: None,
        })
    }

    fn print(&self) {
        let round_trip = self
            .sent_at
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
        println!(
            "frame {}: mean luma {:6.2}  histogram |{}|  verified, {round_trip:.2} ms round trip",
            self.number,
            self.expected.mean(WIDTH * HEIGHT),
            self.expected.sparkline()
        );
    }
}

/// A synthetic scene: a soft spotlight sweeping left to right over a dim
/// horizontal gradient, the whole scene brightening frame by frame.
fn synthesize(frame: u32, pixels: &mut [u8]) {
    let frame = f64::from(frame);
    let (spot_x, spot_y) = (30.0 + 52.0 * frame, 110.0 + 8.0 * frame);
    let gain = 0.55 + 0.09 * frame;
    for (y, row) in pixels.chunks_exact_mut(STRIDE).enumerate() {
        for (x, pixel) in row[..WIDTH].iter_mut().enumerate() {
            let background = 24.0 + 72.0 * x as f64 / WIDTH as f64;
            let distance = (x as f64 - spot_x).hypot(y as f64 - spot_y);
            let spot = 230.0 * (1.0 - distance / 150.0).max(0.0);
            *pixel = ((background + spot) * gain).clamp(0.0, 255.0) as u8;
        }
    }
}

fn set_timer(timer: &OwnedFd, interval: Option<Duration>) -> Result<()> {
    let interval = interval.map(timespec).unwrap_or_default(); // zero disarms
    let spec = Itimerspec {
        it_interval: interval,
        it_value: interval,
    };
    timerfd_settime(timer, TimerfdTimerFlags::empty(), &spec)?;
    Ok(())
}

fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: duration.as_secs() as i64,
        tv_nsec: duration.subsec_nanos().into(),
    }
}

// ---------------------------------------------------------------------------
// Statistics, computed by both sides
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Schema)]
struct Stats {
    luma_sum: u64,
    histogram: [u32; BINS],
}

impl Stats {
    fn compute(pixels: &[u8], width: usize, height: usize, stride: usize) -> Self {
        let mut stats = Self {
            luma_sum: 0,
            histogram: [0; BINS],
        };
        for row in pixels.chunks_exact(stride).take(height) {
            for &luma in &row[..width] {
                stats.luma_sum += u64::from(luma);
                stats.histogram[usize::from(luma >> 4)] += 1;
            }
        }
        stats
    }

    fn mean(&self, pixels: usize) -> f64 {
        self.luma_sum as f64 / pixels as f64
    }

    /// The histogram as 16 block characters, scaled to the fullest bin.
    fn sparkline(&self) -> String {
        const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let max = self.histogram.iter().copied().max().unwrap_or(0).max(1);
        self.histogram
            .iter()
            .map(|&count| match count {
                0 => LEVELS[0],
                n => LEVELS[1 + (u64::from(n) * 7 / u64::from(max)) as usize],
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------

fn worker(fd_arg: &str) -> Result<()> {
    let bootstrap = Channel::<1>::adopt(inherited_fd(fd_arg)?)?;
    // Create the frame channel here, so that the pipeline's SO_PEERCRED
    // names this process, and hand the pipeline its end.
    let (channel, pipeline_end) = Channel::<BUFFERS>::create()?;
    bootstrap.send(HELLO, &[pipeline_end.as_fd()])?;
    drop(pipeline_end);
    drop(bootstrap);

    let (mut out, mut inbox) = ([0u8; MESSAGE], [0u8; MESSAGE]);
    let mut ipa = Responder::<Ipa, BUFFERS>::new(channel, &mut out, &mut inbox)?;
    let mut ipa_state = Worker::default();
    loop {
        match ipa.serve(|call| ipa_state.handle(call)) {
            Ok(_) => {}
            // The pipeline is gone: nothing left to do.
            Err(Error::Disconnected) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The worker's state: the mapped buffer pool.
#[derive(Default)]
struct Worker {
    pool: Vec<Mapping>,
}

impl Worker {
    fn handle<'a>(
        &mut self,
        call: Call<'a, '_, '_, Ipa, BUFFERS>,
    ) -> Result<Reply, CallError<IpaError>> {
        match call.request {
            Request::Init { sensor } => {
                eprintln!("ipa worker: init for sensor {sensor}");
                Ok(Reply::Initialised)
            }
            Request::Configure { buffers } => {
                self.pool.clear();
                for slot in buffers {
                    // A bad or repeated slot refuses the call (BadFdSlot).
                    let buffer = call.fds.claim(slot)?;
                    match Mapping::sealed_frame(buffer.as_fd(), STRIDE * HEIGHT) {
                        Ok(mapping) => self.pool.push(mapping),
                        Err(reason) => {
                            eprintln!("ipa worker: buffer {}: {reason}", slot.index());
                            let slot = slot.index();
                            return Err(CallError::Handler(IpaError::UnusableBuffer { slot }));
                        }
                    }
                }
                Ok(Reply::Configured {
                    mapped: self.pool.len() as u32,
                })
            }
            Request::ProcessStats { frame, buffer } => {
                let Some(mapping) = self.pool.get(buffer as usize) else {
                    eprintln!("ipa worker: frame {frame} names buffer {buffer}, not configured");
                    return Err(CallError::Handler(IpaError::NotConfigured { buffer }));
                };
                let stats = Stats::compute(mapping.bytes(), WIDTH, HEIGHT, STRIDE);
                // The controls for the next frame go out before the reply,
                // while the pipeline waits for it.
                let mean = stats.mean(WIDTH * HEIGHT).max(1.0);
                let mut events = call.events;
                events.emit(
                    &Event::SetSensorControls {
                        frame: frame + 1,
                        exposure_us: 10_000,
                        gain_q8: (110.0 / mean * 256.0).clamp(64.0, 4096.0) as u16,
                    },
                    &[],
                )?;
                Ok(Reply::Stats { frame, stats })
            }
            Request::Stop => {
                self.pool.clear();
                Ok(Reply::Stopped)
            }
        }
    }
}

/// A read-only shared mapping of a sealed buffer, unmapped on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    /// Maps a frame buffer of `len` bytes after checking that it is sealed
    /// against writes and shrinking and holds at least `len` bytes.
    fn sealed_frame(buffer: BorrowedFd<'_>, len: usize) -> Result<Self> {
        let seals = fcntl_get_seals(buffer)?;
        if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK) {
            return Err("not sealed against writes and shrinking".into());
        }
        let size = fstat(buffer)?.st_size;
        if u64::try_from(size).map_or(true, |size| size < len as u64) {
            return Err(format!("{size} bytes, expected {len}").into());
        }
        // SAFETY: a fresh mapping at an address the kernel chooses (null
        // hint, no MAP_FIXED), so no existing memory is affected.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                buffer,
                0,
            )?
        };
        Ok(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is a readable mapping that lives until
        // `drop`, and the returned slice borrows `self`. The memfd behind it
        // is sealed with F_SEAL_WRITE, so no process can change the bytes
        // while the slice exists, and with F_SEAL_SHRINK over at least `len`
        // bytes, so every page stays backed (no SIGBUS).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap, are unmapped only
        // here, and no slice from `bytes` outlives `self`.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Takes ownership of the inherited fd whose number is `arg`.
fn inherited_fd(arg: &str) -> Result<OwnedFd> {
    let fd: RawFd = arg
        .parse()
        .map_err(|_| format!("{arg:?} is not an fd number"))?;
    if fd < 3 {
        return Err(format!("fd {fd} is not an inherited channel").into());
    }
    // An OwnedFd must name an open fd: check without touching it.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}"))
        .map_err(|error| format!("fd {fd} is not open: {error}"))?;
    // SAFETY: `fd` is open (checked just above; nothing else runs in this
    // process to close it in between) and nothing else owns it: std owns only
    // 0, 1 and 2, which are refused, and the pipeline passed this fd for the
    // worker to own. It is adopted exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
