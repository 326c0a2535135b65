//! Back-to-back broadcasts to many listeners, read and poll mixed, with
//! listeners joining and leaving throughout: every listener receives every
//! message sent while it was counted, in order, exactly once, and the bus
//! never hangs (a watchdog fails the test instead).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bus::{Access, Bus, Message};
use common::{check_consecutive, listener, writer, TempBus, Watchdog};

const MESSAGES: u64 = 100_000;

/// Runs `writers` writers of `per_writer` messages each against `stable`
/// listeners (alternately read and poll) that stay for the whole run, while
/// a churn thread keeps starting listeners that leave after a few messages.
fn stress(name: &str, stable: usize, writers: usize, per_writer: u64) {
    let bus = TempBus::new(name);
    let dog = Watchdog::start(Duration::from_secs(240), &bus.path);
    let listeners: Vec<_> = (0..stable)
        .map(|i| listener(&bus.path, ["read", "poll"][i % 2], None, &dog))
        .collect();

    let writing = Arc::new(AtomicBool::new(true));
    let churned = Arc::new(AtomicU64::new(0));
    let churn = {
        let (path, dog, writing, churned) = (
            bus.path.clone(),
            dog.clone(),
            writing.clone(),
            churned.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0u64;
            while writing.load(Ordering::SeqCst) && !dog.fired() {
                let leave_after = 1 + common::rand_u64() % 300;
                let l = listener(
                    &path,
                    ["poll", "read"][i as usize % 2],
                    Some(leave_after),
                    &dog,
                );
                let (lines, status) = l.collect();
                assert!(status.success(), "churn listener failed: {status}");
                assert!(lines.len() as u64 <= leave_after);
                check_consecutive(&lines);
                churned.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };

    let mut children: Vec<_> = (0..writers)
        .map(|w| writer(&bus.path, per_writer, &format!("w{w}"), &dog))
        .collect();
    for child in &mut children {
        assert!(child.wait().unwrap().success(), "writer failed");
    }
    writing.store(false, Ordering::SeqCst);

    // `end` makes every listener leave; repeated until the churn thread is
    // out, since its last listener may join after the first `end`.
    let end = Message::new("end").unwrap();
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    w.write(&end).unwrap();
    while !churn.is_finished() {
        w.write_timed(&end, Duration::from_millis(100)).ok();
        std::thread::sleep(Duration::from_millis(5));
    }
    churn.join().expect("churn thread");

    for l in listeners {
        let (lines, status) = l.collect();
        assert!(status.success(), "listener failed: {status}");
        assert_eq!(
            lines.len() as u64,
            writers as u64 * per_writer,
            "message count"
        );
        let runs = check_consecutive(&lines);
        for w in 0..writers {
            assert_eq!(runs[&format!("w{w}")], (0, per_writer - 1), "writer w{w}");
        }
    }
    dog.finish();
    assert!(
        churned.load(Ordering::SeqCst) > 0,
        "no listener joined and left"
    );
    eprintln!(
        "{name}: {} churn listeners joined and left",
        churned.load(Ordering::SeqCst)
    );
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0, "S back to 0");
}

/// One listener, one writer, 100,000 messages, with churn.
#[test]
fn one_listener() {
    stress("l1", 1, 1, MESSAGES);
}

/// Two listeners (read and poll), 100,000 messages, with churn.
#[test]
fn two_listeners() {
    stress("l2", 2, 1, MESSAGES);
}

/// Four listeners, 100,000 messages, with churn.
#[test]
fn four_listeners() {
    stress("l4", 4, 1, MESSAGES);
}

/// Sixteen listeners, 100,000 messages, with churn.
#[test]
fn sixteen_listeners() {
    stress("l16", 16, 1, MESSAGES);
}

/// Two writers at once (50,000 each) to four listeners, with churn: each
/// writer's messages arrive complete and in order.
#[test]
fn two_writers() {
    stress("w2", 4, 2, MESSAGES / 2);
}
