//! Integration tests: real `bkg` processes on ephemeral ports, real plugin libraries copied
//! into real folders.

mod auth;
mod bad_input;
mod brainml;
mod brainml_ann;
mod brainml_quality;
mod brainml_rag;
mod brainml_snapshots;
mod brainml_swap;
mod deadlines;
mod embed_fidelity;
mod execution;
mod files;
mod first_hour;
mod heap_stress;
mod hub;
mod lifecycle;
mod limits;
mod llm;
mod lockout;
mod logs;
mod models;
mod openapi;
mod persistence;
mod repoagent_metrics;
mod repoagent_stats;
mod routes;
mod rustyface_align;
mod rustyface_bad_input;
mod rustyface_core;
mod rustyface_detect;
mod rustyface_gallery;
mod support;
mod swap;
mod telemetry;
mod ui;
