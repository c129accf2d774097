//! From resources to the concrete things a session uses: a repository, a database connection,
//! and the task's steps.

use std::sync::Arc;

use base64::Engine as _;
use coffer_api::{
    appbinding::AppBinding, meta::TargetRef, repository::Repository, secret::Secret, Kind, Resource,
};
use coffer_db::{ConnSpec, TlsSpec};
use coffer_repo::{BoundedStore, LocalStore, ObjectStore};

use crate::{
    catalog::Catalog,
    error::{EngineError, EngineResult},
};

pub(crate) fn get_secret(
    cat: &dyn Catalog,
    namespace: &str,
    name: &str,
    referenced_by: &str,
) -> EngineResult<Secret> {
    match cat
        .get(Kind::Secret, namespace, name)
        .map_err(EngineError::Catalog)?
    {
        Some(Resource::Secret(s)) => Ok(s),
        _ => Err(EngineError::Missing {
            kind: Kind::Secret,
            namespace: namespace.into(),
            name: name.into(),
            referenced_by: referenced_by.into(),
        }),
    }
}

pub(crate) fn get_repository(
    cat: &dyn Catalog,
    namespace: &str,
    name: &str,
    referenced_by: &str,
) -> EngineResult<Repository> {
    match cat
        .get(Kind::Repository, namespace, name)
        .map_err(EngineError::Catalog)?
    {
        Some(Resource::Repository(r)) => Ok(r),
        _ => Err(EngineError::Missing {
            kind: Kind::Repository,
            namespace: namespace.into(),
            name: name.into(),
            referenced_by: referenced_by.into(),
        }),
    }
}

pub(crate) fn get_appbinding(
    cat: &dyn Catalog,
    default_ns: &str,
    r: &TargetRef,
    referenced_by: &str,
) -> EngineResult<AppBinding> {
    let ns = r.namespace.as_deref().unwrap_or(default_ns);
    match cat
        .get(Kind::AppBinding, ns, &r.name)
        .map_err(EngineError::Catalog)?
    {
        Some(Resource::AppBinding(a)) => Ok(a),
        _ => Err(EngineError::Missing {
            kind: Kind::AppBinding,
            namespace: ns.into(),
            name: r.name.clone(),
            referenced_by: referenced_by.into(),
        }),
    }
}

/// A repository's storage and password, ready to open.
pub struct RepoAccess {
    pub store: Arc<dyn ObjectStore>,
    pub password: String,
    /// Task variables: provider, bucket, prefix, endpoint, region.
    pub provider: &'static str,
    pub bucket: String,
    pub prefix: String,
}

/// `at` says where a local backend's volume is (see [`coffer_api::repository::LocalMount`]):
/// the platform's choice, from [`crate::EngineConfig::local_mount`].
pub fn repo_access(
    cat: &dyn Catalog,
    repo: &Repository,
    at: coffer_api::repository::LocalMount,
) -> EngineResult<RepoAccess> {
    let ns = repo.metadata.namespace();
    let label = format!("Repository {ns}/{}", repo.metadata.name);
    let backend = &repo.spec.backend;
    let secret = get_secret(
        cat,
        ns,
        &backend.storage_secret_name,
        &format!("spec.backend.storageSecretName of {label}"),
    )?;
    let secret_label = format!("Secret {ns}/{}", backend.storage_secret_name);
    let password = secret
        .get("RESTIC_PASSWORD")
        .ok_or_else(|| EngineError::Invalid {
            resource: secret_label.clone(),
            message: "has no RESTIC_PASSWORD: add the repository password under that key".into(),
        })?;
    if password.is_empty() {
        return Err(EngineError::Invalid {
            resource: secret_label,
            message: "RESTIC_PASSWORD is empty".into(),
        });
    }
    if let Some(local) = &backend.local {
        let path = local.repository_path_in(at);
        return Ok(RepoAccess {
            store: Arc::new(BoundedStore::new(
                Arc::new(LocalStore::new(&path)),
                backend.connections(),
            )),
            password,
            provider: "local",
            bucket: path.display().to_string(),
            prefix: String::new(),
        });
    }
    let stores = crate::stores::Keys { secret: &secret };
    let remote = crate::stores::remote(backend, &stores).map_err(|e| match e {
        crate::stores::BuildError::Secret(message) => EngineError::Invalid {
            resource: secret_label.clone(),
            message,
        },
        crate::stores::BuildError::Store(e) => EngineError::Invalid {
            resource: label.clone(),
            message: e.to_string(),
        },
        crate::stores::BuildError::Spec(message) => EngineError::Invalid {
            resource: label.clone(),
            message,
        },
    })?;
    match remote {
        Some(r) => Ok(RepoAccess {
            // Every request to the backend, rustic's and coffer's own, shares the bound.
            store: Arc::new(BoundedStore::new(r.store, backend.connections())),
            password,
            provider: r.provider,
            bucket: r.bucket,
            prefix: r.prefix,
        }),
        None => Err(EngineError::Invalid {
            resource: label,
            message: "spec.backend has no backend: set one of local, s3, gcs, azure, b2, swift \
                      or rest"
                .into(),
        }),
    }
}

fn decode_pem(field: &str, resource: &str, v: &str) -> EngineResult<Vec<u8>> {
    let t = v.trim();
    if t.starts_with("-----BEGIN") {
        return Ok(t.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .map_err(|_| EngineError::Invalid {
            resource: resource.into(),
            message: format!("{field} is neither PEM nor base64-encoded PEM"),
        })
}

/// How to connect to the database an AppBinding describes, with its credentials and TLS.
pub fn conn_spec(cat: &dyn Catalog, ab: &AppBinding) -> EngineResult<ConnSpec> {
    let ns = ab.metadata.namespace();
    let label = format!("AppBinding {ns}/{}", ab.metadata.name);
    let ep = ab.spec.endpoint(ns).map_err(|m| EngineError::Invalid {
        resource: label.clone(),
        message: m,
    })?;
    let secret_name = ab
        .spec
        .secret
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let secret = get_secret(cat, ns, &secret_name, &format!("spec.secret of {label}"))?;
    let secret_label = format!("Secret {ns}/{secret_name}");
    let user = secret.get("username").ok_or_else(|| EngineError::Invalid {
        resource: secret_label.clone(),
        message: "has no `username` key for the database user".into(),
    })?;
    let password = secret.get("password").unwrap_or_default();

    let cc = &ab.spec.client_config;
    let mut tls = TlsSpec {
        skip_verify: cc.insecure_skip_tls_verify.unwrap_or(false),
        ..Default::default()
    };
    let mut want_tls = false;
    if let Some(ca) = cc.ca_bundle.as_deref().filter(|c| !c.trim().is_empty()) {
        tls.ca_pem = Some(decode_pem("spec.clientConfig.caBundle", &label, ca)?);
        want_tls = true;
    } else if let Some(ca) = secret.get("CA_CERT_DATA").filter(|c| !c.trim().is_empty()) {
        tls.ca_pem = Some(decode_pem("CA_CERT_DATA", &secret_label, &ca)?);
        want_tls = true;
    }
    if let Some(ts) = ab.spec.tls_secret.as_ref().filter(|t| !t.name.is_empty()) {
        let s = get_secret(cat, ns, &ts.name, &format!("spec.tlsSecret of {label}"))?;
        let tl = format!("Secret {ns}/{}", ts.name);
        let cert = s.get("tls.crt").ok_or_else(|| EngineError::Invalid {
            resource: tl.clone(),
            message: "has no `tls.crt` (the client certificate)".into(),
        })?;
        let key = s.get("tls.key").ok_or_else(|| EngineError::Invalid {
            resource: tl.clone(),
            message: "has no `tls.key` (the client key)".into(),
        })?;
        tls.client_cert_pem = Some(cert.into_bytes());
        tls.client_key_pem = Some(key.into_bytes());
        if tls.ca_pem.is_none() {
            if let Some(ca) = s.get("ca.crt") {
                tls.ca_pem = Some(ca.into_bytes());
            }
        }
        want_tls = true;
    }
    if tls.skip_verify {
        want_tls = true;
    }
    Ok(ConnSpec {
        host: ep.host,
        port: ep.port,
        user,
        password,
        tls: want_tls.then_some(tls),
        label,
    })
}

/// The Galera SST listener's TLS, from the task param `sstTLSSecret`: a `kubernetes.io/tls`
/// style Secret in the AppBinding's namespace with `tls.crt`, `tls.key` and, to require and
/// verify the donor's certificate, `ca.crt`. No param: the listener speaks plain TCP.
pub(crate) fn sst_tls(
    cat: &dyn Catalog,
    namespace: &str,
    task: &crate::tasks::ResolvedTask,
) -> EngineResult<Option<coffer_db::sst_tls::SstTls>> {
    let Some(name) = task.typed.sst_tls_secret.as_deref() else {
        return Ok(None);
    };
    let by = format!(
        "{} (task {}, param `sstTLSSecret`)",
        task.referenced_by, task.name
    );
    let s = get_secret(cat, namespace, name, &by)?;
    let source = format!("Secret {namespace}/{name}");
    let need = |key: &str, what: &str| {
        s.get(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| EngineError::Invalid {
                resource: source.clone(),
                message: format!(
                    "has no `{key}` ({what}) for the Galera SST listener named by {by}"
                ),
            })
    };
    let cert = need("tls.crt", "the listener's certificate")?;
    let key = need("tls.key", "the listener's private key")?;
    Ok(Some(coffer_db::sst_tls::SstTls {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        ca_pem: s
            .get("ca.crt")
            .filter(|v| !v.trim().is_empty())
            .map(String::into_bytes),
        source,
    }))
}
