//! Helpers shared by the multi-process tests: temporary directories and
//! buses, waiting with a bound, signals and what /proc says of processes,
//! the peer processes (test/peer.rs) and a watchdog that turns a hang into a
//! failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// How long anything may take before a test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns a value, failing after [`PATIENCE`].
#[track_caller]
pub fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for `child` to end and collects its output; kills it and fails
/// the test (naming `what`) if it has not ended within `limit`.
#[track_caller]
pub fn output_within(child: Child, limit: Duration, what: &str) -> std::process::Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for the child"),
        Err(_) => {
            // Not reaped yet (its waiter is blocked), so the pid is still ours.
            send_signal(pid, Signal::SIGKILL);
            panic!("{what} did not end within {limit:?}");
        }
    }
}

/// A fresh directory under the system's temporary directory, removed with
/// everything in it on drop. Other users may enter it (mode 0755), for the
/// tests that run commands as another user.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("bus-{name}-"))
        .tempdir()
        .expect("create temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod temp dir");
    dir
}

/// Pathnames in a directory, as strings for argv.
pub trait FileIn {
    /// The pathname of `name` in this directory.
    fn file(&self, name: &str) -> String;
}

impl FileIn for tempfile::TempDir {
    fn file(&self, name: &str) -> String {
        self.path()
            .join(name)
            .to_str()
            .expect("UTF-8 temp dir")
            .to_owned()
    }
}

/// A bus in its own temporary directory, unlinked (with the directory) on
/// drop, so no System V object outlives the test.
pub struct TempBus {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TempBus {
    pub fn new(name: &str) -> TempBus {
        let dir = temp_dir(name);
        let path = bus::create(Some(&dir.path().join("bus")), true).unwrap();
        TempBus { path, _dir: dir }
    }
}

impl Drop for TempBus {
    fn drop(&mut self) {
        // The directory goes after this, with the fields.
        let _ = bus::unlink(&self.path);
    }
}

/// A few random bits from the kernel-seeded std hasher.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// The peer example binary, built by `cargo test` next to the test.
pub fn peer_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    let peer = target.join("examples").join("peer");
    assert!(
        peer.exists(),
        "{} missing: build with `cargo test`",
        peer.display()
    );
    peer
}

/// Kills the processes it knows of once its time is up, and remembers that
/// it did: a hung bus then fails the test instead of hanging CI.
#[derive(Clone)]
pub struct Watchdog {
    pids: Arc<Mutex<Vec<u32>>>,
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn start(limit: Duration, bus: &Path) -> Watchdog {
        let dog = Watchdog {
            pids: Arc::default(),
            fired: Arc::default(),
            done: Arc::default(),
        };
        let d = dog.clone();
        let bus = bus.to_path_buf();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !d.done.load(Ordering::SeqCst) {
                if start.elapsed() > limit {
                    if let Ok(s) = bus::stat(&bus) {
                        eprintln!("watchdog: bus hung, semaphores S W X Q N = {:?}", s.values);
                    }
                    d.fired.store(true, Ordering::SeqCst);
                    for &pid in d.pids.lock().unwrap().iter() {
                        kill(pid, Signal::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        dog
    }

    pub fn watch(&self, child: &Child) {
        self.pids.lock().unwrap().push(child.id());
    }

    /// Stops the watchdog; panics if it had fired.
    pub fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "the bus hung: watchdog fired"
        );
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// What /proc/PID/stat says of a process: its state letter (`R`, `S`, `T`
/// for stopped, `Z` for a zombie...) and its parent's pid. `None` if it is
/// gone.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...", where comm may hold anything.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The children of `pid` with their states, from /proc.
pub fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Gone meanwhile, or not a child: skipped.
        if let Some((state, ppid)) = proc_state(child) {
            if ppid == pid {
                children.push((child, state));
            }
        }
    }
    children
}

/// Stops a process and waits until it is stopped (state `T` in /proc):
/// `kill` returns before the signal has taken effect.
#[track_caller]
pub fn stop(pid: u32) {
    kill(pid, Signal::SIGSTOP);
    until("the process to stop", || {
        (proc_state(pid as i32).map(|(state, _)| state) == Some('T')).then_some(())
    });
}

/// Sends `signal` to `pid`, which may have exited already: that is fine.
pub fn kill(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Sends `signal` to `pid`, a child not yet reaped: it must arrive.
#[track_caller]
pub fn send_signal(pid: i32, signal: Signal) {
    if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        panic!("kill {pid} {signal}: {e}");
    }
}

/// A listener peer that has printed `ready` (it is counted on the bus).
/// Its output is drained by a thread as it comes: a listener blocked on a
/// full pipe would stall the whole bus.
pub struct Listener {
    pub child: Child,
    output: std::thread::JoinHandle<Vec<String>>,
}

/// Starts a listener peer (`read` or `poll`) and waits until it is counted.
pub fn listener(path: &Path, role: &str, leave_after: Option<u64>, dog: &Watchdog) -> Listener {
    let mut cmd = Command::new(peer_binary());
    cmd.arg(role).arg(path).stdout(Stdio::piped());
    if let Some(n) = leave_after {
        cmd.arg(n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    dog.watch(&child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("listener output").unwrap();
    assert_eq!(first, "ready");
    let output = std::thread::spawn(move || lines.map(|l| l.unwrap()).collect());
    Listener { child, output }
}

/// Starts a writer peer broadcasting `TAG 0` .. `TAG COUNT-1`.
pub fn writer(path: &Path, count: u64, tag: &str, dog: &Watchdog) -> Child {
    let child = Command::new(peer_binary())
        .arg("write")
        .arg(path)
        .arg(count.to_string())
        .arg(tag)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    dog.watch(&child);
    child
}

impl Listener {
    /// Reads everything until the peer exits; returns its lines.
    pub fn collect(mut self) -> (Vec<String>, std::process::ExitStatus) {
        let lines = self.output.join().expect("output thread");
        let status = self.child.wait().unwrap();
        (lines, status)
    }
}

/// Checks that, per writer tag, `lines` is a run of consecutive numbers
/// (no loss, no duplicate, in order). Returns (tag -> (first, last)).
pub fn check_consecutive(lines: &[String]) -> std::collections::HashMap<String, (u64, u64)> {
    let mut runs: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for line in lines {
        let (tag, n) = line.split_once(' ').expect("TAG N");
        let n: u64 = n.parse().expect("number");
        match runs.get_mut(tag) {
            None => {
                runs.insert(tag.to_string(), (n, n));
            }
            Some((_, last)) => {
                assert_eq!(n, *last + 1, "after {tag} {last} came {tag} {n}");
                *last = n;
            }
        }
    }
    runs
}
