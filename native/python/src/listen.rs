//! `bus._bus.Subscription`: the core's subscription (a listener thread and
//! a queue that holds the bus when full), behind `bus.listen` and its
//! iterators. For asyncio, one end of a socket pair is readable when the
//! queue has become non-empty or the listener failed: an event loop
//! watches it (`fileno`), with no thread of Python's.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bus_core::{Error, Item, Notice, SubscribeOptions, Subscription};
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::bus_error;
use crate::SLICE;

/// The listener of `bus.listen`; see `bus/__init__.pyi`.
#[pyclass(name = "Subscription", module = "bus._bus", frozen)]
pub(crate) struct PySubscription {
    subscription: Subscription,
    path: PathBuf,
    /// Readable after a wake-up (see the module documentation).
    wake: UnixStream,
}

impl PySubscription {
    /// The next message within `timeout` (`Ok(None)`: none yet), or
    /// `Err(None)` once stopped, `Err(Some(e))` once failed.
    fn take(&self, py: Python<'_>, timeout: Duration) -> Result<Option<Vec<u8>>, Option<PyErr>> {
        loop {
            let next = if timeout.is_zero() {
                self.subscription.next(Some(Duration::ZERO))
            } else {
                py.allow_threads(|| self.subscription.next(Some(timeout)))
            };
            return match next {
                Ok(Item::Message { bytes, .. }) => Ok(Some(bytes)),
                // Never with a queue that holds the bus.
                Ok(Item::Dropped(_)) => continue,
                Err(Error::TimedOut) => Ok(None),
                Err(Error::Interrupted) => Err(None),
                Err(e) => Err(Some(bus_error(&e, Some(&self.path)))),
            };
        }
    }
}

#[pymethods]
impl PySubscription {
    /// Joins the bus at `pathname` and returns once counted on it: every
    /// broadcast from then on is received. `capacity` messages wait at
    /// most; then the bus is held (writers wait) until one is taken.
    #[new]
    #[pyo3(signature = (pathname, capacity = 1024))]
    fn new(py: Python<'_>, pathname: PathBuf, capacity: usize) -> PyResult<PySubscription> {
        let (wake, waker) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        waker.set_nonblocking(true)?;
        let options = SubscribeOptions {
            capacity,
            notify: Some(Box::new(move |notice| {
                if !matches!(notice, Notice::Listening) {
                    // Full: it is readable already.
                    let _ = (&waker).write(&[1]);
                }
            })),
            ..SubscribeOptions::default()
        };
        let subscription = py
            .allow_threads(|| Subscription::start(&pathname, options))
            .map_err(|e| bus_error(&e, Some(&pathname)))?;
        Ok(PySubscription {
            subscription,
            path: pathname,
            wake,
        })
    }

    /// Waits for the next message (without the GIL, looking for signals
    /// every few milliseconds: a signal's exception stops the
    /// subscription, which leaves the bus, and is raised). `StopIteration`
    /// once closed.
    fn next(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        loop {
            match self.take(py, SLICE) {
                Ok(Some(m)) => return Ok(PyBytes::new(py, &m).unbind()),
                Ok(None) => {
                    if let Err(e) = py.check_signals() {
                        py.allow_threads(|| self.subscription.stop());
                        return Err(e);
                    }
                }
                Err(None) => return Err(PyStopIteration::new_err(())),
                Err(Some(e)) => return Err(e),
            }
        }
    }

    /// The next message if one waits, else `None`; `StopAsyncIteration`
    /// once closed.
    fn try_next(&self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        match self.take(py, Duration::ZERO) {
            Ok(m) => Ok(m.map(|m| PyBytes::new(py, &m).unbind())),
            Err(None) => Err(PyStopAsyncIteration::new_err(())),
            Err(Some(e)) => Err(e),
        }
    }

    /// The descriptor that is readable after a wake-up.
    fn fileno(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Reads the wake-ups (call before `try_next`).
    fn clear_wakeup(&self) {
        let mut buf = [0u8; 64];
        loop {
            match (&self.wake).read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
    }

    /// Leaves the bus (idempotent); messages still queued are dropped.
    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.subscription.stop());
        while self.subscription.try_next().is_some() {}
    }
}
