//! The registry: one table of every served resource, each with its strategy. The table
//! drives routing, discovery and (later) OpenAPI. The generic store in `store` serves
//! every verb for every resource; a kind only contributes a `Strategy`.

use std::sync::Arc;

use serde_json::Value;

use crate::validation::FieldErrors;

pub mod allocator;
pub mod binding;
pub mod store;
pub mod stores;
pub mod strategies;
pub mod table;

/// A subresource a resource serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes only `.status`; the main resource keeps the old status.
    Status,
    /// `/scale`: autoscaling/v1 Scale over `spec.replicas`.
    Scale,
    /// `pods/binding`: create-only; assigns the pod to a node (see `binding`).
    Binding,
    /// `pods/log`, streamed from the pod's kubelet.
    Log,
    /// `pods/exec`, upgraded and spliced to the pod's kubelet.
    Exec,
    /// `pods/attach`, likewise.
    Attach,
    /// `pods/portforward`, likewise.
    PortForward,
    /// `nodes/proxy`: any request proxied to the node's kubelet.
    Proxy,
    /// `certificatesigningrequests/approval`: writes only `status.conditions`.
    Approval,
}

/// Static facts about one resource, enough for routing and discovery.
#[derive(Clone)]
pub struct ResourceInfo {
    /// API group; empty for the legacy core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural lowercase name used in URLs (`deployments`).
    pub plural: &'static str,
    /// Singular lowercase name (`deployment`).
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub subresources: &'static [Subresource],
    pub strategy: Arc<dyn Strategy>,
}

impl ResourceInfo {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps` or `pods`: how upstream names a resource in messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `Deployment.apps` or `Pod`: how upstream names a kind in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    /// Storage key prefix for this resource, ending in `/`. Resources that upstream stores
    /// in one place under several groups (events) share the prefix of their core form.
    pub fn key_prefix(&self) -> String {
        let storage = self.strategy.storage_resource().unwrap_or(self.plural);
        if self.group.is_empty() || self.strategy.storage_resource().is_some() {
            format!("/registry/{storage}/")
        } else {
            format!("/registry/{}/{}/", self.group, storage)
        }
    }
    pub fn has_subresource(&self, s: Subresource) -> bool {
        self.subresources.contains(&s)
    }
}

/// Where `spec.replicas`-style scaling lives in an object, for `/scale`.
#[derive(Debug, Clone, Copy)]
pub struct ScalePaths {
    /// JSON pointer of the desired replicas, e.g. `/spec/replicas`.
    pub spec_replicas: &'static str,
    /// JSON pointer of the observed replicas, e.g. `/status/replicas`.
    pub status_replicas: &'static str,
    /// JSON pointer of the label selector (a LabelSelector object or a plain map), e.g. `/spec/selector`.
    pub selector: &'static str,
}

/// What a kind contributes to the generic store. Objects are plain JSON (`serde_json::Value`)
/// so that what is stored is what the client meant, and custom resources use the same store.
/// Typed checks decode into k8s-openapi types inside `validate`.
pub trait Strategy: Send + Sync + 'static {
    /// Upstream defaulting (fills unset fields). Runs on create and on update, before `prepare_*`.
    fn default(&self, _obj: &mut Value) {}

    /// Resets what a client may not set on create (for most kinds with status: `status`).
    /// `metadata` is handled by the store.
    fn prepare_for_create(&self, _obj: &mut Value) {}

    /// Adjusts an update of the main resource. The store has already copied the old
    /// `status` into `new` for kinds with a status subresource.
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}

    /// Validates an object for create. `metadata` name/namespace checks are done by the store;
    /// return errors for everything kind-specific, with upstream field paths and wording.
    fn validate(&self, obj: &Value) -> FieldErrors;

    /// Validates an update; defaults to `validate(new)`. Immutable fields are checked here.
    fn validate_update(&self, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(new)
    }

    /// Extra field-selector fields with their values for this object (beyond
    /// `metadata.name` and `metadata.namespace`, which the store always supports),
    /// e.g. `("spec.nodeName", "node-1")`. The names returned are the supported ones.
    fn selectable_fields(&self, _obj: &Value) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The names of the extra selectable fields, for rejecting unsupported ones.
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether a change of this object (excluding metadata and status) bumps
    /// `metadata.generation`. True for kinds with a spec.
    fn tracks_generation(&self) -> bool {
        true
    }

    /// Scale subresource layout, for kinds serving `/scale`.
    fn scale_paths(&self) -> Option<ScalePaths> {
        None
    }

    /// When several group-versions serve one stored resource, the key path under `/registry/`
    /// they share: `events` (core/v1 and events.k8s.io/v1 Events),
    /// `autoscaling/horizontalpodautoscalers` (autoscaling/v1 and v2); `None` = the resource's
    /// own.
    fn storage_resource(&self) -> Option<&'static str> {
        None
    }

    /// Converts an object of this resource's version into the stored form, for resources that
    /// share storage with another group-version (events.k8s.io/v1 Events are stored as core/v1).
    fn to_storage(&self, obj: Value) -> Value {
        obj
    }

    /// True when `to_storage`/`from_storage` are not the identity.
    fn has_conversion(&self) -> bool {
        false
    }

    /// Default grace period for a delete without `gracePeriodSeconds`; `None` or `Some(0)`
    /// deletes at once. Pods bound to a node return their termination grace period.
    fn default_grace_period(&self, _obj: &Value) -> Option<i64> {
        None
    }

    /// Converts a stored object into this resource's version; inverse of `to_storage`.
    #[allow(clippy::wrong_self_convention)]
    fn from_storage(&self, obj: Value) -> Value {
        obj
    }

    /// A Table printer known only at run time (custom resources); `None` = the kind's built-in one.
    fn printer(&self) -> Option<&dyn crate::table::DynamicPrinter> {
        None
    }

    /// Fields of `obj` its schema does not declare (upstream paths such as `spec.foo`), for
    /// `fieldValidation`, for kinds whose schema is known only at run time (custom resources);
    /// `None` = use the typed model of a built-in kind.
    fn unknown_fields(&self, _obj: &Value) -> Option<Vec<String>> {
        None
    }

    /// The OpenAPI v3 schema field management reads lists and maps from, for kinds whose
    /// schema is known only at run time (custom resources); `None` = the built-in one.
    fn apply_schema(&self) -> Option<&Value> {
        None
    }

    /// Whether create/update may go ahead in a namespace (false for e.g. namespaces themselves).
    /// Kinds that must be allowed in terminating namespaces (events) return true.
    fn allowed_in_terminating_namespace(&self) -> bool {
        false
    }
}
