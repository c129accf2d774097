//! `coffer operator …`: coffer on Kubernetes. The verbs live in coffer-kubernetes; this is
//! their command line.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Print the CustomResourceDefinitions of Stash's kinds (`| kubectl apply -f -`)
    Crds,
}

/// `coffer operator …`.
pub fn operator(command: OperatorCommand) -> Result<i32> {
    match command {
        OperatorCommand::Crds => crds(),
    }
}

fn crds() -> Result<i32> {
    std::io::stdout()
        .lock()
        .write_all(coffer_kubernetes::crd::crds_yaml().as_bytes())
        .context("cannot write the CRDs to stdout")?;
    Ok(0)
}
