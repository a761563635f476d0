//! OpenAPI v2/v3 definitions and strategic-merge-patch metadata for the built-in kinds.
//!
//! The build script turns the k8s-openapi v1.33 schemas plus upstream's field markers
//! (`markers.rs`) into static tables: one compact JSON text per definition and version, the
//! definitions each refers to, and per field the definition its values have with the field's
//! patch strategy and merge key. Nothing is parsed at run time: documents are concatenated
//! from the static texts when asked for.

pub mod markers;

/// The upstream enum values of fields (used by the build script; public for reference).
pub mod enums;

/// The Kubernetes minor version whose API minik8s serves.
pub const KUBERNETES_MINOR: &str = "33";

/// `child` of a [`Prop`] whose values are not a definition.
const NONE: u32 = u32::MAX;

/// One schema definition (`io.k8s.api.apps.v1.Deployment`).
pub struct Def {
    pub name: &'static str,
    /// The schema as OpenAPI v3 `components.schemas` holds it.
    pub v3: &'static str,
    /// The schema as OpenAPI v2 `definitions` holds it.
    pub v2: &'static str,
    deps: &'static [u32],
    props: &'static [Prop],
}

/// A field whose values are a definition, or that has a patch strategy.
struct Prop {
    name: &'static str,
    child: u32,
    strategy: &'static str,
    merge_key: &'static str,
}

/// A top-level kind and its definition.
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    def: u32,
}

include!(concat!(env!("OUT_DIR"), "/generated.rs"));

/// A digest of every generated schema, to key client caches.
pub fn digest() -> &'static str {
    DIGEST
}

/// The definition of a top-level kind.
pub fn kind_def(group: &str, version: &str, kind: &str) -> Option<TypeRef> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| TypeRef(k.def))
}

/// The OpenAPI v3 schema text of a definition (`io.k8s.api.core.v1.PodSpec`), if it exists.
pub fn def_v3(name: &str) -> Option<&'static str> {
    DEFS.iter().find(|d| d.name == name).map(|d| d.v3)
}

/// A definition, as a handle for walking fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeRef(u32);

/// What strategic merge patch needs to know about one field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldMeta {
    /// The definition of the field's value (its items for a list, its values for a map).
    pub child: Option<TypeRef>,
    /// `merge`, `replace`, `retainKeys`, `merge,retainKeys` or empty.
    pub strategy: &'static str,
    /// The merge key of a list merged by key.
    pub merge_key: &'static str,
}

impl TypeRef {
    fn def(self) -> &'static Def {
        &DEFS[self.0 as usize]
    }

    /// The definition's name.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// Patch metadata of one field; default (no child, no strategy) when unknown.
    pub fn field(self, name: &str) -> FieldMeta {
        self.def()
            .props
            .iter()
            .find(|p| p.name == name)
            .map(|p| FieldMeta {
                child: (p.child != NONE).then_some(TypeRef(p.child)),
                strategy: p.strategy,
                merge_key: p.merge_key,
            })
            .unwrap_or_default()
    }
}

/// Which OpenAPI version a document is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// The definitions of these kinds and everything they refer to, as the members of a JSON object
/// (`"name":{schema},...`, without braces), sorted by name.
pub fn schemas_for(kinds: &[(&str, &str, &str)], version: Version) -> String {
    let roots: Vec<u32> = kinds
        .iter()
        .filter_map(|(g, v, k)| kind_def(g, v, k))
        .map(|t| t.0)
        .collect();
    closure(roots, version)
}

/// The definitions named (`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`, ...) and
/// everything they refer to, as [`schemas_for`] writes them; unknown names are skipped.
pub fn schemas_named(names: &[&str], version: Version) -> String {
    let roots: Vec<u32> = DEFS
        .iter()
        .enumerate()
        .filter(|(_, d)| names.contains(&d.name))
        .map(|(i, _)| i as u32)
        .collect();
    closure(roots, version)
}

fn closure(roots: Vec<u32>, version: Version) -> String {
    let mut seen = vec![false; DEFS.len()];
    let mut stack = roots;
    while let Some(i) = stack.pop() {
        let Some(s) = seen.get_mut(i as usize) else {
            continue;
        };
        if *s {
            continue;
        }
        *s = true;
        stack.extend_from_slice(DEFS[i as usize].deps);
    }
    let mut out = String::new();
    for (d, _) in DEFS.iter().zip(&seen).filter(|(_, s)| **s) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push('"');
        out.push_str(d.name);
        out.push_str("\":");
        out.push_str(match version {
            Version::V2 => d.v2,
            Version::V3 => d.v3,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas(kinds: &[(&str, &str, &str)], v: Version) -> serde_json::Value {
        let text = format!("{{{}}}", schemas_for(kinds, v));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:.200}"))
    }

    #[test]
    fn named_schemas_come_with_what_they_refer_to() {
        let text = format!(
            "{{{}}}",
            schemas_named(
                &["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"],
                Version::V3
            )
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(v["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
        assert!(v["io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"].is_object());
        assert!(v.get("io.k8s.api.core.v1.Pod").is_none());
    }

    #[test]
    fn pod_spec_patch_metadata_follows_upstream_markers() {
        let dep = kind_def("apps", "v1", "Deployment").expect("Deployment");
        let spec = dep.field("spec").child.expect("spec");
        assert_eq!(spec.name(), "io.k8s.api.apps.v1.DeploymentSpec");
        assert_eq!(spec.field("strategy").strategy, "retainKeys");
        let pod = spec.field("template").child.expect("template");
        let pod_spec = pod.field("spec").child.expect("pod spec");
        let c = pod_spec.field("containers");
        assert_eq!((c.strategy, c.merge_key), ("merge", "name"));
        let v = pod_spec.field("volumes");
        assert_eq!((v.strategy, v.merge_key), ("merge,retainKeys", "name"));
        let container = c.child.expect("container");
        let ports = container.field("ports");
        assert_eq!(
            (ports.strategy, ports.merge_key),
            ("merge", "containerPort")
        );
        assert_eq!(container.field("env").merge_key, "name");
        assert_eq!(container.field("args").strategy, "");
        let meta = dep.field("metadata").child.expect("metadata");
        assert_eq!(meta.field("finalizers").strategy, "merge");
        assert_eq!(meta.field("ownerReferences").merge_key, "uid");
        assert_eq!(
            pod_spec.field("nodeSelector"),
            FieldMeta::default(),
            "maps of strings have no metadata"
        );
    }

    #[test]
    fn documents_carry_kubernetes_extensions() {
        let v3 = schemas(&[("apps", "v1", "Deployment")], Version::V3);
        let dep = &v3["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"],
            serde_json::json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(
            dep["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let ports = &v3["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(ports["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(ports["x-kubernetes-list-type"], "map");
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            serde_json::json!(["containerPort", "protocol"])
        );
        let protocol = &v3["io.k8s.api.core.v1.ContainerPort"]["properties"]["protocol"];
        assert_eq!(protocol["enum"], serde_json::json!(["SCTP", "TCP", "UDP"]));
        assert!(protocol["description"]
            .as_str()
            .is_some_and(|d| d.ends_with("Possible enum values:\n - `\"SCTP\"` is the SCTP protocol.\n - `\"TCP\"` is the TCP protocol.\n - `\"UDP\"` is the UDP protocol.")));
        assert!(dep.get("required").is_none(), "metadata is not required");
        assert!(v3.get("io.k8s.api.batch.v1.Job").is_none());

        let v2 = schemas(&[("", "v1", "Pod")], Version::V2);
        assert_eq!(
            v2["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodSpec"
        );
        assert_eq!(
            v2["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
    }
}
