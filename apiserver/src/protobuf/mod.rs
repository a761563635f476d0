//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! same JSON value the JSON body would have been, so everything after decoding is shared.
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown{typeMeta, raw, contentEncoding,
//! contentType}` whose `raw` is the object in upstream's generated.proto encoding. The
//! decoder walks `raw` with the schema in `schema.txt` and writes JSON the way the Go
//! types marshal: upstream JSON names, zero values dropped where Go omits them, inline
//! structs flattened, and the well-known types (Time, MicroTime, Quantity, IntOrString,
//! RawExtension, FieldsV1) in their JSON forms.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::error::Error;

pub mod schema;
pub mod wire;

use schema::{Field, FieldType, Scalar, Schema};
use wire::{Reader, WireValue};

/// The protobuf media type kubectl's typed clients send.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// Deepest message nesting accepted (a body cannot recurse the decoder off its stack).
const MAX_DEPTH: usize = 100;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";

/// Why a body could not be decoded; the texts are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty data")]
    Empty,
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    NotProtobuf,
    #[error("empty body")]
    EmptyBody,
    #[error("unexpected EOF")]
    UnexpectedEof,
    #[error("proto: integer overflow")]
    IntOverflow,
    #[error("proto: negative length found during unmarshaling")]
    InvalidLength,
    #[error("no kind {kind:?} is registered for version {version:?} in scheme \"pkg/api/legacyscheme/scheme.go:30\"")]
    NotRegistered { kind: String, version: String },
    #[error("{0}")]
    Malformed(String),
    #[error("protobuf schema: {0}")]
    Schema(&'static str),
}

/// The envelope of a protobuf body.
#[derive(Debug, Default)]
pub struct Unknown<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
    pub content_encoding: String,
    pub content_type: String,
}

impl<'a> Unknown<'a> {
    /// Checks the magic and reads the envelope.
    pub fn parse(body: &'a [u8]) -> Result<Self, DecodeError> {
        if body.is_empty() {
            return Err(DecodeError::Empty);
        }
        let data = body.strip_prefix(MAGIC).ok_or(DecodeError::NotProtobuf)?;
        if data.is_empty() {
            return Err(DecodeError::EmptyBody);
        }
        let mut u = Unknown::default();
        let mut r = Reader::new(data, "Unknown");
        while let Some((n, v)) = r.field()? {
            match (n, v) {
                (1, WireValue::Len(tm)) => {
                    let mut r = Reader::new(tm, "TypeMeta");
                    while let Some((n, v)) = r.field()? {
                        match (n, v) {
                            (1, WireValue::Len(s)) => u.api_version = lossy(s),
                            (2, WireValue::Len(s)) => u.kind = lossy(s),
                            (1 | 2, v) => return Err(wrong_wire_type(&v, "TypeMeta field")),
                            _ => {}
                        }
                    }
                }
                (2, WireValue::Len(raw)) => u.raw = raw,
                (3, WireValue::Len(s)) => u.content_encoding = lossy(s),
                (4, WireValue::Len(s)) => u.content_type = lossy(s),
                (1..=4, v) => return Err(wrong_wire_type(&v, "Unknown field")),
                _ => {}
            }
        }
        Ok(u)
    }
}

/// Decodes a protobuf request body meant for `group/version` `kind` into its JSON form.
/// Errors are 400s worded as upstream's REST handlers word them.
pub fn decode_body(body: &[u8], group: &str, version: &str, kind: &str) -> Result<Value, Error> {
    let unrecognized = |e: DecodeError| {
        Error::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {e} ({})",
            summarize(body)
        ))
    };
    let mut unk = Unknown::parse(body).map_err(unrecognized)?;
    // Missing kind or version default to what the URL expects (upstream copyKindDefaults).
    if unk.kind.is_empty() {
        unk.kind = kind.to_string();
    }
    if unk.api_version.is_empty() {
        unk.api_version = api_version(group, version);
    }
    decode_object(&unk).map_err(|e| {
        let v = unk.api_version.rsplit('/').next().unwrap_or_default();
        Error::BadRequest(format!(
            "{} in version {v:?} cannot be handled as a {kind}: {e}",
            unk.kind
        ))
    })
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The object in an envelope as JSON, with its `apiVersion` and `kind`.
pub fn decode_object(unk: &Unknown<'_>) -> Result<Value, DecodeError> {
    decode_nested(unk, 0)
}

fn decode_nested(unk: &Unknown<'_>, depth: usize) -> Result<Value, DecodeError> {
    let schema = schema::schema().map_err(DecodeError::Schema)?;
    // A kind is a message with metadata (not one of the types objects are made of).
    let is_kind = |n: &String| {
        schema
            .message(n)
            .is_some_and(|m| n.starts_with(META) || m.fields.values().any(|f| f.json == "metadata"))
    };
    let name = message_name(&unk.api_version, &unk.kind)
        .filter(is_kind)
        .ok_or_else(|| DecodeError::NotRegistered {
            kind: unk.kind.clone(),
            version: unk.api_version.clone(),
        })?;
    let mut obj = match decode_message(schema, &name, unk.raw, depth)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("apiVersion".into(), Value::String(unk.api_version.clone()));
    obj.insert("kind".into(), Value::String(unk.kind.clone()));
    Ok(Value::Object(obj))
}

/// The proto message of a built-in kind: `k8s.io.api.<group>.<version>.<Kind>`, or
/// DeleteOptions, which every group version serves.
fn message_name(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind == "DeleteOptions" {
        return Some(format!("{META}{kind}"));
    }
    let package = match group {
        "" => "core",
        g if !g.contains('.') => g,
        g => g.strip_suffix(".k8s.io")?.split('.').next()?,
    };
    Some(format!("k8s.io.api.{package}.{version}.{kind}"))
}

/// upstream's summarizeData: the first 30 bytes, as text for JSON-looking data, else hex.
fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    let head = &body[..body.len().min(MAX)];
    let more = if body.len() > MAX { " ..." } else { "" };
    match body.first() {
        None => "<empty>".into(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(head)),
        Some(_) => {
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}{more}")
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wrong_wire_type(v: &WireValue<'_>, field: &str) -> DecodeError {
    DecodeError::Malformed(format!(
        "proto: wrong wireType = {} for field {field}",
        v.wire_type()
    ))
}

fn decode_message(
    schema: &Schema,
    name: &str,
    buf: &[u8],
    depth: usize,
) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Malformed(format!(
            "proto: exceeded maximum nesting depth {MAX_DEPTH}"
        )));
    }
    if let Some(short) = name.strip_prefix(META) {
        match short {
            "Time" => return time(buf, false),
            "MicroTime" => return time(buf, true),
            "FieldsV1" => return embedded_json(buf, "FieldsV1", depth),
            _ => {}
        }
    }
    match name {
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => return quantity(buf),
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => return int_or_string(buf),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => {
            return embedded_json(buf, "RawExtension", depth)
        }
        _ => {}
    }
    let short = name.rsplit('.').next().unwrap_or(name);
    let msg = schema
        .message(name)
        .ok_or(DecodeError::Schema("a message refers to an unknown type"))?;
    let mut obj = Map::new();
    let mut r = Reader::new(buf, short);
    while let Some((n, v)) = r.field()? {
        let Some(f) = msg.fields.get(&n) else {
            continue; // unknown fields are skipped, as upstream's generated code does
        };
        decode_field(schema, f, v, &mut obj, depth)?;
    }
    if msg.list {
        let items = obj.into_iter().next().map(|(_, v)| v);
        return Ok(items.unwrap_or_else(|| Value::Array(Vec::new())));
    }
    Ok(Value::Object(obj))
}

fn decode_field(
    schema: &Schema,
    f: &Field,
    v: WireValue<'_>,
    obj: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), DecodeError> {
    match &f.ty {
        FieldType::Map(k, val) => {
            let WireValue::Len(entry) = v else {
                return Err(wrong_wire_type(&v, f.json));
            };
            let (key, value) = map_entry(schema, *k, val, entry, depth)?;
            let slot = obj
                .entry(f.json)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = slot {
                m.insert(key, value);
            }
        }
        FieldType::Scalar(s) if f.repeated => {
            let slot = obj
                .entry(f.json)
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(items) = slot else {
                return Ok(());
            };
            match v {
                // Packed repeated numbers.
                WireValue::Len(data) if !matches!(s, Scalar::String | Scalar::Bytes) => {
                    let mut r = Reader::new(data, f.json);
                    while !r.is_empty() {
                        let wv = match wire_type_of(*s) {
                            wire::VARINT => WireValue::Varint(r.varint()?),
                            _ => return Err(wrong_wire_type(&v, f.json)),
                        };
                        items.push(scalar(*s, wv, f.json)?);
                    }
                }
                v => items.push(scalar(*s, v, f.json)?),
            }
        }
        FieldType::Scalar(s) => {
            let value = scalar(*s, v, f.json)?;
            if f.keep_zero || !is_zero(&value) {
                obj.insert(f.json.to_string(), value);
            } else {
                obj.remove(f.json);
            }
        }
        FieldType::Message(name) => {
            let WireValue::Len(data) = v else {
                return Err(wrong_wire_type(&v, f.json));
            };
            let value = decode_message(schema, name, data, depth + 1)?;
            if f.inline {
                if let Value::Object(m) = value {
                    obj.extend(m);
                }
            } else if f.repeated {
                let slot = obj
                    .entry(f.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = slot {
                    items.push(value);
                }
            } else {
                obj.insert(f.json.to_string(), value);
            }
        }
    }
    Ok(())
}

fn map_entry(
    schema: &Schema,
    key_type: Scalar,
    value_type: &FieldType,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), DecodeError> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(entry, "MapEntry");
    while let Some((n, v)) = r.field()? {
        match n {
            1 => {
                key = match scalar(key_type, v, "key")? {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            2 => {
                value = Some(match value_type {
                    FieldType::Scalar(s) => scalar(*s, v, "value")?,
                    FieldType::Message(name) => {
                        let WireValue::Len(data) = v else {
                            return Err(wrong_wire_type(&v, "value"));
                        };
                        decode_message(schema, name, data, depth + 1)?
                    }
                    FieldType::Map(..) => {
                        return Err(DecodeError::Schema("a map value cannot be a map"))
                    }
                })
            }
            _ => {}
        }
    }
    let value = match (value, value_type) {
        (Some(v), _) => v,
        (None, FieldType::Scalar(s)) => zero(*s),
        (None, FieldType::Message(name)) => decode_message(schema, name, &[], depth + 1)?,
        (None, FieldType::Map(..)) => Value::Null,
    };
    Ok((key, value))
}

fn wire_type_of(s: Scalar) -> u8 {
    match s {
        Scalar::String | Scalar::Bytes => wire::LEN,
        Scalar::Fixed64 | Scalar::Sfixed64 | Scalar::Double => wire::FIXED64,
        Scalar::Fixed32 | Scalar::Sfixed32 | Scalar::Float => wire::FIXED32,
        _ => wire::VARINT,
    }
}

fn scalar(s: Scalar, v: WireValue<'_>, field: &str) -> Result<Value, DecodeError> {
    let wrong = || wrong_wire_type(&v, field);
    Ok(match (s, v) {
        (Scalar::String, WireValue::Len(b)) => Value::String(lossy(b)),
        (Scalar::Bytes, WireValue::Len(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Scalar::Bool, WireValue::Varint(x)) => Value::Bool(x != 0),
        (Scalar::Int32, WireValue::Varint(x)) => Value::from(x as i64 as i32),
        (Scalar::Int64, WireValue::Varint(x)) => Value::from(x as i64),
        (Scalar::Uint32, WireValue::Varint(x)) => Value::from(x as u32),
        (Scalar::Uint64, WireValue::Varint(x)) => Value::from(x),
        (Scalar::Sint32, WireValue::Varint(x)) => Value::from(zigzag(x) as i32),
        (Scalar::Sint64, WireValue::Varint(x)) => Value::from(zigzag(x)),
        (Scalar::Fixed32, WireValue::Fixed32(x)) => Value::from(x),
        (Scalar::Sfixed32, WireValue::Fixed32(x)) => Value::from(x as i32),
        (Scalar::Fixed64, WireValue::Fixed64(x)) => Value::from(x),
        (Scalar::Sfixed64, WireValue::Fixed64(x)) => Value::from(x as i64),
        (Scalar::Float, WireValue::Fixed32(x)) => float(f64::from(f32::from_bits(x))),
        (Scalar::Double, WireValue::Fixed64(x)) => float(f64::from_bits(x)),
        _ => return Err(wrong()),
    })
}

fn zigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn zero(s: Scalar) -> Value {
    match s {
        Scalar::String | Scalar::Bytes => Value::String(String::new()),
        Scalar::Bool => Value::Bool(false),
        _ => Value::from(0),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// The last value of each of the given fields of a small well-known message.
fn fields<'a, const N: usize>(
    buf: &'a [u8],
    name: &'a str,
) -> Result<[Option<WireValue<'a>>; N], DecodeError> {
    let mut out = [None; N];
    let mut r = Reader::new(buf, name);
    while let Some((n, v)) = r.field()? {
        if let Some(slot) = (n as usize).checked_sub(1).and_then(|i| out.get_mut(i)) {
            *slot = Some(v);
        }
    }
    Ok(out)
}

fn varint_of(v: Option<WireValue<'_>>, field: &str) -> Result<u64, DecodeError> {
    match v {
        None => Ok(0),
        Some(WireValue::Varint(x)) => Ok(x),
        Some(v) => Err(wrong_wire_type(&v, field)),
    }
}

fn bytes_of<'a>(v: Option<WireValue<'a>>, field: &str) -> Result<&'a [u8], DecodeError> {
    match v {
        None => Ok(&[]),
        Some(WireValue::Len(b)) => Ok(b),
        Some(v) => Err(wrong_wire_type(&v, field)),
    }
}

/// metav1.Time (RFC 3339 in seconds) and MicroTime (six fraction digits); the zero time is null.
fn time(buf: &[u8], micro: bool) -> Result<Value, DecodeError> {
    // Go's zero time.Time, as Unix seconds.
    const GO_ZERO: i64 = -62_135_596_800;
    if buf.is_empty() {
        return Ok(Value::Null);
    }
    let [secs, nanos] = fields::<2>(buf, "Timestamp")?;
    let secs = varint_of(secs, "Seconds")? as i64;
    let nanos = i64::from(varint_of(nanos, "Nanos")? as i64 as i32);
    let secs = secs.saturating_add(nanos.div_euclid(1_000_000_000));
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    if secs == GO_ZERO && nanos == 0 {
        return Ok(Value::Null);
    }
    let t = chrono::DateTime::from_timestamp(secs, nanos)
        .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| {
            DecodeError::Malformed("Time.MarshalJSON: year outside of range [0,9999]".into())
        })?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(t.format(format).to_string()))
}

/// resource.Quantity is its string (`string` field 1); an empty one is "0".
fn quantity(buf: &[u8]) -> Result<Value, DecodeError> {
    let [s] = fields::<1>(buf, "Quantity")?;
    let s = bytes_of(s, "String_")?;
    Ok(Value::String(if s.is_empty() {
        "0".into()
    } else {
        lossy(s)
    }))
}

/// intstr.IntOrString: a number (type 0) or a string (type 1).
fn int_or_string(buf: &[u8]) -> Result<Value, DecodeError> {
    let [ty, int_val, str_val] = fields::<3>(buf, "IntOrString")?;
    match varint_of(ty, "Type")? {
        0 => Ok(Value::from(varint_of(int_val, "IntVal")? as i64 as i32)),
        1 => Ok(Value::String(lossy(bytes_of(str_val, "StrVal")?))),
        _ => Err(DecodeError::Malformed("impossible IntOrString.Type".into())),
    }
}

/// RawExtension and FieldsV1 carry JSON bytes in field 1 (a RawExtension may also carry a
/// nested protobuf object); empty is null.
fn embedded_json(buf: &[u8], name: &str, depth: usize) -> Result<Value, DecodeError> {
    let [raw] = fields::<1>(buf, name)?;
    let raw = bytes_of(raw, "Raw")?;
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        return decode_nested(&Unknown::parse(raw)?, depth + 1);
    }
    serde_json::from_slice(raw)
        .map_err(|e| DecodeError::Malformed(format!("{name} does not hold valid JSON: {e}")))
}

#[cfg(test)]
mod tests;
