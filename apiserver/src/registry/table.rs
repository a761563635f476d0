//! Every resource minik8s serves, with its strategy and upstream discovery facts.

use std::sync::Arc;

use k8s_openapi::api::{
    admissionregistration::v1 as admissionregistration, apps::v1 as apps,
    autoscaling::v2 as autoscaling, certificates::v1 as certificates,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    networking::v1 as networking, policy::v1 as policy, scheduling::v1 as scheduling,
    storage::v1 as storage,
};

use super::strategies::apps::{
    DaemonSetStrategy, DeploymentStrategy, ReplicaSetStrategy, StatefulSetStrategy,
};
use super::strategies::basic::Basic;
use super::strategies::batch::{CronJobStrategy, JobStrategy};
use super::strategies::configmap::ConfigMapStrategy;
use super::strategies::event::{EventStrategy, EventsV1Strategy};
use super::strategies::namespace::NamespaceStrategy;
use super::strategies::node::NodeStrategy;
use super::strategies::pod::PodStrategy;
use super::strategies::pod_template::PodTemplateStrategy;
use super::strategies::rbac::{BindingStrategy, RoleStrategy};
use super::strategies::replication_controller::ReplicationControllerStrategy;
use super::strategies::secret::SecretStrategy;
use super::strategies::service::ServiceStrategy;
use super::strategies::storage as st;
use super::{ResourceInfo, Strategy, Subresource};

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const STATUS: &[Subresource] = &[Subresource::Status];
const STATUS_SCALE: &[Subresource] = &[Subresource::Status, Subresource::Scale];
const NO_SUB: &[Subresource] = &[];
const POD_SUBS: &[Subresource] = &[
    Subresource::Status,
    Subresource::Binding,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
];
const NODE_SUBS: &[Subresource] = &[Subresource::Status, Subresource::Proxy];

/// Where a resource lives and how discovery names it.
struct Names {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
}

fn info(
    n: Names,
    categories: &'static [&'static str],
    namespaced: bool,
    subresources: &'static [Subresource],
    strategy: impl Strategy,
) -> ResourceInfo {
    // Upstream singular names are the lowercased kind for every built-in resource.
    let singular: &'static str = Box::leak(n.kind.to_lowercase().into_boxed_str());
    ResourceInfo {
        group: n.group,
        version: n.version,
        kind: n.kind,
        plural: n.plural,
        singular,
        short_names: n.short_names,
        categories,
        namespaced,
        subresources,
        strategy: Arc::new(strategy),
    }
}

const fn core(
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
) -> Names {
    Names {
        group: "",
        version: "v1",
        kind,
        plural,
        short_names,
    }
}

const fn grp(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
) -> Names {
    Names {
        group,
        version,
        kind,
        plural,
        short_names,
    }
}

/// The resources served, in discovery order.
pub fn resources() -> Vec<ResourceInfo> {
    vec![
        // core/v1
        info(
            core("Namespace", "namespaces", &["ns"]),
            NONE,
            false,
            STATUS,
            NamespaceStrategy,
        ),
        info(
            core("Pod", "pods", &["po"]),
            ALL,
            true,
            POD_SUBS,
            PodStrategy,
        ),
        info(
            core("Service", "services", &["svc"]),
            ALL,
            true,
            STATUS,
            ServiceStrategy,
        ),
        info(
            core("Endpoints", "endpoints", &["ep"]),
            NONE,
            true,
            NO_SUB,
            Basic::<core::Endpoints>::namespaced(),
        ),
        info(
            core("ConfigMap", "configmaps", &["cm"]),
            NONE,
            true,
            NO_SUB,
            ConfigMapStrategy,
        ),
        info(
            core("Secret", "secrets", &[]),
            NONE,
            true,
            NO_SUB,
            SecretStrategy,
        ),
        info(
            core("Node", "nodes", &["no"]),
            NONE,
            false,
            NODE_SUBS,
            NodeStrategy,
        ),
        info(
            core("Event", "events", &["ev"]),
            NONE,
            true,
            NO_SUB,
            EventStrategy,
        ),
        info(
            core("ServiceAccount", "serviceaccounts", &["sa"]),
            NONE,
            true,
            NO_SUB,
            Basic::<core::ServiceAccount>::namespaced(),
        ),
        info(
            core("PersistentVolume", "persistentvolumes", &["pv"]),
            NONE,
            false,
            STATUS,
            Basic::<core::PersistentVolume>::cluster()
                .with_defaults(st::default_pv)
                .with_on_create(st::pending_status),
        ),
        info(
            core("PersistentVolumeClaim", "persistentvolumeclaims", &["pvc"]),
            NONE,
            true,
            STATUS,
            Basic::<core::PersistentVolumeClaim>::namespaced()
                .with_defaults(st::default_pvc)
                .with_on_create(st::pending_status)
                .with_check(st::check_pvc),
        ),
        info(
            core("ResourceQuota", "resourcequotas", &["quota"]),
            NONE,
            true,
            STATUS,
            Basic::<core::ResourceQuota>::namespaced(),
        ),
        info(
            core("LimitRange", "limitranges", &["limits"]),
            NONE,
            true,
            NO_SUB,
            Basic::<core::LimitRange>::namespaced(),
        ),
        info(
            core("PodTemplate", "podtemplates", &[]),
            NONE,
            true,
            NO_SUB,
            PodTemplateStrategy,
        ),
        info(
            core("ReplicationController", "replicationcontrollers", &["rc"]),
            ALL,
            true,
            STATUS_SCALE,
            ReplicationControllerStrategy,
        ),
        // apps/v1
        info(
            grp("apps", "v1", "Deployment", "deployments", &["deploy"]),
            ALL,
            true,
            STATUS_SCALE,
            DeploymentStrategy,
        ),
        info(
            grp("apps", "v1", "ReplicaSet", "replicasets", &["rs"]),
            ALL,
            true,
            STATUS_SCALE,
            ReplicaSetStrategy,
        ),
        info(
            grp("apps", "v1", "StatefulSet", "statefulsets", &["sts"]),
            ALL,
            true,
            STATUS_SCALE,
            StatefulSetStrategy,
        ),
        info(
            grp("apps", "v1", "DaemonSet", "daemonsets", &["ds"]),
            ALL,
            true,
            STATUS,
            DaemonSetStrategy,
        ),
        info(
            grp(
                "apps",
                "v1",
                "ControllerRevision",
                "controllerrevisions",
                &[],
            ),
            NONE,
            true,
            NO_SUB,
            Basic::<apps::ControllerRevision>::namespaced(),
        ),
        // batch/v1
        info(
            grp("batch", "v1", "Job", "jobs", &[]),
            ALL,
            true,
            STATUS,
            JobStrategy,
        ),
        info(
            grp("batch", "v1", "CronJob", "cronjobs", &["cj"]),
            ALL,
            true,
            STATUS,
            CronJobStrategy,
        ),
        // coordination.k8s.io/v1
        info(
            grp("coordination.k8s.io", "v1", "Lease", "leases", &[]),
            NONE,
            true,
            NO_SUB,
            Basic::<coordination::Lease>::namespaced().with_check(st::check_lease),
        ),
        // certificates.k8s.io/v1
        info(
            grp(
                "certificates.k8s.io",
                "v1",
                "CertificateSigningRequest",
                "certificatesigningrequests",
                &["csr"],
            ),
            NONE,
            false,
            &[Subresource::Status, Subresource::Approval],
            Basic::<certificates::CertificateSigningRequest>::cluster()
                .with_check(crate::certificates::validate_expiration),
        ),
        // discovery.k8s.io/v1
        info(
            grp(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                &[],
            ),
            NONE,
            true,
            NO_SUB,
            Basic::<discovery::EndpointSlice>::namespaced(),
        ),
        // events.k8s.io/v1
        info(
            grp("events.k8s.io", "v1", "Event", "events", &["ev"]),
            NONE,
            true,
            NO_SUB,
            EventsV1Strategy,
        ),
        // autoscaling/v2
        info(
            grp(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                &["hpa"],
            ),
            ALL,
            true,
            STATUS,
            Basic::<autoscaling::HorizontalPodAutoscaler>::namespaced()
                .with_generation()
                .with_defaults(st::default_hpa)
                .with_check(st::check_hpa),
        ),
        // autoscaling/v1: a view of the v2 objects
        info(
            grp(
                "autoscaling",
                "v1",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                &["hpa"],
            ),
            ALL,
            true,
            STATUS,
            super::strategies::hpa::HpaV1Strategy,
        ),
        // policy/v1
        info(
            grp(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                &["pdb"],
            ),
            NONE,
            true,
            STATUS,
            Basic::<policy::PodDisruptionBudget>::namespaced().with_generation(),
        ),
        // networking.k8s.io/v1
        info(
            grp("networking.k8s.io", "v1", "Ingress", "ingresses", &["ing"]),
            NONE,
            true,
            STATUS,
            Basic::<networking::Ingress>::namespaced().with_generation(),
        ),
        info(
            grp(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                &["netpol"],
            ),
            NONE,
            true,
            NO_SUB,
            Basic::<networking::NetworkPolicy>::namespaced().with_generation(),
        ),
        // rbac.authorization.k8s.io/v1
        info(
            grp("rbac.authorization.k8s.io", "v1", "Role", "roles", &[]),
            NONE,
            true,
            NO_SUB,
            RoleStrategy { namespaced: true },
        ),
        info(
            grp(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                &[],
            ),
            NONE,
            true,
            NO_SUB,
            BindingStrategy { namespaced: true },
        ),
        info(
            grp(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                &[],
            ),
            NONE,
            false,
            NO_SUB,
            RoleStrategy { namespaced: false },
        ),
        info(
            grp(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                &[],
            ),
            NONE,
            false,
            NO_SUB,
            BindingStrategy { namespaced: false },
        ),
        // storage.k8s.io/v1
        info(
            grp(
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                &["sc"],
            ),
            NONE,
            false,
            NO_SUB,
            Basic::<storage::StorageClass>::cluster()
                .with_defaults(st::default_storage_class)
                .with_check(st::check_storage_class),
        ),
        // scheduling.k8s.io/v1
        info(
            grp(
                "scheduling.k8s.io",
                "v1",
                "PriorityClass",
                "priorityclasses",
                &["pc"],
            ),
            NONE,
            false,
            NO_SUB,
            Basic::<scheduling::PriorityClass>::cluster().with_defaults(st::default_priority_class),
        ),
        // apiextensions.k8s.io/v1
        info(
            grp(
                crate::crd::GROUP,
                "v1",
                "CustomResourceDefinition",
                crate::crd::PLURAL,
                &["crd", "crds"],
            ),
            &["api-extensions"],
            false,
            STATUS,
            crate::crd::strategy::CrdStrategy,
        ),
        // admissionregistration.k8s.io/v1
        info(
            grp(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                &[],
            ),
            NONE,
            false,
            NO_SUB,
            Basic::<admissionregistration::MutatingWebhookConfiguration>::cluster(),
        ),
        info(
            grp(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                &[],
            ),
            NONE,
            false,
            NO_SUB,
            Basic::<admissionregistration::ValidatingWebhookConfiguration>::cluster(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let rs = resources();
        let mut seen = std::collections::HashSet::new();
        for r in &rs {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "duplicate {}",
                r.qualified_resource()
            );
            assert_eq!(r.singular, r.kind.to_lowercase());
            assert_eq!(
                r.has_subresource(Subresource::Scale),
                r.strategy.scale_paths().is_some(),
                "{}",
                r.plural
            );
        }
        let find = |g: &str, p: &str| rs.iter().find(|r| r.group == g && r.plural == p);
        let ev = find("events.k8s.io", "events").map(|r| r.key_prefix());
        assert_eq!(ev.as_deref(), Some("/registry/events/"));
        assert_eq!(
            find("apps", "deployments").map(|r| r.short_names),
            Some(&["deploy"][..])
        );
        assert_eq!(rs.len(), 40);
    }
}
