//! Broadcast benchmark (not a test). One command:
//!
//! ```text
//! cargo run --release --example bench [-- --spin MICROS] [--quick] [--peers]
//! ```
//!
//! For L = 0, 1, 2, 4, 8, 16 listener processes (read loop and poller) and
//! 64- and 2000-byte messages it prints broadcasts per second, p50 / p99
//! latency from `write` to the listener, and the cost of one broadcast as a
//! ratio of a blocking pipe round trip between two processes, measured in
//! the same run. Writer and listeners spin before blocking as the library
//! does by default (`BUS_SPIN_US`, else not at all), or up to `--spin MICROS`
//! (`--spin 0`: never); the CPU time used per broadcast is printed either
//! way.
//! `--peers` adds the floor (the cost of one listener and of each extra
//! one, with and without spinning) and the comparison with D-Bus and a
//! Unix-socket fan-out (test/bench_peers.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bus::{Access, Bus, Clock, Message, SpinStats};

#[path = "bench_peers.rs"]
mod peers;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench(&args);
}

/// `--spin MICROS`, else the library's default (`bus::default_spin`:
/// `BUS_SPIN_US`, else none).
fn spin_of(args: &[String]) -> Duration {
    args.iter()
        .position(|a| a == "--spin")
        .map(|i| Duration::from_micros(args[i + 1].parse().expect("--spin MICROS")))
        .unwrap_or_else(bus::default_spin)
}

fn now_ns() -> u64 {
    Clock::MONOTONIC.now().as_nanos() as u64
}

/// The helper program (test/peer.rs) that plays the listeners and the
/// pipe's other end, next to this example; built first if missing (`cargo
/// run --example bench` builds this example only).
fn peer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let peer = exe.with_file_name("peer");
    if !peer.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release", "--example", "peer"])
            .status()
            .expect("run cargo");
        assert!(built.success() && peer.exists(), "cannot build the peer");
    }
    peer
}

/// CPU time (user + system) of this process and its reaped children.
fn cpu_time() -> Duration {
    let usage = |who| {
        let r = nix::sys::resource::getrusage(who).expect("getrusage");
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
        };
        t(r.user_time()) + t(r.system_time())
    };
    usage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        + usage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// Mean time of a blocking one-byte round trip through two pipes.
fn pipe_round_trip(rounds: u32) -> Duration {
    let mut child = Command::new(peer())
        .arg("pipe-echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = child.stdout.take().unwrap();
    let mut byte = [7u8; 1];
    for _ in 0..1000 {
        to.write_all(&byte).unwrap();
        from.read_exact(&mut byte).unwrap();
    }
    let start = Instant::now();
    for _ in 0..rounds {
        to.write_all(&byte).unwrap();
        from.read_exact(&mut byte).unwrap();
    }
    let took = start.elapsed() / rounds;
    drop(to);
    child.wait().unwrap();
    took
}

struct Row {
    listeners: usize,
    mode: &'static str,
    size: usize,
    per_second: f64,
    cost: Duration,
    p50: Duration,
    p99: Duration,
    cpu: Duration,
    /// What spinning did, in the writer and the listeners together.
    spin: SpinStats,
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[i])
}

fn run(
    path: &std::path::Path,
    listeners: usize,
    mode: &'static str,
    size: usize,
    count: u32,
    spin: Duration,
) -> Row {
    let mut children: Vec<_> = (0..listeners)
        .map(|_| {
            let mut c = Command::new(peer())
                .arg("latency")
                .arg(path)
                .arg(mode)
                .arg(spin.as_micros().to_string())
                .arg("spin-stats")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = BufReader::new(c.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            (c, out)
        })
        .collect();
    let bus = Bus::open(path, Access::Write).unwrap();
    bus.set_spin(spin);
    let padding = "x".repeat(size.saturating_sub(21));
    let message = |ts: u64| Message::new(format!("{ts:020} {padding}")).unwrap();
    for _ in 0..(count / 20).max(100) {
        bus.write(&message(now_ns())).unwrap(); // warm up
    }
    let cpu_before = cpu_time();
    let start = Instant::now();
    for _ in 0..count {
        bus.write(&message(now_ns())).unwrap();
    }
    let took = start.elapsed();
    bus.write(&Message::new("end").unwrap()).unwrap();
    let mut latencies = Vec::new();
    let mut spin_stats = bus.spin_stats();
    for (mut c, mut out) in children.drain(..) {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        let mut lines = text.lines();
        let numbers = |line: Option<&str>| -> Vec<u64> {
            line.unwrap_or_default()
                .split_whitespace()
                .map(|n| n.parse::<u64>().unwrap())
                .collect()
        };
        latencies.extend(numbers(lines.next()));
        if let [waits, gated, spun_waits, won, ns] = numbers(lines.next())[..] {
            spin_stats = spin_stats
                + SpinStats {
                    waits,
                    gated,
                    spun: spun_waits,
                    won,
                    spinning: Duration::from_nanos(ns),
                };
        }
        c.wait().unwrap();
    }
    let cpu = cpu_time() - cpu_before;
    latencies.sort_unstable();
    Row {
        listeners,
        mode,
        size,
        per_second: f64::from(count) / took.as_secs_f64(),
        cost: took / count,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        cpu: cpu / count,
        spin: spin_stats,
    }
}

fn bench(args: &[String]) {
    let spin = spin_of(args);
    let quick = args.iter().any(|a| a == "--quick");
    let with_peers = args.iter().any(|a| a == "--peers");
    let dir = std::env::temp_dir().join(format!("bus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = bus::create(Some(&dir.join("bus")), true).unwrap();
    let cleanup = || {
        let _ = bus::unlink(&path);
        let _ = std::fs::remove_dir_all(&dir);
    };
    let result = std::panic::catch_unwind(|| {
        let rt = pipe_round_trip(if quick { 5_000 } else { 50_000 });
        println!("machine at start: {}", machine());
        println!(
            "baseline: blocking pipe round trip between two processes: {:.2} us",
            us(rt)
        );
        println!(
            "spinning before blocking: {}",
            match (spin.is_zero(), spin == bus::default_spin()) {
                (true, _) => "off".to_string(),
                (false, true) => format!("{} us (the default)", spin.as_micros()),
                (false, false) => format!("{} us", spin.as_micros()),
            }
        );
        println!();
        println!(
            "{:>3} {:>5} {:>5} {:>12} {:>10} {:>9} {:>9} {:>9} {:>10}",
            "L",
            "mode",
            "bytes",
            "broadcast/s",
            "cost us",
            "cost/rt",
            "p50 us",
            "p99 us",
            "cpu us/msg"
        );
        for size in [64, 2000] {
            for listeners in [0usize, 1, 2, 4, 8, 16] {
                for mode in ["read", "poll"] {
                    if listeners == 0 && mode == "poll" {
                        continue;
                    }
                    let count = if quick {
                        2_000
                    } else {
                        20_000 / (1 + listeners as u32 / 4)
                    };
                    let r = run(&path, listeners, mode, size, count, spin);
                    println!(
                        "{:>3} {:>5} {:>5} {:>12.0} {:>10.2} {:>9.3} {:>9.2} {:>9.2} {:>10.2}",
                        r.listeners,
                        if r.listeners == 0 { "-" } else { r.mode },
                        r.size,
                        r.per_second,
                        us(r.cost),
                        r.cost.as_secs_f64() / rt.as_secs_f64(),
                        us(r.p50),
                        us(r.p99),
                        us(r.cpu),
                    );
                }
            }
        }
        if with_peers {
            // Spinning for the floor: the budget asked for, else 50 us.
            let budget = if spin.is_zero() {
                Duration::from_micros(50)
            } else {
                spin
            };
            peers::floor(&path, rt, quick, budget);
            peers::peers(&path, &dir, quick, spin);
        }
        println!();
        println!("machine at end: {}", machine());
    });
    cleanup();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// How busy the machine is: its cores, the load average over the last
/// minute and the tasks runnable now (this one included), from
/// /proc/loadavg (other engineers' builds show up here).
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = load.split_whitespace().collect();
    let runnable = fields
        .get(3)
        .and_then(|f| f.split('/').next())
        .unwrap_or("?");
    format!(
        "{cores} cores, load average {} (1 min), {runnable} tasks runnable now",
        fields.first().unwrap_or(&"?")
    )
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
