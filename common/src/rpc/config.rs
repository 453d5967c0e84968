//! The knobs of an RPC client.

use std::time::Duration;

use tokio::sync::Semaphore;

use super::RpcError;
use crate::limits::{RPC_CLIENT_INFLIGHT_MAX, RPC_CONNECT_TIMEOUT_MS, RPC_TIMEOUT_MS};

#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Deadline of one call: waiting for an in-flight slot, sending and the
    /// reply together.
    pub call_timeout: Duration,
    /// Deadline for connecting and completing the handshake.
    pub connect_timeout: Duration,
    /// Calls one connection may have outstanding; further calls wait.
    pub inflight_max: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(RPC_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(RPC_CONNECT_TIMEOUT_MS),
            inflight_max: RPC_CLIENT_INFLIGHT_MAX,
        }
    }
}

impl RpcConfig {
    /// Refuses values that would make every call fail or hang.
    pub fn validate(&self) -> Result<(), RpcError> {
        if self.call_timeout.is_zero() {
            return Err(RpcError::Config("call_timeout must be above zero".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(RpcError::Config("connect_timeout must be above zero".into()));
        }
        if self.inflight_max == 0 || self.inflight_max > Semaphore::MAX_PERMITS {
            let max = Semaphore::MAX_PERMITS;
            return Err(RpcError::Config(format!("inflight_max must be in 1..={max}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(RpcConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_inflight_is_named() {
        let config = RpcConfig { inflight_max: 0, ..RpcConfig::default() };
        let err = config.validate().expect_err("zero in-flight slots");
        assert!(err.to_string().contains("inflight_max"));
    }
}
