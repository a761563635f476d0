//! Validation of CustomResourceDefinitions, after upstream
//! `apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go` (field paths and
//! wording), on the JSON object so that missing fields get `Required value`, not a decode error.

use serde_json::Value;

use super::custom::JsonPath;
use super::schema::Schema;
use crate::validation::{
    is_dns1035_label, is_dns1123_subdomain, validate_object_meta, validate_object_meta_update,
    FieldError, FieldErrors, NameRule,
};

const FIELD_IMMUTABLE: &str = "field is immutable";
const COLUMN_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strs_at<'a>(v: &'a Value, ptr: &str) -> Vec<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `ValidateCustomResourceDefinition`.
pub fn validate(obj: &Value) -> FieldErrors {
    let mut errs = validate_object_meta(obj, false, NameRule::Subdomain);
    let name = str_at(obj, "/metadata/name");
    let required = format!(
        "{}.{}",
        str_at(obj, "/spec/names/plural"),
        str_at(obj, "/spec/group")
    );
    if !name.is_empty() && name != required {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    errs.extend(validate_spec(obj));
    errs.extend(validate_names(
        obj,
        "/status/acceptedNames",
        "status.acceptedNames",
    ));
    errs
}

/// `ValidateCustomResourceDefinitionUpdate`.
pub fn validate_update(new: &Value, old: &Value) -> FieldErrors {
    let mut errs = validate_object_meta_update(new, old);
    errs.extend(
        validate(new)
            .into_iter()
            .filter(|e| !e.field.starts_with("metadata.")),
    );
    let established = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
    let mut immutable = vec![
        ("/spec/group", "spec.group"),
        ("/spec/names/plural", "spec.names.plural"),
    ];
    if established {
        immutable.extend([
            ("/spec/scope", "spec.scope"),
            ("/spec/names/kind", "spec.names.kind"),
        ]);
    }
    for (ptr, field) in immutable {
        let (n, o) = (str_at(new, ptr), str_at(old, ptr));
        if n != o {
            errs.push(FieldError::invalid(field, n, FIELD_IMMUTABLE));
        }
    }
    let versions: Vec<&str> = new
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for (i, v) in strs_at(new, "/status/storedVersions")
        .into_iter()
        .enumerate()
    {
        if !versions.contains(&v) {
            errs.push(FieldError::invalid(
                format!("status.storedVersions[{i}]"),
                v,
                "must appear in spec.versions",
            ));
        }
    }
    errs
}

fn validate_spec(obj: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let group = str_at(obj, "/spec/group");
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        let e = is_dns1123_subdomain(group);
        if !e.is_empty() {
            errs.push(FieldError::invalid("spec.group", group, e.join(",")));
        } else if group.split('.').count() < 2 {
            errs.push(FieldError::invalid(
                "spec.group",
                group,
                "should be a domain with at least one dot",
            ));
        }
    }
    match str_at(obj, "/spec/scope") {
        "" => errs.push(FieldError::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut storage = 0;
    let mut names: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = v["name"].as_str().unwrap_or("");
        if v["storage"].as_bool() == Some(true) {
            storage += 1;
        }
        if names.contains(&name) {
            unique = false;
        }
        names.push(name);
        let e = is_dns1035_label(name);
        if !e.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                name,
                e.join(","),
            ));
        }
        errs.extend(validate_version(v, &path));
    }
    let rendered = Value::Array(versions.clone()).to_string();
    if !unique {
        errs.push(FieldError::invalid_raw(
            "spec.versions",
            rendered.as_str(),
            "must contain unique version names",
        ));
    }
    if storage != 1 {
        errs.push(FieldError::invalid_raw(
            "spec.versions",
            rendered.as_str(),
            "must have exactly one version marked as storage version",
        ));
    }
    for (ptr, field) in [
        ("/spec/names/plural", "spec.names.plural"),
        ("/spec/names/singular", "spec.names.singular"),
        ("/spec/names/kind", "spec.names.kind"),
        ("/spec/names/listKind", "spec.names.listKind"),
    ] {
        if str_at(obj, ptr).is_empty() {
            errs.push(FieldError::required(field, ""));
        }
    }
    errs.extend(validate_names(obj, "/spec/names", "spec.names"));
    match str_at(obj, "/spec/conversion/strategy") {
        "" | "None" => {}
        other => errs.push(FieldError::not_supported(
            "spec.conversion.strategy",
            other,
            &["None"],
        )),
    }
    errs
}

/// `ValidateCustomResourceDefinitionNames` of the names at `ptr`.
fn validate_names(obj: &Value, ptr: &str, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(names) = obj.pointer(ptr) else {
        return errs;
    };
    for f in ["plural", "singular"] {
        let v = names[f].as_str().unwrap_or("");
        let e = is_dns1035_label(v);
        if !v.is_empty() && !e.is_empty() {
            errs.push(FieldError::invalid(format!("{path}.{f}"), v, e.join(",")));
        }
    }
    for f in ["kind", "listKind"] {
        let v = names[f].as_str().unwrap_or("");
        let e = is_dns1035_label(&v.to_lowercase());
        if !v.is_empty() && !e.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.{f}"),
                v,
                format!(
                    "may have mixed case, but should otherwise match: {}",
                    e.join(",")
                ),
            ));
        }
    }
    for f in ["shortNames", "categories"] {
        for (i, v) in strs_at(names, &format!("/{f}")).into_iter().enumerate() {
            let e = is_dns1035_label(v);
            if !e.is_empty() {
                errs.push(FieldError::invalid(
                    format!("{path}.{f}[{i}]"),
                    v,
                    e.join(","),
                ));
            }
        }
    }
    let kind = names["kind"].as_str().unwrap_or("");
    if !kind.is_empty() && Some(kind) == names["listKind"].as_str() {
        errs.push(FieldError::invalid(
            format!("{path}.listKind"),
            kind,
            "kind and listKind may not be the same",
        ));
    }
    errs
}

fn validate_version(v: &Value, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let schema_path = format!("{path}.schema.openAPIV3Schema");
    match v.pointer("/schema/openAPIV3Schema") {
        None | Some(Value::Null) => errs.push(FieldError::required(
            schema_path.as_str(),
            "schemas are required",
        )),
        Some(s) => {
            match s["type"].as_str().unwrap_or("") {
                "" => errs.push(FieldError::required(
                    format!("{schema_path}.type"),
                    "must not be empty at the root",
                )),
                "object" => {}
                other => errs.push(FieldError::invalid(
                    format!("{schema_path}.type"),
                    other,
                    "must be object at the root",
                )),
            }
            structural(s, &schema_path, &mut errs);
            if let Err(e) = Schema::parse(s) {
                errs.push(FieldError::invalid(
                    schema_path.as_str(),
                    "",
                    format!("error building validator: {e}"),
                ));
            }
        }
    }
    if let Some(scale) = v.pointer("/subresources/scale") {
        let sp = format!("{path}.subresources.scale");
        for (f, under) in [
            ("specReplicasPath", ".spec"),
            ("statusReplicasPath", ".status"),
        ] {
            let p = scale[f].as_str().unwrap_or("");
            if p.is_empty() {
                errs.push(FieldError::required(format!("{sp}.{f}"), ""));
            } else if !p.starts_with(&format!("{under}.")) || JsonPath::parse(p).is_err() {
                errs.push(FieldError::invalid(
                    format!("{sp}.{f}"),
                    p,
                    format!("should be a json path under {under}"),
                ));
            }
        }
    }
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, c) in columns.iter().enumerate() {
        let cp = format!("{path}.additionalPrinterColumns[{i}]");
        if c["name"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::required(format!("{cp}.name"), ""));
        }
        match c["type"].as_str().unwrap_or("") {
            "" => errs.push(FieldError::required(format!("{cp}.type"), "")),
            t if COLUMN_TYPES.contains(&t) => {}
            t => errs.push(FieldError::not_supported(
                format!("{cp}.type"),
                t,
                COLUMN_TYPES,
            )),
        }
        let jp = c["jsonPath"].as_str().unwrap_or("");
        if jp.is_empty() {
            errs.push(FieldError::required(format!("{cp}.jsonPath"), ""));
        } else if JsonPath::parse(jp).is_err() {
            errs.push(FieldError::invalid(
                format!("{cp}.jsonPath"),
                jp,
                "must be a simple json path",
            ));
        }
    }
    errs
}

/// The structural-schema rule that every specified field has a type.
fn structural(s: &Value, path: &str, errs: &mut FieldErrors) {
    let typed = |x: &Value| {
        !x["type"].as_str().unwrap_or("").is_empty()
            || x["x-kubernetes-int-or-string"] == true
            || x["x-kubernetes-preserve-unknown-fields"] == true
    };
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let pp = format!("{path}.properties[{k}]");
            if !typed(p) {
                errs.push(FieldError::required(
                    format!("{pp}.type"),
                    "must not be empty for specified object fields",
                ));
            }
            structural(p, &pp, errs);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        let ip = format!("{path}.items");
        if !typed(items) {
            errs.push(FieldError::required(
                format!("{ip}.type"),
                "must not be empty for specified array items",
            ));
        }
        structural(items, &ip, errs);
    }
    if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
        structural(a, &format!("{path}.additionalProperties"), errs);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object"}}}],
            }
        })
    }

    fn msgs(v: &Value) -> Vec<String> {
        validate(v).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_crd_passes() {
        assert!(msgs(&crd()).is_empty(), "{:?}", msgs(&crd()));
    }

    #[test]
    fn upstream_messages() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widget.example.com");
        c["spec"]["scope"] = json!("Global");
        c["spec"]["versions"][0]["storage"] = json!(false);
        c["spec"]["versions"][0]["schema"] =
            json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {}}}});
        c["spec"]["names"]["kind"] = json!("Wid_get");
        let m = msgs(&c);
        assert!(m.contains(&"metadata.name: Invalid value: \"widget.example.com\": must be spec.names.plural+\".\"+spec.group".to_string()), "{m:?}");
        assert!(m.contains(&"spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"".to_string()), "{m:?}");
        assert!(
            m.iter()
                .any(|x| x.starts_with("spec.versions: Invalid value: ")
                    && x.ends_with(": must have exactly one version marked as storage version")),
            "{m:?}"
        );
        assert!(m.contains(&"spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields".to_string()), "{m:?}");
        assert!(m.iter().any(|x| x.starts_with("spec.names.kind: Invalid value: \"Wid_get\": may have mixed case, but should otherwise match: ")), "{m:?}");
        let mut c = crd();
        c["spec"]["group"] = json!("example");
        c["metadata"]["name"] = json!("widgets.example");
        c["spec"]["versions"][0]
            .as_object_mut()
            .unwrap()
            .remove("schema");
        assert_eq!(
            msgs(&c),
            [
                "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
                "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
            ]
        );
    }

    #[test]
    fn immutable_fields() {
        let mut old = crd();
        old["status"] = json!({"conditions": [{"type": "Established", "status": "True"}], "storedVersions": ["v1"]});
        let mut new = old.clone();
        new["spec"]["scope"] = json!("Cluster");
        new["status"]["storedVersions"] = json!(["v0"]);
        let m: Vec<String> = validate_update(&new, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            m,
            [
                "spec.scope: Invalid value: \"Cluster\": field is immutable",
                "status.storedVersions[0]: Invalid value: \"v0\": must appear in spec.versions",
            ]
        );
    }
}
