//! Blocking on semaphores: one atomic `semop` made within a deadline, a stop
//! token and an optional spinning budget, retrying on `EINTR` (a failed
//! `semop` changed nothing, so a signal never loses protocol state).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Object, Op, Result};
use crate::protocol::Semaphores;
use crate::stop::StopToken;
use crate::sys::{Block, Errno, SemId, SemOp, SEMAPHORES};
use crate::time::Deadline;

/// How one step may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Fail with [`Error::WouldBlock`] rather than block.
    NoWait,
    /// Spin as the budget allows, at most [`SPIN_ONLY_MAX`], then fail
    /// with [`Error::WouldBlock`] rather than block: for callers that must
    /// not block, such as an Erlang scheduler.
    SpinOnly,
    /// Block until the call's deadline, if it has one.
    Timed,
    /// Block without a time limit (only a stop ends the wait).
    Untimed,
}

/// What a blocking call may be cut short by.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits<'a> {
    pub deadline: Option<Deadline>,
    pub stop: Option<&'a StopToken>,
    /// Spin with non-blocking attempts before blocking, as this says.
    pub spin: Option<&'a Spinner>,
}

/// Adaptive spinning: try a wait without blocking for up to a budget before
/// blocking. Each semaphore waited on has a budget of its own (waiting on
/// Q is waiting for the next message, which may be far off; on S, N, W or
/// X, for a peer that is running and microseconds from answering): it
/// doubles (up to the maximum) when spinning ended a wait and halves when
/// it did not, so it fades away where the other side is slow; at zero, one
/// wait in [`Spinner::PROBE_EVERY`] probes again with a small budget.
/// It does not spin at all while no core is free ([`core_free`]), nor
/// while the bus has more processes (listeners and a writer) than the
/// machine has cores: the success rate alone keeps spinning then, because
/// a spinner and its peer, both runnable, take cores from other work.
#[derive(Debug, Default)]
pub(crate) struct Spinner {
    max_ns: AtomicU64,
    /// By the semaphore waited on (the first of a wait's operations).
    budget_ns: [AtomicU64; SEMAPHORES],
    since_probe: AtomicU64,
    /// The bus's listeners (see [`listeners`]) plus one writer, as last
    /// read; 0 until then.
    processes: AtomicU64,
    since_count: AtomicU64,
    /// What it did, for [`SpinStats`] (counted, never read on the way).
    waits: AtomicU64,
    gated: AtomicU64,
    spun: AtomicU64,
    won: AtomicU64,
    spun_ns: AtomicU64,
}

/// What spinning did on one open bus (see [`Bus::spin_stats`]): how often
/// it waited, how often the gate kept it from spinning, how often it spun
/// and how often that spared it a sleep.
///
/// [`Bus::spin_stats`]: crate::Bus::spin_stats
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpinStats {
    /// Semaphore waits that found the semaphore not ready, while a
    /// spinning budget was set (broadcasting and listening; without a
    /// budget nothing is counted).
    pub waits: u64,
    /// Waits that did not spin because no core was free or the bus had
    /// more processes than the machine has cores.
    pub gated: u64,
    /// Waits that spun before blocking.
    pub spun: u64,
    /// Spins that ended the wait: no sleep.
    pub won: u64,
    /// Time spent spinning, in all.
    pub spinning: Duration,
}

impl std::ops::Add for SpinStats {
    type Output = SpinStats;

    fn add(self, other: SpinStats) -> SpinStats {
        SpinStats {
            waits: self.waits + other.waits,
            gated: self.gated + other.gated,
            spun: self.spun + other.spun,
            won: self.won + other.won,
            spinning: self.spinning + other.spinning,
        }
    }
}

impl Spinner {
    const PROBE_EVERY: u64 = 64;
    const FLOOR_NS: u64 = 500;
    /// The bus's processes are counted again once in this many waits.
    const COUNT_EVERY: u64 = 64;

    pub fn with_max(max: Duration) -> Spinner {
        let spinner = Spinner::default();
        spinner.set_max(max);
        spinner
    }

    pub fn set_max(&self, max: Duration) {
        let ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.max_ns.store(ns, Ordering::Relaxed);
        for budget in &self.budget_ns {
            budget.store(ns, Ordering::Relaxed);
        }
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// Whether a budget is set at all.
    fn enabled(&self) -> bool {
        self.max_ns.load(Ordering::Relaxed) > 0
    }

    /// The budget of waits on semaphore `index` of a bus.
    fn slot(&self, index: u16) -> &AtomicU64 {
        &self.budget_ns[usize::from(index) % SEMAPHORES]
    }

    /// The budget for the next wait on semaphore `index` of `sem` (zero:
    /// block at once).
    fn budget(&self, sem: SemId, index: u16) -> u64 {
        let max = self.max_ns.load(Ordering::Relaxed);
        if max == 0 {
            return 0;
        }
        if self.since_count.load(Ordering::Relaxed) % Self::COUNT_EVERY != 0 {
            self.since_count.fetch_add(1, Ordering::Relaxed);
        } else if let Ok(values) = sem.get_all() {
            let (listeners, exact) = listeners(Semaphores::from(values));
            if exact || self.processes.load(Ordering::Relaxed) == 0 {
                self.processes.store(listeners + 1, Ordering::Relaxed);
            }
            // Not exact: counted again at the next wait.
            if exact {
                self.since_count.fetch_add(1, Ordering::Relaxed);
            }
        }
        // core_free() first: it counts the cores again when due.
        if !core_free() || self.processes.load(Ordering::Relaxed) > cores() {
            self.gated.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let budget = self.slot(index).load(Ordering::Relaxed);
        if budget > 0 {
            return budget;
        }
        let n = self.since_probe.fetch_add(1, Ordering::Relaxed);
        if n % Self::PROBE_EVERY == Self::PROBE_EVERY - 1 {
            (max / 8).max(Self::FLOOR_NS)
        } else {
            0
        }
    }

    /// What spinning did so far.
    pub fn stats(&self) -> SpinStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SpinStats {
            waits: read(&self.waits),
            gated: read(&self.gated),
            spun: read(&self.spun),
            won: read(&self.won),
            spinning: Duration::from_nanos(read(&self.spun_ns)),
        }
    }

    /// Adapts the budget of waits on semaphore `index` after a spin of
    /// `budget` that took `took` and ended the wait or not.
    fn record(&self, index: u16, budget: u64, took: Duration, success: bool) {
        self.spun.fetch_add(1, Ordering::Relaxed);
        self.won.fetch_add(u64::from(success), Ordering::Relaxed);
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.spun_ns.fetch_add(took, Ordering::Relaxed);
        let max = self.max_ns.load(Ordering::Relaxed);
        let next = if success {
            (budget * 2).clamp(Self::FLOOR_NS, max)
        } else if budget / 2 < Self::FLOOR_NS {
            0
        } else {
            budget / 2
        };
        self.slot(index).store(next, Ordering::Relaxed);
    }
}

/// The longest a [`Mode::SpinOnly`] wait spins, whatever the budget: a
/// caller that must not block must not be held long either (a native
/// function on an Erlang scheduler should return within a millisecond,
/// and a broadcast makes at most two such waits).
pub(crate) const SPIN_ONLY_MAX: Duration = Duration::from_micros(25);

/// How many listeners a bus has, from its semaphores, and whether that is
/// exact. Each listener is counted in S (armed), W (acknowledged) or both
/// (copying a message): with W at 0 they are S, with S at 0 they are W;
/// otherwise S + W counts those copying twice (a writer waiting for their
/// copies sees all of them so), and is only an upper bound.
fn listeners(now: Semaphores) -> (u64, bool) {
    let (s, w) = (u64::from(now.s), u64::from(now.w));
    match (s, w) {
        (_, 0) => (s, true),
        (0, _) => (w, true),
        _ => (s + w, false),
    }
}

/// How often [`core_free`] looks at the machine again.
const CORE_CHECK_EVERY: Duration = Duration::from_millis(10);

/// Whether a core is free for spinning: fewer tasks are runnable on the
/// machine now, besides the caller, than there are [`cores`] (the fourth
/// field of /proc/loadavg, a snapshot). Read at most once per
/// [`CORE_CHECK_EVERY`] in the process (a few microseconds), with the
/// cores; without /proc, true.
fn core_free() -> bool {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static NEXT_CHECK_NS: AtomicU64 = AtomicU64::new(0);
    static FREE: AtomicBool = AtomicBool::new(true);
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64;
    let next = NEXT_CHECK_NS.load(Ordering::Relaxed);
    let due = now >= next
        && NEXT_CHECK_NS
            .compare_exchange(
                next,
                now + CORE_CHECK_EVERY.as_nanos() as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
    if due {
        let cores = count_cores();
        CORES.store(cores, Ordering::Relaxed);
        let free = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| runnable(&text))
            .map_or(true, |running| running.saturating_sub(1) < cores);
        FREE.store(free, Ordering::Relaxed);
    }
    FREE.load(Ordering::Relaxed)
}

/// The cores this process may use, as last counted (0: not yet).
static CORES: AtomicU64 = AtomicU64::new(0);

/// The cores this process may use: counted again with every look at the
/// machine ([`core_free`]), since its CPU affinity or its cgroup's quota
/// may change while it runs (a process kept to one CPU must not spin
/// against a peer waiting for that CPU).
fn cores() -> u64 {
    match CORES.load(Ordering::Relaxed) {
        0 => {
            let cores = count_cores();
            CORES.store(cores, Ordering::Relaxed);
            cores
        }
        cores => cores,
    }
}

/// The cores this process may use now (its affinity and cgroup quota).
fn count_cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The tasks runnable now, from the text of /proc/loadavg
/// (`"0.50 0.40 0.30 2/345 12345"`: 2).
fn runnable(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Makes the atomic semaphore operation `ops`, blocking as `mode` and
/// `limits` allow. `EINTR` is retried (with the remaining time) unless a
/// stop was requested: a signal never loses protocol state, because a
/// failed `semop` changed nothing.
pub(crate) fn semop(
    path: &Path,
    sem: SemId,
    ops: &[SemOp],
    mode: Mode,
    limits: &Limits<'_>,
) -> Result<()> {
    let deadline = match mode {
        Mode::Timed | Mode::SpinOnly => limits.deadline,
        _ => None,
    };
    if mode == Mode::NoWait {
        return sem.op(ops, Block::Never).map_err(|e| semop_error(e, path));
    }
    // A stop asked before the call is seen before any attempt, spinning
    // included (a listener stopped before it re-arms must not re-arm).
    if limits.stop.is_some_and(StopToken::is_stopped) {
        return Err(Error::Interrupted);
    }
    // A timed step whose deadline has passed fails without any attempt
    // (the blocking loop below), spinning or not.
    let expired = mode == Mode::Timed && deadline.is_some_and(|d| d.remaining().is_none());
    if let Some(spinner) = limits.spin.filter(|s| s.enabled() && !expired) {
        // Ready at once (the common case for a writer's lock): no spinning,
        // and nothing to count or look up.
        match sem.op(ops, Block::Never) {
            Ok(()) => return Ok(()),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => return Err(semop_error(e, path)),
        }
        spinner.waits.fetch_add(1, Ordering::Relaxed);
        let index = ops.first().map_or(0, |op| op.index);
        let mut budget = spinner.budget(sem, index);
        // Never spin past the deadline: one already passed means a single
        // try, and no waiting at all.
        if let Some(d) = deadline {
            let left = d.remaining().map_or(0, |r| r.as_nanos());
            budget = budget.min(u64::try_from(left).unwrap_or(u64::MAX));
        }
        if mode == Mode::SpinOnly {
            budget = budget.min(SPIN_ONLY_MAX.as_nanos() as u64);
        }
        if budget > 0 {
            let start = Instant::now();
            let success = spin(sem, ops, Duration::from_nanos(budget));
            spinner.record(index, budget, start.elapsed(), success);
            if success {
                return Ok(());
            }
        }
    }
    if mode == Mode::SpinOnly {
        // One last try, which also gives a failure its precise error.
        return sem.op(ops, Block::Never).map_err(|e| semop_error(e, path));
    }
    let registration = limits.stop.map(StopToken::register);
    loop {
        if limits.stop.is_some_and(StopToken::is_stopped) {
            return Err(Error::Interrupted);
        }
        let block = match deadline {
            Some(d) => Block::For(d.remaining().ok_or(Error::TimedOut)?),
            None => Block::Forever,
        };
        match sem.op(ops, block) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            // semtimedop's timeout: loop to re-check the clock (the kernel
            // may round a little short of the deadline), unless the clock
            // does not move while we sleep (see Clock::ticks_while_asleep).
            Err(Errno::EAGAIN) if deadline.is_some_and(|d| d.clock().ticks_while_asleep()) => {
                continue
            }
            Err(Errno::EAGAIN) if deadline.is_some() => return Err(Error::TimedOut),
            Err(e) => return Err(semop_error(e, path)),
        }
    }
    drop(registration);
    Ok(())
}

/// A failed `semop` on the bus at `path` (`EAGAIN`: [`Error::WouldBlock`]).
pub(crate) fn semop_error(errno: Errno, path: &Path) -> Error {
    Error::sys(errno, Object::SemaphoreArray, Op::Wait, path)
}

/// Tries `ops` without blocking until it succeeds or `budget` is spent.
/// Returns whether it succeeded (on an error, the blocking path that
/// follows reports it with its context).
fn spin(sem: SemId, ops: &[SemOp], budget: Duration) -> bool {
    let start = Instant::now();
    loop {
        match sem.op(ops, Block::Never) {
            Ok(()) => return true,
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => return false,
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_exact_when_s_or_w_is_zero() {
        let at = |s, w| {
            listeners(Semaphores {
                s,
                w,
                x: 1,
                q: 0,
                n: 0,
            })
        };
        assert_eq!(at(3, 0), (3, true));
        assert_eq!(at(0, 2), (2, true));
        assert_eq!(at(1, 1), (2, false));
        assert_eq!(at(0, 0), (0, true));
    }

    #[test]
    fn runnable_tasks_are_the_fourth_fields_numerator() {
        assert_eq!(runnable("0.50 0.40 0.30 2/345 12345\n"), Some(2));
        assert_eq!(runnable("0.50 0.40 0.30"), None);
        assert_eq!(runnable(""), None);
    }
}
