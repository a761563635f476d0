//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): the CRD kind itself (strategy and
//! validation), the strategy its custom resources are served with (structural schema,
//! status and scale subresources, printer columns), and the controller that installs and
//! removes their stores in the registry as CRDs come and go.

pub mod controller;
pub mod custom;
pub mod naming;
pub mod schema;
pub mod strategy;
pub mod validation;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use parking_lot::Mutex;
use serde_json::Value;

use crate::registry::{ResourceInfo, Subresource};

/// The API group of CRDs.
pub const GROUP: &str = "apiextensions.k8s.io";
/// Their plural.
pub const PLURAL: &str = "customresourcedefinitions";
/// The finalizer that makes the API server delete a CRD's objects before the CRD goes.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Interns a string for the `&'static str` fields of `ResourceInfo`: each distinct name a
/// CRD ever used is kept once for the life of the process.
pub(crate) fn intern(s: &str) -> &'static str {
    static STRINGS: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut m = STRINGS.get_or_init(Default::default).lock();
    if let Some(v) = m.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_string().into_boxed_str());
    m.insert(s.to_string(), v);
    v
}

/// Interns a list of names (short names, categories).
fn intern_list(items: &[String]) -> &'static [&'static str] {
    static LISTS: OnceLock<Mutex<HashMap<Vec<String>, &'static [&'static str]>>> = OnceLock::new();
    if items.is_empty() {
        return &[];
    }
    let mut m = LISTS.get_or_init(Default::default).lock();
    if let Some(v) = m.get(items) {
        return v;
    }
    let v: &'static [&'static str] = Box::leak(
        items
            .iter()
            .map(|s| intern(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    m.insert(items.to_vec(), v);
    v
}

const NO_SUB: &[Subresource] = &[];
const STATUS: &[Subresource] = &[Subresource::Status];
const SCALE: &[Subresource] = &[Subresource::Scale];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];

/// One resource a CRD serves: `(group, plural)` and a `ResourceInfo` per served version.
pub struct Served {
    pub group: &'static str,
    pub plural: &'static str,
    pub versions: Vec<ResourceInfo>,
}

/// What a stored CRD serves; `Err` for one that cannot be served (it failed validation on
/// the way in, so this only happens with objects written by something else).
pub fn served(obj: &Value) -> Result<Served, String> {
    let crd: CustomResourceDefinition =
        crate::validation::decode_typed(obj).map_err(|e| format!("undecodable CRD: {e}"))?;
    let spec = &crd.spec;
    // The names the naming controller accepted (the spec's until it has looked).
    let names = crd
        .status
        .as_ref()
        .and_then(|s| s.accepted_names.as_ref())
        .filter(|n| !n.plural.is_empty() && !n.kind.is_empty())
        .unwrap_or(&spec.names);
    let group = intern(&spec.group);
    let plural = intern(&names.plural);
    let kind = intern(&names.kind);
    let singular = intern(
        &names
            .singular
            .clone()
            .unwrap_or_else(|| names.kind.to_lowercase()),
    );
    let short_names = intern_list(names.short_names.as_deref().unwrap_or_default());
    let categories = intern_list(names.categories.as_deref().unwrap_or_default());
    let namespaced = spec.scope == "Namespaced";
    let storage = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map(|v| v.name.clone())
        .ok_or("no storage version")?;
    let mut versions = Vec::new();
    for (i, v) in spec.versions.iter().enumerate() {
        if !v.served {
            continue;
        }
        let raw = obj
            .pointer(&format!("/spec/versions/{i}"))
            .cloned()
            .unwrap_or(Value::Null);
        let status = v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        let scale = v.subresources.as_ref().and_then(|s| s.scale.as_ref());
        let subresources = match (status, scale.is_some()) {
            (false, false) => NO_SUB,
            (true, false) => STATUS,
            (false, true) => SCALE,
            (true, true) => STATUS_SCALE,
        };
        let strategy = custom::CustomStrategy::new(custom::Params {
            group,
            version: intern(&v.name),
            storage_version: intern(&storage),
            namespaced,
            status,
            scale,
            version_json: &raw,
        })?;
        versions.push(ResourceInfo {
            group,
            version: intern(&v.name),
            kind,
            plural,
            singular,
            short_names,
            categories,
            namespaced,
            subresources,
            strategy: Arc::new(strategy),
        });
    }
    Ok(Served {
        group,
        plural,
        versions,
    })
}
