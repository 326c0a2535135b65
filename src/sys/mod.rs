//! Thin typed wrappers over the system calls the bus needs, one topic a
//! module: System V semaphores ([`sem`]) and shared memory ([`shm`]), their
//! common keys and permissions ([`ipc`]), files opened without blocking
//! ([`file`]), signals and threads ([`signal`]) and kernel randomness
//! ([`random`]). These are the only modules of the crate that say `unsafe`.
//!
//! Every wrapper makes exactly one system call and turns `-1` + `errno` into
//! a typed [`Errno`]; none of them retries on `EINTR`. Whether to retry is
//! the caller's decision: the blocking semaphore wait retries in
//! [`crate::block`], opening a file never does (a stop must be able to end
//! it).
#![allow(unsafe_code)]

pub mod event;
pub mod file;
pub mod ipc;
pub mod random;
pub mod sem;
pub mod shm;
pub mod signal;

pub use ipc::Key;
pub use sem::{Block, SemId, SemOp, SEMAPHORES};
pub use shm::{Mapping, ShmId, MEMORY_SIZE};

pub use nix::errno::Errno;

/// What a system call wrapper returns: its value, or the `errno` it failed
/// with.
pub type Result<T> = std::result::Result<T, Errno>;

/// Converts the `-1`-and-`errno` convention into a `Result`, once for all.
pub(crate) fn cvt(ret: libc::c_int) -> Result<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}
