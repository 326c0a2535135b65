//! Decoding of the shared argument types and encoding of core errors.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustler::{Atom, Binary, Encoder, Env, Term};

rustler::atoms! {
    ok,
    error,
    infinity,
    message_too_long,
    message_contains_nul,
    enoent,
    eexist,
    eacces,
    invalid_bus_file,
    gone,
    busy,
    timeout,
    timeout_after_publish,
    interrupted,
    os_error,
    bus_listening,
    bus_message,
    bus_listener_down,
}

/// A pathname given as a binary (the Erlang side converts strings).
pub fn path<'a>(bytes: &'a Binary<'_>) -> &'a Path {
    Path::new(OsStr::from_bytes(bytes.as_slice()))
}

/// A pathname as an Erlang binary.
pub fn path_term<'a>(env: Env<'a>, path: &Path) -> Term<'a> {
    binary(env, path.as_os_str().as_bytes())
}

/// A fresh binary holding `bytes`.
pub fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = rustler::OwnedBinary::new(bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    bin.release(env).encode(env)
}

/// `{error, Reason}` naming the problem:
/// `message_too_long`, `message_contains_nul`, `enoent`, `eexist`,
/// `eacces`, `{invalid_bus_file, Path}`, `gone`, `busy` (no-wait and another
/// writer holds the bus), `timeout` (nothing was published),
/// `timeout_after_publish` (some listeners may have the message),
/// `interrupted`, or `{os_error, Errno, Context}` for anything else.
pub fn failure<'a>(env: Env<'a>, err: &bus::Error) -> Term<'a> {
    (error(), reason(env, err)).encode(env)
}

/// The `Reason` of [`failure`].
pub fn reason<'a>(env: Env<'a>, err: &bus::Error) -> Term<'a> {
    use bus::Error as E;
    let atom = |a: Atom| a.encode(env);
    match err {
        E::MessageTooLong { .. } => atom(message_too_long()),
        E::MessageContainsNul { .. } => atom(message_contains_nul()),
        E::NotFound { .. } => atom(enoent()),
        E::AlreadyExists { .. } => atom(eexist()),
        E::PermissionDenied { .. } => atom(eacces()),
        E::InvalidBusFile { path, .. } => (invalid_bus_file(), path_term(env, path)).encode(env),
        E::Gone { .. } => atom(gone()),
        E::WouldBlock => atom(busy()),
        E::TimedOut => atom(timeout()),
        E::TimedOutAfterPublish => atom(timeout_after_publish()),
        E::Interrupted => atom(interrupted()),
        other => (
            os_error(),
            errno_term(env, other.errno()),
            binary(env, other.to_string().as_bytes()),
        )
            .encode(env),
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

/// Whether `term` is the atom `atom`.
pub fn is(term: Term<'_>, atom: Atom) -> bool {
    term.decode::<Atom>().is_ok_and(|a| a == atom)
}

/// `{ok, Value}`.
pub fn ok_tuple<'a>(env: Env<'a>, value: impl Encoder) -> Term<'a> {
    (ok(), value).encode(env)
}

/// `ok` or `{error, Reason}`.
pub fn unit<'a>(env: Env<'a>, result: bus::Result<()>) -> Term<'a> {
    match result {
        Ok(()) => ok().encode(env),
        Err(e) => failure(env, &e),
    }
}
