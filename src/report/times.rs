//! Render times of one zoom's tiles, held in a histogram of fixed size: a seed of hundreds of
//! millions of tiles kept four bytes per tile before (76 MB for Russia's 19 million tiles at
//! z0-14, past its memory target on its own).

use hdrhistogram::Histogram;

/// Three significant digits: a percentile read from it is within 0.1% of the time measured.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Render times in microseconds: their distribution to three significant digits, their sum and
/// their maximum exactly.
#[derive(Debug, Clone)]
pub struct RenderTimes {
    histogram: Histogram<u64>,
    total_micros: u64,
    max_micros: u64,
}

impl Default for RenderTimes {
    fn default() -> Self {
        RenderTimes {
            histogram: Histogram::new(SIGNIFICANT_DIGITS).expect("three digits are supported"),
            total_micros: 0,
            max_micros: 0,
        }
    }
}

impl RenderTimes {
    /// Adds one render's time.
    pub fn record(&mut self, micros: u64) {
        // A histogram that resizes itself takes any value it can count.
        if self.histogram.record(micros).is_err() {
            return;
        }
        self.total_micros = self.total_micros.saturating_add(micros);
        self.max_micros = self.max_micros.max(micros);
    }

    /// Adds another set of times (a partition's, a shard's).
    pub fn add(&mut self, other: &RenderTimes) {
        if self.histogram.add(&other.histogram).is_err() {
            // Both resize themselves, so this cannot happen; the figures stay what they were.
            return;
        }
        self.total_micros = self.total_micros.saturating_add(other.total_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The time at quantile `q` (0 to 1) in milliseconds; 0 when nothing was recorded, the
    /// exact maximum at 1.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        if q >= 1.0 {
            return self.max_micros as f64 / 1000.0;
        }
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The sum of the times in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.total_micros as f64 / 1000.0
    }

    /// Each distinct time (to three significant digits) in seconds, with how many renders took it.
    pub fn counts(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.histogram
            .iter_recorded()
            .map(|v| (v.value_iterated_to() as f64 / 1e6, v.count_at_value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
