//! Where an RPC server listens: a TCP `host:port`, a Unix socket path, or a
//! host of the in-process simulation.
//!
//! The text form is what config files and the command line carry:
//! `unix:/run/chuyi/node.sock` for a Unix socket, `sim:node-1:7100` for a
//! simulated host (only inside a simulation, `chaos/src/sim`), anything else
//! is a TCP address resolved when connecting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The prefix that marks a Unix socket path in an endpoint's text form.
const UNIX_PREFIX: &str = "unix:";
/// The prefix that marks a host of the simulated network.
const SIM_PREFIX: &str = "sim:";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `host:port`, e.g. `10.0.0.5:7100` or `[::1]:7100`.
    Tcp(String),
    Unix(PathBuf),
    /// `host:port` on turmoil's simulated network: it exists only inside a
    /// simulation, and anywhere else connecting or binding fails.
    Sim(String),
}

/// An endpoint's text names neither a socket path nor an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {0:?}: expected host:port, unix:/path or sim:host:port")]
pub struct EndpointError(pub String);

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(addr) = text.strip_prefix(SIM_PREFIX) {
            return match addr {
                "" => Err(EndpointError(text.to_owned())),
                addr => Ok(Endpoint::Sim(addr.to_owned())),
            };
        }
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
            Endpoint::Sim(addr) => write!(f, "{SIM_PREFIX}{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for text in ["127.0.0.1:7100", "[::1]:0", "node-3.example:7100", "unix:/run/chuyi/a.sock", "sim:m1:7000"] {
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
        assert!("sim:".parse::<Endpoint>().is_err());
    }
}
