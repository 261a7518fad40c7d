use super::*;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tvm-requests-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("temp dir");
    d
}

const NOW: i64 = 1_796_540_400 * 1_000_000_000;

fn sources() -> Vec<String> {
    vec!["bags".into(), "logs".into()]
}

fn local(id: &str) -> Request {
    new_request(
        id.into(),
        ("-1h", "now"),
        vec!["bags".into()],
        Some("hard brake".into()),
        Origin::Local,
        &sources(),
        NOW,
    )
    .expect("valid")
}

#[test]
fn a_request_is_checked_against_the_config() {
    let r = local("r1");
    assert_eq!(r.since_ns, NOW - 3600 * 1_000_000_000);
    assert_eq!(r.until_ns, NOW);
    assert_eq!(r.received, NOW / 1_000_000_000);
    let bad = |since: &str, until: &str, srcs: &[&str]| {
        let srcs = srcs.iter().map(|s| s.to_string()).collect();
        new_request(
            "x".into(),
            (since, until),
            srcs,
            None,
            Origin::Local,
            &sources(),
            NOW,
        )
        .expect_err("invalid")
    };
    assert!(bad("now", "-1h", &[]).contains("before since"));
    assert!(bad("soon", "now", &[]).starts_with("since: "));
    assert!(bad("-1h", "later", &[]).starts_with("until: "));
    let e = bad("-1h", "now", &["video"]);
    assert!(e.contains("\"video\"") && e.contains("bags, logs"), "{e}");
}

#[test]
fn a_fleet_body_is_read_or_named_malformed() {
    let ok = br#"{"since": "2026-12-06T06:00:00Z", "until": "2026-12-06T07:00:00Z",
                  "sources": ["logs"], "note": "disengagement"}"#;
    let r = parse_body("inc-7", ok, &sources(), NOW).expect("valid");
    assert_eq!(r.origin, Origin::Fleet);
    assert_eq!((r.since_ns, r.until_ns), (NOW - 3600 * 1_000_000_000, NOW));
    assert_eq!(r.note.as_deref(), Some("disengagement"));
    for (body, says) in [
        (&b"not json"[..], "not a request"),
        (br#"{"since": "-1h"}"#, "missing field `until`"),
        (
            br#"{"since": "-1h", "until": "now", "extra": 1}"#,
            "unknown field `extra`",
        ),
        (br#"{"since": "yesterday", "until": "now"}"#, "since: "),
    ] {
        let e = parse_body("x", body, &sources(), NOW).expect_err("malformed");
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn ids_are_safe_names_and_not_answers() {
    for ok in ["r1", "incident-2026.12.06_a", &"x".repeat(128)] {
        assert!(valid_id(ok), "{ok}");
    }
    for bad in [
        "",
        ".hidden",
        "a/b",
        "a b",
        "r1.done",
        &"x".repeat(129),
        "é",
    ] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn a_request_goes_from_open_to_answered_and_is_known_throughout() {
    let dir = temp("life");
    let r = local("local-1");
    assert!(!known(&dir, "local-1"));
    submit(&dir, &r).expect("submit");
    assert!(known(&dir, "local-1"));
    assert_eq!(open(&dir), vec![r.clone()]);
    finish(&dir, &r, &r.answer(3, 2, 1, NOW / 1_000_000_000));
    assert!(open(&dir).is_empty());
    assert!(known(&dir, "local-1"));
    assert!(undelivered(&dir).is_empty(), "a local answer is not for S3");
    let text = fs::read_to_string(dir.join("requests/answered/local-1.done.json")).expect("answer");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        (v["matched"].as_u64(), v["uploaded"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(v["pending"], 1);
    assert_eq!(v["note"], "hard brake");

    // A fleet request's answer waits for delivery, then is kept as answered.
    let f = Request {
        id: "inc-7".into(),
        origin: Origin::Fleet,
        ..r
    };
    submit(&dir, &f).expect("submit");
    finish(&dir, &f, &f.answer(0, 0, 0, 0));
    let waiting = undelivered(&dir);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].0, "inc-7");
    delivered(&dir, "inc-7").expect("delivered");
    assert!(undelivered(&dir).is_empty());
    assert!(known(&dir, "inc-7"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_request_is_set_aside_with_its_error() {
    let dir = temp("bad");
    fs::create_dir_all(super::dir(&dir)).expect("dir");
    fs::write(
        super::dir(&dir).join("torn.json"),
        b"{\"id\": \"torn\", \"sin",
    )
    .expect("write");
    submit(&dir, &local("other")).expect("submit");
    fs::rename(
        super::dir(&dir).join("other.json"),
        super::dir(&dir).join("renamed.json"),
    )
    .expect("rename");
    let (good, bad) = read_open(&dir);
    assert!(good.is_empty());
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(open(&dir).is_empty());
    let answered = |id: &str| {
        fs::read_to_string(dir.join(format!("requests/answered/{id}.done.json"))).expect(id)
    };
    assert!(answered("torn").contains("unreadable"));
    assert!(answered("renamed").contains("is not its name"));
    assert!(read_open(&dir).1.is_empty(), "set aside once");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn only_the_latest_answers_are_kept() {
    let dir = temp("prune");
    for i in 0..KEEP_ANSWERED + 5 {
        let r = local(&format!("local-{i}"));
        finish(&dir, &r, &r.answer(0, 0, 0, 0));
    }
    let n = fs::read_dir(dir.join("requests/answered"))
        .expect("dir")
        .count();
    assert_eq!(n, KEEP_ANSWERED);
    let _ = fs::remove_dir_all(&dir);
}
