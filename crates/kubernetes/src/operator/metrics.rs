//! The operator's own metrics and readiness, shared by the controllers and the HTTP server.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Counters by controller and failure reason, leadership, and the readiness facts.
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    failures: IntCounterVec,
    leader: IntGauge,
    leader_known: AtomicBool,
    synced: AtomicBool,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "coffer_operator_reconciliations_total",
                "Reconciliations started, by controller",
            ),
            &["controller"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "coffer_operator_reconcile_failures_total",
                "Reconciliations that failed, by controller and reason",
            ),
            &["controller", "reason"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "coffer_operator_leader",
            "Whether this replica holds the leader lease and runs the controllers (1) or not (0)",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("metric names are distinct");
        }
        Metrics {
            registry,
            reconciliations,
            failures,
            leader,
            leader_known: AtomicBool::new(false),
            synced: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self, controller: &str) {
        self.reconciliations.with_label_values(&[controller]).inc();
    }

    pub fn failed(&self, controller: &str, reason: &str) {
        self.failures.with_label_values(&[controller, reason]).inc();
    }

    pub fn set_leader(&self, known: bool, leader: bool) {
        self.leader.set(i64::from(leader));
        self.leader_known.store(known, Ordering::SeqCst);
        if !leader {
            self.synced.store(false, Ordering::SeqCst);
        }
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// Ready when leadership is known and, on the leader, every collection the controllers
    /// watch has been listed (CRDs installed, RBAC granted). A
    /// standby replica is ready: it is doing what it should.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.leader_known.load(Ordering::SeqCst) {
            return Err("leader election has not read the lease yet");
        }
        if self.leader.get() == 1 && !self.synced.load(Ordering::SeqCst) {
            return Err("leader, but not every watched collection could be listed yet");
        }
        Ok(())
    }

    /// The Prometheus text exposition of every metric.
    pub fn text(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Serves `/healthz` (the process answers), `/readyz` and `/metrics` on `addr` from a thread
/// of its own, so a busy runtime cannot make the probes time out.
pub fn serve(addr: &str, metrics: std::sync::Arc<Metrics>) -> Result<(), String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("cannot listen on {addr} for /metrics, /healthz and /readyz: {e}"))?;
    std::thread::Builder::new()
        .name("coffer-operator-http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let (code, body, ctype) = respond(req.url(), &metrics);
                let resp = tiny_http::Response::from_string(body)
                    .with_status_code(code)
                    .with_header(
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes())
                            .expect("valid header"),
                    );
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(())
}

fn respond(url: &str, metrics: &Metrics) -> (u16, String, &'static str) {
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/healthz" => (200, "ok\n".into(), "text/plain"),
        "/readyz" => match metrics.ready() {
            Ok(()) => (200, "ok\n".into(), "text/plain"),
            Err(why) => (503, format!("{why}\n"), "text/plain"),
        },
        "/metrics" => (200, metrics.text(), "text/plain; version=0.0.4"),
        _ => (404, "not found\n".into(), "text/plain"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_leadership_and_sync() {
        let m = Metrics::new();
        assert_eq!(respond("/readyz", &m).0, 503, "lease not read yet");
        m.set_leader(true, false);
        assert_eq!(respond("/readyz", &m).0, 200, "a standby is ready");
        m.set_leader(true, true);
        assert_eq!(
            respond("/readyz", &m).0,
            503,
            "leader before the watches synced"
        );
        m.set_synced(true);
        assert_eq!(respond("/readyz", &m).0, 200);
        m.set_leader(true, false);
        m.set_leader(true, true);
        assert_eq!(respond("/readyz", &m).0, 503, "a new term syncs again");
        assert_eq!(respond("/healthz", &m).0, 200);
        assert_eq!(respond("/nope", &m).0, 404);
    }

    #[test]
    fn metrics_count_by_controller_and_reason() {
        let m = Metrics::new();
        m.reconciled("backupsession");
        m.reconciled("backupsession");
        m.failed("backupsession", "conflict");
        m.set_leader(true, true);
        let (code, text, _) = respond("/metrics", &m);
        assert_eq!(code, 200);
        assert!(
            text.contains("coffer_operator_reconciliations_total{controller=\"backupsession\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "coffer_operator_reconcile_failures_total{controller=\"backupsession\",reason=\"conflict\"} 1"
        ));
        assert!(
            text.lines().any(|l| l == "coffer_operator_leader 1"),
            "{text}"
        );
    }
}
