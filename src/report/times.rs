//! Render times of one zoom's tiles, held in a histogram of fixed size: a seed of hundreds of
//! millions of tiles kept four bytes per tile before (76 MB for Russia's 19 million tiles at
//! z0-14, past its memory target on its own).

use hdrhistogram::Histogram;

/// Three significant digits: a percentile read from it is within 0.1% of the time measured.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Render times in microseconds: their distribution to three significant digits, their sum and
/// their maximum exactly.
#[derive(Debug, Clone, Default)]
pub struct RenderTimes {
    /// The distribution while times are recorded or added; made at the first.
    histogram: Option<Histogram<u64>>,
    /// A settled distribution ([`RenderTimes::settled`]): each distinct value with its count.
    sparse: Vec<(u64, u64)>,
    total_micros: u64,
    max_micros: u64,
}

impl RenderTimes {
    fn live(&mut self) -> &mut Histogram<u64> {
        let sparse = std::mem::take(&mut self.sparse);
        let histogram = self.histogram.get_or_insert_with(|| {
            Histogram::new(SIGNIFICANT_DIGITS).expect("three digits are supported")
        });
        for (value, count) in sparse {
            // A histogram that resizes itself takes any value it can count.
            let _ = histogram.record_n(value, count);
        }
        histogram
    }

    /// Adds one render's time.
    pub fn record(&mut self, micros: u64) {
        if self.live().record(micros).is_err() {
            return;
        }
        self.total_micros = self.total_micros.saturating_add(micros);
        self.max_micros = self.max_micros.max(micros);
    }

    /// Adds another set of times (a partition's, a shard's).
    pub fn add(&mut self, other: &RenderTimes) {
        let live = self.live();
        for (value, count) in other.values() {
            let _ = live.record_n(value, count);
        }
        self.total_micros = self.total_micros.saturating_add(other.total_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The same times held as their distinct values: a histogram's counts take 16 KB and more
    /// however few times it holds, and a partitioned tileset keeps every partition's summary, one
    /// set per zoom, until its run ends (2,000 partitions at z0-14 held 500 MB).
    pub fn settled(self) -> RenderTimes {
        let sparse = self.values().collect();
        RenderTimes {
            histogram: None,
            sparse,
            total_micros: self.total_micros,
            max_micros: self.max_micros,
        }
    }

    /// Each distinct value (its bucket's highest, to three significant digits) and its count.
    fn values(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match &self.histogram {
            Some(histogram) => Box::new(
                histogram
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value())),
            ),
            None => Box::new(self.sparse.iter().copied()),
        }
    }

    /// The time at quantile `q` (0 to 1) in milliseconds; 0 when nothing was recorded, the
    /// exact maximum at 1.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let settled;
        let histogram = match &self.histogram {
            Some(histogram) => histogram,
            None if self.sparse.is_empty() => return 0.0,
            None => {
                settled = self.clone().live().clone();
                &settled
            }
        };
        if histogram.is_empty() {
            return 0.0;
        }
        if q >= 1.0 {
            return self.max_micros as f64 / 1000.0;
        }
        histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The sum of the times in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.total_micros as f64 / 1000.0
    }

    /// Each distinct time (to three significant digits) in seconds, with how many renders took it.
    pub fn counts(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.values()
            .map(|(value, count)| (value as f64 / 1e6, count))
    }
}

/// `seconds` as a summary prints them, to `decimals` places, never `-0.0`: a sum of no floats
/// is -0.0 (a partitioned tileset without partitions), and no time a run took is negative.
pub fn seconds_text(seconds: f64, decimals: usize) -> String {
    let shown = if seconds > 0.0 { seconds } else { 0.0 };
    format!("{shown:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_time_prints_as_minus_zero() {
        let no_parts: f64 = Vec::<f64>::new().into_iter().sum();
        assert_eq!(
            format!("{no_parts:.1}"),
            "-0.0",
            "what a bare format prints"
        );
        for (seconds, text) in [
            (no_parts, "0.0"),
            (-0.0, "0.0"),
            (-1e-9, "0.0"),
            (f64::NAN, "0.0"),
        ] {
            assert_eq!(seconds_text(seconds, 1), text, "{seconds}");
        }
        assert_eq!(seconds_text(2.345, 2), "2.35");
    }

    #[test]
    fn quantiles_are_within_a_thousandth_and_the_sum_and_maximum_exact() {
        let mut times = RenderTimes::default();
        assert_eq!(times.quantile_ms(0.5), 0.0);
        for micros in 1..=10_000u64 {
            times.record(micros * 7);
        }
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(
            near(times.quantile_ms(0.5), 35.0),
            "{}",
            times.quantile_ms(0.5)
        );
        assert!(
            near(times.quantile_ms(0.95), 66.5),
            "{}",
            times.quantile_ms(0.95)
        );
        assert_eq!(times.quantile_ms(1.0), 70.0);
        assert_eq!(times.total_ms(), 7.0 * 10_000.0 * 10_001.0 / 2.0 / 1000.0);
        let mut other = RenderTimes::default();
        other.record(1_000_000);
        times.add(&other);
        assert_eq!(times.quantile_ms(1.0), 1000.0);
        assert_eq!(times.counts().map(|(_, n)| n).sum::<u64>(), 10_001);
        // Settled, the same figures, and added to others as they were.
        let settled = times.clone().settled();
        for q in [0.5, 0.95, 1.0] {
            assert_eq!(settled.quantile_ms(q), times.quantile_ms(q));
        }
        assert_eq!(settled.total_ms(), times.total_ms());
        let mut merged = RenderTimes::default();
        merged.add(&settled);
        merged.add(&other.settled());
        assert_eq!(merged.quantile_ms(0.5), times.quantile_ms(0.5));
        assert_eq!(merged.counts().map(|(_, n)| n).sum::<u64>(), 10_002);
    }
}
