//! Async Rust (the `tokio` feature): a [`Stream`](futures_core::Stream) of
//! the messages broadcast on a bus, and async broadcasts.
//!
//! ```no_run
//! # async fn demo() -> bus::Result<()> {
//! use bus::tokio::{subscribe, AsyncWriter, StreamOptions};
//! use bus::{Message, Overflow};
//!
//! let path = bus::create(None, false)?;
//! // Returns once counted on the bus: every later broadcast arrives.
//! let mut messages = subscribe(&path, StreamOptions {
//!     capacity: 256,
//!     overflow: Overflow::Hold,    // or Drop: Err(Error::Missed { count })
//! }).await?;
//! let writer = AsyncWriter::open(&path).await?;
//! writer.write(&Message::new("0 hello")?).await?;
//! while let Some(message) = messages.recv().await {
//!     println!("{}", String::from_utf8_lossy(&message?));
//! #   break;
//! }
//! # bus::unlink(&path) }
//! ```
//!
//! # Where the waiting happens
//!
//! A System V semaphore cannot be polled, so a thread must block on it
//! somewhere. Here each subscription and each writer has *one dedicated OS
//! thread*, for its whole life; there is no thread per message, no busy
//! polling, and tokio's blocking pool is never used (its cap, 512 threads
//! by default, would wedge the 513th subscription).
//!
//! - An [`AsyncSubscription`] is the core's [`crate::Subscription`]: a
//!   listener thread (128 KiB of stack reserved) that takes each message,
//!   copies it into a bounded queue and acknowledges it, then wakes the
//!   task polling the stream from the core's readiness callback, after the
//!   acknowledgement, so the task is off the protocol's critical path. It
//!   costs that thread, the queue (up to `capacity` messages, each a
//!   `Vec<u8>` of its length, at most 2047 bytes), one attachment of the
//!   bus's 2048-byte segment, and no file descriptor.
//! - An [`AsyncWriter`] owns a writer thread (128 KiB of stack reserved)
//!   that broadcasts the requests of its handle (and of its clones) one
//!   after the other, in the order their futures were first polled, each
//!   answered through a oneshot channel. Open one per concurrent stream
//!   of broadcasts you need: broadcasts on one bus are serialised by the
//!   protocol anyway.
//!
//! # Back-pressure
//!
//! A stream that is not polled never wedges anything silently: what it
//! does to the bus is the [`Overflow`](crate::Overflow) the caller chose.
//! With `Hold`, once `capacity` messages wait, the listener holds the bus:
//! every writer on it waits (a timed broadcast times out) until the stream
//! is polled again or dropped. With `Drop`, writers never wait for it; the
//! stream yields `Err(Error::Missed { count })` where messages are missing,
//! with their exact number, and goes on.
//!
//! # Cancellation
//!
//! Every method documents its cancel safety in a `# Cancel safety` section
//! (tokio's convention). In short: [`AsyncSubscription::recv`] and the
//! stream lose nothing when dropped mid-wait; dropping an
//! [`AsyncSubscription`] leaves the bus before the drop returns; a
//! broadcast future dropped before its message was published publishes
//! nothing, one dropped after publishing returns at once and the round is
//! finished in the background, as [`crate::Bus::write_with`] does.

mod stream;
mod writer;

pub use self::stream::{subscribe, AsyncSubscription, StreamOptions};
pub use self::writer::AsyncWriter;

use std::sync::{Mutex, MutexGuard};

/// Locks, ignoring poisoning: what the mutexes here guard stays valid
/// whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
