//! The project's own checks must be able to fail: the size budget refuses a binary past
//! 4 MiB.

use std::path::Path;
use std::process::Command;

#[test]
fn size_check_fails_past_the_four_mib_budget() {
    let dir = std::env::temp_dir().join(format!("tvm-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_size.sh");
    for (len, ok) in [(4 * 1024 * 1024, true), (4 * 1024 * 1024 + 1, false)] {
        let f = dir.join("bin");
        std::fs::write(&f, vec![0u8; len]).expect("write");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&f)
            .output()
            .expect("run");
        assert_eq!(
            out.status.success(),
            ok,
            "{len} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The modules of `src` (top level: `src/x.rs` or `src/x/`) each file's code imports, as
/// `x` or `x::y` paths, tests left out.
fn imports(text: &str) -> std::collections::BTreeSet<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = std::collections::BTreeSet::new();
    let mut paths: Vec<String> = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").unwrap_or(group.len());
            paths.extend(group[..end].split(',').map(|p| p.trim().to_string()));
        } else {
            paths.push(rest.to_string());
        }
    }
    for p in paths {
        let segs: Vec<&str> = p
            .split("::")
            .map(|s| {
                let end = s
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(s.len());
                &s[..end]
            })
            .take(2)
            .collect();
        match segs.as_slice() {
            [m, sub] if !sub.is_empty() && sub.starts_with(|c: char| c.is_ascii_lowercase()) => {
                out.insert(format!("{m}::{sub}"));
            }
            [m, ..] if !m.is_empty() => {
                out.insert(m.to_string());
            }
            _ => {}
        }
    }
    out
}

/// Every `src` module's imports, keyed by its top-level module.
fn import_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let name = rel.to_string_lossy();
            let top = name.split('/').next().unwrap_or("").trim_end_matches(".rs");
            let test_file = name.ends_with("tests.rs");
            if matches!(top, "bin" | "main" | "lib")
                || test_file
                || path.extension() != Some("rs".as_ref())
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let own = graph.entry(top.to_string()).or_default();
            own.extend(
                imports(&text)
                    .into_iter()
                    .filter(|m| m.split("::").next() != Some(top)),
            );
        }
    }
    graph
}

/// Top-level modules that import each other, directly or around a circle.
fn circles(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<(String, String)> {
    let top = |m: &String| m.split("::").next().unwrap_or("").to_string();
    let reaches = |from: &str, to: &str| {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                todo.extend(graph.get(&m).into_iter().flatten().map(top));
            }
        }
        false
    };
    let mut out = Vec::new();
    for (m, deps) in graph {
        for d in deps.iter().map(top) {
            if d != *m && reaches(&d, m) {
                out.push((m.clone(), d));
            }
        }
    }
    out
}

/// The files of one module directory (`src/upload/`) and the siblings each imports
/// (`super::x` or `crate::upload::x`), `mod.rs` and tests left out.
fn sibling_graph(
    dir: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&path).expect("read module dir") {
        let p = entry.expect("entry").path();
        let name = p.file_stem().map(|s| s.to_string_lossy().to_string());
        if let Some(name) = name.filter(|n| p.is_file() && n != "mod" && !n.ends_with("tests")) {
            names.push(name);
        }
    }
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for name in &names {
        let text = std::fs::read_to_string(path.join(format!("{name}.rs"))).expect("read");
        let text = text
            .replace("super::", "crate::")
            .replace(&format!("crate::{dir}::"), "crate::");
        let own = graph.entry(name.clone()).or_default();
        own.extend(imports(&text).into_iter().filter_map(|m| {
            let top = m.split("::").next().unwrap_or("").to_string();
            (names.contains(&top) && top != *name).then_some(top)
        }));
    }
    graph
}

#[test]
fn the_layering_checker_sees_imports_and_circles() {
    let text = "use crate::s3::{S3, S3Error};\nuse crate::{clock, journal::state::State};\n\
                // crate::daemon in a comment\nfn f() { crate::upload::outcome(x) }\n\
                #[cfg(test)]\nmod tests { use crate::watch; }\n";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["clock", "journal::state", "s3", "upload::outcome"]);
    let mut g: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    g.entry("a".into()).or_default().insert("b::x".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(circles(&g).is_empty());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circles(&g).len(), 3, "a → b → c → a");
}

/// ARCHITECTURE.md's layering: no import circles; config imports no runtime module; the
/// planner imports no module that does IO (of the journal only its records and
/// replayed state, of the status only the live view's types).
#[test]
fn the_import_layering_holds() {
    let graph = import_graph();
    assert!(graph.contains_key("planner") && graph.contains_key("config"));
    assert_eq!(
        circles(&graph),
        Vec::<(String, String)>::new(),
        "import circles"
    );
    for dir in [
        "planner",
        "upload",
        "journal",
        "status",
        "config",
        "credentials",
        "csv2kafka",
        "links",
    ] {
        let files = sibling_graph(dir);
        assert!(files.len() > 1, "{dir}: {files:?}");
        let found = circles(&files);
        assert!(found.is_empty(), "circles in src/{dir}/: {found:?}");
    }
    const IO: [&str; 19] = [
        "aws",
        "clock",
        "config",
        "credentials",
        "csv2kafka",
        "daemon",
        "disk",
        "knobs",
        "links",
        "logfile",
        "metrics",
        "openfiles",
        "preflight",
        "probe",
        "requests",
        "resolver",
        "s3",
        "throttle",
        "upload",
    ];
    let planner_may = |m: &str| {
        !IO.contains(&m.split("::").next().unwrap_or(""))
            && m != "journal"
            && m != "status"
            && m != "watch"
            && (!m.starts_with("journal::") || m == "journal::record" || m == "journal::state")
            && (!m.starts_with("status::") || m == "status::live")
    };
    let bad: Vec<&String> = graph["planner"]
        .iter()
        .filter(|m| !planner_may(m))
        .collect();
    assert!(bad.is_empty(), "the planner imports {bad:?}");
    let runtime = |m: &str| {
        let top = m.split("::").next().unwrap_or("");
        IO.contains(&top) || matches!(top, "journal" | "planner" | "status" | "watch")
    };
    let bad: Vec<&String> = graph["config"].iter().filter(|m| runtime(m)).collect();
    assert!(bad.is_empty(), "config imports {bad:?}");
}
