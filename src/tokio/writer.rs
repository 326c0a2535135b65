//! Async broadcasts: a writer thread per handle runs the blocking
//! broadcast, each request carrying the stop token its future stops when
//! it is dropped.

use std::path::Path;
use std::sync::mpsc;

use ::tokio::sync::oneshot;

use crate::bus::{Access, Bus};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::stop::StopToken;
use crate::time::Deadline;
use crate::writer::WriteOptions;

/// How a request may wait for the bus.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// As long as it takes.
    Untimed,
    /// Not for another writer (`WouldBlock`).
    No,
    /// Until the deadline.
    Until(Deadline),
}

/// One broadcast for the writer thread.
struct Request {
    message: Message,
    wait: Wait,
    /// Stopped when the future is dropped before its answer.
    stop: StopToken,
    answer: oneshot::Sender<Result<()>>,
}

/// Stops a request's token when the future that made it is dropped before
/// its answer came.
struct StopOnDrop(Option<StopToken>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            // Returns once the writer thread is out of any wait with it.
            token.stop();
        }
    }
}

/// Async broadcasts on one bus: a handle to a writer thread of its own
/// that makes the (blocking) broadcasts of [`Bus::write_with`] one after
/// the other, in the order their futures were first polled.
///
/// Cloning the handle shares the thread. The thread ends once every clone
/// is dropped and the broadcast it is making (if any) returns; a dropped
/// handle never blocks. What it costs is in the module documentation.
#[derive(Clone, Debug)]
pub struct AsyncWriter {
    requests: mpsc::Sender<Request>,
}

impl AsyncWriter {
    /// Opens the bus at `path` for broadcasting, on the writer thread it
    /// starts.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves nothing behind: the
    /// thread closes the bus and ends as soon as its opening returns.
    pub async fn open(path: impl AsRef<Path>) -> Result<AsyncWriter> {
        let path = path.as_ref().to_path_buf();
        let (requests, received) = mpsc::channel();
        let (opened, is_open) = oneshot::channel();
        spawn(move || match Bus::open(&path, Access::Write) {
            Ok(bus) => {
                let _ = opened.send(Ok(()));
                serve(&bus, received);
            }
            Err(e) => {
                let _ = opened.send(Err(e));
            }
        })?;
        is_open.await.map_err(|_| thread_gone())??;
        Ok(AsyncWriter { requests })
    }

    /// Broadcasts through `bus` (opened with [`Access::Write`]) on a writer
    /// thread it starts; starting the thread is all this does.
    pub fn new(bus: Bus) -> Result<AsyncWriter> {
        let (requests, received) = mpsc::channel();
        spawn(move || serve(&bus, received))?;
        Ok(AsyncWriter { requests })
    }

    /// Broadcasts `message` to every listener and returns once each has
    /// it (queued, for a subscription), as [`Bus::write`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes:
    /// - before its message was published (still queued behind another
    ///   request of this handle, or waiting for the bus), publishes
    ///   nothing: no listener ever sees the message;
    /// - after it was published, returns at once; a thread of this process
    ///   finishes the round in the background, keeping the bus until every
    ///   listener has taken the message, as [`Bus::write_with`] does when
    ///   it is stopped.
    ///
    /// Either way the drop returns within microseconds (it interrupts the
    /// writer thread's wait) and the handle goes on with its next request.
    pub async fn write(&self, message: &Message) -> Result<()> {
        self.request(message, Wait::Untimed).await
    }

    /// Like [`AsyncWriter::write`], but fails with [`Error::WouldBlock`] if
    /// another writer holds the bus when the writer thread comes to this
    /// request (`BUS_NOWAIT`). It still waits for the listeners to take the
    /// message, which a stopped listener can make long.
    ///
    /// # Cancel safety
    ///
    /// As [`AsyncWriter::write`].
    pub async fn write_nowait(&self, message: &Message) -> Result<()> {
        self.request(message, Wait::No).await
    }

    /// Like [`AsyncWriter::write`] with a deadline (a [`Deadline`], or a
    /// [`std::time::Duration`] from the first poll) covering every wait,
    /// time queued behind this handle's other requests included:
    /// [`Error::TimedOut`] if it passes before the message was published
    /// (nothing was), [`Error::TimedOutAfterPublish`] after (the round is
    /// finished in the background).
    ///
    /// # Cancel safety
    ///
    /// As [`AsyncWriter::write`].
    pub async fn write_timed(
        &self,
        message: &Message,
        deadline: impl Into<Deadline>,
    ) -> Result<()> {
        self.request(message, Wait::Until(deadline.into())).await
    }

    async fn request(&self, message: &Message, wait: Wait) -> Result<()> {
        let stop = StopToken::new();
        let (answer, answered) = oneshot::channel();
        let request = Request {
            message: message.clone(),
            wait,
            stop: stop.clone(),
            answer,
        };
        self.requests.send(request).map_err(|_| thread_gone())?;
        let guard = StopOnDrop(Some(stop));
        let result = answered.await.unwrap_or_else(|_| Err(thread_gone()));
        guard.disarm();
        result
    }
}

fn spawn(serve: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name("bus-async-writer".into())
        .stack_size(128 * 1024)
        .spawn(serve)
        .map(drop)
        .map_err(|e| Error::os("spawn the writer thread", e))
}

fn thread_gone() -> Error {
    Error::os(
        "the bus's writer thread",
        std::io::Error::other("ended before answering"),
    )
}

/// The writer thread: each request in turn, until every handle is gone.
fn serve(bus: &Bus, requests: mpsc::Receiver<Request>) {
    for request in requests {
        // Its future was dropped while it was queued: it publishes nothing.
        if request.stop.is_stopped() || request.answer.is_closed() {
            continue;
        }
        let (nowait, deadline) = match request.wait {
            Wait::Untimed => (false, None),
            Wait::No => (true, None),
            Wait::Until(deadline) => (false, Some(deadline)),
        };
        let options = WriteOptions {
            nowait,
            deadline,
            stop: Some(&request.stop),
        };
        let result = bus.write_with(&request.message, &options);
        let _ = request.answer.send(result);
    }
}
