//! Stack control-message buffers sized by a const generic.
//!
//! Stable Rust cannot write `[u8; cmsg_space!(ScmRights(N))]` for a generic
//! `N`, so the buffer is a `repr(C)` struct laid out exactly like an
//! `SCM_CREDENTIALS` message followed by a `cmsghdr` and `N` fds. Its size is
//! `CMSG_SPACE(12) + CMSG_SPACE(N * 4)`: room for credentials, the header,
//! the fds, and the padding up to the next `cmsghdr` boundary. While no
//! credentials arrive, the credentials' room and the padding (the
//! "alignment slack") let the kernel deliver more than `N` fds (for `N = 1`
//! on 64-bit Linux, room for ten), which the receiver counts and closes.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::mem::{MaybeUninit, align_of, size_of};

use rustix::fd::{FromRawFd, OwnedFd};

/// `SOL_SOCKET` on the architectures that use the generic value.
const SOL_SOCKET: c_int = 1;

/// `SCM_PIDFD` (Linux 6.5): a pidfd of the sender, added to every record
/// received on a socket with `SO_PASSPIDFD` set.
const SCM_PIDFD: c_int = 4;

/// `SCM_RIGHTS`: the fds of the record.
const SCM_RIGHTS: c_int = 1;

/// Same size and alignment as the C `struct cmsghdr` on Linux: `cmsg_len`
/// is `size_t` (glibc, bionic) or a 32-bit length padded to `size_t` (musl),
/// followed by two `int`s.
#[repr(C)]
struct CmsgHeader {
    _len: usize,
    _level: c_int,
    _type: c_int,
}

/// Room for one `SCM_CREDENTIALS` message (`struct ucred`: pid, uid, gid),
/// `CMSG_SPACE(12)` bytes.
#[repr(C)]
struct CredentialsSpace {
    _header: CmsgHeader,
    _ucred: [c_int; 3],
}

/// Uninitialised space for one `SCM_CREDENTIALS` message followed by one
/// `SCM_RIGHTS` message with `N` fds.
///
/// The credentials' room is there for the receiver: once a channel has
/// turned `SO_PASSCRED` on (to tell end-of-file from an empty record), the
/// kernel puts credentials first in every record, and a receive running at
/// that moment on another thread must still have room for its fds. Until
/// then the kernel may use that room for fds, which the receiver counts and
/// closes like any past its capacity.
#[repr(C)]
pub(crate) struct CmsgBuffer<const N: usize> {
    _credentials: MaybeUninit<CredentialsSpace>,
    _header: MaybeUninit<CmsgHeader>,
    _fds: [MaybeUninit<c_int>; N],
}

impl<const N: usize> CmsgBuffer<N> {
    /// A buffer whose bytes are all uninitialised; building it costs nothing.
    pub(crate) const fn new() -> Self {
        Self {
            _credentials: MaybeUninit::uninit(),
            _header: MaybeUninit::uninit(),
            _fds: [MaybeUninit::uninit(); N],
        }
    }

    /// Writes a zero to every byte of the buffer, padding included, so that
    /// what the kernel leaves unwritten reads as the end of the messages.
    pub(crate) fn zeroed(&mut self) -> Zeroed<'_, N> {
        for byte in self.as_bytes() {
            byte.write(0);
        }
        Zeroed(self)
    }

    /// The buffer as bytes, ready for rustix's ancillary buffers.
    pub(crate) fn as_bytes(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: `self` is a live, exclusively borrowed `repr(C)` value of
        // `size_of::<Self>()` bytes; every field is `MaybeUninit`, so any byte
        // pattern (and uninitialised bytes) is valid for both views, and `u8`
        // has no alignment requirement. The slice borrows `self` mutably for
        // its whole lifetime, so no other access can alias it.
        unsafe {
            core::slice::from_raw_parts_mut(
                (self as *mut Self).cast::<MaybeUninit<u8>>(),
                size_of::<Self>(),
            )
        }
    }
}

/// A [`CmsgBuffer`] whose every byte has been written since it last moved:
/// it can be read back as plain bytes after the kernel filled it.
pub(crate) struct Zeroed<'a, const N: usize>(&'a mut CmsgBuffer<N>);

impl<const N: usize> Zeroed<'_, N> {
    /// The buffer as bytes, ready for rustix's ancillary buffers.
    pub(crate) fn as_bytes(&mut self) -> &mut [MaybeUninit<u8>] {
        self.0.as_bytes()
    }

    /// Walks the control messages the kernel wrote and takes ownership of
    /// every fd in them: the fds of `SCM_RIGHTS` messages go to `rights`, in
    /// order; those of `SCM_PIDFD` messages (a pidfd of the sender, with
    /// `SO_PASSPIDFD`) are closed. Returns the number of control messages.
    ///
    /// rustix's decoder is not used: it reads `SCM_CREDENTIALS` into a
    /// `UCred` whose pid is non-zero, and the kernel writes pid 0 there for
    /// a sender outside this pid namespace.
    ///
    /// Takes `self` so that the fds can be taken only once.
    pub(crate) fn take_fds(self, mut rights: impl FnMut(OwnedFd)) -> usize {
        let len = size_of::<CmsgBuffer<N>>();
        // SAFETY: `Zeroed` is only made by `CmsgBuffer::zeroed`, which wrote
        // every byte of the buffer (padding included) and whose mutable
        // borrow keeps the buffer from moving since; the kernel only ever
        // writes initialised bytes into it. So all `len` bytes are
        // initialised, and `self` borrows them exclusively.
        let bytes: &[u8] =
            unsafe { core::slice::from_raw_parts(self.0.as_bytes().as_ptr().cast::<u8>(), len) };
        let mut count = 0;
        for message in (Messages { bytes, at: 0 }) {
            count += 1;
            let owned = message.level == SOL_SOCKET
                && (message.kind == SCM_RIGHTS || message.kind == SCM_PIDFD);
            if !owned {
                continue;
            }
            for raw in message.data.chunks_exact(size_of::<c_int>()) {
                let Ok(raw) = raw.try_into().map(c_int::from_ne_bytes) else {
                    continue;
                };
                // SAFETY: the kernel installed this fd in our table for this
                // `recvmsg` alone (a truncated message lists only the fds it
                // installed, whole), nothing else has read the buffer, and
                // `take_fds` consumes it, so nothing else owns the fd.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                if message.kind == SCM_RIGHTS {
                    rights(fd);
                }
            }
        }
        count
    }
}

/// One control message: `cmsg_level`, `cmsg_type` and its data.
struct Message<'a> {
    level: c_int,
    kind: c_int,
    data: &'a [u8],
}

/// The control messages in a filled buffer, by the `CMSG_NXTHDR` rules; a
/// `cmsg_len` of zero (never written) or one that does not fit ends them.
#[derive(Clone)]
struct Messages<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Message<'a>;

    fn next(&mut self) -> Option<Message<'a>> {
        let header = size_of::<CmsgHeader>();
        let rest = self.bytes.get(self.at..)?;
        let len_bytes = rest.first_chunk::<{ size_of::<usize>() }>()?;
        let len = usize::from_ne_bytes(*len_bytes);
        if len < header || len > rest.len() {
            return None;
        }
        let int = |offset: usize| {
            rest.get(offset..offset + size_of::<c_int>())
                .and_then(|b| b.try_into().ok())
                .map(c_int::from_ne_bytes)
        };
        let level = int(size_of::<usize>())?;
        let kind = int(size_of::<usize>() + size_of::<c_int>())?;
        let data = rest.get(header..len)?;
        self.at += len.next_multiple_of(align_of::<usize>());
        Some(Message { level, kind, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::align_of;

    /// The C library's `CMSG_SPACE` for `bytes` bytes of data.
    fn c_cmsg_space(bytes: usize) -> usize {
        let bytes = u32::try_from(bytes).expect("small");
        // SAFETY: CMSG_SPACE is a pure computation on its argument.
        usize::try_from(unsafe { libc::CMSG_SPACE(bytes) }).expect("fits")
    }

    /// Room for a `struct ucred` message and an `SCM_RIGHTS` message of
    /// `fds` fds, by the C library's `CMSG_SPACE`.
    fn cmsg_space(fds: usize) -> usize {
        c_cmsg_space(size_of::<libc::ucred>()) + c_cmsg_space(fds * size_of::<c_int>())
    }

    #[test]
    fn size_is_the_c_cmsg_space_for_credentials_and_n_fds() {
        assert_eq!(
            size_of::<CredentialsSpace>(),
            c_cmsg_space(size_of::<libc::ucred>())
        );
        assert_eq!(size_of::<CmsgBuffer<0>>(), cmsg_space(0));
        assert_eq!(size_of::<CmsgBuffer<1>>(), cmsg_space(1));
        assert_eq!(size_of::<CmsgBuffer<3>>(), cmsg_space(3));
        assert_eq!(size_of::<CmsgBuffer<4>>(), cmsg_space(4));
        assert_eq!(size_of::<CmsgBuffer<7>>(), cmsg_space(7));
        assert_eq!(size_of::<CmsgBuffer<253>>(), cmsg_space(253));
    }

    #[test]
    fn header_matches_the_c_cmsghdr() {
        assert_eq!(size_of::<CmsgHeader>(), size_of::<libc::cmsghdr>());
        assert_eq!(align_of::<CmsgHeader>(), align_of::<libc::cmsghdr>());
        assert_eq!(SOL_SOCKET, libc::SOL_SOCKET);
        assert_eq!(SCM_RIGHTS, libc::SCM_RIGHTS);
    }

    /// Writes one control message the way the kernel does, at `at`.
    fn put(buf: &mut [u8], at: usize, level: c_int, kind: c_int, data: &[u8]) -> usize {
        let len = size_of::<CmsgHeader>() + data.len();
        let int = size_of::<c_int>();
        let word = size_of::<usize>();
        buf[at..at + word].copy_from_slice(&len.to_ne_bytes());
        buf[at + word..at + word + int].copy_from_slice(&level.to_ne_bytes());
        buf[at + word + int..at + word + 2 * int].copy_from_slice(&kind.to_ne_bytes());
        buf[at + size_of::<CmsgHeader>()..at + len].copy_from_slice(data);
        at + len.next_multiple_of(align_of::<usize>())
    }

    #[test]
    fn messages_are_walked_by_the_cmsg_nxthdr_rules() {
        let mut buf = [0u8; 128];
        let next = put(&mut buf, 0, SOL_SOCKET, SCM_PIDFD, &7i32.to_ne_bytes());
        let fds: [u8; 12] = [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0];
        let end = put(&mut buf, next, SOL_SOCKET, libc::SCM_RIGHTS, &fds);
        // SAFETY: CMSG_SPACE is a pure computation on its argument.
        let pidfd_space = unsafe { libc::CMSG_SPACE(4) } as usize;
        assert_eq!(next, pidfd_space);
        let mut walked = Messages { bytes: &buf, at: 0 }.map(|m| (m.level, m.kind, m.data.len()));
        assert_eq!(walked.next(), Some((SOL_SOCKET, SCM_PIDFD, 4)));
        assert_eq!(walked.next(), Some((SOL_SOCKET, libc::SCM_RIGHTS, 12)));
        assert_eq!(walked.next(), None);
        // A length past the end of the buffer ends the walk.
        put(&mut buf, end, SOL_SOCKET, SCM_PIDFD, &[0; 4]);
        buf[end..end + size_of::<usize>()].copy_from_slice(&1000usize.to_ne_bytes());
        assert_eq!(Messages { bytes: &buf, at: 0 }.count(), 2);
    }

    #[test]
    fn is_no_larger_than_rustix_cmsg_space() {
        // rustix adds one alignment unit so an unaligned buffer can be aligned.
        assert!(size_of::<CmsgBuffer<8>>() <= rustix::cmsg_space!(ScmCredentials(1), ScmRights(8)));
        assert!(size_of::<CmsgBuffer<1>>() <= rustix::cmsg_space!(ScmCredentials(1), ScmRights(1)));
    }

    #[test]
    fn is_aligned_for_cmsghdr() {
        assert_eq!(align_of::<CmsgBuffer<3>>(), align_of::<usize>());
    }
}
