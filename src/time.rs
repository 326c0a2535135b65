//! Time limits: deadlines measured on a chosen clock.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// The clock a [`Deadline`] is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `CLOCK_MONOTONIC`: not affected by changes of the wall clock.
    Monotonic,
    /// `CLOCK_REALTIME`: the wall clock.
    Realtime,
}

impl Clock {
    /// The current time on this clock, since its epoch.
    pub fn now(self) -> Duration {
        let id = match self {
            Clock::Monotonic => ClockId::CLOCK_MONOTONIC,
            Clock::Realtime => ClockId::CLOCK_REALTIME,
        };
        // Both clocks always exist on Linux; a failure would be a kernel bug.
        let ts = clock_gettime(id).expect("clock_gettime on a standard clock");
        Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec() as u32)
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
        let at = Clock::Monotonic.now().saturating_add(timeout);
        Deadline {
            clock: Clock::Monotonic,
            at,
        }
    }

    /// The instant `at` (time since the clock's epoch) on `clock`.
    pub fn at(clock: Clock, at: Duration) -> Deadline {
        Deadline { clock, at }
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
            Deadline::at(Clock::Monotonic, Duration::ZERO).remaining(),
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
            Clock::Realtime,
            Clock::Realtime.now() + Duration::from_secs(5),
        );
        assert!(d.remaining().unwrap() <= Duration::from_secs(5));
    }
}
