//! Validation: every problem of a resource, each with its field path and what is expected.

use std::fmt;

use crate::{
    manifest::Resource,
    meta::{ObjectMeta, TargetRef},
};

/// One thing wrong with a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted field path, e.g. `spec.retentionPolicy.name` ("" for the whole resource).
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks a parsed resource. `raw` is the manifest as written, for facts the typed form loses
/// (whether a boolean was given at all).
pub fn validate(res: &Resource, raw: &serde_json::Value) -> Vec<Problem> {
    let mut p = Vec::new();
    meta(res.meta(), &mut p);
    match res {
        Resource::Secret(s) => {
            for (k, v) in &s.data {
                use base64::Engine;
                if base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .is_err()
                {
                    p.push(Problem::new(
                        format!("data.{k}"),
                        "not valid base64; put plain text under stringData instead",
                    ));
                }
            }
        }
        Resource::Repository(r) => repository(&r.spec, &mut p),
        Resource::AppBinding(a) => appbinding(&a.spec, &mut p),
        Resource::BackupConfiguration(bc) => backup_configuration(&bc.spec, raw, &mut p),
        Resource::BackupSession(bs) => {
            if bs.spec.invoker.name.is_empty() {
                p.push(Problem::new(
                    "spec.invoker.name",
                    "required: the BackupConfiguration this session runs",
                ));
            }
        }
        Resource::RestoreSession(rs) => restore_session(&rs.spec, &mut p),
        Resource::Task(t) => {
            if t.spec.steps.is_empty() {
                p.push(Problem::new("spec.steps", "required: at least one step"));
            }
            for (i, s) in t.spec.steps.iter().enumerate() {
                if s.name.is_empty() {
                    p.push(Problem::new(
                        format!("spec.steps[{i}].name"),
                        "required: the Function this step runs",
                    ));
                }
            }
        }
        Resource::BinlogArchive(a) => binlog_archive(&a.spec, &mut p),
        Resource::Function(f) => {
            if f.spec.command.is_empty() && f.spec.image.is_none() {
                p.push(Problem::new(
                    "spec.command",
                    "required: the command the step runs (or an image, for Kubernetes)",
                ));
            }
        }
    }
    p
}

fn meta(m: &ObjectMeta, p: &mut Vec<Problem>) {
    if m.name.is_empty() {
        p.push(Problem::new("metadata.name", "required"));
    } else if let Err(why) = dns_subdomain(&m.name) {
        p.push(Problem::new("metadata.name", why));
    }
    if let Some(ns) = &m.namespace {
        if let Err(why) = dns_label(ns) {
            p.push(Problem::new("metadata.namespace", why));
        }
    }
}

/// Kubernetes' rule for object names: lower-case alphanumerics, '-' and '.', at most 253.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid name: use lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit (at most 253 characters)"
        ))
    }
}

fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid namespace: use lower-case letters, digits and '-' (at most 63)"
        ))
    }
}

fn repository(s: &crate::repository::RepositorySpec, p: &mut Vec<Problem>) {
    let b = &s.backend;
    let kinds = b.kinds();
    match kinds.as_slice() {
        [] => p.push(Problem::new(
            "spec.backend",
            "required: exactly one of local, s3, gcs, azure, b2, swift or rest",
        )),
        [_] => {}
        many => p.push(Problem::new(
            "spec.backend",
            format!("exactly one backend may be set, found {}", many.join(", ")),
        )),
    }
    if s.data_check.as_ref().is_some_and(|d| d.period_days == 0) {
        p.push(Problem::new(
            "spec.dataCheck.periodDays",
            "must be at least 1: the days within which every pack is read back once",
        ));
    }
    if b.storage_secret_name.is_empty() {
        p.push(Problem::new(
            "spec.backend.storageSecretName",
            "required: the Secret holding RESTIC_PASSWORD (and the backend's keys)",
        ));
    }
    if let Some(l) = &b.local {
        if l.mount_path.is_empty() {
            p.push(Problem::new("spec.backend.local.mountPath", "required"));
        } else if l.mount_path == "/stash" || l.mount_path.starts_with("/stash/") {
            p.push(Problem::new(
                "spec.backend.local.mountPath",
                "must not be /stash or below it (reserved, as in Stash)",
            ));
        } else if !l.mount_path.starts_with('/') {
            // A pod mounts the volume there (Kubernetes refuses a relative mountPath).
            p.push(Problem::new(
                "spec.backend.local.mountPath",
                "must be an absolute path: the backup and restore pods mount the volume there",
            ));
        }
        if l.host_path
            .as_ref()
            .is_some_and(|h| !h.path.is_empty() && !h.path.starts_with('/'))
        {
            p.push(Problem::new(
                "spec.backend.local.hostPath.path",
                "must be an absolute path",
            ));
        }
    }
    if let Some(s3) = &b.s3 {
        if s3.endpoint.is_empty() {
            p.push(Problem::new(
                "spec.backend.s3.endpoint",
                "required, e.g. https://s3.amazonaws.com or http://127.0.0.1:3900",
            ));
        } else if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://")) {
            // Stash accepts a bare host and means https.
            if s3.endpoint.contains("://") {
                p.push(Problem::new(
                    "spec.backend.s3.endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if s3.bucket.is_empty() {
            p.push(Problem::new("spec.backend.s3.bucket", "required"));
        }
    }
    let required = |p: &mut Vec<Problem>, field: &str, v: &str| {
        if v.trim().is_empty() {
            p.push(Problem::new(field, "required"));
        }
    };
    let url = |p: &mut Vec<Problem>, field: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                p.push(Problem::new(field, "must be an http:// or https:// URL"));
            }
        }
    };
    let connections = |p: &mut Vec<Problem>, field: &str, v: Option<i64>| {
        if v.is_some_and(|n| n < 0) {
            p.push(Problem::new(
                field,
                "must be 1 or more (0 or unset: the default, 5 connections)",
            ));
        }
    };
    if let Some(g) = &b.gcs {
        connections(p, "spec.backend.gcs.maxConnections", g.max_connections);
        required(p, "spec.backend.gcs.bucket", &g.bucket);
        url(p, "spec.backend.gcs.endpoint", g.endpoint.as_deref());
    }
    if let Some(a) = &b.azure {
        connections(p, "spec.backend.azure.maxConnections", a.max_connections);
        required(p, "spec.backend.azure.container", &a.container);
        url(p, "spec.backend.azure.endpoint", a.endpoint.as_deref());
    }
    if let Some(b2) = &b.b2 {
        connections(p, "spec.backend.b2.maxConnections", b2.max_connections);
        required(p, "spec.backend.b2.bucket", &b2.bucket);
    }
    if let Some(sw) = &b.swift {
        required(p, "spec.backend.swift.container", &sw.container);
    }
    if let Some(r) = &b.rest {
        if r.url.is_empty() {
            p.push(Problem::new(
                "spec.backend.rest.url",
                "required, e.g. https://backup.example.com:8000/db",
            ));
        }
        url(p, "spec.backend.rest.url", Some(&r.url));
    }
}

fn appbinding(s: &crate::appbinding::AppBindingSpec, p: &mut Vec<Problem>) {
    let cc = &s.client_config;
    let has_url = cc.url.as_deref().is_some_and(|u| !u.is_empty());
    if !has_url && cc.service.is_none() {
        p.push(Problem::new(
            "spec.clientConfig",
            "required: `url` (mysql://HOST:PORT/) or `service` (name and port)",
        ));
    }
    if has_url {
        if let Err(e) = crate::appbinding::parse_url(cc.url.as_deref().unwrap_or("")) {
            p.push(Problem::new("spec.clientConfig.url", e));
        }
    } else if let Some(svc) = &cc.service {
        if svc.name.is_empty() {
            p.push(Problem::new("spec.clientConfig.service.name", "required"));
        }
        if let Some(port) = svc.port {
            if !(1..=65535).contains(&port) {
                p.push(Problem::new(
                    "spec.clientConfig.service.port",
                    format!("{port} is not a TCP port (1-65535)"),
                ));
            }
        }
    }
    if let Some(ca) = &cc.ca_bundle {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .is_err()
        {
            p.push(Problem::new(
                "spec.clientConfig.caBundle",
                "not valid base64 (it holds the PEM CA bundle, base64-encoded)",
            ));
        }
    }
    match &s.secret {
        Some(sec) if !sec.name.is_empty() => {}
        _ => p.push(Problem::new(
            "spec.secret.name",
            "required: the Secret holding the database `username` and `password`",
        )),
    }
    if let Some(params) = &s.parameters {
        if params.get("group").is_some() && s.galera().is_some() {
            let g = s.galera().unwrap_or_default();
            if g.address.is_empty() {
                p.push(Problem::new(
                    "spec.parameters.address",
                    "required for a Galera cluster: gcomm://HOST:PORT[,HOST:PORT...]",
                ));
            }
        }
    }
}

fn target_ref(path: &str, r: &TargetRef, p: &mut Vec<Problem>) {
    if r.name.is_empty() {
        p.push(Problem::new(
            format!("{path}.name"),
            "required: the AppBinding of the database",
        ));
    }
    if !r.kind.is_empty() && r.kind != "AppBinding" {
        p.push(Problem::new(
            format!("{path}.kind"),
            format!(
                "`{}` targets are not supported: coffer backs up databases through an AppBinding",
                r.kind
            ),
        ));
    }
}

fn duration_field(path: &str, v: &Option<String>, p: &mut Vec<Problem>) {
    if let Some(d) = v {
        if let Err(e) = crate::duration::parse(d) {
            p.push(Problem::new(path, e));
        }
    }
}

fn driver(path: &str, d: &Option<String>, p: &mut Vec<Problem>) {
    if let Some(d) = d {
        if d != "Restic" {
            p.push(Problem::new(
                path,
                format!("`{d}` is not supported: coffer's driver is Restic"),
            ));
        }
    }
}

fn backup_configuration(
    s: &crate::backup::BackupConfigurationSpec,
    raw: &serde_json::Value,
    p: &mut Vec<Problem>,
) {
    if s.repository.name.is_empty() {
        p.push(Problem::new(
            "spec.repository.name",
            "required: the Repository to back up into",
        ));
    }
    match &s.target {
        None => p.push(Problem::new(
            "spec.target",
            "required: target.ref names the AppBinding to back up",
        )),
        Some(t) => target_ref("spec.target.ref", &t.ref_, p),
    }
    match &s.retention_policy {
        None => p.push(Problem::new(
            "spec.retentionPolicy",
            "required: {name, keepLast/keepDaily/..., prune}",
        )),
        Some(rp) => {
            if rp.name.is_empty() {
                p.push(Problem::new("spec.retentionPolicy.name", "required"));
            }
            let given = raw
                .pointer("/spec/retentionPolicy/prune")
                .is_some_and(|v| v.is_boolean());
            if !given {
                p.push(Problem::new(
                    "spec.retentionPolicy.prune",
                    "required: true to free the space of forgotten snapshots, false to keep it",
                ));
            }
            let keeps = [
                ("keepLast", rp.keep_last),
                ("keepHourly", rp.keep_hourly),
                ("keepDaily", rp.keep_daily),
                ("keepWeekly", rp.keep_weekly),
                ("keepMonthly", rp.keep_monthly),
                ("keepYearly", rp.keep_yearly),
            ];
            if rp.keep_tags.is_empty() && !keeps.iter().any(|(_, v)| v.is_some_and(|n| n > 0)) {
                p.push(Problem::new(
                    "spec.retentionPolicy",
                    "no keep rule: set at least one of keepLast, keepHourly, keepDaily, \
                     keepWeekly, keepMonthly, keepYearly (1 or more) or keepTags",
                ));
            }
            for (f, v) in keeps {
                if let Some(n) = v {
                    if n < 0 {
                        p.push(Problem::new(
                            format!("spec.retentionPolicy.{f}"),
                            format!("{n} is negative; use 0 or leave it out"),
                        ));
                    }
                }
            }
        }
    }
    schedule(s, p);
    driver("spec.driver", &s.driver, p);
    duration_field("spec.timeOut", &s.time_out, p);
    if let Some(rc) = &s.retry_config {
        duration_field("spec.retryConfig.delay", &rc.delay, p);
        if rc.max_retry.is_some_and(|m| m < 0) {
            p.push(Problem::new(
                "spec.retryConfig.maxRetry",
                "must not be negative",
            ));
        }
    }
    if s.backup_history_limit.is_some_and(|l| l < 0) {
        p.push(Problem::new(
            "spec.backupHistoryLimit",
            "must not be negative",
        ));
    }
    if let Some(h) = &s.hooks {
        hook("spec.hooks.preBackup", &h.pre_backup, p);
        hook("spec.hooks.postBackup", &h.post_backup, p);
    }
    if let Some(v) = &s.verification {
        verification(v, s.time_zone.as_deref(), p);
    }
}

fn verification(v: &crate::backup::VerificationSpec, zone: Option<&str>, p: &mut Vec<Problem>) {
    match (v.every_backups, &v.schedule) {
        (None, None) => p.push(Problem::new(
            "spec.verification",
            "required: everyBackups (verify after every N backups) or schedule (a cron \
             schedule)",
        )),
        (Some(_), Some(_)) => p.push(Problem::new(
            "spec.verification",
            "everyBackups and schedule both set: choose one",
        )),
        (Some(0), None) => p.push(Problem::new(
            "spec.verification.everyBackups",
            "must be at least 1 (1: after every backup)",
        )),
        (None, Some(sched)) => {
            let zone = zone.filter(|z| !z.is_empty() && crate::schedule::time_zone(z).is_ok());
            if let Err(e) = crate::schedule::parse(sched, zone) {
                p.push(Problem::new("spec.verification.schedule", e));
            }
        }
        _ => {}
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, q) in v.queries.iter().enumerate() {
        let at = format!("spec.verification.queries[{i}]");
        if q.name.is_empty() {
            p.push(Problem::new(
                format!("{at}.name"),
                "required: names the query in a failure",
            ));
        } else if !names.insert(q.name.as_str()) {
            p.push(Problem::new(
                format!("{at}.name"),
                format!("`{}` is used by another query", q.name),
            ));
        }
        if q.sql.trim().is_empty() {
            p.push(Problem::new(
                format!("{at}.sql"),
                "required: the query to run",
            ));
        }
    }
    if let Some(sc) = &v.script {
        verification_script(sc, p);
    }
    if let Some(a) = &v.binlog_archive {
        let at = "spec.verification.binlogArchive";
        if a.trim().is_empty() {
            p.push(Problem::new(
                at,
                "empty: name a BinlogArchive of this namespace (or leave the field out)",
            ));
        } else if a.contains('/') {
            p.push(Problem::new(
                at,
                format!(
                    "`{a}`: the archive is named without a namespace; it must be in the \
                     configuration's namespace"
                ),
            ));
        }
    }
}

fn verification_script(sc: &crate::backup::VerificationScript, p: &mut Vec<Problem>) {
    let at = "spec.verification.script";
    if sc.path.trim().is_empty() {
        p.push(Problem::new(
            format!("{at}.path"),
            "required: the absolute path of the program to run",
        ));
    } else if !sc.path.starts_with('/') {
        p.push(Problem::new(
            format!("{at}.path"),
            format!(
                "`{}` is not an absolute path (no shell or PATH search runs it)",
                sc.path
            ),
        ));
    } else if sc.path.contains('\0') {
        p.push(Problem::new(format!("{at}.path"), "contains a NUL byte"));
    }
    for (i, a) in sc.args.iter().enumerate() {
        if a.contains('\0') {
            p.push(Problem::new(
                format!("{at}.args[{i}]"),
                "contains a NUL byte",
            ));
        }
    }
    if let Some(t) = &sc.timeout {
        match crate::duration::parse(t) {
            Ok(d) if d.is_zero() => p.push(Problem::new(
                format!("{at}.timeout"),
                "must be more than 0 (leave it out for the default, 10m)",
            )),
            Ok(_) => {}
            Err(e) => p.push(Problem::new(
                format!("{at}.timeout"),
                format!("`{t}`: {e} (e.g. 90s, 10m)"),
            )),
        }
    }
}

fn schedule(s: &crate::backup::BackupConfigurationSpec, p: &mut Vec<Problem>) {
    let mut zone = s.time_zone.as_deref().filter(|z| !z.is_empty());
    if let Some(z) = zone {
        if let Err(e) = crate::schedule::time_zone(z) {
            p.push(Problem::new("spec.timeZone", e));
            zone = None;
        }
    }
    if let Some(sched) = &s.schedule {
        if let Err(e) = crate::schedule::parse(sched, zone) {
            p.push(Problem::new("spec.schedule", e));
        }
    }
}

/// A hook handler as the engine runs it: exactly one of exec, httpGet or httpPost.
fn hook(path: &str, h: &Option<crate::meta::Handler>, p: &mut Vec<Problem>) {
    let Some(h) = h else { return };
    let mut given = Vec::new();
    if h.exec.is_some() {
        given.push("exec");
    }
    if h.http_get.is_some() {
        given.push("httpGet");
    }
    if h.http_post.is_some() {
        given.push("httpPost");
    }
    if h.tcp_socket.is_some() {
        p.push(Problem::new(
            format!("{path}.tcpSocket"),
            "not supported: use exec, httpGet or httpPost",
        ));
    }
    match given.as_slice() {
        [] if h.tcp_socket.is_none() => p.push(Problem::new(
            path,
            "required: exactly one of exec, httpGet or httpPost",
        )),
        [] | [_] => {}
        many => p.push(Problem::new(
            path,
            format!(
                "exactly one of exec, httpGet or httpPost may be set, found {}",
                many.join(", ")
            ),
        )),
    }
    if let Some(e) = &h.exec {
        if e.command.first().is_none_or(|c| c.trim().is_empty()) {
            p.push(Problem::new(
                format!("{path}.exec.command"),
                "required: the program to run and its arguments",
            ));
        }
    }
    for (field, action) in [("httpGet", &h.http_get), ("httpPost", &h.http_post)] {
        if let Some(a) = action {
            http_action(&format!("{path}.{field}"), a, p);
        }
    }
    if let Some(ep) = &h.execution_policy {
        if !path.contains(".post") {
            p.push(Problem::new(
                format!("{path}.executionPolicy"),
                "only postBackup and postRestore hooks have an executionPolicy",
            ));
        } else if !matches!(
            ep.as_str(),
            "Always" | "OnSuccess" | "OnFailure" | "OnFinalRetryFailure"
        ) {
            p.push(Problem::new(
                format!("{path}.executionPolicy"),
                format!("`{ep}`: expected Always, OnSuccess, OnFailure or OnFinalRetryFailure"),
            ));
        }
    }
}

fn http_action(path: &str, a: &crate::meta::HttpAction, p: &mut Vec<Problem>) {
    match &a.port {
        None => {}
        Some(serde_json::Value::Number(n))
            if n.as_u64().is_some_and(|n| (1..=65535).contains(&n)) => {}
        Some(serde_json::Value::String(s)) if s.parse::<u16>().is_ok_and(|n| n > 0) => {}
        Some(v) => p.push(Problem::new(
            format!("{path}.port"),
            format!(
                "{v} is not a TCP port (1-65535); named ports need Kubernetes, give the number"
            ),
        )),
    }
    if let Some(s) = &a.scheme {
        if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
            p.push(Problem::new(
                format!("{path}.scheme"),
                format!("`{s}`: expected HTTP or HTTPS"),
            ));
        }
    }
    if let Some(h) = &a.host {
        if h.is_empty()
            || h.chars()
                .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
        {
            p.push(Problem::new(
                format!("{path}.host"),
                format!("`{h}` is not a host name or address"),
            ));
        }
    }
    if let Some(path_) = &a.path {
        if path_.chars().any(|c| c.is_whitespace()) {
            p.push(Problem::new(
                format!("{path}.path"),
                format!("`{path_}` has white space; percent-encode it"),
            ));
        }
    }
    for (i, h) in a.http_headers.iter().enumerate() {
        if h.name.is_empty()
            || !h
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        {
            p.push(Problem::new(
                format!("{path}.httpHeaders[{i}].name"),
                format!("`{}` is not an HTTP header name", h.name),
            ));
        }
    }
}

fn restore_session(s: &crate::restore::RestoreSessionSpec, p: &mut Vec<Problem>) {
    if s.repository.name.is_empty() {
        p.push(Problem::new(
            "spec.repository.name",
            "required: the Repository to restore from",
        ));
    }
    match &s.target {
        None => p.push(Problem::new(
            "spec.target",
            "required: target.ref names the AppBinding to restore into",
        )),
        Some(t) => {
            target_ref("spec.target.ref", &t.ref_, p);
            if t.replicas.is_some_and(|r| r < 1) {
                p.push(Problem::new("spec.target.replicas", "must be at least 1"));
            }
            if let Some(pit) = &t.point_in_time {
                if let Err(problems) = pit.target() {
                    for (field, message) in problems {
                        let path = match field {
                            "" => "spec.target.pointInTime".to_string(),
                            f => format!("spec.target.pointInTime.{f}"),
                        };
                        p.push(Problem::new(path, message));
                    }
                }
            }
        }
    }
    driver("spec.driver", &s.driver, p);
    duration_field("spec.timeOut", &s.time_out, p);
    if let Some(h) = &s.hooks {
        hook("spec.hooks.preRestore", &h.pre_restore, p);
        hook("spec.hooks.postRestore", &h.post_restore, p);
    }
}

fn binlog_archive(s: &crate::archive::BinlogArchiveSpec, p: &mut Vec<Problem>) {
    if s.app_binding.name.is_empty() {
        p.push(Problem::new(
            "spec.appBinding.name",
            "required: the AppBinding of the server (or Galera cluster) to archive",
        ));
    }
    if s.repository.name.is_empty() {
        p.push(Problem::new(
            "spec.repository.name",
            "required: the Repository to archive into",
        ));
    }
    match s.flush_interval() {
        Err(e) => p.push(Problem::new("spec.flushInterval", e)),
        Ok(d) if d.is_zero() => p.push(Problem::new("spec.flushInterval", "must be more than 0")),
        Ok(_) => {}
    }
    match s.segment_max_size() {
        Err(e) => p.push(Problem::new("spec.segmentMaxSize", e)),
        Ok(n) if n < 4096 => p.push(Problem::new(
            "spec.segmentMaxSize",
            format!("{n} bytes is too small for a binlog segment; use at least 4Ki (64Mi is the default)"),
        )),
        Ok(_) => {}
    }
    if let Err(e) = s.keep() {
        p.push(Problem::new("spec.keep", e));
    }
    if s.server_id == Some(0) {
        p.push(Problem::new(
            "spec.serverId",
            "0 is not a replica server_id (the server refuses it); use 1-4294967295 or leave it out",
        ));
    }
}

/// Checks a task's params with the parser the engine runs them with
/// ([`crate::params::TaskParams::parse`]), each problem at `{path}.{param}`. Every param
/// check of `coffer apply` goes through here.
pub fn task_params(
    path: &str,
    params: &[crate::meta::Param],
    rules: crate::params::Rules,
) -> Vec<Problem> {
    let pairs = params.iter().map(|p| (p.name.as_str(), p.value.as_str()));
    match crate::params::TaskParams::parse(pairs, rules) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| Problem::new(format!("{path}.{}", e.name), e.message))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::parse_manifests;

    fn errors(text: &str) -> String {
        parse_manifests(text, "t.yaml")
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn backup_configuration_requires_retention_policy() {
        let e = errors(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\nmetadata: {name: b}\n\
             spec: {repository: {name: r}, target: {ref: {kind: AppBinding, name: db}}}\n",
        );
        assert!(e.contains("spec.retentionPolicy: required"), "{e}");
    }

    #[test]
    fn retention_policy_needs_prune_stated() {
        let e = errors(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\nmetadata: {name: b}\n\
             spec: {repository: {name: r}, target: {ref: {kind: AppBinding, name: db}}, \
             retentionPolicy: {name: k, keepLast: 3}, schedule: '* * *'}\n",
        );
        assert!(e.contains("spec.retentionPolicy.prune: required"), "{e}");
        assert!(e.contains("spec.schedule"), "{e}");
    }

    #[test]
    fn repository_requires_a_backend() {
        let e = errors(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {name: r}\n\
             spec: {backend: {storageSecretName: s}}\n",
        );
        assert!(e.contains("spec.backend: required"), "{e}");
        let e = errors_or_none(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {name: r}\n\
             spec: {backend: {storageSecretName: s, gcs: {bucket: b}}}\n",
        );
        assert_eq!(e, None, "a gcs bucket is enough");
        for (backend, field) in [
            ("gcs: {prefix: p}", "spec.backend.gcs.bucket: required"),
            (
                "azure: {prefix: p}",
                "spec.backend.azure.container: required",
            ),
            ("b2: {prefix: p}", "spec.backend.b2.bucket: required"),
            (
                "swift: {prefix: p}",
                "spec.backend.swift.container: required",
            ),
            ("rest: {url: ''}", "spec.backend.rest.url: required"),
            (
                "rest: {url: 'ftp://h/'}",
                "spec.backend.rest.url: must be an http",
            ),
            (
                "azure: {container: c, endpoint: '127.0.0.1:1'}",
                "spec.backend.azure.endpoint: must be an http",
            ),
            (
                "b2: {bucket: b, maxConnections: -1}",
                "spec.backend.b2.maxConnections: must be 1 or more",
            ),
        ] {
            let e = errors(&format!(
                "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: r}}\n\
                 spec: {{backend: {{storageSecretName: s, {backend}}}}}\n"
            ));
            assert!(e.contains(field), "{backend}: {e}");
        }
        let e = errors(
            "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {name: r}\n\
             spec: {backend: {storageSecretName: s, s3: {endpoint: 'http://x'}}}\n",
        );
        assert!(e.contains("spec.backend.s3.bucket: required"), "{e}");
    }

    #[test]
    fn a_local_backend_needs_an_absolute_mount_path_outside_stash() {
        let repo = |local: &str| {
            format!(
                "apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\nmetadata: {{name: r}}\n\
                 spec: {{backend: {{storageSecretName: s, local: {local}}}}}\n"
            )
        };
        for (local, want) in [
            (
                "{hostPath: {path: /srv/r}}",
                "spec.backend.local.mountPath: required",
            ),
            (
                "{mountPath: /stash, hostPath: {path: /srv/r}}",
                "spec.backend.local.mountPath: must not be /stash",
            ),
            (
                "{mountPath: /stash/repo, persistentVolumeClaim: {claimName: c}}",
                "spec.backend.local.mountPath: must not be /stash",
            ),
            (
                "{mountPath: repo, hostPath: {path: /srv/r}}",
                "spec.backend.local.mountPath: must be an absolute path",
            ),
        ] {
            let e = errors(&repo(local));
            assert!(e.contains(want), "{local}: {e}");
        }
        for ok in [
            "{mountPath: /stashed, hostPath: {path: /srv/r}}",
            "{mountPath: /safe/data, subPath: demo, persistentVolumeClaim: {claimName: c}}",
            // On one machine no volume source is needed: mountPath is the directory.
            "{mountPath: /srv/repo}",
        ] {
            assert_eq!(errors_or_none(&repo(ok)), None, "{ok}");
        }
    }

    #[test]
    fn appbinding_needs_an_address_and_a_secret() {
        let e = errors(
            "apiVersion: appcatalog.appscode.com/v1alpha1\nkind: AppBinding\nmetadata: {name: a}\n\
             spec: {clientConfig: {url: 'mysql://h:99999/'}}\n",
        );
        assert!(e.contains("spec.clientConfig.url"), "{e}");
        assert!(e.contains("spec.secret.name: required"), "{e}");
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        let e = errors(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: Bad_Name}\nstringData: {a: b}\n",
        );
        assert!(
            e.contains("metadata.name: `Bad_Name` is not a valid name"),
            "{e}"
        );
    }

    fn bc_with(extra: &str) -> String {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
             metadata: {{name: b, namespace: demo}}\nspec:\n  repository: {{name: r}}\n  \
             target: {{ref: {{kind: AppBinding, name: db}}}}\n{extra}"
        )
    }

    const KEEP: &str = "  retentionPolicy: {name: k, keepLast: 3, prune: true}\n";

    /// Each bad input and the one line apply answers with.
    #[test]
    fn each_bad_field_is_named_in_one_line() {
        let head = "t.yaml (document 1), BackupConfiguration/demo/b: ";
        for (extra, want) in [
            (
                format!("{KEEP}  schedule: '61 * * * *'\n"),
                "spec.schedule: `61 * * * *` is not a valid cron schedule",
            ),
            (
                format!("{KEEP}  schedule: '0 3 * * *'\n  timeZone: Mars/Olympus\n"),
                "spec.timeZone: unknown time zone `Mars/Olympus`: use an IANA name such as UTC \
                 or Europe/Paris",
            ),
            (
                format!("{KEEP}  schedule: 'CRON_TZ=Nowhere 0 3 * * *'\n"),
                "spec.schedule: unknown time zone `Nowhere`",
            ),
            (
                "  retentionPolicy: {name: k, prune: true, keepLast: 0}\n".to_string(),
                "spec.retentionPolicy: no keep rule: set at least one of keepLast",
            ),
            (
                "  retentionPolicy: {name: k, prune: true, keepLast: 2, keepDaily: -1}\n"
                    .to_string(),
                "spec.retentionPolicy.keepDaily: -1 is negative; use 0 or leave it out",
            ),
            (
                format!("{KEEP}  hooks: {{preBackup: {{}}}}\n"),
                "spec.hooks.preBackup: required: exactly one of exec, httpGet or httpPost",
            ),
            (
                format!(
                    "{KEEP}  hooks: {{postBackup: {{exec: {{command: [/bin/true]}}, \
                     httpGet: {{port: 80}}}}}}\n"
                ),
                "spec.hooks.postBackup: exactly one of exec, httpGet or httpPost may be set, \
                 found exec, httpGet",
            ),
            (
                format!("{KEEP}  hooks: {{preBackup: {{httpGet: {{port: 70000}}}}}}\n"),
                "spec.hooks.preBackup.httpGet.port: 70000 is not a TCP port (1-65535)",
            ),
            (
                format!("{KEEP}  hooks: {{preBackup: {{httpPost: {{port: http}}}}}}\n"),
                "spec.hooks.preBackup.httpPost.port: \"http\" is not a TCP port",
            ),
            (
                format!("{KEEP}  hooks: {{preBackup: {{httpGet: {{scheme: FTP}}}}}}\n"),
                "spec.hooks.preBackup.httpGet.scheme: `FTP`: expected HTTP or HTTPS",
            ),
            (
                format!("{KEEP}  hooks: {{preBackup: {{exec: {{command: []}}}}}}\n"),
                "spec.hooks.preBackup.exec.command: required",
            ),
            (
                format!(
                    "{KEEP}  hooks: {{postBackup: {{exec: {{command: [x]}}, \
                     executionPolicy: Sometimes}}}}\n"
                ),
                "spec.hooks.postBackup.executionPolicy: `Sometimes`: expected Always",
            ),
            (
                format!(
                    "{KEEP}  hooks: {{preBackup: {{exec: {{command: [x]}}, \
                     executionPolicy: OnSuccess}}}}\n"
                ),
                "spec.hooks.preBackup.executionPolicy: only postBackup and postRestore hooks",
            ),
            (
                format!("{KEEP}  verification: {{queries: [{{name: q, sql: 'SELECT 1', expect: '1'}}]}}\n"),
                "spec.verification: required: everyBackups",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 0}}\n"),
                "spec.verification.everyBackups: must be at least 1",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 2, schedule: '@daily'}}\n"),
                "spec.verification: everyBackups and schedule both set",
            ),
            (
                format!("{KEEP}  verification: {{schedule: '61 * * * *'}}\n"),
                "spec.verification.schedule: `61 * * * *` is not a valid cron schedule",
            ),
            (
                format!(
                    "{KEEP}  verification: {{everyBackups: 1, queries: [{{name: q, sql: 'SELECT 1', \
                     expect: '1'}}, {{name: q, sql: 'SELECT 2', expect: '2'}}]}}\n"
                ),
                "spec.verification.queries[1].name: `q` is used by another query",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 1, script: {{path: check.sh}}}}\n"),
                "spec.verification.script.path: `check.sh` is not an absolute path",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 1, script: {{path: ''}}}}\n"),
                "spec.verification.script.path: required",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 1, binlogArchive: ''}}\n"),
                "spec.verification.binlogArchive: empty: name a BinlogArchive",
            ),
            (
                format!("{KEEP}  verification: {{everyBackups: 1, binlogArchive: other/arch}}\n"),
                "spec.verification.binlogArchive: `other/arch`: the archive is named without",
            ),
            (
                format!(
                    "{KEEP}  verification: {{everyBackups: 1, script: {{path: /bin/true, \
                     timeout: soon}}}}\n"
                ),
                "spec.verification.script.timeout: `soon`",
            ),
            (
                format!(
                    "{KEEP}  verification: {{everyBackups: 1, script: {{path: /bin/true, \
                     timeout: '0'}}}}\n"
                ),
                "spec.verification.script.timeout: must be more than 0",
            ),
            (
                format!(
                    "{KEEP}  verification: {{everyBackups: 1, script: {{path: /bin/true, \
                     command: x}}}}\n"
                ),
                "spec.verification.script",
            ),
        ] {
            let e = errors(&bc_with(&extra));
            assert!(e.starts_with(&format!("{head}{want}")), "{extra}\n{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert_eq!(
            errors_or_none(&bc_with(&format!(
                "{KEEP}  schedule: '@daily'\n  timeZone: UTC\n"
            ))),
            None
        );
        assert_eq!(
            errors_or_none(&bc_with(&format!(
                "{KEEP}  verification: {{everyBackups: 1, script: {{path: /usr/local/bin/check, \
                 args: [--fast], timeout: 5m}}}}\n"
            ))),
            None
        );
    }

    fn archive_with(spec: &str) -> String {
        format!(
            "apiVersion: coffer.dev/v1alpha1\nkind: BinlogArchive\n\
             metadata: {{name: a, namespace: demo}}\nspec: {spec}\n"
        )
    }

    /// Each bad archive field and the line apply answers with; a good one applies.
    #[test]
    fn binlog_archive_fields_are_checked_whole() {
        let good = "{appBinding: {name: db}, repository: {name: r}}";
        assert_eq!(errors_or_none(&archive_with(good)), None);
        assert_eq!(
            errors_or_none(&archive_with(
                "{appBinding: {name: db}, repository: {name: r}, flushInterval: 1s, \
                 segmentMaxSize: 1Gi, keep: 30d, paused: true, serverId: 7}"
            )),
            None
        );
        let head = "t.yaml (document 1), BinlogArchive/demo/a: ";
        for (spec, want) in [
            ("{repository: {name: r}}", "spec.appBinding.name: required"),
            ("{appBinding: {name: db}}", "spec.repository.name: required"),
            (
                "{appBinding: {name: db}, repository: {name: r}, flushInterval: '5'}",
                "spec.flushInterval: `5` has a number without a unit",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, flushInterval: 0s}",
                "spec.flushInterval: must be more than 0",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, segmentMaxAge: 2s}",
                "unknown field `segmentMaxAge`",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, segmentMaxSize: 64MB}",
                "spec.segmentMaxSize: `64MB` is not a size",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, segmentMaxSize: 100}",
                "spec.segmentMaxSize: 100 bytes is too small",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, keep: forever}",
                "spec.keep: `forever` is not a duration",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, serverId: 0}",
                "spec.serverId: 0 is not a replica server_id",
            ),
            (
                "{appBinding: {name: db}, repository: {name: r}, flush: 5s}",
                "unknown field `flush`",
            ),
        ] {
            let e = errors(&archive_with(spec));
            assert!(e.starts_with(head), "{spec}\n{e}");
            assert!(e.contains(want), "{spec}\n{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    fn restore_with(pit: &str) -> String {
        format!(
            "apiVersion: stash.appscode.com/v1beta1\nkind: RestoreSession\n\
             metadata: {{name: r, namespace: demo}}\nspec:\n  repository: {{name: repo}}\n  \
             target:\n    ref: {{kind: AppBinding, name: db}}\n    pointInTime: {pit}\n"
        )
    }

    #[test]
    fn point_in_time_targets_are_checked_at_apply() {
        for good in [
            "{latest: true, archive: a}",
            "{time: '2024-05-01T12:00:00Z', archive: a}",
            "{time: '2024-05-01T14:00:00+02:00', archive: a}",
            "{gtid: 0-1-42, inclusive: false, archive: a}",
        ] {
            assert_eq!(errors_or_none(&restore_with(good)), None, "{good}");
        }
        let head = "t.yaml (document 1), RestoreSession/demo/r: ";
        for (pit, want) in [
            (
                "{archive: a}",
                "spec.target.pointInTime: required: exactly one of latest",
            ),
            (
                "{latest: true, gtid: 0-1-2, archive: a}",
                "spec.target.pointInTime: exactly one of latest, time or gtid may be set, \
                 found latest, gtid",
            ),
            (
                "{time: yesterday, archive: a}",
                "spec.target.pointInTime.time: `yesterday` is not an RFC 3339 time",
            ),
            (
                "{gtid: '0-1', archive: a}",
                "spec.target.pointInTime.gtid: `0-1` is not a GTID",
            ),
            (
                "{latest: true, inclusive: false, archive: a}",
                "spec.target.pointInTime.inclusive: only a gtid target",
            ),
            (
                "{latest: true}",
                "spec.target.pointInTime.archive: required",
            ),
            (
                "{latest: true, archive: a, until: x}",
                "unknown field `until`",
            ),
        ] {
            let e = errors(&restore_with(pit));
            assert!(e.starts_with(head), "{pit}\n{e}");
            assert!(e.contains(want), "{pit}\n{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    fn errors_or_none(text: &str) -> Option<String> {
        parse_manifests(text, "t.yaml")
            .err()
            .map(|e| e.iter().map(|e| e.to_string()).collect())
    }
}
