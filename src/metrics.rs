//! Prometheus metrics of seeds and `watch` cycles, taken from the summaries a run returns, so a
//! cron `seed --metrics-file` and a long-running `watch` are monitored with the same series.
//!
//! The text format is the `prometheus` crate's; `watch` serves it at `/metrics`, `seed` writes it
//! for node_exporter's textfile collector.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::edge::check::EdgeCheck;
use crate::error::{Error, Result};
use crate::report::TilesetSummary;

/// The name of the gauge a textfile keeps across failed runs.
const LAST_SUCCESS: &str = "oar_tiles_last_success_timestamp_seconds";

/// Buckets of the change-to-tile and change-to-edge latencies, in seconds.
const LATENCY_BUCKETS: [f64; 13] = [
    0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of commit → CloudFront invalidation completed, in seconds: propagation takes tens of
/// seconds to minutes.
const COMPLETED_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 60.0, 90.0, 120.0, 300.0, 900.0,
];

/// Every series oar-tiles exports.
pub struct Metrics {
    registry: Registry,
    rendered: IntCounterVec,
    written: IntCounterVec,
    empty: IntCounterVec,
    deleted: IntCounterVec,
    render_seconds: HistogramVec,
    cycle_seconds: HistogramVec,
    latency_seconds: HistogramVec,
    changes: IntCounterVec,
    pending: IntGaugeVec,
    outbox_entries: IntGaugeVec,
    purge_requests: IntCounterVec,
    purge_paths: IntCounterVec,
    purge_failures: IntCounterVec,
    purge_deferred: IntCounterVec,
    purge_spend: prometheus::CounterVec,
    purge_evicted: IntCounterVec,
    purge_over_budget: IntCounterVec,
    purge_no_room: IntCounterVec,
    purge_completed: HistogramVec,
    invalidations_in_flight: IntGaugeVec,
    budget_spent_today: prometheus::GaugeVec,
    budget_path_interval: prometheus::GaugeVec,
    edge_requests: IntCounterVec,
    edge_stale: IntCounterVec,
    edge_unconfirmed: IntCounterVec,
    edge_latency: HistogramVec,
    outbox_oldest: prometheus::GaugeVec,
    partitions_rendered: IntCounterVec,
    partitions: IntGaugeVec,
    verify_compared: IntCounterVec,
    verify_wrong: IntCounterVec,
    verify_wrong_last: IntGaugeVec,
    errors: IntCounterVec,
    last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every series, all at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            registered(&registry, HistogramVec::new(opts, &["output"]))
        };
        let by_zoom = ["output", "zoom"];
        Metrics {
            rendered: counter(
                "oar_tiles_tiles_rendered_total",
                "Tiles rendered, by output and zoom.",
                &by_zoom,
            ),
            written: counter(
                "oar_tiles_tiles_written_total",
                "Non-empty tiles handed to the output (stored unless their bytes were already there).",
                &by_zoom,
            ),
            empty: counter(
                "oar_tiles_tiles_empty_total",
                "Tiles that rendered empty and so were not written (deleted if the output held them).",
                &by_zoom,
            ),
            // What the output removed, as the summary and the cycle line count it: an empty tile
            // the output never held is no deletion, and a full seed's sweep deletes tiles no zoom
            // tally saw, so the outputs' own count is the one figure, without a zoom.
            deleted: counter(
                "oar_tiles_tiles_deleted_total",
                "Tiles the output removed: rendered empty where it held them, or no longer produced after a full seed.",
                &["output"],
            ),
            render_seconds: histogram(
                "oar_tiles_render_seconds",
                "Time to render one tile, from asking for a connection to having its bytes.",
                prometheus::exponential_buckets(0.001, 2.5, 12).expect("valid buckets"),
            ),
            cycle_seconds: histogram(
                "oar_tiles_cycle_seconds",
                "Wall time of one run over an output (a seed, or one watch cycle).",
                prometheus::exponential_buckets(0.05, 2.0, 14).expect("valid buckets"),
            ),
            latency_seconds: histogram(
                "oar_tiles_change_to_tile_seconds",
                "From a change's commit to the output holding its tiles, per change applied.",
                LATENCY_BUCKETS.to_vec(),
            ),
            changes: counter(
                "oar_tiles_changes_applied_total",
                "Changes from the change log that complete runs applied to the output.",
                &["output"],
            ),
            pending: registered(
                &registry,
                IntGaugeVec::new(Opts::new("oar_tiles_pending_changes", "Changes in the change log the output has not applied yet, as last counted."), &["output"]),
            ),
            outbox_entries: registered(
                &registry,
                IntGaugeVec::new(Opts::new("oar_tiles_outbox_entries", "Changed tiles and documents in the output's outbox that a consumer (--changed-list, a CDN) has not taken."), &["output"]),
            ),
            outbox_oldest: registered(
                &registry,
                prometheus::GaugeVec::new(Opts::new("oar_tiles_outbox_oldest_seconds", "Age of the oldest change in the output's outbox that a consumer has not taken (0 when empty)."), &["output"]),
            ),
            purge_requests: counter(
                "oar_tiles_purge_requests_total",
                "Purge requests (calls, invalidations) a CDN accepted, by output and target.",
                &["output", "target"],
            ),
            purge_paths: counter(
                "oar_tiles_purge_paths_total",
                "Paths or keys purged at a CDN (a wildcard counts one), by output and target.",
                &["output", "target"],
            ),
            purge_failures: counter(
                "oar_tiles_purge_failures_total",
                "Runs whose purge at a CDN failed after its retries (the changes stay in the outbox).",
                &["output", "target"],
            ),
            purge_deferred: counter(
                "oar_tiles_purge_deferred_total",
                "Cycles that did not ask a CDN target because it failed recently (its changes wait in the outbox).",
                &["output", "target"],
            ),
            purge_spend: registered(
                &registry,
                prometheus::CounterVec::new(Opts::new("oar_tiles_purge_spend_usd_total", "What a CDN target's purges cost (paths times its price_per_path), in US dollars."), &["output", "target"]),
            ),
            purge_evicted: counter(
                "oar_tiles_purge_evicted_tiles_total",
                "Unchanged cached tiles a CDN target's wildcards evicted (estimated from the output's stored tiles).",
                &["output", "target"],
            ),
            purge_over_budget: counter(
                "oar_tiles_purge_over_budget_total",
                "Runs whose purge waited because the target's budget allowed less than its coarsest plan.",
                &["output", "target"],
            ),
            purge_no_room: counter(
                "oar_tiles_purge_no_room_total",
                "Runs whose purge waited because CloudFront's invalidations in flight left no room (its quotas of 3,000 file paths and 15 wildcards in progress); the changes wait in the outbox, nothing waits for room.",
                &["output", "target"],
            ),
            purge_completed: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("oar_tiles_purge_completed_seconds", "From a change's commit to CloudFront reporting its invalidation Completed (seen by the next run that looks), per change.").buckets(COMPLETED_BUCKETS.to_vec()),
                    &["output", "target"],
                ),
            ),
            invalidations_in_flight: registered(
                &registry,
                IntGaugeVec::new(Opts::new("oar_tiles_purge_in_flight", "A CloudFront target's purges whose invalidations were still in progress after the last run."), &["output", "target"]),
            ),
            budget_spent_today: float_gauge(
                &registry,
                "oar_tiles_budget_spent_today_usd",
                "What a budgeted CDN target spent today (UTC), in US dollars.",
            ),
            budget_path_interval: float_gauge(
                &registry,
                "oar_tiles_budget_path_interval_seconds",
                "The freshness a daily budget buys: one purged path every this many seconds.",
            ),
            edge_requests: counter(
                "oar_tiles_edge_requests_total",
                "Changed tiles fetched through a CDN target's public_url after its purge, by output and target.",
                &["output", "target"],
            ),
            edge_stale: counter(
                "oar_tiles_edge_stale_answers_total",
                "Answers through a CDN target's public_url that were not the output's tile (old bytes, an error).",
                &["output", "target"],
            ),
            edge_unconfirmed: counter(
                "oar_tiles_edge_unconfirmed_total",
                "Sampled tiles still not served fresh through a CDN target when the edge check gave up.",
                &["output", "target"],
            ),
            edge_latency: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new("oar_tiles_change_to_edge_seconds", "From a change's commit to a CDN target serving its sampled tiles fresh, per change.").buckets(LATENCY_BUCKETS.to_vec()),
                    &["output", "target"],
                ),
            ),
            partitions_rendered: counter(
                "oar_tiles_partitions_rendered_total",
                "Partitions of a partitioned tileset that runs rendered (their values touched, new or vanished), by the tileset's output.",
                &["output"],
            ),
            partitions: registered(
                &registry,
                IntGaugeVec::new(Opts::new("oar_tiles_partitions", "Values a partitioned tileset's index lists, as of its last run."), &["output"]),
            ),
            verify_compared: counter(
                "oar_tiles_verify_compared_tiles_total",
                "Tiles --verify-sample rendered again and compared with the output's, by output.",
                &["output"],
            ),
            verify_wrong: counter(
                "oar_tiles_verify_wrong_tiles_total",
                "Tiles --verify-sample found wrong (differing from the database, missing, or that should not exist), by output.",
                &["output"],
            ),
            verify_wrong_last: registered(
                &registry,
                IntGaugeVec::new(Opts::new("oar_tiles_verify_wrong_tiles", "Tiles the last --verify-sample of an output found wrong."), &["output"]),
            ),
            errors: counter(
                "oar_tiles_errors_total",
                "Runs or cycles that failed, by kind of error.",
                &["kind"],
            ),
            last_success: registered(
                &registry,
                Gauge::new(
                    LAST_SUCCESS,
                    "When the last run or cycle over every output succeeded (Unix time).",
                ),
            ),
            registry,
        }
    }

    /// Adds what one run over an output did; its changes' latencies end `now`, when the output
    /// holds their tiles.
    pub fn record(&self, summary: &TilesetSummary, now: SystemTime) {
        let output = summary.header.output.as_str();
        for zoom in &summary.per_zoom {
            let labels = [output, &zoom.zoom.to_string()];
            self.rendered
                .with_label_values(&labels)
                .inc_by(zoom.queried);
            self.written.with_label_values(&labels).inc_by(zoom.written);
            self.empty.with_label_values(&labels).inc_by(zoom.empty);
            let render = self.render_seconds.with_label_values(&[output]);
            for (seconds, renders) in zoom.render_times.counts() {
                for _ in 0..renders {
                    render.observe(seconds);
                }
            }
        }
        self.deleted
            .with_label_values(&[output])
            .inc_by(summary.stored.deleted);
        self.cycle_seconds
            .with_label_values(&[output])
            .observe(summary.seconds);
        let now = unix_seconds(now);
        let latency = self.latency_seconds.with_label_values(&[output]);
        for committed in &summary.header.committed {
            latency.observe((now - committed).max(0.0));
        }
        self.changes
            .with_label_values(&[output])
            .inc_by(summary.header.committed.len() as u64);
        self.outbox_entries
            .with_label_values(&[output])
            .set(i64::try_from(summary.outbox.entries).unwrap_or(i64::MAX));
        self.outbox_oldest
            .with_label_values(&[output])
            .set(summary.outbox.oldest_seconds.unwrap_or(0.0));
        if let Some(check) = &summary.verified {
            let wrong = check.wrong.len() as u64;
            self.verify_compared
                .with_label_values(&[output])
                .inc_by(check.compared);
            self.verify_wrong.with_label_values(&[output]).inc_by(wrong);
            self.verify_wrong_last
                .with_label_values(&[output])
                .set(i64::try_from(wrong).unwrap_or(i64::MAX));
        }
        for purge in &summary.purges {
            let labels = [output, purge.target.as_str()];
            self.purge_requests
                .with_label_values(&labels)
                .inc_by(purge.requests);
            self.purge_paths
                .with_label_values(&labels)
                .inc_by(purge.paths);
            if purge.failed.is_some() {
                self.purge_failures.with_label_values(&labels).inc();
            }
            if purge.deferred {
                self.purge_deferred.with_label_values(&labels).inc();
            }
            if let Some(usd) = purge.price_usd {
                self.purge_spend.with_label_values(&labels).inc_by(usd);
            }
            self.purge_evicted
                .with_label_values(&labels)
                .inc_by(purge.evicted);
            if purge.over_budget {
                self.purge_over_budget.with_label_values(&labels).inc();
            }
            if purge.no_room {
                self.purge_no_room.with_label_values(&labels).inc();
            }
            if !purge.completed_seconds.is_empty() {
                let completed = self.purge_completed.with_label_values(&labels);
                for seconds in &purge.completed_seconds {
                    completed.observe(*seconds);
                }
            }
            if let Some(in_flight) = purge.in_flight {
                self.invalidations_in_flight
                    .with_label_values(&labels)
                    .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
            }
            if let Some(budget) = &purge.budget {
                self.budget_spent_today
                    .with_label_values(&labels)
                    .set(budget.spent_today_usd);
                if let Some(interval) = budget.path_interval_seconds {
                    self.budget_path_interval
                        .with_label_values(&labels)
                        .set(interval);
                }
            }
        }
        for check in &summary.edge {
            self.record_edge(output, check, &summary.header.committed);
        }
    }

    /// Adds what an edge check of `output` found; `committed` are the commit times of the changes
    /// whose tiles it checked (seconds since the Unix epoch).
    pub fn record_edge(&self, output: &str, check: &EdgeCheck, committed: &[f64]) {
        let labels = [output, check.target.as_str()];
        self.edge_requests
            .with_label_values(&labels)
            .inc_by(check.requests);
        self.edge_stale
            .with_label_values(&labels)
            .inc_by(check.stale_answers);
        self.edge_unconfirmed
            .with_label_values(&labels)
            .inc_by(check.unconfirmed);
        if let Some(fresh) = check.fresh_at {
            let fresh = unix_seconds(fresh);
            let latency = self.edge_latency.with_label_values(&labels);
            for committed in committed {
                latency.observe((fresh - committed).max(0.0));
            }
        }
    }

    /// Sets the count of changes an output has not applied yet.
    pub fn set_pending(&self, output: &str, count: i64) {
        self.pending.with_label_values(&[output]).set(count);
    }

    /// Records a partitioned tileset's run: partitions rendered, and values listed. Per-value
    /// labels would make thousands of series; the tileset's output is the label.
    pub fn record_partitions(&self, output: &str, rendered: usize, total: usize) {
        self.partitions_rendered
            .with_label_values(&[output])
            .inc_by(rendered as u64);
        self.partitions
            .with_label_values(&[output])
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// Counts a failed run or cycle under the kind of its error.
    pub fn failed(&self, err: &Error) {
        self.errors.with_label_values(&[error_kind(err)]).inc();
    }

    /// Notes that a run or cycle over every output succeeded at `now`.
    pub fn succeeded(&self, now: SystemTime) {
        self.last_success.set(unix_seconds(now));
    }

    /// Every series in the Prometheus text format.
    pub fn text(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("metrics encode to memory");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// Writes the series for node_exporter's textfile collector: to a temporary file beside
    /// `path`, then renamed, so the collector never reads half a file. A failed run keeps the
    /// last success time the previous file recorded, so an alert on its age still fires.
    pub fn write_textfile(&self, path: &Path) -> Result<()> {
        if self.last_success.get() == 0.0 {
            if let Some(previous) = previous_last_success(path) {
                self.last_success.set(previous);
            }
        }
        crate::store::durable::replace(path, self.text().as_bytes()).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("cannot write the metrics file: {e}"),
        })
    }
}

fn previous_last_success(path: &Path) -> Option<f64> {
    let bytes = crate::store::document::read_capped(path, crate::store::document::DOCUMENT_CAP);
    let text = String::from_utf8(bytes.ok()??).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A short, stable label for what kind of error failed a run.
pub fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::Usage(_)
        | Error::Config { .. }
        | Error::Setting { .. }
        | Error::Plan { .. }
        | Error::Source { .. } => "config",
        Error::State { .. } => "state",
        Error::Connect { .. } => "connect",
        Error::Database(_) => "database",
        Error::Render { .. } | Error::TilesFailed { .. } => "render",
        Error::Output { .. } | Error::File { .. } => "output",
        Error::Locked { .. } => "locked",
        Error::Invalid { .. } => "invalid",
        Error::Stopped { .. } => "stopped",
        Error::System { .. } => "system",
    }
}

/// A float gauge by output and target, registered in `registry`.
fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::GaugeVec {
    registered(
        registry,
        prometheus::GaugeVec::new(Opts::new(name, help), &["output", "target"]),
    )
}

/// `metric`, registered in `registry`. Names, help and labels are constants of this file, so a
/// metric that cannot be built or registered is a bug here, found by the first test.
fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{SummaryHeader, Tally};
    use crate::tile::TileCoord;
    use std::time::Duration;

    #[test]
    fn a_summary_becomes_counters_and_histograms_deletions_as_the_output_counts_them_and_a_failed_run_keeps_the_last_success(
    ) {
        let mut tally = Tally::default();
        for x in 0..4 {
            let tile = TileCoord::new(3, x, 0).unwrap();
            let stored = (x != 0).then_some(10);
            tally.record(
                tile,
                crate::plan::Mode::Render,
                Duration::from_millis(5),
                stored,
            );
        }
        let header = SummaryHeader {
            tileset: "t".into(),
            output: "out.mbtiles".into(),
            zooms: "0-3".into(),
            dry_run: false,
            complete: true,
            changes_read: Some(2),
            committed: vec![100.0, 101.0],
            settings: None,
            ways: Vec::new(),
        };
        let summary = tally.summarize(header, Duration::from_secs(1));
        let metrics = Metrics::new();
        metrics.record(&summary, UNIX_EPOCH + Duration::from_secs(103));
        metrics.succeeded(UNIX_EPOCH + Duration::from_secs(103));
        let text = metrics.text();
        for line in [
            "oar_tiles_tiles_rendered_total{output=\"out.mbtiles\",zoom=\"3\"} 4",
            "oar_tiles_tiles_written_total{output=\"out.mbtiles\",zoom=\"3\"} 3",
            "oar_tiles_tiles_empty_total{output=\"out.mbtiles\",zoom=\"3\"} 1",
            // The empty tile was not in the output: nothing was deleted.
            "oar_tiles_tiles_deleted_total{output=\"out.mbtiles\"} 0",
            "oar_tiles_change_to_tile_seconds_count{output=\"out.mbtiles\"} 2",
            "oar_tiles_change_to_tile_seconds_sum{output=\"out.mbtiles\"} 5",
            "oar_tiles_render_seconds_count{output=\"out.mbtiles\"} 4",
            "oar_tiles_last_success_timestamp_seconds 103",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let mut swept = summary.clone();
        swept.stored.deleted = 6;
        metrics.record(&swept, UNIX_EPOCH + Duration::from_secs(104));
        let text = metrics.text();
        for line in [
            "oar_tiles_tiles_empty_total{output=\"out.mbtiles\",zoom=\"3\"} 2",
            "oar_tiles_tiles_deleted_total{output=\"out.mbtiles\"} 6",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oar.prom");
        metrics.write_textfile(&path).unwrap();
        let failed = Metrics::new();
        failed.failed(&Error::Usage("x".into()));
        failed.write_textfile(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("oar_tiles_last_success_timestamp_seconds 103"));
        assert!(text.contains("oar_tiles_errors_total{kind=\"config\"} 1"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
