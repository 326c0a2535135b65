//! Blocking on semaphores: deadlines on a chosen clock, stop tokens that
//! interrupt a blocked call from another thread, and the one place where
//! `EINTR` is retried.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

use crate::error::{Error, Result};
use crate::sys::{self, Block, SemId, SemOp, ThreadHandle};

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

/// Stops blocked bus calls from another thread (or from a signal handler,
/// for termination signals).
///
/// Give a clone to a listener ([`crate::ReadOptions::stop`]); [`stop`]
/// makes it leave the bus cleanly at its next step, interrupting a blocked
/// `semop` with a signal ([`sys::wake_signal`]) if need be.
///
/// [`stop`]: StopToken::stop
#[derive(Clone, Debug, Default)]
pub struct StopToken(Arc<StopInner>);

#[derive(Debug, Default)]
struct StopInner {
    stopped: AtomicBool,
    blocked: Mutex<Vec<ThreadHandle>>,
    unblocked: Condvar,
}

static WAKE_HANDLER: Once = Once::new();

/// How long a process whose [`StopToken::on_termination_signals`] token
/// was stopped by a signal may take to end by itself before the signal
/// ends it.
pub const TERMINATION_GRACE: Duration = Duration::from_secs(1);

/// Installs the (do-nothing) handler of the signal a [`StopToken`] uses to
/// interrupt a blocked call. [`StopToken::new`] does it once per process;
/// call it again where this code may be one of several copies loaded in one
/// process (a NIF library loaded side by side with its next version), so
/// that the handler installed is the one of the copy loaded last: the
/// handler of a copy that is unloaded later would point to freed code.
pub fn install_stop_signal_handler() -> Result<()> {
    sys::install_wake_handler().map_err(|e| Error::os("install the stop-signal handler", e))
}

impl StopToken {
    /// A token that is stopped only by [`StopToken::stop`].
    pub fn new() -> StopToken {
        WAKE_HANDLER.call_once(|| {
            // Without the handler the wake signal would kill the process;
            // a failure here is a broken libc, reported at first use.
            install_stop_signal_handler().expect("install the stop-signal handler");
        });
        StopToken::default()
    }

    /// The process's token that SIGINT, SIGTERM and SIGHUP stop, instead of
    /// ending the process at once.
    ///
    /// The signals are blocked in the calling thread and in the threads it
    /// creates afterwards (call this before spawning any), and a thread of
    /// their own waits for them, so a signal can never slip in between a
    /// check of the token and a blocking call: [`StopToken::stop`]
    /// interrupts every call blocked with the token until it is out. If
    /// the process is still running [`TERMINATION_GRACE`] after the signal
    /// (stuck in a call no token reaches, such as an `open` on a hung
    /// network file system), the signal takes its default action. Every
    /// call returns the same token.
    pub fn on_termination_signals() -> Result<StopToken> {
        static TOKEN: Mutex<Option<StopToken>> = Mutex::new(None);
        let mut installed = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = installed.as_ref() {
            return Ok(token.clone());
        }
        let token = StopToken::new();
        sys::block_termination_signals().map_err(|e| Error::os("block termination signals", e))?;
        let watched = token.clone();
        std::thread::Builder::new()
            .name("bus-termination".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let Ok(signal) = sys::wait_for_termination() else {
                    return;
                };
                watched.stop();
                std::thread::sleep(TERMINATION_GRACE);
                sys::die_of(signal)
            })
            .map_err(|e| Error::os("spawn the termination-signal thread", e))?;
        Ok(installed.insert(token).clone())
    }

    /// Whether a stop has been requested.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Requests a stop and returns once no thread is blocked in a call
    /// using this token (each has been interrupted and is leaving).
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        let mut blocked = self.0.blocked.lock().unwrap_or_else(|e| e.into_inner());
        while !blocked.is_empty() {
            for &thread in blocked.iter() {
                // A registered thread is alive until it deregisters, which
                // needs this lock; ESRCH cannot happen.
                let _ = sys::wake_thread(thread);
            }
            // The signal can land just before the thread enters `semop`
            // (then it blocks anyway): send it again until it is out.
            blocked = self
                .0
                .unblocked
                .wait_timeout(blocked, Duration::from_millis(2))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn register(&self) -> Registration<'_> {
        thread_local!(static UNBLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        UNBLOCKED.with(|u| {
            if !u.get() {
                // Threads inherit their creator's mask; a VM may block RT
                // signals. Failure leaves the timeout-free path unchanged.
                let _ = sys::unblock_wake_signal();
                u.set(true);
            }
        });
        let me = sys::current_thread();
        self.0
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(me);
        Registration { token: self, me }
    }
}

struct Registration<'a> {
    token: &'a StopToken,
    me: ThreadHandle,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut blocked = self
            .token
            .0
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(i) = blocked.iter().position(|&t| t == self.me) {
            blocked.swap_remove(i);
        }
        self.token.0.unblocked.notify_all();
    }
}

/// Reaps every child process as it exits (a `SIGCHLD` handler), so a
/// process that spawns programs for messages leaves no zombies. Blocked bus
/// calls are not disturbed: `EINTR` is retried.
pub fn reap_children_automatically() -> Result<()> {
    sys::reap_children_automatically().map_err(|e| Error::os("install SIGCHLD handler", e))
}

/// How one step may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Fail with [`Error::WouldBlock`] rather than block.
    NoWait,
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
/// blocking. The budget doubles (up to its maximum) when spinning ended the
/// wait and halves when it did not, so it fades away when the other side is
/// slow or when there are more spinners than cores; at zero, one blocking
/// wait in [`Spinner::PROBE_EVERY`] probes again with a small budget.
#[derive(Debug, Default)]
pub(crate) struct Spinner {
    max_ns: AtomicU64,
    budget_ns: AtomicU64,
    since_probe: AtomicU64,
}

impl Spinner {
    const PROBE_EVERY: u64 = 64;
    const FLOOR_NS: u64 = 500;

    pub fn set_max(&self, max: Duration) {
        let ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.max_ns.store(ns, Ordering::Relaxed);
        self.budget_ns.store(ns, Ordering::Relaxed);
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }

    /// The budget for the next wait (zero: block at once).
    fn budget(&self) -> u64 {
        let max = self.max_ns.load(Ordering::Relaxed);
        if max == 0 {
            return 0;
        }
        let budget = self.budget_ns.load(Ordering::Relaxed);
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

    fn record(&self, budget: u64, success: bool) {
        let max = self.max_ns.load(Ordering::Relaxed);
        let next = if success {
            (budget * 2).clamp(Self::FLOOR_NS, max)
        } else if budget / 2 < Self::FLOOR_NS {
            0
        } else {
            budget / 2
        };
        self.budget_ns.store(next, Ordering::Relaxed);
    }
}

/// Maps a `semop`/`semctl` failure on the bus at `path` to the crate's
/// error. (`EAGAIN` and `EINTR` are handled by the caller.)
pub(crate) fn ipc_error(path: &Path, what: &str, err: std::io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::EIDRM) | Some(libc::EINVAL) | Some(libc::ENOENT) => Error::Gone {
            path: path.into(),
            object: "semaphore array",
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            path: path.into(),
            what: "semaphore array",
        },
        _ => Error::os(format!("{}: {what}", path.display()), err),
    }
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
        Mode::Timed => limits.deadline,
        _ => None,
    };
    if mode == Mode::NoWait {
        return match sem.op(ops, Block::Never) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(Error::WouldBlock),
            Err(e) => Err(ipc_error(path, "semop", e)),
        };
    }
    if let Some(spinner) = limits.spin {
        let budget = spinner.budget();
        if budget > 0 {
            let success = spin(sem, ops, Duration::from_nanos(budget));
            spinner.record(budget, success);
            if success {
                return Ok(());
            }
        }
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
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if deadline.is_some() => {
                    // semtimedop's timeout: loop to re-check the clock (the
                    // kernel may round a little short of the deadline).
                    continue;
                }
                _ => return Err(ipc_error(path, "semop", e)),
            },
        }
    }
    drop(registration);
    Ok(())
}

/// Tries `ops` without blocking until it succeeds or `budget` is spent.
/// Returns whether it succeeded (on an error, the blocking path that
/// follows reports it with its context).
fn spin(sem: SemId, ops: &[SemOp], budget: Duration) -> bool {
    let start = Instant::now();
    loop {
        match sem.op(ops, Block::Never) {
            Ok(()) => return true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {}
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

    #[test]
    fn stop_token_flag() {
        let t = StopToken::new();
        assert!(!t.is_stopped());
        t.clone().stop();
        assert!(t.is_stopped());
    }
}
