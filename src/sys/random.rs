//! Randomness from the kernel (`getrandom`), for bus names and keys.

use super::{Errno, Result};

/// Fills `buf` with random bytes from the kernel. (`getrandom` only waits
/// at early boot, before the pool is ready; an `EINTR` then is retried, the
/// one retry in this module tree.)
#[doc(alias = "getrandom")]
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = Errno::last();
            if err != Errno::EINTR {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}
