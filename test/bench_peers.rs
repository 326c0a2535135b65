//! The benchmark's comparisons (`bench --peers`), in the same run:
//!
//! - the floor: the cost of a broadcast to one listener, and of each extra
//!   listener, as fractions of the pipe round trip, with and without
//!   spinning, on the machine as it is, with every core kept busy and
//!   with every process on one CPU, with what spinning did;
//! - the peers: for L = 1, 4, 16 receiver processes and 64-byte messages,
//!   this bus against D-Bus signals (a private `dbus-daemon` started here,
//!   libdbus through the `dbus` crate on both sides) and a Unix-socket
//!   fan-out (one broadcaster writing each message to L connected clients).
//!
//! Every message reaches every receiver. Throughput: messages sent back to
//! back, from the first send until the last receiver has the last message
//! (D-Bus and the sockets queue, the bus does not). Latency: paced, one
//! message in flight (the next is sent once every receiver said it has
//! the previous one), from the send to the receiver, p50 and p99. The
//! receivers are `peer bus-recv | dbus-recv | socket-recv` (test/peer.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use bus::{Access, Bus, Message};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use super::{now_ns, peer, percentile, run, us};

/// The interface and member of the benchmark's D-Bus signals (as in
/// test/peer.rs).
const DBUS_INTERFACE: &str = "bus.Bench";
const DBUS_MEMBER: &str = "Message";

const SIZE: usize = 64;

/// Receiver processes; any still running when dropped are killed.
struct Receivers {
    children: Vec<(Child, BufReader<ChildStdout>)>,
}

impl Receivers {
    /// Starts `n` receivers, `peer ROLE ARGS...`, each once the one before
    /// it says "ready".
    fn spawn(n: usize, role: &str, args: &[String]) -> Receivers {
        let mut receivers = Receivers {
            children: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let mut child = Command::new(peer())
                .arg(role)
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a receiver");
            let mut out = BufReader::new(child.stdout.take().unwrap());
            // Held before the wait, so that a failure kills it too.
            let mut line = String::new();
            let read = out.read_line(&mut line);
            receivers.children.push((child, out));
            read.unwrap();
            assert_eq!(line.trim(), "ready", "receiver {role}");
        }
        receivers
    }

    /// Waits until every receiver has acknowledged one paced message.
    fn await_acks(&mut self) {
        for (_, out) in &mut self.children {
            let mut dot = [0u8; 1];
            out.read_exact(&mut dot)
                .expect("a receiver's acknowledgement");
            assert_eq!(&dot, b".");
        }
    }

    /// Waits for the receivers' reports: the latest arrival of the last
    /// message (ns) and every paced latency (ns), sorted.
    fn finish(mut self) -> (u64, Vec<u64>) {
        let (mut last, mut latencies) = (0u64, Vec::new());
        for (mut child, mut out) in self.children.drain(..) {
            let mut report = String::new();
            out.read_to_string(&mut report).unwrap();
            let mut numbers = report.split_whitespace().map(|n| n.parse::<u64>().unwrap());
            last = last.max(numbers.next().expect("a receiver's report"));
            latencies.extend(numbers);
            assert!(child.wait().unwrap().success(), "a receiver failed");
        }
        latencies.sort_unstable();
        (last, latencies)
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One way of sending a message to every receiver.
trait Broadcast {
    fn send(&mut self, message: &str);
}

struct BusSender(Bus);

impl Broadcast for BusSender {
    fn send(&mut self, message: &str) {
        self.0
            .write(&Message::new(message).unwrap())
            .expect("broadcast");
    }
}

struct DbusSender(dbus::channel::Channel);

impl Broadcast for DbusSender {
    fn send(&mut self, message: &str) {
        let signal = dbus::Message::new_signal("/bus/Bench", DBUS_INTERFACE, DBUS_MEMBER)
            .unwrap()
            .append1(message);
        self.0.send(signal).expect("send a D-Bus signal");
        self.0.flush();
    }
}

struct SocketSender(Vec<UnixStream>);

impl Broadcast for SocketSender {
    fn send(&mut self, message: &str) {
        for stream in &mut self.0 {
            stream
                .write_all(message.as_bytes())
                .expect("write to a client");
        }
    }
}

/// A private D-Bus daemon, killed when dropped.
struct Daemon {
    child: Child,
    address: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let config = dir.join("dbus.conf");
        let socket = dir.join("dbus.socket");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--print-address", "--nofork"])
            .stdout(Stdio::piped())
            // As root in a container it complains that it cannot raise its
            // descriptor limit; a daemon that fails prints no address.
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon (Debian package dbus-daemon; see .ci/setup)");
        let mut address = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let daemon = Daemon {
            child,
            address: address.trim().to_string(),
        };
        assert!(!daemon.address.is_empty(), "dbus-daemon printed no address");
        daemon
    }

    fn sender(&self) -> DbusSender {
        let mut channel = dbus::channel::Channel::open_private(&self.address).unwrap();
        channel.register().unwrap();
        DbusSender(channel)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one transport did at one L.
struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends `paced` messages one at a time, then `count` back to back.
fn measure(
    sender: &mut dyn Broadcast,
    mut receivers: Receivers,
    paced: u32,
    count: u32,
) -> Figures {
    let padding = "x".repeat(SIZE - 21);
    let message = || format!("{:020} {padding}", now_ns());
    for _ in 0..paced {
        sender.send(&message());
        receivers.await_acks();
    }
    let start = now_ns();
    for _ in 0..count {
        sender.send(&message());
    }
    let (last, latencies) = receivers.finish();
    Figures {
        per_second: f64::from(count) / (last.saturating_sub(start).max(1) as f64 / 1e9),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

fn on_bus(path: &Path, listeners: usize, paced: u32, count: u32, spin: Duration) -> Figures {
    let args = [
        path.display().to_string(),
        paced.to_string(),
        count.to_string(),
        spin.as_micros().to_string(),
    ];
    let receivers = Receivers::spawn(listeners, "bus-recv", &args);
    let bus = Bus::open(path, Access::Write).unwrap();
    bus.set_spin(spin);
    measure(&mut BusSender(bus), receivers, paced, count)
}

fn on_dbus(daemon: &Daemon, listeners: usize, paced: u32, count: u32) -> Figures {
    let args = [daemon.address.clone(), paced.to_string(), count.to_string()];
    let receivers = Receivers::spawn(listeners, "dbus-recv", &args);
    measure(&mut daemon.sender(), receivers, paced, count)
}

fn on_sockets(dir: &Path, listeners: usize, paced: u32, count: u32) -> Figures {
    let path = dir.join("fan-out.socket");
    let _ = std::fs::remove_file(&path);
    let server = UnixListener::bind(&path).unwrap();
    let args = [
        path.display().to_string(),
        SIZE.to_string(),
        paced.to_string(),
        count.to_string(),
    ];
    let receivers = Receivers::spawn(listeners, "socket-recv", &args);
    let clients = (0..listeners).map(|_| server.accept().unwrap().0).collect();
    drop(server);
    let _ = std::fs::remove_file(&path);
    measure(&mut SocketSender(clients), receivers, paced, count)
}

/// Processes that keep every core busy (`peer burn`) while they live.
struct Burners(Vec<Child>);

impl Burners {
    fn start() -> Burners {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Burners(
            (0..cores)
                .map(|_| {
                    Command::new(peer())
                        .arg("burn")
                        .spawn()
                        .expect("start a burner")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The floor: L = 1, 2, 4, 8 read loops, without spinning and spinning
/// up to `spin`, as the machine is, with every core kept busy by another
/// process, and with writer and listeners sharing one CPU (their affinity
/// set to it; every wakeup then a switch on a running CPU, none waking an
/// idle one), as fractions of the pipe round trip `rt`. The cost of an
/// extra listener is the least-squares slope over L; the CPU time is that
/// of the writer and the listeners (not the burners'); what spinning did
/// is counted by the library (`Bus::spin_stats`) in all of them.
pub fn floor(path: &Path, rt: Duration, quick: bool, spin: Duration) {
    println!();
    println!("floor: one broadcast's cost as a fraction of the pipe round trip");
    println!("  (spun/gated: the waits, in writer and listeners, that spun / that the gate kept from spinning)");
    for place in [Place::AsIs, Place::CoresBusy, Place::OneCpu] {
        let burners = (place == Place::CoresBusy).then(Burners::start);
        let pinned = (place == Place::OneCpu).then(OneCpu::enter);
        for budget in [Duration::ZERO, spin] {
            floor_row(path, rt, quick, budget, place);
        }
        drop(pinned);
        drop(burners);
    }
}

/// Where the floor is measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    AsIs,
    CoresBusy,
    OneCpu,
}

/// This process (and the processes it starts meanwhile) on the first CPU
/// it may use, until dropped.
struct OneCpu(CpuSet);

impl OneCpu {
    fn enter() -> OneCpu {
        let all = sched_getaffinity(Pid::from_raw(0)).expect("read this process's CPUs");
        let first = (0..CpuSet::count())
            .find(|&cpu| all.is_set(cpu).unwrap_or(false))
            .expect("a CPU to run on");
        let mut one = CpuSet::new();
        one.set(first).expect("a CPU index");
        sched_setaffinity(Pid::from_raw(0), &one).expect("keep to one CPU");
        OneCpu(all)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.0);
    }
}

fn floor_row(path: &Path, rt: Duration, quick: bool, spin: Duration, place: Place) {
    let count = if quick { 2_000 } else { 10_000 };
    let rows: Vec<_> = [1usize, 2, 4, 8]
        .iter()
        .map(|&l| run(path, l, "read", SIZE, count, spin))
        .collect();
    let ratio = |d: Duration| d.as_secs_f64() / rt.as_secs_f64();
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.listeners as f64, ratio(r.cost)))
        .collect();
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    let percent = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
    println!(
        "  {:<10} spin {:>3} us: L=1 {:.3} rt (p50 {:.1} us, cpu {:.1} us/msg), each extra listener {:.3} rt; at L=1,2,4,8: {} rt, cpu {} us/msg, spun/gated % {}",
        match place {
            Place::AsIs => "as is",
            Place::CoresBusy => "cores busy",
            Place::OneCpu => "one cpu",
        },
        spin.as_micros(),
        ratio(rows[0].cost),
        us(rows[0].p50),
        us(rows[0].cpu),
        slope,
        points
            .iter()
            .map(|p| format!("{:.2}", p.1))
            .collect::<Vec<_>>()
            .join(" "),
        rows.iter()
            .map(|r| format!("{:.1}", us(r.cpu)))
            .collect::<Vec<_>>()
            .join(" "),
        rows.iter()
            .map(|r| format!(
                "{:.0}/{:.0}",
                percent(r.spin.spun, r.spin.waits),
                percent(r.spin.gated, r.spin.waits)
            ))
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// The comparison with D-Bus and a Unix-socket fan-out.
pub fn peers(path: &Path, dir: &Path, quick: bool, spin: Duration) {
    let (paced, count) = if quick { (300, 2_000) } else { (2_000, 10_000) };
    let daemon = Daemon::start(dir);
    println!();
    println!(
        "peers, {SIZE}-byte messages to L receivers: messages/s back to back (until the last \
         receiver has the last one), p50/p99 us paced (one in flight); bus spin {} us",
        spin.as_micros()
    );
    for listeners in [1usize, 4, 16] {
        let ours = on_bus(path, listeners, paced, count, spin);
        let dbus = on_dbus(&daemon, listeners, paced, count);
        let sockets = on_sockets(dir, listeners, paced, count);
        let latency = |f: &Figures| format!("{:.1}/{:.1}", us(f.p50), us(f.p99));
        println!(
            "L={listeners:<2} msg/s bus {:.0} dbus {:.0} socket {:.0} | p50/p99 us bus {} dbus {} socket {} | vs dbus {:.2}x vs socket {:.2}x",
            ours.per_second,
            dbus.per_second,
            sockets.per_second,
            latency(&ours),
            latency(&dbus),
            latency(&sockets),
            ours.per_second / dbus.per_second,
            ours.per_second / sockets.per_second,
        );
    }
}
