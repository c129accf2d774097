//! Hooks around a session: Kubernetes-style handlers (exec, httpGet, httpPost) run on this
//! machine, with postBackup/postRestore's executionPolicy deciding whether they run at all.

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

/// Runs a hook; the error says what failed.
pub fn run(which: &str, h: &Handler, env: &BTreeMap<String, String>) -> EngineResult<String> {
    if let Some(exec) = &h.exec {
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
