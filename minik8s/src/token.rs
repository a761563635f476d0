//! `minik8s token create|list|delete`: join tokens for `minik8s agent`, as `k3s token` and
//! `kubeadm token` manage them: bootstrap token Secrets `kube-system/bootstrap-token-<id>`
//! with an `expiration`, after which the API server refuses them and the token cleaner
//! deletes them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use apiserver::auth::bootstrap_token as bt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// Flags shared by the token commands.
#[derive(clap::Args, Clone)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,

    /// Kubeconfig of a cluster admin [default: <data dir>/kubeconfig.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The server's data dir, for its kubeconfig [default: /var/lib/minik8s as root, else
    /// ~/.minik8s]
    #[arg(long, global = true, value_name = "DIR", env = "MINIK8S_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The token commands.
#[derive(clap::Subcommand, Clone)]
pub enum TokenCommand {
    /// Create a join token and print it (K10<ca hash>::<id>.<secret>, for `minik8s agent --token`)
    Create {
        /// How long the token is valid (e.g. 30m, 24h, 7d); 0 means it never expires
        #[arg(long, value_parser = parse_ttl, default_value = "24h")]
        ttl: Duration,
        /// A description shown by `minik8s token list`
        #[arg(long)]
        description: Option<String>,
        /// The token itself (<id>.<secret>, [a-z0-9]{6}.[a-z0-9]{16}); random when not given
        token: Option<String>,
    },
    /// List the bootstrap tokens: id, time to live, expiry, usages, description, extra groups
    #[command(alias = "ls")]
    List,
    /// Delete bootstrap tokens, by id or whole token; agents already joined keep working
    Delete {
        /// Token ids (<id>) or tokens (<id>.<secret> or K10...::<id>.<secret>)
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// `30s`, `30m`, `24h`, `7d` (or `1h30m`), and `0` for no expiry.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30m, 24h, 7d or 0"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {c:?}")),
        };
    }
    if !num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: a number needs a unit (s, m, h, d)"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Runs a token command.
pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let path = args.kubeconfig.clone().unwrap_or_else(|| {
        args.data_dir
            .clone()
            .unwrap_or_else(apiserver::config::default_data_dir)
            .join("kubeconfig.yaml")
    });
    let client = client::from_kubeconfig(&path).await.with_context(|| {
        format!(
            "cannot use the admin kubeconfig {}: run this on the server (or pass --kubeconfig / --data-dir)",
            path.display()
        )
    })?;
    let secrets: Api<Secret> = Api::namespaced(client, bt::NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            token,
        } => {
            let (id, secret) = match token.as_deref().map(str::trim) {
                Some(t) => match bt::parse(bt::split_full(t).1) {
                    Some((i, s)) => (i.to_string(), s.to_string()),
                    None => bail!(
                        "{t:?} is not a bootstrap token: expected <id>.<secret> matching [a-z0-9]{{6}}.[a-z0-9]{{16}}"
                    ),
                },
                None => bt::generate(),
            };
            let expires = (!ttl.is_zero())
                .then(|| chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            let description = description
                .unwrap_or_else(|| "minik8s join token (minik8s token create)".to_string());
            let obj = bt::token_secret(&id, &secret, &description, expires.as_deref());
            let obj: Secret = serde_json::from_value(obj)?;
            secrets
                .create(&PostParams::default(), &obj)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) if s.code == 409 => {
                        anyhow::anyhow!("a token with id {id} already exists")
                    }
                    e => anyhow::Error::new(e).context("cannot create the token's Secret"),
                })?;
            let ca = controllers::root_ca::ca_from_kubeconfig(Some(&path))?;
            let hash =
                apiserver::pki::ca_cert_hash(&ca).context("the kubeconfig's CA cannot be read")?;
            let full = format!(
                "{}{}::{id}.{secret}",
                bt::FULL_TOKEN_PREFIX,
                hash.trim_start_matches("sha256:")
            );
            println!("{full}");
            let server = kube::config::Kubeconfig::read_from(&path)
                .ok()
                .and_then(|kc| kc.clusters.into_iter().next())
                .and_then(|c| c.cluster)
                .and_then(|c| c.server)
                .unwrap_or_else(|| "https://<server>:<port>".to_string());
            eprintln!(
                "Join a node with: minik8s agent --server {server} --token <the token above>"
            );
            match expires {
                Some(t) => eprintln!("The token expires at {t}."),
                None => {
                    eprintln!("The token never expires; delete it with: minik8s token delete {id}")
                }
            }
        }
        TokenCommand::List => {
            let list = secrets
                .list(&ListParams::default().fields(&format!("type={}", bt::SECRET_TYPE)))
                .await
                .context("cannot list the bootstrap tokens")?;
            let now = chrono::Utc::now();
            let data = |s: &Secret, k: &str| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default()
            };
            let mut rows = vec![[
                "TOKEN".to_string(),
                "TTL".into(),
                "EXPIRES".into(),
                "USAGES".into(),
                "DESCRIPTION".into(),
                "EXTRA GROUPS".into(),
            ]];
            for s in &list.items {
                let id = data(s, "token-id");
                if id.is_empty() {
                    continue;
                }
                let exp = data(s, "expiration");
                let ttl = match chrono::DateTime::parse_from_rfc3339(&exp) {
                    Ok(t) if t <= now => "<expired>".to_string(),
                    Ok(t) => human(t.signed_duration_since(now).num_seconds()),
                    Err(_) => "<forever>".to_string(),
                };
                let usages: Vec<&str> = ["authentication", "signing"]
                    .into_iter()
                    .filter(|u| data(s, &format!("usage-bootstrap-{u}")) == "true")
                    .collect();
                let or_none = |v: String| if v.is_empty() { "<none>".into() } else { v };
                rows.push([
                    format!("{id}.<secret>"),
                    ttl,
                    or_none(exp),
                    or_none(usages.join(",")),
                    or_none(data(s, "description")),
                    or_none(data(s, "auth-extra-groups")),
                ]);
            }
            let widths: Vec<usize> = (0..6)
                .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                .collect();
            for r in rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
        TokenCommand::Delete { tokens } => {
            for t in tokens {
                let t = bt::split_full(t.trim()).1;
                let id = t.split_once('.').map_or(t, |(i, _)| i);
                let name = format!("bootstrap-token-{id}");
                match secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => println!("bootstrap token {id:?} deleted"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        bail!("bootstrap token {id:?} not found")
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting {name}"))),
                }
            }
        }
    }
    Ok(())
}

/// kubeadm's TTL column: `23h`, `59m`, `6d`.
fn human(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ttls_parse_like_kubeadm() {
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("10").unwrap_err().contains("needs a unit"));
        assert!(parse_ttl("3y").unwrap_err().contains("unknown unit"));
        assert_eq!(human(86399), "23h");
        assert_eq!(human(3 * 86400 + 5), "3d");
        assert_eq!(human(59), "59s");
    }
}
