//! The async subscription: the core's subscription, whose listener thread
//! wakes the task that polls the stream.

use std::future::poll_fn;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use futures_core::{FusedStream, Stream};

use super::lock;
use crate::error::{Error, Result};
use crate::subscription::{Counters, Item, Notice, Overflow, SubscribeOptions, Subscription};

/// How an [`AsyncSubscription`] is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// How many messages wait at most for the stream to be polled (at
    /// least 1).
    pub capacity: usize,
    /// What happens to a message when that many wait: hold the bus
    /// (writers wait) or drop it (the stream says how many it missed).
    pub overflow: Overflow,
}

impl Default for StreamOptions {
    /// 1024 messages, then hold the bus.
    fn default() -> StreamOptions {
        StreamOptions {
            capacity: 1024,
            overflow: Overflow::Hold,
        }
    }
}

/// What the listener thread tells the task: whom to wake, and what
/// happened. The waker is registered *before* the task looks at the queue
/// and taken by the listener *after* it queued: one of the two sees the
/// other, so no wake-up is lost.
#[derive(Debug, Default)]
struct Signal {
    waker: std::sync::Mutex<Option<Waker>>,
    /// The listener is counted on the bus.
    listening: AtomicBool,
    /// The listener failed and left the bus; nothing more is queued.
    failed: AtomicBool,
}

impl Signal {
    fn register(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake(&self) {
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The core's readiness callback, run on the listener thread: never
    /// blocks (one uncontended lock, one wake).
    fn heard(&self, notice: Notice<'_>) {
        match notice {
            Notice::Listening => self.listening.store(true, Ordering::SeqCst),
            Notice::Ready => {}
            Notice::Failed(_) => self.failed.store(true, Ordering::SeqCst),
        }
        self.wake();
    }
}

/// Subscribes to the bus at `path` and returns once the listener is counted
/// on it: every broadcast that starts after this returns reaches the
/// stream (queued, or counted as missed with [`Overflow::Drop`]).
///
/// The bus file is opened and the listener thread started on the calling
/// thread (file and System V look-ups that do not wait for anything, tens
/// of microseconds on a local file system); joining the bus, which waits
/// for a broadcast in flight to finish, is awaited.
///
/// # Cancel safety
///
/// Dropping the future before it completes stops the listener thread: it
/// leaves the bus if it had joined, before the drop returns, and nothing
/// else remains.
pub async fn subscribe(
    path: impl AsRef<Path>,
    options: StreamOptions,
) -> Result<AsyncSubscription> {
    let signal = Arc::new(Signal::default());
    let heard = signal.clone();
    let sub = Subscription::spawn(
        path,
        SubscribeOptions {
            capacity: options.capacity,
            overflow: options.overflow,
            from: None,
            ready_fd: false,
            notify: Some(Box::new(move |notice| heard.heard(notice))),
            spin: None,
        },
    )?;
    let stream = AsyncSubscription {
        sub,
        signal,
        done: false,
    };
    poll_fn(|cx| stream.poll_listening(cx)).await?;
    Ok(stream)
}

/// A subscription to a bus, as a [`Stream`] of `Result<Vec<u8>, Error>`:
/// each message as broadcast, in order.
///
/// The stream yields
/// - `Ok(bytes)` for each message;
/// - `Err(Error::Missed { count })` where `count` messages are missing
///   (only with [`Overflow::Drop`], when the queue was full), and goes on;
/// - the error that ended the listener (for example [`Error::Gone`]: the
///   bus was removed), once every message before it has been yielded, and
///   then ends.
///
/// It is polled from any executor: the listener thread wakes the task
/// through its [`Waker`]. Under tokio each item consumes a unit of the
/// task's cooperative budget, so an always-ready stream cannot starve the
/// other tasks of its worker.
///
/// Dropping it stops its listener thread, which leaves the bus before the
/// drop returns, even while it holds the bus: the stop interrupts the
/// thread's wait (a signal, see [`crate::StopToken`]) and joins it. The
/// dropping thread is blocked meanwhile: 90 µs (median) and 1.6 ms at
/// most over 1,000 drops under traffic on a 2-core machine
/// (`test/tokio.rs`). What it costs while alive is in the module
/// documentation.
#[derive(Debug)]
pub struct AsyncSubscription {
    sub: Subscription,
    signal: Arc<Signal>,
    /// Its last item (the listener's failure) has been yielded.
    done: bool,
}

impl AsyncSubscription {
    /// The next message, `None` once the stream has ended: the same items
    /// as the [`Stream`], without needing `StreamExt`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message leaves the queue only in the poll that
    /// returns it, so dropping the future (a losing `tokio::select!`
    /// branch) loses nothing; the next call gets that message.
    pub async fn recv(&mut self) -> Option<Result<Vec<u8>>> {
        poll_fn(|cx| self.poll_item(cx).map(|item| item.map(into_message))).await
    }

    /// The next item with the core's marks: [`Item::Message`] says whether
    /// a writer of this process broadcast it (`own`), and
    /// [`Item::Dropped`] stands where messages are missing. `None` once the
    /// stream has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`AsyncSubscription::recv`].
    pub async fn recv_item(&mut self) -> Option<Result<Item>> {
        poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Polls for the next item with the core's marks (what
    /// [`AsyncSubscription::recv_item`] awaits), registering the task for
    /// a wake-up when none waits.
    pub fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let budget = ready!(::tokio::task::coop::poll_proceed(cx));
        let polled = self.poll_queue(cx);
        if polled.is_ready() {
            budget.made_progress();
        }
        polled
    }

    /// What the subscription has done so far: messages taken from the bus,
    /// delivered, dropped, queued, time spent holding the bus.
    pub fn counters(&self) -> Counters {
        self.sub.counters()
    }

    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item>>> {
        if let Some(item) = self.sub.try_next() {
            return Poll::Ready(Some(Ok(item)));
        }
        // Register, then look again: an item queued after the first look
        // wakes the waker registered here.
        self.signal.register(cx.waker());
        if let Some(item) = self.sub.try_next() {
            return Poll::Ready(Some(Ok(item)));
        }
        if !self.signal.failed.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        // The listener failed: the queue is empty for good, and its reason
        // is recorded right after the notice (microseconds), so this does
        // not wait.
        self.done = true;
        match self.sub.next(None) {
            Ok(item) => {
                self.done = false;
                Poll::Ready(Some(Ok(item)))
            }
            Err(Error::Interrupted) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn poll_listening(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.signal.register(cx.waker());
        if self.signal.listening.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        if self.signal.failed.load(Ordering::SeqCst) {
            // Ended before it was counted: returns its reason at once.
            return Poll::Ready(self.sub.wait_listening());
        }
        Poll::Pending
    }
}

fn into_message(item: Result<Item>) -> Result<Vec<u8>> {
    match item? {
        Item::Message { bytes, .. } => Ok(bytes),
        Item::Dropped(count) => Err(Error::Missed { count }),
    }
}

impl Stream for AsyncSubscription {
    type Item = Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .poll_item(cx)
            .map(|item| item.map(into_message))
    }
}

impl FusedStream for AsyncSubscription {
    fn is_terminated(&self) -> bool {
        self.done
    }
}
