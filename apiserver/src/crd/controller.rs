//! Serves what CustomResourceDefinitions define: follows the CRD watch cache, installs a
//! store (and watch cache) per served version in the registry when a CRD appears or changes,
//! removes them when it goes, and empties a CRD being deleted before letting it go (upstream's
//! `customresourcecleanup` finalizer). Every API server on a shared store runs one, so each
//! serves new CRDs as its own cache sees them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{CLEANUP_FINALIZER, GROUP, PLURAL};
use crate::error::Error;
use crate::object;
use crate::registry::store::{DeleteOptions, Store, WriteOptions};
use crate::registry::stores::Registry;
use crate::watch_cache::Filter;

/// How often the served set is compared with the CRDs even without events (and a CRD being
/// deleted is looked at again).
const RESYNC: Duration = Duration::from_secs(1);

/// What is served for one `(group, plural)`.
struct Installed {
    /// The CRD spec it was built from.
    spec: String,
    /// The key prefix of its caches, when any version is served.
    prefix: Option<String>,
}

/// The CRD controller of one API server.
pub struct Controller {
    registry: Arc<Registry>,
    installed: HashMap<(String, String), Installed>,
}

/// Installs what the stored CRDs serve, then follows them until `shutdown`.
pub async fn start(
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut c = Controller {
        registry,
        installed: HashMap::new(),
    };
    c.sync().await;
    tokio::spawn(async move { c.run(shutdown).await })
}

impl Controller {
    fn crd_store(&self) -> Option<Arc<Store>> {
        self.registry.store(GROUP, "v1", PLURAL).cloned()
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let Some(store) = self.crd_store() else {
            return;
        };
        let mut rx = match store.cache.watch(None, &Filter::default()) {
            Ok(w) => Some(w.rx),
            Err(e) => {
                tracing::warn!(error = %e, "CRD controller: cannot follow CRDs; resyncing only");
                None
            }
        };
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = async { match rx.as_mut() { Some(rx) => rx.recv().await.map(|_| ()), None => std::future::pending().await } } => {
                    if let Err(RecvError::Closed) = r {
                        rx = None;
                    }
                }
                _ = tick.tick() => {}
            }
            self.sync().await;
        }
    }

    /// Brings the served custom resources in line with the stored CRDs.
    pub async fn sync(&mut self) {
        let Some(store) = self.crd_store() else {
            return;
        };
        let (objects, _, _) = store.cache.list(&Filter::default(), "", 0);
        let mut desired: HashMap<(String, String), Value> = HashMap::new();
        for o in objects {
            let Ok(v) = serde_json::from_slice::<Value>(&o.bytes) else {
                continue;
            };
            let key = (
                v.pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                v.pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
            if !object::meta_str(&v, "deletionTimestamp").is_empty() {
                self.finalize(&store, &key, &v).await;
            }
            desired.insert(key, v);
        }
        self.name(&store, &mut desired).await;
        desired.retain(|_, crd| {
            super::naming::servable(crd) || !object::meta_str(crd, "deletionTimestamp").is_empty()
        });
        let gone: Vec<(String, String)> = self
            .installed
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.uninstall(&key);
        }
        for (key, crd) in desired {
            let spec = format!(
                "{}{}",
                crd.get("spec").map(Value::to_string).unwrap_or_default(),
                crd.pointer("/status/acceptedNames")
                    .map(Value::to_string)
                    .unwrap_or_default()
            );
            if self.installed.get(&key).is_some_and(|i| i.spec == spec) {
                continue;
            }
            if let Err(e) = self.install(&key, &crd, spec).await {
                tracing::warn!(crd = %object::meta_str(&crd, "name"), error = %e, "cannot serve custom resource");
            }
        }
    }

    /// Gives each CRD its names and conditions (upstream's naming controller), oldest
    /// first so that the first to claim a name keeps it, and writes the status that changed.
    async fn name(&self, crds: &Store, desired: &mut HashMap<(String, String), Value>) {
        let mut used: HashMap<String, super::naming::Used> = HashMap::new();
        for ((group, _), crd) in desired.iter() {
            if let Some(a) = crd.pointer("/status/acceptedNames") {
                used.entry(group.clone()).or_default().add(a);
            }
        }
        let mut order: Vec<(String, String)> = desired.keys().cloned().collect();
        order.sort_by_key(|k| {
            let c = &desired[k];
            (
                object::meta_str(c, "creationTimestamp").to_string(),
                object::meta_str(c, "name").to_string(),
            )
        });
        for key in order {
            let Some(crd) = desired.get_mut(&key) else {
                continue;
            };
            if !object::meta_str(crd, "deletionTimestamp").is_empty() {
                continue;
            }
            let u = used.entry(key.0.clone()).or_default();
            let (names, conditions) = super::naming::status_for(crd, u);
            u.add(&names);
            if crd.pointer("/status/acceptedNames") == Some(&names)
                && crd.pointer("/status/conditions") == Some(&conditions)
            {
                continue;
            }
            let name = object::meta_str(crd, "name").to_string();
            let r = crds
                .guaranteed_update(
                    "",
                    &name,
                    Some(crate::registry::Subresource::Status),
                    &WriteOptions::internal(crate::registry::store::APISERVER),
                    |old| {
                        let mut new = old.clone();
                        if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
                            st.insert("acceptedNames".into(), names.clone());
                            st.insert("conditions".into(), conditions.clone());
                        }
                        Ok(new)
                    },
                )
                .await;
            match r {
                Ok(b) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                        *crd = v;
                    }
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(crd = %name, error = %e, "writing the CRD's names"),
            }
        }
    }

    async fn install(
        &mut self,
        key: &(String, String),
        crd: &Value,
        spec: String,
    ) -> Result<(), String> {
        let served = super::served(crd)?;
        let caches: Vec<_> = served
            .versions
            .iter()
            .map(|i| self.registry.caches.new_cache(i.clone()))
            .collect();
        let prefix = caches.first().map(|c| c.prefix().to_string());
        let old_prefix = self.installed.get(key).and_then(|i| i.prefix.clone());
        if let Some(p) = old_prefix.filter(|_| prefix.is_none()) {
            self.registry.caches.remove(&p);
        }
        if !caches.is_empty() {
            self.registry.caches.add(caches.clone()).await?;
        }
        let stores = served
            .versions
            .into_iter()
            .zip(caches)
            .map(|(info, cache)| self.registry.custom_store(info, cache))
            .collect();
        self.registry
            .install_custom(served.group, served.plural, stores);
        tracing::info!(group = %served.group, plural = %served.plural, "serving custom resource");
        self.installed
            .insert(key.clone(), Installed { spec, prefix });
        Ok(())
    }

    fn uninstall(&mut self, key: &(String, String)) {
        self.registry.remove_custom(&key.0, &key.1);
        if let Some(p) = self.installed.remove(key).and_then(|i| i.prefix) {
            self.registry.caches.remove(&p);
        }
        tracing::info!(group = %key.0, plural = %key.1, "stopped serving custom resource");
    }

    /// Deletes the objects of a CRD being deleted; once none is left, removes the cleanup
    /// finalizer so the CRD goes.
    async fn finalize(&self, crds: &Store, key: &(String, String), crd: &Value) {
        let has_finalizer = object::meta(crd)
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
        if !has_finalizer {
            return;
        }
        let store = self
            .registry
            .custom_stores()
            .into_iter()
            .filter(|s| s.info.group == key.0 && s.info.plural == key.1)
            .min_by_key(|s| s.info.strategy.has_conversion());
        if let Some(store) = store {
            let (items, _, _) = store.cache.list(&Filter::default(), "", 0);
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            for item in &items {
                match store.delete(&item.namespace, &item.name, &opts).await {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(name = %item.name, error = %e, "deleting custom resource")
                    }
                }
            }
            if store.wait_fresh().await.is_err() || !store.cache.is_empty() {
                return;
            }
        }
        let name = object::meta_str(crd, "name");
        let r = crds
            .guaranteed_update(
                "",
                name,
                None,
                &WriteOptions::internal(crate::registry::store::APISERVER),
                |old| {
                    let mut new = old.clone();
                    if let Some(f) = object::meta_mut(&mut new)
                        .get_mut("finalizers")
                        .and_then(Value::as_array_mut)
                    {
                        f.retain(|x| x != CLEANUP_FINALIZER);
                    }
                    Ok(new)
                },
            )
            .await;
        match r {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(crd = %name, error = %e, "removing the cleanup finalizer"),
        }
    }
}
