//! Stop tokens: stopping calls blocked in another thread, promptly and
//! without a race between checking the token and blocking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::sys::signal::{self, ThreadHandle};

/// Stops blocked bus calls from another thread (or, for the termination
/// signals, from the thread that waits for them).
///
/// Give a clone to a listener ([`crate::ReadOptions::stop`]); [`stop`]
/// makes it leave the bus cleanly at its next step, interrupting a blocked
/// `semop` with a signal ([`sys::signal::wake_signal`]) if need be.
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

impl StopToken {
    /// A token that is stopped only by [`StopToken::stop`].
    pub fn new() -> StopToken {
        crate::signals::ensure_stop_signal_handler();
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
    /// the process is still running [`crate::TERMINATION_GRACE`] after the signal
    /// (stuck in a call no token reaches, such as an `open` on a hung
    /// network file system), the signal takes its default action. Every
    /// call returns the same token.
    pub fn on_termination_signals() -> Result<StopToken> {
        crate::signals::termination_token()
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
                let _ = signal::wake_thread(thread);
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

    /// Marks the calling thread as blocked in a call with this token, until
    /// the registration is dropped: [`StopToken::stop`] interrupts it.
    pub(crate) fn register(&self) -> Registration<'_> {
        thread_local!(static UNBLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        UNBLOCKED.with(|u| {
            if !u.get() {
                // Threads inherit their creator's mask; a VM may block RT
                // signals. Failure leaves the timeout-free path unchanged.
                let _ = signal::unblock_wake_signal();
                u.set(true);
            }
        });
        let me = signal::current_thread();
        self.0
            .blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(me);
        Registration { token: self, me }
    }
}

pub(crate) struct Registration<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_token_flag() {
        let t = StopToken::new();
        assert!(!t.is_stopped());
        t.clone().stop();
        assert!(t.is_stopped());
    }
}
