//! Resource quantities and what a pod requests, as upstream's `resource` helpers compute it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Upstream's defaults for scoring a container without requests (`schedutil.DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// `schedutil.DefaultMemoryRequest`: 200 MiB.
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource: CPU in millicores, memory and ephemeral storage in bytes,
/// pods as a count, other (extended) resources in their own units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `o` from `self`.
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Element-wise maximum.
    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Reads a ResourceList (`requests`, `allocatable`).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (k, q) in list.into_iter().flatten() {
            match k.as_str() {
                "cpu" => r.milli_cpu = milli(q),
                "memory" => r.memory = value(q),
                "ephemeral-storage" => r.ephemeral_storage = value(q),
                "pods" => r.pods = value(q),
                other if is_scalar(other) => {
                    r.scalar.insert(other.to_string(), value(q));
                }
                _ => {}
            }
        }
        r
    }
}

/// Extended and hugepage resources count; other names (e.g. `storage`) do not.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-") || name.contains('/')
}

/// Parses a Kubernetes quantity into a float of base units (`1500m` = 1.5, `1Ki` = 1024).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mul = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * mul)
}

/// A quantity in milli-units, rounded up like `Quantity.MilliValue`.
pub fn milli(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| (v * 1000.0).ceil() as i64)
}

/// A quantity in whole units, rounded up like `Quantity.Value`.
pub fn value(q: &Quantity) -> i64 {
    parse_quantity(&q.0).map_or(0, |v| v.ceil() as i64)
}

fn container_requests(c: &Container) -> Resources {
    Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// What a pod requests: the sum over containers, at least the largest init container
/// (restartable "sidecar" init containers add to everything after them), plus overhead;
/// `pods` is 1. `non_zero` applies upstream's scoring defaults to containers without
/// cpu/memory requests.
pub fn pod_requests(spec: &PodSpec, non_zero: bool) -> Resources {
    let req = |c: &Container| {
        let mut r = container_requests(c);
        if non_zero {
            let has = |k: &str| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|m| m.contains_key(k))
            };
            if !has("cpu") {
                r.milli_cpu = DEFAULT_MILLI_CPU;
            }
            if !has("memory") {
                r.memory = DEFAULT_MEMORY;
            }
        }
        r
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&req(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = req(c);
        if is_restartable(c) {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with = sidecars.clone();
            with.add(&r);
            init_max.max_with(&with);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(o) = &spec.overhead {
        sum.add(&Resources::from_list(Some(o)));
    }
    sum.pods = 1;
    sum
}

/// Requests of a pod object (empty spec: nothing but `pods: 1`).
pub fn requests_of(pod: &Pod, non_zero: bool) -> Resources {
    match &pod.spec {
        Some(s) => pod_requests(s, non_zero),
        None => Resources {
            pods: 1,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1500m"), Some(1.5));
        assert_eq!(parse_quantity("1Ki"), Some(1024.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(milli(&Quantity("0.1".into())), 100);
        assert_eq!(value(&Quantity("1Gi".into())), 1 << 30);
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn init_containers_count_by_their_maximum() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}]
        }))
        .unwrap_or_default();
        let r = pod_requests(&spec, false);
        assert_eq!((r.milli_cpu, r.memory, r.pods), (500, 1 << 20, 1));
        let nz = pod_requests(&spec, true);
        assert_eq!(nz.memory, DEFAULT_MEMORY * 2);
    }

    #[test]
    fn sidecars_add_to_containers() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [{"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}]
        }))
        .unwrap_or_default();
        assert_eq!(pod_requests(&spec, false).milli_cpu, 150);
    }
}
