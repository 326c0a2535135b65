//! Broadcasting through an open writer handle kept as a resource, so that
//! repeated broadcasts do not reopen the bus.

use std::sync::RwLock;
use std::time::Duration;

use bus::{Access, Bus, Deadline, Message, WriteOptions};
use rustler::{Binary, Decoder, NifResult, Resource, ResourceArc, Term};

use crate::term::{path, Done, Failure};

rustler::atoms! { infinity }

/// An open bus used for broadcasting. `None` once closed: broadcasts then
/// fail with `{error, closed}`.
pub struct Writer(RwLock<Option<Bus>>);

#[rustler::resource_impl]
impl Resource for Writer {}

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
    Ok(ResourceArc::new(Writer(RwLock::new(Some(bus)))))
}

/// `broadcast(Writer, Message, Timeout, NoWait) -> ok | {error, Reason}`,
/// `Timeout` in milliseconds or `infinity`; it bounds every wait.
#[rustler::nif(schedule = "DirtyIo")]
fn broadcast(writer: ResourceArc<Writer>, message: Binary, timeout: Timeout, nowait: bool) -> Done {
    let message = match Message::new(message.as_slice()) {
        Ok(m) => m,
        Err(e) => return Err::<(), _>(e).into(),
    };
    let guard = writer.0.read().unwrap_or_else(|e| e.into_inner());
    let Some(bus) = guard.as_ref() else {
        return Done(Err(Failure::CLOSED));
    };
    let options = WriteOptions {
        nowait,
        deadline: timeout.0.map(Deadline::after),
        stop: None,
    };
    bus.write_with(&message, &options).into()
}

/// `close_writer(Writer) -> ok`: detaches the bus now rather than at
/// garbage collection (waits for broadcasts in progress on this handle).
#[rustler::nif(schedule = "DirtyIo")]
fn close_writer(writer: ResourceArc<Writer>) -> Done {
    writer.0.write().unwrap_or_else(|e| e.into_inner()).take();
    Done(Ok(()))
}
