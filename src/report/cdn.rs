//! The CDN side of a summary: what each purge target was sent, what the edge check found, and
//! what a `seed --dirty --dry-run` plans to render, write and purge.

use serde::Serialize;

use super::SummaryHeader;
use crate::coordination::outbox::Backlog;
use crate::edge::EdgeCheck;
use crate::edge::PurgePlan;

/// What a `--dirty` reseed would do, worked out without rendering or writing (`--dry-run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReseedPlan {
    /// Whether it reseeds the whole pyramid (settings, zooms or bbox changed, a table was
    /// truncated), rather than the dirty tiles below.
    pub everything: bool,
    /// Dirty tiles per zoom, lowest first.
    pub dirty_tiles: Vec<ZoomCount>,
    /// The roots of the subtrees walked whole below the listed tiles, per zoom, when more
    /// tiles were dirty than a reseed lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subtrees: Vec<ZoomCount>,
    /// The writes it makes to the output.
    pub writes: String,
    /// Each CDN target's purge of the changes that wait in the outbox and the dirty tiles.
    pub purges: Vec<TargetPlan>,
}

/// A count of tiles at one zoom.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ZoomCount {
    /// The zoom.
    pub zoom: u8,
    /// Its tiles.
    pub tiles: u64,
}

/// What one CDN target would be sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetPlan {
    /// The target's name.
    pub target: String,
    /// Changes an earlier run left in the outbox for it.
    pub waiting: u64,
    /// Changed paths before folding (those waiting and the dirty tiles).
    pub changed: u64,
    /// Requests, paths after folding, price.
    #[serde(flatten)]
    pub plan: PurgePlan,
}

/// One purge target's share of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeSummary {
    /// The target's name.
    pub target: String,
    /// Requests (calls, invalidations) sent.
    pub requests: u64,
    /// Paths or keys purged, a wildcard counting one.
    pub paths: u64,
    /// What they cost where the CDN charges per path (CloudFront).
    pub price_usd: Option<f64>,
    /// Why it failed, when it did; its changes stay in the outbox for the next run.
    pub failed: Option<String>,
    /// Not asked this time: it failed recently and is held back (`watch`); its changes wait in the
    /// outbox.
    pub deferred: bool,
    /// Unchanged cached tiles its wildcards evicted (an estimate from the output's stored tiles).
    pub evicted: u64,
    /// Nothing sent: the budget allowed less than the coarsest purge; the changes wait.
    pub over_budget: bool,
    /// Nothing sent: CloudFront's invalidations in flight left no room for any plan of the
    /// changes (its quotas, or a `TooManyInvalidationsInProgress` answer); they wait in the
    /// outbox for a later run.
    pub no_room: bool,
    /// CloudFront: this tool's purges whose invalidations are still in progress after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// CloudFront: invalidations of earlier runs seen completed by this one.
    #[serde(skip_serializing_if = "is_zero")]
    pub completed: u64,
    /// CloudFront: per change whose invalidation was seen completed by this run, the seconds
    /// from its commit to then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completed_seconds: Vec<f64>,
    /// Its budget, where it has one.
    pub budget: Option<BudgetState>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub use crate::edge::BudgetState;

impl PurgeSummary {
    /// `cdn `cloudfront`: 2 request(s), 37 path(s), $0.185 at $0.005 a path`.
    pub(super) fn line(&self) -> String {
        if let Some(failed) = &self.failed {
            return format!(
                "cdn `{}`: FAILED: {failed}; its changes stay in the outbox\n",
                self.target
            );
        }
        if self.deferred {
            return format!(
                "cdn `{}`: not asked (it failed recently); its changes wait in the outbox\n",
                self.target
            );
        }
        let budget = self.budget.map_or(String::new(), |budget| budget.text());
        let flight = self.flight_text();
        if self.no_room {
            return format!(
                "cdn `{}`: nothing sent: its invalidations in flight leave no room (CloudFront's quotas){flight}; its changes wait in the outbox\n",
                self.target
            );
        }
        if self.over_budget {
            return format!(
                "cdn `{}`: nothing sent: the budget allows less than the coarsest purge now{budget}; its changes wait in the outbox\n",
                self.target
            );
        }
        let price = price_text(self.price_usd, self.evicted);
        format!(
            "cdn `{}`: {} request(s), {} path(s){price}{budget}{flight}\n",
            self.target, self.requests, self.paths
        )
    }

    /// `; 2 purge(s) in flight, 3 invalidation(s) completed` for CloudFront.
    fn flight_text(&self) -> String {
        match self.in_flight {
            Some(in_flight) if self.completed > 0 => format!(
                "; {in_flight} purge(s) in flight, {} invalidation(s) completed",
                self.completed
            ),
            Some(in_flight) => format!("; {in_flight} purge(s) in flight"),
            None => String::new(),
        }
    }
}

/// `, $0.005, evicting ~120 unchanged tile(s)` where a purge has a price.
fn price_text(price_usd: Option<f64>, evicted: u64) -> String {
    match price_usd {
        Some(usd) if evicted > 0 => format!(", ${usd:.3}, evicting ~{evicted} unchanged tile(s)"),
        Some(usd) => format!(", ${usd:.3}"),
        None => String::new(),
    }
}

impl BudgetState {
    /// `; budget $10.00 a day: $0.020 spent today, one path every 43 s`.
    fn text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(per_day) = self.per_day_usd {
            parts.push(format!(
                "budget ${per_day:.2} a day: ${:.3} spent today",
                self.spent_today_usd
            ));
        }
        if let Some(per_run) = self.per_run_usd {
            parts.push(format!("${per_run:.3} a run"));
        }
        if let Some(interval) = self.path_interval_seconds {
            parts.push(format!("it buys one path every {interval:.0} s"));
        }
        format!("; {}", parts.join(", "))
    }
}

/// `edge `varnish`: 8 tile(s) fresh 0.04 s after the purge (0 stale answers)`.
pub(super) fn edge_line(check: &EdgeCheck) -> String {
    match check.seconds_after_purge {
        Some(seconds) => format!(
            "edge `{}`: {} tile(s) fetched fresh through its public URL {} s after the purge ({} stale answer(s) before)\n",
            check.target, check.sampled, super::seconds_text(seconds, 2), check.stale_answers
        ),
        None => format!(
            "edge `{}`: {} of {} tile(s) fetched through its public URL still differ from the output ({} stale answer(s))\n",
            check.target, check.unconfirmed, check.sampled, check.stale_answers
        ),
    }
}

/// `seed --dirty --dry-run`: dirty tiles per zoom, the writes, the outbox and each purge.
pub(super) fn plan_text(header: &SummaryHeader, outbox: &Backlog, plan: &ReseedPlan) -> String {
    let changes = header
        .changes_read
        .map_or(String::new(), |n| format!("{n} change(s) read; "));
    let mut out = format!(
        "tileset {} -> {} (dry run of --dirty), zoom {}: {changes}",
        header.tileset, header.output, header.zooms
    );
    if plan.everything {
        out.push_str("the whole pyramid would be reseeded\n");
    } else {
        let total: u64 = plan.dirty_tiles.iter().map(|z| z.tiles).sum();
        out.push_str(&format!("{total} dirty tile(s) would be rendered\n"));
        out.push_str(&format!("{:>5} {:>12}\n", "zoom", "dirty tiles"));
        for zoom in &plan.dirty_tiles {
            out.push_str(&format!("{:>5} {:>12}\n", zoom.zoom, zoom.tiles));
        }
        for zoom in &plan.subtrees {
            out.push_str(&format!(
                "and every non-empty tile below {} tile(s) of zoom {}, walked as a seed walks\n",
                zoom.tiles, zoom.zoom
            ));
        }
    }
    out.push_str(&format!("writes: {}\n", plan.writes));
    if outbox.entries > 0 {
        out.push_str(&format!(
            "outbox: {} change(s) from earlier runs wait for a consumer\n",
            outbox.entries
        ));
    }
    for target in &plan.purges {
        let price = price_text(target.plan.price_usd, target.plan.evicted);
        out.push_str(&format!(
            "cdn `{}`: {} changed path(s) ({} waiting from earlier runs) -> {} request(s), {} path(s) as planned{price}\n",
            target.target,
            target.changed,
            target.waiting,
            target.plan.requests,
            target.plan.paths.len()
        ));
        const SHOWN: usize = 20;
        for path in target.plan.paths.iter().take(SHOWN) {
            out.push_str(&format!("  {path}\n"));
        }
        if target.plan.paths.len() > SHOWN {
            out.push_str(&format!(
                "  … and {} more (see --summary-json)\n",
                target.plan.paths.len() - SHOWN
            ));
        }
    }
    out
}
