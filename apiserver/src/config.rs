//! API server configuration (flags named like k3s's where k3s has one).

use std::net::IpAddr;
use std::path::PathBuf;

/// Flags of the API server.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Directory holding the embedded database, certificates and kubeconfig
    /// [default: /var/lib/minik8s as root, else ~/.minik8s]
    #[arg(long, short = 'd', env = "MINIK8S_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Port the HTTPS API listens on (0 picks a free port)
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,

    /// Address the HTTPS API listens on
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// etcd endpoints (comma-separated http://host:port URLs) to store state in, instead of
    /// the embedded SQLite store
    #[arg(long, env = "MINIK8S_DATASTORE_ENDPOINT", value_delimiter = ',')]
    pub datastore_endpoint: Vec<String>,

    /// Extra hostnames or IPs to put in the serving certificate
    #[arg(long, value_delimiter = ',')]
    pub tls_san: Vec<String>,

    /// Seconds between background compactions of old revisions
    #[arg(long, default_value_t = 300)]
    pub compaction_interval_seconds: u64,

    /// How many revisions of history compaction keeps behind the newest one
    #[arg(long, default_value_t = 1000)]
    pub compaction_retain_revisions: i64,

    /// Prefix of every storage key (several clusters may share one etcd)
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,

    /// IPv4 range Service cluster IPs are allocated from; its first address is the
    /// `kubernetes` Service's
    #[arg(long, alias = "service-cidr", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,

    /// Port range NodePort Services are allocated from
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,

    /// Address the `kubernetes` Service's endpoints point at [default: the bind address, or
    /// this host's primary address when binding to 0.0.0.0]
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,

    /// Let requests without credentials in as system:anonymous (RBAC decides what they may do)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,

    /// Static bearer tokens: a CSV file of `token,user,uid,"group1,group2"` lines
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,

    /// `iss` of the service-account tokens this server issues
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    pub service_account_issuer: String,

    /// Audiences a token must carry to authenticate to this server [default: the issuer]
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,

    /// An EncryptionConfiguration file (apiserver.config.k8s.io/v1) for Secrets at rest
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,

    /// Write an audit log (JSON lines, Metadata level) to this file
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,

    /// Admission plugins to turn off (comma-separated upstream names)
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
}

impl Config {
    /// The data dir: the flag, or the default for this user.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        default_data_dir()
    }

    /// A config for tests: port 0 on loopback, the given data dir.
    pub fn for_test(data_dir: PathBuf) -> Self {
        Config {
            data_dir: Some(data_dir),
            https_listen_port: 0,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            datastore_endpoint: Vec::new(),
            tls_san: Vec::new(),
            compaction_interval_seconds: 300,
            compaction_retain_revisions: 1000,
            etcd_prefix: "/registry".into(),
            service_cluster_ip_range: "10.96.0.0/12".into(),
            service_node_port_range: "30000-32767".into(),
            advertise_address: None,
            anonymous_auth: true,
            token_auth_file: None,
            service_account_issuer: crate::auth::serviceaccount::DEFAULT_ISSUER.into(),
            api_audiences: Vec::new(),
            encryption_provider_config: None,
            audit_log_path: None,
            disable_admission_plugins: Vec::new(),
        }
    }
}

/// `/var/lib/minik8s` as root, else `~/.minik8s`.
pub fn default_data_dir() -> PathBuf {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if is_root {
        PathBuf::from("/var/lib/minik8s")
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".minik8s")
    }
}
