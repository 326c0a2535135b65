//! System V shared memory: `shmget`, `shmctl`, `shmat`/`shmdt`, and
//! copying messages in and out of an attached segment.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use super::ipc::{get_flags, perm_from, Key, Perm};
use super::{cvt, Errno, Result};

/// Size in bytes of the shared memory segment of every bus.
pub const MEMORY_SIZE: usize = 2048;

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
    pub fn get(key: Key, create: Option<u32>) -> Result<ShmId> {
        let flags = get_flags(create);
        // SAFETY: shmget takes only integers.
        cvt(unsafe { libc::shmget(key, MEMORY_SIZE, flags) }).map(ShmId)
    }

    fn ds(self) -> Result<libc::shmid_ds> {
        let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
        // SAFETY: IPC_STAT writes one shmid_ds to the pointer.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
        // SAFETY: zero-initialised and filled by the kernel.
        Ok(unsafe { ds.assume_init() })
    }

    /// Reads ownership, permissions, size and attach count.
    #[doc(alias = "IPC_STAT")]
    pub fn stat(self) -> Result<ShmStatus> {
        let ds = self.ds()?;
        Ok(ShmStatus {
            perm: perm_from(&ds.shm_perm),
            size: ds.shm_segsz,
            attached: ds.shm_nattch,
        })
    }

    /// Changes owner and permission bits (`IPC_STAT`, edit, `IPC_SET`).
    #[doc(alias = "IPC_SET")]
    pub fn set_perm(self, uid: u32, gid: u32, mode: u32) -> Result<()> {
        let mut ds = self.ds()?;
        ds.shm_perm.uid = uid;
        ds.shm_perm.gid = gid;
        ds.shm_perm.mode = (mode & 0o777) as _;
        // SAFETY: IPC_SET reads one shmid_ds from the pointer.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_SET, &mut ds) }).map(drop)
    }

    /// Marks the segment for removal (it goes when the last attach goes).
    #[doc(alias = "IPC_RMID")]
    pub fn remove(self) -> Result<()> {
        // SAFETY: IPC_RMID ignores the buffer argument.
        cvt(unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
    }

    /// Attaches the segment, read-only or read-write.
    #[doc(alias = "shmat")]
    pub fn attach(self, read_only: bool) -> Result<Mapping> {
        let flags = if read_only { libc::SHM_RDONLY } else { 0 };
        // SAFETY: a null address lets the kernel choose where to map.
        let ptr = unsafe { libc::shmat(self.0, std::ptr::null(), flags) };
        if ptr as isize == -1 {
            return Err(Errno::last());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::EINVAL)?;
        // Reject a segment smaller than the protocol's: reading or writing
        // MEMORY_SIZE bytes through it would fault.
        let size = self.stat().map(|s| s.size).unwrap_or(0);
        let mapping = Mapping { ptr, read_only };
        if size < MEMORY_SIZE {
            return Err(Errno::from_raw(libc::EINVAL));
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
