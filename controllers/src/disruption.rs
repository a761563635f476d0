//! Disruption controller: the status of every PodDisruptionBudget (upstream's
//! pkg/controller/disruption): expectedPods, desiredHealthy, currentHealthy,
//! disruptionsAllowed and the DisruptionAllowed condition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::owner::controller_of;
use crate::common::pod;
use crate::common::rounds::{watch, Rounds};
use crate::common::LabelMatcher;
use crate::ControllerContext;

/// Runs the disruption controller until shutdown.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let pdbs = watch::<PodDisruptionBudget>(&ctx.informers, &wake, &ctx.shutdown).await;
    let pods = watch::<Pod>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut rounds = Rounds::new(
        "disruption",
        wake,
        Duration::from_secs(30),
        ctx.shutdown.clone(),
    );
    while rounds.next().await {
        rounds.report(sync(&ctx.client, &pdbs, &pods).await);
    }
    Ok(())
}

/// `value` of `total` (a percentage rounded up, or a number).
fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The replicas the controllers of `pods` ask for (upstream counts the scale of each
/// controller, not the pods that happen to exist).
async fn expected_from_controllers(
    client: &Client,
    ns: &str,
    pods: &[Arc<Pod>],
) -> anyhow::Result<i32> {
    let mut owners: BTreeMap<(String, String), ()> = BTreeMap::new();
    let mut without = 0;
    for p in pods {
        match controller_of(&p.metadata) {
            Some(o) => {
                owners.insert((o.kind.clone(), o.name.clone()), ());
            }
            None => without += 1,
        }
    }
    let mut total = without;
    for (kind, name) in owners.keys() {
        let replicas = match kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .and_then(|o| o.spec?.replicas),
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .and_then(|o| o.spec?.replicas),
            "ReplicationController" => Api::<ReplicationController>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await?
                .and_then(|o| o.spec?.replicas),
            _ => None,
        };
        total += replicas.unwrap_or(1);
    }
    Ok(total)
}

async fn sync(
    client: &Client,
    pdbs: &Store<PodDisruptionBudget>,
    pods: &Store<Pod>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    let mut by_ns: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods.state() {
        by_ns
            .entry(p.namespace().unwrap_or_default())
            .or_default()
            .push(p);
    }
    for pdb in pdbs.state() {
        if let Err(e) = sync_one(
            client,
            &pdb,
            by_ns.get(&pdb.namespace().unwrap_or_default()),
        )
        .await
        {
            tracing::debug!(namespace = ?pdb.namespace(), pdb = %pdb.name_any(), error = %e, "disruption");
            result = Err(e);
        }
    }
    result
}

async fn sync_one(
    client: &Client,
    pdb: &PodDisruptionBudget,
    pods: Option<&Vec<Arc<Pod>>>,
) -> anyhow::Result<()> {
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    // In policy/v1 an empty selector selects every pod of the namespace.
    let all = spec.selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    });
    let matcher = LabelMatcher::new(spec.selector.as_ref())?;
    let selected: Vec<Arc<Pod>> = pods
        .into_iter()
        .flatten()
        .filter(|p| all || matcher.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .cloned()
        .collect();
    let current_healthy = selected
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod::is_pod_ready(p))
        .count() as i32;
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let expected = expected_from_controllers(client, &ns, &selected).await?;
            let unavailable = scaled(max, expected).unwrap_or(0);
            (expected, (expected - unavailable).max(0))
        }
        (None, Some(IntOrString::Int(n))) => (selected.len() as i32, *n),
        (None, Some(min)) => {
            let expected = expected_from_controllers(client, &ns, &selected).await?;
            (expected, scaled(min, expected).unwrap_or(0))
        }
        (None, None) => (0, 0),
    };
    let allowed = if expected <= 0 {
        0
    } else {
        (current_healthy - desired).max(0)
    };
    let old = pdb.status.clone().unwrap_or_default();
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let generation = pdb.metadata.generation;
    let old_cond = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed");
    let cond = Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: generation,
        last_transition_time: match old_cond {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(Timestamp::now()),
        },
    };
    let next = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: generation,
        disrupted_pods: old.disrupted_pods.clone(),
        conditions: Some(vec![cond]),
    };
    if next == old {
        return Ok(());
    }
    let mut obj = pdb.clone();
    obj.status = Some(next);
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    match api
        .replace_status(&pdb.name_any(), &PostParams::default(), &obj)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
