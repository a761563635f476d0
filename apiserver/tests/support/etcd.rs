//! A real etcd for tests: `TestEtcd::start()` runs the `etcd` binary (Debian's
//! `etcd-server`) on free loopback ports with a temporary data dir; dropping it kills it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd, killed on drop.
pub struct TestEtcd {
    /// Client URL, e.g. `http://127.0.0.1:12345`.
    pub endpoint: String,
    peer: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// The etcd binary: `$ETCD_BIN`, `/usr/bin/etcd`, or `etcd` on `PATH`.
fn etcd_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(bin);
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("etcd"))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "etcd binary not found (looked at $ETCD_BIN, /usr/bin/etcd and PATH); \
                 install Debian's etcd-server package: apt-get install etcd-server"
            )
        })
}

fn spawn(dir: &tempfile::TempDir, endpoint: &str, peer: &str) -> Child {
    let bin = etcd_binary();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("etcd.log"))
        .expect("etcd log file");
    Command::new(&bin)
        .arg("--name=test")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={endpoint}"))
        .arg(format!("--advertise-client-urls={endpoint}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=test={peer}"))
        .arg("--initial-cluster-state=new")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("etcd log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

impl TestEtcd {
    /// Starts etcd and waits until it answers requests.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let (client_port, peer_port) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = spawn(&dir, &endpoint, &peer);
        let mut etcd = TestEtcd {
            endpoint,
            peer,
            child,
            dir,
        };
        etcd.wait_ready().await;
        etcd
    }

    /// Kills etcd and starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir, &self.endpoint, &self.peer);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "etcd exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(1));
            let last_err = match etcd_client::Client::connect([&self.endpoint], Some(opts)).await {
                Ok(mut client) => match client.get("health-probe", None).await {
                    Ok(_) => return,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "etcd at {} not ready after {START_TIMEOUT:?}: {last_err}; log:\n{}",
                    self.endpoint,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// etcd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
