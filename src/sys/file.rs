//! Naming and opening files without blocking on what they are: `O_PATH`
//! opens, `fstat`/`fstatfs` on them, and re-opening through
//! `/proc/self/fd` for reading.
//!
//! A plain `open` of a FIFO waits for a writer, and opening a device runs
//! its driver's open routine (which may wait, or have side effects). An
//! `O_PATH` open does neither: it only resolves the path to an inode, which
//! can then be inspected before anything is really opened. None of these
//! wrappers retries on `EINTR`: a caller that is asked to stop must be able
//! to give up.

use std::ffi::CString;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{cvt, Errno, Result};

/// What kind of file an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A symbolic link (only seen without following links).
    Symlink,
}

/// What `fstat` says of an open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The kind of file.
    pub kind: FileKind,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::from_raw(libc::EINVAL))
}

/// Resolves `path` (following symbolic links) to a file descriptor that
/// names the file without opening it (`O_PATH`): no driver's open routine
/// runs, no FIFO waits for its other end, and no read permission is needed.
/// Only path resolution itself can block (a hung network file system).
#[doc(alias = "O_PATH")]
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open
    // takes no pointer besides it.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by a successful open and is owned by
    // no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens for reading the very file that `named` (an [`open_path`]
/// descriptor) names, through `/proc/self/fd`, with `O_NONBLOCK`: the same
/// inode whatever has happened to its pathname since, with read permission
/// checked now. Fails with `ENOENT` when `/proc` is not mounted (see
/// [`proc_fd_available`]).
pub fn reopen_for_reading(named: BorrowedFd<'_>) -> Result<File> {
    let link = format!("/proc/self/fd/{}", named.as_raw_fd());
    open_for_reading(Path::new(&link))
}

/// Whether `/proc/self/fd` can be used to re-open descriptors.
pub fn proc_fd_available() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// Opens `path` for reading with `O_NONBLOCK | O_NOCTTY`, so that even a
/// FIFO or a terminal is opened at once.
pub fn open_for_reading(path: &Path) -> Result<File> {
    let path = c_path(path)?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: as in `open_path`.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: as in `open_path`.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `fstat`: what the descriptor (also an `O_PATH` one) refers to.
#[doc(alias = "fstat")]
pub fn stat(fd: BorrowedFd<'_>) -> Result<FileStat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes one `struct stat` to the pointer, which points to
    // a (zeroed) one.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and filled by the kernel.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        _ => FileKind::Symlink,
    };
    Ok(FileStat {
        kind,
        size: st.st_size.max(0) as u64,
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    })
}

/// `fstatfs`: the magic number of the file system holding the file (its
/// `f_type`, e.g. `PROC_SUPER_MAGIC`).
#[doc(alias = "fstatfs")]
pub fn file_system_type(fd: BorrowedFd<'_>) -> Result<libc::c_long> {
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes one `struct statfs` to the pointer, which points
    // to a (zeroed) one.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and filled by the kernel.
    Ok(unsafe { st.assume_init() }.f_type)
}

/// The file systems whose files are made up by the kernel (or a driver)
/// when read: never bus files, and reading some of them blocks or consumes
/// what they hold (`/proc/kmsg`, `trace_pipe`). Name and magic number.
pub const PSEUDO_FILE_SYSTEMS: &[(&str, libc::c_long)] = &[
    ("proc", libc::PROC_SUPER_MAGIC),
    ("sysfs", libc::SYSFS_MAGIC),
    ("debugfs", libc::DEBUGFS_MAGIC),
    ("tracefs", libc::TRACEFS_MAGIC),
    ("securityfs", libc::SECURITYFS_MAGIC),
    ("cgroup", libc::CGROUP_SUPER_MAGIC),
    ("cgroup2", libc::CGROUP2_SUPER_MAGIC),
    ("bpf", libc::BPF_FS_MAGIC),
    ("devpts", libc::DEVPTS_SUPER_MAGIC),
    ("selinuxfs", libc::SELINUX_MAGIC),
    ("efivarfs", 0xde5e_81e4),
    ("configfs", 0x6265_6570),
    ("pstore", 0x6165_676c),
];
