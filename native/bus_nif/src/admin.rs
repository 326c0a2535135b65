//! Managing buses as objects: create, remove, chmod, chown, stat. Each may
//! touch the file system or block on IPC, so each runs on a dirty I/O
//! scheduler. And which native version this is.

use rustler::{Binary, Encoder, Env, Term};

use crate::term::{self, ok_tuple, path, path_term};

rustler::atoms! {
    undefined,
    keys,
    file_mode,
    sem_mode,
    shm_mode,
    uid,
    gid,
    values,
    listeners,
    attached,
}

/// `native_version() -> N`: the NATIVE_VERSION this library was built
/// with (its module is `bus_nif_N`).
#[rustler::nif]
fn native_version() -> u32 {
    env!("BUS_NIF_VERSION").parse().unwrap_or(0)
}

/// `create(Path | undefined, Exclusive) -> {ok, Path} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn create<'a>(env: Env<'a>, at: Term<'a>, exclusive: bool) -> rustler::NifResult<Term<'a>> {
    let at: Option<Binary> = if term::is(at, undefined()) {
        None
    } else {
        Some(at.decode()?)
    };
    Ok(match bus::create(at.as_ref().map(path), exclusive) {
        Ok(created) => ok_tuple(env, path_term(env, &created)),
        Err(e) => term::failure(env, &e),
    })
}

/// `remove(Path) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn remove<'a>(env: Env<'a>, at: Binary<'a>) -> Term<'a> {
    term::unit(env, bus::unlink(path(&at)))
}

/// `chmod(Path, Mode) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn chmod<'a>(env: Env<'a>, at: Binary<'a>, mode: u32) -> Term<'a> {
    term::unit(env, bus::chmod(path(&at), mode))
}

/// `chown(Path, Uid | undefined, Gid | undefined) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn chown<'a>(
    env: Env<'a>,
    at: Binary<'a>,
    user: Term<'a>,
    group: Term<'a>,
) -> rustler::NifResult<Term<'a>> {
    let id = |t: Term<'a>| -> rustler::NifResult<Option<u32>> {
        if term::is(t, undefined()) {
            Ok(None)
        } else {
            t.decode().map(Some)
        }
    };
    Ok(term::unit(
        env,
        bus::chown(path(&at), id(user)?, id(group)?),
    ))
}

/// `stat(Path) -> {ok, #{...}} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn stat<'a>(env: Env<'a>, at: Binary<'a>) -> rustler::NifResult<Term<'a>> {
    let status = match bus::stat(path(&at)) {
        Ok(s) => s,
        Err(e) => return Ok(term::failure(env, &e)),
    };
    let v = status.semaphores();
    let map = Term::map_from_pairs(
        env,
        &[
            (
                keys().encode(env),
                (status.keys.sem, status.keys.shm).encode(env),
            ),
            (file_mode().encode(env), status.file_mode.encode(env)),
            (sem_mode().encode(env), status.sem_mode.encode(env)),
            (shm_mode().encode(env), status.shm_mode.encode(env)),
            (uid().encode(env), status.uid.encode(env)),
            (gid().encode(env), status.gid.encode(env)),
            (values().encode(env), (v.s, v.w, v.x, v.q, v.n).encode(env)),
            (listeners().encode(env), status.listeners().encode(env)),
            (attached().encode(env), status.attached.encode(env)),
        ],
    )?;
    Ok(ok_tuple(env, map))
}
