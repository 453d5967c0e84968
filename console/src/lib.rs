//! chuyi-console: the cluster's web console, read-only, for administrators.
//!
//! It owns what an operator sees in a browser: the login and its sessions
//! ([`login`]), one look at the cluster every few seconds ([`survey`]) kept
//! in an in-memory ring of samples for the charts ([`history`]), the
//! decisions drawn from them (health, capacity per class, recovery ETA,
//! I/O rates: [`health`], [`history`]), and the pages ([`pages`], drawn
//! with [`html`]), served over HTTP by [`server`]. Plain server-rendered
//! HTML with inline SVG charts and one small script; nothing is fetched
//! from outside the cluster.
//!
//! It reads the cluster only through the metadata service's API
//! (`chuyi_meta_api`) and the storage nodes' `NodeStatus` and `OwnerIo`
//! calls, as any
//! administrator's tool would; it knows nothing of Raft, the chunk store or
//! the data path, and changes nothing. The metadata member hosts it
//! (`console_listen`; ARCHITECTURE.md says why).

pub mod error;
pub mod health;
pub mod history;
pub mod html;
pub mod login;
pub mod pages;
pub mod server;
pub mod survey;
#[cfg(test)]
mod testing;

pub use error::ConsoleError;
pub use server::{serve, Acceptors, Console};
