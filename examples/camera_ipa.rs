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
//! socket fails `Channel::bind`.
//!
//! # Message layout (all integers little-endian)
//!
//! Bootstrap, worker → pipeline, once: data `b"ipa hello v1"` and one fd, the
//! pipeline's end of the frame channel.
//!
//! Frame request, pipeline → worker, 16 bytes and one fd (the frame buffer,
//! a memfd sealed with `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`, holding `stride × height` bytes of 8-bit luma):
//!
//! | bytes  | field    |
//! |--------|----------|
//! | 0..4   | frame number, `u32` |
//! | 4..8   | width in pixels, `u32` |
//! | 8..12  | height in pixels, `u32` |
//! | 12..16 | stride in bytes, `u32` |
//!
//! Statistics reply, worker → pipeline, 76 bytes, no fd:
//!
//! | bytes  | field    |
//! |--------|----------|
//! | 0..4   | frame number, `u32` |
//! | 4..12  | sum of all luma values, `u64` (mean = sum / (width × height)) |
//! | 12..76 | histogram: 16 × `u32`, bin `i` counts pixels with `luma >> 4 == i` |
//!
//! The pipeline treats the worker as untrusted: a reply that the channel
//! rejects (malformed record) is logged and skipped, and a well-formed reply
//! with wrong contents stops the demo with an error.

use std::error::Error as StdError;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use ipc_unixsocket::{Channel, Error};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat, memfd_create};
use rustix::io::{Errno, FdFlags, fcntl_setfd};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::process::{Pid, getgid, getpid, getuid};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};

type Result<T, E = Box<dyn StdError>> = std::result::Result<T, E>;

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const STRIDE: usize = WIDTH;
const FRAMES: u32 = 6;
const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// The pipeline gives up if nothing at all happens for this long.
const WATCHDOG: Duration = Duration::from_secs(2);

const HELLO: &[u8] = b"ipa hello v1";
const REQUEST_LEN: usize = 16;
const BINS: usize = 16;
const STATS_LEN: usize = 4 + 8 + 4 * BINS;

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
    verified: bool,
}

fn pipeline() -> Result<()> {
    // The frame buffers: sealed memfds, filled before streaming starts.
    let mut frames = (1..=FRAMES).map(Frame::new).collect::<Result<Vec<_>>>()?;

    let (bootstrap, mut worker) = spawn_worker()?;
    let result = authenticate(bootstrap, &worker)
        .and_then(|channel| stream(&channel, &mut worker, &mut frames));
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
    // The remote end is close-on-exec. Make it inheritable just before the
    // spawn and drop our copy right after, so that only the worker holds it
    // (this program spawns nothing else meanwhile).
    fcntl_setfd(&remote, FdFlags::empty())?;
    let child = Command::new(std::env::current_exe()?)
        .arg(remote.as_raw_fd().to_string())
        .spawn()?;
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
fn authenticate(bootstrap: Channel<1>, worker: &Child) -> Result<Channel<1>> {
    let worker_pid = Pid::from_child(worker);
    let creator = bootstrap.peer_credentials()?;
    println!(
        "pipeline: bootstrap channel: SO_PEERCRED names pid {} (socketpair records its creator: this pipeline)",
        creator.pid
    );

    // The worker answers with the frame channel, a socket pair it created.
    let mut hello = [0u8; HELLO.len()];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    let got = bootstrap.recv_timeout(&mut hello, &mut fds, WATCHDOG)?;
    let (true, 1, Some(end)) = (&hello[..got.data_len] == HELLO, got.fd_count, fds.pop()) else {
        return Err("the worker's hello is not a greeting with one fd".into());
    };
    let channel = Channel::<1>::bind(end)?; // refuses anything but SOCK_SEQPACKET
    drop(bootstrap);

    let peer = channel.peer_credentials()?;
    if peer.pid != worker_pid || peer.uid != getuid() || peer.gid != getgid() {
        return Err(format!(
            "frame channel belongs to pid {} uid {} gid {}, expected the worker: pid {worker_pid} uid {} gid {}",
            peer.pid,
            peer.uid.as_raw(),
            peer.gid.as_raw(),
            getuid().as_raw(),
            getgid().as_raw()
        )
        .into());
    }
    println!(
        "pipeline: frame channel: SO_PEERCRED names pid {} uid {} gid {}: the worker, as expected",
        peer.pid,
        peer.uid.as_raw(),
        peer.gid.as_raw()
    );
    Ok(channel)
}

/// The poll loop: one frame per timer tick, replies as they come, then the
/// worker's death.
fn stream(channel: &Channel<1>, worker: &mut Child, frames: &mut [Frame]) -> Result<()> {
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
    )?;
    set_timer(&timer, Some(FRAME_INTERVAL))?;
    println!(
        "pipeline: streaming {FRAMES} frames of {WIDTH}x{HEIGHT} luma, one every {} ms",
        FRAME_INTERVAL.as_millis()
    );

    let mut next_frame = 0;
    let mut verified = 0;
    let mut killed_at = None;
    let mut reply = [0u8; STATS_LEN];
    // The worker sends statistics only: a capacity of 0 turns any fd it
    // sends into a rejected record (TooManyFds), its fds closed for us.
    let mut no_fds = heapless::Vec::<OwnedFd, 0>::new();
    loop {
        let mut watch = [
            PollFd::new(&timer, PollFlags::IN),
            PollFd::new(channel, PollFlags::IN),
        ];
        match poll(&mut watch, Some(&timespec(WATCHDOG))) {
            Ok(0) => return Err("nothing happened for 2 s: the worker stalled".into()),
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
        let tick = watch[0].revents().contains(PollFlags::IN);
        // IN, or HUP/ERR: either way try_recv has something to say.
        let channel_ready = !watch[1].revents().is_empty();

        if tick {
            let mut expirations = [0u8; 8];
            match rustix::io::read(&timer, &mut expirations) {
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(errno) => return Err(errno.into()),
            }
            if let Some(frame) = frames.get_mut(next_frame) {
                // Stamp first: the worker may run and reply before
                // try_send returns. Never block on the untrusted worker.
                frame.sent_at = Some(Instant::now());
                channel.try_send(&frame.request(), &[frame.buffer.as_fd()])?;
                next_frame += 1;
            }
            if next_frame == frames.len() {
                set_timer(&timer, None)?;
            }
        }

        if !channel_ready {
            continue;
        }
        // Drain every queued reply; poll is level-triggered, but one wakeup
        // may bring several.
        loop {
            match channel.try_recv(&mut reply, &mut no_fds) {
                Ok(got) => {
                    let frame = check_reply(&reply[..got.data_len], frames)?;
                    frame.print();
                    verified += 1;
                    if verified == frames.len() {
                        println!(
                            "pipeline: all {verified} frames verified; killing the worker (pid {}) with SIGKILL",
                            worker.id()
                        );
                        worker.kill()?;
                        killed_at = Some(Instant::now());
                    }
                }
                Err(Error::WouldBlock) => break,
                Err(Error::Disconnected) => return worker_gone(worker, killed_at),
                Err(error) if error.is_rejected_record() => {
                    // The record is gone, its fds closed; the channel is fine.
                    eprintln!("pipeline: ignoring a malformed reply from the worker: {error}");
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The channel reported `Disconnected`: fine if we killed the worker.
fn worker_gone(worker: &mut Child, killed_at: Option<Instant>) -> Result<()> {
    let Some(killed_at) = killed_at else {
        return Err("the worker died before all frames were processed".into());
    };
    println!(
        "pipeline: channel reports Error::Disconnected (\"{}\") {:.1} ms after the kill",
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

/// Decodes a statistics reply and checks it against the pipeline's own.
fn check_reply<'a>(reply: &[u8], frames: &'a mut [Frame]) -> Result<&'a mut Frame> {
    let (number, stats) = Stats::decode(reply)
        .ok_or_else(|| format!("reply of {} bytes, not {STATS_LEN}", reply.len()))?;
    let frame = frames
        .iter_mut()
        .find(|frame| frame.number == number && frame.sent_at.is_some() && !frame.verified)
        .ok_or_else(|| format!("statistics for frame {number}, which is not in flight"))?;
    if stats != frame.expected {
        return Err(format!(
            "frame {number}: the worker's statistics differ from the pipeline's:\n  worker:   {stats:?}\n  pipeline: {:?}",
            frame.expected
        )
        .into());
    }
    frame.verified = true;
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
            verified: false,
        })
    }

    fn request(&self) -> [u8; REQUEST_LEN] {
        let mut request = [0u8; REQUEST_LEN];
        for (field, value) in request.chunks_exact_mut(4).zip([
            self.number,
            WIDTH as u32,
            HEIGHT as u32,
            STRIDE as u32,
        ]) {
            field.copy_from_slice(&value.to_le_bytes());
        }
        request
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    fn encode(&self, frame: u32) -> [u8; STATS_LEN] {
        let mut out = [0u8; STATS_LEN];
        out[0..4].copy_from_slice(&frame.to_le_bytes());
        out[4..12].copy_from_slice(&self.luma_sum.to_le_bytes());
        for (field, count) in out[12..].chunks_exact_mut(4).zip(self.histogram) {
            field.copy_from_slice(&count.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(u32, Self)> {
        let bytes: &[u8; STATS_LEN] = bytes.try_into().ok()?;
        let frame = u32::from_le_bytes(bytes[0..4].try_into().ok()?);
        let luma_sum = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        let mut histogram = [0u32; BINS];
        for (count, field) in histogram.iter_mut().zip(bytes[12..].chunks_exact(4)) {
            *count = u32::from_le_bytes(field.try_into().ok()?);
        }
        Some((
            frame,
            Self {
                luma_sum,
                histogram,
            },
        ))
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
    let bootstrap = Channel::<1>::bind(inherited_fd(fd_arg)?)?;
    // Create the frame channel here, so that the pipeline's SO_PEERCRED
    // names this process, and hand the pipeline its end.
    let (channel, pipeline_end) = Channel::<1>::create()?;
    bootstrap.send(HELLO, &[pipeline_end.as_fd()])?;
    drop(pipeline_end);
    drop(bootstrap);

    let mut request = [0u8; REQUEST_LEN];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    loop {
        match channel.recv(&mut request, &mut fds) {
            Ok(got) => {
                let (frame, stats) = process(&request[..got.data_len], &fds)?;
                channel.send(&stats.encode(frame), &[])?;
            }
            // The pipeline is gone: nothing left to do.
            Err(Error::Disconnected) => return Ok(()),
            Err(error) if error.is_rejected_record() => {
                eprintln!("ipa worker: ignoring a malformed request: {error}");
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Maps one frame buffer and computes its statistics.
fn process(request: &[u8], fds: &[OwnedFd]) -> Result<(u32, Stats)> {
    let Ok(request) = <&[u8; REQUEST_LEN]>::try_from(request) else {
        return Err(format!(
            "frame request of {} bytes, not {REQUEST_LEN}",
            request.len()
        )
        .into());
    };
    let field = |i: usize| {
        let bytes = [request[i], request[i + 1], request[i + 2], request[i + 3]];
        u32::from_le_bytes(bytes) as usize
    };
    let (frame, width, height, stride) = (field(0) as u32, field(4), field(8), field(12));
    if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) || stride < width {
        return Err(
            format!("frame {frame}: bad geometry {width}x{height}, stride {stride}").into(),
        );
    }
    let [buffer] = fds else {
        return Err(format!("frame {frame}: {} fds, expected one buffer", fds.len()).into());
    };
    let len = stride * height;
    let seals = fcntl_get_seals(buffer)?;
    if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK) {
        return Err(
            format!("frame {frame}: buffer is not sealed against writes and shrinking").into(),
        );
    }
    let size = fstat(buffer)?.st_size;
    if u64::try_from(size).map_or(true, |size| size < len as u64) {
        return Err(format!("frame {frame}: buffer of {size} bytes, expected {len}").into());
    }
    let mapping = Mapping::read_only(buffer.as_fd(), len)?;
    Ok((
        frame,
        Stats::compute(mapping.bytes(), width, height, stride),
    ))
}

/// A read-only shared mapping of a sealed buffer, unmapped on drop.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len > 0` bytes of `fd`. The caller checked that the file holds
    /// at least `len` bytes and is sealed against writes and shrinking.
    fn read_only(fd: BorrowedFd<'_>, len: usize) -> rustix::io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel chooses (null
        // hint, no MAP_FIXED), so no existing memory is affected.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
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
