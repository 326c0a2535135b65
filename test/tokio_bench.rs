//! The async API against the blocking one, in the same run: delivery rate
//! (back-to-back broadcasts), latency (paced broadcasts) and broadcast
//! rate. Not a test: it prints figures and ratios.
//!
//! ```text
//! cargo run --release --features tokio --example tokio_bench [-- --quick]
//! ```
//!
//! Listeners compared, one at a time on a bus of their own each round:
//! - `read`: the blocking listener, `Bus::read` on a thread;
//! - `sub`: the blocking subscription, `Subscription::next` on a thread;
//! - `async`: the stream, `AsyncSubscription::recv` in a task of a
//!   two-worker tokio runtime.
//!
//! The writer is a thread of this process broadcasting 64-byte messages
//! that start with their send time (`CLOCK_MONOTONIC`, ns). Each figure is
//! the median of the rounds, the modes taking turns within each round.
//! Ratios are such that more is better for the async side: delivery
//! async/blocking (messages per second), latency blocking/async (p50 and
//! p99), broadcasts async/blocking.
//!
//! The read loop's latency is a floor no consumer on another thread can
//! reach: its callback runs on the very thread the semaphore wakes (and
//! delays that listener's re-arm meanwhile), where the stream, like the
//! blocking subscription, is one thread wake-up further. That hop is what
//! keeps the consumer off the protocol's critical path, and why delivery
//! is faster through a queue.

use std::time::{Duration, Instant};

use bus::tokio::{subscribe, AsyncWriter, StreamOptions};
use bus::{Access, Bus, Clock, Event, Flow, Item, Message, SubscribeOptions, Subscription};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Read,
    Sub,
    Async,
}

const MODES: [Mode; 3] = [Mode::Read, Mode::Sub, Mode::Async];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Sub => "sub",
            Mode::Async => "async",
        }
    }
}

/// A bus removed when dropped.
struct TempBus(std::path::PathBuf);

impl Drop for TempBus {
    fn drop(&mut self) {
        let _ = bus::unlink(&self.0);
    }
}

fn now_ns() -> u64 {
    Clock::MONOTONIC.now().as_nanos() as u64
}

/// A 64-byte message starting with its send time.
fn stamped() -> Message {
    Message::new(format!("{:020} {:043}", now_ns(), 0)).unwrap()
}

fn sent_at(m: &[u8]) -> u64 {
    std::str::from_utf8(&m[..20]).unwrap().parse().unwrap()
}

/// What one listener measured: the time from the first broadcast to the
/// last message it took, and the latency of each message.
struct Run {
    elapsed: Duration,
    latencies: Vec<u64>,
}

/// Broadcasts `n` stamped messages on `path`, `pause` apart if given.
fn write(path: &std::path::Path, n: usize, pause: Option<Duration>) -> std::thread::JoinHandle<()> {
    let bus = Bus::open(path, Access::Write).unwrap();
    std::thread::spawn(move || {
        for _ in 0..n {
            bus.write(&stamped()).unwrap();
            if let Some(pause) = pause {
                std::thread::sleep(pause);
            }
        }
    })
}

/// One listener of `mode` on a fresh bus, `n` messages from the writer.
fn run(rt: &tokio::runtime::Runtime, mode: Mode, n: usize, pause: Option<Duration>) -> Run {
    let temp = TempBus(bus::create(None, false).unwrap());
    let path = temp.0.clone();
    let mut latencies = Vec::with_capacity(n);
    let (elapsed, latencies) = match mode {
        Mode::Read => {
            let listener = Bus::open(&path, Access::ReadOnly).unwrap();
            let (counted, is_counted) = std::sync::mpsc::channel();
            let reading = std::thread::spawn(move || {
                listener
                    .read(|event| match event {
                        Event::Listening => {
                            counted.send(()).unwrap();
                            Flow::Continue
                        }
                        Event::Message(m) => {
                            latencies.push(now_ns() - sent_at(m));
                            match latencies.len() < n {
                                true => Flow::Continue,
                                false => Flow::Stop,
                            }
                        }
                    })
                    .unwrap();
                latencies
            });
            is_counted.recv().unwrap();
            let start = Instant::now();
            let writer = write(&path, n, pause);
            let latencies = reading.join().unwrap();
            let elapsed = start.elapsed();
            writer.join().unwrap();
            (elapsed, latencies)
        }
        Mode::Sub => {
            let sub = Subscription::start(&path, SubscribeOptions::default()).unwrap();
            let start = Instant::now();
            let writer = write(&path, n, pause);
            for _ in 0..n {
                match sub.next(None).unwrap() {
                    Item::Message { bytes, .. } => latencies.push(now_ns() - sent_at(&bytes)),
                    Item::Dropped(d) => panic!("dropped {d}"),
                }
            }
            let elapsed = start.elapsed();
            writer.join().unwrap();
            (elapsed, latencies)
        }
        Mode::Async => rt.block_on(async {
            let mut stream = subscribe(&path, StreamOptions::default()).await.unwrap();
            let start = Instant::now();
            let writer = write(&path, n, pause);
            let received = tokio::spawn(async move {
                for _ in 0..n {
                    let m = stream.recv().await.unwrap().unwrap();
                    latencies.push(now_ns() - sent_at(&m));
                }
                (start.elapsed(), latencies)
            })
            .await
            .unwrap();
            writer.join().unwrap();
            received
        }),
    };
    Run { elapsed, latencies }
}

/// Broadcasts per second through `mode`'s writer (blocking `Bus::write`
/// or `AsyncWriter::write` awaited in turn), one blocking listener.
fn broadcasts(rt: &tokio::runtime::Runtime, asynchronous: bool, n: usize) -> f64 {
    let temp = TempBus(bus::create(None, false).unwrap());
    let sub = Subscription::start(&temp.0, SubscribeOptions::default()).unwrap();
    let draining = std::thread::spawn(move || {
        for _ in 0..n {
            sub.next(None).unwrap();
        }
    });
    let m = stamped();
    let elapsed = if asynchronous {
        rt.block_on(async {
            let w = AsyncWriter::open(&temp.0).await.unwrap();
            let start = Instant::now();
            for _ in 0..n {
                w.write(&m).await.unwrap();
            }
            start.elapsed()
        })
    } else {
        let w = Bus::open(&temp.0, Access::Write).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            w.write(&m).unwrap();
        }
        start.elapsed()
    };
    draining.join().unwrap();
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, back_to_back, paced, pause) = match quick {
        true => (3, 10_000, 1_000, Duration::from_micros(200)),
        false => (5, 50_000, 5_000, Duration::from_micros(200)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let (mut sync_w, mut async_w) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (i, &mode) in MODES.iter().enumerate() {
            let r = run(&rt, mode, back_to_back, None);
            rate[i].push(back_to_back as f64 / r.elapsed.as_secs_f64());
            let mut l = run(&rt, mode, paced, Some(pause)).latencies;
            l.sort_unstable();
            p50[i].push(percentile(&l, 0.5));
            p99[i].push(percentile(&l, 0.99));
        }
        sync_w.push(broadcasts(&rt, false, back_to_back));
        async_w.push(broadcasts(&rt, true, back_to_back));
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let rate: Vec<f64> = rate.into_iter().map(median).collect();
    let p50: Vec<f64> = p50.into_iter().map(median).collect();
    let p99: Vec<f64> = p99.into_iter().map(median).collect();
    let (sync_w, async_w) = (median(sync_w), median(async_w));
    println!(
        "{rounds} rounds, medians; {back_to_back} back-to-back and {paced} paced ({} µs apart) 64-byte broadcasts, one listener",
        pause.as_micros()
    );
    for (i, mode) in MODES.iter().enumerate() {
        println!(
            "{:>5}: {:>9.0} messages/s, latency p50 {:>7.1} µs, p99 {:>7.1} µs",
            mode.name(),
            rate[i],
            p50[i],
            p99[i]
        );
    }
    let (a, read, sub) = (2, 0, 1);
    for (base, name) in [(read, "blocking"), (sub, "subscription")] {
        println!(
            "async/{name} delivery {:.0} vs {:.0} messages/s, ratio {:.2}x",
            rate[a],
            rate[base],
            rate[a] / rate[base]
        );
        println!(
            "async/{name} latency p50 {:.1} vs {:.1} µs, ratio {:.2}x",
            p50[a],
            p50[base],
            p50[base] / p50[a]
        );
        println!(
            "async/{name} latency p99 {:.1} vs {:.1} µs, ratio {:.2}x",
            p99[a],
            p99[base],
            p99[base] / p99[a]
        );
    }
    println!(
        "async/blocking broadcast {async_w:.0} vs {sync_w:.0} broadcasts/s, ratio {:.2}x",
        async_w / sync_w
    );
}
