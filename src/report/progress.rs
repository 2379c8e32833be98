//! Live progress: a bar on a terminal, a plain log line every few seconds elsewhere (cron, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressStyle};

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

/// How often the terminal's line is redrawn: often enough to look live, rarely enough that
/// formatting it costs nothing beside a tile.
const DRAW_EVERY: Duration = Duration::from_millis(100);

/// An ETA is shown only once this much of the run has passed: the first tiles' rate says
/// nothing about the rest (connections warming up, the low zooms' large tiles).
const ETA_AFTER: Duration = Duration::from_secs(2);

/// A line on the terminal: a spinner while the total is unknown, a bar once it is known.
fn line(template: &str, tileset: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    style(&bar, template);
    bar.set_prefix(tileset.to_string());
    bar
}

fn style(bar: &ProgressBar, template: &str) {
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
}

const SPINNER: &str = "{prefix} {spinner} {msg}";
const BAR: &str = "{prefix} [{bar:30}] {msg}";

/// A rate for people: whole numbers from 100 on, one decimal below, never more.
fn rate_text(per_second: f64) -> String {
    if !per_second.is_finite() || per_second < 0.0 {
        return "-".to_string();
    }
    if per_second >= 99.95 {
        HumanCount(per_second.round() as u64).to_string()
    } else {
        format!("{per_second:.1}")
    }
}

/// A duration for a progress line: `42 s`, `3 min 05 s`, `2 h 07 min`.
fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..=59 => format!("{seconds} s"),
        60..=3599 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// The time left at the average rate so far, once enough of the run has passed for that rate to
/// mean something; `None` before, or with nothing done yet.
fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done == 0 || elapsed < ETA_AFTER {
        return None;
    }
    let left = total.saturating_sub(done) as f64;
    Some(Duration::from_secs_f64(
        left * elapsed.as_secs_f64() / done as f64,
    ))
}

/// What a tileset's progress line says after its counts. A pruned walk finds its tiles as it
/// goes, so without a `total` it shows counts and a rate and no ETA, which it could not keep.
/// Queried and written are named apart: the summary counts written tiles, and a walk queries
/// many empty ones.
fn tiles_text(
    zoom: u8,
    done: u64,
    written: u64,
    total: Option<u64>,
    queued: u64,
    elapsed: Duration,
) -> String {
    let rate = rate_text(done as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE));
    match total {
        Some(total) => {
            let eta = eta(done, total, elapsed)
                .map(|left| format!(", ETA {}", duration_text(left)))
                .unwrap_or_default();
            format!(
                "z{zoom:>2} {}/{} tiles queried, {} written, {rate} tiles/s{eta}",
                HumanCount(done),
                HumanCount(total),
                HumanCount(written)
            )
        }
        None => format!(
            "z{zoom:>2} {} tiles queried, {} written, {} queued, {rate} tiles/s, {} so far",
            HumanCount(done),
            HumanCount(written),
            HumanCount(queued),
            duration_text(elapsed)
        ),
    }
}

/// What the line adds while a store refuses writes as too fast: the rate it takes them at.
fn throttled_text() -> String {
    match crate::store::pace::pacing() {
        Some(rate) => format!(", store throttled: writing {} a second", rate_text(rate)),
        None => String::new(),
    }
}

/// Live progress of one tileset.
pub struct Progress {
    kind: ProgressKind,
    bar: Option<ProgressBar>,
    tileset: String,
    started: Instant,
    last_log: Instant,
    last_draw: Option<Instant>,
    done: u64,
    written: u64,
    found: u64,
    /// The tiles a list holds, known before the first is rendered; `None` for a walk.
    total: Option<u64>,
    zoom: u8,
}

impl Progress {
    /// Starts showing progress for a tileset.
    pub fn start(kind: ProgressKind, tileset: &str) -> Self {
        let bar = (kind == ProgressKind::Bar).then(|| line(SPINNER, tileset));
        Self {
            kind,
            bar,
            tileset: tileset.to_string(),
            started: Instant::now(),
            last_log: Instant::now(),
            last_draw: None,
            done: 0,
            written: 0,
            found: 0,
            total: None,
            zoom: 0,
        }
    }

    /// The run renders a list of `tiles`, known in full before it starts: the line becomes a bar
    /// with an ETA.
    pub fn planned(&mut self, tiles: usize) {
        self.found += tiles as u64;
        self.total = Some(self.found);
        if let Some(bar) = &self.bar {
            if self.found > 0 {
                style(bar, BAR);
                bar.set_length(self.found);
                bar.set_position(self.done);
            }
        }
        self.draw(true);
    }

    /// `tiles` more tiles are queued by a walk, which finds its work as it goes: the line shows
    /// counts without a total.
    pub fn discovered(&mut self, tiles: usize) {
        self.found += tiles as u64;
        if self.total.take().is_some() {
            if let Some(bar) = &self.bar {
                style(bar, SPINNER);
            }
        }
    }

    /// One tile is done.
    pub fn tile_done(&mut self, zoom: u8, tally: &Tally) {
        self.done += 1;
        self.written = tally.written();
        self.zoom = zoom;
        if self.bar.is_some() {
            self.draw(false);
        } else if self.kind == ProgressKind::Log && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = rate_text(self.done as f64 / self.started.elapsed().as_secs_f64());
            let of = self
                .total
                .map(|total| format!(" of {}", HumanCount(total)))
                .unwrap_or_default();
            tracing::info!(
                "{}: zoom {}, {} tiles queried{of}, {} written, {rate} tiles/s{}",
                self.tileset,
                self.zoom,
                HumanCount(self.done),
                HumanCount(tally.written()),
                throttled_text(),
            );
        }
    }

    /// Redraws the terminal's line, at most every `DRAW_EVERY` unless `now`.
    fn draw(&mut self, now: bool) {
        let Some(bar) = &self.bar else { return };
        if !now
            && self
                .last_draw
                .is_some_and(|last| last.elapsed() < DRAW_EVERY)
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        if self.total.is_some() {
            bar.set_position(self.done);
        } else {
            bar.tick();
        }
        let queued = self.found.saturating_sub(self.done);
        let elapsed = self.started.elapsed();
        let line = tiles_text(
            self.zoom,
            self.done,
            self.written,
            self.total,
            queued,
            elapsed,
        );
        bar.set_message(format!("{line}{}", throttled_text()));
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
    started: Instant,
    last_log: Instant,
}

impl PartitionProgress {
    /// Starts showing progress over `total` partitions of `tileset`.
    pub fn start(kind: ProgressKind, tileset: &str, total: usize) -> Self {
        let bar = (kind == ProgressKind::Bar && total > 0).then(|| {
            let bar = line(BAR, tileset);
            bar.set_length(total as u64);
            bar.set_message(partitions_text(0, total, Duration::ZERO));
            bar
        });
        Self {
            kind,
            bar,
            tileset: tileset.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    /// One more partition finished (or failed).
    pub fn done(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
            bar.set_message(partitions_text(
                self.done,
                self.total,
                self.started.elapsed(),
            ));
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

/// What a partitioned tileset's bar says after it: the partitions done, and an ETA once the
/// average partition so far can be trusted.
fn partitions_text(done: usize, total: usize, elapsed: Duration) -> String {
    let eta = eta(done as u64, total as u64, elapsed)
        .map(|left| format!(", ETA {}", duration_text(left)))
        .unwrap_or_default();
    format!("{done}/{total} partitions{eta}")
}

impl super::TilesetSummary {
    /// Whether a quiet run (`-q`, cron) has anything to say about this tileset: tiles changed or
    /// deleted, something failed or was left for later, or the run was asked to show something
    /// (a dry run, a sample check). A reseed that found nothing to do is not news, so cron, which
    /// mails whatever a job prints, stays silent.
    pub fn is_news(&self) -> bool {
        let stored = self.stored.changed + self.stored.deleted > 0;
        let purges = self.purges.iter().any(|purge| {
            purge.requests > 0
                || purge.failed.is_some()
                || purge.deferred
                || purge.over_budget
                || purge.no_room
        });
        let edge = self
            .edge
            .iter()
            .any(|check| check.requests > 0 || check.unconfirmed > 0);
        stored
            || purges
            || edge
            || self.header.dry_run
            || !self.header.complete
            || self.verified.is_some()
            || !self.failed_tiles.is_empty()
            || !self.over_budget.is_empty()
            || self.outbox.entries > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No rate a progress line prints has two decimals or more (it used to print
    /// `2,475.596273452269/s`).
    #[test]
    fn rates_have_one_decimal_at_most() {
        let cases = [
            (2475.596273452269, "2,476"),
            (57944.4, "57,944"),
            (100.0, "100"),
            (99.96, "100"),
            (99.94, "99.9"),
            (12.345, "12.3"),
            (0.05, "0.1"),
            (0.0, "0.0"),
            (f64::NAN, "-"),
            (f64::INFINITY, "-"),
        ];
        for (rate, text) in cases {
            assert_eq!(rate_text(rate), text, "{rate}");
        }
        for step in 0..100_000u32 {
            let text = rate_text(f64::from(step) * 0.731);
            let decimals = text.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 1, "{text}");
        }
    }

    /// A walk's line has no total and no ETA; a list's has both, the ETA only once the run's
    /// rate means something; nothing at 0/0 reads as a finished run.
    #[test]
    fn a_line_shows_an_eta_only_when_the_total_is_known_and_the_rate_has_settled() {
        let walk = tiles_text(12, 2475, 1900, None, 21, Duration::from_secs(1));
        assert_eq!(
            walk,
            "z12 2,475 tiles queried, 1,900 written, 21 queued, 2,475 tiles/s, 1 s so far"
        );
        let early = tiles_text(3, 10, 4, Some(1000), 0, Duration::from_secs(1));
        assert_eq!(early, "z 3 10/1,000 tiles queried, 4 written, 10.0 tiles/s");
        let settled = tiles_text(3, 250, 200, Some(1000), 0, Duration::from_secs(10));
        assert_eq!(
            settled,
            "z 3 250/1,000 tiles queried, 200 written, 25.0 tiles/s, ETA 30 s"
        );
        let nothing = tiles_text(0, 0, 0, None, 0, Duration::ZERO);
        assert_eq!(
            nothing,
            "z 0 0 tiles queried, 0 written, 0 queued, 0.0 tiles/s, 0 s so far"
        );
        assert_eq!(partitions_text(0, 42, Duration::ZERO), "0/42 partitions");
        assert_eq!(
            partitions_text(21, 42, Duration::from_secs(100)),
            "21/42 partitions, ETA 1 min 40 s"
        );
    }

    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(duration_text(Duration::from_secs(42)), "42 s");
        assert_eq!(duration_text(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(duration_text(Duration::from_secs(7620)), "2 h 07 min");
    }
}
