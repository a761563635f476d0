//! PodSecurity: the baseline and restricted Pod Security Standards per namespace, with
//! upstream's messages: `pod-security.kubernetes.io/enforce` refuses pods that violate its
//! level; `pod-security.kubernetes.io/warn` lets them in with a warning
//! (`would violate PodSecurity "restricted:latest": ...`), and warns of workloads (Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicationControllers,
//! PodTemplates) whose pod template would violate it, as upstream does.

use serde_json::Value;

use super::{store_of, Attributes, Operation};
use crate::error::Result;
use crate::handlers::ApiState;

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const ENFORCE_VERSION: &str = "pod-security.kubernetes.io/enforce-version";
const WARN: &str = "pod-security.kubernetes.io/warn";
const WARN_VERSION: &str = "pod-security.kubernetes.io/warn-version";

/// The pod a write stands for: the pod itself, or a workload's pod template (as a pod with
/// the template's metadata and spec); `None` for other kinds.
fn pod_of(a: &Attributes<'_>, obj: &Value) -> Option<(Value, bool)> {
    let template = match (a.resource.group, a.resource.plural) {
        ("", "pods") => return Some((obj.clone(), true)),
        ("", "podtemplates") => obj.get("template"),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => obj.pointer("/spec/template"),
        ("batch", "cronjobs") => obj.pointer("/spec/jobTemplate/spec/template"),
        _ => return None,
    }?;
    Some((
        serde_json::json!({
            "metadata": template.get("metadata").cloned().unwrap_or(Value::Null),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        }),
        false,
    ))
}

fn level_of(s: &str) -> Level {
    match s {
        "privileged" => Level::Privileged,
        "baseline" => Level::Baseline,
        _ => Level::Restricted,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Baseline => "baseline",
        _ => "restricted",
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// A Pod Security level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    if names.len() == 1 {
        format!("container {}", quoted(names))
    } else {
        format!("containers {}", quoted(names))
    }
}

fn all_containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| {
            pod.pointer(&format!("/spec/{k}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect()
}

fn cname(c: &Value) -> String {
    c.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn sc<'a>(c: &'a Value, field: &str) -> Option<&'a Value> {
    c.get("securityContext").and_then(|s| s.get(field))
}

/// The violations of `pod` at `level`, as `reason (detail)` strings in upstream's order.
pub fn violations(pod: &Value, level: Level) -> Vec<String> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    let cs = all_containers(pod);
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let names_where = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        cs.iter().filter(|c| f(c)).map(|c| cname(c)).collect()
    };
    // capabilities_baseline
    let mut bad_caps: Vec<String> = Vec::new();
    let with_bad_caps = names_where(&|c| {
        sc(c, "capabilities")
            .and_then(|k| k.get("add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|cap| !BASELINE_CAPS.contains(&cap))
    });
    for c in &cs {
        for cap in sc(c, "capabilities")
            .and_then(|k| k.get("add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !BASELINE_CAPS.contains(&cap) && !bad_caps.iter().any(|b| b == cap) {
                bad_caps.push(cap.to_string());
            }
        }
    }
    if !with_bad_caps.is_empty() {
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            containers_phrase(&with_bad_caps),
            quoted(&bad_caps)
        ));
    }
    // hostNamespaces
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec.get(**k).and_then(Value::as_bool) == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    let volumes: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    // hostPathVolumes (baseline only; restricted reports restricted volume types)
    if level == Level::Baseline {
        let hp: Vec<String> = volumes
            .iter()
            .filter(|v| v.get("hostPath").is_some())
            .map(|v| cname(v))
            .collect();
        if !hp.is_empty() {
            let what = if hp.len() == 1 { "volume" } else { "volumes" };
            out.push(format!("hostPath volumes ({what} {})", quoted(&hp)));
        }
    }
    // hostPorts
    let mut ports: Vec<String> = Vec::new();
    let with_ports = names_where(&|c| {
        c.get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0)
    });
    for c in &cs {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let hp = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if hp != 0 && !ports.contains(&hp.to_string()) {
                ports.push(hp.to_string());
            }
        }
    }
    if !with_ports.is_empty() {
        let (verb, noun) = if with_ports.len() == 1 {
            (
                "uses",
                if ports.len() == 1 {
                    "hostPort"
                } else {
                    "hostPorts"
                },
            )
        } else {
            ("use", "hostPorts")
        };
        out.push(format!(
            "hostPort ({} {verb} {noun} {})",
            containers_phrase(&with_ports),
            ports.join(", ")
        ));
    }
    // privileged
    let privileged = names_where(&|c| sc(c, "privileged").and_then(Value::as_bool) == Some(true));
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers_phrase(&privileged)
        ));
    }
    // seccompProfile_baseline
    let pod_seccomp = spec
        .pointer("/securityContext/seccompProfile/type")
        .and_then(Value::as_str);
    if level == Level::Baseline {
        let mut parts = Vec::new();
        if pod_seccomp == Some("Unconfined") {
            parts.push("pod".to_string());
        }
        let unconf = names_where(&|c| {
            sc(c, "seccompProfile")
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                == Some("Unconfined")
        });
        if !unconf.is_empty() {
            parts.push(containers_phrase(&unconf));
        }
        if !parts.is_empty() {
            out.push(format!(
                "seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")",
                parts.join(" and ")
            ));
        }
        return out;
    }
    // Restricted.
    let ape =
        names_where(&|c| sc(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false));
    if !ape.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            containers_phrase(&ape)
        ));
    }
    let no_drop = names_where(&|c| {
        !sc(c, "capabilities")
            .and_then(|k| k.get("drop"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| d.as_str() == Some("ALL"))
    });
    let mut add_bad: Vec<String> = Vec::new();
    let with_add = names_where(&|c| {
        sc(c, "capabilities")
            .and_then(|k| k.get("add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|a| a.as_str() != Some("NET_BIND_SERVICE"))
    });
    for c in &cs {
        for cap in sc(c, "capabilities")
            .and_then(|k| k.get("add"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if cap != "NET_BIND_SERVICE" && !add_bad.iter().any(|b| b == cap) {
                add_bad.push(cap.to_string());
            }
        }
    }
    let mut caps = Vec::new();
    if !no_drop.is_empty() {
        caps.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&no_drop)
        ));
    }
    if !with_add.is_empty() {
        caps.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&with_add),
            quoted(&add_bad)
        ));
    }
    if !caps.is_empty() {
        out.push(format!("unrestricted capabilities ({})", caps.join("; ")));
    }
    let mut bad_vols: Vec<String> = Vec::new();
    let mut bad_types: Vec<String> = Vec::new();
    for v in &volumes {
        let Some(m) = v.as_object() else { continue };
        for k in m.keys() {
            if k != "name" && !RESTRICTED_VOLUMES.contains(&k.as_str()) {
                bad_vols.push(cname(v));
                if !bad_types.contains(k) {
                    bad_types.push(k.clone());
                }
            }
        }
    }
    if !bad_vols.is_empty() {
        let (noun, verb, tnoun) = if bad_vols.len() == 1 {
            ("volume", "uses", "type")
        } else {
            ("volumes", "use", "types")
        };
        let tnoun = if bad_types.len() > 1 { "types" } else { tnoun };
        out.push(format!(
            "restricted volume types ({noun} {} {verb} restricted volume {tnoun} {})",
            quoted(&bad_vols),
            quoted(&bad_types)
        ));
    }
    let pod_nonroot = spec
        .pointer("/securityContext/runAsNonRoot")
        .and_then(Value::as_bool);
    let mut nonroot = Vec::new();
    if pod_nonroot == Some(false) {
        nonroot.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    let c_false = names_where(&|c| sc(c, "runAsNonRoot").and_then(Value::as_bool) == Some(false));
    if !c_false.is_empty() {
        nonroot.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            containers_phrase(&c_false)
        ));
    }
    if pod_nonroot != Some(true) {
        let unset = names_where(&|c| sc(c, "runAsNonRoot").is_none());
        if !unset.is_empty() {
            nonroot.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&unset)
            ));
        }
    }
    if !nonroot.is_empty() {
        out.push(format!("runAsNonRoot != true ({})", nonroot.join("; ")));
    }
    let mut root = Vec::new();
    if spec
        .pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        == Some(0)
    {
        root.push("pod".to_string());
    }
    let c_root = names_where(&|c| sc(c, "runAsUser").and_then(Value::as_i64) == Some(0));
    if !c_root.is_empty() {
        root.push(containers_phrase(&c_root));
    }
    if !root.is_empty() {
        out.push(format!(
            "runAsUser=0 ({} must not set runAsUser=0)",
            root.join(" and ")
        ));
    }
    let ok_type = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    let mut sec = Vec::new();
    if pod_seccomp.is_some() && !ok_type(pod_seccomp) {
        sec.push(format!(
            "pod must not set securityContext.seccompProfile.type to {:?}",
            pod_seccomp.unwrap_or("")
        ));
    }
    let c_type = |c: &Value| {
        sc(c, "seccompProfile")
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let c_bad = names_where(&|c| c_type(c).is_some_and(|t| !ok_type(Some(&t))));
    if !c_bad.is_empty() {
        sec.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            containers_phrase(&c_bad)
        ));
    }
    if !ok_type(pod_seccomp) {
        let unset = names_where(&|c| c_type(c).is_none());
        if !unset.is_empty() {
            sec.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&unset)
            ));
        }
    }
    if !sec.is_empty() {
        out.push(format!("seccompProfile ({})", sec.join("; ")));
    }
    out
}

/// Whether an update can change what PodSecurity decides (upstream
/// `isSignificantPodUpdate`): the seccomp annotations or a container's image; everything
/// else a pod update may touch is outside the policy.
fn significant_update(pod: &Value, old: &Value) -> bool {
    const SECCOMP_POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
    const SECCOMP_CONTAINER: &str = "container.seccomp.security.alpha.kubernetes.io/";
    let annotation = |o: &Value, k: &str| {
        o.pointer("/metadata/annotations")
            .and_then(|m| m.get(k))
            .cloned()
    };
    if annotation(pod, SECCOMP_POD) != annotation(old, SECCOMP_POD) {
        return true;
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let of = |o: &Value| {
            o.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (new_c, old_c) = (of(pod), of(old));
        if new_c.len() != old_c.len() {
            return true;
        }
        for (c, o) in new_c.iter().zip(&old_c) {
            let key = format!(
                "{SECCOMP_CONTAINER}{}",
                c.get("name").and_then(Value::as_str).unwrap_or("")
            );
            if c.get("image") != o.get("image") || annotation(pod, &key) != annotation(old, &key) {
                return true;
            }
        }
    }
    false
}

/// Refuses a pod that violates its namespace's enforced level; warns of a pod or workload
/// template that violates its warn level.
pub async fn validate(state: &ApiState, a: &Attributes<'_>, obj: &Value) -> Result<()> {
    let Some((pod, is_pod)) = pod_of(a, obj) else {
        return Ok(());
    };
    if a.operation == Operation::Update {
        let unchanged = match a.old {
            Some(old) if is_pod => !significant_update(&pod, old),
            Some(old) => pod_of(a, old).is_some_and(|(o, _)| o == pod),
            None => false,
        };
        if unchanged {
            return Ok(());
        }
    }
    let Some(ns_store) = store_of(state, "", "namespaces") else {
        return Ok(());
    };
    ns_store.wait_own_writes().await?;
    let Some(ns) = ns_store.cache.get(&ns_store.cache.key("", a.namespace)) else {
        return Ok(());
    };
    let ns: Value = serde_json::from_slice(&ns.bytes).unwrap_or(Value::Null);
    let label = |k: &str| {
        ns.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if is_pod {
        if let Some(level_s) = label(ENFORCE) {
            let level = level_of(&level_s);
            let version = label(ENFORCE_VERSION).unwrap_or_else(|| "latest".into());
            let v = violations(&pod, level);
            if !v.is_empty() {
                return Err(a.forbidden(
                    obj,
                    format!(
                        "violates PodSecurity \"{}:{version}\": {}",
                        level_name(level),
                        v.join(", ")
                    ),
                ));
            }
        }
    }
    if let Some(level_s) = label(WARN) {
        let level = level_of(&level_s);
        let version = label(WARN_VERSION).unwrap_or_else(|| "latest".into());
        let v = violations(&pod, level);
        if !v.is_empty() {
            a.warn(format!(
                "would violate PodSecurity \"{}:{version}\": {}",
                level_name(level),
                v.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn restricted_lists_upstream_reasons() {
        let pod = json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}});
        assert_eq!(
            violations(&pod, Level::Restricted).join(", "),
            "privileged (container \"c\" must not set securityContext.privileged=true), \
allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        let good = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        assert!(violations(&good, Level::Restricted).is_empty());
        let host = json!({"spec": {"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]}});
        assert_eq!(
            violations(&host, Level::Baseline),
            vec![
                "host namespaces (hostNetwork=true)",
                "hostPath volumes (volume \"h\")",
                "hostPort (container \"a\" uses hostPort 80)",
            ]
        );
        assert!(violations(&pod, Level::Privileged).is_empty());
    }
}
