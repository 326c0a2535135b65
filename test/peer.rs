//! A test peer: one process that listens or broadcasts on a bus, driven by
//! the multi-process tests (stress, faults). Built as a cargo example so
//! `cargo test` builds it; not a product.
//!
//! ```text
//! peer read  PATH [LEAVE_AFTER]   listen with the callback loop
//! peer poll  PATH [LEAVE_AFTER]   listen with a poller
//! peer write PATH COUNT TAG       broadcast "TAG 0" .. "TAG COUNT-1"
//! ```
//! A listener prints `ready` once counted on the bus, then one line per
//! message, and exits after the message `end` (or after LEAVE_AFTER
//! messages). A writer prints `done` after its last broadcast.

use std::io::{BufWriter, Write};

use bus::{Access, Bus, Event, Flow, Message};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().map(String::as_str).unwrap_or("");
    let path = args.get(1).expect("PATH");
    let result = match role {
        "read" | "poll" => listen(
            path,
            role == "poll",
            args.get(2).map(|n| n.parse().expect("LEAVE_AFTER")),
        ),
        "write" => write(path, args[2].parse().expect("COUNT"), &args[3]),
        _ => panic!("unknown role {role:?}"),
    };
    if let Err(e) = result {
        eprintln!("peer {role}: {e}");
        std::process::exit(1);
    }
}

fn listen(path: &str, poll: bool, leave_after: Option<u64>) -> bus::Result<()> {
    let bus = Bus::open(path, Access::ReadOnly)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut seen = 0u64;
    // Returns whether to keep listening.
    let mut take = |out: &mut BufWriter<_>, m: &[u8]| {
        if m == b"end" {
            return false;
        }
        out.write_all(m)
            .and_then(|()| out.write_all(b"\n"))
            .expect("stdout");
        seen += 1;
        leave_after != Some(seen)
    };
    let ready = |out: &mut BufWriter<_>| {
        out.write_all(b"ready\n")
            .and_then(|()| out.flush())
            .expect("stdout");
    };
    if poll {
        let mut poller = bus.poller()?;
        ready(&mut out);
        loop {
            let m = poller.poll()?;
            if !take(&mut out, m) {
                break;
            }
        }
    } else {
        bus.read(|event| match event {
            Event::Listening => {
                ready(&mut out);
                Flow::Continue
            }
            Event::Message(m) if take(&mut out, m) => Flow::Continue,
            Event::Message(_) => Flow::Stop,
        })?;
    }
    out.flush().expect("stdout");
    Ok(())
}

fn write(path: &str, count: u64, tag: &str) -> bus::Result<()> {
    let bus = Bus::open(path, Access::Write)?;
    for i in 0..count {
        bus.write(&Message::new(format!("{tag} {i}"))?)?;
    }
    println!("done");
    Ok(())
}
