//! Repositories in cloud object stores — S3, Azure Blob, Google Cloud Storage, Backblaze B2 and
//! OpenStack Swift — through OpenDAL's services.
//!
//! OpenDAL is what rustic's own backends build on: each protocol's signing, pagination and
//! retries are kept by that project, so coffer writes only the mapping from Stash's
//! Repository and Secret to a service, and the translation of failures into messages that
//! name the backend, the bucket or container, and what to fix.

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;

use crate::store::{ObjectStore, StoreError, StoreResult};

/// What a store is, for messages: which backend, which bucket or container, where, and which
/// Secret keys carry its credentials.
#[derive(Debug, Clone)]
struct Target {
    /// Stash's name of the backend: `s3`, `azure`, `gcs`, `b2`, `swift`.
    backend: &'static str,
    /// The service's name for people: `S3`, `Azure Blob`, `GCS`, `B2`, `Swift`.
    service: &'static str,
    /// `bucket` or `container`.
    noun: &'static str,
    name: String,
    endpoint: String,
    /// The Secret keys to check when the service refuses the credentials.
    credentials: &'static str,
    /// Texts in a service's error that mean the bucket or container itself is missing.
    missing: &'static [&'static str],
}

impl Target {
    fn field(&self) -> String {
        format!("spec.backend.{}.{}", self.backend, self.noun)
    }
}

/// A repository under a prefix of a bucket or container, through one OpenDAL service.
pub struct CloudStore {
    op: opendal::blocking::Operator,
    location: String,
    target: Target,
}

/// Where an S3 repository lives and how to sign requests to it.
#[derive(Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// An Azure Blob container. `endpoint` is the Blob service URL without the container
/// (`https://<account>.blob.core.windows.net` unless given: Azurite, sovereign clouds).
#[derive(Clone)]
pub struct AzureConfig {
    pub endpoint: Option<String>,
    pub container: String,
    pub prefix: String,
    pub account_name: String,
    pub account_key: Option<String>,
    pub sas_token: Option<String>,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("endpoint", &self.endpoint)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("account_name", &self.account_name)
            .finish_non_exhaustive()
    }
}

impl AzureConfig {
    pub fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) if !e.is_empty() => e.trim_end_matches('/').to_string(),
            _ => format!("https://{}.blob.core.windows.net", self.account_name),
        }
    }
}

/// A Google Cloud Storage bucket. Without a service account key the requests are not signed,
/// which only an emulator or a public bucket accepts.
#[derive(Clone)]
pub struct GcsConfig {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub prefix: String,
    /// The service account key, as JSON (Stash's `GOOGLE_SERVICE_ACCOUNT_JSON_KEY`).
    pub service_account_json: Option<String>,
}

impl std::fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl GcsConfig {
    pub fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) if !e.is_empty() => e.trim_end_matches('/').to_string(),
            _ => "https://storage.googleapis.com".to_string(),
        }
    }
}

/// A Backblaze B2 bucket. OpenDAL addresses a bucket by its id as well as its name.
#[derive(Clone)]
pub struct B2Config {
    pub bucket: String,
    pub bucket_id: String,
    pub prefix: String,
    pub account_id: String,
    pub account_key: String,
}

impl std::fmt::Debug for B2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2Config")
            .field("bucket", &self.bucket)
            .field("bucket_id", &self.bucket_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An OpenStack Swift container reached with a storage URL and a token (OpenDAL's Swift
/// service does not authenticate by itself).
#[derive(Clone)]
pub struct SwiftConfig {
    pub storage_url: String,
    pub token: String,
    pub container: String,
    pub prefix: String,
}

impl std::fmt::Debug for SwiftConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftConfig")
            .field("storage_url", &self.storage_url)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// opendal is async inside; its blocking facade needs a runtime to drive requests.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("coffer-store")
            .enable_all()
            .build()
            .expect("cannot start the object store client runtime")
    })
}

/// Every file of a repository is opaque bytes. Saying so also keeps GCS servers that echo a
/// missing content type as `null` from breaking the upload's answer.
const OCTET_STREAM: &str = "application/octet-stream";

fn root_of(prefix: &str) -> String {
    format!("/{}", prefix.trim_matches('/'))
}

fn join_prefix(bucket: &str, prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        bucket.to_string()
    } else {
        format!("{bucket}/{p}")
    }
}

/// restic's notation for a repository in a bucket: `<backend>:<bucket>:/<prefix>`.
fn restic_location(backend: &str, bucket: &str, prefix: &str) -> String {
    format!("{backend}:{bucket}:/{}", prefix.trim_matches('/'))
}

impl CloudStore {
    pub fn s3(cfg: &S3Config) -> StoreResult<Self> {
        let location = format!(
            "s3:{}/{}",
            cfg.endpoint.trim_end_matches('/'),
            join_prefix(&cfg.bucket, &cfg.prefix)
        );
        let region = if cfg.region.is_empty() {
            // SigV4 needs a region; most S3-compatible servers accept us-east-1.
            "us-east-1"
        } else {
            &cfg.region
        };
        let mut builder = opendal::services::S3::default()
            .root(&root_of(&cfg.prefix))
            .bucket(&cfg.bucket)
            .endpoint(&cfg.endpoint)
            .region(region)
            .access_key_id(&cfg.access_key_id)
            .secret_access_key(&cfg.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(t) = &cfg.session_token {
            builder = builder.session_token(t);
        }
        let target = Target {
            backend: "s3",
            service: "S3",
            noun: "bucket",
            name: cfg.bucket.clone(),
            endpoint: cfg.endpoint.clone(),
            credentials: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the storage Secret and \
                          spec.backend.s3.region",
            missing: &["NoSuchBucket"],
        };
        Self::build(builder, location, target)
    }

    pub fn azure(cfg: &AzureConfig) -> StoreResult<Self> {
        let endpoint = cfg.endpoint();
        let target = Target {
            backend: "azure",
            service: "Azure Blob",
            noun: "container",
            name: cfg.container.clone(),
            endpoint: endpoint.clone(),
            credentials: "AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY (or AZURE_ACCOUNT_SAS) in the \
                          storage Secret",
            missing: &["ContainerNotFound"],
        };
        let location = restic_location("azure", &cfg.container, &cfg.prefix);
        let mut builder = opendal::services::Azblob::default()
            .root(&root_of(&cfg.prefix))
            .container(&cfg.container)
            .endpoint(&endpoint)
            .account_name(&cfg.account_name);
        match (&cfg.account_key, &cfg.sas_token) {
            (Some(k), _) if !k.is_empty() => builder = builder.account_key(k),
            (_, Some(t)) if !t.is_empty() => builder = builder.sas_token(t),
            _ => {
                return Err(StoreError::Remote {
                    location,
                    message: "the storage Secret has neither AZURE_ACCOUNT_KEY nor \
                              AZURE_ACCOUNT_SAS: add the storage account's key"
                        .into(),
                })
            }
        }
        Self::build(builder, location, target)
    }

    pub fn gcs(cfg: &GcsConfig) -> StoreResult<Self> {
        use base64::Engine as _;
        let endpoint = cfg.endpoint();
        let target = Target {
            backend: "gcs",
            service: "GCS",
            noun: "bucket",
            name: cfg.bucket.clone(),
            endpoint: endpoint.clone(),
            credentials: "GOOGLE_SERVICE_ACCOUNT_JSON_KEY and GOOGLE_PROJECT_ID in the storage \
                          Secret (the service account needs roles/storage.objectAdmin on the \
                          bucket)",
            missing: &["bucket does not exist", "No such bucket", "NoSuchBucket"],
        };
        let location = restic_location("gs", &cfg.bucket, &cfg.prefix);
        let mut builder = opendal::services::Gcs::default()
            .root(&root_of(&cfg.prefix))
            .bucket(&cfg.bucket)
            .endpoint(&endpoint)
            .disable_config_load()
            .disable_vm_metadata();
        match &cfg.service_account_json {
            Some(json) if !json.trim().is_empty() => {
                if serde_json::from_str::<serde_json::Value>(json).is_err() {
                    return Err(StoreError::Remote {
                        location,
                        message: "GOOGLE_SERVICE_ACCOUNT_JSON_KEY in the storage Secret is not \
                                  JSON: put the service account's key file there as it was \
                                  downloaded"
                            .into(),
                    });
                }
                let b64 = base64::engine::general_purpose::STANDARD.encode(json.trim());
                builder = builder.credential(&b64);
            }
            _ => builder = builder.skip_signature(),
        }
        Self::build(builder, location, target)
    }

    pub fn b2(cfg: &B2Config) -> StoreResult<Self> {
        let target = Target {
            backend: "b2",
            service: "B2",
            noun: "bucket",
            name: cfg.bucket.clone(),
            endpoint: "https://api.backblazeb2.com".into(),
            credentials: "B2_ACCOUNT_ID and B2_ACCOUNT_KEY in the storage Secret (an application \
                          key allowed to read and write the bucket)",
            missing: &["bad_bucket_id", "bucket_missing"],
        };
        let location = restic_location("b2", &cfg.bucket, &cfg.prefix);
        let builder = opendal::services::B2::default()
            .root(&root_of(&cfg.prefix))
            .bucket(&cfg.bucket)
            .bucket_id(&cfg.bucket_id)
            .application_key_id(&cfg.account_id)
            .application_key(&cfg.account_key);
        Self::build(builder, location, target)
    }

    pub fn swift(cfg: &SwiftConfig) -> StoreResult<Self> {
        let target = Target {
            backend: "swift",
            service: "Swift",
            noun: "container",
            name: cfg.container.clone(),
            endpoint: cfg.storage_url.clone(),
            credentials: "OS_STORAGE_URL and OS_AUTH_TOKEN in the storage Secret (the token may \
                          have expired)",
            missing: &[],
        };
        let location = restic_location("swift", &cfg.container, &cfg.prefix);
        let builder = opendal::services::Swift::default()
            .root(&root_of(&cfg.prefix))
            .endpoint(&cfg.storage_url)
            .container(&cfg.container)
            .token(&cfg.token);
        Self::build(builder, location, target)
    }

    fn build(
        builder: impl opendal::Builder,
        location: String,
        target: Target,
    ) -> StoreResult<Self> {
        // Without opendal's auto-registration feature, the HTTP transport is installed here.
        opendal::install_default();
        let err = |e: opendal::Error| StoreError::Remote {
            location: location.clone(),
            message: format!("invalid {} configuration: {}", target.backend, e.message()),
        };
        let op = opendal::Operator::new(builder)
            .map_err(err)?
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(4)
                    .with_min_delay(Duration::from_millis(200))
                    .with_jitter(),
            )
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(60)),
            );
        let _guard = runtime().enter();
        let op = opendal::blocking::Operator::new(op).map_err(err)?;
        Ok(Self {
            op,
            location,
            target,
        })
    }

    fn container_missing(&self, e: &opendal::Error) -> bool {
        let full = format!("{e:?}");
        self.target.missing.iter().any(|m| full.contains(m))
    }

    fn err(&self, what: &str, key: &str, e: opendal::Error) -> StoreError {
        if e.kind() == opendal::ErrorKind::NotFound {
            if self.container_missing(&e) {
                return self.no_container();
            }
            return StoreError::NotFound {
                location: self.location.clone(),
                key: key.to_string(),
            };
        }
        StoreError::Remote {
            location: self.location.clone(),
            message: format!("cannot {what} `{key}`: {}", self.explain(&e)),
        }
    }

    /// A write answered "not found" can only mean the bucket or container is missing.
    fn write_err(&self, key: &str, e: opendal::Error) -> StoreError {
        if e.kind() == opendal::ErrorKind::NotFound {
            return self.no_container();
        }
        self.err("write", key, e)
    }

    fn no_container(&self) -> StoreError {
        let t = &self.target;
        StoreError::Remote {
            location: self.location.clone(),
            message: format!(
                "{} {} `{}` does not exist at {}: create it, or fix {}",
                t.service,
                t.noun,
                t.name,
                t.endpoint,
                t.field()
            ),
        }
    }

    /// Turns opendal's error into the cause a person can fix.
    fn explain(&self, e: &opendal::Error) -> String {
        let t = &self.target;
        let full = format!("{e:?}");
        let lower = full.to_ascii_lowercase();
        if self.container_missing(e) {
            return format!(
                "{} `{}` does not exist: create it, or fix {}",
                t.noun,
                t.name,
                t.field()
            );
        }
        if e.kind() == opendal::ErrorKind::PermissionDenied
            || [
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
                "AuthenticationFailed",
                "AuthorizationFailure",
                "Forbidden",
                "Unauthorized",
                "bad_auth_token",
                "unauthorized",
            ]
            .iter()
            .any(|m| full.contains(m))
        {
            return format!(
                "the {} service refused the credentials: check {}",
                t.service, t.credentials
            );
        }
        if lower.contains("connection refused")
            || lower.contains("error sending request")
            || lower.contains("dns error")
            || lower.contains("tcp connect")
            || lower.contains("timed out")
            || lower.contains("connection reset")
            || lower.contains("connection closed")
        {
            return format!(
                "cannot reach the {} endpoint {} (is the server running and the address \
                 right?)",
                t.service, t.endpoint
            );
        }
        // The message alone can hide the cause (e.g. "deserialize json"): keep the source.
        match std::error::Error::source(e) {
            Some(src) => format!("{}: {src}", e.message()),
            None => e.message().to_string(),
        }
    }
}

impl ObjectStore for CloudStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, dir: &str) -> StoreResult<Vec<(String, u64)>> {
        let _guard = runtime().enter();
        let path = format!("{}/", dir.trim_end_matches('/'));
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(&path, opts) {
            Ok(v) => v,
            // A prefix without files lists as empty; only a missing bucket or container
            // answers "not found" (some servers, like GCS emulators, without saying which).
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Err(self.no_container()),
            Err(e) => return Err(self.err("list", dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .map(|e| {
                (
                    e.path().trim_start_matches('/').to_string(),
                    e.metadata().content_length(),
                )
            })
            .collect())
    }

    fn read(&self, key: &str) -> StoreResult<Bytes> {
        let _guard = runtime().enter();
        self.op
            .read(key)
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("read", key, e))
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let _guard = runtime().enter();
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len).into(),
            ..Default::default()
        };
        self.op
            .read_options(key, opts)
            .map(|b| b.to_bytes())
            .map_err(|e| self.err("read", key, e))
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        let _guard = runtime().enter();
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        let opts = opendal::options::WriteOptions {
            content_type: Some(OCTET_STREAM.into()),
            ..Default::default()
        };
        self.op
            .write_options(key, buf, opts)
            .map(|_| ())
            .map_err(|e| self.write_err(key, e))
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        let _guard = runtime().enter();
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        if !self.op.info().capability().write_with_if_not_exists {
            // B2 and Swift have no conditional write: check, then write. Two processes
            // initialising one repository in the same instant can both pass the check; the
            // read-back in `InitClaim` then makes the loser notice.
            if self.exists(key)? {
                return Ok(false);
            }
            return self.write(key, parts).map(|()| true);
        }
        // A conditional write (If-None-Match: * and the like) makes the check and the write
        // one step.
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            content_type: Some(OCTET_STREAM.into()),
            ..Default::default()
        };
        match self.op.write_options(key, buf, opts) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.write_err(key, e)),
        }
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        let _guard = runtime().enter();
        match self.op.delete(key) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound && !self.container_missing(&e) => {
                Ok(())
            }
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        let _guard = runtime().enter();
        match self.op.stat(key) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                if self.container_missing(&e) {
                    return Err(self.no_container());
                }
                Ok(false)
            }
            Err(e) => Err(self.err("check", key, e)),
        }
    }

    fn create(&self) -> StoreResult<()> {
        // Buckets and containers are not created implicitly: a typo in the name should fail,
        // not silently scatter backups. Listing proves that it exists and the keys work.
        self.list("keys").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_follow_restic_notation_and_hold_no_secret() {
        let az = CloudStore::azure(&AzureConfig {
            endpoint: None,
            container: "backups".into(),
            prefix: "/db/prod/".into(),
            account_name: "acct".into(),
            account_key: Some("c2VjcmV0LWtleQ==".into()),
            sas_token: None,
        })
        .unwrap();
        assert_eq!(az.location(), "azure:backups:/db/prod");
        assert_eq!(az.target.endpoint, "https://acct.blob.core.windows.net");
        let gcs = CloudStore::gcs(&GcsConfig {
            endpoint: None,
            bucket: "b".into(),
            prefix: "p".into(),
            service_account_json: None,
        })
        .unwrap();
        assert_eq!(gcs.location(), "gs:b:/p");
        assert_eq!(gcs.target.endpoint, "https://storage.googleapis.com");
    }

    #[test]
    fn azure_without_key_or_sas_is_refused_naming_the_keys() {
        let e = CloudStore::azure(&AzureConfig {
            endpoint: Some("http://127.0.0.1:1/acct".into()),
            container: "c".into(),
            prefix: String::new(),
            account_name: "acct".into(),
            account_key: None,
            sas_token: Some(String::new()),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("AZURE_ACCOUNT_KEY"), "{e}");
    }

    #[test]
    fn gcs_key_that_is_not_json_is_refused() {
        let e = CloudStore::gcs(&GcsConfig {
            endpoint: None,
            bucket: "b".into(),
            prefix: String::new(),
            service_account_json: Some("not json".into()),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("GOOGLE_SERVICE_ACCOUNT_JSON_KEY"), "{e}");
    }

    #[test]
    fn b2_and_swift_build_without_contacting_the_service() {
        let b2 = CloudStore::b2(&B2Config {
            bucket: "bk".into(),
            bucket_id: "4a48fe8875c6214145260818".into(),
            prefix: "db".into(),
            account_id: "0012345".into(),
            account_key: "K001secret".into(),
        })
        .unwrap();
        assert_eq!(b2.location(), "b2:bk:/db");
        assert!(!format!("{:?}", b2.op).contains("K001secret"));
        let sw = CloudStore::swift(&SwiftConfig {
            storage_url: "https://swift.example.com/v1/AUTH_t".into(),
            token: "tok".into(),
            container: "c".into(),
            prefix: String::new(),
        })
        .unwrap();
        assert_eq!(sw.location(), "swift:c:/");
    }

    #[test]
    fn an_unreachable_endpoint_is_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let store = CloudStore::azure(&AzureConfig {
            endpoint: Some(format!("http://127.0.0.1:{port}/devstoreaccount1")),
            container: "c".into(),
            prefix: String::new(),
            account_name: "devstoreaccount1".into(),
            account_key: Some("a2V5".into()),
            sas_token: None,
        })
        .unwrap();
        let e = store.create().unwrap_err().to_string();
        assert!(e.contains("cannot reach the Azure Blob endpoint"), "{e}");
        assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}

/// Backblaze's API, where an application key logs in.
pub const B2_API: &str = "https://api.backblazeb2.com";

/// The id of B2 bucket `bucket`, which OpenDAL needs besides its name and which Stash's
/// Secret does not hold: logs in with the application key (`b2_authorize_account`) and
/// looks the name up (`b2_list_buckets`). A key restricted to one bucket names it at login.
pub fn b2_bucket_id(api: &str, account_id: &str, key: &str, bucket: &str) -> StoreResult<String> {
    let location = restic_location("b2", bucket, "");
    let fail = |message: String| StoreError::Remote {
        location: location.clone(),
        message,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| fail(format!("cannot set up the HTTP client: {e}")))?;
    let unreachable = |e: reqwest::Error| fail(format!("cannot reach the B2 API at {api} ({e})"));
    let r = client
        .get(format!("{api}/b2api/v2/b2_authorize_account"))
        .basic_auth(account_id, Some(key))
        .send()
        .map_err(unreachable)?;
    if r.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(fail(
            "the B2 service refused the credentials: check B2_ACCOUNT_ID and B2_ACCOUNT_KEY in \
             the storage Secret"
                .into(),
        ));
    }
    let auth: serde_json::Value = json_answer(r).map_err(|m| fail(format!("B2 login: {m}")))?;
    if auth["allowed"]["bucketName"].as_str() == Some(bucket) {
        if let Some(id) = auth["allowed"]["bucketId"].as_str() {
            return Ok(id.to_string());
        }
    }
    let (Some(api_url), Some(token), Some(account)) = (
        auth["apiUrl"].as_str(),
        auth["authorizationToken"].as_str(),
        auth["accountId"].as_str(),
    ) else {
        return Err(fail(
            "B2 login answered without apiUrl, token or accountId".into(),
        ));
    };
    let r = client
        .post(format!("{api_url}/b2api/v2/b2_list_buckets"))
        .header("Authorization", token)
        .body(serde_json::json!({"accountId": account, "bucketName": bucket}).to_string())
        .send()
        .map_err(unreachable)?;
    let list: serde_json::Value =
        json_answer(r).map_err(|m| fail(format!("B2 bucket lookup: {m}")))?;
    list["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["bucketName"].as_str() == Some(bucket))
        .and_then(|b| b["bucketId"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            fail(format!(
                "B2 bucket `{bucket}` does not exist (or the key may not see it): create it, or \
                 fix spec.backend.b2.bucket"
            ))
        })
}

/// Logs in to Swift with v1 auth (Stash's `ST_AUTH`, `ST_USER`, `ST_KEY`): returns the storage
/// URL and a token, which OpenDAL's Swift service takes (it does not log in by itself).
pub fn swift_v1_login(auth_url: &str, user: &str, key: &str) -> StoreResult<(String, String)> {
    let fail = |message: String| StoreError::Remote {
        location: format!("swift auth {auth_url}"),
        message,
    };
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| fail(format!("cannot set up the HTTP client: {e}")))?
        .get(auth_url)
        .header("X-Auth-User", user)
        .header("X-Auth-Key", key)
        .send()
        .map_err(|e| fail(format!("cannot reach the Swift auth URL (ST_AUTH) ({e})")))?;
    if matches!(r.status().as_u16(), 401 | 403) {
        return Err(fail(
            "Swift refused the login: check ST_USER and ST_KEY in the storage Secret".into(),
        ));
    }
    if !r.status().is_success() {
        return Err(fail(format!("Swift login answered {}", r.status())));
    }
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    match (header("x-storage-url"), header("x-auth-token")) {
        (Some(url), Some(token)) => Ok((url, token)),
        _ => Err(fail(
            "Swift login answered without X-Storage-Url and X-Auth-Token: is ST_AUTH a v1 \
             auth URL?"
                .into(),
        )),
    }
}

fn json_answer(r: reqwest::blocking::Response) -> Result<serde_json::Value, String> {
    let status = r.status();
    let body = r.text().map_err(|e| e.to_string())?;
    if !status.is_success() {
        let short: String = body.chars().take(200).collect();
        return Err(format!("{status}: {short}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e})"))
}

#[cfg(test)]
mod login_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A one-connection-per-answer HTTP server: answers the requests in order, and returns
    /// what it was asked.
    fn fake(answers: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        fake_with(
            answers
                .into_iter()
                .map(|(s, b)| (s, String::new(), b))
                .collect(),
        )
    }

    /// Like [`fake`], with extra response header lines (each ending in CRLF).
    fn fake_with(
        answers: Vec<(u16, String, String)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, headers, body) in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
                seen.push(format!("{head}\n{}", String::from_utf8_lossy(&b)));
                let mut s = s;
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (base, h)
    }

    #[test]
    fn the_bucket_id_is_looked_up_by_name_after_login() {
        // The lookup goes to the apiUrl the login answers: a second server.
        let (api_url, h2) = fake(vec![(
            200,
            r#"{"buckets":[{"bucketName":"other","bucketId":"x"},{"bucketName":"bk","bucketId":"id-bk"}]}"#
                .into(),
        )]);
        let (api, h1) = fake(vec![(
            200,
            format!(
                r#"{{"accountId":"acc","apiUrl":"{api_url}","authorizationToken":"tok","allowed":{{}}}}"#
            ),
        )]);
        assert_eq!(b2_bucket_id(&api, "kid", "secret", "bk").unwrap(), "id-bk");
        let login = &h1.join().unwrap()[0];
        assert!(
            login.starts_with("GET /b2api/v2/b2_authorize_account"),
            "{login}"
        );
        assert!(
            login.to_ascii_lowercase().contains("authorization: basic"),
            "{login}"
        );
        let lookup = &h2.join().unwrap()[0];
        assert!(
            lookup.to_ascii_lowercase().contains("authorization: tok"),
            "{lookup}"
        );
        assert!(lookup.contains(r#""bucketName":"bk""#), "{lookup}");
    }

    #[test]
    fn a_key_for_one_bucket_names_it_at_login_and_bad_keys_are_named() {
        let (api, _h) = fake(vec![
            (
                200,
                r#"{"accountId":"a","apiUrl":"http://127.0.0.1:1","authorizationToken":"t","allowed":{"bucketId":"only","bucketName":"bk"}}"#
                    .into(),
            ),
            (401, r#"{"code":"unauthorized"}"#.into()),
        ]);
        assert_eq!(b2_bucket_id(&api, "k", "s", "bk").unwrap(), "only");
        let e = b2_bucket_id(&api, "k", "wrong", "bk")
            .unwrap_err()
            .to_string();
        assert!(e.contains("B2_ACCOUNT_KEY"), "{e}");
    }

    #[test]
    fn swift_v1_login_returns_the_storage_url_and_token() {
        let (auth, h) = fake_with(vec![
            (
                200,
                "X-Storage-Url: https://swift.example/v1/AUTH_t\r\nX-Auth-Token: tk\r\n".into(),
                String::new(),
            ),
            (401, String::new(), String::new()),
        ]);
        let url = format!("{auth}/auth/v1.0");
        assert_eq!(
            swift_v1_login(&url, "acct:user", "k").unwrap(),
            (
                "https://swift.example/v1/AUTH_t".to_string(),
                "tk".to_string()
            )
        );
        let e = swift_v1_login(&url, "acct:user", "bad")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ST_KEY"), "{e}");
        let seen = h.join().unwrap();
        assert!(seen[0].starts_with("GET /auth/v1.0"), "{}", seen[0]);
        let lower = seen[0].to_ascii_lowercase();
        assert!(lower.contains("x-auth-user: acct:user") && lower.contains("x-auth-key: k"));
    }
}
