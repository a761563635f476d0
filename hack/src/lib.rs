//! Shared pieces of the tools under `hack/`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context};

/// Latency figures of one measured phase, from per-operation samples in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// Sorts `samples` (microseconds) in place and summarizes them; `None` when empty.
    pub fn from_samples(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Latency {
            count: samples.len(),
            p50_us: percentile(samples, 50.0),
            p99_us: percentile(samples, 99.0),
            max_us: samples[samples.len() - 1],
        })
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds of a duration, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds with two decimals, for tables.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// True for `localhost`, `127.0.0.0/8` and `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Refuses any URL whose host is not a loopback address: the tools here only measure
/// servers on this machine.
pub fn require_loopback_url(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    match uri.host() {
        Some(host) if is_loopback_host(host) => Ok(()),
        Some(host) => {
            bail!("{url}: host {host} is not a loopback address; only loopback targets are allowed")
        }
        None => bail!("{url}: no host"),
    }
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_kib(&text, field).with_context(|| format!("no {field} in {path}"))
}

/// CPU time (user + system, all threads) a process has used, from `/proc/<pid>/stat`.
pub fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu_seconds(&text).with_context(|| format!("unexpected format of {path}"))
}

/// Clock ticks per second of `/proc/<pid>/stat`: USER_HZ, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

fn parse_stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name, which may hold spaces and ends at the last ')':
    // state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU used by this process and, when known, the measured server, over a span of time.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    server_pid: Option<u32>,
    start: std::time::Instant,
    own: f64,
    server: f64,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start(server_pid: Option<u32>) -> Self {
        CpuMeter {
            server_pid,
            start: std::time::Instant::now(),
            own: proc_cpu_seconds(std::process::id()).unwrap_or(0.0),
            server: server_pid
                .and_then(|p| proc_cpu_seconds(p).ok())
                .unwrap_or(0.0),
        }
    }

    /// `cpu: server 1.2 s, bench 0.8 s in 2.0 s` since `start`.
    pub fn summary(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64();
        let own = proc_cpu_seconds(std::process::id()).unwrap_or(0.0) - self.own;
        match self.server_pid.and_then(|p| proc_cpu_seconds(p).ok()) {
            Some(server) => format!(
                "cpu: server {:.1} s, bench {own:.1} s in {wall:.1} s",
                server - self.server
            ),
            None => format!("cpu: bench {own:.1} s in {wall:.1} s"),
        }
    }
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A plain text table with left-aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let columns = self
            .header
            .len()
            .max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(width - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::from_samples(&mut samples).expect("samples");
        assert_eq!((l.count, l.p50_us, l.p99_us, l.max_us), (100, 50, 99, 100));
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(Latency::from_samples(&mut []), None);
    }

    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["10.0.0.1", "example.com", "0.0.0.0", ""] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
        assert!(require_loopback_url("https://127.0.0.1:6443").is_ok());
        assert!(require_loopback_url("http://[::1]:2379").is_ok());
        assert!(require_loopback_url("http://192.168.1.2:2379").is_err());
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tminik8s\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51200));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn stat_cpu_time() {
        let stat = "4242 (mini k8s) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 0";
        assert_eq!(parse_stat_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_stat_cpu_seconds("garbage"), None);
        assert!(proc_cpu_seconds(std::process::id()).is_ok());
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["a", "bbb"]);
        t.row(vec!["long".into(), "x".into()]);
        assert_eq!(t.render(), "a     bbb\nlong  x\n");
    }
}
