//! Progress metrics to CloudWatch (SPEC-csv2kafka.md, "Metrics"): the job records a
//! sample every interval; a publisher thread sends them in PutMetricData batches of at
//! most 20 data points, and a failed publish keeps its data for the next (bounded: the
//! oldest samples go first past [`MAX_KEPT`], counted in the log). The job never waits
//! on CloudWatch.

use std::collections::VecDeque;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::config::Metrics as MetricsConfig;
use crate::credentials::Provider;
use crate::metrics::{CloudWatch, Datum, Value, bodies_for};

/// Data points in one PutMetricData request.
pub const BATCH: usize = 20;
/// Samples kept while CloudWatch cannot be reached.
const MAX_KEPT: usize = 20_000;

/// One interval's progress of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub job_id: String,
    pub rows_per_second: f64,
    pub percent: f64,
    /// Rows processed in the interval (their sum over a job is its row count).
    pub processed: u64,
    pub remaining: u64,
    /// Failed (malformed) rows in the interval.
    pub failed: u64,
}

impl Sample {
    pub fn datums(&self) -> [Datum; 5] {
        let d = |name, unit, v: f64| Datum {
            name,
            unit,
            value: Value::Single(v),
            link: None,
        };
        [
            d("RecordsPerSecond", "Count/Second", self.rows_per_second),
            d("ProgressPercentage", "Percent", self.percent),
            d("RecordsProcessed", "Count", self.processed as f64),
            d("RecordsRemaining", "Count", self.remaining as f64),
            d("FailedRecords", "Count", self.failed as f64),
        ]
    }
}

/// The publisher: dropping it sends what is left (one last try) and joins the thread.
pub struct Emitter {
    tx: Option<Sender<Sample>>,
    thread: Option<JoinHandle<()>>,
}

impl Emitter {
    pub fn start(cfg: &MetricsConfig, credentials: std::sync::Arc<Provider>) -> Emitter {
        let mc = crate::config::MetricsConfig {
            namespace: cfg.namespace.clone(),
            region: cfg.region.clone(),
            endpoint: cfg.endpoint.clone(),
            interval: cfg.interval,
            alarms: Vec::new(),
        };
        let cw = CloudWatch::new(&mc, credentials);
        let (tx, rx) = bounded(1024);
        let namespace = cfg.namespace.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || publish_loop(&cw, &namespace, &rx))
            .ok();
        Emitter {
            tx: Some(tx),
            thread,
        }
    }

    /// Queues a sample; never blocks (a full queue drops it, with a log line).
    pub fn record(&self, sample: Sample) {
        if let Some(tx) = &self.tx
            && tx.try_send(sample).is_err()
        {
            log::warn!("metrics: the publisher is behind; a sample was dropped");
        }
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn publish_loop(cw: &CloudWatch, namespace: &str, rx: &Receiver<Sample>) {
    let mut kept: VecDeque<Sample> = VecDeque::new();
    let mut dropped = 0u64;
    loop {
        let closed = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(s) => {
                kept.push_back(s);
                while let Ok(s) = rx.try_recv() {
                    kept.push_back(s);
                }
                false
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => true,
        };
        while kept.len() > MAX_KEPT {
            kept.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            log::warn!("metrics: {dropped} old samples dropped while CloudWatch was unreachable");
            dropped = 0;
        }
        flush(cw, namespace, &mut kept);
        if closed {
            // The last samples get a few more tries: there is no next publish after
            // the process ends.
            for wait in [1, 2, 4] {
                if kept.is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(wait));
                flush(cw, namespace, &mut kept);
            }
            if !kept.is_empty() {
                log::warn!("metrics: {} samples could not be published", kept.len());
            }
            return;
        }
    }
}

/// Sends the kept samples, batch by batch; stops at the first failure, keeping the rest.
fn flush(cw: &CloudWatch, namespace: &str, kept: &mut VecDeque<Sample>) {
    // A batch is 20 data points: four samples of five metrics each, per job.
    while let Some(first) = kept.front() {
        let job = first.job_id.clone();
        let take = kept
            .iter()
            .take(BATCH / 5)
            .take_while(|s| s.job_id == job)
            .count();
        let datums: Vec<Datum> = kept.iter().take(take).flat_map(Sample::datums).collect();
        for body in bodies_for(namespace, "JobId", &job, &datums, BATCH) {
            if let Err(e) = cw.call(&body) {
                log::warn!("metrics: PutMetricData failed ({e}); kept for the next try");
                return;
            }
        }
        kept.drain(..take);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_at_most_twenty_points() {
        let s = Sample {
            job_id: "b/k".into(),
            rows_per_second: 1.0,
            percent: 2.0,
            processed: 3,
            remaining: 4,
            failed: 0,
        };
        let datums: Vec<Datum> = std::iter::repeat_n(s, 9).flat_map(|s| s.datums()).collect();
        let bodies = bodies_for("NS", "JobId", "b/k", &datums, BATCH);
        assert_eq!(bodies.len(), 3);
        for b in &bodies {
            assert!(b.contains("MetricData.member.1."));
            assert!(!b.contains("MetricData.member.21."), "{b}");
            assert!(b.contains("Dimensions.member.1.Name=JobId"));
        }
        assert!(bodies[0].contains("Unit=Count%2FSecond"));
    }
}
