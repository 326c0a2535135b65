//! An `eventfd` used as a readiness flag an event loop can watch: readable
//! while set.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, Errno, Result};

/// A non-blocking `eventfd`: [`EventFd::set`] makes it readable,
/// [`EventFd::clear`] makes it not readable again.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new, clear one.
    #[doc(alias = "eventfd")]
    pub fn new() -> Result<EventFd> {
        // SAFETY: eventfd takes only integers.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by a successful eventfd and is owned
        // by no one else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes it readable (adds 1 to its counter).
    pub fn set(&self) -> Result<()> {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which outlives the call.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    /// Makes it not readable (reads its counter back to 0).
    pub fn clear(&self) -> Result<()> {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into `value`, which outlives the call.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        match n {
            8 => Ok(()),
            _ => match Errno::last() {
                // Already clear.
                Errno::EAGAIN => Ok(()),
                e => Err(e),
            },
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
