//! Thin typed wrappers over the System V IPC calls and the few signal calls
//! the bus needs. This is the only module of the crate that says `unsafe`.
//!
//! Every wrapper makes exactly one system call and turns `-1` + `errno` into
//! an [`io::Error`]; none of them retries. Retrying on `EINTR` is a policy
//! decision taken once, in [`crate::wait`].
#![allow(unsafe_code)]

pub mod file;

use std::io;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::time::Duration;

/// Size in bytes of the shared memory segment of every bus.
pub const MEMORY_SIZE: usize = 2048;

/// Number of semaphores in the array of every bus.
pub const SEMAPHORES: usize = 5;

/// A System V IPC key, as written in the bus file.
pub type Key = libc::key_t;

/// Converts the `-1`-and-`errno` convention into a `Result`, once for all.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

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

/// Ownership and permission bits of an IPC object (`struct ipc_perm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// The key the object was created under.
    pub key: Key,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Creator user id.
    pub cuid: u32,
    /// Creator group id.
    pub cgid: u32,
    /// Permission bits (the low 9 bits).
    pub mode: u32,
}

/// `get` flags: exclusive creation with `mode`, or plain open.
fn get_flags(create: Option<u32>) -> libc::c_int {
    match create {
        Some(mode) => libc::IPC_CREAT | libc::IPC_EXCL | mode as libc::c_int,
        None => 0,
    }
}

fn perm_from(p: &libc::ipc_perm) -> Perm {
    Perm {
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: u32::from(p.mode) & 0o777,
    }
}

/// A semaphore array identifier, as returned by `semget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SemId(libc::c_int);

impl SemId {
    /// Opens (or with `create`, exclusively creates with `mode`) the array of
    /// [`SEMAPHORES`] semaphores under `key`.
    #[doc(alias = "semget")]
    pub fn get(key: Key, create: Option<u32>) -> io::Result<SemId> {
        let flags = get_flags(create);
        // SAFETY: semget takes only integers.
        cvt(unsafe { libc::semget(key, SEMAPHORES as libc::c_int, flags) }).map(SemId)
    }

    /// Applies all of `ops` atomically: either every operation is made or
    /// none is; the call blocks as `block` says while any would block.
    #[doc(alias = "semop")]
    #[doc(alias = "semtimedop")]
    pub fn op(self, ops: &[SemOp], block: Block) -> io::Result<()> {
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
    pub fn get_all(self) -> io::Result<[u16; SEMAPHORES]> {
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
    pub fn waiting_for_zero(self, index: u16) -> io::Result<u32> {
        // SAFETY: GETZCNT takes no fourth argument.
        cvt(unsafe { libc::semctl(self.0, libc::c_int::from(index), libc::GETZCNT) })
            .map(|n| n as u32)
    }

    /// The number of processes waiting for semaphore `index` to increase.
    #[doc(alias = "GETNCNT")]
    pub fn waiting_for_increase(self, index: u16) -> io::Result<u32> {
        // SAFETY: GETNCNT takes no fourth argument.
        cvt(unsafe { libc::semctl(self.0, libc::c_int::from(index), libc::GETNCNT) })
            .map(|n| n as u32)
    }

    /// Sets the values of all semaphores of the array.
    #[doc(alias = "SETALL")]
    pub fn set_all(self, values: &[u16; SEMAPHORES]) -> io::Result<()> {
        // SAFETY: SETALL reads `nsems` (= SEMAPHORES, see get_all) unsigned
        // shorts from the pointer, which points to that many.
        cvt(unsafe { libc::semctl(self.0, 0, libc::SETALL, values.as_ptr()) }).map(drop)
    }

    /// Sets the value of one semaphore.
    #[doc(alias = "SETVAL")]
    pub fn set_value(self, index: u16, value: i32) -> io::Result<()> {
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
    pub fn stat(self) -> io::Result<Perm> {
        let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
        // SAFETY: IPC_STAT writes one semid_ds to the pointer, which points
        // to a (zeroed) semid_ds.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
        // SAFETY: zero-initialised and filled by the kernel.
        Ok(perm_from(&unsafe { ds.assume_init() }.sem_perm))
    }

    /// Changes owner and permission bits (`IPC_STAT`, edit, `IPC_SET`).
    #[doc(alias = "IPC_SET")]
    pub fn set_perm(self, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
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
    pub fn remove(self) -> io::Result<()> {
        // SAFETY: IPC_RMID ignores the fourth argument.
        cvt(unsafe { libc::semctl(self.0, 0, libc::IPC_RMID) }).map(drop)
    }
}

/// A shared memory segment identifier, as returned by `shmget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShmId(libc::c_int);

/// Status of a shared memory segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmStatus {
    /// Ownership and permissions.
    pub perm: Perm,
    /// Size in bytes.
    pub size: usize,
    /// Number of current attaches.
    pub attached: u64,
}

impl ShmId {
    /// Opens (or with `create`, exclusively creates with `mode`) the segment
    /// of [`MEMORY_SIZE`] bytes under `key`.
    #[doc(alias = "shmget")]
    pub fn get(key: Key, create: Option<u32>) -> io::Result<ShmId> {
        let flags = get_flags(create);
        // SAFETY: shmget takes only integers.
        cvt(unsafe { libc::shmget(key, MEMORY_SIZE, flags) }).map(ShmId)
    }

    fn ds(self) -> io::Result<libc::shmid_ds> {
        let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
        // SAFETY: IPC_STAT writes one shmid_ds to the pointer.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
        // SAFETY: zero-initialised and filled by the kernel.
        Ok(unsafe { ds.assume_init() })
    }

    /// Reads ownership, permissions, size and attach count.
    #[doc(alias = "IPC_STAT")]
    pub fn stat(self) -> io::Result<ShmStatus> {
        let ds = self.ds()?;
        Ok(ShmStatus {
            perm: perm_from(&ds.shm_perm),
            size: ds.shm_segsz,
            attached: ds.shm_nattch,
        })
    }

    /// Changes owner and permission bits (`IPC_STAT`, edit, `IPC_SET`).
    #[doc(alias = "IPC_SET")]
    pub fn set_perm(self, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        let mut ds = self.ds()?;
        ds.shm_perm.uid = uid;
        ds.shm_perm.gid = gid;
        ds.shm_perm.mode = (mode & 0o777) as _;
        // SAFETY: IPC_SET reads one shmid_ds from the pointer.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_SET, &mut ds) }).map(drop)
    }

    /// Marks the segment for removal (it goes when the last attach goes).
    #[doc(alias = "IPC_RMID")]
    pub fn remove(self) -> io::Result<()> {
        // SAFETY: IPC_RMID ignores the buffer argument.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
    }

    /// Attaches the segment, read-only or read-write.
    #[doc(alias = "shmat")]
    pub fn attach(self, read_only: bool) -> io::Result<Mapping> {
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        // SAFETY: a null address lets the kernel choose where to map.
        let ptr = unsafe { libc::shmat(self.0, std::ptr::null(), flags) };
        if ptr as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("shmat null"))?;
        // Reject a segment smaller than the protocol's: reading or writing
        // MEMORY_SIZE bytes through it would fault.
        let size = self.stat().map(|s| s.size).unwrap_or(0);
        let mapping = Mapping { ptr, read_only };
        if size < MEMORY_SIZE {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(mapping)
    }
}

/// An attached shared memory segment of [`MEMORY_SIZE`] bytes; detached on
/// drop.
///
/// Invariant: `ptr` is the address returned by a successful `shmat` of a
/// segment of at least [`MEMORY_SIZE`] bytes, attached until `Drop`.
/// Other processes write the segment too; the bus protocol's semaphores make
/// sure no one writes it while we copy out of it, and that no one reads it
/// while we copy into it.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    read_only: bool,
}

// SAFETY: the mapping is plain memory owned by the kernel; access to its
// contents is serialised by the protocol, not by the thread that attached.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` methods only copy bytes in or out.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The address the segment is attached at.
    pub fn address(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Copies the NUL-terminated message out of the segment into `out`
    /// (without its NUL). A segment with no NUL yields its 2047 first bytes.
    pub fn read_message(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; MEMORY_SIZE];
        // SAFETY: the segment has MEMORY_SIZE readable bytes (invariant);
        // `buf` is a distinct local array of that size.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), buf.as_mut_ptr(), MEMORY_SIZE) };
        let len = buf[..MEMORY_SIZE - 1]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MEMORY_SIZE - 1);
        out.clear();
        out.extend_from_slice(&buf[..len]);
    }

    /// Copies `message` and a terminating NUL into the segment.
    ///
    /// # Panics
    /// If the mapping is read-only or `message` does not fit with its NUL;
    /// callers pass a validated [`crate::Message`].
    pub fn write_message(&self, message: &[u8]) {
        assert!(!self.read_only, "write through a read-only attach");
        assert!(message.len() < MEMORY_SIZE, "message does not fit");
        // SAFETY: the segment has MEMORY_SIZE writable bytes (invariant, and
        // attached read-write as just checked); message.len() + 1 <= that.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), self.ptr.as_ptr(), message.len());
            self.ptr.as_ptr().add(message.len()).write(0);
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from shmat and is detached exactly once, here.
        unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
    }
}

/// Fills `buf` with random bytes from the kernel.
#[doc(alias = "getrandom")]
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// An opaque handle on a thread of this process, to interrupt it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadHandle(libc::pthread_t);

/// The calling thread's handle.
#[doc(alias = "pthread_self")]
pub fn current_thread() -> ThreadHandle {
    // SAFETY: pthread_self cannot fail.
    ThreadHandle(unsafe { libc::pthread_self() })
}

/// The signal that interrupts a blocked bus call when a stop is requested
/// (`SIGRTMIN + 7`). Its handler does nothing: delivering it only makes the
/// blocked `semop` return `EINTR`.
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 7
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler for `signal` that only sets `flag`, with or without
/// `SA_RESTART`. A handler (unlike `SIG_IGN`) is reset by `exec`, so spawned
/// programs start with default dispositions.
fn install_handler(
    signal: libc::c_int,
    handler: extern "C" fn(libc::c_int),
    restart: bool,
) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value;
    // we only set fields before passing it to the kernel.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize as libc::sighandler_t;
    sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
    // SAFETY: `sa` is a valid sigaction; the handler is async-signal-safe.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: as above; the old action is not needed.
    cvt(unsafe { libc::sigaction(signal, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Installs the do-nothing handler for [`wake_signal`] (idempotent).
pub fn install_wake_handler() -> io::Result<()> {
    install_handler(wake_signal(), ignore_signal, false)
}

/// Unblocks [`wake_signal`] in the calling thread (threads inherit the mask
/// of their creator, which in a VM may block most signals).
#[doc(alias = "pthread_sigmask")]
pub fn unblock_wake_signal() -> io::Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set; sigaddset adds a valid signal.
    unsafe {
        cvt(libc::sigemptyset(set.as_mut_ptr()))?;
        cvt(libc::sigaddset(set.as_mut_ptr(), wake_signal()))?;
    }
    // SAFETY: the set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Sends [`wake_signal`] to `thread`.
#[doc(alias = "pthread_kill")]
pub fn wake_thread(thread: ThreadHandle) -> io::Result<()> {
    // SAFETY: callers only pass handles of threads that are registered as
    // blocked in a bus call and have not deregistered (so still alive).
    let r = unsafe { libc::pthread_kill(thread.0, wake_signal()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The signals that ask a command to end: SIGINT, SIGTERM and SIGHUP.
pub const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn termination_set() -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signals.
    unsafe {
        cvt(libc::sigemptyset(set.as_mut_ptr()))?;
        for signal in TERMINATION_SIGNALS {
            cvt(libc::sigaddset(set.as_mut_ptr(), signal))?;
        }
        Ok(set.assume_init())
    }
}

/// Blocks the [`TERMINATION_SIGNALS`] in the calling thread (and so in the
/// threads it creates from now on), so that only [`wait_for_termination`]
/// receives them. Programs spawned later start with an empty mask (the
/// standard library resets it).
#[doc(alias = "pthread_sigmask")]
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set()?;
    // SAFETY: the set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits until one of the [`TERMINATION_SIGNALS`] (blocked in every
/// thread) is sent to the process, and returns it.
#[doc(alias = "sigwait")]
pub fn wait_for_termination() -> io::Result<libc::c_int> {
    let set = termination_set()?;
    let mut signal = 0;
    // SAFETY: the set is initialised and `signal` is a valid int to write.
    let r = unsafe { libc::sigwait(&set, &mut signal) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(signal)
}

/// Ends the process the way `signal` does by default (its exit status says
/// which signal killed it): restores the default action, unblocks it in
/// this thread and sends it to the process.
pub fn die_of(signal: libc::c_int) -> ! {
    // SAFETY: SIG_DFL is a valid disposition; the mask set is initialised
    // before use; raise takes an int.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
    }
    // Only reached if the signal's default action is ignored (not one of
    // the termination signals).
    std::process::abort()
}

extern "C" fn reap_children(_: libc::c_int) {
    let saved = io::Error::last_os_error().raw_os_error();
    // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    if let Some(e) = saved {
        // SAFETY: restoring errno, which the interrupted code may be reading.
        unsafe { *libc::__errno_location() = e };
    }
}

/// Reaps every child as it exits (a SIGCHLD handler with `SA_RESTART`), so a
/// long-running listener leaves no zombies.
pub fn reap_children_automatically() -> io::Result<()> {
    install_handler(libc::SIGCHLD, reap_children, true)
}
