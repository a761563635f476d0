//! The strategy custom resources are served with: one per served version of a CRD, built
//! from that version's schema, subresources and printer columns.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceSubresourceScale,
};
use serde_json::{json, Value};

use super::intern;
use super::schema::Schema;
use crate::object;
use crate::registry::{ScalePaths, Strategy};
use crate::table::DynamicPrinter;
use crate::validation::{validate_object_meta, validate_object_meta_update, FieldErrors, NameRule};

/// A pointer no object has, for a scale subresource without `labelSelectorPath`.
const NO_SELECTOR: &str = "/\u{0}";

/// What one served version is built from.
pub struct Params<'a> {
    pub group: &'static str,
    pub version: &'static str,
    pub storage_version: &'static str,
    pub namespaced: bool,
    pub status: bool,
    pub scale: Option<&'a CustomResourceSubresourceScale>,
    /// The `spec.versions[i]` object of the CRD.
    pub version_json: &'a Value,
}

/// One `additionalPrinterColumns` entry.
struct Column {
    definition: Value,
    type_: String,
    path: JsonPath,
}

/// A custom resource version's strategy.
pub struct CustomStrategy {
    api_version: String,
    storage_api_version: String,
    namespaced: bool,
    status: bool,
    scale: Option<ScalePaths>,
    /// `None`: no schema (only possible for objects written by older servers); everything is kept.
    schema: Option<Schema>,
    /// `openAPIV3Schema` as written, for field management.
    raw_schema: Option<Value>,
    columns: Vec<Column>,
}

fn api_version(group: &str, version: &str) -> String {
    format!("{group}/{version}")
}

/// `.spec.replicas` as a JSON pointer `/spec/replicas`.
pub(crate) fn json_path_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

impl CustomStrategy {
    pub fn new(p: Params<'_>) -> Result<Self, String> {
        let schema = match p.version_json.pointer("/schema/openAPIV3Schema") {
            Some(s) => Some(Schema::parse(s)?),
            None => None,
        };
        let scale = p.scale.map(|s| ScalePaths {
            spec_replicas: intern(&json_path_pointer(&s.spec_replicas_path)),
            status_replicas: intern(&json_path_pointer(&s.status_replicas_path)),
            selector: s
                .label_selector_path
                .as_deref()
                .map(|l| intern(&json_path_pointer(l)))
                .unwrap_or(NO_SELECTOR),
        });
        let defined: Vec<CustomResourceColumnDefinition> = p
            .version_json
            .get("additionalPrinterColumns")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("additionalPrinterColumns: {e}"))?
            .unwrap_or_default();
        let defined = if defined.is_empty() {
            vec![CustomResourceColumnDefinition {
                name: "Age".into(),
                type_: "date".into(),
                description: Some(crate::table::CREATED_DOC.into()),
                json_path: ".metadata.creationTimestamp".into(),
                ..Default::default()
            }]
        } else {
            defined
        };
        let mut columns = Vec::new();
        for c in defined {
            let description = c.description.clone().unwrap_or_else(|| {
                format!(
                    "Custom resource definition column (in JSONPath format): {}",
                    c.json_path
                )
            });
            columns.push(Column {
                definition: json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format.clone().unwrap_or_default(),
                    "description": description,
                    "priority": c.priority.unwrap_or(0),
                }),
                type_: c.type_.clone(),
                path: JsonPath::parse(&c.json_path)?,
            });
        }
        Ok(CustomStrategy {
            api_version: api_version(p.group, p.version),
            storage_api_version: api_version(p.group, p.storage_version),
            namespaced: p.namespaced,
            status: p.status,
            scale,
            schema,
            raw_schema: p.version_json.pointer("/schema/openAPIV3Schema").cloned(),
            columns,
        })
    }

    fn with_api_version(obj: Value, av: &str) -> Value {
        let mut obj = obj;
        if let Some(m) = obj.as_object_mut() {
            m.insert("apiVersion".into(), Value::String(av.to_string()));
        }
        obj
    }
}

impl Strategy for CustomStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            s.prune_object(obj);
            s.apply_defaults(obj);
        }
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        if self.status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = validate_object_meta(obj, self.namespaced, NameRule::Subdomain);
        if let Some(s) = &self.schema {
            errs.extend(s.validate_object(obj));
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_object_meta_update(new, old);
        if let Some(s) = &self.schema {
            errs.extend(s.validate_object(new));
        }
        errs
    }

    fn scale_paths(&self) -> Option<ScalePaths> {
        self.scale
    }

    fn to_storage(&self, obj: Value) -> Value {
        Self::with_api_version(obj, &self.storage_api_version)
    }

    fn has_conversion(&self) -> bool {
        self.api_version != self.storage_api_version
    }

    fn from_storage(&self, obj: Value) -> Value {
        Self::with_api_version(obj, &self.api_version)
    }

    fn printer(&self) -> Option<&dyn DynamicPrinter> {
        Some(self)
    }

    fn apply_schema(&self) -> Option<&Value> {
        self.raw_schema.as_ref()
    }

    fn unknown_fields(&self, obj: &Value) -> Option<Vec<String>> {
        let mut copy = obj.clone();
        Some(
            self.schema
                .as_ref()
                .map(|s| s.prune_object(&mut copy))
                .unwrap_or_default(),
        )
    }
}

impl DynamicPrinter for CustomStrategy {
    fn columns(&self) -> Vec<Value> {
        let mut cols = vec![json!({
            "name": "Name", "type": "string", "format": "name",
            "description": crate::table::NAME_DOC, "priority": 0,
        })];
        cols.extend(self.columns.iter().map(|c| c.definition.clone()));
        cols
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![Value::from(object::meta_str(obj, "name"))];
        for c in &self.columns {
            let cell = match c.path.first(obj) {
                None => Value::Null,
                // Like upstream, the server prints dates as ages ("5m").
                Some(Value::String(t)) if c.type_ == "date" => {
                    match chrono::DateTime::parse_from_rfc3339(t) {
                        Ok(at) => Value::String(crate::table::format::human_duration(
                            chrono::Utc::now().signed_duration_since(at),
                        )),
                        Err(_) => Value::String(t.clone()),
                    }
                }
                Some(v) if c.type_ == "string" => match v {
                    Value::String(s) => Value::String(s.clone()),
                    other => Value::String(other.to_string()),
                },
                Some(v) => v.clone(),
            };
            cells.push(cell);
        }
        cells
    }
}

/// One step of the simple JSONPath subset printer columns use.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.a.b=="v")]`: array elements whose field path equals the value.
    Filter(Vec<String>, String),
    /// `[*]`.
    All,
}

/// `.status.conditions[?(@.type=="Ready")].status`, `.spec.items[0].name`, `.spec.replicas`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath(Vec<Step>);

impl JsonPath {
    pub(crate) fn parse(path: &str) -> Result<JsonPath, String> {
        let bad = || format!("unsupported JSONPath {path:?}");
        let p = path.trim();
        let p = p
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(p);
        let mut steps = Vec::new();
        let mut rest = p.strip_prefix('.').ok_or_else(bad)?;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(bad)?;
                let inner = &r[..end];
                rest = &r[end + 1..];
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Ok(i) = inner.parse::<usize>() {
                    steps.push(Step::Index(i));
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                {
                    let (field, value) = f.split_once("==").ok_or_else(bad)?;
                    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                    steps.push(Step::Filter(
                        field.trim().split('.').map(str::to_string).collect(),
                        value.to_string(),
                    ));
                } else {
                    return Err(bad());
                }
                rest = rest.strip_prefix('.').unwrap_or(rest);
                continue;
            }
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return Err(bad());
            }
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
            rest = rest.strip_prefix('.').unwrap_or(rest);
        }
        Ok(JsonPath(steps))
    }

    /// The first value the path selects in `v`.
    pub(crate) fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut current: Vec<&Value> = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for c in current {
                match step {
                    Step::Field(f) => next.extend(c.get(f)),
                    Step::Index(i) => next.extend(c.get(*i)),
                    Step::All => next.extend(c.as_array().into_iter().flatten()),
                    Step::Filter(field, want) => {
                        for item in c.as_array().into_iter().flatten() {
                            let mut x = Some(item);
                            for f in field {
                                x = x.and_then(|x| x.get(f));
                            }
                            let matches = match x {
                                Some(Value::String(s)) => s == want,
                                Some(other) => {
                                    serde_json::from_str::<Value>(want).ok().as_ref() == Some(other)
                                }
                                None => false,
                            };
                            if matches {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            current = next;
        }
        current.into_iter().next()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_paths() {
        let obj = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}]},
                         "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let get = |p: &str| JsonPath::parse(p).unwrap().first(&obj).cloned();
        assert_eq!(get(".spec.replicas"), Some(json!(3)));
        assert_eq!(get(".spec.items[1].name"), Some(json!("b")));
        assert_eq!(get(".spec.items[*].name"), Some(json!("a")));
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(get(".spec.missing"), None);
        assert!(JsonPath::parse("spec").is_err());
        assert_eq!(json_path_pointer(".spec.replicas"), "/spec/replicas");
    }
}
