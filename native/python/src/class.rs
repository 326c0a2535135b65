//! `bus.Bus`: python-bus's class, method for method, over the core.
//!
//! Locks: `bus` and `poll` are only ever taken with the GIL released (or
//! briefly, never while waiting for the GIL), so a thread blocked in a
//! poll can never hold a lock that a thread holding the GIL waits for.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};

use bus_core::{
    Access, Bus, Deadline, Error, Event, Flow, Message, Poller, ReadOptions, StopToken,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::errors::{bus_error, os_error};
use crate::timeout;
use crate::SLICE;

type PollerOf<'a> = Poller<'a>;

self_cell::self_cell!(
    /// A poller and the bus it borrows (kept alive by the `Arc` even if
    /// the `Bus` object closes it meanwhile).
    struct Polling {
        owner: Arc<Bus>,
        #[covariant]
        dependent: PollerOf,
    }
);

/// Open the bus for listening only (`BUS_RDONLY`).
const RDONLY: i32 = 1;
/// Fail `create` if the file exists (`BUS_EXCL`).
const EXCL: i32 = 2;
/// Fail with `EAGAIN` rather than block (`BUS_NOWAIT`).
const NOWAIT: i32 = 1;

/// A bus: python-bus's `Bus`. See `bus/__init__.pyi` for the documentation
/// Python users read.
#[pyclass(name = "Bus", module = "bus", subclass, frozen)]
pub(crate) struct PyBus {
    pathname: Mutex<Option<PathBuf>>,
    bus: Mutex<Option<Arc<Bus>>>,
    poll: Mutex<Option<Polling>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message from `str` (encoded as UTF-8) or bytes-like, checked before
/// anything is touched (`EMSGSIZE`, `EINVAL` for a NUL byte).
fn message(text: &Bound<'_, PyAny>, path: Option<&Path>) -> PyResult<Message> {
    let bytes: Vec<u8> = match text.downcast::<PyString>() {
        Ok(s) => s.to_str()?.as_bytes().to_vec(),
        Err(_) => match text.downcast::<PyBytes>() {
            Ok(b) => b.as_bytes().to_vec(),
            Err(_) => text.extract::<Vec<u8>>()?,
        },
    };
    Message::new(bytes).map_err(|e| bus_error(&e, path))
}

/// What a read callback answered: python-bus's 0 (stop), 1 (continue) or
/// -1 (error), or the exception it raised.
fn answer(ret: PyResult<Bound<'_, PyAny>>) -> Result<Flow, PyErr> {
    match ret?.extract::<i64>()? {
        0 => Ok(Flow::Stop),
        n if n > 0 => Ok(Flow::Continue),
        // The callback said it failed; like a C callback's -1 without an
        // errno of its own.
        _ => Err(os_error(libc::ECANCELED, None)),
    }
}

impl PyBus {
    fn path(&self) -> Option<PathBuf> {
        lock(&self.pathname).clone()
    }

    fn error(&self, e: &Error) -> PyErr {
        bus_error(e, self.path().as_deref())
    }

    fn errno(&self, errno: i32) -> PyErr {
        os_error(errno, self.path().as_deref())
    }

    /// The pathname, or `EINVAL` if there is none yet.
    fn required_path(&self) -> PyResult<PathBuf> {
        self.path().ok_or_else(|| self.errno(libc::EINVAL))
    }

    /// python-bus's time limit (see [`timeout::deadline`]).
    fn deadline(&self, timeout: f64, clock_id: Option<libc::clockid_t>) -> PyResult<Deadline> {
        timeout::deadline(timeout, clock_id).map_err(|e| self.errno(e))
    }

    /// The open bus, or `EINVAL` if it is not open (as libbus).
    fn open_bus(&self) -> PyResult<Arc<Bus>> {
        lock(&self.bus)
            .clone()
            .ok_or_else(|| self.errno(libc::EINVAL))
    }

    fn write_with(&self, py: Python<'_>, text: &Bound<'_, PyAny>, how: Write) -> PyResult<()> {
        let message = message(text, self.path().as_deref())?;
        let bus = self.open_bus()?;
        py.allow_threads(|| match how {
            Write::Wait => bus.write(&message),
            Write::NoWait => bus.write_nowait(&message),
            Write::Until(deadline) => bus.write_timed(&message, deadline),
        })
        .map_err(|e| self.error(&e))
    }

    /// `read` and `read_timed`. The core's loop runs on a thread of its
    /// own; each event comes here, to the caller's thread, where the
    /// callback runs with the GIL, and its answer goes back before the
    /// loop re-arms (as in the original: the next broadcast waits for the
    /// callback). Between events this thread waits without the GIL and
    /// looks for signals every [`SLICE`]; a signal's exception stops the
    /// loop, which leaves the bus, and is raised.
    fn read_loop(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        user_data: &Bound<'_, PyAny>,
        deadline: Option<Deadline>,
    ) -> PyResult<()> {
        let bus = self.open_bus()?;
        let token = StopToken::new();
        let (event_tx, event_rx) = mpsc::channel::<Option<Vec<u8>>>();
        let (reply_tx, reply_rx) = mpsc::channel::<Flow>();
        let mut raised: Option<PyErr> = None;
        let (bus_ref, token_ref) = (&*bus, &token);
        let outcome = std::thread::scope(|scope| {
            let listener = std::thread::Builder::new()
                .name("bus-read".into())
                .spawn_scoped(scope, move || {
                    let options = ReadOptions {
                        deadline,
                        stop: Some(token_ref),
                    };
                    bus_ref.read_with(&options, |event| {
                        let sent = match event {
                            Event::Listening => None,
                            Event::Message(m) => Some(m.to_vec()),
                        };
                        if event_tx.send(sent).is_err() {
                            return Flow::Stop;
                        }
                        // No answer (the caller is leaving): stop.
                        reply_rx.recv().unwrap_or(Flow::Stop)
                    })
                })
                .map_err(|e| PyRuntimeError::new_err(format!("cannot start a thread: {e}")))?;
            let mut events = event_rx;
            loop {
                let (rx, next) = py.allow_threads(move || {
                    let next = events.recv_timeout(SLICE);
                    (events, next)
                });
                events = rx;
                match next {
                    Ok(message) => {
                        let arg = message.map(|m| PyBytes::new(py, &m));
                        let flow = answer(callback.call1((arg, user_data))).unwrap_or_else(|e| {
                            raised = Some(e);
                            Flow::Stop
                        });
                        let _ = reply_tx.send(flow);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = py.check_signals() {
                            raised = Some(e);
                            py.allow_threads(|| token_ref.stop());
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Unblocks a listener waiting for an answer that will not come.
            drop(reply_tx);
            py.allow_threads(move || listener.join())
                .map_err(|_| PyRuntimeError::new_err("the bus's read thread panicked"))
        })?;
        match (raised, outcome) {
            (Some(e), _) => Err(e),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(self.error(&e)),
        }
    }

    /// `poll` and `poll_timed` without `NOWAIT`: polls in slices without
    /// the GIL, looking for signals in between (a poll that times out stays
    /// on the bus: no message is missed between slices).
    fn poll_until(&self, py: Python<'_>, deadline: Option<Deadline>) -> PyResult<Py<PyBytes>> {
        let deadline = deadline.map(timeout::for_slices);
        loop {
            let slice = match deadline {
                None => SLICE,
                Some(d) => match d.remaining() {
                    Some(left) => left.min(SLICE),
                    None => return Err(self.error(&Error::TimedOut)),
                },
            };
            let got = py.allow_threads(|| {
                let mut poll = lock(&self.poll);
                let polling = poll.as_mut().ok_or(libc::EINVAL)?;
                polling.with_dependent_mut(|_, poller| {
                    match poller.poll_timed(Deadline::after(slice)) {
                        Ok(m) => Ok(Some(m.to_vec())),
                        Err(Error::TimedOut) => Ok(None),
                        Err(e) => Err(e.errno()),
                    }
                })
            });
            match got {
                Ok(Some(m)) => return Ok(PyBytes::new(py, &m).unbind()),
                Ok(None) => {
                    if let Err(e) = py.check_signals() {
                        self.poll_stop(py);
                        return Err(e);
                    }
                }
                Err(errno) => return Err(self.errno(errno)),
            }
        }
    }
}

/// How a write may wait.
#[derive(Clone, Copy)]
enum Write {
    Wait,
    NoWait,
    Until(Deadline),
}

#[pymethods]
impl PyBus {
    #[classattr]
    const RDONLY: i32 = RDONLY;
    #[classattr]
    const WRONLY: i32 = 0;
    #[classattr]
    const RDWR: i32 = 0;
    #[classattr]
    const EXCL: i32 = EXCL;
    #[classattr]
    const INTR: i32 = 4;
    #[classattr]
    const NOWAIT: i32 = NOWAIT;

    /// Any arguments: `bus.Bus.__init__` (Python) takes the pathname, so
    /// that subclasses may have constructors of their own, as with
    /// python-bus's pure Python class.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyBus {
        PyBus {
            pathname: Mutex::new(None),
            bus: Mutex::new(None),
            poll: Mutex::new(None),
        }
    }

    #[getter]
    fn get_pathname(&self) -> Option<OsString> {
        self.path().map(PathBuf::into_os_string)
    }

    #[setter]
    fn set_pathname(&self, pathname: Option<PathBuf>) {
        *lock(&self.pathname) = pathname;
    }

    #[pyo3(signature = (flags = 0))]
    fn create(&self, py: Python<'_>, flags: i32) -> PyResult<OsString> {
        let path = self.path();
        // (INTR only concerns writing the file, which signals do not
        // interrupt.)
        let made = py
            .allow_threads(|| bus_core::create(path.as_deref(), flags & EXCL != 0))
            .map_err(|e| self.error(&e))?;
        *lock(&self.pathname) = Some(made.clone());
        Ok(made.into_os_string())
    }

    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        let path = self.required_path()?;
        py.allow_threads(|| bus_core::unlink(&path))
            .map_err(|e| self.error(&e))
    }

    #[pyo3(signature = (flags = 0))]
    fn open(&self, py: Python<'_>, flags: i32) -> PyResult<()> {
        if flags < 0 {
            return Err(self.errno(libc::EINVAL));
        }
        self.close(py);
        let path = self.required_path()?;
        let access = match flags & RDONLY {
            0 => Access::Write,
            _ => Access::ReadOnly,
        };
        let bus = py
            .allow_threads(|| Bus::open(&path, access))
            .map_err(|e| self.error(&e))?;
        *lock(&self.bus) = Some(Arc::new(bus));
        Ok(())
    }

    /// Leaves the bus if polling, and closes it. Nothing to do if closed.
    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| {
            let polling = lock(&self.poll).take();
            drop(polling);
            let bus = lock(&self.bus).take();
            drop(bus);
        });
    }

    #[pyo3(signature = (message, flags = 0))]
    fn write(&self, py: Python<'_>, message: &Bound<'_, PyAny>, flags: i32) -> PyResult<()> {
        let how = match flags & NOWAIT {
            0 => Write::Wait,
            _ => Write::NoWait,
        };
        self.write_with(py, message, how)
    }

    #[pyo3(signature = (message, timeout, clock_id = None))]
    fn write_timed(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        timeout: f64,
        clock_id: Option<libc::clockid_t>,
    ) -> PyResult<()> {
        let deadline = self.deadline(timeout, clock_id)?;
        self.write_with(py, message, Write::Until(deadline))
    }

    #[pyo3(signature = (callback, user_data = None))]
    fn read(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        user_data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let none = py.None().into_bound(py);
        self.read_loop(py, callback, user_data.unwrap_or(&none), None)
    }

    #[pyo3(signature = (callback, timeout, clock_id = None, user_data = None))]
    fn read_timed(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        timeout: f64,
        clock_id: Option<libc::clockid_t>,
        user_data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let deadline = self.deadline(timeout, clock_id)?;
        let none = py.None().into_bound(py);
        self.read_loop(py, callback, user_data.unwrap_or(&none), Some(deadline))
    }

    /// Joins the bus (once: a second call keeps the poller).
    fn poll_start(&self, py: Python<'_>) -> PyResult<()> {
        let bus = self.open_bus()?;
        py.allow_threads(|| {
            let mut poll = lock(&self.poll);
            if poll.is_none() {
                *poll = Some(Polling::try_new(bus, |bus| bus.poller())?);
            }
            Ok(())
        })
        .map_err(|e: Error| self.error(&e))
    }

    /// Leaves the bus (nothing to do if not polling).
    fn poll_stop(&self, py: Python<'_>) {
        py.allow_threads(|| {
            let polling = lock(&self.poll).take();
            drop(polling);
        });
    }

    #[pyo3(signature = (flags = 0))]
    fn poll(&self, py: Python<'_>, flags: i32) -> PyResult<Py<PyBytes>> {
        if flags & NOWAIT == 0 {
            return self.poll_until(py, None);
        }
        let got = py.allow_threads(|| {
            let mut poll = lock(&self.poll);
            let polling = poll.as_mut().ok_or(libc::EINVAL)?;
            polling.with_dependent_mut(|_, poller| {
                poller
                    .poll_nowait()
                    .map(<[u8]>::to_vec)
                    .map_err(|e| e.errno())
            })
        });
        match got {
            Ok(m) => Ok(PyBytes::new(py, &m).unbind()),
            Err(errno) => Err(self.errno(errno)),
        }
    }

    #[pyo3(signature = (timeout, clock_id = None))]
    fn poll_timed(
        &self,
        py: Python<'_>,
        timeout: f64,
        clock_id: Option<libc::clockid_t>,
    ) -> PyResult<Py<PyBytes>> {
        let deadline = self.deadline(timeout, clock_id)?;
        self.poll_until(py, Some(deadline))
    }

    /// python-bus's `chown`: ids or names; `None` keeps the file's owner
    /// or group; `...` as the group is the owner's login group.
    #[pyo3(signature = (owner = None, group = None))]
    fn chown(
        &self,
        py: Python<'_>,
        owner: Option<&Bound<'_, PyAny>>,
        group: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let path = self.required_path()?;
        let stat = || std::fs::metadata(&path).map_err(PyErr::from);
        let uid: u32 = match owner {
            None => stat()?.uid(),
            Some(name) if name.is_instance_of::<PyString>() => {
                lookup(py, ("pwd", "getpwnam"), name, "pw_uid")?
            }
            Some(id) => id.extract()?,
        };
        let gid: u32 = match group {
            None => stat()?.gid(),
            Some(name) if name.is_instance_of::<PyString>() => {
                lookup(py, ("grp", "getgrnam"), name, "gr_gid")?
            }
            Some(e) if e.is(py.Ellipsis()) => lookup(
                py,
                ("pwd", "getpwuid"),
                uid.into_pyobject(py)?.as_any(),
                "pw_gid",
            )?,
            Some(id) => id.extract()?,
        };
        py.allow_threads(|| bus_core::chown(&path, Some(uid), Some(gid)))
            .map_err(|e| self.error(&e))
    }

    /// python-bus's `chmod`: any bit of a class grants it; with `mask`,
    /// the classes in `mask` are cleared from the current permissions
    /// before `mode` is added, the others kept.
    #[pyo3(signature = (mode, mask = None))]
    fn chmod(&self, py: Python<'_>, mode: u32, mask: Option<u32>) -> PyResult<()> {
        let path = self.required_path()?;
        let mut mode = mode;
        if let Some(mask) = mask {
            let current = std::fs::metadata(&path).map_err(PyErr::from)?.mode() & 0o777;
            mode |= whole_classes(current) & !whole_classes(mask);
        }
        py.allow_threads(|| bus_core::chmod(&path, mode))
            .map_err(|e| self.error(&e))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyAny>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let open = match lock(&self.bus).as_ref().map(|b| b.access()) {
            None => "closed",
            Some(Access::ReadOnly) => "open read-only",
            Some(Access::Write) => "open",
        };
        match self.path() {
            Some(p) => format!("<bus.Bus {:?} {open}>", p.display().to_string()),
            None => format!("<bus.Bus (no pathname) {open}>"),
        }
    }
}

/// `module.function(key).field`: a user or group database entry's id, as
/// python-bus looks them up (`KeyError` if there is none).
fn lookup(
    py: Python<'_>,
    (module, function): (&str, &str),
    key: &Bound<'_, PyAny>,
    field: &str,
) -> PyResult<u32> {
    py.import(module)?
        .call_method1(function, (key,))?
        .getattr(field)?
        .extract()
}

/// Each class (user, group, others) with any bit set gets all three.
fn whole_classes(mode: u32) -> u32 {
    [0o700, 0o070, 0o007]
        .into_iter()
        .filter(|class| mode & class != 0)
        .fold(0, |all, class| all | class)
}
