//! Repositories in cloud object stores — S3, Azure Blob, Google Cloud Storage, Backblaze B2 and
//! OpenStack Swift — through OpenDAL's services.
//!
//! OpenDAL is what rustic's own backends build on: each protocol's signing, pagination and
//! retries are kept by that project, so coffer writes only the mapping from Stash's
//! Repository and Secret to a service, and the translation of failures into messages that
//! name the backend, the bucket or container, and what to fix.

use std::{
    sync::{Mutex, OnceLock, PoisonError, RwLock},
    time::Duration,
};

use bytes::Bytes;

use crate::store::{ObjectStore, StoreError, StoreResult};
use crate::swift_auth::{SwiftLogin, SwiftSession};

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
    credentials: String,
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
    current: RwLock<Current>,
    /// How to log in to Swift again; `None` for the other services.
    swift: Option<SwiftState>,
    location: String,
    target: Target,
}

/// The operator in use. Only Swift's changes: its token is fixed when the operator is built,
/// so a new token means a new operator.
struct Current {
    /// `None` until a Swift repository without a given token first logs in.
    op: Option<opendal::blocking::Operator>,
    /// When the Swift token expires, when the login said.
    expires: Option<jiff::Timestamp>,
    /// The storage URL the Swift login answered, which messages name.
    endpoint: Option<String>,
    /// Counts logins, so that threads that met the same expired token log in only once.
    generation: u64,
}

struct SwiftState {
    login: Option<SwiftLogin>,
    container: String,
    prefix: String,
    /// Held while logging in.
    lock: Mutex<()>,
}

/// A token this close to its expiry is renewed before the next request (ncw/swift, which
/// restic uses, does the same), so that a long upload does not start on a dying token.
const TOKEN_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Why an operation failed: the service's answer, or logging in again.
enum Failure {
    Op(opendal::Error),
    Login(StoreError),
}

impl Failure {
    fn or_else(self, f: impl FnOnce(opendal::Error) -> StoreError) -> StoreError {
        match self {
            Failure::Op(e) => f(e),
            Failure::Login(e) => e,
        }
    }
}

/// Swift answered 401: the token is wrong or has expired (403 is an ACL or role refusal,
/// which a new token does not cure).
fn token_rejected(e: &opendal::Error) -> bool {
    e.kind() == opendal::ErrorKind::PermissionDenied && format!("{e:?}").contains("status: 401")
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

/// An OpenStack Swift container. OpenDAL's Swift service takes a storage URL and a token and
/// does not log in by itself: the token is given (`preset`), or coffer logs in (`login`), or
/// both (the given token first, a login when it expires), as restic does.
#[derive(Clone, Debug)]
pub struct SwiftConfig {
    /// `OS_STORAGE_URL` and `OS_AUTH_TOKEN` (Debug shows no token).
    pub preset: Option<SwiftSession>,
    pub login: Option<SwiftLogin>,
    pub container: String,
    pub prefix: String,
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

/// An OpenDAL operator with coffer's retries and timeouts.
fn make_operator(
    builder: impl opendal::Builder,
    location: &str,
    backend: &str,
) -> StoreResult<opendal::blocking::Operator> {
    // Without opendal's auto-registration feature, the HTTP transport is installed here.
    opendal::install_default();
    let err = |e: opendal::Error| StoreError::Remote {
        location: location.to_string(),
        message: format!("invalid {backend} configuration: {}", e.message()),
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
    opendal::blocking::Operator::new(op).map_err(err)
}

impl SwiftState {
    fn builder(&self, session: &SwiftSession) -> opendal::services::Swift {
        opendal::services::Swift::default()
            .root(&root_of(&self.prefix))
            .endpoint(&session.storage_url)
            .container(&self.container)
            .token(&session.token)
    }
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
                          spec.backend.s3.region"
                .into(),
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
                          storage Secret"
                .into(),
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
                          bucket)"
                .into(),
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
                          key allowed to read and write the bucket)"
                .into(),
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
        let location = restic_location("swift", &cfg.container, &cfg.prefix);
        let credentials = match &cfg.login {
            None => "OS_STORAGE_URL and OS_AUTH_TOKEN in the storage Secret (Swift answers 401 \
                     once the token has expired: put a fresh one, or add login keys such as \
                     OS_AUTH_URL, OS_USERNAME and OS_PASSWORD so that coffer logs in again by \
                     itself)"
                .to_string(),
            Some(login) => format!(
                "{} in the storage Secret (Swift refused the token coffer logged in for, a fresh \
                 one when the old was refused: the user may lack a role on the project, or an \
                 ACL on the container)",
                login.credential_keys().join(", ")
            ),
        };
        let endpoint = match (&cfg.preset, &cfg.login) {
            (Some(p), _) => p.storage_url.clone(),
            (None, Some(l)) => l.auth_url().value.clone(),
            (None, None) => {
                return Err(StoreError::Remote {
                    location,
                    message: "neither a storage URL and token nor a way to log in was given".into(),
                })
            }
        };
        let target = Target {
            backend: "swift",
            service: "Swift",
            noun: "container",
            name: cfg.container.clone(),
            endpoint,
            credentials,
            missing: &[],
        };
        let state = SwiftState {
            login: cfg.login.clone(),
            container: cfg.container.clone(),
            prefix: cfg.prefix.clone(),
            lock: Mutex::new(()),
        };
        // A given token is used until Swift refuses it; without one, the first request logs in.
        let current = match &cfg.preset {
            Some(session) => Current {
                op: Some(make_operator(
                    state.builder(session),
                    &location,
                    target.backend,
                )?),
                expires: session.expires,
                endpoint: Some(session.storage_url.clone()),
                generation: 0,
            },
            None => Current {
                op: None,
                expires: None,
                endpoint: None,
                generation: 0,
            },
        };
        Ok(Self {
            current: RwLock::new(current),
            swift: Some(state),
            location,
            target,
        })
    }

    fn build(
        builder: impl opendal::Builder,
        location: String,
        target: Target,
    ) -> StoreResult<Self> {
        let op = make_operator(builder, &location, target.backend)?;
        Ok(Self {
            current: RwLock::new(Current {
                op: Some(op),
                expires: None,
                endpoint: None,
                generation: 0,
            }),
            swift: None,
            location,
            target,
        })
    }

    fn can_login(&self) -> bool {
        self.swift.as_ref().is_some_and(|s| s.login.is_some())
    }

    /// The operator to use now, logging in first when there is none yet or its token is about
    /// to expire.
    fn operator(&self) -> StoreResult<(opendal::blocking::Operator, u64)> {
        let seen = {
            let cur = self.current.read().unwrap_or_else(PoisonError::into_inner);
            let expiring = cur
                .expires
                .is_some_and(|t| t.duration_since(jiff::Timestamp::now()) < TOKEN_MARGIN);
            match &cur.op {
                Some(op) if !(expiring && self.can_login()) => {
                    return Ok((op.clone(), cur.generation))
                }
                _ => cur.generation,
            }
        };
        self.login(seen)?;
        let cur = self.current.read().unwrap_or_else(PoisonError::into_inner);
        match &cur.op {
            Some(op) => Ok((op.clone(), cur.generation)),
            None => Err(StoreError::Remote {
                location: self.location.clone(),
                message: "no Swift token: give OS_STORAGE_URL and OS_AUTH_TOKEN, or login keys"
                    .into(),
            }),
        }
    }

    /// Logs in to Swift again and rebuilds the operator with the new token, unless another
    /// thread already did since generation `seen`.
    fn login(&self, seen: u64) -> StoreResult<()> {
        let Some(sw) = &self.swift else {
            return Ok(());
        };
        let Some(login) = &sw.login else {
            return Ok(());
        };
        let _held = sw.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
            != seen
        {
            return Ok(());
        }
        // Outside the runtime context: the login client blocks on its own.
        let session = login.login()?;
        let op = make_operator(sw.builder(&session), &self.location, self.target.backend)?;
        tracing::debug!(
            location = %self.location,
            storage_url = %session.storage_url,
            expires = ?session.expires,
            "logged in to Swift"
        );
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            op: Some(op),
            expires: session.expires,
            endpoint: Some(session.storage_url),
            generation: seen + 1,
        };
        Ok(())
    }

    /// Runs one operation; when Swift answers 401 and coffer can log in, logs in again and
    /// runs it once more (the operations are whole-file, so a retry repeats nothing partial).
    fn call<T>(
        &self,
        f: impl Fn(&opendal::blocking::Operator) -> opendal::Result<T>,
    ) -> Result<T, Failure> {
        let mut again = true;
        loop {
            let (op, generation) = self.operator().map_err(Failure::Login)?;
            let r = {
                let _guard = runtime().enter();
                f(&op)
            };
            match r {
                Err(e) if again && self.can_login() && token_rejected(&e) => {
                    tracing::info!(
                        location = %self.location,
                        "Swift refused the token (401, expired?): logging in again"
                    );
                    self.login(generation).map_err(Failure::Login)?;
                    again = false;
                }
                r => return r.map_err(Failure::Op),
            }
        }
    }

    /// Where requests go, for messages: the storage URL once Swift has logged in.
    fn endpoint(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .endpoint
            .clone()
            .unwrap_or_else(|| self.target.endpoint.clone())
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
                self.endpoint(),
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
        if token_rejected(e) && self.swift.is_some() && !self.can_login() {
            return "Swift refused the token in OS_AUTH_TOKEN (401): it has expired or is wrong. \
                    Put a fresh token there, or add login keys (OS_AUTH_URL with OS_USERNAME and \
                    OS_PASSWORD or an application credential, or ST_AUTH, ST_USER and ST_KEY) so \
                    that coffer logs in again by itself"
                .into();
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
                t.service,
                self.endpoint()
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
        let path = format!("{}/", dir.trim_end_matches('/'));
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.call(|op| op.list_options(&path, opts.clone())) {
            Ok(v) => v,
            // A prefix without files lists as empty; only a missing bucket or container
            // answers "not found" (some servers, like GCS emulators, without saying which).
            Err(Failure::Op(e)) if e.kind() == opendal::ErrorKind::NotFound => {
                return Err(self.no_container())
            }
            Err(f) => return Err(f.or_else(|e| self.err("list", dir, e))),
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
        self.call(|op| op.read(key))
            .map(|b| b.to_bytes())
            .map_err(|f| f.or_else(|e| self.err("read", key, e)))
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Bytes> {
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len).into(),
            ..Default::default()
        };
        self.call(|op| op.read_options(key, opts.clone()))
            .map(|b| b.to_bytes())
            .map_err(|f| f.or_else(|e| self.err("read", key, e)))
    }

    fn write(&self, key: &str, parts: &[Bytes]) -> StoreResult<()> {
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        let opts = opendal::options::WriteOptions {
            content_type: Some(OCTET_STREAM.into()),
            ..Default::default()
        };
        self.call(|op| op.write_options(key, buf.clone(), opts.clone()))
            .map(|_| ())
            .map_err(|f| f.or_else(|e| self.write_err(key, e)))
    }

    fn write_new(&self, key: &str, parts: &[Bytes]) -> StoreResult<bool> {
        let buf: opendal::Buffer = parts.iter().cloned().collect();
        let conditional = self
            .call(|op| Ok(op.info().capability().write_with_if_not_exists))
            .map_err(|f| f.or_else(|e| self.write_err(key, e)))?;
        if !conditional {
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
        match self.call(|op| op.write_options(key, buf.clone(), opts.clone())) {
            Ok(_) => Ok(true),
            Err(Failure::Op(e)) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(f) => Err(f.or_else(|e| self.write_err(key, e))),
        }
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        match self.call(|op| op.delete(key)) {
            Ok(()) => Ok(()),
            Err(Failure::Op(e))
                if e.kind() == opendal::ErrorKind::NotFound && !self.container_missing(&e) =>
            {
                Ok(())
            }
            Err(f) => Err(f.or_else(|e| self.err("delete", key, e))),
        }
    }

    fn exists(&self, key: &str) -> StoreResult<bool> {
        match self.call(|op| op.stat(key)) {
            Ok(_) => Ok(true),
            Err(Failure::Op(e)) if e.kind() == opendal::ErrorKind::NotFound => {
                if self.container_missing(&e) {
                    return Err(self.no_container());
                }
                Ok(false)
            }
            Err(f) => Err(f.or_else(|e| self.err("check", key, e))),
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
        assert!(!format!("{:?}", b2.current.read().unwrap().op).contains("K001secret"));
        let sw = CloudStore::swift(&SwiftConfig {
            preset: Some(SwiftSession {
                storage_url: "https://swift.example.com/v1/AUTH_t".into(),
                token: "tok".into(),
                expires: None,
            }),
            login: None,
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
pub(crate) mod login_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A one-connection-per-answer HTTP server: answers the requests in order, and returns
    /// what it was asked.
    pub(crate) fn fake(
        answers: Vec<(u16, String)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        fake_with(
            answers
                .into_iter()
                .map(|(s, b)| (s, String::new(), b))
                .collect(),
        )
    }

    /// Like [`fake`], with extra response header lines (each ending in CRLF).
    pub(crate) fn fake_with(
        answers: Vec<(u16, String, String)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        fake_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), answers)
    }

    /// Like [`fake_with`], on a listener already bound (so that answers can name it).
    fn fake_on(
        l: std::net::TcpListener,
        answers: Vec<(u16, String, String)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
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

    fn keystone(base: &str) -> SwiftLogin {
        use crate::swift_auth::{Cred, V3Identity, V3User};
        SwiftLogin::V3 {
            url: Cred::new("OS_AUTH_URL", format!("{base}/v3")),
            identity: V3Identity::Password {
                user: V3User::Id(Cred::new("OS_USER_ID", "u-1")),
                password: Cred::new("OS_PASSWORD", "pw"),
            },
            scope: None,
            region: None,
        }
    }

    /// Keystone's answer: a token, and a catalog that points at the same fake server.
    fn token(base: &str, token: &str, expires: jiff::Timestamp) -> (u16, String, String) {
        (
            201,
            format!("X-Subject-Token: {token}\r\n"),
            serde_json::json!({"token": {"expires_at": expires.to_string(), "catalog": [
                {"type": "object-store", "endpoints": [
                    {"interface": "public", "region_id": "R", "url": format!("{base}/v1/AUTH_p")}]}]}})
            .to_string(),
        )
    }

    fn listing() -> (u16, String, String) {
        (
            200,
            "Content-Type: application/json; charset=utf-8\r\n".into(),
            "[]".into(),
        )
    }

    fn token_of(request: &str) -> String {
        request
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-auth-token:")
                    .map(|t| t.trim().to_string())
            })
            .unwrap_or_default()
    }

    #[test]
    fn swift_logs_in_on_first_use_and_again_when_the_token_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        let (base2, h) = fake_on(
            l,
            vec![
                token(&base, "tk1", later),
                (
                    401,
                    String::new(),
                    "<html><h1>Unauthorized</h1></html>".into(),
                ),
                token(&base, "tk2", later),
                listing(),
            ],
        );
        assert_eq!(base, base2);
        let store = CloudStore::swift(&SwiftConfig {
            preset: None,
            login: Some(keystone(&base)),
            container: "c".into(),
            prefix: "db".into(),
        })
        .unwrap();
        assert_eq!(store.list("snapshots").unwrap(), vec![]);
        let seen = h.join().unwrap();
        assert!(seen[0].starts_with("POST /v3/auth/tokens"), "{}", seen[0]);
        assert!(seen[1].starts_with("GET /v1/AUTH_p/c"), "{}", seen[1]);
        assert_eq!(token_of(&seen[1]), "tk1");
        assert!(seen[2].starts_with("POST /v3/auth/tokens"), "{}", seen[2]);
        assert_eq!(token_of(&seen[3]), "tk2");
    }

    #[test]
    fn a_swift_token_near_its_expiry_is_renewed_before_the_request() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let now = jiff::Timestamp::now();
        let (_, h) = fake_on(
            l,
            vec![
                token(&base, "tk1", now + jiff::SignedDuration::from_secs(30)),
                listing(),
                token(&base, "tk2", now + jiff::SignedDuration::from_hours(1)),
                listing(),
                listing(),
            ],
        );
        let store = CloudStore::swift(&SwiftConfig {
            preset: None,
            login: Some(keystone(&base)),
            container: "c".into(),
            prefix: String::new(),
        })
        .unwrap();
        for _ in 0..3 {
            store.list("locks").unwrap();
        }
        let seen = h.join().unwrap();
        let tokens: Vec<String> = seen.iter().map(|r| token_of(r)).collect();
        assert_eq!(tokens, ["", "tk1", "", "tk2", "tk2"], "{seen:?}");
    }

    #[test]
    fn a_refused_given_token_is_named_when_coffer_cannot_log_in() {
        let (base, _h) = fake_with(vec![(401, String::new(), "Unauthorized".into())]);
        let store = CloudStore::swift(&SwiftConfig {
            preset: Some(SwiftSession {
                storage_url: format!("{base}/v1/AUTH_p"),
                token: "old-token".into(),
                expires: None,
            }),
            login: None,
            container: "c".into(),
            prefix: String::new(),
        })
        .unwrap();
        let e = store.list("keys").unwrap_err().to_string();
        assert!(
            e.contains("Swift refused the token in OS_AUTH_TOKEN (401)"),
            "{e}"
        );
        assert!(e.contains("OS_AUTH_URL"), "{e}");
        assert!(!e.contains("old-token"), "{e}");
    }
}
