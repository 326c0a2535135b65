//! # bus
//!
//! A daemonless broadcast bus between processes on one machine, wire
//! compatible with the original C `libbus`: a bus is a small file naming a
//! System V semaphore array and a 2048-byte shared memory segment
//! (PROTOCOL.md).
//!
//! ```no_run
//! use bus::{Access, Bus, Event, Flow, Message};
//! # fn main() -> bus::Result<()> {
//! let path = bus::create(None, false)?;          // a random bus
//! let listener = Bus::open(&path, Access::ReadOnly)?;
//! std::thread::spawn(move || {
//!     listener.read(|event| match event {
//!         Event::Listening => Flow::Continue,
//!         Event::Message(m) => { println!("{}", String::from_utf8_lossy(m)); Flow::Stop }
//!     })
//! });
//! let writer = Bus::open(&path, Access::Write)?;
//! writer.write(&Message::from_this_process("hello")?)?;
//! bus::unlink(&path)?;
//! # Ok(()) }
//! ```
//!
//! Listeners are immune to the races of the original listener (re-arm,
//! barrier, join), whoever the writers are; writers shield original C
//! listeners from their re-arm race.
//!
//! With the `tokio` feature, the module `bus::tokio` has the async API: a
//! `Stream` of the messages of a bus and async broadcasts, each
//! cancellation-safe as documented per method.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod block;
mod bus;
pub mod busfile;
mod error;
mod listener;
mod message;
mod own;
mod protocol;
mod signals;
mod stop;
mod subscription;
mod sys;
mod time;
#[cfg(feature = "tokio")]
pub mod tokio;
mod writer;

pub use crate::admin::{chmod, chown, create, create_in, normalise_mode, stat, unlink, Status};
pub use crate::block::SpinStats;
pub use crate::bus::{
    default_spin, parse_spin, Access, Bus, DEFAULT_SPIN, MAX_SPIN, SPIN_VARIABLE,
};
pub use crate::error::{Error, Result};
pub use crate::listener::{Event, Flow, Poller, ReadOptions, Standing};
pub use crate::message::{Message, MAX_MESSAGE_LEN};
pub use crate::protocol::Semaphores;
pub use crate::signals::{
    install_stop_signal_handler, reap_children_automatically, TERMINATION_GRACE,
};
pub use crate::stop::StopToken;
pub use crate::subscription::{
    Counters, Direct, Item, Notice, Notify, Overflow, SubscribeOptions, Subscription,
};
pub use crate::sys::MEMORY_SIZE;
pub use crate::time::{Clock, Deadline};
pub use crate::writer::{Begun, PendingWrite, WriteOptions};
