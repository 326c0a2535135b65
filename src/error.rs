//! The one error type of the crate: each variant names a problem a caller can
//! act on.

use std::io;
use std::path::{Path, PathBuf};

use crate::message::MAX_MESSAGE_LEN;
use crate::sys::Errno;

/// Everything that can go wrong with a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message has more than 2047 bytes.
    #[error("message too long: {len} bytes, at most {MAX_MESSAGE_LEN} allowed")]
    MessageTooLong {
        /// Length of the refused message.
        len: usize,
    },
    /// The message has a NUL byte, which would end it early on the wire.
    #[error("message contains a NUL byte at offset {offset}")]
    MessageContainsNul {
        /// Offset of the first NUL byte.
        offset: usize,
    },
    /// The bus file does not exist.
    #[error("{}: no such bus{note}", path.display())]
    NotFound {
        /// The bus pathname.
        path: PathBuf,
        /// Empty, or what the path is instead, in parentheses (" (a
        /// dangling symbolic link)").
        note: &'static str,
    },
    /// The bus file exists and `create` was exclusive.
    #[error("{}: bus already exists", path.display())]
    AlreadyExists {
        /// The bus pathname.
        path: PathBuf,
    },
    /// The file is not a bus file: not a regular file (a directory, a FIFO,
    /// a device...), on a pseudo file system such as `/proc`, empty, too
    /// large, or not two decimal keys.
    #[error("{}: not a bus file: {reason}", path.display())]
    InvalidBusFile {
        /// The pathname.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    /// The semaphore array or shared memory the bus file names is gone
    /// (removed, or never created).
    #[error("{}: the bus's {object} no longer exists", path.display())]
    Gone {
        /// The bus pathname (empty when unknown).
        path: PathBuf,
        /// "semaphore array" or "shared memory".
        object: &'static str,
    },
    /// The calling process may not use the bus (file or IPC permissions).
    #[error("{}: permission denied ({what})", path.display())]
    PermissionDenied {
        /// The bus pathname.
        path: PathBuf,
        /// What was refused.
        what: &'static str,
    },
    /// The calling process may not make this change: it does not own the
    /// bus and is not privileged (`EPERM` from `chown`, `chmod`,
    /// `IPC_SET`).
    #[error("{}: operation not permitted ({what})", path.display())]
    NotPermitted {
        /// The bus pathname.
        path: PathBuf,
        /// What refused.
        what: &'static str,
    },
    /// The operation would have to block and was asked not to (another
    /// process is broadcasting, or no message is waiting).
    #[error("operation would block")]
    WouldBlock,
    /// The deadline passed before the message was published: no listener
    /// has it, the bus is as before.
    #[error("timed out")]
    TimedOut,
    /// The deadline passed after the message was published: some listeners
    /// have it, others not yet. This process finishes the broadcast in the
    /// background (keeping the writer lock until every listener has it), so
    /// the bus stays consistent.
    #[error("timed out after the message was published: not every listener took it")]
    TimedOutAfterPublish,
    /// The call was stopped through its [`crate::StopToken`] or by a
    /// termination signal.
    #[error("interrupted")]
    Interrupted,
    /// A subscription that drops what it cannot queue
    /// ([`crate::Overflow::Drop`]) missed this many messages here, between
    /// the one before and the one after; it goes on listening. (An item of
    /// the async stream, `bus::tokio`, rather than a failure.)
    #[error("{count} messages missed (the subscription's queue was full)")]
    Missed {
        /// How many consecutive messages were dropped.
        count: u64,
    },
    /// Any other operating system error.
    #[error("{context}: {source}")]
    Os {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What a failed system call was working on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    /// The bus file.
    BusFile,
    /// A directory of bus files (the runtime directory).
    Directory,
    /// The bus's semaphore array.
    SemaphoreArray,
    /// The bus's shared memory segment.
    SharedMemory,
}

impl Object {
    fn name(self) -> &'static str {
        match self {
            Object::BusFile => "bus file",
            Object::Directory => "directory",
            Object::SemaphoreArray => "semaphore array",
            Object::SharedMemory => "shared memory",
        }
    }

    fn is_ipc(self) -> bool {
        matches!(self, Object::SemaphoreArray | Object::SharedMemory)
    }
}

/// What the failed system call was doing with the [`Object`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Finding it by name or key (`open`, `semget`, `shmget`, `shmat`).
    Open,
    /// Making it (`open` with `O_EXCL`, `mkdir`, `semget`/`shmget` with
    /// `IPC_CREAT`).
    Create,
    /// Reading it (`read`, `fstat`, `IPC_STAT`, `GETALL`).
    Read,
    /// Writing it (`write`, `fsync`, `SETALL`, `SETVAL`).
    Write,
    /// Waiting on or changing its semaphores (`semop`).
    Wait,
    /// Changing its permissions or owner.
    Chmod,
    /// Removing it (`unlink`, `IPC_RMID`).
    Remove,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::Read => "read",
            Op::Write => "write",
            Op::Wait => "semop on",
            Op::Chmod => "change the permissions of",
            Op::Remove => "remove",
        }
    }
}

impl Error {
    /// The one mapping of a failed system call to the crate's error: `errno`
    /// from doing `op` on `object` of the bus at `path`. The same failure
    /// gives the same variant whatever entry point met it.
    pub(crate) fn sys(errno: Errno, object: Object, op: Op, path: &Path) -> Error {
        let path_buf = path.to_path_buf();
        match errno {
            Errno::EINTR => Error::Interrupted,
            // A semaphore operation made with IPC_NOWAIT (a file operation
            // would not: it is a plain failure there).
            Errno::EAGAIN if object.is_ipc() => Error::WouldBlock,
            Errno::EACCES => Error::PermissionDenied {
                path: path_buf,
                what: object.name(),
            },
            Errno::EPERM => Error::NotPermitted {
                path: path_buf,
                what: object.name(),
            },
            Errno::ENOENT if !object.is_ipc() => Error::NotFound {
                path: path_buf,
                note: if is_symlink(path) {
                    " (a dangling symbolic link)"
                } else {
                    ""
                },
            },
            Errno::EEXIST if !object.is_ipc() => Error::AlreadyExists { path: path_buf },
            // The key names an object, but not one of a bus's size (a
            // semaphore array with fewer than 5 semaphores, a segment under
            // 2048 bytes): the file does not name a bus.
            Errno::EINVAL if object.is_ipc() && op == Op::Open => Error::InvalidBusFile {
                path: path_buf,
                reason: format!(
                    "its {} key names an object of the wrong size",
                    object.name()
                ),
            },
            // No object under the key, or the identifier is no longer valid:
            // the bus was removed.
            Errno::ENOENT | Errno::EIDRM | Errno::EINVAL if object.is_ipc() => Error::Gone {
                path: path_buf,
                object: object.name(),
            },
            _ => Error::Os {
                context: format!("{}: {} {}", path.display(), op.verb(), object.name()),
                source: io::Error::from(errno),
            },
        }
    }

    /// [`Error::sys`] for an error of the standard library's file calls.
    pub(crate) fn file(err: io::Error, object: Object, op: Op, path: &Path) -> Error {
        match err.raw_os_error() {
            Some(raw) => Error::sys(Errno::from_raw(raw), object, op, path),
            None => Error::Os {
                context: format!("{}: {} {}", path.display(), op.verb(), object.name()),
                source: err,
            },
        }
    }

    /// Wraps an error that concerns no bus object (spawning a thread,
    /// installing a signal handler) with what was being done.
    pub(crate) fn os(context: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Os {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The closest `errno` value, for callers that speak C.
    pub fn errno(&self) -> i32 {
        match self {
            Error::MessageTooLong { .. } => libc::EMSGSIZE,
            Error::MessageContainsNul { .. } | Error::InvalidBusFile { .. } => libc::EINVAL,
            Error::NotFound { .. } => libc::ENOENT,
            Error::AlreadyExists { .. } => libc::EEXIST,
            Error::Gone { .. } => libc::EIDRM,
            Error::PermissionDenied { .. } => libc::EACCES,
            Error::NotPermitted { .. } => libc::EPERM,
            Error::WouldBlock | Error::TimedOut | Error::TimedOutAfterPublish => libc::EAGAIN,
            Error::Interrupted => libc::EINTR,
            // As netlink sockets say that messages were lost.
            Error::Missed { .. } => libc::ENOBUFS,
            Error::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(errno: Errno, object: Object, op: Op) -> Error {
        Error::sys(errno, object, op, Path::new("/nonexistent/bus"))
    }

    const IPC: [Object; 2] = [Object::SemaphoreArray, Object::SharedMemory];
    const OPS: [Op; 7] = [
        Op::Open,
        Op::Create,
        Op::Read,
        Op::Write,
        Op::Wait,
        Op::Chmod,
        Op::Remove,
    ];

    #[test]
    fn a_wrong_size_object_is_an_invalid_bus_file_wherever_it_is_opened() {
        for object in IPC {
            let e = map(Errno::EINVAL, object, Op::Open);
            assert!(matches!(e, Error::InvalidBusFile { .. }), "{e:?}");
            assert_eq!(e.errno(), libc::EINVAL);
        }
    }

    #[test]
    fn a_removed_object_is_gone_whatever_was_done_with_it() {
        for object in IPC {
            for errno in [Errno::ENOENT, Errno::EIDRM] {
                for op in OPS {
                    let e = map(errno, object, op);
                    assert!(matches!(e, Error::Gone { .. }), "{errno} {op:?}: {e:?}");
                }
            }
            for op in [Op::Read, Op::Write, Op::Wait, Op::Chmod, Op::Remove] {
                let e = map(Errno::EINVAL, object, op);
                assert!(matches!(e, Error::Gone { .. }), "EINVAL {op:?}: {e:?}");
            }
        }
    }

    #[test]
    fn refusals_keep_their_errno_for_every_object() {
        for object in [Object::BusFile, Object::Directory, IPC[0], IPC[1]] {
            let e = map(Errno::EACCES, object, Op::Open);
            assert!(matches!(e, Error::PermissionDenied { what, .. } if what == object.name()));
            assert_eq!(e.errno(), libc::EACCES);
            let e = map(Errno::EPERM, object, Op::Chmod);
            assert!(matches!(e, Error::NotPermitted { what, .. } if what == object.name()));
            assert_eq!(e.errno(), libc::EPERM);
        }
    }

    #[test]
    fn a_missing_file_is_not_found_and_an_existing_one_already_exists() {
        let e = map(Errno::ENOENT, Object::BusFile, Op::Open);
        assert!(matches!(e, Error::NotFound { note: "", .. }), "{e:?}");
        assert_eq!(e.to_string(), "/nonexistent/bus: no such bus");
        let e = map(Errno::EEXIST, Object::BusFile, Op::Create);
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    }

    #[test]
    fn signals_and_would_block_are_their_own_variants() {
        for object in [Object::BusFile, IPC[0]] {
            assert!(matches!(
                map(Errno::EINTR, object, Op::Wait),
                Error::Interrupted
            ));
        }
        let e = map(Errno::EAGAIN, IPC[0], Op::Wait);
        assert!(matches!(e, Error::WouldBlock), "{e:?}");
        // From a file, EAGAIN is no "another process is broadcasting".
        let e = map(Errno::EAGAIN, Object::BusFile, Op::Read);
        assert!(matches!(e, Error::Os { .. }), "{e:?}");
        assert_eq!(e.errno(), libc::EAGAIN);
    }

    #[test]
    fn anything_else_keeps_its_errno_and_says_what_was_done() {
        let e = map(Errno::ELOOP, Object::BusFile, Op::Open);
        assert_eq!(e.errno(), libc::ELOOP);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/bus: open bus file: "),
            "{e}"
        );
        let e = map(Errno::ENOSPC, Object::SemaphoreArray, Op::Create);
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(e.to_string().contains("create semaphore array"), "{e}");
    }
}
