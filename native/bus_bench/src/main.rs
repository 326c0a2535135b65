//! Benchmark helper for test/erlang/bench: the Rust side of each
//! comparison, using only the core crate's public API.
//!
//! ```text
//! bus_bench listen PATH N       join, print "listening", take N messages,
//!                               print "<N> <seconds from first to last>"
//! bus_bench broadcast PATH N    broadcast N messages, print "<N> <seconds>"
//! bus_bench feed PATH... RATE   until SIGTERM/SIGINT, broadcast rounds
//!                               1, 2, ... ("<i>" on each bus in turn),
//!                               RATE rounds per second; print
//!                               "<rounds> <seconds>", every round whole
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus::{Access, Bus, Event, Flow, Message, StopToken};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, paths @ .., rate] = args.as_slice() {
        if command == "feed" && !paths.is_empty() {
            return feed(paths, rate.parse()?);
        }
    }
    let [command, path, n] = args.as_slice() else {
        return Err("usage: bus_bench listen|broadcast PATH N | feed PATH... RATE".into());
    };
    let n: u64 = n.parse()?;
    match command.as_str() {
        "listen" => listen(path, n),
        "broadcast" => broadcast(path, n),
        _ => Err(format!("unknown command {command}").into()),
    }
}

fn listen(path: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::open(path, Access::ReadOnly)?;
    let mut seen = 0u64;
    let mut first = None;
    bus.read(|event| match event {
        Event::Listening => {
            println!("listening");
            let _ = std::io::stdout().flush();
            Flow::Continue
        }
        Event::Message(_) => {
            first.get_or_insert_with(Instant::now);
            seen += 1;
            if seen == n {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
    })?;
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("{seen} {secs:.6}");
    Ok(())
}

fn broadcast(path: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::open(path, Access::Write)?;
    let message = Message::new(format!("{} bench", std::process::id()))?;
    let start = Instant::now();
    for _ in 0..n {
        bus.write(&message)?;
    }
    println!("{n} {:.6}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Numbered rounds on several buses at a steady rate, for the hot-upgrade
/// test: each subscriber must see 1, 2, ... with nothing lost or repeated.
/// The stop is looked at between rounds only, so every bus gets every
/// round counted.
fn feed(paths: &[String], rate: u64) -> Result<(), Box<dyn std::error::Error>> {
    let buses = paths
        .iter()
        .map(|p| Bus::open(p, Access::Write))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = StopToken::on_termination_signals()?;
    let start = Instant::now();
    let mut round = 0u64;
    while !stop.is_stopped() {
        let message = Message::new((round + 1).to_string())?;
        for bus in &buses {
            bus.write(&message)?;
        }
        round += 1;
        // Paced against the start, so a slow round is caught up.
        let due = Duration::from_secs_f64(round as f64 / rate.max(1) as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    println!("{round} {:.6}", start.elapsed().as_secs_f64());
    Ok(())
}
