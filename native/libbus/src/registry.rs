//! The per-bus state behind each open `bus_t`.
//!
//! A C program owns its `bus_t` (often on its stack) and may copy it, so
//! nothing of ours can live inside it. Instead each successful `bus_open`
//! registers a [`Handle`] here under the address where the segment is
//! attached, which is distinct for every open bus and is what `bus_t.message`
//! holds. Lookups clone an `Arc`, so a blocking call never holds the
//! registry lock, and a `bus_close` racing with a call on another thread
//! frees the bus only when that call returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bus_core::{Bus, Poller};

use crate::ffi::StaticBus;

/// One open bus.
pub(crate) struct Handle {
    /// The poller between `bus_poll_start` and `bus_poll_stop`, and the
    /// NUL-terminated copy of the last message `bus_poll` returned.
    ///
    /// Declared before `bus`: fields drop in order, and the poller
    /// borrows the bus.
    pub poll: Mutex<Option<PollState>>,
    /// The bus itself.
    pub bus: StaticBus,
}

/// A listener without a callback, and the message it last returned.
pub(crate) struct PollState {
    /// Counted on the bus until dropped.
    pub poller: Poller<'static>,
    /// The last message with its NUL; `bus_poll` returns a pointer to it.
    pub message: Vec<u8>,
}

impl Handle {
    /// The bus.
    pub fn bus(&self) -> &'static Bus {
        self.bus.get()
    }

    /// The poll state, even if a thread panicked while holding it (a
    /// poller's state is only changed by the core, which keeps it
    /// consistent).
    pub fn poll(&self) -> MutexGuard<'_, Option<PollState>> {
        self.poll.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Leave the bus before closing it (field order already does this;
        // being explicit keeps it true if the fields are ever reordered).
        self.poll().take();
    }
}

static OPEN: Mutex<BTreeMap<usize, Arc<Handle>>> = Mutex::new(BTreeMap::new());

fn open_buses() -> MutexGuard<'static, BTreeMap<usize, Arc<Handle>>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers an opened bus and returns the address it is found under.
pub(crate) fn insert(bus: Bus) -> usize {
    let address = bus.memory_address() as usize;
    let handle = Arc::new(Handle {
        poll: Mutex::new(None),
        bus: StaticBus::new(bus),
    });
    // An address is reused only after its bus was closed (detached), so
    // there is no entry to replace.
    open_buses().insert(address, handle);
    address
}

/// The bus open under `address`, if any.
pub(crate) fn get(address: usize) -> Option<Arc<Handle>> {
    open_buses().get(&address).cloned()
}

/// Forgets the bus open under `address`; it is closed once no call is
/// using it any more.
pub(crate) fn remove(address: usize) -> Option<Arc<Handle>> {
    open_buses().remove(&address)
}
