//! What the proxy knows about Services and EndpointSlices: compact summaries of only the
//! fields the rules use (not the typed objects), and which Services changed since the last
//! sync, like upstream's ServiceChangeTracker / EndpointsChangeTracker.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// A Service's `(namespace, name)`.
pub type ServiceKey = (String, String);

/// Upstream's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    /// Lowercase, as in chain-name hashes and `-m tcp -p tcp`.
    pub protocol: String,
    pub port: i32,
    /// Only for NodePort and LoadBalancer Services.
    pub node_port: Option<i32>,
}

/// What the rules need of a Service that gets rules (IPv4 cluster IP, not headless, not
/// ExternalName).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub cluster_ip: String,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity_seconds: Option<i32>,
    pub ports: Vec<ServicePort>,
}

impl ServiceInfo {
    /// The summary of `svc`, or None when it gets no rules.
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        if svc_type == "ExternalName" {
            return None;
        }
        let cluster_ip = spec.cluster_ip.as_deref()?;
        if cluster_ip.is_empty() || cluster_ip == "None" || cluster_ip.contains(':') {
            return None;
        }
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let external = svc_type == "NodePort" || svc_type == "LoadBalancer";
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                port: p.port,
                node_port: p.node_port.filter(|_| external),
            })
            .collect();
        Some(ServiceInfo {
            cluster_ip: cluster_ip.to_string(),
            affinity_seconds,
            ports,
        })
    }
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    /// Lowercase.
    pub protocol: String,
    pub port: i32,
}

/// One endpoint (its first address) and its conditions, defaulted as upstream does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// What the rules need of an IPv4 EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl SliceInfo {
    /// The owning Service and summary of `slice`, or None when it serves no IPv4 Service.
    pub fn from_slice(slice: &EndpointSlice) -> Option<(ServiceKey, SliceInfo)> {
        let labels = slice.metadata.labels.as_ref()?;
        let svc = labels.get("kubernetes.io/service-name")?;
        if slice.address_type != "IPv4" {
            return None;
        }
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                    port: p.port?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|ep| {
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                Some(Endpoint {
                    ip: ep.addresses.first()?.clone(),
                    ready,
                    serving: cond.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                })
            })
            .collect();
        Some(((ns, svc.clone()), SliceInfo { ports, endpoints }))
    }
}

/// `(namespace, name)` of an EndpointSlice.
pub type SliceKey = (String, String);

/// An EndpointSlice's key and, when it serves an IPv4 Service, that Service and its summary.
pub type SliceEntry = (SliceKey, Option<(ServiceKey, SliceInfo)>);

fn slice_key(slice: &EndpointSlice) -> SliceKey {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

fn service_key(svc: &Service) -> ServiceKey {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// Services and EndpointSlices as the rules need them, and the Services whose rules may have
/// changed since [`Model::take_changed`] was last called.
#[derive(Debug, Default)]
pub struct Model {
    services: BTreeMap<ServiceKey, ServiceInfo>,
    /// Slices by owning Service, then by slice name.
    slices: BTreeMap<ServiceKey, BTreeMap<String, SliceInfo>>,
    /// Which Service each slice was filed under (a slice's label can change).
    slice_owner: HashMap<SliceKey, ServiceKey>,
    changed: BTreeSet<ServiceKey>,
}

impl Model {
    /// A model holding `services` and `slices`.
    pub fn from_objects(services: &[Service], slices: &[EndpointSlice]) -> Model {
        let mut m = Model::default();
        services.iter().for_each(|s| m.apply_service(s));
        slices.iter().for_each(|s| m.apply_slice(s));
        m
    }

    /// Services that get rules, in `(namespace, name)` order.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceInfo)> {
        self.services.iter()
    }

    /// How many Services get rules.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The slices of the Service `key`.
    pub fn slices_of(&self, key: &ServiceKey) -> impl Iterator<Item = &SliceInfo> {
        self.slices.get(key).into_iter().flat_map(|m| m.values())
    }

    /// Services changed since the last call; clears the set.
    pub fn take_changed(&mut self) -> BTreeSet<ServiceKey> {
        std::mem::take(&mut self.changed)
    }

    /// Whether any Service changed since [`Model::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    fn set_service(&mut self, key: ServiceKey, info: Option<ServiceInfo>) {
        let old = match &info {
            Some(i) => self.services.insert(key.clone(), i.clone()),
            None => self.services.remove(&key),
        };
        // Unchanged summaries (status or annotation updates) need no sync.
        if old != info {
            self.changed.insert(key);
        }
    }

    /// A Service was added or modified.
    pub fn apply_service(&mut self, svc: &Service) {
        self.set_service(service_key(svc), ServiceInfo::from_service(svc));
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, svc: &Service) {
        self.set_service(service_key(svc), None);
    }

    /// Replaces every Service with `services` (a relist).
    pub fn replace_services(&mut self, services: Vec<(ServiceKey, Option<ServiceInfo>)>) {
        let mut gone: BTreeSet<ServiceKey> = self.services.keys().cloned().collect();
        for (key, info) in services {
            gone.remove(&key);
            self.set_service(key, info);
        }
        for key in gone {
            self.set_service(key, None);
        }
    }

    fn set_slice(&mut self, key: SliceKey, info: Option<(ServiceKey, SliceInfo)>) {
        let old_owner = self.slice_owner.remove(&key);
        let mut old_info = None;
        if let Some(owner) = &old_owner {
            if let Some(m) = self.slices.get_mut(owner) {
                old_info = m.remove(&key.1);
                if m.is_empty() {
                    self.slices.remove(owner);
                }
            }
        }
        let unchanged = match (&old_owner, &info) {
            (Some(o), Some((n, i))) => o == n && old_info.as_ref() == Some(i),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            self.changed.extend(old_owner);
            self.changed.extend(info.as_ref().map(|(n, _)| n.clone()));
        }
        if let Some((owner, info)) = info {
            self.slices
                .entry(owner.clone())
                .or_default()
                .insert(key.1.clone(), info);
            self.slice_owner.insert(key, owner);
        }
    }

    /// An EndpointSlice was added or modified.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        self.set_slice(slice_key(slice), SliceInfo::from_slice(slice));
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        self.set_slice(slice_key(slice), None);
    }

    /// Replaces every EndpointSlice with `slices` (a relist), given as slice key and summary.
    pub fn replace_slices(&mut self, slices: Vec<SliceEntry>) {
        let mut gone: BTreeSet<SliceKey> = self.slice_owner.keys().cloned().collect();
        for (key, info) in slices {
            gone.remove(&key);
            self.set_slice(key, info);
        }
        for key in gone {
            self.set_slice(key, None);
        }
    }
}

/// The key and summary of `slice`, for [`Model::replace_slices`].
pub fn slice_entry(slice: &EndpointSlice) -> SliceEntry {
    (slice_key(slice), SliceInfo::from_slice(slice))
}

/// The key and summary of `svc`, for [`Model::replace_services`].
pub fn service_entry(svc: &Service) -> (ServiceKey, Option<ServiceInfo>) {
    (service_key(svc), ServiceInfo::from_service(svc))
}
