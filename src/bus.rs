//! An open bus: the parsed file, the semaphore array and the attached
//! segment. Closing is `Drop`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::busfile::{self, Keys};
use crate::error::{Error, Result};
use crate::sys::{Mapping, SemId, SemOp, ShmId};
use crate::wait::{ipc_error, Spinner};

/// Semaphore indices and the operations of the protocol (PROTOCOL.md).
pub(crate) mod sem {
    use crate::sys::SemOp;

    /// Number of processes listening.
    pub const S: u16 = 0;
    /// Non-zero while listeners are re-registering; writers wait for 0.
    pub const W: u16 = 1;
    /// Binary writer lock.
    pub const X: u16 = 2;
    /// Listeners raise it and wait for 0; the writer zeroes it to release.
    pub const Q: u16 = 3;
    /// Raised by the writer while a message is in flight.
    pub const N: u16 = 4;

    /// `P(a)`: lower by one, waiting while zero.
    pub const fn p(index: u16, undo: bool) -> SemOp {
        SemOp {
            index,
            delta: -1,
            undo,
        }
    }
    /// `V(a)`: raise by one.
    pub const fn v(index: u16, undo: bool) -> SemOp {
        SemOp {
            index,
            delta: 1,
            undo,
        }
    }
    /// Listeners asleep waiting for their release: blocked on Q (while
    /// Q > 0) or on N (Q zero, no message in flight). Two reads, so only a
    /// hint: a sleeper moving between the queues may be missed or counted
    /// twice.
    pub fn waiting(sem: crate::sys::SemId) -> std::io::Result<u32> {
        Ok(sem.waiting_for_zero(Q)? + sem.waiting_for_increase(N)?)
    }

    /// `Z(a)`: wait until zero.
    pub const fn z(index: u16) -> SemOp {
        SemOp {
            index,
            delta: 0,
            undo: false,
        }
    }
}

/// How a bus is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Listen only: the segment is attached read-only.
    ReadOnly,
    /// Broadcast (and listen).
    Write,
}

/// An open bus. Broadcast with [`Bus::write`], listen with [`Bus::read`] or
/// [`Bus::poller`]. Dropping it closes it (detaches the segment); the bus
/// itself lives on until [`crate::unlink`].
///
/// A `Bus` is `Send` and `Sync`: several threads may broadcast through one
/// handle (the protocol serialises writers).
#[derive(Debug)]
pub struct Bus {
    path: PathBuf,
    keys: Keys,
    pub(crate) sem: SemId,
    pub(crate) mem: Mapping,
    access: Access,
    pub(crate) spin: Spinner,
}

impl Bus {
    /// Opens the bus whose file is at `path`.
    #[doc(alias = "bus_open")]
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Bus> {
        let path = path.as_ref();
        let keys = busfile::read(path)?;
        let sem = SemId::get(keys.sem, None).map_err(|e| open_error(path, "semaphore array", e))?;
        let shm = ShmId::get(keys.shm, None).map_err(|e| open_error(path, "shared memory", e))?;
        let mem = shm
            .attach(access == Access::ReadOnly)
            .map_err(|e| open_error(path, "shared memory", e))?;
        Ok(Bus {
            path: path.to_path_buf(),
            keys,
            sem,
            mem,
            access,
            spin: Spinner::default(),
        })
    }

    /// The pathname the bus was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys read from the bus file.
    pub fn keys(&self) -> Keys {
        self.keys
    }

    /// The semaphore array's identifier (as `semget` returned it), for
    /// callers that speak C (`bus_t.sem_id`).
    pub fn semaphore_id(&self) -> i32 {
        self.sem.raw()
    }

    /// Where the segment is attached in this process (`bus_t.message`). A
    /// distinct address for every open `Bus`; only the protocol may say
    /// when its bytes can be read.
    pub fn memory_address(&self) -> *const u8 {
        self.mem.address()
    }

    /// How the bus was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Before blocking on a semaphore, retry without blocking for up to
    /// `max` (default: zero, never spin). Spinning trades CPU for latency
    /// when the other side answers within microseconds; the budget adapts:
    /// it shrinks to nothing when spinning does not pay (an idle bus, more
    /// busy processes than cores). It changes nothing another process can
    /// observe.
    pub fn set_spin(&mut self, max: Duration) {
        self.spin.set_max(max);
    }

    /// The maximum spinning budget set by [`Bus::set_spin`].
    pub fn spin(&self) -> Duration {
        self.spin.max()
    }

    /// The number of processes listening now (semaphore S).
    pub fn listeners(&self) -> Result<u32> {
        let values = self
            .sem
            .get_all()
            .map_err(|e| ipc_error(&self.path, "GETALL", e))?;
        Ok(u32::from(values[usize::from(sem::S)]))
    }

    /// Makes one atomic semaphore operation (see [`crate::wait::semop`]).
    pub(crate) fn op(
        &self,
        ops: &[SemOp],
        mode: crate::wait::Mode,
        limits: &crate::wait::Limits<'_>,
    ) -> Result<()> {
        crate::wait::semop(&self.path, self.sem, ops, mode, limits)
    }
}

/// Maps a failure to open one of the bus's objects.
fn open_error(path: &Path, object: &'static str, err: std::io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EIDRM) => Error::Gone {
            path: path.into(),
            object,
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            path: path.into(),
            what: object,
        },
        Some(libc::EINVAL) => Error::InvalidBusFile {
            path: path.into(),
            reason: format!("its {object} key names an object of the wrong size"),
        },
        _ => Error::os(format!("{}: open {object}", path.display()), err),
    }
}
