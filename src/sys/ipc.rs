//! What System V semaphore arrays and shared memory segments have in
//! common: keys, ownership and permissions, and the flags of their `get`.

/// A System V IPC key, as written in the bus file.
pub type Key = libc::key_t;

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
pub(crate) fn get_flags(create: Option<u32>) -> libc::c_int {
    match create {
        Some(mode) => libc::IPC_CREAT | libc::IPC_EXCL | mode as libc::c_int,
        None => 0,
    }
}

pub(crate) fn perm_from(p: &libc::ipc_perm) -> Perm {
    Perm {
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: u32::from(p.mode) & 0o777,
    }
}
