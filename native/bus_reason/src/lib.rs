//! Why a bus operation failed, as the Erlang `bus` application names it:
//! the core's [`bus::Error`] turned into the `Reason` of `{error, Reason}`
//! (`bus:reason()`). One mapping for both backends, so that the NIF
//! (`native/bus_nif`) and the port program (`native/bus_port`) give their
//! callers the same reasons; each encodes it in its own way (rustler
//! terms, the external term format).

use std::path::PathBuf;

/// Why an operation or the listener failed: `message_too_long`,
/// `message_contains_nul`, `enoent`, `eexist`, `eacces`, `eperm` (not the
/// owner), `{invalid_bus_file, Path}`, `gone`, `busy` (no-wait and
/// another writer holds the bus), `timeout` (nothing was published),
/// `timeout_after_publish` (some listeners may have the message),
/// `interrupted`, `closed` (no listener), or `{os_error, Errno, Context}`
/// for anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `message_too_long`.
    MessageTooLong,
    /// `message_contains_nul`.
    MessageContainsNul,
    /// `enoent`.
    NotFound,
    /// `eexist`.
    AlreadyExists,
    /// `eacces`.
    PermissionDenied,
    /// `eperm`.
    NotPermitted,
    /// `{invalid_bus_file, Path}`.
    InvalidBusFile(PathBuf),
    /// `gone`.
    Gone,
    /// `busy`.
    Busy,
    /// `timeout`.
    Timeout,
    /// `timeout_after_publish`.
    TimeoutAfterPublish,
    /// `interrupted`.
    Interrupted,
    /// `closed`.
    Closed,
    /// `{os_error, Errno, Context}`: the errno's name where Erlang's
    /// `file` module has one (see [`errno_name`]), else its number.
    Os {
        /// The `errno` value.
        errno: i32,
        /// What was being done, in English.
        context: String,
    },
}

impl From<&bus::Error> for Failure {
    fn from(err: &bus::Error) -> Failure {
        use bus::Error as E;
        match err {
            E::MessageTooLong { .. } => Failure::MessageTooLong,
            E::MessageContainsNul { .. } => Failure::MessageContainsNul,
            E::NotFound { .. } => Failure::NotFound,
            E::AlreadyExists { .. } => Failure::AlreadyExists,
            E::PermissionDenied { .. } => Failure::PermissionDenied,
            E::NotPermitted { .. } => Failure::NotPermitted,
            E::InvalidBusFile { path, .. } => Failure::InvalidBusFile(path.clone()),
            E::Gone { .. } => Failure::Gone,
            E::WouldBlock => Failure::Busy,
            E::TimedOut => Failure::Timeout,
            E::TimedOutAfterPublish => Failure::TimeoutAfterPublish,
            E::Interrupted => Failure::Interrupted,
            other => Failure::Os {
                errno: other.errno(),
                context: other.to_string(),
            },
        }
    }
}

impl From<bus::Error> for Failure {
    fn from(err: bus::Error) -> Failure {
        Failure::from(&err)
    }
}

impl Failure {
    /// An operating system error that concerns no bus (a thread that could
    /// not be spawned).
    pub fn os(context: &str, err: &std::io::Error) -> Failure {
        Failure::Os {
            errno: err.raw_os_error().unwrap_or(EIO),
            context: format!("{context}: {err}"),
        }
    }
}

/// `EIO`, for an I/O error that carries no `errno`.
const EIO: i32 = 5;

/// The name Erlang's `file` module gives an `errno` (`eloop`, ...), where
/// it has one; the atom list of `bus_port_frames:atoms/0` has them all.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    const NAMES: &[(i32, &str)] = &[
        (1, "eperm"),
        (5, "eio"),
        (9, "ebadf"),
        (12, "enomem"),
        (20, "enotdir"),
        (21, "eisdir"),
        (22, "einval"),
        (23, "enfile"),
        (24, "emfile"),
        (28, "enospc"),
        (30, "erofs"),
        (36, "enametoolong"),
        (40, "eloop"),
        (122, "edquot"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == errno)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_the_core_keep_their_meaning() {
        let path = PathBuf::from("/x");
        assert_eq!(Failure::from(bus::Error::WouldBlock), Failure::Busy);
        assert_eq!(
            Failure::from(&bus::Error::InvalidBusFile {
                path: path.clone(),
                reason: "empty".into(),
            }),
            Failure::InvalidBusFile(path)
        );
        let os = bus::Error::Os {
            context: "/x: open bus file".into(),
            source: std::io::Error::from_raw_os_error(40),
        };
        assert!(matches!(Failure::from(&os), Failure::Os { errno: 40, .. }));
    }

    #[test]
    fn errno_names_are_those_of_erlang() {
        assert_eq!(errno_name(40), Some("eloop"));
        assert_eq!(errno_name(122), Some("edquot"));
        assert_eq!(errno_name(11), None);
    }
}
