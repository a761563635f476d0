//! `/stats/summary`: the node's and its running pods' CPU, memory, network, process and
//! filesystem figures in upstream's Summary API shape (`stats/v1alpha1`), from the host's
//! `/proc` and Docker's container stats, for metrics-server and `kubectl get --raw`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bollard::models::{ContainerStatsResponse, ContainerSummaryStateEnum};
use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptions};
use futures::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::{full, text, Body, Context};
use crate::labels;

/// CPU time of the whole host so far (ns, busy time only) and when it was read.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    busy_ns: u64,
}

/// Busy CPU time of the host from `/proc/stat` (user through steal, without idle and
/// iowait), in ns.
fn host_cpu() -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (USER_HZ = 100 ticks a second).
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(CpuSample {
        at: Instant::now(),
        busy_ns: busy * 10_000_000,
    })
}

/// `/proc/meminfo` in bytes.
fn meminfo() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some((k.to_string(), n * 1024))
        })
        .collect()
}

/// FsStats of the filesystem holding `path`.
fn fs_stats(path: &std::path::Path, time: &str) -> Value {
    match rustix::fs::statvfs(path) {
        Ok(s) => {
            let capacity = s.f_blocks * s.f_frsize;
            let available = s.f_bavail * s.f_frsize;
            let used = s.f_blocks.saturating_sub(s.f_bfree) * s.f_frsize;
            json!({
                "time": time,
                "availableBytes": available,
                "capacityBytes": capacity,
                "usedBytes": used,
                "inodesFree": s.f_ffree,
                "inodes": s.f_files,
                "inodesUsed": s.f_files.saturating_sub(s.f_ffree),
            })
        }
        Err(_) => json!({"time": time}),
    }
}

/// Seconds since boot, from `/proc/uptime`.
fn boot_time() -> Option<String> {
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let boot = Timestamp::now().as_second() - up as i64;
    Timestamp::from_second(boot).ok().map(|t| t.to_string())
}

/// One running container of this node and its labels.
struct Running {
    id: String,
    labels: HashMap<String, String>,
    created: i64,
}

/// The running containers of this node's pods.
async fn running(ctx: &Context) -> Result<Vec<Running>, bollard::errors::Error> {
    let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
    filters.insert("label", vec![format!("{}={}", labels::NODE, ctx.node_name)]);
    let opts = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let list = ctx.docker.list_containers(Some(opts)).await?;
    Ok(list
        .into_iter()
        .filter(|c| c.state == Some(ContainerSummaryStateEnum::RUNNING))
        .filter_map(|c| {
            Some(Running {
                id: c.id?,
                labels: c.labels.unwrap_or_default(),
                created: c.created.unwrap_or(0),
            })
        })
        .collect())
}

/// One sample of Docker's stats for container `id` (Docker reads twice, a second apart,
/// so the CPU rate is known).
async fn sample(ctx: &Context, id: &str) -> Option<ContainerStatsResponse> {
    let opts = StatsOptions {
        stream: false,
        one_shot: false,
    };
    let mut s = ctx.docker.stats(id, Some(opts));
    s.next().await?.ok()
}

/// CPUStats of a container sample.
fn cpu(s: &ContainerStatsResponse, time: &str) -> Value {
    let total = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
    };
    let now = total(&s.cpu_stats);
    let before = total(&s.precpu_stats);
    let system = |c: &Option<bollard::models::ContainerCpuStats>| {
        c.as_ref().and_then(|c| c.system_cpu_usage)
    };
    let cpus = s
        .cpu_stats
        .as_ref()
        .and_then(|c| c.online_cpus)
        .filter(|n| *n > 0)
        .unwrap_or(1) as f64;
    let mut v = json!({"time": time});
    if let Some(n) = now {
        v["usageCoreNanoSeconds"] = json!(n);
    }
    // The host's CPU time over all CPUs advanced by `cpus` times the wall time between
    // the two readings.
    if let (Some(n), Some(b), Some(sn), Some(sb)) =
        (now, before, system(&s.cpu_stats), system(&s.precpu_stats))
    {
        if sn > sb && n >= b {
            let wall = (sn - sb) as f64 / cpus;
            v["usageNanoCores"] = json!(((n - b) as f64 / wall * 1e9) as u64);
        }
    }
    v
}

/// MemoryStats of a container sample (cgroup v1 and v2 key names).
fn memory(s: &ContainerStatsResponse, time: &str) -> Value {
    let Some(m) = &s.memory_stats else {
        return json!({"time": time});
    };
    let stats = m.stats.clone().unwrap_or_default();
    let get = |keys: &[&str]| keys.iter().find_map(|k| stats.get(*k).copied());
    let usage = m.usage.unwrap_or(0);
    let inactive = get(&["total_inactive_file", "inactive_file"]).unwrap_or(0);
    let working_set = usage.saturating_sub(inactive);
    let mut v = json!({
        "time": time,
        "usageBytes": usage,
        "workingSetBytes": working_set,
    });
    if let Some(rss) = get(&["total_rss", "rss", "anon"]) {
        v["rssBytes"] = json!(rss);
    }
    if let Some(f) = get(&["total_pgfault", "pgfault"]) {
        v["pageFaults"] = json!(f);
    }
    if let Some(f) = get(&["total_pgmajfault", "pgmajfault"]) {
        v["majorPageFaults"] = json!(f);
    }
    if let Some(limit) = m.limit.filter(|l| *l > 0 && *l < u64::MAX / 2) {
        v["availableBytes"] = json!(limit.saturating_sub(working_set));
    }
    v
}

/// NetworkStats of a sandbox sample: the pod's interfaces.
fn network(s: &ContainerStatsResponse, time: &str) -> Option<Value> {
    let nets = s.networks.as_ref()?;
    let nets: BTreeMap<&String, _> = nets.iter().collect();
    let ifaces: Vec<Value> = nets
        .iter()
        .map(|(name, n)| {
            json!({
                "name": name,
                "rxBytes": n.rx_bytes.unwrap_or(0),
                "rxErrors": n.rx_errors.unwrap_or(0),
                "txBytes": n.tx_bytes.unwrap_or(0),
                "txErrors": n.tx_errors.unwrap_or(0),
            })
        })
        .collect();
    let first = ifaces
        .iter()
        .find(|i| i["name"] == "eth0")
        .or(ifaces.first())?
        .clone();
    let mut v = first;
    v["time"] = json!(time);
    v["interfaces"] = Value::Array(ifaces);
    Some(v)
}

fn sum(values: &[&Value], field: &str) -> Option<u64> {
    let got: Vec<u64> = values.iter().filter_map(|v| v[field].as_u64()).collect();
    (!got.is_empty()).then(|| got.iter().sum())
}

fn unix_time(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A pod's fields so far, its containers' stats and its sandbox's figures.
type PodParts = (Map<String, Value>, Vec<Value>, Option<Value>);

/// The Summary document.
pub async fn summary(ctx: &Context) -> Result<Value, String> {
    let time = Timestamp::now().to_string();
    let containers = running(ctx)
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let samples = futures::future::join_all(containers.iter().map(|c| sample(ctx, &c.id))).await;

    // Pods by uid: their sandbox's sample and their containers' samples.
    let mut pods: BTreeMap<String, PodParts> = BTreeMap::new();
    for (c, s) in containers.iter().zip(samples) {
        let l = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
        let uid = l(labels::POD_UID);
        if uid.is_empty() {
            continue;
        }
        let entry = pods.entry(uid.clone()).or_insert_with(|| {
            let mut meta = Map::new();
            meta.insert(
                "podRef".into(),
                json!({"name": l(labels::POD_NAME), "namespace": l(labels::POD_NAMESPACE), "uid": uid}),
            );
            (meta, Vec::new(), None)
        });
        let Some(s) = s else { continue };
        let name = l(labels::CONTAINER_NAME);
        if name == labels::SANDBOX {
            entry
                .0
                .insert("startTime".into(), json!(unix_time(c.created)));
            entry.2 = Some(json!({
                "network": network(&s, &time),
                "processes": s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
            }));
            continue;
        }
        entry.1.push(json!({
            "name": name,
            "startTime": unix_time(c.created),
            "cpu": cpu(&s, &time),
            "memory": memory(&s, &time),
            "processes": s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        }));
    }
    let pods: Vec<Value> = pods
        .into_values()
        .map(|(mut pod, mut containers, sandbox)| {
            containers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            let cpus: Vec<&Value> = containers.iter().map(|c| &c["cpu"]).collect();
            let mems: Vec<&Value> = containers.iter().map(|c| &c["memory"]).collect();
            let mut cpu = json!({"time": time});
            for f in ["usageNanoCores", "usageCoreNanoSeconds"] {
                if let Some(v) = sum(&cpus, f) {
                    cpu[f] = json!(v);
                }
            }
            let mut mem = json!({"time": time});
            for f in [
                "usageBytes",
                "workingSetBytes",
                "rssBytes",
                "pageFaults",
                "majorPageFaults",
            ] {
                if let Some(v) = sum(&mems, f) {
                    mem[f] = json!(v);
                }
            }
            let mut processes: u64 = containers
                .iter()
                .filter_map(|c| c["processes"].as_u64())
                .sum();
            if let Some(sb) = &sandbox {
                processes += sb["processes"].as_u64().unwrap_or(0);
                if !sb["network"].is_null() {
                    pod.insert("network".into(), sb["network"].clone());
                }
            }
            for c in &mut containers {
                if let Some(o) = c.as_object_mut() {
                    o.remove("processes");
                }
            }
            pod.insert("containers".into(), Value::Array(containers));
            pod.insert("cpu".into(), cpu);
            pod.insert("memory".into(), mem);
            pod.insert("process_stats".into(), json!({"process_count": processes}));
            Value::Object(pod)
        })
        .collect();

    Ok(json!({
        "node": node(ctx, &time).await,
        "pods": pods,
    }))
}

/// NodeStats from the host.
async fn node(ctx: &Context, time: &str) -> Value {
    let now = host_cpu();
    let rate = {
        let mut last = ctx.cpu_sample.lock().unwrap_or_else(|e| e.into_inner());
        // An unreadable /proc/stat keeps the last good sample.
        let prev = match now {
            Some(n) => last.replace(n),
            None => *last,
        };
        match (prev, now) {
            (Some(p), Some(n)) if n.at > p.at && n.busy_ns >= p.busy_ns => {
                let wall = (n.at - p.at).as_nanos() as f64;
                Some(((n.busy_ns - p.busy_ns) as f64 / wall * 1e9) as u64)
            }
            _ => None,
        }
    };
    let mut cpu = json!({"time": time});
    if let Some(n) = now {
        cpu["usageCoreNanoSeconds"] = json!(n.busy_ns);
    }
    if let Some(r) = rate {
        cpu["usageNanoCores"] = json!(r);
    }
    let mem = meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    let free = mem.get("MemFree").copied().unwrap_or(0);
    let root = &ctx.root_dir;
    let fs = fs_stats(root, time);
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    let max_pid: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    json!({
        "nodeName": ctx.node_name,
        "startTime": boot_time(),
        "cpu": cpu,
        "memory": {
            "time": time,
            "availableBytes": available,
            "usageBytes": total.saturating_sub(free),
            "workingSetBytes": total.saturating_sub(available),
        },
        "fs": fs,
        "runtime": {"imageFs": fs_stats(std::path::Path::new("/var/lib/docker"), time)},
        "rlimit": {"time": time, "maxpid": max_pid, "curproc": procs},
    })
}

/// Serves `/stats/summary` (and upstream's `?only_cpu_and_memory=true`, which drops the
/// rest).
pub async fn serve(ctx: &Context, query: &str) -> Response<Body> {
    match summary(ctx).await {
        Ok(mut v) => {
            let only = form_urlencoded::parse(query.as_bytes())
                .any(|(k, val)| k == "only_cpu_and_memory" && val == "true");
            if only {
                keep_cpu_and_memory(&mut v);
            }
            let mut r = Response::new(full(serde_json::to_vec(&v).unwrap_or_default()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal Error: failed to get summary stats: {e}"),
        ),
    }
}

/// Drops all but names, times, CPU and memory.
fn keep_cpu_and_memory(v: &mut Value) {
    let keep = |o: &mut Value, fields: &[&str]| {
        if let Some(m) = o.as_object_mut() {
            m.retain(|k, _| fields.contains(&k.as_str()));
        }
    };
    keep(
        &mut v["node"],
        &["nodeName", "startTime", "cpu", "memory", "systemContainers"],
    );
    if let Some(pods) = v["pods"].as_array_mut() {
        for p in pods {
            keep(p, &["podRef", "startTime", "containers", "cpu", "memory"]);
            if let Some(cs) = p["containers"].as_array_mut() {
                for c in cs {
                    keep(c, &["name", "startTime", "cpu", "memory"]);
                }
            }
        }
    }
}
