//! An event recorder for controllers: events are queued and published in the background
//! (events.k8s.io/v1, which `kubectl describe` shows as core events) so a reconcile never
//! waits on them. Like upstream's broadcaster, a full queue drops events rather than block.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::mpsc;

/// Events waiting to be published before new ones are dropped.
const QUEUE: usize = 1000;

/// Records events on behalf of one controller (`reportingController`).
#[derive(Clone, Debug)]
pub struct EventRecorder {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (e.g. `replicaset-controller`).
    pub fn new(client: Client, controller: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let recorder = Recorder::new(client, Reporter::from(controller));
        tokio::spawn(async move {
            while let Some((ev, reference)) = rx.recv().await {
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::debug!(reason = %ev.reason, error = %e, "cannot publish event");
                }
            }
        });
        EventRecorder { tx }
    }

    fn record(
        &self,
        obj: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if self.tx.try_send((ev, obj)).is_err() {
            tracing::debug!(reason, "event queue full; event dropped");
        }
    }

    /// A Normal event about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.record(obj.object_ref(&()), EventType::Normal, reason, reason, note);
    }

    /// A Warning event about `obj`.
    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.record(
            obj.object_ref(&()),
            EventType::Warning,
            reason,
            reason,
            note,
        );
    }
}
