//! The Job runs for real: the backup and restore Jobs the operator creates, run as a kubelet
//! would run them — command, args, environment (downward-API values and Secret references
//! resolved), volumes bind-mounted over their mount paths in a private mount namespace, the
//! root filesystem read-only when the container asks for it, the process as the
//! securityContext's user with the fsGroup owning the volumes and no capabilities — against a
//! real MariaDB and a real S3 server, with the agent's API calls answered by the API double.
//!
//! The only thing the "kubelet" adds is KUBECONFIG, pointing at the double with its token: it
//! stands in for the ServiceAccount token and CA that a Pod gets mounted, which an in-cluster
//! client reads instead. PATH (this machine's) and HOME=/ stand for the image's environment;
//! status.podIP is a loopback address; the network is the host's.
//!
//! The Jobs are the operator's own: [`operator_jobs`] runs its decision (decide/) on the
//! session as the double holds it and takes the Jobs it would apply.

use std::{collections::BTreeMap, os::unix::fs::PermissionsExt, path::PathBuf, process::Command};

use base64::Engine as _;
use coffer_testkit::{kubeapi::object_path, Garage, KubeApi, MariaDb};
use serde_json::{json, Value};

use crate::common::*;

const NS: &str = "shop";

/// The directory for everything the agent must see: not under /tmp, where the Job's
/// emptyDir is mounted.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kube-job-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "Secret" => "secrets",
        "Repository" => "repositories",
        "AppBinding" => "appbindings",
        "BackupConfiguration" => "backupconfigurations",
        "BackupSession" => "backupsessions",
        "RestoreSession" => "restoresessions",
        "BinlogArchive" => "binlogarchives",
        other => panic!("no plural for {other}"),
    }
}

/// Stores the manifests in the double as the API server would hold them after
/// `kubectl apply -n NS`: in the namespace, Secrets' stringData encoded into data.
fn load(api: &KubeApi, manifests: &[String]) -> Vec<String> {
    let mut paths = Vec::new();
    for m in manifests {
        let mut v: Value = serde_yaml::from_str(m).unwrap();
        v["metadata"]["namespace"] = json!(NS);
        let kind = v["kind"].as_str().unwrap().to_string();
        if kind == "Secret" {
            let plain = v
                .as_object_mut()
                .unwrap()
                .remove("stringData")
                .unwrap_or(json!({}));
            let data: serde_json::Map<String, Value> = plain
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, s)| {
                    let b64 = base64::engine::general_purpose::STANDARD
                        .encode(s.as_str().unwrap().as_bytes());
                    (k.clone(), json!(b64))
                })
                .collect();
            v["data"] = Value::Object(data);
            v["type"] = json!("Opaque");
        }
        paths.push(api.insert(plural(&kind), v));
    }
    paths
}

/// The Repository `name` as the double holds it, if it is there (the operator's observe step
/// reads it: a local backend's volume is mounted into the Jobs).
fn stored_repository(api: &KubeApi, name: &str) -> Option<coffer_api::Repository> {
    use coffer_api::{Kind, Resource};
    let v = api.object(&object_path(
        "stash.appscode.com/v1alpha1",
        "repositories",
        Some(NS),
        name,
    ))?;
    match Resource::from_json(Kind::Repository, v) {
        Ok(Resource::Repository(r)) => Some(r),
        _ => panic!("Repository {name} is not a Repository"),
    }
}

/// The Jobs the operator creates for a session: its decision (decide/) on the session and on
/// what the session refers to, as the double holds them, before any Job exists — the objects
/// the act layer would apply, untouched.
fn operator_jobs(api: &KubeApi, session_path: &str) -> Vec<Value> {
    use coffer_api::{Kind, Resource};
    use coffer_kubernetes::{decide, KubeAction, OperatorSettings};
    let v = api.object(session_path).expect("the session is stored");
    let resource_version = v["metadata"]["resourceVersion"].as_str().map(String::from);
    let settings = OperatorSettings::default();
    let now = jiff::Timestamp::now();
    let actions = match Resource::from_json(Kind::BackupSession, v.clone()) {
        Ok(Resource::BackupSession(bs)) if v["kind"] == "BackupSession" => {
            let bc_path = object_path(
                "stash.appscode.com/v1beta1",
                "backupconfigurations",
                Some(NS),
                &bs.spec.invoker.name,
            );
            let bc = api.object(&bc_path).expect("the session's configuration");
            let Ok(Resource::BackupConfiguration(bc)) =
                Resource::from_json(Kind::BackupConfiguration, bc)
            else {
                panic!("{bc_path} is not a BackupConfiguration")
            };
            let observed = decide::backup_session::Observed {
                resource_version,
                repository: stored_repository(api, &bc.spec.repository.name),
                configuration: Some(bc),
                siblings: Vec::new(),
                job: None,
            };
            decide::backup_session::decide(&bs, &observed, &settings, now)
        }
        _ => {
            let Ok(Resource::RestoreSession(rs)) = Resource::from_json(Kind::RestoreSession, v)
            else {
                panic!("{session_path} is neither a BackupSession nor a RestoreSession")
            };
            let observed = decide::restore_session::Observed {
                resource_version,
                jobs: Vec::new(),
                repository: stored_repository(api, &rs.spec.repository.name),
            };
            decide::restore_session::decide(&rs, &observed, &settings, now)
        }
    };
    let jobs: Vec<Value> = actions
        .iter()
        .filter_map(|a| match a {
            KubeAction::Apply(o) if o["kind"] == "Job" => Some(o.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !jobs.is_empty(),
        "the operator creates no Job for {session_path}: {actions:#?}"
    );
    jobs
}

/// The Job the verification CronJob of configuration `bc` starts: the operator's decision on
/// the configuration as the double holds it (its Repository, Secret and AppBinding found, no
/// CronJob yet), the CronJob it applies, and a Job made from its jobTemplate as the CronJob
/// controller makes it.
fn operator_verify_job(api: &KubeApi, bc: &str) -> Value {
    use coffer_api::{Kind, Resource};
    use coffer_kubernetes::{decide, KubeAction, OperatorSettings};
    let path = object_path(
        "stash.appscode.com/v1beta1",
        "backupconfigurations",
        Some(NS),
        bc,
    );
    let v = api.object(&path).expect("the configuration is stored");
    let Ok(Resource::BackupConfiguration(config)) =
        Resource::from_json(Kind::BackupConfiguration, v.clone())
    else {
        panic!("{path} is not a BackupConfiguration")
    };
    let repo = api
        .object(&object_path(
            "stash.appscode.com/v1alpha1",
            "repositories",
            Some(NS),
            &config.spec.repository.name,
        ))
        .expect("its Repository");
    let Ok(Resource::Repository(repo)) = Resource::from_json(Kind::Repository, repo) else {
        panic!("not a Repository")
    };
    let observed = decide::backup_configuration::Observed {
        resource_version: v["metadata"]["resourceVersion"].as_str().map(String::from),
        repository: Some(repo),
        backend_secret_found: true,
        target_found: true,
        validation: Ok(()),
        cron_job: None,
        verification_cron_job: None,
    };
    let actions = decide::backup_configuration::decide(
        &config,
        &observed,
        &OperatorSettings::default(),
        jiff::Timestamp::now(),
    );
    let name = decide::names::verify_cron_job(bc);
    let cron = actions
        .iter()
        .find_map(|a| match a {
            KubeAction::Apply(o) if o["kind"] == "CronJob" && o["metadata"]["name"] == name => {
                Some(o.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the operator applies no CronJob {name}: {actions:#?}"));
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("{name}-29000000"), "namespace": NS,
                     "labels": cron["spec"]["jobTemplate"]["metadata"]["labels"]},
        "spec": cron["spec"]["jobTemplate"]["spec"],
    })
}

/// Neither the Job's spec nor its container's resolved environment holds a Secret's value:
/// the agent reads Secrets through the API.
fn assert_no_secret_in(job: &Value, env: Option<&[(String, String)]>, secrets: &[&str]) {
    let text = job.to_string();
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s),
            "a Secret value is in the spec of Job {}",
            job["metadata"]["name"]
        );
        for (k, v) in env.unwrap_or_default() {
            assert!(
                !v.contains(s),
                "a Secret value is in the container's env {k}"
            );
        }
    }
}

/// Every request the Job's agent made (`reqs`, as the double recorded them) is one the
/// chart's RBAC grants its ServiceAccount: the ClusterRole the operator binds to it in the
/// namespace (coffer-backup-job, coffer-restore-job or, for a verification CronJob's Job,
/// coffer-verify-job), or a ClusterRoleBinding of the chart.
fn assert_the_chart_allows(reqs: &[coffer_testkit::kubeapi::ApiRequest], job: &Value) {
    let settings = coffer_kubernetes::OperatorSettings::default();
    let pod = &job["spec"]["template"]["spec"];
    let args = &pod["containers"][0]["args"];
    let role = match (args[0].as_str(), args[1].as_str()) {
        (Some("agent"), Some("backupsession")) => &settings.backup_job_cluster_role,
        (Some("agent"), Some("restoresession")) => &settings.restore_job_cluster_role,
        (Some("verify"), _) => &settings.verify_job_cluster_role,
        (Some("archive"), _) => &settings.archive_cluster_role,
        other => panic!("not an agent's Job: args are {other:?}"),
    };
    let sa = pod["serviceAccountName"]
        .as_str()
        .expect("the Job names its ServiceAccount");
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/coffer");
    let rbac = coffer_kubernetes::rbac::ChartRbac::from_chart_dir(
        &chart,
        &coffer_kubernetes::rbac::RELEASE_COFFER,
    )
    .unwrap();
    assert!(!reqs.is_empty(), "the agent made no request");
    for r in reqs {
        if let Err(e) = rbac.allows(role, NS, sa, &r.method, &r.path, &r.query) {
            panic!(
                "the agent of Job {} would be refused in a cluster: {e}",
                job["metadata"]["name"]
            );
        }
    }
}

/// A variable the test adds to the operator's Job (a fault point), after the contract's.
fn with_env(mut job: Value, name: &str, value: &str) -> Value {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("the agent's container has an env")
        .push(json!({"name": name, "value": value}));
    job
}

/// What a kubelet does with a Job's pod, on this machine.
struct Kubelet<'a> {
    api: &'a KubeApi,
    /// PersistentVolumeClaims by name: the directories that stand for their volumes.
    claims: BTreeMap<String, PathBuf>,
    /// hostPath volumes by the node's path: the directories that stand for them (the node's
    /// path itself need not exist on this machine, and the pod never sees it).
    host_paths: BTreeMap<String, PathBuf>,
    /// The address `status.podIP` resolves to (any loopback address).
    pod_ip: String,
    dir: tempfile::TempDir,
}

/// The pod's name, the container's environment and the run's output.
struct PodRun {
    pod: String,
    env: Vec<(String, String)>,
    run: Run,
}

impl<'a> Kubelet<'a> {
    fn new(api: &'a KubeApi) -> Kubelet<'a> {
        Kubelet {
            api,
            claims: BTreeMap::new(),
            host_paths: BTreeMap::new(),
            pod_ip: "127.0.0.1".into(),
            dir: scratch(),
        }
    }

    /// `$(VAR)` references in command, args and env values, expanded as the kubelet does.
    fn expand(s: &str, env: &[(String, String)]) -> String {
        let mut out = s.to_string();
        for (k, v) in env {
            out = out.replace(&format!("$({k})"), v);
        }
        out
    }

    fn secret_value(&self, ns: &str, name: &str, key: &str) -> String {
        let s = self
            .api
            .object(&object_path("v1", "secrets", Some(ns), name))
            .unwrap_or_else(|| panic!("the pod refers to Secret {ns}/{name}, which is not there"));
        let b64 = s["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Secret {ns}/{name} has no key {key}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    fn run(&self, job: &Value) -> PodRun {
        let (mut cmd, pod, env) = self.container(job);
        let run = Run::from(cmd.output().expect("run the pod's container under unshare"));
        PodRun { pod, env, run }
    }

    /// The pod's container as a command, ready to run: its name and resolved environment
    /// besides. A Job's or a Deployment's pod template alike (`spec.template`).
    fn container(&self, job: &Value) -> (Command, String, Vec<(String, String)>) {
        let ns = job["metadata"]["namespace"].as_str().unwrap();
        let pod_name = format!("{}-x7k2p", job["metadata"]["name"].as_str().unwrap());
        let pod = &job["spec"]["template"]["spec"];
        assert!(
            pod["initContainers"].is_null(),
            "the kubelet double runs no init containers"
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "the agent's Job has one container");
        let c = &containers[0];
        assert!(
            c["envFrom"].is_null(),
            "envFrom would copy a whole Secret or ConfigMap into the environment"
        );

        let mut env: Vec<(String, String)> = Vec::new();
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                Self::expand(v, &env)
            } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match f {
                    "metadata.namespace" => ns.to_string(),
                    "metadata.name" => pod_name.clone(),
                    "status.podIP" => self.pod_ip.clone(),
                    other => panic!("the kubelet double does not resolve fieldRef {other}"),
                }
            } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                self.secret_value(ns, r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
            } else {
                panic!("the kubelet double does not resolve {e}")
            };
            env.push((name, value));
        }

        let volumes: BTreeMap<&str, PathBuf> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let name = v["name"].as_str().unwrap();
                let dir = if v.get("emptyDir").is_some() {
                    let d = self.dir.path().join("volumes").join(name);
                    std::fs::create_dir_all(&d).unwrap();
                    d
                } else if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                    self.claims
                        .get(claim)
                        .unwrap_or_else(|| panic!("no volume stands for PVC {claim}"))
                        .clone()
                } else if let Some(path) = v["hostPath"]["path"].as_str() {
                    self.host_paths
                        .get(path)
                        .unwrap_or_else(|| panic!("no directory stands for hostPath {path}"))
                        .clone()
                } else {
                    panic!("the kubelet double mounts emptyDir, PVC and hostPath volumes only: {v}")
                };
                (name, dir)
            })
            .collect();
        let mut binds: Vec<String> = Vec::new();
        for m in c["volumeMounts"].as_array().unwrap() {
            let mut src = volumes[m["name"].as_str().unwrap()].clone();
            if let Some(sub) = m["subPath"].as_str() {
                src = src.join(sub);
                std::fs::create_dir_all(&src).unwrap();
            }
            binds.push(src.display().to_string());
            binds.push(m["mountPath"].as_str().unwrap().to_string());
        }

        let command: Vec<String> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(c["args"].as_array().map(|a| a.iter()).into_iter().flatten())
            .map(|s| Self::expand(s.as_str().unwrap(), &env))
            .collect();
        assert_eq!(command[0], "coffer", "the image's entry point is coffer");
        let read_only = c["securityContext"]["readOnlyRootFilesystem"] == json!(true);

        // The user: the container's securityContext over the pod's. Volumes belong to the
        // fsGroup, as the kubelet makes them.
        let ctx = |field: &str| {
            c["securityContext"][field]
                .as_i64()
                .or_else(|| pod["securityContext"][field].as_i64())
        };
        let uid = ctx("runAsUser").unwrap_or(0);
        let gid = ctx("runAsGroup").unwrap_or(0);
        let fs_group = pod["securityContext"]["fsGroup"].as_i64();
        let non_root = c["securityContext"]["runAsNonRoot"]
            .as_bool()
            .or_else(|| pod["securityContext"]["runAsNonRoot"].as_bool());
        assert!(
            !(non_root == Some(true) && uid == 0),
            "the kubelet refuses a runAsNonRoot container that would run as root"
        );
        if let Some(fsg) = fs_group {
            for dir in volumes.values() {
                let ok = Command::new("chown")
                    .args(["-R", &format!("{uid}:{fsg}")])
                    .arg(dir)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "chown {}", dir.display());
            }
        }
        let groups = fs_group.map_or("--clear-groups".to_string(), |g| format!("--groups={g}"));

        // The mounts happen in a private mount namespace, so the host sees none of them; then
        // the container's process runs as its user, without capabilities.
        let script = r#"mode=$1; user=$2; group=$3; groups=$4; shift 4
while [ "$1" != "--" ]; do mkdir -p "$2"; mount --bind "$1" "$2"; shift 2; done; shift
if [ "$mode" = ro ]; then mount -o remount,bind,ro /; fi
exec setpriv --reuid="$user" --regid="$group" "$groups" --inh-caps=-all -- "$@""#;
        // The ServiceAccount token is readable by the pod's user, as its mount is.
        let kubeconfig = self.api.kubeconfig(self.dir.path()).unwrap();
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-ec",
            script,
            "sh",
        ])
        .arg(if read_only { "ro" } else { "rw" })
        .args([uid.to_string(), gid.to_string(), groups])
        .args(&binds)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .args(&command[1..])
        .env_clear()
        // The image's own environment.
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOSTNAME", &pod_name)
        .env("HOME", "/")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("KUBECONFIG", &kubeconfig)
        .env("COFFER_LOG", "info")
        .current_dir(c["workingDir"].as_str().unwrap_or("/"));
        (cmd, pod_name, env)
    }
}

fn s3_manifests(g: &Garage, src: &MariaDb, dst: &MariaDb) -> Vec<String> {
    vec![
        secret(
            "s3-secret",
            &[
                ("RESTIC_PASSWORD", REPO_PASSWORD),
                ("AWS_ACCESS_KEY_ID", g.access_key()),
                ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
            ],
        ),
        format!(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: s3}}\n\
             spec:\n  backend:\n    s3: {{endpoint: \"{}\", bucket: {}, prefix: /k8s/shop, region: garage}}\n    \
             storageSecretName: s3-secret\n",
            g.endpoint(),
            g.bucket()
        ),
        db_secret("src-auth", src),
        db_secret("dst-auth", dst),
        appbinding("src", src, "src-auth"),
        appbinding("dst", dst, "dst-auth"),
        backup_config("bc", "s3", "src", "--databases app", 3),
    ]
}

fn status_patches<'r>(
    reqs: &'r [coffer_testkit::kubeapi::ApiRequest],
    object: &str,
) -> Vec<&'r Value> {
    reqs.iter()
        .filter(|r| r.method == "PATCH" && r.path == format!("{object}/status"))
        .map(|r| r.body.as_ref().expect("a patch has a body"))
        .collect()
}

#[test]
fn backup_and_restore_jobs_run_as_a_kubelet_runs_them() {
    let g = Garage::start().expect("Garage is required (scripts/install-deps.sh builds it)");
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(64));
         INSERT INTO t SELECT seq, UNHEX(SHA2(seq, 256)) FROM seq_1_to_5000;",
    )
    .unwrap();
    let api = KubeApi::start().unwrap();
    let secret_values = [
        REPO_PASSWORD,
        g.secret_key(),
        src.root_password(),
        dst.root_password(),
    ];
    load(&api, &s3_manifests(&g, &src, &dst));
    let session = "bc-1764567000";
    let bs_path = api.insert(
        "backupsessions",
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {"name": session, "namespace": NS,
                         "creationTimestamp": "2026-12-01T05:30:00Z",
                         "labels": {"stash.appscode.com/invoker-name": "bc"}},
            "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                 "kind": "BackupConfiguration", "name": "bc"}}
        }),
    );

    // The backup Job, as the operator makes it.
    let jobs = operator_jobs(&api, &bs_path);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let job = &jobs[0];
    assert_eq!(job["metadata"]["name"], format!("stash-backup-{session}-0"));
    assert_no_secret_in(job, None, &secret_values);
    let kubelet = Kubelet::new(&api);
    let pod = kubelet.run(job);
    assert!(pod.run.ok, "the backup Job failed:\n{}", pod.run);
    assert_no_secret_in(job, Some(&pod.env), &secret_values);
    let backup_requests = api.requests();
    assert_the_chart_allows(&backup_requests, job);

    // What the agent wrote through the API.
    let bs = api.object(&bs_path).unwrap();
    assert_eq!(bs["status"]["phase"], "Succeeded", "{bs:#}");
    // The session names its executor as the operator's supervisor looks for it: the pod.
    assert_eq!(bs["status"]["executorPod"], pod.pod.as_str(), "{bs:#}");
    assert!(bs["status"].get("agentPid").is_none(), "{bs:#}");
    let snap = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!snap.is_empty(), "no snapshot id in the status: {bs:#}");
    let reqs = api.requests();
    // Only the built-in Task and Functions are looked up and not found (none is installed,
    // so the built-in ones run).
    assert!(
        reqs.iter().all(|r| r.code < 400
            || (r.code == 404
                && r.method == "GET"
                && (r
                    .path
                    .starts_with("/apis/stash.appscode.com/v1beta1/tasks/")
                    || r.path
                        .starts_with("/apis/stash.appscode.com/v1beta1/functions/")))),
        "every other request was answered: {reqs:#?}"
    );
    let patches = status_patches(&reqs, &bs_path);
    assert!(patches.len() >= 2, "Running, then the end: {patches:#?}");
    assert_eq!(patches[0]["status"]["phase"], "Running");
    assert!(reqs.iter().filter(|r| r.method == "PATCH").all(|r| {
        r.content_type.as_deref() == Some("application/merge-patch+json")
            && r.path.ends_with("/status")
    }));
    let got: Vec<&str> = reqs
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.as_str())
        .collect();
    for want in [
        bs_path.clone(),
        object_path(
            "stash.appscode.com/v1beta1",
            "backupconfigurations",
            Some(NS),
            "bc",
        ),
        object_path(
            "stash.appscode.com/v1alpha1",
            "repositories",
            Some(NS),
            "s3",
        ),
        object_path("v1", "secrets", Some(NS), "s3-secret"),
        object_path(
            "appcatalog.appscode.com/v1alpha1",
            "appbindings",
            Some(NS),
            "src",
        ),
        object_path("v1", "secrets", Some(NS), "src-auth"),
    ] {
        assert!(
            got.contains(&want.as_str()),
            "the agent never read {want}: {got:#?}"
        );
    }
    assert!(
        reqs.iter()
            .all(|r| matches!(r.method.as_str(), "GET" | "PATCH")),
        "the agent only reads and patches statuses: {reqs:#?}"
    );
    let repo = api
        .object(&object_path(
            "stash.appscode.com/v1alpha1",
            "repositories",
            Some(NS),
            "s3",
        ))
        .unwrap();
    assert_eq!(repo["status"]["snapshotCount"], 1, "{repo:#}");

    // restic lists the snapshot the status names.
    let url = format!("s3:{}/{}/k8s/shop", g.endpoint(), g.bucket());
    let env = [
        ("AWS_ACCESS_KEY_ID", g.access_key()),
        ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
        ("AWS_DEFAULT_REGION", "garage"),
    ];
    let snaps = restic_snapshots(&url, &env);
    assert!(
        snaps
            .iter()
            .any(|s| s["id"] == snap.as_str() || s["short_id"] == snap.as_str()),
        "restic does not list {snap}: {snaps:#?}"
    );

    // The restore Job, into a fresh server.
    let rs_paths = load(&api, &[restore_session("restore", "s3", "dst", "latest")]);
    let jobs = operator_jobs(&api, &rs_paths[0]);
    assert_eq!(jobs.len(), 1, "a standalone restore has one Job: {jobs:#?}");
    assert_eq!(jobs[0]["metadata"]["name"], "stash-restore-restore-0");
    assert_no_secret_in(&jobs[0], None, &secret_values);
    let pod = kubelet.run(&jobs[0]);
    assert!(pod.run.ok, "the restore Job failed:\n{}", pod.run);
    assert_no_secret_in(&jobs[0], Some(&pod.env), &secret_values);
    assert_the_chart_allows(&api.requests()[backup_requests.len()..], &jobs[0]);
    let rs = api.object(&rs_paths[0]).unwrap();
    assert_eq!(rs["status"]["phase"], "Succeeded", "{rs:#}");
    assert_eq!(rs["status"]["executorPod"], pod.pod.as_str(), "{rs:#}");
    assert!(rs["status"].get("agentPid").is_none(), "{rs:#}");
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    assert!(!want.is_empty());
    let have = coffer_testkit::verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, have, "CHECKSUM TABLE differs after the restore Job");
}

/// A Repository with a `local` backend on Kubernetes: the backup and restore Jobs mount its
/// hostPath at mountPath, and the agent opens `<mountPath>/<subPath>` there. The node's path
/// does not exist on this machine (a directory stands for it, bind-mounted only inside the
/// pod), so an agent that opened the hostPath's path instead would fail.
#[test]
fn a_local_repository_is_mounted_into_the_backup_and_restore_jobs() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(64));
         INSERT INTO t SELECT seq, UNHEX(SHA2(seq, 256)) FROM seq_1_to_3000;",
    )
    .unwrap();
    let api = KubeApi::start().unwrap();
    let node = scratch();
    let node_dir = node.path().join("node-backups");
    std::fs::create_dir_all(&node_dir).unwrap();
    // Absolute, as Kubernetes wants it, and under this test's scratch directory so that the
    // mount point the "kubelet" creates is not left on this machine's root.
    let mount_path = node.path().join("pod").join("safe-data");
    // The pod's user must reach the mount point, as it reaches `/` in a real pod.
    std::fs::create_dir_all(mount_path.parent().unwrap()).unwrap();
    for d in [node.path(), &node.path().join("pod")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    const HOST_PATH: &str = "/coffer-e2e-node-only/backups";
    assert!(!std::path::Path::new(HOST_PATH).exists());
    load(
        &api,
        &[
            secret("local-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
            format!(
                "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: local}}\n\
                 spec:\n  backend:\n    local: {{mountPath: \"{}\", subPath: shop, \
                 hostPath: {{path: {HOST_PATH}, type: DirectoryOrCreate}}}}\n    \
                 storageSecretName: local-secret\n",
                mount_path.display()
            ),
            db_secret("src-auth", &src),
            db_secret("dst-auth", &dst),
            appbinding("src", &src, "src-auth"),
            appbinding("dst", &dst, "dst-auth"),
            backup_config("bc", "local", "src", "--databases app", 3),
        ],
    );
    let bs_path = api.insert(
        "backupsessions",
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {"name": "bc-1764567000", "namespace": NS,
                         "creationTimestamp": "2026-12-01T05:30:00Z",
                         "labels": {"stash.appscode.com/invoker-name": "bc"}},
            "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                 "kind": "BackupConfiguration", "name": "bc"}}
        }),
    );
    let mut kubelet = Kubelet::new(&api);
    kubelet
        .host_paths
        .insert(HOST_PATH.into(), node_dir.clone());

    let jobs = operator_jobs(&api, &bs_path);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let pod = &jobs[0]["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hostPath"]["path"] == HOST_PATH)
        .unwrap_or_else(|| panic!("the backup Job does not mount the hostPath: {pod:#}"));
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == volume["name"]
                && m["mountPath"] == mount_path.display().to_string()),
        "not mounted at mountPath: {pod:#}"
    );
    let run = kubelet.run(&jobs[0]);
    assert!(run.run.ok, "the backup Job failed:\n{}", run.run);
    let bs = api.object(&bs_path).unwrap();
    assert_eq!(bs["status"]["phase"], "Succeeded", "{bs:#}");
    let snap = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // On the node: the hostPath's directory, subPath inside it, holds the repository.
    let snaps = restic_snapshots(&node_dir.join("shop").display().to_string(), &[]);
    assert!(
        snaps
            .iter()
            .any(|s| s["id"] == snap.as_str() || s["short_id"] == snap.as_str()),
        "restic does not list {snap} on the node's directory: {snaps:#?}"
    );

    let rs_paths = load(
        &api,
        &[restore_session("restore", "local", "dst", "latest")],
    );
    let jobs = operator_jobs(&api, &rs_paths[0]);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    let run = kubelet.run(&jobs[0]);
    assert!(run.run.ok, "the restore Job failed:\n{}", run.run);
    let rs = api.object(&rs_paths[0]).unwrap();
    assert_eq!(rs["status"]["phase"], "Succeeded", "{rs:#}");
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    assert!(!want.is_empty());
    let have = coffer_testkit::verify::checksums(&mut dst.conn().unwrap(), &["app"]).unwrap();
    assert_eq!(want, have, "CHECKSUM TABLE differs after the restore Job");
}

/// spec.verification.schedule on Kubernetes: the operator's verification CronJob starts a Job
/// whose pod runs `coffer verify` — here run as a kubelet runs it, after a backup Job — which
/// restores the newest snapshot into a throwaway server inside the pod (its scratch space, the
/// emptyDir), checks it, and writes lastVerification through the API with only what the
/// chart's coffer-verify-job ClusterRole grants.
#[test]
fn the_verification_cron_job_verifies_the_newest_snapshot_as_a_kubelet_runs_it() {
    let g = Garage::start().expect("Garage is required (scripts/install-deps.sh builds it)");
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(64));
         INSERT INTO t SELECT seq, UNHEX(SHA2(seq, 256)) FROM seq_1_to_3000;",
    )
    .unwrap();
    let api = KubeApi::start().unwrap();
    let secret_values = [REPO_PASSWORD, g.secret_key(), src.root_password()];
    let mut manifests = s3_manifests(&g, &src, &dst);
    let bc = manifests.last_mut().unwrap();
    let mut v: Value = serde_yaml::from_str(bc).unwrap();
    v["spec"]["verification"] = json!({
        "schedule": "0 4 * * *",
        "queries": [{"name": "rows", "sql": "SELECT COUNT(*) FROM app.t", "expect": "3000"}],
    });
    *bc = serde_yaml::to_string(&v).unwrap();
    load(&api, &manifests);
    let bs_path = api.insert(
        "backupsessions",
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {"name": "bc-1764567000", "namespace": NS,
                         "creationTimestamp": "2026-12-01T05:30:00Z",
                         "labels": {"stash.appscode.com/invoker-name": "bc"}},
            "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                 "kind": "BackupConfiguration", "name": "bc"}}
        }),
    );
    let kubelet = Kubelet::new(&api);
    let backup = kubelet.run(&operator_jobs(&api, &bs_path)[0]);
    assert!(backup.run.ok, "the backup Job failed:\n{}", backup.run);
    let bs = api.object(&bs_path).unwrap();
    assert_eq!(bs["status"]["phase"], "Succeeded", "{bs:#}");
    let snap = bs["status"]["targets"][0]["stats"][0]["snapshots"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let before = api.requests().len();

    let job = operator_verify_job(&api, "bc");
    assert_no_secret_in(&job, None, &secret_values);
    let pod = kubelet.run(&job);
    assert!(pod.run.ok, "the verification Job failed:\n{}", pod.run);
    assert_no_secret_in(&job, Some(&pod.env), &secret_values);
    let reqs = api.requests()[before..].to_vec();
    assert_the_chart_allows(&reqs, &job);
    let bc_path = object_path(
        "stash.appscode.com/v1beta1",
        "backupconfigurations",
        Some(NS),
        "bc",
    );
    assert!(
        reqs.iter()
            .filter(|r| r.method != "GET")
            .all(|r| r.method == "PATCH" && r.path == format!("{bc_path}/status")),
        "the verification writes only the configuration's status: {reqs:#?}"
    );

    let st = &api.object(&bc_path).unwrap()["status"];
    let last = &st["lastVerification"];
    assert_eq!(last["phase"], "Succeeded", "{st:#}");
    // The backup's snapshot was verified, then tagged (which gives it a new id: restic's
    // snapshot files are immutable).
    let verified = last["snapshot"].as_str().unwrap();
    let condition = |t: &str| {
        last["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {st:#}"))
            .clone()
    };
    let tagged = condition("SnapshotTagged");
    let said = tagged["message"].as_str().unwrap();
    assert!(
        said.contains(&format!(
            "snapshot {} is now {}",
            &snap[..8],
            &verified[..8]
        )),
        "the backup's snapshot {snap} was verified and tagged: {st:#}"
    );
    assert!(last["recoverySeconds"].as_f64().unwrap() > 0.0, "{st:#}");
    assert_eq!(st["lastVerifiedTime"], last["time"], "{st:#}");
    for t in [
        "ServerStarted",
        "SnapshotRestored",
        "TablesChecked",
        "QueriesChecked",
    ] {
        assert_eq!(condition(t)["status"], "True", "{t}: {st:#}");
    }
    // The throwaway server ran in the pod's emptyDir and is gone from it.
    let tmp = kubelet.dir.path().join("volumes").join("stash-tmp-dir");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("coffer-verify-")
        })
        .collect();
    assert!(
        left.is_empty(),
        "the throwaway server's directory is left: {left:?}"
    );
}

#[test]
fn the_catalog_reads_and_patches_through_the_api_and_meets_conflicts() {
    use coffer_engine::{Catalog, CatalogError};
    let api = KubeApi::start().unwrap();
    let dir = scratch();
    let cat = coffer_kubernetes::KubeCatalog::from_kubeconfig(&api.kubeconfig(dir.path()).unwrap())
        .unwrap();
    let path = api.insert(
        "backupsessions",
        json!({"apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
               "metadata": {"name": "s", "namespace": NS},
               "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                    "kind": "BackupConfiguration", "name": "bc"}},
               "status": {"phase": "Pending", "error": "left over"}}),
    );
    let kind = coffer_api::Kind::BackupSession;
    let read = cat
        .get(kind, NS, "s")
        .unwrap()
        .expect("the session is there");
    assert!(read.meta().resource_version.is_some());
    assert_eq!(cat.get(kind, NS, "nope").unwrap(), None);

    let mut running = read.clone();
    let coffer_api::Resource::BackupSession(bs) = &mut running else {
        panic!("a BackupSession")
    };
    let st = bs.status_mut();
    st.phase = Some(coffer_api::phase::SessionPhase::Running);
    st.error = None;
    let written = cat.patch_status(&running).unwrap();
    let stored = api.object(&path).unwrap();
    assert_eq!(
        stored["status"],
        json!({"phase": "Running"}),
        "error nulled by the patch"
    );
    assert_eq!(
        written.meta().resource_version.as_deref(),
        stored["metadata"]["resourceVersion"].as_str()
    );

    // The copy read before that write is stale now.
    assert_eq!(
        cat.patch_status(&read),
        Err(CatalogError::Conflict {
            kind,
            namespace: NS.into(),
            name: "s".into()
        })
    );
    assert_eq!(api.object(&path).unwrap()["status"]["phase"], "Running");

    // update_status reads again and writes over the current version.
    let done = coffer_engine::catalog::update_status(&cat, kind, NS, "s", &mut |r| {
        if let coffer_api::Resource::BackupSession(bs) = r {
            bs.status_mut().phase = Some(coffer_api::phase::SessionPhase::Succeeded);
        }
    });
    assert!(done.is_some());
    assert_eq!(api.object(&path).unwrap()["status"]["phase"], "Succeeded");
    let codes: Vec<(String, u16)> = api
        .requests()
        .into_iter()
        .map(|r| (r.method, r.code))
        .collect();
    assert!(codes.contains(&("PATCH".to_string(), 409)), "{codes:?}");
}

#[test]
fn galera_backup_job_then_one_restore_job_per_replica_fill_pvcs_a_cluster_starts_from() {
    use coffer_testkit::galera::{self, GaleraCluster, GaleraOptions};
    let _one_at_a_time = crate::galera::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let g = Garage::start().expect("Garage is required");
    let c = GaleraCluster::start(GaleraOptions {
        nodes: 2,
        ..Default::default()
    })
    .unwrap();
    c.node(0)
        .exec(
            "CREATE DATABASE shop; USE shop;
             CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2));
             INSERT INTO items SELECT seq, CONCAT('item-', seq), seq * 1.5 FROM seq_1_to_5000;",
        )
        .unwrap();
    let want =
        coffer_testkit::verify::checksums(&mut c.node(0).conn().unwrap(), &["shop"]).unwrap();
    let api = KubeApi::start().unwrap();
    let bc = backup_config_with(
        "cluster-backup",
        "s3",
        "cluster",
        &[("sstTimeout", "120s")],
        10,
    )
    .replace("mariadb-backup-10.5.8", "perconaxtradb-backup-5.7");
    load(
        &api,
        &[
            secret(
                "s3-secret",
                &[
                    ("RESTIC_PASSWORD", REPO_PASSWORD),
                    ("AWS_ACCESS_KEY_ID", g.access_key()),
                    ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
                ],
            ),
            format!(
                "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: s3}}\n\
                 spec:\n  backend:\n    s3: {{endpoint: \"{}\", bucket: {}, prefix: /k8s/galera, region: garage}}\n    \
                 storageSecretName: s3-secret\n",
                g.endpoint(),
                g.bucket()
            ),
            secret(
                "cluster-auth",
                &[("username", "root"), ("password", c.root_password())],
            ),
            crate::galera::cluster_appbinding("cluster", &c, 0, c.group()),
            bc,
        ],
    );
    let bs_path = api.insert(
        "backupsessions",
        json!({
            "apiVersion": "stash.appscode.com/v1beta1", "kind": "BackupSession",
            "metadata": {"name": "cluster-backup-1", "namespace": NS},
            "spec": {"invoker": {"apiGroup": "stash.appscode.com",
                                 "kind": "BackupConfiguration", "name": "cluster-backup"}}
        }),
    );

    // The backup Job: garbd runs in the pod, and the SST listener advertises the pod's IP.
    let mut kubelet = Kubelet::new(&api);
    kubelet.pod_ip = "127.0.0.2".into();
    let secret_values = [REPO_PASSWORD, g.secret_key(), c.root_password()];
    let jobs = operator_jobs(&api, &bs_path);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_no_secret_in(&jobs[0], None, &secret_values);
    let pod = kubelet.run(&jobs[0]);
    assert!(pod.run.ok, "the Galera backup Job failed:\n{}", pod.run);
    assert_no_secret_in(&jobs[0], Some(&pod.env), &secret_values);
    assert_the_chart_allows(&api.requests(), &jobs[0]);
    let bs = api.object(&bs_path).unwrap();
    assert_eq!(bs["status"]["phase"], "Succeeded", "{bs:#}");
    assert!(
        pod.run.stderr.contains("listening on 127.0.0.2:"),
        "the SST listener uses the pod's IP:\n{}",
        pod.run
    );

    // One restore Job per replica, each with its PVC mounted where target.volumeMounts says.
    let rs = "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\n\
              metadata: {name: cluster-restore}\n\
              spec:\n  task: {name: perconaxtradb-restore-5.7}\n  repository: {name: s3}\n  target:\n    \
              replicas: 2\n    ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: cluster}\n    \
              volumeMounts: [{name: data-cluster-restore, mountPath: /var/lib/mysql}]\n    \
              volumeClaimTemplates:\n    - metadata: {name: \"data-cluster-restore-${POD_ORDINAL}\"}\n      \
              spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n";
    let rs_path = load(&api, &[rs.to_string()]).remove(0);
    // The operator's Jobs, one per replica, each with its POD_ORDINAL and its replica's PVC.
    let jobs = operator_jobs(&api, &rs_path);
    let names: Vec<&str> = jobs
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "stash-restore-cluster-restore-0-0",
            "stash-restore-cluster-restore-0-1"
        ]
    );
    let pvcs = scratch();
    let mut dirs = Vec::new();
    for (ordinal, job) in jobs.iter().enumerate() {
        let claim = format!("data-cluster-restore-{ordinal}");
        let dir = pvcs.path().join(&claim);
        std::fs::create_dir_all(&dir).unwrap();
        if ordinal == 1 {
            // As an ext4-formatted PVC comes: not data, and it stays.
            std::fs::create_dir(dir.join("lost+found")).unwrap();
        }
        kubelet.claims.insert(claim.clone(), dir.clone());
        assert_no_secret_in(job, None, &secret_values);
        let before = api.requests().len();
        let pod = kubelet.run(job);
        assert!(pod.run.ok, "restore Job {ordinal} failed:\n{}", pod.run);
        assert_the_chart_allows(&api.requests()[before..], job);
        assert!(
            pod.env
                .contains(&("POD_ORDINAL".to_string(), ordinal.to_string())),
            "{:?}",
            pod.env
        );
        // Each Job records its replica; the session succeeds once both have.
        let st = api.object(&rs_path).unwrap()["status"].clone();
        let (want_phase, want_hosts) = match ordinal {
            0 => ("Running", vec!["host-0-replica-0"]),
            _ => ("Succeeded", vec!["host-0-replica-0", "host-0-replica-1"]),
        };
        assert_eq!(st["phase"], want_phase, "{st:#}");
        assert_eq!(st["totalHosts"], 2, "{st:#}");
        let hosts: Vec<&str> = st["stats"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["phase"] == "Succeeded")
            .filter_map(|h| h["hostname"].as_str())
            .collect();
        assert_eq!(hosts, want_hosts, "{st:#}");
        let mut entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert!(entries.contains(&"ibdata1".to_string()), "{entries:?}");
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("ibdata1")).unwrap()),
            65534,
            "written by the pod's user"
        );
        assert!(
            entries.iter().all(|e| !e.starts_with(".coffer-")),
            "no restore leftovers in the PVC: {entries:?}"
        );
        assert!(
            !entries.contains(&"grastate.dat".to_string()),
            "a new history"
        );
        dirs.push(dir);
    }
    let (root_password, sst_user, sst_password) = (
        c.root_password().to_string(),
        c.sst_user().to_string(),
        c.sst_password().to_string(),
    );
    drop(c);

    // Replica 0's PVC bootstraps a new cluster; replica 1's starts too, and both hold the
    // source's data.
    for (i, dir) in dirs.iter().enumerate() {
        let restored = galera::start_restored(
            dir,
            &format!("k8s_restored_{i}"),
            &root_password,
            &sst_user,
            &sst_password,
        )
        .unwrap_or_else(|e| panic!("PVC {i} does not start as a cluster: {e:#}"));
        let got =
            coffer_testkit::verify::checksums(&mut restored.node(0).conn().unwrap(), &["shop"])
                .unwrap();
        assert_eq!(want, got, "replica {i}: CHECKSUM TABLE");
    }
}

/// A physical restore Job into a PVC that already holds data, killed in the middle of the
/// swap: nothing of the old data is gone, and the next Job finishes the swap and restores.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the crash points are compiled into debug builds only"
)]
fn a_restore_job_killed_mid_swap_loses_nothing_in_the_pvc_and_the_next_one_finishes() {
    let g = Garage::start().expect("Garage is required");
    let src = MariaDb::start().unwrap();
    src.exec(
        "CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_3000;",
    )
    .unwrap();
    let manifests = vec![
        secret(
            "s3-secret",
            &[
                ("RESTIC_PASSWORD", REPO_PASSWORD),
                ("AWS_ACCESS_KEY_ID", g.access_key()),
                ("AWS_SECRET_ACCESS_KEY", g.secret_key()),
            ],
        ),
        format!(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: s3}}\n\
             spec:\n  backend:\n    s3: {{endpoint: \"{}\", bucket: {}, prefix: /k8s/physical, region: garage}}\n    \
             storageSecretName: s3-secret\n",
            g.endpoint(),
            g.bucket()
        ),
        db_secret("src-auth", &src),
        appbinding("src", &src, "src-auth"),
        backup_config_with("bc", "s3", "src", &[("method", "physical")], 5),
    ];
    // A standalone physical backup reads the server's data directory, which a Job in its own
    // pod cannot: the backups are taken here, into the same repository the Jobs restore from.
    let cf = Coffer::new();
    assert!(cf.apply("m.yaml", &manifests.join("---\n")).ok);
    let backup = || {
        let run = cf.run(&["backup", "bc", "--wait"]);
        assert!(run.ok, "{run}");
    };
    let api = KubeApi::start().unwrap();
    load(&api, &manifests);
    let mut kubelet = Kubelet::new(&api);
    let restore_session = |name: &str, replace: bool| {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\nmetadata: {{name: {name}}}\n\
             spec:\n  task:\n    name: mariadb-restore-10.5.8\n    params: [{{name: replaceDataDir, value: \"{replace}\"}}]\n  \
             repository: {{name: s3}}\n  target:\n    \
             ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: src}}\n    \
             volumeMounts: [{{name: data-mysql, mountPath: /var/lib/mysql}}]\n    \
             volumeClaimTemplates:\n    - metadata: {{name: \"data-mysql-${{POD_ORDINAL}}\"}}\n      \
             spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        )
    };
    let pvcs = scratch();
    let pvc = pvcs.path().join("data-mysql-0");
    std::fs::create_dir_all(&pvc).unwrap();
    kubelet.claims.insert("data-mysql-0".into(), pvc.clone());
    // The operator's Job for a pending session (a claim template makes it replica 0's, with
    // the PVC `data-mysql-0` mounted where volumeMounts says).
    let restore_job = |rs_path: &str| {
        let mut jobs = operator_jobs(&api, rs_path);
        assert_eq!(jobs.len(), 1, "{jobs:#?}");
        jobs.remove(0)
    };
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // First backup, restored into the empty PVC.
    backup();
    let first_path = load(&api, &[restore_session("first", false)]).remove(0);
    let pod = kubelet.run(&restore_job(&first_path));
    assert!(pod.run.ok, "restore 1:\n{}", pod.run);
    let first = names(&pvc);
    assert!(first.contains(&"ibdata1".to_string()), "{first:?}");
    let first_checkpoints = std::fs::read_to_string(pvc.join("xtrabackup_checkpoints")).unwrap();

    // More data, a second backup; its restore over the PVC is killed between moving the old
    // entries aside and moving the new ones in.
    src.exec("USE app; INSERT INTO t SELECT seq, SHA2(seq, 256) FROM seq_3001_to_6000")
        .unwrap();
    backup();
    let rs_path = load(&api, &[restore_session("second", true)]).remove(0);
    let job = restore_job(&rs_path);
    let pod = kubelet.run(&with_env(
        job.clone(),
        "COFFER_FAULT_AT",
        "swap:moved-aside",
    ));
    assert!(!pod.run.ok, "the fault point kills the agent:\n{}", pod.run);
    let old = pvc.join(".coffer-old");
    assert_eq!(names(&old), first, "every old entry is aside, none deleted");
    assert_eq!(
        std::fs::read_to_string(old.join("xtrabackup_checkpoints")).unwrap(),
        first_checkpoints
    );
    assert!(pvc.join(".coffer-swap-2").exists() && pvc.join(".coffer-restore/ibdata1").exists());

    // The next run of the Job finishes the interrupted swap, then restores.
    let pod = kubelet.run(&job);
    assert!(pod.run.ok, "restore 2, again:\n{}", pod.run);
    assert!(
        pod.run
            .stderr
            .contains("an interrupted restore had moved the previous data aside"),
        "{}",
        pod.run
    );
    assert_eq!(
        api.object(&rs_path).unwrap()["status"]["phase"],
        "Succeeded"
    );
    let after = names(&pvc);
    assert!(
        after.iter().all(|n| !n.starts_with(".coffer-")),
        "{after:?}"
    );
    assert_ne!(
        std::fs::read_to_string(pvc.join("xtrabackup_checkpoints")).unwrap(),
        first_checkpoints,
        "the second snapshot is in place"
    );
    let port = coffer_testkit::free_port();
    let _server = crate::physical::start_on(&pvc, port);
    let mut restored = crate::physical::connect(port, src.root_password());
    let want = coffer_testkit::verify::checksums(&mut src.conn().unwrap(), &["app"]).unwrap();
    assert!(!want.is_empty());
    assert_eq!(
        want,
        coffer_testkit::verify::checksums(&mut restored, &["app"]).unwrap(),
        "the PVC holds the second backup's data"
    );
}

/// The archive's Deployment as the operator applies it for BinlogArchive `name` (its decision
/// on the archive and its Repository as the double holds them, no Deployment yet), and the
/// status the operator writes with it, stored into the double as the act layer would.
fn operator_archive_deployment(api: &KubeApi, name: &str) -> Value {
    use coffer_api::{Kind, Resource};
    use coffer_kubernetes::{decide, KubeAction, OperatorSettings};
    let path = object_path("coffer.dev/v1alpha1", "binlogarchives", Some(NS), name);
    let v = api.object(&path).expect("the archive is stored");
    let Ok(Resource::BinlogArchive(a)) = Resource::from_json(Kind::BinlogArchive, v.clone()) else {
        panic!("{path} is not a BinlogArchive")
    };
    let observed = decide::binlog_archive::Observed {
        resource_version: v["metadata"]["resourceVersion"].as_str().map(String::from),
        repository: stored_repository(api, &a.spec.repository.name),
        deployment: None,
    };
    let actions = decide::binlog_archive::decide(
        &a,
        &observed,
        &OperatorSettings::default(),
        jiff::Timestamp::now(),
    );
    let mut deployment = None;
    for act in &actions {
        match act {
            KubeAction::Apply(o) if o["kind"] == "Deployment" => deployment = Some(o.clone()),
            KubeAction::PatchStatus { status, .. } => {
                let mut stored = api.object(&path).unwrap();
                stored["status"] = status.clone();
                api.insert("binlogarchives", stored);
            }
            _ => {}
        }
    }
    deployment.unwrap_or_else(|| panic!("the operator applies no Deployment: {actions:#?}"))
}

fn condition_in<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status:#}"))
}

/// A BinlogArchive on Kubernetes: the operator's Deployment runs `coffer archive` in its pod —
/// here run as a kubelet runs it — which reads the archive, its AppBinding, Repository and
/// Secrets through the API, streams the server's binlog into the Repository's local volume
/// (a PVC mounted at mountPath), writes the archive's status (Streaming, lastArchivedGtid)
/// through the API with only what coffer-archive-job grants, and on SIGTERM (the pod being
/// stopped) stores its open segment and exits cleanly.
#[test]
fn the_archive_deployment_streams_the_binlog_as_a_kubelet_runs_it() {
    use coffer_api::gtid::GtidState;
    use coffer_testkit::MariaDbOptions;
    let src = MariaDb::start_with(MariaDbOptions::default().binlog(11, 0)).unwrap();
    src.exec("CREATE DATABASE app; USE app; CREATE TABLE t (id INT PRIMARY KEY, v INT);")
        .unwrap();
    let api = KubeApi::start().unwrap();
    let node = scratch();
    // A hostPath that exists only as the pod's mount: the runner must open the repository at
    // mountPath/subPath, as an agent in a pod does, not at the node's path.
    const HOST_PATH: &str = "/coffer-e2e-node-only/archive";
    assert!(!std::path::Path::new(HOST_PATH).exists());
    let node_dir = node.path().join("node-archive");
    std::fs::create_dir_all(&node_dir).unwrap();
    let mount_path = node.path().join("pod").join("safe-data");
    std::fs::create_dir_all(mount_path.parent().unwrap()).unwrap();
    for d in [node.path(), &node.path().join("pod")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    load(
        &api,
        &[
            secret("local-secret", &[("RESTIC_PASSWORD", REPO_PASSWORD)]),
            format!(
                "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: local}}\n\
                 spec:\n  backend:\n    local: {{mountPath: \"{}\", subPath: shop, \
                 hostPath: {{path: {HOST_PATH}, type: DirectoryOrCreate}}}}\n    \
                 storageSecretName: local-secret\n",
                mount_path.display()
            ),
            db_secret("src-auth", &src),
            appbinding("src", &src, "src-auth"),
            "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\nmetadata: {name: pitr}\n\
             spec:\n  appBinding: {name: src}\n  repository: {name: local}\n  flushInterval: 1s\n"
                .to_string(),
        ],
    );
    let archive_path = object_path("coffer.dev/v1alpha1", "binlogarchives", Some(NS), "pitr");
    let deployment = operator_archive_deployment(&api, "pitr");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let st = api.object(&archive_path).unwrap()["status"].clone();
    assert_eq!(st["phase"], "Pending", "{st:#}");
    assert_eq!(condition_in(&st, "DeploymentCreated")["status"], "True");

    let mut kubelet = Kubelet::new(&api);
    kubelet
        .host_paths
        .insert(HOST_PATH.into(), node_dir.clone());
    let (mut cmd, pod, _env) = kubelet.container(&deployment);
    let log_path = node.path().join("archive.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the archive pod's container under unshare");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let status = || api.object(&archive_path).unwrap()["status"].clone();
    crate::archive::wait_until(
        std::time::Duration::from_secs(120),
        "the archive streams",
        || {
            let st = status();
            assert_ne!(
                st["phase"],
                "Failed",
                "the archiver failed: {st:#}\n{}",
                log()
            );
            st["phase"] == "Streaming"
        },
    );

    src.exec("USE app; INSERT INTO t SELECT seq, seq FROM seq_1_to_100; UPDATE t SET v = v + 1; DELETE FROM t WHERE id > 90;")
        .unwrap();
    let want: GtidState = src.query_strings("SELECT @@gtid_binlog_pos").unwrap()[0][0]
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let archived = |st: &Value| -> Option<GtidState> {
        st["lastArchivedGtid"].as_str().and_then(|g| g.parse().ok())
    };
    crate::archive::wait_until(
        std::time::Duration::from_secs(120),
        &format!("{want} is archived (pod {pod})"),
        || archived(&status()).as_ref() == Some(&want),
    );

    // The pod is stopped: SIGTERM, as the kubelet sends it; the runner stores its open
    // segment and exits 0.
    let exit = crate::archive::stop(child, libc::SIGTERM);
    assert!(exit.success(), "the archiver exited {exit}:\n{}", log());
    let st = status();
    assert_eq!(archived(&st), Some(want.clone()), "{st:#}");
    assert_eq!(st["phase"], "Pending", "{st:#}");
    assert_eq!(condition_in(&st, "Streaming")["reason"], "Stopped");
    // The operator's condition survives the runner's writes.
    assert_eq!(condition_in(&st, "DeploymentCreated")["status"], "True");
    assert!(st["segmentCount"].as_u64().unwrap_or(0) >= 1, "{st:#}");
    // The segments are on the node's directory, in subPath, a restic repository.
    let snaps = restic_snapshots(&node_dir.join("shop").display().to_string(), &[]);
    assert!(!snaps.is_empty(), "no segment snapshot on the volume");
    assert_the_chart_allows(&api.requests(), &deployment);
}
