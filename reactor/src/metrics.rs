//! What the loop itself measures: cheap enough to leave on (one clock read per turn on top
//! of those the loop already makes, and a few integer adds).

use std::fmt;
use std::time::Duration;

/// Counters of one reactor's loop; a snapshot comes from [`Spawner::loop_metrics`]
/// (or [`ReactorHandle::query`] from another thread).
///
/// [`Spawner::loop_metrics`]: crate::Spawner::loop_metrics
/// [`ReactorHandle::query`]: crate::ReactorHandle::query
///
/// ```
/// let thread = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
/// let first = thread.handle().query(|s| s.loop_metrics()).unwrap();
/// let second = thread.handle().query(|s| s.loop_metrics()).unwrap();
/// assert!(second.turns > first.turns); // each query woke the loop for a turn
/// assert_eq!(second.entries, 0);
/// thread.handle().shutdown();
/// thread.join().unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopMetrics {
    /// Turns of the loop (one poll each).
    pub turns: u64,
    /// Readiness events dispatched.
    pub events: u64,
    /// Time spent working (from each poll's return to the end of its turn): handlers, codecs
    /// and I/O, not sleeping.
    pub busy: Duration,
    /// Entries alive at the snapshot.
    pub entries: u64,
    /// How long turns took.
    pub turn_latency: LatencyHistogram,
    /// Panics caught in entries and jobs (each ended only its own entry or job; see
    /// [`PanicPolicy`](crate::PanicPolicy)).
    pub panics: u64,
}

/// A histogram with power-of-two buckets: bucket `i` counts durations in
/// `[2^i, 2^(i+1))` microseconds (bucket 0 also holds everything under a microsecond).
/// Fixed size, no allocation, a few nanoseconds to record.
///
/// ```
/// use std::time::Duration;
/// use getty_reactor::LatencyHistogram;
///
/// let mut h = LatencyHistogram::default();
/// for us in [1, 3, 3, 900] {
///     h.record(Duration::from_micros(us));
/// }
/// assert_eq!(h.count(), 4);
/// assert_eq!(h.quantile(0.5), Duration::from_micros(4)); // the upper edge of 3's bucket
/// assert_eq!(h.quantile(1.0), Duration::from_micros(1024));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; 32],
}

impl LatencyHistogram {
    /// Counts one duration.
    ///
    /// See the [type-level example](LatencyHistogram).
    pub fn record(&mut self, d: Duration) {
        let micros = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - micros.leading_zeros()).saturating_sub(1) as usize;
        self.buckets[bucket.min(31)] += 1;
    }

    /// How many durations were recorded.
    ///
    /// See the [type-level example](LatencyHistogram).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// An upper bound for the `q` quantile (0.0 to 1.0): the upper edge of the bucket it
    /// falls in. Zero when nothing was recorded.
    ///
    /// See the [type-level example](LatencyHistogram).
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(1u64 << (i + 1));
            }
        }
        Duration::from_micros(1u64 << 32)
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LatencyHistogram {{ count: {}, p50: {:?}, p99: {:?}, p99.9: {:?} }}",
            self.count(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999)
        )
    }
}
