//! The terms shared by the NIFs: pathnames, and the one encoding of
//! failures (`{error, Reason}`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustler::{Atom, Binary, Encoder, Env, Term};

rustler::atoms! {
    ok,
    error,
    message_too_long,
    message_contains_nul,
    enoent,
    eexist,
    eacces,
    eperm,
    invalid_bus_file,
    gone,
    busy,
    timeout,
    timeout_after_publish,
    interrupted,
    os_error,
    closed,

}

/// A pathname given as a binary (the Erlang side converts strings).
pub fn path<'a>(bytes: &'a Binary<'_>) -> &'a Path {
    Path::new(OsStr::from_bytes(bytes.as_slice()))
}

/// A fresh binary holding `bytes`.
pub fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = rustler::OwnedBinary::new(bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    bin.release(env).encode(env)
}

/// A pathname as an Erlang binary.
pub struct PathTerm(pub PathBuf);

impl Encoder for PathTerm {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        path_term(env, &self.0)
    }
}

fn path_term<'a>(env: Env<'a>, path: &Path) -> Term<'a> {
    binary(env, path.as_os_str().as_bytes())
}

/// Why a NIF failed: the `Reason` of `{error, Reason}`. Plain data (the
/// core's error, turned into what Erlang will see), so that NIFs can
/// return it: `message_too_long`, `message_contains_nul`, `enoent`,
/// `eexist`, `eacces`, `eperm` (not the owner), `{invalid_bus_file, Path}`, `gone`, `busy` (no-wait
/// and another writer holds the bus), `timeout` (nothing was published),
/// `timeout_after_publish` (some listeners may have the message),
/// `interrupted`, `closed` (the handle was closed, or the listener
/// was not on the bus), or `{os_error, Errno, Context}` for anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    MessageTooLong,
    MessageContainsNul,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    NotPermitted,
    InvalidBusFile(PathBuf),
    Gone,
    Busy,
    Timeout,
    TimeoutAfterPublish,
    Interrupted,
    Closed,
    Os { errno: i32, context: String },
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

/// The one encoding of failures.
impl Encoder for Failure {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let atom = |a: Atom| a.encode(env);
        match self {
            Failure::MessageTooLong => atom(message_too_long()),
            Failure::MessageContainsNul => atom(message_contains_nul()),
            Failure::NotFound => atom(enoent()),
            Failure::AlreadyExists => atom(eexist()),
            Failure::PermissionDenied => atom(eacces()),
            Failure::NotPermitted => atom(eperm()),
            Failure::InvalidBusFile(path) => (invalid_bus_file(), path_term(env, path)).encode(env),
            Failure::Gone => atom(gone()),
            Failure::Busy => atom(busy()),
            Failure::Timeout => atom(timeout()),
            Failure::TimeoutAfterPublish => atom(timeout_after_publish()),
            Failure::Interrupted => atom(interrupted()),
            Failure::Closed => atom(closed()),

            Failure::Os { errno, context } => (
                os_error(),
                errno_term(env, *errno),
                binary(env, context.as_bytes()),
            )
                .encode(env),
        }
    }
}

/// `ok`, or `{error, Reason}`.
pub struct Done(pub Result<(), Failure>);

impl Encoder for Done {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match &self.0 {
            Ok(()) => ok().encode(env),
            Err(e) => (error(), e).encode(env),
        }
    }
}

impl From<bus::Result<()>> for Done {
    fn from(result: bus::Result<()>) -> Done {
        Done(result.map_err(Failure::from))
    }
}

/// The POSIX name Erlang's `file` module would use, or the number.
fn errno_term(env: Env<'_>, errno: i32) -> Term<'_> {
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
    match NAMES.iter().find(|(n, _)| *n == errno) {
        Some((_, name)) => Atom::from_str(env, name).map_or(errno.encode(env), |a| a.encode(env)),
        None => errno.encode(env),
    }
}
