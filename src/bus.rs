//! An open bus: the parsed file, the semaphore array and the attached
//! segment. Closing is `Drop`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::block::{self, Limits, Mode, SpinStats, Spinner};
use crate::busfile::{self, Keys};
use crate::error::{Error, Object, Op, Result};
use crate::protocol::Semaphores;
use crate::sys::{Mapping, SemId, SemOp, ShmId};

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
    /// Threads finishing broadcasts that returned early (see
    /// [`Bus::write_with`]).
    pub(crate) finishing: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The spinning budget a bus gets when opened (see [`Bus::set_spin`]) if
/// [`SPIN_VARIABLE`] does not say otherwise: none. (Spinning saves CPU and
/// cuts a broadcast to one listener several times where a core is free,
/// but was not shown to cost nothing while every core is busy: see the
/// README's Performance section.)
pub const DEFAULT_SPIN: Duration = Duration::ZERO;

/// The environment variable that sets the spinning budget of every bus a
/// process opens, in microseconds: `0` turns spinning off. Read once, at
/// the first open, by every binding (the C library, the command, Python,
/// Erlang's native listeners and port programs).
pub const SPIN_VARIABLE: &str = "BUS_SPIN_US";

/// The largest budget [`SPIN_VARIABLE`] may ask for (spinning longer than
/// a scheduler's time slice is never worth it).
pub const MAX_SPIN: Duration = Duration::from_millis(10);

/// A value of [`SPIN_VARIABLE`]: microseconds, an integer from 0 to
/// [`MAX_SPIN`]; None if it is anything else.
pub fn parse_spin(value: &str) -> Option<Duration> {
    let us: u64 = value.trim().parse().ok()?;
    let spin = Duration::from_micros(us);
    (spin <= MAX_SPIN).then_some(spin)
}

/// The spinning budget every bus this process opens starts with:
/// [`SPIN_VARIABLE`] if it is set to a valid value, else [`DEFAULT_SPIN`]
/// (an invalid value is ignored here; the `bus` command refuses it). Read
/// once per process.
pub fn default_spin() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var(SPIN_VARIABLE)
            .ok()
            .and_then(|v| parse_spin(&v))
            .unwrap_or(DEFAULT_SPIN)
    })
}

impl Bus {
    /// Opens the bus whose file is at `path`.
    #[doc(alias = "bus_open")]
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Bus> {
        let path = path.as_ref();
        let keys = busfile::read(path)?;
        let sem = SemId::get(keys.sem, None)
            .map_err(|e| Error::sys(e, Object::SemaphoreArray, Op::Open, path))?;
        let shm = ShmId::get(keys.shm, None)
            .map_err(|e| Error::sys(e, Object::SharedMemory, Op::Open, path))?;
        // (A segment removed since shmget: EINVAL here means gone.)
        let mem = shm
            .attach(access == Access::ReadOnly)
            .map_err(|e| Error::sys(e, Object::SharedMemory, Op::Read, path))?;
        Ok(Bus {
            path: path.to_path_buf(),
            keys,
            sem,
            mem,
            access,
            spin: Spinner::with_max(default_spin()),
            finishing: std::sync::Mutex::default(),
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
    /// `max` (zero: never spin; default: [`default_spin`], no spinning
    /// unless `BUS_SPIN_US` says otherwise). Spinning trades CPU for latency
    /// when the other side answers within microseconds; the budget adapts:
    /// it shrinks to nothing when spinning does not pay (an idle bus), and
    /// there is no spinning while no core is free (as many tasks runnable
    /// as cores, besides this one) or while the bus has more processes
    /// (listeners and a writer) than the machine has cores. It changes
    /// nothing another process can observe.
    pub fn set_spin(&self, max: Duration) {
        self.spin.set_max(max);
    }

    /// The maximum spinning budget ([`Bus::set_spin`], [`default_spin`]).
    pub fn spin(&self) -> Duration {
        self.spin.max()
    }

    /// What spinning did on this handle since it was opened: its waits,
    /// those the gate kept from spinning, those that spun and those that
    /// spinning ended. Counting costs a few relaxed atomic additions per
    /// wait; it shows whether a budget pays, and that none is spent while
    /// the cores are busy.
    pub fn spin_stats(&self) -> SpinStats {
        self.spin.stats()
    }

    /// The number of processes listening now (semaphore S).
    pub fn listeners(&self) -> Result<u32> {
        Ok(u32::from(self.semaphores()?.s))
    }

    /// The five semaphores' values now.
    pub(crate) fn semaphores(&self) -> Result<Semaphores> {
        self.sem
            .get_all()
            .map(Semaphores::from)
            .map_err(|e| Error::sys(e, Object::SemaphoreArray, Op::Read, &self.path))
    }

    /// Makes one atomic semaphore operation (see [`block::semop`]).
    pub(crate) fn op(&self, ops: &[SemOp], mode: Mode, limits: &Limits<'_>) -> Result<()> {
        block::semop(&self.path, self.sem, ops, mode, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_values() {
        assert_eq!(parse_spin("0"), Some(Duration::ZERO));
        assert_eq!(parse_spin("50"), Some(Duration::from_micros(50)));
        assert_eq!(parse_spin(" 10000\n"), Some(MAX_SPIN));
        for bad in ["", "-1", "10001", "5us", "0x10", "1e3"] {
            assert_eq!(parse_spin(bad), None, "{bad:?}");
        }
    }
}
