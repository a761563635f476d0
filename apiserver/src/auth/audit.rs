//! The audit log (`--audit-log-path`): one upstream audit.k8s.io/v1 Event per request at
//! Metadata level, as a JSON line, written by a dedicated thread.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use http::Request;
use serde_json::{json, Value};

use super::User;
use crate::request_info::RequestInfo;

/// Lines waiting for the writer; past this, events are dropped (and counted in the log).
const QUEUE: usize = 10_000;

/// The open audit log.
pub struct AuditLog {
    tx: SyncSender<String>,
}

/// The event of one request, filled in while it is handled and written when it completes.
#[derive(Clone, Default)]
pub struct Slot(Arc<parking_lot::Mutex<Option<Value>>>);

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

impl AuditLog {
    /// Opens (appends to) the log file and starts its writer thread.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let mut batch = line;
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&more);
                    }
                    if let Err(e) = file.write_all(batch.as_bytes()).and_then(|_| file.flush()) {
                        tracing::warn!(error = %e, "writing the audit log");
                    }
                }
            })?;
        Ok(AuditLog { tx })
    }

    /// Writes the event of a finished request with its response code.
    pub fn finish(&self, slot: &Slot, code: u16) {
        let Some(mut ev) = slot.0.lock().take() else {
            return;
        };
        ev["responseStatus"] = json!({"metadata": {}, "code": code});
        ev["stageTimestamp"] = json!(now());
        let mut line = ev.to_string();
        line.push('\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            tracing::warn!("audit log queue full: event dropped");
        }
    }
}

/// Starts the audit event of a request (when the request carries a [`Slot`]).
/// `acting` is the authenticated user, `effective` the impersonated one if different.
pub fn record<B>(
    req: &Request<B>,
    acting: Option<&User>,
    effective: Option<&User>,
    info: &RequestInfo,
    allowed: Option<bool>,
) {
    let Some(slot) = req.extensions().get::<Slot>() else {
        return;
    };
    let user = acting
        .map(User::to_json)
        .unwrap_or_else(|| json!({"username": "", "groups": []}));
    let mut ev = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "verb": info.verb,
        "user": user,
        "sourceIPs": req.extensions().get::<SocketAddr>().map(|a| vec![a.ip().to_string()]).unwrap_or_default(),
        "requestReceivedTimestamp": now(),
    });
    if let Some(ua) = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        ev["userAgent"] = json!(ua);
    }
    if let (Some(a), Some(e)) = (acting, effective) {
        if a != e {
            ev["impersonatedUser"] = e.to_json();
        }
    }
    if info.is_resource_request {
        let mut r = json!({"resource": info.resource, "apiVersion": info.api_version});
        for (k, v) in [
            ("namespace", &info.namespace),
            ("name", &info.name),
            ("apiGroup", &info.api_group),
            ("subresource", &info.subresource),
        ] {
            if !v.is_empty() {
                r[k] = json!(v);
            }
        }
        ev["objectRef"] = r;
    }
    if let Some(allowed) = allowed {
        ev["annotations"] = json!({
            "authorization.k8s.io/decision": if allowed { "allow" } else { "forbid" },
            "authorization.k8s.io/reason": "",
        });
    }
    *slot.0.lock() = Some(ev);
}
