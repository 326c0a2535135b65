//! Pathnames that name anything but a bus file: a FIFO, a socket, devices,
//! a directory, symbolic link loops and dangling links, huge and growing
//! files, files under /proc, files and directories without permission, and
//! a file swapped for a FIFO while it is being opened. Every entry point
//! of the Rust API and every command of the CLI must answer within a
//! second with an error naming the problem, change nothing, and end on
//! SIGTERM whatever it is doing.
//!
//! Devices are made with mknod and other users are played with setuid, so
//! these tests need root (as CI has); without it they fail, never skip.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use bus::{Access, Bus, Error};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_bus");

/// The promise: an answer well under a second.
const PROMPTLY: Duration = Duration::from_secs(1);

/// A user and group that own nothing here.
const STRANGER: u32 = 4321;

/// One pathname that is not a bus file, and what the error must say.
struct Kind {
    name: &'static str,
    path: PathBuf,
    reason: &'static str,
}

/// Every kind of pathname in a temporary directory; a thread keeps one
/// file growing until the zoo is dropped.
struct Zoo {
    _dir: tempfile::TempDir,
    kinds: Vec<Kind>,
    _socket: UnixListener,
    growing: Arc<AtomicBool>,
    grower: Option<thread::JoinHandle<()>>,
}

impl Zoo {
    fn new() -> Zoo {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mknod and setuid need root: these tests cannot run without it"
        );
        let dir = tempfile::Builder::new()
            .prefix("bus-paths")
            .tempdir()
            .unwrap();
        let at = |name: &str| dir.path().join(name);
        let mut kinds = Vec::new();
        let mut add = |name, path: PathBuf, reason| kinds.push(Kind { name, path, reason });

        nix::unistd::mkfifo(&at("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        add("FIFO", at("fifo"), "not a bus file: a FIFO");
        let socket = UnixListener::bind(at("socket")).unwrap();
        add("socket", at("socket"), "not a bus file: a socket");
        let rw = Mode::from_bits_truncate(0o600);
        mknod(&at("null"), SFlag::S_IFCHR, rw, makedev(1, 3)).unwrap();
        add(
            "character device",
            at("null"),
            "not a bus file: a character device",
        );
        mknod(&at("loop0"), SFlag::S_IFBLK, rw, makedev(7, 0)).unwrap();
        add(
            "block device",
            at("loop0"),
            "not a bus file: a block device",
        );
        fs::create_dir(at("dir")).unwrap();
        add("directory", at("dir"), "not a bus file: a directory");
        std::os::unix::fs::symlink(at("loop-b"), at("loop-a")).unwrap();
        std::os::unix::fs::symlink(at("loop-a"), at("loop-b")).unwrap();
        add("symbolic link loop", at("loop-a"), "symbolic links");
        std::os::unix::fs::symlink(at("nowhere"), at("dangling")).unwrap();
        add(
            "dangling symbolic link",
            at("dangling"),
            "no such bus (a dangling symbolic link)",
        );
        fs::File::create(at("huge"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        add(
            "huge file",
            at("huge"),
            "not a bus file: 1099511627776 bytes",
        );
        add(
            "/proc file",
            "/proc/self/status".into(),
            "pseudo file system",
        );
        // Reading it would block (and consume the kernel's log), if it is
        // not masked by the container (then it is a device).
        add("/proc/kmsg", "/proc/kmsg".into(), "not a bus file");

        fs::write(at("growing"), "not a bus\n").unwrap();
        let growing = Arc::new(AtomicBool::new(true));
        let grower = {
            let (path, growing) = (at("growing"), growing.clone());
            thread::spawn(move || {
                let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
                while growing.load(Ordering::Relaxed) {
                    f.write_all(&[b'x'; 512]).unwrap();
                    thread::yield_now();
                }
            })
        };
        add("growing file", at("growing"), "not a bus file");
        Zoo {
            _dir: dir,
            kinds,
            _socket: socket,
            growing,
            grower: Some(grower),
        }
    }
}

impl Drop for Zoo {
    fn drop(&mut self) {
        self.growing.store(false, Ordering::Relaxed);
        if let Some(g) = self.grower.take() {
            let _ = g.join();
        }
    }
}

/// A bus in a new temporary directory (the caller unlinks it).
fn temp_bus(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let path = bus::create(Some(&dir.path().join("bus")), true).unwrap();
    (dir, path)
}

/// Runs `call` on a thread of its own and returns its result, failing the
/// test if it has not returned within [`PROMPTLY`].
#[track_caller]
fn promptly<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx.recv_timeout(PROMPTLY)
        .unwrap_or_else(|_| panic!("{what}: no answer within {PROMPTLY:?}"))
}

/// An entry point of the Rust API, on a pathname.
type Call = fn(&Path) -> bus::Result<()>;

/// Every entry point of the Rust API that takes a pathname, by name.
fn api_calls() -> Vec<(&'static str, Call)> {
    vec![
        ("Bus::open(ReadOnly)", |p| {
            Bus::open(p, Access::ReadOnly).map(drop)
        }),
        ("Bus::open(Write)", |p| {
            Bus::open(p, Access::Write).map(drop)
        }),
        ("stat", |p| bus::stat(p).map(drop)),
        ("unlink", |p| bus::unlink(p)),
        ("chmod", |p| bus::chmod(p, 0o600)),
        ("chown", |p| bus::chown(p, None, None)),
        ("busfile::read", |p| bus::busfile::read(p).map(drop)),
    ]
}

/// The Rust API refuses every kind promptly, with an error that names the
/// problem, and leaves the pathname as it was.
#[test]
fn the_rust_api_refuses_every_kind_promptly() {
    let zoo = Zoo::new();
    for kind in &zoo.kinds {
        for (call, f) in api_calls() {
            let path = kind.path.clone();
            let what = format!("{call} on a {} ({})", kind.name, path.display());
            let result = promptly(&what, move || f(&path));
            let err = result.expect_err(&what);
            let text = err.to_string();
            assert!(
                text.contains(kind.reason),
                "{what}: {text:?} lacks {:?}",
                kind.reason
            );
            assert!(
                text.contains(&*kind.path.to_string_lossy()),
                "{what}: {text:?} does not name the path"
            );
            assert!(kind.path.symlink_metadata().is_ok(), "{what} removed it");
        }
    }
}

/// The errors are the right variants (and so the right errno for C and
/// atoms for Erlang).
#[test]
fn the_errors_are_precise() {
    let zoo = Zoo::new();
    for kind in &zoo.kinds {
        let err = Bus::open(&kind.path, Access::ReadOnly).unwrap_err();
        let errno = err.errno();
        match kind.name {
            "dangling symbolic link" => {
                assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
                assert_eq!(errno, libc::ENOENT);
            }
            "symbolic link loop" => assert_eq!(errno, libc::ELOOP, "{err:?}"),
            _ => {
                assert!(
                    matches!(err, Error::InvalidBusFile { .. }),
                    "{kind:?}: {err:?}",
                    kind = kind.name
                );
                assert_eq!(errno, libc::EINVAL);
            }
        }
    }
}

/// A pathname swapped back and forth between a real bus file and a FIFO
/// while it is opened thousands of times: each open gets the bus or
/// refuses the FIFO, promptly; none blocks, none reads one file's keys
/// from another.
#[test]
fn a_file_swapped_for_a_fifo_while_it_is_opened() {
    let (dir, real) = temp_bus("bus-swap");
    let target = dir.path().join("target");
    fs::hard_link(&real, &target).unwrap();
    let swapping = Arc::new(AtomicBool::new(true));
    let swapper = {
        let (dir, real, target, swapping) = (
            dir.path().to_path_buf(),
            real.clone(),
            target.clone(),
            swapping.clone(),
        );
        thread::spawn(move || {
            let (link, fifo) = (dir.join("link.tmp"), dir.join("fifo.tmp"));
            let mut swaps = 0u64;
            while swapping.load(Ordering::Relaxed) {
                nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
                fs::rename(&fifo, &target).unwrap();
                fs::hard_link(&real, &link).unwrap();
                fs::rename(&link, &target).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut opened, mut refused) = (0, 0);
    for i in 0..3000 {
        let path = target.clone();
        let what = format!("open #{i} of a swapping pathname");
        match promptly(&what, move || {
            Bus::open(&path, Access::ReadOnly).map(|b| b.keys())
        }) {
            Ok(keys) => {
                assert_eq!(keys, bus::busfile::read(&real).unwrap());
                opened += 1;
            }
            Err(Error::InvalidBusFile { reason, .. }) => {
                assert!(reason.contains("FIFO"), "{reason}");
                refused += 1;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    swapping.store(false, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    bus::unlink(&real).unwrap();
    eprintln!("{swaps} swaps: {opened} opened the bus, {refused} refused the FIFO");
}

// --- The command line. ------------------------------------------------------

/// Every command that takes a bus pathname, with `path` in its place.
fn commands(path: &Path) -> Vec<Vec<String>> {
    let p = path.to_string_lossy().into_owned();
    let all: [&[&str]; 7] = [
        &["broadcast", &p, "0 m"],
        &["broadcast", "-n", &p, "0 m"],
        &["listen", &p, "true"],
        &["wait", &p, "true"],
        &["stat", &p],
        &["remove", &p],
        &["chmod", "600", &p],
    ];
    all.iter()
        .map(|a| a.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn spawn(args: &[String], as_stranger: bool) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if as_stranger {
        // As root, std also drops the supplementary groups.
        cmd.uid(STRANGER).gid(STRANGER);
    }
    cmd.spawn().expect("spawn bus")
}

/// Waits for `child` to end and returns its status and stderr; kills it and
/// fails the test if it has not ended within `limit`.
#[track_caller]
fn ended_within(child: Child, limit: Duration) -> (ExitStatus, String) {
    let out = common::output_within(child, limit, "bus");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `bus ARGS` and expects exit status 1 with `bus: ...reason...`
/// within [`PROMPTLY`].
#[track_caller]
fn fails_promptly(args: &[String], reason: &str, as_stranger: bool) {
    let (status, stderr) = ended_within(spawn(args, as_stranger), PROMPTLY);
    assert_eq!(status.code(), Some(1), "bus {args:?}: {status}, {stderr:?}");
    assert!(
        stderr.starts_with("bus: ") && stderr.contains(reason),
        "bus {args:?}: {stderr:?} lacks {reason:?}"
    );
}

/// Every command exits 1 within a second on every kind, saying why.
#[test]
fn every_command_fails_promptly_on_every_kind() {
    let zoo = Zoo::new();
    for kind in &zoo.kinds {
        for args in commands(&kind.path) {
            fails_promptly(&args, kind.reason, false);
            assert!(
                kind.path.symlink_metadata().is_ok(),
                "bus {args:?} removed it"
            );
        }
    }
}

/// Another user is refused at once, by the file or by its directory.
#[test]
fn every_command_fails_promptly_without_permission() {
    let zoo = Zoo::new();
    let dir = zoo._dir.path();
    let bus_file = bus::create(Some(&dir.join("private")), true).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let closed = dir.join("closed");
    fs::create_dir(&closed).unwrap();
    let hidden = bus::create(Some(&closed.join("bus")), true).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
    for path in [&bus_file, &hidden] {
        for args in commands(path) {
            fails_promptly(&args, "permission denied", true);
        }
    }
    bus::unlink(&bus_file).unwrap();
    bus::unlink(&hidden).unwrap();
}

/// SIGTERM, sent the moment each command starts on each kind, ends it
/// within a second with a non-zero status (by the signal itself, or
/// status 1 if the command had already failed), and nothing is left.
#[test]
fn sigterm_ends_every_command_on_every_kind() {
    let zoo = Zoo::new();
    for kind in &zoo.kinds {
        for args in commands(&kind.path) {
            let child = spawn(&args, false);
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let (status, stderr) = ended_within(child, PROMPTLY);
            assert!(
                status.code() == Some(1) || status.signal() == Some(libc::SIGTERM),
                "bus {args:?} after SIGTERM: {status}, {stderr:?}"
            );
            assert!(kind.path.symlink_metadata().is_ok());
        }
    }
}

/// `bus listen` and `bus wait` on a real bus, sent SIGTERM at random
/// moments of their start (before, while and after they join): each ends,
/// and the bus is left exactly as it was found, every time. The signal is
/// waited for by a thread of its own, so it cannot slip in between a check
/// and a blocking call.
#[test]
fn sigterm_at_any_moment_leaves_the_bus_as_found() {
    let (_dir, path) = temp_bus("bus-term");
    let before = bus::stat(&path).unwrap().values;
    let mut seed = std::process::id() as u64 | 1;
    for i in 0..200 {
        // xorshift: a delay of 0 to 3 ms.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let command = if i % 2 == 0 { "listen" } else { "wait" };
        let args: Vec<String> = [command, &path.to_string_lossy(), "true"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let child = spawn(&args, false);
        thread::sleep(Duration::from_micros(seed % 3000));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let (status, stderr) = ended_within(child, PROMPTLY);
        assert!(
            status.success() || status.signal() == Some(libc::SIGTERM),
            "bus {command} after SIGTERM: {status}, {stderr:?}"
        );
        assert_eq!(bus::stat(&path).unwrap().values, before, "after run {i}");
    }
    bus::unlink(&path).unwrap();
}

/// Makes a System V object under a fresh random key with `make(key)`
/// (which returns -1 while the key is taken); returns the key and the id.
fn fresh_object(make: impl Fn(libc::key_t) -> i32) -> (libc::key_t, i32) {
    let mut seed = std::process::id() as u64 * 2654435761 + 1;
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let key = (seed % ((1 << 30) - 1) + 1) as libc::key_t;
        let id = make(key);
        if id >= 0 {
            return (key, id);
        }
        assert_eq!(nix::errno::Errno::last(), nix::errno::Errno::EEXIST);
    }
}

/// A bus file whose keys name objects of the wrong size (an array of 3
/// semaphores, or a segment of 100 bytes) is refused as not naming a bus,
/// by every entry point alike: the same failure, the same error.
#[test]
fn objects_of_the_wrong_size_are_refused_alike_everywhere() {
    let dir = tempfile::Builder::new()
        .prefix("bus-size")
        .tempdir()
        .unwrap();
    let path = dir.path().join("wrong-size");
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
    for (object, sems) in [("semaphore array", 3), ("shared memory", 5)] {
        // Every entry point but busfile::read, which reads only the file.
        for (call, f) in api_calls()
            .into_iter()
            .filter(|(c, _)| *c != "busfile::read")
        {
            // SAFETY (both): semget and shmget take only integers.
            let (sem_key, sem_id) = fresh_object(|k| unsafe { libc::semget(k, sems, flags) });
            let (shm_key, shm_id) = fresh_object(|k| unsafe { libc::shmget(k, 100, flags) });
            fs::write(&path, format!("{sem_key}\n{shm_key}\n")).unwrap();
            let err = f(&path).expect_err(call);
            match &err {
                Error::InvalidBusFile { reason, .. } => assert_eq!(
                    reason,
                    &format!("its {object} key names an object of the wrong size"),
                    "{call}"
                ),
                other => panic!("{call} with a wrong-size {object}: {other:?}"),
            }
            // SAFETY: IPC_RMID takes no buffer; the ids are ours.
            unsafe {
                libc::semctl(sem_id, 0, libc::IPC_RMID);
                libc::shmctl(shm_id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

/// A termination signal the command was started with ignored (`nohup`,
/// `trap '' HUP`) stays ignored: the listener keeps listening through it,
/// and still ends on SIGTERM.
#[test]
fn an_ignored_sighup_stays_ignored() {
    use std::io::{BufRead, BufReader};
    let (_dir, path) = temp_bus("bus-nohup");
    let p = path.to_string_lossy().into_owned();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("trap '' HUP; exec '{BIN}' listen '{p}'"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let writer = Bus::open(&path, Access::Write).unwrap();
    let until_counted = || {
        for _ in 0..2000 {
            let s = bus::stat(&path).unwrap();
            if s.listeners() == 1 && s.waiting == 1 {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("the listener never joined");
    };
    until_counted();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    writer
        .write(&bus::Message::new("0 after the hangup").unwrap())
        .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "0 after the hangup");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, stderr) = ended_within(child, PROMPTLY);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(bus::stat(&path).unwrap().listeners(), 0);
    bus::unlink(&path).unwrap();
}
