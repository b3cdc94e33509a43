//! The one type for credentials deployer holds (GitHub tokens, the OIDC JWT, the runner's
//! token-request token): `Debug` and `Display` print `<redacted>`, the bytes are zeroed on
//! drop (`secrecy`), and the value is reachable only through [`Secret::expose`], so a derived
//! `Debug` of a struct or a `{}` in a log line can never leak one.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself, for the one call that sends it where it belongs.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_blank(&self) -> bool {
        self.expose().trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// clap parses flags and `DEPLOYER_*` variables of this type through this.
impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_display_shows_the_value() {
        let s = Secret::new("ghp_canary_value");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "ghp_canary_value");
        assert!(Secret::new(" \n").is_blank());
    }
}
