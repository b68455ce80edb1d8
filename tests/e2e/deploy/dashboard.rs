//! The Grafana dashboard: its queries name metrics the code registers, in valid PromQL, and
//! cover the panels the issue asks for.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{read, root};
use crate::support::temp_dir;

/// PromQL words that are not metric names (operators and grouping modifiers).
const KEYWORDS: [&str; 13] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
];

/// Every `(panel title, expr)` of the dashboard: panel targets, annotation queries, and the metric
/// of each `label_values(metric{…}, label)` template variable.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((title.to_string(), e.to_string()));
            }
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("annotation {}", a["name"]), e.to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        if let Some(inner) = q.strip_prefix("label_values(") {
            let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
            out.push((format!("variable {}", v["name"]), metric.to_string()));
        }
    }
    out
}

/// The metric names an expression selects: identifiers left once strings, label matchers,
/// ranges, dashboard variables and grouping clauses are removed, and that are not called.
fn names_in(expr: &str) -> BTreeSet<String> {
    let stripped = strip_groupings(&strip_enclosed(expr));
    let chars: Vec<char> = stripped.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let called = chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'(');
            let after_digit = start > 0 && chars[start - 1].is_ascii_digit();
            if !called && !after_digit && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Drops `"…"`, `{…}`, `[…]` and `$variables`.
fn strip_enclosed(expr: &str) -> String {
    let mut out = String::new();
    let mut close: Option<char> = None;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(end) = close {
            if c == end {
                close = None;
            }
            continue;
        }
        match c {
            '"' => close = Some('"'),
            '{' => close = Some('}'),
            '[' => close = Some(']'),
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Drops `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left (…)`, `group_right (…)`.
fn strip_groupings(expr: &str) -> String {
    let mut out = expr.to_string();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut from = 0;
        while let Some(pos) = find_word(&out[from..], kw).map(|p| p + from) {
            let rest = &out[pos + kw.len()..];
            let trimmed = rest.trim_start();
            if let (true, Some(close)) = (trimmed.starts_with('('), trimmed.find(')')) {
                let end = pos + kw.len() + (rest.len() - trimmed.len()) + close + 1;
                out.replace_range(pos..end, " ");
            } else {
                from = pos + kw.len();
            }
        }
    }
    out
}

/// The byte offset of `word` standing alone (not inside a longer identifier).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut from = 0;
    while let Some(p) = s[from..].find(word).map(|p| p + from) {
        let before = s[..p].chars().next_back().is_some_and(ident);
        let after = s[p + word.len()..].chars().next().is_some_and(ident);
        if !before && !after {
            return Some(p);
        }
        from = p + word.len();
    }
    None
}

/// Names the code registers or reads, from string literals in the non-test sources of the
/// binary, proxy and control crates: full names (`"rollgate_proxy_requests"`,
/// `"vllm:num_requests_waiting"`), and the names under a `sub_registry_with_prefix("p")` in the
/// same file (`p_` + each literal).
fn exported_names(root: &Path) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for dir in ["src", "proxy/src", "control/src"] {
        for file in rust_files(&root.join(dir)) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            // Unit tests mention names they expect, not names the code exports.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let literals: Vec<&str> = code.split('"').skip(1).step_by(2).collect();
            let prefixes: Vec<&str> = code
                .split("sub_registry_with_prefix(\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
                .collect();
            for lit in literals.iter().filter(|l| is_metric_name(l)) {
                known.insert(lit.to_string());
                for p in &prefixes {
                    known.insert(format!("{p}_{lit}"));
                }
            }
        }
    }
    known
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
    out
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether a queried series comes from a known name: as is, or with the suffix the exposition
/// adds (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms).
fn exported(known: &BTreeSet<String>, series: &str) -> bool {
    if known.contains(series) {
        return true;
    }
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|s| series.strip_suffix(s))
        .any(|base| known.contains(base))
}

/// `promtool check rules` on every query (as recording rules), with dashboard variables replaced
/// by values a real query would have.
fn promtool_parses(queries: &[(String, String)], dir: &Path) {
    let mut rules = String::from("groups:\n  - name: grafana-dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$model", ".*");
        let quoted = serde_json::to_string(&expr).expect("JSON string");
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = dir.join("dashboard-rules.yaml");
    std::fs::write(&file, &rules).expect("write rules");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); scripts/install-test-deps installs it")
        });
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard parses, has the panels the issue asks for, and every query names only metrics
/// the code exports (or engine series the gates read), in PromQL that promtool accepts.
#[test]
fn grafana_dashboard_queries_real_metrics() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/rollgate.json"))
        .expect("deploy/grafana/rollgate.json is JSON");
    let queries = dashboard_queries(&dash);
    let known = exported_names(root());
    assert!(
        known.contains("rollgate_proxy_requests"),
        "the source scan found no metrics"
    );
    let mut unknown = Vec::new();
    for (title, expr) in &queries {
        let names = names_in(expr);
        assert!(!names.is_empty(), "{title}: `{expr}` names no metric");
        for n in names {
            if !exported(&known, &n) {
                unknown.push(format!("{title}: {n}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the code does not export: {unknown:#?}"
    );

    let wanted = [
        ("Request rate", "rollgate_proxy_requests_total"),
        (
            "Latency p50 / p99",
            "rollgate_proxy_request_duration_seconds_bucket",
        ),
        (
            "Time to first token",
            "rollgate_proxy_time_to_first_token_seconds_bucket",
        ),
        ("Error rate", "rollgate_proxy_requests_total"),
        ("Queue depth", "rollgate_proxy_inflight_requests"),
        ("GPU memory used", "rollgate_gpu_memory_used_ratio"),
        ("Rollout phase", "rollgate_rollout_phase"),
        (
            "Candidate weight",
            "rollgate_rollout_candidate_weight_ratio",
        ),
    ];
    for (title, metric) in wanted {
        let hit = queries
            .iter()
            .any(|(t, e)| t.starts_with(title) && e.contains(metric));
        assert!(hit, "no panel `{title}…` querying {metric}");
    }
    for (title, expr) in queries
        .iter()
        .filter(|(t, _)| t.starts_with("Request rate") || t.starts_with("Latency"))
    {
        assert!(
            expr.contains("variant"),
            "{title} is not split per variant: {expr}"
        );
    }
    promtool_parses(&queries, &temp_dir("deploy-promql"));
}

/// The dashboard check finds metric names where PromQL puts them and refuses a misspelt one.
#[test]
fn dashboard_metric_scan_finds_names_and_refuses_unknown_ones() {
    let expr = r#"histogram_quantile(0.99, sum by (le, model) (rate(rollgate_proxy_request_duration_seconds_bucket{model=~"$model", variant="candidate"}[$__rate_interval]))) / on (model) group_left max without (gpu) (vllm:num_requests_waiting offset 5m) > bool 2"#;
    let names: Vec<String> = names_in(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "rollgate_proxy_request_duration_seconds_bucket",
            "vllm:num_requests_waiting"
        ]
    );
    let known = exported_names(root());
    assert!(exported(&known, "rollgate_proxy_requests_total"));
    assert!(exported(&known, "rollgate_gpu_memory_used_ratio"));
    assert!(!exported(&known, "rollgate_proxy_requests_totals"));
    assert!(!exported(&known, "rollgate_proxy_queue_depth"));
}
