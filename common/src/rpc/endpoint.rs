//! Where an RPC server listens: a TCP `host:port` or a Unix socket path.
//!
//! The text form is what config files and the command line carry:
//! `unix:/run/chuyi/node.sock` for a Unix socket, anything else is a TCP
//! address resolved when connecting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The prefix that marks a Unix socket path in an endpoint's text form.
const UNIX_PREFIX: &str = "unix:";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `host:port`, e.g. `10.0.0.5:7100` or `[::1]:7100`.
    Tcp(String),
    Unix(PathBuf),
}

/// An endpoint's text names neither a socket path nor an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {0:?}: expected host:port or unix:/path")]
pub struct EndpointError(pub String);

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix(UNIX_PREFIX) {
            Some("") => Err(EndpointError(text.to_owned())),
            Some(path) => Ok(Endpoint::Unix(PathBuf::from(path))),
            None if text.is_empty() => Err(EndpointError(text.to_owned())),
            None => Ok(Endpoint::Tcp(text.to_owned())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in ["127.0.0.1:7100", "[::1]:0", "node-3.example:7100", "unix:/run/chuyi/a.sock"] {
            let endpoint: Endpoint = text.parse().expect("valid endpoint");
            assert_eq!(endpoint.to_string(), text);
        }
    }

    #[test]
    fn unix_prefix_selects_a_path() {
        let endpoint: Endpoint = "unix:/tmp/x.sock".parse().expect("valid endpoint");
        assert_eq!(endpoint, Endpoint::Unix(PathBuf::from("/tmp/x.sock")));
    }

    #[test]
    fn empty_is_refused() {
        assert!("".parse::<Endpoint>().is_err());
        assert!("unix:".parse::<Endpoint>().is_err());
    }
}
