//! Listening: a resource owning a core `Subscription` (a listener thread
//! feeding a queue), whose notices go to the owner process:
//!
//! - `{bus_listening, Tag}` once the listener is counted on the bus (or has
//!   taken over a standing, see below);
//! - `{bus_ready, Tag}` when the queue, empty until then, has something:
//!   the owner takes it with `take/2` (on a normal scheduler: it only
//!   copies);
//! - `{bus_listener_down, Tag, Reason}` if the listener fails (the bus was
//!   removed: `gone`).
//!
//! The notices are sent from the listener thread, after it has acknowledged
//! the message, so the Erlang send is off the protocol's critical path.
//! The listener stops (and leaves the bus) on `stop_listener/1`, when the
//! resource is garbage collected, or when the owner dies (a monitor).
//! `detach_listener/1` stops it without leaving: it returns the standing
//! (`armed` or `acked`), which `listen/4` of this or another loaded version
//! of this library takes over in the same OS process with no semaphore
//! operation; what the old queue still holds is taken with `take/2`. That
//! is how a hot upgrade moves running listeners to new native code.
//!
//! A lane (`open_lane/4`) takes the owner out of a message's way: while
//! it is open the listener thread sends each message itself, as `{bus,
//! Name, Message}`, to the subscribers the owner named, and queues
//! nothing (one BEAM process to wake instead of two).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bus::{Counters, Item, Notice, Overflow, Standing, SubscribeOptions, Subscription};
use rustler::env::SavedTerm;
use rustler::{
    Binary, Encoder, Env, LocalPid, Monitor, NifMap, NifUnitEnum, OwnedEnv, Resource, ResourceArc,
    Term,
};

use crate::term::{self, path, Done, Failure};

rustler::atoms! {
    bus_listening, bus_ready, bus_listener_down, own, dropped, join, armed, acked, bus
}

/// A running listener. (Unwind safety: a panic in a NIF leaves the
/// subscription as consistent as any of its methods does, since each keeps
/// its state behind its own lock.)
pub struct Listener {
    subscription: AssertUnwindSafe<Subscription>,
    /// What lanes sent since the last `close_lane/1`.
    lanes: Mutex<Option<Arc<LaneCount>>>,
}

/// What the lanes opened since the last `close_lane/1` sent.
#[derive(Default)]
struct LaneCount {
    messages: AtomicU64,
    bytes: AtomicU64,
}

#[rustler::resource_impl]
impl Resource for Listener {
    const IMPLEMENTS_DOWN: bool = true;

    // Not joined here: this runs on a scheduler thread. A lane closes
    // first: a dead owner's lane must not send after its successor's
    // first words to the same subscribers.
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        drop(self.subscription.close_direct());
        self.subscription.cancel();
    }
}

/// Where `listen/4` starts from: `join`, `armed` or `acked` (anything
/// else is badarg, as for every term of the wrong type).
#[derive(Clone, Copy)]
enum From {
    Join,
    Armed,
    Acked,
}

impl<'a> rustler::Decoder<'a> for From {
    fn decode(term: Term<'a>) -> rustler::NifResult<From> {
        let atom: rustler::Atom = term.decode()?;
        [
            (join(), From::Join),
            (armed(), From::Armed),
            (acked(), From::Acked),
        ]
        .into_iter()
        .find(|(a, _)| *a == atom)
        .map(|(_, from)| from)
        .ok_or(rustler::Error::BadArg)
    }
}

/// A standing handed over (`armed` | `acked`).
#[derive(NifUnitEnum)]
enum StandingAtom {
    Armed,
    Acked,
}

/// A copy in `e` of a term saved in `saved_in`.
fn load<'e>(saved_in: &OwnedEnv, term: &SavedTerm, e: Env<'e>) -> Term<'e> {
    saved_in.run(|s| term.load(s).in_env(e))
}

/// The notices of one listener, sent to its owner with its tag.
struct Mailer {
    owner: LocalPid,
    env: OwnedEnv,
    tag_env: OwnedEnv,
    tag: SavedTerm,
}

impl Mailer {
    /// Sends `{Name, Tag}` or `{Name, Tag, Extra}`. Only on the listener
    /// thread (never a scheduler thread).
    fn send(&mut self, make: impl for<'e> FnOnce(Env<'e>, Term<'e>) -> Term<'e>) {
        let (tag_env, tag) = (&self.tag_env, &self.tag);
        let _ = self.env.send_and_clear(&self.owner, |e| {
            let tag = load(tag_env, tag, e);
            make(e, tag)
        });
    }
}

/// `listen(Path, Owner, Tag, From, Window) -> {ok, Listener} | {error,
/// Reason}`: `From` is `join` to join the bus, or the standing (`armed` |
/// `acked`) returned by `detach_listener/1` of a listener of this process
/// on the same bus, taken over as it is. `Window` is the credit window:
/// how many messages the listener queues for its owner to take at most;
/// while it is full, the listener holds the bus (writers wait).
#[rustler::nif(schedule = "DirtyIo")]
fn listen<'a>(
    env: Env<'a>,
    at: Binary<'a>,
    owner: LocalPid,
    tag: Term<'a>,
    from: From,
    window: usize,
) -> Result<ResourceArc<Listener>, Failure> {
    let tag_env = OwnedEnv::new();
    let saved = tag_env.save(tag);
    let mailer = Mutex::new(Mailer {
        owner,
        env: OwnedEnv::new(),
        tag_env,
        tag: saved,
    });
    let notify = move |notice: Notice<'_>| {
        let mut mailer = mailer.lock().unwrap_or_else(|e| e.into_inner());
        match notice {
            Notice::Listening => mailer.send(|e, tag| (bus_listening(), tag).encode(e)),
            Notice::Ready => mailer.send(|e, tag| (bus_ready(), tag).encode(e)),
            Notice::Failed(err) => {
                mailer.send(|e, tag| (bus_listener_down(), tag, Failure::from(err)).encode(e))
            }
        }
    };
    let options = SubscribeOptions {
        // (The Erlang side passes a positive integer; 0 would mean 1.)
        capacity: window,
        overflow: Overflow::Hold,
        from: match from {
            From::Join => None,
            From::Armed => Some(Standing::Armed),
            From::Acked => Some(Standing::Acked),
        },
        spin: crate::spin::budget(),
        ready_fd: false,
        notify: Some(Box::new(notify)),
    };
    let subscription = Subscription::spawn(path(&at), options)?;
    let listener = ResourceArc::new(Listener {
        subscription: AssertUnwindSafe(subscription),
        lanes: Mutex::new(None),
    });
    if env.monitor(&listener, &owner).is_none() {
        // The owner is already dead.
        listener.subscription.cancel();
    }
    Ok(listener)
}

/// `take(Listener, Max) -> [Binary | {own, Binary} | {dropped, N}]`: up to
/// `Max` items waiting, oldest first; `{own, Binary}` for a message this
/// node's OS process broadcast. Never blocks.
#[rustler::nif]
fn take(env: Env<'_>, listener: ResourceArc<Listener>, max: usize) -> Vec<Term<'_>> {
    listener
        .subscription
        .drain(max)
        .into_iter()
        .map(|item| match item {
            Item::Message { bytes, own: false } => term::binary(env, &bytes),
            Item::Message { bytes, own: true } => (own(), term::binary(env, &bytes)).encode(env),
            Item::Dropped(n) => (dropped(), n).encode(env),
        })
        .collect()
}

/// The subscribers a lane sends to, their names kept in an env of their
/// own, and where the lane reports.
struct Lane {
    members: Vec<(LocalPid, SavedTerm)>,
    names: OwnedEnv,
    env: OwnedEnv,
    left: u64,
    owner: LocalPid,
    spent: SavedTerm,
    count: Arc<LaneCount>,
}

impl Lane {
    /// On the listener thread (never a scheduler thread): sends one item
    /// to every member; says whether the lane stays open.
    fn send(&mut self, item: Item) -> bool {
        let bytes = match item {
            Item::Message { bytes, .. } => bytes,
            // Only with Overflow::Drop, which listen/5 never asks for: the
            // lane closes, and its owner is told to look.
            Item::Dropped(_) => return self.spent(),
        };
        let names = &self.names;
        for (pid, name) in &self.members {
            let _ = self.env.send_and_clear(pid, |e| {
                let name = load(names, name, e);
                (bus(), name, term::binary(e, &bytes)).encode(e)
            });
        }
        self.count.messages.fetch_add(1, Ordering::Relaxed);
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.count.bytes.fetch_add(len, Ordering::Relaxed);
        self.left -= 1;
        self.left > 0 || self.spent()
    }

    /// Closes the lane: sends its owner the Spent term; false.
    fn spent(&mut self) -> bool {
        let (names, spent) = (&self.names, &self.spent);
        let _ = self
            .env
            .send_and_clear(&self.owner, |e| load(names, spent, e));
        false
    }
}

/// `open_lane(Listener, Members, Budget, Spent) -> ok | busy`: from now
/// on the listener thread sends each message itself, as `{bus, Name,
/// Message}`, to every `{Pid, Name}` of `Members` (own messages
/// included, unmarked), and queues nothing, until `Budget` messages went
/// that way (then it sends `Spent` to the caller and closes the lane) or
/// `close_lane/1`. `busy` while items wait to be taken (the lane must not
/// overtake them) or a lane is open.
#[rustler::nif]
fn open_lane<'a>(
    env: Env<'a>,
    listener: ResourceArc<Listener>,
    members: Vec<(LocalPid, Term<'a>)>,
    budget: u64,
    spent: Term<'a>,
) -> rustler::NifResult<rustler::Atom> {
    if budget == 0 || members.is_empty() {
        return Err(rustler::Error::BadArg);
    }
    let names = OwnedEnv::new();
    let members = members
        .into_iter()
        .map(|(pid, name)| (pid, names.save(name)))
        .collect();
    let spent = names.save(spent);
    let mut counts = listener.lanes.lock().unwrap_or_else(|e| e.into_inner());
    let count = counts.get_or_insert_with(Arc::default).clone();
    let mut lane = Lane {
        members,
        names,
        env: OwnedEnv::new(),
        left: budget,
        owner: env.pid(),
        spent,
        count,
    };
    Ok(
        match listener
            .subscription
            .open_direct(Box::new(move |item| lane.send(item)))
        {
            Ok(()) => term::ok(),
            Err(_) => term::busy(),
        },
    )
}

/// `close_lane(Listener) -> {Messages, Bytes}`: closes the lane if one is
/// open (the listener thread sends nothing more through it once this
/// returns: what follows is queued for `take/2`), and returns how many
/// messages, of how many bytes in all, the lanes sent since the last call.
#[rustler::nif]
fn close_lane(listener: ResourceArc<Listener>) -> (u64, u64) {
    drop(listener.subscription.close_direct());
    let count = listener
        .lanes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    count.map_or((0, 0), |c| {
        (
            c.messages.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        )
    })
}

/// `stop_listener(Listener) -> ok`: returns once the listener has left the
/// bus (the listener count is back to what it was before it joined).
#[rustler::nif(schedule = "DirtyIo")]
fn stop_listener(listener: ResourceArc<Listener>) -> Done {
    listener.subscription.stop();
    Done(Ok(()))
}

/// `detach_listener(Listener) -> {ok, armed | acked} | {error, Reason}`:
/// stops the listener without leaving the bus and returns once its thread
/// has ended (nothing is sent after that); the standing is for `listen/4`.
/// `Reason` is why the listener failed, or `closed` if it was already
/// stopped or detached.
#[rustler::nif(schedule = "DirtyIo")]
fn detach_listener(listener: ResourceArc<Listener>) -> Result<StandingAtom, Failure> {
    match listener.subscription.detach() {
        Some(Standing::Armed) => Ok(StandingAtom::Armed),
        Some(Standing::Acked) => Ok(StandingAtom::Acked),
        None => Err(listener
            .subscription
            .take_failure()
            .map_or(Failure::CLOSED, Failure::from)),
    }
}

/// `leave_detached(Listener) -> ok`: leaves the bus from the standing a
/// `detach_listener/1` returned, when it could not be taken over (the new
/// listener failed to start): a standing dropped would keep this OS
/// process counted on the bus. Does nothing otherwise.
#[rustler::nif(schedule = "DirtyIo")]
fn leave_detached(listener: ResourceArc<Listener>) -> Done {
    listener.subscription.leave_detached();
    Done(Ok(()))
}

/// What `listener_info/1` returns.
#[derive(NifMap)]
struct Info {
    taken: u64,
    delivered: u64,
    dropped: u64,
    queued: u64,
    held_us: u64,
}

/// `listener_info(Listener) -> #{taken, delivered, dropped, queued,
/// held_us}`: the listener's counters.
#[rustler::nif]
fn listener_info(listener: ResourceArc<Listener>) -> Info {
    let c: Counters = listener.subscription.counters();
    Info {
        taken: c.taken,
        delivered: c.delivered,
        dropped: c.dropped,
        queued: c.queued,
        held_us: u64::try_from(c.held.as_micros()).unwrap_or(u64::MAX),
    }
}
