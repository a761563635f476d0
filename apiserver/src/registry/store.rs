//! The generic store: every verb, once, for every resource. A kind contributes only its
//! `Strategy`. Reads are served from the watch cache once it has caught up with the store
//! (consistent reads, like upstream's consistent list from cache); writes go to the backend
//! with compare-and-swap on the mod revision.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::object;
use crate::object::now_rfc3339;
use crate::registry::allocator::{Held, ServiceAllocator};
use crate::registry::{ResourceInfo, Subresource};
use crate::storage::{self, Backend, KeyValue, ListOptions};
use crate::validation::FieldError;
use crate::watch_cache::{CachedObject, Caches, Filter, WatchCache};

/// How long a read waits for the cache to reach a revision before giving up.
const FRESHNESS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a consistent read waits for the cache before reading the store directly.
const FOREIGN_REVISION_WAIT: Duration = Duration::from_millis(500);
/// Attempts of an unconditional update under contention before giving up.
const MAX_UPDATE_ATTEMPTS: usize = 32;

/// Options of a write.
#[derive(Debug, Default, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// Who writes: with a manager, the write is recorded in `metadata.managedFields` as an
    /// Update. `None` (server-internal writes, and applies, which record themselves) keeps
    /// the entries as they are.
    pub field_manager: Option<String>,
    /// The subresource the managedFields entry names when it is not the written one (a
    /// `/scale` write updates the main resource).
    pub field_subresource: Option<&'static str>,
}

impl WriteOptions {
    /// A write by one of the server's own controllers, recorded in managedFields under
    /// `manager` as upstream's loopback clients are (`kube-apiserver`, or
    /// `kube-controller-manager` for what upstream runs there).
    pub fn internal(manager: &str) -> Self {
        WriteOptions {
            field_manager: Some(manager.to_string()),
            ..Default::default()
        }
    }
}

/// The field manager of the API server's own writes.
pub const APISERVER: &str = "kube-apiserver";
/// The field manager of writes upstream's controller-manager makes and minik8s's API server
/// makes itself (CSR approval and signing, default service accounts).
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// How a list reads.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub filter: Filter,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// What a delete asks for (upstream DeleteOptions).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

/// Validating admission of a delete: gets the stored object about to be deleted.
pub type DeleteAdmission<'a> =
    dyn Fn(Value) -> futures::future::BoxFuture<'a, Result<()>> + Send + Sync + 'a;

/// Result of a delete.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Deleted(Value),
    /// The object is marked for deletion (grace period or finalizers) and still exists.
    Pending(Value),
}

/// One resource's store.
pub struct Store {
    pub info: ResourceInfo,
    pub cache: Arc<WatchCache>,
    backend: Arc<dyn Backend>,
    caches: Arc<Caches>,
    /// Cluster IP and NodePort allocation, for core/v1 Services.
    services: Option<Arc<ServiceAllocator>>,
}

/// `old` with `status` (removed when None) and the resourceVersion precondition of `new`.
fn with_status(old: &Value, status: Option<Value>, new: &Value) -> Value {
    let mut merged = old.clone();
    if let Some(o) = merged.as_object_mut() {
        match status {
            Some(s) => o.insert("status".into(), s),
            None => o.remove("status"),
        };
    }
    let rv = object::meta_str(new, "resourceVersion").to_string();
    if !rv.is_empty() {
        object::meta_mut(&mut merged).insert("resourceVersion".into(), Value::String(rv));
    }
    // managedFields as the writer left them: a server-side apply of the status computed
    // them; a recorded Update recomputes them from the stored ones.
    if let Some(mf) = new.pointer("/metadata/managedFields") {
        object::meta_mut(&mut merged).insert("managedFields".into(), mf.clone());
    }
    merged
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The message upstream gives for a stale resourceVersion.
pub const CONFLICT_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

impl Store {
    pub fn new(
        info: ResourceInfo,
        cache: Arc<WatchCache>,
        backend: Arc<dyn Backend>,
        caches: Arc<Caches>,
    ) -> Self {
        Store {
            info,
            cache,
            backend,
            caches,
            services: None,
        }
    }

    /// Makes this store allocate Service cluster IPs and node ports.
    pub fn with_service_allocator(mut self, a: Arc<ServiceAllocator>) -> Self {
        self.services = Some(a);
        self
    }

    /// Allocates what `obj` (a Service) needs beyond what `old` held; `Ok(None)` for
    /// other resources.
    async fn allocate(&self, name: &str, obj: &mut Value, old: &Held) -> Result<Option<Held>> {
        let Some(a) = &self.services else {
            return Ok(None);
        };
        match a.allocate(obj, old).await? {
            Ok(got) => Ok(Some(got)),
            Err(errs) => Err(self.invalid(name, errs)),
        }
    }

    /// Releases values a Service no longer holds.
    async fn release(&self, held: &Held) {
        if let Some(a) = &self.services {
            a.release(held).await;
        }
    }

    /// After a Service changed from `old` to `new` (or was deleted: `new` = None), releases
    /// what it gave up.
    async fn release_given_up(&self, old: &Value, new: Option<&Value>) {
        if self.services.is_none() {
            return;
        }
        let before = Held::of(old);
        let after = new.map(Held::of).unwrap_or_default();
        let gone = Held {
            ip: before.ip.filter(|ip| after.ip != Some(*ip)),
            node_ports: before
                .node_ports
                .into_iter()
                .filter(|p| !after.node_ports.contains(p))
                .collect(),
        };
        self.release(&gone).await;
    }

    fn key(&self, ns: &str, name: &str) -> String {
        self.cache.key(ns, name)
    }

    fn not_found(&self, name: &str) -> Error {
        Error::NotFound {
            resource: self.info.qualified_resource(),
            name: name.to_string(),
        }
    }

    fn conflict(&self, name: &str, message: &str) -> Error {
        Error::Conflict {
            resource: self.info.qualified_resource(),
            name: name.to_string(),
            message: message.to_string(),
        }
    }

    fn invalid(&self, name: &str, errors: Vec<FieldError>) -> Error {
        Error::Invalid {
            kind: self.info.qualified_kind(),
            name: name.to_string(),
            errors,
        }
    }

    /// `None` when the cache has caught up with the store's newest revision; otherwise
    /// (after a short wait) that revision, for reading from the store directly. The cache
    /// only sees revisions under its key prefix; in an etcd shared with other writers the
    /// newest revision may belong to someone else's key.
    pub async fn fresh_or_revision(&self) -> Result<Option<i64>> {
        let rev = self.backend.current_revision().await?;
        if self.caches.wait_for(rev, FOREIGN_REVISION_WAIT).await {
            Ok(None)
        } else {
            Ok(Some(rev))
        }
    }

    /// Waits until the cache reflects everything the store has committed.
    pub async fn wait_fresh(&self) -> Result<()> {
        let rev = self.backend.current_revision().await?;
        self.wait_for(rev).await
    }

    /// Waits until the cache shows every write this server made to this resource: what
    /// admission reads (quotas, webhook configurations, limit ranges), like upstream's
    /// informer-fed listers but with read-your-own-writes, and without a store round trip.
    pub async fn wait_own_writes(&self) -> Result<()> {
        self.wait_for(self.cache.last_local_write()).await
    }

    /// Waits until the cache has reached `rev`.
    async fn wait_for(&self, rev: i64) -> Result<()> {
        if self.caches.wait_for(rev, FRESHNESS_TIMEOUT).await {
            Ok(())
        } else {
            Err(Error::Timeout(format!(
                "Too large resource version: {rev}, current: {}",
                self.caches.seen()
            )))
        }
    }

    /// Decodes a stored value into the served form with its resourceVersion.
    fn to_served(&self, kv: &KeyValue) -> Result<Value> {
        let v: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
        let mut v = if self.info.strategy.has_conversion() {
            self.info.strategy.from_storage(v)
        } else {
            v
        };
        object::meta_mut(&mut v).insert(
            "resourceVersion".into(),
            Value::String(kv.mod_revision.to_string()),
        );
        Ok(v)
    }

    fn encode_for_storage(&self, obj: &Value) -> Bytes {
        if self.info.strategy.has_conversion() {
            let stored = self.info.strategy.to_storage(obj.clone());
            return Bytes::from(object::encode_for_storage(&stored));
        }
        Bytes::from(object::encode_for_storage(obj))
    }

    /// The served form of `obj` as written at `rev`: the stored bytes with the
    /// resourceVersion when storage keeps the served form, else `obj` encoded again.
    fn served(&self, stored: Option<&Bytes>, obj: &Value, rev: i64) -> Bytes {
        match stored {
            Some(b) if !self.info.strategy.has_conversion() => {
                object::with_resource_version(b, rev)
            }
            _ => {
                let mut v = obj.clone();
                object::meta_mut(&mut v)
                    .insert("resourceVersion".into(), Value::String(rev.to_string()));
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
            }
        }
    }

    /// GET one object.
    pub async fn get(&self, ns: &str, name: &str, resource_version: Option<&str>) -> Result<Bytes> {
        match resource_version.filter(|s| !s.is_empty()) {
            None => {
                if self.fresh_or_revision().await?.is_some() {
                    // The cache cannot show this revision (writes outside our key prefix
                    // moved the store on): read from the store itself.
                    return match self.backend.get(&self.key(ns, name)).await? {
                        Some(kv) => {
                            Ok(self
                                .cache
                                .decode(&kv, None)
                                .map(|o| o.bytes)
                                .ok_or_else(|| {
                                    Error::Internal(format!("stored object {} is not JSON", kv.key))
                                })?)
                        }
                        None => Err(self.not_found(name)),
                    };
                }
            }
            Some("0") => {}
            Some(rv) => {
                let n = object::parse_resource_version(rv).map_err(Error::BadRequest)?;
                self.wait_for(n).await?;
            }
        }
        self.cache
            .get(&self.key(ns, name))
            .map(|o| o.bytes.clone())
            .ok_or_else(|| self.not_found(name))
    }

    /// Current object, read from the backend (for writes).
    async fn current(&self, ns: &str, name: &str) -> Result<Option<(KeyValue, Value)>> {
        match self.backend.get(&self.key(ns, name)).await? {
            Some(kv) => {
                let v = self.to_served(&kv)?;
                Ok(Some((kv, v)))
            }
            None => Ok(None),
        }
    }

    /// LIST, answered as the full `<Kind>List` JSON.
    pub async fn list(&self, ns: Option<&str>, p: &ListParams) -> Result<Bytes> {
        let rv = p.resource_version.as_deref().filter(|s| !s.is_empty());
        let rvm = p
            .resource_version_match
            .as_deref()
            .filter(|s| !s.is_empty());
        if rvm.is_some() && rv.is_none() {
            return Err(Error::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
        if let Some(m) = rvm {
            if m != "NotOlderThan" && m != "Exact" {
                return Err(Error::BadRequest(format!(
                    "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        }
        let mut filter = p.filter.clone();
        if self.info.namespaced {
            filter.namespace = ns.filter(|s| !s.is_empty()).map(str::to_string);
        }
        if let Some(tok) = p.continue_token.as_deref().filter(|s| !s.is_empty()) {
            if rv.is_some_and(|r| r != "0") {
                return Err(Error::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (rev, start) = crate::request_info::decode_continue(tok)
                .map_err(|e| Error::BadRequest(format!("invalid continue token: {e}")))?;
            if !start.starts_with(self.cache.prefix()) {
                return Err(Error::BadRequest(
                    "invalid continue token: key is outside this resource".into(),
                ));
            }
            return self.list_from_backend(&filter, rev, &start, p.limit).await;
        }
        match (rv, rvm) {
            (Some("0"), Some("Exact")) => Err(Error::BadRequest(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
            )),
            (Some(r), Some("Exact")) => {
                let rev = object::parse_resource_version(r).map_err(Error::BadRequest)?;
                self.list_from_backend(&filter, rev, "", p.limit).await
            }
            (Some("0"), _) => Ok(self.list_from_cache(&filter, 0)),
            (Some(r), _) => {
                let rev = object::parse_resource_version(r).map_err(Error::BadRequest)?;
                self.wait_for(rev).await?;
                Ok(self.list_from_cache(&filter, p.limit))
            }
            (None, _) => match self.fresh_or_revision().await? {
                None => Ok(self.list_from_cache(&filter, p.limit)),
                Some(rev) => self.list_from_backend(&filter, rev, "", p.limit).await,
            },
        }
    }

    fn list_from_cache(&self, filter: &Filter, limit: usize) -> Bytes {
        let (items, rev, more) = self.cache.list(filter, "", limit);
        let cont = if more {
            items
                .last()
                .map(|o| crate::request_info::encode_continue(rev, &o.key))
        } else {
            None
        };
        self.encode_list(items.iter().map(|o| &o.bytes), rev, cont)
    }

    async fn list_from_backend(
        &self,
        filter: &Filter,
        rev: i64,
        start_after: &str,
        limit: usize,
    ) -> Result<Bytes> {
        let scope = match &filter.namespace {
            Some(ns) if self.info.namespaced => format!("{}{}/", self.cache.prefix(), ns),
            _ => self.cache.prefix().to_string(),
        };
        let mut start = start_after.to_string();
        let mut out: Vec<CachedObject> = Vec::new();
        let mut read_rev = rev;
        let mut cont = None;
        loop {
            let page = self
                .backend
                .list(&ListOptions {
                    prefix: scope.clone(),
                    start_after: start.clone(),
                    limit: if limit == 0 { 0 } else { (limit - out.len()).max(64) },
                    revision: read_rev,
                })
                .await
                .map_err(|e| match e {
                    storage::Error::Compacted { .. } if !start_after.is_empty() => Error::Expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    ),
                    storage::Error::Compacted { .. } => Error::Expired(format!(
                        "The resourceVersion for the provided list is too old. (requested {rev})"
                    )),
                    other => other.into(),
                })?;
            read_rev = page.revision;
            let n = page.kvs.len();
            for (i, kv) in page.kvs.iter().enumerate() {
                if let Some(o) = self.cache.decode(kv, None) {
                    if filter.matches(&o) {
                        out.push(o);
                    }
                }
                if limit > 0 && out.len() == limit {
                    if i + 1 < n || page.more {
                        cont = Some(crate::request_info::encode_continue(read_rev, &kv.key));
                    }
                    return Ok(self.encode_list(out.iter().map(|o| &o.bytes), read_rev, cont));
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => start = last.key.clone(),
                _ => break,
            }
        }
        Ok(self.encode_list(out.iter().map(|o| &o.bytes), read_rev, cont))
    }

    fn encode_list<'a>(
        &self,
        items: impl Iterator<Item = &'a Bytes>,
        rev: i64,
        cont: Option<String>,
    ) -> Bytes {
        let mut b = BytesMut::with_capacity(256);
        b.put_slice(b"{\"kind\":\"");
        b.put_slice(self.info.kind.as_bytes());
        b.put_slice(b"List\",\"apiVersion\":\"");
        b.put_slice(self.info.api_version().as_bytes());
        b.put_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
        b.put_slice(rev.to_string().as_bytes());
        b.put_slice(b"\"");
        if let Some(c) = cont {
            b.put_slice(b",\"continue\":");
            b.put_slice(Value::String(c).to_string().as_bytes());
        }
        b.put_slice(b"},\"items\":[");
        for (i, item) in items.enumerate() {
            if i > 0 {
                b.put_u8(b',');
            }
            b.put_slice(item);
        }
        b.put_slice(b"]}");
        b.freeze()
    }

    /// Checks that the object's namespace exists and accepts new content.
    async fn check_namespace(&self, ns: &str) -> Result<()> {
        if !self.info.namespaced {
            return Ok(());
        }
        let Some(nscache) = self.caches.get("", "v1", "namespaces") else {
            return Ok(());
        };
        let key = nscache.key("", ns);
        let obj: Option<Value> = match nscache.get(&key) {
            Some(o) => serde_json::from_slice(&o.bytes).ok(),
            None => match self.backend.get(&key).await? {
                Some(kv) => serde_json::from_slice(&kv.value).ok(),
                None => None,
            },
        };
        let Some(obj) = obj else {
            return Err(Error::NotFound {
                resource: "namespaces".into(),
                name: ns.to_string(),
            });
        };
        let terminating = !object::meta_str(&obj, "deletionTimestamp").is_empty()
            || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
        if terminating && !self.info.strategy.allowed_in_terminating_namespace() {
            return Err(Error::Forbidden {
                resource: self.info.qualified_resource(),
                name: String::new(),
                message: format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            });
        }
        Ok(())
    }

    /// Checks apiVersion/kind in a body and fills them in.
    fn check_type(&self, obj: &mut Value) -> Result<()> {
        let Some(o) = obj.as_object_mut() else {
            return Err(Error::BadRequest("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".into()));
        };
        let want_av = self.info.api_version();
        match o.get("apiVersion").and_then(Value::as_str) {
            Some(av) if av != want_av => {
                return Err(Error::BadRequest(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
            _ => {}
        }
        match o.get("kind").and_then(Value::as_str) {
            Some(k) if k != self.info.kind => {
                return Err(Error::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.info.kind
                )));
            }
            _ => {}
        }
        o.insert("apiVersion".into(), Value::String(want_av));
        o.insert("kind".into(), Value::String(self.info.kind.to_string()));
        Ok(())
    }

    /// Checks and fills the namespace of a body against the URL's.
    fn check_namespace_field(&self, obj: &mut Value, ns: &str) -> Result<()> {
        let m = object::meta_mut(obj);
        if self.info.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(Error::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
                _ => {}
            }
            m.insert("namespace".into(), Value::String(ns.to_string()));
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// CREATE.
    pub async fn create(&self, ns: &str, mut obj: Value, opts: &WriteOptions) -> Result<Bytes> {
        self.check_type(&mut obj)?;
        self.check_namespace_field(&mut obj, ns)?;
        {
            let m = object::meta_mut(&mut obj);
            let name = m.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                if let Some(g) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                {
                    let n = format!("{g}{}", random_suffix());
                    m.insert("name".into(), Value::String(n));
                }
            }
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            m.insert(
                "uid".into(),
                Value::String(uuid::Uuid::new_v4().to_string()),
            );
            m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            if self.info.strategy.tracks_generation() {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        // Namespace lifecycle is admission: it answers before validation, like upstream.
        self.check_namespace(ns).await?;
        let strategy = &self.info.strategy;
        strategy.default(&mut obj);
        strategy.prepare_for_create(&mut obj);
        let name = object::meta_str(&obj, "name").to_string();
        let errs = strategy.validate(&obj);
        if !errs.is_empty() {
            return Err(self.invalid(&name, errs));
        }
        self.track_fields(opts, None, None, &mut obj);
        if opts.dry_run {
            if self.cache.get(&self.key(ns, &name)).is_some() {
                return Err(Error::AlreadyExists {
                    resource: self.info.qualified_resource(),
                    name,
                });
            }
            return Ok(Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()));
        }
        let key = self.key(ns, &name);
        if self.services.is_some() && self.cache.get(&key).is_some() {
            return Err(Error::AlreadyExists {
                resource: self.info.qualified_resource(),
                name,
            });
        }
        let allocated = self.allocate(&name, &mut obj, &Held::default()).await?;
        let stored = self.encode_for_storage(&obj);
        let kv = match self.backend.create(&key, stored.clone()).await {
            Ok(kv) => {
                self.cache.note_local_write(kv.mod_revision);
                kv
            }
            Err(e) => {
                if let Some(got) = &allocated {
                    self.release(got).await;
                }
                return Err(match e {
                    storage::Error::AlreadyExists(_) => Error::AlreadyExists {
                        resource: self.info.qualified_resource(),
                        name,
                    },
                    e => e.into(),
                });
            }
        };
        Ok(self.served(Some(&stored), &obj, kv.mod_revision))
    }

    /// UPDATE (PUT) of the main resource or of `/status`.
    pub async fn update(
        &self,
        ns: &str,
        name: &str,
        mut body: Value,
        subresource: Option<Subresource>,
        opts: &WriteOptions,
    ) -> Result<Bytes> {
        self.check_type(&mut body)?;
        self.check_namespace_field(&mut body, ns)?;
        let body_name = object::meta_str(&body, "name").to_string();
        if body_name.is_empty() {
            object::meta_mut(&mut body).insert("name".into(), Value::String(name.to_string()));
        } else if body_name != name {
            return Err(Error::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = object::meta_str(&body, "resourceVersion").to_string();
        if !precondition.is_empty() {
            object::parse_resource_version(&precondition).map_err(|_| {
                self.invalid(
                    name,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        &precondition,
                        "must be specified for an update",
                    )],
                )
            })?;
        }
        self.guaranteed_update(ns, name, subresource, opts, |_old| Ok(body.clone()))
            .await
    }

    /// Read-modify-write with compare-and-swap, retried on conflict unless the new object
    /// names the resourceVersion it was based on. `f` gets the current object (served form)
    /// and returns the desired one; a `resourceVersion` in it is a precondition.
    pub async fn guaranteed_update<F>(
        &self,
        ns: &str,
        name: &str,
        subresource: Option<Subresource>,
        opts: &WriteOptions,
        f: F,
    ) -> Result<Bytes>
    where
        F: Fn(&Value) -> Result<Value>,
    {
        let key = self.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((kv, old)) = self.current(ns, name).await? else {
                return Err(self.not_found(name));
            };
            let mut new = f(&old)?;
            self.check_type(&mut new)?;
            self.check_namespace_field(&mut new, ns)?;
            let precondition = object::meta_str(&new, "resourceVersion").to_string();
            if !precondition.is_empty() && precondition != kv.mod_revision.to_string() {
                return Err(self.conflict(name, CONFLICT_MESSAGE));
            }
            let mut new = self.prepare_update(new, &old, subresource)?;
            self.track_fields(opts, subresource, Some(&old), &mut new);
            // A no-op update writes nothing and keeps the resourceVersion. managedFields
            // count: a client may write them alone, and a real change always changes them.
            if without_rv(&new) == without_rv(&old) {
                return Ok(Bytes::from(serde_json::to_vec(&old).unwrap_or_default()));
            }
            if opts.dry_run {
                return Ok(Bytes::from(serde_json::to_vec(&new).unwrap_or_default()));
            }
            let allocated = if subresource.is_none() && !is_deletable(&new) {
                self.allocate(name, &mut new, &Held::of(&old)).await?
            } else {
                None
            };
            let new = new;
            let result = self.write_update(&key, kv, &new, &precondition, name).await;
            match &result {
                Ok(Some(_)) => {
                    let kept = (!is_deletable(&new)).then_some(&new);
                    self.release_given_up(&old, kept).await;
                }
                _ => {
                    if let Some(got) = &allocated {
                        self.release(got).await;
                    }
                }
            }
            match result? {
                Some(b) => return Ok(b),
                None => continue,
            }
        }
        Err(self.conflict(name, "too many concurrent updates; please try again"))
    }

    /// One compare-and-swap write of an update; `Ok(None)` = lost a race, try again.
    async fn write_update(
        &self,
        key: &str,
        kv: KeyValue,
        new: &Value,
        precondition: &str,
        name: &str,
    ) -> Result<Option<Bytes>> {
        let conflict = |e: storage::Error| match e {
            storage::Error::Conflict { .. } if precondition.is_empty() => Ok(None),
            storage::Error::Conflict { .. } => Err(self.conflict(name, CONFLICT_MESSAGE)),
            storage::Error::NotFound(_) => Err(self.not_found(name)),
            e => Err(e.into()),
        };
        // Last finalizer removed from an object marked for deletion: delete it.
        let (rev, stored) = if is_deletable(new) {
            match self.backend.delete(key, kv.mod_revision).await {
                Ok((_, rev)) => {
                    self.cache.note_local_write(rev);
                    (rev, None)
                }
                Err(e) => return conflict(e),
            }
        } else {
            let stored = self.encode_for_storage(new);
            match self
                .backend
                .update(key, stored.clone(), kv.mod_revision)
                .await
            {
                Ok(kv) => {
                    self.cache.note_local_write(kv.mod_revision);
                    (kv.mod_revision, Some(stored))
                }
                Err(e) => return conflict(e),
            }
        };
        Ok(Some(self.served(stored.as_ref(), new, rev)))
    }

    /// Applies the update rules: system metadata kept, status/spec split, defaulting,
    /// validation, generation.
    fn prepare_update(
        &self,
        mut new: Value,
        old: &Value,
        subresource: Option<Subresource>,
    ) -> Result<Value> {
        let name = object::meta_str(old, "name").to_string();
        let strategy = &self.info.strategy;
        let has_status = self.info.has_subresource(Subresource::Status);
        if subresource == Some(Subresource::Binding) {
            // binding: the caller changed exactly spec.nodeName, annotations and PodScheduled.
        } else if subresource == Some(Subresource::Approval) {
            // /approval: only status.conditions change.
            let errs = crate::certificates::approval_errors(&new, old);
            if !errs.is_empty() {
                return Err(self.invalid(&name, errs));
            }
            let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
            if let Some(st) = status.as_object_mut() {
                match crate::certificates::stamped_conditions(&new, old) {
                    Some(c) => st.insert("conditions".into(), c),
                    None => st.remove("conditions"),
                };
            }
            new = with_status(old, Some(status), &new);
        } else if subresource == Some(Subresource::Status) {
            // /status: everything but status (and the metadata a status writer may touch) stays.
            new = with_status(old, new.get("status").cloned(), &new);
        } else if has_status {
            if let Some(o) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
        }
        // System-owned metadata always comes from the stored object.
        {
            let old_meta = object::meta(old).cloned().unwrap_or_default();
            let m = object::meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            // Finalizers cannot be added to an object that is being deleted.
            if old_meta.contains_key("deletionTimestamp") {
                let old_f: Vec<Value> = old_meta
                    .get("finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(nf) = m.get("finalizers").and_then(Value::as_array) {
                    if nf.iter().any(|f| !old_f.contains(f)) {
                        return Err(self.invalid(
                            &name,
                            vec![FieldError::forbidden(
                                "metadata.finalizers",
                                "no new finalizers can be added if the object is being deleted",
                            )],
                        ));
                    }
                }
            }
        }
        strategy.default(&mut new);
        if !matches!(
            subresource,
            Some(Subresource::Status | Subresource::Binding | Subresource::Approval)
        ) {
            strategy.prepare_for_update(&mut new, old);
        }
        // A binding sets the otherwise immutable spec.nodeName; an approval was checked above.
        let errs = if matches!(
            subresource,
            Some(Subresource::Binding | Subresource::Approval)
        ) {
            Vec::new()
        } else {
            strategy.validate_update(&new, old)
        };
        if !errs.is_empty() {
            return Err(self.invalid(&name, errs));
        }
        if strategy.tracks_generation() && spec_changed(&new, old) {
            let g = object::meta(old)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            object::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        Ok(new)
    }

    /// DELETE one object.
    pub async fn delete(
        &self,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome> {
        self.delete_admitted(ns, name, opts, &|_| Box::pin(async { Ok(()) }))
            .await
    }

    /// DELETE one object once `admit` (validating admission) allows deleting its current
    /// state; like upstream's `deleteValidation`, it sees every attempt's object.
    pub async fn delete_admitted(
        &self,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        admit: &DeleteAdmission<'_>,
    ) -> Result<DeleteOutcome> {
        let key = self.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some((kv, old)) = self.current(ns, name).await? else {
                return Err(self.not_found(name));
            };
            if let Some(uid) = &opts.precondition_uid {
                let have = object::meta_str(&old, "uid");
                if uid != have {
                    return Err(self.conflict(
                        name,
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                let have = kv.mod_revision.to_string();
                if *rv != have {
                    return Err(self.conflict(
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                        ),
                    ));
                }
            }
            admit(old.clone()).await?;
            let mut new = old.clone();
            let mut finalizers: Vec<Value> = object::meta(&old)
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let policy = opts
                .propagation_policy
                .clone()
                .or_else(|| match opts.orphan_dependents {
                    Some(true) => Some("Orphan".to_string()),
                    Some(false) => Some("Background".to_string()),
                    None => None,
                });
            match policy.as_deref() {
                None | Some("Background") => {}
                Some("Foreground") => {
                    if !finalizers.contains(&json!("foregroundDeletion")) {
                        finalizers.push(json!("foregroundDeletion"));
                    }
                }
                Some("Orphan") => {
                    if !finalizers.contains(&json!("orphan")) {
                        finalizers.push(json!("orphan"));
                    }
                }
                Some(other) => {
                    return Err(Error::BadRequest(format!(
                        "DeleteOptions.propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                    )));
                }
            }
            let already = !object::meta_str(&old, "deletionTimestamp").is_empty();
            let grace = match opts.grace_period_seconds {
                Some(g) => g.max(0),
                None => {
                    if already {
                        object::meta(&old)
                            .and_then(|m| m.get("deletionGracePeriodSeconds"))
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    } else {
                        self.info.strategy.default_grace_period(&old).unwrap_or(0)
                    }
                }
            };
            // A namespace always goes through the namespace finalizer, which empties it first.
            let namespace_pending = self.is_namespace();
            if finalizers.is_empty() && grace == 0 && !namespace_pending {
                if opts.dry_run {
                    return Ok(DeleteOutcome::Deleted(old));
                }
                match self.backend.delete(&key, kv.mod_revision).await {
                    Ok((_, rev)) => {
                        self.cache.note_local_write(rev);
                        self.release_given_up(&old, None).await;
                        object::meta_mut(&mut new)
                            .insert("resourceVersion".into(), Value::String(rev.to_string()));
                        return Ok(DeleteOutcome::Deleted(new));
                    }
                    Err(storage::Error::Conflict { .. }) => continue,
                    Err(storage::Error::NotFound(_)) => return Err(self.not_found(name)),
                    Err(e) => return Err(e.into()),
                }
            }
            {
                let m = object::meta_mut(&mut new);
                if !already {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    m.insert(
                        "deletionTimestamp".into(),
                        Value::String(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                } else if let Some(g) = opts.grace_period_seconds {
                    // A shorter grace period moves the deadline closer.
                    let cur = m
                        .get("deletionGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    if g < cur {
                        let at = chrono::Utc::now() + chrono::Duration::seconds(g.max(0));
                        m.insert(
                            "deletionTimestamp".into(),
                            Value::String(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                        );
                    }
                }
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                if finalizers.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), Value::Array(finalizers));
                }
                m.remove("resourceVersion");
            }
            if self.is_namespace() {
                if let Some(o) = new.as_object_mut() {
                    let st = o.entry("status").or_insert_with(|| json!({}));
                    if let Some(st) = st.as_object_mut() {
                        st.insert("phase".into(), json!("Terminating"));
                    }
                }
            }
            if strip_rv(&new) == strip_rv(&old) {
                return Ok(DeleteOutcome::Pending(old));
            }
            if opts.dry_run {
                return Ok(DeleteOutcome::Pending(new));
            }
            match self
                .backend
                .update(&key, self.encode_for_storage(&new), kv.mod_revision)
                .await
            {
                Ok(kv) => {
                    self.cache.note_local_write(kv.mod_revision);
                    object::meta_mut(&mut new).insert(
                        "resourceVersion".into(),
                        Value::String(kv.mod_revision.to_string()),
                    );
                    return Ok(DeleteOutcome::Pending(new));
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(storage::Error::NotFound(_)) => return Err(self.not_found(name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.conflict(name, "too many concurrent updates; please try again"))
    }

    /// Removes an object unconditionally (namespace finalization).
    pub async fn remove(&self, name: &str) -> Result<()> {
        match self.backend.delete(&self.key("", name), 0).await {
            Ok((_, rev)) => {
                self.cache.note_local_write(rev);
                Ok(())
            }
            Err(storage::Error::NotFound(_)) => Err(self.not_found(name)),
            Err(e) => Err(e.into()),
        }
    }

    fn is_namespace(&self) -> bool {
        self.info.group.is_empty() && self.info.plural == "namespaces"
    }

    /// DELETE a collection: every object matching the list parameters, each admitted by
    /// `admit`; the first refusal ends it.
    pub async fn delete_collection_admitted(
        &self,
        ns: Option<&str>,
        p: &ListParams,
        opts: &DeleteOptions,
        admit: &DeleteAdmission<'_>,
    ) -> Result<Bytes> {
        self.wait_fresh().await?;
        let mut filter = p.filter.clone();
        if self.info.namespaced {
            filter.namespace = ns.filter(|s| !s.is_empty()).map(str::to_string);
        }
        let (items, _, _) = self.cache.list(&filter, "", 0);
        let mut deleted: Vec<Bytes> = Vec::new();
        for o in items {
            match self
                .delete_admitted(&o.namespace, &o.name, opts, admit)
                .await
            {
                Ok(DeleteOutcome::Deleted(v)) | Ok(DeleteOutcome::Pending(v)) => {
                    deleted.push(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()));
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let rev = self.backend.current_revision().await?;
        Ok(self.encode_list(deleted.iter(), rev, None))
    }

    /// How managedFields see this resource's objects.
    pub fn field_write<'a>(
        &'a self,
        manager: &'a str,
        api_version: &'a str,
        subresource: &'a str,
    ) -> crate::fieldmanager::Write<'a> {
        let node = match self.info.strategy.apply_schema() {
            Some(s) => crate::fieldmanager::Node::custom(s),
            None => crate::fieldmanager::Node::builtin_kind(
                self.info.group,
                self.info.version,
                self.info.kind,
            ),
        };
        crate::fieldmanager::Write {
            node,
            manager,
            api_version,
            subresource,
            has_status: self.info.has_subresource(Subresource::Status),
        }
    }

    /// Records a client's write in `metadata.managedFields` (upstream's field manager on
    /// create, update and non-apply patch).
    fn track_fields(
        &self,
        opts: &WriteOptions,
        subresource: Option<Subresource>,
        old: Option<&Value>,
        new: &mut Value,
    ) {
        let Some(manager) = &opts.field_manager else {
            return;
        };
        let sub = opts.field_subresource.unwrap_or(match subresource {
            None => "",
            Some(Subresource::Status) => "status",
            Some(Subresource::Scale) => "scale",
            Some(Subresource::Binding) => "binding",
            Some(Subresource::Approval) => "approval",
            Some(_) => "",
        });
        let av = self.info.api_version();
        let w = self.field_write(manager, &av, sub);
        crate::fieldmanager::track_update(&w, old, new);
    }

    /// The current object as JSON (served form), read consistently.
    pub async fn get_value(&self, ns: &str, name: &str) -> Result<Value> {
        match self.current(ns, name).await? {
            Some((_, v)) => Ok(v),
            None => Err(self.not_found(name)),
        }
    }
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

fn is_deletable(v: &Value) -> bool {
    let Some(m) = object::meta(v) else {
        return false;
    };
    let marked = m
        .get("deletionTimestamp")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let no_finalizers = m
        .get("finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty());
    let grace = m
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    marked && no_finalizers && grace == 0
}

/// Whether anything outside metadata and status differs.
fn spec_changed(new: &Value, old: &Value) -> bool {
    fn rest(v: &Value) -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    }
    rest(new) != rest(old)
}
