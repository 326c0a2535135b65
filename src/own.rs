//! Which buses this process's writers hold right now, so that a listener of
//! this process can tell its own broadcasts from others' exactly, never by
//! content (bridges need this to avoid echoes).
//!
//! A writer is registered from the moment it has the writers' lock with no
//! listener re-registering (step 1 done) until it has seen every listener
//! acknowledge (step 5 done), just before it releases the lock. A listener
//! asks between taking a message and acknowledging it: the writer that
//! published that message is then waiting for this very acknowledgement,
//! so it still holds the lock, and no other writer can hold it. So the
//! message is ours exactly when a writer of this process is registered on
//! the bus at that moment.

use std::sync::Mutex;

/// Semaphore array ids (one entry per registered writer) of the buses held.
static HELD: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<i32>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writer's registration on the bus of one semaphore array; dropping it
/// ends it.
#[derive(Debug)]
pub(crate) struct Holding(i32);

impl Holding {
    /// Registers a writer of this process on the bus of `sem_id`.
    pub(crate) fn start(sem_id: i32) -> Holding {
        held().push(sem_id);
        Holding(sem_id)
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(i) = held.iter().position(|&id| id == self.0) {
            held.swap_remove(i);
        }
    }
}

/// Whether a writer of this process holds the bus of `sem_id` now.
pub(crate) fn held_by_this_process(sem_id: i32) -> bool {
    held().contains(&sem_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_nest_and_end() {
        assert!(!held_by_this_process(-7));
        let a = Holding::start(-7);
        let b = Holding::start(-7);
        drop(a);
        assert!(held_by_this_process(-7));
        drop(b);
        assert!(!held_by_this_process(-7));
    }
}
