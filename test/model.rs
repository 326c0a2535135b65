//! Exhaustive model checking of the bus protocol with Spin.
//!
//! The model is `test/model/bus.pml`; each test below generates a verifier
//! for one variant of it (`spin -a -D...`), compiles it with gcc and runs it
//! in a fresh temporary directory, then checks the verifier's report.
//! Spin and gcc are required: when either is missing the tests fail (they
//! never skip), since a protocol proof that silently does not run is worth
//! nothing.
//!
//! Standalone build (without Cargo):
//! `rustc --edition 2021 --test test/model.rs -o /tmp/model_test &&
//!  CARGO_MANIFEST_DIR=$PWD /tmp/model_test`

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Depth limit passed to pan (`-m`); the models reach depths below 200.
const MAX_DEPTH: &str = "100000";

/// The model file, found from the crate root (at compile time under Cargo,
/// else from `CARGO_MANIFEST_DIR` at run time).
fn model_path() -> PathBuf {
    let root =
        match option_env!("CARGO_MANIFEST_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect(
                "CARGO_MANIFEST_DIR is not set: run under cargo, or set it to the crate root",
            )),
        };
    let path = root.join("test").join("model").join("bus.pml");
    assert!(path.is_file(), "model not found at {}", path.display());
    path
}

/// Fail (never skip) when a required tool cannot be run.
fn require_tool(tool: &str, arg: &str) {
    match Command::new(tool).arg(arg).output() {
        Ok(_) => {}
        Err(e) => panic!(
            "`{tool}` is required by the protocol model tests but could not be run ({e}); \
             install it (Debian/Ubuntu: `apt-get install {pkg}`)",
            pkg = if tool == "spin" { "spin" } else { "gcc" }
        ),
    }
}

/// A temporary directory removed when dropped (also when a test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "bus-model-{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The result of one verification run.
struct Verification {
    /// pan's report (stdout and stderr).
    report: String,
    /// The number after "errors:".
    errors: u64,
    /// The number of states stored.
    states: u64,
    /// `spin -t -p -g` replay of the trail, when pan wrote one.
    trail: Option<String>,
}

impl Verification {
    /// An error-free result proves something only if the search was
    /// exhaustive: the depth limit was not hit, memory did not run out,
    /// no bitstate (lossy) storage was used.
    fn assert_exhaustive(&self) {
        let report = &self.report;
        for bad in [
            "max search depth too small",
            "Search not completed",
            "out of memory",
            "MEMLIM",
            "Bit statespace",
        ] {
            assert!(
                !report.contains(bad),
                "the search was not exhaustive ({bad:?}):\n{report}"
            );
        }
        assert!(
            report.contains("Full statespace search"),
            "not a full state-space search:\n{report}"
        );
    }
}

/// Generate, compile and run the verifier for the model with `defines`.
fn verify(name: &str, defines: &[&str]) -> Verification {
    require_tool("spin", "-V");
    require_tool("gcc", "--version");
    let model = model_path();
    let dir = TempDir::new(name);
    let pml = dir.0.join("bus.pml");
    fs::copy(&model, &pml).expect("copy the model");

    let out = run(
        Command::new("spin")
            .args(defines)
            .arg("-a")
            .arg("bus.pml")
            .current_dir(&dir.0),
        "spin -a",
    );
    assert!(
        out.status.success() && dir.0.join("pan.c").is_file(),
        "spin -a {defines:?} failed:\n{}",
        text(&out)
    );

    // -DSAFETY: safety properties only (assertions and invalid end states);
    // -DCOLLAPSE: lossless state compression (exhaustive, less memory).
    let out = run(
        Command::new("gcc")
            .args(["-O2", "-w", "-DSAFETY", "-DCOLLAPSE", "-o", "pan", "pan.c"])
            .current_dir(&dir.0),
        "gcc",
    );
    assert!(
        out.status.success(),
        "gcc failed to compile the verifier for {defines:?}:\n{}",
        text(&out)
    );

    let started = Instant::now();
    let out = run(
        Command::new(dir.0.join("pan"))
            .args(["-m".to_string() + MAX_DEPTH])
            .current_dir(&dir.0),
        "pan",
    );
    let report = text(&out);
    eprintln!(
        "model {name} {defines:?}: pan ran {:.1}s\n{report}",
        started.elapsed().as_secs_f64()
    );

    let errors = number_after(&report, "errors:")
        .unwrap_or_else(|| panic!("no \"errors:\" in pan's report:\n{report}"));
    let states = number_before(&report, "states, stored")
        .unwrap_or_else(|| panic!("no \"states, stored\" in pan's report:\n{report}"));

    let trail = if dir.0.join("bus.pml.trail").is_file() {
        let out = run(
            Command::new("spin")
                .args(defines)
                .args(["-t", "-p", "-g", "bus.pml"])
                .current_dir(&dir.0),
            "spin -t",
        );
        Some(text(&out))
    } else {
        None
    };

    Verification {
        report,
        errors,
        states,
        trail,
    }
}

fn number_after(report: &str, key: &str) -> Option<u64> {
    let rest = &report[report.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn number_before(report: &str, key: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.contains(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The last lines of a trail replay, for failure messages.
fn tail(trail: Option<&str>) -> String {
    match trail {
        None => "(no trail)".to_string(),
        Some(t) => {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(120)..].join("\n")
        }
    }
}

/// The variant must verify: no assertion violation, no invalid end state,
/// over the whole (finite) state space.
fn assert_verifies(name: &str, defines: &[&str]) {
    let v = verify(name, defines);
    assert!(
        v.errors == 0 && v.report.contains("errors: 0"),
        "the model {defines:?} has a counterexample:\n{}\n--- trail (end) ---\n{}",
        v.report,
        tail(v.trail.as_deref())
    );
    v.assert_exhaustive();
    assert!(
        v.trail.is_none(),
        "pan wrote a trail although it found no error"
    );
    assert!(
        v.states > 1000,
        "suspiciously small state space: {} states",
        v.states
    );
}

/// The variant must hang: spin finds an invalid end state (a deadlock), and
/// its trail replays.
fn assert_deadlocks(name: &str, defines: &[&str]) {
    let v = verify(name, defines);
    assert!(
        v.errors >= 1,
        "expected a deadlock in {defines:?}, but the model verified:\n{}",
        v.report
    );
    assert!(
        v.report.contains("invalid end state"),
        "expected the error to be an invalid end state (deadlock) in {defines:?}:\n{}\n--- trail (end) ---\n{}",
        v.report,
        tail(v.trail.as_deref())
    );
    let trail = v
        .trail
        .as_deref()
        .unwrap_or_else(|| panic!("pan reported a deadlock but wrote no trail:\n{}", v.report));
    assert!(
        trail.contains("trail ends after"),
        "the trail does not replay:\n{trail}"
    );
}

/// The variant must break the delivery property: spin finds an assertion
/// violation (a lost, duplicated or overwritten message).
fn assert_violates(name: &str, defines: &[&str]) {
    let v = verify(name, defines);
    assert!(
        v.errors >= 1 && v.report.contains("assertion violated"),
        "expected an assertion violation in {defines:?}:\n{}",
        v.report
    );
    assert!(
        v.trail.is_some(),
        "pan reported an error but wrote no trail"
    );
}

/// Our writer (with the Q >= S shield) and our listener, 2 writers x 2 messages and 3 listeners joining/leaving up to 2 times: no hang, no lost/duplicated/reordered/overwritten message.
#[test]
fn ours_is_correct() {
    assert_verifies("ours", &[]);
}

/// As `ours_is_correct` but as the real code does it: the shield re-reads S after a timeout, and leaving from Z(Q) is two calls ({P(Q), P(S)} with `IPC_NOWAIT`, then {P(S)}).
#[test]
fn ours_as_implemented_is_correct() {
    assert_verifies("ours-impl", &["-DSTALE_SHIELD", "-DSPLIT_LEAVE"]);
}

/// Our listener is immune whoever the writers are: with the original writer (separate P(X), Z(W), no shield) the properties still hold.
#[test]
fn ours_with_original_writer_is_correct() {
    assert_verifies("ours-origwriter", &["-DORIG_WRITER"]);
}

/// The original listener and writer from PROTOCOL.md, 1 writer and 1 listener: spin finds the hang (the model can fail).
#[test]
fn original_one_listener_deadlocks() {
    assert_deadlocks("orig1", &["-DORIGINAL", "-DNW=1", "-DNL=1"]);
}

/// The original listener and writer, 1 writer and 2 listeners: spin finds a hang.
#[test]
fn original_two_listeners_deadlock() {
    assert_deadlocks("orig2", &["-DORIGINAL", "-DNW=1", "-DNL=2"]);
}

/// The atomic re-arm matters: our listener with {Z(N), V(S), P(W)} and V(Q) as two calls hangs when the writer does not shield (race 1).
#[test]
fn split_rearm_without_shield_deadlocks() {
    assert_deadlocks(
        "split-rearm",
        &["-DSPLIT_REARM", "-DNO_SHIELD", "-DNO_LEAVE"],
    );
}

/// A writer must never abandon its Z(S) once it has set Q to 0: if it gives up there (deadline, stop) and releases N and X, a slow listener misses the next broadcast.
#[test]
fn abandoning_z_s_loses_messages() {
    assert_violates("giveup", &["-DWRITER_GIVEUP", "-DNO_LEAVE", "-DNL=1"]);
}
