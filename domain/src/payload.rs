//! What JSON an event may carry: the limits every reader of a payload can honour.
//!
//! A payload (or metadata) is stored as the exact text the client sent and read back by many
//! readers: `/events` returns the text, while the entity-state fold, snapshots and projections
//! parse it into a tree and store what they derive from it in the state store, whose records
//! wrap the value in a few levels of their own. Text that one reader accepts and another cannot
//! parse makes the read paths disagree (or, stored in a state record, unreadable), so the append
//! refuses it up front. Refused:
//!
//! - arrays and objects nested more than [`MAX_NESTING`] levels deep (a scalar is 0 levels,
//!   `{"a": 1}` is 1, `{"a": [1]}` is 2). The readers parse up to 127 levels; the margin covers
//!   the levels state records add (a snapshot wraps the state once, a projection's keyed state
//!   two or three times);
//! - a number that does not fit a finite 64-bit float (`1e999`, `-1e400000000`, an integer of
//!   hundreds of digits). Integers beyond 64 bits that do fit (`18446744073709551616`) and
//!   numbers that round to zero (`1e-400`) are kept;
//! - a `\u` escape of a lone UTF-16 surrogate (`"\ud800"`, `"\udc00"`, a high surrogate not
//!   followed by a low one). Pairs (`"\ud83d\ude00"`) are kept.
//!
//! [`check_json`] scans the text once, byte by byte, without building a tree: the append path
//! calls it on every payload. It assumes the text is JSON (the append already parsed it as
//! such) and reports [`JsonProblem::Malformed`] rather than panicking if it is not.

/// Deepest nesting of arrays and objects a payload or metadata may have.
pub const MAX_NESTING: usize = 64;

/// Why a JSON text is refused. The `Display` form completes a sentence naming the field
/// (`payload nests arrays and objects more than 64 levels deep`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonProblem {
    #[error("nests arrays and objects more than {limit} levels deep")]
    TooDeep { limit: usize },
    #[error("holds a number that does not fit a finite 64-bit float: {number}")]
    NumberOutOfRange {
        /// The number's text, shortened to its first 32 characters.
        number: String,
    },
    #[error("holds the escape {escape} of a lone UTF-16 surrogate")]
    LoneSurrogate {
        /// The escape as written, e.g. `\ud800`.
        escape: String,
    },
    #[error("is not valid JSON")]
    Malformed,
}

/// Checks a payload or metadata against the rules above, with [`MAX_NESTING`].
///
/// # Errors
/// The first problem found.
pub fn check_payload(text: &str) -> Result<(), JsonProblem> {
    check_json(text, MAX_NESTING)
}

/// Checks a JSON text against the rules above with nesting up to `max_nesting` levels (what a
/// reader with another depth limit can use to refuse what it could not read back).
///
/// # Errors
/// The first problem found.
pub fn check_json(text: &str, max_nesting: usize) -> Result<(), JsonProblem> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_nesting {
                    return Err(JsonProblem::TooDeep { limit: max_nesting });
                }
                at += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1).ok_or(JsonProblem::Malformed)?;
                at += 1;
            }
            b'"' => at = skip_string(bytes, at + 1)?,
            b'-' | b'0'..=b'9' => at = check_number(text, at)?,
            // Whitespace, `,`, `:` and the letters of `true`, `false`, `null`.
            _ => at += 1,
        }
    }
    Ok(())
}

/// Skips a string's contents from just after its opening quote; returns the offset after its
/// closing quote.
fn skip_string(bytes: &[u8], mut at: usize) -> Result<usize, JsonProblem> {
    loop {
        let rest = bytes.get(at..).ok_or(JsonProblem::Malformed)?;
        let special = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .ok_or(JsonProblem::Malformed)?;
        at += special;
        if bytes[at] == b'"' {
            return Ok(at + 1);
        }
        match bytes.get(at + 1) {
            Some(b'u') => at = check_unicode_escape(bytes, at)?,
            Some(_) => at += 2,
            None => return Err(JsonProblem::Malformed),
        }
    }
}

/// Checks the `\uXXXX` escape at `at` (and the low surrogate after a high one); returns the
/// offset after it.
fn check_unicode_escape(bytes: &[u8], at: usize) -> Result<usize, JsonProblem> {
    let first = hex4(bytes, at + 2)?;
    let lone = || JsonProblem::LoneSurrogate {
        escape: String::from_utf8_lossy(&bytes[at..at + 6]).into_owned(),
    };
    match first {
        0xD800..=0xDBFF => {
            let low = match (bytes.get(at + 6), bytes.get(at + 7)) {
                (Some(b'\\'), Some(b'u')) => hex4(bytes, at + 8)?,
                _ => return Err(lone()),
            };
            if (0xDC00..=0xDFFF).contains(&low) {
                Ok(at + 12)
            } else {
                Err(lone())
            }
        }
        0xDC00..=0xDFFF => Err(lone()),
        _ => Ok(at + 6),
    }
}

fn hex4(bytes: &[u8], at: usize) -> Result<u16, JsonProblem> {
    let digits = bytes.get(at..at + 4).ok_or(JsonProblem::Malformed)?;
    digits.iter().try_fold(0u16, |acc, &d| {
        let value = (d as char).to_digit(16).ok_or(JsonProblem::Malformed)?;
        Ok((acc << 4) | value as u16)
    })
}

/// Digits before the point up to which a number without an exponent is always finite
/// (`f64::MAX` is about 1.8e308, 309 digits).
const ALWAYS_FINITE_DIGITS: usize = 308;

/// Checks the number starting at `at`; returns the offset after it.
fn check_number(text: &str, at: usize) -> Result<usize, JsonProblem> {
    let bytes = text.as_bytes();
    let mut end = at;
    let mut exponent = false;
    let mut integer_digits = 0usize;
    let mut in_integer = true;
    while let Some(&b) = bytes.get(end) {
        match b {
            b'0'..=b'9' => integer_digits += usize::from(in_integer),
            b'-' | b'+' => {}
            b'.' => in_integer = false,
            b'e' | b'E' => {
                exponent = true;
                in_integer = false;
            }
            _ => break,
        }
        end += 1;
    }
    if integer_digits == 0 {
        return Err(JsonProblem::Malformed);
    }
    // The common case: short numbers without an exponent need no parse.
    if !exponent && integer_digits <= ALWAYS_FINITE_DIGITS {
        return Ok(end);
    }
    let number = &text[at..end];
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(end),
        Ok(_) => Err(JsonProblem::NumberOutOfRange {
            number: number.chars().take(32).collect(),
        }),
        Err(_) => Err(JsonProblem::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    fn nested_objects(depth: usize) -> String {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    }

    /// What a reader that builds a tree makes of the text.
    fn tree_reader_accepts(text: &str) -> bool {
        serde_json::from_str::<Value>(text).is_ok()
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted_and_beyond_it_refused() {
        for text in [nested(MAX_NESTING), nested_objects(MAX_NESTING)] {
            assert_eq!(check_payload(&text), Ok(()), "{text}");
        }
        for text in [nested(MAX_NESTING + 1), nested_objects(MAX_NESTING + 1)] {
            assert_eq!(
                check_payload(&text),
                Err(JsonProblem::TooDeep { limit: MAX_NESTING })
            );
        }
        assert_eq!(
            check_payload(&nested(100_000)),
            Err(JsonProblem::TooDeep { limit: MAX_NESTING }),
            "no recursion: any depth is scanned"
        );
        // Depth is nesting, not the number of containers.
        let wide = format!("[{}]", vec![nested(MAX_NESTING - 1); 50].join(","));
        assert_eq!(check_payload(&wide), Ok(()));
        assert_eq!(check_payload("1"), Ok(()));
        assert_eq!(check_json("[]", 0), Err(JsonProblem::TooDeep { limit: 0 }));
        assert_eq!(check_json("[]", 1), Ok(()));
    }

    #[test]
    fn brackets_inside_strings_do_not_nest() {
        let text = format!(r#"{{"a":"{}","b":"\"[[["}}"#, "[{".repeat(500));
        assert_eq!(check_payload(&text), Ok(()));
    }

    #[test]
    fn the_limit_leaves_room_below_what_tree_readers_parse() {
        // The state store wraps a payload's levels in a few of its own; the readers must still
        // parse the result.
        assert!(tree_reader_accepts(&nested(MAX_NESTING + 8)));
        assert!(tree_reader_accepts(&nested(127)));
        assert!(!tree_reader_accepts(&nested(128)));
    }

    #[test]
    fn numbers_that_fit_a_finite_float_are_accepted() {
        for number in [
            "0",
            "-0",
            "-0.0",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e308",
            "-1.7976931348623157e308",
            "1.7976931348623157e308",
            "1e-400",
            "0e999999999",
            "5e-324",
            "1.5E+10",
            &"9".repeat(308),
            &format!("{}.{}", "9".repeat(308), "9".repeat(50)),
        ] {
            assert_eq!(check_payload(number), Ok(()), "{number}");
            assert_eq!(
                check_payload(&format!(r#"{{"n":[{number}]}}"#)),
                Ok(()),
                "{number}"
            );
            assert!(tree_reader_accepts(number), "{number}");
        }
    }

    #[test]
    fn numbers_beyond_a_finite_float_are_refused() {
        for number in [
            "1e999",
            "-1e999",
            "1e400000000",
            "1E309",
            "1.8e308",
            "1.7976931348623159e308",
            &"9".repeat(309),
            &"1".repeat(400),
        ] {
            let err = check_payload(&format!(r#"{{"a":{number}}}"#)).unwrap_err();
            assert!(
                matches!(&err, JsonProblem::NumberOutOfRange { number: n } if number.starts_with(n.as_str())),
                "{number}: {err:?}"
            );
            assert!(!tree_reader_accepts(number), "{number}");
        }
        let long = "1".repeat(400);
        let Err(JsonProblem::NumberOutOfRange { number }) = check_payload(&long) else {
            panic!()
        };
        assert_eq!(number.len(), 32, "the number is shortened in the message");
    }

    #[test]
    fn surrogate_pairs_are_accepted_and_lone_surrogates_refused() {
        for ok in [
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00""#,
            r#""a\u00e9\u4e2d\\ud800""#,
            r#""\ud7ff\ue000\uffff""#,
            r#"["\"\\", "\/\b\f\n\r\t"]"#,
            r#""😀""#,
        ] {
            assert_eq!(check_payload(ok), Ok(()), "{ok}");
            assert!(tree_reader_accepts(ok), "{ok}");
        }
        for (bad, escape) in [
            (r#""\ud800""#, r"\ud800"),
            (r#""\udc00""#, r"\udc00"),
            (r#""\uDBFFx""#, r"\uDBFF"),
            (r#""\ud800\n""#, r"\ud800"),
            (r#""\ud800\ud800""#, r"\ud800"),
            (r#""\ude00\ud83d""#, r"\ude00"),
            (r#"{"k\ud800":1}"#, r"\ud800"),
        ] {
            assert_eq!(
                check_payload(bad),
                Err(JsonProblem::LoneSurrogate {
                    escape: escape.to_owned()
                }),
                "{bad}"
            );
            assert!(!tree_reader_accepts(bad), "{bad}");
        }
    }

    #[test]
    fn text_that_is_not_json_is_malformed_never_a_panic() {
        for bad in [
            r#""open"#,
            r#""\"#,
            r#""\u12"#,
            r#""\uzzzz""#,
            r#""\ud800\u12"#,
            "]",
            "1e",
            "-",
        ] {
            assert_eq!(check_payload(bad), Err(JsonProblem::Malformed), "{bad}");
        }
    }

    #[test]
    fn messages_complete_a_sentence_naming_the_field() {
        assert_eq!(
            JsonProblem::TooDeep { limit: 64 }.to_string(),
            "nests arrays and objects more than 64 levels deep"
        );
        assert_eq!(
            check_payload("1e999").unwrap_err().to_string(),
            "holds a number that does not fit a finite 64-bit float: 1e999"
        );
        assert_eq!(
            check_payload(r#""\ud800""#).unwrap_err().to_string(),
            r"holds the escape \ud800 of a lone UTF-16 surrogate"
        );
    }

    fn json_number() -> impl Strategy<Value = String> {
        (
            proptest::option::of(Just("-")),
            "(0|[1-9][0-9]{0,330})",
            proptest::option::of("\\.[0-9]{1,20}"),
            proptest::option::of("[eE][+-]?[0-9]{1,12}"),
        )
            .prop_map(|(sign, int, frac, exp)| {
                format!(
                    "{}{int}{}{}",
                    sign.unwrap_or(""),
                    frac.unwrap_or_default(),
                    exp.unwrap_or_default()
                )
            })
    }

    fn json_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z\\[\\]{}]{0,3}",
            Just("\\\"".to_owned()),
            Just("\\\\".to_owned()),
            (0xD700u32..0xE100).prop_map(|c| format!("\\u{c:04x}")),
            (0u32..0x10000).prop_map(|c| format!("\\u{c:04X}")),
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    proptest! {
        #[test]
        fn agrees_with_a_tree_reader_on_numbers(number in json_number()) {
            prop_assert_eq!(check_payload(&number).is_ok(), tree_reader_accepts(&number), "{}", number);
        }

        #[test]
        fn agrees_with_a_tree_reader_on_strings(string in json_string()) {
            prop_assert_eq!(check_payload(&string).is_ok(), tree_reader_accepts(&string), "{}", string);
        }

        #[test]
        fn agrees_with_a_tree_reader_on_nesting(depth in 0usize..140, objects: bool) {
            let text = if objects { nested_objects(depth) } else { nested(depth) };
            prop_assert_eq!(check_json(&text, 127).is_ok(), tree_reader_accepts(&text));
            prop_assert_eq!(check_payload(&text).is_ok(), depth <= MAX_NESTING);
        }
    }
}
