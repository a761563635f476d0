//! Admission: the plugins that run on every write (create, update, patch, delete) after
//! authorization and before storage, mutating ones first, then validating ones, as upstream's
//! default plugin order: ServiceAccount, LimitRanger (defaults), mutating webhooks,
//! NodeRestriction, PodSecurity, LimitRanger (limits), RBAC escalation checks, ResourceQuota,
//! validating webhooks. A patch is admitted as an update of the patched object; a delete
//! (each object of a deletecollection too) goes to NodeRestriction and the webhooks with the
//! stored object as `oldObject`. NamespaceLifecycle lives in the store;
//! DefaultTolerationSeconds in the pod strategy.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::User;
use crate::error::{Error, Result};
use crate::handlers::ApiState;
use crate::registry::store::ListParams;
use crate::registry::ResourceInfo;
use crate::watch_cache::Filter;

pub mod limit_ranger;
pub mod node_restriction;
pub mod pod_security;
pub mod quantity;
pub mod resource_quota;
pub mod service_account;
pub mod webhook;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One admission request (upstream `admission.Attributes`).
pub struct Attributes<'a> {
    pub user: &'a User,
    pub resource: &'a ResourceInfo,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub operation: Operation,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
    /// Warnings for the client (`Warning: 299 - "..."` headers), from PodSecurity's warn
    /// mode and webhooks.
    pub warnings: &'a std::sync::Mutex<Vec<String>>,
}

impl Attributes<'_> {
    /// Adds a warning for the client (each text once).
    pub fn warn(&self, text: String) {
        let mut w = match self.warnings.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !w.contains(&text) {
            w.push(text);
        }
    }

    /// `pods "x" is forbidden: <message>` for this object.
    pub fn forbidden(&self, obj: &Value, message: String) -> Error {
        Error::Forbidden {
            resource: self.resource.qualified_resource(),
            name: self.name(obj).to_string(),
            message,
        }
    }

    /// The object's name; a delete has no new object, so the stored one names it.
    pub fn name<'v>(&'v self, obj: &'v Value) -> &'v str {
        match (self.operation, self.old) {
            (Operation::Delete, Some(old)) => crate::object::meta_str(old, "name"),
            _ => crate::object::meta_str(obj, "name"),
        }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.resource.group == group && self.resource.plural == plural
    }
}

/// The store of a resource, whatever version serves it.
pub fn store_of(
    state: &ApiState,
    group: &str,
    plural: &str,
) -> Option<Arc<crate::registry::store::Store>> {
    let r = state
        .registry
        .resources
        .iter()
        .find(|r| r.group == group && r.plural == plural)?;
    state.registry.store(group, r.version, plural).cloned()
}

/// The objects of a resource in a namespace, from the watch cache once it shows every write
/// this server made to that resource (so a write acknowledged before this request is seen;
/// writes through other API servers arrive as their watch events do, like upstream's listers).
pub async fn cached(state: &ApiState, group: &str, plural: &str, ns: &str) -> Result<Vec<Value>> {
    let Some(store) = store_of(state, group, plural) else {
        return Ok(Vec::new());
    };
    store.wait_own_writes().await?;
    let p = ListParams {
        filter: Filter {
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let (items, _, _) = store.cache.list(&p.filter, "", 0);
    Ok(items
        .iter()
        .filter_map(|o| serde_json::from_slice(&o.bytes).ok())
        .collect())
}

/// Runs the admission chain on `obj` (which it may change). The object has had the
/// strategy's defaults applied.
pub async fn admit(state: &Arc<ApiState>, a: &Attributes<'_>, obj: &mut Value) -> Result<()> {
    let enabled = |name: &str| state.security.admission_enabled(name);
    if a.operation == Operation::Delete {
        // Upstream's delete handler calls the mutating chain too, but only webhooks act on
        // a delete, and there is no object for them to change.
        if enabled("MutatingAdmissionWebhook") {
            webhook::call(state, a, obj, true).await?;
        }
        if enabled("NodeRestriction") {
            node_restriction::admit(state, a, obj).await?;
        }
        if enabled("ValidatingAdmissionWebhook") {
            webhook::call(state, a, obj, false).await?;
        }
        return Ok(());
    }
    let pod = a.is("", "pods") && a.subresource.is_empty();
    // Mutating.
    if enabled("ServiceAccount") {
        if pod && a.operation == Operation::Create {
            service_account::admit_pod(state, a, obj).await?;
        }
        if a.is("", "secrets") && a.operation == Operation::Create {
            service_account::fill_token_secret(state, a, obj).await?;
        }
    }
    if enabled("LimitRanger") && pod && a.operation == Operation::Create {
        limit_ranger::default_pod(state, a, obj).await?;
    }
    if a.is(crate::certificates::GROUP, "certificatesigningrequests")
        && a.operation == Operation::Create
    {
        crate::certificates::set_requestor(a.user, obj);
    }
    if enabled("MutatingAdmissionWebhook") {
        webhook::call(state, a, obj, true).await?;
    }
    // Validating.
    if enabled("NodeRestriction") {
        node_restriction::admit(state, a, obj).await?;
    }
    if enabled("PodSecurity") && a.subresource.is_empty() {
        pod_security::validate(state, a, obj).await?;
    }
    if enabled("LimitRanger") && pod && a.operation == Operation::Create {
        limit_ranger::validate_pod(state, a, obj).await?;
    }
    if a.resource.group == crate::auth::rbac::GROUP {
        crate::auth::escalation::check(state, a, obj)?;
    }
    if a.is(crate::certificates::GROUP, "certificatesigningrequests")
        && a.operation == Operation::Update
    {
        crate::certificates::admit_update(state, a, obj)?;
    }
    if enabled("ResourceQuota") && a.subresource.is_empty() {
        resource_quota::admit(state, a, obj).await?;
    }
    if enabled("ValidatingAdmissionWebhook") {
        webhook::call(state, a, obj, false).await?;
    }
    Ok(())
}

/// The name admission (and webhook rules) give a subresource.
fn subresource_name(subresource: Option<crate::registry::Subresource>) -> &'static str {
    use crate::registry::Subresource;
    match subresource {
        None => "",
        Some(Subresource::Status) => "status",
        Some(Subresource::Scale) => "scale",
        Some(Subresource::Binding) => "binding",
        Some(Subresource::Log) => "log",
        Some(Subresource::Exec) => "exec",
        Some(Subresource::Attach) => "attach",
        Some(Subresource::PortForward) => "portforward",
        Some(Subresource::Proxy) => "proxy",
        Some(Subresource::Approval) => "approval",
    }
}

/// One write arriving through the handlers, before its admission.
pub struct WriteRequest<'a> {
    pub user: &'a User,
    pub store: &'a crate::registry::store::Store,
    pub subresource: Option<crate::registry::Subresource>,
    pub namespace: &'a str,
    pub dry_run: bool,
}

impl<'a> WriteRequest<'a> {
    /// A write by `user` to `store` (its `subresource`) in `namespace`.
    pub fn new(
        user: &'a User,
        store: &'a crate::registry::store::Store,
        subresource: Option<crate::registry::Subresource>,
        namespace: &'a str,
        dry_run: bool,
    ) -> Self {
        WriteRequest {
            user,
            store,
            subresource,
            namespace,
            dry_run,
        }
    }

    /// Admits `obj` as a create (`old` = None) or as an update of `old`, after the
    /// strategy's defaults; returns the warnings for the client.
    pub async fn admit(
        &self,
        state: &Arc<ApiState>,
        old: Option<&Value>,
        obj: &mut Value,
    ) -> Result<Vec<String>> {
        self.store.info.strategy.default(obj);
        self.admit_as_is(state, old, obj).await
    }

    /// [`WriteRequest::admit`] without the strategy's defaults (the object of a `/scale`
    /// write is a Scale, not the resource's kind).
    pub async fn admit_as_is(
        &self,
        state: &Arc<ApiState>,
        old: Option<&Value>,
        obj: &mut Value,
    ) -> Result<Vec<String>> {
        let op = if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        };
        let warnings = std::sync::Mutex::new(Vec::new());
        admit(state, &self.attributes(op, old, &warnings), obj).await?;
        Ok(warnings.into_inner().unwrap_or_default())
    }

    /// Admits the delete of `old` (the stored object).
    pub async fn admit_delete(&self, state: &Arc<ApiState>, old: &Value) -> Result<()> {
        let warnings = std::sync::Mutex::new(Vec::new());
        admit(
            state,
            &self.attributes(Operation::Delete, Some(old), &warnings),
            &mut Value::Null,
        )
        .await
    }

    fn attributes<'b>(
        &'b self,
        operation: Operation,
        old: Option<&'b Value>,
        warnings: &'b std::sync::Mutex<Vec<String>>,
    ) -> Attributes<'b> {
        Attributes {
            warnings,
            user: self.user,
            resource: &self.store.info,
            subresource: subresource_name(self.subresource),
            namespace: self.namespace,
            operation,
            old,
            dry_run: self.dry_run,
        }
    }
}

/// Admission of a create (`name` = None) or update arriving through the handlers: applies
/// the strategy's defaults, reads the old object of an update, then runs [`admit`].
#[allow(clippy::too_many_arguments)]
pub async fn admit_write(
    state: &Arc<ApiState>,
    user: &User,
    store: &crate::registry::store::Store,
    subresource: Option<crate::registry::Subresource>,
    namespace: &str,
    name: Option<&str>,
    dry_run: bool,
    obj: &mut Value,
) -> Result<Vec<String>> {
    let old = match name {
        Some(n) => match store.get_value(namespace, n).await {
            Ok(v) => Some(v),
            // An update that creates (or fails later with NotFound) is admitted as a create.
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let w = WriteRequest {
        user,
        store,
        subresource,
        namespace,
        dry_run,
    };
    w.admit(state, old.as_ref(), obj).await
}
