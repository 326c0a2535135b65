//! `bus`: the command line. Argument handling (the clap definition below is
//! the one list of commands, options and operands), and moving bytes between
//! the shell and the library: every bus operation is a call into the
//! library's public API.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use bus::{Access, Bus, Event, Flow, Message, ReadOptions, StopToken, WriteOptions};

/// The exit statuses of the command (the protocol's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// The operation succeeded.
    Success = 0,
    /// The operation failed; the reason is on stderr.
    Failure = 1,
    /// The command or its arguments were not understood; the usage is on
    /// stderr.
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// What went wrong, and so which exit status it deserves.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The command line was not understood: what was wrong with it.
    Usage(String),
    /// The operation failed: why.
    Failed(String),
    /// The operation failed and has said why already (`broadcast PATH -`
    /// reports each refused line as it goes).
    Reported,
}

impl From<bus::Error> for Failure {
    fn from(e: bus::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

/// How long a broadcast stopped after publishing waits for its listeners
/// to finish taking the message before the command exits (a stopped
/// listener would take for ever; the kernel's undo then releases the bus).
const FINISH_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

fn main() -> ExitCode {
    match run(std::env::args_os()) {
        Ok(()) => Exit::Success,
        Err(Failure::Usage(what)) => {
            complain(&what);
            eprint!("{}", help_text(&command()));
            Exit::Usage
        }
        Err(Failure::Failed(why)) => {
            complain(&why);
            Exit::Failure
        }
        Err(Failure::Reported) => Exit::Failure,
    }
    .into()
}

/// Says what went wrong, on one line of stderr.
fn complain(what: &str) {
    eprintln!("bus: {what}");
}

fn run(args: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    check_spin_variable()?;
    execute(parse(args)?)
}

/// The library ignores a `BUS_SPIN_US` it cannot read (and spins its
/// default); the command says so instead.
fn check_spin_variable() -> Result<(), Failure> {
    match std::env::var_os(bus::SPIN_VARIABLE) {
        Some(value) if value.to_str().and_then(bus::parse_spin).is_none() => {
            Err(Failure::Failed(format!(
                "{}: not a number of microseconds from 0 to {}: {:?}",
                bus::SPIN_VARIABLE,
                bus::MAX_SPIN.as_micros(),
                value
            )))
        }
        _ => Ok(()),
    }
}

// --- The command line. -------------------------------------------------------

/// The command line as clap reads it. [`Cli::check`] turns it into an
/// [`Action`].
#[derive(Debug, Parser)]
#[command(name = "bus", version, disable_help_subcommand = true)]
struct Cli {
    /// `-x` before the command, where the original reads it (create only).
    #[arg(short = 'x', hide = true)]
    exclusive: bool,
    /// `-n` before the command, where the original reads it (broadcast
    /// only).
    #[arg(short = 'n', hide = true)]
    nowait: bool,
    /// print a completion script for SHELL
    #[arg(long, value_name = "SHELL")]
    completions: Option<Shell>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The commands. Each doc comment is the command's line in the usage.
#[derive(Debug, Subcommand)]
enum Command {
    /// create a bus (-x: fail if PATH exists); without PATH, create a
    /// random one and print its pathname
    Create {
        /// fail if PATH exists
        #[arg(short = 'x')]
        exclusive: bool,
        /// where to create the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: Option<PathBuf>,
    },
    /// remove a bus (file, semaphores, memory)
    Remove {
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
    },
    /// for each message, run `sh -c COMMAND` with $msg set to it; without
    /// COMMAND, print each message and a newline (-0: a NUL)
    Listen(ListenArgs),
    /// like listen, for one message only
    Wait(ListenArgs),
    /// broadcast MESSAGE (-n: fail at once if another process is
    /// broadcasting); MESSAGE `-`: each line of stdin is one message
    Broadcast {
        /// fail at once if another process is broadcasting
        #[arg(short = 'n')]
        nowait: bool,
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
        /// at most 2047 bytes, by convention "PID text"; `-`: each line of
        /// stdin
        message: OsString,
    },
    /// who may use the bus: octal (any bit of 700/70/7 grants
    /// user/group/others) or symbolic (=, + or - then u, g, o; e.g. ug,
    /// +o, -g, =u+g)
    Chmod {
        /// octal, or symbolic (may start with -)
        #[arg(allow_hyphen_values = true, value_parser = Permissions::parse)]
        permissions: Permissions,
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
    },
    /// give the bus to a user, and a group: names or numeric ids
    Chown {
        /// a user, and a group after `:`: names or numeric ids
        #[arg(value_name = "OWNER[:GROUP]", value_parser = Owner::parse)]
        #[arg(value_hint = clap::ValueHint::Username)]
        owner: Owner,
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
    },
    /// give the bus to a group: name or numeric id
    Chgrp {
        /// a group name or numeric id
        #[arg(value_parser = Id::parse_group)]
        group: Id,
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
    },
    /// keys, permissions, owner, listeners (and how many wait for a
    /// message), the five semaphores: to diagnose a stuck bus (--json: as
    /// one JSON object on one line)
    Stat {
        /// one JSON object on one line
        #[arg(long)]
        json: bool,
        /// the bus
        #[arg(value_hint = clap::ValueHint::FilePath)]
        path: PathBuf,
    },
}

/// The operands of `listen` and `wait`.
#[derive(Debug, Args)]
struct ListenArgs {
    /// without COMMAND: end each message with a NUL, not a newline
    #[arg(short = '0')]
    nul: bool,
    /// the bus
    #[arg(value_hint = clap::ValueHint::FilePath)]
    path: PathBuf,
    /// run by `sh -c` for each message, with $msg set to it
    #[arg(value_hint = clap::ValueHint::CommandString)]
    command: Option<OsString>,
}

/// The shells `--completions` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> clap_complete::Shell {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// A checked command line: what to do.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Print this text on stdout (the help, the version).
    Show(String),
    Completions(Shell),
    Create {
        path: Option<PathBuf>,
        exclusive: bool,
    },
    Remove {
        path: PathBuf,
    },
    Listen {
        path: PathBuf,
        output: Output,
        once: bool,
    },
    Broadcast {
        path: PathBuf,
        input: Input,
        nowait: bool,
    },
    Chmod {
        path: PathBuf,
        permissions: Permissions,
    },
    Chown {
        path: PathBuf,
        user: Option<Id>,
        group: Option<Id>,
    },
    Stat {
        path: PathBuf,
        json: bool,
    },
}

/// What `listen` and `wait` do with a message.
#[derive(Debug, PartialEq, Eq)]
enum Output {
    /// Run `sh -c COMMAND` with `$msg` set to it.
    Run(OsString),
    /// Write it on stdout, followed by this byte.
    Print { end: u8 },
}

/// What `broadcast` sends.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// This message (checked when the command runs: a bad one fails with 1).
    Message(Vec<u8>),
    /// Each line of stdin (`-`).
    Lines,
}

/// Parses the arguments (the program name first) into an action, or says
/// why they are not understood. Options are accepted before the command (as
/// the original parses them) and after it (as its manual writes them).
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Action, Failure> {
    let args = end_options_after_the_command(args.into_iter().collect());
    match command().try_get_matches_from(args) {
        Ok(matches) => Cli::from_arg_matches(&matches)
            .map_err(|e| Failure::Usage(clap_reason(&e)))?
            .check(),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(Action::Show(e.render().to_string()))
        }
        Err(e) => Err(Failure::Usage(clap_reason(&e))),
    }
}

/// A `--` before the command name ends the options of the command too
/// (`bus -- broadcast PATH -h`, as the original reads it): it moves to just
/// after the name, where clap takes it.
fn end_options_after_the_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(at) = args
        .iter()
        .skip(1)
        .position(|a| a == "--" || !a.as_bytes().starts_with(b"-"))
        .map(|i| i + 1)
    else {
        return args;
    };
    if args[at] == "--"
        && args
            .get(at + 1)
            .is_some_and(|a| !a.as_bytes().starts_with(b"-"))
    {
        args.swap(at, at + 1);
    }
    args
}

/// What clap found wrong, on one line: the first paragraph of its message.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.strip_prefix("error: ") {
        Some(reason) => reason.to_owned(),
        None => line,
    }
}

impl Cli {
    /// Checks what clap cannot: where `-x`, `-n`, `-0` and `--completions`
    /// may go.
    fn check(self) -> Result<Action, Failure> {
        let usage = |what: &str| Err(Failure::Usage(what.to_owned()));
        let is = |f: fn(&Command) -> bool| self.command.as_ref().is_some_and(f);
        if self.exclusive && !is(|c| matches!(c, Command::Create { .. })) {
            return usage("-x only goes with create");
        }
        if self.nowait && !is(|c| matches!(c, Command::Broadcast { .. })) {
            return usage("-n only goes with broadcast");
        }
        let command = match (self.command, self.completions) {
            (None, None) => return usage("no command"),
            (None, Some(shell)) => return Ok(Action::Completions(shell)),
            (Some(_), Some(_)) => return usage("--completions goes without a command"),
            (Some(command), None) => command,
        };
        let action = match command {
            Command::Create { exclusive, path } => Action::Create {
                path,
                exclusive: exclusive || self.exclusive,
            },
            Command::Remove { path } => Action::Remove { path },
            Command::Listen(args) => args.action(false)?,
            Command::Wait(args) => args.action(true)?,
            Command::Broadcast {
                nowait,
                path,
                message,
            } => Action::Broadcast {
                path,
                input: if message == "-" {
                    Input::Lines
                } else {
                    Input::Message(message.into_vec())
                },
                nowait: nowait || self.nowait,
            },
            Command::Chmod { permissions, path } => Action::Chmod { path, permissions },
            Command::Chown { owner, path } => Action::Chown {
                path,
                user: Some(owner.user),
                group: owner.group,
            },
            Command::Chgrp { group, path } => Action::Chown {
                path,
                user: None,
                group: Some(group),
            },
            Command::Stat { json, path } => Action::Stat { path, json },
        };
        Ok(action)
    }
}

impl ListenArgs {
    fn action(self, once: bool) -> Result<Action, Failure> {
        let output = match (self.command, self.nul) {
            (Some(_), true) => {
                return Err(Failure::Usage(
                    "-0 goes without COMMAND (it ends printed messages)".into(),
                ))
            }
            (Some(command), false) => Output::Run(command),
            (None, nul) => Output::Print {
                end: if nul { b'\0' } else { b'\n' },
            },
        };
        Ok(Action::Listen {
            path: self.path,
            output,
            once,
        })
    }
}

// --- Usage and help, from the definition. -------------------------------------

/// The clap command, with the usage and help texts made from its own
/// definition.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| {
            let mut order = 0;
            let usage = synopsis(&sub);
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            sub.override_usage(usage)
                .about(wrap("", 0, &about))
                .help_template("usage: {usage}\n\n{about-with-newline}\n{all-args}\n")
                .mut_args(|arg| {
                    let heading = if arg.is_positional() {
                        "operands"
                    } else {
                        "options"
                    };
                    order += 1;
                    arg.help_heading(heading).display_order(order)
                })
                .disable_help_flag(true)
                .arg(
                    clap::Arg::new("help")
                        .short('h')
                        .long("help")
                        .action(ArgAction::Help)
                        .help("this text")
                        .display_order(usize::MAX)
                        .help_heading("options"),
                )
        });
    }
    let help = help_text(&cmd);
    cmd.override_help(help)
}

/// Whether clap added or handles this argument itself (help, version).
fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

/// How an argument is written in a synopsis: `-x`, `--json`, `PATH`,
/// `--completions SHELL`.
fn synopsis_item(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    let flag = match (arg.get_short(), arg.get_long()) {
        (Some(short), _) => format!("-{short}"),
        (None, Some(long)) => format!("--{long}"),
        (None, None) => return value,
    };
    if arg.get_action().takes_values() {
        format!("{flag} {value}")
    } else {
        flag
    }
}

/// `bus NAME [-x] PATH [COMMAND]`: a command's synopsis from its arguments.
fn synopsis(cmd: &clap::Command) -> String {
    let mut line = format!("bus {}", cmd.get_name());
    for arg in cmd
        .get_arguments()
        .filter(|a| !is_builtin(a) && !a.is_hide_set())
    {
        let item = synopsis_item(arg);
        if arg.is_required_set() {
            line = format!("{line} {item}");
        } else {
            line = format!("{line} [{item}]");
        }
    }
    line
}

/// The help, also printed after a usage error: every command's synopsis
/// and what it does.
fn help_text(cmd: &clap::Command) -> String {
    let mut entries: Vec<(String, String)> = cmd
        .get_subcommands()
        .map(|sub| {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            (synopsis(sub), about)
        })
        .collect();
    for arg in cmd
        .get_arguments()
        .filter(|a| !is_builtin(a) && !a.is_hide_set())
    {
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        let about = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let about = format!("{about} ({})", values.join(", "));
        entries.push((format!("bus {}", synopsis_item(arg)), about));
    }
    let column = 2 + entries.iter().map(|(s, _)| s.len()).max().unwrap_or(0) + 2;
    let mut text = String::from("usage: bus [-x] [-n] COMMAND [ARGUMENTS]\n\ncommands:\n");
    for (synopsis, about) in entries {
        text.push_str(&wrap(&format!("  {synopsis}"), column, &about));
        text.push('\n');
    }
    text.push_str(
        "
options: -x and -n also go before the command (bus -x create PATH)
         -h, --help     this text (bus COMMAND --help: the command's)
         -V, --version  the version
         --             end of options: PERMISSIONS and messages may start
                        with -

exit status: 0 success, 1 the operation failed, 2 usage error
",
    );
    text
}

/// `first`, then the words of `text` from `column` on, in lines of at most
/// 79 columns (longer if a word is).
fn wrap(first: &str, column: usize, text: &str) -> String {
    const WIDTH: usize = 79;
    let mut wrapped = first.to_owned();
    let mut start = 0;
    for word in text.split_whitespace() {
        if wrapped.len() - start < column {
            wrapped = format!("{wrapped:<width$}{word}", width = start + column);
        } else if wrapped.len() == start {
            wrapped.push_str(word);
        } else if wrapped.len() - start + 1 + word.len() <= WIDTH {
            wrapped = format!("{wrapped} {word}");
        } else {
            start = wrapped.len() + 1;
            wrapped = format!("{wrapped}\n{:column$}{word}", "");
        }
    }
    wrapped
}

// --- Typed operands. --------------------------------------------------------

/// A PERMISSIONS operand, as a change of the bus's mode: the new mode is
/// `normalise_mode((current & keep) | grant)`. Octal modes keep nothing;
/// symbolic ones keep the classes no `=` reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Permissions {
    keep: u32,
    grant: u32,
}

impl Permissions {
    const CLASSES: u32 = 0o777;

    /// Octal: any bit of a class grants it. Symbolic: `=`, `+`, `-` then
    /// classes `u`, `g`, `o`, left to right, starting as if with `=`.
    fn parse(spec: &str) -> Result<Permissions, String> {
        let bad = || "expected octal (at most 777) or u, g, o after =, + or -".to_owned();
        if spec.is_empty() {
            return Err(bad());
        }
        if spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(spec, 8) {
                Ok(mode) if mode <= Self::CLASSES => Ok(Permissions {
                    keep: 0,
                    grant: bus::normalise_mode(mode),
                }),
                _ => Err(bad()),
            };
        }
        let (mut keep, mut grant) = (Self::CLASSES, 0);
        let mut op = b'=';
        for b in spec.bytes() {
            let class = match b {
                b'=' | b'+' | b'-' => {
                    op = b;
                    continue;
                }
                b'u' => 0o700,
                b'g' => 0o070,
                b'o' => 0o007,
                _ => return Err(bad()),
            };
            match op {
                b'+' => grant |= class,
                b'-' => {
                    keep &= !class;
                    grant &= !class;
                }
                _ => {
                    keep = 0;
                    grant |= class;
                }
            }
        }
        Ok(Permissions { keep, grant })
    }

    /// The mode of a bus whose mode is `current`, once changed.
    fn apply(self, current: u32) -> u32 {
        bus::normalise_mode((current & self.keep) | self.grant)
    }
}

/// A user or a group: a numeric id, or a name looked up when the command
/// runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Id {
    Number(u32),
    Name(String),
}

impl Id {
    fn parse(text: &str, what: &str) -> Result<Id, String> {
        if text.is_empty() || text.contains(':') {
            return Err(format!("not a {what} name or id"));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Id::Number)
                .map_err(|_| format!("{what} id out of range"));
        }
        Ok(Id::Name(text.to_owned()))
    }

    fn parse_group(text: &str) -> Result<Id, String> {
        Id::parse(text, "group")
    }

    /// The user id: the number, or the name's in the user database.
    fn uid(&self) -> Result<u32, Failure> {
        self.resolve("user", |name| {
            nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw()))
        })
    }

    /// The group id: the number, or the name's in the group database.
    fn gid(&self) -> Result<u32, Failure> {
        self.resolve("group", |name| {
            nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw()))
        })
    }

    fn resolve(
        &self,
        what: &str,
        lookup: impl Fn(&str) -> nix::Result<Option<u32>>,
    ) -> Result<u32, Failure> {
        match self {
            Id::Number(id) => Ok(*id),
            Id::Name(name) => match lookup(name) {
                Ok(Some(id)) => Ok(id),
                Ok(None) => Err(Failure::Failed(format!("{name}: no such {what}"))),
                Err(e) => Err(Failure::Failed(format!(
                    "{name}: looking up the {what}: {e}"
                ))),
            },
        }
    }
}

/// An OWNER[:GROUP] operand.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    user: Id,
    group: Option<Id>,
}

impl Owner {
    fn parse(text: &str) -> Result<Owner, String> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        Ok(Owner {
            user: Id::parse(user, "user")?,
            group: group.map(Id::parse_group).transpose()?,
        })
    }
}

// --- Doing it. ----------------------------------------------------------------

fn execute(action: Action) -> Result<(), Failure> {
    match action {
        Action::Show(text) => print(text.as_bytes()),
        Action::Completions(shell) => {
            let mut script = Vec::new();
            clap_complete::generate(
                clap_complete::Shell::from(shell),
                &mut command(),
                "bus",
                &mut script,
            );
            print(&script)
        }
        Action::Create { path, exclusive } => {
            let created = bus::create(path.as_deref(), exclusive)?;
            if path.is_none() {
                let mut line = created.into_os_string().into_vec();
                line.push(b'\n');
                print(&line)?;
            }
            Ok(())
        }
        Action::Remove { path } => Ok(bus::unlink(path)?),
        Action::Listen {
            path,
            output: Output::Run(command),
            once,
        } => listen_and_run(&path, &command, once),
        Action::Listen {
            path,
            output: Output::Print { end },
            once,
        } => listen_and_print(&path, end, once),
        Action::Broadcast {
            path,
            input: Input::Message(message),
            nowait,
        } => {
            // Check the message before opening anything.
            let message = Message::new(message)?;
            let stop = StopToken::on_termination_signals()?;
            let bus = Bus::open(path, Access::Write)?;
            let options = WriteOptions {
                nowait,
                stop: Some(&stop),
                ..WriteOptions::default()
            };
            let sent = bus.write_with(&message, &options);
            // Stopped after publishing: give the listeners a moment to
            // finish taking the message before exiting.
            bus.finish_pending(FINISH_GRACE);
            Ok(sent?)
        }
        Action::Broadcast {
            path,
            input: Input::Lines,
            nowait,
        } => broadcast_lines(&path, nowait),
        Action::Chmod { path, permissions } => {
            // Symbolic changes start from who may use the bus now.
            let current = bus::stat(&path)?.sem_mode;
            Ok(bus::chmod(&path, permissions.apply(current))?)
        }
        Action::Chown { path, user, group } => {
            let uid = user.as_ref().map(Id::uid).transpose()?;
            let gid = group.as_ref().map(Id::gid).transpose()?;
            Ok(bus::chown(&path, uid, gid)?)
        }
        Action::Stat { path, json } => {
            let status = bus::stat(&path)?;
            let text = if json {
                stat_json(&path, &status)
            } else {
                stat_text(&path, &status)
            };
            print(text.as_bytes())
        }
    }
}

/// Writes `bytes` on stdout. A reader that went away is no failure: the
/// command ends quietly, as if SIGPIPE had ended it.
fn print(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::Failed(format!("standard output: {e}")))
        }
        _ => Ok(()),
    }
}

fn stat_text(path: &Path, s: &bus::Status) -> String {
    let bus::Semaphores {
        s: sv,
        w: wv,
        x: xv,
        q: qv,
        n: nv,
    } = s.semaphores();
    format!(
        "path:           {}
semaphore key:  {}
memory key:     {}
permissions:    {:03o} (file {:03o})
owner:          {}:{}
listeners:      {sv}
waiting:        {}
semaphores:     S={sv} W={wv} X={xv} Q={qv} N={nv}
attached:       {}
",
        path.display(),
        s.keys.sem,
        s.keys.shm,
        s.sem_mode,
        s.file_mode,
        s.uid,
        s.gid,
        s.waiting,
        s.attached
    )
}

/// `bus stat --json`: one object on one line; modes as `stat -c %a` writes
/// them; a path that is not UTF-8 has its bad bytes replaced by U+FFFD.
fn stat_json(path: &Path, s: &bus::Status) -> String {
    let bus::Semaphores {
        s: sv,
        w: wv,
        x: xv,
        q: qv,
        n: nv,
    } = s.semaphores();
    format!(
        concat!(
            "{{\"path\":{},\"semaphore_key\":{},\"memory_key\":{},",
            "\"mode\":\"{:o}\",\"file_mode\":\"{:o}\",\"uid\":{},\"gid\":{},",
            "\"listeners\":{},\"waiting\":{},",
            "\"semaphores\":{{\"S\":{},\"W\":{},\"X\":{},\"Q\":{},\"N\":{}}},",
            "\"attached\":{}}}\n"
        ),
        json_string(&path.as_os_str().to_string_lossy()),
        s.keys.sem,
        s.keys.shm,
        s.sem_mode,
        s.file_mode,
        s.uid,
        s.gid,
        s.listeners(),
        s.waiting,
        sv,
        wv,
        xv,
        qv,
        nv,
        s.attached
    )
}

/// `text` as a JSON string, quotes included (RFC 8259: `"`, `\` and the
/// control characters escaped).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Listens and runs `sh -c COMMAND` with `$msg` for each message, without
/// waiting for it. Children are reaped as they exit; SIGINT, SIGTERM and
/// SIGHUP make it leave the bus and exit 0.
fn listen_and_run(path: &Path, command: &OsString, once: bool) -> Result<(), Failure> {
    bus::reap_children_automatically()?;
    let stop = StopToken::on_termination_signals()?;
    let bus = Bus::open(path, Access::ReadOnly)?;
    listen_each(&bus, &stop, once, |message| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("msg", OsString::from_vec(message.to_vec()))
            .spawn()
            .map(drop)
            .map_err(|e| Some(format!("sh: {e}")))
    })
}

/// Listens and writes each message, as it is, followed by `end`, on stdout,
/// with one `write` per message. Ends (leaving the bus, exit 0) on SIGINT,
/// SIGTERM, SIGHUP, and when the reader of stdout goes away: a write fails
/// with EPIPE, or, for a pipe, as soon as its reader closes it.
fn listen_and_print(path: &Path, end: u8, once: bool) -> Result<(), Failure> {
    let stop = StopToken::on_termination_signals()?;
    let stdout = io::stdout().as_fd().try_clone_to_owned();
    let mut out = File::from(stdout.map_err(|e| Failure::Failed(format!("standard output: {e}")))?);
    let bus = Bus::open(path, Access::ReadOnly)?;
    stop_when_the_pipe_reader_leaves(&out, &stop);
    let mut record = Vec::with_capacity(bus::MAX_MESSAGE_LEN + 1);
    listen_each(&bus, &stop, once, |message| {
        record.clear();
        record.extend_from_slice(message);
        record.push(end);
        out.write_all(&record).map_err(|e| {
            // The reader went away: end quietly.
            (e.kind() != io::ErrorKind::BrokenPipe).then(|| format!("standard output: {e}"))
        })
    })
}

/// Listens until `handle` has handled one message (with `once`), a stop
/// (a termination signal: then `Ok`), or `handle` says to end: `Err(None)`
/// quietly, `Err(Some(reason))` as a failure.
fn listen_each(
    bus: &Bus,
    stop: &StopToken,
    once: bool,
    mut handle: impl FnMut(&[u8]) -> Result<(), Option<String>>,
) -> Result<(), Failure> {
    let mut failure = None;
    let options = ReadOptions {
        stop: Some(stop),
        ..ReadOptions::default()
    };
    let result = bus.read_with(&options, |event| match event {
        Event::Listening => Flow::Continue,
        Event::Message(message) => match handle(message) {
            Ok(()) if once => Flow::Stop,
            Ok(()) => Flow::Continue,
            Err(reason) => {
                failure = reason;
                Flow::Stop
            }
        },
    });
    if let Some(reason) = failure {
        return Err(Failure::Failed(reason));
    }
    match result {
        Err(bus::Error::Interrupted) => Ok(()),
        other => Ok(other?),
    }
}

/// If `out` is a pipe, a thread waits for its reader to close it and then
/// stops `stop`, so the listener leaves at once rather than at the next
/// message (as `tail -f` does).
fn stop_when_the_pipe_reader_leaves(out: &File, stop: &StopToken) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::stat::{fstat, SFlag};
    let is_pipe = fstat(out)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    let Ok(fd) = out.as_fd().try_clone_to_owned() else {
        return;
    };
    if !is_pipe {
        return;
    }
    let stop = stop.clone();
    let watch = move |fd: OwnedFd| loop {
        // No events asked for: only POLLERR (no reader left) can come.
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) if fds[0].revents().is_some_and(|r| !r.is_empty()) => {
                stop.stop();
                return;
            }
            Ok(_) => continue,
            Err(_) => return,
        }
    };
    // Without the thread, the listener still ends at the next message.
    let _ = std::thread::Builder::new()
        .name("bus-stdout".into())
        .stack_size(64 * 1024)
        .spawn(move || watch(fd));
}

/// Broadcasts each line of stdin, the bus opened once. A line that is not a
/// message is reported (`bus: line N: <reason>`) and skipped; a failed
/// broadcast ends the command.
fn broadcast_lines(path: &Path, nowait: bool) -> Result<(), Failure> {
    let stop = StopToken::on_termination_signals()?;
    let bus = Bus::open(path, Access::Write)?;
    let options = WriteOptions {
        nowait,
        stop: Some(&stop),
        ..WriteOptions::default()
    };
    let stdin = io::stdin().as_fd().try_clone_to_owned();
    let stdin = stdin.map_err(|e| Failure::Failed(format!("standard input: {e}")))?;
    let mut lines = Lines::new(File::from(stdin), &stop);
    let mut refused = false;
    for number in 1.. {
        let line = match lines.next() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return Err(bus::Error::Interrupted.into())
            }
            Err(e) => return Err(Failure::Failed(format!("standard input: {e}"))),
        };
        let sent = line.and_then(|message| bus.write_with(&message, &options));
        if sent.is_err() {
            bus.finish_pending(FINISH_GRACE);
        }
        match sent {
            Ok(()) => {}
            Err(
                e @ (bus::Error::MessageTooLong { .. } | bus::Error::MessageContainsNul { .. }),
            ) => {
                complain(&format!("line {number}: {e}"));
                refused = true;
            }
            Err(e) => return Err(Failure::Failed(format!("line {number}: {e}"))),
        }
    }
    if refused {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// The lines of a file (stdin), each without its `\n`, as messages. At most
/// one message's worth of a line is kept in memory, however long it is.
/// Waiting for input ends when `stop` is stopped.
struct Lines<'a> {
    reader: BufReader<File>,
    stop: &'a StopToken,
    line: Vec<u8>,
}

impl<'a> Lines<'a> {
    /// How often a wait for input looks at the stop token.
    const STOP_CHECK: u16 = 100;

    fn new(file: File, stop: &'a StopToken) -> Lines<'a> {
        Lines {
            reader: BufReader::with_capacity(64 * 1024, file),
            stop,
            line: Vec::with_capacity(bus::MAX_MESSAGE_LEN + 1),
        }
    }

    /// The next line as a message, or why it is not one; `None` at the end.
    /// A last line without `\n` counts; an empty line is an empty message.
    fn next(&mut self) -> io::Result<Option<bus::Result<Message>>> {
        self.line.clear();
        let mut len = 0;
        let mut any = false;
        loop {
            if self.reader.buffer().is_empty() {
                self.wait_for_input()?;
            }
            let buffer = match self.reader.fill_buf() {
                Ok(buffer) => buffer,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buffer.is_empty() {
                return Ok(any.then(|| self.message(len)));
            }
            any = true;
            let newline = buffer.iter().position(|&b| b == b'\n');
            let taken = newline.unwrap_or(buffer.len());
            let room = (bus::MAX_MESSAGE_LEN + 1).saturating_sub(self.line.len());
            self.line.extend_from_slice(&buffer[..taken.min(room)]);
            len += taken;
            self.reader.consume(taken + usize::from(newline.is_some()));
            if newline.is_some() {
                return Ok(Some(self.message(len)));
            }
        }
    }

    /// The line read, `len` bytes long (of which at most 2048 are kept).
    fn message(&self, len: usize) -> bus::Result<Message> {
        if len > bus::MAX_MESSAGE_LEN {
            return Err(bus::Error::MessageTooLong { len });
        }
        Message::new(self.line.as_slice())
    }

    /// Waits until input (or its end) is there; `Interrupted` once the stop
    /// token is stopped.
    fn wait_for_input(&self) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags};
        loop {
            if self.stop.is_stopped() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let mut fds = [PollFd::new(
                self.reader.get_ref().as_fd(),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, Self::STOP_CHECK) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                // Readable, at its end, or in error: the read tells which.
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Action, Failure> {
        super::parse(
            std::iter::once("bus")
                .chain(list.iter().copied())
                .map(OsString::from),
        )
    }

    fn usage(list: &[&str]) -> String {
        match parse(list) {
            Err(Failure::Usage(what)) => what,
            other => panic!("{list:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn options_before_or_after_the_command() {
        let want = Action::Create {
            path: Some("p".into()),
            exclusive: true,
        };
        assert_eq!(parse(&["-x", "create", "p"]), Ok(want));
        let want = Action::Create {
            path: Some("p".into()),
            exclusive: true,
        };
        assert_eq!(parse(&["create", "-x", "p"]), Ok(want));
        let broadcast = |message: &[u8], nowait| {
            Ok(Action::Broadcast {
                path: "p".into(),
                input: Input::Message(message.to_vec()),
                nowait,
            })
        };
        assert_eq!(
            parse(&["broadcast", "-n", "--", "p", "-n"]),
            broadcast(b"-n", true)
        );
        assert_eq!(parse(&["-n", "broadcast", "p", "m"]), broadcast(b"m", true));
        assert_eq!(parse(&["broadcast", "p", "m", "-n"]), broadcast(b"m", true));
        assert_eq!(
            parse(&["broadcast", "p", "-n", "--", "m"]),
            broadcast(b"m", true)
        );
        // `--` before the command ends the command's options too.
        assert_eq!(
            parse(&["--", "broadcast", "p", "-h"]),
            broadcast(b"-h", false)
        );
        assert_eq!(
            parse(&["broadcast", "--", "p", "--x"]),
            broadcast(b"--x", false)
        );
    }

    #[test]
    fn misplaced_options_are_usage_errors() {
        assert_eq!(usage(&["-n", "create"]), "-n only goes with broadcast");
        assert_eq!(usage(&["-x", "remove", "p"]), "-x only goes with create");
        assert_eq!(usage(&["-x"]), "-x only goes with create");
        assert!(usage(&["create", "-n", "p"]).contains("'-n'"));
        assert!(usage(&["broadcast", "-x", "p", "m"]).contains("'-x'"));
        assert!(usage(&["remove", "-q", "p"]).contains("'-q'"));
        assert!(usage(&["broadcast", "p", "-m"]).contains("'-m'"));
        assert!(usage(&["listen"]).contains("<PATH>"));
        assert!(usage(&["listen", "p", "true", "x"]).contains("'x'"));
        assert!(usage(&["frobnicate"]).contains("frobnicate"));
        assert_eq!(usage(&[]), "no command");
        assert!(usage(&["listen", "-0", "p", "true"]).starts_with("-0 goes without COMMAND"));
        assert!(usage(&["wait", "p", "-0", "true"]).starts_with("-0 goes without COMMAND"));
        assert!(usage(&["--completions", "bash", "stat", "p"]).contains("--completions"));
        assert!(usage(&["--completions", "tcsh"]).contains("tcsh"));
        assert!(usage(&["--completions"]).contains("SHELL"));
        // One line each, whatever clap had to say.
        for args in [&["remove"][..], &["frobnicate"], &["chmod", "u+x", "p"]] {
            assert!(!usage(args).contains('\n'), "{args:?}");
        }
    }

    #[test]
    fn listen_and_wait_print_or_run() {
        let listen = |output, once| {
            Ok(Action::Listen {
                path: "p".into(),
                output,
                once,
            })
        };
        let print = |end| Output::Print { end };
        assert_eq!(parse(&["listen", "p"]), listen(print(b'\n'), false));
        assert_eq!(parse(&["listen", "-0", "p"]), listen(print(0), false));
        assert_eq!(parse(&["wait", "p", "-0"]), listen(print(0), true));
        let run = || Output::Run("echo $msg".into());
        assert_eq!(parse(&["listen", "p", "echo $msg"]), listen(run(), false));
        assert_eq!(parse(&["wait", "p", "echo $msg"]), listen(run(), true));
    }

    #[test]
    fn a_lone_dash_message_means_the_lines_of_stdin() {
        let lines = |nowait| {
            Ok(Action::Broadcast {
                path: "p".into(),
                input: Input::Lines,
                nowait,
            })
        };
        assert_eq!(parse(&["broadcast", "p", "-"]), lines(false));
        assert_eq!(parse(&["broadcast", "-n", "p", "-"]), lines(true));
        assert_eq!(parse(&["-n", "broadcast", "--", "p", "-"]), lines(true));
    }

    #[test]
    fn help_version_and_completions() {
        for flag in ["-h", "--help"] {
            let Ok(Action::Show(text)) = parse(&[flag]) else {
                panic!("{flag}")
            };
            assert!(text.starts_with("usage: bus"), "{text}");
            assert_eq!(text, help_text(&command()));
        }
        let Ok(Action::Show(text)) = parse(&["create", "--help"]) else {
            panic!("create --help")
        };
        assert!(
            text.starts_with("usage: bus create [-x] [PATH]\n"),
            "{text}"
        );
        for flag in ["-V", "--version"] {
            let want = format!("bus {}\n", env!("CARGO_PKG_VERSION"));
            assert_eq!(parse(&[flag]), Ok(Action::Show(want)));
        }
        assert_eq!(
            parse(&["--completions", "zsh"]),
            Ok(Action::Completions(Shell::Zsh))
        );
    }

    /// The usage lists every command with its synopsis, from the clap
    /// definition.
    #[test]
    fn usage_lists_every_command_with_its_synopsis() {
        let text = help_text(&command());
        for synopsis in [
            "bus create [-x] [PATH]",
            "bus remove PATH",
            "bus listen [-0] PATH [COMMAND]",
            "bus wait [-0] PATH [COMMAND]",
            "bus broadcast [-n] PATH MESSAGE",
            "bus chmod PERMISSIONS PATH",
            "bus chown OWNER[:GROUP] PATH",
            "bus chgrp GROUP PATH",
            "bus stat [--json] PATH",
            "bus --completions SHELL",
        ] {
            assert!(
                text.contains(&format!("\n  {synopsis}  ")),
                "{synopsis}:\n{text}"
            );
        }
        let shells = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(shells.contains("(bash, zsh, fish)"), "{text}");
        assert!(text.lines().all(|l| l.len() <= 79), "{text}");
    }

    #[test]
    fn permissions_are_parsed_once_and_applied_to_the_current_mode() {
        let ok = |s, cur| Permissions::parse(s).map(|p| p.apply(cur)).ok();
        assert_eq!(ok("700", 0o600), Some(0o600));
        assert_eq!(ok("751", 0o600), Some(0o666));
        assert_eq!(ok("0", 0o666), Some(0));
        assert_eq!(ok("ug", 0o606), Some(0o660));
        assert_eq!(ok("+o", 0o600), Some(0o606));
        assert_eq!(ok("-g", 0o640), Some(0o600));
        assert_eq!(ok("=u+g", 0o606), Some(0o660));
        assert_eq!(ok("u-u+o", 0o600), Some(0o006));
        for bad in ["rwx", "", "1777", "8", "u+x", "a", "-h"] {
            assert!(Permissions::parse(bad).is_err(), "{bad:?}");
        }
        let chmod = |spec| match parse(&["chmod", spec, "p"]) {
            Ok(Action::Chmod { permissions, .. }) => permissions,
            other => panic!("chmod {spec}: {other:?}"),
        };
        assert_eq!(chmod("-g").apply(0o660), 0o600);
        assert_eq!(chmod("-o+g").apply(0o606), 0o660);
        assert!(usage(&["chmod", "rwx", "p"]).contains("rwx"));
    }

    #[test]
    fn owners_and_groups_are_ids_or_names() {
        let chown = |owner| match parse(&["chown", owner, "p"]) {
            Ok(Action::Chown { user, group, .. }) => (user, group),
            other => panic!("chown {owner}: {other:?}"),
        };
        let name = |n: &str| Some(Id::Name(n.into()));
        assert_eq!(chown("12"), (Some(Id::Number(12)), None));
        assert_eq!(chown("root:34"), (name("root"), Some(Id::Number(34))));
        assert_eq!(chown("1a:b1"), (name("1a"), name("b1")));
        match parse(&["chgrp", "wheel", "p"]) {
            Ok(Action::Chown { user, group, .. }) => {
                assert_eq!((user, group), (None, name("wheel")))
            }
            other => panic!("chgrp: {other:?}"),
        }
        for bad in ["", ":", "1234:", ":5678", "1234:5678:9", "99999999999"] {
            usage(&["chown", bad, "p"]);
        }
        for bad in ["", "5678:9", "4294967296"] {
            usage(&["chgrp", bad, "p"]);
        }
        assert_eq!(Id::Number(7).uid(), Ok(7));
        assert_eq!(
            Id::Name("no-such-user-here".into()).uid(),
            Err(Failure::Failed("no-such-user-here: no such user".into()))
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("\n\t\r\u{1}\u{1f}"), r#""\n\t\r\u0001\u001f""#);
        assert_eq!(json_string("é ✓ \u{7f}"), "\"é ✓ \u{7f}\"");
    }
}
