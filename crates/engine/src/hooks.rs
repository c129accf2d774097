//! Hooks around a session: Kubernetes-style handlers (exec, httpGet, httpPost) run on this
//! machine, with postBackup/postRestore's executionPolicy deciding whether they run at all.
//! Where an `exec` handler runs is the platform's to say ([`HookExec`]): the local platform
//! runs it as a process here, next to the database; the agent in a Kubernetes Job, which is
//! not the database's pod, has it run in the target's pod ([`RemoteExec`]).

use std::{collections::BTreeMap, time::Duration};

use coffer_api::meta::Handler;

use crate::error::{EngineError, EngineResult};

/// Whether a post hook runs given how the session went.
pub fn should_run_post(h: &Handler, succeeded: bool, final_attempt: bool) -> bool {
    match h.execution_policy.as_deref().unwrap_or("Always") {
        "OnSuccess" => succeeded,
        "OnFailure" => !succeeded,
        "OnFinalRetryFailure" => !succeeded && final_attempt,
        _ => true,
    }
}

/// The AppBinding a session's hooks act on: `(namespace, name)`.
pub type Target<'a> = (&'a str, &'a str);

/// Runs a hook's `exec` handler where the platform runs it instead of this process (on
/// Kubernetes: in the target's pod, through `pods/exec`, as Stash does).
pub trait RemoteExec: Send + Sync {
    /// Runs `command` in the target's pod (`container`: the Handler's `containerName`; none:
    /// the pod's default container); Ok: what ran, for the hook's condition.
    fn exec(
        &self,
        which: &str,
        target: Target<'_>,
        command: &[String],
        container: Option<&str>,
    ) -> EngineResult<String>;
}

/// Where a hook's `exec` handler runs, as the platform says.
#[derive(Clone, Default)]
pub enum HookExec {
    /// As a process on this machine (the local platform, which runs beside the database).
    #[default]
    Local,
    /// Nowhere: a platform whose sessions do not run beside the database and that cannot
    /// reach its process refuses exec hooks before anything runs.
    Refused,
    /// In the target's pod, through the platform (the agent in a Kubernetes Job).
    InTargetPod(std::sync::Arc<dyn RemoteExec>),
}

impl std::fmt::Debug for HookExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookExec::Local => "Local",
            HookExec::Refused => "Refused",
            HookExec::InTargetPod(_) => "InTargetPod",
        })
    }
}

fn refused(which: &str) -> EngineError {
    EngineError::Step(format!(
        "the {which} hook has an exec handler, which this platform cannot run: the session \
         does not run beside the database, and running the command in the target's pod needs \
         pods/exec; use an httpGet or httpPost handler meanwhile. Nothing was run"
    ))
}

/// Refuses a session whose hooks (`(name, handler)`) include an `exec` handler the platform
/// cannot run, before any of them or the session's work runs.
pub fn check(hook_exec: &HookExec, hooks: &[(&str, Option<&Handler>)]) -> EngineResult<()> {
    match hook_exec {
        HookExec::Local | HookExec::InTargetPod(_) => Ok(()),
        HookExec::Refused => match hooks
            .iter()
            .find(|(_, h)| h.is_some_and(|h| h.exec.is_some()))
        {
            Some((which, _)) => Err(refused(which)),
            None => Ok(()),
        },
    }
}

/// Runs a hook (an exec handler where `hook_exec` says, in `target`'s pod when remote); the
/// error says what failed.
pub fn run(
    which: &str,
    h: &Handler,
    env: &BTreeMap<String, String>,
    hook_exec: &HookExec,
    target: Option<Target<'_>>,
) -> EngineResult<String> {
    if let Some(exec) = &h.exec {
        match hook_exec {
            HookExec::Local => {}
            HookExec::Refused => return Err(refused(which)),
            HookExec::InTargetPod(remote) => {
                let target = target.ok_or_else(|| {
                    EngineError::Step(format!(
                        "the {which} hook's exec handler runs in the target's pod, and the \
                         session names no target AppBinding"
                    ))
                })?;
                return remote.exec(which, target, &exec.command, h.container_name.as_deref());
            }
        }
        return crate::tasks::run_exec(which, &exec.command, None, env).map(|_| {
            format!(
                "{which} hook ran `{}`",
                exec.command.first().cloned().unwrap_or_default()
            )
        });
    }
    let (method, action) = match (&h.http_get, &h.http_post) {
        (Some(a), _) => ("GET", a),
        (None, Some(a)) => ("POST", a),
        _ => {
            return Err(EngineError::Step(format!(
                "{which} hook has no exec, httpGet or httpPost handler (tcpSocket is not supported)"
            )))
        }
    };
    let scheme = action
        .scheme
        .as_deref()
        .unwrap_or("HTTP")
        .to_ascii_lowercase();
    let host = action.host.as_deref().unwrap_or("127.0.0.1");
    let port = match &action.port {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => if scheme == "https" { "443" } else { "80" }.to_string(),
    };
    let path = action.path.as_deref().unwrap_or("/");
    let url = format!(
        "{scheme}://{host}:{port}{}{path}",
        if path.starts_with('/') { "" } else { "/" }
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| EngineError::Step(format!("{which} hook: {e}")))?;
    let mut req = if method == "GET" {
        client.get(&url)
    } else {
        client.post(&url)
    };
    for hd in &action.http_headers {
        req = req.header(&hd.name, &hd.value);
    }
    if method == "POST" {
        if let Some(b) = &action.body {
            req = req.body(b.clone());
        } else if !action.form.is_empty() {
            let form: Vec<String> = action
                .form
                .iter()
                .map(|f| format!("{}={}", urlencode(&f.name), urlencode(&f.value)))
                .collect();
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.join("&"));
        }
    }
    let resp = req
        .send()
        .map_err(|e| EngineError::Step(format!("{which} hook: {method} {url} failed: {e}")))?;
    let status = resp.status();
    if !(200..400).contains(&status.as_u16()) {
        return Err(EngineError::Step(format!(
            "{which} hook: {method} {url} answered {status}"
        )));
    }
    Ok(format!("{which} hook: {method} {url} answered {status}"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_hook(path: &std::path::Path) -> Handler {
        serde_json::from_value(serde_json::json!({
            "exec": {"command": ["touch", path.display().to_string()]}
        }))
        .unwrap()
    }

    #[test]
    fn a_refused_exec_hook_is_refused_up_front_and_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let exec = exec_hook(&ran);
        let http: Handler =
            serde_json::from_value(serde_json::json!({"httpGet": {"port": 1, "path": "/ready"}}))
                .unwrap();
        // The session is refused up front, naming the hook, whichever it is.
        let err = check(
            &HookExec::Refused,
            &[("preBackup", Some(&http)), ("postBackup", Some(&exec))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("postBackup hook has an exec handler"), "{err}");
        assert!(
            err.contains("pods/exec") && err.contains("httpGet or httpPost"),
            "{err}"
        );
        assert!(check(
            &HookExec::Refused,
            &[("preBackup", Some(&http)), ("postBackup", None)]
        )
        .is_ok());
        assert!(check(&HookExec::Local, &[("preBackup", Some(&exec))]).is_ok());
        // And run itself refuses it.
        let err = run(
            "preRestore",
            &exec,
            &BTreeMap::new(),
            &HookExec::Refused,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("preRestore hook has an exec handler"),
            "{err}"
        );
        assert!(!ran.exists(), "the command ran");
        // Locally it runs.
        run(
            "preRestore",
            &exec,
            &BTreeMap::new(),
            &HookExec::Local,
            None,
        )
        .unwrap();
        assert!(ran.exists());
    }

    /// Records what it was asked to run.
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl RemoteExec for Recorder {
        fn exec(
            &self,
            which: &str,
            (ns, ab): Target<'_>,
            command: &[String],
            container: Option<&str>,
        ) -> EngineResult<String> {
            self.0.lock().unwrap().push(format!(
                "{which} {ns}/{ab} {container:?} {}",
                command.join(" ")
            ));
            Ok("ran".into())
        }
    }

    #[test]
    fn in_the_target_pod_an_exec_hook_goes_to_the_platform_with_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let mut exec = exec_hook(&ran);
        exec.container_name = Some("mariadb".into());
        let rec = std::sync::Arc::new(Recorder(Default::default()));
        let hx = HookExec::InTargetPod(rec.clone());
        assert!(check(&hx, &[("preBackup", Some(&exec))]).is_ok());
        let msg = run(
            "preBackup",
            &exec,
            &BTreeMap::new(),
            &hx,
            Some(("db", "shop")),
        )
        .unwrap();
        assert_eq!(msg, "ran");
        assert_eq!(
            *rec.0.lock().unwrap(),
            [format!(
                "preBackup db/shop Some(\"mariadb\") touch {}",
                ran.display()
            )]
        );
        assert!(!ran.exists(), "it ran here");
        let err = run("preBackup", &exec, &BTreeMap::new(), &hx, None).unwrap_err();
        assert!(
            err.to_string().contains("names no target AppBinding"),
            "{err}"
        );
    }

    #[test]
    fn execution_policy_table() {
        let h = |p: Option<&str>| Handler {
            execution_policy: p.map(String::from),
            ..Default::default()
        };
        for (p, ok, last, want) in [
            (None, true, false, true),
            (None, false, false, true),
            (Some("Always"), false, true, true),
            (Some("OnSuccess"), true, false, true),
            (Some("OnSuccess"), false, false, false),
            (Some("OnFailure"), false, false, true),
            (Some("OnFailure"), true, false, false),
            (Some("OnFinalRetryFailure"), false, false, false),
            (Some("OnFinalRetryFailure"), false, true, true),
        ] {
            assert_eq!(
                should_run_post(&h(p), ok, last),
                want,
                "{p:?} ok={ok} last={last}"
            );
        }
    }
}
