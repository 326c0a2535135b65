//! Benchmark helper for test/erlang/bench: the Rust side of each
//! comparison, using only the core crate's public API.
//!
//! ```text
//! bus_bench listen PATH N       join, print "listening", take N messages,
//!                               print "<N> <seconds from first to last>"
//! bus_bench broadcast PATH N    broadcast N messages, print "<N> <seconds>"
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use bus::{Access, Bus, Event, Flow, Message};

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
    let [command, path, n] = args.as_slice() else {
        return Err("usage: bus_bench listen|broadcast PATH N".into());
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
