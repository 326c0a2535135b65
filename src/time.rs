//! Time limits: deadlines measured on any clock `clock_gettime` knows.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::error::{Error, Result};

/// The clock a [`Deadline`] is measured on: any clock `clock_gettime(2)`
/// can read (`CLOCK_MONOTONIC`, `CLOCK_REALTIME`, `CLOCK_MONOTONIC_RAW`,
/// `CLOCK_BOOTTIME`, `CLOCK_TAI`, a CPU-time clock...), as the original
/// library accepts: it reads the clock and waits for the difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock(libc::clockid_t);

impl Clock {
    /// `CLOCK_MONOTONIC`: not affected by changes of the wall clock.
    pub const MONOTONIC: Clock = Clock(libc::CLOCK_MONOTONIC);
    /// `CLOCK_REALTIME`: the wall clock.
    pub const REALTIME: Clock = Clock(libc::CLOCK_REALTIME);

    /// The clock `id`, if `clock_gettime` can read it (else `EINVAL`, or
    /// the error `clock_gettime` gave).
    #[doc(alias = "clock_gettime")]
    pub fn new(id: libc::clockid_t) -> Result<Clock> {
        clock_gettime(ClockId::from_raw(id))
            .map(|_| Clock(id))
            .map_err(|e| Error::os(format!("clock {id}"), e))
    }

    /// The clock's identifier, as `clock_gettime` takes it.
    pub fn id(self) -> libc::clockid_t {
        self.0
    }

    /// The current time on this clock, since its epoch. A clock that can no
    /// longer be read (the CPU-time clock of a process that has ended)
    /// reads as the end of time, so every deadline on it has passed.
    pub fn now(self) -> Duration {
        match clock_gettime(ClockId::from_raw(self.0)) {
            Ok(ts) => Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec() as u32),
            Err(_) => Duration::MAX,
        }
    }

    /// Whether the clock advances while the process sleeps (every clock
    /// but the CPU-time ones). A wait for the difference to a deadline on
    /// a CPU-time clock is made once, as the original library does: looking
    /// at the clock again after it would find it barely moved.
    pub fn ticks_while_asleep(self) -> bool {
        // Dynamic clocks are negative: a CPU-time clock of a process or a
        // thread, or a clock device opened as a file (type 3 in the low
        // bits, CLOCKFD in the kernel), which keeps time like any other.
        const CLOCK_TYPE_MASK: libc::clockid_t = 3;
        const CLOCKFD: libc::clockid_t = 3;
        match self.0 {
            libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID => false,
            id if id < 0 => id & CLOCK_TYPE_MASK == CLOCKFD,
            _ => true,
        }
    }
}

/// An absolute point in time on a [`Clock`], after which a timed operation
/// gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    clock: Clock,
    at: Duration,
}

impl Deadline {
    /// `timeout` from now, on the monotonic clock.
    pub fn after(timeout: Duration) -> Deadline {
        let at = Clock::MONOTONIC.now().saturating_add(timeout);
        Deadline {
            clock: Clock::MONOTONIC,
            at,
        }
    }

    /// The instant `at` (time since the clock's epoch) on `clock`.
    pub fn at(clock: Clock, at: Duration) -> Deadline {
        Deadline { clock, at }
    }

    /// The clock it is measured on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .checked_sub(self.clock.now())
            .filter(|d| !d.is_zero())
    }
}

impl From<Duration> for Deadline {
    fn from(timeout: Duration) -> Deadline {
        Deadline::after(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_in_the_past_has_nothing_left() {
        assert_eq!(
            Deadline::at(Clock::MONOTONIC, Duration::ZERO).remaining(),
            None
        );
        let later = Deadline::after(Duration::from_secs(60))
            .remaining()
            .unwrap();
        assert!(later > Duration::from_secs(59));
    }

    #[test]
    fn realtime_deadline() {
        let d = Deadline::at(
            Clock::REALTIME,
            Clock::REALTIME.now() + Duration::from_secs(5),
        );
        assert!(d.remaining().unwrap() <= Duration::from_secs(5));
    }

    #[test]
    fn any_clock_clock_gettime_reads() {
        for id in [
            libc::CLOCK_MONOTONIC_RAW,
            libc::CLOCK_BOOTTIME,
            libc::CLOCK_MONOTONIC_COARSE,
            libc::CLOCK_REALTIME_COARSE,
            libc::CLOCK_TAI,
            libc::CLOCK_PROCESS_CPUTIME_ID,
        ] {
            let clock = Clock::new(id).unwrap();
            assert_eq!(clock.id(), id);
            let d = Deadline::at(clock, clock.now() + Duration::from_secs(5));
            let left = d.remaining().unwrap();
            assert!(left <= Duration::from_secs(5), "clock {id}: {left:?}");
            assert_eq!(Deadline::at(clock, Duration::ZERO).remaining(), None);
        }
    }

    #[test]
    fn unknown_clock_is_einval() {
        for id in [-1_000_000, 1_000] {
            let e = Clock::new(id).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "clock {id}: {e}");
        }
    }

    #[test]
    fn cpu_time_clocks_do_not_tick_while_asleep() {
        assert!(Clock::MONOTONIC.ticks_while_asleep());
        assert!(Clock::new(libc::CLOCK_BOOTTIME)
            .unwrap()
            .ticks_while_asleep());
        for id in [
            libc::CLOCK_PROCESS_CPUTIME_ID,
            libc::CLOCK_THREAD_CPUTIME_ID,
        ] {
            assert!(!Clock::new(id).unwrap().ticks_while_asleep());
        }
        // The CPU-time clock of process 1 (the kernel's encoding).
        let init_cpu = !1 << 3 | 2;
        assert!(!Clock(init_cpu).ticks_while_asleep());
    }
}
