//! The listener: a core [`Subscription`] whose queue holds the bus when
//! full ([`Overflow::Hold`], capacity the credit window), and a pump
//! thread that sends its items to the node as credit allows.
//!
//! The subscription's callback runs on the core's listener thread, so it
//! only records what happened (listening, items ready, failed) and wakes
//! the pump; the pump writes every frame of the listener, in the order
//! the core gave them: `J` first (the core notices `Listening` before any
//! item can be queued), then items (`M`, `W`, `D`) one credit each, and
//! after a failure every item still queued, credit or not, then `F`.
//!
//! So at most 2 × Window messages wait beyond the bus: Window sent to the
//! node and not yet credited back, Window in the queue, after which the
//! listener holds the bus and writers wait (the protocol's back-pressure).
//! (The node asks for half its window, so that both halves add up to it.)
//!
//! The `i` (info) request is answered by the pump too, after it has sent
//! every item queued when the request came (as far as credit allows): a
//! node that asks for the counters has, by the reply, every message the
//! listener had acknowledged, like a NIF's `take/2` would.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bus::{Counters, Item, Notice, Overflow, SubscribeOptions, Subscription};

use crate::etf::Term;
use crate::frames::{Outbound, Output};
use crate::reason::Failure;

/// A running listener and its pump.
pub struct Listener {
    subscription: Arc<Subscription>,
    pump: Arc<Pump>,
    output: Arc<Output>,
}

/// What the pump is to do, shared by the callback, the main thread (credit,
/// stop) and the pump thread.
struct Pump {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Items the node may still be sent.
    credit: u64,
    /// The core said `Listening` and `J` is not sent yet.
    listening: bool,
    /// The queue may have items (set by the core's `Ready`, which comes
    /// only when the queue was empty; cleared by the pump before it looks).
    ready: bool,
    /// Why the listener failed, until `F` is sent.
    failed: Option<Failure>,
    /// The program is leaving: send nothing more.
    stopping: bool,
    /// Ids of `i` requests to answer after the items queued now.
    infos: Vec<u32>,
    /// The listener stopped for a handover (`A` is due).
    held: bool,
    /// The pump has ended: `i` requests are answered at once.
    ended: bool,
}

impl Pump {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes the pump.
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_one();
    }
}

/// What the pump does next.
enum Step {
    Listening,
    Held,
    Send(usize),
    Info(Vec<u32>, usize),
    Fail(Failure),
    Stop,
}

impl Listener {
    /// Joins the bus at `path` with a credit window of `window` (at least
    /// 1): returns once the listener thread and the pump are started; `J`
    /// follows when the listener is counted on the bus.
    pub fn start(path: &Path, window: u32, output: Arc<Output>) -> Result<Listener, Failure> {
        let pump = Arc::new(Pump {
            state: Mutex::new(State {
                credit: u64::from(window),
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let notified = pump.clone();
        // On the core's listener thread: record and wake, nothing more.
        let notify = move |notice: Notice<'_>| match notice {
            Notice::Listening => notified.update(|s| s.listening = true),
            Notice::Ready => notified.update(|s| s.ready = true),
            Notice::Failed(err) => notified.update(|s| s.failed = Some(Failure::from(err))),
        };
        let options = SubscribeOptions {
            capacity: usize::try_from(window).unwrap_or(usize::MAX),
            overflow: Overflow::Hold,
            from: None,
            ready_fd: false,
            notify: Some(Box::new(notify)),
            spin: None,
        };
        let subscription = Arc::new(Subscription::spawn(path, options)?);
        let (pumped, drained, out) = (pump.clone(), subscription.clone(), output.clone());
        let spawned = std::thread::Builder::new()
            .name("bus-port-pump".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                run_pump(&pumped, &drained, &out);
                // Nothing more goes out from here: later `i` requests are
                // answered at once, and any left are answered now.
                let left = {
                    let mut s = pumped.lock();
                    s.ended = true;
                    std::mem::take(&mut s.infos)
                };
                // (A broken output ends the program anyway.)
                let _ = send_infos(&left, &drained, &out);
            });
        if let Err(e) = spawned {
            subscription.stop();
            return Err(Failure::os("spawn the pump thread", &e));
        }
        Ok(Listener {
            subscription,
            pump,
            output,
        })
    }

    /// Answers `i` request `id` with the counters, after the items queued
    /// now (see the module documentation).
    pub fn info(&self, id: u32) {
        let now = {
            let mut s = self.pump.lock();
            if !s.ended {
                s.infos.push(id);
            }
            s.ended
        };
        if now {
            let _ = send_infos(&[id], &self.subscription, &self.output);
        } else {
            self.pump.changed.notify_one();
        }
    }

    /// The node took `n` more items.
    pub fn credit(&self, n: u32) {
        self.pump
            .update(|s| s.credit = s.credit.saturating_add(u64::from(n)));
    }

    /// Starts the handover (`U`): a thread waits for the listener to stop
    /// after its next message (holding the writers back), then the pump
    /// sends what is queued and `A`. If the listener ends otherwise
    /// (stopped, failed), no `A` comes.
    pub fn hand_over(&self) {
        let (subscription, pump) = (self.subscription.clone(), self.pump.clone());
        let spawned = std::thread::Builder::new()
            .name("bus-port-handover".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if subscription.detach_after_next_message().is_some() {
                    pump.update(|s| s.held = true);
                }
            });
        if let Err(e) = spawned {
            let failure = Failure::os("spawn the handover thread", &e);
            let _ = self
                .output
                .send(&Outbound::Complaint(&format!("U: {failure:?}")));
        }
    }

    /// Leaves the bus: returns once the listener has (the pump sends
    /// nothing more). After a handover, leaves from the held standing.
    pub fn stop(&self) {
        self.pump.update(|s| s.stopping = true);
        self.subscription.stop();
        // Held for a handover: leave from there (nothing in this process
        // takes a standing over).
        self.subscription.leave_detached();
    }
}

/// The pump thread: until stopped, failed, or the output broke.
fn run_pump(pump: &Pump, subscription: &Subscription, output: &Output) {
    loop {
        let step = {
            let mut s = pump.lock();
            loop {
                if s.stopping {
                    break Step::Stop;
                }
                if s.listening {
                    s.listening = false;
                    break Step::Listening;
                }
                if let Some(failure) = s.failed.take() {
                    break Step::Fail(failure);
                }
                if s.held {
                    break Step::Held;
                }
                if !s.infos.is_empty() {
                    s.ready = false;
                    let max = usize::try_from(s.credit).unwrap_or(usize::MAX);
                    break Step::Info(std::mem::take(&mut s.infos), max);
                }
                if s.ready && s.credit > 0 {
                    // Cleared before looking: an item queued after the
                    // look finds the queue empty, so the core says Ready.
                    s.ready = false;
                    break Step::Send(usize::try_from(s.credit).unwrap_or(usize::MAX));
                }
                s = pump.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        let sent = match step {
            Step::Stop => return,
            Step::Listening => output.send(&Outbound::Listening),
            Step::Send(max) => send_credited(pump, subscription, output, max),
            Step::Info(ids, max) => send_credited(pump, subscription, output, max)
                .and_then(|()| send_infos(&ids, subscription, output)),
            Step::Held => {
                // The listener has ended, still on the bus: whatever it
                // queued goes first, then `A`; nothing follows.
                let items = subscription.drain(usize::MAX);
                let _ = send_items(&items, output).and_then(|()| output.send(&Outbound::Held));
                return;
            }
            Step::Fail(failure) => {
                // The listener has ended: whatever it queued goes first.
                let items = subscription.drain(usize::MAX);
                let _ = send_items(&items, output)
                    .and_then(|()| output.send(&Outbound::Failed(&failure)));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Sends up to `max` queued items (the credit left).
fn send_credited(
    pump: &Pump,
    subscription: &Subscription,
    output: &Output,
    max: usize,
) -> Result<(), crate::frames::Broken> {
    let items = if max == 0 {
        Vec::new()
    } else {
        subscription.drain(max)
    };
    pump.update(|s| {
        s.credit -= items.len() as u64;
        // Credit ran out first (or there was none): more may wait.
        if items.len() == max {
            s.ready = true;
        }
    });
    send_items(&items, output)
}

/// The replies to `i` requests: the NIF's `listener_info/1` map.
fn send_infos(
    ids: &[u32],
    subscription: &Subscription,
    output: &Output,
) -> Result<(), crate::frames::Broken> {
    let c: Counters = subscription.counters();
    let info = Term::map([
        ("taken", Term::int(c.taken)),
        ("delivered", Term::int(c.delivered)),
        ("dropped", Term::int(c.dropped)),
        ("queued", Term::int(c.queued)),
        (
            "held_us",
            Term::int(u64::try_from(c.held.as_micros()).unwrap_or(u64::MAX)),
        ),
    ]);
    let reply = Term::Tuple(vec![Term::Atom("ok"), info]);
    ids.iter()
        .try_for_each(|id| output.send(&Outbound::Reply(*id, &reply)))
}

fn send_items(items: &[Item], output: &Output) -> Result<(), crate::frames::Broken> {
    items
        .iter()
        .try_for_each(|item| output.send(&Outbound::Item(item)))
}
