//! Memory figures: type sizes, the stack a receive needs (measured by
//! painting a thread's stack), and the size of the stripped `echo` binaries.

use std::ffi::c_void;
use std::hint::black_box;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use ipc_unixsocket::{Channel, HEADER_LEN, Payload};
use rustix::io::IoSliceMut;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

#[derive(serde::Serialize)]
pub struct StackFigure {
    pub what: &'static str,
    /// Bytes from the caller's stack pointer to the deepest byte written.
    pub bytes: usize,
}

#[derive(serde::Serialize)]
pub struct BinarySize {
    pub what: String,
    pub path: String,
    pub unstripped: u64,
    pub stripped: u64,
}

pub struct Memory {
    pub channel8: usize,
    pub channel4: usize,
    pub payload_4096_8: usize,
    pub heapless_fds8: usize,
    pub stack: Result<Vec<StackFigure>, String>,
    pub stack_size: usize,
    pub binaries: Result<Vec<BinarySize>, String>,
    /// Time spent building the binaries.
    pub build_time: std::time::Duration,
}

pub fn measure(binary_sizes: bool) -> Memory {
    let started = std::time::Instant::now();
    let binaries = if binary_sizes {
        binaries()
    } else {
        Err("not measured (--no-binary-sizes or --quick)".into())
    };
    let build_time = started.elapsed();
    Memory {
        build_time,
        channel8: size_of::<Channel<8>>(),
        channel4: size_of::<Channel<4>>(),
        payload_4096_8: size_of::<Payload<{ HEADER_LEN + 4096 }, 8>>(),
        heapless_fds8: size_of::<heapless::Vec<OwnedFd, 8>>(),
        stack: stack_figures().map_err(|e| e.to_string()),
        stack_size: STACK_SIZE,
        binaries,
    }
}

// ---------------------------------------------------------------------------
// Stack high-water marks.

const STACK_SIZE: usize = 256 * 1024;

#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let marker = 0u8;
        sp = std::ptr::addr_of!(marker) as usize;
    }
    sp
}

struct Job {
    run: fn(*mut c_void),
    ctx: *mut c_void,
    sp: usize,
}

extern "C" fn trampoline(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Job` that `high_water` keeps alive until join.
    let job = unsafe { &mut *arg.cast::<Job>() };
    job.sp = stack_pointer();
    (black_box(job.run))(job.ctx);
    std::ptr::null_mut()
}

/// Runs `run(ctx)` on a fresh pthread whose stack is a buffer we own and
/// painted with `pattern`, then returns the distance from the stack pointer
/// just before the call to the deepest byte that no longer holds the
/// pattern: the stack that call needed (its frames, and the return address).
fn high_water(run: fn(*mut c_void), ctx: *mut c_void, pattern: u8) -> io::Result<usize> {
    let mut stack = vec![0u128; STACK_SIZE / 16]; // 16-byte aligned
    let base = stack.as_mut_ptr().cast::<u8>();
    // SAFETY: `base` points to STACK_SIZE bytes we own.
    unsafe { std::ptr::write_bytes(base, pattern, STACK_SIZE) };
    let mut job = Job { run, ctx, sp: 0 };
    // SAFETY: plain pthread calls on a stack buffer that outlives the
    // thread (joined before `stack` is read or dropped).
    unsafe {
        let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
        check(libc::pthread_attr_init(attr.as_mut_ptr()))?;
        let mut attr = attr.assume_init();
        check(libc::pthread_attr_setstack(
            &mut attr,
            base.cast(),
            STACK_SIZE,
        ))?;
        let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
        check(libc::pthread_create(
            thread.as_mut_ptr(),
            &attr,
            trampoline,
            (&raw mut job).cast(),
        ))?;
        check(libc::pthread_join(
            thread.assume_init(),
            std::ptr::null_mut(),
        ))?;
        libc::pthread_attr_destroy(&mut attr);
    }
    // SAFETY: the thread is joined; the buffer is ours again.
    let bytes = unsafe { std::slice::from_raw_parts(base, STACK_SIZE) };
    let deepest = bytes
        .iter()
        .position(|&b| b != pattern)
        .ok_or_else(|| io::Error::other("stack untouched?"))?;
    let deepest = base as usize + deepest;
    if deepest == base as usize {
        return Err(io::Error::other("stack overflowed the painted buffer"));
    }
    Ok(job.sp - deepest)
}

fn check(rc: i32) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The deepest of two runs with different patterns, so a frame that happens
/// to write the pattern byte cannot hide.
fn measure_call<T>(
    ctx: &mut T,
    prepare: fn(&mut T) -> io::Result<()>,
    run: fn(*mut c_void),
) -> io::Result<usize> {
    let mut deepest = 0;
    for pattern in [0xA5, 0x5A] {
        prepare(ctx)?;
        deepest = deepest.max(high_water(run, (ctx as *mut T).cast(), pattern)?);
    }
    Ok(deepest)
}

struct RecvCtx {
    tx: Channel<8>,
    rx: Channel<8>,
    memfds: Vec<OwnedFd>,
    data: Vec<u8>,
    fds: heapless::Vec<OwnedFd, 8>,
    fds1: heapless::Vec<OwnedFd, 1>,
    fds0: heapless::Vec<OwnedFd, 0>,
    payload: Box<Payload<{ HEADER_LEN + 4096 }, 8>>,
    ok: bool,
}

fn queue(ctx: &mut RecvCtx, nfds: usize) -> io::Result<()> {
    let borrowed: Vec<_> = ctx.memfds[..nfds].iter().map(|fd| fd.as_fd()).collect();
    ctx.tx
        .send(&ctx.data[..4096], &borrowed)
        .map_err(io::Error::other)?;
    ctx.ok = false;
    ctx.fds.clear();
    ctx.fds1.clear();
    Ok(())
}

fn queue_message(ctx: &mut RecvCtx) -> io::Result<()> {
    queue(ctx, 8)
}

fn queue_one_fd(ctx: &mut RecvCtx) -> io::Result<()> {
    queue(ctx, 1)
}

fn queue_no_fd(ctx: &mut RecvCtx) -> io::Result<()> {
    queue(ctx, 0)
}

#[inline(never)]
fn run_empty(ctx: *mut c_void) {
    black_box(ctx);
}

#[inline(never)]
fn run_channel_recv(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `RecvCtx` passed to `measure_call`.
    let ctx = unsafe { &mut *ctx.cast::<RecvCtx>() };
    let got = ctx.rx.recv(&mut ctx.data, &mut ctx.fds);
    ctx.ok = matches!(got, Ok(r) if r.data_len == 4096 && r.fd_count == 8);
}

#[inline(never)]
fn run_channel_recv_capacity_1(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `RecvCtx` passed to `measure_call`.
    let ctx = unsafe { &mut *ctx.cast::<RecvCtx>() };
    let got = ctx.rx.recv(&mut ctx.data, &mut ctx.fds1);
    ctx.ok = matches!(got, Ok(r) if r.data_len == 4096 && r.fd_count == 1);
}

#[inline(never)]
fn run_channel_recv_capacity_0(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `RecvCtx` passed to `measure_call`.
    let ctx = unsafe { &mut *ctx.cast::<RecvCtx>() };
    let got = ctx.rx.recv(&mut ctx.data, &mut ctx.fds0);
    ctx.ok = matches!(got, Ok(r) if r.data_len == 4096 && r.fd_count == 0);
}

#[inline(never)]
fn run_payload_recv(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `RecvCtx` passed to `measure_call`.
    let ctx = unsafe { &mut *ctx.cast::<RecvCtx>() };
    let got = ctx.payload.recv(&ctx.rx);
    ctx.ok = matches!(got, Ok(r) if r.data_len == 4096 && r.fd_count == 8);
}

#[inline(never)]
fn run_raw_recv(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `RecvCtx` passed to `measure_call`.
    let ctx = unsafe { &mut *ctx.cast::<RecvCtx>() };
    let mut head = [0u8; 8];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut head), IoSliceMut::new(&mut ctx.data)];
    let got = recvmsg(&ctx.rx, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC);
    let mut nfds = 0;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                nfds += 1;
                drop(fd);
            }
        }
    }
    ctx.ok = matches!(got, Ok(m) if m.bytes == 4104) && nfds == 8;
}

fn stack_figures() -> io::Result<Vec<StackFigure>> {
    let (tx, rx) = Channel::<8>::pair().map_err(io::Error::other)?;
    let memfds = (0..8)
        .map(|_| rustix::fs::memfd_create("stack", rustix::fs::MemfdFlags::CLOEXEC))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ctx = RecvCtx {
        tx,
        rx,
        memfds,
        data: vec![7u8; 4096],
        fds: heapless::Vec::new(),
        fds1: heapless::Vec::new(),
        fds0: heapless::Vec::new(),
        payload: Box::new(Payload::new()),
        ok: false,
    };
    let nothing = |_: &mut RecvCtx| Ok(());
    let baseline = measure_call(&mut ctx, nothing, run_empty)?;
    let mut figures = vec![StackFigure {
        what: "baseline: the same harness calling an empty non-inlined function",
        bytes: baseline,
    }];
    type Case = (
        &'static str,
        fn(&mut RecvCtx) -> io::Result<()>,
        fn(*mut c_void),
    );
    let cases: [Case; 5] = [
        (
            "`Channel::<8>::recv`, 4096 data bytes + 8 fds, capacity 8",
            queue_message,
            run_channel_recv,
        ),
        (
            "`Channel::<8>::recv`, 4096 data bytes + 1 fd, capacity 1",
            queue_one_fd,
            run_channel_recv_capacity_1,
        ),
        (
            "`Channel::<8>::recv`, 4096 data bytes, capacity 0",
            queue_no_fd,
            run_channel_recv_capacity_0,
        ),
        (
            "`Payload::<{ HEADER_LEN + 4096 }, 8>::recv` (payload itself not on this stack)",
            queue_message,
            run_payload_recv,
        ),
        (
            "raw floor: rustix `recvmsg`, `cmsg_space!(ScmRights(8))` stack buffer, 8 fds",
            queue_message,
            run_raw_recv,
        ),
    ];
    for (what, prepare, run) in cases {
        let bytes = measure_call(&mut ctx, prepare, run)?;
        if !ctx.ok {
            return Err(io::Error::other(format!("{what}: receive failed")));
        }
        figures.push(StackFigure { what, bytes });
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------
// Binary sizes.

fn file_size(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("  $ cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .output()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        Err(format!(
            "`cargo {}` failed: {}",
            args.join(" "),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }
}

fn stripped_size(path: &Path, into: &Path) -> Result<u64, String> {
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let copy = into.join(path.file_name().unwrap());
    std::fs::copy(path, &copy).map_err(|e| format!("copy {}: {e}", path.display()))?;
    let status = Command::new("strip")
        .arg("--strip-all")
        .arg(&copy)
        .status()
        .map_err(|e| format!("strip: {e}"))?;
    if !status.success() {
        return Err(format!("strip {} failed", copy.display()));
    }
    file_size(&copy)
}

/// Builds the crate's `echo` example and `echo_std` (this package) in
/// release mode with default profiles, strips copies and reports sizes.
fn binaries() -> Result<Vec<BinarySize>, String> {
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = bench.parent().ok_or("no parent of bench/")?.to_path_buf();
    let target = bench.join("target");
    let sizes_target = target.join("echo-size");
    let stripped = target.join("stripped");
    let root_manifest = root.join("Cargo.toml");
    let bench_manifest = bench.join("Cargo.toml");
    let mut out = Vec::new();
    let mut build = |what: &str, args: &[&str], binary: PathBuf| -> Result<(), String> {
        cargo(args)?;
        out.push(BinarySize {
            what: what.into(),
            path: binary
                .strip_prefix(&root)
                .unwrap_or(&binary)
                .display()
                .to_string(),
            unstripped: file_size(&binary)?,
            stripped: stripped_size(&binary, &stripped)?,
        });
        Ok(())
    };
    build(
        "`examples/echo.rs` (ipc-unixsocket)",
        &[
            "build",
            "--release",
            "--quiet",
            "--example",
            "echo",
            "--manifest-path",
            root_manifest.to_str().unwrap(),
            "--target-dir",
            sizes_target.to_str().unwrap(),
        ],
        sizes_target.join("release/examples/echo"),
    )?;
    build(
        "`bench/src/bin/echo_std.rs` (std + hand-written libc FFI)",
        &[
            "build",
            "--release",
            "--quiet",
            "--bin",
            "echo_std",
            "--manifest-path",
            bench_manifest.to_str().unwrap(),
        ],
        target.join("release/echo_std"),
    )?;
    Ok(out)
}
