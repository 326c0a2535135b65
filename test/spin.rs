//! Spinning's accounting and its gate: nothing spins (or is counted)
//! without a budget, every wait that finds its semaphore not ready is
//! counted, and nothing spins while the bus has more processes than the
//! machine has cores, whatever the budget.

mod common;

use std::time::Duration;

use bus::{Access, Bus, Message, SpinStats, SubscribeOptions, Subscription};
use common::TempBus;

/// Starts `n` subscriptions on `path`, each counted on the bus.
fn listeners(path: &std::path::Path, n: usize) -> Vec<Subscription> {
    (0..n)
        .map(|_| {
            let sub = Subscription::start(path, SubscribeOptions::default()).unwrap();
            sub.wait_listening().unwrap();
            sub
        })
        .collect()
}

/// Broadcasts `count` messages through a writer spinning up to `spin`,
/// takes them from every subscription, and returns the writer's stats.
fn broadcast(
    path: &std::path::Path,
    subs: &[Subscription],
    spin: Duration,
    count: u32,
) -> SpinStats {
    let w = Bus::open(path, Access::Write).unwrap();
    w.set_spin(spin);
    for i in 0..count {
        w.write(&Message::new(format!("0 {i}")).unwrap()).unwrap();
    }
    for sub in subs {
        for _ in 0..count {
            sub.next(Some(Duration::from_secs(10))).unwrap();
        }
    }
    w.spin_stats()
}

#[test]
fn without_a_budget_nothing_spins_or_is_counted() {
    let bus = TempBus::new("spin-off");
    let subs = listeners(&bus.path, 1);
    let stats = broadcast(&bus.path, &subs, Duration::ZERO, 100);
    assert_eq!(stats, SpinStats::default());
}

/// With as many listeners as cores the bus has a process more than the
/// machine has cores (its writer): the gate stays shut for every wait.
#[test]
fn no_spinning_while_the_bus_has_more_processes_than_cores() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bus = TempBus::new("spin-gate");
    let subs = listeners(&bus.path, cores);
    let stats = broadcast(&bus.path, &subs, Duration::from_micros(50), 200);
    // Each broadcast waits for its listeners' copies: they have to be
    // woken first.
    assert!(stats.waits > 0, "{stats:?}");
    assert_eq!(stats.gated, stats.waits, "{stats:?}");
    assert_eq!((stats.spun, stats.won), (0, 0), "{stats:?}");
}

/// With a budget and one listener, whether a wait spins depends on the
/// machine (a free core); the accounting holds either way.
#[test]
fn spins_are_accounted_for() {
    let bus = TempBus::new("spin-on");
    let subs = listeners(&bus.path, 1);
    let stats = broadcast(&bus.path, &subs, Duration::from_micros(50), 500);
    assert!(stats.waits > 0, "{stats:?}");
    assert!(stats.gated + stats.spun <= stats.waits, "{stats:?}");
    assert!(stats.won <= stats.spun, "{stats:?}");
    assert_eq!(stats.spun > 0, stats.spinning > Duration::ZERO, "{stats:?}");
}

/// A spinning budget changes nothing a caller sees: a timed broadcast whose
/// deadline has passed fails without being made, though the bus is free.
#[test]
fn a_passed_deadline_fails_whatever_the_budget() {
    let bus = TempBus::new("spin-deadline");
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    w.set_spin(Duration::from_micros(50));
    let past = bus::Deadline::at(bus::Clock::MONOTONIC, Duration::from_secs(1));
    let late = w.write_timed(&Message::new("0 late").unwrap(), past);
    assert!(matches!(late, Err(bus::Error::TimedOut)), "{late:?}");
    assert_eq!(bus::stat(&bus.path).unwrap().values, [0, 0, 1, 0, 0]);
}
