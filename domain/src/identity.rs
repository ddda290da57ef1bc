//! Value objects of identity: a [`Username`] and a [`Password`], each valid by construction.
//!
//! - A username is 1–64 characters of `[a-z0-9._@-]` after trimming and lower-casing, so
//!   `Root`, ` root ` and `root` are one user (usernames are unique per installation).
//! - A password is 12 to 1024 bytes (at least 12 characters, at most 1024 bytes: the cost of
//!   hashing it must stay bounded). It is kept as given (no trimming, no normalisation) and is
//!   never printed by `Debug`.

use std::fmt;

use crate::values::InvalidValue;

/// A normalised username.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Longest username, in characters (all of them ASCII).
    pub const MAX_LEN: usize = 64;

    /// The username, trimmed and lower-cased.
    ///
    /// # Errors
    /// Empty, longer than 64 characters, or a character outside `[a-z0-9._@-]`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let name = Self::normalize(raw);
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(InvalidValue(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
        {
            return Err(InvalidValue(
                "may only contain letters, digits, '.', '_', '@' and '-'".to_owned(),
            ));
        }
        Ok(Self(name))
    }

    /// What any raw username is compared as (trimmed, ASCII lower-cased), valid or not: the
    /// key of per-username bookkeeping such as the login throttle.
    pub fn normalize(raw: &str) -> String {
        raw.trim().to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Username").field(&self.0).finish()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that satisfies the length rules. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Shortest password accepted, in characters.
    pub const MIN_CHARS: usize = 12;
    /// Longest password accepted, in bytes.
    pub const MAX_BYTES: usize = 1024;

    /// The password, unchanged.
    ///
    /// # Errors
    /// Fewer than 12 characters or more than 1024 bytes.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(InvalidValue(format!(
                "must be at least {} characters long",
                Self::MIN_CHARS
            )));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(InvalidValue(format!(
                "must be at most {} bytes long",
                Self::MAX_BYTES
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The secret itself, for the password hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_and_lower_cased() {
        assert_eq!(Username::parse("Root").unwrap().as_str(), "root");
        assert_eq!(
            Username::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        assert_eq!(Username::parse("a").unwrap().to_string(), "a");
        assert_eq!(Username::parse("A.b_c-d@9").unwrap().as_str(), "a.b_c-d@9");
        assert_eq!(
            Username::parse("ROOT").unwrap(),
            Username::parse("root").unwrap()
        );
        assert_eq!(Username::normalize(" MiXeD "), "mixed");
        // Normalisation of an invalid name is still defined (the throttle keys on it).
        assert_eq!(Username::normalize(" Not Valid! "), "not valid!");
    }

    #[test]
    fn usernames_have_a_length_range() {
        assert!(Username::parse(&"x".repeat(64)).is_ok());
        assert!(Username::parse(&format!("  {}  ", "x".repeat(64))).is_ok());
        for bad in ["", "   ", "\t", &"x".repeat(65)] {
            let e = Username::parse(bad).unwrap_err();
            assert_eq!(e.0, "must be 1 to 64 characters long", "{bad:?}");
        }
    }

    #[test]
    fn usernames_refuse_other_characters() {
        for bad in [
            "with space",
            "slash/no",
            "colon:no",
            "plus+no",
            "ünï",
            "tab\tin",
            "nul\0",
            "quote'",
            "semi;",
            "back\\slash",
        ] {
            let e = Username::parse(bad).unwrap_err();
            assert_eq!(
                e.0, "may only contain letters, digits, '.', '_', '@' and '-'",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passwords_have_a_length_range_in_characters_and_bytes() {
        assert!(Password::parse(&"p".repeat(12)).is_ok());
        // Counted in characters at the bottom: 12 two-byte characters are enough …
        assert!(Password::parse(&"é".repeat(12)).is_ok());
        assert_eq!(
            Password::parse(&"p".repeat(11)).unwrap_err().0,
            "must be at least 12 characters long"
        );
        // … even though 11 of them are 22 bytes.
        assert!(Password::parse(&"é".repeat(11)).is_err());
        assert!(Password::parse("").is_err());
        // Counted in bytes at the top.
        assert!(Password::parse(&"p".repeat(1024)).is_ok());
        assert_eq!(
            Password::parse(&"p".repeat(1025)).unwrap_err().0,
            "must be at most 1024 bytes long"
        );
        assert!(Password::parse(&"é".repeat(513)).is_err()); // 1026 bytes
    }

    #[test]
    fn passwords_are_kept_verbatim_and_never_printed() {
        let raw = "  Spaces Kept, Case Too  ";
        let password = Password::parse(raw).unwrap();
        assert_eq!(password.expose(), raw);
        let shown = format!("{password:?}");
        assert_eq!(shown, "Password(<redacted>)");
        assert!(!shown.contains("Spaces"));
    }
}
