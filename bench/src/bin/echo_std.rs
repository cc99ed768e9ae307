//! `echo_std <FD>`: the crate's `examples/echo.rs`, rewritten with std only
//! (no crates), for the binary-size comparison in the benchmark report.
//!
//! Same behaviour: adopts an inherited `AF_UNIX` `SOCK_SEQPACKET` socket
//! (checked with `SO_DOMAIN`/`SO_TYPE`, then `FD_CLOEXEC`), receives wire
//! format v1 records (8-byte header `b"IP"`, 1, fd count, u32 LE length) with
//! up to 4096 data bytes and 8 fds, validates them in the crate's order
//! (short, magic, version, length, fd count, truncated, too many fds, fds
//! truncated), sends every valid message back as one record with the same
//! bytes and fds, logs one line per rejected record (the crate's wording),
//! and exits 0 when the peer closes. Like the crate, it closes the fds of a
//! rejected record after setting `SO_LINGER {on, 0}` (so a TCP socket is
//! aborted, not lingered on), closes `SCM_PIDFD` fds, reads past one
//! `ECONNRESET` left by a dead peer, and tells end-of-file from an empty
//! record by a `MSG_PEEK` with `SO_PASSCRED` on.
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
const SO_LINGER: c_int = 13;
const SO_PASSCRED: c_int = 16;
const SCM_RIGHTS: c_int = 1;
const SCM_PIDFD: c_int = 4;
const MSG_PEEK: c_int = 0x2;
const MSG_DONTWAIT: c_int = 0x40;
const MSG_CTRUNC: c_int = 0x8;
const MSG_TRUNC: c_int = 0x20;
const MSG_NOSIGNAL: c_int = 0x4000;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const POLLHUP: i16 = 0x10;
const POLLRDHUP: i16 = 0x2000;
const EINTR: i32 = 4;
const EPIPE: i32 = 32;
const ECONNRESET: i32 = 104;
const ECONNREFUSED: i32 = 111;
const ENOTSOCK: i32 = 88;
const EMSGSIZE: i32 = 90;

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
struct Linger {
    onoff: c_int,
    linger: c_int,
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
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
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

/// Closes an fd without waiting, as the crate does: `SO_LINGER {on, 0}`
/// first (fails harmlessly with `ENOTSOCK` on anything but a socket).
fn discard(fd: Fd) {
    let linger = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: linger is valid for reads of its size.
    unsafe {
        setsockopt(
            fd.0,
            SOL_SOCKET,
            SO_LINGER,
            (&raw const linger).cast(),
            size_of::<Linger>() as u32,
        )
    };
    drop(fd);
}

/// A fatal error, worded as the crate's `Error`.
enum Fatal {
    NotSeqpacket,
    TooLarge(usize),
    Os(io::Error),
}

impl From<io::Error> for Fatal {
    fn from(error: io::Error) -> Self {
        Fatal::Os(error)
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::NotSeqpacket => f.write_str("fd is not an AF_UNIX SOCK_SEQPACKET socket"),
            Fatal::TooLarge(len) => write!(f, "cannot send {len} data bytes in one record"),
            Fatal::Os(error) => write!(f, "os error: {error}"),
        }
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

fn bind(fd: &Fd) -> Result<(), Fatal> {
    match int_option(fd, SO_DOMAIN) {
        Ok(AF_UNIX) => {}
        Ok(_) => return Err(Fatal::NotSeqpacket),
        Err(e) if e.raw_os_error() == Some(ENOTSOCK) => return Err(Fatal::NotSeqpacket),
        Err(e) => return Err(e.into()),
    }
    if int_option(fd, SO_TYPE)? != SOCK_SEQPACKET {
        return Err(Fatal::NotSeqpacket);
    }
    // SAFETY: plain fcntl on an fd we own.
    if unsafe { fcntl(fd.0, F_SETFD, FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}

/// Why a record was rejected, in the crate's checking order.
enum Rejected {
    Short(usize),
    BadMagic([u8; 2]),
    Version(u8),
    Length {
        declared: u32,
        actual: usize,
    },
    FdCount {
        declared: u8,
        received: usize,
        truncated: bool,
    },
    Truncated {
        len: usize,
    },
    TooManyFds {
        count: usize,
    },
    FdsTruncated {
        declared: u8,
        received: usize,
    },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Short(len) => {
                write!(f, "record of {len} bytes is shorter than the 8-byte header")
            }
            Rejected::BadMagic(m) => write!(f, "bad magic {:#04x} {:#04x}", m[0], m[1]),
            Rejected::Version(v) => write!(f, "unsupported wire-format version {v}"),
            Rejected::Length { declared, actual } => write!(
                f,
                "header declares {declared} data bytes but the record carries {actual}"
            ),
            Rejected::FdCount {
                declared,
                received,
                truncated: false,
            } => write!(
                f,
                "header declares {declared} fds but {received} were received"
            ),
            Rejected::FdCount {
                declared,
                received,
                truncated: true,
            } => write!(
                f,
                "header declares {declared} fds but the record carried more than {received}"
            ),
            Rejected::Truncated { len } => write!(
                f,
                "record of {len} data bytes does not fit the {MAX_DATA}-byte buffer"
            ),
            Rejected::TooManyFds { count } => write!(
                f,
                "record carries {count} fds, more than the receive capacity of {MAX_FDS}"
            ),
            Rejected::FdsTruncated { declared, received } => write!(
                f,
                "the kernel installed only {received} of the {declared} fds declared \
                 (fd limit reached, or the control buffer held other messages)"
            ),
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
    // With MSG_CTRUNC more fds were sent than received.
    let mismatch = if ctrunc {
        declared <= fds
    } else {
        declared != fds
    };
    if mismatch {
        return Err(Rejected::FdCount {
            declared: head[3],
            received: fds,
            truncated: ctrunc,
        });
    }
    if data_len > MAX_DATA {
        return Err(Rejected::Truncated { len: data_len });
    }
    if declared > MAX_FDS {
        return Err(Rejected::TooManyFds { count: declared });
    }
    if ctrunc {
        return Err(Rejected::FdsTruncated {
            declared: head[3],
            received: fds,
        });
    }
    Ok(())
}

/// Tells end-of-file from an empty record, as the crate does: the peer
/// is gone when it hung up and a peek finds no record. With `SO_PASSCRED`
/// on, every record (even an empty one) carries credentials, which do not
/// fit the peek's absent control buffer and show as `MSG_CTRUNC`.
fn peer_is_gone(fd: &Fd) -> io::Result<bool> {
    let mut watch = PollFd {
        fd: fd.0,
        events: POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        if unsafe { poll(&mut watch, 1, 0) } >= 0 {
            break;
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(EINTR) {
            return Err(error);
        }
    }
    if watch.revents & (POLLHUP | POLLRDHUP) == 0 {
        return Ok(false);
    }
    let set_passcred = |on: c_int| {
        // SAFETY: on is valid for reads of its size.
        let rc = unsafe {
            setsockopt(
                fd.0,
                SOL_SOCKET,
                SO_PASSCRED,
                (&raw const on).cast(),
                size_of::<c_int>() as u32,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let passcred = int_option(fd, SO_PASSCRED)? != 0;
    if !passcred {
        set_passcred(1)?;
    }
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: std::ptr::null_mut(),
        iovlen: 0,
        control: std::ptr::null_mut(),
        controllen: 0,
        flags: 0,
    };
    let next = loop {
        // SAFETY: msg has no buffers at all.
        if unsafe { recvmsg(fd.0, &mut msg, MSG_PEEK | MSG_DONTWAIT) } >= 0 {
            break Ok(msg.flags);
        }
        let error = io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(EINTR | ECONNRESET)) {
            break Err(error);
        }
    };
    if !passcred {
        set_passcred(0)?;
    }
    Ok(next? & MSG_CTRUNC == 0)
}

fn serve(fd: &Fd) -> Result<(), Fatal> {
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
        let mut reset_seen = false;
        let len = loop {
            // SAFETY: msg points to live buffers of the stated sizes.
            let n = unsafe { recvmsg(fd.0, &mut msg, MSG_TRUNC | MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(EINTR) => {}
                // A dead peer leaves one ECONNRESET; records it queued
                // before dying still come after it.
                Some(ECONNRESET) if !reset_seen => reset_seen = true,
                Some(ECONNRESET) => return Ok(()),
                _ => return Err(error.into()),
            }
        };
        // Take ownership of every fd that arrived.
        let mut fds: Vec<Fd> = Vec::new();
        let mut messages = 0;
        let mut offset = 0;
        let base = (&raw const control).cast::<u8>();
        while offset + size_of::<CmsgHdr>() <= msg.controllen {
            // SAFETY: within the control buffer the kernel filled.
            let header = unsafe { &*base.add(offset).cast::<CmsgHdr>() };
            if header.len < size_of::<CmsgHdr>() {
                break;
            }
            messages += 1;
            if header.level == SOL_SOCKET && header.kind == SCM_PIDFD {
                // SAFETY: an SCM_PIDFD message holds one int.
                let raw = unsafe {
                    base.add(offset + size_of::<CmsgHdr>())
                        .cast::<c_int>()
                        .read_unaligned()
                };
                drop(Fd(raw));
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
        if len == 0 && messages == 0 && !ctrunc && peer_is_gone(fd)? {
            return Ok(());
        }
        if let Err(why) = validate(&head, len, fds.len(), ctrunc) {
            fds.into_iter().for_each(discard);
            eprintln!("echo: rejected record: {why}");
            continue;
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
                Some(EMSGSIZE) => return Err(Fatal::TooLarge(data_len)),
                _ => return Err(error.into()),
            }
        }
        drop(fds); // close our copies now, not at the next recv
    }
}
