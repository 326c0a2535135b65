//! Listening: a resource owning a native thread that runs the core's
//! race-free read loop and sends what it hears to its owner process:
//!
//! - `{bus_listening, Tag}` once the listener is counted on the bus (or has
//!   taken over a standing, see below);
//! - `{bus_message, Tag, Binary}` for each message;
//! - `{bus_listener_down, Tag, Reason}` if the loop ends other than by a
//!   stop or a detach (the bus was removed: `gone`).
//!
//! The thread stops (and leaves the bus) on `stop_listener/1`, when the
//! resource is garbage collected, or when the owner dies (resource monitor).
//! `detach_listener/1` stops it without leaving: it returns the listener's
//! standing (`armed` or `acked`), which `listen/4` of this or another
//! loaded version of this library takes over in the same OS process, with
//! no semaphore operation: no message is lost or repeated (the core's
//! `Bus::read_handover`). That is how a hot upgrade moves running
//! listeners to the new native code before the old library is unloaded.
//!
//! The thread never runs on a scheduler, so it may block and may use
//! `OwnedEnv::send_and_clear`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use bus::{Access, Bus, Event, Flow, ReadOptions, Standing, StopToken};
use rustler::env::SavedTerm;
use rustler::{
    Atom, Binary, Encoder, Env, LocalPid, Monitor, OwnedEnv, Resource, ResourceArc, Term,
};

use crate::term::{self, ok_tuple, path};

rustler::atoms! { join, armed, acked, closed, left }

/// Small: the thread only copies a message and sends it.
const STACK_SIZE: usize = 128 * 1024;

/// A running listener; stopping it is idempotent.
pub struct Listener {
    token: StopToken,
    /// Set before a stop that must keep the standing (detach).
    keep: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Exit>>>,
}

/// How a listener thread ended.
enum Exit {
    /// Stopped by a detach: still on the bus, standing as given.
    Detached(Standing),
    /// Left the bus (stopped, or its owner is gone).
    Left,
    /// The loop failed (the owner has been told).
    Failed(bus::Error),
}

impl Listener {
    /// Interrupts the thread and returns once it is out of any blocking
    /// call; it leaves the bus right after (non-blocking steps).
    fn interrupt(&self) {
        self.token.stop();
    }

    fn join(&self) -> Option<Exit> {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A panicking thread has left the bus (the membership's Drop).
        handle.map(|h| h.join().unwrap_or(Exit::Left))
    }
}

#[rustler::resource_impl]
impl Resource for Listener {
    const IMPLEMENTS_DOWN: bool = true;

    // Not joined here: this runs on a scheduler thread while the owner is
    // exiting, and the listener thread may be sending to it.
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.interrupt();
    }
}

/// The last reference is gone: stop the thread and wait for it to end. It
/// is out of its blocking call when `interrupt` returns and only has
/// non-blocking steps left (leave the bus, send nothing), so this is quick;
/// and no thread of this library outlives its resources, which is what
/// lets the VM unload an old version of the library safely.
impl Drop for Listener {
    fn drop(&mut self) {
        self.interrupt();
        let _ = self.join();
    }
}

/// `listen(Path, Owner, Tag, From) -> {ok, Listener} | {error, Reason}`:
/// `From` is `join` to join the bus, or the standing (`armed` | `acked`)
/// returned by `detach_listener/1` of a listener of this process on the
/// same bus, taken over as it is.
#[rustler::nif(schedule = "DirtyIo")]
fn listen<'a>(
    env: Env<'a>,
    at: Binary<'a>,
    owner: LocalPid,
    tag: Term<'a>,
    from: Atom,
) -> rustler::NifResult<Term<'a>> {
    let from = if from == join() {
        None
    } else if from == armed() {
        Some(Standing::Armed)
    } else if from == acked() {
        Some(Standing::Acked)
    } else {
        return Err(rustler::Error::BadArg);
    };
    let bus = match Bus::open(path(&at), Access::ReadOnly) {
        Ok(bus) => bus,
        Err(e) => return Ok(term::failure(env, &e)),
    };
    let token = StopToken::new();
    let keep = Arc::new(AtomicBool::new(false));
    let tag_env = OwnedEnv::new();
    let saved = tag_env.save(tag);
    let (thread_token, thread_keep) = (token.clone(), keep.clone());
    let spawned = thread::Builder::new()
        .name("bus_listener".into())
        .stack_size(STACK_SIZE)
        .spawn(move || run(bus, from, thread_token, thread_keep, owner, tag_env, saved));
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => {
            let e = bus::Error::Os {
                context: "spawn listener thread".into(),
                source: e,
            };
            return Ok(term::failure(env, &e));
        }
    };
    let listener = ResourceArc::new(Listener {
        token,
        keep,
        thread: Mutex::new(Some(handle)),
    });
    if env.monitor(&listener, &owner).is_none() {
        // The owner is already dead.
        listener.interrupt();
    }
    Ok(ok_tuple(env, listener))
}

/// `stop_listener(Listener) -> ok`: returns once the thread has left the
/// bus (the listener count is back to what it was before it joined).
#[rustler::nif(schedule = "DirtyIo")]
fn stop_listener(env: Env<'_>, listener: ResourceArc<Listener>) -> Term<'_> {
    listener.interrupt();
    let _ = listener.join();
    term::ok().encode(env)
}

/// `detach_listener(Listener) -> {ok, armed | acked} | {error, Reason}`:
/// stops the thread without leaving the bus and returns once it has ended
/// (it sends nothing after that); the standing is for `listen/4`. `Reason`
/// is `closed` if the listener was already stopped or detached, `left` if
/// its owner is gone, or why its loop failed.
#[rustler::nif(schedule = "DirtyIo")]
fn detach_listener(env: Env<'_>, listener: ResourceArc<Listener>) -> Term<'_> {
    listener.keep.store(true, Ordering::SeqCst);
    listener.interrupt();
    match listener.join() {
        Some(Exit::Detached(Standing::Armed)) => ok_tuple(env, armed()),
        Some(Exit::Detached(Standing::Acked)) => ok_tuple(env, acked()),
        Some(Exit::Left) => (term::error(), left()).encode(env),
        Some(Exit::Failed(e)) => term::failure(env, &e),
        None => (term::error(), closed()).encode(env),
    }
}

/// The listener thread's body.
fn run(
    bus: Bus,
    from: Option<Standing>,
    token: StopToken,
    keep: Arc<AtomicBool>,
    owner: LocalPid,
    tag_env: OwnedEnv,
    tag: SavedTerm,
) -> Exit {
    let mut env = OwnedEnv::new();
    let mut send = |make: &dyn for<'e> Fn(Env<'e>, Term<'e>) -> Term<'e>| {
        env.send_and_clear(&owner, |e| {
            let tag = tag_env.run(|te| tag.load(te).in_env(e));
            make(e, tag)
        })
        .is_ok()
    };
    let options = ReadOptions {
        deadline: None,
        stop: Some(&token),
    };
    // A stop is seen by the loop's next wait, which then hands the standing
    // back instead of leaving; the callback only stops (and leaves) when
    // the owner is gone. A message taken is always sent.
    let result = bus.read_handover(from, &options, |event| {
        let sent = match event {
            Event::Listening => send(&|e, tag| (term::bus_listening(), tag).encode(e)),
            Event::Message(bytes) => {
                send(&|e, tag| (term::bus_message(), tag, term::binary(e, bytes)).encode(e))
            }
        };
        if sent {
            Flow::Continue
        } else {
            Flow::Stop
        }
    });
    match result {
        Ok(Some(standing)) if keep.load(Ordering::SeqCst) => Exit::Detached(standing),
        Ok(Some(standing)) => {
            leave(&bus, standing);
            Exit::Left
        }
        Ok(None) => Exit::Left,
        Err(e @ bus::Error::Interrupted) => Exit::Failed(e),
        Err(e) => {
            send(&|env, tag| (term::bus_listener_down(), tag, term::reason(env, &e)).encode(env));
            Exit::Failed(e)
        }
    }
}

/// Leaves the bus from a standing: take it over and stop at once (the
/// core leaves as the loop ends).
fn leave(bus: &Bus, standing: Standing) {
    let _ = bus.read_handover(Some(standing), &ReadOptions::default(), |_| Flow::Stop);
}
