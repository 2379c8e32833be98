//! What a job tells its operator: a progress bar on a terminal, a plain log line every few seconds
//! elsewhere (cron, CI), and a per-zoom summary at the end, for people and, as JSON, for machines.

mod cdn;
mod failed;
mod header;
mod progress;
mod times;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use serde::Serialize;

pub use cdn::{PurgeSummary, ReseedPlan, TargetPlan, ZoomCount};
pub use header::SummaryHeader;
pub use progress::{PartitionProgress, Progress, ProgressKind};
pub use times::{seconds_text, RenderTimes};

use crate::coordination::outbox::Backlog;
use crate::edge::{EdgeCheck, EdgeProbe};
pub use crate::encode::human_bytes;
use crate::plan::dirty::ways_text;
use crate::plan::Mode;
use crate::sink::SinkReport;
use crate::tile::TileCoord;

const SLOWEST_KEPT: usize = 10;

/// Counts of one zoom level.
#[derive(Debug, Default, Clone)]
struct ZoomTally {
    probed: u64,
    queried: u64,
    empty: u64,
    written: u64,
    bytes: u64,
    largest: Option<(usize, TileCoord)>,
    render_times: RenderTimes,
}

/// Collects per-zoom figures while a tileset is seeded.
#[derive(Debug, Default)]
pub struct Tally {
    stored: SinkReport,
    failed: Vec<(TileCoord, String)>,
    zooms: BTreeMap<u8, ZoomTally>,
    over_budget: Vec<(TileCoord, usize)>,
    slowest: BinaryHeap<Reverse<(Duration, TileCoord)>>,
}

impl Tally {
    /// Records one statement's outcome; `stored_bytes` is the encoded size when the tile was written.
    pub fn record(
        &mut self,
        tile: TileCoord,
        mode: Mode,
        elapsed: Duration,
        stored_bytes: Option<usize>,
    ) {
        let zoom = self.zooms.entry(tile.z()).or_default();
        match mode {
            Mode::Probe => zoom.probed += 1,
            Mode::Render => {
                zoom.queried += 1;
                zoom.render_times
                    .record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
                match stored_bytes {
                    None => zoom.empty += 1,
                    Some(bytes) => {
                        zoom.written += 1;
                        zoom.bytes += bytes as u64;
                        if zoom.largest.is_none_or(|(largest, _)| bytes > largest) {
                            zoom.largest = Some((bytes, tile));
                        }
                    }
                }
                self.slowest.push(Reverse((elapsed, tile)));
                if self.slowest.len() > SLOWEST_KEPT {
                    self.slowest.pop();
                }
            }
        }
    }

    /// Notes a tile that failed after its retries.
    pub fn failed_tile(&mut self, tile: TileCoord, message: String) {
        self.failed.push((tile, message));
    }

    /// Tiles that failed after their retries.
    pub fn failed(&self) -> &[(TileCoord, String)] {
        &self.failed
    }

    /// Records what the output did with the tiles.
    pub fn set_stored(&mut self, stored: SinkReport) {
        self.stored = stored;
    }

    /// Notes a tile whose stored size exceeds the budget.
    pub fn over_budget(&mut self, tile: TileCoord, bytes: usize) {
        self.over_budget.push((tile, bytes));
    }

    /// The slowest tiles rendered so far, with how long each took.
    pub fn slowest(&self) -> impl Iterator<Item = (Duration, TileCoord)> + '_ {
        self.slowest.iter().map(|Reverse(slow)| *slow)
    }

    /// Tiles written so far, per zoom.
    pub fn written_per_zoom(&self) -> BTreeMap<u8, u64> {
        self.zooms
            .iter()
            .map(|(z, tally)| (*z, tally.written))
            .collect()
    }

    /// Tiles written so far.
    pub fn written(&self) -> u64 {
        self.zooms.values().map(|z| z.written).sum()
    }

    /// Freezes the figures into a summary.
    pub fn summarize(self, header: SummaryHeader, elapsed: Duration) -> TilesetSummary {
        let stored = self.stored;
        let zooms: Vec<ZoomSummary> = self
            .zooms
            .into_iter()
            .map(|(zoom, tally)| {
                let ms = |q: f64| tally.render_times.quantile_ms(q);
                ZoomSummary {
                    zoom,
                    probed: tally.probed,
                    queried: tally.queried,
                    empty: tally.empty,
                    written: tally.written,
                    bytes: tally.bytes,
                    largest_tile: tally.largest.map(|(bytes, tile)| TileSize {
                        tile: tile.to_string(),
                        bytes,
                    }),
                    render_ms_p50: ms(0.50),
                    render_ms_p95: ms(0.95),
                    render_ms_max: ms(1.0),
                    render_ms_total: tally.render_times.total_ms(),
                    render_times: tally.render_times.settled(),
                }
            })
            .collect();
        let mut slowest: Vec<(Duration, TileCoord)> =
            self.slowest.into_iter().map(|Reverse(e)| e).collect();
        slowest.sort_unstable_by(|a, b| b.cmp(a));
        let written: u64 = zooms.iter().map(|z| z.written).sum();
        let seconds = elapsed.as_secs_f64();
        TilesetSummary {
            header,
            seconds,
            tiles_queried: zooms.iter().map(|z| z.queried).sum(),
            tiles_probed: zooms.iter().map(|z| z.probed).sum(),
            tiles_written: written,
            bytes_written: zooms.iter().map(|z| z.bytes).sum(),
            tiles_per_second: if seconds > 0.0 {
                written as f64 / seconds
            } else {
                0.0
            },
            stored,
            failed_tiles: self
                .failed
                .into_iter()
                .map(|(tile, error)| FailedTile {
                    tile: tile.to_string(),
                    error,
                })
                .collect(),
            over_budget: self
                .over_budget
                .into_iter()
                .map(|(tile, bytes)| TileSize {
                    tile: tile.to_string(),
                    bytes,
                })
                .collect(),
            per_zoom: zooms,
            slowest_tiles: slowest
                .into_iter()
                .map(|(elapsed, tile)| SlowTile {
                    tile: tile.to_string(),
                    ms: elapsed.as_secs_f64() * 1000.0,
                })
                .collect(),
            outbox: Backlog::default(),
            purges: Vec::new(),
            feed: None,
            edge: Vec::new(),
            edge_probes: Vec::new(),
            plan: None,
            verified: None,
        }
    }
}

impl TilesetSummary {
    /// One summary of several runs under `header` (a partitioned tileset's partitions, as `watch`
    /// reports them): counts add up, render times are pooled per zoom, outbox backlogs add up
    /// with the oldest entry's age, and `elapsed` is the wall time of them all.
    pub fn merged(
        header: SummaryHeader,
        parts: Vec<TilesetSummary>,
        elapsed: Duration,
    ) -> TilesetSummary {
        let mut zooms: BTreeMap<u8, ZoomSummary> = BTreeMap::new();
        let mut merged = Tally::default().summarize(header, elapsed);
        for part in parts {
            merged.tiles_queried += part.tiles_queried;
            merged.tiles_probed += part.tiles_probed;
            merged.tiles_written += part.tiles_written;
            merged.bytes_written += part.bytes_written;
            merged.stored.changed += part.stored.changed;
            merged.stored.unchanged += part.stored.unchanged;
            merged.stored.deleted += part.stored.deleted;
            merged.failed_tiles.extend(part.failed_tiles);
            merged.over_budget.extend(part.over_budget);
            merged.slowest_tiles.extend(part.slowest_tiles);
            merged.outbox.batches += part.outbox.batches;
            merged.outbox.entries += part.outbox.entries;
            merged.outbox.oldest_seconds =
                match (merged.outbox.oldest_seconds, part.outbox.oldest_seconds) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            merged.purges.extend(part.purges);
            merged.edge.extend(part.edge);
            merged.edge_probes.extend(part.edge_probes);
            for zoom in part.per_zoom {
                let into = zooms.entry(zoom.zoom).or_insert_with(|| ZoomSummary {
                    zoom: zoom.zoom,
                    probed: 0,
                    queried: 0,
                    empty: 0,
                    written: 0,
                    bytes: 0,
                    largest_tile: None,
                    render_ms_p50: 0.0,
                    render_ms_p95: 0.0,
                    render_ms_max: 0.0,
                    render_ms_total: 0.0,
                    render_times: RenderTimes::default(),
                });
                into.probed += zoom.probed;
                into.queried += zoom.queried;
                into.empty += zoom.empty;
                into.written += zoom.written;
                into.bytes += zoom.bytes;
                into.render_ms_total += zoom.render_ms_total;
                into.render_times.add(&zoom.render_times);
                if zoom.largest_tile.as_ref().map(|t| t.bytes)
                    > into.largest_tile.as_ref().map(|t| t.bytes)
                {
                    into.largest_tile = zoom.largest_tile;
                }
            }
        }
        for zoom in zooms.values_mut() {
            zoom.render_ms_p50 = zoom.render_times.quantile_ms(0.50);
            zoom.render_ms_p95 = zoom.render_times.quantile_ms(0.95);
            zoom.render_ms_max = zoom.render_times.quantile_ms(1.0);
        }
        merged.per_zoom = zooms.into_values().collect();
        merged
            .slowest_tiles
            .sort_unstable_by(|a, b| b.ms.total_cmp(&a.ms));
        merged.slowest_tiles.truncate(SLOWEST_KEPT);
        merged.tiles_per_second = if merged.seconds > 0.0 {
            merged.tiles_written as f64 / merged.seconds
        } else {
            0.0
        };
        merged
    }
}

/// A tile and its stored size.
#[derive(Debug, Clone, Serialize)]
pub struct TileSize {
    /// `z/x/y`.
    pub tile: String,
    /// Stored (compressed) bytes.
    pub bytes: usize,
}

/// A tile that could not be rendered.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTile {
    /// `z/x/y`.
    pub tile: String,
    /// The last error.
    pub error: String,
}

/// A tile and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct SlowTile {
    /// `z/x/y`.
    pub tile: String,
    /// Milliseconds from asking for a connection to having the bytes.
    pub ms: f64,
}

/// Figures of one zoom level.
#[derive(Debug, Clone, Serialize)]
pub struct ZoomSummary {
    /// Zoom level.
    pub zoom: u8,
    /// Tiles only probed on the way down to the first rendered zoom (or in a dry run).
    pub probed: u64,
    /// Tiles rendered.
    pub queried: u64,
    /// Rendered tiles that held nothing and were not written.
    pub empty: u64,
    /// Tiles written.
    pub written: u64,
    /// Stored bytes written.
    pub bytes: u64,
    /// The largest tile written.
    pub largest_tile: Option<TileSize>,
    /// Median render time (to three significant digits).
    pub render_ms_p50: f64,
    /// 95th percentile render time (to three significant digits).
    pub render_ms_p95: f64,
    /// Longest render time.
    pub render_ms_max: f64,
    /// Server time spent rendering the zoom's tiles, summed over all connections.
    pub render_ms_total: f64,
    /// The render times, for histograms; not part of the JSON summary.
    #[serde(skip)]
    pub render_times: RenderTimes,
}

/// Everything a seed of one tileset did.
#[derive(Debug, Clone, Serialize)]
pub struct TilesetSummary {
    /// Which tileset, output and zooms, and how the run ended.
    #[serde(flatten)]
    pub header: SummaryHeader,
    /// Wall time.
    pub seconds: f64,
    /// Tiles rendered.
    pub tiles_queried: u64,
    /// Tiles probed.
    pub tiles_probed: u64,
    /// Tiles written.
    pub tiles_written: u64,
    /// Stored bytes written.
    pub bytes_written: u64,
    /// Written tiles per second of wall time.
    pub tiles_per_second: f64,
    /// What the output did with them: changed, unchanged (skipped), deleted.
    pub stored: SinkReport,
    /// Tiles that failed after their retries (`--keep-going`).
    pub failed_tiles: Vec<FailedTile>,
    /// Every tile over the tileset's size budget, in the order rendered.
    pub over_budget: Vec<TileSize>,
    /// Per-zoom figures.
    pub per_zoom: Vec<ZoomSummary>,
    /// The slowest tiles, slowest first.
    pub slowest_tiles: Vec<SlowTile>,
    /// What the output's outbox holds for its consumers after the run.
    pub outbox: Backlog,
    /// What each CDN purge target was sent.
    pub purges: Vec<PurgeSummary>,
    /// What the output's changes feed published, while the run rendered and after its purges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<crate::coordination::feed::Published>,
    /// What fetching changed tiles through each target's public URL found (`--check-edge`).
    pub edge: Vec<EdgeCheck>,
    /// The tiles to fetch for that check, once the purges are sent.
    #[serde(skip)]
    pub edge_probes: Vec<EdgeProbe>,
    /// What `seed --dirty --dry-run` found a reseed would do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<ReseedPlan>,
    /// What `--verify-sample` found after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<SampleCheck>,
}

/// `--verify-sample`: stored tiles rendered again and compared after a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleCheck {
    /// Tiles compared (the sample and its empty neighbours).
    pub compared: u64,
    /// Tiles whose stored bytes differ from the database's, missing or that should not exist.
    pub wrong: Vec<String>,
    /// Differing tiles that changes committed since the run touched (the next run renders them).
    pub pending: u64,
}

impl TilesetSummary {
    /// The summary as an operator reads it.
    pub fn to_text(&self) -> String {
        if self.header.dry_run {
            return self.dry_run_text();
        }
        let mut out = self.zoom_table();
        out.push_str(&self.notes());
        out
    }

    fn dry_run_text(&self) -> String {
        if let Some(plan) = &self.plan {
            return cdn::plan_text(&self.header, &self.outbox, plan);
        }
        let mut out = format!(
            "tileset {} (dry run), zoom {}: tiles each zoom would query\n",
            self.header.tileset, self.header.zooms
        );
        out.push_str(&format!("{:>5} {:>12}\n", "zoom", "would query"));
        for zoom in &self.per_zoom {
            out.push_str(&format!("{:>5} {:>12}\n", zoom.zoom, zoom.probed));
        }
        out.push_str(&format!("{:>5} {:>12}\n", "total", self.tiles_probed));
        out
    }

    /// The headline and one line per zoom.
    fn zoom_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "tileset {} -> {}, zoom {}: {} tiles written ({}) in {} s, {:.0} tiles/s\n",
            self.header.tileset,
            self.header.output,
            self.header.zooms,
            self.tiles_written,
            human_bytes(self.bytes_written),
            seconds_text(self.seconds, 1),
            self.tiles_per_second
        ));
        out.push_str(&format!(
            "{:>5} {:>9} {:>9} {:>9} {:>10} {:>24} {:>8} {:>8} {:>9}\n",
            "zoom",
            "queried",
            "empty",
            "written",
            "bytes",
            "largest tile",
            "p50 ms",
            "p95 ms",
            "max ms"
        ));
        for z in &self.per_zoom {
            if z.queried == 0 {
                out.push_str(&format!(
                    "{:>5} {:>9} (probed {} on the way down)\n",
                    z.zoom, 0, z.probed
                ));
                continue;
            }
            let largest = z
                .largest_tile
                .as_ref()
                .map(|t| format!("{} {}", t.tile, human_bytes(t.bytes as u64)))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:>5} {:>9} {:>9} {:>9} {:>10} {:>24} {:>8.1} {:>8.1} {:>9.1}\n",
                z.zoom,
                z.queried,
                z.empty,
                z.written,
                human_bytes(z.bytes),
                largest,
                z.render_ms_p50,
                z.render_ms_p95,
                z.render_ms_max
            ));
        }
        out
    }

    /// What the output did, and what needs attention: failures, an incomplete run, oversized and
    /// slow tiles.
    fn notes(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "output: {} changed, {} unchanged (not rewritten), {} deleted\n",
            self.stored.changed, self.stored.unchanged, self.stored.deleted
        ));
        if let Some(throttled) = &self.stored.throttled {
            out.push_str(&format!(
                "store throttled: {} write(s) refused as too fast and sent again; it took {} \
                 writes a second over the last {}\n",
                throttled.refused_writes,
                throttled.writes_per_second,
                humantime::format_duration(Duration::from_secs(throttled.throttled_ms / 1000))
            ));
        }
        if !self.header.ways.is_empty() {
            out.push_str(&format!("reseed: {}\n", ways_text(&self.header.ways)));
        }
        out.push_str(&self.failed_text());
        if let Some(check) = &self.verified {
            let listed: Vec<&str> = check.wrong.iter().take(20).map(String::as_str).collect();
            out.push_str(&format!(
                "verified: {} tile(s) rendered again, {} wrong{}, {} pending\n",
                check.compared,
                check.wrong.len(),
                if listed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", listed.join(", "))
                },
                check.pending
            ));
        }
        if !self.header.complete {
            out.push_str(
                "incomplete: the watermark was not advanced; the next run picks up the rest\n",
            );
        }
        if !self.over_budget.is_empty() {
            let listed: Vec<String> = self
                .over_budget
                .iter()
                .take(20)
                .map(|t| format!("{} ({})", t.tile, human_bytes(t.bytes as u64)))
                .collect();
            let more = self.over_budget.len().saturating_sub(listed.len());
            let more = if more > 0 {
                format!(" and {more} more (see --summary-json)")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "over the size budget: {} tile(s): {}{more}\n",
                self.over_budget.len(),
                listed.join(", ")
            ));
        }
        if !self.slowest_tiles.is_empty() {
            let slowest: Vec<String> = self
                .slowest_tiles
                .iter()
                .map(|t| format!("{} ({:.0} ms)", t.tile, t.ms))
                .collect();
            out.push_str(&format!("slowest tiles: {}\n", slowest.join(", ")));
        }
        for purge in &self.purges {
            out.push_str(&purge.line());
        }
        for check in &self.edge {
            out.push_str(&cdn::edge_line(check));
        }
        if self.outbox.entries > 0 {
            out.push_str(&format!(
                "outbox: {} changed tile(s) or document(s) wait for a consumer (the next run delivers them)\n",
                self.outbox.entries
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
