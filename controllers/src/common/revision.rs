//! ControllerRevisions: the pod-template history of StatefulSets and DaemonSets, kept as
//! upstream's `history` package keeps it. One revision per distinct template, named
//! `<owner>-<hash>`, numbered in order of use (a template used again takes the next number),
//! the oldest unused ones pruned past `revisionHistoryLimit`.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{json, Value};

use super::{claim, controller_ref, is_already_exists, is_not_found, LabelMatcher, Result};
use crate::deployment::template_hash;

/// Label on a ControllerRevision with its hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Label on a pod naming the revision it was made from.
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";

/// The revisions of one owner after [`sync`].
#[derive(Debug, Clone)]
pub struct History {
    /// The revision of the owner's current template.
    pub update: ControllerRevision,
    /// Every revision the owner controls, oldest first (`update` included).
    pub revisions: Vec<ControllerRevision>,
    /// The collision count to report in the owner's status.
    pub collision_count: i32,
}

/// What a revision stores: a strategic-merge patch replacing the template.
pub fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The pod template a revision holds.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The hash label of a revision (the suffix of its name).
pub fn hash_of(rev: &ControllerRevision) -> String {
    rev.labels()
        .get(HASH_LABEL)
        .cloned()
        .unwrap_or_else(|| rev.name_any().rsplit('-').next().unwrap_or("").to_string())
}

/// Claims the owner's revisions and makes sure one exists for `template` with the highest
/// revision number, creating it (or renumbering an old identical one) when needed.
pub async fn sync<O>(
    api: &Api<ControllerRevision>,
    owner: &O,
    matcher: &LabelMatcher,
    template: &PodTemplateSpec,
    collision_count: i32,
    cached: Vec<Arc<ControllerRevision>>,
) -> Result<History>
where
    O: Resource<DynamicType = ()> + Serialize,
{
    let owned = claim(api, owner, matcher, cached).await?;
    let mut revisions: Vec<ControllerRevision> = owned.iter().map(|r| (**r).clone()).collect();
    revisions.sort_by_key(|r| r.revision);
    let max = revisions.last().map(|r| r.revision).unwrap_or(0);
    let wanted = Some(template.clone());
    if let Some(i) = revisions.iter().rposition(|r| template_of(r) == wanted) {
        if revisions[i].revision != max {
            // A template used again becomes the newest revision.
            let patch = json!({"revision": max + 1});
            let updated = api
                .patch(
                    &revisions[i].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            revisions.remove(i);
            revisions.push(updated);
        }
        let update = revisions.last().cloned().unwrap_or_default();
        return Ok(History {
            update,
            revisions,
            collision_count,
        });
    }
    let mut collision_count = collision_count;
    let owner_name = owner.meta().name.clone().unwrap_or_default();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    loop {
        let hash = template_hash(Some(template), Some(collision_count));
        labels.insert(HASH_LABEL.into(), hash.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("{owner_name}-{hash}")),
                namespace: owner.meta().namespace.clone(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_ref(owner)]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(patch_of(template))),
            revision: max + 1,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => {
                revisions.push(created.clone());
                return Ok(History {
                    update: created,
                    revisions,
                    collision_count,
                });
            }
            Err(e) if is_already_exists(&e) => {
                let existing = api.get(&format!("{owner_name}-{hash}")).await?;
                if template_of(&existing) == wanted
                    && super::owner::is_controlled_by(
                        &existing.metadata,
                        &owner.uid().unwrap_or_default(),
                    )
                {
                    revisions.push(existing.clone());
                    return Ok(History {
                        update: existing,
                        revisions,
                        collision_count,
                    });
                }
                // A different revision holds the name: upstream bumps collisionCount.
                collision_count += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletes the oldest revisions no pod uses beyond `limit` (upstream's truncateHistory).
pub async fn truncate(
    api: &Api<ControllerRevision>,
    history: &History,
    live: &HashSet<String>,
    limit: i32,
) -> Result<()> {
    let dead: Vec<&ControllerRevision> = history
        .revisions
        .iter()
        .filter(|r| r.name_any() != history.update.name_any() && !live.contains(&r.name_any()))
        .collect();
    let excess = dead.len().saturating_sub(limit.max(0) as usize);
    for r in dead.into_iter().take(excess) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_holds_its_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let data = patch_of(&t);
        assert_eq!(
            data.pointer("/spec/template/$patch"),
            Some(&json!("replace"))
        );
        let rev = ControllerRevision {
            data: Some(RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
    }
}
