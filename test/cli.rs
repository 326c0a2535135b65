//! The `bus` command line, run as the real binary in temporary directories:
//! every subcommand and exit status, the bus file, permissions and
//! ownership, signals, and bad input; messages printed by `listen` and
//! lines broadcast from stdin, in shell pipelines; `stat --json`,
//! completions, the version, and `make install`. Every bus a test makes is
//! removed when the test ends, pass or fail, so nothing is left in
//! `ipcs -s -m`.
//!
//! Waits are on protocol signals (the listener count S, the writer lock X,
//! the count of processes attached to the bus, process exit), each bounded
//! by [`PATIENCE`]; only the output of commands that `bus listen` runs
//! asynchronously is polled from a file.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bus::busfile::Keys;
use common::{children_of, output_within, send_signal, temp_dir, until, FileIn, PATIENCE};
use nix::sys::signal::Signal;
use tempfile::TempDir;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_bus");

/// A command for `bus listen`/`bus wait` that appends each message to `out`.
fn append_to(out: &str) -> String {
    format!("printf '%s\\n' \"$msg\" >> '{out}'")
}

// --- Guarded buses and processes. ---------------------------------------------

/// Removes a bus on drop: through its file, or, if the file is gone or
/// broken, through the keys it held when it was guarded.
struct BusGuard {
    path: PathBuf,
    keys: Keys,
}

impl BusGuard {
    /// Creates a bus at `path` with the library.
    fn create(path: impl AsRef<Path>) -> BusGuard {
        bus::create(Some(path.as_ref()), true).expect("create bus");
        BusGuard::adopt(path)
    }

    /// Guards the bus another process made at `path`.
    fn adopt(path: impl AsRef<Path>) -> BusGuard {
        let path = path.as_ref().to_owned();
        let keys = bus::busfile::read(&path).expect("read bus file");
        BusGuard { path, keys }
    }
}

impl Drop for BusGuard {
    fn drop(&mut self) {
        if bus::unlink(&self.path).is_err() {
            remove_ipc_objects(self.keys);
        }
    }
}

/// A background process (a listener, a blocked writer, a shell pipeline),
/// killed and reaped on drop if it is still running.
struct Proc {
    child: Child,
    what: String,
    stderr: PathBuf,
}

impl Proc {
    /// Starts `bus ARGS`, its stderr kept in a file of `dir`.
    fn start(dir: &TempDir, args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        Proc::spawn(dir, cmd, format!("bus {args:?}"))
    }

    /// Starts `cmd` in `dir`, as it is set up, its stderr kept in a file of
    /// `dir`. `cmd` is dropped once the process is started, and with it
    /// this process's copies of the descriptors given to it.
    fn spawn(dir: &TempDir, mut cmd: Command, what: String) -> Proc {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let stderr = dir.path().join(format!(
            "proc-{}.err",
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let child = cmd
            .current_dir(dir.path())
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            child,
            what,
            stderr,
        }
    }

    /// `bus ARGS` (`listen` or `wait` without a command) with its stdout
    /// read by a thread until it ends; [`Printer::output`] returns it.
    fn print(dir: &TempDir, args: &[&str]) -> Printer {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        let mut proc = Proc::spawn(dir, cmd, format!("bus {args:?}"));
        let mut stdout = proc.child.stdout.take().expect("stdout");
        let output = thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).expect("read the output");
            bytes
        });
        Printer { proc, output }
    }

    /// `bus listen PATH` appending each message to `out`, once it is
    /// counted on the bus (S has reached `listeners`).
    fn listen(dir: &TempDir, path: &str, out: &str, listeners: u32) -> Proc {
        let mut proc = Proc::start(dir, &["listen", path, &append_to(out)]);
        proc.until_listeners(path, listeners);
        proc
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        send_signal(self.pid(), Signal::try_from(signal).expect("a signal"));
    }

    /// Stops the process and waits until it is stopped.
    #[track_caller]
    fn stop(&self) {
        common::stop(self.child.id());
    }

    /// Waits until the bus at `path` counts `n` listeners, all asleep
    /// waiting for a message (so a signal cannot land between joining and
    /// waiting), failing early if this process has exited meanwhile.
    #[track_caller]
    fn until_listeners(&mut self, path: &str, n: u32) {
        let what = format!("{n} listener(s) on {path}");
        until(&what, || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("{} exited ({status}): {}", self.what, self.stderr_text());
            }
            let waiting = bus::stat(path).map_or(u32::MAX, |s| s.waiting);
            (listeners(path) == n && waiting == n).then_some(())
        });
    }

    /// Waits for the process to exit.
    #[track_caller]
    fn exit_status(&mut self) -> ExitStatus {
        let what = format!("{} to exit", self.what);
        until(&what, || self.child.try_wait().expect("try_wait"))
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A `bus` process whose stdout is collected.
struct Printer {
    proc: Proc,
    output: thread::JoinHandle<Vec<u8>>,
}

impl Printer {
    /// Waits for the process to exit (checking it exits 0 with nothing on
    /// stderr) and returns everything it wrote on stdout.
    #[track_caller]
    fn output(mut self) -> Vec<u8> {
        let status = self.proc.exit_status();
        assert_eq!(status.code(), Some(0), "{}", self.proc.stderr_text());
        assert_eq!(self.proc.stderr_text(), "", "{}", self.proc.what);
        self.output.join().expect("output thread")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- Running the binary. ----------------------------------------------------

/// What a finished `bus` run left.
struct Run {
    args: Vec<String>,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`bus {:?}`: {}\nstdout: {:?}\nstderr: {:?}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Exit status 0.
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.status.code(), Some(0), "expected success: {self}");
        self
    }

    /// Exit status 1 with one `bus: <reason>` line on stderr, nothing on
    /// stdout; `reason` must appear in it.
    #[track_caller]
    fn fails(self, reason: &str) -> Run {
        assert_eq!(self.status.code(), Some(1), "expected failure: {self}");
        assert!(
            self.stderr.starts_with("bus: "),
            "no `bus: ` prefix: {self}"
        );
        assert_eq!(self.stderr.lines().count(), 1, "one line of error: {self}");
        assert!(self.stderr.contains(reason), "expected {reason:?}: {self}");
        assert!(self.stdout.is_empty(), "nothing on stdout: {self}");
        self
    }

    /// Exit status 2 with the usage on stderr, nothing on stdout.
    #[track_caller]
    fn usage(self) -> Run {
        assert_eq!(
            self.status.code(),
            Some(2),
            "expected a usage error: {self}"
        );
        assert!(
            self.stderr.starts_with("bus: "),
            "no `bus: ` prefix: {self}"
        );
        assert!(self.stderr.contains("usage: bus"), "no usage: {self}");
        assert!(self.stdout.is_empty(), "nothing on stdout: {self}");
        self
    }
}

/// Runs `cmd` to completion (within [`PATIENCE`]) and collects its output.
#[track_caller]
fn run(cmd: &mut Command, args: Vec<String>) -> Run {
    run_with_input(cmd, args, None)
}

/// Runs `cmd` with `input` (if any, else nothing) on its stdin, to
/// completion (within [`PATIENCE`]), and collects its output.
#[track_caller]
fn run_with_input(cmd: &mut Command, args: Vec<String>, input: Option<Vec<u8>>) -> Run {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bus");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // The command may stop reading early (and fail): that is its call.
        thread::spawn(move || stdin.write_all(&input));
    }
    let output = output_within(child, PATIENCE, &format!("bus {args:?}"));
    Run {
        args,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `bus ARGS`.
#[track_caller]
fn bus(args: &[&str]) -> Run {
    run(
        Command::new(BIN).args(args),
        args.iter().map(|s| s.to_string()).collect(),
    )
}

/// `bus ARGS` with `input` on its stdin.
#[track_caller]
fn bus_with_input(args: &[&str], input: impl Into<Vec<u8>>) -> Run {
    run_with_input(
        Command::new(BIN).args(args),
        args.iter().map(|s| s.to_string()).collect(),
        Some(input.into()),
    )
}

/// `bus ARGS` in directory `dir`.
#[track_caller]
fn bus_in(dir: &TempDir, args: &[&str]) -> Run {
    run(
        Command::new(BIN).args(args).current_dir(dir.path()),
        args.iter().map(|s| s.to_string()).collect(),
    )
}

/// `bus ARGS` as user and group 65534 (nobody), without supplementary
/// groups.
#[track_caller]
fn bus_as_nobody(args: &[&str]) -> Run {
    run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(args),
        args.iter().map(|s| s.to_string()).collect(),
    )
}

// --- Waiting and reading back. ----------------------------------------------

/// The listener count S of the bus at `path`.
#[track_caller]
fn listeners(path: &str) -> u32 {
    bus::stat(path).expect("stat bus").listeners()
}

/// Waits until the file `out` has `n` complete lines and returns them,
/// sorted (commands run concurrently, so their appends may be reordered).
#[track_caller]
fn lines(out: &str, n: usize) -> Vec<String> {
    let what = format!("{n} line(s) in {out}");
    until(&what, || {
        let text = fs::read_to_string(out).unwrap_or_default();
        let count = text.matches('\n').count();
        assert!(count <= n, "more than {n} lines in {out}: {text:?}");
        (count == n).then(|| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        })
    })
}

/// Sorted owned copies of `messages`.
fn sorted(messages: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = messages.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Broadcasts `message` with the CLI and checks that a listener appending
/// to `out` (which already holds `before` lines) receives it.
#[track_caller]
fn reaches_listener(path: &str, out: &str, before: usize, message: &str) {
    bus(&["broadcast", path, message]).ok();
    let got = lines(out, before + 1);
    assert!(
        got.iter().any(|l| l == message),
        "{message:?} not in {got:?}"
    );
}

/// Waits until a writer has published its message and waits in `Z(S)`
/// for the one listener, which is stopped: S=1 W=0 X=0 Q=0 N=1.
#[track_caller]
fn until_writer_blocked(path: &str) {
    until("a writer holding the bus", || {
        (bus::stat(path).expect("stat bus").values == [1, 0, 0, 0, 1]).then_some(())
    });
}

/// The file's permission bits.
fn file_mode(path: &str) -> u32 {
    fs::metadata(path).expect("stat file").mode() & 0o7777
}

/// The value of the `name:` line in `bus stat` output.
#[track_caller]
fn stat_field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name:?} in {out:?}"))
        .trim()
}

/// The first name in a passwd/group style file whose id (3rd field) is `id`.
fn name_with_id(file: &str, id: u32) -> String {
    let text = fs::read_to_string(file).expect("read user database");
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == id.to_string())
        .map(|f| f[0].to_owned())
        .unwrap_or_else(|| panic!("no entry with id {id} in {file}"))
}

// --- Direct looks at the kernel. --------------------------------------------

/// Whether a semaphore array with `key` exists.
fn sem_exists(key: i32) -> bool {
    // SAFETY: semget takes plain integers; with no flags it only looks up.
    let id = unsafe { libc::semget(key, 0, 0) };
    id >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// Whether a shared memory segment with `key` exists.
fn shm_exists(key: i32) -> bool {
    // SAFETY: shmget takes plain integers; with no flags it only looks up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    id >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

/// Removes the objects named by `keys`, if they still exist.
fn remove_ipc_objects(keys: Keys) {
    // SAFETY: plain integer arguments; IPC_RMID on a semaphore array takes
    // no fourth argument, on a segment a null buffer.
    unsafe {
        let sem = libc::semget(keys.sem, 0, 0);
        if sem >= 0 {
            libc::semctl(sem, 0, libc::IPC_RMID);
        }
        let shm = libc::shmget(keys.shm, 0, 0);
        if shm >= 0 {
            libc::shmctl(shm, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// A key naming neither a semaphore array nor a shared memory segment.
fn absent_key(from: i32) -> i32 {
    (from..)
        .find(|&k| !sem_exists(k) && !shm_exists(k))
        .expect("a free key")
}

// --- Help, version and usage errors. ----------------------------------------

/// `--help`/`-h` and `--version`/`-V` print on stdout and exit 0.
#[test]
fn help_and_version_print_on_stdout_and_exit_0() {
    for flag in ["--help", "-h"] {
        let r = bus(&[flag]).ok();
        assert!(r.stdout.starts_with("usage: bus"), "{r}");
        assert!(r.stderr.is_empty(), "{r}");
    }
    for flag in ["--version", "-V"] {
        let r = bus(&[flag]).ok();
        assert_eq!(r.stdout, format!("bus {}\n", env!("CARGO_PKG_VERSION")));
        assert!(r.stderr.is_empty(), "{r}");
    }
}

/// The text after `{` + `head` in `text`, up to the next `"`: the version
/// in `{release, {bus, "0.3.0"}` or `{vsn, "0.3.0"}`.
fn quoted_after(text: &str, head: &str) -> String {
    let squeezed: String = text.split_whitespace().collect();
    let head: String = head.split_whitespace().collect();
    let rest = squeezed
        .split_once(&head)
        .unwrap_or_else(|| panic!("no {head:?} in {text}"))
        .1;
    rest.strip_prefix('"')
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// `bus --version` is the crate's version, which is the Erlang release's
/// and the application's.
#[test]
fn the_version_is_the_crates_and_the_erlang_releases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rebar = fs::read_to_string(root.join("rebar.config")).unwrap();
    let app = fs::read_to_string(root.join("apps/bus/src/bus.app.src")).unwrap();
    let release = quoted_after(&rebar, "{release, {bus,");
    let vsn = quoted_after(&app, "{vsn,");
    let r = bus(&["--version"]).ok();
    assert_eq!(r.stdout, format!("bus {release}\n"));
    assert_eq!(r.stdout, format!("bus {vsn}\n"));
    assert_eq!(r.stdout, format!("bus {}\n", env!("CARGO_PKG_VERSION")));
}

/// Unknown commands and options, wrong argument counts and misplaced
/// options exit 2 with the usage on stderr and touch nothing.
/// `BUS_SPIN_US` sets the spinning budget of every bus the command opens
/// (0: none); a value the library cannot read is refused before anything
/// is done.
#[test]
fn spin_variable_is_checked() {
    let dir = temp_dir("cli");
    let path = dir.path().join("spin").to_str().unwrap().to_string();
    let _guard = BusGuard::create(&path);
    let with_spin = |value: &str, args: &[&str]| {
        run(
            Command::new(BIN).args(args).env("BUS_SPIN_US", value),
            args.iter().map(|s| s.to_string()).collect(),
        )
    };
    for good in ["0", "50", " 75", "10000"] {
        with_spin(good, &["broadcast", &path, "0 m"]).ok();
    }
    for bad in ["", "-1", "fifty", "10001", "1.5", "99999999999999999999"] {
        with_spin(bad, &["broadcast", &path, "0 m"])
            .fails("BUS_SPIN_US: not a number of microseconds from 0 to 10000");
        with_spin(bad, &["create", &format!("{path}.not-made")]).fails("BUS_SPIN_US");
        assert!(!Path::new(&format!("{path}.not-made")).exists());
    }
}

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    let dir = temp_dir("cli");
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["frobnicate", "p"],
        &["create", "p", "q"],
        &["remove"],
        &["remove", "p", "q"],
        // (`listen PATH` and `wait PATH` print messages.)
        &["listen"],
        &["listen", "p", "true", "x"],
        &["wait"],
        &["broadcast", "p"],
        &["broadcast", "p", "m", "x"],
        &["chmod", "700"],
        &["chown", "root"],
        &["chgrp", "root"],
        &["stat"],
        &["stat", "p", "q"],
        &["-q", "create", "p"],
        &["create", "-q", "p"],
        &["create", "--frob", "p"],
        &["broadcast", "p", "-m"],
        &["-x", "broadcast", "p", "m"],
        &["broadcast", "-x", "p", "m"],
        &["-n", "create", "p"],
        &["create", "-n", "p"],
        &["-x", "remove", "p"],
        &["-n", "listen", "p", "true"],
    ];
    for args in cases {
        bus_in(&dir, args).usage();
    }
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "usage errors created {left:?}");
}

/// Invalid permissions are a usage error (2) on an existing bus, which
/// keeps its mode.
#[test]
fn invalid_permissions_exit_2() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    for spec in ["rwx", "", "1777", "8", "u+x", "a"] {
        bus(&["chmod", spec, &p]).usage();
    }
    let s = bus::stat(&p).unwrap();
    assert_eq!((s.sem_mode, s.shm_mode, s.file_mode), (0o600, 0o600, 0o600));
}

/// Invalid permissions are recognised as such (2) before the bus is looked
/// at, so a missing bus does not turn a usage error into a failure (1).
#[test]
fn invalid_permissions_are_a_usage_error_before_the_bus_is_opened() {
    let dir = temp_dir("cli");
    bus(&["chmod", "rwx", &dir.file("missing")]).usage();
}

// --- create and remove. -----------------------------------------------------

/// `create PATH` writes exactly two lines of decimal keys, mode 0600,
/// naming a fresh 0600 semaphore array {0,0,1,0,0} and segment.
#[test]
fn create_writes_two_decimal_keys_with_mode_0600() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let r = bus(&["create", &p]).ok();
    let _guard = BusGuard::adopt(&p);
    assert!(r.stdout.is_empty() && r.stderr.is_empty(), "{r}");

    let text = fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert!(text.ends_with('\n'), "{text:?}");
    assert_eq!(lines.len(), 2, "{text:?}");
    for line in &lines {
        assert!(
            !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
        let key: i64 = line.parse().unwrap();
        assert!((1..1 << 30).contains(&key), "key {key} out of range");
    }
    assert_eq!(file_mode(&p), 0o600);

    let s = bus::stat(&p).unwrap();
    assert_eq!(text, format!("{}\n{}\n", s.keys.sem, s.keys.shm));
    assert_eq!((s.sem_mode, s.shm_mode, s.file_mode), (0o600, 0o600, 0o600));
    assert_eq!(s.values, [0, 0, 1, 0, 0]);
    let meta = fs::metadata(&p).unwrap();
    assert_eq!((s.uid, s.gid), (meta.uid(), meta.gid()));
}

/// `create` without a path makes `$XDG_RUNTIME_DIR/bus/random.<30
/// alphanumerics>` (creating the directory) and prints that pathname.
#[test]
fn create_without_path_prints_a_random_bus_in_xdg_runtime_dir() {
    let dir = temp_dir("cli");
    let xdg = dir.path().join("xdg");
    let bus_dir = xdg.join("bus");
    let mut made = Vec::new();
    let forms: [&[&str]; 3] = [&["create"], &["create", "-x"], &["-x", "create"]];
    for args in forms {
        let r = run(
            Command::new(BIN).args(args).env("XDG_RUNTIME_DIR", &xdg),
            args.iter().map(|s| s.to_string()).collect(),
        )
        .ok();
        let printed = r.stdout.strip_suffix('\n').expect("one line");
        made.push(BusGuard::adopt(printed));
        let name = Path::new(printed)
            .strip_prefix(&bus_dir)
            .unwrap_or_else(|_| panic!("{printed} not in {}", bus_dir.display()))
            .to_str()
            .unwrap();
        let random = name.strip_prefix("random.").expect("random. prefix");
        assert_eq!(random.len(), 30, "{name}");
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
        assert!(bus::stat(printed).is_ok(), "{printed} is not a bus");
    }
    let meta = fs::metadata(&bus_dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o022, 0, "bus dir writable by others");
    assert_eq!(meta.mode() & 0o700, 0o700);
    assert_ne!(made[0].path, made[1].path);
    assert_ne!(made[1].path, made[2].path);
}

/// `create` on an existing bus succeeds and changes nothing; `-x` (before
/// or after the command) fails with 1.
#[test]
fn create_existing_succeeds_unless_exclusive() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    bus(&["create", "-x", &p]).ok();
    let _guard = BusGuard::adopt(&p);
    let before = fs::read_to_string(&p).unwrap();
    let stat_before = bus::stat(&p).unwrap();

    bus(&["create", &p]).ok();
    bus(&["create", "-x", &p]).fails("already exists");
    bus(&["-x", "create", &p]).fails("already exists");

    assert_eq!(fs::read_to_string(&p).unwrap(), before);
    assert_eq!(bus::stat(&p).unwrap(), stat_before);
}

/// `remove` deletes the file, the semaphore array and the segment; a
/// second `remove` fails with 1.
#[test]
fn remove_deletes_the_file_and_both_ipc_objects() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    bus(&["create", &p]).ok();
    let guard = BusGuard::adopt(&p);
    let keys = guard.keys;
    assert!(sem_exists(keys.sem) && shm_exists(keys.shm));

    bus(&["remove", &p]).ok();
    assert!(!Path::new(&p).exists(), "file left");
    assert!(!sem_exists(keys.sem), "semaphore array left");
    assert!(!shm_exists(keys.shm), "shared memory left");

    // The same keys in a new file no longer open.
    let copy = dir.file("copy");
    fs::write(&copy, bus::busfile::format(keys)).unwrap();
    assert!(matches!(bus::stat(&copy), Err(bus::Error::Gone { .. })));

    bus(&["remove", &p]).fails("no such bus");
}

/// `remove` of a pathname that does not exist fails with 1 and names it.
#[test]
fn remove_of_a_missing_bus_exits_1() {
    let dir = temp_dir("cli");
    let p = dir.file("missing");
    bus(&["remove", &p]).fails(&format!("{p}: no such bus"));
}

// --- listen, wait, broadcast. -----------------------------------------------

/// `listen` runs the command for every message with `$msg` set to it,
/// verbatim: never interpreted by the shell.
#[test]
fn listen_runs_the_command_with_msg_for_every_message() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let _listener = Proc::listen(&dir, &p, &out, 1);

    let pwned = dir.file("pwned");
    let injection = format!("$(touch {pwned})");
    let messages = [
        "0 hello",
        "0 with  spaces\tand a tab",
        "0 quotes ' \" and $HOME `id`",
        &injection,
        "0 ünïcödé ✓",
        "",
        "1234",
    ];
    for m in messages {
        bus(&["broadcast", &p, m]).ok();
    }
    assert_eq!(lines(&out, messages.len()), sorted(&messages));
    assert!(
        !Path::new(&pwned).exists(),
        "a message was run by the shell"
    );
}

/// SIGTERM, SIGINT and SIGHUP make `listen` leave the bus and exit 0,
/// restoring the semaphores to their idle values.
#[test]
fn listen_exits_0_on_termination_signals_and_leaves_the_bus() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let mut a = Proc::listen(&dir, &p, &out, 1);
    let mut b = Proc::listen(&dir, &p, &out, 2);
    let mut c = Proc::listen(&dir, &p, &out, 3);
    // After a message, so they leave from the middle of their loop too.
    bus(&["broadcast", &p, "0 before"]).ok();
    assert_eq!(lines(&out, 3), ["0 before"; 3]);
    // Each counts itself again once it has run its command.
    c.until_listeners(&p, 3);

    for (proc, signal, left) in [
        (&mut a, libc::SIGTERM, 2),
        (&mut b, libc::SIGINT, 1),
        (&mut c, libc::SIGHUP, 0),
    ] {
        proc.signal(signal);
        let status = proc.exit_status();
        assert_eq!(
            status.code(),
            Some(0),
            "signal {signal}: {}",
            proc.stderr_text()
        );
        assert_eq!(listeners(&p), left);
    }
    assert_eq!(bus::stat(&p).unwrap().values, [0, 0, 1, 0, 0]);
    // With nobody listening, a broadcast returns at once.
    bus(&["broadcast", &p, "0 nobody"]).ok();
}

/// The detector of zombie children sees one.
#[test]
fn zombie_detector_sees_a_zombie() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    until("an unreaped child to be a zombie", || {
        children_of(std::process::id() as i32)
            .contains(&(pid, 'Z'))
            .then_some(())
    });
    child.wait().unwrap();
}

/// `listen` reaps the commands it runs: once they have finished it has no
/// children left, zombie or not.
#[test]
fn listen_leaves_no_zombie_children() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let mut listener = Proc::listen(&dir, &p, &out, 1);

    let messages: Vec<String> = (0..20).map(|i| format!("0 message {i:02}")).collect();
    for m in &messages {
        bus(&["broadcast", &p, m]).ok();
    }
    let mut want = messages.clone();
    want.sort();
    assert_eq!(lines(&out, messages.len()), want);

    let pid = listener.pid();
    let mut seen = Vec::new();
    until("the listener's children to be reaped", || {
        seen = children_of(pid);
        seen.is_empty().then_some(())
    });
    assert!(
        seen.iter().all(|&(_, state)| state != 'Z'),
        "zombies: {seen:?}"
    );
    listener.until_listeners(&p, 1);
}

/// `listen` fails with 1 when its bus is removed under it.
#[test]
fn listen_exits_1_when_its_bus_is_removed() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let mut listener = Proc::listen(&dir, &p, &out, 1);
    bus(&["remove", &p]).ok();
    let status = listener.exit_status();
    assert_eq!(status.code(), Some(1), "{}", listener.stderr_text());
    let err = listener.stderr_text();
    assert!(
        err.starts_with("bus: ") && err.contains("no longer exists"),
        "{err:?}"
    );
}

/// `wait` runs the command with `$msg` for one message, then leaves the
/// bus and exits 0.
#[test]
fn wait_exits_after_one_message_having_run_the_command() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let mut waiter = Proc::start(&dir, &["wait", &p, &append_to(&out)]);
    waiter.until_listeners(&p, 1);

    bus(&["broadcast", &p, "0 the one"]).ok();
    let status = waiter.exit_status();
    assert_eq!(status.code(), Some(0), "{}", waiter.stderr_text());
    assert_eq!(listeners(&p), 0);
    assert_eq!(lines(&out, 1), ["0 the one"]);
    assert_eq!(bus::stat(&p).unwrap().values, [0, 0, 1, 0, 0]);
}

/// `-n` and `-x` work before and after the command name.
#[test]
fn options_go_before_or_after_the_command() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    bus(&["-x", "create", &p]).ok();
    let _guard = BusGuard::adopt(&p);
    bus(&["create", "-x", &dir.file("other")]).ok();
    let _other = BusGuard::adopt(dir.file("other"));
    let _listener = Proc::listen(&dir, &p, &out, 1);

    bus(&["broadcast", "-n", &p, "0 after"]).ok();
    bus(&["-n", "broadcast", &p, "0 before"]).ok();
    bus(&["broadcast", &p, "-n", "--", "0 between"]).ok();
    bus(&["broadcast", &p, "0 last", "-n"]).ok();
    let want = sorted(&["0 after", "0 before", "0 between", "0 last"]);
    assert_eq!(lines(&out, 4), want);
}

/// After `--` every argument is an operand, so a message may start with
/// `-`; a lone `-` is always an operand (as the message: the lines of
/// stdin, here the one line `-`).
#[test]
fn double_dash_ends_options() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let _listener = Proc::listen(&dir, &p, &out, 1);

    bus(&["broadcast", "--", &p, "-n"]).ok();
    bus(&["broadcast", "-n", "--", &p, "--x"]).ok();
    bus(&["--", "broadcast", &p, "-h"]).ok();
    bus_with_input(&["broadcast", &p, "-"], "-\n").ok();
    bus(&["broadcast", &p, "-x"]).usage();
    assert_eq!(lines(&out, 4), sorted(&["-n", "--x", "-h", "-"]));
}

/// `broadcast -n` fails with 1 at once while another writer holds the bus
/// (stuck on a stopped listener); the bus works again once it is released.
#[test]
fn broadcast_nowait_fails_at_once_while_another_writer_holds_the_bus() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let listener = Proc::listen(&dir, &p, &out, 1);

    listener.stop();
    let mut holder = Proc::start(&dir, &["broadcast", &p, "0 held"]);
    until_writer_blocked(&p);

    for args in [
        &["broadcast", "-n", &p, "0 no"],
        &["-n", "broadcast", &p, "0 no"],
    ] {
        let start = Instant::now();
        bus(args).fails("would block");
        assert!(start.elapsed() < Duration::from_secs(5), "-n waited");
    }
    assert!(
        holder.child.try_wait().unwrap().is_none(),
        "holder finished early"
    );

    listener.signal(libc::SIGCONT);
    let status = holder.exit_status();
    assert_eq!(status.code(), Some(0), "{}", holder.stderr_text());
    assert_eq!(lines(&out, 1), ["0 held"]);
    reaches_listener(&p, &out, 1, "0 still works");
    assert_eq!(bus::stat(&p).unwrap().values[2], 1);
}

/// A broadcast blocked on a stopped listener and ended by SIGTERM exits 1
/// and releases the writer lock; the bus works afterwards. (A stopped
/// process is off the semaphore's wait queue, so the zeroing did not
/// release it; the writer is gone before it continues, and a dead
/// writer's message is the one a listener may miss: it gets the next.)
#[test]
fn broadcast_interrupted_by_sigterm_exits_1_and_releases_the_bus() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let listener = Proc::listen(&dir, &p, &out, 1);

    listener.stop();
    let mut holder = Proc::start(&dir, &["broadcast", &p, "0 interrupted"]);
    sigterm_ends_a_held_writer(&p, &out, &listener, &mut holder, "bus: ");
}

/// `writer` is broadcasting behind the stopped `listener`: SIGTERM ends it
/// with status 1 and a reason starting with `reason`, the writer lock is
/// released, and once the listener continues the bus works.
#[track_caller]
fn sigterm_ends_a_held_writer(
    p: &str,
    out: &str,
    listener: &Proc,
    writer: &mut Proc,
    reason: &str,
) {
    until_writer_blocked(p);
    writer.signal(libc::SIGTERM);
    let status = writer.exit_status();
    assert_eq!(status.code(), Some(1), "{}", writer.stderr_text());
    assert!(
        writer.stderr_text().starts_with(reason),
        "{}",
        writer.stderr_text()
    );
    assert_eq!(
        bus::stat(p).unwrap().values[2],
        1,
        "writer lock not released"
    );

    listener.signal(libc::SIGCONT);
    until_listeners_waiting(p, 1);
    reaches_listener(p, out, 0, "0 still works");
}

/// Waits until `n` listeners are asleep waiting for a message.
#[track_caller]
fn until_listeners_waiting(path: &str, n: u32) {
    until("listeners waiting", || {
        (bus::stat(path).expect("stat bus").waiting == n).then_some(())
    });
}

/// A message of 2048 bytes is refused with 1 before the bus is touched; one
/// of 2047 bytes arrives intact.
#[test]
fn messages_over_2047_bytes_are_refused_and_2047_arrive_intact() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let long: String = (0..2048)
        .map(|i| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]))
        .collect();

    // Refused even for a missing bus: the message is checked first.
    bus(&["broadcast", &dir.file("missing"), &long]).fails("message too long");

    // `wait` takes exactly the first message: the refused one never came.
    let out = dir.file("out");
    let mut waiter = Proc::start(&dir, &["wait", &p, &append_to(&out)]);
    waiter.until_listeners(&p, 1);
    bus(&["broadcast", &p, &long]).fails("message too long");
    bus(&["broadcast", &p, "0 after"]).ok();
    assert_eq!(waiter.exit_status().code(), Some(0));
    assert_eq!(lines(&out, 1), ["0 after"]);

    let out = dir.file("out2047");
    let mut waiter = Proc::start(&dir, &["wait", &p, &append_to(&out)]);
    waiter.until_listeners(&p, 1);
    bus(&["broadcast", &p, &long[..2047]]).ok();
    assert_eq!(waiter.exit_status().code(), Some(0));
    let got = lines(&out, 1);
    assert_eq!(got[0].len(), 2047);
    assert_eq!(got[0], long[..2047]);
}

/// A NUL byte cannot be passed in argv; the library refuses it (and over
/// 2047 bytes) before anything is sent.
#[test]
fn the_library_refuses_nul_and_overlong_messages() {
    match bus::Message::new(&b"0 a\0b"[..]) {
        Err(e @ bus::Error::MessageContainsNul { offset: 3 }) => {
            assert_eq!(e.errno(), libc::EINVAL)
        }
        other => panic!("NUL accepted: {other:?}"),
    }
    assert!(matches!(
        bus::Message::new(vec![b'a'; 2048]),
        Err(bus::Error::MessageTooLong { len: 2048 })
    ));
    assert!(bus::Message::new(vec![b'a'; 2047]).is_ok());
}

// --- chmod, chown, chgrp, stat. ---------------------------------------------

/// `chmod` with octal and symbolic permissions: any bit of a class grants
/// read and write; the file gets the mode without group/other write.
#[test]
fn chmod_octal_and_symbolic() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let steps = [
        ("700", 0o600),
        ("751", 0o666),
        ("ug", 0o660),
        ("+o", 0o666),
        ("-g", 0o606),
        ("=u+g", 0o660),
        ("7", 0o006),
        ("070", 0o060),
        ("0", 0o000),
        ("+u", 0o600),
        ("u-u+o", 0o006),
        ("=ugo", 0o666),
        ("-ug", 0o006),
        ("600", 0o600),
    ];
    for (spec, mode) in steps {
        // `--` so that `-g` is not taken for an option; without it, see
        // `chmod_takes_permissions_starting_with_a_dash`.
        bus(&["chmod", "--", spec, &p]).ok();
        let s = bus::stat(&p).unwrap();
        assert_eq!(s.sem_mode, mode, "semaphores after chmod {spec}");
        assert_eq!(s.shm_mode, mode, "shared memory after chmod {spec}");
        assert_eq!(file_mode(&p), mode & !0o022, "file after chmod {spec}");
        assert_eq!(s.file_mode, mode & !0o022);
    }
    let _listener = Proc::listen(&dir, &p, &out, 1);
    reaches_listener(&p, &out, 0, "0 after chmod");
}

/// Symbolic permissions may start with `-` (PROTOCOL.md's own `-g`):
/// right after `chmod` they are PERMISSIONS, not options, as in the
/// original `bus`.
#[test]
fn chmod_takes_permissions_starting_with_a_dash() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    bus(&["chmod", "ugo", &p]).ok();
    bus(&["chmod", "-g", &p]).ok();
    assert_eq!(bus::stat(&p).unwrap().sem_mode, 0o606);
    bus(&["chmod", "-o+g", &p]).ok();
    assert_eq!(bus::stat(&p).unwrap().sem_mode, 0o660);
    bus(&["chmod", "--", "-g", &p]).ok();
    assert_eq!(bus::stat(&p).unwrap().sem_mode, 0o600);
    assert_eq!(file_mode(&p), 0o600);
}

/// `chown` and `chgrp` with numeric ids and names set the owner of the
/// file and of both IPC objects; unknown names fail with 1 and change
/// nothing.
#[test]
fn chown_and_chgrp_with_ids_and_names() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let user0 = name_with_id("/etc/passwd", 0);
    let group0 = name_with_id("/etc/group", 0);
    let owner = |p: &str| {
        let s = bus::stat(p).unwrap();
        let meta = fs::metadata(p).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (s.uid, s.gid),
            "file and IPC differ"
        );
        (s.uid, s.gid)
    };

    bus(&["chown", "1234:5678", &p]).ok();
    assert_eq!(owner(&p), (1234, 5678));
    bus(&["chgrp", "42", &p]).ok();
    assert_eq!(owner(&p), (1234, 42));
    bus(&["chown", "4321", &p]).ok();
    assert_eq!(owner(&p), (4321, 42));

    bus(&["chown", "no-such-user-here", &p]).fails("no such user");
    bus(&["chown", &format!("{user0}:no-such-group-here"), &p]).fails("no such group");
    bus(&["chgrp", "no-such-group-here", &p]).fails("no such group");
    assert_eq!(owner(&p), (4321, 42));

    bus(&["chgrp", &group0, &p]).ok();
    assert_eq!(owner(&p), (4321, 0));
    bus(&["chown", &user0, &p]).ok();
    assert_eq!(owner(&p), (0, 0));
    bus(&["chown", "1234:5678", &p]).ok();
    bus(&["chown", &format!("{user0}:{group0}"), &p]).ok();
    assert_eq!(owner(&p), (0, 0));

    // Modes are untouched by ownership changes.
    let s = bus::stat(&p).unwrap();
    assert_eq!((s.sem_mode, s.shm_mode, s.file_mode), (0o600, 0o600, 0o600));
    let _listener = Proc::listen(&dir, &p, &out, 1);
    reaches_listener(&p, &out, 0, "0 after chown");
}

/// An empty user or group name, or a group holding `:`, is not understood
/// (2, as in the original), and the bus keeps its owner.
#[test]
fn malformed_owners_are_usage_errors() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    bus(&["chown", "1234:5678", &p]).ok();
    for owner in ["", ":", "1234:", ":5678", "1234:5678:9"] {
        bus(&["chown", owner, &p]).usage();
    }
    for group in ["", "5678:9"] {
        bus(&["chgrp", group, &p]).usage();
    }
    let s = bus::stat(&p).unwrap();
    assert_eq!((s.uid, s.gid), (1234, 5678));
}

/// `stat` prints the keys, permissions, owner and the listener count.
#[test]
fn stat_prints_keys_permissions_owner_and_listeners() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let guard = BusGuard::create(&p);

    let r = bus(&["stat", &p]).ok();
    assert_eq!(stat_field(&r.stdout, "path"), p);
    assert_eq!(
        stat_field(&r.stdout, "semaphore key"),
        guard.keys.sem.to_string()
    );
    assert_eq!(
        stat_field(&r.stdout, "memory key"),
        guard.keys.shm.to_string()
    );
    assert_eq!(stat_field(&r.stdout, "permissions"), "600 (file 600)");
    let meta = fs::metadata(&p).unwrap();
    assert_eq!(
        stat_field(&r.stdout, "owner"),
        format!("{}:{}", meta.uid(), meta.gid())
    );
    assert_eq!(stat_field(&r.stdout, "listeners"), "0");

    let mut listener = Proc::listen(&dir, &p, &out, 1);
    let r = bus(&["stat", &p]).ok();
    assert_eq!(stat_field(&r.stdout, "listeners"), "1");
    assert!(r.stdout.contains("S=1 "), "{}", r.stdout);

    listener.signal(libc::SIGTERM);
    assert_eq!(listener.exit_status().code(), Some(0));
    bus(&["chmod", "751", &p]).ok();
    let r = bus(&["stat", &p]).ok();
    assert_eq!(stat_field(&r.stdout, "listeners"), "0");
    assert_eq!(stat_field(&r.stdout, "permissions"), "666 (file 644)");
}

// --- Bad input. ---------------------------------------------------------------

/// Every subcommand that opens a bus, with `PATH` in its place.
fn commands_on(path: &str, out: &str) -> Vec<Vec<String>> {
    let cmd = append_to(out);
    let all: [&[&str]; 10] = [
        &["remove", path],
        &["listen", path, &cmd],
        &["wait", path, &cmd],
        &["broadcast", path, "0 m"],
        &["broadcast", "-n", path, "0 m"],
        &["chmod", "600", path],
        &["chmod", "+o", path],
        &["chown", "0:0", path],
        &["chgrp", "0", path],
        &["stat", path],
    ];
    all.iter()
        .map(|args| args.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Runs every subcommand on a bad `path` (rebuilt by `make` before each):
/// each exits 1 with a `bus: ` message naming the path, and all but
/// `remove` leave the file as it was.
#[track_caller]
fn every_command_fails_on(dir: &TempDir, path: &str, make: &dyn Fn(), reason: &str) {
    let out = dir.file("bad-out");
    for args in commands_on(path, &out) {
        make();
        let before = fs::read(path).ok();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = bus(&args).fails(path);
        assert!(r.stderr.contains(reason), "expected {reason:?}: {r}");
        if args[0] != "remove" {
            assert_eq!(fs::read(path).ok(), before, "bus {args:?} changed the file");
        }
    }
    assert!(!Path::new(&out).exists(), "a command ran for a bad bus");
}

/// Files that are not buses (text, empty, one line, key 0, keys out of
/// range, keys of absent objects, a directory, a missing path): every
/// subcommand exits 1 with a clear message and never crashes.
#[test]
fn bad_bus_files_fail_with_1_for_every_subcommand() {
    let dir = temp_dir("cli");
    let p = dir.file("bad");
    let sem = absent_key(12345);
    let shm = absent_key(67890);
    let contents: [(&str, String, &str); 7] = [
        ("text", "hello, world\nnot a bus\n".into(), "not a bus file"),
        ("empty", String::new(), "not a bus file"),
        ("one line", format!("{sem}\n"), "not a bus file"),
        ("IPC_PRIVATE", "0\n0\n".into(), "not a bus file"),
        ("too large", "99999999999\n1\n".into(), "not a bus file"),
        (
            "binary",
            "\u{1}\u{2}\u{3}\n\u{ff}\n".into(),
            "not a bus file",
        ),
        (
            "absent objects",
            format!("{sem}\n{shm}\n"),
            "no longer exists",
        ),
    ];
    for (what, text, reason) in &contents {
        let make = || fs::write(&p, text).unwrap_or_else(|e| panic!("{what}: {e}"));
        every_command_fails_on(&dir, &p, &make, reason);
    }

    let d = dir.file("dir");
    fs::create_dir(&d).unwrap();
    every_command_fails_on(&dir, &d, &|| (), "not a bus file");
    assert!(Path::new(&d).is_dir());

    let missing = dir.file("missing");
    every_command_fails_on(&dir, &missing, &|| (), "");
    assert!(!Path::new(&missing).exists());
    assert!(!sem_exists(sem) && !shm_exists(shm), "objects appeared");
}

/// A file naming a real bus's keys swapped fails with 1 for every
/// subcommand, and the real bus is unharmed.
#[test]
fn swapped_keys_fail_with_1_and_leave_the_real_bus_working() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let guard = BusGuard::create(&p);
    let _listener = Proc::listen(&dir, &p, &out, 1);
    let before = bus::stat(&p).unwrap();

    let swapped = dir.file("swapped");
    let text = format!("{}\n{}\n", guard.keys.shm, guard.keys.sem);
    let make = || fs::write(&swapped, &text).unwrap();
    every_command_fails_on(&dir, &swapped, &make, "");

    assert_eq!(bus::stat(&p).unwrap(), before);
    reaches_listener(&p, &out, 0, "0 still works");
}

/// Another user is refused (1, "permission denied") by a 0600 bus owned by
/// someone else, whether the file or the IPC objects refuse; `chmod +o`
/// lets them in; restored, the bus works.
#[test]
fn other_users_are_refused_until_granted() {
    assert!(
        Path::new("/usr/bin/setpriv").exists() || Path::new("/bin/setpriv").exists(),
        "setpriv (util-linux) is needed to run as another user"
    );
    // Never a silent skip: without root this test cannot run, so it fails.
    assert!(
        nix::unistd::geteuid().is_root(),
        "changing owners and running as another user needs root"
    );
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    bus(&["create", &p]).ok();
    let guard = BusGuard::adopt(&p);
    let _listener = Proc::listen(&dir, &p, &out, 1);
    bus(&["chown", "4321:4321", &p]).ok();
    bus(&["chmod", "600", &p]).ok();

    // The file refuses.
    bus_as_nobody(&["broadcast", &p, "0 refused"]).fails("permission denied");
    bus_as_nobody(&["broadcast", "-n", &p, "0 refused"]).fails("permission denied");
    bus_as_nobody(&["wait", &p, "true"]).fails("permission denied");
    bus_as_nobody(&["stat", &p]).fails("permission denied");
    bus_as_nobody(&["remove", &p]).fails("permission denied");
    bus_as_nobody(&["chmod", "666", &p]).fails("permission denied");

    // The file is readable, the objects refuse.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o604)).unwrap();
    bus_as_nobody(&["broadcast", &p, "0 refused"]).fails("permission denied");
    bus_as_nobody(&["wait", &p, "true"]).fails("permission denied");
    bus_as_nobody(&["chmod", "666", &p]).fails("permission denied");
    assert!(sem_exists(guard.keys.sem) && Path::new(&p).exists());

    // Granted to others: in.
    bus(&["chmod", "+o", &p]).ok();
    assert_eq!(file_mode(&p), 0o604);
    bus_as_nobody(&["broadcast", &p, "0 granted"]).ok();
    assert_eq!(lines(&out, 1), ["0 granted"]);

    // Revoked again: out.
    bus(&["chmod", "=u", &p]).ok();
    bus_as_nobody(&["broadcast", &p, "0 refused"]).fails("permission denied");

    bus(&["chown", "0:0", &p]).ok();
    let s = bus::stat(&p).unwrap();
    assert_eq!((s.uid, s.gid, s.sem_mode), (0, 0, 0o600));
    reaches_listener(&p, &out, 1, "0 restored");
}

// --- Printed messages and lines from stdin. -------------------------------------

/// The lines a test broadcasts through `bus broadcast PATH -`: numbered,
/// with an empty line (an empty message), one that is not UTF-8, one of
/// the longest length, tabs and a carriage return; the last without its
/// `\n`. Returns the input and what `bus listen PATH` must print for it.
fn numbered_lines(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut input = Vec::new();
    for i in 0..n {
        let line = match i % 1000 {
            100 => Vec::new(),
            200 => [format!("0 {i} ").as_bytes(), b"\xff\xfe not UTF-8"].concat(),
            300 => format!("0 {i} ")
                .bytes()
                .chain(std::iter::repeat(b'l'))
                .take(2047)
                .collect(),
            400 => format!("0 {i}\tta\tbs\r").into_bytes(),
            _ => format!("0 line {i}").into_bytes(),
        };
        input.extend_from_slice(&line);
        input.push(b'\n');
    }
    let want = input.clone();
    input.pop();
    (input, want)
}

/// 10,000 lines piped into `bus broadcast PATH -` reach `bus listen PATH`
/// piped into `wc -l`: the bus is opened once, so this takes well under
/// the test's patience.
#[test]
fn ten_thousand_lines_from_stdin_reach_listen_piped_into_wc() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let pid_file = dir.file("listener.pid");
    let count = dir.file("count");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"{ "$0" listen "$1" & echo $! >"$2"; wait; } | wc -l >"$3""#)
        .args([BIN, &p, &pid_file, &count])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut pipeline = Proc::spawn(&dir, sh, "bus listen | wc -l".into());
    pipeline.until_listeners(&p, 1);

    let input: String = (0..10_000).map(|i| format!("0 line {i}\n")).collect();
    let start = Instant::now();
    bus_with_input(&["broadcast", &p, "-"], input).ok();
    eprintln!("10,000 lines broadcast in {:?}", start.elapsed());

    let listener: i32 = until("the listener's pid", || {
        fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    send_signal(listener, Signal::SIGTERM);
    let status = pipeline.exit_status();
    assert_eq!(status.code(), Some(0), "{}", pipeline.stderr_text());
    assert_eq!(fs::read_to_string(&count).unwrap().trim(), "10000");
    assert_eq!(listeners(&p), 0);
}

/// `bus listen PATH` prints each message, byte for byte, followed by a
/// newline, in the order they were broadcast: 10,000 lines from stdin,
/// among them an empty one, one that is not UTF-8 and one of 2047 bytes;
/// the last line, without its newline, counts.
#[test]
fn listen_prints_every_line_exactly_and_in_order() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let mut printer = Proc::print(&dir, &["listen", &p]);
    printer.proc.until_listeners(&p, 1);

    let (input, want) = numbered_lines(10_000);
    bus_with_input(&["broadcast", &p, "-"], input).ok();
    printer.proc.signal(libc::SIGTERM);
    let got = printer.output();
    let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "{} bytes printed, {} broadcast; first difference at {first_difference:?}",
        got.len(),
        want.len()
    );
    assert_eq!(bus::stat(&p).unwrap().values, [0, 0, 1, 0, 0]);
}

/// With `-0`, each message is followed by a NUL byte, so messages holding
/// newlines come out exactly; `wait -0` prints one and exits 0.
#[test]
fn listen_and_wait_with_0_end_each_message_with_nul() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let mut printer = Proc::print(&dir, &["listen", "-0", &p]);
    printer.proc.until_listeners(&p, 1);
    let messages = ["0 two\nlines", "0 a\n\nb\n", "", "\n", "0 tab\there"];
    for m in messages {
        bus(&["broadcast", &p, m]).ok();
    }
    printer.proc.signal(libc::SIGTERM);
    let want: Vec<u8> = messages.iter().flat_map(|m| m.bytes().chain([0])).collect();
    assert_eq!(printer.output(), want);

    let mut waiter = Proc::print(&dir, &["wait", &p, "-0"]);
    waiter.proc.until_listeners(&p, 1);
    bus(&["broadcast", &p, "0 one\nmessage"]).ok();
    assert_eq!(waiter.output(), b"0 one\nmessage\0");
    assert_eq!(listeners(&p), 0);

    // Without -0, a newline follows each message, whatever it holds.
    let mut waiter = Proc::print(&dir, &["wait", &p]);
    waiter.proc.until_listeners(&p, 1);
    bus(&["broadcast", &p, "0 x\ny"]).ok();
    assert_eq!(waiter.output(), b"0 x\ny\n");
}

/// Lines that are not messages (over 2047 bytes, or holding a NUL) are
/// reported by number with the library's reason and skipped; the others
/// are sent, in order; the exit status is 1.
#[test]
fn refused_lines_are_reported_by_number_and_the_rest_are_sent() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let mut printer = Proc::print(&dir, &["listen", &p]);
    printer.proc.until_listeners(&p, 1);

    let longest = vec![b'y'; 2047];
    let lines: [&[u8]; 8] = [
        b"0 one",
        b"0 two",
        &[b'a'; 2048],
        b"0 four",
        b"0 fi\0ve",
        &longest,
        &[b'b'; 1_000_000],
        b"0 last",
    ];
    let input = lines.join(&b'\n');
    let r = bus_with_input(&["broadcast", &p, "-"], input);
    assert_eq!(r.status.code(), Some(1), "{r}");
    let reason = |line: &[u8]| bus::Message::new(line).unwrap_err().to_string();
    let want = format!(
        "bus: line 3: {}\nbus: line 5: {}\nbus: line 7: {}\n",
        reason(lines[2]),
        reason(lines[4]),
        reason(lines[6])
    );
    assert_eq!(r.stderr, want);
    assert!(
        r.stderr.contains("line 7: message too long: 1000000 bytes"),
        "{r}"
    );
    assert!(r.stdout.is_empty(), "{r}");

    printer.proc.signal(libc::SIGTERM);
    let sent = [lines[0], lines[1], lines[3], lines[5], lines[7]];
    let want: Vec<u8> = sent
        .iter()
        .flat_map(|l| l.iter().chain(b"\n"))
        .copied()
        .collect();
    assert_eq!(printer.output(), want);

    // Nothing refused, nothing to read: 0.
    bus_with_input(&["broadcast", &p, "-"], "").ok();
    bus_with_input(&["broadcast", "-n", &p, "-"], "0 a\n0 b\n").ok();
}

/// `bus listen PATH | head -n 1`: once `head` has its line and exits, the
/// listener leaves the bus and exits 0 at once, without waiting for
/// another message, and the pipeline ends.
#[test]
fn listen_leaves_the_bus_when_the_reader_of_its_pipe_exits() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let status = dir.file("status");
    let out = dir.file("out");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"{ "$0" listen "$1"; echo $? >"$2"; } | head -n 1 >"$3""#)
        .args([BIN, &p, &status, &out])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut pipeline = Proc::spawn(&dir, sh, "bus listen | head -n 1".into());
    pipeline.until_listeners(&p, 1);

    bus(&["broadcast", &p, "0 first"]).ok();
    let code = pipeline.exit_status();
    assert_eq!(code.code(), Some(0), "{}", pipeline.stderr_text());
    assert_eq!(pipeline.stderr_text(), "");
    assert_eq!(fs::read_to_string(&status).unwrap(), "0\n");
    assert_eq!(fs::read_to_string(&out).unwrap(), "0 first\n");
    assert_eq!(bus::stat(&p).unwrap().values, [0, 0, 1, 0, 0]);
}

/// When its output is not a pipe (a socket here), the listener sees its
/// reader gone at the next message: the write fails with EPIPE, and it
/// leaves the bus and exits 0 without a word.
#[test]
fn listen_exits_0_quietly_on_epipe() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let _guard = BusGuard::create(&p);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["listen", &p])
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(theirs)));
    let mut listener = Proc::spawn(&dir, cmd, "bus listen >socket".into());
    listener.until_listeners(&p, 1);

    bus(&["broadcast", &p, "0 one"]).ok();
    let mut got = [0; 6];
    ours.set_read_timeout(Some(PATIENCE)).unwrap();
    (&ours).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"0 one\n");
    drop(ours);
    bus(&["broadcast", &p, "0 two"]).ok();
    assert_eq!(listener.exit_status().code(), Some(0));
    assert_eq!(listener.stderr_text(), "");
    assert_eq!(bus::stat(&p).unwrap().values, [0, 0, 1, 0, 0]);
}

/// `broadcast PATH -` ends with 1 on SIGTERM, whether it waits for input
/// or for a stopped listener (then the bus is released and works again).
#[test]
fn lines_from_stdin_end_with_1_on_sigterm() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let start_writer = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["broadcast", &p, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        Proc::spawn(&dir, cmd, "bus broadcast PATH -".into())
    };

    // Waiting for input, with the bus open (attached).
    let mut writer = start_writer();
    let _stdin = writer.child.stdin.take();
    until("the writer to open the bus", || {
        (bus::stat(&p).unwrap().attached == 1).then_some(())
    });
    writer.signal(libc::SIGTERM);
    assert_eq!(writer.exit_status().code(), Some(1));
    assert_eq!(writer.stderr_text(), "bus: interrupted\n");

    // Waiting for a stopped listener.
    let listener = Proc::listen(&dir, &p, &out, 1);
    listener.stop();
    let mut writer = start_writer();
    let mut stdin = writer.child.stdin.take().unwrap();
    stdin.write_all(b"0 held\n").unwrap();
    sigterm_ends_a_held_writer(&p, &out, &listener, &mut writer, "bus: line 1: ");
}

// --- stat --json, completions, usage, install. ---------------------------------

/// `stat --json` prints one JSON object on one line, whose fields are what
/// the library's `stat` says.
#[test]
fn stat_json_is_one_object_with_what_stat_says() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let guard = BusGuard::create(&p);
    let _listener = Proc::listen(&dir, &p, &out, 1);
    bus(&["chmod", "640", &p]).ok();
    bus(&["chown", "1234:5678", &p]).ok();

    for args in [["stat", "--json", &p], ["stat", &p, "--json"]] {
        let r = bus(&args).ok();
        assert!(
            r.stdout.ends_with('\n') && r.stdout.lines().count() == 1,
            "{r}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        let s = bus::stat(&p).unwrap();
        let [sv, wv, xv, qv, nv] = s.values;
        let want = serde_json::json!({
            "path": p,
            "semaphore_key": guard.keys.sem,
            "memory_key": guard.keys.shm,
            "mode": "660",
            "file_mode": "640",
            "uid": 1234,
            "gid": 5678,
            "listeners": 1,
            "waiting": s.waiting,
            "semaphores": {"S": sv, "W": wv, "X": xv, "Q": qv, "N": nv},
            "attached": s.attached,
        });
        assert_eq!(json, want);
        assert_eq!((sv, s.waiting, s.attached), (1, 1, 1));
    }
    bus(&["stat", "--json", &dir.file("missing")]).fails("no such bus");
}

/// The path in `stat --json` is escaped (quotes, backslashes, control
/// characters); bytes that are not UTF-8 become U+FFFD.
#[test]
fn stat_json_escapes_the_path() {
    let dir = temp_dir("cli");
    let name = "a \"bus\" \\ with\na\tnewline\u{1}";
    let p = dir.file(name);
    let _guard = BusGuard::create(&p);
    let r = bus(&["stat", "--json", &p]).ok();
    assert_eq!(r.stdout.lines().count(), 1, "{r}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(json["path"], p.as_str());

    let raw = dir.path().join(OsStr::from_bytes(b"bus-\xff\xfe"));
    let _guard = BusGuard::create(&raw);
    let r = run(
        Command::new(BIN).arg("stat").arg("--json").arg(&raw),
        vec![
            "stat".into(),
            "--json".into(),
            raw.to_string_lossy().into_owned(),
        ],
    )
    .ok();
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(json["path"], raw.to_string_lossy().as_ref());
    assert!(raw.to_string_lossy().ends_with("bus-\u{fffd}\u{fffd}"));
}

/// `--completions SHELL` prints a script for bash, zsh and fish that knows
/// the commands; the bash one defines the completion of `bus`.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = temp_dir("cli");
    for shell in ["bash", "zsh", "fish"] {
        let r = bus(&["--completions", shell]).ok();
        assert!(r.stderr.is_empty(), "{r}");
        for word in ["broadcast", "listen", "chmod", "stat"] {
            assert!(r.stdout.contains(word), "{shell} script lacks {word}: {r}");
        }
        if shell == "bash" {
            let script = dir.file("bus.bash");
            fs::write(&script, &r.stdout).unwrap();
            let sourced = Command::new("bash")
                .args(["-c", r#"source "$1" && complete -p bus"#, "bash", &script])
                .output()
                .unwrap();
            assert!(sourced.status.success(), "{sourced:?}");
            assert!(String::from_utf8_lossy(&sourced.stdout).contains("-F _bus"));
        }
    }
    for args in [&["--completions", "tcsh"][..], &["--completions"]] {
        bus(args).usage();
    }
}

/// The new forms' usage errors exit 2, leave the bus as it was and make
/// nothing: `-0` with a COMMAND, an unknown shell, `--completions` with a
/// command, and `-x` or `-n` anywhere but with their commands.
#[test]
fn usage_errors_of_the_new_forms_exit_2_and_change_nothing() {
    let dir = temp_dir("cli");
    let p = dir.file("bus");
    let out = dir.file("out");
    let _guard = BusGuard::create(&p);
    let before = bus::stat(&p).unwrap();
    let cmd = append_to(&out);
    let cases: &[&[&str]] = &[
        &["listen", "-0", &p, &cmd],
        &["listen", &p, "-0", &cmd],
        &["listen", &p, &cmd, "-0"],
        &["wait", "-0", &p, &cmd],
        &["--completions", "tcsh"],
        &["--completions", "bash", "stat", &p],
        &["stat", &p, "--completions", "bash"],
        &["-x", "listen", &p],
        &["listen", "-x", &p],
        &["-x", "stat", &p],
        &["stat", "-x", &p],
        &["-x", "broadcast", &p, "-"],
        &["-n", "stat", "--json", &p],
        &["-n", "listen", "-0", &p],
        &["stat", "--jsn", &p],
        &["broadcast", &p, "-", "x"],
    ];
    for args in cases {
        let r = bus_in(&dir, args).usage();
        assert_eq!(
            r.stderr.lines().next().map(|l| l.starts_with("bus: ")),
            Some(true)
        );
        assert!(!r.stderr.contains("error:"), "clap's own format: {r}");
    }
    assert_eq!(bus::stat(&p).unwrap(), before);
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["bus"], "usage errors made files");
}

/// `make install DESTDIR=D PREFIX=/usr` puts the command, the C library
/// (as native/libbus/install.sh did), the manual pages there are and the
/// completions in place, and the installed command runs; `make uninstall`
/// removes every file. It relies on the release build (made by `make`, or
/// by CI before the tests), and builds only what is missing.
#[test]
fn make_install_puts_everything_in_place_and_uninstall_removes_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = Path::new(BIN).parent().unwrap().parent().unwrap();
    let dest = temp_dir("install");
    let make = |goal: &str| {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(root)
            .arg(goal)
            .arg(format!("DESTDIR={}", dest.path().display()))
            .arg("PREFIX=/usr")
            .arg(format!("TARGET_DIR={}", target_dir.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("make (is it installed?)");
        // A fresh tree may have to build libbus first.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(child.wait_with_output()));
        let output = rx
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or_else(|_| panic!("make {goal} did not finish"))
            .unwrap();
        assert!(output.status.success(), "make {goal}: {output:?}");
    };
    make("install");

    let usr = dest.path().join("usr");
    let installed = |path: &str| {
        let meta = fs::symlink_metadata(usr.join(path));
        meta.unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(installed("bin/bus").mode() & 0o777, 0o755);
    assert!(installed("lib/libbus.so.3.1.0").is_file());
    for link in ["lib/libbus.so.3", "lib/libbus.so"] {
        assert!(installed(link).file_type().is_symlink(), "{link}");
        assert_eq!(
            fs::read_link(usr.join(link)).unwrap(),
            Path::new("libbus.so.3.1.0")
        );
    }
    assert!(installed("lib/libbus.a").is_file());
    assert_eq!(
        fs::read(usr.join("include/bus.h")).unwrap(),
        fs::read(root.join("native/libbus/include/bus.h")).unwrap()
    );
    let pc = fs::read_to_string(usr.join("lib/pkgconfig/bus.pc")).unwrap();
    assert!(pc.lines().any(|l| l == "prefix=/usr"), "{pc}");
    let version = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(pc.lines().any(|l| l == version), "{pc}");
    let scripts = [
        "share/bash-completion/completions/bus",
        "share/zsh/site-functions/_bus",
        "share/fish/vendor_completions.d/bus.fish",
    ];
    for script in scripts {
        let text = fs::read_to_string(usr.join(script)).unwrap();
        assert!(text.contains("broadcast"), "{script}");
    }
    let mut pages = 0;
    for (dir, sections) in [
        ("src/bin/man", ["1", "5"]),
        ("native/libbus/man", ["3", "7"]),
    ] {
        for page in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            let name = page.file_name().to_string_lossy().into_owned();
            let Some(section) = sections.iter().find(|s| name.ends_with(&format!(".{s}"))) else {
                continue;
            };
            let there = format!("share/man/man{section}/{name}");
            assert_eq!(
                fs::read(usr.join(&there)).unwrap(),
                fs::read(page.path()).unwrap()
            );
            pages += 1;
        }
    }
    eprintln!("{pages} manual page(s) installed");

    let installed_bus = usr.join("bin/bus");
    let r = run(
        Command::new(installed_bus).arg("--version"),
        vec!["--version".into()],
    )
    .ok();
    assert_eq!(r.stdout, format!("bus {}\n", env!("CARGO_PKG_VERSION")));

    make("uninstall");
    let mut left = Vec::new();
    let mut dirs = vec![dest.path().to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                left.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "left by make uninstall: {left:?}");
}
