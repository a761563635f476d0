//! The set of stores, one per served resource, plus the work the API server does across
//! resources: bootstrap namespaces and emptying a namespace that is being deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::object;
use crate::registry::allocator::ServiceAllocator;
use crate::registry::store::{DeleteOptions, ListParams, Store, WriteOptions};
use crate::registry::ResourceInfo;
use crate::storage::Backend;
use crate::watch_cache::Caches;

/// Namespaces that exist from the first start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

type StoreKey = (String, String, String);

/// Every store, addressable by group/version/resource.
pub struct Registry {
    pub resources: Vec<ResourceInfo>,
    stores: HashMap<StoreKey, Arc<Store>>,
    /// Stores of custom resources, installed and removed as CustomResourceDefinitions change.
    custom: parking_lot::RwLock<HashMap<StoreKey, Arc<Store>>>,
    pub caches: Arc<Caches>,
    pub backend: Arc<dyn Backend>,
}

impl Registry {
    /// Builds a store for each resource over one backend and one set of caches.
    pub fn new(
        resources: Vec<ResourceInfo>,
        backend: Arc<dyn Backend>,
        caches: Arc<Caches>,
        services: Option<Arc<ServiceAllocator>>,
    ) -> Result<Self> {
        let mut stores = HashMap::new();
        for r in &resources {
            let cache = caches
                .get(r.group, r.version, r.plural)
                .cloned()
                .ok_or_else(|| {
                    Error::Internal(format!("no watch cache for {}", r.qualified_resource()))
                })?;
            let k = (
                r.group.to_string(),
                r.version.to_string(),
                r.plural.to_string(),
            );
            if stores.contains_key(&k) {
                return Err(Error::Internal(format!(
                    "resource {} registered twice",
                    r.qualified_resource()
                )));
            }
            let mut store = Store::new(r.clone(), cache, backend.clone(), caches.clone());
            if let Some(a) = services
                .as_ref()
                .filter(|_| r.group.is_empty() && r.plural == "services")
            {
                store = store.with_service_allocator(a.clone());
            }
            stores.insert(k, Arc::new(store));
        }
        Ok(Registry {
            resources,
            stores,
            custom: parking_lot::RwLock::new(HashMap::new()),
            caches,
            backend,
        })
    }

    /// The store of a built-in resource.
    pub fn store(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Store>> {
        self.stores
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The store of any served resource, built-in or custom.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Store>> {
        let k = (group.to_string(), version.to_string(), plural.to_string());
        self.stores
            .get(&k)
            .cloned()
            .or_else(|| self.custom.read().get(&k).cloned())
    }

    /// Every served resource: the built-in table, then custom resources by group.
    pub fn all_resources(&self) -> Vec<ResourceInfo> {
        let mut custom: Vec<ResourceInfo> = self
            .custom
            .read()
            .values()
            .map(|s| s.info.clone())
            .collect();
        custom.sort_by_key(|r| (r.group, r.plural, r.version));
        self.resources.iter().cloned().chain(custom).collect()
    }

    /// Creates a store for a custom resource version over `cache` (already fed).
    pub fn custom_store(
        &self,
        info: ResourceInfo,
        cache: Arc<crate::watch_cache::WatchCache>,
    ) -> Arc<Store> {
        Arc::new(Store::new(
            info,
            cache,
            self.backend.clone(),
            self.caches.clone(),
        ))
    }

    /// Serves `stores` for `(group, plural)` from now on, replacing what served it before.
    pub fn install_custom(&self, group: &str, plural: &str, stores: Vec<Arc<Store>>) {
        let mut custom = self.custom.write();
        custom.retain(|k, _| !(k.0 == group && k.2 == plural));
        for s in stores {
            let k = (
                s.info.group.to_string(),
                s.info.version.to_string(),
                s.info.plural.to_string(),
            );
            custom.insert(k, s);
        }
    }

    /// Stops serving the custom resource `(group, plural)`.
    pub fn remove_custom(&self, group: &str, plural: &str) {
        self.custom
            .write()
            .retain(|k, _| !(k.0 == group && k.2 == plural));
    }

    /// The stores of custom resources currently served.
    pub fn custom_stores(&self) -> Vec<Arc<Store>> {
        self.custom.read().values().cloned().collect()
    }

    /// Creates the system namespaces that do not exist yet.
    pub async fn bootstrap(&self) -> Result<()> {
        let Some(ns) = self.store("", "v1", "namespaces") else {
            return Ok(());
        };
        for name in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match ns
                .create(
                    "",
                    obj,
                    &WriteOptions::internal(crate::registry::store::APISERVER),
                )
                .await
            {
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the `kubernetes` Service in `default` at the first address of the service
    /// range, and merges this API server's address into its Endpoints and EndpointSlice.
    pub async fn bootstrap_kubernetes_service(
        &self,
        cluster_ip: std::net::Ipv4Addr,
        address: std::net::IpAddr,
        port: u16,
    ) -> Result<()> {
        let (Some(svc), Some(eps), Some(slices)) = (
            self.store("", "v1", "services"),
            self.store("", "v1", "endpoints"),
            self.store("discovery.k8s.io", "v1", "endpointslices"),
        ) else {
            return Ok(());
        };
        let labels = json!({"component": "apiserver", "provider": "kubernetes"});
        if let Err(Error::NotFound { .. }) = svc.get_value("default", "kubernetes").await {
            let obj = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": cluster_ip.to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                    "sessionAffinity": "None",
                },
            });
            match svc
                .create(
                    "default",
                    obj,
                    &WriteOptions::internal(crate::registry::store::APISERVER),
                )
                .await
            {
                // Another API server sharing the store got there first.
                Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                Err(Error::Invalid { errors, .. }) => {
                    tracing::warn!(?errors, "cannot create the kubernetes Service")
                }
                Err(e) => return Err(e),
            }
        }
        let ip = address.to_string();
        let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
        let ep_port = json!({"name": "https", "port": port, "protocol": "TCP"});
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [ep_port]}],
        });
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [ep_port],
        });
        let merge_ep = |old: &Value| -> Result<Value> {
            let mut v = old.clone();
            let has = |v: &Value| {
                v.pointer("/subsets/0/addresses")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.get("ip") == Some(&json!(ip))))
            };
            let same_port = v.pointer("/subsets/0/ports/0/port") == Some(&json!(port));
            if !same_port {
                return Ok(endpoints.clone());
            }
            if !has(&v) {
                if let Some(a) = v
                    .pointer_mut("/subsets/0/addresses")
                    .and_then(Value::as_array_mut)
                {
                    a.push(json!({"ip": ip}));
                }
            }
            Ok(v)
        };
        let merge_slice = |old: &Value| -> Result<Value> {
            let mut v = old.clone();
            let same_port = v.pointer("/ports/0/port") == Some(&json!(port));
            if !same_port {
                return Ok(slice.clone());
            }
            let has = v
                .get("endpoints")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|e| e.pointer("/addresses/0") == Some(&json!(ip)))
                });
            if !has {
                if let Some(a) = v.get_mut("endpoints").and_then(Value::as_array_mut) {
                    a.push(json!({"addresses": [ip], "conditions": {"ready": true}}));
                }
            }
            Ok(v)
        };
        for (store, obj, merge) in [
            (
                eps,
                &endpoints,
                &merge_ep as &dyn Fn(&Value) -> Result<Value>,
            ),
            (slices, &slice, &merge_slice),
        ] {
            match store
                .create(
                    "default",
                    obj.clone(),
                    &WriteOptions::internal(crate::registry::store::APISERVER),
                )
                .await
            {
                Ok(_) => {}
                Err(Error::AlreadyExists { .. }) => {
                    store
                        .guaranteed_update(
                            "default",
                            "kubernetes",
                            None,
                            &WriteOptions::internal(crate::registry::store::APISERVER),
                            merge,
                        )
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Follows namespaces being deleted: deletes everything in them, then finalizes them.
    pub fn spawn_namespace_finalizer(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = this.finalize_namespaces().await {
                    tracing::warn!(error = %e, "namespace finalizer");
                }
            }
        })
    }

    async fn finalize_namespaces(&self) -> Result<()> {
        let Some(ns_store) = self.store("", "v1", "namespaces") else {
            return Ok(());
        };
        let (all, _, _) = ns_store.cache.list(&Default::default(), "", 0);
        for o in all {
            let v: Value = serde_json::from_slice(&o.bytes).unwrap_or(Value::Null);
            if object::meta_str(&v, "deletionTimestamp").is_empty() {
                continue;
            }
            let name = o.name.clone();
            let mut remaining = 0usize;
            let custom = self.custom_stores();
            for store in self.stores.values().chain(custom.iter()) {
                if !store.info.namespaced {
                    continue;
                }
                // Several versions may serve one storage; delete through one of them.
                if store.info.strategy.has_conversion() {
                    continue;
                }
                let params = ListParams {
                    filter: crate::watch_cache::Filter {
                        namespace: Some(name.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let (items, _, _) = store.cache.list(&params.filter, "", 0);
                if items.is_empty() {
                    continue;
                }
                remaining += items.len();
                let opts = DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                for item in items {
                    match store.delete(&item.namespace, &item.name, &opts).await {
                        Ok(_) | Err(Error::NotFound { .. }) => {}
                        Err(e) => {
                            tracing::warn!(namespace = %name, name = %item.name, error = %e, "deleting namespace content")
                        }
                    }
                }
            }
            if remaining > 0 {
                continue;
            }
            // Empty: the "kubernetes" finalizer is done; the object goes once no
            // metadata finalizers remain.
            let v = match ns_store.get_value("", &name).await {
                Ok(v) => v,
                Err(_) => continue,
            };
            let meta_finalizers = object::meta(&v)
                .and_then(|m| m.get("finalizers"))
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            if !meta_finalizers {
                match ns_store.remove(&name).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(namespace = %name, error = %e, "removing namespace"),
                }
            }
        }
        Ok(())
    }
}
