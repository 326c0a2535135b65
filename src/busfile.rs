//! The bus file: two decimal keys, one per line, naming the semaphore array
//! and the shared memory segment; plus where random buses live and how
//! their names and keys are drawn.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Object, Op, Result};
use crate::sys::file::{self, FileKind, FileStat};
use crate::sys::{random, Key};

/// The two keys a bus file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// Key of the semaphore array (line 1).
    pub sem: Key,
    /// Key of the shared memory segment (line 2).
    pub shm: Key,
}

/// A bus file is a few dozen bytes; anything much larger is not one.
const MAX_FILE_LEN: u64 = 4096;

/// The mode of a new bus file and of the IPC objects.
pub(crate) const DEFAULT_MODE: u32 = 0o600;

/// A bus file opened for reading, with its keys and what `fstat` said of
/// it; the admin calls change the file through this very descriptor.
#[derive(Debug)]
pub(crate) struct Opened {
    pub file: fs::File,
    pub keys: Keys,
    pub stat: FileStat,
}

/// Opens and parses the bus file at `path`, promptly whatever the path
/// names. The path is first resolved without opening anything (`O_PATH`:
/// no FIFO waits for a writer, no device's open routine runs); only a
/// regular file of a plausible size, on a real file system, is then
/// opened for reading, as that very inode (so a file swapped in meanwhile
/// is never read), and read with a bound.
pub(crate) fn open(path: &Path) -> Result<Opened> {
    let invalid = |reason: String| Error::InvalidBusFile {
        path: path.into(),
        reason,
    };
    let failed = |op| move |e| Error::sys(e, Object::BusFile, op, path);
    let named = file::open_path(path).map_err(failed(Op::Open))?;
    let stat = file::stat(named.as_fd()).map_err(failed(Op::Read))?;
    match stat.kind {
        FileKind::Regular => {}
        FileKind::Directory => return Err(invalid("a directory".into())),
        FileKind::Fifo => return Err(invalid("a FIFO (named pipe)".into())),
        FileKind::Socket => return Err(invalid("a socket".into())),
        FileKind::CharDevice => return Err(invalid("a character device".into())),
        FileKind::BlockDevice => return Err(invalid("a block device".into())),
        FileKind::Symlink => return Err(invalid("not a regular file".into())),
    }
    let fs_type = file::file_system_type(named.as_fd()).map_err(failed(Op::Read))?;
    if let Some((name, _)) = file::PSEUDO_FILE_SYSTEMS
        .iter()
        .find(|(_, t)| *t == fs_type)
    {
        return Err(invalid(format!("a file of the {name} pseudo file system")));
    }
    if stat.size == 0 {
        return Err(invalid("an empty file".into()));
    }
    if stat.size > MAX_FILE_LEN {
        return Err(invalid(format!(
            "{} bytes, a bus file has at most {MAX_FILE_LEN}",
            stat.size
        )));
    }
    let file = if file::proc_fd_available() {
        file::reopen_for_reading(named.as_fd())
    } else {
        // Without /proc: open the path again, and make sure it is still
        // the file just checked.
        file::open_for_reading(path)
    }
    .map_err(failed(Op::Open))?;
    let opened = file::stat(file.as_fd()).map_err(failed(Op::Read))?;
    if (opened.dev, opened.ino) != (stat.dev, stat.ino) {
        return Err(invalid("replaced while it was being opened".into()));
    }
    // Bounded: a file that keeps growing is read no further.
    let mut text = Vec::new();
    (&file)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::file(e, Object::BusFile, Op::Read, path))?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(invalid(format!("larger than {MAX_FILE_LEN} bytes")));
    }
    let keys = parse(&text).map_err(invalid)?;
    Ok(Opened {
        file,
        keys,
        stat: opened,
    })
}

/// Reads and parses the bus file at `path` (see [`open`] for how it is
/// opened).
pub fn read(path: &Path) -> Result<Keys> {
    open(path).map(|opened| opened.keys)
}

/// Parses the contents of a bus file: each of the first two lines starts
/// with a decimal key, read like C's `atoll`. Unlike `atoll`, a line with no
/// digits or a key of 0 is refused: key 0 is `IPC_PRIVATE`, which would make
/// `semget` create a fresh private array instead of opening the bus.
pub fn parse(text: &[u8]) -> std::result::Result<Keys, String> {
    let mut lines = text.split(|&b| b == b'\n');
    let mut key = |which: &str| -> std::result::Result<Key, String> {
        let line = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| format!("missing {which} key line"))?;
        parse_key(line).ok_or_else(|| {
            format!(
                "{which} key line {:?} is not a key in 1..={}",
                String::from_utf8_lossy(line),
                Key::MAX
            )
        })
    };
    let sem = key("semaphore")?;
    let shm = key("shared memory")?;
    Ok(Keys { sem, shm })
}

/// `atoll`-like: optional leading blanks and sign, then digits; the rest of
/// the line is ignored. `None` unless the value is a valid non-zero key.
fn parse_key(line: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(line).ok()?;
    let s = s.trim_start_matches([' ', '\t', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let value: i64 = digits[..end].parse().ok()?;
    let value = if negative { -value } else { value };
    Key::try_from(value).ok().filter(|&k| k != 0)
}

/// The file's contents for `keys`: `"<sem>\n<shm>\n"`.
pub fn format(keys: Keys) -> String {
    format!("{}\n{}\n", keys.sem, keys.shm)
}

/// Creates the file at `path` with `O_CREAT|O_EXCL` and mode 0600
/// ([`Error::AlreadyExists`] if there is one).
pub(crate) fn create_exclusive(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DEFAULT_MODE)
        .open(path)
        .map_err(|e| Error::file(e, Object::BusFile, Op::Create, path))
}

/// Writes `keys` into the freshly created bus file at `path`.
pub(crate) fn write_keys(mut file: &fs::File, path: &Path, keys: Keys) -> Result<()> {
    file.write_all(format(keys).as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::file(e, Object::BusFile, Op::Write, path))
}

/// The directory of random buses: `$XDG_RUNTIME_DIR/bus`, or `/run/bus`
/// when the variable is unset or empty.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("bus"),
        _ => PathBuf::from("/run/bus"),
    }
}

/// `mkdir -p` with mode 0755 for the directories it creates.
pub(crate) fn make_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Error::file(e, Object::Directory, Op::Create, dir))
}

const NAME_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `random.` followed by 30 characters from `[0-9a-zA-Z]`.
pub(crate) fn random_name() -> Result<String> {
    let mut bytes = [0u8; 30];
    random_bytes(&mut bytes)?;
    let mut name = String::from("random.");
    // 256 is 4 * 62 + 8: the bias of `% 62` is under 1 in 31, harmless for a
    // name whose only job is not to collide (collisions are retried).
    name.extend(
        bytes
            .iter()
            .map(|b| NAME_CHARS[*b as usize % NAME_CHARS.len()] as char),
    );
    Ok(name)
}

fn random_bytes(buf: &mut [u8]) -> Result<()> {
    random::random_bytes(buf).map_err(|e| Error::os("getrandom", e))
}

/// A random key in `1 ..= 2^30 - 1` (never `IPC_PRIVATE`).
pub(crate) fn random_key() -> Result<Key> {
    loop {
        let mut bytes = [0u8; 4];
        random_bytes(&mut bytes)?;
        let key = (u32::from_ne_bytes(bytes) & ((1 << 30) - 1)) as Key;
        if key != 0 {
            return Ok(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol_example() {
        assert_eq!(
            parse(b"803254122\n117718531\n"),
            Ok(Keys {
                sem: 803254122,
                shm: 117718531
            })
        );
    }

    #[test]
    fn parses_like_atoll() {
        assert_eq!(
            parse(b"  12abc\n+34 \n").unwrap(),
            Keys { sem: 12, shm: 34 }
        );
    }

    #[test]
    fn refuses_garbage_and_zero() {
        assert!(parse(b"").unwrap_err().contains("missing semaphore"));
        assert!(parse(b"12\n")
            .unwrap_err()
            .contains("missing shared memory"));
        assert!(parse(b"hello\n12\n")
            .unwrap_err()
            .contains("semaphore key line"));
        assert!(parse(b"0\n12\n").is_err());
        assert!(parse(b"12\n99999999999\n").is_err());
    }

    #[test]
    fn formats_two_lines() {
        assert_eq!(format(Keys { sem: 1, shm: 2 }), "1\n2\n");
    }

    #[test]
    fn random_names_and_keys_follow_the_rules() {
        let name = random_name().unwrap();
        assert_eq!(name.len(), 37);
        assert!(name[7..].bytes().all(|b| b.is_ascii_alphanumeric()));
        for _ in 0..1000 {
            let k = random_key().unwrap();
            assert!((1..(1 << 30)).contains(&k));
        }
    }
}
