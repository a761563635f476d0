//! Pod volumes on the node: directories under `<root-dir>/pods/<uid>/volumes/` bind-mounted
//! into containers, config map, secret, downward API and projected contents written
//! atomically (`..data` symlink swap, as upstream's atomic writer), emptyDir medium Memory
//! as a tmpfs Docker volume shared by the pod's containers. Projected service-account tokens
//! are bound tokens the kubelet requests for the pod (TokenRequest) and renews before 80%
//! of their lifetime, as upstream's token manager.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::api::PostParams;
use kube::Api;
use parking_lot::Mutex;

use crate::docker::Docker;
use crate::env;
use crate::node::Allocatable;

/// Where a volume lives on the node once set up.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// A host directory or file, bind-mounted.
    Host { path: PathBuf, read_only: bool },
    /// A Docker named volume (tmpfs).
    DockerVolume(String),
}

/// The pod's directory on the node.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// Docker volume name of a pod's memory-backed emptyDir.
fn tmpfs_volume_name(uid: &str, vol: &str) -> String {
    format!("k8s_{uid}_{vol}")
}

type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Lifetime of a projected token whose source gives none (the API's default).
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// A token is renewed a day after issue at the latest, however long it lives.
const MAX_TOKEN_AGE_SECONDS: i64 = 24 * 60 * 60;

/// The bound service-account tokens of one pod's projected volumes, kept between syncs
/// so a token is requested again only when it is due for renewal.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<String, CachedToken>>);

#[derive(Clone)]
struct CachedToken {
    token: String,
    /// Unix seconds after which the token is requested again.
    refresh_at: i64,
    /// Unix seconds after which the token is no longer valid.
    expires_at: i64,
}

/// When a token issued at `issued` and valid until `expires` (unix seconds) is renewed:
/// once 80% of its lifetime has passed, and no later than a day after issue.
pub fn token_refresh_at(issued: i64, expires: i64) -> i64 {
    let lifetime = (expires - issued).max(0);
    (issued + lifetime * 8 / 10).min(issued + MAX_TOKEN_AGE_SECONDS)
}

/// What setting up volumes reads: the API for config maps, secrets and claims.
pub struct VolumeContext<'a> {
    pub client: &'a kube::Client,
    pub docker: &'a Docker,
    pub root: &'a Path,
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub allocatable: Allocatable,
    pub tokens: &'a TokenCache,
}

impl VolumeContext<'_> {
    fn ns(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }
    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }
}

/// The files of a config map or secret volume: all keys, or the listed items.
/// `missing` words the error for a listed key that does not exist (upstream's wording).
fn items_to_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    missing: &str,
    optional: bool,
) -> Result<Files, String> {
    let mut files = Files::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                        files.insert(it.path.clone(), (v.clone(), mode));
                    }
                    None if optional => {}
                    None => return Err(format!("{missing}: {}", it.key)),
                }
            }
        }
        _ => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone(), default_mode));
            }
        }
    }
    Ok(files)
}

async fn config_map_files(
    ctx: &VolumeContext<'_>,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
) -> Result<Files, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.ns());
    let cm = api.get_opt(name).await.map_err(|e| e.to_string())?;
    let Some(cm) = cm else {
        if optional {
            return Ok(Files::new());
        }
        return Err(format!("configmap \"{name}\" not found"));
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        data.insert(k, v.0);
    }
    items_to_files(
        &data,
        items,
        default_mode,
        "configmap references non-existent config key",
        optional,
    )
}

async fn secret_files(
    ctx: &VolumeContext<'_>,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
) -> Result<Files, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.ns());
    let s = api.get_opt(name).await.map_err(|e| e.to_string())?;
    let Some(s) = s else {
        if optional {
            return Ok(Files::new());
        }
        return Err(format!("secret \"{name}\" not found"));
    };
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    items_to_files(
        &data,
        items,
        default_mode,
        "references non-existent secret key",
        optional,
    )
}

/// The token of a projected `serviceAccountToken` source: the cached one until it is due
/// for renewal, else a new TokenRequest for the pod's service account, bound to the pod,
/// with the source's audience (none: the API server's) and lifetime. A failed renewal keeps
/// serving the cached token while it is still valid.
async fn service_account_token(
    ctx: &VolumeContext<'_>,
    volume: &str,
    src: &ServiceAccountTokenProjection,
) -> Result<Vec<u8>, String> {
    let audience = src.audience.clone().filter(|a| !a.is_empty());
    let expiration = src
        .expiration_seconds
        .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS);
    let key = format!(
        "{volume}/{}|{}|{expiration}",
        src.path,
        audience.as_deref().unwrap_or_default()
    );
    let now = chrono::Utc::now().timestamp();
    let cached = ctx.tokens.0.lock().get(&key).cloned();
    if let Some(t) = &cached {
        if now < t.refresh_at {
            return Ok(t.token.clone().into_bytes());
        }
    }
    let sa = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: ctx.pod.metadata.name.clone(),
                uid: ctx.pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ctx.ns());
    let issued = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .map_err(|e| e.to_string())
        .and_then(|tr| {
            tr.status
                .filter(|s| !s.token.is_empty())
                .ok_or_else(|| "the TokenRequest returned no token".to_string())
        });
    let status = match issued {
        Ok(s) => s,
        Err(e) => {
            if let Some(t) = cached.filter(|t| now < t.expires_at) {
                tracing::warn!(volume, service_account = %sa, error = %e, "renewing the service account token failed; the current one is still valid");
                return Ok(t.token.into_bytes());
            }
            return Err(format!("failed to fetch token: {e}"));
        }
    };
    let expires_at = status.expiration_timestamp.0.as_second();
    let refresh_at = token_refresh_at(now, expires_at);
    tracing::debug!(volume, service_account = %sa, expires_at, refresh_at, "requested a service account token");
    ctx.tokens.0.lock().insert(
        key,
        CachedToken {
            token: status.token.clone(),
            refresh_at,
            expires_at,
        },
    );
    Ok(status.token.into_bytes())
}

fn downward_files(
    ctx: &VolumeContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Files, String> {
    let mut files = Files::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            env::field_value(ctx.pod, &f.field_path, ctx.pod_ip, ctx.host_ip)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = env::all_containers(ctx.pod)
                .find(|c| c.name == name)
                .ok_or_else(|| format!("container {name} not found"))?;
            env::resource_value(c, &r.resource, r.divisor.as_ref(), ctx.allocatable)?
        } else {
            String::new()
        };
        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
        files.insert(it.path.clone(), (value.into_bytes(), mode));
    }
    Ok(files)
}

/// Writes `files` under `dir` the way upstream's atomic writer does: a fresh timestamped
/// directory, `..data` pointing at it (swapped by rename), and one symlink per top-level
/// name into `..data`. Readers never see a half-written set. Unchanged contents are left alone.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    let old = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old {
        if same_contents(&dir.join(old), files) {
            return Ok(());
        }
    }
    let ts = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%9f"));
    let new_dir = dir.join(&ts);
    std::fs::create_dir_all(&new_dir)?;
    for (rel, (content, mode)) in files {
        let p = new_dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for t in &top {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(t), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        if !top.contains(&name) && entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old {
        if old != Path::new(&ts) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn same_contents(dir: &Path, files: &Files) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut count = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            return false;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            count += 1;
            let Ok(rel) = p.strip_prefix(dir) else {
                return false;
            };
            let Some((content, mode)) = files.get(&rel.to_string_lossy().into_owned()) else {
                return false;
            };
            let same_mode = std::fs::metadata(&p)
                .map(|m| m.permissions().mode() & 0o7777 == *mode)
                .unwrap_or(false);
            if !same_mode || std::fs::read(&p).ok().as_ref() != Some(content) {
                return false;
            }
        }
    }
    count == files.len()
}

async fn write_files(dir: PathBuf, files: Files) -> Result<(), String> {
    tokio::task::spawn_blocking(move || write_atomic(&dir, &files))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing volume files: {e}"))
}

async fn check_host_path(path: &str, typ: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = tokio::fs::metadata(path).await;
    let fail = |what: &str| Err(format!("hostPath type check failed: {path} is not {what}"));
    match typ {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                tokio::fs::create_dir_all(path)
                    .await
                    .map_err(|e| format!("creating hostPath {path}: {e}"))?;
                let _ = tokio::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .await;
                return Ok(());
            }
            if meta.map(|m| m.is_dir()).unwrap_or(false) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = Path::new(path).parent() {
                    let _ = tokio::fs::create_dir_all(parent).await;
                }
                tokio::fs::write(path, b"")
                    .await
                    .map_err(|e| format!("creating hostPath {path}: {e}"))?;
                let _ = tokio::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .await;
                return Ok(());
            }
            if meta.map(|m| m.is_file()).unwrap_or(false) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("a directory"),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("a file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(format!("hostPath type {other:?} is not supported")),
    }
}

async fn claim_path(ctx: &VolumeContext<'_>, claim: &str) -> Result<PathBuf, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ctx.ns());
    let pvc = pvcs
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("PersistentVolumeClaim is not bound: \"{claim}\""))?;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = pvs
        .get_opt(&pv_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(h) = spec.host_path {
        check_host_path(&h.path, h.type_.as_deref().unwrap_or_default()).await?;
        return Ok(h.path.into());
    }
    if let Some(l) = spec.local {
        return Ok(l.path.into());
    }
    Err(format!(
        "persistentvolume \"{pv_name}\" is neither hostPath nor local: not supported by this kubelet"
    ))
}

/// Sets up (or refreshes) every volume of the pod. An error is the FailedMount message.
pub async fn prepare(ctx: &VolumeContext<'_>) -> Result<HashMap<String, Prepared>, String> {
    let uid = ctx.uid();
    let base = pod_dir(ctx.root, &uid).join("volumes");
    let mut out = HashMap::new();
    let volumes: &[Volume] = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    for v in volumes {
        let dir = |plugin: &str| base.join(format!("kubernetes.io~{plugin}")).join(&v.name);
        let prepared = if let Some(e) = &v.empty_dir {
            if e.medium.as_deref() == Some("Memory") {
                let name = tmpfs_volume_name(&uid, &v.name);
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| env::parse_quantity(&q.0))
                    .map(|s| s as i64);
                ctx.docker
                    .create_tmpfs_volume(&name, size)
                    .await
                    .map_err(|e| format!("creating tmpfs for emptyDir {}: {e}", v.name))?;
                Prepared::DockerVolume(name)
            } else {
                let d = dir("empty-dir");
                tokio::fs::create_dir_all(&d)
                    .await
                    .map_err(|e| format!("creating emptyDir {}: {e}", v.name))?;
                let _ = tokio::fs::set_permissions(
                    &d,
                    std::os::unix::fs::PermissionsExt::from_mode(0o777),
                )
                .await;
                Prepared::Host {
                    path: d,
                    read_only: false,
                }
            }
        } else if let Some(h) = &v.host_path {
            check_host_path(&h.path, h.type_.as_deref().unwrap_or_default()).await?;
            Prepared::Host {
                path: h.path.clone().into(),
                read_only: false,
            }
        } else if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let files = config_map_files(
                ctx,
                &c.name,
                c.items.as_ref(),
                mode,
                c.optional == Some(true),
            )
            .await?;
            let d = dir("configmap");
            write_files(d.clone(), files).await?;
            Prepared::Host {
                path: d,
                read_only: true,
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let files =
                secret_files(ctx, &name, s.items.as_ref(), mode, s.optional == Some(true)).await?;
            let d = dir("secret");
            write_files(d.clone(), files).await?;
            Prepared::Host {
                path: d,
                read_only: true,
            }
        } else if let Some(dapi) = &v.downward_api {
            let mode = dapi.default_mode.unwrap_or(0o644) as u32;
            let files = downward_files(ctx, dapi.items.as_deref().unwrap_or_default(), mode)?;
            let d = dir("downward-api");
            write_files(d.clone(), files).await?;
            Prepared::Host {
                path: d,
                read_only: true,
            }
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(0o644) as u32;
            let mut files = Files::new();
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    files.extend(
                        config_map_files(
                            ctx,
                            &c.name,
                            c.items.as_ref(),
                            mode,
                            c.optional == Some(true),
                        )
                        .await?,
                    );
                }
                if let Some(s) = &src.secret {
                    files.extend(
                        secret_files(
                            ctx,
                            &s.name,
                            s.items.as_ref(),
                            mode,
                            s.optional == Some(true),
                        )
                        .await?,
                    );
                }
                if let Some(d) = &src.downward_api {
                    files.extend(downward_files(
                        ctx,
                        d.items.as_deref().unwrap_or_default(),
                        mode,
                    )?);
                }
                if let Some(t) = &src.service_account_token {
                    let token = service_account_token(ctx, &v.name, t).await?;
                    files.insert(t.path.clone(), (token, mode));
                }
            }
            let d = dir("projected");
            write_files(d.clone(), files).await?;
            Prepared::Host {
                path: d,
                read_only: true,
            }
        } else if let Some(c) = &v.persistent_volume_claim {
            let path = claim_path(ctx, &c.claim_name).await?;
            Prepared::Host {
                path,
                read_only: c.read_only == Some(true),
            }
        } else {
            return Err(format!("volume {:?}: this kubelet supports emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim", v.name));
        };
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

/// Docker mounts for a container's volumeMounts. An error is the CreateContainerConfigError message.
/// `env` is the container's environment, for `subPathExpr`.
pub async fn container_mounts(
    c: &Container,
    volumes: &HashMap<String, Prepared>,
    env: &[(String, String)],
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let p = volumes.get(&m.name).ok_or_else(|| {
            format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            )
        })?;
        let sub = sub_path(m, env)?;
        if sub.starts_with('/') {
            return Err(format!(
                "error SubPath `{sub}` must not be an absolute path"
            ));
        }
        if sub.split('/').any(|s| s == "..") {
            return Err(format!(
                "unable to provision SubPath `{sub}`: must not contain '..'"
            ));
        }
        let mount = match p {
            Prepared::Host { path, read_only } => {
                let mut src = path.clone();
                if !sub.is_empty() {
                    src = src.join(&sub);
                    if tokio::fs::symlink_metadata(&src).await.is_err() {
                        tokio::fs::create_dir_all(&src)
                            .await
                            .map_err(|e| format!("creating subPath {}: {e}", src.display()))?;
                    }
                }
                Mount {
                    target: Some(m.mount_path.clone()),
                    source: Some(src.to_string_lossy().into_owned()),
                    typ: Some(MountType::BIND),
                    read_only: Some(*read_only || m.read_only == Some(true)),
                    ..Default::default()
                }
            }
            Prepared::DockerVolume(name) => {
                if !sub.is_empty() {
                    return Err(format!(
                        "subPath is not supported for emptyDir {:?} with medium Memory",
                        m.name
                    ));
                }
                Mount {
                    target: Some(m.mount_path.clone()),
                    source: Some(name.clone()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(m.read_only == Some(true)),
                    ..Default::default()
                }
            }
        };
        mounts.push(mount);
    }
    Ok(mounts)
}

/// A mount's subPath, or its subPathExpr expanded from the container's environment like
/// upstream's `ExpandContainerVolumeMounts`: `$(VAR)` references, `$$` escapes, and a
/// reference to a variable that is unset or empty is an error.
fn sub_path(
    m: &k8s_openapi::api::core::v1::VolumeMount,
    env: &[(String, String)],
) -> Result<String, String> {
    let expr = m.sub_path_expr.as_deref().unwrap_or_default();
    let plain = m.sub_path.as_deref().unwrap_or_default();
    if expr.is_empty() {
        return Ok(plain.to_string());
    }
    if !plain.is_empty() {
        return Err("subPathExpr and subPath are mutually exclusive".into());
    }
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let mut missing = std::collections::BTreeSet::new();
    let expanded = crate::env::expand_with(expr, |name| match vars.get(name) {
        Some(v) if !v.is_empty() => Some(v.clone()),
        _ => {
            missing.insert(name.to_string());
            Some(String::new())
        }
    });
    if !missing.is_empty() {
        let names: Vec<String> = missing.into_iter().collect();
        return Err(format!("missing value for {}", names.join(", ")));
    }
    Ok(expanded)
}

/// Removes a pod's directory and its tmpfs volumes.
pub async fn cleanup(root: &Path, docker: &Docker, pod: Option<&Pod>, uid: &str) {
    if let Some(pod) = pod {
        for v in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or_default()
        {
            if v.empty_dir.as_ref().and_then(|e| e.medium.as_deref()) == Some("Memory") {
                if let Err(e) = docker.remove_volume(&tmpfs_volume_name(uid, &v.name)).await {
                    tracing::warn!(uid, volume = %v.name, error = %e, "removing tmpfs volume");
                }
            }
        }
    }
    let dir = pod_dir(root, uid);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(uid, dir = %dir.display(), error = %e, "removing pod directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn tokens_are_renewed_at_80_percent_of_their_lifetime_or_after_a_day() {
        assert_eq!(token_refresh_at(1000, 1000 + 3600), 1000 + 2880);
        assert_eq!(token_refresh_at(0, 600), 480);
        assert_eq!(
            token_refresh_at(0, 10 * MAX_TOKEN_AGE_SECONDS),
            MAX_TOKEN_AGE_SECONDS
        );
        assert_eq!(
            token_refresh_at(50, 40),
            50,
            "an expired token is renewed now"
        );
    }

    #[test]
    fn atomic_writer_swaps_data() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("v");
        write_atomic(&d, &files(&[("a", "1"), ("b/c", "2")])).expect("write");
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "1");
        assert_eq!(std::fs::read_to_string(d.join("b/c")).expect("b/c"), "2");
        let first = std::fs::read_link(d.join("..data")).expect("..data");
        write_atomic(&d, &files(&[("a", "1"), ("b/c", "2")])).expect("rewrite");
        assert_eq!(
            std::fs::read_link(d.join("..data")).expect("..data"),
            first,
            "unchanged data is not rewritten"
        );
        write_atomic(&d, &files(&[("a", "3")])).expect("update");
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "3");
        assert!(
            std::fs::symlink_metadata(d.join("b")).is_err(),
            "removed key's link is gone"
        );
        assert!(!d.join(&first).exists(), "old data directory removed");
        assert_eq!(
            std::fs::read_link(d.join("a")).expect("link"),
            Path::new("..data/a")
        );
    }

    #[test]
    fn sub_path_expr_expands_from_env() {
        let m = |sub: Option<&str>, expr: Option<&str>| k8s_openapi::api::core::v1::VolumeMount {
            name: "v".into(),
            mount_path: "/v".into(),
            sub_path: sub.map(str::to_string),
            sub_path_expr: expr.map(str::to_string),
            ..Default::default()
        };
        let env = vec![
            ("POD_NAME".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ];
        assert_eq!(sub_path(&m(Some("a"), None), &env).as_deref(), Ok("a"));
        assert_eq!(
            sub_path(&m(None, Some("logs/$(POD_NAME)/$$(POD_NAME)")), &env).as_deref(),
            Ok("logs/web-0/$(POD_NAME)")
        );
        assert_eq!(
            sub_path(&m(None, Some("$(NOPE)/$(EMPTY)/$(POD_NAME)")), &env),
            Err("missing value for EMPTY, NOPE".to_string())
        );
        assert_eq!(
            sub_path(&m(Some("a"), Some("$(POD_NAME)")), &env),
            Err("subPathExpr and subPath are mutually exclusive".to_string())
        );
    }
}
