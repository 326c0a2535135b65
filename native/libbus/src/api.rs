//! The library's functions in safe Rust: each takes checked Rust values
//! from [`crate::ffi`] and returns `Ok` or the `errno` to report.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_core::{Access, Bus, Clock, Deadline, Error, Message};
use libc::{c_char, c_int, clockid_t, gid_t, key_t, mode_t, uid_t};

use crate::registry::{self, PollState};

/// `errno` on failure.
pub(crate) type CResult<T> = Result<T, c_int>;

/// Open the bus for listening only.
pub(crate) const BUS_RDONLY: c_int = 1;
/// Fail `bus_create` if the file exists.
pub(crate) const BUS_EXCL: c_int = 2;
/// Fail rather than block.
pub(crate) const BUS_NOWAIT: c_int = 1;

fn errno(e: Error) -> c_int {
    e.errno()
}

/// How long a call may block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Until it can proceed.
    Forever,
    /// Not at all (`EAGAIN`).
    Never,
    /// Until the deadline (`EAGAIN`).
    Until(Deadline),
}

impl Wait {
    /// From a `BUS_NOWAIT`-style flag word.
    pub fn from_flags(flags: c_int) -> Wait {
        if flags & BUS_NOWAIT != 0 {
            Wait::Never
        } else {
            Wait::Forever
        }
    }
}

/// The deadline `sec`.`nsec` on clock `clockid`: any clock
/// `clock_gettime` reads (`EINVAL` for one it refuses, or a malformed
/// time). A negative time is in the past.
pub(crate) fn deadline(
    sec: libc::time_t,
    nsec: libc::c_long,
    clockid: clockid_t,
) -> CResult<Deadline> {
    let clock = Clock::new(clockid).map_err(errno)?;
    let nsec = u32::try_from(nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .ok_or(libc::EINVAL)?;
    let at = match u64::try_from(sec) {
        Ok(sec) => Duration::new(sec, nsec),
        Err(_) => Duration::ZERO,
    };
    Ok(Deadline::at(clock, at))
}

/// What `bus_open` stores in the caller's `bus_t`.
pub(crate) struct Opened {
    pub key_sem: key_t,
    pub key_shm: key_t,
    pub sem_id: c_int,
    /// The attach address, also the registry key.
    pub address: usize,
}

/// `bus_create`: the pathname of the (possibly pre-existing) bus.
pub(crate) fn create(path: Option<&Path>, flags: c_int) -> CResult<PathBuf> {
    // BUS_INTR only concerns writing the bus file, a regular file, which
    // signals do not interrupt (bus.h).
    bus_core::create(path, flags & BUS_EXCL != 0).map_err(errno)
}

/// `bus_unlink`.
pub(crate) fn unlink(path: &Path) -> CResult<()> {
    bus_core::unlink(path).map_err(errno)
}

/// `bus_open`.
pub(crate) fn open(path: &Path, flags: c_int) -> CResult<Opened> {
    if flags < 0 {
        return Err(libc::EINVAL);
    }
    let access = if flags & BUS_RDONLY != 0 {
        Access::ReadOnly
    } else {
        Access::Write
    };
    let bus = Bus::open(path, access).map_err(errno)?;
    let keys = bus.keys();
    let sem_id = bus.semaphore_id();
    let address = registry::insert(bus);
    Ok(Opened {
        key_sem: keys.sem,
        key_shm: keys.shm,
        sem_id,
        address,
    })
}

/// `bus_close`: leaves the bus if polling, and detaches the segment.
pub(crate) fn close(address: usize) -> CResult<()> {
    let handle = registry::remove(address).ok_or(libc::EINVAL)?;
    drop(handle);
    Ok(())
}

/// `bus_write` and `bus_write_timed`.
pub(crate) fn write(address: usize, message: &[u8], wait: Wait) -> CResult<()> {
    let handle = registry::get(address).ok_or(libc::EINVAL)?;
    let message = Message::new(message).map_err(errno)?;
    let bus = handle.bus();
    match wait {
        Wait::Forever => bus.write(&message),
        Wait::Never => bus.write_nowait(&message),
        Wait::Until(deadline) => bus.write_timed(&message, deadline),
    }
    .map_err(errno)
}

/// What a `bus_read` callback answered.
pub(crate) enum Reply {
    /// Positive: keep listening.
    Continue,
    /// Zero: stop, `bus_read` succeeds.
    Stop,
    /// Negative: stop, `bus_read` fails with the `errno` the callback left.
    Fail(c_int),
}

/// `bus_read` and `bus_read_timed`: `callback` gets `None` once listening,
/// then each message with its NUL.
pub(crate) fn read(
    address: usize,
    deadline: Option<Deadline>,
    callback: &mut dyn FnMut(Option<&CStr>) -> Reply,
) -> CResult<()> {
    let handle = registry::get(address).ok_or(libc::EINVAL)?;
    let bus = handle.bus();
    let mut failure = None;
    let mut text = Vec::with_capacity(bus_core::MEMORY_SIZE);
    let mut on_event = |event: bus_core::Event<'_>| {
        let reply = match event {
            bus_core::Event::Listening => callback(None),
            bus_core::Event::Message(bytes) => {
                text.clear();
                text.extend_from_slice(bytes);
                text.push(0);
                // The core hands over the bytes before the segment's NUL.
                let message = CStr::from_bytes_until_nul(&text).unwrap_or_default();
                callback(Some(message))
            }
        };
        match reply {
            Reply::Continue => bus_core::Flow::Continue,
            Reply::Stop => bus_core::Flow::Stop,
            Reply::Fail(errno) => {
                failure = Some(errno);
                bus_core::Flow::Stop
            }
        }
    };
    match deadline {
        None => bus.read(&mut on_event),
        Some(deadline) => bus.read_timed(deadline, &mut on_event),
    }
    .map_err(errno)?;
    match failure {
        Some(errno) => Err(errno),
        None => Ok(()),
    }
}

/// `bus_poll_start`. Starting again while polling keeps the current
/// poller (nothing is missed or counted twice).
pub(crate) fn poll_start(address: usize) -> CResult<()> {
    let handle = registry::get(address).ok_or(libc::EINVAL)?;
    let mut poll = handle.poll();
    if poll.is_none() {
        let poller = handle.bus().poller().map_err(errno)?;
        *poll = Some(PollState {
            poller,
            message: Vec::with_capacity(bus_core::MEMORY_SIZE),
        });
    }
    Ok(())
}

/// `bus_poll_stop`: leaves the bus (nothing to do if not polling).
pub(crate) fn poll_stop(address: usize) -> CResult<()> {
    let handle = registry::get(address).ok_or(libc::EINVAL)?;
    let stopped = handle.poll().take();
    drop(stopped);
    Ok(())
}

/// `bus_poll` and `bus_poll_timed`: the next message, NUL-terminated, in
/// memory owned by the poll state (valid until the next poll, poll_stop
/// or close). `EINVAL` without `bus_poll_start`.
pub(crate) fn poll(address: usize, wait: Wait) -> CResult<*const c_char> {
    let handle = registry::get(address).ok_or(libc::EINVAL)?;
    let mut poll = handle.poll();
    let state = poll.as_mut().ok_or(libc::EINVAL)?;
    let bytes = match wait {
        Wait::Forever => state.poller.poll(),
        Wait::Never => state.poller.poll_nowait(),
        Wait::Until(deadline) => state.poller.poll_timed(deadline),
    }
    .map_err(errno)?;
    state.message.clear();
    state.message.extend_from_slice(bytes);
    state.message.push(0);
    Ok(state.message.as_ptr().cast())
}

/// `bus_chown`: `(uid_t)-1` / `(gid_t)-1` keep the current owner / group,
/// as with chown(2).
pub(crate) fn chown(path: &Path, uid: uid_t, gid: gid_t) -> CResult<()> {
    let uid = (uid != uid_t::MAX).then_some(uid);
    let gid = (gid != gid_t::MAX).then_some(gid);
    bus_core::chown(path, uid, gid).map_err(errno)
}

/// `bus_chmod`.
pub(crate) fn chmod(path: &Path, mode: mode_t) -> CResult<()> {
    bus_core::chmod(path, mode).map_err(errno)
}
