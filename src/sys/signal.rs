//! Signals and threads: the signal that interrupts a blocked call, the
//! termination signals waited for by a thread, reaping children.

use std::mem::MaybeUninit;

use super::{cvt, Errno, Result};

/// An opaque handle on a thread of this process, to interrupt it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadHandle(libc::pthread_t);

/// The calling thread's handle.
#[doc(alias = "pthread_self")]
pub fn current_thread() -> ThreadHandle {
    // SAFETY: pthread_self cannot fail.
    ThreadHandle(unsafe { libc::pthread_self() })
}

/// The signal that interrupts a blocked bus call when a stop is requested
/// (`SIGRTMIN + 7`). Its handler does nothing: delivering it only makes the
/// blocked `semop` return `EINTR`.
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 7
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler for `signal` that only sets `flag`, with or without
/// `SA_RESTART`. A handler (unlike `SIG_IGN`) is reset by `exec`, so spawned
/// programs start with default dispositions.
fn install_handler(
    signal: libc::c_int,
    handler: extern "C" fn(libc::c_int),
    restart: bool,
) -> Result<()> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value;
    // we only set fields before passing it to the kernel.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize as libc::sighandler_t;
    sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
    // SAFETY: `sa` is a valid sigaction; the handler is async-signal-safe.
    cvt(unsafe { libc::sigemptyset(&mut sa.sa_mask) })?;
    // SAFETY: as above; the old action is not needed.
    cvt(unsafe { libc::sigaction(signal, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Installs the do-nothing handler for [`wake_signal`] (idempotent).
pub fn install_wake_handler() -> Result<()> {
    install_handler(wake_signal(), ignore_signal, false)
}

/// Unblocks [`wake_signal`] in the calling thread (threads inherit the mask
/// of their creator, which in a VM may block most signals).
#[doc(alias = "pthread_sigmask")]
pub fn unblock_wake_signal() -> Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set; sigaddset adds a valid signal.
    unsafe {
        cvt(libc::sigemptyset(set.as_mut_ptr()))?;
        cvt(libc::sigaddset(set.as_mut_ptr(), wake_signal()))?;
    }
    // SAFETY: the set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno::from_raw(r));
    }
    Ok(())
}

/// Sends [`wake_signal`] to `thread`.
#[doc(alias = "pthread_kill")]
pub fn wake_thread(thread: ThreadHandle) -> Result<()> {
    // SAFETY: callers only pass handles of threads that are registered as
    // blocked in a bus call and have not deregistered (so still alive).
    let r = unsafe { libc::pthread_kill(thread.0, wake_signal()) };
    if r != 0 {
        return Err(Errno::from_raw(r));
    }
    Ok(())
}

/// The signals that ask a command to end: SIGINT, SIGTERM and SIGHUP.
pub const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The current disposition of `signal` (`SIG_DFL`, `SIG_IGN`, or a
/// handler's address).
#[doc(alias = "sigaction")]
fn disposition(signal: libc::c_int) -> Result<libc::sighandler_t> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`,
    // which points to a (zeroed) sigaction.
    cvt(unsafe { libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and filled by the kernel.
    Ok(unsafe { old.assume_init() }.sa_sigaction)
}

/// Whether `signal` is ignored (`SIG_IGN`), as `nohup` makes SIGHUP.
pub fn is_ignored(signal: libc::c_int) -> Result<bool> {
    Ok(disposition(signal)? == libc::SIG_IGN)
}

/// Whether `signal` still has its default disposition (no handler, not
/// ignored).
pub fn is_default(signal: libc::c_int) -> Result<bool> {
    Ok(disposition(signal)? == libc::SIG_DFL)
}

/// The termination signals that are not ignored: an ignored one (`nohup`)
/// stays ignored, and is neither blocked nor waited for (a blocked signal
/// is queued even when ignored, and `sigwait` would take it).
fn termination_set() -> Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signals.
    unsafe {
        cvt(libc::sigemptyset(set.as_mut_ptr()))?;
        for signal in TERMINATION_SIGNALS {
            if !is_ignored(signal)? {
                cvt(libc::sigaddset(set.as_mut_ptr(), signal))?;
            }
        }
        Ok(set.assume_init())
    }
}

/// Blocks the [`TERMINATION_SIGNALS`] in the calling thread (and so in the
/// threads it creates from now on), so that only [`wait_for_termination`]
/// receives them. Programs spawned later start with an empty mask (the
/// standard library resets it).
#[doc(alias = "pthread_sigmask")]
pub fn block_termination_signals() -> Result<()> {
    let set = termination_set()?;
    // SAFETY: the set is initialised; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno::from_raw(r));
    }
    Ok(())
}

/// Waits until one of the [`TERMINATION_SIGNALS`] (blocked in every
/// thread) is sent to the process, and returns it.
#[doc(alias = "sigwait")]
pub fn wait_for_termination() -> Result<libc::c_int> {
    let set = termination_set()?;
    let mut signal = 0;
    // SAFETY: the set is initialised and `signal` is a valid int to write.
    let r = unsafe { libc::sigwait(&set, &mut signal) };
    if r != 0 {
        return Err(Errno::from_raw(r));
    }
    Ok(signal)
}

/// Ends the process the way `signal` does by default (its exit status says
/// which signal killed it): restores the default action, unblocks it in
/// this thread and sends it to the process.
pub fn die_of(signal: libc::c_int) -> ! {
    // SAFETY: SIG_DFL is a valid disposition; the mask set is initialised
    // before use; raise takes an int.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
    }
    // Only reached if the signal's default action is ignored (not one of
    // the termination signals).
    std::process::abort()
}

extern "C" fn reap_children(_: libc::c_int) {
    // SAFETY: reading errno, which the interrupted code may be about to
    // read, so that it can be restored.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    // SAFETY: restoring errno, which the interrupted code may be reading.
    unsafe { *libc::__errno_location() = saved };
}

/// Reaps every child as it exits (a SIGCHLD handler with `SA_RESTART`), so a
/// long-running listener leaves no zombies.
pub fn reap_children_automatically() -> Result<()> {
    install_handler(libc::SIGCHLD, reap_children, true)
}
