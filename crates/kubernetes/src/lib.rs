//! coffer on Kubernetes: the CRDs for Stash's kinds, the operator's controllers (each one
//! observe → decide → act, with the decisions pure and shared with the local platform through
//! coffer-control), and the catalog through which an agent in a Job reads its resources and
//! patches their status.

pub mod action;
pub mod catalog;
pub mod kinds;
pub mod settings;

pub use action::KubeAction;
pub use catalog::KubeCatalog;
pub use settings::OperatorSettings;
