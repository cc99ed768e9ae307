//! After set-up, sending and receiving messages with fds allocates nothing.
//!
//! A counting global allocator wraps `System`. Runs with `harness = false`,
//! so no test-harness thread can allocate while the loop is measured: every
//! allocation counted during the loop is one the channel made.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{identity, memfd, open_fds};
use ipc_unixsocket::{Channel, Received};

const TEST_NAME: &str = "ten_thousand_round_trips_with_fds_allocate_nothing";
const ROUND_TRIPS: u32 = 10_000;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn count(size: usize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
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

/// `(allocations, bytes)` so far.
fn counters() -> (usize, usize) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--list") {
        println!("{TEST_NAME}: test");
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    ten_thousand_round_trips_with_fds_allocate_nothing();
    println!("test {TEST_NAME} ... ok\n");
    ExitCode::SUCCESS
}

fn ten_thousand_round_trips_with_fds_allocate_nothing() {
    // The allocator is installed and counts: otherwise "0" would prove
    // nothing.
    let before = counters();
    let boxed = std::hint::black_box(Box::new([0u8; 100]));
    let after = counters();
    assert!(after.0 > before.0 && after.1 >= before.1 + 100);
    drop(boxed);

    // Set-up: channel ends, the two memfds that travel, receive buffers.
    let (pipeline, worker) = Channel::<2>::pair().unwrap();
    let frames = [memfd(b"frame buffer 0"), memfd(b"frame buffer 1")];
    let frame_ids = [identity(&frames[0]), identity(&frames[1])];
    let sent_fds = [frames[0].as_fd(), frames[1].as_fd()];
    let mut worker_data = [0u8; 64];
    let mut worker_fds = heapless::Vec::new();
    let mut pipeline_data = [0u8; 64];
    let mut pipeline_fds = heapless::Vec::new();
    let fds_before = open_fds();
    let two_fds_and_4_bytes = Ok(Received {
        data_len: 4,
        fd_count: 2,
    });

    let start = counters();
    let mut failures = 0u32;
    for i in 0..ROUND_TRIPS {
        let request = i.to_le_bytes();
        // Pipeline to worker: a sequence number and two frame buffers.
        if pipeline.send(&request, &sent_fds).is_err() {
            failures += 1;
        }
        let got = worker.recv(&mut worker_data, &mut worker_fds);
        if got != two_fds_and_4_bytes || worker_data[..4] != request || worker_fds.len() != 2 {
            failures += 1;
            continue;
        }
        // The worker got the frame buffers themselves, in order (fstat does
        // not allocate).
        for (fd, id) in worker_fds.iter().zip(frame_ids) {
            match rustix::fs::fstat(fd) {
                Ok(stat) if (stat.st_dev, stat.st_ino) == id => {}
                _ => failures += 1,
            }
        }
        // Worker to pipeline: the sequence number and the fds it received.
        let reply = [worker_fds[0].as_fd(), worker_fds[1].as_fd()];
        if worker.send(&worker_data[..4], &reply).is_err() {
            failures += 1;
        }
        let got = pipeline.recv(&mut pipeline_data, &mut pipeline_fds);
        if got != two_fds_and_4_bytes || pipeline_data[..4] != request || pipeline_fds.len() != 2 {
            failures += 1;
            continue;
        }
        // The same files came back, in order.
        for (fd, id) in pipeline_fds.iter().zip(frame_ids) {
            match rustix::fs::fstat(fd) {
                Ok(stat) if (stat.st_dev, stat.st_ino) == id => {}
                _ => failures += 1,
            }
        }
    }
    let end = counters();

    assert_eq!(failures, 0, "round trips that went wrong");
    let (allocations, bytes) = (end.0 - start.0, end.1 - start.1);
    assert_eq!(
        (allocations, bytes),
        (0, 0),
        "{ROUND_TRIPS} round trips allocated {allocations} times, {bytes} bytes"
    );
    // Received fds are replaced, not accumulated: only the last message's
    // fds are still open on each side.
    assert_eq!(open_fds(), fds_before + 4);
    drop((worker_fds, pipeline_fds));
    assert_eq!(open_fds(), fds_before);
}
