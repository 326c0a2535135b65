//! What a valid message is: at most 2047 bytes and no NUL byte, so that it
//! fits the 2048-byte segment with its terminating NUL.

use std::fmt;

use crate::error::{Error, Result};
use crate::sys::MEMORY_SIZE;

/// The longest message, in bytes (the segment less its terminating NUL).
pub const MAX_MESSAGE_LEN: usize = MEMORY_SIZE - 1;

/// A message checked against the protocol's rules; only a `Message` can be
/// broadcast, so a bad one is refused before any semaphore is touched.
///
/// By convention a message starts with the sender's process id and a space
/// (`"4123 volume-changed"`); [`Message::from_this_process`] builds that.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Message(Vec<u8>);

impl Message {
    /// Checks `bytes` and wraps them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Message> {
        let bytes = bytes.into();
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLong { len: bytes.len() });
        }
        if let Some(offset) = bytes.iter().position(|&b| b == 0) {
            return Err(Error::MessageContainsNul { offset });
        }
        Ok(Message(bytes))
    }

    /// `"<pid> <payload>"` for the calling process.
    pub fn from_this_process(payload: &str) -> Result<Message> {
        Message::new(format!("{} {payload}", std::process::id()))
    }

    /// The bytes, without a terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The message as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Unwraps the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl TryFrom<&str> for Message {
    type Error = Error;
    fn try_from(s: &str) -> Result<Message> {
        Message::new(s)
    }
}

impl TryFrom<&[u8]> for Message {
    type Error = Error;
    fn try_from(s: &[u8]) -> Result<Message> {
        Message::new(s)
    }
}

impl TryFrom<String> for Message {
    type Error = Error;
    fn try_from(s: String) -> Result<Message> {
        Message::new(s)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_message_is_accepted() {
        assert_eq!(
            Message::new(vec![b'a'; 2047]).unwrap().as_bytes().len(),
            2047
        );
    }

    #[test]
    fn too_long_is_refused_with_its_length() {
        assert!(matches!(
            Message::new(vec![b'a'; 2048]),
            Err(Error::MessageTooLong { len: 2048 })
        ));
    }

    #[test]
    fn nul_is_refused_with_its_offset() {
        assert!(matches!(
            Message::new(&b"12 a\0b"[..]),
            Err(Error::MessageContainsNul { offset: 4 })
        ));
    }

    #[test]
    fn pid_prefix() {
        let m = Message::from_this_process("hi").unwrap();
        assert_eq!(m.as_str().unwrap(), format!("{} hi", std::process::id()));
    }
}
