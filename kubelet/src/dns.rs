//! A pod's /etc/resolv.conf (from its dnsPolicy and dnsConfig) and /etc/hosts (its
//! hostname), written under the pod's directory and bind-mounted into every container,
//! like upstream's pkg/kubelet/network/dns and the kubelet's managed hosts file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::volumes;

/// Upstream's limits on a resolv.conf (pkg/apis/core/validation: MaxDNSNameservers, MaxDNSSearchPaths).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The kubelet's DNS flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsConfig {
    /// Cluster DNS server addresses written into ClusterFirst pods' resolv.conf (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "10.96.0.10")]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain: pods search `<ns>.svc.<domain> svc.<domain> <domain>`
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The host's resolver configuration, used for dnsPolicy Default (and the extra search
    /// domains of ClusterFirst)
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            cluster_dns: vec![IpAddr::from([10, 96, 0, 10])],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// The parts of a resolv.conf.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text: nameserver, search/domain and options lines.
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(String::from)),
                // The last search or domain line wins, as in the resolver.
                Some("search") | Some("domain") => {
                    r.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => r.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        r
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for n in &self.nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// What the pod's dnsPolicy resolves to (upstream's podDNSType).
#[derive(Debug, PartialEq, Eq)]
enum PodDns {
    Cluster,
    Host,
    None,
}

fn pod_dns_type(pod: &Pod) -> PodDns {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    match spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst")
    {
        "ClusterFirstWithHostNet" => PodDns::Cluster,
        "ClusterFirst" if !host_network => PodDns::Cluster,
        "None" => PodDns::None,
        // ClusterFirst on the host network falls back to Default, as upstream.
        _ => PodDns::Host,
    }
}

/// The pod's resolv.conf: its dnsPolicy applied to `host` (the node's resolv.conf), then
/// its dnsConfig merged in, then upstream's limits.
pub fn resolv_conf(pod: &Pod, cfg: &DnsConfig, host: &ResolvConf) -> ResolvConf {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = cfg.cluster_domain.trim_end_matches('.');
    let mut r = match pod_dns_type(pod) {
        // Without a cluster DNS address a ClusterFirst pod gets the node's (upstream logs
        // "MissingClusterDNS" and does the same).
        PodDns::Cluster if cfg.cluster_dns.is_empty() => host.clone(),
        PodDns::Cluster => {
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ];
            searches.extend(host.searches.iter().cloned());
            ResolvConf {
                nameservers: cfg.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        PodDns::Host => host.clone(),
        PodDns::None => ResolvConf::default(),
    };
    if let Some(dc) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        r.nameservers
            .extend(dc.nameservers.iter().flatten().cloned());
        r.searches.extend(dc.searches.iter().flatten().cloned());
        for o in dc.options.iter().flatten() {
            let Some(name) = o.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let opt = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            // A dnsConfig option replaces the same-named one.
            r.options.retain(|e| e.split(':').next() != Some(name));
            r.options.push(opt);
        }
    }
    dedup(&mut r.nameservers);
    dedup(&mut r.searches);
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    while r.searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS {
        r.searches.pop();
    }
    r
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

/// The pod's hostname and, with a subdomain, its domain (`<subdomain>.<ns>.svc.<domain>`).
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let hostname: String = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())
        .map(|sub| format!("{sub}.{ns}.svc.{}", cluster_domain.trim_end_matches('.')));
    (hostname, domain)
}

/// The pod's /etc/hosts (upstream's managedHostsFileContent); on the host network the
/// node's /etc/hosts (`node_hosts`) stands in for the pod's own lines.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str, node_hosts: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut out = String::new();
    if spec.and_then(|s| s.host_network) == Some(true) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
        if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        let (hostname, domain) = hostname_and_domain(pod, cluster_domain);
        if !pod_ip.is_empty() {
            match domain {
                Some(d) => out.push_str(&format!("{pod_ip}\t{hostname}.{d}\t{hostname}\n")),
                None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
            }
        }
    }
    out
}

/// Writes the pod's resolv.conf and hosts files and returns their mounts for container `c`
/// (none where the container mounts a volume at that path itself). Err: why the files
/// could not be written.
pub async fn container_mounts(
    cfg: &DnsConfig,
    root: &Path,
    uid: &str,
    pod: &Pod,
    pod_ip: &str,
    c: &Container,
) -> Result<Vec<Mount>, String> {
    let dir = volumes::pod_dir(root, uid);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let host = read(&cfg.resolv_conf).await;
    let resolv = resolv_conf(pod, cfg, &ResolvConf::parse(&host)).render();
    let node_hosts = if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        read(Path::new("/etc/hosts")).await
    } else {
        String::new()
    };
    let hosts = hosts_file(pod, pod_ip, &cfg.cluster_domain, &node_hosts);
    let mut mounts = Vec::new();
    for (file, target, content) in [
        ("etc-resolv.conf", "/etc/resolv.conf", resolv),
        ("etc-hosts", "/etc/hosts", hosts),
    ] {
        let own = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == target);
        if own {
            continue;
        }
        let path = dir.join(file);
        write_if_changed(&path, &content)
            .await
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        mounts.push(Mount {
            target: Some(target.into()),
            source: Some(path.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            ..Default::default()
        });
    }
    Ok(mounts)
}

async fn read(path: &Path) -> String {
    tokio::fs::read_to_string(path).await.unwrap_or_else(|e| {
        tracing::debug!(path = %path.display(), error = %e, "reading the host's DNS files");
        String::new()
    })
}

/// Running containers see the file through its inode: rewrite it only when it changes.
async fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if tokio::fs::read_to_string(path).await.ok().as_deref() == Some(content) {
        return Ok(());
    }
    tokio::fs::write(path, content).await?;
    tokio::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }
    fn host() -> ResolvConf {
        ResolvConf::parse(
            "# host\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0\n",
        )
    }
    const C: &str = r#"[{"name": "c", "image": "i"}]"#;
    fn spec(extra: serde_json::Value) -> serde_json::Value {
        let mut s = json!({"containers": serde_json::from_str::<serde_json::Value>(C).unwrap()});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    #[test]
    fn cluster_first() {
        let r = resolv_conf(&pod(spec(json!({}))), &DnsConfig::default(), &host());
        assert_eq!(
            r.render(),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn cluster_first_on_host_network_is_default_unless_with_host_net() {
        let cfg = DnsConfig::default();
        let r = resolv_conf(&pod(spec(json!({"hostNetwork": true}))), &cfg, &host());
        assert_eq!(r, host());
        let r = resolv_conf(
            &pod(spec(
                json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            )),
            &cfg,
            &host(),
        );
        assert_eq!(r.nameservers, ["10.96.0.10"]);
    }

    #[test]
    fn default_is_the_hosts() {
        let r = resolv_conf(
            &pod(spec(json!({"dnsPolicy": "Default"}))),
            &DnsConfig::default(),
            &host(),
        );
        assert_eq!(
            r.render(),
            "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0\n"
        );
    }

    #[test]
    fn none_takes_only_dns_config() {
        let r = resolv_conf(
            &pod(spec(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["a.example", "a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}))),
            &DnsConfig::default(),
            &host(),
        );
        assert_eq!(
            r.render(),
            "nameserver 1.2.3.4\nsearch a.example\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let r = resolv_conf(
            &pod(spec(json!({"dnsConfig": {
                "nameservers": ["10.96.0.10", "1.2.3.4", "5.6.7.8", "9.9.9.9"],
                "searches": ["x.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "3"}]}}))),
            &DnsConfig::default(),
            &host(),
        );
        // Duplicates go, at most three nameservers, a dnsConfig option overrides ndots.
        assert_eq!(r.nameservers, ["10.96.0.10", "1.2.3.4", "5.6.7.8"]);
        assert_eq!(r.searches.last().map(String::as_str), Some("x.example"));
        assert_eq!(r.options, ["ndots:1", "timeout:3"]);
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let p = pod(spec(json!({"hostname": "db-0", "subdomain": "db",
            "hostAliases": [{"ip": "192.0.2.9", "hostnames": ["foo.local", "bar.local"]}]})));
        let h = hosts_file(&p, "10.244.0.5", "cluster.local", "");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("\n10.244.0.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{h}"
        );
        assert!(h.ends_with("# Entries added by HostAliases.\n192.0.2.9\tfoo.local\tbar.local\n"));
        let h = hosts_file(&pod(spec(json!({}))), "10.244.0.6", "cluster.local", "");
        assert!(h.contains("\n10.244.0.6\tweb-0\n"), "{h}");
        let h = hosts_file(
            &pod(spec(json!({"hostNetwork": true}))),
            "192.0.2.2",
            "cluster.local",
            "127.0.0.1 localhost\n192.0.2.2 node-a\n",
        );
        assert_eq!(
            h,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.2 node-a\n"
        );
    }
}
