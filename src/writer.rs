//! The broadcast sequence (PROTOCOL.md, "write"), with the shield that
//! protects original C listeners from their re-arm race.

use std::sync::Arc;
use std::time::Duration;

use crate::block::{self, Limits, Mode};
use crate::bus::{Access, Bus};
use crate::error::{Error, Object, Op, Result};
use crate::message::Message;
use crate::own::Holding;
use crate::protocol::{
    self, ALL_TAKEN, FINISH, LOCK, LOCK_ONLY, NO_REARMING, PUBLISH, RELEASE_ALL, UNLOCK,
};
use crate::stop::StopToken;
use crate::sys::Errno;
use crate::time::Deadline;

/// How a broadcast may wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions<'a> {
    /// Fail with [`Error::WouldBlock`] if another process is broadcasting.
    pub nowait: bool,
    /// Give up at this deadline: [`Error::TimedOut`] before the message was
    /// published, [`Error::TimedOutAfterPublish`] after (the broadcast is
    /// then finished in the background: see [`Bus::write_with`]).
    pub deadline: Option<Deadline>,
    /// Give up with [`Error::Interrupted`] when this token is stopped.
    pub stop: Option<&'a StopToken>,
}

/// How long a no-wait broadcast, having the writers' lock, waits for a
/// listener to finish re-arming before it gives up with
/// [`Error::WouldBlock`].
const NOWAIT_REARM_LIMIT: Duration = Duration::from_millis(20);

/// How long the shield waits for Q >= S before it looks at S again.
const SHIELD_SLICE: Duration = Duration::from_millis(5);

/// How long the shield waits at most, while W = 0, for Q to reach S. An
/// original C listener raises Q microseconds after lowering W; a listener
/// still short of a raise after this long is stranded, and only zeroing Q
/// frees it.
const SHIELD_LIMIT: Duration = Duration::from_secs(1);

/// What [`Bus::write_begin`] did: the whole broadcast, or what is left of
/// it.
#[derive(Debug)]
pub enum Begun {
    /// The broadcast is over: every listener has its copy, or it failed.
    Done(Result<()>),
    /// The broadcast would have to wait: [`PendingWrite::finish`] waits,
    /// on a thread that may block.
    Pending(PendingWrite),
}

/// A broadcast [`Bus::write_begin`] started without waiting. Dropping it
/// unfinished is safe: one that had not published gives up (nothing was
/// sent), one that had is finished by a thread of its own, as a timed-out
/// one is (every listener gets the message, then the bus is released).
#[derive(Debug)]
pub struct PendingWrite {
    bus: Arc<Bus>,
    deadline: Option<Deadline>,
    nowait: bool,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Nothing done: the whole broadcast is still to make.
    NotStarted(Message),
    /// The writers' lock is held, the message published and the listeners
    /// released (steps 1-4): only step 5 (waiting for each listener's
    /// copy) and step 6 are left.
    Published(Holding),
    /// Finished, or handed to a thread (after `finish` or in `drop`).
    Over,
}

impl PendingWrite {
    /// Makes the rest of the broadcast, with the deadline `write_begin` was
    /// given; returns what [`Bus::write_with`] would have.
    pub fn finish(mut self, stop: Option<&StopToken>) -> Result<()> {
        let limits = Limits {
            deadline: self.deadline,
            stop,
            spin: Some(&self.bus.spin),
        };
        match std::mem::replace(&mut self.stage, Stage::Over) {
            Stage::NotStarted(message) => {
                let options = WriteOptions {
                    nowait: self.nowait,
                    deadline: self.deadline,
                    stop,
                };
                self.bus.write_with(&message, &options)
            }
            Stage::Published(holding) => {
                let all_taken = self.bus.op(&ALL_TAKEN, Mode::Timed, &limits);
                self.bus.end_round(all_taken, holding, true)
            }
            Stage::Over => Ok(()),
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        if let Stage::Published(holding) = std::mem::replace(&mut self.stage, Stage::Over) {
            self.bus.finish_in_background(holding);
        }
    }
}

impl Bus {
    /// Broadcasts `message` to every listener and returns once each has
    /// taken its copy.
    #[doc(alias = "bus_write")]
    pub fn write(&self, message: &Message) -> Result<()> {
        self.write_with(message, &WriteOptions::default())
    }

    /// Like [`Bus::write`], but fails at once with [`Error::WouldBlock`]
    /// if another process holds the bus (`BUS_NOWAIT`).
    pub fn write_nowait(&self, message: &Message) -> Result<()> {
        self.write_with(
            message,
            &WriteOptions {
                nowait: true,
                ..WriteOptions::default()
            },
        )
    }

    /// Like [`Bus::write`] with a deadline (a [`Deadline`] or a
    /// [`std::time::Duration`] from now) covering every wait.
    #[doc(alias = "bus_write_timed")]
    pub fn write_timed(&self, message: &Message, deadline: impl Into<Deadline>) -> Result<()> {
        self.write_with(
            message,
            &WriteOptions {
                deadline: Some(deadline.into()),
                ..WriteOptions::default()
            },
        )
    }

    /// Broadcasts with explicit options.
    ///
    /// A deadline or stop that comes after the message was published
    /// returns at once ([`Error::TimedOutAfterPublish`] or
    /// [`Error::Interrupted`]) but cannot un-send it: a thread of this
    /// process waits for the remaining listeners and only then releases the
    /// bus, so no listener is left mid-round.
    pub fn write_with(&self, message: &Message, options: &WriteOptions<'_>) -> Result<()> {
        if self.access() != Access::Write {
            // Attached read-only: the segment cannot be written.
            return Err(Error::sys(
                Errno::EBADF,
                Object::SharedMemory,
                Op::Write,
                self.path(),
            ));
        }
        let limits = Limits {
            deadline: options.deadline,
            stop: options.stop,
            spin: Some(&self.spin),
        };
        // Step 1: take the writer lock once no listener is re-registering.
        // One call, unless no-wait applies to X only.
        if options.nowait {
            self.op(&LOCK_ONLY, Mode::NoWait, &limits)?;
            // Listeners re-arm within microseconds, but one that holds the
            // bus (its queue is full) may not for long: a no-wait
            // broadcast does not wait for it beyond a short bound.
            let bound = Deadline::after(NOWAIT_REARM_LIMIT);
            let bounded = Limits {
                deadline: Some(match limits.deadline {
                    Some(d) if d.remaining() < bound.remaining() => d,
                    _ => bound,
                }),
                ..limits
            };
            if let Err(e) = self.op(&NO_REARMING, Mode::Timed, &bounded) {
                self.release(false);
                let callers_deadline = limits.deadline.is_some_and(|d| d.remaining().is_none());
                return Err(match e {
                    Error::TimedOut if !callers_deadline => Error::WouldBlock,
                    other => other,
                });
            }
        } else {
            self.op(&LOCK, Mode::Timed, &limits)?;
        }
        // From here until every listener has acknowledged, this process's
        // listeners on the bus know that what they take is ours (own.rs).
        let holding = Holding::start(self.sem.raw());
        let mut published = false;
        let result = self.broadcast_locked(message, &limits, &mut published);
        self.end_round(result, holding, published)
    }

    /// Ends a round this process holds the lock of, with what it came to:
    /// releases the bus (step 6, or the undo of step 1 if nothing was
    /// published), unless the wait for the listeners' copies was cut short
    /// after publishing.
    fn end_round(&self, result: Result<()>, holding: Holding, published: bool) -> Result<()> {
        match result {
            Err(e @ (Error::TimedOut | Error::Interrupted)) if published => {
                // Listeners are mid-round: lowering N now would let the fast
                // ones re-arm before the slow ones have waited, stranding
                // them. The round is finished by a thread instead.
                self.finish_in_background(holding);
                Err(match e {
                    Error::TimedOut => Error::TimedOutAfterPublish,
                    other => other,
                })
            }
            result => {
                drop(holding);
                self.release(published);
                result
            }
        }
    }

    /// Starts a broadcast without ever blocking: when nothing has to wait
    /// (the lock is free, every listener is armed, and every one has taken
    /// its copy by the time it looks) the broadcast is made here, otherwise
    /// what is left is returned, to finish on a thread that may block. For
    /// callers that must not block, such as an Erlang scheduler: only a
    /// broadcast that waits costs a switch to a thread that may. With a
    /// spinning budget ([`Bus::set_spin`]), its two waits (for the lock,
    /// and for every listener's copy) spin first as a blocking broadcast's
    /// would, but at most 25 µs each, so a broadcast to listeners that
    /// answer within microseconds is made here too.
    ///
    /// Whether it is made here or finished later, what listeners see and
    /// what the caller gets are as with [`Bus::write_with`] (`options.stop`
    /// aside: give the token to [`PendingWrite::finish`]).
    pub fn write_begin(self: &Arc<Self>, message: Message, options: &WriteOptions<'_>) -> Begun {
        let pending = |stage| PendingWrite {
            bus: Arc::clone(self),
            deadline: options.deadline,
            nowait: options.nowait,
            stage,
        };
        // Waits spin as the bus's budget allows (none by default), briefly
        // (SPIN_ONLY_MAX), and never block.
        let spinning = Limits {
            deadline: options.deadline,
            stop: None,
            spin: Some(&self.spin),
        };
        if self.access() != Access::Write {
            return Begun::Pending(pending(Stage::NotStarted(message)));
        }
        // Step 1, only if it needs no wait, or one spinning ends (no-wait
        // broadcasts do not spin for the lock: finish makes their bounded
        // wait for a re-arming listener).
        let lock_mode = if options.nowait {
            Mode::NoWait
        } else {
            Mode::SpinOnly
        };
        match self.op(&LOCK, lock_mode, &spinning) {
            Ok(()) => {}
            Err(Error::WouldBlock) => return Begun::Pending(pending(Stage::NotStarted(message))),
            Err(e) => return Begun::Done(Err(e)),
        }
        let holding = Holding::start(self.sem.raw());
        // Step 2, the shield, only if every counted listener is armed now;
        // otherwise give the lock back (nothing was written) and leave the
        // whole broadcast to finish.
        match self.semaphores() {
            Ok(now) if now.w == 0 && now.q >= now.s => {}
            Ok(_) => {
                drop(holding);
                self.release(false);
                return Begun::Pending(pending(Stage::NotStarted(message)));
            }
            Err(e) => return Begun::Done(self.end_round(Err(e), holding, false)),
        }
        // Steps 3 and 4, which never wait; step 5 if every listener
        // already has its copy (none listens, typically) or takes it
        // while this spins.
        let mut published = false;
        let result = match self.publish(&message, &mut published) {
            Ok(()) => match self.op(&ALL_TAKEN, Mode::SpinOnly, &spinning) {
                Err(Error::WouldBlock) => {
                    return Begun::Pending(pending(Stage::Published(holding)))
                }
                all_taken => all_taken,
            },
            Err(e) => Err(e),
        };
        Begun::Done(self.end_round(result, holding, published))
    }

    /// Waits, on a thread of its own, for every listener to take the
    /// published message, then lowers N and releases X. Until then this
    /// process keeps the writer lock: later broadcasts wait (or time out)
    /// as they would for any writer in progress.
    fn finish_in_background(&self, holding: Holding) {
        let (path, sem) = (self.path().to_path_buf(), self.sem);
        let holding = std::sync::Arc::new(std::sync::Mutex::new(Some(holding)));
        let finish = move || {
            // Errors mean the bus was removed: nothing is left to release.
            let none = Limits::default();
            let all_taken = block::semop(&path, sem, &ALL_TAKEN, Mode::Untimed, &none);
            holding.lock().unwrap_or_else(|e| e.into_inner()).take();
            if all_taken.is_ok() {
                let _ = block::semop(&path, sem, &FINISH, Mode::Untimed, &none);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("bus-finish-broadcast".into())
            .stack_size(64 * 1024)
            .spawn(finish.clone());
        match spawned {
            Ok(thread) => {
                let mut finishing = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
                finishing.retain(|t| !t.is_finished());
                finishing.push(thread);
            }
            // No thread to be had: finish here, late rather than unsafe.
            Err(_) => finish(),
        }
    }

    /// Waits, up to `limit`, until every broadcast of this handle that
    /// returned early ([`Error::TimedOutAfterPublish`], or
    /// [`Error::Interrupted`] after publishing) has been finished by its
    /// thread: every listener has its message and the bus is released.
    /// Returns whether they all were. A process about to exit calls it, so
    /// that a listener still copying the message is not cut short by the
    /// kernel's undo; a stopped listener would make it wait `limit`.
    pub fn finish_pending(&self, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        let mut finishing = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            finishing.retain(|t| !t.is_finished());
            if finishing.is_empty() {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Steps 2-5, with X held. Sets `published` once N has been raised.
    fn broadcast_locked(
        &self,
        message: &Message,
        limits: &Limits<'_>,
        published: &mut bool,
    ) -> Result<()> {
        // Step 2.
        self.shield(limits)?;
        self.publish(message, published)?;
        // Step 5: every listener has its copy once S is 0. (A timeout
        // here is turned into TimedOutAfterPublish by the caller.)
        self.op(&ALL_TAKEN, Mode::Timed, limits)
    }

    /// Steps 3 and 4, which never wait: the message, then a message is in
    /// flight (sets `published`), then zeroing Q releases every listener
    /// waiting on it.
    fn publish(&self, message: &Message, published: &mut bool) -> Result<()> {
        self.mem.write_message(message.as_bytes());
        self.op(&PUBLISH, Mode::Untimed, &Limits::default())?;
        *published = true;
        let (q, zero) = RELEASE_ALL;
        self.sem
            .set_value(q, zero)
            .map_err(|e| Error::sys(e, Object::SemaphoreArray, Op::Write, self.path()))
    }

    /// Step 2, the shield: waits until Q >= S, i.e. every counted listener is waiting for Q to
    /// be zeroed. Our listeners always are by now (they raise Q in the same
    /// call that counts them); an original C listener raises Q in a
    /// separate call after letting writers in, and zeroing Q before that
    /// call would leave it waiting forever (the re-arm race). Done before
    /// the message is copied, so a writer that times out here has written
    /// nothing any listener can see.
    ///
    /// W must be 0 in the same instant: an original C listener raises W
    /// only when it acknowledges, and one that has acknowledged but not yet
    /// re-armed is not counted in S; after a writer's death it could miss
    /// this message. (Ours hold W from the instant they are released.)
    ///
    /// Two things also end the wait with Q < S, for liveness only (the
    /// listeners' wait keeps the segment safe, see listener.rs):
    /// - more processes waiting for their release than Q holds raises
    ///   (GETZCNT(Q) + GETNCNT(N) > Q). A waiter then has no raise left: a
    ///   writer was killed after zeroing Q, the kernel lowered its N early,
    ///   and a fast listener re-armed before a slow one, released while it
    ///   was between re-arming and waiting, started to wait. Only zeroing Q
    ///   frees the slow one;
    /// - [`SHIELD_LIMIT`] spent: the same, for a stranded poller that never
    ///   blocks (so is not counted as waiting).
    fn shield(&self, limits: &Limits<'_>) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let now = self.semaphores()?;
            if now.w == 0 {
                if now.q >= now.s {
                    return Ok(());
                }
                let waiting = protocol::waiting(self.sem)
                    .map_err(|e| Error::sys(e, Object::SemaphoreArray, Op::Read, self.path()))?;
                if waiting > u32::from(now.q) || started.elapsed() >= SHIELD_LIMIT {
                    return Ok(());
                }
            }
            // Wait for W == 0 and Q >= s, briefly: listeners may join or
            // leave meanwhile, so S is read again after each slice.
            let ops = protocol::shield(now.s);
            let slice = Deadline::after(SHIELD_SLICE);
            let bounded = Limits {
                deadline: Some(match limits.deadline {
                    Some(d) if d.remaining() < slice.remaining() => d,
                    _ => slice,
                }),
                ..*limits
            };
            match self.op(&ops, Mode::Timed, &bounded) {
                Ok(()) => return Ok(()),
                Err(Error::TimedOut) => {
                    if limits.deadline.is_some_and(|d| d.remaining().is_none()) {
                        return Err(Error::TimedOut);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Step 6 (or the undo after an error): lower N if it was raised, and
    /// release the writer lock, in one call. Neither can block: both
    /// semaphores were raised by this process.
    fn release(&self, published: bool) {
        let ops: &[_] = if published { &FINISH } else { &UNLOCK };
        // If the bus was removed there is nothing left to release.
        let _ = self.op(ops, Mode::Untimed, &Limits::default());
    }
}
