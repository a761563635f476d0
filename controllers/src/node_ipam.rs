//! Node IPAM: each node gets `spec.podCIDR(s)`, one block of `--node-cidr-mask-size` bits
//! from each `--cluster-cidr` (upstream's pkg/controller/nodeipam, range allocator).
//! The allocation is rebuilt from the nodes at start, so no block is ever handed out twice.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Flags of node IPAM.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeIpamConfig {
    /// CIDR ranges (comma-separated, one per IP family) pod CIDRs are taken from
    #[arg(long, default_value = "10.244.0.0/16", value_delimiter = ',')]
    pub cluster_cidr: Vec<String>,
    /// Prefix length of each node's pod CIDR
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
}

impl Default for NodeIpamConfig {
    fn default() -> Self {
        NodeIpamConfig {
            cluster_cidr: vec!["10.244.0.0/16".into()],
            node_cidr_mask_size: 24,
        }
    }
}

/// Errors in the IPAM flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --cluster-cidr {0:?}: want address/prefix")]
    Cidr(String),
    #[error(
        "--node-cidr-mask-size {mask} must be between the cluster CIDR's prefix {prefix} and {max}"
    )]
    Mask { mask: u8, prefix: u8, max: u8 },
}

/// One cluster CIDR cut into equal node blocks.
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u128,
    v6: bool,
    block_bits: u32,
    count: u128,
    used: HashSet<u128>,
    next: u128,
}

impl CidrSet {
    /// Parses `cidr` and cuts it into blocks of prefix length `mask`.
    pub fn new(cidr: &str, mask: u8) -> Result<Self, Error> {
        let bad = || Error::Cidr(cidr.to_string());
        let (addr, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| bad())?;
        let (base, width, v6) = match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32u8, false),
            IpAddr::V6(a) => (u128::from(a), 128u8, true),
        };
        if prefix > width || mask < prefix || mask > width || mask - prefix > 64 {
            return Err(Error::Mask {
                mask,
                prefix,
                max: width,
            });
        }
        let block_bits = u32::from(width - mask);
        let host_mask = if prefix == 0 {
            u128::MAX
        } else {
            (1u128 << u32::from(width - prefix)) - 1
        };
        Ok(CidrSet {
            base: base & !host_mask,
            v6,
            block_bits,
            count: 1u128 << u32::from(mask - prefix),
            used: HashSet::new(),
            next: 0,
        })
    }

    fn mask(&self) -> u32 {
        (if self.v6 { 128 } else { 32 }) - self.block_bits
    }

    fn format(&self, index: u128) -> String {
        let a = self.base + (index << self.block_bits);
        let ip: IpAddr = if self.v6 {
            IpAddr::from(std::net::Ipv6Addr::from(a))
        } else {
            IpAddr::from(std::net::Ipv4Addr::from(a as u32))
        };
        format!("{ip}/{}", self.mask())
    }

    /// The block index `cidr` names, when it is one of this set's blocks.
    fn index_of(&self, cidr: &str) -> Option<u128> {
        let (addr, prefix) = cidr.split_once('/')?;
        if prefix.parse::<u32>().ok()? != self.mask() {
            return None;
        }
        let a = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if !self.v6 => u32::from(a) as u128,
            IpAddr::V6(a) if self.v6 => u128::from(a),
            _ => return None,
        };
        let off = a.checked_sub(self.base)?;
        let idx = off >> self.block_bits;
        (idx < self.count && off & ((1u128 << self.block_bits) - 1) == 0).then_some(idx)
    }

    /// Marks `cidr` as taken; false when it is not one of this set's blocks.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    /// Gives `cidr` back.
    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    /// Takes the next free block, None when the range is full.
    pub fn allocate(&mut self) -> Option<String> {
        for step in 0..self.count {
            let i = (self.next + step) % self.count;
            if self.used.insert(i) {
                self.next = (i + 1) % self.count;
                return Some(self.format(i));
            }
        }
        None
    }
}

/// Runs node IPAM until `shutdown`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let cfg = ctx.config.node_ipam.clone();
    let mut sets = cfg
        .cluster_cidr
        .iter()
        .map(|c| CidrSet::new(c, cfg.node_cidr_mask_size))
        .collect::<Result<Vec<_>, _>>()?;
    let wake = Arc::new(Notify::new());
    let nodes = watch::<Node>(&ctx.informers, &wake, &ctx.shutdown).await;
    // What each node holds, as far as this allocator knows (written or observed).
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    let mut rounds = Rounds::new("nodeipam", wake, Duration::from_secs(30), shutdown);
    while rounds.next().await {
        rounds.report(sync(&client, &nodes, &mut sets, &mut held).await);
    }
    Ok(())
}

fn node_cidrs(n: &Node) -> Vec<String> {
    let spec = n.spec.as_ref();
    match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    }
}

async fn sync(
    client: &Client,
    nodes: &Store<Node>,
    sets: &mut [CidrSet],
    held: &mut HashMap<String, Vec<String>>,
) -> anyhow::Result<()> {
    let all = nodes.state();
    let present: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
    // Deleted nodes give their blocks back.
    held.retain(|name, cidrs| {
        let keep = present.contains(name);
        if !keep {
            for c in cidrs.iter() {
                sets.iter_mut().for_each(|s| s.release(c));
            }
        }
        keep
    });
    for n in &all {
        let cidrs = node_cidrs(n);
        if !cidrs.is_empty() {
            for c in &cidrs {
                if !sets.iter_mut().any(|s| s.occupy(c)) {
                    tracing::debug!(node = %n.name_any(), cidr = %c, "pod CIDR outside the cluster CIDRs");
                }
            }
            held.insert(n.name_any(), cidrs);
        }
    }
    let mut result = Ok(());
    let api: Api<Node> = Api::all(client.clone());
    for n in &all {
        let name = n.name_any();
        if held.contains_key(&name) || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let mut got = Vec::new();
        for s in sets.iter_mut() {
            match s.allocate() {
                Some(c) => got.push(c),
                None => {
                    tracing::warn!(node = %name, "no pod CIDR left to allocate (CIDRNotAvailable)");
                    break;
                }
            }
        }
        if got.len() != sets.len() {
            for c in &got {
                sets.iter_mut().for_each(|s| s.release(c));
            }
            continue;
        }
        let patch = json!({"spec": {"podCIDR": got[0], "podCIDRs": got}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, cidrs = ?got, "allocated pod CIDRs");
                held.insert(name, got);
            }
            Err(e) => {
                for c in &got {
                    sets.iter_mut().for_each(|s| s.release(c));
                }
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    result = Err(e.into());
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_are_cut_in_order_and_never_twice() {
        let mut s = CidrSet::new("10.244.0.0/16", 24).unwrap();
        assert!(s.occupy("10.244.1.0/24"));
        assert_eq!(s.allocate().as_deref(), Some("10.244.0.0/24"));
        assert_eq!(s.allocate().as_deref(), Some("10.244.2.0/24"));
        assert!(!s.occupy("10.245.0.0/24"));
        assert!(!s.occupy("10.244.3.0/25"));
        let mut small = CidrSet::new("10.0.0.0/30", 31).unwrap();
        assert_eq!(small.allocate().as_deref(), Some("10.0.0.0/31"));
        assert_eq!(small.allocate().as_deref(), Some("10.0.0.2/31"));
        assert_eq!(small.allocate(), None);
        small.release("10.0.0.0/31");
        assert_eq!(small.allocate().as_deref(), Some("10.0.0.0/31"));
        let mut v6 = CidrSet::new("fd00::/48", 64).unwrap();
        assert_eq!(v6.allocate().as_deref(), Some("fd00::/64"));
        assert_eq!(v6.allocate().as_deref(), Some("fd00:0:0:1::/64"));
        assert!(CidrSet::new("10.244.0.0/16", 8).is_err());
    }
}
