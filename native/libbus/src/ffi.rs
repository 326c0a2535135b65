//! The exported C functions, and every `unsafe` block of the crate.
//!
//! Each export is a few lines: check and convert its pointer arguments,
//! call [`crate::api`] inside [`guard`] (no panic crosses into C), then
//! store the result and `errno` the C way. A NULL pointer where the
//! function needs an object is `EINVAL`.
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;

use bus_core::Bus;
use libc::{c_char, c_int, c_void, clockid_t, gid_t, key_t, mode_t, timespec, uid_t};

use crate::api::{self, CResult, Reply, Wait};

/// `bus_t`: laid out exactly as the original libbus's, since C programs
/// allocate it themselves. Our state is not in it: `message` (the attach
/// address) finds it in [`crate::registry`].
#[repr(C)]
pub struct BusT {
    /// Key of the semaphore array.
    pub key_sem: key_t,
    /// Key of the shared memory segment.
    pub key_shm: key_t,
    /// Identifier of the semaphore array.
    pub sem_id: c_int,
    /// Where the segment is attached (and our registry key).
    pub message: *mut c_char,
    /// Non-zero until the first successful `bus_poll` after
    /// `bus_poll_start`, and again after a failed one.
    pub first_poll: c_int,
}

// The layout C programs compiled against the original header expect.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<BusT>() == 32);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(std::mem::size_of::<BusT>() == 20);

/// A `bus_read` callback.
pub type Callback = unsafe extern "C" fn(message: *const c_char, user_data: *mut c_void) -> c_int;

/// A [`Bus`] on the heap, borrowed as `'static` by the pollers made from
/// it, and freed on drop. Whoever owns it must drop every such poller
/// first ([`crate::registry::Handle`] does, by field order).
pub(crate) struct StaticBus(&'static Bus);

impl StaticBus {
    /// Moves `bus` to the heap.
    pub fn new(bus: Bus) -> StaticBus {
        StaticBus(Box::leak(Box::new(bus)))
    }

    /// The bus, for as long as this `StaticBus` lives.
    pub fn get(&self) -> &'static Bus {
        self.0
    }
}

impl Drop for StaticBus {
    fn drop(&mut self) {
        let leaked: *const Bus = self.0;
        // SAFETY: the pointer came from `Box::leak` in `new` and is
        // reclaimed only here, once. Borrows handed out by `get` are held
        // only by pollers and by calls holding the owning `Handle` through
        // an `Arc`; the owner drops its pollers before us, and no call is
        // running since the last `Arc` is gone.
        drop(unsafe { Box::from_raw(leaked.cast_mut()) });
    }
}

/// Sets the calling thread's `errno`.
fn set_errno(errno: c_int) {
    // SAFETY: `__errno_location` returns a valid pointer to the calling
    // thread's `errno`, which only this thread uses.
    unsafe { *libc::__errno_location() = errno };
}

/// The calling thread's `errno`.
fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `f`; a panic becomes `EIO`, any error is stored in `errno`, and
/// `failed` is returned in both cases.
fn guard<T>(failed: T, f: impl FnOnce() -> CResult<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => value,
        Ok(Err(errno)) => {
            set_errno(errno);
            failed
        }
        Err(_) => {
            set_errno(libc::EIO);
            failed
        }
    }
}

/// The pathname at `file`; `EINVAL` if NULL.
///
/// # Safety
/// `file` is NULL or a NUL-terminated string that outlives `'a`.
unsafe fn path_arg<'a>(file: *const c_char) -> CResult<&'a Path> {
    if file.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-NULL, and NUL-terminated and alive per the contract.
    let bytes = unsafe { CStr::from_ptr(file) }.to_bytes();
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// The registry key of the open bus `bus`: `EINVAL` if NULL.
///
/// # Safety
/// `bus` is NULL or points to a readable `bus_t`.
unsafe fn address_of(bus: *const BusT) -> CResult<usize> {
    // SAFETY: non-NULL pointers point to a `bus_t` per the contract.
    let bus = unsafe { bus.as_ref() }.ok_or(libc::EINVAL)?;
    Ok(bus.message as usize)
}

/// The deadline at `timeout` on `clockid`, `None` if `timeout` is NULL.
///
/// # Safety
/// `timeout` is NULL or points to a readable `struct timespec`.
unsafe fn deadline_arg(
    timeout: *const timespec,
    clockid: clockid_t,
) -> CResult<Option<bus_core::Deadline>> {
    // SAFETY: non-NULL pointers point to a timespec per the contract.
    match unsafe { timeout.as_ref() } {
        None => Ok(None),
        Some(ts) => api::deadline(ts.tv_sec, ts.tv_nsec, clockid).map(Some),
    }
}

/// Creates a bus; see `bus.h`.
///
/// # Safety
/// `file` is NULL or a C string; `out_file` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bus_create(
    file: *const c_char,
    flags: c_int,
    out_file: *mut *mut c_char,
) -> c_int {
    guard(-1, || {
        let path = if file.is_null() {
            None
        } else {
            // SAFETY: non-NULL, so a C string per the contract.
            Some(unsafe { path_arg(file) }?)
        };
        let created = api::create(path, flags)?;
        if !out_file.is_null() {
            let bytes = created.as_os_str().as_bytes();
            // SAFETY: malloc has no preconditions; NULL is checked below.
            let copy = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
            if copy.is_null() {
                return Err(libc::ENOMEM);
            }
            // SAFETY: `copy` has room for the bytes and a NUL, and cannot
            // overlap `bytes` (fresh allocation); `out_file` is writable
            // per the contract. The caller frees `copy` with free(3).
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
                *copy.add(bytes.len()) = 0;
                *out_file = copy.cast();
            }
        }
        Ok(0)
    })
}

/// Removes a bus; see `bus.h`.
///
/// # Safety
/// `file` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn bus_unlink(file: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a C string per the contract.
        api::unlink(unsafe { path_arg(file) }?).map(|()| 0)
    })
}

/// Opens a bus into `*bus`; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or writable; `file` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn bus_open(bus: *mut BusT, file: *const c_char, flags: c_int) -> c_int {
    guard(-1, || {
        if bus.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: NULL or a C string per the contract.
        let opened = api::open(unsafe { path_arg(file) }?, flags)?;
        let filled = BusT {
            key_sem: opened.key_sem,
            key_shm: opened.key_shm,
            sem_id: opened.sem_id,
            message: opened.address as *mut c_char,
            first_poll: 0,
        };
        // SAFETY: non-NULL, so writable per the contract; `write` does not
        // read the (possibly uninitialised) old contents.
        unsafe { bus.write(filled) };
        Ok(0)
    })
}

/// Closes `*bus`; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or points to a writable `bus_t`.
#[no_mangle]
pub unsafe extern "C" fn bus_close(bus: *mut BusT) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a `bus_t` per the contract.
        api::close(unsafe { address_of(bus) }?)?;
        // SAFETY: `address_of` succeeded, so `bus` is a writable `bus_t`.
        unsafe { (*bus).message = ptr::null_mut() };
        Ok(0)
    })
}

/// The message at `message`; `EINVAL` if NULL.
///
/// # Safety
/// `message` is NULL or a C string that outlives `'a`.
unsafe fn message_arg<'a>(message: *const c_char) -> CResult<&'a [u8]> {
    if message.is_null() {
        return Err(libc::EINVAL);
    }
    // SAFETY: non-NULL, so a C string per the contract.
    Ok(unsafe { CStr::from_ptr(message) }.to_bytes())
}

/// Broadcasts `message`; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a `bus_t`; `message` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn bus_write(
    bus: *const BusT,
    message: *const c_char,
    flags: c_int,
) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or valid per the contract.
        let (address, message) = unsafe { (address_of(bus)?, message_arg(message)?) };
        api::write(address, message, Wait::from_flags(flags)).map(|()| 0)
    })
}

/// Broadcasts `message` with a deadline; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a `bus_t`; `message` is NULL or a C string; `timeout`
/// is NULL or a `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn bus_write_timed(
    bus: *const BusT,
    message: *const c_char,
    timeout: *const timespec,
    clockid: clockid_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or valid per the contract.
        let (address, message, deadline) = unsafe {
            (
                address_of(bus)?,
                message_arg(message)?,
                deadline_arg(timeout, clockid)?,
            )
        };
        let wait = deadline.map_or(Wait::Forever, Wait::Until);
        api::write(address, message, wait).map(|()| 0)
    })
}

/// Listens with a callback; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a `bus_t`; `callback` is NULL or a function that may
/// be called with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn bus_read(
    bus: *const BusT,
    callback: Option<Callback>,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: forwarded contract; a NULL timeout means no deadline.
    unsafe { bus_read_timed(bus, callback, user_data, ptr::null(), libc::CLOCK_MONOTONIC) }
}

/// Listens with a callback until a deadline; see `bus.h`.
///
/// # Safety
/// As [`bus_read`]; `timeout` is NULL or a `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn bus_read_timed(
    bus: *const BusT,
    callback: Option<Callback>,
    user_data: *mut c_void,
    timeout: *const timespec,
    clockid: clockid_t,
) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or valid per the contract.
        let (address, deadline) = unsafe { (address_of(bus)?, deadline_arg(timeout, clockid)?) };
        let callback = callback.ok_or(libc::EINVAL)?;
        let mut call = |message: Option<&CStr>| {
            let message = message.map_or(ptr::null(), CStr::as_ptr);
            // SAFETY: the caller gave `callback` to be called with
            // `user_data`; `message` is NULL or a C string alive during
            // the call, as bus.h promises.
            let reply = unsafe { callback(message, user_data) };
            match reply {
                0 => Reply::Stop,
                r if r > 0 => Reply::Continue,
                // Taken now: leaving the bus may change errno.
                _ => Reply::Fail(errno()),
            }
        };
        api::read(address, deadline, &mut call).map(|()| 0)
    })
}

/// Starts listening without a callback; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a writable `bus_t`.
#[no_mangle]
pub unsafe extern "C" fn bus_poll_start(bus: *mut BusT) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a `bus_t` per the contract.
        api::poll_start(unsafe { address_of(bus) }?)?;
        // SAFETY: `address_of` succeeded, so `bus` is a writable `bus_t`.
        unsafe { (*bus).first_poll = 1 };
        Ok(0)
    })
}

/// Stops listening without a callback; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a `bus_t`.
#[no_mangle]
pub unsafe extern "C" fn bus_poll_stop(bus: *const BusT) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a `bus_t` per the contract.
        api::poll_stop(unsafe { address_of(bus) }?).map(|()| 0)
    })
}

/// Polls and mirrors the outcome in `bus->first_poll`.
///
/// # Safety
/// `bus` is NULL or a writable `bus_t`.
unsafe fn poll_with(bus: *mut BusT, wait: CResult<Wait>) -> *const c_char {
    guard(ptr::null(), || {
        // SAFETY: NULL or a `bus_t` per the contract.
        let address = unsafe { address_of(bus) }?;
        let result = wait.and_then(|wait| api::poll(address, wait));
        // SAFETY: `address_of` succeeded, so `bus` is a writable `bus_t`.
        unsafe { (*bus).first_poll = c_int::from(result.is_err()) };
        result
    })
}

/// Waits for the next message; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a writable `bus_t`.
#[no_mangle]
pub unsafe extern "C" fn bus_poll(bus: *mut BusT, flags: c_int) -> *const c_char {
    // SAFETY: forwarded contract.
    unsafe { poll_with(bus, Ok(Wait::from_flags(flags))) }
}

/// Waits for the next message until a deadline; see `bus.h`.
///
/// # Safety
/// `bus` is NULL or a writable `bus_t`; `timeout` is NULL or a
/// `struct timespec`.
#[no_mangle]
pub unsafe extern "C" fn bus_poll_timed(
    bus: *mut BusT,
    timeout: *const timespec,
    clockid: clockid_t,
) -> *const c_char {
    // SAFETY: NULL or a timespec per the contract.
    let wait = unsafe { deadline_arg(timeout, clockid) };
    let wait = wait.map(|deadline| deadline.map_or(Wait::Forever, Wait::Until));
    // SAFETY: forwarded contract.
    unsafe { poll_with(bus, wait) }
}

/// Changes the owner and group of a bus; see `bus.h`.
///
/// # Safety
/// `file` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn bus_chown(file: *const c_char, owner: uid_t, group: gid_t) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a C string per the contract.
        api::chown(unsafe { path_arg(file) }?, owner, group).map(|()| 0)
    })
}

/// Changes who may use a bus; see `bus.h`.
///
/// # Safety
/// `file` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn bus_chmod(file: *const c_char, mode: mode_t) -> c_int {
    guard(-1, || {
        // SAFETY: NULL or a C string per the contract.
        api::chmod(unsafe { path_arg(file) }?, mode).map(|()| 0)
    })
}
