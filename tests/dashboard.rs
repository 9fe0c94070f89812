//! The Grafana dashboard (`contrib/grafana/sse-server.json`) against a live `/metrics`, and
//! the latency histograms of a real cluster: two servers sharing one `--data-dir` log, a
//! publish on one, applied and fanned out on both.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use util::{Server, Stream, http, publish};

const LIMIT: Duration = Duration::from_secs(15);

/// Histograms the server exports: their series carry `_bucket`, `_sum` and `_count`.
const HISTOGRAMS: [&str; 3] = [
    "sse_fanout_seconds",
    "sse_delivery_seconds",
    "sse_bus_apply_seconds",
];

/// A temp directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sse-dash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every metric name in a PromQL expression: identifiers starting with `sse_`, with a
/// histogram's `_bucket`/`_sum`/`_count` suffix taken off (only for the histograms).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !is_ident(bytes[i - 1])) && expr[i..].starts_with("sse_");
        if !starts {
            i += 1;
            continue;
        }
        let end = (i..bytes.len())
            .find(|&j| !is_ident(bytes[j]))
            .unwrap_or(bytes.len());
        let name = &expr[i..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| HISTOGRAMS.contains(b)))
            .unwrap_or(name);
        names.push(base.to_owned());
        i = end;
    }
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The metric families a `/metrics` text exports (from its `# TYPE` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

fn metrics(s: &Server) -> String {
    let (head, body) = http(
        s.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// The value of the sample line `series` (name and labels exactly), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_tokenizer_finds_metric_names() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(sse_fanout_seconds_bucket{job=~\"$job\"}[5m]))) / sse_clients + sse_bus_publish_seconds_count";
    assert_eq!(
        metric_names(expr),
        [
            "sse_fanout_seconds",
            "sse_clients",
            "sse_bus_publish_seconds_count"
        ]
    );
    assert!(metric_names("rate(not_sse_x[5m]) + foo_sse_y").is_empty());
}

/// Every metric the dashboard's panels query is exported by a cluster-mode server that has
/// fanned out events; the failure lists what is missing, by panel. The latency histograms
/// have non-zero counts on both nodes, `sse_bus_apply_seconds` included on the node that
/// only applied what the other accepted.
#[test]
fn every_metric_the_dashboard_uses_is_exported() {
    let path = util::project_dir().join("contrib/grafana/sse-server.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(
        dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS",
        "the datasource is an import input"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut used: Vec<(String, String)> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "panel {title}: no sse_ metric in {expr}");
            used.extend(names.into_iter().map(|n| (title.clone(), n)));
        }
    }

    let dir = TempDir::new("cluster");
    let data_dir = dir.0.to_str().expect("utf-8 path");
    let args = ["--data-dir", data_dir, "--interval", "off"];
    let a = Server::start(&args);
    let b = Server::start(&args);
    let mut on_a = Stream::open(a.addr, "/events?topic=news", &[]);
    let mut on_b = Stream::open(b.addr, "/events?topic=news", &[]);
    for i in 0..3 {
        let (status, body) = publish(a.addr, "?topic=news", &format!("event {i}"));
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(on_a.wait_events(3, LIMIT).len(), 3);
    assert_eq!(on_b.wait_events(3, LIMIT).len(), 3);

    for (server, name) in [(&a, "a"), (&b, "b")] {
        let text = metrics(server);
        let families = exported(&text);
        let missing: Vec<String> = used
            .iter()
            .filter(|(_, m)| !families.contains(m))
            .map(|(panel, m)| format!("{m} (panel {panel})"))
            .collect();
        assert!(
            missing.is_empty(),
            "node {name} does not export: {missing:?}\n{text}"
        );
        for h in HISTOGRAMS {
            let count = sample(&text, &format!("{h}_count")).unwrap_or(0.0);
            let inf = sample(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")).unwrap_or(-1.0);
            assert!(count >= 3.0, "node {name}: {h}_count {count}\n{text}");
            assert_eq!(inf, count, "node {name}: {h} +Inf bucket");
        }
    }
}

/// The embedded memory log (no cluster): the fan-out and delivery histograms count a
/// publish to two subscribers; the bus histogram is not exported.
#[test]
fn an_embedded_server_exports_fanout_and_delivery_histograms() {
    let s = Server::start(&["--interval", "off"]);
    let mut one = Stream::open(s.addr, "/events", &[]);
    let mut two = Stream::open(s.addr, "/events", &[]);
    let (status, body) = publish(s.addr, "", "hello");
    assert_eq!(status, 200, "{body}");
    one.wait_events(1, LIMIT);
    two.wait_events(1, LIMIT);
    let mut text = String::new();
    // The second delivery may be counted a moment after the first client saw its frame.
    let counted = util::eventually(LIMIT, || {
        text = metrics(&s);
        sample(&text, "sse_delivery_seconds_count") == Some(2.0)
    });
    assert!(counted, "{text}");
    assert_eq!(sample(&text, "sse_fanout_seconds_count"), Some(1.0));
    assert_eq!(
        sample(&text, "sse_fanout_seconds_bucket{le=\"+Inf\"}"),
        Some(1.0)
    );
    assert!(!text.contains("sse_bus_apply_seconds"));
}
