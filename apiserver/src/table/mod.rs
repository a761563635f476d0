//! `meta.k8s.io/v1` Table rendering for `kubectl get`, after upstream
//! `pkg/printers/internalversion/printers.go` (columns and cells) and
//! `apiserver/pkg/registry/rest/table.go` (the default Name / Created At table).
//!
//! The apiserver always prints with `Wide: true`; priority-1 columns are hidden by the client.

mod cluster;
mod config;
pub(crate) mod format;
mod network;
mod pods;
mod storage;
mod workloads;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// What `includeObject` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; absent or empty means `Metadata`.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s.unwrap_or("") {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(format!(
                "Unable to convert to Table as requested: includeObject: Invalid value: {}: must be 'Metadata', 'Object', 'None', or empty",
                Value::from(other)
            )),
        }
    }
}

/// True when the Accept header asks for a Table (`application/json;as=Table;v=v1;g=meta.k8s.io`, also v1beta1), by its first acceptable clause like upstream.
pub fn wants_table(accept: &str) -> bool {
    let mut clauses: Vec<Clause> = accept.split(',').filter_map(Clause::parse).collect();
    // goautoneg: higher q first, then concrete types before wildcards; otherwise header order.
    clauses.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then((a.type_ == "*").cmp(&(b.type_ == "*")))
            .then((a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    for clause in &clauses {
        if let Some(table) = clause.acceptable() {
            return table;
        }
    }
    false
}

/// One media range of an Accept header.
struct Clause {
    type_: String,
    subtype: String,
    q: f64,
    as_: Option<String>,
    g: Option<String>,
    v: Option<String>,
}

impl Clause {
    fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split(';');
        let media = parts.next()?.trim().to_ascii_lowercase();
        let (type_, subtype) = match media.split_once('/') {
            Some((t, s)) => (t.trim().to_string(), s.trim().to_string()),
            None if media == "*" => ("*".to_string(), "*".to_string()),
            None => return None,
        };
        let mut clause = Clause {
            type_,
            subtype,
            q: 1.0,
            as_: None,
            g: None,
            v: None,
        };
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "q" => clause.q = v.parse().unwrap_or(0.0),
                "as" => clause.as_ = Some(v),
                "g" => clause.g = Some(v),
                "v" => clause.v = Some(v),
                _ => {}
            }
        }
        (clause.q > 0.0).then_some(clause)
    }

    /// `None` when the server cannot answer this clause; otherwise whether it is a Table.
    fn acceptable(&self) -> Option<bool> {
        let media_ok = match (self.type_.as_str(), self.subtype.as_str()) {
            ("*", "*") | ("application", "*") => true,
            ("application", s) => matches!(s, "json" | "yaml" | "vnd.kubernetes.protobuf"),
            _ => false,
        };
        if !media_ok {
            return None;
        }
        if self.as_.is_none() && self.g.is_none() && self.v.is_none() {
            return Some(false);
        }
        let meta_version = self.g.as_deref() == Some("meta.k8s.io")
            && matches!(self.v.as_deref(), Some("v1" | "v1beta1"));
        match self.as_.as_deref() {
            Some("Table") if meta_version => Some(true),
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") if meta_version => {
                Some(false)
            }
            _ => None,
        }
    }
}

/// A Table column, serialized as `metav1.TableColumnDefinition`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    name: &'static str,
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

/// ObjectMeta's swagger description of `name`.
pub(crate) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// ObjectMeta's swagger description of `creationTimestamp`.
pub(crate) const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
/// Shared description of the Containers column.
pub(crate) const CONTAINERS_DOC: &str = "Names of each container in the template.";
/// Shared description of the Images column.
pub(crate) const IMAGES_DOC: &str = "Images referenced by each container in the template.";

/// A column shown by default.
pub(crate) const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
pub(crate) const fn wide(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        priority: 1,
        ..col(name, type_, description)
    }
}

/// The Name column (format "name").
pub(crate) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};

/// The Age column.
pub(crate) const AGE: Column = col("Age", "string", CREATED_DOC);

impl Column {
    /// The same column with another priority (events put Name last, wide).
    pub(crate) const fn with_priority(self, priority: i32) -> Column {
        Column { priority, ..self }
    }

    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// How one kind is printed.
pub(crate) struct Printer {
    pub(crate) columns: &'static [Column],
    pub(crate) cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
    /// Row conditions (upstream sets them only for finished pods).
    pub(crate) conditions: Option<fn(&Value) -> Option<Value>>,
}

impl Printer {
    pub(crate) const fn new(
        columns: &'static [Column],
        cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
    ) -> Self {
        Printer {
            columns,
            cells,
            conditions: None,
        }
    }
}

/// The printer for a built-in kind, or `None` for the default table.
fn printer(group: &str, kind: &str) -> Option<Printer> {
    let group = if group == "core" { "" } else { group };
    pods::printer(group, kind)
        .or_else(|| workloads::printer(group, kind))
        .or_else(|| network::printer(group, kind))
        .or_else(|| cluster::printer(group, kind))
        .or_else(|| config::printer(group, kind))
        .or_else(|| storage::printer(group, kind))
}

/// Upstream's default table for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", CREATED_DOC)];

fn default_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = format::time_at(obj, &["metadata", "creationTimestamp"])
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        // Go formats the zero time.
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![format::name(obj), Value::from(created)]
}

/// Columns and cells known only at run time (custom resources' `additionalPrinterColumns`).
pub trait DynamicPrinter: Send + Sync {
    /// `metav1.TableColumnDefinition`s, Name first.
    fn columns(&self) -> Vec<Value>;
    /// One row's cells, in column order.
    fn cells(&self, obj: &Value) -> Vec<Value>;
}

/// A Table of objects of the resource `info` (its strategy's run-time printer, else the
/// built-in printer of its kind).
pub fn render_for(
    info: &crate::registry::ResourceInfo,
    objects: &[Value],
    include: &IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    match info.strategy.printer() {
        Some(p) => table(
            p.columns(),
            objects,
            |o| p.cells(o),
            None,
            include,
            resource_version,
            continue_token,
        ),
        None => render(
            info.group,
            info.kind,
            objects,
            include,
            resource_version,
            continue_token,
            now,
        ),
    }
}

/// A Table for a list: `objects` are the served JSON objects (with kind/apiVersion/metadata); `resource_version`/`continue_token` go in the Table's metadata.
pub fn render(
    group: &str,
    kind: &str,
    objects: &[Value],
    include: &IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let printer = printer(group, kind).unwrap_or(Printer::new(DEFAULT_COLUMNS, default_cells));
    table(
        printer.columns.iter().map(|c| c.to_json()).collect(),
        objects,
        |o| (printer.cells)(o, now),
        printer.conditions,
        include,
        resource_version,
        continue_token,
    )
}

fn table(
    columns: Vec<Value>,
    objects: &[Value],
    cells: impl Fn(&Value) -> Vec<Value>,
    conditions: Option<fn(&Value) -> Option<Value>>,
    include: &IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells(obj)));
            if let Some(conditions) = conditions.and_then(|f| f(obj)) {
                row.insert("conditions".into(), conditions);
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".into(), partial_object_metadata(obj));
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    // ListMeta fields are omitempty upstream.
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), Value::from(resource_version));
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), Value::from(token));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The row object for `includeObject=Metadata`.
fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": format::get(obj, &["metadata"]).cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:10:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn include_object_parse() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::parse(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::parse(Some("Everything")),
            Err("Unable to convert to Table as requested: includeObject: Invalid value: \"Everything\": must be 'Metadata', 'Object', 'None', or empty".to_string())
        );
    }

    #[test]
    fn wants_table_by_first_acceptable_clause() {
        let cases = [
            ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", true),
            ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", true),
            ("application/json; as=Table; v=v1; g=meta.k8s.io", true),
            ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json", true),
            ("application/json", false),
            ("", false),
            ("*/*", false),
            ("application/json,application/json;as=Table;v=v1;g=meta.k8s.io", false),
            ("application/json;as=Table;v=v2;g=meta.k8s.io,application/json", false),
            ("application/json;as=Table;v=v2;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io", true),
            ("application/json;as=Table,application/json", false),
            ("text/html,application/json;as=Table;v=v1;g=meta.k8s.io", true),
            ("application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io", true),
            ("application/json;as=Table;v=v1;g=meta.k8s.io;q=0,application/json", false),
            ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io", false),
            ("*/*,application/json;as=Table;v=v1;g=meta.k8s.io", true),
        ];
        for (accept, want) in cases {
            assert_eq!(wants_table(accept), want, "{accept}");
        }
    }

    #[test]
    fn default_table_for_unknown_kinds() {
        let objs = [
            json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"}}),
        ];
        let t = render(
            "rbac.authorization.k8s.io",
            "Role",
            &objs,
            &IncludeObject::Metadata,
            "42",
            Some("tok"),
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok"})
        );
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(cols, ["Name", "Created At"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(t["rows"][0]["cells"], json!(["r", "2024-01-01T00:00:00Z"]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "r", "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"}})
        );
    }

    #[test]
    fn pod_table_end_to_end() {
        let objs = [json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "done", "namespace": "ns", "creationTimestamp": "2024-01-01T00:05:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})];
        let t = render("", "Pod", &objs, &IncludeObject::Metadata, "", None, now());
        assert_eq!(t["metadata"], json!({}));
        let cols: Vec<(&str, i64)> = t["columnDefinitions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or(""),
                    c["priority"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            cols,
            [
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "done",
                "0/1",
                "Completed",
                "0",
                "5m",
                "<none>",
                "<none>",
                "<none>",
                "<none>"
            ])
        );
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "ns");
    }

    #[test]
    fn include_object_variants() {
        let objs = [
            json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"}, "data": {"a": "1"}}),
        ];
        let none = render(
            "",
            "ConfigMap",
            &objs,
            &IncludeObject::None,
            "1",
            None,
            now(),
        );
        assert!(none["rows"][0].get("object").is_none());
        assert!(none["metadata"].get("continue").is_none());
        let full = render(
            "",
            "ConfigMap",
            &objs,
            &IncludeObject::Object,
            "1",
            None,
            now(),
        );
        assert_eq!(full["rows"][0]["object"], objs[0]);
        assert_eq!(full["rows"][0]["cells"], json!(["c", 1, "<unknown>"]));
    }

    #[test]
    fn every_printer_matches_its_columns_and_survives_garbage() {
        let kinds = [
            ("", "Pod"),
            ("", "PodTemplate"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("", "ReplicationController"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("", "Service"),
            ("", "Endpoints"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("", "Namespace"),
            ("", "Node"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("coordination.k8s.io", "Lease"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "IngressClass"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("storage.k8s.io", "StorageClass"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("apps", "ControllerRevision"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("policy", "PodDisruptionBudget"),
            ("", "ResourceQuota"),
            ("", "LimitRange"),
            ("node.k8s.io", "RuntimeClass"),
            ("certificates.k8s.io", "CertificateSigningRequest"),
            ("storage.k8s.io", "CSIDriver"),
            ("storage.k8s.io", "CSINode"),
            ("storage.k8s.io", "VolumeAttachment"),
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
            ),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
            ),
            ("", "ComponentStatus"),
            ("example.com", "Widget"),
        ];
        let garbage = [
            json!(null),
            json!(7),
            json!("x"),
            json!([]),
            json!({}),
            json!({"metadata": 3, "spec": [], "status": "bad"}),
            json!({"metadata": {"name": 5, "labels": [1], "deletionTimestamp": 1},
                "spec": {"containers": "x", "ports": [1, null, {"port": "a"}], "selector": 4, "rules": [7]},
                "status": {"conditions": [null, 3], "containerStatuses": [null, {"state": []}],
                    "initContainerStatuses": [{"state": {"terminated": {}}}], "hard": [], "addresses": {}}}),
        ];
        for (group, kind) in kinds {
            let t = render(
                group,
                kind,
                &garbage,
                &IncludeObject::Metadata,
                "",
                None,
                now(),
            );
            let ncols = t["columnDefinitions"].as_array().map(Vec::len).unwrap_or(0);
            let rows = t["rows"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert_eq!(rows.len(), garbage.len(), "{group}/{kind}");
            for row in rows {
                assert_eq!(
                    row["cells"].as_array().map(Vec::len),
                    Some(ncols),
                    "{group}/{kind}"
                );
            }
        }
    }
}
