//! The broadcast sequence (PROTOCOL.md, "write"), with the shield that
//! protects original C listeners from their re-arm race.

use std::time::Duration;

use crate::bus::sem::{self, p, v, z, N, Q, S, W, X};
use crate::bus::{Access, Bus};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::sys::SemOp;
use crate::wait::{ipc_error, Deadline, Limits, Mode, StopToken};

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

/// How long the shield waits for Q >= S before it looks at S again.
const SHIELD_SLICE: Duration = Duration::from_millis(5);

/// How long the shield waits at most, while W = 0, for Q to reach S. An
/// original C listener raises Q microseconds after lowering W; a listener
/// still short of a raise after this long is stranded, and only zeroing Q
/// frees it.
const SHIELD_LIMIT: Duration = Duration::from_secs(1);

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
            return Err(Error::os(
                format!("{}: broadcast", self.path().display()),
                std::io::Error::from_raw_os_error(libc::EBADF),
            ));
        }
        let limits = Limits {
            deadline: options.deadline,
            stop: options.stop,
            spin: Some(&self.spin),
        };
        // Steps 1-2: take the writer lock, then wait for listeners to finish
        // re-registering. Done in one call unless no-wait only applies to X.
        if options.nowait {
            self.op(&[p(X, true)], Mode::NoWait, &limits)?;
            if let Err(e) = self.op(&[z(W)], Mode::Timed, &limits) {
                self.release(false);
                return Err(e);
            }
        } else {
            self.op(&[p(X, true), z(W)], Mode::Timed, &limits)?;
        }
        let mut published = false;
        match self.broadcast_locked(message, &limits, &mut published) {
            Err(e @ (Error::TimedOut | Error::Interrupted)) if published => {
                // Listeners are mid-round: lowering N now would let the fast
                // ones re-arm before the slow ones have waited, stranding
                // them. The round is finished by a thread instead.
                self.finish_in_background();
                Err(match e {
                    Error::TimedOut => Error::TimedOutAfterPublish,
                    other => other,
                })
            }
            result => {
                self.release(published);
                result
            }
        }
    }

    /// Waits, on a thread of its own, for every listener to take the
    /// published message, then lowers N and releases X. Until then this
    /// process keeps the writer lock: later broadcasts wait (or time out)
    /// as they would for any writer in progress.
    fn finish_in_background(&self) {
        let (path, sem) = (self.path().to_path_buf(), self.sem);
        let finish = move || {
            // Errors mean the bus was removed: nothing is left to release.
            let none = Limits::default();
            if crate::wait::semop(&path, sem, &[z(S)], Mode::Untimed, &none).is_ok() {
                let _ =
                    crate::wait::semop(&path, sem, &[p(N, true), v(X, true)], Mode::Untimed, &none);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("bus-finish-broadcast".into())
            .stack_size(64 * 1024)
            .spawn(finish.clone());
        if spawned.is_err() {
            // No thread to be had: finish here, late rather than unsafe.
            finish();
        }
    }

    /// Steps 3-6, with X held. Sets `published` once Q has been zeroed.
    fn broadcast_locked(
        &self,
        message: &Message,
        limits: &Limits<'_>,
        published: &mut bool,
    ) -> Result<()> {
        self.shield(limits)?;
        self.mem.write_message(message.as_bytes());
        self.op(&[v(N, true)], Mode::Untimed, &Limits::default())?;
        *published = true;
        // Step 5: zeroing Q releases every listener waiting on it.
        self.sem
            .set_value(Q, 0)
            .map_err(|e| ipc_error(self.path(), "SETVAL", e))?;
        // Step 6: every listener has its copy once S is 0. (A timeout
        // here is turned into TimedOutAfterPublish by the caller.)
        self.op(&[z(S)], Mode::Timed, limits)
    }

    /// Waits until Q >= S, i.e. every counted listener is waiting for Q to
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
            let values = self
                .sem
                .get_all()
                .map_err(|e| ipc_error(self.path(), "GETALL", e))?;
            let (s, q) = (values[usize::from(S)], values[usize::from(Q)]);
            if values[usize::from(W)] == 0 {
                if q >= s {
                    return Ok(());
                }
                let waiting =
                    sem::waiting(self.sem).map_err(|e| ipc_error(self.path(), "GETZCNT", e))?;
                if waiting > u32::from(q) || started.elapsed() >= SHIELD_LIMIT {
                    return Ok(());
                }
            }
            // Wait for W == 0 and Q >= s ({Z(W), Q -= s, Q += s} blocks until
            // it can lower Q by s, then puts it back), briefly: listeners may
            // join or leave meanwhile, so S is read again after each slice.
            // (With s = 0, a delta of 0 would mean "wait for Q = 0": then
            // only W is waited for.)
            let s = i16::try_from(s).unwrap_or(i16::MAX);
            let all = [
                z(W),
                SemOp {
                    index: Q,
                    delta: -s,
                    undo: false,
                },
                SemOp {
                    index: Q,
                    delta: s,
                    undo: false,
                },
            ];
            let ops = if s == 0 { &all[..1] } else { &all[..] };
            let slice = Deadline::after(SHIELD_SLICE);
            let bounded = Limits {
                deadline: Some(match limits.deadline {
                    Some(d) if d.remaining() < slice.remaining() => d,
                    _ => slice,
                }),
                ..*limits
            };
            match self.op(ops, Mode::Timed, &bounded) {
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

    /// Steps 7-8 (or the undo after an error): lower N if it was raised,
    /// and release the writer lock, in one call. Neither can block: both
    /// semaphores were raised by this process.
    fn release(&self, published: bool) {
        let ops: &[SemOp] = if published {
            &[p(N, true), v(X, true)]
        } else {
            &[v(X, true)]
        };
        // If the bus was removed there is nothing left to release.
        let _ = self.op(ops, Mode::Untimed, &Limits::default());
    }
}
