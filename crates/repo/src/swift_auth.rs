//! Logging in to OpenStack Swift: v1 auth (`ST_AUTH`) and Keystone v2.0 and v3
//! (`OS_AUTH_URL`). OpenDAL's Swift service takes only a storage URL and a token, so coffer
//! logs in itself and hands OpenDAL the result; `CloudStore` logs in again when the token
//! nears its expiry or Swift answers 401 (Keystone tokens last about an hour, a backup can
//! take longer).
//!
//! The requests follow the Keystone API and what restic (through ncw/swift) sends for the same
//! Secret keys, so a Secret that works for Stash works here: the version comes from the auth
//! URL (`…/v3`, `…/v2.0`, `…/auth/v1.0`), a v3 project named without a domain is looked up in
//! the user's domain and else in `Default`, and the object-store endpoint is the catalog's
//! public one, in `OS_REGION_NAME` when it is set, else the first.
//!
//! Every credential carries the name of the Secret key it came from, so that a refusal names
//! the key to fix; values never reach a message, a log or `Debug`.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::store::{StoreError, StoreResult};

/// A value from the storage Secret and the key it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Cred {
    pub key: &'static str,
    pub value: String,
}

impl Cred {
    pub fn new(key: &'static str, value: impl Into<String>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

impl std::fmt::Debug for Cred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the key: a password, a secret or even a user name stays out of logs.
        write!(f, "{}", self.key)
    }
}

/// A Keystone object (domain, project, v2 tenant) named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    Id(Cred),
    Name(Cred),
}

impl IdOrName {
    fn cred(&self) -> &Cred {
        match self {
            IdOrName::Id(c) | IdOrName::Name(c) => c,
        }
    }

    fn json(&self) -> Value {
        match self {
            IdOrName::Id(c) => json!({ "id": c.value }),
            IdOrName::Name(c) => json!({ "name": c.value }),
        }
    }
}

/// A Keystone v3 user: by id, which is unique, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3User {
    Id(Cred),
    Name { name: Cred, domain: IdOrName },
}

impl V3User {
    fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            V3User::Id(id) => {
                m.insert("id".into(), id.value.clone().into());
            }
            V3User::Name { name, domain } => {
                m.insert("name".into(), name.value.clone().into());
                m.insert("domain".into(), domain.json());
            }
        }
        m
    }

    fn keys(&self) -> Vec<&'static str> {
        match self {
            V3User::Id(id) => vec![id.key],
            V3User::Name { name, domain } => vec![name.key, domain.cred().key],
        }
    }
}

/// How a v3 login proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Identity {
    Password {
        user: V3User,
        password: Cred,
    },
    /// An application credential by id needs no user: the id is unique.
    ApplicationCredentialId {
        id: Cred,
        secret: Cred,
    },
    /// An application credential by name is unique only for its user.
    ApplicationCredentialName {
        name: Cred,
        user: V3User,
        secret: Cred,
    },
}

/// What a v3 token is for. Application credentials carry their own scope and take none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Scope {
    Trust(Cred),
    ProjectId(Cred),
    /// A project name is unique within a domain; `None` means Keystone's `Default` domain.
    ProjectName {
        name: Cred,
        domain: Option<IdOrName>,
    },
}

impl V3Scope {
    fn key(&self) -> &'static str {
        match self {
            V3Scope::Trust(c) | V3Scope::ProjectId(c) => c.key,
            V3Scope::ProjectName { name, .. } => name.key,
        }
    }
}

/// A way to obtain a storage URL and a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwiftLogin {
    /// Swift's own v1 auth (tempauth, swauth, Rackspace-style): GET with user and key headers.
    V1 { url: Cred, user: Cred, key: Cred },
    /// Keystone v2.0 with a password, scoped to a tenant.
    V2 {
        url: Cred,
        user: Cred,
        password: Cred,
        tenant: Option<IdOrName>,
        region: Option<Cred>,
    },
    /// Keystone v3.
    V3 {
        url: Cred,
        identity: V3Identity,
        scope: Option<V3Scope>,
        region: Option<Cred>,
    },
}

/// The Keystone or Swift auth API version an auth URL names in its path (`/v3`, `/v2.0`,
/// `/auth/v1.0`), as restic's Swift library decides it; `None` when the path names none.
pub fn auth_version(url: &str) -> Option<u8> {
    let path = url.split("://").nth(1).unwrap_or(url);
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').rev().find_map(|seg| {
        let s = seg.to_ascii_lowercase();
        let rest = s.strip_prefix('v')?;
        match rest.split('.').next()? {
            "1" => Some(1),
            "2" => Some(2),
            "3" => Some(3),
            _ => None,
        }
    })
}

/// A storage URL and token, and when the token expires (when the login said so).
#[derive(Clone)]
pub struct SwiftSession {
    pub storage_url: String,
    pub token: String,
    pub expires: Option<jiff::Timestamp>,
}

impl std::fmt::Debug for SwiftSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftSession")
            .field("storage_url", &self.storage_url)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// An HTTP request a login makes: method, URL, headers and JSON body.
#[derive(Debug)]
pub(crate) struct LoginRequest {
    pub url: String,
    /// `GET` with headers (v1) or `POST` with `body` (Keystone).
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// An HTTP answer, as much of it as a login reads.
pub(crate) struct LoginAnswer {
    pub status: u16,
    /// `X-Storage-Url`, `X-Auth-Token` (v1) and `X-Subject-Token` (v3), when present.
    pub storage_url: Option<String>,
    pub auth_token: Option<String>,
    pub subject_token: Option<String>,
    pub body: String,
}

impl SwiftLogin {
    pub fn auth_url(&self) -> &Cred {
        match self {
            SwiftLogin::V1 { url, .. }
            | SwiftLogin::V2 { url, .. }
            | SwiftLogin::V3 { url, .. } => url,
        }
    }

    fn region(&self) -> Option<&Cred> {
        match self {
            SwiftLogin::V1 { .. } => None,
            SwiftLogin::V2 { region, .. } | SwiftLogin::V3 { region, .. } => region.as_ref(),
        }
    }

    /// The Secret keys that prove who logs in, for the message when the service refuses them.
    pub fn credential_keys(&self) -> Vec<&'static str> {
        match self {
            SwiftLogin::V1 { user, key, .. } => vec![user.key, key.key],
            SwiftLogin::V2 {
                user,
                password,
                tenant,
                ..
            } => {
                let mut k = vec![user.key, password.key];
                k.extend(tenant.as_ref().map(|t| t.cred().key));
                k
            }
            SwiftLogin::V3 {
                identity, scope, ..
            } => {
                let mut k = match identity {
                    V3Identity::Password { user, password } => {
                        let mut k = user.keys();
                        k.push(password.key);
                        k
                    }
                    V3Identity::ApplicationCredentialId { id, secret } => vec![id.key, secret.key],
                    V3Identity::ApplicationCredentialName { name, user, secret } => {
                        let mut k = vec![name.key];
                        k.extend(user.keys());
                        k.push(secret.key);
                        k
                    }
                };
                k.extend(scope.as_ref().map(V3Scope::key));
                k
            }
        }
    }

    fn service(&self) -> &'static str {
        match self {
            SwiftLogin::V1 { .. } => "Swift v1 auth",
            SwiftLogin::V2 { .. } => "Keystone v2.0",
            SwiftLogin::V3 { .. } => "Keystone v3",
        }
    }

    pub(crate) fn request(&self) -> LoginRequest {
        let base = self.auth_url().value.trim_end_matches('/');
        match self {
            SwiftLogin::V1 { url, user, key } => LoginRequest {
                url: url.value.clone(),
                headers: vec![
                    ("X-Auth-User", user.value.clone()),
                    ("X-Auth-Key", key.value.clone()),
                ],
                body: None,
            },
            SwiftLogin::V2 {
                user,
                password,
                tenant,
                ..
            } => {
                let mut auth = json!({
                    "passwordCredentials": {"username": user.value, "password": password.value}
                });
                match tenant {
                    Some(IdOrName::Id(t)) => auth["tenantId"] = t.value.clone().into(),
                    Some(IdOrName::Name(t)) => auth["tenantName"] = t.value.clone().into(),
                    None => {}
                }
                LoginRequest {
                    url: format!("{base}/tokens"),
                    headers: vec![],
                    body: Some(json!({ "auth": auth })),
                }
            }
            SwiftLogin::V3 {
                identity, scope, ..
            } => LoginRequest {
                url: format!("{base}/auth/tokens"),
                headers: vec![],
                body: Some(v3_body(identity, scope.as_ref())),
            },
        }
    }

    /// Logs in: the storage URL and a token.
    pub fn login(&self) -> StoreResult<SwiftSession> {
        let req = self.request();
        let answer = send(&req).map_err(|e| {
            self.fail(format!(
                "cannot reach the {} URL {} ({}) ({e})",
                self.service(),
                self.auth_url().key,
                req.url
            ))
        })?;
        self.read_answer(answer)
    }

    fn fail(&self, message: String) -> StoreError {
        StoreError::Remote {
            location: format!("swift auth {}", self.auth_url().value),
            message,
        }
    }

    pub(crate) fn read_answer(&self, a: LoginAnswer) -> StoreResult<SwiftSession> {
        let keys = self.credential_keys().join(", ");
        match a.status {
            // Keystone answers 401 to a wrong password and to a user without a role on the
            // project alike; v1 auth answers 401 or 403.
            401 | 403 => {
                return Err(self.fail(format!(
                    "{} refused the login ({}): check {keys} in the storage Secret",
                    self.service(),
                    a.status
                )))
            }
            404 => {
                return Err(self.fail(format!(
                    "{} answered 404 at {}: is {} the identity URL with its version (e.g. \
                     https://keystone.example:5000/v3)?",
                    self.service(),
                    self.request().url,
                    self.auth_url().key
                )))
            }
            s if !(200..300).contains(&s) => {
                let short: String = a.body.chars().take(200).collect();
                return Err(self.fail(format!("{} answered {s}: {short}", self.service())));
            }
            _ => {}
        }
        match self {
            SwiftLogin::V1 { url, .. } => match (a.storage_url, a.auth_token) {
                (Some(storage_url), Some(token)) => Ok(SwiftSession {
                    storage_url,
                    token,
                    expires: None,
                }),
                _ => Err(self.fail(format!(
                    "the Swift login answered without X-Storage-Url and X-Auth-Token: is {} a \
                     v1 auth URL?",
                    url.key
                ))),
            },
            SwiftLogin::V2 { .. } => {
                let body: Value = serde_json::from_str(&a.body)
                    .map_err(|e| self.fail(format!("Keystone v2.0 answered no JSON ({e})")))?;
                let access = &body["access"];
                let token = access["token"]["id"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.fail("Keystone v2.0 answered without a token".into()))?;
                let endpoints = catalog_endpoints(&access["serviceCatalog"], |e| {
                    let url = e["publicURL"].as_str()?;
                    Some((
                        e["region"].as_str().unwrap_or("").to_string(),
                        url.to_string(),
                    ))
                });
                let storage_url = self.pick(endpoints)?;
                Ok(SwiftSession {
                    storage_url,
                    token: token.to_string(),
                    expires: timestamp(&access["token"]["expires"]),
                })
            }
            SwiftLogin::V3 { .. } => {
                let token = a.subject_token.ok_or_else(|| {
                    self.fail("Keystone v3 answered without an X-Subject-Token header".into())
                })?;
                let body: Value = serde_json::from_str(&a.body)
                    .map_err(|e| self.fail(format!("Keystone v3 answered no JSON ({e})")))?;
                let endpoints = catalog_endpoints(&body["token"]["catalog"], |e| {
                    if e["interface"].as_str() != Some("public") {
                        return None;
                    }
                    // `region` is the deprecated name of `region_id`; either may be set.
                    let region = e["region_id"]
                        .as_str()
                        .or_else(|| e["region"].as_str())
                        .unwrap_or("");
                    Some((region.to_string(), e["url"].as_str()?.to_string()))
                });
                let storage_url = self.pick(endpoints)?;
                Ok(SwiftSession {
                    storage_url,
                    token,
                    expires: timestamp(&body["token"]["expires_at"]),
                })
            }
        }
    }

    /// The public object-store endpoint in the region asked for, else the first one.
    fn pick(&self, endpoints: Option<Vec<(String, String)>>) -> StoreResult<String> {
        let Some(endpoints) = endpoints.filter(|e| !e.is_empty()) else {
            let scope = match self {
                SwiftLogin::V3 { scope: Some(s), .. } => format!(" ({})", s.key()),
                SwiftLogin::V2 {
                    tenant: Some(t), ..
                } => format!(" ({})", t.cred().key),
                _ => String::new(),
            };
            return Err(self.fail(format!(
                "the {} catalog has no public object-store endpoint: is Swift deployed, and is \
                 the login scoped to the project that holds the container{scope}?",
                self.service()
            )));
        };
        match self.region() {
            None => Ok(endpoints[0].1.clone()),
            Some(region) => endpoints
                .iter()
                .find(|(r, _)| r == &region.value)
                .map(|(_, url)| url.clone())
                .ok_or_else(|| {
                    let mut regions: Vec<&str> =
                        endpoints.iter().map(|(r, _)| r.as_str()).collect();
                    regions.dedup();
                    self.fail(format!(
                        "the {} catalog has no public object-store endpoint in region `{}` \
                         (it has {}): fix {}",
                        self.service(),
                        region.value,
                        regions.join(", "),
                        region.key
                    ))
                }),
        }
    }
}

/// The endpoints of the catalog's `object-store` services, as (region, URL); `None` when the
/// catalog has no object-store service.
fn catalog_endpoints(
    catalog: &Value,
    endpoint: impl Fn(&Value) -> Option<(String, String)>,
) -> Option<Vec<(String, String)>> {
    let services: Vec<&Value> = catalog
        .as_array()?
        .iter()
        .filter(|s| s["type"].as_str() == Some("object-store"))
        .collect();
    if services.is_empty() {
        return None;
    }
    Some(
        services
            .iter()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .filter_map(&endpoint)
            .collect(),
    )
}

fn timestamp(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// The body of a Keystone v3 `POST /auth/tokens`.
pub(crate) fn v3_body(identity: &V3Identity, scope: Option<&V3Scope>) -> Value {
    let (method, proof) = match identity {
        V3Identity::Password { user, password } => {
            let mut u = user.json();
            u.insert("password".into(), password.value.clone().into());
            ("password", json!({ "user": u }))
        }
        V3Identity::ApplicationCredentialId { id, secret } => (
            "application_credential",
            json!({ "id": id.value, "secret": secret.value }),
        ),
        V3Identity::ApplicationCredentialName { name, user, secret } => (
            "application_credential",
            json!({ "name": name.value, "user": user.json(), "secret": secret.value }),
        ),
    };
    let mut identity = Map::new();
    identity.insert("methods".into(), json!([method]));
    identity.insert(method.into(), proof);
    let mut auth = json!({ "identity": identity });
    let app_credential = method == "application_credential";
    match scope {
        // An application credential is scoped already; Keystone refuses a second scope.
        _ if app_credential => {}
        None => {}
        Some(V3Scope::Trust(t)) => auth["scope"] = json!({ "OS-TRUST:trust": { "id": t.value } }),
        Some(V3Scope::ProjectId(p)) => auth["scope"] = json!({ "project": { "id": p.value } }),
        Some(V3Scope::ProjectName { name, domain }) => {
            let domain = domain
                .as_ref()
                .map(IdOrName::json)
                .unwrap_or_else(|| json!({ "name": "Default" }));
            auth["scope"] = json!({ "project": { "name": name.value, "domain": domain } });
        }
    }
    json!({ "auth": auth })
}

fn send(req: &LoginRequest) -> Result<LoginAnswer, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    let mut r = match &req.body {
        Some(body) => client
            .post(&req.url)
            .header("Content-Type", "application/json")
            .body(body.to_string()),
        None => client.get(&req.url),
    };
    for (k, v) in &req.headers {
        r = r.header(*k, v);
    }
    // reqwest's error names the URL, never the headers or the body.
    let r = r.send().map_err(|e| e.without_url().to_string())?;
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let status = r.status().as_u16();
    let storage_url = header("x-storage-url");
    let auth_token = header("x-auth-token");
    let subject_token = header("x-subject-token");
    let body = r.text().unwrap_or_default();
    Ok(LoginAnswer {
        status,
        storage_url,
        auth_token,
        subject_token,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::login_tests::{fake, fake_with};

    fn c(key: &'static str, value: &str) -> Cred {
        Cred::new(key, value)
    }

    fn v3(identity: V3Identity, scope: Option<V3Scope>, region: Option<&str>) -> SwiftLogin {
        SwiftLogin::V3 {
            url: c("OS_AUTH_URL", "https://keystone.example:5000/v3/"),
            identity,
            scope,
            region: region.map(|r| c("OS_REGION_NAME", r)),
        }
    }

    fn user_by_name() -> V3User {
        V3User::Name {
            name: c("OS_USERNAME", "alice"),
            domain: IdOrName::Name(c("OS_USER_DOMAIN_NAME", "Users")),
        }
    }

    fn password() -> V3Identity {
        V3Identity::Password {
            user: user_by_name(),
            password: c("OS_PASSWORD", "s3cr3t-pw"),
        }
    }

    #[test]
    fn the_version_is_read_from_the_auth_url_path() {
        for (url, v) in [
            ("https://keystone.example:5000/v3", Some(3)),
            ("https://keystone.example:5000/v3/", Some(3)),
            ("https://identity.api.rackspacecloud.com/v2.0", Some(2)),
            ("https://auth.example/identity/v2.0/", Some(2)),
            ("http://127.0.0.1:8080/auth/v1.0", Some(1)),
            ("https://keystone.example:5000", None),
            ("https://keystone.example:5000/", None),
            // A host name is not a path: only path segments count.
            ("https://v3.keystone.example/", None),
            ("https://auth.example/vault", None),
        ] {
            assert_eq!(auth_version(url), v, "{url}");
        }
    }

    #[test]
    fn v3_password_bodies_name_the_user_and_scope_as_keystone_expects() {
        let req = v3(
            password(),
            Some(V3Scope::ProjectName {
                name: c("OS_PROJECT_NAME", "backups"),
                domain: Some(IdOrName::Name(c("OS_PROJECT_DOMAIN_NAME", "Projects"))),
            }),
            None,
        )
        .request();
        // The trailing slash of the auth URL is not doubled.
        assert_eq!(req.url, "https://keystone.example:5000/v3/auth/tokens");
        assert!(req.headers.is_empty());
        assert_eq!(
            req.body.unwrap(),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "alice", "domain": {"name": "Users"}, "password": "s3cr3t-pw"}}},
                "scope": {"project": {"name": "backups", "domain": {"name": "Projects"}}}
            }})
        );
        // By ids; a project named without a domain is in `Default`; a trust.
        let by_id = V3Identity::Password {
            user: V3User::Id(c("OS_USER_ID", "u-1")),
            password: c("OS_PASSWORD", "pw"),
        };
        for (scope, expected) in [
            (
                Some(V3Scope::ProjectId(c("OS_TENANT_ID", "p-1"))),
                Some(json!({"project": {"id": "p-1"}})),
            ),
            (
                Some(V3Scope::ProjectName {
                    name: c("OS_PROJECT_NAME", "backups"),
                    domain: None,
                }),
                Some(json!({"project": {"name": "backups", "domain": {"name": "Default"}}})),
            ),
            (
                Some(V3Scope::ProjectName {
                    name: c("OS_PROJECT_NAME", "backups"),
                    domain: Some(IdOrName::Id(c("OS_PROJECT_DOMAIN_ID", "d-9"))),
                }),
                Some(json!({"project": {"name": "backups", "domain": {"id": "d-9"}}})),
            ),
            (
                Some(V3Scope::Trust(c("OS_TRUST_ID", "t-1"))),
                Some(json!({"OS-TRUST:trust": {"id": "t-1"}})),
            ),
            (None, None),
        ] {
            let body = v3(by_id.clone(), scope, None).request().body.unwrap();
            assert_eq!(
                body["auth"]["identity"],
                json!({"methods": ["password"], "password": {"user": {"id": "u-1", "password": "pw"}}})
            );
            assert_eq!(body["auth"].get("scope"), expected.as_ref());
        }
    }

    #[test]
    fn v3_application_credentials_carry_no_scope() {
        let scope = Some(V3Scope::ProjectId(c("OS_TENANT_ID", "p-1")));
        let body = v3(
            V3Identity::ApplicationCredentialId {
                id: c("OS_APPLICATION_CREDENTIAL_ID", "ac-1"),
                secret: c("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
            },
            scope.clone(),
            None,
        )
        .request()
        .body
        .unwrap();
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "ac-1", "secret": "acs"}}}})
        );
        let body = v3(
            V3Identity::ApplicationCredentialName {
                name: c("OS_APPLICATION_CREDENTIAL_NAME", "coffer"),
                user: user_by_name(),
                secret: c("OS_APPLICATION_CREDENTIAL_SECRET", "acs"),
            },
            scope,
            None,
        )
        .request()
        .body
        .unwrap();
        assert_eq!(
            body,
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "coffer", "secret": "acs",
                    "user": {"name": "alice", "domain": {"name": "Users"}}}}}})
        );
    }

    #[test]
    fn v2_and_v1_requests() {
        let v2 = |tenant| SwiftLogin::V2 {
            url: c("OS_AUTH_URL", "https://auth.example/v2.0"),
            user: c("OS_USERNAME", "alice"),
            password: c("OS_PASSWORD", "pw"),
            tenant,
            region: None,
        };
        let req = v2(Some(IdOrName::Name(c("OS_TENANT_NAME", "backups")))).request();
        assert_eq!(req.url, "https://auth.example/v2.0/tokens");
        assert_eq!(
            req.body.unwrap(),
            json!({"auth": {"passwordCredentials": {"username": "alice", "password": "pw"},
                "tenantName": "backups"}})
        );
        let body = v2(Some(IdOrName::Id(c("OS_TENANT_ID", "t-1"))))
            .request()
            .body
            .unwrap();
        assert_eq!(body["auth"]["tenantId"], "t-1");
        assert!(body["auth"].get("tenantName").is_none());
        assert!(v2(None).request().body.unwrap()["auth"]
            .get("tenantId")
            .is_none());
        let v1 = SwiftLogin::V1 {
            url: c("ST_AUTH", "http://swift.example/auth/v1.0"),
            user: c("ST_USER", "acct:user"),
            key: c("ST_KEY", "k"),
        }
        .request();
        assert_eq!(v1.url, "http://swift.example/auth/v1.0");
        assert!(v1.body.is_none());
        assert_eq!(
            v1.headers,
            vec![
                ("X-Auth-User", "acct:user".to_string()),
                ("X-Auth-Key", "k".to_string())
            ]
        );
    }

    /// A Keystone v3 token body whose catalog has Swift in two regions (and an internal
    /// endpoint, which is not for coffer) besides the identity service.
    fn v3_catalog(swift: &str) -> String {
        json!({"token": {
            "expires_at": "2030-01-02T03:04:05.000000Z",
            "catalog": [
                {"type": "identity", "endpoints": [
                    {"interface": "public", "region_id": "RegionOne", "url": "https://keystone/v3"}]},
                {"type": "object-store", "endpoints": [
                    {"interface": "internal", "region_id": "RegionTwo", "url": "http://10.0.0.1/v1/AUTH_p"},
                    {"interface": "public", "region_id": "RegionOne", "region": "RegionOne",
                     "url": format!("{swift}/one/v1/AUTH_p")},
                    {"interface": "public", "region": "RegionTwo",
                     "url": format!("{swift}/two/v1/AUTH_p")}]}
            ]}})
        .to_string()
    }

    fn answer(status: u16, subject: Option<&str>, body: &str) -> LoginAnswer {
        LoginAnswer {
            status,
            storage_url: None,
            auth_token: None,
            subject_token: subject.map(str::to_string),
            body: body.into(),
        }
    }

    #[test]
    fn v3_login_posts_the_body_and_reads_token_and_catalog() {
        let (base, h) = fake_with(vec![(
            201,
            "X-Subject-Token: tok-v3\r\n".into(),
            v3_catalog("https://swift"),
        )]);
        let login = SwiftLogin::V3 {
            url: c("OS_AUTH_URL", &format!("{base}/v3")),
            identity: password(),
            scope: Some(V3Scope::ProjectId(c("OS_TENANT_ID", "p-1"))),
            region: Some(c("OS_REGION_NAME", "RegionTwo")),
        };
        let s = login.login().unwrap();
        assert_eq!(s.storage_url, "https://swift/two/v1/AUTH_p");
        assert_eq!(s.token, "tok-v3");
        assert_eq!(
            s.expires,
            Some("2030-01-02T03:04:05Z".parse::<jiff::Timestamp>().unwrap())
        );
        assert!(
            !format!("{s:?}").contains("tok-v3"),
            "Debug hides the token"
        );
        let seen = &h.join().unwrap()[0];
        assert!(seen.starts_with("POST /v3/auth/tokens "), "{seen}");
        assert!(
            seen.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{seen}"
        );
        let body: Value = serde_json::from_str(seen.split_once("\n\n").unwrap().1).unwrap();
        assert_eq!(body, v3_body(&password(), login_scope(&login)));
    }

    fn login_scope(l: &SwiftLogin) -> Option<&V3Scope> {
        match l {
            SwiftLogin::V3 { scope, .. } => scope.as_ref(),
            _ => None,
        }
    }

    #[test]
    fn the_catalog_gives_the_first_public_endpoint_or_the_one_in_the_region() {
        let any = v3(password(), None, None);
        let s = any
            .read_answer(answer(201, Some("t"), &v3_catalog("https://s")))
            .unwrap();
        assert_eq!(s.storage_url, "https://s/one/v1/AUTH_p");
        let one = v3(password(), None, Some("RegionOne"));
        let s = one
            .read_answer(answer(201, Some("t"), &v3_catalog("https://s")))
            .unwrap();
        assert_eq!(s.storage_url, "https://s/one/v1/AUTH_p");
    }

    #[test]
    fn refusals_name_the_keys_to_fix_and_never_a_secret() {
        let scoped = v3(
            password(),
            Some(V3Scope::ProjectName {
                name: c("OS_PROJECT_NAME", "backups"),
                domain: None,
            }),
            Some("RegionThree"),
        );
        let msg = |r: StoreResult<SwiftSession>| {
            let m = r.unwrap_err().to_string();
            assert!(!m.contains("s3cr3t-pw"), "{m}");
            m
        };
        // A region the catalog does not have.
        let m = msg(scoped.read_answer(answer(201, Some("t"), &v3_catalog("https://s"))));
        assert!(m.contains("region `RegionThree`"), "{m}");
        assert!(m.contains("RegionOne, RegionTwo"), "{m}");
        assert!(m.contains("fix OS_REGION_NAME"), "{m}");
        // No object store in the catalog at all (an unscoped token has an empty one).
        let m = msg(scoped.read_answer(answer(
            201,
            Some("t"),
            r#"{"token":{"catalog":[{"type":"identity","endpoints":[]}]}}"#,
        )));
        assert!(m.contains("no public object-store endpoint"), "{m}");
        assert!(m.contains("OS_PROJECT_NAME"), "{m}");
        // A wrong password or user: Keystone answers 401.
        let m = msg(scoped.read_answer(answer(
            401,
            None,
            r#"{"error":{"code":401,"message":"The request you have made requires authentication."}}"#,
        )));
        assert!(
            m.contains(
                "check OS_USERNAME, OS_USER_DOMAIN_NAME, OS_PASSWORD, OS_PROJECT_NAME in the \
                 storage Secret"
            ),
            "{m}"
        );
        // A URL that is not Keystone's token API.
        let m = msg(scoped.read_answer(answer(404, None, "")));
        assert!(m.contains("is OS_AUTH_URL the identity URL"), "{m}");
        // No token header.
        let m = msg(scoped.read_answer(answer(201, None, &v3_catalog("https://s"))));
        assert!(m.contains("X-Subject-Token"), "{m}");
        // An application credential's refusal names its keys.
        let app = v3(
            V3Identity::ApplicationCredentialId {
                id: c("OS_APPLICATION_CREDENTIAL_ID", "ac"),
                secret: c("OS_APPLICATION_CREDENTIAL_SECRET", "s3cr3t-pw"),
            },
            None,
            None,
        );
        let m = msg(app.read_answer(answer(401, None, "")));
        assert!(
            m.contains("check OS_APPLICATION_CREDENTIAL_ID, OS_APPLICATION_CREDENTIAL_SECRET"),
            "{m}"
        );
        // Nothing listening.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/v3", l.local_addr().unwrap())
        };
        let m = msg(SwiftLogin::V3 {
            url: c("OS_AUTH_URL", &dead),
            identity: password(),
            scope: None,
            region: None,
        }
        .login());
        assert!(
            m.contains("cannot reach the Keystone v3 URL OS_AUTH_URL"),
            "{m}"
        );
    }

    #[test]
    fn v2_login_reads_token_and_catalog_from_the_body() {
        let body = json!({"access": {
            "token": {"id": "tok-v2", "expires": "2030-01-02T03:04:05Z"},
            "serviceCatalog": [
                {"type": "compute", "endpoints": [{"region": "LON", "publicURL": "https://nova"}]},
                {"type": "object-store", "endpoints": [
                    {"region": "ORD", "publicURL": "https://ord/v1/AUTH_t", "internalURL": "http://snet"},
                    {"region": "LON", "publicURL": "https://lon/v1/AUTH_t"}]}
            ]}})
        .to_string();
        let (base, h) = fake(vec![(200, body), (401, "{}".into())]);
        let login = SwiftLogin::V2 {
            url: c("OS_AUTH_URL", &format!("{base}/v2.0")),
            user: c("OS_USERNAME", "alice"),
            password: c("OS_PASSWORD", "s3cr3t-pw"),
            tenant: Some(IdOrName::Name(c("OS_TENANT_NAME", "backups"))),
            region: Some(c("OS_REGION_NAME", "LON")),
        };
        let s = login.login().unwrap();
        assert_eq!(
            (s.storage_url.as_str(), s.token.as_str()),
            ("https://lon/v1/AUTH_t", "tok-v2")
        );
        assert!(s.expires.is_some());
        let e = login.login().unwrap_err().to_string();
        assert!(
            e.contains("Keystone v2.0 refused the login (401): check OS_USERNAME, OS_PASSWORD, OS_TENANT_NAME"),
            "{e}"
        );
        let seen = h.join().unwrap();
        assert!(seen[0].starts_with("POST /v2.0/tokens "), "{}", seen[0]);
        assert!(seen[0].contains(r#""tenantName":"backups""#), "{}", seen[0]);
    }

    #[test]
    fn v1_login_returns_the_storage_url_and_token() {
        let (auth, h) = fake_with(vec![
            (
                200,
                "X-Storage-Url: https://swift.example/v1/AUTH_t\r\nX-Auth-Token: tk\r\n".into(),
                String::new(),
            ),
            (401, String::new(), String::new()),
        ]);
        let login = |key: &str| SwiftLogin::V1 {
            url: c("ST_AUTH", &format!("{auth}/auth/v1.0")),
            user: c("ST_USER", "acct:user"),
            key: c("ST_KEY", key),
        };
        let s = login("k").login().unwrap();
        assert_eq!(
            (s.storage_url.as_str(), s.token.as_str(), s.expires),
            ("https://swift.example/v1/AUTH_t", "tk", None)
        );
        let e = login("bad").login().unwrap_err().to_string();
        assert!(e.contains("check ST_USER, ST_KEY"), "{e}");
        let seen = h.join().unwrap();
        assert!(seen[0].starts_with("GET /auth/v1.0"), "{}", seen[0]);
        let lower = seen[0].to_ascii_lowercase();
        assert!(lower.contains("x-auth-user: acct:user") && lower.contains("x-auth-key: k"));
    }
}
