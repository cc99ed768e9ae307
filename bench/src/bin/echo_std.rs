//! `echo_std <FD>`: the crate's `examples/echo.rs`, rewritten with std only
//! (no crates), for the binary-size comparison in the benchmark report.
//!
//! Same behaviour: adopts an inherited `AF_UNIX` `SOCK_SEQPACKET` socket
//! (checked with `SO_DOMAIN`/`SO_TYPE`, then `FD_CLOEXEC`), receives wire
//! format v1 records (8-byte header `b"IP"`, 1, fd count, u32 LE length) with
//! up to 4096 data bytes and 8 fds, validates them in the crate's order
//! (short, magic, version, length, fd count, truncated, too many fds), sends
//! every valid message back as one record with the same bytes and fds, logs
//! one line per rejected record, and exits 0 when the peer closes.
//!
//! Stable std has no `sendmsg`/`recvmsg` with `SCM_RIGHTS`, so the few C
//! library calls needed are declared here by hand (std links the C library
//! anyway); the structure layouts are Linux's on 64-bit targets.

use std::ffi::{c_int, c_void};
use std::io;
use std::mem::size_of;
use std::process::ExitCode;

const MAX_DATA: usize = 4096;
const MAX_FDS: usize = 8;
const HEADER_LEN: usize = 8;

const USAGE: &str = "usage: echo <FD>
  FD  number of an inherited AF_UNIX SOCK_SEQPACKET socket (3 or more)";

// Linux constants.
const AF_UNIX: c_int = 1;
const SOCK_SEQPACKET: c_int = 5;
const SOL_SOCKET: c_int = 1;
const SO_TYPE: c_int = 3;
const SO_DOMAIN: c_int = 39;
const SCM_RIGHTS: c_int = 1;
const MSG_CTRUNC: c_int = 0x8;
const MSG_TRUNC: c_int = 0x20;
const MSG_NOSIGNAL: c_int = 0x4000;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const POLLHUP: i16 = 0x10;
const POLLRDHUP: i16 = 0x2000;
const FIONREAD: u64 = 0x541B;
const EINTR: i32 = 4;
const EPIPE: i32 = 32;
const ECONNRESET: i32 = 104;
const ECONNREFUSED: i32 = 111;
const ENOTSOCK: i32 = 88;

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct CmsgHdr {
    len: usize,
    level: c_int,
    kind: c_int,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

/// Control buffer for one `SCM_RIGHTS` message of `MAX_FDS` fds:
/// `CMSG_SPACE(MAX_FDS * 4)` bytes, aligned for `cmsghdr`.
#[repr(C)]
struct Control {
    header: CmsgHdr,
    fds: [c_int; MAX_FDS],
}

unsafe extern "C" {
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut u32)
    -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
    fn ioctl(fd: c_int, request: u64, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
}

fn cmsg_align(len: usize) -> usize {
    len.div_ceil(size_of::<usize>()) * size_of::<usize>()
}

/// An fd this program owns; closed on drop.
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { close(self.0) };
    }
}

fn main() -> ExitCode {
    let fd = match inherited_fd(std::env::args().skip(1)) {
        Ok(fd) => fd,
        Err(problem) => {
            eprintln!("echo: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = bind(&fd).and_then(|()| serve(&fd));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn inherited_fd(mut args: impl Iterator<Item = String>) -> Result<Fd, String> {
    let (Some(arg), None) = (args.next(), args.next()) else {
        return Err("expected exactly one argument".into());
    };
    let fd: c_int = arg
        .parse()
        .map_err(|_| format!("{arg:?} is not an fd number"))?;
    if fd < 3 {
        return Err(format!(
            "fd {fd} is a standard stream (or negative), not a socket"
        ));
    }
    if let Err(error) = std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")) {
        return Err(format!("fd {fd} is not open ({error})"));
    }
    Ok(Fd(fd))
}

fn int_option(fd: &Fd, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as u32;
    // SAFETY: value and len are valid for writes of their sizes.
    let rc = unsafe { getsockopt(fd.0, SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

fn bind(fd: &Fd) -> io::Result<()> {
    let not_seqpacket = || io::Error::other("not an AF_UNIX SOCK_SEQPACKET socket");
    match int_option(fd, SO_DOMAIN) {
        Ok(AF_UNIX) => {}
        Ok(_) => return Err(not_seqpacket()),
        Err(e) if e.raw_os_error() == Some(ENOTSOCK) => return Err(not_seqpacket()),
        Err(e) => return Err(e),
    }
    if int_option(fd, SO_TYPE)? != SOCK_SEQPACKET {
        return Err(not_seqpacket());
    }
    // SAFETY: plain fcntl on an fd we own.
    if unsafe { fcntl(fd.0, F_SETFD, FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why a record was rejected, in the crate's checking order.
enum Rejected {
    Short(usize),
    BadMagic([u8; 2]),
    Version(u8),
    Length { declared: u32, actual: usize },
    FdCount { declared: u8, received: usize },
    Truncated { len: usize },
    TooManyFds { count: usize },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Short(len) => {
                write!(f, "record of {len} bytes is shorter than the 8-byte header")
            }
            Rejected::BadMagic(m) => write!(f, "bad magic {m:02x?}"),
            Rejected::Version(v) => write!(f, "unsupported wire-format version {v}"),
            Rejected::Length { declared, actual } => {
                write!(
                    f,
                    "header declares {declared} data bytes but {actual} arrived"
                )
            }
            Rejected::FdCount { declared, received } => {
                write!(f, "header declares {declared} fds but {received} arrived")
            }
            Rejected::Truncated { len } => {
                write!(f, "{len} data bytes do not fit the {MAX_DATA}-byte buffer")
            }
            Rejected::TooManyFds { count } => {
                write!(f, "{count} fds exceed the capacity of {MAX_FDS}")
            }
        }
    }
}

fn validate(head: &[u8; HEADER_LEN], len: usize, fds: usize, ctrunc: bool) -> Result<(), Rejected> {
    if len < HEADER_LEN {
        return Err(Rejected::Short(len));
    }
    if head[..2] != *b"IP" {
        return Err(Rejected::BadMagic([head[0], head[1]]));
    }
    if head[2] != 1 {
        return Err(Rejected::Version(head[2]));
    }
    let declared_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let data_len = len - HEADER_LEN;
    if usize::try_from(declared_len) != Ok(data_len) {
        return Err(Rejected::Length {
            declared: declared_len,
            actual: data_len,
        });
    }
    let declared = usize::from(head[3]);
    let over = ctrunc || fds > MAX_FDS;
    if (over && declared <= MAX_FDS) || (!over && declared != fds) {
        return Err(Rejected::FdCount {
            declared: head[3],
            received: fds,
        });
    }
    if data_len > MAX_DATA {
        return Err(Rejected::Truncated { len: data_len });
    }
    if over {
        return Err(Rejected::TooManyFds { count: declared });
    }
    Ok(())
}

fn peer_is_gone(fd: &Fd) -> io::Result<bool> {
    let mut watch = PollFd {
        fd: fd.0,
        events: POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { poll(&mut watch, 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if watch.revents & (POLLHUP | POLLRDHUP) == 0 {
        return Ok(false);
    }
    let mut queued: c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { ioctl(fd.0, FIONREAD, &raw mut queued) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued == 0)
}

fn serve(fd: &Fd) -> io::Result<()> {
    let mut head = [0u8; HEADER_LEN];
    let mut data = [0u8; MAX_DATA];
    loop {
        // Receive one record.
        // SAFETY: an all-zero Control is a valid (empty) value.
        let mut control: Control = unsafe { std::mem::zeroed() };
        let mut iov = [
            IoVec {
                base: head.as_mut_ptr().cast(),
                len: HEADER_LEN,
            },
            IoVec {
                base: data.as_mut_ptr().cast(),
                len: MAX_DATA,
            },
        ];
        let mut msg = MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: iov.as_mut_ptr(),
            iovlen: iov.len(),
            control: (&raw mut control).cast(),
            controllen: size_of::<Control>(),
            flags: 0,
        };
        let len = loop {
            // SAFETY: msg points to live buffers of the stated sizes.
            let n = unsafe { recvmsg(fd.0, &mut msg, MSG_TRUNC | MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(EINTR) {
                return Err(error);
            }
        };
        // Take ownership of every fd that arrived.
        let mut fds: Vec<Fd> = Vec::new();
        let mut offset = 0;
        let base = (&raw const control).cast::<u8>();
        while offset + size_of::<CmsgHdr>() <= msg.controllen {
            // SAFETY: within the control buffer the kernel filled.
            let header = unsafe { &*base.add(offset).cast::<CmsgHdr>() };
            if header.len < size_of::<CmsgHdr>() {
                break;
            }
            if header.level == SOL_SOCKET && header.kind == SCM_RIGHTS {
                let count = (header.len - size_of::<CmsgHdr>()) / size_of::<c_int>();
                for i in 0..count {
                    // SAFETY: the kernel wrote `count` ints after the header.
                    let raw = unsafe {
                        base.add(offset + size_of::<CmsgHdr>() + i * size_of::<c_int>())
                            .cast::<c_int>()
                            .read_unaligned()
                    };
                    fds.push(Fd(raw));
                }
            }
            offset += cmsg_align(header.len);
        }
        let ctrunc = msg.flags & MSG_CTRUNC != 0;
        if len == 0 && fds.is_empty() && !ctrunc && peer_is_gone(fd)? {
            return Ok(());
        }
        if let Err(why) = validate(&head, len, fds.len(), ctrunc) {
            eprintln!("echo: rejected record: {why}");
            continue; // drops (closes) the fds
        }

        // Send it back as one record.
        let data_len = len - HEADER_LEN;
        // SAFETY: as above.
        let mut reply: Control = unsafe { std::mem::zeroed() };
        let mut iov = [
            IoVec {
                base: head.as_mut_ptr().cast(),
                len: HEADER_LEN,
            },
            IoVec {
                base: data.as_mut_ptr().cast(),
                len: data_len,
            },
        ];
        let mut out = MsgHdr {
            name: std::ptr::null_mut(),
            namelen: 0,
            iov: iov.as_mut_ptr(),
            iovlen: iov.len(),
            control: std::ptr::null_mut(),
            controllen: 0,
            flags: 0,
        };
        if !fds.is_empty() {
            let used = size_of::<CmsgHdr>() + fds.len() * size_of::<c_int>();
            reply.header = CmsgHdr {
                len: used,
                level: SOL_SOCKET,
                kind: SCM_RIGHTS,
            };
            for (slot, fd) in reply.fds.iter_mut().zip(&fds) {
                *slot = fd.0;
            }
            out.control = (&raw mut reply).cast();
            out.controllen = cmsg_align(used);
        }
        loop {
            // SAFETY: out points to live buffers of the stated sizes.
            if unsafe { sendmsg(fd.0, &out, MSG_NOSIGNAL) } >= 0 {
                break;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(EINTR) => {}
                Some(EPIPE | ECONNRESET | ECONNREFUSED) => return Ok(()),
                _ => return Err(error),
            }
        }
        drop(fds); // close our copies now, not at the next recv
    }
}
