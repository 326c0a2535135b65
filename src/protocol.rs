//! The protocol's vocabulary, named once (PROTOCOL.md): the five semaphores
//! and their initial values, and every compound operation listeners and
//! writers make, each one atomic `semop`. `listener`, `writer` and `admin`
//! use these names; nothing else addresses a semaphore by position.
//!
//! Notation: `P(a)` lowers a by one (waiting while it is 0), `V(a)` raises
//! it, `Z(a)` waits until it is 0; "undo" operations are reversed by the
//! kernel if the process dies.

use crate::sys::{SemId, SemOp, SEMAPHORES};

/// S: the number of processes listening.
pub const S: u16 = 0;
/// W: non-zero while listeners are re-registering; writers wait for 0.
pub const W: u16 = 1;
/// X: the writers' lock (one writer at a time).
pub const X: u16 = 2;
/// Q: listeners raise it and wait for 0; the writer zeroes it to release
/// them all.
pub const Q: u16 = 3;
/// N: raised by the writer while a message is in flight.
pub const N: u16 = 4;

/// The values of a new bus, in the order S, W, X, Q, N: only the writers'
/// lock is free.
pub const INITIAL_VALUES: [u16; SEMAPHORES] = [0, 0, 1, 0, 0];

const fn p(index: u16, undo: bool) -> SemOp {
    SemOp {
        index,
        delta: -1,
        undo,
    }
}

const fn v(index: u16, undo: bool) -> SemOp {
    SemOp {
        index,
        delta: 1,
        undo,
    }
}

const fn z(index: u16) -> SemOp {
    SemOp {
        index,
        delta: 0,
        undo: false,
    }
}

// --- The listener's transitions (listener.rs). ------------------------------

/// Join `{Z(N), V(S) undo, V(Q)}`: counted only while no message is in
/// flight, and armed (waiting on Q) the moment it is counted (join race,
/// start-up race).
pub const JOIN: [SemOp; 3] = [z(N), v(S, true), v(Q, false)];

/// Take `{Z(Q), N-=1, N+=1, V(W) undo}`: released only while a message is
/// in flight (a writer has N raised), and holding writers back (W) from
/// that very instant, so no writer can overwrite the segment before this
/// listener has copied it and re-armed, even if the writer dies.
pub const TAKE: [SemOp; 4] = [z(Q), p(N, false), v(N, false), v(W, true)];

/// Acknowledge `{P(S) undo}`, once the message is copied: a broadcast
/// returns when every listener has. Cannot block (the listener is counted).
pub const ACK: [SemOp; 1] = [p(S, true)];

/// Re-arm `{Z(N), V(S) undo, P(W) undo, V(Q)}`: W is lowered in the call
/// that raises Q (re-arm race), and `Z(N)` replaces the original's `Z(S)`
/// barrier, which a fast listener could re-cross (barrier race).
pub const REARM: [SemOp; 4] = [z(N), v(S, true), p(W, true), v(Q, false)];

/// Leave when armed `{P(S) undo, P(Q)}`: take back both raises.
pub const LEAVE_ARMED: [SemOp; 2] = [p(S, true), p(Q, false)];

/// Leave when armed but a writer has already zeroed Q `{P(S) undo}`: the
/// writer waits for this very `P(S)`.
pub const LEAVE_RELEASED: [SemOp; 1] = [p(S, true)];

/// Leave when taken (not yet acknowledged) `{P(S) undo, P(W) undo}`.
pub const LEAVE_TAKEN: [SemOp; 2] = [p(S, true), p(W, true)];

/// Leave when acknowledged (not re-armed) `{P(W) undo}`.
pub const LEAVE_ACKED: [SemOp; 1] = [p(W, true)];

// --- The writer's steps (writer.rs), numbered as in the README. -------------

/// Step 1, `{P(X) undo, Z(W)}`: the writers' lock, once no listener is
/// re-registering.
pub const LOCK: [SemOp; 2] = [p(X, true), z(W)];

/// Step 1 without waiting for the lock (made with `IPC_NOWAIT`): `{P(X)
/// undo}`, then [`NO_REARMING`].
pub const LOCK_ONLY: [SemOp; 1] = [p(X, true)];

/// Step 1, second half of the no-wait variant: `{Z(W)}`.
pub const NO_REARMING: [SemOp; 1] = [z(W)];

/// Step 2, the shield: `{Z(W), Q-=s, Q+=s}` waits until no listener is
/// re-registering and Q >= s, i.e. every one of `s` counted listeners waits
/// on Q, without changing anything. With `s` = 0 only W is waited for (a
/// delta of 0 would mean "wait for Q = 0").
pub fn shield(s: u16) -> Vec<SemOp> {
    let s = i16::try_from(s).unwrap_or(i16::MAX);
    let mut ops = vec![z(W)];
    if s > 0 {
        ops.push(SemOp {
            index: Q,
            delta: -s,
            undo: false,
        });
        ops.push(SemOp {
            index: Q,
            delta: s,
            undo: false,
        });
    }
    ops
}

/// Step 3 (after copying the message into the segment), `{V(N) undo}`: a
/// message is in flight.
pub const PUBLISH: [SemOp; 1] = [v(N, true)];

/// Step 4 is `SETVAL Q = 0` (not a `semop`): it releases every listener
/// waiting on Q at once. This is the value it sets.
pub const RELEASE_ALL: (u16, i32) = (Q, 0);

/// Step 5, `{Z(S)}`: every listener has acknowledged its copy.
pub const ALL_TAKEN: [SemOp; 1] = [z(S)];

/// Step 6, `{P(N) undo, V(X) undo}`: the message is no longer in flight and
/// the lock is free.
pub const FINISH: [SemOp; 2] = [p(N, true), v(X, true)];

/// Step 6 when nothing was published (a failure before step 3): `{V(X)
/// undo}`.
pub const UNLOCK: [SemOp; 1] = [v(X, true)];

// --- Reading the semaphores (stat, the shield). -----------------------------

/// The five values, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Semaphores {
    /// Processes listening.
    pub s: u16,
    /// Listeners re-registering (writers wait for 0).
    pub w: u16,
    /// The writers' lock: 1 free, 0 taken.
    pub x: u16,
    /// Raises of armed listeners not yet released.
    pub q: u16,
    /// Messages in flight.
    pub n: u16,
}

impl From<[u16; SEMAPHORES]> for Semaphores {
    fn from(values: [u16; SEMAPHORES]) -> Semaphores {
        let at = |i: u16| values[usize::from(i)];
        Semaphores {
            s: at(S),
            w: at(W),
            x: at(X),
            q: at(Q),
            n: at(N),
        }
    }
}

/// Listeners asleep waiting for their release: blocked on Q (while Q > 0)
/// or on N (Q zero, no message in flight). Two reads, so only a hint: a
/// sleeper moving between the queues may be missed or counted twice.
pub fn waiting(sem: SemId) -> crate::sys::Result<u32> {
    Ok(sem.waiting_for_zero(Q)? + sem.waiting_for_increase(N)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shield_waits_for_w_and_leaves_q_as_it_is() {
        assert_eq!(shield(0), vec![z(W)]);
        let ops = shield(3);
        assert_eq!(ops[0], z(W));
        assert_eq!(ops[1].delta + ops[2].delta, 0);
        assert_eq!((ops[1].index, ops[1].delta), (Q, -3));
    }

    #[test]
    fn values_are_named_in_protocol_order() {
        let s = Semaphores::from(INITIAL_VALUES);
        assert_eq!((s.s, s.w, s.x, s.q, s.n), (0, 0, 1, 0, 0));
    }
}
