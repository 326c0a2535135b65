//! Encoding terms in Erlang's external term format, the little of it this
//! program sends: atoms, binaries, integers, tuples and maps. The node
//! decodes them with `binary_to_term(Bin, [safe])`, so every atom sent
//! must already exist there (`bus_port_frames:atoms/0` lists them).
//!
//! The encodings are those of `term_to_binary(T, [{minor_version, 2}])`:
//! atoms as `SMALL_ATOM_UTF8_EXT`, integers as the smallest of
//! `SMALL_INTEGER_EXT`, `INTEGER_EXT` and `SMALL_BIG_EXT`.

/// The version byte that starts an encoded term.
const VERSION: u8 = 131;

const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const MAP_EXT: u8 = 116;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// An Erlang term, as far as this program needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// An atom (its UTF-8 name; every one this program uses is static).
    Atom(&'static str),
    /// An integer (wide enough for every `u64` and `i64`).
    Int(i128),
    /// A binary.
    Binary(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Term>),
    /// A map, its pairs in any order.
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// An integer term.
    pub fn int(n: impl Into<i128>) -> Term {
        Term::Int(n.into())
    }

    /// A map with atom keys.
    pub fn map(pairs: impl IntoIterator<Item = (&'static str, Term)>) -> Term {
        Term::Map(pairs.into_iter().map(|(k, v)| (Term::Atom(k), v)).collect())
    }

    /// `{ok, Value}`.
    pub fn ok(value: Term) -> Term {
        Term::Tuple(vec![Term::Atom("ok"), value])
    }

    /// The term in the external format, version byte first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        self.encode_into(&mut out);
        out
    }

    /// Appends the term (without the version byte) to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Term::Atom(name) => atom(name, out),
            Term::Int(n) => integer(*n, out),
            Term::Binary(bytes) => {
                out.push(BINARY_EXT);
                // A frame is far below 4 GiB: the length always fits.
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Term::Tuple(items) => {
                match u8::try_from(items.len()) {
                    Ok(n) => out.extend_from_slice(&[SMALL_TUPLE_EXT, n]),
                    Err(_) => {
                        out.push(LARGE_TUPLE_EXT);
                        out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                    }
                }
                for item in items {
                    item.encode_into(out);
                }
            }
            Term::Map(pairs) => {
                out.push(MAP_EXT);
                out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
                for (key, value) in pairs {
                    key.encode_into(out);
                    value.encode_into(out);
                }
            }
        }
    }
}

/// An atom: `SMALL_ATOM_UTF8_EXT` up to 255 bytes (every atom Erlang
/// allows, 255 characters, fits `ATOM_UTF8_EXT`).
fn atom(name: &str, out: &mut Vec<u8>) {
    let bytes = name.as_bytes();
    match u8::try_from(bytes.len()) {
        Ok(n) => out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, n]),
        Err(_) => {
            out.push(ATOM_UTF8_EXT);
            out.extend_from_slice(&(bytes.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
}

/// An integer in the smallest encoding that holds it.
fn integer(n: i128, out: &mut Vec<u8>) {
    if let Ok(small) = u8::try_from(n) {
        out.extend_from_slice(&[SMALL_INTEGER_EXT, small]);
    } else if let Ok(int) = i32::try_from(n) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&int.to_be_bytes());
    } else {
        // Magnitude in little-endian bytes, as few as it needs (at most 16
        // for an i128, so the count fits the one byte of SMALL_BIG_EXT).
        let magnitude = n.unsigned_abs().to_le_bytes();
        let len = magnitude.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        out.extend_from_slice(&[SMALL_BIG_EXT, len as u8, u8::from(n < 0)]);
        out.extend_from_slice(&magnitude[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(bytes: &[u8]) -> Term {
        Term::Binary(bytes.to_vec())
    }

    /// Terms, each with its Erlang source text and what OTP 25's
    /// `term_to_binary(T, [{minor_version, 2}])` makes of it.
    fn cases() -> Vec<(Term, &'static str, Vec<u8>)> {
        vec![
            (Term::Atom("ok"), "ok", vec![131, 119, 2, 111, 107]),
            (
                Term::Tuple(vec![Term::Atom("error"), Term::Atom("enoent")]),
                "{error, enoent}",
                vec![
                    131, 104, 2, 119, 5, 101, 114, 114, 111, 114, 119, 6, 101, 110, 111, 101, 110,
                    116,
                ],
            ),
            (bin(b"ab"), "<<\"ab\">>", vec![131, 109, 0, 0, 0, 2, 97, 98]),
            (bin(b""), "<<>>", vec![131, 109, 0, 0, 0, 0]),
            (Term::int(0), "0", vec![131, 97, 0]),
            (Term::int(255), "255", vec![131, 97, 255]),
            (Term::int(256), "256", vec![131, 98, 0, 0, 1, 0]),
            (Term::int(-1), "-1", vec![131, 98, 255, 255, 255, 255]),
            (
                Term::int(i32::MAX),
                "2147483647",
                vec![131, 98, 127, 255, 255, 255],
            ),
            (
                Term::int(i32::MIN),
                "-2147483648",
                vec![131, 98, 128, 0, 0, 0],
            ),
            (
                Term::int(2_147_483_648_u32),
                "2147483648",
                vec![131, 110, 4, 0, 0, 0, 0, 128],
            ),
            (
                Term::int(u64::MAX),
                "18446744073709551615",
                vec![131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 255],
            ),
            (
                Term::int(-2_147_483_649_i64),
                "-2147483649",
                vec![131, 110, 4, 1, 1, 0, 0, 128],
            ),
            (
                Term::map([("a", Term::int(1))]),
                "#{a => 1}",
                vec![131, 116, 0, 0, 0, 1, 119, 1, 97, 97, 1],
            ),
            (
                Term::ok(Term::map([(
                    "keys",
                    Term::Tuple(vec![Term::int(1), Term::int(2)]),
                )])),
                "{ok, #{keys => {1, 2}}}",
                vec![
                    131, 104, 2, 119, 2, 111, 107, 116, 0, 0, 0, 1, 119, 4, 107, 101, 121, 115,
                    104, 2, 97, 1, 97, 2,
                ],
            ),
            (
                Term::Tuple(vec![Term::Atom("os_error"), Term::int(5), bin(b"x")]),
                "{os_error, 5, <<\"x\">>}",
                vec![
                    131, 104, 3, 119, 8, 111, 115, 95, 101, 114, 114, 111, 114, 97, 5, 109, 0, 0,
                    0, 1, 120,
                ],
            ),
            (Term::Tuple(vec![]), "{}", vec![131, 104, 0]),
            (
                Term::Tuple(vec![Term::Atom("invalid_bus_file"), bin(b"/tmp/x")]),
                "{invalid_bus_file, <<\"/tmp/x\">>}",
                vec![
                    131, 104, 2, 119, 16, 105, 110, 118, 97, 108, 105, 100, 95, 98, 117, 115, 95,
                    102, 105, 108, 101, 109, 0, 0, 0, 6, 47, 116, 109, 112, 47, 120,
                ],
            ),
            (
                Term::Atom("héllo"),
                "'héllo'",
                vec![131, 119, 6, 104, 195, 169, 108, 108, 111],
            ),
        ]
    }

    #[test]
    fn encodes_as_term_to_binary_with_minor_version_2() {
        for (term, source, expected) in cases() {
            assert_eq!(term.encode(), expected, "{source}");
        }
    }

    #[test]
    fn a_large_tuple_has_a_four_byte_arity() {
        let encoded = Term::Tuple(vec![Term::int(0); 256]).encode();
        assert_eq!(&encoded[..6], &[131, 105, 0, 0, 1, 0]);
        assert_eq!(encoded.len(), 6 + 256 * 2);
    }

    /// Our bytes decode, in a real Erlang node, to the very term meant
    /// (a check independent of the byte-for-byte one above, which
    /// encodings may legitimately differ from). Skipped without `erl`.
    #[test]
    fn binary_to_term_decodes_each_to_its_term() {
        let checks: Vec<String> = cases()
            .iter()
            .map(|(term, source, _)| {
                let bytes: Vec<String> = term.encode().iter().map(u8::to_string).collect();
                format!("(binary_to_term(<<{}>>) =:= {source})", bytes.join(","))
            })
            .collect();
        let script = format!("io:format(\"~p~n\", [[{}]]), halt().", checks.join(", "));
        let output = std::process::Command::new("erl")
            .args(["-noshell", "-eval", &script])
            .output();
        let Ok(output) = output else {
            eprintln!("erl not found: round trip skipped");
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let results: Vec<&str> = text
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(results.len(), cases().len(), "erl said: {text}");
        for ((_, source, _), result) in cases().iter().zip(results) {
            assert_eq!(result, "true", "{source}");
        }
    }
}
