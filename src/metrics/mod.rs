//! Prometheus metrics of seeds and `watch` cycles, taken from the summaries a run returns, so a
//! cron `seed --metrics-file` and a long-running `watch` are monitored with the same series.
//!
//! The text format is the `prometheus` crate's; `watch` serves it at `/metrics`, `seed` writes it
//! for node_exporter's textfile collector.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, Gauge, IntCounterVec, Opts, Registry, TextEncoder};

mod series;

use self::series::{CheckSeries, PurgeSeries, RunSeries};
use crate::edge::EdgeCheck;
use crate::error::{Error, Result};
use crate::report::TilesetSummary;

/// The name of the gauge a textfile keeps across failed runs.
const LAST_SUCCESS: &str = "oar_tiles_last_success_timestamp_seconds";

/// Buckets of the change-to-tile and change-to-edge latencies, in seconds.
pub(super) const LATENCY_BUCKETS: [f64; 13] = [
    0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of commit → CloudFront invalidation completed, in seconds: propagation takes tens of
/// seconds to minutes.
pub(super) const COMPLETED_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 60.0, 90.0, 120.0, 300.0, 900.0,
];

/// Every series oar-tiles exports.
pub struct Metrics {
    registry: Registry,
    runs: RunSeries,
    purges: PurgeSeries,
    checks: CheckSeries,
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
        Metrics {
            runs: RunSeries::new(&registry),
            purges: PurgeSeries::new(&registry),
            checks: CheckSeries::new(&registry),
            errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "oar_tiles_errors_total",
                        "Runs or cycles that failed, by kind of error.",
                    ),
                    &["kind"],
                ),
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
            self.runs
                .rendered
                .with_label_values(&labels)
                .inc_by(zoom.queried);
            self.runs
                .written
                .with_label_values(&labels)
                .inc_by(zoom.written);
            self.runs
                .empty
                .with_label_values(&labels)
                .inc_by(zoom.empty);
            let render = self.runs.render_seconds.with_label_values(&[output]);
            for (seconds, renders) in zoom.render_times.counts() {
                for _ in 0..renders {
                    render.observe(seconds);
                }
            }
        }
        self.runs
            .deleted
            .with_label_values(&[output])
            .inc_by(summary.stored.deleted);
        if let Some(throttled) = &summary.stored.throttled {
            self.runs
                .store_refused
                .with_label_values(&[output])
                .inc_by(throttled.refused_writes);
            self.runs
                .store_write_rate
                .with_label_values(&[output])
                .set(i64::try_from(throttled.writes_per_second).unwrap_or(i64::MAX));
        }
        self.runs
            .cycle_seconds
            .with_label_values(&[output])
            .observe(summary.seconds);
        let now = unix_seconds(now);
        let latency = self.runs.latency_seconds.with_label_values(&[output]);
        for committed in &summary.header.committed {
            latency.observe((now - committed).max(0.0));
        }
        self.runs
            .changes
            .with_label_values(&[output])
            .inc_by(summary.header.committed.len() as u64);
        self.runs
            .outbox_entries
            .with_label_values(&[output])
            .set(i64::try_from(summary.outbox.entries).unwrap_or(i64::MAX));
        self.runs
            .outbox_oldest
            .with_label_values(&[output])
            .set(summary.outbox.oldest_seconds.unwrap_or(0.0));
        if let Some(check) = &summary.verified {
            let wrong = check.wrong.len() as u64;
            self.checks
                .verify_compared
                .with_label_values(&[output])
                .inc_by(check.compared);
            self.checks
                .verify_wrong
                .with_label_values(&[output])
                .inc_by(wrong);
            self.checks
                .verify_wrong_last
                .with_label_values(&[output])
                .set(i64::try_from(wrong).unwrap_or(i64::MAX));
        }
        for purge in &summary.purges {
            self.purges.record(output, purge);
        }
        for check in &summary.edge {
            self.record_edge(output, check, &summary.header.committed);
        }
    }

    /// Adds what an edge check of `output` found; `committed` are the commit times of the changes
    /// whose tiles it checked (seconds since the Unix epoch).
    pub fn record_edge(&self, output: &str, check: &EdgeCheck, committed: &[f64]) {
        let labels = [output, check.target.as_str()];
        self.checks
            .edge_requests
            .with_label_values(&labels)
            .inc_by(check.requests);
        self.checks
            .edge_stale
            .with_label_values(&labels)
            .inc_by(check.stale_answers);
        self.checks
            .edge_unconfirmed
            .with_label_values(&labels)
            .inc_by(check.unconfirmed);
        if let Some(fresh) = check.fresh_at {
            let fresh = unix_seconds(fresh);
            let latency = self.checks.edge_latency.with_label_values(&labels);
            for committed in committed {
                latency.observe((fresh - committed).max(0.0));
            }
        }
    }

    /// Sets the count of changes an output has not applied yet.
    pub fn set_pending(&self, output: &str, count: i64) {
        self.runs.pending.with_label_values(&[output]).set(count);
    }

    /// Records a partitioned tileset's run: partitions rendered, and values listed. Per-value
    /// labels would make thousands of series; the tileset's output is the label.
    pub fn record_partitions(&self, output: &str, rendered: usize, total: usize) {
        self.runs
            .partitions_rendered
            .with_label_values(&[output])
            .inc_by(rendered as u64);
        self.runs
            .partitions
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

pub(super) fn unix_seconds(time: SystemTime) -> f64 {
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

/// `metric`, registered in `registry`. Names, help and labels are constants of this file, so a
/// metric that cannot be built or registered is a bug here, found by the first test.
pub(super) fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
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
