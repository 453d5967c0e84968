//! Why a page could not be drawn.

use chuyi_meta_api::MetaError;

/// What went wrong reading the cluster for a page; the page says so (503)
/// and nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The metadata service refused or could not be reached.
    #[error("the metadata service: {0}")]
    Meta(#[from] MetaError),
}
