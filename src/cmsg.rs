//! Stack control-message buffers sized by a const generic.
//!
//! Stable Rust cannot write `[u8; cmsg_space!(ScmRights(N))]` for a generic
//! `N`, so the buffer is a `repr(C)` struct laid out exactly like a
//! `cmsghdr` followed by `N` fds. Its size is `CMSG_SPACE(N * 4)`: the header,
//! the fds, and the padding up to the next `cmsghdr` boundary. That padding
//! is the "alignment slack" that lets the kernel deliver more than `N` fds
//! (for `N = 1` on 64-bit Linux, room for two), which the receiver counts and
//! closes.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::mem::{MaybeUninit, size_of};

/// Same size and alignment as the C `struct cmsghdr` on Linux: `cmsg_len`
/// is `size_t` (glibc, bionic) or a 32-bit length padded to `size_t` (musl),
/// followed by two `int`s.
#[repr(C)]
struct CmsgHeader {
    _len: usize,
    _level: c_int,
    _type: c_int,
}

/// Uninitialised space for one `SCM_RIGHTS` message with `N` fds.
#[repr(C)]
pub(crate) struct CmsgBuffer<const N: usize> {
    _header: MaybeUninit<CmsgHeader>,
    _fds: [MaybeUninit<c_int>; N],
}

impl<const N: usize> CmsgBuffer<N> {
    /// A buffer whose bytes are all uninitialised; building it costs nothing.
    pub(crate) const fn new() -> Self {
        Self {
            _header: MaybeUninit::uninit(),
            _fds: [MaybeUninit::uninit(); N],
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::align_of;

    fn cmsg_space(fds: usize) -> usize {
        // CMSG_SPACE(len) = CMSG_ALIGN(sizeof(cmsghdr)) + CMSG_ALIGN(len).
        let align = align_of::<usize>();
        let round = |n: usize| n.div_ceil(align) * align;
        round(size_of::<CmsgHeader>()) + round(fds * size_of::<c_int>())
    }

    #[test]
    fn size_is_cmsg_space_for_n_fds() {
        assert_eq!(size_of::<CmsgBuffer<0>>(), cmsg_space(0));
        assert_eq!(size_of::<CmsgBuffer<1>>(), cmsg_space(1));
        assert_eq!(size_of::<CmsgBuffer<4>>(), cmsg_space(4));
        assert_eq!(size_of::<CmsgBuffer<7>>(), cmsg_space(7));
        assert_eq!(size_of::<CmsgBuffer<253>>(), cmsg_space(253));
    }

    #[test]
    fn is_no_larger_than_rustix_cmsg_space() {
        // rustix adds one alignment unit so an unaligned buffer can be aligned.
        assert!(size_of::<CmsgBuffer<8>>() <= rustix::cmsg_space!(ScmRights(8)));
        assert!(size_of::<CmsgBuffer<1>>() <= rustix::cmsg_space!(ScmRights(1)));
    }

    #[test]
    fn is_aligned_for_cmsghdr() {
        assert_eq!(align_of::<CmsgBuffer<3>>(), align_of::<usize>());
    }
}
