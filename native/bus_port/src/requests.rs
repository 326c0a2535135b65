//! The requests (`Q` frames) and their replies (`R` frames). `i` (info)
//! is answered by the listener's pump, after the items queued when it
//! came; `f` (forget) at once on the main thread; every other
//! op runs on a thread of its own, since it may block (a broadcast for as
//! long as its timeout, anything else on a slow file system), and nothing
//! slow on one bus may delay another bus or the other requests. Replies
//! go out as each finishes, in any order.
//!
//! Broadcasts go through one open writer per bus, kept in a cache shared
//! by every thread as the NIF backend's writer cache does
//! (`apps/bus/src/bus_backend_nif.erl`): a cached writer that finds its
//! bus `gone` (removed, maybe created again) is dropped and the bus opened
//! once more for one retry; `x` (remove) and `f` (forget) drop it too.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bus::{Access, Bus, Deadline, Message, WriteOptions};

use crate::etf::Term;
use crate::frames::{Outbound, Output, Request};
use crate::listener::Listener;
use crate::reason::{self, Failure, ToTerm};

/// The open writers, one per bus pathname.
#[derive(Default)]
pub struct Writers(Mutex<HashMap<PathBuf, Arc<Bus>>>);

impl Writers {
    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<Bus>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached writer of `path`, or a new one (opened outside the lock:
    /// a slow file system must not hold up the other buses).
    fn get(&self, path: &Path) -> Result<Arc<Bus>, Failure> {
        if let Some(bus) = self.lock().get(path) {
            return Ok(bus.clone());
        }
        let opened = Arc::new(Bus::open(path, Access::Write)?);
        // Another thread may have opened it meanwhile: keep the first.
        Ok(self
            .lock()
            .entry(path.to_path_buf())
            .or_insert(opened)
            .clone())
    }

    /// Drops the cached writer of `path` if it is still `bus`.
    fn drop_stale(&self, path: &Path, bus: &Arc<Bus>) {
        let mut writers = self.lock();
        if writers
            .get(path)
            .is_some_and(|cached| Arc::ptr_eq(cached, bus))
        {
            writers.remove(path);
        }
    }

    /// Drops the cached writer of `path`, if any (broadcasts under way on
    /// it finish first: each holds its own reference).
    pub fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    /// Before exiting: waits, up to `limit` in all, for the broadcasts
    /// that returned early (`timeout_after_publish`) to be finished by the
    /// core, so that no listener is cut short mid-message by the kernel's
    /// undo of this process's semaphore operations.
    pub fn finish_pending(&self, limit: Duration) {
        let started = Instant::now();
        let writers: Vec<Arc<Bus>> = self.lock().values().cloned().collect();
        for bus in writers {
            bus.finish_pending(limit.saturating_sub(started.elapsed()));
        }
    }

    /// Broadcasts `message` on `path`; `timeout` bounds every wait, the
    /// retry included.
    fn broadcast(
        &self,
        path: &Path,
        message: &[u8],
        timeout: Option<Duration>,
        nowait: bool,
    ) -> Result<(), Failure> {
        // Refused before the bus is touched.
        let message = Message::new(message)?;
        let options = WriteOptions {
            nowait,
            deadline: timeout.map(Deadline::after),
            stop: None,
        };
        let mut retries = 1;
        loop {
            let bus = self.get(path)?;
            match bus.write_with(&message, &options) {
                Err(bus::Error::Gone { .. }) if retries > 0 => {
                    // The bus may have been removed and created again.
                    self.drop_stale(path, &bus);
                    retries -= 1;
                }
                Err(bus::Error::Gone { .. }) => {
                    self.drop_stale(path, &bus);
                    return Err(Failure::Gone);
                }
                result => return result.map_err(Failure::from),
            }
        }
    }
}

/// Answers request `id`: at once for `i` and `f`, else from a thread of
/// its own.
pub fn handle(
    id: u32,
    request: Request,
    listener: Option<&Listener>,
    writers: &Arc<Writers>,
    output: &Arc<Output>,
) {
    let reply = |term: Term| {
        let _ = output.send(&Outbound::Reply(id, &term));
    };
    match request {
        Request::Info => match listener {
            // After the items queued now.
            Some(listener) => listener.info(id),
            None => reply(reason::value(Err(Failure::Closed))),
        },
        Request::Forget { path } => {
            writers.forget(&path);
            reply(Term::Atom("ok"));
        }
        slow => {
            let (writers, output) = (writers.clone(), output.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("bus-port-request-{id}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    let term = run(slow, &writers);
                    let _ = output.send(&Outbound::Reply(id, &term));
                });
            if let Err(e) = spawned {
                reply(Failure::os("spawn a request thread", &e).error());
            }
        }
    }
}

/// Runs a request that may block and returns its reply.
fn run(request: Request, writers: &Writers) -> Term {
    match request {
        Request::Broadcast {
            timeout,
            nowait,
            path,
            message,
        } => reason::done(writers.broadcast(&path, &message, timeout, nowait)),
        Request::Create { exclusive, path } => reason::value(
            bus::create(Some(&path), exclusive)
                .map(path_term)
                .map_err(Failure::from),
        ),
        Request::CreateRandom { dir } => {
            reason::value(bus::create_in(&dir).map(path_term).map_err(Failure::from))
        }
        Request::Remove { path } => {
            let result = bus::unlink(&path);
            writers.forget(&path);
            reason::done(result.map_err(Failure::from))
        }
        Request::Chmod { mode, path } => {
            reason::done(bus::chmod(&path, mode).map_err(Failure::from))
        }
        Request::Chown { uid, gid, path } => {
            reason::done(bus::chown(&path, uid, gid).map_err(Failure::from))
        }
        Request::Stat { path } => reason::value(stat(&path)),
        // Answered at once by `handle`.
        Request::Info => reason::value(Err(Failure::Closed)),
        Request::Forget { path } => {
            writers.forget(&path);
            Term::Atom("ok")
        }
    }
}

fn path_term(path: PathBuf) -> Term {
    Term::Binary(path.as_os_str().as_bytes().to_vec())
}

/// The NIF's `stat/1` map (native/bus_nif/src/admin.rs, `Stat`).
fn stat(path: &Path) -> Result<Term, Failure> {
    let s = bus::stat(path)?;
    let v = s.semaphores();
    Ok(Term::map([
        (
            "keys",
            Term::Tuple(vec![Term::int(s.keys.sem), Term::int(s.keys.shm)]),
        ),
        ("file_mode", Term::int(s.file_mode)),
        ("sem_mode", Term::int(s.sem_mode)),
        ("shm_mode", Term::int(s.shm_mode)),
        ("uid", Term::int(s.uid)),
        ("gid", Term::int(s.gid)),
        (
            "values",
            Term::Tuple(
                [v.s, v.w, v.x, v.q, v.n]
                    .into_iter()
                    .map(Term::int)
                    .collect(),
            ),
        ),
        ("listeners", Term::int(s.listeners())),
        ("attached", Term::int(s.attached)),
    ]))
}
