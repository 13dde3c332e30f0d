//! Persona ids: slugs checked before any path is built from them, so that an id such as
//! `../../etc` never reaches the file system.

use std::fmt;

/// A validated persona id: `^[a-z0-9][a-z0-9_-]{0,63}$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PersonaId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid persona id {given:?}: {why} (a persona id is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit)")]
pub struct InvalidPersonaId {
    pub given: String,
    pub why: &'static str,
}

impl PersonaId {
    pub fn parse(given: &str) -> Result<Self, InvalidPersonaId> {
        let refuse = |why| {
            Err(InvalidPersonaId {
                given: given.to_owned(),
                why,
            })
        };
        let bytes = given.as_bytes();
        match bytes.first() {
            None => return refuse("it is empty"),
            Some(first) if !(first.is_ascii_lowercase() || first.is_ascii_digit()) => {
                return refuse("it must start with a lowercase letter or a digit")
            }
            Some(_) => {}
        }
        if bytes.len() > 64 {
            return refuse("it is longer than 64 characters");
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
        {
            return refuse("it holds a character other than a-z, 0-9, '-' and '_'");
        }
        Ok(Self(given.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PersonaId {
    type Err = InvalidPersonaId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for ok in ["mark-twain", "a", "0x", "jane_austen-2", &"a".repeat(64)] {
            assert_eq!(PersonaId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_paths_and_odd_characters() {
        for bad in [
            "",
            "../../etc",
            "/etc",
            "Mark",
            "-x",
            "_x",
            "a/b",
            "a.b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            let err = PersonaId::parse(bad).unwrap_err();
            assert_eq!(err.given, bad);
            assert!(err.to_string().contains("invalid persona id"), "{err}");
        }
    }
}
