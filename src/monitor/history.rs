//! A short history of the engine's counters, for the dashboard's charts: every
//! `SAMPLE_EVERY` the process-wide counters (`crate::metrics`) and the broker's queue depth are
//! sampled, and the last `WINDOW` of samples kept, so the page can draw rates without a
//! time-series database. Lost on restart, by design: Prometheus keeps the long history.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the charts look.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The counters at one moment (Unix seconds); counters only grow within a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    pub at: f64,
    pub vectors_written: u64,
    pub embedding_calls: u64,
    pub chunks_embedded: u64,
    /// Messages waiting in the served queues; `None` when the broker could not be read.
    pub queue_depth: Option<u64>,
}

impl Sample {
    /// The process's counters now; the queue depth is filled in by whoever reads the broker.
    pub fn now() -> Self {
        let metrics = &*crate::metrics::METRICS;
        let calls = ["ok", "error"]
            .iter()
            .map(|o| metrics.embedding_calls.with_label_values(&[o]).get())
            .sum();
        Self {
            at: unix_now(),
            vectors_written: metrics.vectors_written.get(),
            embedding_calls: calls,
            chunks_embedded: metrics.chunks_embedded.get(),
            queue_depth: None,
        }
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A point of a chart: `[Unix seconds, value]`.
pub type Point = (f64, f64);

/// The charts' series over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// Records written a second, between consecutive samples.
    pub vectors_per_second: Vec<Point>,
    /// Embedding calls a second.
    pub calls_per_second: Vec<Point>,
    /// Messages waiting.
    pub queue_depth: Vec<Point>,
}

#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        self.samples.push_back(sample);
        let keep = (WINDOW.as_secs_f64() / SAMPLE_EVERY.as_secs_f64()).ceil() as usize + 1;
        while self.samples.len() > keep {
            self.samples.pop_front();
        }
    }

    pub fn series(&self) -> Series {
        let mut series = Series::default();
        let pairs = self.samples.iter().zip(self.samples.iter().skip(1));
        for (before, after) in pairs {
            let seconds = after.at - before.at;
            if seconds <= 0.0 {
                continue;
            }
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
            series.vectors_per_second.push((
                after.at,
                rate(before.vectors_written, after.vectors_written),
            ));
            series.calls_per_second.push((
                after.at,
                rate(before.embedding_calls, after.embedding_calls),
            ));
        }
        series.queue_depth = self
            .samples
            .iter()
            .filter_map(|s| Some((s.at, s.queue_depth? as f64)))
            .collect();
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, vectors: u64, calls: u64, depth: Option<u64>) -> Sample {
        Sample {
            at,
            vectors_written: vectors,
            embedding_calls: calls,
            chunks_embedded: vectors,
            queue_depth: depth,
        }
    }

    #[test]
    fn rates_are_differences_over_the_seconds_between_samples() {
        let mut history = History::default();
        history.push(sample(100.0, 0, 0, Some(5)));
        history.push(sample(102.0, 40, 2, None));
        history.push(sample(104.0, 40, 3, Some(1)));
        let series = history.series();
        assert_eq!(series.vectors_per_second, vec![(102.0, 20.0), (104.0, 0.0)]);
        assert_eq!(series.calls_per_second, vec![(102.0, 1.0), (104.0, 0.5)]);
        assert_eq!(series.queue_depth, vec![(100.0, 5.0), (104.0, 1.0)]);
    }

    #[test]
    fn only_the_window_is_kept() {
        let mut history = History::default();
        for i in 0..1000 {
            history.push(sample(f64::from(i) * 2.0, u64::from(i as u32), 0, Some(0)));
        }
        let series = history.series();
        let first = series.queue_depth.first().unwrap().0;
        let last = series.queue_depth.last().unwrap().0;
        assert_eq!(last - first, WINDOW.as_secs_f64());
        assert!(series.vectors_per_second.iter().all(|(_, v)| *v == 0.5));
    }
}
