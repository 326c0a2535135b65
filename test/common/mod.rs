//! Helpers shared by the multi-process tests: temporary buses, the peer
//! processes (test/peer.rs) and a watchdog that turns a hang into a failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bus in its own temporary directory, unlinked (with the directory) on
/// drop, so no System V object outlives the test.
pub struct TempBus {
    dir: PathBuf,
    pub path: PathBuf,
}

impl TempBus {
    pub fn new(name: &str) -> TempBus {
        let dir = std::env::temp_dir().join(format!(
            "bus-test-{}-{}-{:x}",
            name,
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = bus::create(Some(&dir.join("bus")), true).unwrap();
        TempBus { dir, path }
    }
}

impl Drop for TempBus {
    fn drop(&mut self) {
        let _ = bus::unlink(&self.path);
        let _ = std::fs::remove_dir_all(&self.dir);
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
                        kill(pid, nix::sys::signal::Signal::SIGKILL);
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

/// Stops a process and waits until it is stopped (state `T` in /proc):
/// `kill` returns before the signal has taken effect.
pub fn stop(pid: u32) {
    kill(pid, nix::sys::signal::Signal::SIGSTOP);
    let stat = format!("/proc/{pid}/stat");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        if text
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            == Some('T')
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{pid} did not stop"
        );
        std::thread::yield_now();
    }
}

pub fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    // The process may have exited already; that is fine.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
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
