//! End-to-end tests of the `coffer` binary against real MariaDB servers, a real S3 server
//! (Garage) and the restic CLI. One test binary for the whole crate keeps link time down.

mod archive;
mod archive_maintenance;
mod archive_store;
mod backends;
mod common;
mod dashboard;
mod faults;
mod galera;
mod kube_job;
mod lifecycle;
mod locks;
mod logical;
mod mysql;
mod mysql_archive;
mod native;
mod physical;
mod physical_swap;
mod pitr;
mod s3;
mod server;
mod tasks;
mod tls;
mod untrusted;
mod verify;
