//! ResourceQuota controller: `status.hard` mirrors `spec.hard` and `status.used` counts what
//! the namespace uses of each listed resource (upstream's pkg/controller/resourcequota with
//! the core evaluators): pods and their cpu/memory requests and limits, and object counts.
//! A quota with scopes counts only the pods in all of its scopes (Terminating,
//! NotTerminating, BestEffort, NotBestEffort, PriorityClass, CrossNamespacePodAffinity, as
//! upstream's pod evaluator) and nothing else. Admission (refusing writes over quota) lives
//! in the API server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use tokio::sync::Notify;

use crate::common::pod;
use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Runs the ResourceQuota controller until shutdown.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let (i, s) = (&ctx.informers, &ctx.shutdown);
    let stores = Stores {
        quotas: watch::<ResourceQuota>(i, &wake, s).await,
        pods: watch::<Pod>(i, &wake, s).await,
        services: watch::<Service>(i, &wake, s).await,
        configmaps: watch::<ConfigMap>(i, &wake, s).await,
        secrets: watch::<Secret>(i, &wake, s).await,
        pvcs: watch::<PersistentVolumeClaim>(i, &wake, s).await,
        rcs: watch::<ReplicationController>(i, &wake, s).await,
    };
    let mut rounds = Rounds::new(
        "resourcequota",
        wake,
        Duration::from_secs(30),
        ctx.shutdown.clone(),
    );
    while rounds.next().await {
        rounds.report(sync(&ctx.client, &stores).await);
    }
    Ok(())
}

struct Stores {
    quotas: Store<ResourceQuota>,
    pods: Store<Pod>,
    services: Store<Service>,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    pvcs: Store<PersistentVolumeClaim>,
    rcs: Store<ReplicationController>,
}

/// A quantity in thousandths of its unit (millicores for cpu, millibytes for memory).
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (mult_num, mult_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1000 * 1000, 1),
        "M" => (1000 * 1_000_000, 1),
        "G" => (1000 * 1_000_000_000, 1),
        "T" => (1000 * 1_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "n" => (1, 1_000_000),
        "u" => (1, 1000),
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(mult_num)? / mult_den;
    if !frac.is_empty() {
        let digits = frac.len() as u32;
        let f: i128 = frac.parse().ok()?;
        value += f * mult_num / 10i128.pow(digits) / mult_den;
    }
    Some(value)
}

/// Formats thousandths the way the quantity should read: whole units when exact, else `m`.
pub fn format_milli(v: i128, binary: bool) -> String {
    if v % 1000 != 0 {
        return format!("{v}m");
    }
    let units = v / 1000;
    if binary && units != 0 {
        for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
            if units % (1i128 << shift) == 0 {
                return format!("{}{suffix}", units >> shift);
            }
        }
    }
    units.to_string()
}

/// What a pod uses of a compute resource (`requests.cpu`, `limits.memory`, ...).
fn pod_amount(p: &Pod, which: &str, resource: &str) -> i128 {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| {
            let r = c.resources.as_ref()?;
            let m = if which == "limits" {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            };
            // A limit without a request stands for the request, as defaulting does upstream.
            let m = m.or(if which == "requests" {
                r.limits.as_ref()
            } else {
                None
            })?;
            parse_milli(&m.get(resource)?.0)
        })
        .sum()
}

/// A quota's scopes as (scope, operator, values): `spec.scopes` (each as `Exists`) and
/// `spec.scopeSelector.matchExpressions`.
fn scopes_of(q: &ResourceQuota) -> Vec<(String, String, Vec<String>)> {
    let Some(spec) = q.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, Vec<String>)> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| (s.clone(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in spec
        .scope_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
    {
        out.push((
            e.scope_name.clone(),
            e.operator.clone(),
            e.values.clone().unwrap_or_default(),
        ));
    }
    out
}

/// Upstream's BestEffort QoS: no container asks for or limits cpu or memory.
fn best_effort(p: &Pod) -> bool {
    let Some(spec) = p.spec.as_ref() else {
        return true;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| {
            let r = c.resources.as_ref();
            [
                r.and_then(|r| r.requests.as_ref()),
                r.and_then(|r| r.limits.as_ref()),
            ]
            .into_iter()
            .flatten()
            .all(|m| {
                ["cpu", "memory"]
                    .iter()
                    .all(|k| m.get(*k).and_then(|q| parse_milli(&q.0)).unwrap_or(0) == 0)
            })
        })
}

/// Whether a pod affinity term names other namespaces.
fn cross_namespace_affinity(p: &Pod) -> bool {
    let Some(a) = p.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let terms =
        |required: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>,
         preferred: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            required
                .into_iter()
                .flatten()
                .chain(
                    preferred
                        .into_iter()
                        .flatten()
                        .map(|w| &w.pod_affinity_term),
                )
                .any(|t| {
                    t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
                        || t.namespace_selector.is_some()
                })
        };
    a.pod_affinity.as_ref().is_some_and(|x| {
        terms(
            x.required_during_scheduling_ignored_during_execution
                .as_ref(),
            x.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        )
    }) || a.pod_anti_affinity.as_ref().is_some_and(|x| {
        terms(
            x.required_during_scheduling_ignored_during_execution
                .as_ref(),
            x.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
        )
    })
}

/// Whether a pod is in one scope of a quota (upstream's `podMatchesScopeFunc`).
fn pod_in_scope(p: &Pod, scope: &str, op: &str, values: &[String]) -> bool {
    let terminating = p
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0);
    let matched = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(p),
        "NotBestEffort" => !best_effort(p),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(p),
        "PriorityClass" => {
            let class = p
                .spec
                .as_ref()
                .and_then(|s| s.priority_class_name.as_deref())
                .unwrap_or("");
            return match op {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => false,
    };
    if op == "DoesNotExist" {
        !matched
    } else {
        matched
    }
}

type Scopes = [(String, String, Vec<String>)];

fn used_of(key: &str, ns: &str, scopes: &Scopes, s: &Stores) -> Option<Quantity> {
    let count = |n: usize| Some(Quantity(n.to_string()));
    let pods: Vec<Arc<Pod>> = s.pods.state_filter(|p| {
        p.namespace().as_deref() == Some(ns)
            && !pod::is_terminal(p)
            && scopes.iter().all(|(sc, op, v)| pod_in_scope(p, sc, op, v))
    });
    let pod_key = matches!(
        key,
        "pods"
            | "count/pods"
            | "cpu"
            | "requests.cpu"
            | "memory"
            | "requests.memory"
            | "limits.cpu"
            | "limits.memory"
    );
    if !scopes.is_empty() && !pod_key {
        // A scoped quota covers only pods.
        return count(0);
    }
    let compute = |which: &str, res: &str| {
        let total: i128 = pods.iter().map(|p| pod_amount(p, which, res)).sum();
        Some(Quantity(format_milli(total, res != "cpu")))
    };
    match key {
        "pods" | "count/pods" => count(pods.len()),
        "cpu" | "requests.cpu" => compute("requests", "cpu"),
        "memory" | "requests.memory" => compute("requests", "memory"),
        "limits.cpu" => compute("limits", "cpu"),
        "limits.memory" => compute("limits", "memory"),
        "services" | "count/services" => count(
            s.services
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        "services.nodeports" => count(
            s.services
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .iter()
                .filter(|o| {
                    matches!(
                        o.spec.as_ref().and_then(|s| s.type_.as_deref()),
                        Some("NodePort" | "LoadBalancer")
                    )
                })
                .map(|o| {
                    o.spec
                        .as_ref()
                        .and_then(|s| s.ports.as_ref())
                        .map_or(0, |p| p.len())
                })
                .sum(),
        ),
        "services.loadbalancers" => count(
            s.services
                .state_filter(|o| {
                    o.namespace().as_deref() == Some(ns)
                        && o.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                })
                .len(),
        ),
        "configmaps" | "count/configmaps" => count(
            s.configmaps
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        "secrets" | "count/secrets" => count(
            s.secrets
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        "persistentvolumeclaims" | "count/persistentvolumeclaims" => count(
            s.pvcs
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        "replicationcontrollers" | "count/replicationcontrollers" => count(
            s.rcs
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        "resourcequotas" | "count/resourcequotas" => count(
            s.quotas
                .state_filter(|o| o.namespace().as_deref() == Some(ns))
                .len(),
        ),
        _ => None,
    }
}

async fn sync(client: &kube::Client, s: &Stores) -> anyhow::Result<()> {
    let mut result = Ok(());
    for q in s.quotas.state() {
        let ns = q.namespace().unwrap_or_default();
        let hard: BTreeMap<String, Quantity> = q
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let scopes = scopes_of(&q);
        let used: BTreeMap<String, Quantity> = hard
            .keys()
            .filter_map(|k| used_of(k, &ns, &scopes, s).map(|v| (k.clone(), v)))
            .collect();
        let next = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        };
        if q.status.as_ref() == Some(&next) {
            continue;
        }
        let mut obj = (*q).clone();
        obj.status = Some(next);
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
        match api
            .replace_status(&q.name_any(), &PostParams::default(), &obj)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
            Err(e) => result = Err(e.into()),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(parse_milli("500m"), Some(500));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("128Mi"), Some(1000 * 128 * 1024 * 1024));
        assert_eq!(parse_milli("1G"), Some(1000 * 1_000_000_000));
        assert_eq!(parse_milli("x"), None);
        assert_eq!(format_milli(1500, false), "1500m");
        assert_eq!(format_milli(2000, false), "2");
        assert_eq!(format_milli(1000 * 256 * 1024 * 1024, true), "256Mi");
        assert_eq!(format_milli(1000 * 1000, true), "1000");
    }
}
