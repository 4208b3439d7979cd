//! The core's [`Metrics`] in OpenMetrics text, through `prometheus-client`.
//!
//! Each scrape registers the snapshot as a [`Collector`] in a fresh
//! [`Registry`] and encodes it. The families come from
//! [`Metrics::visit`], so a family added in the core is exported with no
//! change here. `prometheus-client` appends `_total` to counter samples and
//! `_<unit>` to names with a unit, so both are taken off the core's names
//! before they go in: the samples come out with exactly the core's names.
//!
//! Scrapers and tools that read only the older Prometheus text format 0.0.4
//! (`promtool check metrics`) get the same text through [`to_prometheus_text`].

use std::fmt;

use macula::metrics::{Family, Kind, Metrics, Series, Unit, Value, Visitor};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{self, Registry};

/// The content type of [`openmetrics_text`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`to_prometheus_text`]'s output.
pub(crate) const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `metrics` as OpenMetrics text (ending with `# EOF`).
pub fn openmetrics_text(metrics: &Metrics) -> String {
    openmetrics_text_with(metrics, Vec::new())
}

/// `metrics` and then the driver's own `extra` families as OpenMetrics text.
pub(crate) fn openmetrics_text_with(metrics: &Metrics, extra: Vec<Extra>) -> String {
    let mut registry = Registry::default();
    let snapshot = Snapshot {
        metrics: metrics.clone(),
        extra,
    };
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing to a String fails only if an encoder reports an error, which
    // the families of the core never make it do.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "metrics not encoded");
    }
    text
}

/// A family the driver measures itself, with its series.
pub(crate) type Extra = (Family, Vec<Series<'static>>);

/// One scrape's metrics.
#[derive(Debug)]
struct Snapshot {
    metrics: Metrics,
    extra: Vec<Extra>,
}

impl Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut families = Families {
            encoder,
            result: Ok(()),
        };
        self.metrics.visit(&mut families);
        for (family, series) in &self.extra {
            families.family(family, series);
        }
        families.result
    }
}

/// Encodes each family the visit reports; keeps the first error.
struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
    result: fmt::Result,
}

impl Visitor for Families<'_> {
    fn family(&mut self, family: &Family, series: &[Series<'_>]) {
        if self.result.is_ok() {
            self.result = encode_family(&mut self.encoder, family, series);
        }
    }
}

fn encode_family(
    encoder: &mut DescriptorEncoder<'_>,
    family: &Family,
    series: &[Series<'_>],
) -> fmt::Result {
    let (base, unit, metric_type) = match family.kind {
        Kind::Counter => (strip(family.name, "_total"), None, MetricType::Counter),
        Kind::Gauge => (family.name, None, MetricType::Gauge),
        Kind::Histogram => {
            let unit = family.unit.map(registry_unit);
            let suffix = unit.as_ref().map(|u| format!("_{}", u.as_str()));
            let base = suffix.map_or(family.name, |s| strip(family.name, &s));
            (base, unit, MetricType::Histogram)
        }
    };
    let mut metric = encoder.encode_descriptor(base, family.help, unit.as_ref(), metric_type)?;
    for one in series {
        if one.labels.is_empty() {
            encode_value(&mut metric, family.unit, one.value)?;
        } else {
            let labels = one.labels;
            encode_value(&mut metric.encode_family(&labels)?, family.unit, one.value)?;
        }
    }
    Ok(())
}

fn encode_value(
    metric: &mut MetricEncoder<'_>,
    unit: Option<Unit>,
    value: Value<'_>,
) -> fmt::Result {
    match value {
        Value::Counter(n) => metric.encode_counter::<NoLabelSet, _, u64>(&n, None),
        Value::Gauge(g) => metric.encode_gauge(&g),
        Value::Histogram(histogram) => {
            let unit = unit.unwrap_or(Unit::Seconds);
            let buckets: Vec<(f64, u64)> = histogram
                .buckets()
                .map(|(bound, n)| (bound.map_or(f64::INFINITY, |b| unit.of(b)), n))
                .collect();
            let sum = unit.of(histogram.sum());
            metric.encode_histogram::<NoLabelSet>(sum, histogram.count(), &buckets, None)
        }
    }
}

/// `openmetrics` (as [`openmetrics_text`] writes it) in the Prometheus text
/// format 0.0.4: a counter family's `# HELP` and `# TYPE` name its samples'
/// `_total` name, and the `# UNIT` lines and `# EOF`, which that format does
/// not have, are left out. Samples are the same in both.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(&name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{total} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// `name` without `suffix` (the core's names carry it; a name without it
/// stays as it is).
fn strip<'a>(name: &'a str, suffix: &str) -> &'a str {
    name.strip_suffix(suffix).unwrap_or(name)
}

fn registry_unit(unit: Unit) -> registry::Unit {
    match unit {
        Unit::Seconds => registry::Unit::Seconds,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use macula::metrics::{FAMILIES, PunchResult, QueryKind, RpcOutcome};
    use macula::nat::punch::NatClass;

    use super::*;

    /// Each of `lines` is a whole line of `text`.
    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn samples_carry_exactly_the_core_names_and_values() {
        let mut metrics = Metrics::new();
        metrics.record_call(RpcOutcome::Ok, Some(Duration::from_millis(3)));
        metrics.record_call(RpcOutcome::Ok, Some(Duration::from_millis(40)));
        metrics.record_store(true);
        let lookups = metrics.dht_query_latency.get_mut(QueryKind::FindValue);
        lookups.record(Duration::from_micros(1500));
        metrics.connection_duration.record(Duration::from_secs(90));
        let punches = &mut metrics.nat_punches;
        punches.record_attempt(NatClass::OPEN, NatClass::UNKNOWN);
        punches.record_result(NatClass::OPEN, NatClass::UNKNOWN, PunchResult::Failure);
        let text = openmetrics_text(&metrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let lines = [
            "# TYPE rpc_calls counter",
            "rpc_calls_total{outcome=\"ok\"} 2",
            "rpc_calls_total{outcome=\"timeout\"} 0",
            "# TYPE rpc_call_latency_seconds histogram",
            "# UNIT rpc_call_latency_seconds seconds",
            "rpc_call_latency_seconds_count{result=\"ok\"} 2",
            "rpc_call_latency_seconds_sum{result=\"ok\"} 0.043",
            "rpc_call_latency_seconds_bucket{le=\"0.005\",result=\"ok\"} 1",
            "rpc_call_latency_seconds_bucket{le=\"0.05\",result=\"ok\"} 2",
            "rpc_call_latency_seconds_bucket{le=\"+Inf\",result=\"ok\"} 2",
            "dht_query_latency_seconds_sum{kind=\"find_value\"} 0.0015",
            "p2p_connection_duration_seconds_bucket{le=\"60.0\"} 0",
            "p2p_connection_duration_seconds_bucket{le=\"300.0\"} 1",
            "dht_store_propagation_success_rate 1.0",
            "dht_store_operations_total{result=\"success\"} 1",
            "nat_punch_attempts_total{local_nat=\"open\",remote_nat=\"unknown\"} 1",
            "nat_punch_results_total{result=\"failure\",local_nat=\"open\",remote_nat=\"unknown\"} 1",
            "nat_punch_results_total{result=\"success\",local_nat=\"open\",remote_nat=\"unknown\"} 0",
            "p2p_connections_by_path{path=\"relayed\"} 0.0",
            "relay_bytes_total 0",
        ];
        assert_lines(&text, &lines);
        assert!(!text.contains("_total_total"));
        assert!(text.contains("# HELP rpc_calls Calls this node made"));
        for family in FAMILIES {
            assert!(text.contains(family.name), "{} missing", family.name);
        }
    }

    #[test]
    fn the_prometheus_text_names_counter_families_by_their_samples_and_has_no_units() {
        let mut metrics = Metrics::new();
        metrics.record_call(RpcOutcome::Ok, Some(Duration::from_millis(3)));
        let openmetrics = openmetrics_text(&metrics);
        let text = to_prometheus_text(&openmetrics);
        let lines = [
            "# HELP rpc_calls_total Calls this node made, by outcome",
            "# TYPE rpc_calls_total counter",
            "rpc_calls_total{outcome=\"ok\"} 1",
            "# TYPE rpc_call_latency_seconds histogram",
            "rpc_call_latency_seconds_bucket{le=\"0.005\",result=\"ok\"} 1",
            "# TYPE dht_store_propagation_success_rate gauge",
        ];
        assert_lines(&text, &lines);
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
        // Nothing but the descriptors changed: the samples are the same.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&text), samples(&openmetrics));
        // Every family keeps its HELP and TYPE.
        let count = |t: &str, p: &str| t.lines().filter(|l| l.starts_with(p)).count();
        assert_eq!(count(&text, "# TYPE "), count(&openmetrics, "# TYPE "));
        assert_eq!(count(&text, "# HELP "), count(&openmetrics, "# HELP "));
    }
}
