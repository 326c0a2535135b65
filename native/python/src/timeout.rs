//! python-bus's timeouts: seconds as a float, relative on
//! `CLOCK_MONOTONIC_RAW` when no clock is given, else absolute on that
//! clock (any clock `clock_gettime` reads).

use std::time::Duration;

use bus_core::{Clock, Deadline};

/// The deadline `timeout` seconds from now on `CLOCK_MONOTONIC_RAW`
/// (`clock_id` `None`), or at `timeout` on clock `clock_id`. Returns the
/// `errno` of a clock `clock_gettime` refuses.
pub(crate) fn deadline(timeout: f64, clock_id: Option<libc::clockid_t>) -> Result<Deadline, i32> {
    let clock_of = |id| Clock::new(id).map_err(|e| e.errno());
    Ok(match clock_id {
        None => {
            let clock = clock_of(libc::CLOCK_MONOTONIC_RAW)?;
            Deadline::at(clock, clock.now().saturating_add(seconds(timeout)))
        }
        Some(id) => Deadline::at(clock_of(id)?, seconds(timeout)),
    })
}

/// `deadline` as a limit for waits in slices: one on a clock that stands
/// still while the process sleeps (CPU time) becomes the time it has left
/// then, on the monotonic clock, as the original library waits for the
/// difference once.
pub(crate) fn for_slices(deadline: Deadline) -> Deadline {
    if deadline.clock().ticks_while_asleep() {
        deadline
    } else {
        Deadline::after(deadline.remaining().unwrap_or_default())
    }
}

/// Non-negative seconds; negative or NaN is zero (a time long past), too
/// large is the end of time.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(if s > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}
