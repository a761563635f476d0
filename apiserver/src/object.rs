//! Helpers over objects as JSON: metadata accessors and the byte-level resourceVersion
//! injection that lets stored bytes be served without re-encoding.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

/// `metadata` of an object, if it is an object.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

/// Mutable `metadata`, created when missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(o) = obj else {
        unreachable!("just made an object")
    };
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// A string field of metadata, or "".
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Finds the byte offset just after the `{` that opens the top-level `"metadata"` object.
/// Scans strings and nesting properly so nested `metadata` keys are not mistaken for it.
fn find_metadata_open(json: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0usize;
    let n = json.len();
    while i < n {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < n && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let end = i.min(n);
                i += 1;
                if depth == 1 && &json[start..end] == b"metadata" {
                    // expect optional whitespace, ':', whitespace, '{'
                    let mut j = i;
                    while j < n && json[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if j < n && json[j] == b':' {
                        j += 1;
                        while j < n && json[j].is_ascii_whitespace() {
                            j += 1;
                        }
                        if j < n && json[j] == b'{' {
                            return Some(j + 1);
                        }
                    }
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Returns `json` (an object serialized WITHOUT `metadata.resourceVersion`) with
/// `"resourceVersion":"<rv>"` inserted as the first key of its top-level metadata.
/// Falls back to a full re-encode when the layout is unexpected.
pub fn with_resource_version(json: &[u8], rv: i64) -> Bytes {
    if let Some(pos) = find_metadata_open(json) {
        let mut rest = pos;
        while rest < json.len() && json[rest].is_ascii_whitespace() {
            rest += 1;
        }
        let empty = json.get(rest) == Some(&b'}');
        let mut out = BytesMut::with_capacity(json.len() + 40);
        out.put_slice(&json[..pos]);
        out.put_slice(b"\"resourceVersion\":\"");
        out.put_slice(itoa_i64(rv).as_bytes());
        out.put_slice(if empty { b"\"" } else { b"\"," });
        out.put_slice(&json[pos..]);
        return out.freeze();
    }
    match serde_json::from_slice::<Value>(json) {
        Ok(mut v) => {
            meta_mut(&mut v).insert("resourceVersion".into(), Value::String(rv.to_string()));
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => Bytes::copy_from_slice(json),
    }
}

fn itoa_i64(v: i64) -> String {
    v.to_string()
}

/// Serializes an object for storage: without `metadata.resourceVersion` (the store's
/// revision is the resource version) and without `managedFields` of nothing.
pub fn encode_for_storage(obj: &Value) -> Vec<u8> {
    serde_json::to_vec(&WithoutResourceVersion(obj)).unwrap_or_default()
}

/// An object serialized without `metadata.resourceVersion`, with no copy of it.
struct WithoutResourceVersion<'a>(&'a Value);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(s);
        };
        let mut m = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    m.serialize_entry(k, &Skipping(meta, "resourceVersion"))?
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

/// A map serialized without one key.
struct Skipping<'a>(&'a serde_json::Map<String, Value>, &'static str);

impl serde::Serialize for Skipping<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let n = self.0.len() - usize::from(self.0.contains_key(self.1));
        let mut m = s.serialize_map(Some(n))?;
        for (k, v) in self.0 {
            if k != self.1 {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// Now as an RFC 3339 timestamp with seconds (`2026-12-01T21:44:04Z`), as metav1.Time.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The strings of a JSON array (other items skipped); empty when it is not an array.
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a revision string (`resourceVersion`), as upstream wording requires.
pub fn parse_resource_version(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| format!("invalid resource version: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_form_drops_only_the_top_level_resource_version() {
        let obj = serde_json::json!({"kind": "X", "metadata": {"name": "a", "resourceVersion": "5"},
                                     "spec": {"resourceVersion": "kept"}});
        let out: Value = serde_json::from_slice(&encode_for_storage(&obj)).unwrap_or_default();
        assert_eq!(
            out,
            serde_json::json!({"kind": "X", "metadata": {"name": "a"},
                                           "spec": {"resourceVersion": "kept"}})
        );
        assert_eq!(encode_for_storage(&serde_json::json!([1])), b"[1]");
    }

    #[test]
    fn injects_resource_version_into_top_level_metadata() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"kind":"X","metadata":{"name":"a"}}"#,
                r#"{"kind":"X","metadata":{"resourceVersion":"7","name":"a"}}"#,
            ),
            (
                r#"{"metadata":{}}"#,
                r#"{"metadata":{"resourceVersion":"7"}}"#,
            ),
            (
                r#"{"data":{"metadata":"{\"metadata\":{"},"x":[{"metadata":{}}],"metadata":{"n":1}}"#,
                r#"{"data":{"metadata":"{\"metadata\":{"},"x":[{"metadata":{}}],"metadata":{"resourceVersion":"7","n":1}}"#,
            ),
        ];
        for (input, want) in cases {
            let got = with_resource_version(input.as_bytes(), 7);
            assert_eq!(std::str::from_utf8(&got).unwrap_or(""), *want);
        }
    }

    #[test]
    fn falls_back_when_metadata_missing() {
        let got = with_resource_version(br#"{"kind":"X"}"#, 3);
        let v: Value = serde_json::from_slice(&got).unwrap_or_default();
        assert_eq!(v["metadata"]["resourceVersion"], "3");
    }
}
