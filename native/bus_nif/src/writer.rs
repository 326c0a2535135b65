//! Broadcasting through an open bus, so that repeated broadcasts do not
//! reopen it: either the library's own cache of writers by pathname
//! (`broadcast_cached/4`, what `bus:broadcast` uses: one hash lookup, no
//! handle to keep in Erlang), or a writer handle kept as a resource. A
//! broadcast starts on the calling scheduler and moves to a dirty one only
//! if it has to wait.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use bus::{Access, Begun, Bus, Deadline, Message, PendingWrite, WriteOptions};
use rustler::{Binary, Decoder, Encoder, Env, NifResult, Resource, ResourceArc, Term};

use crate::term::{path, Done, Failure, PathTerm};

rustler::atoms! { infinity, wait, not_open }

/// The buses this library keeps open for broadcasting, by pathname. Each
/// loaded version of the library has its own; `forget_all_cached/0`
/// empties it before the library is unloaded (a static is never dropped).
static CACHED: LazyLock<RwLock<HashMap<Vec<u8>, Arc<Bus>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// An open bus used for broadcasting. `None` once closed: broadcasts then
/// fail with `{error, closed}`. (A broadcast left to finish holds the bus
/// until it is finished.)
pub struct Writer(RwLock<Option<Arc<Bus>>>);

#[rustler::resource_impl]
impl Resource for Writer {}

/// What is left of a broadcast that has to wait, for finish_broadcast/1.
/// Garbage collected unfinished, it finishes as `PendingWrite` does when
/// dropped (nothing sent, or delivered by a thread of its own).
pub struct Pending(Mutex<Option<PendingWrite>>);

#[rustler::resource_impl]
impl Resource for Pending {}

/// What broadcast/4 returns: `ok`, `{error, Reason}`, or `{wait, Pending}`
/// (and broadcast_cached/4 `not_open`).
enum Started {
    Done(Done),
    Wait(ResourceArc<Pending>),
    NotOpen,
}

impl Encoder for Started {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Started::Done(done) => done.encode(env),
            Started::Wait(pending) => (wait(), pending).encode(env),
            Started::NotOpen => not_open().encode(env),
        }
    }
}

/// A timeout in milliseconds, or `infinity`.
struct Timeout(Option<Duration>);

impl<'a> Decoder<'a> for Timeout {
    fn decode(term: Term<'a>) -> NifResult<Timeout> {
        if term
            .decode::<rustler::Atom>()
            .is_ok_and(|a| a == infinity())
        {
            Ok(Timeout(None))
        } else {
            Ok(Timeout(Some(Duration::from_millis(term.decode()?))))
        }
    }
}

/// `open_writer(Path) -> {ok, Writer} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn open_writer(at: Binary) -> Result<ResourceArc<Writer>, Failure> {
    let bus = open(&at)?;
    Ok(ResourceArc::new(Writer(RwLock::new(Some(Arc::new(bus))))))
}

/// `broadcast(Writer, Message, Timeout, NoWait) -> ok | {error, Reason} |
/// {wait, Pending}`, `Timeout` in milliseconds or `infinity`; it bounds
/// every wait. On the calling (normal) scheduler, never blocking: a
/// broadcast that has to wait returns `{wait, Pending}`, to finish with
/// finish_broadcast/1.
#[rustler::nif]
fn broadcast(
    writer: ResourceArc<Writer>,
    message: Binary,
    timeout: Timeout,
    nowait: bool,
) -> Started {
    let message = match Message::new(message.as_slice()) {
        Ok(m) => m,
        Err(e) => return Started::Done(Err::<(), _>(e).into()),
    };
    let Some(bus) = writer.0.read().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Started::Done(Done(Err(Failure::CLOSED)));
    };
    begin(&bus, message, timeout, nowait)
}

/// `broadcast_cached(Path, Message, Timeout, NoWait) -> ok | {error,
/// Reason} | {wait, Pending} | not_open`: broadcast/4 through the bus this
/// library keeps open at `Path`; `not_open` if it keeps none (open_cached/1
/// opens it). On the calling (normal) scheduler, never blocking.
#[rustler::nif]
fn broadcast_cached(at: Binary, message: Binary, timeout: Timeout, nowait: bool) -> Started {
    let message = match Message::new(message.as_slice()) {
        Ok(m) => m,
        Err(e) => return Started::Done(Err::<(), _>(e).into()),
    };
    let bus = CACHED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(at.as_slice())
        .cloned();
    match bus {
        Some(bus) => begin(&bus, message, timeout, nowait),
        None => Started::NotOpen,
    }
}

/// Starts a broadcast: done, or left for finish_broadcast/1.
fn begin(bus: &Arc<Bus>, message: Message, timeout: Timeout, nowait: bool) -> Started {
    let options = WriteOptions {
        nowait,
        deadline: timeout.0.map(Deadline::after),
        stop: None,
    };
    match bus.write_begin(message, &options) {
        Begun::Done(result) => Started::Done(result.into()),
        Begun::Pending(pending) => {
            Started::Wait(ResourceArc::new(Pending(Mutex::new(Some(pending)))))
        }
    }
}

/// `open_cached(Path) -> ok | {error, Reason}`: opens the bus for
/// broadcast_cached/4, unless it is open already.
#[rustler::nif(schedule = "DirtyIo")]
fn open_cached(at: Binary) -> Done {
    if CACHED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(at.as_slice())
    {
        return Done(Ok(()));
    }
    let bus = match open(&at) {
        Ok(bus) => Arc::new(bus),
        Err(e) => return Err::<(), _>(e).into(),
    };
    // Another process may have opened it meanwhile: the first one stays.
    CACHED
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(at.as_slice().to_vec())
        .or_insert(bus);
    Done(Ok(()))
}

/// Opens the bus at `at` for broadcasting, with the node's spinning budget.
fn open(at: &Binary) -> bus::Result<Bus> {
    let bus = Bus::open(path(at), Access::Write)?;
    if let Some(spin) = crate::spin::budget() {
        bus.set_spin(spin);
    }
    Ok(bus)
}

/// Gives every bus kept open for broadcasting the spinning budget `spin`.
pub fn respin_cached(spin: Duration) {
    for bus in CACHED.read().unwrap_or_else(|e| e.into_inner()).values() {
        bus.set_spin(spin);
    }
}

/// `forget_cached(Path) -> ok`: closes the bus kept open at `Path` (it was
/// removed, or found gone); a broadcast still finishing keeps it until it
/// is done.
#[rustler::nif(schedule = "DirtyIo")]
fn forget_cached(at: Binary) -> Done {
    let bus = CACHED
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(at.as_slice());
    drop(bus);
    Done(Ok(()))
}

/// `forget_all_cached() -> [Path]`: closes every bus kept open, and says
/// which (before this library is unloaded, or the application stops).
#[rustler::nif(schedule = "DirtyIo")]
fn forget_all_cached() -> Vec<PathTerm> {
    let all = std::mem::take(&mut *CACHED.write().unwrap_or_else(|e| e.into_inner()));
    all.into_keys()
        .map(|p| PathTerm(std::ffi::OsStr::from_bytes(&p).into()))
        .collect()
}

/// `finish_broadcast(Pending) -> ok | {error, Reason}`: the rest of a
/// broadcast broadcast/4 left waiting (a second call returns `ok`).
#[rustler::nif(schedule = "DirtyIo")]
fn finish_broadcast(pending: ResourceArc<Pending>) -> Done {
    let left = pending.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    match left {
        Some(pending) => pending.finish(None).into(),
        None => Done(Ok(())),
    }
}

/// `close_writer(Writer) -> ok`: detaches the bus now rather than at
/// garbage collection (waits for broadcasts in progress on this handle).
#[rustler::nif(schedule = "DirtyIo")]
fn close_writer(writer: ResourceArc<Writer>) -> Done {
    writer.0.write().unwrap_or_else(|e| e.into_inner()).take();
    Done(Ok(()))
}
