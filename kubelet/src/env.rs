//! A container's environment: `env` (values, fieldRef, resourceFieldRef, configMapKeyRef,
//! secretKeyRef), `envFrom`, and `$(VAR)` expansion, as upstream's kubelet builds it.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;

use crate::node::Allocatable;

/// Parses a quantity into a number of base units (`500m` → 0.5, `1Ki` → 1024, `1e3` → 1000).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn resource(c: &Container, which: &str, name: &str) -> Option<f64> {
    let r = c.resources.as_ref()?;
    let m: &BTreeMap<String, Quantity> = match which {
        "limits" => r.limits.as_ref()?,
        _ => r.requests.as_ref()?,
    };
    parse_quantity(&m.get(name)?.0)
}

/// Milli-CPU and memory bytes of a container's limits (Docker's cpu quota and memory limit).
pub fn limits(c: &Container) -> (Option<i64>, Option<i64>) {
    (
        resource(c, "limits", "cpu").map(|v| (v * 1000.0).ceil() as i64),
        resource(c, "limits", "memory").map(|v| v as i64),
    )
}

/// Milli-CPU requested (Docker's cpu shares).
pub fn cpu_request(c: &Container) -> Option<i64> {
    resource(c, "requests", "cpu").map(|v| (v * 1000.0).ceil() as i64)
}

/// What env resolution reads besides the pod: config maps and secrets, the pod's addresses.
pub struct EnvContext<'a> {
    pub client: &'a kube::Client,
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub allocatable: Allocatable,
}

fn ns(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_default()
}

async fn config_map(
    ctx: &EnvContext<'_>,
    cache: &mut HashMap<String, Option<ConfigMap>>,
    name: &str,
) -> Result<Option<ConfigMap>, String> {
    if let Some(c) = cache.get(name) {
        return Ok(c.clone());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns(ctx.pod));
    let got = api.get_opt(name).await.map_err(|e| e.to_string())?;
    cache.insert(name.to_string(), got.clone());
    Ok(got)
}

async fn secret(
    ctx: &EnvContext<'_>,
    cache: &mut HashMap<String, Option<Secret>>,
    name: &str,
) -> Result<Option<Secret>, String> {
    if let Some(c) = cache.get(name) {
        return Ok(c.clone());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns(ctx.pod));
    let got = api.get_opt(name).await.map_err(|e| e.to_string())?;
    cache.insert(name.to_string(), got.clone());
    Ok(got)
}

/// The value of a downward-API field path (`metadata.name`, `metadata.labels['k']`, ...).
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    let fmt_map = |m: &Option<BTreeMap<String, String>>| -> String {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(&m.labels),
        "metadata.annotations" => fmt_map(&m.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) in `divisor`
/// units, rounded up; an unset limit is the node's allocatable amount.
pub fn resource_value(
    c: &Container,
    resource_name: &str,
    divisor: Option<&Quantity>,
    alloc: Allocatable,
) -> Result<String, String> {
    let (which, name) = resource_name
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource_name}"))?;
    let mut v = resource(c, which, name);
    if v.is_none() && which == "limits" {
        v = match name {
            "cpu" => Some(alloc.milli_cpu as f64 / 1000.0),
            "memory" => Some(alloc.memory_bytes as f64),
            _ => None,
        };
    }
    let v = v.unwrap_or(0.0);
    let d = divisor
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (v / d).ceil() as i64))
}

/// Expands `$(VAR)` references from `vars`; `$$` is a literal `$`; unknown references stay.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    expand_with(s, |name| vars.get(name).cloned())
}

/// [`expand`] with a lookup function: `None` keeps the reference as written.
pub fn expand_with(s: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if b[i] == b'$' && i + 1 < s.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = lookup(name) {
                        out.push_str(&v);
                    } else {
                        out.push_str(&s[i..i + 3 + end]);
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    s.string_data.as_ref().and_then(|d| d.get(key).cloned())
}

/// The container's environment as `NAME=value` pairs, in order (envFrom first, then env).
/// An error is the CreateContainerConfigError message.
pub async fn container_env(
    ctx: &EnvContext<'_>,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let namespace = ns(ctx.pod);
    let mut cms = HashMap::new();
    let mut secrets = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut HashMap<String, String>,
               k: String,
               v: String| {
        vars.insert(k.clone(), v.clone());
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(ctx, &mut cms, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut out, &mut vars, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(ctx, &mut secrets, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            &mut out,
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(ctx.pod, &f.field_path, ctx.pod_ip, ctx.host_ip)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match &r.container_name {
                    Some(n) if !n.is_empty() => all_containers(ctx.pod)
                        .find(|x| &x.name == n)
                        .ok_or_else(|| format!("container {n} not found"))?,
                    _ => c,
                };
                resource_value(target, &r.resource, r.divisor.as_ref(), ctx.allocatable)?
            } else if let Some(r) = &from.config_map_key_ref {
                match config_map(ctx, &mut cms, &r.name).await? {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match secret(ctx, &mut secrets, &r.name).await? {
                    Some(s) => match secret_value(&s, &r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                r.key, r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            expand(e.value.as_deref().unwrap_or_default(), &vars)
        };
        set(&mut out, &mut vars, e.name.clone(), value);
    }
    Ok(out)
}

/// Init containers, then app containers.
pub fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn expansion() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("a$", &vars), "a$");
    }

    #[test]
    fn resource_fields() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}
        }))
        .expect("container");
        let alloc = Allocatable {
            milli_cpu: 4000,
            memory_bytes: 1 << 30,
        };
        assert_eq!(
            resource_value(&c, "limits.cpu", None, alloc),
            Ok("1".into())
        );
        let m = Quantity("1m".into());
        assert_eq!(
            resource_value(&c, "limits.cpu", Some(&m), alloc),
            Ok("500".into())
        );
        let mi = Quantity("1Mi".into());
        assert_eq!(
            resource_value(&c, "limits.memory", Some(&mi), alloc),
            Ok("64".into())
        );
        assert_eq!(
            resource_value(&c, "requests.memory", None, alloc),
            Ok("0".into())
        );
        let none: Container =
            serde_json::from_value(serde_json::json!({"name": "d"})).expect("container");
        assert_eq!(
            resource_value(&none, "limits.cpu", None, alloc),
            Ok("4".into())
        );
    }
}
