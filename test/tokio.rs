//! Async Rust (`bus::tokio`): streams of messages and async broadcasts on
//! real buses. Every message exactly once and in order for 16 streams
//! under back-to-back traffic; both back-pressure policies with exact
//! counts; write futures dropped before and after publishing; streams and
//! futures dropped at random points thousands of times with the bus left
//! as before; 1,000 streams on 1,000 buses in one runtime; the blocking
//! API and the C library on the same bus.

mod common;

use std::future::{poll_fn, Future};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bus::tokio::{subscribe, AsyncSubscription, AsyncWriter, StreamOptions};
use bus::{Access, Bus, Error, Item, Message, Overflow, SubscribeOptions, Subscription};
use common::{check_consecutive, kill, listener, rand_u64, writer, TempBus, Watchdog};
use tokio_stream::StreamExt;

/// No test may take longer than this; a hang fails it instead.
const LIMIT: Duration = Duration::from_secs(300);

fn message(text: impl Into<String>) -> Message {
    Message::new(text.into()).unwrap()
}

fn options(capacity: usize, overflow: Overflow) -> StreamOptions {
    StreamOptions { capacity, overflow }
}

fn text(item: Result<Vec<u8>, Error>) -> String {
    match item {
        Ok(bytes) => String::from_utf8(bytes).unwrap(),
        Err(Error::Missed { count }) => format!("missed {count}"),
        Err(e) => panic!("stream failed: {e}"),
    }
}

/// The stream's next item, which must come within the test's limit.
async fn next(stream: &mut AsyncSubscription) -> String {
    let item = tokio::time::timeout(LIMIT, stream.next()).await;
    text(item.expect("no message came").expect("the stream ended"))
}

/// Polls a future once: it has started, and may be dropped at that point.
async fn poll_once<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
    let mut future = future;
    poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// The stream's next item if one waits right now (it is polled once).
async fn waiting(stream: &mut AsyncSubscription) -> Option<String> {
    poll_once(pin!(stream.next()))
        .await
        .map(|item| text(item.unwrap()))
}

/// The semaphores S W X Q N of a bus.
fn semaphores(path: &Path) -> (u16, u16, u16, u16, u16) {
    let s = bus::stat(path).unwrap().semaphores();
    (s.s, s.w, s.x, s.q, s.n)
}

/// Waits (bounded) until the bus's semaphores satisfy `ok`.
fn await_semaphores(path: &Path, ok: impl Fn((u16, u16, u16, u16, u16)) -> bool) {
    let start = Instant::now();
    while !ok(semaphores(path)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "semaphores stuck at {:?}",
            semaphores(path)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A small xorshift generator; its seed is printed so a failure can be
/// replayed.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Rng {
        let seed = rand_u64() | 1;
        eprintln!("{name}: seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 16 streams in one runtime, 100,000 back-to-back broadcasts from another
/// process: each stream gets every message once, in order, none marked as
/// this process's own, and none held back or dropped at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_streams_get_every_broadcast_once_in_order() {
    const COUNT: u64 = 100_000;
    let bus = TempBus::new("tokio-16");
    let dog = Watchdog::start(LIMIT, &bus.path);
    let mut streams = Vec::new();
    for _ in 0..16 {
        streams.push(
            subscribe(&bus.path, StreamOptions::default())
                .await
                .unwrap(),
        );
    }
    // Every stream is counted: the peer's first broadcast reaches them all.
    let peer = writer(&bus.path, COUNT, "W", &dog);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                for i in 0..COUNT {
                    match stream.recv_item().await {
                        Some(Ok(Item::Message { bytes, own: false })) => {
                            assert_eq!(bytes, format!("W {i}").as_bytes(), "message {i}")
                        }
                        other => panic!("message {i}: {other:?}"),
                    }
                }
                stream.counters()
            })
        })
        .collect();
    let all = async {
        let mut counters = Vec::new();
        for task in tasks {
            counters.push(task.await.unwrap());
        }
        counters
    };
    let counters = tokio::time::timeout(LIMIT, all)
        .await
        .expect("streams hung");
    for c in counters {
        assert_eq!(
            (c.taken, c.delivered, c.dropped, c.queued),
            (COUNT, COUNT, 0, 0)
        );
    }
    assert!({ peer }.wait().unwrap().success());
    dog.finish();
    assert_eq!(semaphores(&bus.path), (0, 0, 1, 0, 0));
}

/// `Hold`: a stream that is not polled holds the bus once `capacity`
/// messages wait; a timed broadcast, blocking or async, times out with
/// nothing published. Polled again, every message arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_makes_writers_wait_until_the_stream_is_polled() {
    let bus = TempBus::new("tokio-hold");
    let mut stream = subscribe(&bus.path, options(4, Overflow::Hold))
        .await
        .unwrap();
    let w = AsyncWriter::open(&bus.path).await.unwrap();
    for i in 0..4 {
        // Returns once queued: the stream need not be polled.
        w.write(&message(format!("0 {i}"))).await.unwrap();
    }
    let late = w
        .write_timed(&message("0 late"), Duration::from_millis(200))
        .await;
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    let blocking = Bus::open(&bus.path, Access::Write).unwrap();
    let late = tokio::task::spawn_blocking(move || {
        blocking.write_timed(&message("0 late too"), Duration::from_millis(200))
    })
    .await
    .unwrap();
    assert!(matches!(late, Err(Error::TimedOut)), "{late:?}");
    let c = stream.counters();
    assert_eq!((c.taken, c.queued, c.dropped), (4, 4, 0));

    let writing = tokio::spawn(async move {
        for i in 4..2000 {
            w.write(&message(format!("0 {i}"))).await.unwrap();
        }
    });
    for i in 0..2000 {
        assert_eq!(next(&mut stream).await, format!("0 {i}"));
    }
    writing.await.unwrap();
    assert_eq!(waiting(&mut stream).await, None);
    let c = stream.counters();
    assert_eq!(
        (c.taken, c.delivered, c.dropped, c.queued),
        (2000, 2000, 0, 0)
    );
    assert!(c.held > Duration::ZERO);
}

/// `Drop`: writers never wait for the stream; it yields `Missed` with the
/// exact count where messages are missing, and goes on.
#[tokio::test]
async fn drop_yields_the_exact_count_missed_and_goes_on() {
    let bus = TempBus::new("tokio-drop");
    let mut stream = subscribe(&bus.path, options(3, Overflow::Drop))
        .await
        .unwrap();
    let w = AsyncWriter::open(&bus.path).await.unwrap();
    for i in 0..5 {
        w.write(&message(format!("0 {i}"))).await.unwrap();
    }
    assert_eq!(next(&mut stream).await, "0 0");
    for i in 5..100 {
        w.write(&message(format!("0 {i}"))).await.unwrap();
    }
    let c = stream.counters();
    assert_eq!((c.taken, c.dropped, c.queued), (100, 96, 3));
    let mut got = Vec::new();
    while let Some(line) = waiting(&mut stream).await {
        got.push(line);
    }
    assert_eq!(got, ["0 1", "0 2", "missed 2", "0 5", "missed 94"]);
    w.write(&message("0 100")).await.unwrap();
    assert_eq!(next(&mut stream).await, "0 100");
    let c = stream.counters();
    assert_eq!(c.taken, c.delivered + c.dropped);
}

/// A write future dropped before its message was published publishes
/// nothing: neither one waiting for the (held) bus nor one still queued
/// behind it in the writer thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_before_publishing_publishes_nothing() {
    let bus = TempBus::new("tokio-unpublished");
    let witness = Subscription::start(&bus.path, SubscribeOptions::default()).unwrap();
    let mut held = subscribe(&bus.path, options(1, Overflow::Hold))
        .await
        .unwrap();
    let w = AsyncWriter::open(&bus.path).await.unwrap();
    w.write(&message("0 fill")).await.unwrap();
    // `held` is full and not polled: the bus is held.
    {
        let (first, second) = (message("0 waiting"), message("0 queued"));
        let mut waiting = pin!(w.write(&first));
        let mut queued = pin!(w.write(&second));
        assert!(poll_once(waiting.as_mut()).await.is_none());
        assert!(poll_once(queued.as_mut()).await.is_none());
        let timed_out = tokio::time::timeout(Duration::from_millis(100), waiting.as_mut()).await;
        assert!(timed_out.is_err(), "the bus is held: {timed_out:?}");
        assert_eq!(semaphores(&bus.path).4, 0, "nothing in flight");
    } // both dropped
    assert_eq!(next(&mut held).await, "0 fill");
    w.write(&message("0 after")).await.unwrap();
    assert_eq!(next(&mut held).await, "0 after");
    let seen: Vec<Item> = witness.drain(usize::MAX);
    let texts: Vec<String> = seen
        .into_iter()
        .map(|item| match item {
            Item::Message { bytes, .. } => String::from_utf8(bytes).unwrap(),
            Item::Dropped(n) => panic!("dropped {n}"),
        })
        .collect();
    assert_eq!(texts, ["0 fill", "0 after"]);
    drop((held, witness));
    assert_eq!(semaphores(&bus.path), (0, 0, 1, 0, 0));
}

/// A write future dropped after its message was published returns at once;
/// the round is finished in the background once a stopped listener takes
/// the message: every listener has it exactly once, and the bus is left as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_after_publishing_completes_in_the_background() {
    let bus = TempBus::new("tokio-published");
    let dog = Watchdog::start(LIMIT, &bus.path);
    let slow = listener(&bus.path, "read", None, &dog);
    let mut stream = subscribe(&bus.path, StreamOptions::default())
        .await
        .unwrap();
    let w = AsyncWriter::open(&bus.path).await.unwrap();
    common::stop(slow.child.id());
    {
        let published = message("0 published");
        let mut write = pin!(w.write(&published));
        assert!(poll_once(write.as_mut()).await.is_none());
        // Published (N raised) and waiting for the stopped listener.
        await_semaphores(&bus.path, |(_, _, _, _, n)| n == 1);
        assert_eq!(next(&mut stream).await, "0 published");
    } // dropped: returns at once
      // The background round still holds the bus.
    let next_write = w
        .write_timed(&message("0 timed out"), Duration::from_millis(100))
        .await;
    assert!(matches!(next_write, Err(Error::TimedOut)), "{next_write:?}");
    let other = AsyncWriter::open(&bus.path).await.unwrap();
    let busy = other.write_nowait(&message("0 busy")).await;
    assert!(matches!(busy, Err(Error::WouldBlock)), "{busy:?}");
    kill(slow.child.id(), nix::sys::signal::Signal::SIGCONT);
    w.write(&message("0 after")).await.unwrap();
    w.write(&message("end")).await.unwrap();
    let (lines, status) = slow.collect();
    assert!(status.success());
    assert_eq!(lines, ["0 published", "0 after"]);
    assert_eq!(next(&mut stream).await, "0 after");
    assert_eq!(next(&mut stream).await, "end");
    drop(stream);
    assert_eq!(semaphores(&bus.path), (0, 0, 1, 0, 0));
    dog.finish();
}

/// Under steady traffic, thousands of streams and write futures dropped at
/// random points (before their first poll, while subscribing, while
/// waiting, after some messages; writes queued, waiting or published): two
/// witnesses, one async and one blocking, lose nothing of the steady
/// writer and see each other broadcast at most once, in order; each
/// dropped stream saw an unbroken run of the steady writer's messages;
/// and the bus ends as it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_writes_dropped_at_random_points_disturb_nothing() {
    const STREAMS: u64 = 2000;
    const WRITES: u64 = 3000;
    let bus = TempBus::new("tokio-churn");
    let dog = Watchdog::start(LIMIT, &bus.path);
    let path = bus.path.clone();

    let blocking_witness = Subscription::start(&path, SubscribeOptions::default()).unwrap();
    let blocking_witness = std::thread::spawn(move || {
        let mut lines = Vec::new();
        loop {
            match blocking_witness.next(Some(LIMIT)).unwrap() {
                Item::Message { bytes, .. } if bytes == b"end" => return lines,
                Item::Message { bytes, .. } => lines.push(String::from_utf8(bytes).unwrap()),
                Item::Dropped(n) => panic!("dropped {n}"),
            }
        }
    });
    let mut async_witness = subscribe(&path, StreamOptions::default()).await.unwrap();
    let async_witness = tokio::spawn(async move {
        let mut lines = Vec::new();
        loop {
            match next(&mut async_witness).await {
                end if end == "end" => return lines,
                line => lines.push(line),
            }
        }
    });

    // The steady writer: never cancelled, every message must arrive.
    let running = Arc::new(AtomicBool::new(true));
    let steady = {
        let (path, running) = (path.clone(), running.clone());
        tokio::spawn(async move {
            let w = AsyncWriter::open(&path).await.unwrap();
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                w.write(&message(format!("S {n}"))).await.unwrap();
                n += 1;
            }
            n
        })
    };

    // Streams dropped at random points.
    let streams = {
        let path = path.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new("streams");
            let (mut runs, mut drops) = (0u64, Vec::new());
            for _ in 0..STREAMS {
                let subscribing =
                    subscribe(&path, options(1 + rng.below(8) as usize, Overflow::Hold));
                let mut stream = match rng.below(4) {
                    0 => continue, // dropped before its first poll
                    1 => {
                        let mut subscribing = pin!(subscribing);
                        match poll_once(subscribing.as_mut()).await {
                            Some(stream) => stream.unwrap(),
                            None => continue, // dropped while joining
                        }
                    }
                    _ => subscribing.await.unwrap(),
                };
                let mut steady_run: Vec<u64> = Vec::new();
                for _ in 0..rng.below(20) {
                    let line = match rng.below(3) {
                        // A wait cut short: cancel safe, nothing lost.
                        0 => match tokio::time::timeout(Duration::from_micros(300), stream.next())
                            .await
                        {
                            Ok(item) => text(item.unwrap()),
                            Err(_) => continue,
                        },
                        _ => next(&mut stream).await,
                    };
                    if let Some(n) = line.strip_prefix("S ") {
                        steady_run.push(n.parse().unwrap());
                    }
                }
                for pair in steady_run.windows(2) {
                    assert_eq!(pair[1], pair[0] + 1, "a stream missed a message");
                }
                runs += 1;
                // Possibly holding the bus, with messages queued.
                let dropping = Instant::now();
                drop(stream);
                drops.push(dropping.elapsed());
            }
            drops.sort();
            eprintln!(
                "dropping a stream blocked its thread for {:?} (median), {:?} (max)",
                drops[drops.len() / 2],
                drops[drops.len() - 1]
            );
            runs
        })
    };

    // Write futures dropped at random points; the numbers of those that
    // completed, which must have arrived.
    let writes = {
        let path = path.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new("writes");
            let w = AsyncWriter::open(&path).await.unwrap();
            let mut completed = Vec::new();
            for i in 0..WRITES {
                let m = message(format!("C {i}"));
                let mut write = pin!(w.write(&m));
                let answer = match rng.below(5) {
                    0 => None, // dropped before its first poll
                    1 => poll_once(write.as_mut()).await,
                    2 => {
                        let mut answer = None;
                        for _ in 0..1 + rng.below(4) {
                            answer = poll_once(write.as_mut()).await;
                            if answer.is_some() {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                        answer
                    }
                    3 => {
                        let within = Duration::from_micros(1 + rng.below(2000));
                        tokio::time::timeout(within, write.as_mut()).await.ok()
                    }
                    _ => Some(write.as_mut().await),
                };
                // Otherwise dropped here, at whatever point it had reached.
                if let Some(answer) = answer {
                    answer.unwrap();
                    completed.push(i);
                }
            }
            completed
        })
    };

    let work = async {
        let runs = streams.await.unwrap();
        let completed = writes.await.unwrap();
        running.store(false, Ordering::SeqCst);
        let sent = steady.await.unwrap();
        (runs, completed, sent)
    };
    let (runs, completed, sent) = tokio::time::timeout(LIMIT, work).await.expect("hung");
    let w = AsyncWriter::open(&path).await.unwrap();
    w.write(&message("end")).await.unwrap();
    let async_lines = tokio::time::timeout(LIMIT, async_witness)
        .await
        .expect("hung")
        .unwrap();
    let blocking_lines = tokio::task::spawn_blocking(move || blocking_witness.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "{runs} streams dropped, {} of {WRITES} writes completed, {sent} steady broadcasts",
        completed.len()
    );
    for lines in [&async_lines, &blocking_lines] {
        let steady: Vec<u64> = numbers(lines, "S");
        assert_eq!(steady, (0..sent).collect::<Vec<_>>(), "the steady writer's");
        let cancelled: Vec<u64> = numbers(lines, "C");
        assert!(cancelled.windows(2).all(|p| p[0] < p[1]), "once, in order");
        for i in &completed {
            assert!(
                cancelled.binary_search(i).is_ok(),
                "completed C {i} missing"
            );
        }
    }
    assert_eq!(async_lines, blocking_lines);
    assert!(runs > STREAMS / 4, "{runs} streams subscribed");
    assert_eq!(semaphores(&path), (0, 0, 1, 0, 0));
    dog.finish();
}

fn numbers(lines: &[String], tag: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .collect()
}

/// A stream whose bus is removed yields what was queued, then the reason,
/// then ends; subscribing to what is not a bus fails at once.
#[tokio::test]
async fn a_removed_bus_ends_the_stream_with_the_reason() {
    let bus = TempBus::new("tokio-gone");
    let mut stream = subscribe(&bus.path, StreamOptions::default())
        .await
        .unwrap();
    let w = AsyncWriter::open(&bus.path).await.unwrap();
    w.write(&message("0 a")).await.unwrap();
    w.write(&message("0 b")).await.unwrap();
    bus::unlink(&bus.path).unwrap();
    assert_eq!(next(&mut stream).await, "0 a");
    assert_eq!(next(&mut stream).await, "0 b");
    let end = tokio::time::timeout(LIMIT, stream.next()).await.unwrap();
    assert!(matches!(end, Some(Err(Error::Gone { .. }))), "{end:?}");
    assert!(stream.next().await.is_none());
    assert!(tokio_stream::StreamExt::next(&mut stream).await.is_none());
    let refused = subscribe(&bus.path, StreamOptions::default()).await;
    assert!(
        matches!(refused, Err(Error::NotFound { .. })),
        "{refused:?}"
    );
    let refused = AsyncWriter::open(&bus.path).await;
    assert!(
        matches!(refused, Err(Error::NotFound { .. })),
        "{refused:?}"
    );
}

/// 1,000 streams on 1,000 buses in one runtime: each gets its bus's
/// message, and each leaves its bus when dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_on_a_thousand_buses() {
    const BUSES: usize = 1000;
    let buses: Vec<TempBus> = (0..BUSES)
        .map(|i| TempBus::new(&format!("tokio-k{i}")))
        .collect();
    let subscribing: Vec<_> = buses
        .iter()
        .map(|b| tokio::spawn(subscribe(b.path.clone(), options(4, Overflow::Hold))))
        .collect();
    let mut streams = Vec::new();
    for s in subscribing {
        streams.push(s.await.unwrap().unwrap());
    }
    for b in &buses {
        assert_eq!(bus::stat(&b.path).unwrap().listeners(), 1);
    }
    eprintln!("with {BUSES} streams: {}", threads_and_memory());
    let writing = {
        let paths: Vec<PathBuf> = buses.iter().map(|b| b.path.clone()).collect();
        tokio::spawn(async move {
            for (i, path) in paths.iter().enumerate() {
                let w = AsyncWriter::open(path).await.unwrap();
                w.write(&message(format!("0 {i}"))).await.unwrap();
            }
        })
    };
    let receiving: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            tokio::spawn(async move {
                assert_eq!(next(&mut stream).await, format!("0 {i}"));
                stream
            })
        })
        .collect();
    let mut streams = Vec::new();
    for r in receiving {
        streams.push(r.await.unwrap());
    }
    writing.await.unwrap();
    drop(streams);
    for b in &buses {
        assert_eq!(semaphores(&b.path), (0, 0, 1, 0, 0));
    }
}

fn threads_and_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("Threads:") || l.starts_with("VmRSS:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One bus, every kind of party: an async stream, a blocking subscription,
/// a blocking read loop and a C `bus_read` listener; an async writer, a
/// blocking writer and a C `bus_write` writer broadcasting at once. Every
/// listener gets every message, each writer's in order; the async stream
/// marks exactly this process's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_the_blocking_api_and_the_c_library() {
    const EACH: u64 = 300;
    let t_tool = c_tool();
    let bus = TempBus::new("tokio-interop");
    let dog = Watchdog::start(LIMIT, &bus.path);
    let path = bus.path.clone();

    let mut stream = subscribe(&path, StreamOptions::default()).await.unwrap();
    let subscription = Subscription::start(&path, SubscribeOptions::default()).unwrap();
    let reader = Bus::open(&path, Access::ReadOnly).unwrap();
    let (counted, is_counted) = std::sync::mpsc::channel();
    let read_loop = std::thread::spawn(move || {
        let mut lines = Vec::new();
        reader
            .read(|event| match event {
                bus::Event::Listening => {
                    counted.send(()).unwrap();
                    bus::Flow::Continue
                }
                bus::Event::Message(m) => {
                    lines.push(String::from_utf8(m.to_vec()).unwrap());
                    match lines.len() as u64 == 3 * EACH {
                        true => bus::Flow::Stop,
                        false => bus::Flow::Continue,
                    }
                }
            })
            .unwrap();
        lines
    });
    is_counted.recv_timeout(LIMIT).unwrap();
    let mut c_listener = Command::new(&t_tool)
        .args([
            "listen".as_ref(),
            path.as_os_str(),
            (3 * EACH).to_string().as_ref(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    dog.watch(&c_listener);
    let mut c_lines = BufReader::new(c_listener.stdout.take().unwrap()).lines();
    assert_eq!(c_lines.next().unwrap().unwrap(), "listening");
    let c_lines = std::thread::spawn(move || c_lines.map(Result::unwrap).collect::<Vec<_>>());

    // The C writer waits until the four listeners are counted.
    let mut c_writer = Command::new(&t_tool);
    c_writer.args(["write".as_ref(), path.as_os_str(), "4".as_ref()]);
    c_writer.args((0..EACH).map(|i| format!("C {i}")));
    let c_writer = c_writer.stdout(Stdio::null()).spawn().unwrap();
    dog.watch(&c_writer);
    let blocking_writer = {
        let w = Bus::open(&path, Access::Write).unwrap();
        std::thread::spawn(move || {
            for i in 0..EACH {
                w.write(&message(format!("B {i}"))).unwrap();
            }
        })
    };
    let async_writer = {
        let w = AsyncWriter::open(&path).await.unwrap();
        tokio::spawn(async move {
            for i in 0..EACH {
                w.write(&message(format!("A {i}"))).await.unwrap();
            }
        })
    };

    let mut from_stream = Vec::new();
    let streaming = async {
        while (from_stream.len() as u64) < 3 * EACH {
            match stream.recv_item().await.unwrap().unwrap() {
                Item::Message { bytes, own } => {
                    let line = String::from_utf8(bytes).unwrap();
                    assert_eq!(own, !line.starts_with("C "), "{line}: own {own}");
                    from_stream.push(line);
                }
                Item::Dropped(n) => panic!("dropped {n}"),
            }
        }
    };
    tokio::time::timeout(LIMIT, streaming).await.expect("hung");
    async_writer.await.unwrap();
    let others = tokio::task::spawn_blocking(move || {
        blocking_writer.join().unwrap();
        assert!({ c_writer }.wait().unwrap().success());
        let from_subscription: Vec<String> = (0..3 * EACH)
            .map(|_| match subscription.next(Some(LIMIT)).unwrap() {
                Item::Message { bytes, .. } => String::from_utf8(bytes).unwrap(),
                Item::Dropped(n) => panic!("dropped {n}"),
            })
            .collect();
        let from_read_loop = read_loop.join().unwrap();
        let from_c = c_lines.join().unwrap();
        assert!(c_listener.wait().unwrap().success());
        [from_subscription, from_read_loop, from_c]
    })
    .await
    .unwrap();
    for lines in [&from_stream, &others[0], &others[1], &others[2]] {
        let runs = check_consecutive(lines);
        for tag in ["A", "B", "C"] {
            assert_eq!(runs.get(tag), Some(&(0, EACH - 1)), "{tag}");
        }
    }
    // One order on the bus, seen alike by all.
    assert_eq!(&from_stream, &others[0]);
    assert_eq!(&from_stream, &others[1]);
    assert_eq!(&from_stream, &others[2]);
    drop(stream);
    assert_eq!(semaphores(&path), (0, 0, 1, 0, 0));
    dog.finish();
}

/// The C library's test tool (test/c/t_tool.c), compiled against the
/// `libbus.so` built next to this test (`cargo build -p libbus`).
fn c_tool() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let so = profile_dir.join("libbus.so");
    assert!(
        so.exists(),
        "{} missing: build the C library first (cargo build [--release] -p libbus)",
        so.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("bus-tokio-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The library's soname is libbus.so.3, as the original's.
    let link = dir.join("libbus.so.3");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so, &link).unwrap();
    let tool = dir.join("t_tool");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("native/libbus/include"))
        .arg("-o")
        .arg(&tool)
        .arg(root.join("test/c/t_tool.c"))
        .arg(&so)
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status()
        .unwrap();
    assert!(status.success(), "cannot compile test/c/t_tool.c");
    tool
}
