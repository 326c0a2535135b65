//! Faults: processes killed at random points, stopped listeners, signals.
//! The bus always recovers, survivors lose nothing, and timed writes time
//! out as specified.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Access, Bus, Error, Event, Flow, Message};
use common::{check_consecutive, kill, listener, writer, TempBus, Watchdog};
use nix::sys::signal::Signal;

/// Random pause of up to `max_micros`, to land a kill at a random step.
fn random_pause(max_micros: u64) {
    std::thread::sleep(Duration::from_micros(common::rand_u64() % max_micros));
}

/// What each listener printed, once it has exited successfully.
fn outputs_of(listeners: impl IntoIterator<Item = common::Listener>) -> Vec<Vec<String>> {
    listeners
        .into_iter()
        .map(|l| {
            let (lines, status) = l.collect();
            assert!(status.success(), "listener failed: {status}");
            lines
        })
        .collect()
}

/// Broadcasts `end`, which makes every listener peer leave.
fn end_all(path: &std::path::Path) {
    let w = Bus::open(path, Access::Write).unwrap();
    w.write(&Message::new("end").unwrap()).unwrap();
}

/// Listeners SIGKILLed at random points of their loop (joining, waiting,
/// copying, acknowledging, re-arming) never wedge the bus: the kernel's
/// undo removes them, and the two surviving listeners get every message.
#[test]
fn killed_listeners_leave_no_trace() {
    let bus = TempBus::new("kill-listeners");
    let dog = Watchdog::start(Duration::from_secs(120), &bus.path);
    let survivors = [
        listener(&bus.path, "read", None, &dog),
        listener(&bus.path, "poll", None, &dog),
    ];
    let mut w = writer(&bus.path, 30_000, "w", &dog);
    let mut kills = 0;
    while w.try_wait().unwrap().is_none() && kills < 300 {
        let role = ["read", "poll"][kills % 2];
        let victim = listener(&bus.path, role, None, &dog);
        random_pause(3000);
        kill(victim.child.id(), Signal::SIGKILL);
        let (_, status) = victim.collect();
        assert!(!status.success(), "victim was killed");
        kills += 1;
    }
    assert!(w.wait().unwrap().success(), "writer failed");
    end_all(&bus.path);
    let outputs = outputs_of(survivors);
    dog.finish();
    for lines in &outputs {
        assert_eq!(lines.len(), 30_000);
        assert_eq!(check_consecutive(lines)["w"], (0, 29_999));
    }
    assert!(kills >= 20, "only {kills} kills happened during the run");
    eprintln!("{kills} listeners killed");
    let s = bus::stat(&bus.path).unwrap();
    assert_eq!(s.values, [0, 0, 1, s.values[3], 0], "S W X N back to rest");
}

/// Writers SIGKILLed at random points never wedge the bus: every message of
/// the surviving writer reaches both listeners in order, and each killed
/// writer's messages arrive in order with no gap or duplicate. (The last
/// message of a writer killed mid-broadcast may reach only some listeners.)
#[test]
fn killed_writers_leave_no_trace() {
    let bus = TempBus::new("kill-writers");
    let dog = Watchdog::start(Duration::from_secs(120), &bus.path);
    let survivors = [
        listener(&bus.path, "read", None, &dog),
        listener(&bus.path, "poll", None, &dog),
    ];
    let mut steady = writer(&bus.path, 20_000, "steady", &dog);
    let mut kills = 0;
    while steady.try_wait().unwrap().is_none() && kills < 300 {
        let mut victim = writer(&bus.path, 1_000_000, &format!("v{kills}"), &dog);
        random_pause(5000);
        kill(victim.id(), Signal::SIGKILL);
        assert!(!victim.wait().unwrap().success(), "victim was killed");
        kills += 1;
    }
    assert!(steady.wait().unwrap().success(), "steady writer failed");
    end_all(&bus.path);
    let outputs = outputs_of(survivors);
    dog.finish();
    let runs: Vec<_> = outputs.iter().map(|o| check_consecutive(o)).collect();
    for run in &runs {
        assert_eq!(run["steady"], (0, 19_999));
        for (tag, (first, _)) in run {
            assert_eq!(*first, 0, "{tag} started at 0");
        }
    }
    for (tag, (_, last)) in &runs[0] {
        let other = runs[1].get(tag).map_or(0, |r| r.1);
        assert!(last.abs_diff(other) <= 1, "{tag}: {last} vs {other}");
    }
    assert!(kills >= 20, "only {kills} kills happened during the run");
    eprintln!("{kills} writers killed");
}

/// A stopped (SIGSTOP) listener makes timed writes time out as specified:
/// the first publishes and then times out waiting for it
/// (`TimedOutAfterPublish`) but keeps the bus until the round is done, so
/// the next times out before publishing (`TimedOut`) and a no-wait one
/// fails at once (`WouldBlock`). Once continued, the listener gets the
/// published message, not the refused ones, and the bus works again.
#[test]
fn stopped_listener_times_out_timed_writes() {
    let bus = TempBus::new("sigstop");
    let dog = Watchdog::start(Duration::from_secs(60), &bus.path);
    let frozen = listener(&bus.path, "read", None, &dog);
    common::stop(frozen.child.id());
    let w = Bus::open(&bus.path, Access::Write).unwrap();

    let start = Instant::now();
    let r = w.write_timed(&Message::new("x 0").unwrap(), Duration::from_millis(200));
    assert!(matches!(r, Err(Error::TimedOutAfterPublish)), "{r:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // The round is not abandoned: this process keeps the writer lock and N
    // until the stopped listener has taken the message.
    let v = bus::stat(&bus.path).unwrap().values;
    assert_eq!((v[2], v[4]), (0, 1), "X held and N raised: {v:?}");

    let start = Instant::now();
    let r = w.write_timed(&Message::new("x 1").unwrap(), Duration::from_millis(200));
    assert!(matches!(r, Err(Error::TimedOut)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    // A no-wait write fails at once: the writer lock is held.
    let start = Instant::now();
    let r = w.write_nowait(&Message::new("x 1").unwrap());
    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
    assert!(start.elapsed() < Duration::from_millis(100));

    kill(frozen.child.id(), Signal::SIGCONT);
    w.write(&Message::new("x 1").unwrap()).unwrap();
    w.write(&Message::new("end").unwrap()).unwrap();
    let (lines, status) = frozen.collect();
    dog.finish();
    assert!(status.success());
    assert_eq!(lines, ["x 0", "x 1"]);
}

/// Signals queued for this process's user (the first number of `SigQ`;
/// other processes of the user count too).
fn queued_signals() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("SigQ:")).unwrap();
    line[5..].trim().split('/').next().unwrap().parse().unwrap()
}

/// A signal delivered to a listening thread, again and again, neither ends
/// listening nor loses a message (EINTR is retried with the protocol state
/// kept).
#[test]
fn signals_do_not_disturb_a_listener() {
    let bus = TempBus::new("signals");
    // A token installs the handler of the wake signal; it is never stopped.
    let _token = bus::StopToken::new();
    let path = bus.path.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let b = Bus::open(&path, Access::ReadOnly).unwrap();
        let mut got = Vec::new();
        b.read(|e| match e {
            Event::Listening => {
                tx.send(nix::sys::pthread::pthread_self()).unwrap();
                Flow::Continue
            }
            Event::Message(b"end") => Flow::Stop,
            Event::Message(m) => {
                got.push(String::from_utf8(m.to_vec()).unwrap());
                Flow::Continue
            }
        })
        .unwrap();
        got
    });
    let thread = rx.recv().unwrap();
    let signalling = Arc::new(AtomicBool::new(true));
    let pest = {
        let signalling = signalling.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            // nix's Signal has no real-time signals: libc, then.
            let wake = libc::SIGRTMIN() + 7;
            let baseline = queued_signals();
            while signalling.load(Ordering::SeqCst) {
                // Real-time signals queue: send the next only once the last
                // was delivered, or thousands pile up and the reader spends
                // its time in handlers instead of listening.
                if queued_signals() > baseline {
                    std::thread::yield_now();
                    continue;
                }
                // SAFETY: `thread` is the reader, alive until it reads `end`,
                // which is sent only after this loop has ended.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::pthread_kill(thread, wake) };
                assert_eq!(rc, 0, "pthread_kill");
                sent += 1;
            }
            sent
        })
    };
    let w = Bus::open(&bus.path, Access::Write).unwrap();
    for i in 0..5000 {
        w.write(&Message::new(format!("s {i}")).unwrap()).unwrap();
    }
    signalling.store(false, Ordering::SeqCst);
    let sent = pest.join().unwrap();
    w.write(&Message::new("end").unwrap()).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), 5000);
    assert_eq!(check_consecutive(&got)["s"], (0, 4999));
    assert!(sent > 100, "only {sent} signals sent");
}

/// A stop token makes a blocked listener leave promptly (well under
/// 250 ms), and the listener count goes back to what it was.
#[test]
fn stop_token_ends_a_blocked_listener_quickly() {
    let bus = TempBus::new("stop");
    let token = bus::StopToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = bus.path.clone();
    let t = token.clone();
    let reader = std::thread::spawn(move || {
        let b = Bus::open(&path, Access::ReadOnly).unwrap();
        let options = bus::ReadOptions {
            stop: Some(&t),
            ..Default::default()
        };
        b.read_with(&options, |_| {
            tx.send(()).unwrap();
            Flow::Continue
        })
    });
    rx.recv().unwrap();
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 1);
    let start = Instant::now();
    token.stop();
    let result = reader.join().unwrap();
    let took = start.elapsed();
    assert!(matches!(result, Err(Error::Interrupted)), "{result:?}");
    assert!(took < Duration::from_millis(250), "took {took:?}");
    let s = bus::stat(&bus.path).unwrap();
    assert_eq!((s.values[0], s.values[3]), (0, 0), "S and Q back to 0");
}

/// A listener loop handed over again and again to a new loop (new thread,
/// new handle, as a new copy of the native code would) while a writer
/// broadcasts back to back: no message is lost or repeated, and the bus
/// never counts it twice (the handover makes no semaphore operation).
#[test]
fn handover_loses_and_repeats_nothing() {
    let bus = TempBus::new("handover");
    let dog = Watchdog::start(Duration::from_secs(60), &bus.path);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut standing = None;
    let mut handovers = 0;
    let mut w = None;
    loop {
        let token = bus::StopToken::new();
        let (path, t, tx) = (bus.path.clone(), token.clone(), tx.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let from = standing;
        let loop_thread = std::thread::spawn(move || {
            let b = Bus::open(&path, Access::ReadOnly).unwrap();
            let options = bus::ReadOptions {
                stop: Some(&t),
                ..Default::default()
            };
            b.read_handover(from, &options, |e| match e {
                Event::Listening => {
                    ready_tx.send(()).unwrap();
                    Flow::Continue
                }
                Event::Message(b"end") => Flow::Stop,
                Event::Message(m) => {
                    tx.send(String::from_utf8(m.to_vec()).unwrap()).unwrap();
                    Flow::Continue
                }
            })
        });
        ready_rx.recv().unwrap();
        // One listener: counted (armed) or holding W (acked), never more.
        let v = bus::stat(&bus.path).unwrap().values;
        assert!(v[0] <= 1 && v[1] <= 1, "S and W at most 1: {v:?}");
        let child = w.get_or_insert_with(|| writer(&bus.path, 20_000, "h", &dog));
        if child.try_wait().unwrap().is_some() {
            end_all(&bus.path);
            assert_eq!(loop_thread.join().unwrap().unwrap(), None);
            break;
        }
        random_pause(2000);
        token.stop();
        standing = loop_thread.join().unwrap().unwrap();
        assert!(
            standing.is_some(),
            "a stopped handover loop keeps its place"
        );
        handovers += 1;
    }
    drop(tx);
    let got: Vec<String> = rx.iter().collect();
    dog.finish();
    assert_eq!(got.len(), 20_000);
    assert_eq!(check_consecutive(&got)["h"], (0, 19_999));
    assert!(handovers > 20, "only {handovers} handovers");
    eprintln!("{handovers} handovers");
    assert_eq!(bus::stat(&bus.path).unwrap().listeners(), 0);
}
