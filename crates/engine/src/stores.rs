//! From a Repository's remote backend and its storage Secret to an object store, with the
//! Secret keys Stash uses for each backend.

use std::sync::Arc;

use coffer_api::{repository::Backend, secret::Secret};
use coffer_repo::{
    swift_auth::{self, Cred, IdOrName, SwiftLogin, SwiftSession, V3Identity, V3Scope, V3User},
    AzureConfig, B2Config, CloudStore, GcsConfig, ObjectStore, RestConfig, RestStore, S3Config,
    StoreError, SwiftConfig,
};

/// The storage Secret and how to name it in messages.
pub struct Keys<'a> {
    pub secret: &'a Secret,
}

impl Keys<'_> {
    fn get(&self, k: &str) -> Option<String> {
        self.secret.get(k).filter(|v| !v.is_empty())
    }

    fn required(&self, k: &str, backend: &str) -> Result<String, BuildError> {
        self.get(k).ok_or_else(|| {
            BuildError::Secret(format!(
                "has no {k}, which a{} {backend} repository needs",
                if backend.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "n"
                } else {
                    ""
                }
            ))
        })
    }
}

#[derive(Debug)]
pub enum BuildError {
    /// The storage Secret lacks a key or holds a bad value.
    Secret(String),
    /// The Repository's spec asks for something coffer cannot do.
    Spec(String),
    /// The store refused its configuration.
    Store(StoreError),
}

/// A remote store and Stash's task variables for it.
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub provider: &'static str,
    pub bucket: String,
    pub prefix: String,
}

/// The store for a Repository's remote backend; `None` when it has none (local, or unset).
pub fn remote(backend: &Backend, keys: &Keys) -> Result<Option<Remote>, BuildError> {
    let built = |store: Result<CloudStore, StoreError>,
                 provider: &'static str,
                 bucket: &str,
                 prefix: &Option<String>| {
        Ok(Some(Remote {
            store: Arc::new(store.map_err(BuildError::Store)?),
            provider,
            bucket: bucket.to_string(),
            prefix: prefix.clone().unwrap_or_default(),
        }))
    };
    if let Some(s3) = &backend.s3 {
        let endpoint = if s3.endpoint.contains("://") {
            s3.endpoint.clone()
        } else {
            format!("https://{}", s3.endpoint)
        };
        let cfg = S3Config {
            endpoint,
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone().unwrap_or_default(),
            region: s3.region.clone().unwrap_or_default(),
            access_key_id: keys.required("AWS_ACCESS_KEY_ID", "S3")?,
            secret_access_key: keys.required("AWS_SECRET_ACCESS_KEY", "S3")?,
            session_token: keys.get("AWS_SESSION_TOKEN"),
        };
        return built(CloudStore::s3(&cfg), "s3", &s3.bucket, &s3.prefix);
    }
    if let Some(az) = &backend.azure {
        let cfg = azure_config(az, keys)?;
        return built(CloudStore::azure(&cfg), "azure", &az.container, &az.prefix);
    }
    if let Some(g) = &backend.gcs {
        let cfg = gcs_config(g, keys)?;
        return built(CloudStore::gcs(&cfg), "gcs", &g.bucket, &g.prefix);
    }
    if let Some(b2) = &backend.b2 {
        let cfg = b2_config(b2, keys)?;
        return built(CloudStore::b2(&cfg), "b2", &b2.bucket, &b2.prefix);
    }
    if let Some(sw) = &backend.swift {
        let cfg = swift_config(sw, keys)?;
        return built(CloudStore::swift(&cfg), "swift", &sw.container, &sw.prefix);
    }
    if let Some(r) = &backend.rest {
        let cfg = rest_config(r, keys)?;
        let store = RestStore::new(&cfg).map_err(BuildError::Store)?;
        let (host, path) = split_url(&r.url);
        return Ok(Some(Remote {
            store: Arc::new(store),
            provider: "rest",
            bucket: host,
            prefix: path,
        }));
    }
    Ok(None)
}

pub fn azure_config(
    az: &coffer_api::repository::AzureSpec,
    keys: &Keys,
) -> Result<AzureConfig, BuildError> {
    let account_key = keys.get("AZURE_ACCOUNT_KEY");
    let sas_token = keys.get("AZURE_ACCOUNT_SAS");
    if account_key.is_none() && sas_token.is_none() {
        return Err(BuildError::Secret(
            "has neither AZURE_ACCOUNT_KEY nor AZURE_ACCOUNT_SAS, one of which an azure \
             repository needs"
                .into(),
        ));
    }
    Ok(AzureConfig {
        endpoint: az.endpoint.clone().filter(|e| !e.is_empty()),
        container: az.container.clone(),
        prefix: az.prefix.clone().unwrap_or_default(),
        account_name: keys.required("AZURE_ACCOUNT_NAME", "azure")?,
        account_key,
        sas_token,
    })
}

/// A GCS bucket. Without `GOOGLE_SERVICE_ACCOUNT_JSON_KEY` requests go unsigned, which only
/// makes sense against an emulator, so the key may be left out only with an endpoint.
pub fn gcs_config(
    g: &coffer_api::repository::GcsSpec,
    keys: &Keys,
) -> Result<GcsConfig, BuildError> {
    let endpoint = g.endpoint.clone().filter(|e| !e.is_empty());
    let json = keys.get("GOOGLE_SERVICE_ACCOUNT_JSON_KEY");
    if json.is_none() && endpoint.is_none() {
        return Err(BuildError::Secret(
            "has no GOOGLE_SERVICE_ACCOUNT_JSON_KEY, which a gcs repository needs (the \
             service account's key file, as JSON)"
                .into(),
        ));
    }
    Ok(GcsConfig {
        endpoint,
        bucket: g.bucket.clone(),
        prefix: g.prefix.clone().unwrap_or_default(),
        service_account_json: json,
    })
}

/// A B2 bucket. OpenDAL addresses it by id as well as by name; Stash's Secret has only the
/// name, so the id is `B2_BUCKET_ID` when the Secret has it (coffer's key), and otherwise
/// looked up with the application key.
pub fn b2_config(b2: &coffer_api::repository::B2Spec, keys: &Keys) -> Result<B2Config, BuildError> {
    b2_config_at(coffer_repo::cloud::B2_API, b2, keys)
}

fn b2_config_at(
    api: &str,
    b2: &coffer_api::repository::B2Spec,
    keys: &Keys,
) -> Result<B2Config, BuildError> {
    let account_id = keys.required("B2_ACCOUNT_ID", "b2")?;
    let account_key = keys.required("B2_ACCOUNT_KEY", "b2")?;
    let bucket_id = match keys.get("B2_BUCKET_ID") {
        Some(id) => id,
        None => coffer_repo::cloud::b2_bucket_id(api, &account_id, &account_key, &b2.bucket)
            .map_err(BuildError::Store)?,
    };
    Ok(B2Config {
        bucket: b2.bucket.clone(),
        bucket_id,
        prefix: b2.prefix.clone().unwrap_or_default(),
        account_id,
        account_key,
    })
}

/// A Swift container. The storage URL and token come from the Secret (`OS_STORAGE_URL`,
/// `OS_AUTH_TOKEN`), or from a login with the keys restic reads: Swift v1 auth (`ST_AUTH`,
/// `ST_USER`, `ST_KEY`) or Keystone v2.0/v3 (`OS_AUTH_URL` and the other `OS_*` keys). With
/// both, the given token is used first and the login renews it. Nothing is contacted here.
pub fn swift_config(
    sw: &coffer_api::repository::SwiftSpec,
    keys: &Keys,
) -> Result<SwiftConfig, BuildError> {
    let login = swift_login(keys)?;
    let preset = match (keys.get("OS_STORAGE_URL"), keys.get("OS_AUTH_TOKEN")) {
        (Some(storage_url), Some(token)) => Some(SwiftSession {
            storage_url,
            token,
            expires: None,
        }),
        (Some(_), None) if login.is_none() => {
            return Err(BuildError::Secret(
                "has OS_STORAGE_URL but no OS_AUTH_TOKEN, which a swift repository needs with \
                 it (or give login keys instead: OS_AUTH_URL, or ST_AUTH)"
                    .into(),
            ))
        }
        (None, Some(_)) if login.is_none() => {
            return Err(BuildError::Secret(
                "has OS_AUTH_TOKEN but no OS_STORAGE_URL, which a swift repository needs with \
                 it (or give login keys instead: OS_AUTH_URL, or ST_AUTH)"
                    .into(),
            ))
        }
        _ => None,
    };
    if preset.is_none() && login.is_none() {
        return Err(BuildError::Secret(
            "has neither OS_AUTH_URL (Keystone) nor ST_AUTH (Swift v1 auth) nor \
             OS_STORAGE_URL and OS_AUTH_TOKEN, one of which a swift repository needs"
                .into(),
        ));
    }
    Ok(SwiftConfig {
        preset,
        login,
        container: sw.container.clone(),
        prefix: sw.prefix.clone().unwrap_or_default(),
    })
}

/// Keys that only Keystone v3 has: with them, an auth URL whose path names no version is v3.
const KEYSTONE_V3_ONLY: &[&str] = &[
    "OS_USER_ID",
    "OS_USER_DOMAIN_NAME",
    "OS_USER_DOMAIN_ID",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_ID",
    "OS_TRUST_ID",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_NAME",
    "OS_APPLICATION_CREDENTIAL_SECRET",
];

/// How to log in to Swift, from the Secret keys restic reads; `None` without an auth URL.
///
/// As restic: `OS_AUTH_URL`, `OS_USERNAME` and `OS_PASSWORD` are read before `ST_AUTH`,
/// `ST_USER` and `ST_KEY`; `OS_PROJECT_NAME` and `OS_TENANT_NAME` name the same thing, as do
/// `OS_TENANT_ID` and (coffer reads it too) `OS_PROJECT_ID`; the version is the auth URL's
/// (`/v3`, `/v2.0`, `/v1.0`). An `ST_AUTH` whose path names none is v1 auth, as coffer has
/// always read it; an `OS_AUTH_URL` whose path names none is v3 when a v3-only key is set.
fn swift_login(keys: &Keys) -> Result<Option<SwiftLogin>, BuildError> {
    let cred = |k: &'static str| keys.get(k).map(|v| Cred::new(k, v));
    let first = |ks: &[&'static str]| ks.iter().find_map(|k| cred(k));
    let Some(url) = first(&["OS_AUTH_URL", "ST_AUTH"]) else {
        return Ok(None);
    };
    let from_st = url.key == "ST_AUTH";
    let version = match swift_auth::auth_version(&url.value) {
        Some(v) => v,
        None if from_st => 1,
        None if KEYSTONE_V3_ONLY.iter().any(|k| keys.get(k).is_some()) => 3,
        None => {
            return Err(BuildError::Secret(
                "has an OS_AUTH_URL whose path names no Keystone version: end it in /v3 (or \
                 /v2.0 for Keystone v2.0), e.g. https://<keystone host>:5000/v3"
                    .into(),
            ))
        }
    };
    // The key a refusal names for a missing user or password: the family of the auth URL.
    let (user_key, password_key) = if from_st {
        ("ST_USER", "ST_KEY")
    } else {
        ("OS_USERNAME", "OS_PASSWORD")
    };
    let missing = |what: &str| {
        BuildError::Secret(format!(
            "has {} (Swift {} auth) but no {what}, which logging in needs",
            url.key,
            match version {
                1 => "v1",
                2 => "Keystone v2.0",
                _ => "Keystone v3",
            }
        ))
    };
    let user_name = first(&["OS_USERNAME", "ST_USER"]);
    let password = first(&["OS_PASSWORD", "ST_KEY"]);
    let region = cred("OS_REGION_NAME");
    let login = match version {
        1 => SwiftLogin::V1 {
            user: user_name.ok_or_else(|| missing(user_key))?,
            key: password.ok_or_else(|| missing(password_key))?,
            url,
        },
        2 => SwiftLogin::V2 {
            user: user_name.ok_or_else(|| missing(user_key))?,
            password: password.ok_or_else(|| missing(password_key))?,
            tenant: first(&["OS_TENANT_ID", "OS_PROJECT_ID"])
                .map(IdOrName::Id)
                .or_else(|| first(&["OS_TENANT_NAME", "OS_PROJECT_NAME"]).map(IdOrName::Name)),
            region,
            url,
        },
        _ => {
            let user_domain = cred("OS_USER_DOMAIN_ID")
                .map(IdOrName::Id)
                .or_else(|| cred("OS_USER_DOMAIN_NAME").map(IdOrName::Name));
            // A user by id, or by name within a domain (Keystone v3 finds names only there).
            let user = || match (cred("OS_USER_ID"), user_name.clone(), user_domain.clone()) {
                (Some(id), _, _) => Ok(V3User::Id(id)),
                (None, Some(name), Some(domain)) => Ok(V3User::Name { name, domain }),
                (None, Some(name), None) => Err(BuildError::Secret(format!(
                    "has {} but neither OS_USER_DOMAIN_NAME nor OS_USER_DOMAIN_ID: Keystone v3 \
                     finds a user by name only within a domain (OpenStack's own is `Default`), \
                     or give OS_USER_ID instead",
                    name.key
                ))),
                (None, None, _) => Err(missing(&format!("{user_key} or OS_USER_ID"))),
            };
            let app_id = cred("OS_APPLICATION_CREDENTIAL_ID");
            let app_name = cred("OS_APPLICATION_CREDENTIAL_NAME");
            let app_secret = cred("OS_APPLICATION_CREDENTIAL_SECRET");
            let identity = match (app_id, app_name, app_secret) {
                (Some(id), _, Some(secret)) => V3Identity::ApplicationCredentialId { id, secret },
                (None, Some(name), Some(secret)) => V3Identity::ApplicationCredentialName {
                    name,
                    user: user()?,
                    secret,
                },
                (Some(c), _, None) | (None, Some(c), None) => {
                    return Err(BuildError::Secret(format!(
                        "has {} but no OS_APPLICATION_CREDENTIAL_SECRET, which logging in with \
                         an application credential needs",
                        c.key
                    )))
                }
                (None, None, _) => V3Identity::Password {
                    user: user()?,
                    password: password.ok_or_else(|| missing(password_key))?,
                },
            };
            // A project named without its domain is looked up in the user's, else in
            // `Default`, as restic's Swift library does.
            let project_domain = cred("OS_PROJECT_DOMAIN_ID")
                .map(IdOrName::Id)
                .or_else(|| cred("OS_PROJECT_DOMAIN_NAME").map(IdOrName::Name))
                .or_else(|| cred("OS_USER_DOMAIN_NAME").map(IdOrName::Name))
                .or_else(|| cred("OS_USER_DOMAIN_ID").map(IdOrName::Id));
            let scope = cred("OS_TRUST_ID")
                .map(V3Scope::Trust)
                .or_else(|| first(&["OS_TENANT_ID", "OS_PROJECT_ID"]).map(V3Scope::ProjectId))
                .or_else(|| {
                    first(&["OS_PROJECT_NAME", "OS_TENANT_NAME"]).map(|name| V3Scope::ProjectName {
                        name,
                        domain: project_domain,
                    })
                });
            SwiftLogin::V3 {
                url,
                identity,
                scope,
                region,
            }
        }
    };
    Ok(Some(login))
}

pub fn rest_config(
    r: &coffer_api::repository::RestSpec,
    keys: &Keys,
) -> Result<RestConfig, BuildError> {
    let url = r.url.trim().to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BuildError::Spec(format!(
            "spec.backend.rest.url `{url}` must be an http:// or https:// URL"
        )));
    }
    if url.split("://").nth(1).is_some_and(|rest| {
        rest.split('/')
            .next()
            .is_some_and(|authority| authority.contains('@'))
    }) {
        return Err(BuildError::Spec(
            "spec.backend.rest.url must not hold credentials: put them in the storage Secret \
             under REST_SERVER_USERNAME and REST_SERVER_PASSWORD"
                .into(),
        ));
    }
    let username = keys.get("REST_SERVER_USERNAME");
    let password = keys.get("REST_SERVER_PASSWORD");
    if password.is_some() && username.is_none() {
        return Err(BuildError::Secret(
            "has REST_SERVER_PASSWORD but no REST_SERVER_USERNAME".into(),
        ));
    }
    Ok(RestConfig {
        url,
        username,
        password,
        ca_cert_pem: keys
            .secret
            .get_bytes("CA_CERT_DATA")
            .filter(|v| !v.is_empty()),
    })
}

/// Stash's task variables for a REST backend: the URL's host and its path.
fn split_url(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    match rest.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (rest.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_api::repository::{B2Spec, GcsSpec, RestSpec, SwiftSpec};

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        for (k, v) in pairs {
            s.string_data.insert(k.to_string(), v.to_string());
        }
        s
    }

    fn err(r: Result<impl std::fmt::Debug, BuildError>) -> String {
        match r {
            Err(BuildError::Secret(m) | BuildError::Spec(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn b2_maps_stash_keys_and_looks_the_bucket_id_up_unless_given() {
        let spec = B2Spec {
            bucket: "bk".into(),
            prefix: Some("db".into()),
            max_connections: None,
        };
        let s = secret(&[
            ("B2_ACCOUNT_ID", "id"),
            ("B2_ACCOUNT_KEY", "key"),
            ("B2_BUCKET_ID", "bid"),
        ]);
        let keys = Keys { secret: &s };
        let c = b2_config(&spec, &keys).unwrap();
        assert_eq!(
            (
                c.account_id.as_str(),
                c.account_key.as_str(),
                c.bucket_id.as_str(),
                c.prefix.as_str()
            ),
            ("id", "key", "bid", "db")
        );
        // Without B2_BUCKET_ID the id is looked up: here the API is unreachable, and the
        // refusal says so.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let s = secret(&[("B2_ACCOUNT_ID", "id"), ("B2_ACCOUNT_KEY", "key")]);
        let keys = Keys { secret: &s };
        match b2_config_at(&dead, &spec, &keys) {
            Err(BuildError::Store(e)) => {
                assert!(e.to_string().contains("cannot reach the B2 API"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let s = secret(&[("B2_ACCOUNT_KEY", "key")]);
        let keys = Keys { secret: &s };
        assert_eq!(
            err(b2_config(&spec, &keys)),
            "has no B2_ACCOUNT_ID, which a b2 repository needs"
        );
    }

    fn swift(pairs: &[(&str, &str)]) -> Result<SwiftConfig, BuildError> {
        let s = secret(pairs);
        let spec = SwiftSpec {
            container: "c".into(),
            prefix: Some("db".into()),
        };
        swift_config(&spec, &Keys { secret: &s })
    }

    fn login(pairs: &[(&str, &str)]) -> SwiftLogin {
        let c = swift(pairs).unwrap();
        assert!(c.preset.is_none());
        c.login.expect("a login")
    }

    fn c(key: &'static str, value: &str) -> Cred {
        Cred::new(key, value)
    }

    const V3: (&str, &str) = ("OS_AUTH_URL", "https://keystone.example:5000/v3");

    #[test]
    fn swift_takes_a_given_storage_url_and_token_or_v1_auth() {
        let cfg = swift(&[
            ("OS_STORAGE_URL", "https://swift/v1/AUTH_x"),
            ("OS_AUTH_TOKEN", "t"),
        ])
        .unwrap();
        let preset = cfg.preset.unwrap();
        assert_eq!(
            (preset.storage_url.as_str(), preset.token.as_str()),
            ("https://swift/v1/AUTH_x", "t")
        );
        assert!(cfg.login.is_none());
        assert_eq!(cfg.prefix, "db");
        assert_eq!(
            login(&[
                ("ST_AUTH", "http://swift:8080/auth/v1.0"),
                ("ST_USER", "a:u"),
                ("ST_KEY", "k")
            ]),
            SwiftLogin::V1 {
                url: c("ST_AUTH", "http://swift:8080/auth/v1.0"),
                user: c("ST_USER", "a:u"),
                key: c("ST_KEY", "k"),
            }
        );
        // An ST_AUTH whose path names no version is v1 auth, as coffer always read it.
        assert!(matches!(
            login(&[
                ("ST_AUTH", "https://auth.example/"),
                ("ST_USER", "u"),
                ("ST_KEY", "k")
            ]),
            SwiftLogin::V1 { .. }
        ));
        // A given token and login keys: the token first, the login to renew it (as restic).
        let both = swift(&[
            ("OS_STORAGE_URL", "https://swift/v1/AUTH_x"),
            ("OS_AUTH_TOKEN", "t"),
            ("ST_AUTH", "http://swift:8080/auth/v1.0"),
            ("ST_USER", "u"),
            ("ST_KEY", "k"),
        ])
        .unwrap();
        assert!(both.preset.is_some() && both.login.is_some());
    }

    #[test]
    fn swift_keystone_v3_keys_map_to_the_login_restic_makes() {
        // By names, the project in the user's domain when its own is not given.
        assert_eq!(
            login(&[
                V3,
                ("OS_USERNAME", "alice"),
                ("OS_PASSWORD", "pw"),
                ("OS_USER_DOMAIN_NAME", "Users"),
                ("OS_PROJECT_NAME", "backups"),
                ("OS_REGION_NAME", "RegionTwo"),
            ]),
            SwiftLogin::V3 {
                url: c("OS_AUTH_URL", V3.1),
                identity: V3Identity::Password {
                    user: V3User::Name {
                        name: c("OS_USERNAME", "alice"),
                        domain: IdOrName::Name(c("OS_USER_DOMAIN_NAME", "Users")),
                    },
                    password: c("OS_PASSWORD", "pw"),
                },
                scope: Some(V3Scope::ProjectName {
                    name: c("OS_PROJECT_NAME", "backups"),
                    domain: Some(IdOrName::Name(c("OS_USER_DOMAIN_NAME", "Users"))),
                }),
                region: Some(c("OS_REGION_NAME", "RegionTwo")),
            }
        );
        // The project's own domain, by id; OS_TENANT_NAME is OS_PROJECT_NAME's older name.
        let SwiftLogin::V3 { scope, .. } = login(&[
            V3,
            ("OS_USERNAME", "alice"),
            ("OS_PASSWORD", "pw"),
            ("OS_USER_DOMAIN_ID", "default"),
            ("OS_TENANT_NAME", "backups"),
            ("OS_PROJECT_DOMAIN_ID", "d-9"),
        ]) else {
            panic!("v3")
        };
        assert_eq!(
            scope,
            Some(V3Scope::ProjectName {
                name: c("OS_TENANT_NAME", "backups"),
                domain: Some(IdOrName::Id(c("OS_PROJECT_DOMAIN_ID", "d-9"))),
            })
        );
        // By ids.
        let SwiftLogin::V3 {
            identity,
            scope,
            region,
            ..
        } = login(&[
            V3,
            ("OS_USER_ID", "u-1"),
            ("OS_PASSWORD", "pw"),
            ("OS_TENANT_ID", "p-1"),
        ])
        else {
            panic!("v3")
        };
        assert_eq!(
            identity,
            V3Identity::Password {
                user: V3User::Id(c("OS_USER_ID", "u-1")),
                password: c("OS_PASSWORD", "pw"),
            }
        );
        assert_eq!(scope, Some(V3Scope::ProjectId(c("OS_TENANT_ID", "p-1"))));
        assert_eq!(region, None);
        // A trust is the scope even when a project is named too.
        let SwiftLogin::V3 { scope, .. } = login(&[
            V3,
            ("OS_USER_ID", "u-1"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "backups"),
            ("OS_TRUST_ID", "t-1"),
        ]) else {
            panic!("v3")
        };
        assert_eq!(scope, Some(V3Scope::Trust(c("OS_TRUST_ID", "t-1"))));
        // restic reads OS_AUTH_URL before ST_AUTH, OS_USERNAME before ST_USER.
        let l = login(&[
            V3,
            ("ST_AUTH", "http://swift:8080/auth/v1.0"),
            ("ST_USER", "st"),
            ("ST_KEY", "k"),
            ("OS_USER_ID", "u-1"),
            ("OS_PASSWORD", "pw"),
        ]);
        assert_eq!(l.auth_url(), &c("OS_AUTH_URL", V3.1));
    }

    #[test]
    fn swift_application_credentials_and_v2() {
        // An application credential by id; the v3-only keys tell the version when the URL
        // does not.
        assert_eq!(
            login(&[
                ("OS_AUTH_URL", "https://keystone.example:5000"),
                ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
                ("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
                ("OS_PROJECT_NAME", "ignored: the credential is scoped"),
            ]),
            SwiftLogin::V3 {
                url: c("OS_AUTH_URL", "https://keystone.example:5000"),
                identity: V3Identity::ApplicationCredentialId {
                    id: c("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
                    secret: c("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
                },
                scope: Some(V3Scope::ProjectName {
                    name: c("OS_PROJECT_NAME", "ignored: the credential is scoped"),
                    domain: None,
                }),
                region: None,
            }
        );
        // By name, which needs its user.
        let SwiftLogin::V3 { identity, .. } = login(&[
            V3,
            ("OS_APPLICATION_CREDENTIAL_NAME", "coffer"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
            ("OS_USERNAME", "alice"),
            ("OS_USER_DOMAIN_ID", "default"),
        ]) else {
            panic!("v3")
        };
        assert_eq!(
            identity,
            V3Identity::ApplicationCredentialName {
                name: c("OS_APPLICATION_CREDENTIAL_NAME", "coffer"),
                user: V3User::Name {
                    name: c("OS_USERNAME", "alice"),
                    domain: IdOrName::Id(c("OS_USER_DOMAIN_ID", "default")),
                },
                secret: c("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
            }
        );
        assert_eq!(
            login(&[
                ("OS_AUTH_URL", "https://auth.example/v2.0/"),
                ("OS_USERNAME", "alice"),
                ("OS_PASSWORD", "pw"),
                ("OS_TENANT_NAME", "backups"),
                ("OS_REGION_NAME", "LON"),
            ]),
            SwiftLogin::V2 {
                url: c("OS_AUTH_URL", "https://auth.example/v2.0/"),
                user: c("OS_USERNAME", "alice"),
                password: c("OS_PASSWORD", "pw"),
                tenant: Some(IdOrName::Name(c("OS_TENANT_NAME", "backups"))),
                region: Some(c("OS_REGION_NAME", "LON")),
            }
        );
    }

    #[test]
    fn swift_refusals_name_the_missing_keys_and_no_value() {
        for (pairs, expected) in [
            (
                &[][..],
                "has neither OS_AUTH_URL (Keystone) nor ST_AUTH (Swift v1 auth) nor \
                 OS_STORAGE_URL and OS_AUTH_TOKEN",
            ),
            (
                &[("OS_STORAGE_URL", "https://swift/v1/AUTH_x")][..],
                "but no OS_AUTH_TOKEN",
            ),
            (
                &[
                    ("OS_AUTH_URL", "https://keystone.example:5000"),
                    ("OS_USERNAME", "alice"),
                    ("OS_PASSWORD", "s3cr3t"),
                ][..],
                "has an OS_AUTH_URL whose path names no Keystone version: end it in /v3",
            ),
            (
                &[V3, ("OS_USERNAME", "alice"), ("OS_PASSWORD", "s3cr3t")][..],
                "has OS_USERNAME but neither OS_USER_DOMAIN_NAME nor OS_USER_DOMAIN_ID",
            ),
            (
                &[
                    V3,
                    ("OS_USER_DOMAIN_NAME", "Default"),
                    ("OS_PASSWORD", "s3cr3t"),
                ][..],
                "has OS_AUTH_URL (Swift Keystone v3 auth) but no OS_USERNAME or OS_USER_ID",
            ),
            (
                &[
                    V3,
                    ("OS_USERNAME", "alice"),
                    ("OS_USER_DOMAIN_NAME", "Default"),
                ][..],
                "but no OS_PASSWORD",
            ),
            (
                &[
                    V3,
                    ("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
                    ("OS_PASSWORD", "s3cr3t"),
                ][..],
                "has OS_APPLICATION_CREDENTIAL_ID but no OS_APPLICATION_CREDENTIAL_SECRET",
            ),
            (
                &[
                    V3,
                    ("OS_APPLICATION_CREDENTIAL_NAME", "coffer"),
                    ("OS_APPLICATION_CREDENTIAL_SECRET", "s3cr3t"),
                ][..],
                "but no OS_USERNAME or OS_USER_ID",
            ),
            (
                &[("ST_AUTH", "http://swift:8080/auth/v1.0"), ("ST_USER", "u")][..],
                "has ST_AUTH (Swift v1 auth) but no ST_KEY",
            ),
        ] {
            let m = err(swift(pairs));
            assert!(m.contains(expected), "{pairs:?}: {m}");
            assert!(
                !m.contains("s3cr3t") && !m.contains("keystone.example"),
                "{m}"
            );
        }
    }

    #[test]
    fn gcs_needs_a_key_unless_an_emulator_endpoint_is_given() {
        let mut spec = GcsSpec {
            bucket: "b".into(),
            ..Default::default()
        };
        let s = secret(&[("GOOGLE_PROJECT_ID", "p")]);
        let keys = Keys { secret: &s };
        assert!(err(gcs_config(&spec, &keys)).contains("GOOGLE_SERVICE_ACCOUNT_JSON_KEY"));
        spec.endpoint = Some("http://127.0.0.1:9023".into());
        assert_eq!(gcs_config(&spec, &keys).unwrap().service_account_json, None);
        let s = secret(&[("GOOGLE_SERVICE_ACCOUNT_JSON_KEY", "{\"type\":\"x\"}")]);
        let keys = Keys { secret: &s };
        assert_eq!(
            gcs_config(&spec, &keys)
                .unwrap()
                .service_account_json
                .as_deref(),
            Some("{\"type\":\"x\"}")
        );
    }

    #[test]
    fn rest_keeps_credentials_out_of_the_url() {
        let s = secret(&[("REST_SERVER_USERNAME", "u"), ("REST_SERVER_PASSWORD", "p")]);
        let keys = Keys { secret: &s };
        let spec = RestSpec {
            url: "https://u:p@host:8000/repo".into(),
        };
        assert!(err(rest_config(&spec, &keys)).contains("must not hold credentials"));
        let spec = RestSpec {
            url: "https://host:8000/repo".into(),
        };
        let c = rest_config(&spec, &keys).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(
            split_url("https://host:8000/a/b"),
            ("host:8000".into(), "/a/b".into())
        );
    }
}
