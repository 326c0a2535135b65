//! Managing buses as objects: create, unlink, chmod, chown and stat.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::busfile::{self, Keys, DEFAULT_MODE};
use crate::error::{Error, Object, Op, Result};
use crate::protocol::{self, Semaphores, INITIAL_VALUES};
use crate::sys::{self, Errno, SemId, ShmId, SEMAPHORES};

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
    let (path, file) = match path {
        Some(path) => match busfile::create_exclusive(path) {
            Ok(file) => (path.to_path_buf(), file),
            Err(Error::AlreadyExists { .. }) if !exclusive => return Ok(path.to_path_buf()),
            Err(e) => return Err(e),
        },
        None => create_random_file(&busfile::runtime_dir())?,
    };
    make_objects(path, file)
}

/// Creates a bus named `random.<30 characters>` in `dir` (made if
/// missing, mode 0755) and returns its pathname: [`create`] without a
/// path, in a directory of the caller's choosing.
pub fn create_in(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let (path, file) = create_random_file(dir.as_ref())?;
    make_objects(path, file)
}

/// Makes the objects of the bus whose file was just created, and writes
/// their keys into it; on failure, removes everything, the file included.
fn make_objects(path: PathBuf, file: fs::File) -> Result<PathBuf> {
    let mut undo = Undo {
        file: Some(path.clone()),
        ..Undo::default()
    };
    let sem_failed = |e| Error::sys(e, Object::SemaphoreArray, Op::Create, &path);
    let (sem_key, sem) =
        with_random_key(|key| SemId::get(key, Some(DEFAULT_MODE))).map_err(sem_failed)?;
    undo.sem = Some(sem);
    sem.set_all(&INITIAL_VALUES).map_err(sem_failed)?;
    let (shm_key, shm) = with_random_key(|key| ShmId::get(key, Some(DEFAULT_MODE)))
        .map_err(|e| Error::sys(e, Object::SharedMemory, Op::Create, &path))?;
    undo.shm = Some(shm);

    let keys = Keys {
        sem: sem_key,
        shm: shm_key,
    };
    busfile::write_keys(&file, &path, keys)?;
    undo.disarm();
    Ok(path)
}

fn create_random_file(dir: &Path) -> Result<(PathBuf, fs::File)> {
    busfile::make_dirs(dir)?;
    loop {
        let path = dir.join(busfile::random_name()?);
        match busfile::create_exclusive(&path) {
            Ok(file) => return Ok((path, file)),
            Err(Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Calls `make` with random keys until it does not fail with `EEXIST` (the
/// key is taken) or `EINTR`.
fn with_random_key<T>(mut make: impl FnMut(i32) -> sys::Result<T>) -> sys::Result<(i32, T)> {
    loop {
        // A failure to draw random bytes is reported as the object's.
        let key = busfile::random_key().map_err(|_| Errno::EIO)?;
        match make(key) {
            Ok(made) => return Ok((key, made)),
            Err(Errno::EEXIST | Errno::EINTR) => {}
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
    let sem = open_sem(path, keys)
        .and_then(|sem| sem.remove().map_err(|e| sem_error(path, Op::Remove, e)));
    let shm = open_shm(path, keys)
        .and_then(|shm| shm.remove().map_err(|e| shm_error(path, Op::Remove, e)));
    let file = fs::remove_file(path).map_err(|e| Error::file(e, Object::BusFile, Op::Remove, path));
    sem.and(shm).and(file)
}

fn sem_error(path: &Path, op: Op, e: Errno) -> Error {
    Error::sys(e, Object::SemaphoreArray, op, path)
}

fn shm_error(path: &Path, op: Op, e: Errno) -> Error {
    Error::sys(e, Object::SharedMemory, op, path)
}

fn open_sem(path: &Path, keys: Keys) -> Result<SemId> {
    SemId::get(keys.sem, None).map_err(|e| sem_error(path, Op::Open, e))
}

fn open_shm(path: &Path, keys: Keys) -> Result<ShmId> {
    ShmId::get(keys.shm, None).map_err(|e| shm_error(path, Op::Open, e))
}

/// Opens the bus file and the objects it names.
fn objects(path: &Path) -> Result<(busfile::Opened, SemId, ShmId)> {
    let opened = busfile::open(path)?;
    let sem = open_sem(path, opened.keys)?;
    let shm = open_shm(path, opened.keys)?;
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
    let sem_perm = sem.stat().map_err(|e| sem_error(path, Op::Read, e))?;
    sem.set_perm(sem_perm.uid, sem_perm.gid, mode)
        .map_err(|e| sem_error(path, Op::Chmod, e))?;
    let shm_perm = shm.stat().map_err(|e| shm_error(path, Op::Read, e))?.perm;
    shm.set_perm(shm_perm.uid, shm_perm.gid, mode)
        .map_err(|e| shm_error(path, Op::Chmod, e))?;
    // Through the descriptor: the very file whose keys were read.
    opened
        .file
        .set_permissions(fs::Permissions::from_mode(mode & !0o022))
        .map_err(|e| Error::file(e, Object::BusFile, Op::Chmod, path))
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
        .map_err(|e| Error::file(e, Object::BusFile, Op::Chmod, path))?;
    let mode = sem.stat().map_err(|e| sem_error(path, Op::Read, e))?.mode;
    sem.set_perm(uid, gid, mode)
        .map_err(|e| sem_error(path, Op::Chmod, e))?;
    let mode = shm
        .stat()
        .map_err(|e| shm_error(path, Op::Read, e))?
        .perm
        .mode;
    shm.set_perm(uid, gid, mode)
        .map_err(|e| shm_error(path, Op::Chmod, e))
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
        u32::from(self.semaphores().s)
    }

    /// The semaphore values, by name.
    pub fn semaphores(&self) -> Semaphores {
        Semaphores::from(self.values)
    }
}

/// Reads the state of a bus, to see who may use it and diagnose a stuck one.
pub fn stat(path: impl AsRef<Path>) -> Result<Status> {
    let path = path.as_ref();
    let (opened, sem, shm) = objects(path)?;
    let read_sem = |e| sem_error(path, Op::Read, e);
    let sem_perm = sem.stat().map_err(read_sem)?;
    let shm_status = shm.stat().map_err(|e| shm_error(path, Op::Read, e))?;
    let values = sem.get_all().map_err(read_sem)?;
    let waiting = protocol::waiting(sem).map_err(read_sem)?;
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
