//! Encryption at rest (`--encryption-provider-config`): upstream's EncryptionConfiguration
//! (apiserver.config.k8s.io/v1) with the `aesgcm` and `identity` providers, applied as a
//! storage backend wrapper. Values are written as `k8s:enc:aesgcm:v1:<key name>:` + nonce +
//! ciphertext, with the storage key as additional authenticated data, like upstream.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::storage::{
    Backend, Error, Event, KeyValue, ListOptions, ListResult, Result, WatchStream,
};

/// Errors reading the configuration file.
#[derive(Debug, thiserror::Error)]
#[error("--encryption-provider-config {path}: {message}")]
pub struct ConfigError {
    path: String,
    message: String,
}

enum Provider {
    AesGcm { name: String, key: Box<LessSafeKey> },
    Identity,
}

/// The providers of one set of resources; the first one encrypts.
struct Rule {
    /// Storage key prefixes (`/registry/secrets/`).
    prefixes: Vec<String>,
    providers: Vec<Arc<Provider>>,
}

/// A backend that encrypts the values of configured resources.
pub struct Encrypted {
    inner: Arc<dyn Backend>,
    rules: Vec<Rule>,
    rng: SystemRandom,
}

/// Reads an EncryptionConfiguration; `root` is the storage key prefix (`/registry`).
fn parse(text: &str, root: &str) -> std::result::Result<Vec<Rule>, String> {
    let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if v.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
        return Err("kind must be EncryptionConfiguration".into());
    }
    let mut rules = Vec::new();
    for r in v
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefixes: Vec<String> = r
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|res| match res.split_once('.') {
                Some((plural, group)) => format!("{root}/{group}/{plural}/"),
                None => format!("{root}/{res}/"),
            })
            .collect();
        let mut providers = Vec::new();
        for p in r
            .get("providers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if p.get("identity").is_some() {
                providers.push(Arc::new(Provider::Identity));
                continue;
            }
            let Some(gcm) = p.get("aesgcm") else {
                return Err(format!(
                    "unsupported provider {}: only aesgcm and identity are supported",
                    p.as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default()
                ));
            };
            for k in gcm
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = k.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    return Err("aesgcm key needs a name".into());
                }
                let secret = base64::engine::general_purpose::STANDARD
                    .decode(k.get("secret").and_then(Value::as_str).unwrap_or(""))
                    .map_err(|e| format!("key {name:?}: secret is not base64: {e}"))?;
                let alg = match secret.len() {
                    16 => &AES_128_GCM,
                    32 => &AES_256_GCM,
                    n => {
                        return Err(format!(
                            "key {name:?}: an aesgcm secret is 16 or 32 bytes, not {n}"
                        ))
                    }
                };
                let key = UnboundKey::new(alg, &secret).map_err(|e| e.to_string())?;
                providers.push(Arc::new(Provider::AesGcm {
                    name: name.to_string(),
                    key: Box::new(LessSafeKey::new(key)),
                }));
            }
        }
        if providers.is_empty() {
            return Err("every resources entry needs at least one provider".into());
        }
        rules.push(Rule {
            prefixes,
            providers,
        });
    }
    Ok(rules)
}

/// Wraps `inner` per the configuration file, or returns it unchanged without one.
pub fn wrap(
    inner: Arc<dyn Backend>,
    config: Option<&Path>,
    root: &str,
) -> std::result::Result<Arc<dyn Backend>, ConfigError> {
    let Some(path) = config else {
        return Ok(inner);
    };
    let err = |message: String| ConfigError {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let rules = parse(&text, root.trim_end_matches('/')).map_err(err)?;
    Ok(Arc::new(Encrypted {
        inner,
        rules,
        rng: SystemRandom::new(),
    }))
}

const PREFIX: &str = "k8s:enc:aesgcm:v1:";

impl Encrypted {
    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }

    fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        match rule.providers.first().map(|p| p.as_ref()) {
            Some(Provider::AesGcm { name, key: k }) => {
                let mut nonce = [0u8; NONCE_LEN];
                self.rng
                    .fill(&mut nonce)
                    .map_err(|_| Error::Backend("no randomness for a nonce".into()))?;
                let mut buf = value.to_vec();
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut buf,
                )
                .map_err(|_| Error::Backend("encryption failed".into()))?;
                let mut out = format!("{PREFIX}{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&buf);
                Ok(Bytes::from(out))
            }
            _ => Ok(value),
        }
    }

    fn decrypt(&self, key: &str, value: Bytes) -> Result<Bytes> {
        let Some(rest) = value.strip_prefix(PREFIX.as_bytes()) else {
            return Ok(value);
        };
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            return Err(Error::Backend(format!("{key}: malformed encrypted value")));
        };
        let (name, data) = (&rest[..colon], &rest[colon + 1..]);
        let provider = self
            .rule(key)
            .into_iter()
            .flat_map(|r| r.providers.iter())
            .find_map(|p| match p.as_ref() {
                Provider::AesGcm { name: n, key } if n.as_bytes() == name => Some(key),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Backend(format!(
                    "{key}: no key named {:?} to decrypt it",
                    String::from_utf8_lossy(name)
                ))
            })?;
        if data.len() < NONCE_LEN {
            return Err(Error::Backend(format!("{key}: malformed encrypted value")));
        }
        let (nonce, ct) = data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Backend(format!("{key}: malformed nonce")))?;
        let mut buf = ct.to_vec();
        let plain = provider
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf)
            .map_err(|_| Error::Backend(format!("{key}: decryption failed")))?;
        Ok(Bytes::copy_from_slice(plain))
    }

    fn kv(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self.decrypt(&kv.key, kv.value)?;
        Ok(kv)
    }

    fn err(&self, e: Error) -> Error {
        match e {
            Error::Conflict {
                key,
                current: Some(kv),
            } => match self.kv(*kv) {
                Ok(kv) => Error::Conflict {
                    key,
                    current: Some(Box::new(kv)),
                },
                Err(e) => e,
            },
            other => other,
        }
    }
}

#[async_trait]
impl Backend for Encrypted {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await?.map(|kv| self.kv(kv)).transpose()
    }
    async fn list(&self, opts: &ListOptions) -> Result<ListResult> {
        let mut r = self.inner.list(opts).await?;
        r.kvs = r
            .kvs
            .into_iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<_>>()?;
        Ok(r)
    }
    async fn count(&self, prefix: &str) -> Result<i64> {
        self.inner.count(prefix).await
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let plain = value.clone();
        let mut kv = self
            .inner
            .create(key, self.encrypt(key, value)?)
            .await
            .map_err(|e| self.err(e))?;
        kv.value = plain;
        Ok(kv)
    }
    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<KeyValue> {
        let plain = value.clone();
        let mut kv = self
            .inner
            .update(key, self.encrypt(key, value)?, expected)
            .await
            .map_err(|e| self.err(e))?;
        kv.value = plain;
        Ok(kv)
    }
    async fn delete(&self, key: &str, expected: i64) -> Result<(KeyValue, i64)> {
        let (kv, rev) = self
            .inner
            .delete(key, expected)
            .await
            .map_err(|e| self.err(e))?;
        Ok((self.kv(kv)?, rev))
    }
    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream> {
        let inner = self.inner.watch(prefix, after).await?;
        let this = Encrypted {
            inner: self.inner.clone(),
            rules: self
                .rules
                .iter()
                .map(|r| Rule {
                    prefixes: r.prefixes.clone(),
                    providers: r.providers.clone(),
                })
                .collect(),
            rng: SystemRandom::new(),
        };
        Ok(Box::pin(inner.map(move |ev| match ev? {
            Event::Put { kv, prev } => Ok(Event::Put {
                kv: this.kv(kv)?,
                prev: prev.map(|p| this.kv(p)).transpose()?,
            }),
            Event::Delete { prev, revision } => Ok(Event::Delete {
                prev: this.kv(prev)?,
                revision,
            }),
        })))
    }
    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }
    async fn compacted_revision(&self) -> Result<i64> {
        self.inner.compacted_revision().await
    }
    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }
}
