//! The subscription primitive: a listener thread feeding a bounded queue.
//! Both overflow policies with exact counts, a prompt stop under load, the
//! own-message mark with our writer and a foreign one interleaved, the
//! handover, and the two ways a consumer learns that items wait.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use bus::{
    Access, Bus, Error, Item, Message, Notice, Overflow, Standing, SubscribeOptions, Subscription,
};
use common::{writer, TempBus, Watchdog};

fn options(capacity: usize, overflow: Overflow) -> SubscribeOptions {
    SubscribeOptions {
        capacity,
        overflow,
        ..SubscribeOptions::default()
    }
}

fn text(item: &Item) -> String {
    match item {
        Item::Message { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
        Item::Dropped(n) => format!("dropped {n}"),
    }
}

fn send(bus: &Bus, text: &str) {
    bus.write(&Message::new(text).unwrap()).unwrap();
}

/// With `Hold`, a full queue holds the bus: the next broadcast cannot even
/// start (a timed one times out with nothing published), and once the
/// consumer drains, every message arrives, in order, exactly once.
#[test]
fn hold_keeps_writers_waiting_and_loses_nothing() {
    let bus = TempBus::new("sub-hold");
    let sub = Subscription::start(&bus.path, options(4, Overflow::Hold)).unwrap();
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    for i in 0..4 {
        send(&w, &format!("0 {i}"));
    }
    let late = w.write_timed(&Message::new("0 late").unwrap(), Duration::from_millis(200));
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    let c = sub.counters();
    assert_eq!((c.taken, c.queued, c.dropped), (4, 4, 0));
    // The hold under way is counted already.
    assert!(c.held > Duration::ZERO);

    let writing = thread::spawn(move || {
        for i in 4..2000 {
            send(&w, &format!("0 {i}"));
        }
    });
    let got: Vec<String> = (0..2000)
        .map(|_| text(&sub.next(Some(Duration::from_secs(10))).unwrap()))
        .collect();
    writing.join().unwrap();
    let want: Vec<String> = (0..2000).map(|i| format!("0 {i}")).collect();
    assert_eq!(got, want);
    let c = sub.counters();
    assert_eq!(
        (c.taken, c.delivered, c.dropped, c.queued),
        (2000, 2000, 0, 0)
    );
    assert!(c.held > Duration::ZERO);
    assert_eq!(sub.try_next(), None);
}

/// With `Drop`, writers never wait for the consumer; what the queue cannot
/// hold is counted exactly, and a notice stands exactly where messages
/// are missing, consecutive drops merged.
#[test]
fn drop_counts_exactly_and_marks_the_gap() {
    let bus = TempBus::new("sub-drop");
    let sub = Subscription::start(&bus.path, options(3, Overflow::Drop)).unwrap();
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    for i in 0..5 {
        send(&w, &format!("0 {i}"));
    }
    assert_eq!(text(&sub.try_next().unwrap()), "0 0");
    for i in 5..100 {
        send(&w, &format!("0 {i}"));
    }
    let c = sub.counters();
    assert_eq!((c.taken, c.dropped, c.queued), (100, 96, 3));
    let items: Vec<String> = sub.drain(10).iter().map(text).collect();
    assert_eq!(items, ["0 1", "0 2", "dropped 2", "0 5", "dropped 94"]);
    send(&w, "0 100");
    let items: Vec<String> = sub.drain(10).iter().map(text).collect();
    assert_eq!(items, ["0 100"]);
    let c = sub.counters();
    assert_eq!(c.taken, c.delivered + c.dropped);
}

/// A stop from another thread ends the listener at once, whether it is
/// holding the bus or waiting for a message, under back-to-back
/// broadcasts; the bus is left as it was and the writer carries on.
#[test]
fn stop_is_prompt_under_load() {
    let bus = TempBus::new("sub-stop");
    let dog = Watchdog::start(Duration::from_secs(60), &bus.path);
    let w = Arc::new(Bus::open(&bus.path, Access::Write).unwrap());
    let running = Arc::new(AtomicBool::new(true));
    let writing = {
        let (w, running) = (w.clone(), running.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                let m = Message::new(format!("0 {n}")).unwrap();
                match w.write_timed(&m, Duration::from_secs(5)) {
                    Ok(()) => n += 1,
                    Err(e) => panic!("writer: {e}"),
                }
            }
            n
        })
    };
    for round in 0..200 {
        // Capacity 1, never drained: it holds the bus after one message.
        let sub = Subscription::start(&bus.path, options(1, Overflow::Hold)).unwrap();
        if round % 2 == 0 {
            let _ = sub.next(Some(Duration::from_secs(5))).unwrap();
        }
        let (tx, rx) = mpsc::channel();
        let stopper = thread::spawn(move || {
            sub.stop();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("round {round}: stop did not return"));
        stopper.join().unwrap();
    }
    running.store(false, Ordering::SeqCst);
    let sent = writing.join().unwrap();
    assert!(sent > 0);
    let s = bus::stat(&bus.path).unwrap().semaphores();
    assert_eq!((s.s, s.w, s.x, s.q, s.n), (0, 0, 1, 0, 0));
    dog.finish();
}

/// Messages this process broadcast are marked as its own, whatever other
/// writers do meanwhile; a foreign process's never are, even with the same
/// text.
#[test]
fn own_broadcasts_are_marked_exactly() {
    let bus = TempBus::new("sub-own");
    let dog = Watchdog::start(Duration::from_secs(120), &bus.path);
    let sub = Subscription::start(&bus.path, options(1 << 16, Overflow::Hold)).unwrap();
    // Counted before the peer starts: it misses none of the peer's.
    let foreign = writer(&bus.path, 3000, "T", &dog);
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    for i in 0..3000 {
        send(&w, &format!("T {i}"));
    }
    let status = { foreign }.wait().unwrap();
    assert!(status.success());
    let (mut own, mut others) = (Vec::new(), Vec::new());
    while let Some(item) = sub.try_next() {
        match item {
            Item::Message { bytes, own: true } => own.push(String::from_utf8(bytes).unwrap()),
            Item::Message { bytes, own: false } => others.push(String::from_utf8(bytes).unwrap()),
            Item::Dropped(n) => panic!("dropped {n}"),
        }
    }
    let want: Vec<String> = (0..3000).map(|i| format!("T {i}")).collect();
    assert_eq!(own, want, "our broadcasts, in order, all marked");
    assert_eq!(others, want, "the peer's, in order, none marked");
    dog.finish();
}

/// A subscription detached under traffic and taken over by a new one: the
/// two together see every message once, in order.
#[test]
fn handover_loses_and_repeats_nothing() {
    let bus = TempBus::new("sub-handover");
    let dog = Watchdog::start(Duration::from_secs(120), &bus.path);
    let mut sub = Subscription::start(&bus.path, options(64, Overflow::Hold)).unwrap();
    let peer = writer(&bus.path, 20_000, "H", &dog);
    let mut got = Vec::new();
    let mut handovers = 0;
    while got.len() < 20_000 {
        match sub.next(Some(Duration::from_secs(10))) {
            Ok(item) => got.push(text(&item)),
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
        if got.len() % 97 == 0 {
            let standing = sub.detach().expect("on the bus");
            let rest = sub.drain(usize::MAX);
            got.extend(rest.iter().map(text));
            let from = SubscribeOptions {
                from: Some(standing),
                ..options(64, Overflow::Hold)
            };
            sub = Subscription::start(&bus.path, from).unwrap();
            handovers += 1;
        }
    }
    assert!({ peer }.wait().unwrap().success());
    let want: Vec<String> = (0..20_000).map(|i| format!("H {i}")).collect();
    assert_eq!(got, want);
    assert!(handovers > 100);
    drop(sub);
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0);
    dog.finish();
}

/// The handover another process can take: the old listener stops after
/// its next message, acknowledged and holding the writers back; a new
/// listener joins afresh (as a new port program would), then the old one
/// leaves. Under a writer broadcasting back to back, nothing is lost or
/// repeated across 40 such switches.
#[test]
fn handover_to_a_fresh_join_loses_and_repeats_nothing() {
    const N: usize = 5_000;
    let bus = TempBus::new("sub-rejoin");
    let dog = Watchdog::start(Duration::from_secs(120), &bus.path);
    let mut sub = Arc::new(Subscription::start(&bus.path, options(64, Overflow::Hold)).unwrap());
    let peer = writer(&bus.path, N as u64, "R", &dog);
    let mut got = Vec::new();
    let mut handovers = 0;
    while got.len() < N {
        match sub.next(Some(Duration::from_secs(10))) {
            Ok(item) => got.push(text(&item)),
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
        // Only while a message is still to come: the switch waits for one.
        if got.len() % 113 == 0 && sub.counters().taken < N as u64 {
            let old = sub.clone();
            let detaching = thread::spawn(move || old.detach_after_next_message());
            // Items keep coming until the old listener has stopped and its
            // queue is empty.
            loop {
                match sub.next(Some(Duration::from_secs(10))) {
                    Ok(item) => got.push(text(&item)),
                    Err(Error::Interrupted) => break,
                    Err(e) => panic!("after {} messages: {e}", got.len()),
                }
            }
            assert_eq!(detaching.join().unwrap(), Some(Standing::Acked));
            // The old one holds W: nothing can be broadcast until it leaves.
            let new = Subscription::start(&bus.path, options(64, Overflow::Hold)).unwrap();
            assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 1);
            sub.leave_detached();
            sub = Arc::new(new);
            handovers += 1;
        }
    }
    assert!({ peer }.wait().unwrap().success());
    let want: Vec<String> = (0..N).map(|i| format!("R {i}")).collect();
    assert_eq!(got, want);
    assert!(handovers >= 40, "{handovers} handovers");
    drop(sub);
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0);
    dog.finish();
}

/// A listener holding the bus (its queue full) has taken its next message
/// already: a detach after the next message ends the hold at once, the
/// detached standing holding the writers back instead; a new listener then
/// gets what follows.
#[test]
fn detach_after_next_message_ends_a_hold() {
    let bus = TempBus::new("sub-detach-hold");
    let sub = Subscription::start(&bus.path, options(2, Overflow::Hold)).unwrap();
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    send(&w, "0 a");
    send(&w, "0 b");
    assert_eq!(sub.detach_after_next_message(), Some(Standing::Acked));
    let old: Vec<String> = sub.drain(usize::MAX).iter().map(text).collect();
    assert_eq!(old, ["0 a", "0 b"]);
    let new = Subscription::start(&bus.path, options(2, Overflow::Hold)).unwrap();
    sub.leave_detached();
    send(&w, "0 c");
    assert_eq!(
        text(&new.next(Some(Duration::from_secs(10))).unwrap()),
        "0 c"
    );
    drop(new);
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0);
}

/// A stop while a detach after the next message waits leaves the bus.
#[test]
fn stop_while_waiting_to_detach_leaves() {
    let bus = TempBus::new("sub-detach-stop");
    let sub = Arc::new(Subscription::start(&bus.path, options(8, Overflow::Hold)).unwrap());
    let old = sub.clone();
    // Nothing is broadcast: the detach waits until the stop.
    let detaching = thread::spawn(move || old.detach_after_next_message());
    sub.stop();
    assert_eq!(detaching.join().unwrap(), None);
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0);
}

/// The callback hears Listening first, then Ready each time the queue
/// stops being empty; the eventfd is readable exactly while items wait.
#[test]
fn consumers_learn_that_items_wait() {
    let bus = TempBus::new("sub-ready");
    let (tx, heard) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sub = Subscription::start(
        &bus.path,
        SubscribeOptions {
            ready_fd: true,
            notify: Some(Box::new(move |notice| {
                let _ = tx.lock().unwrap().send(match notice {
                    Notice::Listening => "listening".to_string(),
                    Notice::Ready => "ready".to_string(),
                    Notice::Failed(e) => format!("failed: {e}"),
                });
            })),
            ..SubscribeOptions::default()
        },
    )
    .unwrap();
    let next_notice = || heard.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(next_notice(), "listening");
    let fd = sub.ready_fd().unwrap();
    assert!(!readable(fd));
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    // A broadcast returns once its message is queued: no waiting needed.
    send(&w, "0 a");
    send(&w, "0 b");
    assert!(readable(fd));
    assert_eq!(next_notice(), "ready");
    assert_eq!(sub.drain(10).len(), 2);
    assert!(!readable(fd));
    send(&w, "0 c");
    assert!(readable(fd));
    assert_eq!(sub.try_next().map(|i| text(&i)).as_deref(), Some("0 c"));
    assert!(!readable(fd));
    assert_eq!(next_notice(), "ready");

    // Removing the bus ends the subscription with the reason.
    bus::unlink(&bus.path).unwrap();
    let end = sub.next(Some(Duration::from_secs(5)));
    assert!(matches!(end, Err(Error::Gone { .. })), "{end:?}");
    assert!(next_notice().starts_with("failed: "));
    assert!(heard.try_recv().is_err(), "nothing after the failure");
}

/// A direct consumer takes each item on the listener thread, in order,
/// nothing queued and no Ready notice, until it declines the next one or
/// is closed; it cannot be opened while items wait (it would overtake
/// them).
#[test]
fn a_direct_consumer_takes_items_in_order_until_closed() {
    let bus = TempBus::new("sub-direct");
    let (tx, heard) = mpsc::channel();
    let tx = Mutex::new(tx);
    let sub = Subscription::start(
        &bus.path,
        SubscribeOptions {
            notify: Some(Box::new(move |notice| {
                if let Notice::Ready = notice {
                    let _ = tx.lock().unwrap().send(());
                }
            })),
            ..SubscribeOptions::default()
        },
    )
    .unwrap();
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    let (to, taken) = mpsc::channel();
    let next_taken = || taken.recv_timeout(Duration::from_secs(5)).unwrap();

    send(&w, "0 a");
    assert!(sub.open_direct(direct_to(to.clone(), 3)).is_err());
    heard.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(sub.drain(10).len(), 1);

    assert!(sub.open_direct(direct_to(to.clone(), 3)).is_ok());
    for m in ["0 b", "0 c", "0 d"] {
        send(&w, m);
    }
    let got: Vec<String> = (0..3).map(|_| next_taken()).collect();
    assert_eq!(got, ["0 b", "0 c", "0 d"]);
    // It declined the next: queued, and the consumer told.
    send(&w, "0 e");
    heard.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(sub.try_next().map(|i| text(&i)).as_deref(), Some("0 e"));
    assert!(heard.try_recv().is_err(), "no Ready while it took them");

    assert!(sub.open_direct(direct_to(to.clone(), 100)).is_ok());
    assert!(
        sub.open_direct(direct_to(to.clone(), 1)).is_err(),
        "one open"
    );
    send(&w, "0 f");
    assert_eq!(next_taken(), "0 f");
    assert!(sub.close_direct().is_some());
    send(&w, "0 g");
    heard.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(sub.try_next().map(|i| text(&i)).as_deref(), Some("0 g"));
    assert!(taken.try_recv().is_err(), "nothing after the close");
    let c = sub.counters();
    assert_eq!((c.taken, c.delivered, c.queued), (7, 7, 0));
}

/// A direct consumer that passes each item's text on, and takes `left`.
fn direct_to(to: mpsc::Sender<String>, mut left: usize) -> bus::Direct {
    Box::new(move |item| {
        to.send(text(&item)).unwrap();
        left -= 1;
        left > 0
    })
}

fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}

/// Detached while holding the bus with a full queue and a writer waiting:
/// nothing is dropped, and the writer's message goes to the subscription
/// that takes the standing over.
#[test]
fn detach_while_holding_drops_nothing() {
    let bus = TempBus::new("sub-detach-hold");
    let sub = Subscription::start(&bus.path, options(2, Overflow::Hold)).unwrap();
    let w = Arc::new(Bus::open(&bus.path, Access::Write).unwrap());
    send(&w, "0 1");
    send(&w, "0 2");
    let waiting = {
        let w = w.clone();
        thread::spawn(move || w.write_timed(&Message::new("0 3").unwrap(), Duration::from_secs(10)))
    };
    let standing = sub.detach().expect("on the bus");
    let old: Vec<String> = sub.drain(10).iter().map(text).collect();
    assert_eq!(old, ["0 1", "0 2"]);
    assert_eq!(sub.counters().dropped, 0);
    let next = SubscribeOptions {
        from: Some(standing),
        ..options(2, Overflow::Hold)
    };
    let sub2 = Subscription::start(&bus.path, next).unwrap();
    waiting.join().unwrap().unwrap();
    assert_eq!(
        text(&sub2.next(Some(Duration::from_secs(5))).unwrap()),
        "0 3"
    );
}

/// A standing that nobody takes over is left with leave_detached, which
/// leaves the bus as it was found; without it, the process would stay
/// counted on the bus.
#[test]
fn an_abandoned_standing_is_left() {
    let bus = TempBus::new("sub-abandon");
    let sub = Subscription::start(&bus.path, SubscribeOptions::default()).unwrap();
    sub.detach().expect("on the bus");
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 1);
    sub.leave_detached();
    let s = bus::stat(&bus.path).unwrap().semaphores();
    assert_eq!((s.s, s.w, s.x, s.q, s.n), (0, 0, 1, 0, 0));
}
