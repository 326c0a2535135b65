//! Managing buses as objects: create, unlink, chmod, chown and stat.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::busfile::{self, Keys, DEFAULT_MODE};
use crate::error::{Error, Result};
use crate::sys::{SemId, ShmId, SEMAPHORES};
use crate::wait::ipc_error;

/// Initial semaphore values {S, W, X, Q, N}: only the writer lock is free.
const INITIAL_VALUES: [u16; SEMAPHORES] = [0, 0, 1, 0, 0];

/// Removes what a failed `create` made, in reverse order.
#[derive(Default)]
struct Undo {
    file: Option<PathBuf>,
    sem: Option<SemId>,
    shm: Option<ShmId>,
}

impl Undo {
    /// Success: keep everything.
    fn disarm(&mut self) {
        // (Assigning a new `Undo` would drop, and so run, the old one.)
        self.file = None;
        self.sem = None;
        self.shm = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(shm) = self.shm.take() {
            let _ = shm.remove();
        }
        if let Some(sem) = self.sem.take() {
            let _ = sem.remove();
        }
        if let Some(file) = self.file.take() {
            let _ = fs::remove_file(file);
        }
    }
}

/// Creates a bus and returns its pathname.
///
/// With `Some(path)`: if the file exists, fails with
/// [`Error::AlreadyExists`] when `exclusive`, else succeeds and changes
/// nothing. With `None`: creates `random.<30 characters>` in
/// [`busfile::runtime_dir`] (made if missing).
#[doc(alias = "bus_create")]
pub fn create(path: Option<&Path>, exclusive: bool) -> Result<PathBuf> {
    let mut undo = Undo::default();
    let (path, file) = match path {
        Some(path) => match busfile::create_exclusive(path) {
            Ok(file) => (path.to_path_buf(), file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !exclusive => {
                return Ok(path.to_path_buf())
            }
            Err(e) => return Err(busfile::file_error(path, "create", e)),
        },
        None => create_random_file()?,
    };
    undo.file = Some(path.clone());

    let (sem_key, sem) = with_random_key(|key| SemId::get(key, Some(DEFAULT_MODE)))
        .map_err(|e| Error::os("create semaphore array", e))?;
    undo.sem = Some(sem);
    sem.set_all(&INITIAL_VALUES)
        .map_err(|e| Error::os("initialise semaphore array", e))?;
    let (shm_key, shm) = with_random_key(|key| ShmId::get(key, Some(DEFAULT_MODE)))
        .map_err(|e| Error::os("create shared memory", e))?;
    undo.shm = Some(shm);

    busfile::write_keys(
        &file,
        Keys {
            sem: sem_key,
            shm: shm_key,
        },
    )
    .map_err(|e| busfile::file_error(&path, "write", e))?;
    undo.disarm();
    Ok(path)
}

fn create_random_file() -> Result<(PathBuf, fs::File)> {
    let dir = busfile::runtime_dir();
    busfile::make_dirs(&dir).map_err(|e| busfile::file_error(&dir, "mkdir", e))?;
    loop {
        let name = busfile::random_name().map_err(|e| Error::os("getrandom", e))?;
        let path = dir.join(name);
        match busfile::create_exclusive(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(busfile::file_error(&path, "create", e)),
        }
    }
}

/// Calls `make` with random keys until it does not fail with `EEXIST` or
/// `EINTR`.
fn with_random_key<T>(mut make: impl FnMut(i32) -> io::Result<T>) -> io::Result<(i32, T)> {
    loop {
        let key = busfile::random_key()?;
        match make(key) {
            Ok(made) => return Ok((key, made)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Removes the bus: its semaphore array, its shared memory and its file.
/// All three are attempted; the first error is reported.
#[doc(alias = "bus_unlink")]
pub fn unlink(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let keys = busfile::read(path)?;
    let sem = SemId::get(keys.sem, None)
        .and_then(SemId::remove)
        .map_err(|e| object_error(path, "semaphore array", e));
    let shm = ShmId::get(keys.shm, None)
        .and_then(ShmId::remove)
        .map_err(|e| object_error(path, "shared memory", e));
    let file = fs::remove_file(path).map_err(|e| busfile::file_error(path, "remove", e));
    sem.and(shm).and(file)
}

fn object_error(path: &Path, object: &'static str, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EIDRM) | Some(libc::EINVAL) => Error::Gone {
            path: path.into(),
            object,
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            path: path.into(),
            what: object,
        },
        _ => Error::os(format!("{}: {object}", path.display()), e),
    }
}

/// Opens the bus file and the objects it names.
fn objects(path: &Path) -> Result<(busfile::Opened, SemId, ShmId)> {
    let opened = busfile::open(path)?;
    let keys = opened.keys;
    let sem = SemId::get(keys.sem, None).map_err(|e| object_error(path, "semaphore array", e))?;
    let shm = ShmId::get(keys.shm, None).map_err(|e| object_error(path, "shared memory", e))?;
    Ok((opened, sem, shm))
}

/// Normalises `mode` the bus way: any bit of a class grants that class read
/// and write, no bit revokes it. E.g. `0o750` becomes `0o660`.
pub fn normalise_mode(mode: u32) -> u32 {
    let mut out = 0;
    for class in [0o700, 0o070, 0o007] {
        if mode & class != 0 {
            out |= class;
        }
    }
    out & 0o666
}

/// Sets who may use the bus (see [`normalise_mode`]). The IPC objects get
/// the normalised mode; the file gets it without group and other write,
/// so only its owner can change which objects it names.
#[doc(alias = "bus_chmod")]
pub fn chmod(path: impl AsRef<Path>, mode: u32) -> Result<()> {
    let path = path.as_ref();
    let mode = normalise_mode(mode);
    let (opened, sem, shm) = objects(path)?;
    let sem_perm = sem
        .stat()
        .map_err(|e| object_error(path, "semaphore array", e))?;
    sem.set_perm(sem_perm.uid, sem_perm.gid, mode)
        .map_err(|e| object_error(path, "semaphore array", e))?;
    let shm_perm = shm
        .stat()
        .map_err(|e| object_error(path, "shared memory", e))?
        .perm;
    shm.set_perm(shm_perm.uid, shm_perm.gid, mode)
        .map_err(|e| object_error(path, "shared memory", e))?;
    // Through the descriptor: the very file whose keys were read.
    opened
        .file
        .set_permissions(fs::Permissions::from_mode(mode & !0o022))
        .map_err(|e| busfile::file_error(path, "chmod", e))
}

/// Changes the owner and/or group of the bus (`None` keeps the file's
/// current one): the file first, then the IPC objects.
#[doc(alias = "bus_chown")]
pub fn chown(path: impl AsRef<Path>, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    let path = path.as_ref();
    let (opened, sem, shm) = objects(path)?;
    let uid = uid.unwrap_or(opened.stat.uid);
    let gid = gid.unwrap_or(opened.stat.gid);
    std::os::unix::fs::fchown(&opened.file, Some(uid), Some(gid))
        .map_err(|e| busfile::file_error(path, "chown", e))?;
    let mode = sem
        .stat()
        .map_err(|e| object_error(path, "semaphore array", e))?
        .mode;
    sem.set_perm(uid, gid, mode)
        .map_err(|e| object_error(path, "semaphore array", e))?;
    let mode = shm
        .stat()
        .map_err(|e| object_error(path, "shared memory", e))?
        .perm
        .mode;
    shm.set_perm(uid, gid, mode)
        .map_err(|e| object_error(path, "shared memory", e))
}

/// What [`stat`] reports about a bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The keys in the bus file.
    pub keys: Keys,
    /// Permission bits of the file.
    pub file_mode: u32,
    /// Permission bits of the semaphore array.
    pub sem_mode: u32,
    /// Permission bits of the shared memory.
    pub shm_mode: u32,
    /// Owner of the semaphore array.
    pub uid: u32,
    /// Group of the semaphore array.
    pub gid: u32,
    /// Current semaphore values, in the order S, W, X, Q, N.
    pub values: [u16; SEMAPHORES],
    /// Processes attached to the shared memory.
    pub attached: u64,
    /// Listeners asleep waiting for a message (blocked on Q, or on N once
    /// Q is zero). Fewer than [`Status::listeners`] means some are busy
    /// with a message, or stuck.
    pub waiting: u32,
}

impl Status {
    /// Processes listening now (S).
    pub fn listeners(&self) -> u32 {
        u32::from(self.values[0])
    }
}

/// Reads the state of a bus, to see who may use it and diagnose a stuck one.
pub fn stat(path: impl AsRef<Path>) -> Result<Status> {
    let path = path.as_ref();
    let (opened, sem, shm) = objects(path)?;
    let sem_perm = sem
        .stat()
        .map_err(|e| object_error(path, "semaphore array", e))?;
    let shm_status = shm
        .stat()
        .map_err(|e| object_error(path, "shared memory", e))?;
    let values = sem.get_all().map_err(|e| ipc_error(path, "GETALL", e))?;
    let waiting = crate::bus::sem::waiting(sem).map_err(|e| ipc_error(path, "GETZCNT", e))?;
    Ok(Status {
        keys: opened.keys,
        file_mode: opened.stat.mode,
        sem_mode: sem_perm.mode,
        shm_mode: shm_status.perm.mode,
        uid: sem_perm.uid,
        gid: sem_perm.gid,
        values,
        attached: shm_status.attached,
        waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::normalise_mode;

    #[test]
    fn any_bit_of_a_class_grants_read_write() {
        assert_eq!(normalise_mode(0o700), 0o600);
        assert_eq!(normalise_mode(0o751), 0o666);
        assert_eq!(normalise_mode(0o104), 0o606);
        assert_eq!(normalise_mode(0), 0);
    }
}
