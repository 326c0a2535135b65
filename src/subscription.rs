//! A subscription: a listener on a thread of its own feeding a bounded
//! queue, which any consumer (a BEAM process through the NIF, a port
//! program, an async runtime, Python) drains at its own pace. The one
//! listening primitive every binding stands on.
//!
//! When the queue is full the subscription either *holds the bus* — its
//! listener, having acknowledged the last message, does not re-arm, so the
//! bus's writers wait (the protocol's own back-pressure) — or *drops* the
//! messages it cannot queue and reports exactly how many, in the queue,
//! where they are missing. Each message is marked when this very process
//! broadcast it (see own.rs). The consumer learns that items wait through
//! a callback run on the listener thread, or an `eventfd` its event loop
//! watches, or by blocking in [`Subscription::next`].

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bus::{Access, Bus};
use crate::error::{Error, Result};
use crate::listener::{Flow, Heard, ReadOptions, Standing};
use crate::stop::StopToken;
use crate::sys::event::EventFd;

/// What a subscription does with a message when its queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Hold the bus: do not take the next message until the queue has
    /// room. Writers wait meanwhile; nothing is lost.
    Hold,
    /// Take and discard it, counting it: an [`Item::Dropped`] stands where
    /// the discarded messages would have been.
    Drop,
}

/// What the listener thread tells the consumer (through
/// [`SubscribeOptions::notify`]), on the listener thread.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The listener is counted on the bus (or has taken over a standing):
    /// every broadcast from now on reaches the queue. Sent once, first.
    Listening,
    /// The queue, empty until now, has an item.
    Ready,
    /// The listener failed and left the bus (for example it was removed:
    /// [`Error::Gone`]); nothing follows.
    Failed(&'a Error),
}

/// A callback for [`Notice`]s.
pub type Notify = Box<dyn Fn(Notice<'_>) + Send + Sync>;

/// A consumer the listener thread hands items to itself, in order, in
/// place of queueing them (see [`Subscription::open_direct`]); it returns
/// whether it takes the next item too. It runs on the listener thread
/// after the acknowledgement and before re-arming (the bus's next
/// broadcast waits for it), with the queue locked: it must be quick, must
/// not block, and must not call back into the subscription.
pub type Direct = Box<dyn FnMut(Item) -> bool + Send>;

/// The direct consumer's place in the queue's state.
#[derive(Default)]
struct DirectSlot(Option<Direct>);

impl std::fmt::Debug for DirectSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "open" } else { "closed" })
    }
}

/// How a subscription is made.
pub struct SubscribeOptions {
    /// How many messages the queue holds at most (at least 1).
    pub capacity: usize,
    /// What happens to a message when the queue is full.
    pub overflow: Overflow,
    /// `None` to join the bus, or a standing returned by
    /// [`Subscription::detach`] of a subscription of this process on the
    /// same bus, taken over with no semaphore operation (hot upgrades).
    pub from: Option<Standing>,
    /// Make an `eventfd` that is readable while items wait
    /// ([`Subscription::ready_fd`]).
    pub ready_fd: bool,
    /// Called on the listener thread with each [`Notice`]; it must not
    /// block, and must not call back into the subscription.
    pub notify: Option<Notify>,
    /// The listener's spinning budget ([`Bus::set_spin`]); `None`: the
    /// default every bus this process opens gets ([`crate::default_spin`]).
    pub spin: Option<Duration>,
}

impl Default for SubscribeOptions {
    /// A queue of 1024 messages that holds the bus when full, no `eventfd`,
    /// no callback.
    fn default() -> SubscribeOptions {
        SubscribeOptions {
            capacity: 1024,
            overflow: Overflow::Hold,
            from: None,
            ready_fd: false,
            notify: None,
            spin: None,
        }
    }
}

impl std::fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("from", &self.from)
            .field("ready_fd", &self.ready_fd)
            .field("notify", &self.notify.is_some())
            .field("spin", &self.spin)
            .finish()
    }
}

/// What the queue holds, in the order things happened on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message, as broadcast.
    Message {
        /// Its bytes (without the NUL).
        bytes: Vec<u8>,
        /// Whether a writer of this process broadcast it.
        own: bool,
    },
    /// This many messages were broadcast here and dropped (the queue was
    /// full, [`Overflow::Drop`]); consecutive drops are one item.
    Dropped(u64),
}

/// What a subscription has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages taken from the bus.
    pub taken: u64,
    /// Messages handed to the consumer.
    pub delivered: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// Messages in the queue now.
    pub queued: u64,
    /// Time the listener spent holding the bus because the queue was full,
    /// the hold under way included.
    pub held: Duration,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Messages in `items` (drop notices do not count against capacity).
    messages: usize,
    /// Dropped since the last message queued: reported before the next.
    dropping: u64,
    counters: Counters,
    /// When the hold under way began (`counters.held` has the ones ended).
    holding_since: Option<Instant>,
    listening: bool,
    failure: Option<Error>,
    /// The listener thread has ended.
    ended: bool,
    /// While open, it takes every item as soon as it is acknowledged: the
    /// queue stays empty.
    direct: DirectSlot,
}

impl Queue {
    /// Whether anything waits for the consumer: an item, or drops not
    /// followed by a message yet.
    fn waiting(&self) -> bool {
        !self.items.is_empty() || self.dropping > 0
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the consumer makes room, and on stop.
    room: Condvar,
    /// Signalled when an item arrives, the listener starts or ends.
    changed: Condvar,
    capacity: usize,
    overflow: Overflow,
    stopping: AtomicBool,
    /// Detach after the next message (see
    /// [`Subscription::detach_after_next_message`]).
    after_next: AtomicBool,
    ready_fd: Option<EventFd>,
    notify: Option<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notice(&self, notice: Notice<'_>) {
        if let Some(notify) = &self.notify {
            notify(notice);
        }
    }

    /// On the listener thread, before the message is acknowledged (so it
    /// is queued, or counted as dropped, when the broadcast returns):
    /// queues it, or drops it if the queue is full. Returns whether the
    /// queue was empty before.
    fn queue(&self, bytes: &[u8], own: bool) -> bool {
        let mut q = self.lock();
        q.counters.taken += 1;
        // With Hold the queue had room before this listener re-armed (and
        // if a stop woke it early, the message is queued all the same).
        if self.overflow == Overflow::Drop && q.messages >= self.capacity {
            q.dropping += 1;
            q.counters.dropped += 1;
            return false;
        }
        let was_empty = q.items.is_empty();
        if q.dropping > 0 {
            let n = std::mem::take(&mut q.dropping);
            q.items.push_back(Item::Dropped(n));
        }
        q.items.push_back(Item::Message {
            bytes: bytes.to_vec(),
            own,
        });
        q.messages += 1;
        if was_empty {
            self.became_ready();
        }
        self.changed.notify_all();
        was_empty
    }

    /// On the listener thread, after the acknowledgement and before
    /// re-arming: tells the consumer that items wait, then, with Hold and
    /// a full queue, holds the bus (this listener does not re-arm, so no
    /// writer can start) until the consumer makes room or stops it.
    fn after(&self, was_empty: bool) {
        if was_empty && !self.hand_direct() {
            self.notice(Notice::Ready);
        }
        if self.overflow != Overflow::Hold {
            return;
        }
        let mut q = self.lock();
        if q.messages < self.capacity {
            return;
        }
        let since = Instant::now();
        q.holding_since = Some(since);
        // (A detach after the next message ends the hold: the detached
        // standing holds the writers back all the same.)
        while q.messages >= self.capacity
            && !self.stopping.load(Ordering::SeqCst)
            && !self.after_next.load(Ordering::SeqCst)
        {
            q = self.room.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.holding_since = None;
        q.counters.held += since.elapsed();
    }

    /// Hands what is queued to the direct consumer, if one is open, until
    /// it closes; returns whether nothing is left for the consumer to be
    /// told of.
    fn hand_direct(&self) -> bool {
        let mut q = self.lock();
        let Some(mut direct) = q.direct.0.take() else {
            return false;
        };
        let mut open = true;
        while open {
            match self.pop(&mut q) {
                Some(item) => open = direct(item),
                None => break,
            }
        }
        if open {
            q.direct.0 = Some(direct);
        }
        !q.waiting()
    }

    fn became_ready(&self) {
        if let Some(fd) = &self.ready_fd {
            // Cannot fail on a valid eventfd short of 2^64 - 1 sets.
            let _ = fd.set();
        }
    }

    /// Pops the next item, if any.
    fn pop(&self, q: &mut Queue) -> Option<Item> {
        let item = match q.items.pop_front() {
            Some(item) => item,
            // A gap not followed by a message yet.
            None if q.dropping > 0 => Item::Dropped(std::mem::take(&mut q.dropping)),
            None => return None,
        };
        if let Item::Message { .. } = item {
            q.messages -= 1;
            q.counters.delivered += 1;
            self.room.notify_all();
        }
        if !q.waiting() {
            if let Some(fd) = &self.ready_fd {
                let _ = fd.clear();
            }
        }
        Some(item)
    }
}

/// How the listener thread ended.
enum Exit {
    /// Stopped for a handover: still on the bus, standing as given, with
    /// the bus kept open in case the handover cannot be completed.
    Detached(Standing, Box<Bus>),
    /// Left the bus.
    Left,
}

/// A running subscription; see the module documentation. Dropping it stops
/// the listener and leaves the bus.
pub struct Subscription {
    shared: Arc<Shared>,
    token: StopToken,
    /// Set before a stop that must keep the standing.
    keep: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Exit>>>,
    /// After a detach: the standing and the bus, until taken over (then
    /// simply dropped: the bus is closed, not left) or left.
    detached: Mutex<Option<(Standing, Bus)>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("capacity", &self.shared.capacity)
            .field("overflow", &self.shared.overflow)
            .field("counters", &self.counters())
            .finish()
    }
}

impl Subscription {
    /// Subscribes to the bus at `path` and returns once the listener is
    /// counted on it: every broadcast that starts after this returns is
    /// queued (or counted as dropped).
    pub fn start(path: impl AsRef<Path>, options: SubscribeOptions) -> Result<Subscription> {
        let subscription = Subscription::spawn(path, options)?;
        subscription.wait_listening()?;
        Ok(subscription)
    }

    /// Like [`Subscription::start`], but returns as soon as the bus is open
    /// and the listener thread started; [`Notice::Listening`] (or
    /// [`Subscription::wait_listening`]) says when it is counted. (Joining
    /// waits for a broadcast in flight to finish, which a stopped listener
    /// can make long.)
    pub fn spawn(path: impl AsRef<Path>, options: SubscribeOptions) -> Result<Subscription> {
        let bus = Bus::open(path, Access::ReadOnly)?;
        if let Some(spin) = options.spin {
            bus.set_spin(spin);
        }
        let ready_fd = match options.ready_fd {
            true => Some(EventFd::new().map_err(|e| Error::os("eventfd", e))?),
            false => None,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            room: Condvar::new(),
            changed: Condvar::new(),
            capacity: options.capacity.max(1),
            overflow: options.overflow,
            stopping: AtomicBool::new(false),
            after_next: AtomicBool::new(false),
            ready_fd,
            notify: options.notify,
        });
        let token = StopToken::new();
        let keep = Arc::new(AtomicBool::new(false));
        let (thread_shared, thread_token, thread_keep) =
            (shared.clone(), token.clone(), keep.clone());
        let from = options.from;
        let thread = std::thread::Builder::new()
            .name("bus-subscription".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let stops = Stops {
                    token: &thread_token,
                    keep: &thread_keep,
                };
                listen(bus, from, &thread_shared, &stops)
            })
            .map_err(|e| Error::os("spawn the listener thread", e))?;
        Ok(Subscription {
            shared,
            token,
            keep,
            thread: Mutex::new(Some(thread)),
            detached: Mutex::new(None),
        })
    }

    /// Waits until the listener is counted on the bus, or returns why it
    /// could not be.
    pub fn wait_listening(&self) -> Result<()> {
        let mut q = self.shared.lock();
        loop {
            if q.listening {
                return Ok(());
            }
            if q.ended {
                return Err(q.failure.take().unwrap_or(Error::Interrupted));
            }
            q = self
                .shared
                .changed
                .wait(q)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next item if one is waiting, without blocking.
    pub fn try_next(&self) -> Option<Item> {
        let mut q = self.shared.lock();
        self.shared.pop(&mut q)
    }

    /// Opens `direct`, the listener thread's own consumer: from now on it
    /// hands each item to `direct` as soon as it has acknowledged it (see
    /// [`Direct`]), none is queued or notified, until `direct` returns
    /// false or [`Subscription::close_direct`]. Refused, `direct` given
    /// back, while items wait (they are to be taken first, and `direct`
    /// must not overtake them) or another direct consumer is open.
    pub fn open_direct(&self, direct: Direct) -> std::result::Result<(), Direct> {
        let mut q = self.shared.lock();
        if q.waiting() || q.direct.0.is_some() {
            return Err(direct);
        }
        q.direct.0 = Some(direct);
        Ok(())
    }

    /// Closes the direct consumer, if one is open, and returns it: once
    /// this returns the listener thread hands it nothing more, and every
    /// item acknowledged since it closed is queued.
    pub fn close_direct(&self) -> Option<Direct> {
        self.shared.lock().direct.0.take()
    }

    /// Up to `max` items that are waiting, without blocking.
    pub fn drain(&self, max: usize) -> Vec<Item> {
        let mut q = self.shared.lock();
        let mut items = Vec::with_capacity(max.min(q.items.len() + 1));
        while items.len() < max {
            match self.shared.pop(&mut q) {
                Some(item) => items.push(item),
                None => break,
            }
        }
        items
    }

    /// Waits for the next item, up to `timeout` if one is given
    /// ([`Error::TimedOut`]). Once the listener has ended and the queue is
    /// empty: [`Error::Interrupted`] if it was stopped, or why it failed.
    pub fn next(&self, timeout: Option<Duration>) -> Result<Item> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut q = self.shared.lock();
        loop {
            if let Some(item) = self.shared.pop(&mut q) {
                return Ok(item);
            }
            if q.ended {
                return Err(q.failure.take().unwrap_or(Error::Interrupted));
            }
            q = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(q)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline
                        .checked_duration_since(Instant::now())
                        .ok_or(Error::TimedOut)?;
                    self.shared
                        .changed
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The `eventfd` that is readable while items wait, if asked for
    /// ([`SubscribeOptions::ready_fd`]). Reading items clears it.
    pub fn ready_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared.ready_fd.as_ref().map(AsFd::as_fd)
    }

    /// What it has done so far.
    pub fn counters(&self) -> Counters {
        let q = self.shared.lock();
        Counters {
            queued: q.messages as u64,
            held: q.counters.held + q.holding_since.map_or(Duration::ZERO, |t| t.elapsed()),
            ..q.counters
        }
    }

    /// Why the listener failed, once it has (taken: returned once).
    pub fn take_failure(&self) -> Option<Error> {
        self.shared.lock().failure.take()
    }

    /// Stops the listener and returns once it has left the bus (from any
    /// thread, within microseconds, even while it holds the bus). Items
    /// still queued can be drained afterwards. Idempotent.
    pub fn stop(&self) {
        self.halt();
        // A detach after the next message that raced with this stop keeps
        // nothing: leave. (A standing already detached is not touched: it
        // may have been taken over.)
        if let Some(Exit::Detached(standing, bus)) = self.join() {
            let _ = bus.read_handover(Some(standing), &ReadOptions::default(), |_| Flow::Stop);
        }
    }

    /// Stops the listener *without leaving the bus* and returns its
    /// standing, for [`SubscribeOptions::from`] of another subscription of
    /// this process (a newer copy of the code): no message is lost or seen
    /// twice. Items still queued are the caller's to drain. `None` if the
    /// listener was not on the bus (already stopped, or failed).
    ///
    /// If the standing cannot be taken over after all (the new
    /// subscription failed to start), [`Subscription::leave_detached`]
    /// leaves the bus from it: a standing dropped would leave this process
    /// counted on the bus, holding its writers up.
    pub fn detach(&self) -> Option<Standing> {
        self.keep.store(true, Ordering::SeqCst);
        self.halt();
        match self.join() {
            Some(Exit::Detached(standing, bus)) => {
                *self.detached.lock().unwrap_or_else(|e| e.into_inner()) = Some((standing, *bus));
                Some(standing)
            }
            _ => None,
        }
    }

    /// Lets the listener take the next message (queued as usual), then
    /// stops it *just before it re-arms*, without leaving the bus, and
    /// returns that standing: [`Standing::Acked`]. Waits for that message
    /// (items queued before it can be drained meanwhile), so call it from a
    /// thread that may wait.
    ///
    /// This is the standing another *process* can take over from: an
    /// acknowledged listener is not counted on the bus (S) but holds the
    /// writers back (W), so no broadcast can start until it leaves. The
    /// new process joins meanwhile (joining needs no message in flight,
    /// and none can be), then this one leaves with
    /// [`Subscription::leave_detached`] (or [`Subscription::stop`]): the
    /// new listener gets every message after the one this one got last,
    /// and none twice. (A [`Subscription::detach`] standing cannot move to
    /// another process: an `Armed` one is counted on the bus, and leaving
    /// it after the other joined could let a broadcast reach both.)
    ///
    /// `None` if the listener ended otherwise: failed, or stopped (a
    /// [`Subscription::stop`] meanwhile makes it leave; that stop may
    /// return first, this call once it has left).
    pub fn detach_after_next_message(&self) -> Option<Standing> {
        self.shared.after_next.store(true, Ordering::SeqCst);
        {
            // A listener holding the bus (its queue full) stops holding:
            // it has taken its next message already.
            let _q = self.shared.lock();
            self.shared.room.notify_all();
        }
        match self.join() {
            Some(Exit::Detached(standing, bus)) => {
                *self.detached.lock().unwrap_or_else(|e| e.into_inner()) = Some((standing, *bus));
                Some(standing)
            }
            _ => None,
        }
    }

    /// Leaves the bus from the standing [`Subscription::detach`] returned,
    /// when no other subscription took it over. Does nothing otherwise.
    pub fn leave_detached(&self) {
        let detached = self
            .detached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((standing, bus)) = detached {
            let _ = bus.read_handover(Some(standing), &ReadOptions::default(), |_| Flow::Stop);
        }
    }

    /// Asks the listener to stop and leave the bus, without waiting for it
    /// (for callers that must not block, such as a VM's scheduler thread);
    /// [`Subscription::stop`] or the drop then waits.
    pub fn cancel(&self) {
        self.halt();
    }

    fn halt(&self) {
        // The token first: a listener woken from its wait for room must
        // find it stopped at its next step, before it can re-arm and take
        // another message. (A listener waiting for room is not blocked in a
        // call with the token, so this returns at once for it.)
        self.token.stop();
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Under the lock: a listener about to wait for room sees the flag,
        // or is already waiting and gets the signal.
        let _q = self.shared.lock();
        self.shared.room.notify_all();
    }

    fn join(&self) -> Option<Exit> {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A panicking thread has left the bus (the membership's Drop).
        handle.map(|h| h.join().unwrap_or(Exit::Left))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the listener ended when the thread ends, whichever way (a panic
/// included), so that no consumer waits for it for ever.
struct Ending<'a>(&'a Shared);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.lock().ended = true;
        self.0.changed.notify_all();
    }
}

/// How the listener thread is told to stop: its token, and whether to
/// keep its standing (the shared state says whether to stop after the
/// next message).
#[derive(Clone, Copy)]
struct Stops<'a> {
    token: &'a StopToken,
    keep: &'a AtomicBool,
}

/// The listener thread.
fn listen(bus: Bus, from: Option<Standing>, shared: &Shared, stops: &Stops<'_>) -> Exit {
    let Stops { token, keep } = *stops;
    let _ending = Ending(shared);
    let options = ReadOptions {
        deadline: None,
        stop: Some(token),
    };
    // A stop is seen by the loop's next wait, which then hands the standing
    // back instead of leaving (read_marked never leaves on a stop).
    let was_empty = std::cell::Cell::new(false);
    let mut copied = |bytes: &[u8], own: bool| was_empty.set(shared.queue(bytes, own));
    let result = bus.read_marked(
        from,
        &options,
        |heard| {
            match heard {
                Heard::Listening => {
                    shared.lock().listening = true;
                    shared.changed.notify_all();
                    shared.notice(Notice::Listening);
                }
                Heard::Message { .. } => {
                    shared.after(was_empty.get());
                    if shared.after_next.load(Ordering::SeqCst) {
                        // Acknowledged, not re-armed: the loop's next step
                        // sees the token and hands back this standing.
                        keep.store(true, Ordering::SeqCst);
                        token.stop();
                    }
                }
            }
            Flow::Continue
        },
        &mut copied,
    );
    let exit = match result {
        Ok(Some(standing)) if keep.load(Ordering::SeqCst) => {
            Exit::Detached(standing, Box::new(bus))
        }
        Ok(Some(standing)) => {
            // Stopped: leave from where the loop stood.
            let _ = bus.read_handover(Some(standing), &ReadOptions::default(), |_| Flow::Stop);
            Exit::Left
        }
        Ok(None) | Err(Error::Interrupted) => Exit::Left,
        Err(e) => {
            shared.notice(Notice::Failed(&e));
            shared.lock().failure = Some(e);
            Exit::Left
        }
    };
    exit
}
