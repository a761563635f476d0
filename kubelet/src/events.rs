//! Events about pods, posted as core/v1 Events the way the kubelet reports them
//! (`kubectl describe pod` shows them).

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Posts events from one node's kubelet.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
}

impl Recorder {
    pub fn new(client: kube::Client, node: &str) -> Recorder {
        Recorder {
            client,
            node: node.to_string(),
        }
    }

    /// Posts an event about `pod` (a container of it when `field_path` is set). Failures are
    /// logged: events are best effort, like upstream's.
    pub fn pod(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        warning: bool,
        reason: &str,
        message: String,
    ) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = chrono::Utc::now();
        let ts = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut involved = json!({
            "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
            "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version,
        });
        if let Some(f) = field_path {
            involved["fieldPath"] = json!(f);
        }
        let body = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default()), "namespace": ns},
            "involvedObject": involved,
            "reason": reason, "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        });
        let client = self.client.clone();
        tokio::spawn(async move {
            let Ok(ev) = serde_json::from_value::<Event>(body) else {
                return;
            };
            let api: Api<Event> = Api::namespaced(client, &ns);
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "posting event");
            }
        });
    }
}

/// `spec.containers{name}` / `spec.initContainers{name}`: the field path events name.
pub fn field_path(init: bool, container: &str) -> String {
    if init {
        format!("spec.initContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}
