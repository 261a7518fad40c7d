//! `tvm-upload dashboard`: the fleet's CloudWatch dashboard, made with one PutDashboard
//! whose body is built here from the config (pure). Each graph draws one metric the
//! daemons publish (SPEC.md, "Metrics") for every vehicle named, and each configured
//! alarm gets a graph of its metric with its threshold drawn in; with `links`, each link
//! gets a graph of its bytes a day with its budget. PutDashboard replaces a
//! dashboard of the same name, so running it again updates it.

use serde_json::{Value, json};

use crate::config::{Alarm, Config, MetricsConfig};
use crate::sigv4::uri_encode;

/// Most vehicles on one dashboard: CloudWatch draws at most 500 metrics in a graph, and
/// the busiest graph here has two a vehicle (a link's graph has one).
pub const MAX_VEHICLES: usize = 250;

/// Graph period, seconds: five publishes at the default interval.
const PERIOD: u64 = 300;

/// The graphs: a title, and the metrics with the statistic each is read with.
const GRAPHS: [(&str, &[(&str, &str)]); 8] = [
    ("Backlog: files waiting", &[("QueueDepth", "Maximum")]),
    ("Backlog: bytes waiting", &[("QueueBytes", "Maximum")]),
    (
        "Oldest file waiting (seconds)",
        &[("OldestPendingSeconds", "Maximum")],
    ),
    (
        "Bytes uploaded (files) and sent (on the wire)",
        &[("BytesUploaded", "Sum"), ("BytesSent", "Sum")],
    ),
    ("Files uploaded", &[("FilesUploaded", "Sum")]),
    (
        "Failures: failed attempts, files quarantined",
        &[("FailedUploads", "Sum"), ("QuarantinedFiles", "Maximum")],
    ),
    ("Disk usage (%)", &[("DiskUsagePercent", "Maximum")]),
    (
        "Files deleted by the disk cleanup (uploaded, not uploaded)",
        &[("FilesDeleted", "Sum"), ("UnuploadedFilesDeleted", "Sum")],
    ),
];

/// The dashboard's name: the metrics namespace with what a dashboard name cannot hold
/// (`/`, spaces) made `-`, so `TVM/Upload` gives `TVM-Upload`.
pub fn name(namespace: &str) -> String {
    namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The vehicles of `--vehicles V1,V2...`, each a valid vehicle id, at most
/// [`MAX_VEHICLES`]; none given: this config's vehicle.
pub fn vehicles(list: Option<&str>, own: &str) -> Result<Vec<String>, String> {
    let Some(list) = list else {
        return Ok(vec![own.to_string()]);
    };
    let mut out: Vec<String> = Vec::new();
    for v in list.split(',').map(str::trim) {
        if !crate::config::plain_name(v, 1, 64) {
            return Err(format!(
                "--vehicles: {v:?} is not a vehicle id (1 to 64 of A-Z a-z 0-9 . _ -)"
            ));
        }
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    if out.len() > MAX_VEHICLES {
        return Err(format!(
            "--vehicles: {} vehicles, more than one dashboard draws ({MAX_VEHICLES}): \
             split them over several configs' namespaces",
            out.len()
        ));
    }
    Ok(out)
}

/// One line a vehicle: `[namespace, metric, "VehicleId", vehicle, {stat, label}]`.
fn lines(namespace: &str, metric: &str, stat: &str, vehicles: &[String]) -> Vec<Value> {
    vehicles
        .iter()
        .map(|v| json!([namespace, metric, "VehicleId", v, {"stat": stat, "label": format!("{v} {metric}")}]))
        .collect()
}

fn graph(i: usize, title: &str, region: &str, metrics: Vec<Value>, more: Value) -> Value {
    let mut properties = json!({
        "title": title, "region": region, "view": "timeSeries", "stacked": false,
        "period": PERIOD, "metrics": metrics,
    });
    if let (Some(p), Value::Object(extra)) = (properties.as_object_mut(), more) {
        p.extend(extra);
    }
    json!({"type": "metric", "x": (i % 2) * 12, "y": (i / 2) * 6, "width": 12, "height": 6,
           "properties": properties})
}

/// The alarm's metric for every vehicle, its threshold drawn as a line and the side
/// that breaches shaded.
fn alarm_graph(i: usize, m: &MetricsConfig, a: &Alarm, vehicles: &[String]) -> Value {
    let fill = if a.comparison.starts_with("Greater") {
        "above"
    } else {
        "below"
    };
    let title = format!(
        "Alarm {}: {} {} {}",
        a.name, a.metric, a.statistic, a.comparison
    );
    let line = json!({"label": a.name, "value": a.threshold, "fill": fill});
    graph(
        i,
        &title,
        &m.region,
        lines(&m.namespace, &a.metric, &a.statistic, vehicles),
        json!({"period": a.period_seconds, "annotations": {"horizontal": [line]}}),
    )
}

/// The dashboard body for `vehicles`.
pub fn body(config: &Config, m: &MetricsConfig, vehicles: &[String]) -> Value {
    let mut widgets = Vec::new();
    for (title, metrics) in GRAPHS {
        let drawn = metrics
            .iter()
            .flat_map(|(metric, stat)| lines(&m.namespace, metric, stat, vehicles))
            .collect();
        let more = match (&config.disk, title.starts_with("Disk")) {
            (Some(d), true) => json!({"annotations": {"horizontal": [
                {"label": "cleanup", "value": d.cleanup_percent},
                {"label": "emergency", "value": d.emergency_percent}]},
                "yAxis": {"left": {"min": 0, "max": 100}}}),
            _ => json!({}),
        };
        widgets.push(graph(widgets.len(), title, &m.region, drawn, more));
    }
    link_graphs(config, m, vehicles, &mut widgets);
    for a in &m.alarms {
        widgets.push(alarm_graph(widgets.len(), m, a, vehicles));
    }
    json!({ "widgets": widgets })
}

/// With `links`: a graph of each link's bytes a day (its budget drawn in), and one of
/// the links whose budget is spent.
fn link_graphs(config: &Config, m: &MetricsConfig, vehicles: &[String], widgets: &mut Vec<Value>) {
    if config.links.is_empty() {
        return;
    }
    for link in &config.links {
        let drawn = vehicles
            .iter()
            .map(|v| {
                json!([m.namespace, "LinkBytes", "VehicleId", v, "Link", link.name,
                       {"stat": "Sum", "label": format!("{v} {}", link.name)}])
            })
            .collect();
        let more = match link.daily_bytes {
            Some(d) => json!({"period": 86_400, "annotations": {"horizontal": [
                {"label": "daily budget", "value": d, "fill": "above"}]}}),
            None => json!({"period": 86_400}),
        };
        let title = format!("Bytes a day over {}", link.name);
        widgets.push(graph(widgets.len(), &title, &m.region, drawn, more));
    }
    let spent = lines(&m.namespace, "BudgetExhausted", "Maximum", vehicles);
    let title = "Links whose daily budget is spent";
    widgets.push(graph(widgets.len(), title, &m.region, spent, json!({})));
}

/// The PutDashboard form.
pub fn put_form(name: &str, body: &Value) -> String {
    format!(
        "Action=PutDashboard&Version=2010-08-01&DashboardName={}&DashboardBody={}",
        uri_encode(name),
        uri_encode(&body.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let dir = std::env::temp_dir();
        let text = format!(
            r#"{{"vehicle_id":"v001","sources":[{{"name":"logs","path":{dir:?}}}],
                "s3":{{"bucket":"t01logs","region":"eu-west-1"}},"metrics":{{"alarms":[
                {{"name":"stuck","metric":"QueueDepth","statistic":"Maximum","comparison":"<",
                  "threshold":1.5}}]}}{extra}}}"#
        );
        Config::parse(&text, &|_| None).expect("config")
    }

    #[test]
    fn every_graph_draws_each_vehicle_and_alarms_show_their_threshold() {
        let c = config(r#","disk":{"cleanup_percent":80}"#);
        let m = c.metrics.as_ref().expect("metrics");
        let v = vehicles(Some("v001, v002,v001"), "v001").expect("vehicles");
        assert_eq!(v, ["v001", "v002"], "trimmed, repeats dropped");
        let b = body(&c, m, &v);
        let widgets = b["widgets"].as_array().expect("widgets");
        assert_eq!(widgets.len(), GRAPHS.len() + 1);
        let mut drawn = std::collections::BTreeSet::new();
        for w in widgets {
            assert_eq!(w["properties"]["region"], "eu-west-1");
            for line in w["properties"]["metrics"].as_array().expect("lines") {
                assert_eq!(line[0], "TVM/Upload");
                assert_eq!(line[2], "VehicleId");
                drawn.insert((line[1].to_string(), line[3].to_string()));
            }
        }
        assert_eq!(drawn.len(), 11 * 2, "every SPEC metric for both vehicles");
        let disk = &widgets[6]["properties"]["annotations"]["horizontal"];
        assert_eq!(disk[0]["value"], 80.0);
        assert_eq!(disk[1]["value"], 95.0);
        let alarm = &widgets[GRAPHS.len()]["properties"];
        assert_eq!(alarm["annotations"]["horizontal"][0]["value"], 1.5);
        assert_eq!(alarm["annotations"]["horizontal"][0]["fill"], "below");
        assert_eq!(alarm["period"], 300);
        let form = put_form(&name(&m.namespace), &b);
        assert!(form.starts_with(
            "Action=PutDashboard&Version=2010-08-01&DashboardName=TVM-Upload&DashboardBody=%7B"
        ));
    }

    #[test]
    fn each_link_gets_its_bytes_a_day_with_its_budget() {
        let c = config(
            r#","links":[{"name":"depot","interfaces":["wlan*"]},
                {"name":"cellular","interfaces":["wwan*"],"daily_bytes":1000}]"#,
        );
        let m = c.metrics.as_ref().expect("metrics");
        let v = vehicles(Some("v001,v002"), "v001").expect("vehicles");
        let b = body(&c, m, &v);
        let widgets = b["widgets"].as_array().expect("widgets");
        assert_eq!(
            widgets.len(),
            GRAPHS.len() + 3 + 1,
            "two links, the spent graph, an alarm"
        );
        let cell = &widgets[GRAPHS.len() + 1]["properties"];
        assert_eq!(cell["title"], "Bytes a day over cellular");
        assert_eq!(cell["period"], 86_400);
        assert_eq!(cell["annotations"]["horizontal"][0]["value"], 1000);
        let line = &cell["metrics"][1];
        assert_eq!(line[1], "LinkBytes");
        assert_eq!(
            (&line[2], &line[3], &line[4], &line[5]),
            (
                &json!("VehicleId"),
                &json!("v002"),
                &json!("Link"),
                &json!("cellular")
            )
        );
        let depot = &widgets[GRAPHS.len()]["properties"];
        assert!(depot.get("annotations").is_none(), "no budget, no line");
        let spent = &widgets[GRAPHS.len() + 2]["properties"];
        assert_eq!(spent["metrics"][0][1], "BudgetExhausted");
    }

    #[test]
    fn vehicles_are_checked_and_bounded() {
        assert_eq!(vehicles(None, "v9").expect("own"), ["v9"]);
        let e = vehicles(Some("v1,../x"), "v9").expect_err("unsafe");
        assert!(e.starts_with("--vehicles: \"../x\""), "{e}");
        assert!(vehicles(Some("v1,,v2"), "v9").is_err(), "an empty id");
        let many: Vec<String> = (0..=MAX_VEHICLES).map(|i| format!("v{i}")).collect();
        let e = vehicles(Some(&many.join(",")), "v9").expect_err("too many");
        assert!(e.contains("251 vehicles"), "{e}");
        assert_eq!(name("TVM/Upload fleet"), "TVM-Upload-fleet");
    }
}
