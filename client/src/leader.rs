//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! package does it: one candidate holds the Lease and renews it every `retry_period`;
//! the others take it over once it has not changed for `lease_duration`. Every write is
//! a compare-and-swap on the Lease's resourceVersion.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Upstream's default lease duration (`--leader-elect-lease-duration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Upstream's default renew deadline (`--leader-elect-renew-deadline`).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Upstream's default retry period (`--leader-elect-retry-period`).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Leader-election flags shared by the scheduler and the controller-manager.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderElectionArgs {
    /// Take part in leader election and work only while leading
    #[arg(long = "leader-elect", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a non-renewed Lease keeps others from taking over
    #[arg(long = "leader-elect-lease-duration", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading
    #[arg(long = "leader-elect-renew-deadline", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// How often candidates try to acquire or renew the Lease
    #[arg(long = "leader-elect-retry-period", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,
    /// Namespace of the Lease
    #[arg(
        long = "leader-elect-resource-namespace",
        default_value = "kube-system"
    )]
    pub resource_namespace: String,
    /// Name of the Lease [default: the component's name]
    #[arg(long = "leader-elect-resource-name")]
    pub resource_name: Option<String>,
}

impl Default for LeaderElectionArgs {
    fn default() -> Self {
        LeaderElectionArgs {
            leader_elect: true,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            resource_namespace: "kube-system".into(),
            resource_name: None,
        }
    }
}

/// Parses a Go-style duration with one unit: `15s`, `500ms`, `1m`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1000.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (want e.g. 15s, 500ms)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_millis((v * mul_ms) as u64))
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timings cannot work (upstream's validation).
    #[error("{0}")]
    InvalidConfig(String),
}

/// What the candidate last saw of the Lease, and when it changed.
struct Observed {
    holder: String,
    renew_time: Option<Timestamp>,
    transitions: i32,
    since: Instant,
}

/// One candidate for the leadership of one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, Error> {
        if lease_duration <= renew_deadline {
            return Err(Error::InvalidConfig(
                "leaseDuration must be greater than renewDeadline".into(),
            ));
        }
        if renew_deadline.as_secs_f64() <= 1.2 * retry_period.as_secs_f64() {
            return Err(Error::InvalidConfig(
                "renewDeadline must be greater than retryPeriod*JitterFactor".into(),
            ));
        }
        if identity.is_empty() {
            return Err(Error::InvalidConfig("Lock identity is empty".into()));
        }
        Ok(LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// A candidate configured from the shared flags; `default_name` names the Lease unless
    /// `--leader-elect-resource-name` did.
    pub fn from_args(
        client: kube::Client,
        args: &LeaderElectionArgs,
        default_name: &str,
        identity: &str,
    ) -> Result<Self, Error> {
        LeaderElector::new(
            client,
            &args.resource_namespace,
            args.resource_name.as_deref().unwrap_or(default_name),
            identity,
            args.lease_duration,
            args.renew_deadline,
            args.retry_period,
        )
    }

    /// Waits to lead, then runs `work(token)` while leading. When leadership is lost the
    /// token is cancelled, the work is awaited and the candidate queues up again. Returns
    /// when `shutdown` is cancelled (the Lease is released) or when the work itself ends.
    pub async fn run_while_leader<F, Fut>(
        &self,
        mut work: F,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut observed: Option<Observed> = None;
        loop {
            // Acquire.
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                match self.try_acquire_or_renew(&mut observed).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(lease = %self.name, error = %e, "acquiring lease"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(jitter(self.retry_period)) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "successfully acquired lease");
            let token = shutdown.child_token();
            let mut task = tokio::spawn(work(token.clone()));
            // Renew.
            let mut last_renew = Instant::now();
            let outcome = loop {
                tokio::select! {
                    res = &mut task => break Some(res),
                    _ = tokio::time::sleep(self.retry_period) => {}
                }
                if shutdown.is_cancelled() {
                    break None;
                }
                match self.try_acquire_or_renew(&mut observed).await {
                    Ok(true) => last_renew = Instant::now(),
                    Ok(false) => {
                        tracing::info!(lease = %self.name, "lease taken over by another candidate");
                        break None;
                    }
                    Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewing lease"),
                }
                if last_renew.elapsed() > self.renew_deadline {
                    tracing::warn!(lease = %self.name, "failed to renew lease within the renew deadline");
                    break None;
                }
            };
            token.cancel();
            let ended_itself = outcome.is_some();
            let result = match outcome {
                Some(res) => res,
                None => task.await,
            };
            if shutdown.is_cancelled() || ended_itself {
                self.release(&mut observed).await;
                return match result {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("leader work failed: {e}")),
                };
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "stopped leading");
        }
    }

    /// One attempt: true when this candidate holds the Lease afterwards.
    async fn try_acquire_or_renew(&self, observed: &mut Option<Observed>) -> kube::Result<bool> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    *observed = Some(self.observed_self(now, 0));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew = spec.renew_time.as_ref().map(|t| t.0);
        let transitions = spec.lease_transitions.unwrap_or(0);
        let changed = match observed {
            Some(o) => o.holder != holder || o.renew_time != renew || o.transitions != transitions,
            None => true,
        };
        if changed {
            *observed = Some(Observed {
                holder: holder.clone(),
                renew_time: renew,
                transitions,
                since: Instant::now(),
            });
        }
        let since = observed.as_ref().map_or_else(Instant::now, |o| o.since);
        let held_by_other = !holder.is_empty() && holder != self.identity;
        if held_by_other {
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.lease_duration);
            if since.elapsed() < duration {
                return Ok(false);
            }
        }
        let (acquire, transitions) = if holder == self.identity {
            (spec.acquire_time.map(|t| t.0).unwrap_or(now), transitions)
        } else {
            (now, transitions + 1)
        };
        lease.spec = Some(self.spec(acquire, now, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *observed = Some(self.observed_self(now, transitions));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up on shutdown so the next candidate need not wait it out.
    async fn release(&self, observed: &mut Option<Observed>) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let now = Timestamp::now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
        spec.acquire_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *observed = None;
                tracing::info!(lease = %self.name, identity = %self.identity, "released lease");
            }
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "releasing lease"),
        }
    }

    fn spec(&self, acquire: Timestamp, renew: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(acquire)),
            renew_time: Some(MicroTime(renew)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    fn observed_self(&self, renew: Timestamp, transitions: i32) -> Observed {
        Observed {
            holder: self.identity.clone(),
            renew_time: Some(renew),
            transitions,
            since: Instant::now(),
        }
    }
}

/// Upstream waits `retry_period * (1 + rand * 1.2)` between acquisition attempts; a cheap
/// time-based jitter keeps candidates from trying in lock step.
fn jitter(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 1000.0;
    period.mul_f64(1.0 + frac * 1.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("x").is_err());
    }
}
