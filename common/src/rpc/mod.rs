//! The internal RPC layer every role speaks: length-prefixed frames over TCP
//! or Unix sockets, many requests in flight per connection matched by request
//! id, replies in any order, a postcard body for control messages and a raw
//! payload for data. Each connection opens with an HMAC challenge–response
//! in which the client proves a principal (`crate::credential`), and the
//! server's [`Service`] is told that principal with every request. The
//! layout is in `common/PROTOCOL.md`.
//!
//! The layer is generic over the messages: a server runs a [`Service`], a
//! client is an [`RpcClient<Req, Resp>`]; `crate::proto` holds the messages.

mod client;
mod config;
mod conn;
mod endpoint;
mod error;
mod frame;
mod handshake;
mod pending;
mod pool;
mod server;
mod session;
mod transport;

pub use client::RpcClient;
pub use config::RpcConfig;
pub use conn::SendGate;
pub use endpoint::{Endpoint, EndpointError};
pub use error::RpcError;
pub use frame::{FrameError, FrameHeader, FrameKind, FRAME_VERSION, HEADER_LEN};
pub use handshake::initiate as client_handshake;
pub use pool::ConnPool;
pub use server::{RpcServer, Service};
