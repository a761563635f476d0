//! Service ClusterIP and NodePort allocation. Each range has one allocation record in the
//! store (like upstream's RangeAllocation objects): the set of values in use. Every change
//! of a record is a compare-and-swap on its mod revision, so API servers sharing one store
//! never hand out a value twice; a process-local lock keeps one server's own allocations
//! from contending with each other.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::storage::{self, Backend};
use crate::validation::FieldError;

/// Attempts of one compare-and-swap on an allocation record under contention.
const MAX_ATTEMPTS: usize = 256;

/// An IPv4 service CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    base: u32,
    prefix: u8,
}

impl Ipv4Range {
    /// Parses `10.96.0.0/12`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("invalid CIDR address: {s} (only IPv4 is supported)"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .ok_or_else(|| format!("invalid CIDR address: {s} (prefix must be 0-30)"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Ipv4Range {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }
    /// The first usable address (network address + 1): the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
    /// Whether `ip` may be allocated: inside, not the network or broadcast address.
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(u32::from(ip).wrapping_sub(self.base));
        u32::from(ip) >= self.base && off >= 1 && off < self.size() - 1
    }
}

impl std::fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// A NodePort range such as `30000-32767`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Parses `30000-32767` (or a single port).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid port range: {s}");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// One allocation record: a set of offsets into a range, stored as JSON under one key.
struct Record {
    key: String,
    range: String,
    size: u64,
    lock: tokio::sync::Mutex<()>,
}

/// Why an allocation of a chosen value failed.
enum Refused {
    OutOfRange,
    Taken,
    Full,
}

impl Record {
    async fn read(&self, backend: &dyn Backend) -> Result<(Option<i64>, BTreeSet<u64>)> {
        let Some(kv) = backend.get(&self.key).await? else {
            return Ok((None, BTreeSet::new()));
        };
        let v: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Internal(format!("allocation record {}: {e}", self.key)))?;
        let set = v
            .get("allocated")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        Ok((Some(kv.mod_revision), set))
    }

    /// Applies `change` to the stored set with compare-and-swap; `change` returns the value it
    /// decided on, or why not (then nothing is written).
    async fn modify<F>(
        &self,
        backend: &dyn Backend,
        change: F,
    ) -> Result<std::result::Result<u64, Refused>>
    where
        F: Fn(&mut BTreeSet<u64>) -> std::result::Result<Option<u64>, Refused>,
    {
        let _guard = self.lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let (rev, mut set) = self.read(backend).await?;
            let picked = match change(&mut set) {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(Ok(0)),
                Err(r) => return Ok(Err(r)),
            };
            let body = serde_json::to_vec(&json!({
                "range": self.range,
                "allocated": set.iter().collect::<Vec<_>>(),
            }))
            .unwrap_or_default();
            let res = match rev {
                None => backend.create(&self.key, body.into()).await.map(|_| ()),
                Some(r) => backend.update(&self.key, body.into(), r).await.map(|_| ()),
            };
            match res {
                Ok(()) => return Ok(Ok(picked)),
                Err(storage::Error::Conflict { .. } | storage::Error::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(format!(
            "allocation record {} is too contended; please try again",
            self.key
        )))
    }

    /// Allocates `Some(offset)` exactly, or any free offset.
    async fn allocate(
        &self,
        backend: &dyn Backend,
        want: Option<u64>,
        usable: impl Fn(u64) -> bool,
    ) -> Result<std::result::Result<u64, Refused>> {
        let size = self.size;
        self.modify(backend, |set| {
            if let Some(w) = want {
                if !usable(w) {
                    return Err(Refused::OutOfRange);
                }
                if !set.insert(w) {
                    return Err(Refused::Taken);
                }
                return Ok(Some(w));
            }
            let free = (0..size).filter(|o| usable(*o)).count() as u64;
            if set.len() as u64 >= free {
                return Err(Refused::Full);
            }
            let mut rng = rand::rng();
            let start = rng.random_range(0..size);
            for i in 0..size {
                let o = (start + i) % size;
                if usable(o) && !set.contains(&o) {
                    set.insert(o);
                    return Ok(Some(o));
                }
            }
            Err(Refused::Full)
        })
        .await
    }

    async fn release(&self, backend: &dyn Backend, offsets: &[u64]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let _never_refused = self
            .modify(backend, |set| {
                let before = set.len();
                for o in offsets {
                    set.remove(o);
                }
                Ok((set.len() != before).then_some(0))
            })
            .await?;
        Ok(())
    }
}

/// What one Service holds: its cluster IP (if allocated) and node ports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub ip: Option<Ipv4Addr>,
    pub node_ports: Vec<u16>,
}

impl Held {
    /// What a stored Service holds.
    pub fn of(svc: &Value) -> Held {
        let spec = svc.get("spec");
        let ty = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            return Held::default();
        }
        let ip = spec
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let mut node_ports: Vec<u16> = spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                    .filter_map(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(h) = spec
            .and_then(|s| s.get("healthCheckNodePort"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        {
            node_ports.push(h);
        }
        node_ports.sort_unstable();
        node_ports.dedup();
        Held { ip, node_ports }
    }
}

/// The allocators of one API server.
pub struct ServiceAllocator {
    backend: Arc<dyn Backend>,
    pub ip_range: Ipv4Range,
    pub port_range: PortRange,
    ips: Record,
    ports: Record,
}

fn needs_node_ports(ty: &str) -> bool {
    ty == "NodePort" || ty == "LoadBalancer"
}

impl ServiceAllocator {
    pub fn new(
        backend: Arc<dyn Backend>,
        etcd_prefix: &str,
        ip_range: Ipv4Range,
        port_range: PortRange,
    ) -> Self {
        let prefix = etcd_prefix.trim_end_matches('/');
        ServiceAllocator {
            backend,
            ip_range,
            port_range,
            ips: Record {
                key: format!("{prefix}/ranges/serviceips"),
                range: ip_range.to_string(),
                size: ip_range.size(),
                lock: tokio::sync::Mutex::new(()),
            },
            ports: Record {
                key: format!("{prefix}/ranges/servicenodeports"),
                range: port_range.to_string(),
                size: u64::from(port_range.last - port_range.first) + 1,
                lock: tokio::sync::Mutex::new(()),
            },
        }
    }

    async fn allocate_ip(
        &self,
        want: Option<Ipv4Addr>,
    ) -> Result<std::result::Result<Ipv4Addr, Refused>> {
        let range = self.ip_range;
        let want = match want {
            Some(ip) if !range.contains(ip) => return Ok(Err(Refused::OutOfRange)),
            Some(ip) => Some(u64::from(u32::from(ip) - range.base)),
            None => None,
        };
        let size = range.size();
        let r = self
            .ips
            .allocate(&*self.backend, want, |o| o >= 1 && o < size - 1)
            .await?;
        Ok(r.map(|o| Ipv4Addr::from(range.base + o as u32)))
    }

    async fn allocate_port(&self, want: Option<u16>) -> Result<std::result::Result<u16, Refused>> {
        let range = self.port_range;
        let want = match want {
            Some(p) if p < range.first || p > range.last => return Ok(Err(Refused::OutOfRange)),
            Some(p) => Some(u64::from(p - range.first)),
            None => None,
        };
        let r = self.ports.allocate(&*self.backend, want, |_| true).await?;
        Ok(r.map(|o| range.first + o as u16))
    }

    /// Releases what a Service held (after delete, or what an update gave up).
    pub async fn release(&self, held: &Held) {
        if let Some(ip) = held.ip.filter(|ip| self.ip_range.contains(*ip)) {
            let off = u64::from(u32::from(ip) - self.ip_range.base);
            if let Err(e) = self.ips.release(&*self.backend, &[off]).await {
                tracing::warn!(%ip, error = %e, "cannot release service IP");
            }
        }
        let offs: Vec<u64> = held
            .node_ports
            .iter()
            .filter(|p| **p >= self.port_range.first && **p <= self.port_range.last)
            .map(|p| u64::from(*p - self.port_range.first))
            .collect();
        if let Err(e) = self.ports.release(&*self.backend, &offs).await {
            tracing::warn!(error = %e, "cannot release node ports");
        }
    }

    /// Fills in and allocates a Service's cluster IP and node ports, given what it held
    /// before (`old`, for updates). Returns what was newly allocated, to release if the
    /// write does not happen. Field errors carry upstream's messages.
    pub async fn allocate(
        &self,
        svc: &mut Value,
        old: &Held,
    ) -> Result<std::result::Result<Held, Vec<FieldError>>> {
        let mut got = Held::default();
        let r = self.allocate_inner(svc, old, &mut got).await;
        match r {
            Ok(Ok(())) => Ok(Ok(got)),
            other => {
                self.release(&got).await;
                other.map(|r| r.map(|()| Held::default()))
            }
        }
    }

    async fn allocate_inner(
        &self,
        svc: &mut Value,
        old: &Held,
        got: &mut Held,
    ) -> Result<std::result::Result<(), Vec<FieldError>>> {
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(Ok(()));
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty == "ExternalName" {
            return Ok(Ok(()));
        }
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if ip != "None" {
            let want: Option<Ipv4Addr> = if ip.is_empty() {
                None
            } else {
                // Syntax was validated already; an IPv6 address is out of this range.
                ip.parse().ok().or(Some(Ipv4Addr::UNSPECIFIED))
            };
            let already = want.is_some() && want == old.ip;
            if !already {
                match self.allocate_ip(want).await? {
                    Ok(a) => {
                        got.ip = Some(a);
                        spec.insert("clusterIP".into(), json!(a.to_string()));
                        spec.insert("clusterIPs".into(), json!([a.to_string()]));
                    }
                    Err(Refused::Full) => {
                        return Err(Error::Internal(
                            "failed to allocate a serviceIP: range is full".into(),
                        ))
                    }
                    Err(why) => {
                        let detail = match why {
                            Refused::Taken => "provided IP is already allocated".to_string(),
                            _ => format!(
                                "provided IP is not in the valid range. The range of valid IPs is {}",
                                self.ip_range
                            ),
                        };
                        return Ok(Err(vec![FieldError::invalid_raw(
                            "spec.clusterIPs",
                            format!("[{ip:?}]"),
                            format!("failed to allocate IP {ip}: {detail}"),
                        )]));
                    }
                }
            }
        }
        if !needs_node_ports(&ty) {
            return Ok(Ok(()));
        }
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
            return Ok(Ok(()));
        };
        let mut errs = Vec::new();
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            let want = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            if let Some(w) = want {
                // Ports sharing one node port (TCP and UDP on one number) hold it once.
                if old.node_ports.contains(&w) || got.node_ports.contains(&w) {
                    continue;
                }
            }
            match self.allocate_port(want).await? {
                Ok(n) => {
                    got.node_ports.push(n);
                    p.insert("nodePort".into(), json!(n));
                }
                Err(Refused::Full) => {
                    return Err(Error::Internal(
                        "failed to allocate a nodePort: range is full".into(),
                    ))
                }
                Err(why) => {
                    let detail = match why {
                        Refused::Taken => "provided port is already allocated".to_string(),
                        _ => format!(
                            "provided port is not in the valid range. The range of valid ports is {}",
                            self.port_range
                        ),
                    };
                    errs.push(FieldError::invalid_raw(
                        format!("spec.ports[{i}].nodePort"),
                        want.unwrap_or(0),
                        detail,
                    ));
                }
            }
        }
        if errs.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges() {
        let r = Ipv4Range::parse("10.96.0.0/12").unwrap();
        assert_eq!(r.to_string(), "10.96.0.0/12");
        assert_eq!(r.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(r.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!r.contains(Ipv4Addr::new(10, 96, 0, 0)));
        assert!(!r.contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            Ipv4Range::parse("10.96.1.7/24").unwrap().to_string(),
            "10.96.1.0/24"
        );
        assert!(Ipv4Range::parse("fd00::/108").is_err());
        let p = PortRange::parse("30000-32767").unwrap();
        assert_eq!((p.first, p.last), (30000, 32767));
        assert!(PortRange::parse("5-1").is_err());
    }
}
