//! The alert rules (`ops/prometheus/rtn-rules.yml`) and the Grafana
//! dashboard (`docs/grafana/rtn.json`) query only metrics the binaries
//! export: every `rtn_` name in their expressions is one the edge or the
//! controller describes (their `describe` lists, as the process's recorder
//! saw them: `control::metrics::described`), used as its kind allows
//! (`_bucket`, `_sum`, `_count` of histograms only), and every recorded
//! series an expression uses (`level:metric:operation`) is recorded by the
//! rules file. A renamed metric fails here, not silently in production.
//!
//! `promtool check rules` and `promtool test rules` (scripts/test.sh) check
//! the rules' syntax and behaviour; metrics_exposition.rs checks that the
//! dashboard's queries run against a real edge's exposition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use control::metrics::MetricKind;

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What the edge and the controller describe, by name.
fn described() -> BTreeMap<String, MetricKind> {
    edge_node::metrics::prometheus();
    region_controller::metrics::prometheus();
    control::metrics::described()
}

/// The rules file's rules, as (name, expression): alert or recording rule
/// name. A small reader for the file's own shape (`- alert:`/`- record:`
/// items, `expr:` inline or as a `|` block), checked against the number of
/// rules it finds, rather than a YAML library for one file.
fn rules(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    let mut name: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(n) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("- record:"))
        {
            assert!(name.is_none(), "line {}: a rule without expr", i + 1);
            name = Some(n.trim().to_string());
        } else if let Some(e) = t.strip_prefix("expr:") {
            let n = name
                .take()
                .unwrap_or_else(|| panic!("line {}: expr outside a rule", i + 1));
            let e = e.trim();
            let expr = if e.starts_with('|') || e.starts_with('>') {
                let indent = line.len() - t.len();
                let mut block = vec![];
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let deeper = next.len() - next.trim_start().len() > indent;
                    if !(deeper || next.trim().is_empty()) {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                block.join(" ")
            } else {
                e.trim_matches(|c| c == '"' || c == '\'').to_string()
            };
            assert!(!expr.trim().is_empty(), "{n}: empty expr");
            out.push((n, expr));
        }
        i += 1;
    }
    assert!(name.is_none(), "the last rule has no expr");
    let declared = lines
        .iter()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("- alert:") || t.starts_with("- record:")
        })
        .count();
    assert_eq!(out.len(), declared, "rules read: {out:#?}");
    out
}

/// Every PromQL expression of the dashboard: panel targets (rows' collapsed
/// panels included) and template variable queries.
fn dashboard_exprs(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut panels = vec![];
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = vec![];
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((p["title"].as_str().unwrap_or("?").to_string(), e.into()));
            }
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            if v["type"] == "query" {
                out.push((format!("variable {}", v["name"]), q.into()));
            }
        }
    }
    out
}

/// The identifiers of an expression that name `rtn_` series: metrics
/// (`rtn_edge_sessions`) and recorded series (`region:rtn_edge_sessions:sum`,
/// with colons). Quoted strings (label values, Grafana variables) are left
/// out.
fn series_names(expr: &str) -> Vec<String> {
    let mut unquoted = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => unquoted.push(c),
        }
        if quote.is_some() {
            unquoted.push(' ');
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.contains("rtn_"))
        .map(str::to_string)
        .collect()
}

/// Why `name` is not something the binaries export, if it is not.
fn unknown_metric(name: &str, described: &BTreeMap<String, MetricKind>) -> Option<String> {
    if described.contains_key(name) {
        return None;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match described.get(base) {
                Some(MetricKind::Histogram) => return None,
                Some(kind) => {
                    return Some(format!("{name}: {base} is a {kind:?}, not a histogram"))
                }
                None => {}
            }
        }
    }
    Some(format!(
        "{name} is not described by the edge or the controller"
    ))
}

#[test]
fn rules_and_dashboard_query_only_metrics_the_binaries_export() {
    let described = described();
    // The describe lists were seen (a broken recorder would make every
    // check below vacuous).
    for name in [
        "rtn_edge_sessions",
        "rtn_edge_ready",
        "rtn_edge_certificate_expiry_timestamp_seconds",
        "rtn_edge_process_resident_memory_bytes",
        "rtn_controller_leader",
    ] {
        assert!(described.contains_key(name), "{name} not described");
    }

    let rules = rules(&repo_file("ops/prometheus/rtn-rules.yml"));
    let recorded: BTreeSet<&str> = rules
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.contains(':'))
        .collect();
    assert!(recorded.len() >= 10, "recording rules: {recorded:?}");
    assert!(rules.len() - recorded.len() >= 20, "alerts: {rules:#?}");

    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("docs/grafana/rtn.json")).expect("dashboard JSON");
    let dashboard = dashboard_exprs(&dashboard);
    assert!(
        dashboard.len() >= 20,
        "{} dashboard expressions",
        dashboard.len()
    );

    let mut problems = vec![];
    let mut used = BTreeSet::new();
    let sources = rules
        .iter()
        .map(|(n, e)| (format!("rule {n}"), e))
        .chain(dashboard.iter().map(|(p, e)| (format!("panel {p:?}"), e)));
    for (source, expr) in sources {
        for name in series_names(expr) {
            if name.contains(':') {
                if !recorded.contains(name.as_str()) {
                    problems.push(format!(
                        "{source}: {name} is not recorded by the rules file"
                    ));
                }
            } else if let Some(why) = unknown_metric(&name, &described) {
                problems.push(format!("{source}: {why}"));
            } else {
                used.insert(name);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(used.len() >= 30, "metrics used: {used:?}");
}

#[test]
fn the_checks_catch_what_they_are_for() {
    let described = described();
    assert_eq!(
        series_names(
            r#"sum by (region) (rtn_edge_sessions{edge=~"rtn_x"}) / region:rtn_edge_max_sessions_ready:sum"#
        ),
        [
            "rtn_edge_sessions",
            "region:rtn_edge_max_sessions_ready:sum"
        ]
    );
    assert!(unknown_metric("rtn_edge_link_rtt_seconds_bucket", &described).is_none());
    assert!(unknown_metric("rtn_edge_sessions_total", &described).is_some());
    assert!(unknown_metric("rtn_edge_sessions_count", &described)
        .is_some_and(|why| why.contains("not a histogram")));
    let rules = rules(
        "groups:\n  - name: g\n    rules:\n      - record: a:rtn_x:sum\n        expr: sum(rtn_x)\n      - alert: A\n        expr: |\n          a:rtn_x:sum\n          > 1\n        for: 1m\n",
    );
    assert_eq!(
        rules,
        [
            ("a:rtn_x:sum".to_string(), "sum(rtn_x)".to_string()),
            ("A".to_string(), "a:rtn_x:sum > 1".to_string())
        ]
    );
}
