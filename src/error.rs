//! The one error type of the crate: each variant names a problem a caller can
//! act on.

use std::io;
use std::path::PathBuf;

use crate::message::MAX_MESSAGE_LEN;

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

impl Error {
    /// Wraps an OS error with what was being done.
    pub(crate) fn os(context: impl Into<String>, source: io::Error) -> Error {
        Error::Os {
            context: context.into(),
            source,
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
            Error::WouldBlock | Error::TimedOut | Error::TimedOutAfterPublish => libc::EAGAIN,
            Error::Interrupted => libc::EINTR,
            Error::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// The result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
