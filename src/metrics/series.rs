//! The series, grouped by what feeds them: a run's tiles and changes, its CDN purges, and the
//! checks after it (the edge check, `--verify-sample`). Each group registers its series and
//! records its part of a run's summary.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{registered, COMPLETED_BUCKETS, LATENCY_BUCKETS};
use crate::report::PurgeSummary;

/// A counter with `labels`, registered in `registry`.
fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A histogram by output with `buckets`, registered in `registry`.
fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    registered(registry, HistogramVec::new(opts, &["output"]))
}

/// A float gauge by output and target, registered in `registry`.
fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::GaugeVec {
    registered(
        registry,
        prometheus::GaugeVec::new(Opts::new(name, help), &["output", "target"]),
    )
}

/// What runs rendered, wrote and applied, and what waits in their outboxes.
pub(super) struct RunSeries {
    pub(super) rendered: IntCounterVec,
    pub(super) written: IntCounterVec,
    pub(super) empty: IntCounterVec,
    pub(super) deleted: IntCounterVec,
    pub(super) store_refused: IntCounterVec,
    pub(super) store_write_rate: IntGaugeVec,
    pub(super) render_seconds: HistogramVec,
    pub(super) cycle_seconds: HistogramVec,
    pub(super) latency_seconds: HistogramVec,
    pub(super) changes: IntCounterVec,
    pub(super) pending: IntGaugeVec,
    pub(super) outbox_entries: IntGaugeVec,
    pub(super) outbox_oldest: prometheus::GaugeVec,
    pub(super) partitions_rendered: IntCounterVec,
    pub(super) partitions: IntGaugeVec,
}

impl RunSeries {
    pub(super) fn new(registry: &Registry) -> RunSeries {
        let by_zoom = ["output", "zoom"];
        RunSeries {
            rendered: counter(registry,
                "oar_tiles_tiles_rendered_total",
                "Tiles rendered, by output and zoom.",
                &by_zoom,
            ),
            written: counter(registry,
                "oar_tiles_tiles_written_total",
                "Non-empty tiles handed to the output (stored unless their bytes were already there).",
                &by_zoom,
            ),
            empty: counter(registry,
                "oar_tiles_tiles_empty_total",
                "Tiles that rendered empty and so were not written (deleted if the output held them).",
                &by_zoom,
            ),
            // What the output removed, as the summary and the cycle line count it: an empty tile
            // the output never held is no deletion, and a full seed's sweep deletes tiles no zoom
            // tally saw, so the outputs' own count is the one figure, without a zoom.
            deleted: counter(registry,
                "oar_tiles_tiles_deleted_total",
                "Tiles the output removed: rendered empty where it held them, or no longer produced after a full seed.",
                &["output"],
            ),
            store_refused: counter(registry,
                "oar_tiles_store_refused_writes_total",
                "Writes the output's store refused as too fast (503 SlowDown, 429, 503 ServerBusy), each sent again at a slower pace.",
                &["output"],
            ),
            store_write_rate: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_store_throttled_writes_per_second", "Writes a second the output's store took, over the last run it refused writes in, from its first refusal on."), &["output"]),
            ),
            render_seconds: histogram(registry,
                "oar_tiles_render_seconds",
                "Time to render one tile, from asking for a connection to having its bytes.",
                prometheus::exponential_buckets(0.001, 2.5, 12).expect("valid buckets"),
            ),
            cycle_seconds: histogram(registry,
                "oar_tiles_cycle_seconds",
                "Wall time of one run over an output (a seed, or one watch cycle).",
                prometheus::exponential_buckets(0.05, 2.0, 14).expect("valid buckets"),
            ),
            latency_seconds: histogram(registry,
                "oar_tiles_change_to_tile_seconds",
                "From a change's commit to the output holding its tiles, per change applied.",
                LATENCY_BUCKETS.to_vec(),
            ),
            changes: counter(registry,
                "oar_tiles_changes_applied_total",
                "Changes from the change log that complete runs applied to the output.",
                &["output"],
            ),
            pending: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_pending_changes", "Changes in the change log the output has not applied yet, as last counted."), &["output"]),
            ),
            outbox_entries: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_outbox_entries", "Changed tiles and documents in the output's outbox that a consumer (--changed-list, a CDN) has not taken."), &["output"]),
            ),
            outbox_oldest: registered(
                registry,
                prometheus::GaugeVec::new(Opts::new("oar_tiles_outbox_oldest_seconds", "Age of the oldest change in the output's outbox that a consumer has not taken (0 when empty)."), &["output"]),
            ),
            partitions_rendered: counter(registry,
                "oar_tiles_partitions_rendered_total",
                "Partitions of a partitioned tileset that runs rendered (their values touched, new or vanished), by the tileset's output.",
                &["output"],
            ),
            partitions: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_partitions", "Values a partitioned tileset's index lists, as of its last run."), &["output"]),
            ),
        }
    }
}

/// What CDN targets were sent, spent and left waiting.
pub(super) struct PurgeSeries {
    pub(super) purge_requests: IntCounterVec,
    pub(super) purge_paths: IntCounterVec,
    pub(super) purge_failures: IntCounterVec,
    pub(super) purge_deferred: IntCounterVec,
    pub(super) purge_spend: prometheus::CounterVec,
    pub(super) purge_evicted: IntCounterVec,
    pub(super) purge_over_budget: IntCounterVec,
    pub(super) purge_no_room: IntCounterVec,
    pub(super) purge_completed: HistogramVec,
    pub(super) invalidations_in_flight: IntGaugeVec,
    pub(super) budget_spent_today: prometheus::GaugeVec,
    pub(super) budget_path_interval: prometheus::GaugeVec,
}

impl PurgeSeries {
    /// Adds what one purge of `output`'s changes sent, spent and left waiting.
    pub(super) fn record(&self, output: &str, purge: &PurgeSummary) {
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

    pub(super) fn new(registry: &Registry) -> PurgeSeries {
        PurgeSeries {
            purge_requests: counter(registry,
                "oar_tiles_purge_requests_total",
                "Purge requests (calls, invalidations) a CDN accepted, by output and target.",
                &["output", "target"],
            ),
            purge_paths: counter(registry,
                "oar_tiles_purge_paths_total",
                "Paths or keys purged at a CDN (a wildcard counts one), by output and target.",
                &["output", "target"],
            ),
            purge_failures: counter(registry,
                "oar_tiles_purge_failures_total",
                "Runs whose purge at a CDN failed after its retries (the changes stay in the outbox).",
                &["output", "target"],
            ),
            purge_deferred: counter(registry,
                "oar_tiles_purge_deferred_total",
                "Cycles that did not ask a CDN target because it failed recently (its changes wait in the outbox).",
                &["output", "target"],
            ),
            purge_spend: registered(
                registry,
                prometheus::CounterVec::new(Opts::new("oar_tiles_purge_spend_usd_total", "What a CDN target's purges cost (paths times its price_per_path), in US dollars."), &["output", "target"]),
            ),
            purge_evicted: counter(registry,
                "oar_tiles_purge_evicted_tiles_total",
                "Unchanged cached tiles a CDN target's wildcards evicted (estimated from the output's stored tiles).",
                &["output", "target"],
            ),
            purge_over_budget: counter(registry,
                "oar_tiles_purge_over_budget_total",
                "Runs whose purge waited because the target's budget allowed less than its coarsest plan.",
                &["output", "target"],
            ),
            purge_no_room: counter(registry,
                "oar_tiles_purge_no_room_total",
                "Runs whose purge waited because CloudFront's invalidations in flight left no room (its quotas of 3,000 file paths and 15 wildcards in progress); the changes wait in the outbox, nothing waits for room.",
                &["output", "target"],
            ),
            purge_completed: registered(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("oar_tiles_purge_completed_seconds", "From a change's commit to CloudFront reporting its invalidation Completed (seen by the next run that looks), per change.").buckets(COMPLETED_BUCKETS.to_vec()),
                    &["output", "target"],
                ),
            ),
            invalidations_in_flight: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_purge_in_flight", "A CloudFront target's purges whose invalidations were still in progress after the last run."), &["output", "target"]),
            ),
            budget_spent_today: float_gauge(
                registry,
                "oar_tiles_budget_spent_today_usd",
                "What a budgeted CDN target spent today (UTC), in US dollars.",
            ),
            budget_path_interval: float_gauge(
                registry,
                "oar_tiles_budget_path_interval_seconds",
                "The freshness a daily budget buys: one purged path every this many seconds.",
            ),
        }
    }
}

/// What the checks after a run found: tiles fetched through a CDN, tiles rendered again.
pub(super) struct CheckSeries {
    pub(super) edge_requests: IntCounterVec,
    pub(super) edge_stale: IntCounterVec,
    pub(super) edge_unconfirmed: IntCounterVec,
    pub(super) edge_latency: HistogramVec,
    pub(super) verify_compared: IntCounterVec,
    pub(super) verify_wrong: IntCounterVec,
    pub(super) verify_wrong_last: IntGaugeVec,
}

impl CheckSeries {
    pub(super) fn new(registry: &Registry) -> CheckSeries {
        CheckSeries {
            edge_requests: counter(registry,
                "oar_tiles_edge_requests_total",
                "Changed tiles fetched through a CDN target's public_url after its purge, by output and target.",
                &["output", "target"],
            ),
            edge_stale: counter(registry,
                "oar_tiles_edge_stale_answers_total",
                "Answers through a CDN target's public_url that were not the output's tile (old bytes, an error).",
                &["output", "target"],
            ),
            edge_unconfirmed: counter(registry,
                "oar_tiles_edge_unconfirmed_total",
                "Sampled tiles still not served fresh through a CDN target when the edge check gave up.",
                &["output", "target"],
            ),
            edge_latency: registered(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("oar_tiles_change_to_edge_seconds", "From a change's commit to a CDN target serving its sampled tiles fresh, per change.").buckets(LATENCY_BUCKETS.to_vec()),
                    &["output", "target"],
                ),
            ),
            verify_compared: counter(registry,
                "oar_tiles_verify_compared_tiles_total",
                "Tiles --verify-sample rendered again and compared with the output's, by output.",
                &["output"],
            ),
            verify_wrong: counter(registry,
                "oar_tiles_verify_wrong_tiles_total",
                "Tiles --verify-sample found wrong (differing from the database, missing, or that should not exist), by output.",
                &["output"],
            ),
            verify_wrong_last: registered(
                registry,
                IntGaugeVec::new(Opts::new("oar_tiles_verify_wrong_tiles", "Tiles the last --verify-sample of an output found wrong."), &["output"]),
            ),
        }
    }
}
