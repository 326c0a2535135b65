//! Broadcasting through an open writer handle kept as a resource, so that
//! repeated broadcasts do not reopen the bus. A broadcast starts on the
//! calling scheduler and moves to a dirty one only if it has to wait.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bus::{Access, Begun, Bus, Deadline, Message, PendingWrite, WriteOptions};
use rustler::{Binary, Decoder, Encoder, Env, NifResult, Resource, ResourceArc, Term};

use crate::term::{path, Done, Failure};

rustler::atoms! { infinity, wait }

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

/// What broadcast/4 returns: `ok`, `{error, Reason}`, or `{wait, Pending}`.
enum Started {
    Done(Done),
    Wait(ResourceArc<Pending>),
}

impl Encoder for Started {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Started::Done(done) => done.encode(env),
            Started::Wait(pending) => (wait(), pending).encode(env),
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
    let bus = Bus::open(path(&at), Access::Write)?;
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
