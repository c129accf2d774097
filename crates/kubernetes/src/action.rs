//! What a reconciler asks the API to do. Every `decide` function returns these, and the
//! operator's act layer is the only code that turns them into requests, in the order given.

use std::time::Duration;

use coffer_api::Kind;
use serde_json::Value;

/// One request to the API server, decided but not yet made.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeAction {
    /// Server-side apply (field manager `coffer`, force) of an object the operator owns: a
    /// CronJob, Job, PVC, ServiceAccount or RoleBinding, as a full object with apiVersion,
    /// kind, metadata (name, namespace, labels, ownerReferences) and spec.
    Apply(Value),
    /// Create an object whose name the server picks (`metadata.generateName`), e.g. a retry
    /// BackupSession. A conflict is an error, never a silent overwrite.
    Create(Value),
    /// Delete an object (propagationPolicy Background, so a Job's pods go with it).
    Delete {
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    },
    /// Merge-patch the status subresource of one of coffer's resources. `status` is the
    /// whole new status; `resource_version` (when set) makes the write conditional, so a
    /// write that raced another is refused with 409 and decided again, never lost.
    PatchStatus {
        kind: Kind,
        namespace: String,
        name: String,
        resource_version: Option<String>,
        status: Value,
    },
    /// Record a Kubernetes Event about one of coffer's resources.
    Event {
        kind: Kind,
        namespace: String,
        name: String,
        warning: bool,
        reason: String,
        message: String,
    },
    /// Look at the resource again after this long even if nothing changes (a deadline, a
    /// retry's delay).
    RequeueAfter(Duration),
}
