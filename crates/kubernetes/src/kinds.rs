//! Where each of coffer's kinds lives in the Kubernetes API: group, version and plural, as
//! Stash's CRDs (and the core Secret) define them.

use coffer_api::Kind;
use kube::core::{ApiResource, GroupVersionKind};

/// The API resource of a kind, for `Api::<DynamicObject>` and URL paths.
pub fn api_resource(kind: Kind) -> ApiResource {
    let (group, version) = match kind.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", kind.api_version()),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind.as_str()),
        kind.plural(),
    )
}

/// The collection path of a kind in a namespace ("" for cluster-scoped kinds), as the API
/// server serves it, e.g. `/apis/stash.appscode.com/v1beta1/namespaces/db/backupsessions`.
pub fn collection_path(kind: Kind, namespace: &str) -> String {
    let prefix = if kind.api_version().contains('/') {
        format!("/apis/{}", kind.api_version())
    } else {
        format!("/api/{}", kind.api_version())
    };
    if kind.cluster_scoped() || namespace.is_empty() {
        format!("{prefix}/{}", kind.plural())
    } else {
        format!("{prefix}/namespaces/{namespace}/{}", kind.plural())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_stash_groups_and_plurals() {
        let ar = api_resource(Kind::BackupSession);
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
            ("stash.appscode.com", "v1beta1", "backupsessions")
        );
        assert_eq!(api_resource(Kind::Repository).version, "v1alpha1");
        assert_eq!(
            api_resource(Kind::AppBinding).group,
            "appcatalog.appscode.com"
        );
        assert_eq!(api_resource(Kind::Secret).group, "");
        let ar = api_resource(Kind::BinlogArchive);
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
            ("coffer.dev", "v1alpha1", "binlogarchives")
        );
        assert_eq!(
            collection_path(Kind::BinlogArchive, "db"),
            "/apis/coffer.dev/v1alpha1/namespaces/db/binlogarchives"
        );
        assert_eq!(
            collection_path(Kind::Secret, "db"),
            "/api/v1/namespaces/db/secrets"
        );
        assert_eq!(
            collection_path(Kind::Task, "db"),
            "/apis/stash.appscode.com/v1beta1/tasks"
        );
    }
}
