//! Why something failed, as the node sees it: the reason
//! (`bus_reason::Failure`, the one mapping the NIF uses too) encoded as
//! the `Reason` of `{error, Reason}` (and of the `F` frame).

use std::os::unix::ffi::OsStrExt;

use crate::etf::Term;

pub use bus_reason::Failure;

/// The reason as a term, and `{error, Reason}`.
pub trait ToTerm {
    /// The reason as a term.
    fn term(&self) -> Term;
    /// `{error, Reason}`.
    fn error(&self) -> Term;
}

impl ToTerm for Failure {
    fn term(&self) -> Term {
        let atom = |name| Term::Atom(name);
        match self {
            Failure::MessageTooLong => atom("message_too_long"),
            Failure::MessageContainsNul => atom("message_contains_nul"),
            Failure::NotFound => atom("enoent"),
            Failure::AlreadyExists => atom("eexist"),
            Failure::PermissionDenied => atom("eacces"),
            Failure::NotPermitted => atom("eperm"),
            Failure::InvalidBusFile(path) => Term::Tuple(vec![
                atom("invalid_bus_file"),
                Term::Binary(path.as_os_str().as_bytes().to_vec()),
            ]),
            Failure::Gone => atom("gone"),
            Failure::Busy => atom("busy"),
            Failure::Timeout => atom("timeout"),
            Failure::TimeoutAfterPublish => atom("timeout_after_publish"),
            Failure::Interrupted => atom("interrupted"),
            Failure::Closed => atom("closed"),
            Failure::Os { errno, context } => Term::Tuple(vec![
                atom("os_error"),
                errno_term(*errno),
                Term::Binary(context.as_bytes().to_vec()),
            ]),
        }
    }

    fn error(&self) -> Term {
        Term::Tuple(vec![Term::Atom("error"), self.term()])
    }
}

/// `ok`, or `{error, Reason}`.
pub fn done(result: Result<(), Failure>) -> Term {
    match result {
        Ok(()) => Term::Atom("ok"),
        Err(failure) => failure.error(),
    }
}

/// `{ok, Value}`, or `{error, Reason}`.
pub fn value(result: Result<Term, Failure>) -> Term {
    match result {
        Ok(term) => Term::ok(term),
        Err(failure) => failure.error(),
    }
}

/// The errno's name (`bus_reason::errno_name`), or its number.
pub fn errno_term(errno: i32) -> Term {
    match bus_reason::errno_name(errno) {
        Some(name) => Term::Atom(name),
        None => Term::int(errno),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn core_errors_become_the_nif_reasons() {
        let path = PathBuf::from("/x");
        let cases: Vec<(bus::Error, Term)> = vec![
            (
                bus::Error::MessageTooLong { len: 3000 },
                Term::Atom("message_too_long"),
            ),
            (
                bus::Error::MessageContainsNul { offset: 1 },
                Term::Atom("message_contains_nul"),
            ),
            (
                bus::Error::NotFound {
                    path: path.clone(),
                    note: "",
                },
                Term::Atom("enoent"),
            ),
            (
                bus::Error::AlreadyExists { path: path.clone() },
                Term::Atom("eexist"),
            ),
            (
                bus::Error::Gone {
                    path: path.clone(),
                    object: "shared memory",
                },
                Term::Atom("gone"),
            ),
            (bus::Error::WouldBlock, Term::Atom("busy")),
            (bus::Error::TimedOut, Term::Atom("timeout")),
            (
                bus::Error::TimedOutAfterPublish,
                Term::Atom("timeout_after_publish"),
            ),
            (bus::Error::Interrupted, Term::Atom("interrupted")),
            (
                bus::Error::InvalidBusFile {
                    path: path.clone(),
                    reason: "empty".into(),
                },
                Term::Tuple(vec![
                    Term::Atom("invalid_bus_file"),
                    Term::Binary(b"/x".to_vec()),
                ]),
            ),
        ];
        for (err, term) in cases {
            assert_eq!(Failure::from(&err).term(), term, "{err:?}");
        }
    }

    #[test]
    fn other_errors_keep_errno_and_context() {
        let err = bus::Error::Os {
            context: "/x: open bus file".into(),
            source: std::io::Error::from_raw_os_error(40),
        };
        let Term::Tuple(items) = Failure::from(&err).term() else {
            panic!("not a tuple");
        };
        assert_eq!(items[0], Term::Atom("os_error"));
        assert_eq!(items[1], Term::Atom("eloop"));
        assert!(matches!(&items[2], Term::Binary(b) if b.starts_with(b"/x: open bus file")));
        assert_eq!(errno_term(11), Term::int(11));
    }
}
