//! Managing buses as objects: create, remove, chmod, chown, stat. Each may
//! touch the file system or block on IPC, so each runs on a dirty I/O
//! scheduler. And which native version this is.

use rustler::{Binary, NifMap};

use crate::term::{path, Done, Failure, PathTerm};

/// `native_version() -> N`: the NATIVE_VERSION this library was built
/// with (its module is `bus_nif_N`).
#[rustler::nif]
fn native_version() -> u32 {
    env!("BUS_NIF_VERSION").parse().unwrap_or(0)
}

/// `undefined`, or a value.
enum Maybe<T> {
    Undefined,
    Value(T),
}

rustler::atoms! { undefined }

impl<'a, T: rustler::Decoder<'a>> rustler::Decoder<'a> for Maybe<T> {
    fn decode(term: rustler::Term<'a>) -> rustler::NifResult<Self> {
        if term
            .decode::<rustler::Atom>()
            .is_ok_and(|a| a == undefined())
        {
            Ok(Maybe::Undefined)
        } else {
            term.decode().map(Maybe::Value)
        }
    }
}

impl<T> From<Maybe<T>> for Option<T> {
    fn from(m: Maybe<T>) -> Option<T> {
        match m {
            Maybe::Undefined => None,
            Maybe::Value(v) => Some(v),
        }
    }
}

/// `create(Path | undefined, Exclusive) -> {ok, Path} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn create(at: Maybe<Binary>, exclusive: bool) -> Result<PathTerm, Failure> {
    let at: Option<Binary> = at.into();
    Ok(PathTerm(bus::create(at.as_ref().map(path), exclusive)?))
}

/// `create_random(Dir) -> {ok, Path} | {error, Reason}`: a bus named
/// `random.` and 30 random characters in `Dir` (made if missing).
#[rustler::nif(schedule = "DirtyIo")]
fn create_random(dir: Binary) -> Result<PathTerm, Failure> {
    Ok(PathTerm(bus::create_in(path(&dir))?))
}

/// `remove(Path) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn remove(at: Binary) -> Done {
    bus::unlink(path(&at)).into()
}

/// `chmod(Path, Mode) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn chmod(at: Binary, mode: u32) -> Done {
    bus::chmod(path(&at), mode).into()
}

/// `chown(Path, Uid | undefined, Gid | undefined) -> ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn chown(at: Binary, user: Maybe<u32>, group: Maybe<u32>) -> Done {
    bus::chown(path(&at), user.into(), group.into()).into()
}

/// What `stat/1` returns.
#[derive(NifMap)]
struct Stat {
    keys: (i32, i32),
    file_mode: u32,
    sem_mode: u32,
    shm_mode: u32,
    uid: u32,
    gid: u32,
    /// S, W, X, Q, N.
    values: (u16, u16, u16, u16, u16),
    listeners: u32,
    attached: u64,
}

/// `stat(Path) -> {ok, #{...}} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn stat(at: Binary) -> Result<Stat, Failure> {
    let s = bus::stat(path(&at))?;
    let v = s.semaphores();
    Ok(Stat {
        keys: (s.keys.sem, s.keys.shm),
        file_mode: s.file_mode,
        sem_mode: s.sem_mode,
        shm_mode: s.shm_mode,
        uid: s.uid,
        gid: s.gid,
        values: (v.s, v.w, v.x, v.q, v.n),
        listeners: s.listeners(),
        attached: s.attached,
    })
}
