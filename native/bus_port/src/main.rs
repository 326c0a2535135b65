//! `bus_port`: the port program of the Erlang `bus` application's port
//! backend. It does what the NIF (`native/bus_nif`) does — listen on one
//! bus with a credit window, broadcast through cached writers, manage
//! buses — as a separate OS process, so that nothing a bus does can block
//! or crash the Erlang node. It takes no arguments; the node starts it with
//! `open_port({spawn_executable, ...}, [{packet, 4}, binary, ...])` and the
//! two speak in frames over its stdin and stdout. stderr is for panics
//! only.
//!
//! This table is the reference of the frames (`apps/bus/src/
//! bus_port_frames.erl` is the node's side; bump [`PORT_VERSION`] and
//! `PORT_VERSION` in `apps/bus/include/bus_port.hrl` together whenever it
//! changes).
//!
//! # Frames
//!
//! Each frame is a 4-byte big-endian length, then that many bytes; its
//! first byte is its kind. Every integer is big-endian (`N:32` is 4 bytes).
//! `Term` is the Erlang external term format (it starts with byte 131),
//! for `binary_to_term(Term, [safe])`. A path is the rest of the frame,
//! bytes taken as they are (an `OsStr`).
//!
//! ## Program → node
//!
//! | frame | meaning |
//! |---|---|
//! | `<<"H", Version:32, OsPid:32>>` | hello: always the first frame; `Version` is [`PORT_VERSION`] |
//! | `<<"J">>` | the listener is counted on the bus: every broadcast from now on reaches it; before any item |
//! | `<<"M", Message/binary>>` | an item: a message |
//! | `<<"W", Message/binary>>` | an item: a message this OS process broadcast itself |
//! | `<<"D", N:64>>` | an item: N messages are missing here |
//! | `<<"F", Reason:Term>>` | the listener failed and left the bus (the bus was removed: `gone`); every item it had queued was sent before, credit or not; nothing of the listener follows |
//! | `<<"A">>` | after `U`: the listener took one more message, sent every item it had queued (credit or not), and stopped just before re-arming, still on the bus and holding the writers back (W): no broadcast can start until this program leaves (`S`, or the end of its stdin). A new program's listener joins meanwhile, and gets every later message, none twice. Nothing of the listener follows |
//! | `<<"R", Id:32, Reply:Term>>` | the reply to request `Id` |
//! | `<<"E", Text/binary>>` | a frame from the node was malformed or not allowed; `Text` says what in English, naming the frame kind (and the request's `Id` when it could be read) |
//!
//! Items (`M`, `W`, `D`) are sent only while credit remains, one credit
//! each; credit starts at the `L` frame's `Window`.
//!
//! ## Node → program
//!
//! | frame | meaning |
//! |---|---|
//! | `<<"L", From:8, Window:32, Path/binary>>` | listen on the bus at `Path`. `From` 0: join (1 and 2 are reserved for a handover, and refused with `E`). `Window` ≥ 1: the credit window, and the capacity of the program's own queue, which holds the bus when full (writers wait). One `L` per run; a failure to start is an `F` |
//! | `<<"C", N:32>>` | the node took N more items: N more may be sent |
//! | `<<"S">>` | stop: leave the bus (returns once the listener has left), then exit with status 0 |
//! | `<<"U">>` | hand the listener over to another program (a hot upgrade): after its next message, it stops before re-arming and says `A` (which waits for that message: on a bus with no traffic, until one comes). Without a listener, or a second time: `E` |
//! | `<<"Q", Id:32, Op:8, Args/binary>>` | a request, answered by `<<"R", Id:32, ...>>` |
//!
//! ## Requests
//!
//! `Reason` is that of the NIF (both name it with `native/bus_reason`):
//! `message_too_long`, `message_contains_nul`, `enoent`, `eexist`,
//! `eacces`, `eperm`, `{invalid_bus_file, Path}`, `gone`, `busy`,
//! `timeout`, `timeout_after_publish`, `interrupted`, `closed`, or
//! `{os_error, Errno, Context}` (`Errno` an atom such as `eloop`, or an
//! integer; `Context` a binary).
//!
//! | op | args | reply |
//! |---|---|---|
//! | `b` broadcast | `Timeout:32, NoWait:8, PathLen:16, Path:PathLen/binary, Message/binary`; `Timeout` in ms, 16#FFFFFFFF = infinity, bounds every wait | `ok` \| `{error, Reason}` |
//! | `c` create | `Exclusive:8, Path/binary` | `{ok, Path}` \| `{error, Reason}` |
//! | `r` create_random | `Dir/binary` | `{ok, Path}` \| `{error, Reason}` |
//! | `x` remove | `Path/binary` (drops its cached writer) | `ok` \| `{error, Reason}` |
//! | `m` chmod | `Mode:32, Path/binary` | `ok` \| `{error, Reason}` |
//! | `o` chown | `Uid:32, Gid:32, Path/binary`, 16#FFFFFFFF = unchanged | `ok` \| `{error, Reason}` |
//! | `s` stat | `Path/binary` | `{ok, #{keys => {Sem, Shm}, file_mode, sem_mode, shm_mode, uid, gid, values => {S, W, X, Q, N}, listeners, attached}}` \| `{error, Reason}` |
//! | `i` info | none | `{ok, #{taken, delivered, dropped, queued, held_us}}` \| `{error, closed}` (no listener); sent after every item the listener had queued when it came, as far as credit allows |
//! | `f` forget | `Path/binary` | `ok`: the bus's cached writer is dropped |
//!
//! Not allowed, and answered with `E`: an empty frame, an unknown kind, a
//! frame too short for its fields or with bytes after its last one, an
//! unknown op, a flag other than 0 or 1, `PathLen` beyond the frame, `L`
//! with `From` other than 0 or `Window` 0, a second `L`, and `C` before
//! any `L`.
//!
//! Flags (`NoWait`, `Exclusive`) are 0 or 1. `f` is answered at once, `i`
//! after the listener's queued items (without a listener, at once); the
//! others each run on a thread of their own, so replies come in
//! any order. A broadcast keeps one open writer per bus, reopened once if
//! it finds its bus `gone`.
//!
//! # Lifecycle
//!
//! The program exits with status 0 after `S`, at the end of its stdin (the
//! port was closed or the node died) or when its stdout breaks, having
//! left the bus, without waiting for requests under way. A frame longer
//! than 16 MiB is answered with `E` and ends the program with status 3;
//! a failure to read stdin (an `E` says why) ends it with status 1. Any other malformed
//! frame gets an `E`, and the program carries on.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod etf;
mod frames;
mod listener;
mod reason;
mod requests;

use std::io;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use crate::frames::{Inbound, Outbound, Output, ReadError, MAX_FRAME};
use crate::listener::Listener;
use crate::requests::Writers;

/// The version of the frames (in the hello frame). Bump it, and
/// `PORT_VERSION` in `apps/bus/include/bus_port.hrl`, whenever the frames
/// change: the node does not use a program that says another.
pub const PORT_VERSION: u32 = 1;

/// How long, at exit, broadcasts that returned early may take to finish
/// (as the `bus` command allows): a stopped listener would take for ever,
/// and the kernel's undo then releases the bus.
const FINISH_GRACE: Duration = Duration::from_millis(200);

/// How the program ends (its exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// 0: stopped (`S`), or the node is gone.
    Done = 0,
    /// 1: stdin could not be read.
    Failed = 1,
    /// 3: the node sent a frame longer than [`MAX_FRAME`].
    Oversize = 3,
}

/// What the main thread hears about.
enum Event {
    /// A frame from the node.
    Frame(Vec<u8>),
    /// The end of stdin.
    End,
    /// A frame announced this many bytes.
    Oversize(u32),
    /// Reading stdin failed.
    ReadFailed(io::Error),
    /// Writing stdout failed.
    OutputBroken,
}

fn main() -> ExitCode {
    ExitCode::from(run() as u8)
}

fn run() -> Exit {
    let (events, heard) = mpsc::sync_channel(64);
    let on_broken = events.clone();
    let output = Arc::new(Output::new(
        Box::new(io::stdout()),
        // A full channel is fine: the main thread is not waiting then, and
        // it looks at the output after each event.
        Box::new(move || {
            let _ = on_broken.try_send(Event::OutputBroken);
        }),
    ));
    let hello = Outbound::Hello {
        version: PORT_VERSION,
        os_pid: std::process::id(),
    };
    if output.send(&hello).is_err() {
        return Exit::Done;
    }
    // The main thread takes frames from a reader thread rather than from
    // stdin itself, so that a broken stdout, seen by any thread, ends the
    // program at once too.
    let reader = std::thread::Builder::new()
        .name("bus-port-stdin".into())
        .stack_size(128 * 1024)
        .spawn(move || read_stdin(&events));
    if reader.is_err() {
        return Exit::Failed;
    }
    let mut program = Program {
        output,
        writers: Arc::default(),
        listener: None,
        handing_over: false,
        listened: false,
    };
    let exit = program.serve(&heard);
    program.leave();
    exit
}

/// The reader thread: frames from stdin until it ends.
fn read_stdin(events: &SyncSender<Event>) {
    let mut stdin = io::stdin().lock();
    loop {
        let event = match frames::read_frame(&mut stdin) {
            Ok(Some(frame)) => Event::Frame(frame),
            Ok(None) => Event::End,
            Err(ReadError::Oversize(len)) => Event::Oversize(len),
            Err(ReadError::Io(e)) => Event::ReadFailed(e),
        };
        let last = !matches!(event, Event::Frame(_));
        if events.send(event).is_err() || last {
            return;
        }
    }
}

/// The main thread's state.
struct Program {
    output: Arc<Output>,
    writers: Arc<Writers>,
    listener: Option<Listener>,
    /// A `U` came.
    handing_over: bool,
    /// An `L` came (whether or not the listener started).
    listened: bool,
}

impl Program {
    /// Handles frames until the program is to exit.
    fn serve(&mut self, heard: &Receiver<Event>) -> Exit {
        loop {
            let event = heard.recv().unwrap_or(Event::End);
            if self.output.is_broken() {
                return Exit::Done;
            }
            match event {
                Event::Frame(frame) => {
                    if let Some(exit) = self.handle(&frame) {
                        return exit;
                    }
                }
                Event::End | Event::OutputBroken => return Exit::Done,
                Event::ReadFailed(e) => {
                    self.complain(&format!("stdin could not be read ({e}): exiting"));
                    return Exit::Failed;
                }
                Event::Oversize(len) => {
                    self.complain(&format!(
                        "frame of {len} bytes, longer than the {MAX_FRAME} allowed: exiting"
                    ));
                    return Exit::Oversize;
                }
            }
        }
    }

    /// Handles one frame; `Some` to exit.
    fn handle(&mut self, frame: &[u8]) -> Option<Exit> {
        match frames::parse(frame) {
            Err(malformed) => self.complain(&malformed.0),
            Ok(Inbound::Listen { .. }) if self.listened => {
                self.complain("L: a second L frame (one listener per program run)")
            }
            Ok(Inbound::Listen { window, path }) => {
                self.listened = true;
                match Listener::start(&path, window, self.output.clone()) {
                    Ok(listener) => self.listener = Some(listener),
                    Err(failure) => {
                        let _ = self.output.send(&Outbound::Failed(&failure));
                    }
                }
            }
            Ok(Inbound::Credit(n)) => match &self.listener {
                Some(listener) => listener.credit(n),
                // After a failed start there is nothing to credit.
                None if self.listened => {}
                None => self.complain("C: no L frame came before"),
            },
            Ok(Inbound::Stop) => return Some(Exit::Done),
            Ok(Inbound::HandOver) => match &self.listener {
                Some(listener) if !self.handing_over => {
                    self.handing_over = true;
                    listener.hand_over();
                }
                Some(_) => self.complain("U: a second U frame"),
                None => self.complain("U: no listener to hand over"),
            },
            Ok(Inbound::Request(id, request)) => requests::handle(
                id,
                request,
                self.listener.as_ref(),
                &self.writers,
                &self.output,
            ),
        }
        None
    }

    fn complain(&self, text: &str) {
        let _ = self.output.send(&Outbound::Complaint(text));
    }

    /// Before exiting: leaves the bus (returns once the listener has), and
    /// gives early-returned broadcasts a moment to finish.
    fn leave(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.stop();
        }
        self.writers.finish_pending(FINISH_GRACE);
    }
}
