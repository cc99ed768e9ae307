//! A camera daemon that independent clients connect to, each getting every
//! frame as a sealed memfd.
//!
//! ```text
//! cargo run --example camera_daemon
//! ```
//!
//! The daemon listens on `camera.sock` in a fresh directory under the
//! temp dir (mode 0600: only its own uid may connect, and a policy checks
//! the uid again at accept time), and spawns four clients of its own (this
//! binary re-executed as `camera_daemon client ROLE PATH`):
//!
//! - `viewer` and `recorder` read every frame, check its seals and
//!   contents, and report how many they got;
//! - `crasher` reads three frames, sends a garbage record and `SIGKILL`s
//!   itself;
//! - `stalled` subscribes and never reads again.
//!
//! One `poll` loop watches the listener, a 20 ms frame timer (a timerfd)
//! and a fixed table of clients (`heapless::Vec`). Each client's socket
//! holds only a few frames (`SO_SNDBUF`); a frame that does not fit
//! (`try_send` says `WouldBlock`) drops that client, so a client that stops
//! reading never stalls the others. The loop counts its heap allocations
//! with a counting global allocator, prints the count (0), and the daemon
//! exits 1 if it is not 0.
//!
//! Protocol: a client sends `b"subscribe"`; each frame is 4 data bytes (the
//! frame number, little-endian) and one fd, a memfd of `FRAME_LEN` bytes
//! all equal to the frame number's low byte, sealed with `F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error as StdError;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipc_unixsocket::{Channel, Credentials, Error, Listener, Mode};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{MemfdFlags, SealFlags, fcntl_add_seals, fcntl_get_seals, memfd_create};
use rustix::io::Errno;
use rustix::net::sockopt::set_socket_send_buffer_size;
use rustix::process::{Signal, getpid, getuid, kill_process};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};

type Result<T, E = Box<dyn StdError>> = std::result::Result<T, E>;

const FRAMES: u32 = 60;
const FRAME_INTERVAL: Duration = Duration::from_millis(20);
const FRAME_LEN: usize = 4096;
/// Per-client socket buffer: a few frames (the kernel doubles it).
const SNDBUF: usize = 8 * 1024;
const MAX_CLIENTS: usize = 8;
const ROLES: [&str; 4] = ["viewer", "recorder", "crasher", "stalled"];
const WATCHDOG: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [] => daemon(),
        [client, role, path] if client == "client" => run_client(role, path),
        _ => Err("usage: camera_daemon (it spawns its own clients)".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("camera_daemon: error: {error}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon

struct Client {
    channel: Channel<1>,
    peer: Credentials,
    subscribed: bool,
}

fn daemon() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("camera-daemon-{}", getpid()));
    std::fs::create_dir(&dir)?;
    let path = dir.join("camera.sock");
    let result = serve(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

fn serve(path: &std::path::Path) -> Result<()> {
    let listener = Listener::<1>::bind(path, Mode::from_raw_mode(0o600))?;
    println!("daemon: pid {}, listening on {}", getpid(), path.display());
    let mut children = Vec::new();
    for role in ROLES {
        let child = Command::new(std::env::current_exe()?)
            .args(["client", role])
            .arg(path)
            .spawn()?;
        println!("daemon: spawned {role}, pid {}", child.id());
        children.push((role, child));
    }
    let timer = rustix::time::timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
    )?;

    let mut clients = heapless::Vec::<Client, MAX_CLIENTS>::new();
    let (mut frame, mut iterations, mut subscriptions) = (0u32, 0u32, 0usize);
    let mut streaming = false;
    let mut accepting = true;
    let mut data = [0u8; 16];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    let own_uid = getuid();
    let mut last_event = Instant::now();
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    // The counter works: setting up (spawning the clients) allocated.
    assert!(allocations_before > 0);
    while frame < FRAMES {
        iterations += 1;
        // Watch the timer, the listener and every client; poll is
        // level-triggered, so each ready fd is drained below.
        let mut watch = heapless::Vec::<PollFd<'_>, { MAX_CLIENTS + 2 }>::new();
        let _ = watch.push(PollFd::new(&timer, PollFlags::IN));
        let listening = if accepting {
            PollFlags::IN
        } else {
            PollFlags::empty()
        };
        let _ = watch.push(PollFd::new(&listener, listening));
        for client in &clients {
            let _ = watch.push(PollFd::new(&client.channel, PollFlags::IN));
        }
        match poll(&mut watch, Some(&timespec(Duration::from_millis(500)))) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
        let mut ready = [false; MAX_CLIENTS + 2];
        for (ready, fd) in ready.iter_mut().zip(&watch) {
            *ready = !fd.revents().is_empty();
        }
        drop(watch);
        if ready.contains(&true) {
            last_event = Instant::now();
        } else if last_event.elapsed() > WATCHDOG {
            return Err("nothing happened for 10 s".into());
        }

        // Clients first (their indices are those of the poll set), from
        // the last so that removing one does not move the others.
        for i in (0..clients.len()).rev() {
            if !ready[i + 2] {
                continue;
            }
            let who = clients[i].peer;
            loop {
                match clients[i].channel.try_recv(&mut data, &mut fds) {
                    Ok(got) if &data[..got.data_len] == b"subscribe" && !clients[i].subscribed => {
                        clients[i].subscribed = true;
                        subscriptions += 1;
                        println!("daemon: {who} subscribed");
                    }
                    Ok(got) => println!("daemon: {who}: ignored {} bytes", got.data_len),
                    Err(Error::WouldBlock) => break,
                    Err(Error::Disconnected) => {
                        println!("daemon: {who} hung up; removed it");
                        accepting = true;
                        clients.swap_remove(i);
                        break;
                    }
                    Err(e) if e.is_rejected_record() => {
                        println!("daemon: {who}: rejected a record: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }

        if ready[1] {
            loop {
                let accepted = match listener.try_accept_with(|peer| peer.uid == own_uid) {
                    Ok(accepted) => accepted,
                    Err(Error::WouldBlock) => break,
                    // One failed accept does not stop the daemon. At the fd
                    // limit (EMFILE) the connection stays queued, so the
                    // listener is left unwatched until a client leaves.
                    Err(e) => {
                        println!("daemon: accept failed: {e}; not accepting until a client leaves");
                        accepting = false;
                        break;
                    }
                };
                let peer = accepted.peer;
                // A few frames of room: a client that falls that far
                // behind is dropped.
                set_socket_send_buffer_size(&accepted.channel, SNDBUF)?;
                let client = Client {
                    channel: accepted.channel,
                    peer,
                    subscribed: false,
                };
                match clients.push(client) {
                    Ok(()) => println!("daemon: accepted {peer}"),
                    Err(_) => println!("daemon: client table full; turned {peer} away"),
                }
            }
        }

        if ready[0] {
            let mut expirations = [0u8; 8];
            let _ = rustix::io::read(&timer, &mut expirations);
            frame += 1;
            let buffer = make_frame(frame)?;
            let mut sent = 0;
            for i in (0..clients.len()).rev() {
                if !clients[i].subscribed {
                    continue;
                }
                match clients[i]
                    .channel
                    .try_send(&frame.to_le_bytes(), &[buffer.as_fd()])
                {
                    Ok(()) => sent += 1,
                    Err(Error::WouldBlock) => {
                        println!(
                            "daemon: {} stopped reading (socket full at frame {frame}); dropped it",
                            clients[i].peer
                        );
                        accepting = true;
                        clients.swap_remove(i);
                    }
                    Err(Error::Disconnected) => {
                        println!("daemon: {} is gone; removed it", clients[i].peer);
                        accepting = true;
                        clients.swap_remove(i);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if frame % 20 == 0 || frame == 1 {
                println!("daemon: frame {frame} sent to {sent} clients");
            }
        }
        if subscriptions == ROLES.len() && !streaming {
            println!(
                "daemon: all {} clients subscribed; starting the frame timer",
                ROLES.len()
            );
            set_timer(&timer, FRAME_INTERVAL)?;
            streaming = true;
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    println!(
        "daemon: {FRAMES} frames sent; the poll loop made {allocations} heap allocations in {iterations} iterations; refused {} connections",
        listener.refused()
    );
    drop(clients); // hang up: the readers see Disconnected
    for (role, mut child) in children {
        let status = child.wait()?;
        let expected = if role == "crasher" {
            status.signal() == Some(Signal::KILL.as_raw())
        } else {
            status.success()
        };
        println!("daemon: {role} exited: {status}");
        if !expected {
            return Err(format!("{role} ended with {status}").into());
        }
    }
    if allocations != 0 {
        return Err("the poll loop allocated".into());
    }
    println!("daemon: done");
    Ok(())
}

/// A memfd holding frame `number`, sealed against any change.
fn make_frame(number: u32) -> Result<OwnedFd> {
    let fd = memfd_create("frame", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let pixels = [number as u8; FRAME_LEN];
    let mut written = 0;
    while written < FRAME_LEN {
        written += rustix::io::write(&fd, &pixels[written..])?;
    }
    fcntl_add_seals(
        &fd,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(fd)
}

fn set_timer(timer: &OwnedFd, interval: Duration) -> Result<()> {
    let spec = Itimerspec {
        it_interval: timespec(interval),
        it_value: timespec(interval),
    };
    rustix::time::timerfd_settime(timer, TimerfdTimerFlags::empty(), &spec)?;
    Ok(())
}

fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: duration.as_secs() as i64,
        tv_nsec: duration.subsec_nanos().into(),
    }
}

// ---------------------------------------------------------------------------
// The clients

fn run_client(role: &str, path: &str) -> Result<()> {
    let channel = Channel::<1>::connect_timeout(path, WATCHDOG)?;
    channel.send(b"subscribe", &[])?;
    let me = getpid();
    if role == "stalled" {
        // Never read: wait for the hang-up alone (POLLHUP needs no
        // request), then see what was left queued.
        let mut watch = [PollFd::new(&channel, PollFlags::empty())];
        poll(&mut watch, Some(&timespec(WATCHDOG)))?;
        let queued = read_frames(&channel, u32::MAX)?;
        println!("{role} (pid {me}): the daemon dropped me with {queued} frames unread");
        return Ok(());
    }
    if role == "crasher" {
        read_frames(&channel, 3)?;
        // Garbage instead of a record header, then a sudden death.
        rustix::net::send(
            &channel,
            b"XX not a header",
            rustix::net::SendFlags::empty(),
        )?;
        println!("{role} (pid {me}): sent garbage, now SIGKILLing myself");
        kill_process(me, Signal::KILL)?;
    }
    let got = read_frames(&channel, u32::MAX)?;
    println!("{role} (pid {me}): got all {got} frames, each sealed and intact");
    if got != FRAMES {
        return Err(format!("{role} got {got} frames, not {FRAMES}").into());
    }
    Ok(())
}

/// Reads and checks frames 1, 2, ... until `limit` or the hang-up; returns
/// how many.
fn read_frames(channel: &Channel<1>, limit: u32) -> Result<u32> {
    let mut data = [0u8; 4];
    let mut fds = heapless::Vec::<OwnedFd, 1>::new();
    let mut count = 0;
    while count < limit {
        match channel.recv_timeout(&mut data, &mut fds, WATCHDOG) {
            Ok(got) if got.data_len == 4 && got.fd_count == 1 => {}
            Ok(got) => return Err(format!("unexpected message {got:?}").into()),
            Err(Error::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
        count += 1;
        let number = u32::from_le_bytes(data);
        let seals = fcntl_get_seals(&fds[0])?;
        let mut pixels = [0u8; FRAME_LEN];
        let read = rustix::io::pread(&fds[0], &mut pixels, 0)?;
        if number != count
            || !seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE)
            || read != FRAME_LEN
            || pixels.iter().any(|&p| p != number as u8)
        {
            return Err(format!("frame {number} (expected {count}) is wrong").into());
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// Counting allocations

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every method forwards to `System` unchanged; counting touches
// only an atomic and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
