//! HorizontalPodAutoscaler controller. minik8s serves no metrics API yet, so it cannot
//! compute a replica count; like upstream's pkg/controller/podautoscaler in that situation,
//! it reads the target's scale and says plainly in the status conditions why it does not
//! scale (`ScalingActive False FailedGetResourceMetric ...`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec,
};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Runs the HPA controller until shutdown (checking every 15 s like upstream's sync period).
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let hpas = watch::<HorizontalPodAutoscaler>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut rounds = Rounds::new(
        "horizontalpodautoscaling",
        wake,
        Duration::from_secs(15),
        ctx.shutdown.clone(),
    );
    while rounds.next().await {
        let mut r = Ok(());
        for h in hpas.state() {
            if let Err(e) = sync_one(&ctx.client, &h).await {
                r = Err(e);
            }
        }
        rounds.report(r);
    }
    Ok(())
}

/// The target's current replicas through its scale subresource, or upstream's message.
async fn current_scale(
    client: &Client,
    ns: &str,
    kind: &str,
    api_version: &str,
    name: &str,
) -> Result<i32, String> {
    let scale = match kind {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), ns).get_scale(name).await,
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(client.clone(), ns).get_scale(name).await,
        "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns).get_scale(name).await,
        "ReplicationController" => {
            Api::<ReplicationController>::namespaced(client.clone(), ns).get_scale(name).await
        }
        _ => {
            return Err(format!(
                "the HPA controller was unable to get the target's current scale: no matches for kind \"{kind}\" in group \"{}\"",
                api_version.split_once('/').map_or("", |(g, _)| g)
            ))
        }
    };
    match scale {
        Ok(s) => Ok(s.spec.and_then(|s| s.replicas).unwrap_or(0)),
        Err(kube::Error::Api(e)) => Err(format!(
            "the HPA controller was unable to get the target's current scale: {}",
            e.message
        )),
        Err(e) => Err(format!(
            "the HPA controller was unable to get the target's current scale: {e}"
        )),
    }
}

/// Why the first metric cannot be read: (reason, message) as upstream words it.
fn metric_failure(metrics: &[MetricSpec]) -> (String, String) {
    let prefix = "the HPA was unable to compute the replica count";
    let resource_api = "unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)";
    match metrics.first() {
        Some(m) if m.type_ == "Resource" || m.resource.is_some() => {
            let name = m.resource.as_ref().map_or("cpu", |r| r.name.as_str());
            let what = match m.resource.as_ref().map(|r| r.target.type_.as_str()) {
                Some("Utilization") => "utilization",
                _ => "usage",
            };
            (
                "FailedGetResourceMetric".into(),
                format!("{prefix}: failed to get {name} {what}: unable to get metrics for resource {name}: {resource_api}"),
            )
        }
        Some(m) if m.type_ == "Pods" => (
            "FailedGetPodsMetric".into(),
            format!("{prefix}: unable to get metric {}: no custom metrics API (custom.metrics.k8s.io) registered", m.pods.as_ref().map_or("", |p| p.metric.name.as_str())),
        ),
        Some(m) if m.type_ == "Object" => (
            "FailedGetObjectMetric".into(),
            format!("{prefix}: unable to get metric {}: no custom metrics API (custom.metrics.k8s.io) registered", m.object.as_ref().map_or("", |p| p.metric.name.as_str())),
        ),
        Some(m) if m.type_ == "External" => (
            "FailedGetExternalMetric".into(),
            format!("{prefix}: unable to get external metric {}: no external metrics API (external.metrics.k8s.io) registered", m.external.as_ref().map_or("", |p| p.metric.name.as_str())),
        ),
        // No metrics means the default: 80% average cpu utilization.
        _ => (
            "FailedGetResourceMetric".into(),
            format!("{prefix}: failed to get cpu utilization: unable to get metrics for resource cpu: {resource_api}"),
        ),
    }
}

fn condition(
    old: &[HorizontalPodAutoscalerCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(since),
    }
}

async fn sync_one(client: &Client, h: &HorizontalPodAutoscaler) -> anyhow::Result<()> {
    let ns = h.namespace().unwrap_or_default();
    let Some(spec) = &h.spec else { return Ok(()) };
    let target = &spec.scale_target_ref;
    let old = h.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let mut next = HorizontalPodAutoscalerStatus {
        observed_generation: h.metadata.generation,
        last_scale_time: old.last_scale_time.clone(),
        current_metrics: None,
        ..Default::default()
    };
    match current_scale(
        client,
        &ns,
        &target.kind,
        target.api_version.as_deref().unwrap_or(""),
        &target.name,
    )
    .await
    {
        Ok(replicas) => {
            let (reason, message) = metric_failure(spec.metrics.as_deref().unwrap_or(&[]));
            next.current_replicas = Some(replicas);
            next.desired_replicas = replicas;
            next.conditions = Some(vec![
                condition(
                    &old_conds,
                    "AbleToScale",
                    "True",
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale".into(),
                ),
                condition(&old_conds, "ScalingActive", "False", &reason, message),
            ]);
        }
        Err(message) => {
            next.current_replicas = old.current_replicas;
            next.desired_replicas = old.desired_replicas;
            next.conditions = Some(vec![condition(
                &old_conds,
                "AbleToScale",
                "False",
                "FailedGetScale",
                message,
            )]);
        }
    }
    if h.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let mut obj = h.clone();
    obj.status = Some(next);
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    match api
        .replace_status(&h.name_any(), &PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
