//! A camera pipeline and its untrusted image-processing worker (the IPA).
//!
//! ```text
//! cargo run --features worker --example camera_ipa
//! ```
//!
//! The pipeline starts the worker (this same binary, re-executed with
//! `--ipa-worker`) confined with `ipc_unixsocket::worker`: its end of a fresh
//! channel at fd 3 and nothing else inherited, its own network, IPC, UTS
//! and mount namespaces, uid `nobody`, rlimits, and a seccomp allowlist
//! the worker installs when it takes its channel. The pipeline hands it a
//! pool of four frame buffers: 320×240 8-bit luma images in sealed memfds.
//! No image data goes through the socket; only the fds do, once. Then one
//! frame per tick of a 50 ms timer: the worker maps the buffers read-only,
//! computes the mean luma and a 16-bin histogram of the one named, and
//! replies. The pipeline drives the frame timer, the channel and the
//! worker's pidfd from one `poll` loop, and checks every reply against its
//! own computation.
//!
//! # A crash, and a restart
//!
//! Frame 5 is "poisoned": handling it, the worker behaves as a compromised
//! one would and tries to open `/etc/passwd`. The seccomp filter kills it.
//! The pipeline sees the pidfd become readable, learns why the worker died
//! (`killed by SIGSYS`), asks its restart policy (`respawn limit 10 5`,
//! with backoff), starts a fresh worker, sends the pool again, and carries
//! on from the lost frame. At the end it sends `stop`, closes the channel,
//! and the worker exits 0.
//!
//! That is on x86_64 and aarch64, where seccompiler builds the filter. On
//! i686 and armv7 it builds none (`worker::SECCOMP_AVAILABLE` is false):
//! the pipeline then confines the worker with every other step and says
//! so, and the poisoned frame makes the worker `abort` instead (an open of
//! `/etc/passwd` would succeed there), so the death and the restart are
//! shown all the same (`killed by SIGABRT`).
//!
//! # The protocol
//!
//! Typed calls (`ipc_unixsocket::calls`): the `Ipa` protocol below, following
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
//! its own computation stop the demo with an error.

fn main() -> std::process::ExitCode {
    demo::main()
}

mod demo {
    use std::error::Error as StdError;
    use std::io::Write;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use ipc_unixsocket::calls::{
        Attach, Call, CallError, Caller, Cookie, FdSlot, Incoming, NoError, Protocol, Responder,
        Schema,
    };
    use ipc_unixsocket::worker::{self, Confinement, Decision, Restart, Worker, WorkerCommand};
    use ipc_unixsocket::{Channel, Error};
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::fs::{
        MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, fstat, memfd_create,
    };
    use rustix::io::Errno;
    use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create,
        timerfd_settime,
    };
    use serde::{Deserialize, Serialize};

    type Result<T, E = Box<dyn StdError>> = std::result::Result<T, E>;

    const WIDTH: usize = 320;
    const HEIGHT: usize = 240;
    const STRIDE: usize = WIDTH;
    const FRAMES: u32 = 12;
    const FRAME_INTERVAL: Duration = Duration::from_millis(50);
    /// The pipeline gives up if nothing at all happens for this long.
    const WATCHDOG: Duration = Duration::from_secs(2);
    /// The frame whose content "exploits" the worker.
    const POISONED: u32 = 5;
    const BINS: usize = 16;
    /// The pool of frame buffers, sent to each worker once.
    const BUFFERS: usize = 4;
    /// The largest message is `configure`: far below this.
    const MESSAGE: usize = 256;
    /// The argument that makes this binary the worker.
    const WORKER_ARG: &str = "--ipa-worker";

    // ---------------------------------------------------------------------------
    // The protocol
    // ---------------------------------------------------------------------------

    /// The IPA interface, as libcamera's `.mojom` files describe one.
    struct Ipa;

    impl Protocol for Ipa {
        const NAME: &'static str = "ipc-unixsocket.example.ipa";
        const VERSION: u32 = 2;
        type Request<'a> = Request<'a>;
        type Reply<'a> = Reply;
        type Event<'a> = Event;
        type Error<'a> = NoError;
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
        /// Stands for a frame whose content exploits a bug in the worker: the
        /// worker, compromised, tries to read `/etc/passwd`.
        Poisoned {
            frame: u32,
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

    #[derive(Debug, Serialize, Deserialize, Schema)]
    enum Event {
        /// The exposure and gain (8.8 fixed point) to use for frame `frame`.
        SetSensorControls {
            frame: u32,
            exposure_us: u32,
            gain_q8: u16,
        },
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (role, outcome) = match args.as_slice() {
            [] => ("camera_ipa", pipeline()),
            [arg] if arg == WORKER_ARG => ("ipa worker", worker()),
            _ => {
                eprintln!("usage: camera_ipa          (the pipeline; it starts the worker)");
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

    /// One frame buffer of the pool, with the statistics the pipeline expects.
    struct Buffer {
        fd: OwnedFd,
        expected: Stats,
    }

    /// The frame in flight: its number, its buffer, its call, when it left.
    struct InFlight {
        frame: u32,
        buffer: usize,
        cookie: Cookie,
        sent_at: Instant,
    }

    fn pipeline() -> Result<()> {
        // The frame buffers: sealed memfds, filled before streaming starts.
        let pool = (0..BUFFERS).map(Buffer::new).collect::<Result<Vec<_>>>()?;
        let mut command = WorkerCommand::current_exe()?;
        // The strict profile; where seccompiler builds no filter, without
        // its seccomp step (`spawn` would refuse it), and said so below.
        command
            .arg(WORKER_ARG)
            .confine(Confinement::strict().seccomp(worker::SECCOMP_AVAILABLE));
        // `respawn limit 10 5`, as ChromeOS runs its camera algorithms.
        let mut policy = Restart::<10>::new(Duration::from_secs(5));

        let mut next_frame = 1;
        loop {
            let started = Instant::now();
            let (mut worker, channel) = command.spawn::<BUFFERS>()?;
            let filter = if worker::SECCOMP_AVAILABLE {
                "seccomp allowlist"
            } else {
                "no seccomp filter: seccompiler builds none for this architecture"
            };
            println!(
                "pipeline: pid {}; started the IPA worker, pid {}, confined (uid nobody, own net/ipc/uts/mount namespaces, {filter})",
                std::process::id(),
                worker.pid()
            );
            match stream(channel, &mut worker, &pool, &mut next_frame, started)? {
                None => break,
                Some(reason) => match policy.on_exit(reason) {
                    decision @ Decision::Restart { after, .. } => {
                        println!("pipeline: {decision}");
                        std::thread::sleep(after);
                    }
                    decision @ Decision::GiveUp { .. } => return Err(decision.to_string().into()),
                },
            }
        }
        println!("pipeline: done");
        Ok(())
    }

    /// `init` and `configure`, then the poll loop: one frame per timer tick,
    /// replies and events as they come, the worker's pidfd beside them. Returns
    /// why the worker died, or `None` once every frame is verified and the
    /// worker has stopped.
    fn stream(
        channel: Channel<BUFFERS>,
        worker: &mut Worker,
        pool: &[Buffer],
        next_frame: &mut u32,
        started: Instant,
    ) -> Result<Option<worker::ExitReason>> {
        let (mut out, mut inbox) = ([0u8; MESSAGE], [0u8; MESSAGE]);
        let mut ipa = Caller::<Ipa, BUFFERS, 1>::new(channel, &mut out, &mut inbox)?;
        let print_event = |event: Event, _| println!("pipeline: event {event:?}");

        let init = Request::Init { sensor: "imx219" };
        let (reply, _) = ipa.call(&init, &[], WATCHDOG, print_event)?;
        println!(
            "pipeline: init -> {reply:?} ({:.1} ms after the start; seccomp filter installed: {})",
            started.elapsed().as_secs_f64() * 1e3,
            worker.is_seccomp_filtered()?
        );
        {
            // The pool goes over once per worker, as fd slots: frames name
            // buffers by index.
            let mut attach = Attach::<BUFFERS>::new();
            let mut buffers = [None; BUFFERS];
            for (slot, buffer) in buffers.iter_mut().zip(pool) {
                *slot = Some(attach.attach(buffer.fd.as_fd())?);
            }
            let configure = Request::Configure {
                buffers: buffers.map(|slot| slot.expect("one slot per buffer")),
            };
            let (reply, _) = ipa.call(&configure, attach.as_slice(), WATCHDOG, print_event)?;
            println!("pipeline: configure ({BUFFERS} buffers as fd slots) -> {reply:?}");
        }

        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        set_timer(&timer, Some(FRAME_INTERVAL))?;
        let mut in_flight: Option<InFlight> = None;
        while *next_frame <= FRAMES || in_flight.is_some() {
            let mut watch = [
                PollFd::new(&timer, PollFlags::IN),
                PollFd::new(&ipa, PollFlags::IN),
                PollFd::new(worker, PollFlags::IN),
            ];
            // Wake for the timer, the channel, the worker's death, or the
            // call's deadline.
            let wait = ipa.until_next_deadline().unwrap_or(WATCHDOG).min(WATCHDOG);
            match poll(&mut watch, Some(&timespec(wait))) {
                Ok(0) => return Err(format!("nothing happened for {WATCHDOG:?}").into()),
                Ok(_) | Err(Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
            let ticked = watch[0].revents().contains(PollFlags::IN);
            if let Some(reason) = worker.try_wait()? {
                let lost = in_flight.map_or(String::new(), |f| {
                    format!(" with frame {} in flight", f.frame)
                });
                println!("pipeline: the worker died{lost}: {reason}");
                return Ok(Some(reason));
            }
            if ticked {
                let mut expirations = [0u8; 8];
                match rustix::io::read(&timer, &mut expirations) {
                    Ok(_) | Err(Errno::AGAIN) => {}
                    Err(errno) => return Err(errno.into()),
                }
                if in_flight.is_none() && *next_frame <= FRAMES {
                    let frame = *next_frame;
                    let buffer = (frame as usize - 1) % BUFFERS;
                    let request = if frame == POISONED && !poisoned_once() {
                        if worker::SECCOMP_AVAILABLE {
                            println!(
                                "frame {frame}: poisoned: it makes the worker try to open /etc/passwd"
                            );
                        } else {
                            println!(
                                "frame {frame}: poisoned: it makes the worker abort (no seccomp filter here to catch an open of /etc/passwd)"
                            );
                        }
                        Request::Poisoned { frame }
                    } else {
                        Request::ProcessStats {
                            frame,
                            buffer: buffer as u32,
                        }
                    };
                    // Stamp first: the worker may reply before start returns.
                    let sent_at = Instant::now();
                    let cookie = ipa.start(&request, &[], Some(WATCHDOG))?;
                    in_flight = Some(InFlight {
                        frame,
                        buffer,
                        cookie,
                        sent_at,
                    });
                }
            }
            // Everything that is ready, in order: poll never blocks.
            loop {
                match ipa.try_incoming() {
                    Ok(None) => break,
                    Ok(Some(Incoming::Reply {
                        cookie,
                        reply: Reply::Stats { frame, stats },
                        ..
                    })) => {
                        let sent = in_flight
                            .take()
                            .filter(|f| f.cookie == cookie && f.frame == frame)
                            .ok_or_else(|| format!("a reply for frame {frame}, not in flight"))?;
                        check_stats(&sent, stats, pool)?;
                        *next_frame += 1;
                    }
                    Ok(Some(Incoming::Event { event, .. })) => {
                        println!("pipeline: event {event:?}")
                    }
                    // The worker is gone: its pidfd says why, at the next poll.
                    Ok(Some(Incoming::Failed {
                        error: Error::Disconnected,
                        ..
                    }))
                    | Err(Error::Disconnected) => break,
                    Ok(Some(Incoming::Failed { cookie, error })) => {
                        return Err(format!("the call with cookie {cookie} failed: {error}").into());
                    }
                    Ok(Some(other)) => return Err(format!("unexpected {other:?}").into()),
                    Err(error) => return Err(error.into()),
                }
            }
        }

        let (reply, _) = ipa.call(&Request::Stop, &[], WATCHDOG, print_event)?;
        println!("pipeline: stop -> {reply:?}; closing the channel");
        drop(ipa);
        match worker.wait_timeout(WATCHDOG)? {
            Some(reason) if reason.success() => println!("pipeline: the worker {reason}"),
            other => return Err(format!("the worker did not exit cleanly: {other:?}").into()),
        }
        Ok(None)
    }

    /// Whether the poisoned frame was sent already (once per run).
    fn poisoned_once() -> bool {
        use std::sync::atomic::{AtomicBool, Ordering};
        static SENT: AtomicBool = AtomicBool::new(false);
        SENT.swap(true, Ordering::Relaxed)
    }

    /// Checks a frame's statistics against the pipeline's own, and prints it.
    fn check_stats(sent: &InFlight, stats: Stats, pool: &[Buffer]) -> Result<()> {
        let expected = pool[sent.buffer].expected;
        if stats != expected {
            return Err(format!(
            "frame {}: the worker's statistics differ from the pipeline's:\n  worker:   {stats:?}\n  pipeline: {expected:?}",
            sent.frame
        )
        .into());
        }
        println!(
            "frame {:2}: buffer {} mean luma {:6.2}  histogram |{}|  verified, {:.2} ms round trip",
            sent.frame,
            sent.buffer,
            expected.mean(WIDTH * HEIGHT),
            expected.sparkline(),
            sent.sent_at.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    impl Buffer {
        fn new(index: usize) -> Result<Self> {
            let mut pixels = vec![0u8; STRIDE * HEIGHT];
            synthesize(index as u32, &mut pixels);
            let expected = Stats::compute(&pixels, WIDTH, HEIGHT, STRIDE);

            let fd = memfd_create("frame", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
            let mut file = std::fs::File::from(fd);
            file.write_all(&pixels)?;
            let fd = OwnedFd::from(file);
            // The worker can neither change the image nor truncate it under us.
            fcntl_add_seals(
                &fd,
                SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
            )?;
            Ok(Self { fd, expected })
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

    fn worker() -> Result<()> {
        // Its channel, checked (an AF_UNIX SOCK_SEQPACKET socket inherited at
        // fd 3), and the seccomp filter the pipeline asked for: from here on,
        // any system call outside the allowlist kills this process.
        let channel = worker::take_channel::<BUFFERS>()?;
        let (mut out, mut inbox) = ([0u8; MESSAGE], [0u8; MESSAGE]);
        let mut ipa = Responder::<Ipa, BUFFERS>::new(channel, &mut out, &mut inbox)?;
        let mut ipa_state = IpaState::default();
        loop {
            match ipa.serve(|call| ipa_state.handle(call).map_err(CallError::from)) {
                Ok(_) => {}
                // The pipeline is gone: nothing left to do.
                Err(Error::Disconnected) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The worker's state: the mapped buffer pool.
    #[derive(Default)]
    struct IpaState {
        pool: Vec<Mapping>,
    }

    impl IpaState {
        fn handle<'a>(&mut self, call: Call<'a, '_, '_, Ipa, BUFFERS>) -> Result<Reply, Error> {
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
                                return Err(Error::BadBody);
                            }
                        }
                    }
                    Ok(Reply::Configured {
                        mapped: self.pool.len() as u32,
                    })
                }
                Request::ProcessStats { frame, buffer } => {
                    let Some(mapping) = self.pool.get(buffer as usize) else {
                        eprintln!(
                            "ipa worker: frame {frame} names buffer {buffer}, not configured"
                        );
                        return Err(Error::BadBody);
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
                Request::Poisoned { frame } if !worker::SECCOMP_AVAILABLE => {
                    // No filter here to catch the open below: a plain crash
                    // instead, so the pipeline still sees a death.
                    eprintln!("ipa worker: frame {frame}: poisoned, aborting");
                    std::process::abort()
                }
                Request::Poisoned { frame } => {
                    // What a compromised worker would do; the filter kills it
                    // at the openat, before anything is read.
                    let stolen = std::fs::read_to_string("/etc/passwd");
                    eprintln!("ipa worker: frame {frame}: read /etc/passwd: {stolen:?}");
                    Err(Error::BadBody)
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
}
