//! Forwarding names outside the cluster zone to the host's resolvers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The resolvers queries outside the cluster zone go to, tried in order.
#[derive(Debug, Clone)]
pub struct Upstreams {
    addrs: Vec<SocketAddr>,
    timeout: Duration,
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A zone index (fe80::1%eth0) cannot be expressed in an IpAddr: skip such lines.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

impl Upstreams {
    /// Upstreams at `addrs`, each given `timeout` to answer.
    pub fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> Upstreams {
        Upstreams { addrs, timeout }
    }

    /// The resolvers, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Sends `query` over UDP to each upstream in turn; the first answer with the query's
    /// id wins. None: no upstream answered.
    pub async fn udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for addr in &self.addrs {
            match tokio::time::timeout(self.timeout, udp_exchange(*addr, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(upstream = %addr, error = %e, "forwarding over UDP"),
                Err(_) => tracing::debug!(upstream = %addr, "upstream timed out (UDP)"),
            }
        }
        None
    }

    /// Sends `query` over TCP to each upstream in turn.
    pub async fn tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for addr in &self.addrs {
            match tokio::time::timeout(self.timeout, tcp_exchange(*addr, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(upstream = %addr, error = %e, "forwarding over TCP"),
                Err(_) => tracing::debug!(upstream = %addr, "upstream timed out (TCP)"),
            }
        }
        None
    }
}

async fn udp_exchange(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(addr).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // A reply to another query (or garbage) is dropped; keep waiting for ours.
        if n >= 12 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let n = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text =
            "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver  2001:db8::53\n\
                    nameserver fe80::1%eth0\noptions ndots:2\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }
}
