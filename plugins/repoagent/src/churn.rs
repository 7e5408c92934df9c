//! placeholder: rametrics replaces this
//! Git churn per file (`git log --numstat`) for the hotspots of `code.metrics`.
