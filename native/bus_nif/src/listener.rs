//! Listening: a resource owning a native thread that runs the core's
//! race-free read loop and sends what it hears to its owner process:
//!
//! - `{bus_listening, Tag}` once the listener is counted on the bus;
//! - `{bus_message, Tag, Binary}` for each message;
//! - `{bus_listener_down, Tag, Reason}` if the loop ends other than by a
//!   stop (the bus was removed: `gone`).
//!
//! The thread stops (and leaves the bus) on `stop_listener/1`, when the
//! resource is garbage collected, or when the owner dies (resource monitor).
//! It never runs on a scheduler, so it may block and may use
//! `OwnedEnv::send_and_clear`.

use std::sync::Mutex;
use std::thread::{self, JoinHandle};

use bus::{Access, Bus, Event, Flow, ReadOptions, StopToken};
use rustler::env::SavedTerm;
use rustler::{Binary, Encoder, Env, LocalPid, Monitor, OwnedEnv, Resource, ResourceArc, Term};

use crate::term::{self, ok_tuple, path};

/// Small: the thread only copies a message and sends it.
const STACK_SIZE: usize = 128 * 1024;

/// A running listener; stopping it is idempotent.
pub struct Listener {
    token: StopToken,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    /// Interrupts the thread and returns once it is out of any blocking
    /// call; it leaves the bus right after (non-blocking steps).
    fn interrupt(&self) {
        self.token.stop();
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

impl Drop for Listener {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// `listen(Path, Owner, Tag) -> {ok, Listener} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn listen<'a>(env: Env<'a>, at: Binary<'a>, owner: LocalPid, tag: Term<'a>) -> Term<'a> {
    let bus = match Bus::open(path(&at), Access::ReadOnly) {
        Ok(bus) => bus,
        Err(e) => return term::failure(env, &e),
    };
    let token = StopToken::new();
    let tag_env = OwnedEnv::new();
    let saved = tag_env.save(tag);
    let thread_token = token.clone();
    let spawned = thread::Builder::new()
        .name("bus_listener".into())
        .stack_size(STACK_SIZE)
        .spawn(move || run(bus, thread_token, owner, tag_env, saved));
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => {
            let e = bus::Error::Os {
                context: "spawn listener thread".into(),
                source: e,
            };
            return term::failure(env, &e);
        }
    };
    let listener = ResourceArc::new(Listener {
        token,
        thread: Mutex::new(Some(handle)),
    });
    if env.monitor(&listener, &owner).is_none() {
        // The owner is already dead.
        listener.interrupt();
    }
    ok_tuple(env, listener)
}

/// `stop_listener(Listener) -> ok`: returns once the thread has left the
/// bus (the listener count is back to what it was before it joined).
#[rustler::nif(schedule = "DirtyIo")]
fn stop_listener(env: Env<'_>, listener: ResourceArc<Listener>) -> Term<'_> {
    listener.interrupt();
    let handle = listener
        .thread
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
    term::ok().encode(env)
}

/// The listener thread's body.
fn run(bus: Bus, token: StopToken, owner: LocalPid, tag_env: OwnedEnv, tag: SavedTerm) {
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
    let result = bus.read_with(&options, |event| {
        let sent = match event {
            Event::Listening => send(&|e, tag| (term::bus_listening(), tag).encode(e)),
            Event::Message(bytes) => {
                send(&|e, tag| (term::bus_message(), tag, term::binary(e, bytes)).encode(e))
            }
        };
        // A failed send means the owner is gone.
        if sent && !token.is_stopped() {
            Flow::Continue
        } else {
            Flow::Stop
        }
    });
    match result {
        Ok(()) | Err(bus::Error::Interrupted) => {}
        Err(e) => {
            send(&|env, tag| (term::bus_listener_down(), tag, term::reason(env, &e)).encode(env));
        }
    }
}
