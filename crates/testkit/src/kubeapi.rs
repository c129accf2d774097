//! A stand-in for the Kubernetes API server, as much of it as an agent in a Job uses: GET of
//! objects (custom resources and Secrets alike) and JSON merge patches of their `/status`
//! subresource with a `metadata.resourceVersion` precondition. Objects live in memory under
//! the path the API server serves them at; every request is recorded, so a test can assert
//! exactly what the agent asked for. Requests without the kubeconfig's bearer token get 401,
//! as they would from a real server.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

/// The bearer token the double accepts (and writes into its kubeconfig).
pub const TOKEN: &str = "coffer-test-serviceaccount-token";

/// One request as the double saw it. Bodies are kept for PATCH only: status patches carry no
/// secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    /// The status code the double answered.
    pub code: u16,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<ApiRequest>,
    last_version: u64,
}

impl State {
    fn next_version(&mut self) -> String {
        self.last_version += 1;
        self.last_version.to_string()
    }
}

pub struct KubeApi {
    port: u16,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// The path the API server serves an object at: `/api/v1/namespaces/NS/secrets/NAME`,
/// `/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME`, or without the namespace part for a
/// cluster-scoped kind (`namespace` None).
pub fn object_path(api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> String {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    }
}

impl KubeApi {
    pub fn start() -> Result<KubeApi> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| anyhow!("cannot start the API double: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("the API double has no IP address"))?
            .port();
        let server = Arc::new(server);
        let state = Arc::new(Mutex::new(State::default()));
        let thread = {
            let (server, state) = (server.clone(), state.clone());
            std::thread::Builder::new()
                .name("kube-api-double".into())
                .spawn(move || {
                    for req in server.incoming_requests() {
                        serve(&state, req);
                    }
                })
                .context("start the API double's thread")?
        };
        Ok(KubeApi {
            port,
            state,
            server,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stores an object under the path its apiVersion, `plural`, namespace and name give
    /// (namespace absent: cluster-scoped), with a fresh resourceVersion. Returns the path.
    pub fn insert(&self, plural: &str, mut obj: Value) -> String {
        let meta = &obj["metadata"];
        let path = object_path(
            obj["apiVersion"]
                .as_str()
                .expect("an object has an apiVersion"),
            plural,
            meta["namespace"].as_str(),
            meta["name"].as_str().expect("an object has a name"),
        );
        let mut st = self.state.lock().unwrap();
        let rv = st.next_version();
        obj["metadata"]["resourceVersion"] = json!(rv);
        obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object")
            .entry("uid")
            .or_insert_with(|| json!(format!("uid-{rv}")));
        st.objects.insert(path.clone(), obj);
        path
    }

    /// The object stored at `path`, as the API would return it.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// A kubeconfig that points at the double with its token (what a Pod's ServiceAccount
    /// mount gives an in-cluster client), written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: double\n  cluster:\n    server: {}\n\
             users:\n- name: agent\n  user:\n    token: {TOKEN}\n\
             contexts:\n- name: double\n  context:\n    cluster: double\n    user: agent\n\
             current-context: double\n",
            self.url()
        );
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn serve(state: &Mutex<State>, mut req: tiny_http::Request) {
    let method = req.method().as_str().to_string();
    let (path, query) = match req.url().split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (req.url().to_string(), String::new()),
    };
    let header = |name: &str| {
        req.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    let content_type = header("content-type");
    let authorized = header("authorization").as_deref() == Some(&format!("Bearer {TOKEN}"));
    let mut raw = Vec::new();
    let _ = req.as_reader().read_to_end(&mut raw);
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let (code, answer) = {
        let mut st = state.lock().unwrap();
        let (code, answer) = if !authorized {
            (
                401,
                status(401, "Unauthorized", "no valid bearer token".into()),
            )
        } else {
            handle(
                &mut st,
                &method,
                &path,
                content_type.as_deref(),
                body.as_ref(),
            )
        };
        st.requests.push(ApiRequest {
            method: method.clone(),
            path,
            query,
            content_type,
            body: if method == "PATCH" { body } else { None },
            code,
        });
        (code, answer)
    };
    let ct = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header");
    let _ = req.respond(
        tiny_http::Response::from_string(answer.to_string())
            .with_status_code(code)
            .with_header(ct),
    );
}

fn handle(
    st: &mut State,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let not_found = |p: &str| (404, status(404, "NotFound", format!("{p} not found")));
    match method {
        "GET" => match st.objects.get(path) {
            Some(o) => (200, o.clone()),
            None => not_found(path),
        },
        "PATCH" => {
            let Some(obj_path) = path.strip_suffix("/status") else {
                return (
                    405,
                    status(
                        405,
                        "MethodNotAllowed",
                        "the double patches only /status".into(),
                    ),
                );
            };
            if content_type != Some("application/merge-patch+json") {
                return (
                    415,
                    status(
                        415,
                        "UnsupportedMediaType",
                        format!("the double takes merge patches, not {content_type:?}"),
                    ),
                );
            }
            let Some(patch) = body else {
                return (400, status(400, "BadRequest", "no JSON body".into()));
            };
            let Some(stored_rv) = st
                .objects
                .get(obj_path)
                .map(|o| o["metadata"]["resourceVersion"].clone())
            else {
                return not_found(obj_path);
            };
            if let Some(rv) = patch["metadata"].get("resourceVersion") {
                if *rv != stored_rv {
                    return (
                        409,
                        status(
                            409,
                            "Conflict",
                            format!(
                                "Operation cannot be fulfilled on {obj_path}: the object has \
                                 been modified; please apply your changes to the latest version \
                                 and try again"
                            ),
                        ),
                    );
                }
            }
            let rv = st.next_version();
            let obj = st.objects.get_mut(obj_path).expect("checked above");
            // The status subresource: only the status changes.
            if let Some(s) = patch.get("status") {
                merge(&mut obj["status"], s);
                if obj["status"].is_null() {
                    obj.as_object_mut().expect("an object").remove("status");
                }
            }
            obj["metadata"]["resourceVersion"] = json!(rv);
            (200, obj.clone())
        }
        _ => (
            405,
            status(
                405,
                "MethodNotAllowed",
                format!("the double does not serve {method}"),
            ),
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
