//! Filter and score plugins, named and worded as upstream's default profile.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm,
    PodSpec, Taint, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{host_ports, normalize_image, Cache, HostPort, NodeInfo, PodInfo};
use crate::resources::{requests_of, Resources};

/// Highest score a plugin gives a node (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node does not fit, and whether preemption could change that.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// UnschedulableAndUnresolvable in upstream's terms: removing pods cannot help.
    pub unresolvable: bool,
    pub reasons: Vec<String>,
}

impl Failure {
    fn unschedulable(reason: impl Into<String>) -> Failure {
        Failure {
            unresolvable: false,
            reasons: vec![reason.into()],
        }
    }
    fn unresolvable(reason: impl Into<String>) -> Failure {
        Failure {
            unresolvable: true,
            reasons: vec![reason.into()],
        }
    }
}

pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const ERR_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// What the plugins need of the pod being scheduled, computed once per attempt.
pub struct PodCtx<'a> {
    pub pod: &'a Pod,
    pub spec: &'a PodSpec,
    pub namespace: &'a str,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub images: Vec<String>,
}

static EMPTY_SPEC: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();

impl<'a> PodCtx<'a> {
    /// The context of `pod` at `priority`.
    pub fn new(pod: &'a Pod, priority: i32) -> PodCtx<'a> {
        let spec = pod
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY_SPEC.get_or_init(PodSpec::default));
        let images = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .map(normalize_image)
            .collect();
        PodCtx {
            pod,
            spec,
            namespace: pod.metadata.namespace.as_deref().unwrap_or(""),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            priority,
            requests: requests_of(pod, false),
            non_zero: requests_of(pod, true),
            ports: host_ports(pod),
            images,
        }
    }

    fn affinity(&self) -> Option<&Affinity> {
        self.spec.affinity.as_ref()
    }

    fn tolerations(&self) -> &[Toleration] {
        self.spec.tolerations.as_deref().unwrap_or(&[])
    }

    fn required_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[])
    }

    fn required_anti_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or(&[])
    }

    fn spread(&self, when: &str) -> Vec<&TopologySpreadConstraint> {
        self.spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .filter(|c| c.when_unsatisfiable == when)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Selectors

/// Whether `labels` match a LabelSelector (an empty selector matches everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn node_requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement_matches(r, node.labels.get(&r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && node_requirement_matches(r, Some(&node.name)))
}

fn node_selector_matches(s: &NodeSelector, node: &NodeInfo) -> bool {
    s.node_selector_terms.iter().any(|t| term_matches(t, node))
}

/// `spec.nodeSelector` and required node affinity.
pub fn matches_node_affinity(pod: &PodCtx, node: &NodeInfo) -> bool {
    for (k, v) in pod.spec.node_selector.iter().flatten() {
        if node.labels.get(k) != Some(v) {
            return false;
        }
    }
    let required = pod
        .affinity()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|r| node_selector_matches(r, node))
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            if key.is_empty() {
                return false;
            }
            t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn untolerated<'t>(
    taints: &'t [Taint],
    tolerations: &'t [Toleration],
    effects: &'t [&'t str],
) -> impl Iterator<Item = &'t Taint> + 't {
    taints.iter().filter(move |t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

// ---------------------------------------------------------------------------------------
// PreFilter: cluster-wide state for spreading and inter-pod affinity

/// Namespaces a pod affinity term applies to (`None` = all).
fn term_namespaces(t: &PodAffinityTerm, own: &str) -> Option<HashSet<String>> {
    if t.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    }) {
        return None;
    }
    let ns: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
    if ns.is_empty() {
        Some(HashSet::from([own.to_string()]))
    } else {
        Some(ns)
    }
}

fn term_matches_pod(
    t: &PodAffinityTerm,
    term_ns: &str,
    pod_ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(sel) = &t.label_selector else {
        return false;
    };
    if let Some(nss) = term_namespaces(t, term_ns) {
        if !nss.contains(pod_ns) {
            return false;
        }
    }
    selector_matches(sel, labels)
}

/// Counts for one hard or soft topology spread constraint.
pub struct SpreadState {
    key: String,
    max_skew: i64,
    counts: HashMap<String, i64>,
    min: i64,
    self_match: i64,
}

/// Per-attempt cluster-wide state.
#[derive(Default)]
pub struct PreFilter {
    spread: Vec<SpreadState>,
    /// Per required affinity term: the topology values that hold a matching pod.
    affinity: Vec<HashSet<String>>,
    affinity_any_match: bool,
    anti_affinity: Vec<HashSet<String>>,
    /// (topologyKey, value) pairs where an existing pod's anti-affinity rejects this pod.
    existing_anti: HashSet<(String, String)>,
}

fn spread_state(
    pod: &PodCtx,
    c: &TopologySpreadConstraint,
    cache: &Cache,
    eligible: &dyn Fn(&NodeInfo) -> bool,
) -> SpreadState {
    let sel = c.label_selector.clone().unwrap_or_default();
    let mut counts: HashMap<String, i64> = HashMap::new();
    for n in cache.nodes.values() {
        let Some(v) = n.labels.get(&c.topology_key) else {
            continue;
        };
        if !eligible(n) {
            continue;
        }
        let matching = n
            .pods
            .iter()
            .filter(|p| p.namespace == pod.namespace && selector_matches(&sel, &p.labels))
            .count() as i64;
        *counts.entry(v.clone()).or_default() += matching;
    }
    let mut min = counts.values().copied().min().unwrap_or(0);
    if let Some(md) = c.min_domains {
        if (counts.len() as i64) < i64::from(md) {
            min = 0;
        }
    }
    SpreadState {
        key: c.topology_key.clone(),
        max_skew: i64::from(c.max_skew),
        counts,
        min,
        self_match: i64::from(selector_matches(&sel, &pod.labels)),
    }
}

impl PreFilter {
    /// Computes the state `filter` needs for `pod` over the whole cache.
    pub fn compute(pod: &PodCtx, cache: &Cache) -> PreFilter {
        let mut pf = PreFilter::default();
        let honor_affinity = |c: &TopologySpreadConstraint| {
            c.node_affinity_policy.as_deref().unwrap_or("Honor") == "Honor"
        };
        for c in pod.spread("DoNotSchedule") {
            let honor = honor_affinity(c);
            let eligible = |n: &NodeInfo| !honor || matches_node_affinity(pod, n);
            pf.spread.push(spread_state(pod, c, cache, &eligible));
        }
        let affinity = pod.required_affinity();
        let anti = pod.required_anti_affinity();
        if !affinity.is_empty() || !anti.is_empty() {
            pf.affinity = vec![HashSet::new(); affinity.len()];
            pf.anti_affinity = vec![HashSet::new(); anti.len()];
            for n in cache.nodes.values() {
                for p in &n.pods {
                    for (i, t) in affinity.iter().enumerate() {
                        if term_matches_pod(t, pod.namespace, &p.namespace, &p.labels) {
                            pf.affinity_any_match = true;
                            if let Some(v) = n.labels.get(&t.topology_key) {
                                pf.affinity[i].insert(v.clone());
                            }
                        }
                    }
                    for (i, t) in anti.iter().enumerate() {
                        if term_matches_pod(t, pod.namespace, &p.namespace, &p.labels) {
                            if let Some(v) = n.labels.get(&t.topology_key) {
                                pf.anti_affinity[i].insert(v.clone());
                            }
                        }
                    }
                }
            }
        }
        for p in cache.anti_affinity_pods.values() {
            let Some(n) = cache.nodes.get(&p.node) else {
                continue;
            };
            for t in &p.anti_affinity {
                if term_matches_pod(t, &p.namespace, pod.namespace, &pod.labels) {
                    if let Some(v) = n.labels.get(&t.topology_key) {
                        pf.existing_anti.insert((t.topology_key.clone(), v.clone()));
                    }
                }
            }
        }
        pf
    }
}

// ---------------------------------------------------------------------------------------
// Filters

/// Runs the filters in upstream's order; the first that fails explains the node.
/// `nominated` is what pods nominated to this node at least as important as this one request.
pub fn filter(
    pod: &PodCtx,
    node: &NodeInfo,
    pf: &PreFilter,
    nominated: Option<&Resources>,
) -> Result<(), Failure> {
    // NodeUnschedulable
    if node.unschedulable {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !pod.tolerations().iter().any(|tol| tolerates(tol, &t)) {
            return Err(Failure::unresolvable(ERR_UNSCHEDULABLE));
        }
    }
    // NodeName
    if let Some(n) = pod.spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if n != node.name {
            return Err(Failure::unresolvable(ERR_NODE_NAME));
        }
    }
    // TaintToleration
    if let Some(t) = untolerated(
        &node.taints,
        pod.tolerations(),
        &["NoSchedule", "NoExecute"],
    )
    .next()
    {
        return Err(Failure::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )));
    }
    // NodeAffinity (nodeSelector and required terms)
    if !matches_node_affinity(pod, node) {
        return Err(Failure::unresolvable(ERR_NODE_AFFINITY));
    }
    // NodePorts
    if !pod.ports.is_empty() {
        let conflict = pod.ports.iter().any(|(proto, ip, port)| {
            node.used_ports().any(|(p2, ip2, port2)| {
                port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
            })
        });
        if conflict {
            return Err(Failure::unschedulable(ERR_PORTS));
        }
    }
    // NodeResourcesFit
    fits_resources(pod, node, nominated)?;
    // PodTopologySpread
    for s in &pf.spread {
        let Some(v) = node.labels.get(&s.key) else {
            return Err(Failure::unresolvable(ERR_SPREAD_LABEL));
        };
        let count = s.counts.get(v).copied().unwrap_or(0);
        if count + s.self_match - s.min > s.max_skew {
            return Err(Failure::unschedulable(ERR_SPREAD));
        }
    }
    // InterPodAffinity
    for (k, v) in &pf.existing_anti {
        if node.labels.get(k) == Some(v) {
            return Err(Failure::unschedulable(ERR_EXISTING_ANTI_AFFINITY));
        }
    }
    let affinity = pod.required_affinity();
    if !affinity.is_empty() {
        // No pod matches at all, but the pod matches its own terms: the first of a group may go anywhere.
        let self_ok = !pf.affinity_any_match
            && affinity
                .iter()
                .all(|t| term_matches_pod(t, pod.namespace, pod.namespace, &pod.labels));
        let ok = affinity.iter().enumerate().all(|(i, t)| {
            node.labels
                .get(&t.topology_key)
                .is_some_and(|v| self_ok || pf.affinity[i].contains(v))
        });
        if !ok {
            return Err(Failure::unresolvable(ERR_AFFINITY));
        }
    }
    for (i, t) in pod.required_anti_affinity().iter().enumerate() {
        if node
            .labels
            .get(&t.topology_key)
            .is_some_and(|v| pf.anti_affinity[i].contains(v))
        {
            return Err(Failure::unschedulable(ERR_ANTI_AFFINITY));
        }
    }
    Ok(())
}

fn fits_resources(
    pod: &PodCtx,
    node: &NodeInfo,
    nominated: Option<&Resources>,
) -> Result<(), Failure> {
    let mut used = node.requested.clone();
    if let Some(n) = nominated {
        used.add(n);
    }
    let a = &node.allocatable;
    let r = &pod.requests;
    let mut reasons = Vec::new();
    if used.pods + 1 > a.pods {
        reasons.push("Too many pods".to_string());
    }
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - used.milli_cpu {
        reasons.push("Insufficient cpu".into());
    }
    if r.memory > 0 && r.memory > a.memory - used.memory {
        reasons.push("Insufficient memory".into());
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > a.ephemeral_storage - used.ephemeral_storage
    {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (k, v) in &r.scalar {
        if *v > 0 {
            let have =
                a.scalar.get(k).copied().unwrap_or(0) - used.scalar.get(k).copied().unwrap_or(0);
            if *v > have {
                reasons.push(format!("Insufficient {k}"));
            }
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            unresolvable: false,
            reasons,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Scores

/// Score plugin weights (upstream's default profile).
#[derive(Debug, Clone)]
pub struct Weights {
    pub node_resources_fit: i64,
    pub balanced_allocation: i64,
    pub image_locality: i64,
    pub inter_pod_affinity: i64,
    pub node_affinity: i64,
    pub pod_topology_spread: i64,
    pub taint_toleration: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            node_resources_fit: 1,
            balanced_allocation: 1,
            image_locality: 1,
            inter_pod_affinity: 2,
            node_affinity: 2,
            pod_topology_spread: 2,
            taint_toleration: 3,
        }
    }
}

impl Weights {
    /// Sets one weight from `Name=N`.
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (name, w) = spec
            .split_once('=')
            .ok_or_else(|| format!("plugin weight {spec:?} is not Name=Weight"))?;
        let w: i64 = w
            .trim()
            .parse()
            .map_err(|_| format!("plugin weight {spec:?}: weight is not a number"))?;
        let slot = match name.trim() {
            "NodeResourcesFit" => &mut self.node_resources_fit,
            "NodeResourcesBalancedAllocation" => &mut self.balanced_allocation,
            "ImageLocality" => &mut self.image_locality,
            "InterPodAffinity" => &mut self.inter_pod_affinity,
            "NodeAffinity" => &mut self.node_affinity,
            "PodTopologySpread" => &mut self.pod_topology_spread,
            "TaintToleration" => &mut self.taint_toleration,
            other => return Err(format!("unknown score plugin {other:?}")),
        };
        *slot = w;
        Ok(())
    }
}

fn least_allocated(pod: &PodCtx, node: &NodeInfo) -> i64 {
    let part = |cap: i64, req: i64| {
        if cap <= 0 || req > cap {
            0
        } else {
            (cap - req) * MAX_NODE_SCORE / cap
        }
    };
    let cpu = part(
        node.allocatable.milli_cpu,
        node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
    );
    let mem = part(
        node.allocatable.memory,
        node.non_zero_requested.memory + pod.non_zero.memory,
    );
    (cpu + mem) / 2
}

fn balanced_allocation(pod: &PodCtx, node: &NodeInfo) -> i64 {
    let frac = |cap: i64, req: i64| {
        if cap <= 0 {
            0.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let cpu = frac(
        node.allocatable.milli_cpu,
        node.requested.milli_cpu + pod.requests.milli_cpu,
    );
    let mem = frac(
        node.allocatable.memory,
        node.requested.memory + pod.requests.memory,
    );
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

fn preferred_node_affinity(pod: &PodCtx, node: &NodeInfo) -> i64 {
    pod.affinity()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

fn prefer_no_schedule_count(pod: &PodCtx, node: &NodeInfo) -> i64 {
    untolerated(&node.taints, pod.tolerations(), &["PreferNoSchedule"]).count() as i64
}

const MB: i64 = 1024 * 1024;

fn image_locality(
    pod: &PodCtx,
    node: &NodeInfo,
    spread: &HashMap<String, usize>,
    total: usize,
) -> i64 {
    if pod.images.is_empty() {
        return 0;
    }
    let mut sum = 0f64;
    for img in &pod.images {
        if let Some(size) = node.images.get(img) {
            let nodes_with = spread.get(img).copied().unwrap_or(1) as f64;
            sum += *size as f64 * nodes_with / total.max(1) as f64;
        }
    }
    let min = 23 * MB;
    let max = 1000 * MB * pod.images.len() as i64;
    let sum = (sum as i64).clamp(min, max);
    MAX_NODE_SCORE * (sum - min) / (max - min)
}

/// Normalizes to 0..=100 against the maximum (`DefaultNormalizeScore`).
fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = *s * MAX_NODE_SCORE / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// Min-max normalization of possibly negative scores (InterPodAffinity).
fn normalize_min_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            MAX_NODE_SCORE * (*s - min) / diff
        } else {
            0
        };
    }
}

/// Scores feasible nodes; returns the weighted total per node, in the order given.
pub fn score(pod: &PodCtx, nodes: &[&NodeInfo], cache: &Cache, weights: &Weights) -> Vec<i64> {
    let n = nodes.len();
    let mut total = vec![0i64; n];
    let mut add = |scores: &[i64], w: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * w;
        }
    };
    let fit: Vec<i64> = nodes.iter().map(|nd| least_allocated(pod, nd)).collect();
    add(&fit, weights.node_resources_fit);
    let bal: Vec<i64> = nodes
        .iter()
        .map(|nd| balanced_allocation(pod, nd))
        .collect();
    add(&bal, weights.balanced_allocation);
    if !pod.images.is_empty() {
        let mut spread: HashMap<String, usize> = HashMap::new();
        for nd in cache.nodes.values() {
            for img in &pod.images {
                if nd.images.contains_key(img) {
                    *spread.entry(img.clone()).or_default() += 1;
                }
            }
        }
        let total_nodes = cache.nodes.len();
        let s: Vec<i64> = nodes
            .iter()
            .map(|nd| image_locality(pod, nd, &spread, total_nodes))
            .collect();
        add(&s, weights.image_locality);
    }
    let mut na: Vec<i64> = nodes
        .iter()
        .map(|nd| preferred_node_affinity(pod, nd))
        .collect();
    normalize(&mut na, false);
    add(&na, weights.node_affinity);
    let mut tt: Vec<i64> = nodes
        .iter()
        .map(|nd| prefer_no_schedule_count(pod, nd))
        .collect();
    normalize(&mut tt, true);
    add(&tt, weights.taint_toleration);
    let soft = pod.spread("ScheduleAnyway");
    if !soft.is_empty() {
        let mut raw = vec![0f64; n];
        for c in soft {
            let st = spread_state(pod, c, cache, &|nd: &NodeInfo| {
                matches_node_affinity(pod, nd)
            });
            let w = ((st.counts.len() + 2) as f64).ln();
            for (i, nd) in nodes.iter().enumerate() {
                let count = nd
                    .labels
                    .get(&st.key)
                    .and_then(|v| st.counts.get(v))
                    .copied()
                    .unwrap_or(0);
                raw[i] += count as f64 * w + (st.max_skew - 1) as f64;
            }
        }
        let raw: Vec<i64> = raw.iter().map(|r| r.round() as i64).collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        let min = raw.iter().copied().min().unwrap_or(0);
        let s: Vec<i64> = raw
            .iter()
            .map(|r| {
                if max == 0 {
                    MAX_NODE_SCORE
                } else {
                    MAX_NODE_SCORE * (max + min - r) / max
                }
            })
            .collect();
        add(&s, weights.pod_topology_spread);
    }
    let preferred = pod.affinity().map(|a| {
        let aff = a
            .pod_affinity
            .as_ref()
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        let anti = a
            .pod_anti_affinity
            .as_ref()
            .and_then(|p| {
                p.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        (aff, anti)
    });
    if let Some((aff, anti)) = preferred.filter(|(a, b)| !a.is_empty() || !b.is_empty()) {
        // (topologyKey, value) -> weight, from every existing pod the terms match.
        let mut topo: HashMap<(String, String), i64> = HashMap::new();
        for nd in cache.nodes.values() {
            for p in &nd.pods {
                for (terms, sign) in [(&aff, 1), (&anti, -1)] {
                    for wt in terms.iter() {
                        let t = &wt.pod_affinity_term;
                        if term_matches_pod(t, pod.namespace, &p.namespace, &p.labels) {
                            if let Some(v) = nd.labels.get(&t.topology_key) {
                                *topo.entry((t.topology_key.clone(), v.clone())).or_default() +=
                                    sign * i64::from(wt.weight);
                            }
                        }
                    }
                }
            }
        }
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|nd| {
                topo.iter()
                    .filter(|((k, v), _)| nd.labels.get(k) == Some(v))
                    .map(|(_, w)| *w)
                    .sum()
            })
            .collect();
        normalize_min_max(&mut s);
        add(&s, weights.inter_pod_affinity);
    }
    total
}

/// Upstream's `FitError` message: `0/3 nodes are available: 1 ..., 2 Insufficient cpu.`
pub fn fit_error_message(
    num_nodes: usize,
    failures: &HashMap<String, Failure>,
    post_filter: &str,
) -> String {
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for f in failures.values() {
        for r in &f.reasons {
            *hist.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = hist.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    if !post_filter.is_empty() {
        msg.push_str(&format!(" {post_filter}."));
    }
    msg
}

/// Whether `p` is a pod that `pod`'s preemption may evict.
pub fn is_victim_candidate(pod: &PodCtx, p: &PodInfo) -> bool {
    p.priority < pod.priority
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_reads_like_upstream() {
        let mut f = HashMap::new();
        f.insert(
            "a".to_string(),
            Failure::unresolvable(
                "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
            ),
        );
        f.insert("b".to_string(), Failure::unschedulable("Insufficient cpu"));
        f.insert("c".to_string(), Failure::unschedulable("Insufficient cpu"));
        assert_eq!(
            fit_error_message(3, &f, "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod"),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn tolerations_match_like_upstream() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let eq = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            ..Default::default()
        };
        let exists_all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        let wrong = Toleration {
            key: Some("k".into()),
            value: Some("x".into()),
            ..Default::default()
        };
        assert!(tolerates(&eq, &taint));
        assert!(tolerates(&exists_all, &taint));
        assert!(!tolerates(&wrong, &taint));
    }
}
