//! Platforms store resources and run sessions; the decisions and the work are elsewhere
//! (control, engine). `local` is the embedded default: a SQLite store under `COFFER_HOME`.

pub mod local;
