//! The process-wide signal set-up the bus relies on: the handler of the
//! signal that interrupts blocked calls, the thread that turns termination
//! signals into a stop, and reaping children.

use std::sync::{Mutex, Once};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::stop::StopToken;
use crate::sys::signal;

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
    signal::install_wake_handler().map_err(|e| Error::os("install the stop-signal handler", e))
}

/// Installs the stop-signal handler once per copy of this code, unless
/// one is installed already: the handler of another copy loaded later
/// (the NIF library of the next version, whose load hook installs its
/// own) must not be replaced by this one's, which may be unloaded first.
pub(crate) fn ensure_stop_signal_handler() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Without the handler the wake signal would kill the process; a
        // failure here is a broken libc.
        if signal::is_default(signal::wake_signal()).unwrap_or(true) {
            install_stop_signal_handler().expect("install the stop-signal handler");
        }
    });
}

/// The token of [`StopToken::on_termination_signals`]: made, with the
/// thread that waits for the signals, by the first call.
pub(crate) fn termination_token() -> Result<StopToken> {
    static TOKEN: Mutex<Option<StopToken>> = Mutex::new(None);
    let mut installed = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(token) = installed.as_ref() {
        return Ok(token.clone());
    }
    let token = StopToken::new();
    signal::block_termination_signals().map_err(|e| Error::os("block termination signals", e))?;
    let watched = token.clone();
    std::thread::Builder::new()
        .name("bus-termination".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let Ok(signal) = signal::wait_for_termination() else {
                return;
            };
            watched.stop();
            std::thread::sleep(TERMINATION_GRACE);
            signal::die_of(signal)
        })
        .map_err(|e| Error::os("spawn the termination-signal thread", e))?;
    Ok(installed.insert(token).clone())
}

/// Reaps every child process as it exits (a `SIGCHLD` handler), so a
/// process that spawns programs for messages leaves no zombies. Blocked bus
/// calls are not disturbed: `EINTR` is retried.
pub fn reap_children_automatically() -> Result<()> {
    signal::reap_children_automatically().map_err(|e| Error::os("install SIGCHLD handler", e))
}
