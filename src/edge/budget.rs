//! A bill the operator sets: `budget_per_day` and `budget_per_run` per purge target.
//!
//! The daily budget is paced, not spent first come: an allowance fills at the budget's rate
//! (`budget_per_day` / 86,400 s a second) up to an hour's worth (and at least one path), and the
//! day's spend never passes the budget. A purge whose cheapest plan costs more than the allowance
//! buys a coarser plan (wildcards: see [`super::price::plan_within`]); when even the coarsest
//! does not fit, its changes wait in the outbox, where later changes join them, until the
//! allowance has grown. A change is never dropped, only purged later or more coarsely.
//!
//! The ledger lives beside the output's outbox, so cron runs share it as `watch` cycles do. It is
//! not trusted: a ledger that cannot be read counts the day as spent (nothing is sent until the
//! next UTC day, or until the operator removes it), and a time in it later than now is taken as
//! now, each with a warning naming the file; the ledger so repaired is written back at once.

use std::time::{SystemTime, UNIX_EPOCH};

use super::target::PurgeTarget;
use crate::config::cdn::CdnSpend;
use crate::coordination::outbox::Outbox;
use crate::error::Result;

/// What a target spent: today's spend and the paced allowance.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// The UTC day (`days since 1970`) `spent_today` is of.
    pub day: u64,
    /// Spent on that day, in US dollars.
    pub spent_today: f64,
    /// The allowance at `at`.
    pub allowance: f64,
    /// When the allowance was last brought up to date (Unix seconds).
    pub at: f64,
    /// Spent since the ledger began.
    pub spent_total: f64,
    /// The daily budget the allowance was paced for: a new one starts a new allowance.
    #[serde(default)]
    pub per_day: Option<f64>,
}

fn seconds(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The UTC day (days since 1970) of `seconds` since the epoch.
fn day_of(seconds: f64) -> u64 {
    // A float-to-integer `as` saturates (and takes NaN as 0): no time can make it panic.
    (seconds / 86_400.0) as u64
}

/// The most the allowance holds: an hour of the daily budget, and at least one path, so a budget
/// below a path an hour still buys one now and then.
fn burst(spend: &CdnSpend, per_day: f64) -> f64 {
    (per_day / 24.0).max(spend.price_per_path)
}

impl Ledger {
    /// A ledger for a target that has spent nothing: its allowance full.
    pub fn new(spend: &CdnSpend, now: SystemTime) -> Ledger {
        let at = seconds(now);
        Ledger {
            day: day_of(at),
            spent_today: 0.0,
            allowance: spend.budget_per_day.map_or(0.0, |d| burst(spend, d)),
            at,
            spent_total: 0.0,
            per_day: spend.budget_per_day,
        }
    }

    /// Brings the day and the allowance up to `now`.
    fn refresh(&mut self, spend: &CdnSpend, now: SystemTime) {
        let now = seconds(now);
        let day = day_of(now);
        if day != self.day {
            self.day = day;
            self.spent_today = 0.0;
        }
        if self.per_day != spend.budget_per_day {
            // The operator set another bill: its pacing starts now, with what today's spend leaves.
            self.per_day = spend.budget_per_day;
            self.allowance = spend.budget_per_day.map_or(0.0, |d| burst(spend, d));
            self.at = now;
        }
        if let Some(per_day) = spend.budget_per_day {
            let elapsed = (now - self.at).max(0.0);
            self.allowance =
                (self.allowance + elapsed * per_day / 86_400.0).min(burst(spend, per_day));
        }
        self.at = now.max(self.at);
    }

    /// What a purge may spend now: `None` without a budget.
    pub fn allowance(&mut self, spend: &CdnSpend, now: SystemTime) -> Option<f64> {
        self.refresh(spend, now);
        let daily = spend
            .budget_per_day
            .map(|per_day| self.allowance.min(per_day - self.spent_today).max(0.0));
        match (daily, spend.budget_per_run) {
            (Some(day), Some(run)) => Some(day.min(run)),
            (day, run) => day.or(run),
        }
    }

    /// The ledger of a target whose ledger cannot be read: the day counts as spent, so nothing is
    /// sent before the next UTC day (a spent day is never spent again).
    pub fn spent_day(spend: &CdnSpend, now: SystemTime) -> Ledger {
        let spent = spend.budget_per_day.unwrap_or(0.0);
        Ledger {
            spent_today: spent,
            allowance: 0.0,
            spent_total: spent,
            ..Ledger::new(spend, now)
        }
    }

    /// The ledger as read with what no run writes taken out, or `None` when nothing had to be:
    /// a day or a time later than `now` (a clock set back, an edited or damaged note) is taken as
    /// now, keeping the day's spend, rather than give the day's budget again or freeze the
    /// allowance for the skew; a negative spend is taken as none, an allowance past its burst as
    /// the burst. The reason is said for the warning.
    pub fn repaired(&self, spend: &CdnSpend, now: SystemTime) -> Option<(Ledger, String)> {
        let now = seconds(now);
        let mut ledger = self.clone();
        let mut why = Vec::new();
        if ledger.day > day_of(now) {
            why.push(format!("its day {} is after today", ledger.day));
            ledger.day = day_of(now);
        }
        if ledger.at.is_nan() || ledger.at > now {
            why.push(format!("its time {} s is after now", ledger.at));
            ledger.at = now;
        }
        for value in [&mut ledger.spent_today, &mut ledger.spent_total] {
            if value.is_nan() || *value < 0.0 {
                why.push("a spend is negative".to_string());
                *value = 0.0;
            }
        }
        let most = spend.budget_per_day.map_or(0.0, |d| burst(spend, d));
        if !(0.0..=most).contains(&ledger.allowance) {
            why.push("its allowance is out of range".to_string());
            ledger.allowance = ledger.allowance.clamp(0.0, most);
            if ledger.allowance.is_nan() {
                ledger.allowance = 0.0;
            }
        }
        (!why.is_empty()).then(|| (ledger, why.join(", ")))
    }

    /// Records a purge's price.
    pub fn spent(&mut self, spend: &CdnSpend, usd: f64, now: SystemTime) {
        self.refresh(spend, now);
        self.spent_today += usd;
        self.spent_total += usd;
        if spend.budget_per_day.is_some() {
            self.allowance = (self.allowance - usd).max(0.0);
        }
    }
}

/// How often a daily budget lets a target purge one path: the freshness it buys when changes
/// come faster (they then wait about this long, coalesced into one coarse purge).
pub fn path_interval_seconds(spend: &CdnSpend) -> Option<f64> {
    match spend.budget_per_day {
        Some(per_day) if per_day > 0.0 && spend.price_per_path > 0.0 => {
            Some(86_400.0 * spend.price_per_path / per_day)
        }
        Some(_) if spend.price_per_path > 0.0 => Some(f64::INFINITY),
        _ => None,
    }
}

/// A budgeted target's spend and what its budget buys, for the summary and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BudgetState {
    /// `budget_per_day`.
    pub per_day_usd: Option<f64>,
    /// `budget_per_run`.
    pub per_run_usd: Option<f64>,
    /// Spent today (UTC).
    pub spent_today_usd: f64,
    /// One path every this many seconds is what the daily budget buys: changes that come faster
    /// wait about this long and are purged together, more coarsely.
    pub path_interval_seconds: Option<f64>,
}

/// A target's budget during a purge: its ledger, kept as a note of `outbox` (a partitioned
/// tileset's own outbox for all its partitions, so the bill is the target's, not each
/// partition's).
pub struct Budget<'a> {
    spend: CdnSpend,
    ledger: Option<Ledger>,
    outbox: &'a Outbox,
    note: String,
}

impl<'a> Budget<'a> {
    /// Reads `target`'s ledger from `outbox`; a target without a budget or a price has none.
    pub async fn open(target: &PurgeTarget, outbox: &'a Outbox) -> Result<Budget<'a>> {
        let spend = *target.spend();
        let note = format!("spend.{}", target.consumer());
        let budgeted = spend.budget_per_day.is_some() || spend.budget_per_run.is_some();
        let mut budget = Budget {
            spend,
            ledger: None,
            outbox,
            note,
        };
        if budgeted && target.is_priced() {
            budget.ledger = Some(budget.read(target.name()).await?);
        }
        Ok(budget)
    }

    /// The ledger as the outbox holds it, repaired (and written back) where it cannot be trusted:
    /// see the module's notes.
    async fn read(&self, target: &str) -> Result<Ledger> {
        let now = SystemTime::now();
        let place = self.outbox.note_location(&self.note);
        let (ledger, why) = match self.outbox.read_note(&self.note).await {
            Ok(None) => return Ok(Ledger::new(&self.spend, now)),
            Ok(Some(bytes)) => match serde_json::from_slice::<Ledger>(&bytes) {
                Ok(read) => match read.repaired(&self.spend, now) {
                    None => return Ok(read),
                    Some((repaired, why)) => {
                        tracing::warn!(
                            "cdn `{target}`: the spend ledger {place} cannot be true ({why}): \
                             taken as now, keeping the day's spend"
                        );
                        (repaired, None)
                    }
                },
                Err(e) => (Ledger::spent_day(&self.spend, now), Some(e.to_string())),
            },
            // Not written back: what could not be read may not be written either (a store that
            // failed, a device planted at its name), and the next run looks again.
            Err(e) => {
                warn_unreadable(target, &place, &e.to_string());
                return Ok(Ledger::spent_day(&self.spend, now));
            }
        };
        if let Some(why) = &why {
            warn_unreadable(target, &place, why);
        }
        let bytes = serde_json::to_vec(&ledger).unwrap_or_default();
        if let Err(e) = self.outbox.write_note(&self.note, &bytes).await {
            tracing::warn!("cdn `{target}`: the repaired spend ledger is not written back: {e}");
        }
        Ok(ledger)
    }

    /// What a purge may spend now: `None` without a budget.
    pub fn allowance(&mut self) -> Option<f64> {
        let spend = self.spend;
        self.ledger
            .as_mut()
            .and_then(|ledger| ledger.allowance(&spend, SystemTime::now()))
    }

    /// Records what a purge cost, durably.
    pub async fn spent(&mut self, usd: f64) -> Result<()> {
        let spend = self.spend;
        if let Some(ledger) = self.ledger.as_mut() {
            ledger.spent(&spend, usd, SystemTime::now());
            let bytes = serde_json::to_vec(ledger).unwrap_or_default();
            self.outbox.write_note(&self.note, &bytes).await?;
        }
        Ok(())
    }

    /// The spend and what the budget buys, when there is a budget.
    pub fn state(&self) -> Option<BudgetState> {
        self.ledger.as_ref().map(|ledger| BudgetState {
            per_day_usd: self.spend.budget_per_day,
            per_run_usd: self.spend.budget_per_run,
            spent_today_usd: ledger.spent_today,
            path_interval_seconds: path_interval_seconds(&self.spend),
        })
    }
}

/// Says that `target`'s ledger at `place` cannot be read, that the day counts as spent and how
/// to start it again.
fn warn_unreadable(target: &str, place: &str, why: &str) {
    tracing::warn!(
        "cdn `{target}`: the spend ledger {place} cannot be read ({why}): today counts as \
         spent, so nothing is purged before the next UTC day (the changes wait in the outbox); \
         to reset the ledger, remove that file: today's spend then starts again from $0"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spend(per_day: Option<f64>, per_run: Option<f64>) -> CdnSpend {
        CdnSpend {
            price_per_path: 0.005,
            refetch_price: 0.000_001,
            budget_per_day: per_day,
            budget_per_run: per_run,
        }
    }

    #[test]
    fn a_daily_budget_is_paced_and_never_passed_in_a_day() {
        let spend = spend(Some(10.0), None);
        let start = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        let mut ledger = Ledger::new(&spend, start);
        // An hour's worth at first.
        let first = ledger.allowance(&spend, start).unwrap();
        assert!((first - 10.0 / 24.0).abs() < 1e-9, "{first}");
        ledger.spent(&spend, first, start);
        assert_eq!(ledger.allowance(&spend, start), Some(0.0));
        // 43.2 s buy one path.
        let later = start + Duration::from_secs_f64(43.2);
        let next = ledger.allowance(&spend, later).unwrap();
        assert!((next - 0.005).abs() < 1e-9, "{next}");
        // Spending all day at the allowed rate never passes the budget (2,800 × 30 s stays in
        // the day).
        let mut now = later;
        let mut spent = 0.0;
        for _ in 0..2_800 {
            let allowed = ledger.allowance(&spend, now).unwrap();
            ledger.spent(&spend, allowed, now);
            spent += allowed;
            now += Duration::from_secs(30);
        }
        assert!(spent + first <= 10.0 + 1e-9, "{}", spent + first);
        assert_eq!(path_interval_seconds(&spend), Some(43.2));
    }

    #[test]
    fn a_new_day_starts_a_new_spend_and_a_run_budget_caps_each_purge() {
        let spend = spend(Some(1.0), Some(0.01));
        let start = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 86_000);
        let mut ledger = Ledger::new(&spend, start);
        assert_eq!(ledger.allowance(&spend, start), Some(0.01));
        ledger.spent(&spend, 0.01, start);
        assert!((ledger.spent_today - 0.01).abs() < 1e-12);
        let tomorrow = start + Duration::from_secs(1_000);
        ledger.allowance(&spend, tomorrow);
        assert_eq!(ledger.spent_today, 0.0);
        assert!((ledger.spent_total - 0.01).abs() < 1e-12);
        let unlimited = super::tests::spend(None, None);
        assert_eq!(
            Ledger::new(&unlimited, start).allowance(&unlimited, start),
            None
        );
    }

    #[test]
    fn an_unreadable_ledger_counts_the_day_as_spent_until_the_next_one() {
        let spend = spend(Some(1.0), None);
        let start = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3_600);
        let mut ledger = Ledger::spent_day(&spend, start);
        assert_eq!(ledger.allowance(&spend, start), Some(0.0));
        let evening = start + Duration::from_secs(20 * 3_600);
        assert_eq!(ledger.allowance(&spend, evening), Some(0.0));
        let tomorrow = start + Duration::from_secs(23 * 3_600);
        assert!(ledger.allowance(&spend, tomorrow).unwrap() > 0.0);
    }

    #[test]
    fn a_day_or_a_time_in_the_future_is_taken_as_now() {
        // $86.40 a day: a tenth of a cent a second.
        let spend = spend(Some(86.4), None);
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3_600);
        // No allowance left, at a time ten days ahead: read as it is, the allowance would stay
        // empty for ten days.
        let ahead = Ledger {
            at: seconds(now) + 10.0 * 86_400.0,
            allowance: 0.0,
            ..Ledger::new(&spend, now)
        };
        let why = ahead.repaired(&spend, now).map(|(_, why)| why);
        assert!(
            why.as_ref().is_some_and(|w| w.contains("after now")),
            "{why:?}"
        );
        let fixed = |read: Ledger| read.repaired(&spend, now).map_or(read.clone(), |(l, _)| l);
        let mut repaired = fixed(ahead);
        let later = now + Duration::from_secs(10);
        let allowed = repaired.allowance(&spend, later).unwrap();
        assert!((allowed - 0.01).abs() < 1e-9, "{allowed}");
        // Today's budget spent, under a day in the future: still spent today.
        let spent = Ledger {
            day: day_of(seconds(now)) + 1_000,
            spent_today: 86.4,
            ..Ledger::new(&spend, now)
        };
        let mut repaired = fixed(spent);
        assert_eq!(repaired.allowance(&spend, later), Some(0.0));
        // A ledger that runs as it should is left alone.
        assert!(Ledger::new(&spend, now).repaired(&spend, now).is_none());
    }

    #[test]
    fn no_value_in_a_ledger_makes_its_arithmetic_panic() {
        let spend = spend(Some(1.0), Some(0.5));
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        for (day, at, allowance, spent) in [
            (u64::MAX, f64::MAX, f64::MAX, f64::MAX),
            (u64::MAX, f64::MIN, f64::MIN, f64::MIN),
            (0, 0.0, f64::MAX, -1.0),
            (i64::MAX as u64, i64::MAX as f64, 1e300, 1e300),
        ] {
            let read = Ledger {
                day,
                at,
                allowance,
                spent_today: spent,
                spent_total: spent,
                per_day: Some(1.0),
            };
            let mut ledger = read.repaired(&spend, now).map_or(read, |(l, _)| l);
            let allowed = ledger.allowance(&spend, now).unwrap();
            assert!((0.0..=0.5).contains(&allowed), "{allowed}");
            ledger.spent(&spend, 0.005, now);
            assert!(ledger.allowance(&spend, now).unwrap().is_finite());
        }
    }
}
