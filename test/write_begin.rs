//! `Bus::write_begin`: a broadcast started without blocking, made at once
//! when nothing has to wait, otherwise finished by `PendingWrite::finish`
//! (or, dropped, by a thread) exactly as `Bus::write_with` would have.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bus::{Access, Begun, Bus, Deadline, Error, Message, WriteOptions};
use common::{kill, listener, TempBus, Watchdog};
use nix::sys::signal::Signal;

fn message(text: &str) -> Message {
    Message::new(text).unwrap()
}

fn writer(bus: &TempBus) -> Arc<Bus> {
    Arc::new(Bus::open(&bus.path, Access::Write).unwrap())
}

/// A bus with one listener peer, stopped once counted (armed: it cannot
/// take a message until continued).
fn stopped_listener(name: &str) -> (TempBus, Watchdog, common::Listener) {
    let bus = TempBus::new(name);
    let dog = Watchdog::start(Duration::from_secs(60), &bus.path);
    let frozen = listener(&bus.path, "read", None, &dog);
    common::stop(frozen.child.id());
    (bus, dog, frozen)
}

/// Continues the listener, makes it leave, and returns what it got.
fn continue_and_collect(w: &Bus, frozen: common::Listener, dog: Watchdog) -> Vec<String> {
    kill(frozen.child.id(), Signal::SIGCONT);
    w.write(&message("end")).unwrap();
    let (lines, status) = frozen.collect();
    dog.finish();
    assert!(status.success());
    lines
}

/// S, W, X, Q, N as stat reads them.
fn values(bus: &TempBus) -> [u16; 5] {
    bus::stat(&bus.path).unwrap().values
}

/// With no listener nothing waits: every broadcast is made by write_begin
/// itself, and leaves the semaphores as they were.
#[test]
fn with_no_listener_it_is_done_at_once() {
    let bus = TempBus::new("begin-alone");
    let w = writer(&bus);
    for i in 0..100 {
        match w.write_begin(message(&format!("m {i}")), &WriteOptions::default()) {
            Begun::Done(Ok(())) => {}
            other => panic!("broadcast {i}: {other:?}"),
        }
    }
    assert_eq!(values(&bus), [0, 0, 1, 0, 0]);
}

/// With a listener, each broadcast is either made at once or finished
/// later; the listener gets every message once, in order, either way.
#[test]
fn every_message_once_in_order_whichever_path() {
    let pending = once_in_order("begin-listener", Duration::ZERO);
    // A listener in another process has to wake up to take its copy,
    // while write_begin looks at once: broadcasts were left to finish.
    assert!(pending > 0, "no broadcast was left to finish");
}

/// The same with a spinning budget: write_begin's waits spin first (as
/// far as the gate lets them), and nothing changes for the listener.
#[test]
fn every_message_once_in_order_when_spinning() {
    once_in_order("begin-spinning", Duration::from_micros(50));
}

/// Broadcasts 2000 messages with write_begin (finishing those left
/// pending) to a listener peer, checks that it got each once, in order,
/// and that what spinning did adds up; returns how many were left pending.
fn once_in_order(name: &str, spin: Duration) -> usize {
    let bus = TempBus::new(name);
    let dog = Watchdog::start(Duration::from_secs(60), &bus.path);
    let reader = listener(&bus.path, "read", None, &dog);
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    w.set_spin(spin);
    let w = Arc::new(w);
    let count = 2000;
    let mut pending = 0;
    for i in 0..count {
        match w.write_begin(message(&format!("m {i}")), &WriteOptions::default()) {
            Begun::Done(result) => result.unwrap(),
            Begun::Pending(p) => {
                pending += 1;
                p.finish(None).unwrap();
            }
        }
    }
    w.write(&message("end")).unwrap();
    let (lines, status) = reader.collect();
    dog.finish();
    assert!(status.success());
    let expected: Vec<String> = (0..count).map(|i| format!("m {i}")).collect();
    assert_eq!(lines, expected);
    assert_eq!(values(&bus), [0, 0, 1, 0, 0]);
    let stats = w.spin_stats();
    assert!(stats.gated + stats.spun <= stats.waits, "{stats:?}");
    assert!(stats.won <= stats.spun, "{stats:?}");
    if spin.is_zero() {
        assert_eq!((stats.gated, stats.spun), (0, 0), "{stats:?}");
    }
    pending
}

/// A stopped listener: the broadcast is published and left pending; its
/// finish times out after publishing, keeping the bus until the listener
/// has the message, as write_with does; a broadcast begun meanwhile is
/// left whole to finish, where no-wait fails at once.
#[test]
fn a_pending_broadcast_times_out_as_write_with_does() {
    let (bus, dog, frozen) = stopped_listener("begin-stopped");
    let w = writer(&bus);
    let timed = WriteOptions {
        deadline: Some(Deadline::after(Duration::from_millis(100))),
        ..WriteOptions::default()
    };
    let Begun::Pending(p) = w.write_begin(message("x 0"), &timed) else {
        panic!("a stopped listener cannot have taken the message");
    };
    let r = p.finish(None);
    assert!(matches!(r, Err(Error::TimedOutAfterPublish)), "{r:?}");
    let v = values(&bus);
    assert_eq!((v[2], v[4]), (0, 1), "X held and N raised: {v:?}");

    let nowait = WriteOptions {
        nowait: true,
        ..WriteOptions::default()
    };
    let Begun::Pending(p) = w.write_begin(message("x 1"), &nowait) else {
        panic!("the writers' lock is held");
    };
    let r = p.finish(None);
    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
    assert_eq!(continue_and_collect(&w, frozen, dog), ["x 0"]);
}

/// With a spinning budget (the largest), a stopped listener still leaves
/// the broadcast pending: write_begin spins briefly, never blocks.
#[test]
fn a_spinning_begin_never_blocks() {
    let (bus, dog, frozen) = stopped_listener("begin-spin-stopped");
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    w.set_spin(bus::MAX_SPIN);
    let w = Arc::new(w);
    let Begun::Pending(p) = w.write_begin(message("x 0"), &WriteOptions::default()) else {
        panic!("a stopped listener cannot have taken the message");
    };
    let v = values(&bus);
    assert_eq!((v[2], v[4]), (0, 1), "X held and N raised: {v:?}");
    kill(frozen.child.id(), Signal::SIGCONT);
    p.finish(None).unwrap();
    assert_eq!(continue_and_collect(&w, frozen, dog), ["x 0"]);
}

/// A published broadcast dropped unfinished is still delivered: a thread
/// finishes it, and the next broadcast waits for that.
#[test]
fn a_dropped_pending_broadcast_is_still_delivered() {
    let (bus, dog, frozen) = stopped_listener("begin-dropped");
    let w = writer(&bus);
    let Begun::Pending(p) = w.write_begin(message("x 0"), &WriteOptions::default()) else {
        panic!("a stopped listener cannot have taken the message");
    };
    drop(p);
    let v = values(&bus);
    assert_eq!((v[2], v[4]), (0, 1), "X held and N raised: {v:?}");
    kill(frozen.child.id(), Signal::SIGCONT);
    // Waits for the thread to have finished "x 0".
    w.write(&message("x 1")).unwrap();
    assert_eq!(continue_and_collect(&w, frozen, dog), ["x 0", "x 1"]);
}
