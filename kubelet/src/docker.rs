//! The Docker Engine as the kubelet's container runtime (bollard): containers of this node
//! found by label, images pulled or (for the infra image) built locally, exec for probes
//! and hooks, and the engine's event stream.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use crate::labels;

/// Errors from the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the Docker Engine at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Docker error as the message upstream shows (the daemon's own message when it gave one).
pub fn message(e: &Error) -> String {
    match e {
        Error::Docker(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
            message.clone()
        }
        Error::Docker(bollard::errors::Error::DockerStreamError { error }) => error.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The Docker Engine, scoped to the containers of one node.
#[derive(Clone)]
pub struct Docker {
    api: bollard::Docker,
    node: String,
    cluster: String,
    version: String,
}

/// A container of this node, as inspected.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    /// The container's name in the pod spec (`POD` for the sandbox).
    pub name: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `init`, `sidecar`, `app` or `sandbox`.
    pub kind: String,
    pub attempt: i32,
    pub running: bool,
    /// Created but never started.
    pub never_started: bool,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The image as the pod spec names it.
    pub image: String,
    /// The image's content id (`sha256:...`).
    pub image_id: String,
    /// The IP on Docker's network (sandboxes).
    pub ip: String,
    pub labels: HashMap<String, String>,
}

fn parse_time(s: Option<&String>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    // Docker reports an unset time as year 1.
    (t.timestamp() > 0).then_some(t)
}

impl ContainerInfo {
    fn from_inspect(c: ContainerInspectResponse) -> ContainerInfo {
        let labels: HashMap<String, String> = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let l = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let state = c.state.unwrap_or_default();
        let ip = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| {
                n.into_values()
                    .filter_map(|e| e.ip_address)
                    .find(|ip| !ip.is_empty())
            })
            .unwrap_or_default();
        ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: l(labels::CONTAINER_NAME),
            pod_uid: l(labels::POD_UID),
            pod_namespace: l(labels::POD_NAMESPACE),
            pod_name: l(labels::POD_NAME),
            kind: l(labels::CONTAINER_KIND),
            attempt: l(labels::ATTEMPT).parse().unwrap_or(0),
            running: state.running.unwrap_or(false),
            never_started: state.status == Some(ContainerStateStatusEnum::CREATED),
            exit_code: state.exit_code.unwrap_or(0) as i32,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
            created_at: c
                .created
                .and_then(|d| serde_json::to_value(d).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .and_then(|s| parse_time(Some(&s))),
            started_at: parse_time(state.started_at.as_ref()),
            finished_at: parse_time(state.finished_at.as_ref()),
            image: c.config.and_then(|c| c.image).unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            ip,
            labels,
        }
    }
}

/// What a container start needs beyond the Docker body.
pub struct ImagePull {
    /// Whether the image was pulled (false: it was present).
    pub pulled: bool,
    pub took: Duration,
}

impl Docker {
    /// Connects and negotiates the API version (Debian's 20.10 speaks 1.41).
    pub async fn connect(endpoint: &str, node: &str) -> Result<Docker> {
        let err = |source| Error::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let api = if let Some(path) = endpoint.strip_prefix("unix://") {
            bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        } else {
            bollard::Docker::connect_with_http(endpoint, 120, bollard::API_DEFAULT_VERSION)
        }
        .map_err(err)?;
        let api = api.negotiate_version().await.map_err(err)?;
        let version = api
            .version()
            .await
            .map_err(err)?
            .version
            .unwrap_or_default();
        Ok(Docker {
            api,
            node: node.to_string(),
            cluster: String::new(),
            version,
        })
    }

    /// Scopes this handle to one cluster's containers too (see [`labels::CLUSTER`]).
    pub fn with_cluster(mut self, cluster: &str) -> Docker {
        self.cluster = cluster.to_string();
        self
    }

    /// The cluster id containers are labelled with (empty: none).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn scope(&self) -> Vec<String> {
        let mut l = vec![format!("{}={}", labels::NODE, self.node)];
        if !self.cluster.is_empty() {
            l.push(format!("{}={}", labels::CLUSTER, self.cluster));
        }
        l
    }

    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The bollard client, for the streaming server.
    pub fn api(&self) -> &bollard::Docker {
        &self.api
    }

    /// The node whose containers this handle sees.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Ids and labels of this node's containers (all of them, or one pod's), running or not.
    pub async fn list(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut label = self.scope();
        if let Some(uid) = pod_uid {
            label.push(format!("{}={uid}", labels::POD_UID));
        }
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label".to_string(), label)]))
            .build();
        Ok(self
            .api
            .list_containers(Some(opts))
            .await?
            .into_iter()
            .map(|c| (c.id.unwrap_or_default(), c.labels.unwrap_or_default()))
            .collect())
    }

    /// Inspects a container; `None` when it is gone.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        match self.api.inspect_container(id, None).await {
            Ok(c) => Ok(Some(ContainerInfo::from_inspect(c))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the image is present; its id when it is.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>> {
        match self.api.inspect_image(image).await {
            Ok(i) => Ok(Some(i.id.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Pulls an image (with registry credentials when given).
    pub async fn pull(
        &self,
        image: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> Result<()> {
        let (repo, tag) = split_image(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut s = self.api.create_image(Some(opts), None, credentials);
        while let Some(item) = s.next().await {
            item?;
        }
        Ok(())
    }

    /// Makes sure the pod sandbox image is present: pulled, or built from the kubelet's
    /// embedded pause program when it cannot be pulled (no registry needed).
    pub async fn ensure_infra_image(&self, image: &str) -> Result<()> {
        if self.image_id(image).await?.is_some() {
            return Ok(());
        }
        // Our own default image is in no registry: build it at once.
        if !image.starts_with("minik8s/pause:") {
            match tokio::time::timeout(Duration::from_secs(30), self.pull(image, None)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    tracing::info!(image, error = %e, "infra image pull failed; building it locally")
                }
                Err(_) => tracing::info!(image, "infra image pull timed out; building it locally"),
            }
        }
        let (repo, tag) = split_image(image);
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![
                "ENTRYPOINT [\"/pause\"]".to_string(),
                "LABEL io.minik8s.built-by=kubelet".to_string(),
            ])
            .build();
        let tar = crate::docker::pause_rootfs();
        let mut s = self.api.create_image(
            Some(opts),
            Some(bollard::body_full(bytes::Bytes::from(tar))),
            None,
        );
        while let Some(item) = s.next().await {
            item?;
        }
        tracing::info!(
            image,
            "built the infra image from the embedded pause program"
        );
        Ok(())
    }

    /// Creates a container; returns its id.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match self
            .api
            .create_container(Some(opts.clone()), body.clone())
            .await
        {
            Ok(r) => Ok(r.id),
            // A leftover of the same name (a kubelet that died between create and record).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                self.remove(name).await?;
                Ok(self.api.create_container(Some(opts), body).await?.id)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        Ok(self.api.start_container(id, None).await?)
    }

    /// Stops a container: its stop signal, then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let opts = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().min(i32::MAX as u64) as i32)
            .build();
        match self.api.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container (killing it if it still runs) and its anonymous volumes.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.api.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a command in a running container; its exit code and (at most 10 KiB of) output.
    pub async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .api
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.api.start_exec(&exec.id, None).await?
        {
            while let Some(chunk) = output.next().await {
                let chunk = chunk?;
                if out.len() < 10 * 1024 {
                    out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                }
            }
        }
        let code = self
            .api
            .inspect_exec(&exec.id)
            .await?
            .exit_code
            .unwrap_or(-1);
        Ok((code, out))
    }

    /// The last `tail` lines of a container's output (for FallbackToLogsOnError).
    pub async fn tail_logs(&self, id: &str, tail: usize) -> Result<String> {
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let mut s = self.api.logs(id, Some(opts));
        let mut out = String::new();
        while let Some(chunk) = s.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
        }
        Ok(out)
    }

    /// Creates a named volume (tmpfs-backed for emptyDir medium Memory).
    pub async fn create_tmpfs_volume(&self, name: &str, size: Option<i64>) -> Result<()> {
        let mut opts = HashMap::from([
            ("type".to_string(), "tmpfs".to_string()),
            ("device".to_string(), "tmpfs".to_string()),
        ]);
        if let Some(s) = size {
            opts.insert("o".into(), format!("size={s}"));
        }
        self.api
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: Some("local".into()),
                driver_opts: Some(opts),
                labels: Some(HashMap::from([(
                    labels::NODE.to_string(),
                    self.node.clone(),
                )])),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .api
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Start and die events of this node's containers, as (pod uid, action).
    pub fn events(&self) -> impl Stream<Item = Result<(String, String)>> + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), self.scope()),
            (
                "event".to_string(),
                vec!["start".to_string(), "die".to_string(), "oom".to_string()],
            ),
        ]);
        let opts = EventsOptionsBuilder::default().filters(&filters).build();
        self.api.events(Some(opts)).map(|e| {
            let e = e?;
            let actor = e.actor.unwrap_or_default();
            let uid = actor
                .attributes
                .and_then(|a| a.get(labels::POD_UID).cloned())
                .unwrap_or_default();
            Ok((uid, e.action.unwrap_or_default()))
        })
    }
}

/// `repo[:tag]` split the way Docker's pull does (a `:` after the last `/` is the tag;
/// `@digest` references keep the digest in the tag position).
pub fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

/// The pause program compiled by build.rs.
static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// A tar archive holding `/pause` (mode 0755): the whole root file system of the infra image.
pub fn pause_rootfs() -> Vec<u8> {
    let mut tar = tar_header("pause", PAUSE.len(), 0o755);
    tar.extend_from_slice(PAUSE);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    // Two zero blocks end the archive.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// One ustar header for a regular file.
fn tar_header(name: &str, size: usize, mode: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let put = |h: &mut [u8], at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_image("localhost:5000/a/b"),
            ("localhost:5000/a/b", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b", "v1")
        );
        assert_eq!(split_image("a@sha256:abc"), ("a", "sha256:abc"));
    }

    #[test]
    fn pause_archive_is_a_tar() {
        let t = pause_rootfs();
        assert_eq!(t.len() % 512, 0);
        assert_eq!(&t[257..262], b"ustar");
        assert!(t.len() > PAUSE.len() + 1024);
        assert_eq!(&t[512..516], b"\x7fELF");
    }
}
