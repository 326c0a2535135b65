//! `bus`: the command line. Nothing but argument handling: every operation
//! is a call into the library.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use bus::{Access, Bus, Event, Flow, Message, ReadOptions, StopToken, WriteOptions};

const USAGE: &str = "\
usage: bus [-x] [-n] COMMAND [ARGUMENTS]

commands:
  bus create [-x] [PATH]              create a bus (-x: fail if PATH exists);
                                      without PATH, create a random one and
                                      print its pathname
  bus remove PATH                     remove a bus
  bus listen PATH COMMAND             for each message, run `sh -c COMMAND`
                                      with $msg set to the message
  bus wait PATH COMMAND               like listen, for one message only
  bus broadcast [-n] PATH MESSAGE     broadcast (-n: fail at once if another
                                      process is broadcasting)
  bus chmod PERMISSIONS PATH          octal (700/70/7 bits grant user/group/
                                      others) or symbolic (=, +, -, u, g, o)
  bus chown OWNER[:GROUP] PATH        names or numeric ids
  bus chgrp GROUP PATH                name or numeric id
  bus stat PATH                       keys, permissions, owner, listeners

options: -h, --help     this text
         -V, --version  the version
         --             end of options

exit status: 0 success, 1 the operation failed, 2 usage error
";

/// The exit statuses of the command (the protocol's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// The operation succeeded.
    Success = 0,
    /// The operation failed; the reason is on stderr.
    Failure = 1,
    /// The command or its arguments were not understood.
    Usage = 2,
}

/// A checked command line.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Help,
    Version,
    Create {
        path: Option<PathBuf>,
        exclusive: bool,
    },
    Remove {
        path: PathBuf,
    },
    Listen {
        path: PathBuf,
        command: OsString,
        once: bool,
    },
    Broadcast {
        path: PathBuf,
        message: Vec<u8>,
        nowait: bool,
    },
    Chmod {
        permissions: String,
        path: PathBuf,
    },
    Chown {
        owner: String,
        path: PathBuf,
    },
    Chgrp {
        group: String,
        path: PathBuf,
    },
    Stat {
        path: PathBuf,
    },
}

/// What went wrong, and which exit status it deserves.
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<bus::Error> for Failure {
    fn from(e: bus::Error) -> Failure {
        Failure::Failed(e.to_string())
    }
}

fn main() -> ExitCode {
    let exit = match parse(std::env::args_os().skip(1).collect()).and_then(run) {
        Ok(()) => Exit::Success,
        Err(Failure::Usage(why)) => {
            eprintln!("bus: {why}\n{USAGE}");
            Exit::Usage
        }
        Err(Failure::Failed(why)) => {
            eprintln!("bus: {why}");
            Exit::Failure
        }
    };
    ExitCode::from(exit as u8)
}

/// Parses the arguments. Options are accepted before the command (as the
/// original parses them) and after it (as its manual writes them).
fn parse(args: Vec<OsString>) -> Result<Cmd, Failure> {
    let (mut exclusive, mut nowait) = (false, false);
    let mut operands: Vec<OsString> = Vec::new();
    let mut options_done = false;
    for arg in args {
        let bytes = arg.as_bytes();
        // Right after `chmod` come the PERMISSIONS, which may start with
        // `-` (`bus chmod -g PATH`), as in the original.
        let permissions = operands.len() == 1 && operands[0] == "chmod" && bytes != b"--";
        if options_done || permissions || bytes.len() < 2 || bytes[0] != b'-' {
            operands.push(arg);
            continue;
        }
        match bytes {
            b"--" => options_done = true,
            b"--help" => return Ok(Cmd::Help),
            b"--version" => return Ok(Cmd::Version),
            _ if bytes[1] == b'-' => {
                return Err(Failure::Usage(format!(
                    "unknown option {}",
                    arg.to_string_lossy()
                )))
            }
            _ => {
                for &flag in &bytes[1..] {
                    match flag {
                        b'x' => exclusive = true,
                        b'n' => nowait = true,
                        b'h' => return Ok(Cmd::Help),
                        b'V' => return Ok(Cmd::Version),
                        _ => {
                            return Err(Failure::Usage(format!("unknown option -{}", flag as char)))
                        }
                    }
                }
            }
        }
    }
    let mut operands = operands.into_iter();
    let command = operands
        .next()
        .ok_or_else(|| Failure::Usage("no command".into()))?;
    let rest: Vec<OsString> = operands.collect();
    let command = command.to_string_lossy().into_owned();
    if exclusive && command != "create" {
        return Err(Failure::Usage("-x only goes with create".into()));
    }
    if nowait && command != "broadcast" {
        return Err(Failure::Usage("-n only goes with broadcast".into()));
    }
    let text = |s: &OsString| s.to_string_lossy().into_owned();
    let cmd = match (command.as_str(), rest.as_slice()) {
        ("create", []) => Cmd::Create {
            path: None,
            exclusive,
        },
        ("create", [path]) => Cmd::Create {
            path: Some(path.into()),
            exclusive,
        },
        ("remove", [path]) => Cmd::Remove { path: path.into() },
        ("listen", [path, command]) => Cmd::Listen {
            path: path.into(),
            command: command.clone(),
            once: false,
        },
        ("wait", [path, command]) => Cmd::Listen {
            path: path.into(),
            command: command.clone(),
            once: true,
        },
        ("broadcast", [path, message]) => Cmd::Broadcast {
            path: path.into(),
            message: message.as_bytes().to_vec(),
            nowait,
        },
        ("chmod", [permissions, path]) => {
            let permissions = text(permissions);
            // Checked now: a bad spec is a usage error whatever PATH is.
            apply_permissions(&permissions, 0)?;
            Cmd::Chmod {
                permissions,
                path: path.into(),
            }
        }
        ("chown", [owner, path]) => Cmd::Chown {
            owner: text(owner),
            path: path.into(),
        },
        ("chgrp", [group, path]) => Cmd::Chgrp {
            group: text(group),
            path: path.into(),
        },
        ("stat", [path]) => Cmd::Stat { path: path.into() },
        (
            "create" | "remove" | "listen" | "wait" | "broadcast" | "chmod" | "chown" | "chgrp"
            | "stat",
            _,
        ) => {
            return Err(Failure::Usage(format!(
                "wrong number of arguments for {command}"
            )))
        }
        _ => return Err(Failure::Usage(format!("unknown command {command:?}"))),
    };
    Ok(cmd)
}

fn run(cmd: Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::Help => print!("{USAGE}"),
        Cmd::Version => println!("bus {}", env!("CARGO_PKG_VERSION")),
        Cmd::Create { path, exclusive } => {
            let created = bus::create(path.as_deref(), exclusive)?;
            if path.is_none() {
                println!("{}", created.display());
            }
        }
        Cmd::Remove { path } => bus::unlink(path)?,
        Cmd::Listen {
            path,
            command,
            once,
        } => listen(path, command, once)?,
        Cmd::Broadcast {
            path,
            message,
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
            bus.write_with(&message, &options)?;
        }
        Cmd::Chmod { permissions, path } => {
            // Symbolic changes start from who may use the bus now.
            let current = bus::stat(&path)?.sem_mode;
            bus::chmod(&path, apply_permissions(&permissions, current)?)?;
        }
        Cmd::Chown { owner, path } => {
            let (user, group) = match owner.split_once(':') {
                Some((user, group)) => (user, Some(group)),
                None => (owner.as_str(), None),
            };
            let uid = user_id(user)?;
            let gid = group.map(group_id).transpose()?;
            bus::chown(&path, Some(uid), gid)?;
        }
        Cmd::Chgrp { group, path } => bus::chown(&path, None, Some(group_id(&group)?))?,
        Cmd::Stat { path } => {
            let s = bus::stat(&path)?;
            let [sv, wv, xv, qv, nv] = s.values;
            println!("path:           {}", path.display());
            println!("semaphore key:  {}", s.keys.sem);
            println!("memory key:     {}", s.keys.shm);
            println!(
                "permissions:    {:03o} (file {:03o})",
                s.sem_mode, s.file_mode
            );
            println!("owner:          {}:{}", s.uid, s.gid);
            println!("listeners:      {sv}");
            println!("waiting:        {}", s.waiting);
            println!("semaphores:     S={sv} W={wv} X={xv} Q={qv} N={nv}");
            println!("attached:       {}", s.attached);
        }
    }
    Ok(())
}

/// Listens and runs `sh -c COMMAND` with `$msg` for each message, without
/// waiting for it. Children are reaped as they exit; SIGINT, SIGTERM and
/// SIGHUP make it leave the bus and exit 0.
fn listen(path: PathBuf, command: OsString, once: bool) -> Result<(), Failure> {
    bus::reap_children_automatically()?;
    let stop = StopToken::on_termination_signals()?;
    let bus = Bus::open(path, Access::ReadOnly)?;
    let mut spawn_error = None;
    let options = ReadOptions {
        stop: Some(&stop),
        ..ReadOptions::default()
    };
    let result = bus.read_with(&options, |event| match event {
        Event::Listening => Flow::Continue,
        Event::Message(message) => {
            let spawned = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env("msg", OsString::from_vec(message.to_vec()))
                .spawn();
            match spawned {
                Ok(_) if once => Flow::Stop,
                Ok(_) => Flow::Continue,
                Err(e) => {
                    spawn_error = Some(format!("sh: {e}"));
                    Flow::Stop
                }
            }
        }
    });
    if let Some(e) = spawn_error {
        return Err(Failure::Failed(e));
    }
    match result {
        Err(bus::Error::Interrupted) => Ok(()),
        other => Ok(other?),
    }
}

/// Turns a PERMISSIONS operand into a mode, given the bus's current mode.
/// Octal: any bit of a class grants it. Symbolic: `=`, `+`, `-` then
/// classes, left to right, starting as if with `=`.
fn apply_permissions(spec: &str, current: u32) -> Result<u32, Failure> {
    const CLASSES: u32 = 0o777;
    let bad = || Failure::Usage(format!("invalid permissions {spec:?}"));
    if spec.is_empty() {
        return Err(bad());
    }
    if spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        let mode = u32::from_str_radix(spec, 8).map_err(|_| bad())?;
        if mode > CLASSES {
            return Err(bad());
        }
        return Ok(bus::normalise_mode(mode));
    }
    let (mut keep, mut grant) = (CLASSES, 0);
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
    Ok(bus::normalise_mode((current & keep) | grant))
}

/// A user or group operand: a numeric id, or a name looked up with
/// `lookup`. `what` is "user" or "group", for messages.
fn owner_id(name: &str, what: &str, lookup: fn(&str) -> Option<u32>) -> Result<u32, Failure> {
    if name.is_empty() || name.contains(':') {
        return Err(Failure::Usage(format!("invalid {what} name {name:?}")));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return name
            .parse()
            .map_err(|_| Failure::Usage(format!("invalid {what} id {name}")));
    }
    lookup(name).ok_or_else(|| Failure::Failed(format!("{name}: no such {what}")))
}

fn user_id(name: &str) -> Result<u32, Failure> {
    owner_id(name, "user", |n| {
        nix::unistd::User::from_name(n)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    })
}

fn group_id(name: &str) -> Result<u32, Failure> {
    owner_id(name, "group", |n| {
        nix::unistd::Group::from_name(n)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_before_or_after_the_command() {
        let want = Cmd::Create {
            path: Some("p".into()),
            exclusive: true,
        };
        assert_eq!(parse(args(&["-x", "create", "p"])).ok(), Some(want));
        let want = Cmd::Create {
            path: Some("p".into()),
            exclusive: true,
        };
        assert_eq!(parse(args(&["create", "-x", "p"])).ok(), Some(want));
        let want = Cmd::Broadcast {
            path: "p".into(),
            message: b"-n".to_vec(),
            nowait: true,
        };
        assert_eq!(
            parse(args(&["broadcast", "-n", "--", "p", "-n"])).ok(),
            Some(want)
        );
    }

    #[test]
    fn misplaced_options_are_usage_errors() {
        assert!(matches!(
            parse(args(&["-n", "create"])),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            parse(args(&["remove", "-q", "p"])),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            parse(args(&["listen", "p"])),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            parse(args(&["frobnicate"])),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn permissions() {
        let ok = |s, cur| apply_permissions(s, cur).ok();
        assert_eq!(ok("700", 0o600), Some(0o600));
        assert_eq!(ok("751", 0o600), Some(0o666));
        assert_eq!(ok("ug", 0o606), Some(0o660));
        assert_eq!(ok("+o", 0o600), Some(0o606));
        assert_eq!(ok("-g", 0o640), Some(0o600));
        assert_eq!(ok("=u+g", 0o606), Some(0o660));
        assert_eq!(ok("u-u+o", 0o600), Some(0o006));
        assert!(apply_permissions("rwx", 0).is_err());
        assert!(apply_permissions("", 0).is_err());
        assert!(apply_permissions("1777", 0).is_err());
    }
}
