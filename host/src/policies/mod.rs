//! Policies before they reach the sandbox: how they are named ([`PolicyRef`]), where they
//! come from ([`PolicySources`]: files, pinned URLs, OCI artifacts, uploads), and the upload
//! store ([`PolicyStore`]).

mod copies;
mod reference;
mod sources;
mod store;

pub use reference::{PolicyRef, PolicyRefError};
pub use sources::{
    FetchConfig, NotPermitted, OCI_LAYER_MEDIA_TYPES, PolicySources, SourceError, SourceRules,
};
pub use store::{PolicyError, PolicyRecord, PolicyStore, StoreQuota};
