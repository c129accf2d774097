//! `appcatalog.appscode.com/v1alpha1` AppBinding: how to reach a database.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::LocalObjectRef;

pub type AppBinding = crate::Object<AppBindingSpec, serde_json::Value>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppBindingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub client_config: ClientConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_transforms: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<LocalObjectRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// Read with any password in it masked: coffer takes credentials from the AppBinding's
    /// Secret only, so a `user:password@` here is never used, and masking it as it is read
    /// keeps it out of the store, `get -o yaml`, `describe`, errors and logs alike.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "masked_url"
    )]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// PEM CA bundle, base64-encoded (as in Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Stash's GaleraArbitratorConfiguration inside `spec.parameters`: a non-empty `group` makes
/// the target a Galera cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GaleraParameters {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub sst_method: String,
}

/// Where an AppBinding says its server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl AppBindingSpec {
    pub fn galera(&self) -> Option<GaleraParameters> {
        let p: GaleraParameters = serde_json::from_value(self.parameters.clone()?).ok()?;
        (!p.group.is_empty()).then_some(p)
    }

    /// Host and port from `clientConfig.url` (`mysql://h:p/`, `tcp(h:p)/`, `h:p`) or
    /// `clientConfig.service` (`<name>` as a host name; port default 3306).
    pub fn endpoint(&self, namespace: &str) -> Result<Endpoint, String> {
        let _ = namespace;
        if let Some(url) = self.client_config.url.as_deref().filter(|u| !u.is_empty()) {
            return parse_url(url);
        }
        if let Some(svc) = &self.client_config.service {
            if svc.name.is_empty() {
                return Err("spec.clientConfig.service.name is empty".into());
            }
            let port = svc.port.unwrap_or(3306);
            let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("spec.clientConfig.service.port {port} is not a TCP port")
            })?;
            return Ok(Endpoint {
                host: svc.name.clone(),
                port,
            });
        }
        Err("spec.clientConfig needs `url` or `service`".into())
    }
}

fn masked_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|u| redact_url(&u)))
}

/// The URL with the password of its `user:password@` part replaced by `***`, in both the
/// `scheme://user:pw@host` and the DSN `user:pw@tcp(host)` forms.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    // The userinfo ends at the last `@` before the host, the DSN's `tcp(` or the query (a
    // password may hold `@` or `/`).
    let host_start = url[start..]
        .find("tcp(")
        .or_else(|| url[start..].find(['?', '#']))
        .map(|i| start + i)
        .unwrap_or(url.len());
    let Some(at) = url[start..host_start].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &url[..start + colon], &url[at..]),
        None => url.to_string(),
    }
}

/// Parses the URL forms a MySQL AppBinding carries.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        format!(
            "spec.clientConfig.url `{url}` {why}; expected `mysql://HOST:PORT/` or `tcp(HOST:PORT)/`"
        )
    };
    let mut rest = url.trim();
    // DSN forms: user@tcp(host:port)/db?params — credentials never come from here.
    if let Some(i) = rest.find("tcp(") {
        let after = &rest[i + 4..];
        let end = after.find(')').ok_or_else(|| bad("has no closing `)`"))?;
        return split_host_port(&after[..end]).map_err(|e| bad(&e));
    }
    for scheme in ["mysql://", "mariadb://", "tcp://"] {
        if let Some(r) = rest.strip_prefix(scheme) {
            rest = r;
            break;
        }
    }
    if rest.contains("://") {
        return Err(bad("has an unsupported scheme"));
    }
    if let Some(at) = rest.rfind('@') {
        rest = &rest[at + 1..];
    }
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    split_host_port(hostport).map_err(|e| bad(&e))
}

fn split_host_port(s: &str) -> Result<Endpoint, String> {
    if s.is_empty() {
        return Err("has no host".into());
    }
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let end = r.find(']').ok_or("has an unclosed IPv6 bracket")?;
        let host = &r[..end];
        let port = r[end + 1..].strip_prefix(':');
        (host.to_string(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 3306,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("has an invalid port `{p}`"))?,
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(Endpoint { host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let e = |h: &str, p| Endpoint {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_url("mysql://127.0.0.1:3307/").unwrap(),
            e("127.0.0.1", 3307)
        );
        assert_eq!(
            parse_url("tcp(db.example:3310)/").unwrap(),
            e("db.example", 3310)
        );
        assert_eq!(
            parse_url("root@tcp(db:3310)/mysql?tls=true").unwrap(),
            e("db", 3310)
        );
        assert_eq!(parse_url("mysql://db/").unwrap(), e("db", 3306));
        assert_eq!(parse_url("mysql://u@[::1]:3400/x").unwrap(), e("::1", 3400));
        assert!(parse_url("mysql://db:notaport/")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("http://db:1/")
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(parse_url("tcp(db:1/").unwrap_err().contains("closing"));
    }

    #[test]
    fn url_passwords_are_masked() {
        for (url, want) in [
            ("mysql://root:s3cr3t@db:3306/", "mysql://root:***@db:3306/"),
            (
                "mysql://root:p@ss/w:rd@db:3306/x",
                "mysql://root:***@db:3306/x",
            ),
            (
                "root:s3cr3t@tcp(db:3306)/mysql",
                "root:***@tcp(db:3306)/mysql",
            ),
            ("mysql://root@db:3306/", "mysql://root@db:3306/"),
            ("mysql://db:3306/", "mysql://db:3306/"),
            ("tcp(db:3306)/", "tcp(db:3306)/"),
            ("mysql://db:3306/?ssl-ca=a@b", "mysql://db:3306/?ssl-ca=a@b"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let spec: AppBindingSpec = serde_json::from_value(serde_json::json!({
            "clientConfig": {"url": "mysql://root:s3cr3t@db:3306/"}
        }))
        .unwrap();
        let shown = serde_json::to_string(&spec).unwrap();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(spec.endpoint("x").unwrap().port, 3306);
    }
}
