//! What can go wrong with an RPC, from the caller's side.

use super::frame::FrameError;

/// The error of every fallible RPC operation. A call that fails with
/// `Timeout` may still have been carried out by the server; one that fails
/// with `Closed` may have been too, unless it failed before sending.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("rpc i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer does not speak this handshake, or its proof was wrong.
    #[error("rpc handshake failed: {0}")]
    Handshake(String),
    /// The server refused our principal: its key is not the one the
    /// server derives for it (another cluster, or a principal we are not).
    #[error("the server refused our credential")]
    Denied,
    /// A frame could not be built or was refused on receipt.
    #[error("bad rpc frame: {0}")]
    Frame(#[from] FrameError),
    #[error("cannot encode rpc message: {0}")]
    Encode(String),
    #[error("cannot decode rpc message: {0}")]
    Decode(String),
    /// The server answered with a protocol-level error frame (kind 3), e.g.
    /// because it could not decode our request.
    #[error("the server reported: {0}")]
    Remote(String),
    /// No reply (or no connection) within the deadline.
    #[error("rpc timed out")]
    Timeout,
    /// The call's [`super::SendGate`] closed before the request was
    /// written: it was never sent.
    #[error("the request's send gate closed; it was not sent")]
    Gated,
    /// The connection is gone; open a new client to continue.
    #[error("rpc connection closed")]
    Closed,
    /// An [`super::RpcConfig`] field is out of range; the text names it.
    #[error("invalid rpc config: {0}")]
    Config(String),
}
