//! System V semaphore arrays: `semget`, `semop`/`semtimedop` and `semctl`.

use std::mem::MaybeUninit;
use std::time::Duration;

use super::ipc::{get_flags, perm_from, Key, Perm};
use super::{cvt, Result};

/// Number of semaphores in the array of every bus.
pub const SEMAPHORES: usize = 5;

/// One operation of a `semop` call: add `delta` to semaphore `index`, or
/// wait for it to be zero when `delta` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemOp {
    /// Index of the semaphore in the array.
    pub index: u16,
    /// Value added (`V` > 0, `P` < 0) or 0 for "wait until zero".
    pub delta: i16,
    /// Whether the kernel reverses the operation when the process dies.
    pub undo: bool,
}

impl SemOp {
    fn to_sembuf(self, nowait: bool) -> libc::sembuf {
        let mut flags = 0;
        if self.undo {
            flags |= libc::SEM_UNDO;
        }
        if nowait {
            flags |= libc::IPC_NOWAIT;
        }
        libc::sembuf {
            sem_num: self.index,
            sem_op: self.delta,
            sem_flg: flags as libc::c_short,
        }
    }
}

/// How long one semaphore operation may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// Fail with `EAGAIN` instead of blocking (`IPC_NOWAIT`).
    Never,
    /// Block at most this long, then fail with `EAGAIN` (`semtimedop`).
    For(Duration),
    /// Block until the operation can be made.
    Forever,
}

/// A semaphore array identifier, as returned by `semget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SemId(libc::c_int);

impl SemId {
    /// Opens (or with `create`, exclusively creates with `mode`) the array of
    /// [`SEMAPHORES`] semaphores under `key`.
    #[doc(alias = "semget")]
    pub fn get(key: Key, create: Option<u32>) -> Result<SemId> {
        let flags = get_flags(create);
        // SAFETY: semget takes only integers.
        cvt(unsafe { libc::semget(key, SEMAPHORES as libc::c_int, flags) }).map(SemId)
    }

    /// Applies all of `ops` atomically: either every operation is made or
    /// none is; the call blocks as `block` says while any would block.
    #[doc(alias = "semop")]
    #[doc(alias = "semtimedop")]
    pub fn op(self, ops: &[SemOp], block: Block) -> Result<()> {
        let mut bufs = [libc::sembuf {
            sem_num: 0,
            sem_op: 0,
            sem_flg: 0,
        }; 8];
        assert!(ops.len() <= bufs.len(), "at most 8 operations per call");
        let nowait = block == Block::Never;
        for (buf, op) in bufs.iter_mut().zip(ops) {
            *buf = op.to_sembuf(nowait);
        }
        let timeout = match block {
            Block::For(d) => Some(libc::timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }),
            _ => None,
        };
        let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: `bufs` holds `ops.len()` initialised sembufs and outlives the
        // call; `ts` is null or points to a timespec that outlives the call.
        // semtimedop with a null timeout is semop. (libc has no wrapper.)
        let r = unsafe {
            libc::syscall(
                libc::SYS_semtimedop,
                self.0,
                bufs.as_mut_ptr(),
                ops.len(),
                ts,
            )
        };
        cvt(r as libc::c_int).map(drop)
    }

    /// The raw identifier.
    pub fn raw(self) -> libc::c_int {
        self.0
    }

    /// Reads the values of all semaphores of the array.
    #[doc(alias = "GETALL")]
    pub fn get_all(self) -> Result<[u16; SEMAPHORES]> {
        let mut values = [0u16; SEMAPHORES];
        // SAFETY: GETALL writes `nsems` unsigned shorts to the pointer; the
        // array was created with SEMAPHORES semaphores and `values` has room
        // for that many. (An array of another size is refused by `semget`
        // with the size we pass, so `nsems` cannot exceed SEMAPHORES.)
        cvt(unsafe { libc::semctl(self.0, 0, libc::GETALL, values.as_mut_ptr()) })?;
        Ok(values)
    }

    /// The number of processes waiting for semaphore `index` to be zero.
    #[doc(alias = "GETZCNT")]
    pub fn waiting_for_zero(self, index: u16) -> Result<u32> {
        // SAFETY: GETZCNT takes no fourth argument.
        cvt(unsafe { libc::semctl(self.0, libc::c_int::from(index), libc::GETZCNT) })
            .map(|n| n as u32)
    }

    /// The number of processes waiting for semaphore `index` to increase.
    #[doc(alias = "GETNCNT")]
    pub fn waiting_for_increase(self, index: u16) -> Result<u32> {
        // SAFETY: GETNCNT takes no fourth argument.
        cvt(unsafe { libc::semctl(self.0, libc::c_int::from(index), libc::GETNCNT) })
            .map(|n| n as u32)
    }

    /// Sets the values of all semaphores of the array.
    #[doc(alias = "SETALL")]
    pub fn set_all(self, values: &[u16; SEMAPHORES]) -> Result<()> {
        // SAFETY: SETALL reads `nsems` (= SEMAPHORES, see get_all) unsigned
        // shorts from the pointer, which points to that many.
        cvt(unsafe { libc::semctl(self.0, 0, libc::SETALL, values.as_ptr()) }).map(drop)
    }

    /// Sets the value of one semaphore.
    #[doc(alias = "SETVAL")]
    pub fn set_value(self, index: u16, value: i32) -> Result<()> {
        // SAFETY: SETVAL takes an int as its fourth argument.
        cvt(unsafe {
            libc::semctl(
                self.0,
                libc::c_int::from(index),
                libc::SETVAL,
                value as libc::c_int,
            )
        })
        .map(drop)
    }

    /// Reads the ownership and permissions of the array.
    #[doc(alias = "IPC_STAT")]
    pub fn stat(self) -> Result<Perm> {
        let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
        // SAFETY: IPC_STAT writes one semid_ds to the pointer, which points
        // to a (zeroed) semid_ds.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
        // SAFETY: zero-initialised and filled by the kernel.
        Ok(perm_from(&unsafe { ds.assume_init() }.sem_perm))
    }

    /// Changes owner and permission bits (`IPC_STAT`, edit, `IPC_SET`).
    #[doc(alias = "IPC_SET")]
    pub fn set_perm(self, uid: u32, gid: u32, mode: u32) -> Result<()> {
        let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
        // SAFETY: as in `stat`.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
        // SAFETY: zero-initialised and filled by the kernel.
        let mut ds = unsafe { ds.assume_init() };
        ds.sem_perm.uid = uid;
        ds.sem_perm.gid = gid;
        ds.sem_perm.mode = (mode & 0o777) as _;
        // SAFETY: IPC_SET reads one semid_ds from the pointer.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_SET, &mut ds as *mut _) }).map(drop)
    }

    /// Removes the array from the system, waking every waiter with `EIDRM`.
    #[doc(alias = "IPC_RMID")]
    pub fn remove(self) -> Result<()> {
        // SAFETY: IPC_RMID ignores the fourth argument.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_RMID) }).map(drop)
    }
}
