//! Owner references: the controllerRef an owner stamps on what it creates, and claiming
//! (adopting orphans that match the selector, releasing owned objects that no longer match)
//! as upstream's `ControllerRefManager` does.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::{Error, Result};

/// The controllerRef `owner` puts on objects it creates (controller and blockOwnerDeletion true).
pub fn controller_ref<O: Resource<DynamicType = ()>>(owner: &O) -> OwnerReference {
    OwnerReference {
        api_version: O::api_version(&()).into_owned(),
        kind: O::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &kube::api::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// The controllerRef of `obj` if it points at kind `O` (for mapping events to owners).
pub fn owner_key<O: Resource<DynamicType = ()>>(
    meta: &kube::api::ObjectMeta,
) -> Option<kube::runtime::reflector::ObjectRef<O>> {
    let r = controller_of(meta)?;
    let (group, _) = split_api_version(&r.api_version);
    let want_group = O::group(&());
    if r.kind != O::kind(&()) || group != want_group.as_ref() {
        return None;
    }
    let mut key = kube::runtime::reflector::ObjectRef::new(&r.name);
    if let Some(ns) = &meta.namespace {
        key = key.within(ns);
    }
    Some(key)
}

fn split_api_version(av: &str) -> (&str, &str) {
    match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    }
}

/// A parsed label selector. An empty selector matches nothing here, as upstream's
/// controllers treat it (validation forbids it for workloads anyway).
#[derive(Clone, Debug)]
pub struct LabelMatcher(Option<Selector>);

impl LabelMatcher {
    /// Parses `selector`; an invalid selector is an error the caller reports on the owner.
    pub fn new(selector: Option<&LabelSelector>) -> Result<Self> {
        let Some(sel) = selector else {
            return Ok(LabelMatcher(None));
        };
        if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        {
            return Ok(LabelMatcher(None));
        }
        Selector::try_from(sel.clone())
            .map(|s| LabelMatcher(Some(s)))
            .map_err(|e| Error::Selector(e.to_string()))
    }

    /// A selector from plain `key=value` pairs (ReplicationController, Service).
    pub fn from_map(map: Option<&BTreeMap<String, String>>) -> Self {
        match map {
            Some(m) if !m.is_empty() => LabelMatcher(Some(Selector::from_iter(
                m.iter()
                    .map(|(k, v)| kube::core::Expression::Equal(k.clone(), v.clone())),
            ))),
            _ => LabelMatcher(None),
        }
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// Claims `candidates` (objects in the owner's namespace) for `owner`: keeps those it
/// controls that still match, adopts matching orphans, releases controlled ones that stopped
/// matching. Returns what the owner now controls. Like upstream, an owner being deleted
/// adopts nothing.
pub async fn claim<O, K>(
    api: &Api<K>,
    owner: &O,
    matcher: &LabelMatcher,
    candidates: Vec<Arc<K>>,
) -> Result<Vec<Arc<K>>>
where
    O: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let uid = owner.uid().unwrap_or_default();
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for obj in candidates {
        let matches = matcher.matches(obj.labels());
        match controller_of(obj.meta()) {
            Some(r) if r.uid == uid => {
                if matches || owner_deleting {
                    owned.push(obj);
                } else {
                    release(api, &*obj, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && obj.meta().deletion_timestamp.is_none() {
                    if let Some(adopted) = adopt(api, owner, &*obj).await? {
                        owned.push(Arc::new(adopted));
                    }
                }
            }
        }
    }
    Ok(owned)
}

async fn adopt<O, K>(api: &Api<K>, owner: &O, obj: &K) -> Result<Option<K>>
where
    O: Resource<DynamicType = ()>,
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let mut refs = obj.owner_references().to_vec();
    refs.push(controller_ref(owner));
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": obj.uid(),
        "resourceVersion": obj.resource_version(),
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        // Gone, or changed since cached: the next reconcile looks again.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn release<K>(api: &Api<K>, obj: &K, owner_uid: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let refs: Vec<_> = obj
        .owner_references()
        .iter()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
        "uid": obj.uid(),
        "resourceVersion": obj.resource_version(),
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn owner_key_only_for_the_owner_kind() {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web".into());
        rs.metadata.uid = Some("u1".into());
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.owner_references = Some(vec![controller_ref(&rs)]);
        let key = owner_key::<ReplicaSet>(&pod.metadata).expect("owned");
        assert_eq!(key.name, "web");
        assert_eq!(key.namespace.as_deref(), Some("ns"));
        assert!(owner_key::<k8s_openapi::api::batch::v1::Job>(&pod.metadata).is_none());
        assert!(is_controlled_by(&pod.metadata, "u1"));
    }

    #[test]
    fn empty_selector_matches_nothing() {
        let m = LabelMatcher::new(Some(&LabelSelector::default())).expect("valid");
        assert!(!m.matches(&BTreeMap::from([("a".into(), "b".into())])));
        let m = LabelMatcher::from_map(Some(&BTreeMap::from([("a".into(), "b".into())])));
        assert!(m.matches(&BTreeMap::from([("a".into(), "b".into())])));
        assert!(!m.matches(&BTreeMap::new()));
    }
}
