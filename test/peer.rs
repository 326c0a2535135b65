//! The one helper program of the multi-process tests and the benchmarks:
//! a process that listens or broadcasts on a bus, driven by its arguments.
//! Built as a cargo example so `cargo test` builds it; not a product.
//!
//! ```text
//! peer read  PATH [LEAVE_AFTER]   listen with the callback loop: "ready",
//! peer poll  PATH [LEAVE_AFTER]   then each message on a line, until "end"
//!                                 or LEAVE_AFTER messages (stress, faults)
//! peer latency PATH read|poll|handoff SPIN_US [spin-stats]
//!                                 "ready", then, at "end", the latencies in
//!                                 ns of the messages (each starts with its
//!                                 send time) on one line, sorted (bench);
//!                                 spin-stats (read|poll): then a line
//!                                 "WAITS GATED SPUN WON NS", what spinning
//!                                 did (`Bus::spin_stats`);
//!                                 handoff: a read loop passing each message
//!                                 to a thread of its own, which stamps it
//!                                 (one more wake-up, as a listener thread
//!                                 feeding another thread pays)
//! peer count PATH N               "ready", take N messages, print "<N>
//!                                 <seconds from the first to the last>"
//! peer write PATH COUNT TAG       broadcast "TAG 0" .. "TAG COUNT-1", "done"
//! peer broadcast PATH N           broadcast N messages, print "<N> <seconds>"
//! peer feed PATH... RATE          until SIGTERM/SIGINT, rounds 1, 2, ...
//!                                 ("<i>" on each bus in turn), RATE rounds a
//!                                 second; print "<rounds> <seconds>", every
//!                                 round whole (the hot-upgrade test)
//! peer pipe-echo                  echo each byte of stdin (the benchmark's
//!                                 pipe round trip)
//! peer burn                       keep one core busy until killed (the
//!                                 benchmark's busy machine)
//! peer bus-recv PATH PACED COUNT SPIN_US
//! peer dbus-recv ADDRESS PACED COUNT
//! peer socket-recv PATH SIZE PACED COUNT
//!                                 one receiver of the benchmark's comparison
//!                                 with its peers (test/bench_peers.rs): on
//!                                 a bus, as a D-Bus signal receiver on the
//!                                 bus daemon at ADDRESS, or as a client of a
//!                                 Unix-socket fan-out at PATH (SIZE-byte
//!                                 messages); "ready" once no later message
//!                                 can be missed, then "." after each of the
//!                                 first PACED messages, then after COUNT
//!                                 more, one line: the time the last one
//!                                 arrived (ns, monotonic clock) and the
//!                                 latencies (ns) of the PACED ones
//! ```
//! "ready" means counted on the bus: no later broadcast is missed.
//! SPIN_US: the spinning budget in microseconds, or `default` (what
//! `Bus::open` gives: `BUS_SPIN_US`, else none).

use std::io::{BufWriter, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus::{Access, Bus, Clock, Event, Flow, Message, StopToken};

type Outcome = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let result = match role {
        "read" | "poll" => listen_lines(arg(1), role == "poll", arg(2).parse().ok()),
        "latency" if arg(2) == "handoff" => latency_handoff(arg(1), arg(3)),
        "latency" => latency(arg(1), arg(2) == "poll", arg(3), arg(4) == "spin-stats"),
        "count" => count(arg(1), arg(2)),
        "write" => write(arg(1), arg(2), arg(3)),
        "broadcast" => broadcast(arg(1), arg(2)),
        "feed" if args.len() >= 3 => feed(&args[1..args.len() - 1], arg(args.len() - 1)),
        "pipe-echo" => pipe_echo(),
        "burn" => burn(),
        "bus-recv" => Sink::new(arg(2), arg(3)).and_then(|sink| bus_recv(arg(1), arg(4), sink)),
        "dbus-recv" => Sink::new(arg(2), arg(3)).and_then(|sink| dbus_recv(arg(1), sink)),
        "socket-recv" => {
            Sink::new(arg(3), arg(4)).and_then(|sink| socket_recv(arg(1), arg(2), sink))
        }
        _ => Err(format!("unknown role {role:?} (see test/peer.rs)").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Listens (read loop or poller) and hands each message to `each` until it
/// returns false; `ready` is called once counted on the bus.
fn listen(
    bus: &Bus,
    poll: bool,
    mut ready: impl FnMut(),
    mut each: impl FnMut(&[u8]) -> bool,
) -> bus::Result<()> {
    if poll {
        let mut poller = bus.poller()?;
        ready();
        while each(poller.poll()?) {}
        Ok(())
    } else {
        bus.read(|event| match event {
            Event::Listening => {
                ready();
                Flow::Continue
            }
            Event::Message(m) if each(m) => Flow::Continue,
            Event::Message(_) => Flow::Stop,
        })
    }
}

fn say_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn listen_lines(path: &str, poll: bool, leave_after: Option<u64>) -> Outcome {
    let bus = Bus::open(path, Access::ReadOnly)?;
    let stdout = std::io::stdout();
    let out = std::cell::RefCell::new(BufWriter::with_capacity(1 << 16, stdout.lock()));
    let mut seen = 0u64;
    let ready = || {
        let mut out = out.borrow_mut();
        out.write_all(b"ready\n")
            .and_then(|()| out.flush())
            .expect("stdout");
    };
    listen(&bus, poll, ready, |m| {
        if m == b"end" {
            return false;
        }
        let mut out = out.borrow_mut();
        out.write_all(m)
            .and_then(|()| out.write_all(b"\n"))
            .expect("stdout");
        seen += 1;
        leave_after != Some(seen)
    })?;
    out.borrow_mut().flush()?;
    Ok(())
}

/// Sets the spinning budget SPIN_US asks for (`default`: leaves it).
fn set_spin(bus: &Bus, spin_us: &str) -> Outcome {
    if spin_us != "default" {
        bus.set_spin(Duration::from_micros(spin_us.parse()?));
    }
    Ok(())
}

fn now_ns() -> u64 {
    Clock::MONOTONIC.now().as_nanos() as u64
}

fn latency(path: &str, poll: bool, spin_us: &str, spin_stats: bool) -> Outcome {
    let bus = Bus::open(path, Access::ReadOnly)?;
    set_spin(&bus, spin_us)?;
    let mut latencies = Vec::with_capacity(1 << 20);
    listen(&bus, poll, say_ready, |m| {
        let now = now_ns();
        match sent_at(m) {
            Some(sent) => latencies.push(now.saturating_sub(sent)),
            None => return false,
        }
        true
    })?;
    print_sorted(latencies);
    if spin_stats {
        let s = bus.spin_stats();
        let ns = s.spinning.as_nanos();
        println!("{} {} {} {} {ns}", s.waits, s.gated, s.spun, s.won);
    }
    Ok(())
}

/// The same latencies, stamped on a second thread the listener hands each
/// message to (a queue under a mutex and a condition variable: the second
/// thread sleeps until woken, one more thread wake-up per message).
fn latency_handoff(path: &str, spin_us: &str) -> Outcome {
    use std::collections::VecDeque;
    use std::sync::{Arc, Condvar, Mutex};
    let bus = Bus::open(path, Access::ReadOnly)?;
    set_spin(&bus, spin_us)?;
    // None marks the end.
    let queue = Arc::new((
        Mutex::new(VecDeque::<Option<Vec<u8>>>::new()),
        Condvar::new(),
    ));
    let stamper = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let mut latencies = Vec::with_capacity(1 << 20);
            let (items, woken) = &*queue;
            let mut items = items.lock().unwrap();
            loop {
                match items.pop_front() {
                    Some(Some(m)) => {
                        let now = now_ns();
                        if let Some(sent) = sent_at(&m) {
                            latencies.push(now.saturating_sub(sent));
                        }
                    }
                    Some(None) => return latencies,
                    None => items = woken.wait(items).unwrap(),
                }
            }
        })
    };
    let hand = |item: Option<Vec<u8>>| {
        let (items, woken) = &*queue;
        items.lock().unwrap().push_back(item);
        woken.notify_one();
    };
    listen(&bus, false, say_ready, |m| {
        let end = sent_at(m).is_none();
        hand(if end { None } else { Some(m.to_vec()) });
        !end
    })?;
    print_sorted(stamper.join().map_err(|_| "the stamping thread panicked")?);
    Ok(())
}

/// The send time a latency message starts with; None for "end".
fn sent_at(m: &[u8]) -> Option<u64> {
    (!m.starts_with(b"end")).then(|| sent_ns(m))
}

fn print_sorted(mut latencies: Vec<u64>) {
    latencies.sort_unstable();
    let line: Vec<String> = latencies.iter().map(u64::to_string).collect();
    println!("{}", line.join(" "));
}

fn count(path: &str, n: &str) -> Outcome {
    let n: u64 = n.parse()?;
    let bus = Bus::open(path, Access::ReadOnly)?;
    let (mut seen, mut first) = (0u64, None);
    listen(&bus, false, say_ready, |_| {
        first.get_or_insert_with(Instant::now);
        seen += 1;
        seen < n
    })?;
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("{seen} {secs:.6}");
    Ok(())
}

fn write(path: &str, count: &str, tag: &str) -> Outcome {
    let count: u64 = count.parse()?;
    let bus = Bus::open(path, Access::Write)?;
    for i in 0..count {
        bus.write(&Message::new(format!("{tag} {i}"))?)?;
    }
    println!("done");
    Ok(())
}

fn broadcast(path: &str, n: &str) -> Outcome {
    let n: u64 = n.parse()?;
    let bus = Bus::open(path, Access::Write)?;
    let message = Message::from_this_process("bench")?;
    let start = Instant::now();
    for _ in 0..n {
        bus.write(&message)?;
    }
    println!("{n} {:.6}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Stops at the end of its standard input, or on SIGTERM (within the
/// signal's grace: a round held longer by a stopped listener is lost, with
/// the count). The stop is looked at between rounds only, so every bus
/// gets every round.
fn feed(paths: &[String], rate: &str) -> Outcome {
    let rate: u64 = rate.parse()?;
    let buses = paths
        .iter()
        .map(|p| Bus::open(p, Access::Write))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = StopToken::on_termination_signals()?;
    let eof = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        eof.stop();
    });
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

fn pipe_echo() -> Outcome {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut byte = [0u8; 1];
    while input.read_exact(&mut byte).is_ok() {
        if output
            .write_all(&byte)
            .and_then(|()| output.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

fn burn() -> Outcome {
    let mut x = 1u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// What a receiver of the comparison with the peers does with each message
/// (each starts with its send time on the monotonic clock, in ns).
struct Sink {
    paced: u64,
    total: u64,
    seen: u64,
    latencies: Vec<u64>,
    last_ns: u64,
}

impl Sink {
    fn new(paced: &str, count: &str) -> Result<Sink, Box<dyn std::error::Error>> {
        let paced: u64 = paced.parse()?;
        Ok(Sink {
            paced,
            total: paced + count.parse::<u64>()?,
            seen: 0,
            latencies: Vec::with_capacity(paced as usize),
            last_ns: 0,
        })
    }

    /// Takes one message; returns whether more are expected.
    fn take(&mut self, message: &[u8]) -> bool {
        let now = now_ns();
        self.seen += 1;
        if self.seen <= self.paced {
            self.latencies.push(now.saturating_sub(sent_ns(message)));
            // The sender waits for this before the next message.
            let mut out = std::io::stdout().lock();
            out.write_all(b".")
                .and_then(|()| out.flush())
                .expect("stdout");
        }
        self.last_ns = now;
        self.seen < self.total
    }

    fn report(mut self) -> Outcome {
        self.latencies.sort_unstable();
        let mut line = self.last_ns.to_string();
        for l in &self.latencies {
            line.push(' ');
            line.push_str(&l.to_string());
        }
        println!("{line}");
        Ok(())
    }
}

fn sent_ns(message: &[u8]) -> u64 {
    let end = message
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(message.len());
    std::str::from_utf8(&message[..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("a message starting with its send time")
}

fn bus_recv(path: &str, spin_us: &str, mut sink: Sink) -> Outcome {
    let bus = Bus::open(path, Access::ReadOnly)?;
    set_spin(&bus, spin_us)?;
    if sink.total > 0 {
        listen(&bus, false, say_ready, |m| sink.take(m))?;
    }
    sink.report()
}

/// The interface of the benchmark's D-Bus signals.
const DBUS_INTERFACE: &str = "bus.Bench";

fn dbus_recv(address: &str, mut sink: Sink) -> Outcome {
    use dbus::channel::Channel;
    use dbus::message::MessageType;
    let mut channel = Channel::open_private(address)?;
    channel.register()?;
    let add_match = dbus::Message::new_method_call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "AddMatch",
    )?
    .append1(format!("type='signal',interface='{DBUS_INTERFACE}'"));
    // Once the daemon answers, the match rule is in force.
    channel.send_with_reply_and_block(add_match, Duration::from_secs(10))?;
    say_ready();
    let mut more = sink.total > 0;
    while more {
        let Some(message) = channel.blocking_pop_message(Duration::from_secs(60))? else {
            continue;
        };
        let ours = message.msg_type() == MessageType::Signal
            && message.interface().is_some_and(|i| &*i == DBUS_INTERFACE);
        if ours {
            let text: &str = message.read1()?;
            more = sink.take(text.as_bytes());
        }
    }
    sink.report()
}

fn socket_recv(path: &str, size: &str, mut sink: Sink) -> Outcome {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    // Connected: the broadcaster writes to every client it accepted, and
    // accepts them all before its first message.
    say_ready();
    let mut message = vec![0u8; size.parse()?];
    let mut more = sink.total > 0;
    while more {
        stream.read_exact(&mut message)?;
        more = sink.take(&message);
    }
    sink.report()
}
