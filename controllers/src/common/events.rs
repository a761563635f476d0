//! An event recorder for controllers, as upstream's controller-manager records them
//! (client-go's legacy `record.EventRecorder`): core/v1 Events named `<object>.<hex nanos>`
//! with `source.component` and `reportingComponent` set to the controller, and a repeat of
//! the same event (same object, type, reason and message: client-go's `EventCorrelator` key)
//! counted on the first one (`count`, `lastTimestamp`) instead of written again. Events with
//! other messages stay separate, so `kubectl describe` lists "Created pod: a" and "Created
//! pod: b" as upstream does.
//!
//! Events are queued and published in the background so a reconcile never waits on them;
//! like upstream's broadcaster, a full queue drops events rather than block.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;

/// Events waiting to be published before new ones are dropped.
const QUEUE: usize = 1000;
/// Distinct events remembered for counting repeats (client-go's LRU holds 4096).
const REMEMBERED: usize = 4096;

/// One event to publish.
struct Pending {
    regarding: ObjectReference,
    type_: &'static str,
    reason: String,
    message: String,
}

/// What identifies a repeat: the object, type, reason and message.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    kind: String,
    name: String,
    uid: String,
    type_: &'static str,
    reason: String,
    message: String,
}

/// The event written for a key and how often it happened.
struct Seen {
    name: String,
    namespace: String,
    count: i32,
}

/// Records events on behalf of one controller (`source.component`).
#[derive(Clone, Debug)]
pub struct EventRecorder {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("reason", &self.reason)
            .finish()
    }
}

impl EventRecorder {
    /// A recorder reporting as `controller` (e.g. `replicaset-controller`).
    pub fn new(client: Client, controller: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let controller = controller.to_string();
        tokio::spawn(async move {
            let mut seen: HashMap<Key, Seen> = HashMap::new();
            while let Some(p) = rx.recv().await {
                if let Err(e) = publish(&client, &controller, &mut seen, p).await {
                    tracing::debug!(error = %e, "cannot publish event");
                }
            }
        });
        EventRecorder { tx }
    }

    fn record(
        &self,
        regarding: ObjectReference,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        let p = Pending {
            regarding,
            type_,
            reason: reason.to_string(),
            message,
        };
        if self.tx.try_send(p).is_err() {
            tracing::debug!(reason, "event queue full; event dropped");
        }
    }

    /// A Normal event about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.record(obj.object_ref(&()), "Normal", reason, note);
    }

    /// A Warning event about `obj`.
    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.record(obj.object_ref(&()), "Warning", reason, note);
    }
}

async fn publish(
    client: &Client,
    controller: &str,
    seen: &mut HashMap<Key, Seen>,
    p: Pending,
) -> Result<(), kube::Error> {
    let r = &p.regarding;
    let namespace = r.namespace.clone().unwrap_or_else(|| "default".to_string());
    let key = Key {
        namespace: namespace.clone(),
        kind: r.kind.clone().unwrap_or_default(),
        name: r.name.clone().unwrap_or_default(),
        uid: r.uid.clone().unwrap_or_default(),
        type_: p.type_,
        reason: p.reason.clone(),
        message: p.message.clone(),
    };
    let t = Timestamp::now();
    let now = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    if let Some(s) = seen.get_mut(&key) {
        let api: Api<CoreEvent> = Api::namespaced(client.clone(), &s.namespace);
        let patch = json!({"count": s.count + 1, "lastTimestamp": now});
        match api
            .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                s.count += 1;
                return Ok(());
            }
            // Gone (expired or deleted): write a new one.
            Err(kube::Error::Api(e)) if e.code == 404 => {
                seen.remove(&key);
            }
            Err(e) => return Err(e),
        }
    }
    let nanos = t.as_nanosecond();
    let name = format!("{}.{:x}", r.name.clone().unwrap_or_default(), nanos);
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": r,
        "reason": p.reason,
        "message": p.message,
        "source": {"component": controller},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": p.type_,
        "reportingComponent": controller,
        "reportingInstance": "",
    }))
    .map_err(kube::Error::SerdeError)?;
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), &namespace);
    api.create(&PostParams::default(), &ev).await?;
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert(
        key,
        Seen {
            name,
            namespace,
            count: 1,
        },
    );
    Ok(())
}
