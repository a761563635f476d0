//! Registry credentials from image pull secrets, like upstream's `pkg/credentialprovider`:
//! a keyring of the `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` Secrets a
//! pod names, looked up by the image's registry host (globs allowed) and path prefix, the
//! most specific entry first.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

/// Docker Hub's registry, as image references without a registry host mean it.
const DOCKER_HUB: &str = "docker.io";

/// One registry login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// The registry the login is for, as the secret names it (`serveraddress`).
    pub server: String,
}

impl Credential {
    /// As bollard sends it to the Docker Engine (`X-Registry-Auth`).
    pub fn docker(&self) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.clone()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }
}

/// Credentials by registry key (`host[:port][/path]`, without scheme).
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    entries: Vec<(String, Credential)>,
}

/// Why a secret gave no credentials.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("secret has no {0} key")]
    MissingKey(&'static str),
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, String),
}

/// `host[:port][/path]` of a registry key as upstream normalizes it: no scheme, no `/v1/`
/// or `/v2/` API suffix, Docker Hub's aliases as `docker.io`.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (k, String::new()),
    };
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
        path[3..].to_string()
    } else {
        path
    };
    let path = path.trim_end_matches('/');
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    };
    format!("{host}{path}")
}

/// The repository of an image reference with its registry host made explicit
/// (`busybox` → `docker.io/library/busybox`), without tag or digest.
pub fn repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is after the last `:` that follows the last `/`.
    let name = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        let (host, rest) = name.split_once('/').unwrap_or((name, ""));
        let host = normalize_key(host);
        if host == DOCKER_HUB && !rest.contains('/') {
            return format!("{DOCKER_HUB}/library/{rest}");
        }
        return format!("{host}/{rest}");
    }
    if name.contains('/') {
        format!("{DOCKER_HUB}/{name}")
    } else {
        format!("{DOCKER_HUB}/library/{name}")
    }
}

/// Whether `glob` (a label of a registry host, `*` and `?` allowed) matches `label`.
fn glob_match(glob: &str, label: &str) -> bool {
    fn go(g: &[u8], s: &[u8]) -> bool {
        match (g.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&g[1..], s) || (!s.is_empty() && go(g, &s[1..])),
            (Some(b'?'), Some(_)) => go(&g[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&g[1..], &s[1..]),
            _ => false,
        }
    }
    go(glob.as_bytes(), label.as_bytes())
}

/// Upstream's `URLsMatch`: same number of host labels each matching its glob, the same
/// port, and the key's path a prefix of the repository's.
fn matches(key: &str, repo: &str) -> bool {
    let split = |s: &str| -> (String, String) {
        match s.split_once('/') {
            Some((h, p)) => (h.to_string(), format!("/{p}")),
            None => (s.to_string(), String::new()),
        }
    };
    let (khost, kpath) = split(key);
    let (rhost, rpath) = split(repo);
    let (kname, kport) = khost.split_once(':').unwrap_or((&khost, ""));
    let (rname, rport) = rhost.split_once(':').unwrap_or((&rhost, ""));
    if kport != rport {
        return false;
    }
    let kl: Vec<&str> = kname.split('.').collect();
    let rl: Vec<&str> = rname.split('.').collect();
    if kl.len() != rl.len() || !kl.iter().zip(&rl).all(|(g, l)| glob_match(g, l)) {
        return false;
    }
    rpath.starts_with(&kpath)
}

impl Keyring {
    /// Adds the logins of a pull secret.
    pub fn add_secret(&mut self, secret: &Secret) -> Result<(), Error> {
        let data = secret.data.clone().unwrap_or_default();
        let ty = secret.type_.as_deref().unwrap_or("");
        let (field, auths) = if ty == "kubernetes.io/dockercfg" || data.contains_key(".dockercfg") {
            let raw = data
                .get(".dockercfg")
                .ok_or(Error::MissingKey(".dockercfg"))?;
            let v: Value = serde_json::from_slice(&raw.0)
                .map_err(|e| Error::Invalid(".dockercfg", e.to_string()))?;
            (".dockercfg", v)
        } else {
            let raw = data
                .get(".dockerconfigjson")
                .ok_or(Error::MissingKey(".dockerconfigjson"))?;
            let v: Value = serde_json::from_slice(&raw.0)
                .map_err(|e| Error::Invalid(".dockerconfigjson", e.to_string()))?;
            (".dockerconfigjson", v["auths"].clone())
        };
        let Some(auths) = auths.as_object() else {
            return Err(Error::Invalid(field, "no auths".into()));
        };
        for (server, entry) in auths {
            let mut username = entry["username"].as_str().unwrap_or("").to_string();
            let mut password = entry["password"].as_str().unwrap_or("").to_string();
            if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| Error::Invalid(field, format!("auth of {server}: {e}")))?;
                let decoded = String::from_utf8_lossy(&decoded).into_owned();
                let (u, p) = decoded.split_once(':').ok_or_else(|| {
                    Error::Invalid(field, format!("auth of {server} is not user:password"))
                })?;
                username = u.to_string();
                password = p.to_string();
            }
            self.entries.push((
                normalize_key(server),
                Credential {
                    username,
                    password,
                    server: server.clone(),
                },
            ));
        }
        // Most specific first, as upstream's reverse-sorted index.
        self.entries.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(())
    }

    /// The logins for `image`, most specific first; empty when none applies (pull anonymously).
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let repo = repository(image);
        self.entries
            .iter()
            .filter(|(k, _)| matches(k, &repo))
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Whether it holds no logins.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(ty: &str, key: &str, v: Value) -> Secret {
        let mut s = Secret {
            type_: Some(ty.into()),
            ..Default::default()
        };
        s.data = Some(
            [(key.to_string(), ByteString(v.to_string().into_bytes()))]
                .into_iter()
                .collect(),
        );
        s
    }

    #[test]
    fn repositories_get_their_registry() {
        assert_eq!(repository("busybox"), "docker.io/library/busybox");
        assert_eq!(repository("busybox:1.36"), "docker.io/library/busybox");
        assert_eq!(repository("me/app:v1"), "docker.io/me/app");
        assert_eq!(
            repository("index.docker.io/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(
            repository("127.0.0.1:5000/private/app:v1"),
            "127.0.0.1:5000/private/app"
        );
        assert_eq!(repository("localhost/app@sha256:abc"), "localhost/app");
        assert_eq!(repository("reg.example.com/a/b/c"), "reg.example.com/a/b/c");
    }

    #[test]
    fn lookups_match_hosts_ports_globs_and_paths() {
        let auth =
            |u: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:pw-{u}"));
        let mut k = Keyring::default();
        k.add_secret(&secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {
                "https://index.docker.io/v1/": {"auth": auth("hub")},
                "127.0.0.1:5000": {"username": "local", "password": "pw-local"},
                "*.example.com": {"auth": auth("glob")},
                "reg.example.com/team": {"auth": auth("team")},
            }}),
        ))
        .unwrap();
        let users = |image: &str| -> Vec<String> {
            k.lookup(image).into_iter().map(|c| c.username).collect()
        };
        assert_eq!(users("busybox"), ["hub"]);
        assert_eq!(users("127.0.0.1:5000/private/app:v1"), ["local"]);
        assert!(users("127.0.0.1:5001/private/app").is_empty());
        assert_eq!(users("reg.example.com/team/app"), ["team", "glob"]);
        assert_eq!(users("reg.example.com/other/app"), ["glob"]);
        assert!(users("a.b.example.com/app").is_empty());
        assert!(users("quay.io/app").is_empty());
        let c = &k.lookup("busybox")[0];
        assert_eq!(c.password, "pw-hub");
        assert_eq!(c.server, "https://index.docker.io/v1/");
    }

    #[test]
    fn legacy_dockercfg_and_bad_secrets() {
        let mut k = Keyring::default();
        k.add_secret(&secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            json!({"quay.io": {"username": "q", "password": "p"}}),
        ))
        .unwrap();
        assert_eq!(k.lookup("quay.io/org/app")[0].username, "q");
        let bad = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!("x"),
        );
        assert!(matches!(k.add_secret(&bad), Err(Error::Invalid(..))));
        let none = secret("kubernetes.io/dockerconfigjson", "other", json!({}));
        assert_eq!(
            k.add_secret(&none),
            Err(Error::MissingKey(".dockerconfigjson"))
        );
    }
}
