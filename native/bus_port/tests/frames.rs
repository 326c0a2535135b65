//! The port program as the node sees it: the real binary, spoken to in
//! frames over its stdin and stdout. Buses are made in a temporary
//! directory through the core crate and removed at the end of each test
//! (System V objects outlive processes). Run in an IPC namespace of its
//! own: `unshare --ipc cargo test -p bus_port --release`.
//!
//! No test sleeps or measures time: each waits for the frame that says
//! what it waits for. (Receiving has a generous bound, so that a bug hangs
//! no test run for ever.)

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use bus::{Access, Bus, Message, Overflow, SubscribeOptions, Subscription};

/// How long a frame may take before the test is declared hung.
const HANG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------
// A tiny decoder of the external term format, for the replies.

#[derive(Clone, Debug, PartialEq, Eq)]
enum T {
    Atom(String),
    Int(i128),
    Bin(Vec<u8>),
    Tuple(Vec<T>),
    Map(Vec<(T, T)>),
}

fn atom(name: &str) -> T {
    T::Atom(name.into())
}

fn bin(bytes: impl AsRef<[u8]>) -> T {
    T::Bin(bytes.as_ref().to_vec())
}

fn ok(value: T) -> T {
    T::Tuple(vec![atom("ok"), value])
}

fn error(reason: T) -> T {
    T::Tuple(vec![atom("error"), reason])
}

fn path_bin(path: &Path) -> T {
    bin(path.as_os_str().as_bytes())
}

impl T {
    /// The value of `key` in a map with atom keys.
    fn get(&self, key: &str) -> &T {
        let T::Map(pairs) = self else {
            panic!("not a map: {self:?}")
        };
        pairs
            .iter()
            .find(|(k, _)| *k == atom(key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    fn keys(&self) -> Vec<String> {
        let T::Map(pairs) = self else {
            panic!("not a map: {self:?}")
        };
        let mut keys: Vec<String> = pairs
            .iter()
            .map(|(k, _)| match k {
                T::Atom(a) => a.clone(),
                other => panic!("key {other:?}"),
            })
            .collect();
        keys.sort();
        keys
    }

    fn int(&self) -> i128 {
        match self {
            T::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The value of `{ok, Value}`.
    fn unwrap_ok(&self) -> &T {
        match self {
            T::Tuple(items) if items.len() == 2 && items[0] == atom("ok") => &items[1],
            other => panic!("not {{ok, _}}: {other:?}"),
        }
    }
}

fn decode(bytes: &[u8]) -> T {
    assert_eq!(bytes.first(), Some(&131), "no version byte: {bytes:?}");
    let mut rest = &bytes[1..];
    let term = decode_term(&mut rest);
    assert!(rest.is_empty(), "{} bytes after the term", rest.len());
    term
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head
}

fn be(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b))
}

fn decode_term(rest: &mut &[u8]) -> T {
    let tag = take(rest, 1)[0];
    match tag {
        97 => T::Int(i128::from(take(rest, 1)[0])),
        98 => T::Int(i128::from(i32::from_be_bytes(
            take(rest, 4).try_into().unwrap(),
        ))),
        110 => {
            let n = usize::from(take(rest, 1)[0]);
            let negative = take(rest, 1)[0] == 1;
            let magnitude = take(rest, n)
                .iter()
                .rev()
                .fold(0i128, |m, &b| m << 8 | i128::from(b));
            T::Int(if negative { -magnitude } else { magnitude })
        }
        100 | 118 => {
            let n = be(take(rest, 2));
            T::Atom(String::from_utf8(take(rest, n).to_vec()).unwrap())
        }
        115 | 119 => {
            let n = usize::from(take(rest, 1)[0]);
            T::Atom(String::from_utf8(take(rest, n).to_vec()).unwrap())
        }
        109 => {
            let n = be(take(rest, 4));
            T::Bin(take(rest, n).to_vec())
        }
        104 => {
            let n = usize::from(take(rest, 1)[0]);
            T::Tuple((0..n).map(|_| decode_term(rest)).collect())
        }
        105 => {
            let n = be(take(rest, 4));
            T::Tuple((0..n).map(|_| decode_term(rest)).collect())
        }
        116 => {
            let n = be(take(rest, 4));
            T::Map(
                (0..n)
                    .map(|_| (decode_term(rest), decode_term(rest)))
                    .collect(),
            )
        }
        other => panic!("tag {other} not decoded here"),
    }
}

// ---------------------------------------------------------------------
// The program, and its frames.

/// A frame from the program.
#[derive(Debug, PartialEq, Eq)]
enum F {
    Hello(u32, u32),
    Listening,
    Message(Vec<u8>),
    Own(Vec<u8>),
    Dropped(u64),
    Failed(T),
    Reply(u32, T),
    Complaint(String),
    Held,
}

fn parse(frame: &[u8]) -> F {
    let (kind, body) = frame
        .split_first()
        .expect("an empty frame from the program");
    match kind {
        b'H' => {
            assert_eq!(body.len(), 8, "{frame:?}");
            F::Hello(be(&body[..4]) as u32, be(&body[4..]) as u32)
        }
        b'J' => {
            assert!(body.is_empty());
            F::Listening
        }
        b'M' => F::Message(body.to_vec()),
        b'W' => F::Own(body.to_vec()),
        b'D' => F::Dropped(u64::from_be_bytes(body.try_into().unwrap())),
        b'F' => F::Failed(decode(body)),
        b'A' => {
            assert!(body.is_empty());
            F::Held
        }
        b'R' => F::Reply(be(&body[..4]) as u32, decode(&body[4..])),
        b'E' => F::Complaint(String::from_utf8(body.to_vec()).unwrap()),
        other => panic!("unknown frame kind {other} from the program"),
    }
}

struct Port {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Vec<u8>>,
    /// Frames read while looking for a reply.
    stash: VecDeque<F>,
    next_id: u32,
}

impl Port {
    /// Starts the program and checks its hello frame.
    fn start() -> Port {
        let mut port = Port::spawn();
        let hello = port.frame();
        assert_eq!(hello, F::Hello(1, port.child.id()));
        port
    }

    fn spawn() -> Port {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bus_port"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, frames) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut header = [0; 4];
            if stdout.read_exact(&mut header).is_err() {
                return;
            }
            let mut frame = vec![0; u32::from_be_bytes(header) as usize];
            stdout.read_exact(&mut frame).unwrap();
            if tx.send(frame).is_err() {
                return;
            }
        });
        Port {
            child,
            stdin,
            frames,
            stash: VecDeque::new(),
            next_id: 1,
        }
    }

    fn send(&mut self, frame: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        stdin.write_all(frame).unwrap();
        stdin.flush().unwrap();
    }

    /// The next frame (stashed ones first).
    fn frame(&mut self) -> F {
        if let Some(frame) = self.stash.pop_front() {
            return frame;
        }
        self.read()
    }

    fn read(&mut self) -> F {
        let frame = self
            .frames
            .recv_timeout(HANG)
            .expect("no frame from the program");
        parse(&frame)
    }

    /// Sends request `op` with `args`, and returns its reply; the frames
    /// that came before it are stashed.
    fn request(&mut self, op: u8, args: &[u8]) -> T {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = vec![b'Q'];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.push(op);
        frame.extend_from_slice(args);
        self.send(&frame);
        self.reply(id)
    }

    /// Waits for the reply to `id`, stashing the frames before it.
    fn reply(&mut self, id: u32) -> T {
        if let Some(i) = self
            .stash
            .iter()
            .position(|f| matches!(f, F::Reply(r, _) if *r == id))
        {
            let Some(F::Reply(_, term)) = self.stash.remove(i) else {
                unreachable!()
            };
            return term;
        }
        loop {
            match self.read() {
                F::Reply(r, term) if r == id => return term,
                other => self.stash.push_back(other),
            }
        }
    }

    /// A program listening on `path` with `window`, once it is counted.
    fn listening(path: &Path, window: u32) -> Port {
        let mut port = Port::start();
        port.listen(path, window);
        assert_eq!(port.frame(), F::Listening);
        port
    }

    /// `S`: the program leaves its bus and exits with status 0.
    fn stop(&mut self) {
        self.send(b"S");
        assert!(self.wait().success());
    }

    fn listen(&mut self, path: &Path, window: u32) {
        let mut frame = vec![b'L', 0];
        frame.extend_from_slice(&window.to_be_bytes());
        frame.extend_from_slice(path.as_os_str().as_bytes());
        self.send(&frame);
    }

    fn credit(&mut self, n: u32) {
        let mut frame = vec![b'C'];
        frame.extend_from_slice(&n.to_be_bytes());
        self.send(&frame);
    }

    /// The next frame must be a complaint.
    fn complaint(&mut self) -> String {
        match self.frame() {
            F::Complaint(text) => text,
            other => panic!("expected E, got {other:?}"),
        }
    }

    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn wait(&mut self) -> ExitStatus {
        self.close_stdin();
        self.child.wait().unwrap()
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // A test that failed half-way: the program leaves at its stdin's end.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------
// Requests' arguments.

fn with_path(head: &[u8], path: &Path) -> Vec<u8> {
    let mut args = head.to_vec();
    args.extend_from_slice(path.as_os_str().as_bytes());
    args
}

fn broadcast_args(path: &Path, message: &[u8], timeout: u32, nowait: bool) -> Vec<u8> {
    let path = path.as_os_str().as_bytes();
    let mut args = timeout.to_be_bytes().to_vec();
    args.push(u8::from(nowait));
    args.extend_from_slice(&(path.len() as u16).to_be_bytes());
    args.extend_from_slice(path);
    args.extend_from_slice(message);
    args
}

const INFINITY: u32 = u32::MAX;

// ---------------------------------------------------------------------
// Buses.

/// A bus in a temporary directory, removed when dropped.
struct TempBus {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempBus {
    fn new() -> TempBus {
        let dir = tempfile::tempdir().unwrap();
        let path = bus::create(Some(&dir.path().join("bus")), true).unwrap();
        TempBus { dir, path }
    }

    fn writer(&self) -> Bus {
        Bus::open(&self.path, Access::Write).unwrap()
    }

    fn listeners(&self) -> u32 {
        bus::stat(&self.path).unwrap().listeners()
    }
}

impl Drop for TempBus {
    fn drop(&mut self) {
        // Some tests remove it themselves.
        let _ = bus::unlink(&self.path);
    }
}

fn send(writer: &Bus, text: &str) {
    writer.write(&Message::new(text).unwrap()).unwrap();
}

fn m(text: &str) -> F {
    F::Message(text.as_bytes().to_vec())
}

// ---------------------------------------------------------------------
// Tests.

/// The first frame is the hello: version 1 and the program's pid; the
/// end of stdin with no listener ends the program with status 0.
#[test]
fn hello_comes_first_and_stdin_end_exits_0() {
    let mut port = Port::start();
    assert!(port.wait().success());
}

/// After `L`, `J` says the listener is counted on the bus; broadcasts
/// made through the core then arrive as `M` frames, in order, and one the
/// program made itself arrives as `W`.
#[test]
fn broadcasts_arrive_in_order_after_listening() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 64);
    assert_eq!(bus.listeners(), 1);
    let writer = bus.writer();
    for i in 0..20 {
        send(&writer, &format!("0 message {i}"));
    }
    for i in 0..20 {
        assert_eq!(port.frame(), m(&format!("0 message {i}")));
    }
    let args = broadcast_args(&bus.path, b"0 own", INFINITY, false);
    assert_eq!(port.request(b'b', &args), atom("ok"));
    assert_eq!(port.frame(), F::Own(b"0 own".to_vec()));
    assert!(port.stash.is_empty());
    port.stop();
}

/// A hot upgrade's handover between two programs, under a writer
/// broadcasting back to back: `U` makes the old program stop after its
/// next message holding the writers back (`A`); the new program joins;
/// the old one leaves (`S`). Across 20 switches the programs together get
/// every message once, in order.
#[test]
fn handover_between_programs_loses_and_repeats_nothing() {
    const N: usize = 3_000;
    let bus = TempBus::new();
    let writer = bus.writer();
    let mut port = Port::listening(&bus.path, 16);
    let writing = std::thread::spawn(move || {
        for i in 0..N {
            send(&writer, &format!("0 {i}"));
        }
    });
    let mut got = Vec::new();
    let mut switches = 0;
    while got.len() < N {
        match port.frame() {
            F::Message(bytes) => {
                got.push(String::from_utf8(bytes).unwrap());
                port.credit(1);
            }
            other => panic!("after {} messages: {other:?}", got.len()),
        }
        // A switch needs one more message to come: beyond what the test
        // has, the program may hold 16 sent and 16 queued.
        if got.len() % 149 == 0 && got.len() + 2 * 16 < N {
            port.send(b"U");
            loop {
                match port.frame() {
                    F::Message(bytes) => got.push(String::from_utf8(bytes).unwrap()),
                    F::Held => break,
                    other => panic!("after {} messages: {other:?}", got.len()),
                }
            }
            // The old one is off the count but holds W: nothing can start.
            let mut next = Port::start();
            next.listen(&bus.path, 16);
            assert_eq!(next.frame(), F::Listening);
            assert_eq!(bus.listeners(), 1);
            port.send(b"S");
            assert!(port.wait().success());
            port = next;
            switches += 1;
        }
    }
    writing.join().unwrap();
    let want: Vec<String> = (0..N).map(|i| format!("0 {i}")).collect();
    assert_eq!(got, want);
    assert!(switches >= 19, "{switches} switches");
    port.stop();
    assert_eq!(bus.listeners(), 0);
}

/// `U` without a listener, or a second `U`, is refused with `E`.
#[test]
fn hand_over_needs_one_listener() {
    let bus = TempBus::new();
    let mut port = Port::start();
    port.send(b"U");
    assert!(port.complaint().contains('U'));
    port.listen(&bus.path, 4);
    assert_eq!(port.frame(), F::Listening);
    port.send(b"U");
    port.send(b"U");
    assert!(port.complaint().contains("second U"));
    // No message came: the first U still waits; S leaves all the same.
    port.stop();
    assert_eq!(bus.listeners(), 0);
}

/// An `i` request is answered after every item the listener had queued
/// when it came (credit allowing): the node, once it has the reply, has
/// every message broadcast before it asked.
#[test]
fn info_comes_after_the_items_queued_before_it() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 64);
    let writer = bus.writer();
    for round in 0..50 {
        for i in 0..3 {
            send(&writer, &format!("0 round {round} message {i}"));
        }
        let id = port.next_id;
        port.next_id += 1;
        let mut frame = vec![b'Q'];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.push(b'i');
        port.send(&frame);
        for i in 0..3 {
            assert_eq!(port.frame(), m(&format!("0 round {round} message {i}")));
        }
        match port.frame() {
            F::Reply(r, term) => {
                assert_eq!(r, id);
                assert_eq!(term.unwrap_ok().get("delivered").int(), 3 * (round + 1));
            }
            other => panic!("expected the info reply, got {other:?}"),
        }
        port.credit(3);
    }
    port.stop();
}

/// With Window 2 and no credit given back, exactly 2 items reach the
/// node; 2 more wait in the program's queue, which is then full and holds
/// the bus, so a timed broadcast times out with nothing published. Credit
/// then lets everything through, in order, nothing lost or repeated.
#[test]
fn credit_bounds_what_is_sent_and_the_bus_is_held_meanwhile() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 2);
    let writer = bus.writer();
    for i in 1..=4 {
        send(&writer, &format!("0 {i}"));
    }
    let late = writer.write_timed(&Message::new("0 late").unwrap(), Duration::from_millis(200));
    assert!(matches!(late, Err(bus::Error::TimedOut)), "{late:?}");
    // Everything sent so far comes before this reply: only 2 items.
    let info = port.request(b'i', b"");
    let info = info.unwrap_ok();
    assert_eq!(
        info.keys(),
        ["delivered", "dropped", "held_us", "queued", "taken"]
    );
    assert_eq!(info.get("taken").int(), 4);
    assert_eq!(info.get("delivered").int(), 2);
    assert_eq!(info.get("queued").int(), 2);
    assert_eq!(info.get("dropped").int(), 0);
    assert!(info.get("held_us").int() >= 0);
    assert_eq!(port.frame(), m("0 1"));
    assert_eq!(port.frame(), m("0 2"));
    assert!(port.stash.is_empty(), "{:?}", port.stash);

    port.credit(1);
    assert_eq!(port.frame(), m("0 3"));
    port.credit(3);
    assert_eq!(port.frame(), m("0 4"));
    for i in 5..=6 {
        send(&writer, &format!("0 {i}"));
    }
    assert_eq!(port.frame(), m("0 5"));
    assert_eq!(port.frame(), m("0 6"));
    // Credit is spent again: the next item waits for more.
    send(&writer, "0 7");
    let info = port.request(b'i', b"");
    assert_eq!(info.unwrap_ok().get("taken").int(), 7);
    assert!(port.stash.is_empty(), "{:?}", port.stash);
    port.credit(10);
    assert_eq!(port.frame(), m("0 7"));
    let info = port.request(b'i', b"");
    assert_eq!(info.unwrap_ok().get("delivered").int(), 7);
    assert!(port.stash.is_empty(), "{:?}", port.stash);
    port.stop();
}

/// `S` leaves the bus (the listener count is back to 0) and exits 0.
#[test]
fn stop_leaves_the_bus_and_exits_0() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 4);
    assert_eq!(bus.listeners(), 1);
    port.send(b"S");
    let status = port.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(bus.listeners(), 0);
}

/// The end of stdin (the node died or closed the port) with a listener:
/// it leaves the bus and exits 0.
#[test]
fn stdin_end_leaves_the_bus_and_exits_0() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 4);
    // Held: a full queue (no credit for these).
    let writer = bus.writer();
    for i in 0..8 {
        send(&writer, &format!("0 {i}"));
    }
    assert!(port.wait().success());
    assert_eq!(bus.listeners(), 0);
    // The bus is usable: a broadcast returns at once with no listener.
    send(&writer, "0 after");
}

/// `S` without a listener exits 0 too.
#[test]
fn stop_without_a_listener_exits_0() {
    let mut port = Port::start();
    port.send(b"S");
    assert!(port.child.wait().unwrap().success());
}

/// A listener whose bus is removed fails with `gone`: an `F` frame, after
/// the items it had queued (credit or not); the program still answers
/// requests.
#[test]
fn a_removed_bus_fails_the_listener_with_gone() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 2);
    let writer = bus.writer();
    // Two sent (the credit), one queued: the queue is not full, so the
    // listener waits on the bus for the next message.
    for text in ["0 a", "0 b", "0 c"] {
        send(&writer, text);
    }
    assert_eq!(port.frame(), m("0 a"));
    assert_eq!(port.frame(), m("0 b"));
    bus::unlink(&bus.path).unwrap();
    assert_eq!(port.frame(), m("0 c"));
    assert_eq!(port.frame(), F::Failed(atom("gone")));
    let info = port.request(b'i', b"");
    assert_eq!(info.unwrap_ok().get("taken").int(), 3);
    assert_eq!(info.unwrap_ok().get("delivered").int(), 3);
    port.stop();
}

/// A listener holding the bus (its queue full) notices the removal once
/// credit lets it go on.
#[test]
fn a_holding_listener_fails_with_gone_once_credited() {
    let bus = TempBus::new();
    let mut port = Port::listening(&bus.path, 1);
    let writer = bus.writer();
    // One sent, one queued: the queue is full and holds the bus.
    send(&writer, "0 a");
    send(&writer, "0 b");
    assert_eq!(port.frame(), m("0 a"));
    bus::unlink(&bus.path).unwrap();
    port.credit(1);
    assert_eq!(port.frame(), m("0 b"));
    assert_eq!(port.frame(), F::Failed(atom("gone")));
    port.stop();
}

/// `L` on a bus that does not exist is an `F` with the reason.
#[test]
fn listening_on_no_bus_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut port = Port::start();
    port.listen(&dir.path().join("nothing"), 1);
    assert_eq!(port.frame(), F::Failed(atom("enoent")));
    // Credit for the failed listener is ignored.
    port.credit(1);
    assert_eq!(port.request(b'i', b""), error(atom("closed")));
    port.stop();
}

/// Malformed or disallowed frames each get an `E` naming the frame kind,
/// and the program carries on.
#[test]
fn malformed_frames_are_complained_about() {
    let bus = TempBus::new();
    let mut port = Port::start();
    port.send(b"");
    assert!(port.complaint().contains("empty frame"));
    port.send(b"Z123");
    assert!(port.complaint().contains("'Z'"));
    port.send(b"Q\0\0");
    assert!(port.complaint().starts_with("Q:"));
    port.send(b"Q\0\0\0\x2az/x");
    let text = port.complaint();
    assert!(
        text.starts_with("Q 42") && text.contains("unknown op"),
        "{text}"
    );
    port.send(b"Q\0\0\0\x2bb\0\0\0\0\0\x01\0/x");
    let text = port.complaint();
    assert!(text.starts_with("Q 43") && text.contains("Path"), "{text}");
    port.send(b"Q\0\0\0\x2ci!");
    assert!(port.complaint().starts_with("Q 44"));
    port.send(b"C\0\0\0\x01");
    assert!(port.complaint().starts_with("C:"));
    port.send(b"C\0");
    assert!(port.complaint().starts_with("C:"));
    port.send(b"S?");
    assert!(port.complaint().starts_with("S:"));
    let mut handover = vec![b'L', 1, 0, 0, 0, 1];
    handover.extend_from_slice(bus.path.as_os_str().as_bytes());
    port.send(&handover);
    assert!(port.complaint().starts_with("L:"));
    port.send(b"L\0\0\0\0\0/x");
    assert!(port.complaint().starts_with("L: Window 0"));
    port.listen(&bus.path, 1);
    assert_eq!(port.frame(), F::Listening);
    port.listen(&bus.path, 1);
    assert!(port.complaint().starts_with("L: a second L"));
    assert_eq!(bus.listeners(), 1);
    let info = port.request(b'i', b"");
    assert_eq!(info.unwrap_ok().get("taken").int(), 0);
    assert!(port.stash.is_empty(), "{:?}", port.stash);
    port.stop();
    assert_eq!(bus.listeners(), 0);
}

/// A frame longer than 16 MiB: an `E`, then exit status 3.
#[test]
fn an_oversize_frame_ends_the_program_with_status_3() {
    let mut port = Port::start();
    let stdin = port.stdin.as_mut().unwrap();
    stdin.write_all(&(16u32 << 20 | 1).to_be_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(port.complaint().contains("longer than"));
    let status = port.child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
}

/// `c` and `r` create, `x` removes, with their errors.
#[test]
fn create_create_random_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made");
    let mut port = Port::start();
    assert_eq!(
        port.request(b'c', &with_path(&[1], &path)),
        ok(path_bin(&path))
    );
    assert_eq!(
        port.request(b'c', &with_path(&[1], &path)),
        error(atom("eexist"))
    );
    assert_eq!(
        port.request(b'c', &with_path(&[0], &path)),
        ok(path_bin(&path))
    );
    assert_eq!(bus::stat(&path).unwrap().listeners(), 0);
    assert_eq!(port.request(b'x', &with_path(&[], &path)), atom("ok"));
    assert_eq!(
        port.request(b'x', &with_path(&[], &path)),
        error(atom("enoent"))
    );
    assert!(!path.exists());

    let sub = dir.path().join("sub");
    let reply = port.request(b'r', &with_path(&[], &sub));
    let T::Bin(made) = reply.unwrap_ok() else {
        panic!("{reply:?}")
    };
    let made = PathBuf::from(std::ffi::OsStr::from_bytes(made));
    assert_eq!(made.parent(), Some(sub.as_path()));
    assert!(made
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("random."));
    bus::stat(&made).unwrap();
    bus::unlink(&made).unwrap();

    // A directory that cannot be made: under a regular file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let reply = port.request(b'r', &with_path(&[], &file.join("sub")));
    let T::Tuple(items) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(items[0], atom("error"), "{reply:?}");
    // Creating where no directory exists.
    let nowhere = dir.path().join("no/such/dir/bus");
    assert_eq!(
        port.request(b'c', &with_path(&[0], &nowhere)),
        error(atom("enoent"))
    );
    assert!(port.stash.is_empty(), "{:?}", port.stash);
}

/// `s` returns the NIF's stat map; `m` and `o` change what it shows;
/// errors: no bus, and a file that is no bus file.
#[test]
fn stat_chmod_and_chown() {
    let bus = TempBus::new();
    let mut port = Port::start();
    let stat = port.request(b's', &with_path(&[], &bus.path));
    let map = stat.unwrap_ok();
    assert_eq!(
        map.keys(),
        [
            "attached",
            "file_mode",
            "gid",
            "keys",
            "listeners",
            "sem_mode",
            "shm_mode",
            "uid",
            "values"
        ]
    );
    let core = bus::stat(&bus.path).unwrap();
    assert_eq!(
        *map.get("keys"),
        T::Tuple(vec![
            T::Int(i128::from(core.keys.sem)),
            T::Int(i128::from(core.keys.shm))
        ])
    );
    assert_eq!(
        *map.get("values"),
        T::Tuple(vec![T::Int(0), T::Int(0), T::Int(1), T::Int(0), T::Int(0)])
    );
    assert_eq!(map.get("listeners").int(), 0);
    assert_eq!(map.get("sem_mode").int(), 0o600);
    assert_eq!(map.get("shm_mode").int(), 0o600);
    assert_eq!(map.get("uid").int(), i128::from(core.uid));
    assert_eq!(map.get("gid").int(), i128::from(core.gid));
    assert_eq!(map.get("attached").int(), i128::from(core.attached));
    assert_eq!(map.get("file_mode").int() & 0o777, 0o600);

    let mut chmod = 0o750u32.to_be_bytes().to_vec();
    chmod.extend_from_slice(bus.path.as_os_str().as_bytes());
    assert_eq!(port.request(b'm', &chmod), atom("ok"));
    let map = port.request(b's', &with_path(&[], &bus.path));
    assert_eq!(map.unwrap_ok().get("sem_mode").int(), 0o660);
    assert_eq!(map.unwrap_ok().get("file_mode").int() & 0o777, 0o640);

    let uid = core.uid;
    let gid = core.gid;
    let mut unchanged = [u32::MAX.to_be_bytes(), u32::MAX.to_be_bytes()].concat();
    unchanged.extend_from_slice(bus.path.as_os_str().as_bytes());
    assert_eq!(port.request(b'o', &unchanged), atom("ok"));
    let mut same = [uid.to_be_bytes(), gid.to_be_bytes()].concat();
    same.extend_from_slice(bus.path.as_os_str().as_bytes());
    assert_eq!(port.request(b'o', &same), atom("ok"));
    let after = bus::stat(&bus.path).unwrap();
    assert_eq!((after.uid, after.gid), (uid, gid));
    if uid == 0 {
        // Root may give it away: and back.
        let mut other = [4242u32.to_be_bytes(), u32::MAX.to_be_bytes()].concat();
        other.extend_from_slice(bus.path.as_os_str().as_bytes());
        assert_eq!(port.request(b'o', &other), atom("ok"));
        assert_eq!(bus::stat(&bus.path).unwrap().uid, 4242);
        assert_eq!(port.request(b'o', &same), atom("ok"));
    } else {
        let mut root = [0u32.to_be_bytes(), u32::MAX.to_be_bytes()].concat();
        root.extend_from_slice(bus.path.as_os_str().as_bytes());
        assert_eq!(port.request(b'o', &root), error(atom("eperm")));
    }

    // Errors.
    let missing = bus.dir.path().join("missing");
    assert_eq!(
        port.request(b's', &with_path(&[], &missing)),
        error(atom("enoent"))
    );
    assert_eq!(
        port.request(b'm', &with_path(&0o600u32.to_be_bytes(), &missing)),
        error(atom("enoent"))
    );
    assert_eq!(
        port.request(b'o', &with_path(&[0xff; 8], &missing)),
        error(atom("enoent"))
    );
    let junk = bus.dir.path().join("junk");
    std::fs::write(&junk, "not a bus\n").unwrap();
    let invalid = error(T::Tuple(vec![atom("invalid_bus_file"), path_bin(&junk)]));
    assert_eq!(port.request(b's', &with_path(&[], &junk)), invalid);
    assert_eq!(
        port.request(b'm', &with_path(&0o600u32.to_be_bytes(), &junk)),
        invalid
    );
    let args = broadcast_args(&junk, b"0 x", INFINITY, false);
    assert_eq!(port.request(b'b', &args), invalid);
    assert!(port.stash.is_empty(), "{:?}", port.stash);
}

/// `b` broadcasts through a cached writer, which is reopened when the bus
/// was removed and created again; bad messages are refused without
/// touching any bus; `busy` and `timeout` while a listener holds the bus;
/// `f` answers `ok`.
#[test]
fn broadcast_and_its_errors() {
    let bus = TempBus::new();
    let mut port = Port::start();
    let listener = Subscription::start(
        &bus.path,
        SubscribeOptions {
            capacity: 1,
            overflow: Overflow::Hold,
            ..SubscribeOptions::default()
        },
    )
    .unwrap();
    let args = broadcast_args(&bus.path, b"0 one", INFINITY, false);
    assert_eq!(port.request(b'b', &args), atom("ok"));
    // That filled the listener's queue: it holds the bus.
    let args = broadcast_args(&bus.path, b"0 two", INFINITY, true);
    assert_eq!(port.request(b'b', &args), error(atom("busy")));
    let args = broadcast_args(&bus.path, b"0 two", 100, false);
    assert_eq!(port.request(b'b', &args), error(atom("timeout")));
    let item = listener.try_next().unwrap();
    assert_eq!(
        item,
        bus::Item::Message {
            bytes: b"0 one".to_vec(),
            own: false
        }
    );
    // Room again: a broadcast waiting for the bus gets through.
    let args = broadcast_args(&bus.path, b"0 three", INFINITY, false);
    assert_eq!(port.request(b'b', &args), atom("ok"));
    assert_eq!(
        listener.next(Some(HANG)).unwrap(),
        bus::Item::Message {
            bytes: b"0 three".to_vec(),
            own: false
        }
    );
    assert_eq!(listener.try_next(), None);
    listener.stop();

    // Removed and made again at the same path: the cached writer finds
    // it gone, and the broadcast is retried on the new bus.
    bus::unlink(&bus.path).unwrap();
    bus::create(Some(&bus.path), true).unwrap();
    let args = broadcast_args(&bus.path, b"0 again", INFINITY, false);
    assert_eq!(port.request(b'b', &args), atom("ok"));
    assert_eq!(port.request(b'f', &with_path(&[], &bus.path)), atom("ok"));
    assert_eq!(port.request(b'b', &args), atom("ok"));

    // Refused before any bus is touched (this path has none).
    let missing = bus.dir.path().join("missing");
    let args = broadcast_args(&missing, &[b'a'; 2048], INFINITY, false);
    assert_eq!(port.request(b'b', &args), error(atom("message_too_long")));
    let args = broadcast_args(&missing, b"0 a\0b", INFINITY, false);
    assert_eq!(
        port.request(b'b', &args),
        error(atom("message_contains_nul"))
    );
    let args = broadcast_args(&missing, &[b'a'; 2047], INFINITY, false);
    assert_eq!(port.request(b'b', &args), error(atom("enoent")));

    // Removed through the program: its writer goes too.
    assert_eq!(port.request(b'x', &with_path(&[], &bus.path)), atom("ok"));
    let args = broadcast_args(&bus.path, b"0 gone", INFINITY, false);
    assert_eq!(port.request(b'b', &args), error(atom("enoent")));
    assert!(port.stash.is_empty(), "{:?}", port.stash);
}

/// Requests run concurrently: a broadcast blocked on a held bus does not
/// delay a request on another bus; replies come in any order.
#[test]
fn a_blocked_broadcast_delays_no_other_request() {
    let held = TempBus::new();
    let other = TempBus::new();
    let listener = Subscription::start(
        &held.path,
        SubscribeOptions {
            capacity: 1,
            overflow: Overflow::Hold,
            ..SubscribeOptions::default()
        },
    )
    .unwrap();
    send(&held.writer(), "0 fill");
    let mut port = Port::start();
    let mut frame = vec![b'Q', 0, 0, 0, 100, b'b'];
    frame.extend_from_slice(&broadcast_args(&held.path, b"0 waits", INFINITY, false));
    port.send(&frame);
    // Answered while request 100 waits.
    let stat = port.request(b's', &with_path(&[], &other.path));
    assert_eq!(stat.unwrap_ok().get("listeners").int(), 0);
    let args = broadcast_args(&other.path, b"0 free", INFINITY, false);
    assert_eq!(port.request(b'b', &args), atom("ok"));
    assert!(port.stash.is_empty(), "{:?}", port.stash);
    // Room: request 100 completes.
    assert!(listener.try_next().is_some());
    assert_eq!(port.reply(100), atom("ok"));
    assert!(matches!(
        listener.next(Some(HANG)).unwrap(),
        bus::Item::Message { bytes, .. } if bytes == b"0 waits"
    ));
    listener.stop();
    assert!(port.wait().success());
}

/// A broken stdout (the node stopped reading) ends the program too, with
/// status 0, having left the bus, though its stdin is still open.
#[test]
fn a_broken_stdout_leaves_the_bus_and_exits_0() {
    let bus = TempBus::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bus_port"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let frame = |stdout: &mut std::process::ChildStdout| {
        let mut header = [0; 4];
        stdout.read_exact(&mut header).unwrap();
        let mut frame = vec![0; u32::from_be_bytes(header) as usize];
        stdout.read_exact(&mut frame).unwrap();
        parse(&frame)
    };
    assert!(matches!(frame(&mut stdout), F::Hello(1, _)));
    let mut listen = vec![b'L', 0, 0, 0, 0, 4];
    listen.extend_from_slice(bus.path.as_os_str().as_bytes());
    let framed = |body: &[u8]| [&(body.len() as u32).to_be_bytes()[..], body].concat();
    stdin.write_all(&framed(&listen)).unwrap();
    assert_eq!(frame(&mut stdout), F::Listening);
    assert_eq!(bus.listeners(), 1);
    drop(stdout);
    // Its replies cannot be written. (Requests go on until the program
    // has gone: a child another test forks at that moment holds a copy of
    // the pipe until it execs, so one reply may still be written.)
    let asking = std::thread::spawn(
        move || {
            while stdin.write_all(&framed(b"Q\0\0\0\x01i")).is_ok() {}
        },
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(bus.listeners(), 0);
    asking.join().unwrap();
}
