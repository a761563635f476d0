//! Objects encoded with k8s-pb's prost types (upstream's field numbers, independent of our
//! schema file) decode to the JSON the same object has in upstream's JSON encoding.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_pb::api::{
    apps::v1 as apps, autoscaling::v2 as hpa, batch::v1 as batch, coordination::v1 as coord,
    core::v1 as core, discovery::v1 as disc, events::v1 as events, networking::v1 as net,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime as rt;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::json;

use super::wire::encode;
use super::*;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn q(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int(i: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(i),
        str_val: s(""),
    })
}

fn string(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: s(v),
    })
}

fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn at(seconds: i64, nanos: i32) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(nanos),
    })
}

/// ObjectMeta as Go writes it for a new object: non-pointer fields always present.
fn om(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: map(&[("app", name.to_string())]),
        ..Default::default()
    })
}

fn om_json(name: &str) -> Value {
    json!({"name": name, "creationTimestamp": null, "labels": {"app": name}})
}

fn selector() -> Option<meta::LabelSelector> {
    Some(meta::LabelSelector {
        match_labels: map(&[("app", "web".to_string())]),
        match_expressions: vec![meta::LabelSelectorRequirement {
            key: s("tier"),
            operator: s("In"),
            values: vec!["a".into(), "b".into()],
        }],
    })
}

fn selector_json() -> Value {
    json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]})
}

fn pod_spec() -> Option<core::PodSpec> {
    Some(core::PodSpec {
        containers: vec![core::Container {
            name: s("web"),
            image: s("nginx"),
            args: vec!["-g".into(), "daemon off;".into()],
            ports: vec![core::ContainerPort {
                name: s(""),
                host_port: Some(0),
                container_port: Some(80),
                protocol: s("TCP"),
                host_ip: s(""),
            }],
            env: vec![core::EnvVar {
                name: s("MODE"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    config_map_key_ref: Some(core::ConfigMapKeySelector {
                        local_object_reference: Some(core::LocalObjectReference { name: s("cfg") }),
                        key: s("mode"),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            }],
            resources: Some(core::ResourceRequirements {
                limits: map(&[("cpu", q("500m")), ("memory", q("128Mi"))]),
                requests: map(&[("cpu", q("250m"))]),
                claims: vec![],
            }),
            readiness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    http_get: Some(core::HttpGetAction {
                        path: s("/healthz"),
                        port: string("http"),
                        host: s(""),
                        scheme: s("HTTP"),
                        http_headers: vec![],
                    }),
                    ..Default::default()
                }),
                initial_delay_seconds: Some(0),
                period_seconds: Some(10),
                ..Default::default()
            }),
            security_context: Some(core::SecurityContext {
                run_as_user: Some(0),
                privileged: Some(false),
                ..Default::default()
            }),
            termination_message_path: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            ..Default::default()
        }],
        volumes: vec![core::Volume {
            name: s("data"),
            volume_source: Some(core::VolumeSource {
                empty_dir: Some(core::EmptyDirVolumeSource {
                    medium: s(""),
                    size_limit: Some(q("1Gi")),
                }),
                ..Default::default()
            }),
        }],
        restart_policy: s("Always"),
        dns_policy: s(""),
        termination_grace_period_seconds: Some(30),
        host_network: Some(false),
        node_selector: map(&[("disk", "ssd".to_string())]),
        ..Default::default()
    })
}

fn pod_spec_json() -> Value {
    json!({
        "containers": [{
            "name": "web", "image": "nginx", "args": ["-g", "daemon off;"],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": false}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10},
            "securityContext": {"runAsUser": 0, "privileged": false},
        }],
        "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "nodeSelector": {"disk": "ssd"},
    })
}

fn template() -> Option<core::PodTemplateSpec> {
    Some(core::PodTemplateSpec {
        metadata: om("web"),
        spec: pod_spec(),
    })
}

fn template_json() -> Value {
    json!({"metadata": om_json("web"), "spec": pod_spec_json()})
}

/// Wraps an object in the `k8s\0` + runtime.Unknown envelope, as client-go does.
fn envelope(api_version: &str, kind: &str, obj: &impl prost::Message) -> Vec<u8> {
    let unk = rt::Unknown {
        type_meta: Some(rt::TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut b = MAGIC.to_vec();
    b.extend(unk.encode_to_vec());
    b
}

fn check(api_version: &str, kind: &str, obj: &impl prost::Message, mut want: Value) {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let got = decode_body(&envelope(api_version, kind, obj), group, version, kind)
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    want["apiVersion"] = json!(api_version);
    want["kind"] = json!(kind);
    assert_eq!(got, want, "{api_version} {kind}");
}

#[test]
fn every_served_kind_has_a_message() {
    let schema = schema::schema().unwrap();
    // CRDs arrive as JSON from kubectl (unstructured); their protobuf form is not served.
    for r in crate::registry::table::resources()
        .into_iter()
        .filter(|r| r.group != crate::crd::GROUP)
    {
        let av = api_version(r.group, r.version);
        let name = message_name(&av, r.kind).unwrap();
        assert!(schema.message(&name).is_some(), "{av} {}: {name}", r.kind);
    }
}

#[test]
fn core_kinds() {
    check(
        "v1",
        "Namespace",
        &core::Namespace {
            metadata: om("team-a"),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus {
                phase: s(""),
                conditions: vec![],
            }),
        },
        json!({"metadata": om_json("team-a"), "spec": {}, "status": {}}),
    );
    check(
        "v1",
        "Pod",
        &core::Pod {
            metadata: om("web"),
            spec: pod_spec(),
            status: Some(core::PodStatus {
                start_time: at(1_700_000_000, 0),
                conditions: vec![core::PodCondition {
                    r#type: s("Ready"),
                    status: s("True"),
                    last_probe_time: Some(meta::Time::default()),
                    last_transition_time: at(1_700_000_001, 500),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        json!({"metadata": om_json("web"), "spec": pod_spec_json(), "status": {
            "startTime": "2023-11-14T22:13:20Z",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2023-11-14T22:13:21Z"}],
        }}),
    );
    check(
        "v1",
        "Service",
        &core::Service {
            metadata: om("web"),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    name: s("5678-8080"),
                    protocol: s("TCP"),
                    port: Some(5678),
                    target_port: int(8080),
                    node_port: Some(0),
                    ..Default::default()
                }],
                selector: map(&[("app", "web".to_string())]),
                cluster_ip: s(""),
                r#type: s("ClusterIP"),
                session_affinity: s(""),
                ..Default::default()
            }),
            status: Some(core::ServiceStatus {
                load_balancer: Some(core::LoadBalancerStatus::default()),
                conditions: vec![],
            }),
        },
        json!({"metadata": om_json("web"), "spec": {
            "ports": [{"name": "5678-8080", "protocol": "TCP", "port": 5678, "targetPort": 8080}],
            "selector": {"app": "web"}, "type": "ClusterIP",
        }, "status": {"loadBalancer": {}}}),
    );
    check(
        "v1",
        "Endpoints",
        &core::Endpoints {
            metadata: om("web"),
            subsets: vec![core::EndpointSubset {
                addresses: vec![core::EndpointAddress {
                    ip: s("10.244.0.5"),
                    hostname: s(""),
                    node_name: s("n1"),
                    target_ref: None,
                }],
                ports: vec![core::EndpointPort {
                    name: s(""),
                    port: Some(80),
                    protocol: s("TCP"),
                    app_protocol: None,
                }],
                not_ready_addresses: vec![],
            }],
        },
        json!({"metadata": om_json("web"), "subsets": [{
            "addresses": [{"ip": "10.244.0.5", "nodeName": "n1"}],
            "ports": [{"port": 80, "protocol": "TCP"}],
        }]}),
    );
    // Full metadata: times, owner references, managed fields (FieldsV1, MicroTime-free), zero pointer.
    let mut cm_meta = om("cfg").unwrap();
    cm_meta.uid = s("6f1c9e2a-0000-4000-8000-000000000001");
    cm_meta.resource_version = s("42");
    cm_meta.creation_timestamp = at(1_700_000_000, 123_456_789);
    cm_meta.deletion_grace_period_seconds = Some(0);
    cm_meta.annotations = map(&[("note", "x".to_string())]);
    cm_meta.finalizers = vec!["example.com/keep".into()];
    cm_meta.owner_references = vec![meta::OwnerReference {
        api_version: s("apps/v1"),
        kind: s("Deployment"),
        name: s("web"),
        uid: s("u1"),
        controller: Some(true),
        block_owner_deletion: None,
    }];
    cm_meta.managed_fields = vec![meta::ManagedFieldsEntry {
        manager: s("kubectl-create"),
        operation: s("Update"),
        api_version: s("v1"),
        time: at(1_700_000_000, 0),
        fields_type: s("FieldsV1"),
        fields_v1: Some(meta::FieldsV1 {
            raw: Some(br#"{"f:data":{".":{},"f:k":{}}}"#.to_vec()),
        }),
        subresource: s(""),
    }];
    check(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(cm_meta),
            immutable: Some(false),
            data: map(&[("k", "v".to_string()), ("empty", String::new())]),
            binary_data: map(&[("bin", vec![0u8, 1, 2, 255])]),
        },
        json!({
            "metadata": {
                "name": "cfg", "labels": {"app": "cfg"}, "annotations": {"note": "x"},
                "uid": "6f1c9e2a-0000-4000-8000-000000000001", "resourceVersion": "42",
                "creationTimestamp": "2023-11-14T22:13:20Z", "deletionGracePeriodSeconds": 0,
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1", "controller": true}],
                "managedFields": [{"manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                    "time": "2023-11-14T22:13:20Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:k": {}}}}],
            },
            "immutable": false,
            "data": {"k": "v", "empty": ""},
            "binaryData": {"bin": "AAEC/w=="},
        }),
    );
    check(
        "v1",
        "Secret",
        &core::Secret {
            metadata: om("creds"),
            immutable: None,
            data: map(&[("password", b"s3cret".to_vec())]),
            string_data: BTreeMap::new(),
            r#type: s("Opaque"),
        },
        json!({"metadata": om_json("creds"), "data": {"password": "czNjcmV0"}, "type": "Opaque"}),
    );
    check(
        "v1",
        "Node",
        &core::Node {
            metadata: om("n1"),
            spec: Some(core::NodeSpec {
                pod_cidr: s("10.244.1.0/24"),
                pod_cid_rs: vec!["10.244.1.0/24".into()],
                unschedulable: Some(true),
                taints: vec![core::Taint {
                    key: s("k"),
                    value: s(""),
                    effect: s("NoSchedule"),
                    time_added: None,
                }],
                ..Default::default()
            }),
            status: Some(core::NodeStatus {
                capacity: map(&[("cpu", q("2")), ("pods", q("110"))]),
                addresses: vec![core::NodeAddress {
                    r#type: s("InternalIP"),
                    address: s("192.0.2.1"),
                }],
                ..Default::default()
            }),
        },
        json!({"metadata": om_json("n1"), "spec": {
            "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "unschedulable": true,
            "taints": [{"key": "k", "effect": "NoSchedule"}],
        }, "status": {"capacity": {"cpu": "2", "pods": "110"}, "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}),
    );
    check(
        "v1",
        "Event",
        &core::Event {
            metadata: om("web.1"),
            involved_object: Some(core::ObjectReference {
                kind: s("Pod"),
                name: s("web"),
                namespace: s("default"),
                ..Default::default()
            }),
            reason: s("Started"),
            message: s("Started container"),
            source: Some(core::EventSource {
                component: s("kubelet"),
                host: s(""),
            }),
            first_timestamp: at(1_700_000_000, 0),
            last_timestamp: Some(meta::Time::default()),
            count: Some(1),
            r#type: s("Normal"),
            event_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        },
        json!({"metadata": om_json("web.1"),
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Started", "message": "Started container", "source": {"component": "kubelet"},
            "firstTimestamp": "2023-11-14T22:13:20Z", "lastTimestamp": null, "count": 1, "type": "Normal",
            "eventTime": "2023-11-14T22:13:20.123456Z"}),
    );
    check(
        "v1",
        "ServiceAccount",
        &core::ServiceAccount {
            metadata: om("robot"),
            secrets: vec![],
            image_pull_secrets: vec![core::LocalObjectReference { name: s("reg") }],
            automount_service_account_token: Some(false),
        },
        json!({"metadata": om_json("robot"), "imagePullSecrets": [{"name": "reg"}], "automountServiceAccountToken": false}),
    );
    check(
        "v1",
        "PersistentVolume",
        &core::PersistentVolume {
            metadata: om("pv1"),
            spec: Some(core::PersistentVolumeSpec {
                capacity: map(&[("storage", q("10Gi"))]),
                persistent_volume_source: Some(core::PersistentVolumeSource {
                    host_path: Some(core::HostPathVolumeSource {
                        path: s("/data"),
                        r#type: s(""),
                    }),
                    ..Default::default()
                }),
                access_modes: vec!["ReadWriteOnce".into()],
                persistent_volume_reclaim_policy: s("Retain"),
                ..Default::default()
            }),
            status: None,
        },
        json!({"metadata": om_json("pv1"), "spec": {
            "capacity": {"storage": "10Gi"}, "hostPath": {"path": "/data", "type": ""},
            "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
        }}),
    );
    check(
        "v1",
        "PersistentVolumeClaim",
        &core::PersistentVolumeClaim {
            metadata: om("claim"),
            spec: Some(core::PersistentVolumeClaimSpec {
                access_modes: vec!["ReadWriteOnce".into()],
                resources: Some(core::VolumeResourceRequirements {
                    requests: map(&[("storage", q("1Gi"))]),
                    limits: BTreeMap::new(),
                }),
                storage_class_name: s("standard"),
                ..Default::default()
            }),
            status: None,
        },
        json!({"metadata": om_json("claim"), "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "standard",
        }}),
    );
    check(
        "v1",
        "ResourceQuota",
        &core::ResourceQuota {
            metadata: om("quota"),
            spec: Some(core::ResourceQuotaSpec {
                hard: map(&[("pods", q("10")), ("requests.cpu", q("4"))]),
                scopes: vec![],
                scope_selector: None,
            }),
            status: Some(core::ResourceQuotaStatus::default()),
        },
        json!({"metadata": om_json("quota"), "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}, "status": {}}),
    );
    check(
        "v1",
        "LimitRange",
        &core::LimitRange {
            metadata: om("limits"),
            spec: Some(core::LimitRangeSpec {
                limits: vec![core::LimitRangeItem {
                    r#type: s("Container"),
                    default: map(&[("cpu", q("100m"))]),
                    ..Default::default()
                }],
            }),
        },
        json!({"metadata": om_json("limits"), "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}}),
    );
    check(
        "v1",
        "PodTemplate",
        &core::PodTemplate {
            metadata: om("tmpl"),
            template: template(),
        },
        json!({"metadata": om_json("tmpl"), "template": template_json()}),
    );
    check(
        "v1",
        "ReplicationController",
        &core::ReplicationController {
            metadata: om("rc"),
            spec: Some(core::ReplicationControllerSpec {
                replicas: Some(0),
                min_ready_seconds: Some(0),
                selector: map(&[("app", "web".to_string())]),
                template: template(),
            }),
            status: None,
        },
        json!({"metadata": om_json("rc"), "spec": {"replicas": 0, "selector": {"app": "web"}, "template": template_json()}}),
    );
}

#[test]
fn apps_and_batch_kinds() {
    let strategy = Some(apps::DeploymentStrategy {
        r#type: s("RollingUpdate"),
        rolling_update: Some(apps::RollingUpdateDeployment {
            max_unavailable: string("25%"),
            max_surge: int(1),
        }),
    });
    check(
        "apps/v1",
        "Deployment",
        &apps::Deployment {
            metadata: om("web"),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: selector(),
                template: template(),
                strategy,
                min_ready_seconds: Some(0),
                revision_history_limit: Some(0),
                paused: Some(false),
                progress_deadline_seconds: None,
            }),
            status: Some(apps::DeploymentStatus::default()),
        },
        json!({"metadata": om_json("web"), "spec": {
            "replicas": 0, "selector": selector_json(), "template": template_json(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
            "revisionHistoryLimit": 0,
        }, "status": {}}),
    );
    check(
        "apps/v1",
        "ReplicaSet",
        &apps::ReplicaSet {
            metadata: om("web-1"),
            spec: Some(apps::ReplicaSetSpec {
                replicas: Some(3),
                selector: selector(),
                template: template(),
                min_ready_seconds: Some(5),
            }),
            status: None,
        },
        json!({"metadata": om_json("web-1"), "spec": {"replicas": 3, "minReadySeconds": 5, "selector": selector_json(), "template": template_json()}}),
    );
    check(
        "apps/v1",
        "StatefulSet",
        &apps::StatefulSet {
            metadata: om("db"),
            spec: Some(apps::StatefulSetSpec {
                replicas: Some(1),
                selector: selector(),
                template: template(),
                service_name: s("db"),
                pod_management_policy: s("Parallel"),
                volume_claim_templates: vec![core::PersistentVolumeClaim {
                    metadata: om("data"),
                    spec: Some(core::PersistentVolumeClaimSpec {
                        access_modes: vec!["ReadWriteOnce".into()],
                        ..Default::default()
                    }),
                    status: Some(core::PersistentVolumeClaimStatus::default()),
                }],
                update_strategy: Some(apps::StatefulSetUpdateStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::RollingUpdateStatefulSetStrategy {
                        partition: Some(0),
                        max_unavailable: None,
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        },
        json!({"metadata": om_json("db"), "spec": {
            "replicas": 1, "selector": selector_json(), "template": template_json(), "serviceName": "db",
            "podManagementPolicy": "Parallel",
            "volumeClaimTemplates": [{"metadata": om_json("data"), "spec": {"accessModes": ["ReadWriteOnce"]}, "status": {}}],
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        }}),
    );
    check(
        "apps/v1",
        "DaemonSet",
        &apps::DaemonSet {
            metadata: om("agent"),
            spec: Some(apps::DaemonSetSpec {
                selector: selector(),
                template: template(),
                update_strategy: Some(apps::DaemonSetUpdateStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::RollingUpdateDaemonSet {
                        max_unavailable: int(1),
                        max_surge: int(0),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        },
        json!({"metadata": om_json("agent"), "spec": {
            "selector": selector_json(), "template": template_json(),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        }}),
    );
    check(
        "apps/v1",
        "ControllerRevision",
        &apps::ControllerRevision {
            metadata: om("db-1"),
            data: Some(rt::RawExtension {
                raw: Some(br#"{"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}}"#.to_vec()),
            }),
            revision: Some(1),
        },
        json!({"metadata": om_json("db-1"), "data": {"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}, "revision": 1}),
    );
    let job_spec = || {
        Some(batch::JobSpec {
            template: Some(core::PodTemplateSpec {
                metadata: om("pi"),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("pi"),
                        image: s("perl"),
                        command: vec!["perl".into(), "-e".into(), "print 1".into()],
                        ..Default::default()
                    }],
                    restart_policy: s("Never"),
                    ..Default::default()
                }),
            }),
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(100),
            ..Default::default()
        })
    };
    let job_spec_json = json!({
        "template": {"metadata": om_json("pi"), "spec": {
            "containers": [{"name": "pi", "image": "perl", "command": ["perl", "-e", "print 1"]}],
            "restartPolicy": "Never",
        }},
        "backoffLimit": 0, "ttlSecondsAfterFinished": 100,
    });
    check(
        "batch/v1",
        "Job",
        &batch::Job {
            metadata: om("pi"),
            spec: job_spec(),
            status: Some(batch::JobStatus::default()),
        },
        json!({"metadata": om_json("pi"), "spec": job_spec_json.clone(), "status": {}}),
    );
    check(
        "batch/v1",
        "CronJob",
        &batch::CronJob {
            metadata: om("nightly"),
            spec: Some(batch::CronJobSpec {
                schedule: s("0 3 * * *"),
                concurrency_policy: s(""),
                suspend: Some(false),
                job_template: Some(batch::JobTemplateSpec {
                    metadata: om("nightly"),
                    spec: job_spec(),
                }),
                ..Default::default()
            }),
            status: Some(batch::CronJobStatus::default()),
        },
        json!({"metadata": om_json("nightly"), "spec": {
            "schedule": "0 3 * * *", "suspend": false,
            "jobTemplate": {"metadata": om_json("nightly"), "spec": job_spec_json},
        }, "status": {}}),
    );
}

#[test]
fn other_group_kinds() {
    check(
        "coordination.k8s.io/v1",
        "Lease",
        &coord::Lease {
            metadata: om("leader"),
            spec: Some(coord::LeaseSpec {
                holder_identity: s("node-1"),
                lease_duration_seconds: Some(15),
                acquire_time: Some(meta::MicroTime {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                renew_time: Some(meta::MicroTime {
                    seconds: Some(1_700_000_010),
                    nanos: Some(1_000),
                }),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        },
        json!({"metadata": om_json("leader"), "spec": {
            "holderIdentity": "node-1", "leaseDurationSeconds": 15,
            "acquireTime": "2023-11-14T22:13:20.000000Z", "renewTime": "2023-11-14T22:13:30.000001Z",
            "leaseTransitions": 0,
        }}),
    );
    check(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        &disc::EndpointSlice {
            metadata: om("web-abc"),
            address_type: s("IPv4"),
            endpoints: vec![disc::Endpoint {
                addresses: vec!["10.244.0.5".into()],
                conditions: Some(disc::EndpointConditions {
                    ready: Some(true),
                    serving: None,
                    terminating: None,
                }),
                ..Default::default()
            }],
            ports: vec![disc::EndpointPort {
                name: s(""),
                protocol: s("TCP"),
                port: Some(80),
                app_protocol: None,
            }],
        },
        json!({"metadata": om_json("web-abc"), "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}],
            "ports": [{"name": "", "protocol": "TCP", "port": 80}]}),
    );
    check(
        "events.k8s.io/v1",
        "Event",
        &events::Event {
            metadata: om("web.2"),
            event_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(5_000_000),
            }),
            reporting_controller: s("kubelet"),
            reporting_instance: s("n1"),
            action: s("Pulling"),
            reason: s("Pulling"),
            regarding: Some(core::ObjectReference {
                kind: s("Pod"),
                name: s("web"),
                ..Default::default()
            }),
            note: s("pulling image"),
            r#type: s("Normal"),
            deprecated_first_timestamp: Some(meta::Time::default()),
            deprecated_count: Some(0),
            ..Default::default()
        },
        json!({"metadata": om_json("web.2"), "eventTime": "2023-11-14T22:13:20.005000Z",
            "reportingController": "kubelet", "reportingInstance": "n1", "action": "Pulling", "reason": "Pulling",
            "regarding": {"kind": "Pod", "name": "web"}, "note": "pulling image", "type": "Normal",
            "deprecatedFirstTimestamp": null}),
    );
    check(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        &hpa::HorizontalPodAutoscaler {
            metadata: om("web"),
            spec: Some(hpa::HorizontalPodAutoscalerSpec {
                scale_target_ref: Some(hpa::CrossVersionObjectReference {
                    kind: s("Deployment"),
                    name: s("web"),
                    api_version: s("apps/v1"),
                }),
                min_replicas: Some(1),
                max_replicas: Some(5),
                metrics: vec![hpa::MetricSpec {
                    r#type: s("Resource"),
                    resource: Some(hpa::ResourceMetricSource {
                        name: s("cpu"),
                        target: Some(hpa::MetricTarget {
                            r#type: s("Utilization"),
                            average_utilization: Some(80),
                            average_value: Some(q("100m")),
                            value: None,
                        }),
                    }),
                    ..Default::default()
                }],
                behavior: None,
            }),
            status: None,
        },
        json!({"metadata": om_json("web"), "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80, "averageValue": "100m"}}}],
        }}),
    );
    check(
        "policy/v1",
        "PodDisruptionBudget",
        &policy::PodDisruptionBudget {
            metadata: om("web"),
            spec: Some(policy::PodDisruptionBudgetSpec {
                min_available: string("50%"),
                selector: selector(),
                max_unavailable: None,
                unhealthy_pod_eviction_policy: None,
            }),
            status: Some(policy::PodDisruptionBudgetStatus {
                observed_generation: Some(0),
                disrupted_pods: map(&[("web-1", meta::Time::default())]),
                disruptions_allowed: Some(0),
                current_healthy: Some(0),
                desired_healthy: Some(0),
                expected_pods: Some(0),
                conditions: vec![],
            }),
        },
        json!({"metadata": om_json("web"), "spec": {"minAvailable": "50%", "selector": selector_json()}, "status": {
            "disruptedPods": {"web-1": null}, "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0,
        }}),
    );
    let backend = |port: Option<net::ServiceBackendPort>| {
        Some(net::IngressBackend {
            service: Some(net::IngressServiceBackend {
                name: s("web"),
                port,
            }),
            resource: None,
        })
    };
    check(
        "networking.k8s.io/v1",
        "Ingress",
        &net::Ingress {
            metadata: om("web"),
            spec: Some(net::IngressSpec {
                ingress_class_name: s("nginx"),
                default_backend: None,
                tls: vec![],
                rules: vec![net::IngressRule {
                    host: s("foo.com"),
                    ingress_rule_value: Some(net::IngressRuleValue {
                        http: Some(net::HttpIngressRuleValue {
                            paths: vec![net::HttpIngressPath {
                                path: s("/bar"),
                                path_type: s("Exact"),
                                backend: backend(Some(net::ServiceBackendPort {
                                    name: s(""),
                                    number: Some(8080),
                                })),
                            }],
                        }),
                    }),
                }],
            }),
            status: Some(net::IngressStatus::default()),
        },
        json!({"metadata": om_json("web"), "spec": {"ingressClassName": "nginx", "rules": [{"host": "foo.com", "http": {"paths": [
            {"path": "/bar", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 8080}}}},
        ]}}]}, "status": {}}),
    );
    check(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        &net::NetworkPolicy {
            metadata: om("deny"),
            spec: Some(net::NetworkPolicySpec {
                pod_selector: Some(meta::LabelSelector::default()),
                ingress: vec![net::NetworkPolicyIngressRule {
                    ports: vec![net::NetworkPolicyPort {
                        protocol: s("TCP"),
                        port: int(80),
                        end_port: None,
                    }],
                    from: vec![],
                }],
                egress: vec![],
                policy_types: vec!["Ingress".into()],
            }),
        },
        json!({"metadata": om_json("deny"), "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}], "policyTypes": ["Ingress"]}}),
    );
    let rule = rbac::PolicyRule {
        verbs: vec!["get".into(), "list".into()],
        api_groups: vec!["".into()],
        resources: vec!["pods".into()],
        resource_names: vec![],
        non_resource_ur_ls: vec![],
    };
    let rule_json = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]});
    check(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &rbac::Role {
            metadata: om("reader"),
            rules: vec![rule.clone()],
        },
        json!({"metadata": om_json("reader"), "rules": [rule_json.clone()]}),
    );
    check(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        &rbac::ClusterRole {
            metadata: om("reader"),
            rules: vec![rule],
            aggregation_rule: None,
        },
        json!({"metadata": om_json("reader"), "rules": [rule_json]}),
    );
    let subject = rbac::Subject {
        kind: s("User"),
        api_group: s("rbac.authorization.k8s.io"),
        name: s("alice"),
        namespace: s(""),
    };
    let role_ref = |kind: &str| {
        Some(rbac::RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s(kind),
            name: s("reader"),
        })
    };
    let binding_json = |kind: &str| {
        json!({"metadata": om_json("read"),
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": "reader"}})
    };
    check(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        &rbac::RoleBinding {
            metadata: om("read"),
            subjects: vec![subject.clone()],
            role_ref: role_ref("Role"),
        },
        binding_json("Role"),
    );
    check(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &rbac::ClusterRoleBinding {
            metadata: om("read"),
            subjects: vec![subject],
            role_ref: role_ref("ClusterRole"),
        },
        binding_json("ClusterRole"),
    );
    check(
        "storage.k8s.io/v1",
        "StorageClass",
        &storage::StorageClass {
            metadata: om("fast"),
            provisioner: s("example.com/fast"),
            parameters: map(&[("type", "ssd".to_string())]),
            reclaim_policy: s("Delete"),
            allow_volume_expansion: Some(false),
            volume_binding_mode: s("WaitForFirstConsumer"),
            ..Default::default()
        },
        json!({"metadata": om_json("fast"), "provisioner": "example.com/fast", "parameters": {"type": "ssd"},
            "reclaimPolicy": "Delete", "allowVolumeExpansion": false, "volumeBindingMode": "WaitForFirstConsumer"}),
    );
    check(
        "scheduling.k8s.io/v1",
        "PriorityClass",
        &sched::PriorityClass {
            metadata: om("low"),
            value: Some(0),
            global_default: Some(false),
            description: s(""),
            preemption_policy: s("Never"),
        },
        json!({"metadata": om_json("low"), "value": 0, "preemptionPolicy": "Never"}),
    );
}

#[test]
fn delete_options_from_any_group_version() {
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u1"),
            resource_version: None,
        }),
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    let want = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}, "propagationPolicy": "Foreground", "dryRun": ["All"]});
    for av in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        check(av, "DeleteOptions", &opts, want.clone());
    }
}

fn error_of(body: &[u8]) -> String {
    match decode_body(body, "", "v1", "Namespace") {
        Err(Error::BadRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn malformed_bodies_are_bad_requests() {
    assert_eq!(
        error_of(b"{\"kind\":\"Namespace\"}"),
        "the object provided is unrecognized (must be of type Namespace): provided data does not appear to be a protobuf message, expected prefix [107 56 115 0] ({\"kind\":\"Namespace\"})"
    );
    assert_eq!(
        error_of(b""),
        "the object provided is unrecognized (must be of type Namespace): empty data (<empty>)"
    );
    assert!(error_of(b"k8s\0").contains("empty body"));
    let ns = core::Namespace {
        metadata: om("x"),
        ..Default::default()
    };
    let good = envelope("v1", "Namespace", &ns);
    // Every truncation of a valid body is an error, never a panic.
    for n in 5..good.len() {
        let _ = decode_body(&good[..n], "", "v1", "Namespace");
    }
    let truncated = error_of(&good[..good.len() - 3]);
    assert!(truncated.contains("unexpected EOF"), "{truncated}");
    // The raw object truncated inside the envelope names the kind, as upstream does.
    let raw = ns.encode_to_vec();
    let mut unk = Vec::new();
    let mut tm = Vec::new();
    encode::bytes_field(1, b"v1", &mut tm);
    encode::bytes_field(2, b"Namespace", &mut tm);
    encode::bytes_field(1, &tm, &mut unk);
    encode::bytes_field(2, &raw[..raw.len() - 2], &mut unk);
    let body = [MAGIC, &unk].concat();
    assert_eq!(
        error_of(&body),
        "Namespace in version \"v1\" cannot be handled as a Namespace: unexpected EOF"
    );
    // A kind no group serves.
    let wrong = envelope("v1", "Gizmo", &ns);
    assert_eq!(
        error_of(&wrong),
        "Gizmo in version \"v1\" cannot be handled as a Namespace: no kind \"Gizmo\" is registered for version \"v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
    );
    // A type objects are made of is no kind.
    let spec = envelope("v1", "PodSpec", &core::PodSpec::default());
    assert!(error_of(&spec).contains("no kind \"PodSpec\" is registered"));
    let time = envelope("meta.k8s.io/v1", "Time", &meta::Time::default());
    assert!(error_of(&time).contains("no kind \"Time\" is registered"));
    // A field with the wrong wire type: metadata (field 1) as a varint.
    let mut raw = Vec::new();
    encode::varint_field(1, 7, &mut raw);
    let mut unk = Vec::new();
    encode::bytes_field(1, &tm, &mut unk);
    encode::bytes_field(2, &raw, &mut unk);
    let m = error_of(&[MAGIC, &unk].concat());
    assert!(
        m.contains("proto: wrong wireType = 0 for field metadata"),
        "{m}"
    );
    // A varint longer than ten bytes.
    let m = error_of(&[MAGIC, &[0x0a], &[0xff; 11]].concat());
    assert!(m.contains("proto: integer overflow"), "{m}");
    // Nesting deeper than the limit (a RawExtension holding itself, over and over).
    let mut nested = envelope(
        "apps/v1",
        "ControllerRevision",
        &apps::ControllerRevision::default(),
    );
    for _ in 0..(MAX_DEPTH + 1) {
        let cr = apps::ControllerRevision {
            metadata: None,
            data: Some(rt::RawExtension { raw: Some(nested) }),
            revision: None,
        };
        nested = envelope("apps/v1", "ControllerRevision", &cr);
    }
    let m = match decode_body(&nested, "apps", "v1", "ControllerRevision") {
        Err(Error::BadRequest(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("maximum nesting depth"), "{m}");
}

#[test]
fn missing_type_meta_defaults_to_the_url_kind() {
    let ns = core::Namespace {
        metadata: om("x"),
        ..Default::default()
    };
    let mut unk = Vec::new();
    encode::bytes_field(2, &ns.encode_to_vec(), &mut unk);
    let v = decode_body(&[MAGIC, &unk].concat(), "", "v1", "Namespace").unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": om_json("x")})
    );
}

#[test]
fn unknown_fields_and_packed_numbers() {
    // A field number the schema does not know is skipped; packed repeated int32 decodes.
    let mut raw = Vec::new();
    encode::bytes_field(99, b"future", &mut raw);
    encode::varint_field(98, 5, &mut raw);
    encode::bytes_field(2, b"In", &mut raw); // operator
    encode::bytes_field(1, b"c", &mut raw); // containerName
    let mut packed = Vec::new();
    for v in [1u64, 2, 300] {
        encode::varint(v, &mut packed);
    }
    encode::bytes_field(3, &packed, &mut raw);
    let schema = schema::schema().unwrap();
    let v = decode_message(
        schema,
        "k8s.io.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        &raw,
        0,
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"containerName": "c", "operator": "In", "values": [1, 2, 300]})
    );
}
