//! Applying rendered rules with `iptables-restore --noflush`, and removing them again.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::render::{
    Plan, FILTER_CHAINS, MAX_CHAINS_PER_RESTORE, NAT_BASE_CHAINS, NAT_CHAIN_PREFIXES,
};

/// Errors running iptables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command could not be started or talked to.
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Jumps from built-in chains into the proxy's chains: (table, chain, rule spec, target),
/// as upstream's kube-proxy installs them.
const JUMPS: [(&str, &str, &[&str], &str); 6] = [
    (
        "filter",
        "INPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
        ],
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
        ],
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        &[
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
        ],
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "PREROUTING",
        &["-m", "comment", "--comment", "kubernetes service portals"],
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        &["-m", "comment", "--comment", "kubernetes service portals"],
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        &["-m", "comment", "--comment", "kubernetes postrouting rules"],
        "KUBE-POSTROUTING",
    ),
];

/// How to run the iptables tools: optionally behind a wrapper such as
/// `ip netns exec <name>`.
#[derive(Debug, Clone, Default)]
pub struct Iptables {
    /// Words run before each iptables command.
    pub prefix: Vec<String>,
}

impl Iptables {
    /// iptables inside the network namespace `name` (through `ip netns exec`).
    pub fn in_netns(name: &str) -> Self {
        Iptables {
            prefix: vec!["ip".into(), "netns".into(), "exec".into(), name.into()],
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> (Command, String) {
        let mut words: Vec<String> = self.prefix.clone();
        words.push(program.into());
        words.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd.kill_on_drop(true);
        (cmd, words.join(" "))
    }

    /// Runs `program args`, feeding `input` on stdin; returns stdout.
    async fn exec(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, Error> {
        let (mut cmd, desc) = self.command(program, args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let spawn = |source| Error::Spawn {
            cmd: desc.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await.map_err(spawn)?;
            drop(stdin);
        }
        let out = child.wait_with_output().await.map_err(spawn)?;
        if !out.status.success() {
            return Err(Error::Failed {
                cmd: desc,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-save -t <table>`.
    pub async fn save(&self, table: &str) -> Result<String, Error> {
        self.exec("iptables-save", &["-t", table], None).await
    }

    /// `iptables-restore --noflush` with `input`.
    pub async fn restore(&self, input: &str) -> Result<(), Error> {
        self.exec("iptables-restore", &["-w", "--noflush"], Some(input))
            .await
            .map(|_| ())
    }

    /// Chains of `table` (from `iptables-save`) that the proxy owns.
    async fn owned_chains(&self, table: &str) -> Result<Vec<String>, Error> {
        let saved = self.save(table).await?;
        Ok(saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| {
                if table == "nat" {
                    NAT_BASE_CHAINS.contains(c)
                        || NAT_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p))
                } else {
                    FILTER_CHAINS.contains(c)
                }
            })
            .map(String::from)
            .collect())
    }

    /// Per-service chains (KUBE-SVC-, KUBE-SEP-, KUBE-EXT-) now in the nat table.
    pub async fn service_chains(&self) -> Result<Vec<String>, Error> {
        let mut chains = self.owned_chains("nat").await?;
        chains.retain(|c| NAT_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)));
        Ok(chains)
    }

    /// Applies `plan` with `iptables-restore --noflush`, rendering each input into `buf`: one
    /// input, or when it declares more than [`MAX_CHAINS_PER_RESTORE`] per-service chains,
    /// batches of those first (see [`Plan::batches`]). The proxy's chains are replaced, stale
    /// ones deleted, nothing else is touched. Then makes sure the jumps from the built-in
    /// chains exist. Returns how many inputs it ran.
    pub async fn apply(&self, plan: &Plan, buf: &mut String) -> Result<usize, Error> {
        self.apply_batched(plan, buf, MAX_CHAINS_PER_RESTORE).await
    }

    /// [`Iptables::apply`] with at most `max_chains` per-service chains per input.
    pub async fn apply_batched(
        &self,
        plan: &Plan,
        buf: &mut String,
        max_chains: usize,
    ) -> Result<usize, Error> {
        let batches = plan.batches(max_chains);
        for r in &batches {
            plan.write_batch(r.clone(), buf);
            self.restore(buf).await?;
        }
        plan.write_final(batches.is_empty(), buf);
        self.restore(buf).await?;
        self.ensure_jumps().await?;
        Ok(batches.len() + 1)
    }

    /// Makes sure each jump exists and comes before every rule of its built-in chain that is
    /// not a jump into DOCKER-USER or another KUBE- chain. Docker inserts its per-network
    /// ACCEPT rules at the top of FORWARD when it creates a network; below them, traffic from
    /// a bridge to a Service without endpoints would be forwarded instead of rejected.
    async fn ensure_jumps(&self) -> Result<(), Error> {
        // Listing is all a sync normally needs: run the six at once.
        let listed =
            futures::future::join_all(JUMPS.iter().map(|&(table, chain, ..)| async move {
                self.exec("iptables", &["-w", "-t", table, "-S", chain], None)
                    .await
            }))
            .await;
        for ((table, chain, spec, target), listed) in JUMPS.into_iter().zip(listed) {
            let rule = |op: &'static str| {
                let mut a = vec!["-w", "-t", table, op, chain];
                if op == "-I" {
                    a.push("1");
                }
                a.extend_from_slice(spec);
                a.extend_from_slice(&["-j", target]);
                a
            };
            if jump_in_front(&listed?, chain, target) {
                continue;
            }
            while self.exec("iptables", &rule("-C"), None).await.is_ok() {
                self.exec("iptables", &rule("-D"), None).await?;
            }
            self.exec("iptables", &rule("-I"), None).await?;
        }
        Ok(())
    }

    /// Removes every jump and chain the proxy made (`minik8s proxy --cleanup`).
    pub async fn cleanup(&self) -> Result<(), Error> {
        for (table, chain, spec, target) in JUMPS {
            let rule = |op: &'static str| {
                let mut a = vec!["-w", "-t", table, op, chain];
                a.extend_from_slice(spec);
                a.extend_from_slice(&["-j", target]);
                a
            };
            while self.exec("iptables", &rule("-C"), None).await.is_ok() {
                self.exec("iptables", &rule("-D"), None).await?;
            }
        }
        let mut text = String::new();
        for table in ["filter", "nat"] {
            let chains = self.owned_chains(table).await?;
            if chains.is_empty() {
                continue;
            }
            text.push_str(&format!("*{table}\n"));
            for c in &chains {
                text.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &chains {
                text.push_str(&format!("-X {c}\n"));
            }
            text.push_str("COMMIT\n");
        }
        if text.is_empty() {
            return Ok(());
        }
        self.restore(&text).await
    }
}

/// Whether `iptables -S <chain>` output has the jump to `target` ahead of every rule that is
/// not itself a jump to DOCKER-USER or a KUBE- chain.
fn jump_in_front(listed: &str, chain: &str, target: &str) -> bool {
    let prefix = format!("-A {chain} ");
    let ours = format!("-j {target}");
    for rule in listed.lines().filter(|l| l.starts_with(&prefix)) {
        if rule.ends_with(&ours) {
            return true;
        }
        let benign = rule.ends_with("-j DOCKER-USER")
            || rule
                .rsplit_once(" -j ")
                .is_some_and(|(_, t)| t.starts_with("KUBE-"));
        if !benign {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_must_precede_dockers_rules() {
        let ours = "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
        let front = format!(
            "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n{ours}\n-A FORWARD -o br-1 -j DOCKER\n"
        );
        assert!(jump_in_front(&front, "FORWARD", "KUBE-SERVICES"));
        let behind = format!("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -i br-1 ! -o br-1 -j ACCEPT\n{ours}\n");
        assert!(!jump_in_front(&behind, "FORWARD", "KUBE-SERVICES"));
        assert!(!jump_in_front(
            "-P FORWARD DROP\n",
            "FORWARD",
            "KUBE-SERVICES"
        ));
        let other_kube = format!(
            "-A OUTPUT -j KUBE-FIREWALL\n{}",
            ours.replace("FORWARD", "OUTPUT")
        );
        assert!(jump_in_front(&other_kube, "OUTPUT", "KUBE-SERVICES"));
    }
}
