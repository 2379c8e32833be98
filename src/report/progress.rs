//! Live progress: a bar on a terminal, a plain log line every few seconds elsewhere (cron, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::Tally;

const LOG_EVERY: Duration = Duration::from_secs(5);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressKind {
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A log line every few seconds.
    Log,
    /// Nothing until the summary.
    Quiet,
}

impl ProgressKind {
    /// A bar on a terminal, log lines otherwise.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            ProgressKind::Bar
        } else {
            ProgressKind::Log
        }
    }
}

/// A bar of `length` steps drawn with `template`, named after `tileset`.
fn bar(length: u64, template: &str, tileset: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(tileset.to_string());
    bar
}

/// Live progress of one tileset.
pub struct Progress {
    kind: ProgressKind,
    bar: Option<ProgressBar>,
    tileset: String,
    started: Instant,
    last_log: Instant,
    done: u64,
    zoom: u8,
}

impl Progress {
    /// Starts showing progress for a tileset.
    pub fn start(kind: ProgressKind, tileset: &str) -> Self {
        let bar = (kind == ProgressKind::Bar).then(|| {
            bar(
                0,
                "{prefix} z{msg:>2} [{bar:30}] {human_pos}/{human_len} tiles {per_sec:>12} ETA {eta}",
                tileset,
            )
        });
        Self {
            kind,
            bar,
            tileset: tileset.to_string(),
            started: Instant::now(),
            last_log: Instant::now(),
            done: 0,
            zoom: 0,
        }
    }

    /// `tiles` more tiles are queued; the bar's length grows as the walk discovers work.
    pub fn discovered(&mut self, tiles: usize) {
        if let Some(bar) = &self.bar {
            bar.inc_length(tiles as u64);
        }
    }

    /// One tile is done.
    pub fn tile_done(&mut self, zoom: u8, tally: &Tally) {
        self.done += 1;
        if zoom != self.zoom {
            self.zoom = zoom;
            if let Some(bar) = &self.bar {
                bar.set_message(zoom.to_string());
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if self.kind == ProgressKind::Log && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(
                "{}: zoom {}, {} tiles done, {} written, {:.0} tiles/s",
                self.tileset,
                self.zoom,
                self.done,
                tally.written(),
                rate
            );
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Progress of a partitioned tileset whose partitions run side by side: partitions done, on one
/// bar on a terminal, or a log line every few seconds elsewhere.
pub struct PartitionProgress {
    kind: ProgressKind,
    bar: Option<ProgressBar>,
    tileset: String,
    total: usize,
    done: usize,
    last_log: Instant,
}

impl PartitionProgress {
    /// Starts showing progress over `total` partitions of `tileset`.
    pub fn start(kind: ProgressKind, tileset: &str, total: usize) -> Self {
        let bar = (kind == ProgressKind::Bar).then(|| {
            bar(
                total as u64,
                "{prefix} [{bar:30}] {human_pos}/{human_len} partitions ETA {eta}",
                tileset,
            )
        });
        Self {
            kind,
            bar,
            tileset: tileset.to_string(),
            total,
            done: 0,
            last_log: Instant::now(),
        }
    }

    /// One more partition finished (or failed).
    pub fn done(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if self.kind == ProgressKind::Log && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            tracing::info!(
                "{}: {} of {} partitions done",
                self.tileset,
                self.done,
                self.total
            );
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
