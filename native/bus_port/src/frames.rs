//! The frames themselves: reading and writing `{packet, 4}` frames (a
//! 4-byte big-endian length, then that many bytes), decoding what the node
//! sends and encoding what this program sends. The frame table is in the
//! crate documentation (main.rs); this module is its one implementation.
//! Nothing here blocks but the reads and writes, and no input can make it
//! panic.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bus::Item;

use crate::etf::Term;
use crate::reason::{Failure, ToTerm};

/// The largest frame the node may send: a longer one ends the program
/// (exit status 3), since what follows it can no longer be trusted.
pub const MAX_FRAME: usize = 16 << 20;

/// A 32-bit field meaning "none": an infinite timeout, an owner or group
/// left unchanged.
const NONE_U32: u32 = u32::MAX;

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The frame announced this many bytes, more than [`MAX_FRAME`].
    Oversize(u32),
    /// Reading failed.
    Io(io::Error),
}

/// Reads one frame; `None` at the end of the input, also when it ends in
/// the middle of a frame (the node is gone either way).
pub fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>, ReadError> {
    let mut header = [0; 4];
    if !read_exact_or_eof(input, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(header);
    if len as usize > MAX_FRAME {
        return Err(ReadError::Oversize(len));
    }
    let mut frame = vec![0; len as usize];
    match read_exact_or_eof(input, &mut frame)? {
        true => Ok(Some(frame)),
        false => Ok(None),
    }
}

/// Fills `buf`; `false` if the input ended first.
fn read_exact_or_eof(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, ReadError> {
    match input.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// A frame this program sends.
#[derive(Debug)]
pub enum Outbound<'a> {
    /// `H`: the first frame.
    Hello {
        /// [`crate::PORT_VERSION`].
        version: u32,
        /// This program's OS process id.
        os_pid: u32,
    },
    /// `J`: the listener is counted on the bus.
    Listening,
    /// `M`, `W` or `D`: an item of the listener.
    Item(&'a Item),
    /// `F`: the listener failed.
    Failed(&'a Failure),
    /// `A`: the listener stopped for a handover, holding the writers.
    Held,
    /// `R`: the reply to a request.
    Reply(u32, &'a Term),
    /// `E`: a frame from the node was malformed or not allowed.
    Complaint(&'a str),
}

impl Outbound<'_> {
    /// The frame, its length prefix included.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        match self {
            Outbound::Hello { version, os_pid } => {
                out.push(b'H');
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&os_pid.to_be_bytes());
            }
            Outbound::Listening => out.push(b'J'),
            Outbound::Held => out.push(b'A'),
            Outbound::Item(Item::Message { bytes, own }) => {
                out.push(if *own { b'W' } else { b'M' });
                out.extend_from_slice(bytes);
            }
            Outbound::Item(Item::Dropped(n)) => {
                out.push(b'D');
                out.extend_from_slice(&n.to_be_bytes());
            }
            Outbound::Failed(failure) => {
                out.push(b'F');
                out.extend_from_slice(&failure.term().encode());
            }
            Outbound::Reply(id, term) => {
                out.push(b'R');
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&term.encode());
            }
            Outbound::Complaint(text) => {
                out.push(b'E');
                out.extend_from_slice(text.as_bytes());
            }
        }
        // Every frame is a message (at most 2047 bytes), a path or a term
        // of a few paths: far below 4 GiB.
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// Output could not be written: the node is gone.
#[derive(Debug)]
pub struct Broken;

/// Where frames go (stdout), shared by every thread: each frame is written
/// whole under one lock. The first failed write marks it broken, runs the
/// callback given (which tells the main thread), and every later send
/// fails at once.
pub struct Output {
    sink: Mutex<Box<dyn Write + Send>>,
    broken: AtomicBool,
    on_broken: Box<dyn Fn() + Send + Sync>,
}

impl Output {
    /// Frames to `sink`; `on_broken` runs once, on the first failed write,
    /// after the lock is released.
    pub fn new(sink: Box<dyn Write + Send>, on_broken: Box<dyn Fn() + Send + Sync>) -> Output {
        Output {
            sink: Mutex::new(sink),
            broken: AtomicBool::new(false),
            on_broken,
        }
    }

    /// Writes one frame (blocks while the pipe is full: the node always
    /// reads its port).
    pub fn send(&self, frame: &Outbound<'_>) -> Result<(), Broken> {
        if self.is_broken() {
            return Err(Broken);
        }
        let bytes = frame.encode();
        let written = {
            let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
            sink.write_all(&bytes).and_then(|()| sink.flush())
        };
        if written.is_err() {
            if !self.broken.swap(true, Ordering::SeqCst) {
                (self.on_broken)();
            }
            return Err(Broken);
        }
        Ok(())
    }

    /// Whether a write has failed.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

/// A frame from the node.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// `L`: listen (join) on the bus at `path` with a credit window.
    Listen {
        /// The credit window, at least 1.
        window: u32,
        /// The bus.
        path: PathBuf,
    },
    /// `C`: this many more items may be sent.
    Credit(u32),
    /// `S`: leave the bus and exit.
    Stop,
    /// `U`: hand the listener over to another program (see `A`).
    HandOver,
    /// `Q`: a request, answered by an `R` frame with its id.
    Request(u32, Request),
}

/// What a `Q` frame asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `b`.
    Broadcast {
        /// `None`: no limit.
        timeout: Option<Duration>,
        /// Fail with `busy` rather than wait for another writer.
        nowait: bool,
        /// The bus.
        path: PathBuf,
        /// The message, unchecked.
        message: Vec<u8>,
    },
    /// `c`.
    Create {
        /// Fail with `eexist` if the file exists.
        exclusive: bool,
        /// The bus.
        path: PathBuf,
    },
    /// `r`.
    CreateRandom {
        /// Where.
        dir: PathBuf,
    },
    /// `x`.
    Remove {
        /// The bus.
        path: PathBuf,
    },
    /// `m`.
    Chmod {
        /// The mode, normalised by the core.
        mode: u32,
        /// The bus.
        path: PathBuf,
    },
    /// `o`.
    Chown {
        /// `None`: unchanged.
        uid: Option<u32>,
        /// `None`: unchanged.
        gid: Option<u32>,
        /// The bus.
        path: PathBuf,
    },
    /// `s`.
    Stat {
        /// The bus.
        path: PathBuf,
    },
    /// `i`.
    Info,
    /// `f`.
    Forget {
        /// The bus.
        path: PathBuf,
    },
}

/// What was wrong with a frame from the node, in English, naming the frame
/// kind (and the request's id when it could be read): the text of an `E`
/// frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Decodes a frame from the node.
pub fn parse(frame: &[u8]) -> Result<Inbound, Malformed> {
    let Some((&kind, body)) = frame.split_first() else {
        return Err(Malformed("empty frame (no kind byte)".into()));
    };
    match kind {
        b'L' => {
            let mut r = Fields::new("L", body);
            let from = r.u8("From")?;
            let window = r.u32("Window")?;
            if from != 0 {
                return Err(Malformed(format!(
                    "L: From {from} is not supported (only 0, join; 1 and 2 are reserved)"
                )));
            }
            if window == 0 {
                return Err(Malformed("L: Window 0 (at least 1 is needed)".into()));
            }
            Ok(Inbound::Listen {
                window,
                path: r.rest_path(),
            })
        }
        b'C' => {
            let mut r = Fields::new("C", body);
            let n = r.u32("N")?;
            r.end()?;
            Ok(Inbound::Credit(n))
        }
        b'S' => {
            Fields::new("S", body).end()?;
            Ok(Inbound::Stop)
        }
        b'U' => {
            Fields::new("U", body).end()?;
            Ok(Inbound::HandOver)
        }
        b'Q' => {
            let mut r = Fields::new("Q", body);
            let id = r.u32("Id")?;
            r.frame = format!("Q {id}");
            let op = r.u8("Op")?;
            let request = request(op, r)?;
            Ok(Inbound::Request(id, request))
        }
        other => Err(Malformed(format!(
            "unknown frame kind {} ({} bytes)",
            describe_byte(other),
            frame.len()
        ))),
    }
}

/// The arguments of request `op`.
fn request(op: u8, mut r: Fields<'_>) -> Result<Request, Malformed> {
    r.frame = format!("{} op {}", r.frame, describe_byte(op));
    Ok(match op {
        b'b' => {
            let timeout = match r.u32("Timeout")? {
                NONE_U32 => None,
                ms => Some(Duration::from_millis(u64::from(ms))),
            };
            let nowait = r.flag("NoWait")?;
            let len = r.u16("PathLen")?;
            let path = r.path(usize::from(len), "Path")?;
            Request::Broadcast {
                timeout,
                nowait,
                path,
                message: r.rest().to_vec(),
            }
        }
        b'c' => Request::Create {
            exclusive: r.flag("Exclusive")?,
            path: r.rest_path(),
        },
        b'r' => Request::CreateRandom { dir: r.rest_path() },
        b'x' => Request::Remove {
            path: r.rest_path(),
        },
        b'm' => Request::Chmod {
            mode: r.u32("Mode")?,
            path: r.rest_path(),
        },
        b'o' => Request::Chown {
            uid: r.id("Uid")?,
            gid: r.id("Gid")?,
            path: r.rest_path(),
        },
        b's' => Request::Stat {
            path: r.rest_path(),
        },
        b'i' => {
            r.end()?;
            Request::Info
        }
        b'f' => Request::Forget {
            path: r.rest_path(),
        },
        _ => return Err(Malformed(format!("{}: unknown op", r.frame))),
    })
}

/// A byte as a character if it is printable ASCII, and its value.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}' ({b})", b as char)
    } else {
        format!("{b}")
    }
}

/// Reads the fields of a frame's body in order, each a complaint naming
/// the frame and the field when the body is too short.
struct Fields<'a> {
    frame: String,
    body: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(frame: &str, body: &'a [u8]) -> Fields<'a> {
        Fields {
            frame: frame.into(),
            body,
        }
    }

    fn take<const N: usize>(&mut self, field: &str) -> Result<[u8; N], Malformed> {
        let bytes = self.bytes(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8], Malformed> {
        if self.body.len() < n {
            return Err(Malformed(format!(
                "{}: too short for {field} ({} bytes left, {n} needed)",
                self.frame,
                self.body.len()
            )));
        }
        let (field, rest) = self.body.split_at(n);
        self.body = rest;
        Ok(field)
    }

    fn u8(&mut self, field: &str) -> Result<u8, Malformed> {
        Ok(self.take::<1>(field)?[0])
    }

    fn u16(&mut self, field: &str) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.take(field)?))
    }

    fn u32(&mut self, field: &str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take(field)?))
    }

    /// 0 or 1.
    fn flag(&mut self, field: &str) -> Result<bool, Malformed> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Malformed(format!(
                "{}: {field} is {other} (0 or 1 expected)",
                self.frame
            ))),
        }
    }

    /// A user or group id, `None` for 16#FFFFFFFF.
    fn id(&mut self, field: &str) -> Result<Option<u32>, Malformed> {
        Ok(match self.u32(field)? {
            NONE_U32 => None,
            id => Some(id),
        })
    }

    fn path(&mut self, len: usize, field: &str) -> Result<PathBuf, Malformed> {
        Ok(bytes_path(self.bytes(len, field)?))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.body)
    }

    fn rest_path(&mut self) -> PathBuf {
        bytes_path(self.rest())
    }

    /// Nothing may follow.
    fn end(&self) -> Result<(), Malformed> {
        match self.body.len() {
            0 => Ok(()),
            n => Err(Malformed(format!("{}: {n} bytes too many", self.frame))),
        }
    }
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(frame);
        out
    }

    #[test]
    fn reads_frames_until_the_end() {
        let mut input = framed(b"S");
        input.extend(framed(b""));
        input.extend(framed(b"C\0\0\0\x02"));
        let mut r = &input[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"S");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"C\0\0\0\x02");
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_truncated_frame_is_the_end() {
        let mut r = &[0, 0, 0, 5, b'Q'][..];
        assert!(read_frame(&mut r).unwrap().is_none());
        let mut r = &[0, 0][..];
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn an_oversize_frame_is_refused_before_it_is_read() {
        let len = (MAX_FRAME + 1) as u32;
        let mut r = &len.to_be_bytes()[..];
        assert!(matches!(read_frame(&mut r), Err(ReadError::Oversize(n)) if n == len));
    }

    #[test]
    fn encodes_each_outbound_frame() {
        let hello = Outbound::Hello {
            version: 1,
            os_pid: 0x01020304,
        };
        assert_eq!(hello.encode(), [0, 0, 0, 9, b'H', 0, 0, 0, 1, 1, 2, 3, 4]);
        assert_eq!(Outbound::Listening.encode(), [0, 0, 0, 1, b'J']);
        let own = Item::Message {
            bytes: b"hi".to_vec(),
            own: true,
        };
        assert_eq!(
            Outbound::Item(&own).encode(),
            [0, 0, 0, 3, b'W', b'h', b'i']
        );
        let dropped = Item::Dropped(258);
        assert_eq!(
            Outbound::Item(&dropped).encode(),
            [0, 0, 0, 9, b'D', 0, 0, 0, 0, 0, 0, 1, 2]
        );
        let reply = Outbound::Reply(7, &Term::Atom("ok")).encode();
        assert_eq!(
            reply,
            [0, 0, 0, 10, b'R', 0, 0, 0, 7, 131, 119, 2, b'o', b'k']
        );
        let failed = Outbound::Failed(&Failure::Gone).encode();
        assert_eq!(
            failed,
            [0, 0, 0, 8, b'F', 131, 119, 4, b'g', b'o', b'n', b'e']
        );
    }

    #[test]
    fn parses_each_inbound_frame() {
        assert_eq!(
            parse(b"L\0\0\0\0\x02/b"),
            Ok(Inbound::Listen {
                window: 2,
                path: "/b".into()
            })
        );
        assert_eq!(parse(b"C\0\0\x01\0"), Ok(Inbound::Credit(256)));
        assert_eq!(parse(b"S"), Ok(Inbound::Stop));
        assert_eq!(parse(b"U"), Ok(Inbound::HandOver));
        assert!(parse(b"Ux").is_err());
        let mut b = b"Q\0\0\0\x09b\xff\xff\xff\xff\x01\0\x02/bhello".to_vec();
        assert_eq!(
            parse(&b),
            Ok(Inbound::Request(
                9,
                Request::Broadcast {
                    timeout: None,
                    nowait: true,
                    path: "/b".into(),
                    message: b"hello".to_vec()
                }
            ))
        );
        b[6..10].copy_from_slice(&100u32.to_be_bytes());
        assert!(matches!(
            parse(&b),
            Ok(Inbound::Request(9, Request::Broadcast { timeout: Some(t), .. }))
                if t == Duration::from_millis(100)
        ));
        assert_eq!(
            parse(b"Q\0\0\0\x01o\xff\xff\xff\xff\0\0\0\x05/b"),
            Ok(Inbound::Request(
                1,
                Request::Chown {
                    uid: None,
                    gid: Some(5),
                    path: "/b".into()
                }
            ))
        );
        assert_eq!(
            parse(b"Q\0\0\0\x01i"),
            Ok(Inbound::Request(1, Request::Info))
        );
    }

    #[test]
    fn malformed_frames_are_named_in_the_complaint() {
        let complaint = |frame: &[u8]| parse(frame).unwrap_err().0;
        assert!(complaint(b"").starts_with("empty frame"));
        assert!(complaint(b"Z").contains("'Z'"));
        assert!(complaint(b"L\x01\0\0\0\x01/b").starts_with("L: From 1"));
        assert!(complaint(b"L\0\0\0\0\0/b").starts_with("L: Window 0"));
        assert!(complaint(b"L\0\0").starts_with("L: too short"));
        assert!(complaint(b"C\0").starts_with("C: too short"));
        assert!(complaint(b"S!").starts_with("S: 1 bytes too many"));
        assert!(complaint(b"Q\0\0").starts_with("Q: too short for Id"));
        assert!(complaint(b"Q\0\0\0\x07").starts_with("Q 7: too short for Op"));
        assert!(complaint(b"Q\0\0\0\x07z").starts_with("Q 7 op 'z' (122): unknown op"));
        assert!(complaint(b"Q\0\0\0\x07b\0\0\0\0\0\0\x09/b")
            .starts_with("Q 7 op 'b' (98): too short for Path"));
        assert!(complaint(b"Q\0\0\0\x07c\x02/b").contains("Exclusive is 2"));
        assert!(complaint(b"Q\0\0\0\x07i!").contains("1 bytes too many"));
    }

    #[test]
    fn output_reports_a_broken_sink_once() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let output = Output::new(
            Box::new(Failing),
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        assert!(output.send(&Outbound::Listening).is_err());
        assert!(output.send(&Outbound::Listening).is_err());
        assert!(output.is_broken());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
