//! docs/grafana-dashboard.json is importable and cannot drift from the
//! exporter: it is valid JSON with a Prometheus data source variable, every
//! metric its queries name is one `/metrics` emits, and every family has a
//! panel.

use std::collections::BTreeSet;

use macula::metrics::{Cache, FAMILIES, Metrics};
use macula_tokio::openmetrics_text;
use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard is there");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every sample name the exporter emits, from metrics where every family
/// has a series (the rates appear only once measured).
fn emitted() -> BTreeSet<String> {
    let mut metrics = Metrics::new();
    metrics.record_store(true);
    metrics.caches.get_mut(Cache::RpcProviders).record(true);
    let text = openmetrics_text(&metrics);
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Every PromQL expression of the dashboard: panel targets and variable
/// queries.
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect(dashboard, &mut found);
    found
}

fn collect(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(expr)) => found.push(expr.clone()),
                    _ => collect(value, found),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|v| collect(v, found)),
        _ => {}
    }
}

/// The identifiers of `expr` that name a macula metric (by the prefixes of
/// the families).
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            ["dht_", "p2p_", "rpc_", "pubsub_"]
                .iter()
                .any(|p| word.starts_with(p))
        })
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_emitted_and_every_family_has_a_panel() {
    let dashboard = dashboard();
    let emitted = emitted();
    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= FAMILIES.len());
    let mut queried = BTreeSet::new();
    for expr in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no macula metric in {expr}");
        for name in names {
            assert!(emitted.contains(name), "{name} (in {expr}) is not emitted");
            queried.insert(name.to_string());
        }
    }
    for family in FAMILIES {
        assert!(
            queried.iter().any(|name| name.starts_with(family.name)),
            "no panel for {}",
            family.name
        );
    }
}

#[test]
fn the_dashboard_has_a_prometheus_data_source_variable_used_by_every_panel() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some());
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains("$instance"),
                "{expr} ignores the instance variable"
            );
        }
    }
}
