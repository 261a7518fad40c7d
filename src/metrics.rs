//! CloudWatch metrics: counters and gauges the daemon keeps, published every
//! `metrics.interval_seconds` with PutMetricData (Query protocol, SigV4 for the service
//! `monitoring`), and the alarms `tvm-upload alarms` creates with PutMetricAlarm.
//!
//! Uploads only ever touch atomics here ([`Metrics`]); the publisher is its own thread
//! with its own HTTP agent and short timeouts, so a slow or dead endpoint never slows an
//! upload. Counters are taken at each publish and added back if it fails, so a later
//! publish still gives exact sums. Gauges are sampled once per interval and, while
//! publishing fails, aggregated as StatisticValues (count, sum, min, max): memory stays
//! constant however long the endpoint is down. With metrics disabled the thread does not
//! exist, and no request ever goes out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded, select};

use crate::config::{Alarm, MetricsConfig};
use crate::credentials::Provider;
use crate::disk;
use crate::sigv4::uri_encode;

/// CloudWatch's limits for one PutMetricData request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
pub const MAX_BODY_BYTES: usize = 1_000_000;

/// What the daemon counts. Shared; updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub bytes_uploaded: AtomicU64,
    /// Bytes on the wire (after compression; parts stored before a restart not again).
    pub bytes_sent: AtomicU64,
    pub files_uploaded: AtomicU64,
    pub failed_uploads: AtomicU64,
    pub disk: Arc<disk::Counters>,
    pub gauges: Mutex<Gauges>,
    /// With `links` configured: `LinkBytes` per link and `BudgetExhausted`.
    pub links: Option<Arc<crate::links::Links>>,
}

/// The planner's latest view of the queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub queue_depth: u64,
    pub queue_bytes: u64,
    pub oldest_pending_seconds: f64,
    pub quarantined_files: u64,
}

/// One metric's value for one publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Single(f64),
    /// Several samples aggregated.
    Stats {
        count: f64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: Value,
    /// A second dimension, `Link` (for `LinkBytes`).
    pub link: Option<String>,
}

/// Gauge samples since the last successful publish.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Stat {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Stat {
    fn add(&mut self, v: f64) {
        if self.count == 0.0 {
            *self = Stat {
                count: 1.0,
                sum: v,
                min: v,
                max: v,
            };
        } else {
            self.count += 1.0;
            self.sum += v;
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    fn value(&self) -> Option<Value> {
        if self.count == 0.0 {
            None
        } else if self.count == 1.0 {
            Some(Value::Single(self.sum))
        } else {
            Some(Value::Stats {
                count: self.count,
                sum: self.sum,
                min: self.min,
                max: self.max,
            })
        }
    }
}

/// Counters taken but not yet published, and gauge samples. Bounded: one slot each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unsent {
    counters: [u64; 6],
    gauges: [Stat; 5],
    /// `LinkBytes` per link (bounded by the configured links and `other`).
    link_bytes: std::collections::BTreeMap<String, u64>,
    /// `BudgetExhausted`: the links whose budget is spent today.
    budgets: Stat,
}

const COUNTERS: [(&str, &str); 6] = [
    ("BytesUploaded", "Bytes"),
    ("BytesSent", "Bytes"),
    ("FilesUploaded", "Count"),
    ("FailedUploads", "Count"),
    ("FilesDeleted", "Count"),
    ("UnuploadedFilesDeleted", "Count"),
];
const GAUGES: [(&str, &str); 5] = [
    ("DiskUsagePercent", "Percent"),
    ("QueueDepth", "Count"),
    ("QueueBytes", "Bytes"),
    ("OldestPendingSeconds", "Seconds"),
    ("QuarantinedFiles", "Count"),
];

impl Unsent {
    /// Moves the counters' current values in (leaving them at zero) and samples gauges.
    fn take(&mut self, m: &Metrics, disk_percent: Option<f64>) {
        let taken = [
            m.bytes_uploaded.swap(0, Ordering::Relaxed),
            m.bytes_sent.swap(0, Ordering::Relaxed),
            m.files_uploaded.swap(0, Ordering::Relaxed),
            m.failed_uploads.swap(0, Ordering::Relaxed),
            m.disk.files_deleted.swap(0, Ordering::Relaxed),
            m.disk.unuploaded_files_deleted.swap(0, Ordering::Relaxed),
        ];
        for (slot, v) in self.counters.iter_mut().zip(taken) {
            *slot += v;
        }
        let g = *m.gauges.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = disk_percent {
            self.gauges[0].add(p);
        }
        self.gauges[1].add(g.queue_depth as f64);
        self.gauges[2].add(g.queue_bytes as f64);
        self.gauges[3].add(g.oldest_pending_seconds);
        self.gauges[4].add(g.quarantined_files as f64);
        if let Some(links) = &m.links {
            for name in links.names() {
                self.link_bytes.entry(name).or_insert(0);
            }
            for (name, n) in links.take_unpublished() {
                *self.link_bytes.entry(name).or_insert(0) += n;
            }
            self.budgets.add(links.exhausted() as f64);
        }
    }

    /// The datums to publish: every counter (zeros too, so alarms see data), and each
    /// gauge with samples.
    pub fn datums(&self) -> Vec<Datum> {
        let mut out: Vec<Datum> = COUNTERS
            .iter()
            .zip(self.counters)
            .map(|(&(name, unit), v)| Datum {
                name,
                unit,
                value: Value::Single(v as f64),
                link: None,
            })
            .collect();
        for (&(name, unit), s) in GAUGES.iter().zip(self.gauges) {
            if let Some(value) = s.value() {
                let link = None;
                out.push(Datum {
                    name,
                    unit,
                    value,
                    link,
                });
            }
        }
        for (link, n) in &self.link_bytes {
            out.push(Datum {
                name: "LinkBytes",
                unit: "Bytes",
                value: Value::Single(*n as f64),
                link: Some(link.clone()),
            });
        }
        if let Some(value) = self.budgets.value() {
            out.push(Datum {
                name: "BudgetExhausted",
                unit: "Count",
                value,
                link: None,
            });
        }
        out
    }
}

/// PutMetricData form bodies for `datums`, each within CloudWatch's limits.
pub fn bodies(namespace: &str, vehicle_id: &str, datums: &[Datum]) -> Vec<String> {
    bodies_for(
        namespace,
        "VehicleId",
        vehicle_id,
        datums,
        MAX_DATUMS_PER_REQUEST,
    )
}

/// PutMetricData form bodies for `datums` with one dimension, at most `per_request`
/// datums each (csv2kafka sends batches of 20).
pub fn bodies_for(
    namespace: &str,
    dimension: &str,
    dimension_value: &str,
    datums: &[Datum],
    per_request: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let head = format!(
        "Action=PutMetricData&Version=2010-08-01&Namespace={}",
        uri_encode(namespace)
    );
    let mut body = head.clone();
    let mut n = 0;
    for d in datums {
        let member = |i: usize| {
            let p = format!("MetricData.member.{i}");
            let mut s = format!(
                "&{p}.MetricName={}&{p}.Unit={}&{p}.Dimensions.member.1.Name={dimension}&{p}.Dimensions.member.1.Value={}",
                d.name,
                uri_encode(d.unit),
                uri_encode(dimension_value)
            );
            if let Some(link) = &d.link {
                s.push_str(&format!(
                    "&{p}.Dimensions.member.2.Name=Link&{p}.Dimensions.member.2.Value={}",
                    uri_encode(link)
                ));
            }
            match d.value {
                Value::Single(v) => s.push_str(&format!("&{p}.Value={v}")),
                Value::Stats {
                    count,
                    sum,
                    min,
                    max,
                } => s.push_str(&format!(
                    "&{p}.StatisticValues.SampleCount={count}&{p}.StatisticValues.Sum={sum}\
                     &{p}.StatisticValues.Minimum={min}&{p}.StatisticValues.Maximum={max}"
                )),
            }
            s
        };
        let mut part = member(n + 1);
        if n == per_request.min(MAX_DATUMS_PER_REQUEST) || body.len() + part.len() >= MAX_BODY_BYTES
        {
            out.push(std::mem::replace(&mut body, head.clone()));
            n = 0;
            part = member(1);
        }
        body.push_str(&part);
        n += 1;
    }
    if n > 0 {
        out.push(body);
    }
    out
}

/// A signed Query-API client for CloudWatch.
pub struct CloudWatch {
    client: crate::aws::Client,
}

impl CloudWatch {
    pub fn new(cfg: &MetricsConfig, credentials: Arc<Provider>) -> CloudWatch {
        CloudWatch {
            client: crate::aws::Client::new(
                &cfg.endpoint,
                &cfg.region,
                "monitoring",
                concat!("tvm-upload/", env!("CARGO_PKG_VERSION")),
                credentials,
            ),
        }
    }

    /// Sends one Query-API form; Ok with the answer's body, or an error naming the cause.
    pub fn call(&self, body: &str) -> Result<String, String> {
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = [("content-type".to_string(), content_type.to_string())];
        let (status, text) = self.client.post(&headers, body.as_bytes())?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            let code = crate::s3::xml_tag(&text, "Code").unwrap_or_default();
            let message = crate::s3::xml_tag(&text, "Message").unwrap_or_default();
            Err(format!("HTTP {status} {code} {message}").trim().to_string())
        }
    }
}

/// The publisher thread; dropping it publishes once more and joins it.
pub struct Publisher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn spawn(
        cfg: &MetricsConfig,
        vehicle_id: &str,
        credentials: Arc<Provider>,
        metrics: Arc<Metrics>,
        disk_paths: Vec<PathBuf>,
    ) -> std::io::Result<Publisher> {
        let client = CloudWatch::new(cfg, credentials);
        let (namespace, vehicle, interval) =
            (cfg.namespace.clone(), vehicle_id.to_string(), cfg.interval);
        let (tx, rx) = bounded::<()>(1);
        let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
            let mut unsent = Unsent::default();
            let mut failing = false;
            loop {
                let last = select! {
                    recv(rx) -> _ => true,
                    default(interval) => false,
                };
                let disk = disk_paths.iter().filter_map(|p| disk::usage(p).ok()).map(|u| {
                    if u.size == 0 { 0.0 } else { u.used as f64 * 100.0 / u.size as f64 }
                });
                let disk = disk.fold(None, |acc: Option<f64>, v| Some(acc.map_or(v, |a| a.max(v))));
                unsent.take(&metrics, disk);
                let datums = unsent.datums();
                let result = bodies(&namespace, &vehicle, &datums).iter().try_for_each(|b| client.call(b).map(|_| ()));
                match result {
                    Ok(()) => {
                        if failing {
                            log::info!("metrics: publishing works again; the held counters are sent");
                        }
                        failing = false;
                        unsent = Unsent::default();
                    }
                    Err(e) => {
                        if !failing {
                            log::warn!("metrics: publishing failed ({e}); counters are kept for the next try");
                        }
                        failing = true;
                    }
                }
                if last {
                    return;
                }
            }
        })?;
        Ok(Publisher {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.try_send(());
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the metrics thread panicked");
        }
    }
}

/// The PutMetricAlarm form for one configured alarm.
pub fn alarm_body(namespace: &str, vehicle_id: &str, a: &Alarm) -> String {
    format!(
        "Action=PutMetricAlarm&Version=2010-08-01&AlarmName={}&Namespace={}&MetricName={}&Statistic={}\
         &Period={}&EvaluationPeriods={}&Threshold={}&ComparisonOperator={}&TreatMissingData=notBreaching\
         &Dimensions.member.1.Name=VehicleId&Dimensions.member.1.Value={}",
        uri_encode(&format!("{vehicle_id}-{}", a.name)),
        uri_encode(namespace),
        a.metric,
        a.statistic,
        a.period_seconds,
        a.evaluation_periods,
        a.threshold,
        a.comparison,
        uri_encode(vehicle_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::{Request, Signer};

    #[test]
    fn failed_publish_keeps_counters_and_aggregates_gauges() {
        let m = Metrics::default();
        m.files_uploaded.store(3, Ordering::Relaxed);
        m.gauges.lock().expect("lock").queue_depth = 10;
        let mut unsent = Unsent::default();
        unsent.take(&m, Some(50.0));
        // That publish failed: more happens, then the next take merges.
        m.files_uploaded.store(2, Ordering::Relaxed);
        m.gauges.lock().expect("lock").queue_depth = 4;
        unsent.take(&m, Some(70.0));
        let d = unsent.datums();
        let get = |n: &str| d.iter().find(|x| x.name == n).map(|x| x.value.clone());
        assert_eq!(get("FilesUploaded"), Some(Value::Single(5.0)));
        assert_eq!(get("FailedUploads"), Some(Value::Single(0.0)));
        assert_eq!(
            get("QueueDepth"),
            Some(Value::Stats {
                count: 2.0,
                sum: 14.0,
                min: 4.0,
                max: 10.0
            })
        );
        assert_eq!(
            get("DiskUsagePercent"),
            Some(Value::Stats {
                count: 2.0,
                sum: 120.0,
                min: 50.0,
                max: 70.0
            })
        );
        assert_eq!(m.files_uploaded.load(Ordering::Relaxed), 0, "taken");
    }

    #[test]
    fn snapshot_of_one_put_metric_data_request() {
        let datums = vec![
            Datum {
                name: "FilesUploaded",
                unit: "Count",
                value: Value::Single(3.0),
                link: None,
            },
            Datum {
                name: "QueueDepth",
                unit: "Count",
                value: Value::Stats {
                    count: 2.0,
                    sum: 14.0,
                    min: 4.0,
                    max: 10.0,
                },
                link: None,
            },
        ];
        let b = bodies("TVM/Upload", "v001", &datums);
        assert_eq!(
            b,
            vec![
                "Action=PutMetricData&Version=2010-08-01&Namespace=TVM%2FUpload\
                 &MetricData.member.1.MetricName=FilesUploaded&MetricData.member.1.Unit=Count\
                 &MetricData.member.1.Dimensions.member.1.Name=VehicleId&MetricData.member.1.Dimensions.member.1.Value=v001\
                 &MetricData.member.1.Value=3\
                 &MetricData.member.2.MetricName=QueueDepth&MetricData.member.2.Unit=Count\
                 &MetricData.member.2.Dimensions.member.1.Name=VehicleId&MetricData.member.2.Dimensions.member.1.Value=v001\
                 &MetricData.member.2.StatisticValues.SampleCount=2&MetricData.member.2.StatisticValues.Sum=14\
                 &MetricData.member.2.StatisticValues.Minimum=4&MetricData.member.2.StatisticValues.Maximum=10"
                    .to_string()
            ]
        );
        // And signed, with a session token, as it would go out.
        let signer = Signer {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: Some("TOKEN"),
            region: "cn-north-1",
            service: "monitoring",
        };
        let headers = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let req = Request {
            method: "POST",
            host: "monitoring.cn-north-1.amazonaws.com.cn",
            path: "/",
            query: &[],
            headers: &headers,
            body: b[0].as_bytes(),
        };
        let signed = signer.sign(&req, 1_795_392_000);
        assert_eq!(
            signed[0],
            ("x-amz-date".to_string(), "20261123T000000Z".to_string())
        );
        assert_eq!(
            signed[1],
            ("x-amz-security-token".to_string(), "TOKEN".to_string())
        );
        assert!(signed[2].1.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/cn-north-1/monitoring/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ));
        // Computed independently (Python's hmac/hashlib over the same canonical request).
        assert_eq!(
            signed[2].1.rsplit('=').next(),
            Some("8dddcd491c76692a9f1b66125de9c4f6f5370f926ff9e0803f632a17e2b7ae59")
        );
    }

    #[test]
    fn link_bytes_carry_the_link_as_a_second_dimension() {
        let datum = Datum {
            name: "LinkBytes",
            unit: "Bytes",
            value: Value::Single(7.0),
            link: Some("cellular".into()),
        };
        let b = bodies("TVM/Upload", "v001", &[datum]);
        assert_eq!(
            b,
            vec![
                "Action=PutMetricData&Version=2010-08-01&Namespace=TVM%2FUpload\
                 &MetricData.member.1.MetricName=LinkBytes&MetricData.member.1.Unit=Bytes\
                 &MetricData.member.1.Dimensions.member.1.Name=VehicleId&MetricData.member.1.Dimensions.member.1.Value=v001\
                 &MetricData.member.1.Dimensions.member.2.Name=Link&MetricData.member.1.Dimensions.member.2.Value=cellular\
                 &MetricData.member.1.Value=7"
                    .to_string()
            ]
        );
    }

    #[test]
    fn batches_respect_the_datum_and_size_limits() {
        let many: Vec<Datum> = (0..2500)
            .map(|i| Datum {
                name: "QueueDepth",
                unit: "Count",
                value: Value::Single(i as f64),
                link: None,
            })
            .collect();
        let b = bodies("TVM/Upload", "v001", &many);
        assert_eq!(b.len(), 3);
        for body in &b {
            assert!(body.len() < MAX_BODY_BYTES);
            assert!(body.matches(".MetricName=").count() <= MAX_DATUMS_PER_REQUEST);
            assert!(
                body.contains("MetricData.member.1.MetricName"),
                "numbering restarts per request"
            );
        }
        let total: usize = b.iter().map(|x| x.matches(".MetricName=").count()).sum();
        assert_eq!(total, 2500);
    }

    #[test]
    fn alarm_names_and_operators() {
        let a = Alarm {
            name: "upload-failures".into(),
            metric: "FailedUploads".into(),
            statistic: "Sum".into(),
            comparison: "GreaterThanOrEqualToThreshold".into(),
            threshold: 5.0,
            period_seconds: 300,
            evaluation_periods: 1,
        };
        let body = alarm_body("TVM/Upload", "v001", &a);
        assert!(body.contains("AlarmName=v001-upload-failures"));
        assert!(body.contains("ComparisonOperator=GreaterThanOrEqualToThreshold"));
        assert!(body.contains("Dimensions.member.1.Name=VehicleId&Dimensions.member.1.Value=v001"));
    }
}
