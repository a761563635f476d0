//! The ServiceAccount admission plugin (a pod runs as an existing service account and gets
//! the projected `kube-api-access-*` token volume) and the token filler of
//! `kubernetes.io/service-account-token` Secrets (upstream's token controller).

use std::sync::Arc;

use base64::Engine;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{store_of, Attributes};
use crate::auth::serviceaccount::TOKEN_SECRET_TYPE;
use crate::error::{Error, Result};
use crate::handlers::ApiState;
use crate::object;
use crate::registry::store::WriteOptions;

/// Where the token volume is mounted in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap with the cluster CA published in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Lifetime the kubelet asks for the projected token (upstream: 1 h + 7 s).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

async fn get(state: &ApiState, plural: &str, ns: &str, name: &str) -> Result<Option<Value>> {
    let Some(store) = store_of(state, "", plural) else {
        return Ok(None);
    };
    match store.get_value(ns, name).await {
        Ok(v) => Ok(Some(v)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn create_if_missing(state: &ApiState, plural: &str, ns: &str, obj: Value) -> Result<()> {
    let Some(store) = store_of(state, "", plural) else {
        return Ok(());
    };
    match store
        .create(
            ns,
            obj,
            &WriteOptions::internal(crate::registry::store::CONTROLLER_MANAGER),
        )
        .await
    {
        Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes sure a namespace has its `default` ServiceAccount and `kube-root-ca.crt`
/// ConfigMap (upstream's serviceaccount and root-ca-cert-publisher controllers).
pub async fn ensure_namespace_defaults(state: &ApiState, ns: &str) -> Result<()> {
    if get(state, "serviceaccounts", ns, "default")
        .await?
        .is_none()
    {
        create_if_missing(
            state,
            "serviceaccounts",
            ns,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}),
        )
        .await?;
    }
    if get(state, "configmaps", ns, ROOT_CA_CONFIGMAP)
        .await?
        .is_none()
    {
        create_if_missing(
            state,
            "configmaps",
            ns,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": state.security.ca_pem}}),
        )
        .await?;
    }
    Ok(())
}

/// Pod create: the service account must exist (`default` is created on first use); a pod
/// without image pull secrets gets the account's; unless automounting is off, a projected
/// token volume is added and mounted in every container.
pub async fn admit_pod(state: &Arc<ApiState>, a: &Attributes<'_>, pod: &mut Value) -> Result<()> {
    if !object::meta(pod)
        .and_then(|m| m.get("annotations"))
        .and_then(|x| x.get("kubernetes.io/config.mirror"))
        .is_none_or(Value::is_null)
    {
        return Ok(());
    }
    let ns = a.namespace;
    let sa_name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    if sa_name == "default" && !a.dry_run {
        ensure_namespace_defaults(state, ns).await?;
    }
    let Some(sa) = get(state, "serviceaccounts", ns, &sa_name).await? else {
        return Err(a.forbidden(
            pod,
            format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
        ));
    };
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    // A pod naming no pull secrets gets its service account's.
    let sa_secrets: Vec<Value> = sa
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(|n| json!({"name": n}))
        .collect();
    let has_own = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_own && !sa_secrets.is_empty() {
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("imagePullSecrets".into(), Value::Array(sa_secrets));
        }
    }
    if !automount {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else {
        return Ok(());
    };
    // An existing projected volume carrying a service account token is reused.
    let existing = volumes
        .iter()
        .find(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .map(str::to_string);
    let name = match existing {
        Some(n) => n,
        None => {
            let n = format!("kube-api-access-{}", suffix());
            volumes.push(json!({
                "name": n,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
            n
        }
    };
    for key in ["initContainers", "containers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
            {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
        }
    }
    Ok(())
}

/// A new `kubernetes.io/service-account-token` Secret of an existing account gets the
/// account's uid annotation and `token`, `ca.crt` and `namespace` data.
pub async fn fill_token_secret(
    state: &Arc<ApiState>,
    a: &Attributes<'_>,
    secret: &mut Value,
) -> Result<()> {
    if secret.get("type").and_then(Value::as_str) != Some(TOKEN_SECRET_TYPE) {
        return Ok(());
    }
    let Some(tokens) = &state.security.service_accounts else {
        return Ok(());
    };
    let ns = a.namespace;
    let sa_name = secret
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if sa_name.is_empty() {
        return Ok(());
    }
    let Some(sa) = get(state, "serviceaccounts", ns, &sa_name).await? else {
        return Ok(());
    };
    let sa_uid = object::meta_str(&sa, "uid").to_string();
    let meta = object::meta_mut(secret);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        if let Some(g) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
        {
            let n = format!("{g}{}", suffix());
            meta.insert("name".into(), json!(n));
        }
    }
    let secret_name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(ann) = ann.as_object_mut() {
        ann.insert("kubernetes.io/service-account.uid".into(), json!(sa_uid));
    }
    let token = tokens.legacy_token(ns, &secret_name, &sa_name, &sa_uid)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let data = secret
        .as_object_mut()
        .map(|o| o.entry("data").or_insert_with(|| json!({})));
    if let Some(Value::Object(d)) = data {
        d.insert("token".into(), json!(b64(&token)));
        d.insert("ca.crt".into(), json!(b64(&state.security.ca_pem)));
        d.insert("namespace".into(), json!(b64(ns)));
    }
    Ok(())
}
