//! Discovery documents built from the registry table: legacy (`/api`, `/apis`, `/apis/<g>`,
//! `/api/v1`, `/apis/<g>/<v>`), aggregated (`apidiscovery.k8s.io/v2` and `v2beta1`) and
//! `/version`. Pure functions; the routes live elsewhere.

use std::cmp::Ordering;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::registry::{ResourceInfo, Subresource};

/// Verbs of every main resource served by the generic store, sorted as upstream lists them.
pub const RESOURCE_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of `/status` and `/scale`.
const SUBRESOURCE_VERBS: [&str; 3] = ["get", "patch", "update"];

/// Verbs of exec, attach and portforward (upstream's connect subresources).
const CONNECT_VERBS: [&str; 2] = ["create", "get"];
/// Verbs of a proxy subresource.
const PROXY_VERBS: [&str; 5] = ["create", "delete", "get", "patch", "update"];

/// The group of aggregated discovery documents.
const DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";
const DISCOVERY_KIND: &str = "APIGroupDiscoveryList";

/// Aggregated discovery version (`apidiscovery.k8s.io/<v>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatedVersion {
    V2,
    V2Beta1,
}

impl AggregatedVersion {
    /// `v2` or `v2beta1`.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => "v2",
            AggregatedVersion::V2Beta1 => "v2beta1",
        }
    }

    /// The response Content-Type upstream answers with; clients decide by it alone.
    pub fn content_type(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            AggregatedVersion::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

/// The outcome of Accept negotiation for `/api` and `/apis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// `Some` to answer [`aggregated`], `None` for the legacy document.
    pub aggregated: Option<AggregatedVersion>,
    /// The exact response Content-Type.
    pub content_type: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Versions and groups

/// Upstream `version.CompareKubeAwareVersionStrings` order key: GA first (highest major),
/// then betas, then alphas, then anything else alphabetically.
fn version_key(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let other = (3, Reverse(0), Reverse(0), v.to_string());
    let Some(rest) = v.strip_prefix('v') else {
        return other;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (major, tail) = rest.split_at(digits);
    let Ok(major) = major.parse::<u64>() else {
        return other;
    };
    if tail.is_empty() {
        return (0, Reverse(major), Reverse(0), String::new());
    }
    for (class, word) in [(1, "beta"), (2, "alpha")] {
        if let Some(minor) = tail.strip_prefix(word).filter(|m| is_digits(m)) {
            if let Ok(minor) = minor.parse::<u64>() {
                return (class, Reverse(major), Reverse(minor), String::new());
            }
        }
    }
    other
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn compare_versions(a: &str, b: &str) -> Ordering {
    version_key(a).cmp(&version_key(b))
}

/// The versions a group serves, most preferred first.
fn group_versions(res: &[ResourceInfo], group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = Vec::new();
    for r in res.iter().filter(|r| r.group == group) {
        if !versions.contains(&r.version) {
            versions.push(r.version);
        }
    }
    versions.sort_by(|a, b| compare_versions(a, b));
    versions
}

/// Non-core groups, in table order.
fn groups(res: &[ResourceInfo]) -> Vec<&'static str> {
    let mut gs: Vec<&'static str> = Vec::new();
    for r in res.iter().filter(|r| !r.group.is_empty()) {
        if !gs.contains(&r.group) {
            gs.push(r.group);
        }
    }
    gs
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn group_json(res: &[ResourceInfo], group: &str) -> Value {
    let versions: Vec<Value> = group_versions(res, group)
        .into_iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `/api`: APIVersions. `server_address` is `host:port` as clients reach this server.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`: APIGroupList of every non-core group, in table order.
pub fn api_group_list(res: &[ResourceInfo]) -> Value {
    let gs: Vec<Value> = groups(res)
        .into_iter()
        .map(|g| group_json(res, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `/apis/<group>`: APIGroup, or `None` when the group is not served.
pub fn api_group(res: &[ResourceInfo], group: &str) -> Option<Value> {
    if group.is_empty() || !res.iter().any(|r| r.group == group) {
        return None;
    }
    let mut g = group_json(res, group);
    if let Value::Object(m) = &mut g {
        m.insert("kind".into(), "APIGroup".into());
        m.insert("apiVersion".into(), "v1".into());
    }
    Some(g)
}

// ---------------------------------------------------------------------------------------------
// Resources

/// A subresource as discovery shows it.
struct SubInfo {
    name: &'static str,
    /// Group, version and kind when they differ from the parent's (`Scale`).
    gvk: Option<(&'static str, &'static str, &'static str)>,
    verbs: &'static [&'static str],
}

/// How discovery shows a subresource; `None` for one it does not know yet (so a new
/// `Subresource` variant compiles before discovery learns it, but is not advertised).
fn sub_info(s: Subresource) -> Option<SubInfo> {
    #[allow(unreachable_patterns)]
    match s {
        Subresource::Status => Some(SubInfo {
            name: "status",
            gvk: None,
            verbs: &SUBRESOURCE_VERBS,
        }),
        Subresource::Scale => Some(SubInfo {
            name: "scale",
            gvk: Some(("autoscaling", "v1", "Scale")),
            verbs: &SUBRESOURCE_VERBS,
        }),
        Subresource::Binding => Some(SubInfo {
            name: "binding",
            gvk: Some(("", "v1", "Binding")),
            verbs: &["create"],
        }),
        Subresource::Log => Some(SubInfo {
            name: "log",
            gvk: None,
            verbs: &["get"],
        }),
        Subresource::Exec => Some(SubInfo {
            name: "exec",
            gvk: Some(("", "v1", "PodExecOptions")),
            verbs: &CONNECT_VERBS,
        }),
        Subresource::Attach => Some(SubInfo {
            name: "attach",
            gvk: Some(("", "v1", "PodAttachOptions")),
            verbs: &CONNECT_VERBS,
        }),
        Subresource::PortForward => Some(SubInfo {
            name: "portforward",
            gvk: Some(("", "v1", "PodPortForwardOptions")),
            verbs: &CONNECT_VERBS,
        }),
        Subresource::Proxy => Some(SubInfo {
            name: "proxy",
            gvk: Some(("", "v1", "NodeProxyOptions")),
            verbs: &PROXY_VERBS,
        }),
        Subresource::Approval => Some(SubInfo {
            name: "approval",
            gvk: None,
            verbs: &SUBRESOURCE_VERBS,
        }),
        _ => None,
    }
}

fn subresources_sorted(r: &ResourceInfo) -> Vec<SubInfo> {
    let mut subs: Vec<SubInfo> = r.subresources.iter().filter_map(|&s| sub_info(s)).collect();
    subs.sort_by(|a, b| a.name.cmp(b.name));
    subs.dedup_by(|a, b| a.name == b.name);
    subs
}

/// A stable stand-in for upstream's storage version hash (base64 of 8 bytes of a hash of
/// `group/version/kind`); clients only compare it for equality.
fn storage_version_hash(r: &ResourceInfo) -> String {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}/{}/{}", r.group, r.version, r.kind).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    base64::engine::general_purpose::STANDARD.encode(h.to_be_bytes())
}

fn served_in<'a>(
    res: &'a [ResourceInfo],
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a ResourceInfo> {
    res.iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::from(*s)).collect())
}

/// `/api/v1` (group `""`) or `/apis/<g>/<v>`: APIResourceList, or `None` when not served.
pub fn api_resource_list(res: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for r in served_in(res, group, version) {
        let mut m = Map::new();
        m.insert("name".into(), r.plural.into());
        m.insert("singularName".into(), r.singular.into());
        m.insert("namespaced".into(), r.namespaced.into());
        m.insert("kind".into(), r.kind.into());
        m.insert("verbs".into(), strs(&RESOURCE_VERBS));
        if !r.short_names.is_empty() {
            m.insert("shortNames".into(), strs(r.short_names));
        }
        if !r.categories.is_empty() {
            m.insert("categories".into(), strs(r.categories));
        }
        m.insert("storageVersionHash".into(), storage_version_hash(r).into());
        entries.push((r.plural.to_string(), Value::Object(m)));
        for s in subresources_sorted(r) {
            let name = format!("{}/{}", r.plural, s.name);
            let mut m = Map::new();
            m.insert("name".into(), name.clone().into());
            m.insert("singularName".into(), "".into());
            m.insert("namespaced".into(), r.namespaced.into());
            let kind = match s.gvk {
                // Options kinds of the parent's own group-version carry no group/version.
                Some((g, v, k)) if g == r.group && v == r.version => k,
                Some((g, v, k)) => {
                    m.insert("group".into(), g.into());
                    m.insert("version".into(), v.into());
                    k
                }
                None => r.kind,
            };
            m.insert("kind".into(), kind.into());
            m.insert("verbs".into(), strs(s.verbs));
            entries.push((name, Value::Object(m)));
        }
    }
    if entries.is_empty() {
        return None;
    }
    if group.is_empty() && version == "v1" {
        // Create-only, served by the pods store (`POST namespaces/<ns>/bindings`).
        entries.push((
            "bindings".into(),
            json!({"name": "bindings", "singularName": "binding", "namespaced": true,
                   "kind": "Binding", "verbs": ["create"]}),
        ));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Map::new();
    out.insert("kind".into(), "APIResourceList".into());
    if !group.is_empty() {
        // Upstream's `/api/v1` document carries no apiVersion.
        out.insert("apiVersion".into(), "v1".into());
    }
    out.insert("groupVersion".into(), group_version(group, version).into());
    out.insert(
        "resources".into(),
        Value::Array(entries.into_iter().map(|e| e.1).collect()),
    );
    Some(Value::Object(out))
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let mut m = Map::new();
    m.insert("resource".into(), r.plural.into());
    m.insert(
        "responseKind".into(),
        json!({"group": r.group, "version": r.version, "kind": r.kind}),
    );
    m.insert(
        "scope".into(),
        if r.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }
        .into(),
    );
    m.insert("singularResource".into(), r.singular.into());
    m.insert("verbs".into(), strs(&RESOURCE_VERBS));
    if !r.short_names.is_empty() {
        m.insert("shortNames".into(), strs(r.short_names));
    }
    if !r.categories.is_empty() {
        m.insert("categories".into(), strs(r.categories));
    }
    let subs: Vec<Value> = subresources_sorted(r)
        .into_iter()
        .map(|s| {
            let (g, v, k) = s.gvk.unwrap_or((r.group, r.version, r.kind));
            json!({
                "subresource": s.name,
                "responseKind": {"group": g, "version": v, "kind": k},
                "verbs": strs(s.verbs),
            })
        })
        .collect();
    if !subs.is_empty() {
        m.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(m)
}

fn aggregated_group(res: &[ResourceInfo], group: &str) -> Value {
    let versions: Vec<Value> = group_versions(res, group)
        .into_iter()
        .map(|v| {
            let mut rs: Vec<&ResourceInfo> = served_in(res, group, v).collect();
            rs.sort_by(|a, b| a.plural.cmp(b.plural));
            let mut resources: Vec<Value> = rs.into_iter().map(aggregated_resource).collect();
            if group.is_empty() && v == "v1" {
                let at = resources
                    .iter()
                    .position(|r| r["resource"].as_str().is_some_and(|n| n > "bindings"))
                    .unwrap_or(resources.len());
                resources.insert(
                    at,
                    json!({"resource": "bindings", "scope": "Namespaced", "singularResource": "binding",
                           "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
                           "verbs": ["create"]}),
                );
            }
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut meta = Map::new();
    if !group.is_empty() {
        meta.insert("name".into(), group.into());
    }
    meta.insert("creationTimestamp".into(), Value::Null);
    json!({"metadata": meta, "versions": versions})
}

/// Aggregated discovery (`APIGroupDiscoveryList`): for `/api` (`legacy`) one group with an
/// empty name holding the core resources; for `/apis` every non-core group, in table order,
/// each with its versions most preferred first.
pub fn aggregated(res: &[ResourceInfo], legacy: bool, version: AggregatedVersion) -> Value {
    let items: Vec<Value> = if legacy {
        vec![aggregated_group(res, "")]
    } else {
        groups(res)
            .into_iter()
            .map(|g| aggregated_group(res, g))
            .collect()
    };
    json!({
        "kind": DISCOVERY_KIND,
        "apiVersion": format!("{DISCOVERY_GROUP}/{}", version.as_str()),
        "metadata": {},
        "items": items,
    })
}

// ---------------------------------------------------------------------------------------------
// Negotiation

struct Clause<'a> {
    typ: &'a str,
    sub: &'a str,
    params: Vec<(&'a str, &'a str)>,
    q: f64,
}

/// Parses an Accept header like goautoneg: `type/subtype;k=v;q=0.5`, `*` as `*/*`.
fn parse_accept(accept: &str) -> Vec<Clause<'_>> {
    let mut out = Vec::new();
    for part in accept.split(',') {
        let mut fields = part.split(';').map(str::trim);
        let range = fields.next().unwrap_or_default();
        let (typ, sub) = match range.split_once('/') {
            Some((t, s)) => (t.trim(), s.trim()),
            None if range == "*" => ("*", "*"),
            None => continue,
        };
        let mut clause = Clause {
            typ,
            sub,
            params: Vec::new(),
            q: 1.0,
        };
        for f in fields {
            let Some((k, v)) = f.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause.params.push((k, v));
            }
        }
        out.push(clause);
    }
    // Client preference: higher q first, then concrete types before wildcards; stable.
    out.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(Ordering::Equal)
            .then_with(|| (a.typ == "*").cmp(&(b.typ == "*")))
            .then_with(|| (a.sub == "*").cmp(&(b.sub == "*")))
    });
    out
}

const LEGACY: Negotiated = Negotiated {
    aggregated: None,
    content_type: "application/json",
};

/// Decides from the Accept header between aggregated discovery (v2, v2beta1) and the legacy
/// JSON document, as upstream's discovery endpoint restrictions do: only JSON is served, and
/// an `as`/`g`/`v` clause is acceptable only for `APIGroupDiscoveryList` of a served version.
/// When nothing is acceptable the legacy JSON document is answered (never 406).
pub fn negotiate(accept: &str) -> Negotiated {
    for c in parse_accept(accept) {
        if c.q <= 0.0 {
            continue;
        }
        let type_ok = c.typ == "*" || c.typ.eq_ignore_ascii_case("application");
        let sub_ok = c.sub == "*" || c.sub.eq_ignore_ascii_case("json");
        if !(type_ok && sub_ok) {
            continue;
        }
        let get = |k: &str| c.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        let (as_, g, v) = (get("as"), get("g"), get("v"));
        if as_.is_none() && g.is_none() && v.is_none() {
            return LEGACY;
        }
        if as_ != Some(DISCOVERY_KIND) || g != Some(DISCOVERY_GROUP) {
            continue;
        }
        let version = match v {
            Some("v2") => AggregatedVersion::V2,
            Some("v2beta1") => AggregatedVersion::V2Beta1,
            _ => continue,
        };
        return Negotiated {
            aggregated: Some(version),
            content_type: version.content_type(),
        };
    }
    LEGACY
}

// ---------------------------------------------------------------------------------------------
// Version

/// Go's `GOOS/GOARCH` for this build.
fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// `/version`: upstream `version.Info` for v1.33. Commit and build date come from the
/// `MINIK8S_GIT_COMMIT` / `MINIK8S_BUILD_DATE` environment at compile time when set.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0+minik8s",
        "gitCommit": option_env!("MINIK8S_GIT_COMMIT").unwrap_or(""),
        "gitTreeState": option_env!("MINIK8S_GIT_TREE_STATE").unwrap_or(""),
        "buildDate": option_env!("MINIK8S_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": platform(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::Strategy;
    use crate::validation::FieldErrors;

    struct Plain;
    impl Strategy for Plain {
        fn validate(&self, _obj: &Value) -> FieldErrors {
            Vec::new()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn info(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        singular: &'static str,
        short_names: &'static [&'static str],
        categories: &'static [&'static str],
        namespaced: bool,
        subresources: &'static [Subresource],
    ) -> ResourceInfo {
        ResourceInfo {
            group,
            version,
            kind,
            plural,
            singular,
            short_names,
            categories,
            namespaced,
            subresources,
            strategy: Arc::new(Plain),
        }
    }

    #[rustfmt::skip]
    fn table() -> Vec<ResourceInfo> {
        use Subresource::{Scale, Status};
        vec![
            info("", "v1", "Pod", "pods", "pod", &["po"], &["all"], true, &[Status]),
            info("", "v1", "Namespace", "namespaces", "namespace", &["ns"], &[], false, &[Status]),
            info("apps", "v1", "Deployment", "deployments", "deployment", &["deploy"], &["all"], true, &[Status, Scale]),
            info("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", &["hpa"], &["all"], true, &[Status]),
            info("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", &["hpa"], &["all"], true, &[Status]),
            info("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", &[], &[], false, &[]),
        ]
    }

    #[test]
    fn versions_and_groups() {
        assert_eq!(
            api_versions("10.0.0.1:6443"),
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}]})
        );
        let res = table();
        let list = api_group_list(&res);
        assert_eq!(list["kind"], "APIGroupList");
        assert_eq!(list["apiVersion"], "v1");
        let names: Vec<&str> = list["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(names, ["apps", "autoscaling", "rbac.authorization.k8s.io"]);
        assert_eq!(
            api_group(&res, "autoscaling"),
            Some(json!({
                "kind": "APIGroup", "apiVersion": "v1", "name": "autoscaling",
                "versions": [{"groupVersion": "autoscaling/v2", "version": "v2"}, {"groupVersion": "autoscaling/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "autoscaling/v2", "version": "v2"},
            }))
        );
        assert_eq!(api_group(&res, "batch"), None);
        assert_eq!(api_group(&res, ""), None);
    }

    #[test]
    fn version_order() {
        let mut v = vec![
            "v1alpha1",
            "v1",
            "foo10",
            "v2beta1",
            "v11alpha2",
            "v2",
            "v10beta3",
            "v1beta2",
            "foo1",
            "v12alpha1",
            "v3beta1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v10beta3",
                "v3beta1",
                "v2beta1",
                "v1beta2",
                "v12alpha1",
                "v11alpha2",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn resource_lists() {
        let res = table();
        let core = api_resource_list(&res, "", "v1").unwrap_or_default();
        assert_eq!(core["kind"], "APIResourceList");
        assert_eq!(core.get("apiVersion"), None);
        assert_eq!(core["groupVersion"], "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "bindings",
                "namespaces",
                "namespaces/status",
                "pods",
                "pods/status"
            ]
        );
        let pods = &core["resources"][3];
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(
            pods["verbs"],
            json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ])
        );
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        let hash = pods["storageVersionHash"].as_str().unwrap_or_default();
        assert_eq!(hash.len(), 12);
        assert_eq!(
            api_resource_list(&res, "", "v1").unwrap_or_default()["resources"][3]
                ["storageVersionHash"],
            hash
        );
        assert_ne!(core["resources"][1]["storageVersionHash"], hash);
        assert_eq!(core["resources"][1].get("categories"), None);
        assert_eq!(core["resources"][1]["namespaced"], false);
        assert_eq!(
            core["resources"][4],
            json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]})
        );

        assert_eq!(
            core["resources"][0],
            json!({"name": "bindings", "singularName": "binding", "namespaced": true, "kind": "Binding", "verbs": ["create"]})
        );

        let apps = api_resource_list(&res, "apps", "v1").unwrap_or_default();
        assert_eq!(apps["apiVersion"], "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert_eq!(
            apps["resources"][1],
            json!({"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
                   "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        );
        assert_eq!(apps["resources"][2]["name"], "deployments/status");
        assert_eq!(api_resource_list(&res, "apps", "v2"), None);
        assert_eq!(api_resource_list(&res, "nope", "v1"), None);
    }

    #[test]
    fn aggregated_documents() {
        let res = table();
        let legacy = aggregated(&res, true, AggregatedVersion::V2);
        assert_eq!(legacy["kind"], "APIGroupDiscoveryList");
        assert_eq!(legacy["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(legacy["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            legacy["items"][0]["metadata"],
            json!({"creationTimestamp": null})
        );
        let v1 = &legacy["items"][0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        assert_eq!(
            v1["resources"][2],
            json!({
                "resource": "pods",
                "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                "scope": "Namespaced",
                "singularResource": "pod",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["po"],
                "categories": ["all"],
                "subresources": [{"subresource": "status", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get", "patch", "update"]}],
            })
        );
        assert_eq!(v1["resources"][1]["scope"], "Cluster");

        let apis = aggregated(&res, false, AggregatedVersion::V2Beta1);
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let names: Vec<&str> = apis["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["apps", "autoscaling", "rbac.authorization.k8s.io"]);
        let autoscaling: Vec<&str> = apis["items"][1]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["version"].as_str())
            .collect();
        assert_eq!(autoscaling, ["v2", "v1"]);
        assert_eq!(
            apis["items"][0]["versions"][0]["resources"][0]["subresources"],
            json!([
                {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]},
                {"subresource": "status", "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "verbs": ["get", "patch", "update"]},
            ])
        );
        assert_eq!(
            apis["items"][2]["versions"][0]["resources"][0].get("subresources"),
            None
        );
        assert_eq!(
            apis["items"][2]["versions"][0]["resources"][0].get("shortNames"),
            None
        );
    }

    #[test]
    fn negotiation() {
        const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        const V2B1: &str =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let cases: &[(&str, Option<AggregatedVersion>, &str)] = &[
            ("", None, "application/json"),
            ("application/json", None, "application/json"),
            ("*/*", None, "application/json"),
            ("application/yaml", None, "application/json"),
            (
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                Some(AggregatedVersion::V2),
                V2,
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                Some(AggregatedVersion::V2),
                V2,
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                Some(AggregatedVersion::V2Beta1),
                V2B1,
            ),
            ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json", None, "application/json"),
            ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", None, "application/json"),
            ("application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", None, "application/json"),
            (
                "application/json;q=0.5, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                Some(AggregatedVersion::V2),
                V2,
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0, application/json",
                None,
                "application/json",
            ),
            ("APPLICATION/JSON ; g=apidiscovery.k8s.io ; v=v2 ; as=APIGroupDiscoveryList", Some(AggregatedVersion::V2), V2),
            ("garbage,,;;", None, "application/json"),
        ];
        for &(accept, agg, ct) in cases {
            assert_eq!(
                negotiate(accept),
                Negotiated {
                    aggregated: agg,
                    content_type: ct
                },
                "{accept}"
            );
        }
    }

    #[test]
    fn version() {
        let v = version_info();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "33");
        assert_eq!(v["gitVersion"], "v1.33.0+minik8s");
        assert_eq!(v["goVersion"], "rust");
        let platform = v["platform"].as_str().unwrap_or_default();
        assert!(
            platform.starts_with(std::env::consts::OS) && platform.contains('/'),
            "{platform}"
        );
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(platform, "linux/amd64");
        }
        for k in ["gitCommit", "gitTreeState", "buildDate", "compiler"] {
            assert!(v[k].is_string(), "{k}");
        }
    }
}
