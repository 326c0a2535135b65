//! Listening: the read loop with a callback and the poller, both built on a
//! race-free membership (PROTOCOL.md, "how to be immune to them").
//!
//! A membership is in one of these states:
//! - `Armed`: counted in S and has raised Q (waiting for a writer to zero
//!   it);
//! - `Taken`: released (`{Z(Q), N-=1, N+=1, V(W)}`), copying the message:
//!   counted, and holding W raised so no writer can start;
//! - `Acked`: has copied the message and made `P(S)`: not counted, still
//!   holding W raised until it re-arms;
//! - `Out`: not on the bus.
//!
//! Each transition is one atomic `semop` named in `protocol.rs`, where it
//! is explained: [`JOIN`] (Out to Armed), [`TAKE`] (Armed to Taken), [`ACK`]
//! (Taken to Acked), [`REARM`] (Acked to Armed) and the `LEAVE_*` sets
//! (any state to Out). Together they close the races of the original
//! listener. The acknowledgement is made right after copying the message,
//! before the callback runs, so a broadcast returns as soon as every
//! listener has its copy; the next writer still waits (on W) for this
//! listener to re-arm.

use crate::block::{Limits, Mode};
use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::own;
use crate::protocol::{
    ACK, JOIN, LEAVE_ACKED, LEAVE_ARMED, LEAVE_RELEASED, LEAVE_TAKEN, REARM, TAKE,
};
use crate::stop::StopToken;
use crate::time::Deadline;

/// What a read callback is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The listener is now counted on the bus: every broadcast that starts
    /// from now on will reach it. Sent once, first.
    Listening,
    /// A message, as broadcast (without its NUL).
    Message(&'a [u8]),
}

/// What the listening loop hands the callback inside the crate: an
/// [`Event`], with each message marked as broadcast by this process or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Heard<'a> {
    /// See [`Event::Listening`].
    Listening,
    /// A message, and whether a writer of this process broadcast it.
    Message { bytes: &'a [u8], own: bool },
}

impl<'a> Heard<'a> {
    fn event(self) -> Event<'a> {
        match self {
            Heard::Listening => Event::Listening,
            Heard::Message { bytes, .. } => Event::Message(bytes),
        }
    }
}

/// What a read callback answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep listening.
    Continue,
    /// Leave the bus and return `Ok(())` from the read.
    Stop,
}

/// How a listener may wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions<'a> {
    /// Give up with [`Error::TimedOut`] at this deadline (covers joining
    /// and every wait for a message).
    pub deadline: Option<Deadline>,
    /// Leave the bus with [`Error::Interrupted`] when this token is stopped.
    pub stop: Option<&'a StopToken>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Armed,
    /// Released, copying: still counted in S, already holding W.
    Taken,
    Acked,
    Out,
}

/// Where a listener stands on its bus when its loop is handed over to
/// another loop of the same process (see [`Bus::read_handover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Counted and armed: waiting for the next message.
    Armed,
    /// Has taken a message and still holds writers back until it re-arms.
    Acked,
}

/// A listener's presence on a bus; leaving is `Drop`.
#[derive(Debug)]
struct Membership<'a> {
    bus: &'a Bus,
    state: State,
}

impl<'a> Membership<'a> {
    fn join(bus: &'a Bus, mode: Mode, limits: &Limits<'_>) -> Result<Membership<'a>> {
        bus.op(&JOIN, mode, limits)?;
        Ok(Membership {
            bus,
            state: State::Armed,
        })
    }

    /// From `Armed`: waits for a writer to release us, copies the message
    /// into `buf` and acknowledges it; returns whether this process
    /// broadcast it (see own.rs: asked between taking and acknowledging,
    /// while the message's writer still holds the bus). On failure, stays
    /// `Armed`.
    ///
    /// `copied` sees the message and its mark before the acknowledgement,
    /// so whatever it does is done when the broadcast returns; it must be
    /// quick (the writer waits for it).
    fn take(
        &mut self,
        mode: Mode,
        limits: &Limits<'_>,
        buf: &mut Vec<u8>,
        copied: &mut dyn FnMut(&[u8], bool),
    ) -> Result<bool> {
        debug_assert_eq!(self.state, State::Armed);
        // Q zeroed *while a message is in flight* (N >= 1: every writer,
        // ours or the original, raises N before it zeroes Q and lowers it
        // only once every listener took the message), and W raised in the
        // same instant. So no later writer can start, and overwrite the
        // segment, before this listener has copied it and re-armed, even
        // if this writer dies and the kernel lowers its N; and a leaver
        // taking back a raise of Q releases no one between messages.
        self.bus.op(&TAKE, mode, limits)?;
        self.state = State::Taken;
        self.bus.mem.read_message(buf);
        let own = own::held_by_this_process(self.bus.sem.raw());
        copied(buf, own);
        // Cannot block: we are counted in S.
        self.bus.op(&ACK, Mode::Untimed, &Limits::default())?;
        self.state = State::Acked;
        Ok(own)
    }

    /// From `Acked`: counts us again and re-arms, once the writer is done.
    fn rearm(&mut self, mode: Mode, limits: &Limits<'_>) -> Result<()> {
        debug_assert_eq!(self.state, State::Acked);
        self.bus.op(&REARM, mode, limits)?;
        self.state = State::Armed;
        Ok(())
    }

    fn leave(&mut self) {
        let none = Limits::default();
        // Errors are ignored: a removed bus has nothing to leave.
        match self.state {
            State::Armed => {
                // Take back our Q as well, unless a writer has zeroed it
                // (then it waits for our P(S), which releases it).
                if self.bus.op(&LEAVE_ARMED, Mode::NoWait, &none).is_err() {
                    let _ = self.bus.op(&LEAVE_RELEASED, Mode::NoWait, &none);
                }
            }
            State::Taken => {
                let _ = self.bus.op(&LEAVE_TAKEN, Mode::NoWait, &none);
            }
            State::Acked => {
                let _ = self.bus.op(&LEAVE_ACKED, Mode::NoWait, &none);
            }
            State::Out => {}
        }
        self.state = State::Out;
    }
}

impl<'a> Membership<'a> {
    /// Takes over a standing left by [`Membership::detach`] in this process.
    /// No semaphore operation: the semaphores (and the kernel's undo
    /// adjustments, which belong to the process) already say so.
    fn adopt(bus: &'a Bus, standing: Standing) -> Membership<'a> {
        let state = match standing {
            Standing::Armed => State::Armed,
            Standing::Acked => State::Acked,
        };
        Membership { bus, state }
    }

    /// Stops without leaving: the standing is for a later `adopt`.
    fn detach(mut self) -> Option<Standing> {
        let standing = match self.state {
            State::Armed => Some(Standing::Armed),
            State::Acked => Some(Standing::Acked),
            // Never seen outside `take`, which cannot be stopped there.
            State::Taken | State::Out => None,
        };
        self.state = State::Out;
        standing
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

impl ReadOptions<'_> {
    fn limits<'s>(&'s self, bus: &'s Bus) -> Limits<'s> {
        Limits {
            deadline: self.deadline,
            stop: self.stop,
            spin: Some(&bus.spin),
        }
    }
}

impl Bus {
    /// Listens until `callback` returns [`Flow::Stop`]. The callback is
    /// called once with [`Event::Listening`], then with each message.
    #[doc(alias = "bus_read")]
    pub fn read<F>(&self, callback: F) -> Result<()>
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        self.read_with(&ReadOptions::default(), callback)
    }

    /// Like [`Bus::read`], giving up with [`Error::TimedOut`] at `deadline`.
    #[doc(alias = "bus_read_timed")]
    pub fn read_timed<F>(&self, deadline: impl Into<Deadline>, callback: F) -> Result<()>
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        let options = ReadOptions {
            deadline: Some(deadline.into()),
            ..ReadOptions::default()
        };
        self.read_with(&options, callback)
    }

    /// Listens with explicit options.
    pub fn read_with<F>(&self, options: &ReadOptions<'_>, callback: F) -> Result<()>
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        let mut callback = callback;
        let member = Membership::join(self, Mode::Timed, &options.limits(self))?;
        let callback = |heard: Heard<'_>| callback(heard.event());
        self.listen(member, options, callback, &mut |_, _| {}, false)
            .map(drop)
    }

    /// Listens like [`Bus::read_with`], so that the loop can be handed over
    /// to another loop of this process (say, a newer copy of the code)
    /// with no message lost or repeated and nothing another process can
    /// see: `from` is `None` to join the bus, or the standing a previous
    /// loop returned, which is taken over without any semaphore operation.
    /// When `options.stop` stops it, the loop does not leave the bus but
    /// returns `Ok(Some(standing))`; when the callback stops it, it leaves
    /// and returns `Ok(None)`. The bus must be the same (same file and
    /// keys), opened in this process; `Event::Listening` is sent either way.
    pub fn read_handover<F>(
        &self,
        from: Option<Standing>,
        options: &ReadOptions<'_>,
        callback: F,
    ) -> Result<Option<Standing>>
    where
        F: FnMut(Event<'_>) -> Flow,
    {
        let mut callback = callback;
        let callback = |heard: Heard<'_>| callback(heard.event());
        self.read_marked(from, options, callback, &mut |_, _| {})
    }

    /// [`Bus::read_handover`] with each message marked as this process's
    /// own broadcast or not, and handed to `copied` before it is
    /// acknowledged (see `Membership::take`) as well as to `callback`
    /// after.
    pub(crate) fn read_marked<F>(
        &self,
        from: Option<Standing>,
        options: &ReadOptions<'_>,
        callback: F,
        copied: &mut dyn FnMut(&[u8], bool),
    ) -> Result<Option<Standing>>
    where
        F: FnMut(Heard<'_>) -> Flow,
    {
        let member = match from {
            None => Membership::join(self, Mode::Timed, &options.limits(self))?,
            Some(standing) => Membership::adopt(self, standing),
        };
        self.listen(member, options, callback, copied, true)
    }

    /// The listening loop. With `detach`, a stop request returns the
    /// standing instead of leaving.
    fn listen<F>(
        &self,
        mut member: Membership<'_>,
        options: &ReadOptions<'_>,
        mut callback: F,
        copied: &mut dyn FnMut(&[u8], bool),
        detach: bool,
    ) -> Result<Option<Standing>>
    where
        F: FnMut(Heard<'_>) -> Flow,
    {
        let limits = options.limits(self);
        if callback(Heard::Listening) == Flow::Stop {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(crate::sys::MEMORY_SIZE);
        loop {
            let step = if member.state == State::Acked {
                // Only the waits before a message is taken are timed.
                member.rearm(Mode::Untimed, &limits)
            } else {
                member
                    .take(Mode::Timed, &limits, &mut buf, copied)
                    .map(|own| {
                        let heard = Heard::Message { bytes: &buf, own };
                        if callback(heard) == Flow::Stop {
                            member.leave();
                        }
                    })
            };
            match step {
                Ok(()) if member.state == State::Out => return Ok(None),
                Ok(()) => {}
                Err(Error::Interrupted) if detach => return Ok(member.detach()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts listening without a callback: the returned poller is counted
    /// on the bus until it is dropped.
    #[doc(alias = "bus_poll_start")]
    pub fn poller(&self) -> Result<Poller<'_>> {
        self.poller_with(&ReadOptions::default())
    }

    /// Like [`Bus::poller`]; the options bound the join (which waits for a
    /// broadcast in flight to finish) and every later poll's stop token.
    pub fn poller_with<'a>(&'a self, options: &ReadOptions<'a>) -> Result<Poller<'a>> {
        let member = Membership::join(self, Mode::Timed, &options.limits(self))?;
        Ok(Poller {
            member,
            stop: options.stop,
            buf: Vec::with_capacity(crate::sys::MEMORY_SIZE),
        })
    }
}

/// A listener without a callback: counted on the bus from
/// [`Bus::poller`] until drop ([`Poller::stop`]), it receives each message
/// through [`Poller::poll`] and its variants. Every broadcast made while it
/// exists is returned by a poll, in order; a writer waits for the poller's
/// next poll before the following broadcast can start.
#[derive(Debug)]
pub struct Poller<'a> {
    member: Membership<'a>,
    stop: Option<&'a StopToken>,
    buf: Vec<u8>,
}

impl Poller<'_> {
    /// Waits for the next message.
    #[doc(alias = "bus_poll")]
    pub fn poll(&mut self) -> Result<&[u8]> {
        self.poll_in(Mode::Untimed, None)
    }

    /// Returns the next message if one is waiting, else
    /// [`Error::WouldBlock`] without blocking.
    pub fn poll_nowait(&mut self) -> Result<&[u8]> {
        self.poll_in(Mode::NoWait, None)
    }

    /// Waits for the next message until `deadline` ([`Error::TimedOut`]).
    #[doc(alias = "bus_poll_timed")]
    pub fn poll_timed(&mut self, deadline: impl Into<Deadline>) -> Result<&[u8]> {
        self.poll_in(Mode::Timed, Some(deadline.into()))
    }

    fn poll_in(&mut self, mode: Mode, deadline: Option<Deadline>) -> Result<&[u8]> {
        let limits = Limits {
            deadline,
            stop: self.stop,
            spin: Some(&self.member.bus.spin),
        };
        if self.member.state == State::Acked {
            self.member.rearm(mode, &limits)?;
        }
        if self.member.state == State::Out {
            return Err(Error::Interrupted);
        }
        self.member
            .take(mode, &limits, &mut self.buf, &mut |_, _| {})?;
        Ok(&self.buf)
    }

    /// Leaves the bus (same as dropping the poller).
    #[doc(alias = "bus_poll_stop")]
    pub fn stop(self) {}
}
