//! `repoagent`: code analysis of repositories on the host's disk: line counts, symbols,
//! metrics, search, a repository map, and code RAG through brainml over the bus.

pub mod lang;
pub mod metrics;
pub mod search;
pub mod stats;
