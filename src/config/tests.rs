use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn base(extra: &str) -> String {
    let dir = std::env::temp_dir();
    format!(
        r#"{{"vehicle_id":"v001","state_dir":"/var/lib/tvm-upload-test",
            "sources":[{{"name":"terminal","path":{dir:?}}}],
            "s3":{{"bucket":"t01logs","region":"cn-north-1"}}{extra}}}"#
    )
}

fn err(text: &str) -> String {
    match Config::parse(text, &no_env) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_config_gets_spec_defaults() {
    let c = Config::parse(&base(""), &no_env).expect("valid");
    assert_eq!(c.stability, Duration::from_secs(60));
    assert_eq!(c.s3.part_size_bytes, 8 << 20);
    assert_eq!(c.s3.multipart_threshold_bytes, 8 << 20);
    assert_eq!(c.s3.concurrency, 2);
    assert_eq!(c.s3.endpoint, "https://s3.cn-north-1.amazonaws.com.cn");
    assert!(c.schedule.is_none() && c.disk.is_none() && c.metrics.is_none());
    assert!(c.sources[0].recursive);
    assert_eq!(c.requests_poll, Some(Duration::from_secs(300)));
}

#[test]
fn links_parse_with_their_budgets_and_sources_name_them() {
    let c = Config::parse(
        &base(
            r#","links":[{"name":"depot","interfaces":["wlan*","eth0"]},
                {"name":"cellular","interfaces":["wwan*"],"daily_bytes":"200MiB","min_priority":1}]"#,
        )
        .replace(r#""name":"terminal","#, r#""name":"terminal","links":["depot","other"],"#),
        &no_env,
    )
    .expect("valid");
    assert_eq!(c.links.len(), 2);
    assert_eq!(c.links[1].daily_bytes, Some(200 << 20));
    assert_eq!(c.links[1].min_priority, Some(1));
    assert!(c.links[0].interfaces[0].matches("wlan0"));
    assert!(!c.links[0].interfaces[0].matches("wwan0"));
    assert_eq!(
        c.sources[0].links.as_deref(),
        Some(&["depot".to_string(), "other".to_string()][..])
    );
    let j = c.to_json(serde_json::Value::Null);
    assert_eq!(j["links"][1]["daily_bytes"], 200 << 20, "{j}");
    assert!(
        Config::parse(&base(""), &no_env)
            .expect("valid")
            .links
            .is_empty()
    );
}

#[test]
fn fleet_requests_are_polled_as_asked_or_never() {
    let poll = |v: &str| {
        Config::parse(
            &base(&format!(r#","requests":{{"poll_seconds":{v}}}"#)),
            &no_env,
        )
        .expect("valid")
        .requests_poll
    };
    assert_eq!(poll("30"), Some(Duration::from_secs(30)));
    assert_eq!(poll("\"2m\""), Some(Duration::from_secs(120)));
    assert_eq!(poll("0"), None);
    assert_eq!(poll("null"), Some(Duration::from_secs(300)));
}

#[test]
fn errors_name_the_field() {
    assert!(err(&base(r#","bogus":1"#)).contains("`bogus`: unknown key"));
    assert!(err(&base(r#","retry":{"initial_seconds":1,"typo":2}"#)).contains("`retry.typo`"));
    assert!(err(r#"{"sources":[],"s3":{}}"#).contains("`vehicle_id`: missing"));
    let no_bucket = base("").replace(r#""bucket":"t01logs","#, "");
    assert!(err(&no_bucket).contains("`s3.bucket`"));
    let no_region = base("").replace(r#","region":"cn-north-1""#, "");
    assert!(err(&no_region).contains("`s3.region`"));
    let part = base("").replace(r#""region""#, r#""part_size":"4MiB","region""#);
    assert!(err(&part).contains("`s3.part_size`"));
    let part = base("").replace(r#""region""#, r#""part_size":"6GiB","region""#);
    assert!(err(&part).contains("`s3.part_size`"));
    let conc = base("").replace(r#""region""#, r#""concurrency":0,"region""#);
    assert!(err(&conc).contains("`s3.concurrency`"));
    let size = base("").replace(r#""region""#, r#""part_size":"8 potatoes","region""#);
    assert!(err(&size).contains("`s3.part_size`"));
    assert!(err(&base(r#","stability_seconds":"soon""#)).contains("`stability_seconds`"));
    let win = r#","schedule":{"windows":[{"start":"25:00","end":"06:00"}]}"#;
    assert!(err(&base(win)).contains("`schedule.windows[0].start`"));
    let day = r#","schedule":{"windows":[{"days":["funday"],"start":"20:00","end":"06:00"}]}"#;
    assert!(err(&base(day)).contains("`schedule.windows[0].days`"));
    let alarm =
        r#","metrics":{"alarms":[{"name":"a","metric":"Nope","comparison":">","threshold":1}]}"#;
    assert!(err(&base(alarm)).contains("`metrics.alarms[0].metric`"));
}

#[test]
fn source_names_must_be_unique_and_safe() {
    let dir = std::env::temp_dir();
    let dup = base("").replace(
        r#"}],"#,
        &format!(r#"}},{{"name":"terminal","path":{dir:?}}}],"#),
    );
    assert!(err(&dup).contains("`sources[1].name`: duplicate"));
    let unsafe_name = base("").replace(r#""name":"terminal""#, r#""name":"../etc""#);
    assert!(err(&unsafe_name).contains("`sources[0].name`"));
    let not_dir = base("").replace(&format!("{dir:?}"), r#""/etc/passwd""#);
    assert!(err(&not_dir).contains("`sources[0].path`: /etc/passwd is not a directory"));
}

#[test]
fn environment_fills_region_and_endpoint() {
    let env = |k: &str| match k {
        "AWS_REGION" => Some("eu-west-1".to_string()),
        "AWS_ENDPOINT_URL" => Some("http://s3.depot.lan:9000".to_string()),
        _ => None,
    };
    let text = base("").replace(r#","region":"cn-north-1""#, "");
    let c = Config::parse(&text, &env).expect("valid");
    assert_eq!(c.s3.region, "eu-west-1");
    assert_eq!(c.s3.endpoint, "http://s3.depot.lan:9000");
}

#[test]
fn sizes_and_durations_parse() {
    assert_eq!(parse_size("8MiB"), Some(8 << 20));
    assert_eq!(parse_size("500KB"), Some(500_000));
    assert_eq!(parse_size("1.5K"), Some(1536));
    assert_eq!(parse_size("12"), Some(12));
    assert_eq!(parse_size("x"), None);
    assert_eq!(parse_size("-1"), None);
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("1w"), None);
    assert_eq!(parse_utc_offset("+08:00"), Some(8 * 3600));
    assert_eq!(parse_utc_offset("-05:30"), Some(-(5 * 3600 + 1800)));
    assert_eq!(parse_utc_offset("08:00"), None);
}

#[test]
fn prefix_gets_a_trailing_slash() {
    let text = base("").replace(r#""region""#, r#""prefix":"fleet","region""#);
    assert_eq!(
        Config::parse(&text, &no_env).expect("valid").s3.prefix,
        "fleet/"
    );
}

#[test]
fn compression_is_zstd_at_a_sane_level_and_only_where_asked() {
    let with = |extra: &str| {
        base("").replace(
            r#""name":"terminal""#,
            &format!(r#""name":"terminal"{extra}"#),
        )
    };
    let c = Config::parse(&with(r#","compress":"zstd""#), &no_env).expect("valid");
    let rules = c.compress_rules();
    assert_eq!(rules["terminal"].level, 3, "zstd's default level");
    assert!(rules["terminal"].applies("a.log") && !rules["terminal"].applies("a.log.gz"));
    let c = Config::parse(
        &with(r#","compress":"zstd","compress_level":9,"compress_skip":["*.bag"]"#),
        &no_env,
    )
    .expect("valid");
    let rule = &c.compress_rules()["terminal"];
    assert_eq!(rule.level, 9);
    assert!(!rule.applies("x/run.bag"));
    let none = Config::parse(&with(r#","compress":"none""#), &no_env).expect("valid");
    assert!(none.compress_rules().is_empty());
    assert!(
        Config::parse(&base(""), &no_env)
            .expect("valid")
            .compress_rules()
            .is_empty()
    );
    for (extra, want) in [
        (
            r#","compress":"gzip""#,
            "`sources[0].compress`: \"gzip\" is not supported",
        ),
        (
            r#","compress":"zstd","compress_level":0"#,
            "`sources[0].compress_level`: 0 is outside 1..=19",
        ),
        (
            r#","compress":"zstd","compress_level":22"#,
            "`sources[0].compress_level`: 22",
        ),
        (
            r#","compress_level":5"#,
            "`sources[0].compress_level`: only applies with",
        ),
        (
            r#","compress_skip":["*.x"]"#,
            "`sources[0].compress_skip`: only applies with",
        ),
        (
            r#","compress":"zstd","compress_skip":["[z"]"#,
            "`sources[0].compress_skip[0]`",
        ),
    ] {
        let e = err(&with(extra));
        assert!(e.contains(want), "{extra}: {e}");
    }
}

/// The config with `fields` added to its one source.
fn source_with(fields: &str) -> String {
    base("").replace(
        r#""name":"terminal","#,
        &format!(r#""name":"terminal",{fields},"#),
    )
}

/// The config with `fields` added to its `s3` section.
fn s3_with(fields: &str) -> String {
    base("").replace(
        r#""region":"cn-north-1""#,
        &format!(r#""region":"cn-north-1",{fields}"#),
    )
}

#[test]
fn every_section_names_the_field_it_refuses() {
    let iot = |fields: &str| {
        base(&format!(
            r#","credentials":{{"iot":{{"endpoint":"x.credentials.iot.cn-north-1.amazonaws.com.cn",
               "role_alias":"r","thing_name":"v001","cert":"/c","key":"/k","ca":"/a"{fields}}}}}"#
        ))
    };
    let alarm = |fields: &str| {
        base(&format!(
            r#","metrics":{{"alarms":[{{"name":"a","metric":"FailedUploads","comparison":">",
               "threshold":1{fields}}}]}}"#
        ))
    };
    let cases: Vec<(String, &str)> = vec![
        (source_with(r#""compress":"lz4""#), "`sources[0].compress`"),
        (
            source_with(r#""compress":"zstd","compress_level":30"#),
            "`sources[0].compress_level`",
        ),
        (
            source_with(r#""compress_level":5"#),
            "`sources[0].compress_level`",
        ),
        (
            source_with(r#""compress":"zstd","compress_skip":["[x"]"#),
            "`sources[0].compress_skip",
        ),
        (
            source_with(r#""compress_skip":["*.bin"]"#),
            "`sources[0].compress_skip`",
        ),
        (source_with(r#""exclude":["[x"]"#), "`sources[0].exclude"),
        (
            source_with(r#""max_wait_seconds":0"#),
            "`sources[0].max_wait_seconds`",
        ),
        (
            source_with(r#""max_wait_seconds":"soon""#),
            "`sources[0].max_wait_seconds`",
        ),
        (
            source_with(r#""name":"""#).replacen(r#""name":"terminal","#, "", 1),
            "`sources[0].name`",
        ),
        (
            base(r#","retry":{"initial_seconds":0}"#),
            "`retry.initial_seconds`",
        ),
        (
            base(r#","retry":{"initial_seconds":10,"max_seconds":5}"#),
            "`retry.max_seconds`",
        ),
        (base(r#","log":{"level":"loud"}"#), "`log.level`"),
        (base(r#","log":{"max_bytes":"1KiB"}"#), "`log.max_bytes`"),
        (base(r#","log":{"keep":0}"#), "`log.keep`"),
        (base(r#","log":{"file":"/tmp/"}"#), "`log.file`"),
        (s3_with(r#""storage_class":"COLD""#), "`s3.storage_class`"),
        (
            s3_with(r#""ca_bundle":"/no/such/bundle.pem""#),
            "`s3.ca_bundle`",
        ),
        (s3_with(r#""endpoint":"ftp://x""#), "`s3.endpoint`"),
        (s3_with(r#""endpoint":"http://x/bucket""#), "`s3.endpoint`"),
        (s3_with(r#""endpoint":"http://x:port""#), "`s3.endpoint`"),
        (s3_with(r#""prefix":"a/../b""#), "`s3.prefix`"),
        (
            s3_with(r#""multipart_threshold":"6GiB""#),
            "`s3.multipart_threshold`",
        ),
        (base("").replace("t01logs", "No_Such"), "`s3.bucket`"),
        (base("").replace("cn-north-1", "moon base"), "`s3.region`"),
        (
            base(r#","schedule":{"utc_offset":"8h"}"#),
            "`schedule.utc_offset`",
        ),
        (
            base(r#","schedule":{"windows":[{"start":"20:00","end":"6am"}]}"#),
            "`schedule.windows[0].end`",
        ),
        (
            base(r#","schedule":{"windows":[{"days":"mon","start":"20:00","end":"06:00"}]}"#),
            "`schedule.windows[0].days`",
        ),
        (
            base(
                r#","schedule":{"windows":[{"start":"20:00","end":"06:00","max_bytes_per_second":0}]}"#,
            ),
            "`schedule.windows[0].max_bytes_per_second`",
        ),
        (
            base(r#","disk":{"keep_uploaded_hours":-1}"#),
            "`disk.keep_uploaded_hours`",
        ),
        (
            base(r#","metrics":{"interval_seconds":0}"#),
            "`metrics.interval_seconds`",
        ),
        (
            base(r#","requests":{"poll_seconds":-5}"#),
            "`requests.poll_seconds`",
        ),
        (base(r#","requests":{"poll":5}"#), "`requests.poll`"),
        (
            base(r#","links":[{"name":"other","interfaces":["x"]}]"#),
            "`links[0].name`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"]},{"name":"a","interfaces":["y"]}]"#),
            "`links[1].name`",
        ),
        (
            base(r#","links":[{"name":"a b","interfaces":["x"]}]"#),
            "`links[0].name`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":[]}]"#),
            "`links[0].interfaces`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":[""]}]"#),
            "`links[0].interfaces[0]`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"],"daily_bytes":0}]"#),
            "`links[0].daily_bytes`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"],"daily_bytes":"lots"}]"#),
            "`links[0].daily_bytes`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"],"min_priority":"high"}]"#),
            "`links[0].min_priority`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"],"budget":1}]"#),
            "`links[0]",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"]}]"#).replace(
                r#""name":"terminal","#,
                r#""name":"terminal","links":["b"],"#,
            ),
            "`sources[0].links`",
        ),
        (
            base(r#","links":[{"name":"a","interfaces":["x"]}]"#)
                .replace(r#""name":"terminal","#, r#""name":"terminal","links":[],"#),
            "`sources[0].links`",
        ),
        (
            alarm(r#","statistic":"Median""#),
            "`metrics.alarms[0].statistic`",
        ),
        (
            alarm(r#","period_seconds":7"#),
            "`metrics.alarms[0].period_seconds`",
        ),
        (
            alarm(r#","evaluation_periods":0"#),
            "`metrics.alarms[0].evaluation_periods`",
        ),
        (
            alarm("").replace(r#""comparison":">""#, r#""comparison":"!=""#),
            "`metrics.alarms[0].comparison`",
        ),
        (
            alarm("").replace(r#""name":"a","#, r#""name":"","#),
            "`metrics.alarms[0].name`",
        ),
        (
            iot("").replace(r#""role_alias":"r","#, ""),
            "`credentials.iot.role_alias`",
        ),
        (
            iot("").replace("x.credentials.iot", "http://x.credentials.iot"),
            "`credentials.iot.endpoint`",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, field) in &cases {
        match Config::parse(text, &no_env) {
            Ok(_) => wrong.push(format!("accepted, wanted {field}: {text}")),
            Err(e) if !e.to_string().contains(field) => wrong.push(format!("{field}: got {e}")),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
