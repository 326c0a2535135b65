//! Broadcasting through an open writer handle kept as a resource, so that
//! repeated broadcasts do not reopen the bus.

use std::sync::RwLock;
use std::time::Duration;

use bus::{Access, Bus, Deadline, Message, WriteOptions};
use rustler::{Binary, Encoder, Env, Resource, ResourceArc, Term};

use crate::term::{self, ok_tuple, path};

rustler::atoms! { closed }

/// An open bus used for broadcasting. `None` once closed: broadcasts then
/// fail with `{error, closed}`.
pub struct Writer(RwLock<Option<Bus>>);

#[rustler::resource_impl]
impl Resource for Writer {}

/// `open_writer(Path) -> {ok, Writer} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn open_writer<'a>(env: Env<'a>, at: Binary<'a>) -> Term<'a> {
    match Bus::open(path(&at), Access::Write) {
        Ok(bus) => ok_tuple(env, ResourceArc::new(Writer(RwLock::new(Some(bus))))),
        Err(e) => term::failure(env, &e),
    }
}

/// `broadcast(Writer, Message, Timeout, NoWait) -> ok | {error, Reason}`,
/// `Timeout` in milliseconds or `infinity`; it bounds every wait.
#[rustler::nif(schedule = "DirtyIo")]
fn broadcast<'a>(
    env: Env<'a>,
    writer: ResourceArc<Writer>,
    message: Binary<'a>,
    timeout: Term<'a>,
    nowait: bool,
) -> rustler::NifResult<Term<'a>> {
    let deadline = if term::is(timeout, term::infinity()) {
        None
    } else {
        Some(Deadline::after(Duration::from_millis(timeout.decode()?)))
    };
    let message = match Message::new(message.as_slice()) {
        Ok(m) => m,
        Err(e) => return Ok(term::failure(env, &e)),
    };
    let guard = writer.0.read().unwrap_or_else(|e| e.into_inner());
    let Some(bus) = guard.as_ref() else {
        return Ok((term::error(), closed()).encode(env));
    };
    let options = WriteOptions {
        nowait,
        deadline,
        stop: None,
    };
    Ok(term::unit(env, bus.write_with(&message, &options)))
}

/// `close_writer(Writer) -> ok`: detaches the bus now rather than at
/// garbage collection (waits for broadcasts in progress on this handle).
#[rustler::nif(schedule = "DirtyIo")]
fn close_writer(env: Env<'_>, writer: ResourceArc<Writer>) -> Term<'_> {
    writer.0.write().unwrap_or_else(|e| e.into_inner()).take();
    term::ok().encode(env)
}
