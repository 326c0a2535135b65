//! Exhaustive model checking of the bus protocol with Spin.
//!
//! The model is `test/model/bus.pml`; each test below generates a verifier
//! for one variant of it (`spin -a -D...`), compiles it with gcc and runs it
//! in a fresh temporary directory, then checks the verifier's report.
//! Spin and gcc are required: when either is missing the tests fail (they
//! never skip), since a protocol proof that silently does not run is worth
//! nothing.
//!
//! The model's default variant is the code (src/writer.rs and
//! src/listener.rs). The `ours_*` tests check it, alone and with the
//! variations the code also has, and must verify. Every other test is a
//! counterexample that documents why a part of the design is there: it
//! removes that part, or restores what it replaced, and expects spin to
//! find a hang or a lost, duplicated or overwritten message.
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

/// Memory limit compiled into pan, in megabytes; the largest variant
/// tested needs about 1.3 GB.
const MEMLIM: &str = "-DMEMLIM=3072";

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
    // -DCOLLAPSE: lossless state compression (exhaustive, less memory);
    // -DMEMLIM: stop (and fail, see `assert_exhaustive`) rather than swap.
    let out = run(
        Command::new("gcc")
            .args([
                "-O2",
                "-w",
                "-DSAFETY",
                "-DCOLLAPSE",
                MEMLIM,
                "-o",
                "pan",
                "pan.c",
            ])
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
/// violation (a lost, duplicated or overwritten message) whose text
/// contains `expected` (a piece of the violated assertion).
fn assert_violates(name: &str, defines: &[&str], expected: &str) {
    let v = verify(name, defines);
    assert!(
        v.errors >= 1 && v.report.contains("assertion violated"),
        "expected an assertion violation in {defines:?}:\n{}",
        v.report
    );
    let line = v
        .report
        .lines()
        .find(|l| l.contains("assertion violated"))
        .unwrap_or_default();
    assert!(
        line.contains(expected),
        "expected the violated assertion to contain {expected:?} in {defines:?}, got {line:?}\n--- trail (end) ---\n{}",
        tail(v.trail.as_deref())
    );
    let trail = v
        .trail
        .as_deref()
        .unwrap_or_else(|| panic!("pan reported an error but wrote no trail:\n{}", v.report));
    assert!(
        trail.contains("assertion violated"),
        "the trail does not replay to the violation:\n{}",
        tail(Some(trail))
    );
}

// ------------------------------------------------------ the implemented design

/// The code (shield, listener waiting with {Z(Q), N -= 1, N += 1, V(W)}), 2 writers x 2 messages, 3 listeners joining at any time and maybe leaving: no hang, no lost/duplicated/reordered/overwritten message, and without a death the shield never needs an escape (Q >= S whenever W = 0).
#[test]
fn ours_is_correct() {
    assert_verifies("ours", &[]);
}

/// The handover to another process (a hot upgrade of a port program): listener 0 stops after an acknowledgement, holding W; listener 2 joins in its place; 0 leaves. 2's stream continues 0's with nothing lost or repeated, and nobody hangs; 2 writers x 2 messages.
#[test]
fn ours_handover_to_another_process_is_correct() {
    assert_verifies("ours-handover", &["-DHANDOVER"]);
}

/// The same handover with a writer that may die at any step.
#[test]
fn ours_handover_survives_writer_death() {
    assert_verifies("ours-handover-death", &["-DHANDOVER", "-DWRITER_DIES"]);
}

/// Why the handover starts from an acknowledgement: from where an in-process detach stops (armed, counted), a writer waits for the stopped listener's acknowledgement while the successor waits for that writer to finish: writers wedged.
#[test]
fn handover_from_armed_deadlocks() {
    assert_deadlocks("handover-armed", &["-DHANDOVER_ARMED"]);
}

/// As `ours_is_correct` with listeners that leave and join again (2 memberships each), 2 writers x 1 message.
#[test]
fn ours_rejoining_is_correct() {
    assert_verifies("ours-rejoin", &["-DMSGS=1", "-DJOINS=2"]);
}

/// As `ours_is_correct` with the steps as coded: the shield's loop (GETALL, then GETZCNT(Q) and GETNCNT(N) as later calls), the leave in two calls, and the writer's BUS_NOWAIT path ({P(X)} then {Z(W)}).
#[test]
fn ours_as_coded_is_correct() {
    assert_verifies(
        "ours-coded",
        &["-DSHIELD_AS_CODED", "-DSPLIT_LEAVE", "-DWRITE_NOWAIT"],
    );
}

/// Our listener is immune whoever the writers are: with the original writer (P(X), Z(W), ... one call each, no shield) the properties still hold.
#[test]
fn ours_with_original_writer_is_correct() {
    assert_verifies("ours-origwriter", &["-DORIG_WRITER"]);
}

/// A writer killed at any step while it holds X (the kernel gives X back and lowers N): no hang, and only the dead writer's message may be missed; no duplicate, reordering or overwrite.
#[test]
fn ours_survives_writer_death() {
    assert_verifies("ours-death", &["-DWRITER_DIES"]);
}

/// As `ours_survives_writer_death` with up to two writers killed.
#[test]
fn ours_survives_two_writer_deaths() {
    assert_verifies("ours-death-2", &["-DWRITER_DIES", "-DMAXDEATHS=2"]);
}

/// As `ours_survives_writer_death` with the steps as coded (shield loop with separate reads, leave in two calls, BUS_NOWAIT path).
#[test]
fn ours_as_coded_survives_writer_death() {
    assert_verifies(
        "ours-coded-death",
        &[
            "-DWRITER_DIES",
            "-DSHIELD_AS_CODED",
            "-DSPLIT_LEAVE",
            "-DWRITE_NOWAIT",
        ],
    );
}

/// As `ours_survives_writer_death` with listeners that may also be killed at any point (the kernel undoes their S and W, but not their raise of Q).
#[test]
fn ours_survives_listener_and_writer_death() {
    assert_verifies("ours-ldeath", &["-DLISTENER_DIES", "-DWRITER_DIES"]);
}

/// Pollers that only ever poll with IPC_NOWAIT (never asleep, so never counted by GETZCNT/GETNCNT) and never leave, under writer death: the SHIELD_LIMIT escape frees a stranded one, and is safe.
#[test]
fn ours_nowait_pollers_survive_writer_death() {
    assert_verifies(
        "ours-pollers",
        &["-DWRITER_DIES", "-DNOWAIT_POLLERS", "-DNO_LEAVE"],
    );
}

/// Without pollers, the count escape (GETZCNT(Q) + GETNCNT(N) > Q) alone frees a listener stranded by a writer's death: no hang even without SHIELD_LIMIT, which only pollers need.
#[test]
fn ours_count_escape_frees_stranded_sleepers() {
    assert_verifies("ours-count-escape", &["-DWRITER_DIES", "-DNO_TIME_ESCAPE"]);
}

/// Safety does not rest on the shield: our listeners with writers that have no shield at all still verify under writer death (the shield is there for original listeners, and W = 0 in it is redundant for ours).
#[test]
fn ours_without_shield_survives_writer_death() {
    assert_verifies("ours-noshield", &["-DWRITER_DIES", "-DNO_SHIELD"]);
}

// ------------------------------------------------- what each part is for

/// The original listener and writer from PROTOCOL.md, 1 writer and 1 listener: the re-arm race hangs them (and shows the model can fail).
#[test]
fn original_one_listener_deadlocks() {
    assert_deadlocks("orig1", &["-DORIGINAL", "-DNW=1", "-DNL=1"]);
}

/// The original listener and writer, 1 writer and 2 listeners: spin finds a hang.
#[test]
fn original_two_listeners_deadlock() {
    assert_deadlocks("orig2", &["-DORIGINAL", "-DNW=1", "-DNL=2"]);
}

/// The atomic re-arm matters: with {Z(N), V(S), P(W)} and V(Q) as two calls and writers without the shield, a writer zeroes Q before the V(Q) and waits forever for that listener (the re-arm race).
#[test]
fn split_rearm_without_shield_deadlocks() {
    assert_deadlocks(
        "split-rearm",
        &["-DSPLIT_REARM", "-DNO_SHIELD", "-DNO_LEAVE"],
    );
}

/// Why a timed-out broadcast is finished by a thread: a writer that abandons its Z(S) and lowers N strands a listener that was awake at the zeroing (it can no longer take the message), and the next writer overwrites it.
#[test]
fn abandoning_z_s_loses_messages() {
    assert_violates(
        "giveup",
        &["-DWRITER_GIVEUP", "-DNO_LEAVE", "-DNL=2"],
        "pend[i]==0",
    );
}

/// Why the wait changed: with the old wait (Z(Q) alone, acknowledgement {V(W), P(S)}) and the count escape, a writer killed after zeroing Q lets the next writers publish past a listener that has not taken its message: a loss that is not the dead message's.
#[test]
fn old_wait_writer_death_loses_a_message() {
    assert_violates(
        "oldwait-death",
        &[
            "-DOLD_WAIT",
            "-DNO_TIME_ESCAPE",
            "-DWRITER_DIES",
            "-DNO_LEAVE",
        ],
        "pend[i]==0",
    );
}

/// Why the wait needs N: with the old wait, a listener stranded by a writer's death that leaves takes another's raise with {P(S), P(Q)}, which releases that one between messages for a message it already has: a duplicate, whatever the shield does (here it has no escape).
#[test]
fn old_wait_writer_death_stranded_leaver_duplicates() {
    assert_violates(
        "oldwait-death-leave",
        &["-DOLD_WAIT", "-DNO_ESCAPE", "-DWRITER_DIES"],
        "got==pend[me]",
    );
}

/// Why the shield has an escape: without one, a listener stranded by a writer's death (its raise of Q consumed, asleep on another's) keeps Q < S forever and the next writer's shield hangs.
#[test]
fn writer_death_without_escape_deadlocks() {
    assert_deadlocks(
        "death-noescape",
        &["-DWRITER_DIES", "-DNO_ESCAPE", "-DNO_LEAVE"],
    );
}

/// Why the shield has a time escape: a stranded poller that only polls with IPC_NOWAIT never sleeps, so the count escape never sees it and the next writer's shield hangs.
#[test]
fn writer_death_nowait_poller_needs_time_escape() {
    assert_deadlocks(
        "death-poller",
        &[
            "-DWRITER_DIES",
            "-DNOWAIT_POLLERS",
            "-DNO_TIME_ESCAPE",
            "-DNO_LEAVE",
        ],
    );
}

/// Why the shield checks W = 0: a listener that raises W only when it acknowledges (the old wait, as the original listener does) and was released by a writer that then died acknowledges after the next writer's {P(X), Z(W)}; uncounted and not re-armed, it misses that writer's message (no escape needed).
#[test]
fn old_wait_shield_without_w_loses_a_message() {
    assert_violates(
        "oldwait-death-now",
        &[
            "-DOLD_WAIT",
            "-DWRITER_DIES",
            "-DNO_ESCAPE",
            "-DNO_W_IN_SHIELD",
            "-DNO_LEAVE",
        ],
        "pend[i]==0",
    );
}
