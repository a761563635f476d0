//! Scheduling attempt latencies (pop to binding answered), for the benchmark and the logs.

use std::sync::Mutex;
use std::time::Duration;

/// Latencies of successful attempts, in microseconds; bounded so memory stays flat.
#[derive(Debug, Default)]
pub struct Metrics {
    samples: Mutex<Vec<u32>>,
}

/// At most this many samples are kept (the first ones).
const MAX_SAMPLES: usize = 1 << 20;

impl Metrics {
    /// Records one successful attempt.
    pub fn observe(&self, d: Duration) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() < MAX_SAMPLES {
            s.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// Number of pods bound so far.
    pub fn bound(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The `q` quantile (0..=1) of the recorded latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if s.is_empty() {
            return None;
        }
        s.sort_unstable();
        let i = ((s.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        Some(Duration::from_micros(u64::from(s[i])))
    }
}
