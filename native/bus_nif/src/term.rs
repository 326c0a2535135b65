//! The terms shared by the NIFs: pathnames, and the one encoding of
//! failures (`{error, Reason}`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bus_reason::Failure as Reason;
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

/// Why a NIF failed: the `Reason` of `{error, Reason}`, as
/// `bus_reason` names it (the port program names it the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub Reason);

impl Failure {
    /// `closed`: the handle was closed, or the listener was not on the
    /// bus.
    pub const CLOSED: Failure = Failure(Reason::Closed);
}

impl From<&bus::Error> for Failure {
    fn from(err: &bus::Error) -> Failure {
        Failure(Reason::from(err))
    }
}

impl From<bus::Error> for Failure {
    fn from(err: bus::Error) -> Failure {
        Failure(Reason::from(&err))
    }
}

/// The one encoding of failures.
impl Encoder for Failure {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let atom = |a: Atom| a.encode(env);
        match &self.0 {
            Reason::MessageTooLong => atom(message_too_long()),
            Reason::MessageContainsNul => atom(message_contains_nul()),
            Reason::NotFound => atom(enoent()),
            Reason::AlreadyExists => atom(eexist()),
            Reason::PermissionDenied => atom(eacces()),
            Reason::NotPermitted => atom(eperm()),
            Reason::InvalidBusFile(path) => (invalid_bus_file(), path_term(env, path)).encode(env),
            Reason::Gone => atom(gone()),
            Reason::Busy => atom(busy()),
            Reason::Timeout => atom(timeout()),
            Reason::TimeoutAfterPublish => atom(timeout_after_publish()),
            Reason::Interrupted => atom(interrupted()),
            Reason::Closed => atom(closed()),

            Reason::Os { errno, context } => (
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

/// The errno's name (`bus_reason::errno_name`), or the number.
fn errno_term(env: Env<'_>, errno: i32) -> Term<'_> {
    match bus_reason::errno_name(errno).and_then(|name| Atom::from_str(env, name).ok()) {
        Some(atom) => atom.encode(env),
        None => errno.encode(env),
    }
}
