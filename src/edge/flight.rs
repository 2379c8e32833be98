//! A CloudFront target's invalidations in flight, followed until CloudFront calls them
//! `Completed`, so `/metrics` can say how long a change took from its commit to the edge.
//!
//! The record is a note of the output's outbox (`flights.CONSUMER`), so cron runs follow what
//! earlier runs sent as `watch` cycles do. It holds the commit times of the changes whose paths
//! wait in the outbox for the target, and per purge that CloudFront accepted, its invalidations
//! and the commit times it carried over from the waiting list. A run that finds a purge's
//! invalidations completed observes, per change, the time from its commit to then: the
//! completion is seen when a run looks, so the figure is late by at most the time between runs
//! (`watch` looks every few seconds while invalidations are in flight).
//!
//! The record is not trusted to say nothing is in flight: one that cannot be read (truncated,
//! damaged, refused) is taken as "something is in flight" (so the changes feed waits) until
//! CloudFront's `ListInvalidations` says what is: the invalidations then in progress are followed
//! as one purge, and their completion ends it.
//!
//! How many paths are in flight is not taken from this record but from CloudFront
//! ([`super::cdn::cloudfront::CloudFront::survey`]), which also counts invalidations other tools made.
//!
//! Coalescing: the outbox's pending paths are deduplicated before each purge, so a path changed
//! many times while it waits is sent once. A path already in an invalidation in flight is sent
//! again when it changes again: that invalidation may have fetched the tile before the change
//! was stored, and only a later one is sure to evict it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::cdn::cloudfront::Survey;
use super::target::PurgeTarget;
use crate::coordination::outbox::Outbox;
use crate::error::Result;

/// Commit times kept per list: past it the newest are dropped, which only thins the latency
/// samples, never a change (the paths stay in the outbox regardless).
const MAX_TIMES: usize = 10_000;

/// The note's content.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Record {
    /// Commit times (Unix seconds) of the changes whose paths wait for the target.
    waiting: Vec<f64>,
    /// Purges CloudFront accepted whose invalidations are not all completed.
    in_flight: Vec<Flight>,
    /// The record could not be read: what is in flight is unknown until the next survey.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unknown: bool,
}

/// One accepted purge.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Flight {
    /// Its invalidations' ids.
    ids: Vec<String>,
    /// File paths and wildcard paths it holds.
    files: usize,
    wildcards: usize,
    /// The commit times of the changes it covers.
    committed: Vec<f64>,
    /// Taken from a survey after the record was lost: whatever CloudFront had in progress, whose
    /// paths a survey counts by asking CloudFront (they are not known here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    adopted: bool,
}

/// A target's invalidations during a delivery. Targets other than CloudFront follow nothing.
pub struct Flights<'a> {
    place: Option<(&'a Outbox, String)>,
    record: Record,
    dirty: bool,
    /// What the distribution had in progress when last surveyed in this delivery.
    pub(super) survey: Option<Survey>,
    /// Seconds from commit to the invalidation seen completed, per change, in this delivery.
    completed_seconds: Vec<f64>,
    completed: u64,
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn keep(times: &mut Vec<f64>, more: &[f64]) {
    let room = MAX_TIMES.saturating_sub(times.len());
    times.extend(more.iter().take(room));
}

impl<'a> Flights<'a> {
    /// Reads `target`'s record from `outbox`; one that cannot be read means something is in
    /// flight until a survey says what (with a warning naming it).
    pub async fn open(target: &PurgeTarget, outbox: &'a Outbox) -> Result<Flights<'a>> {
        if !target.tracks_invalidations() {
            return Ok(Flights::untracked());
        }
        let note = format!("flights.{}", target.consumer());
        let read = match outbox.read_note(&note).await {
            Ok(None) => Ok(Record::default()),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (record, dirty) = match read {
            Ok(record) => (record, false),
            Err(why) => {
                tracing::warn!(
                    "cdn `{}`: the record of its invalidations in flight, {}, cannot be read \
                     ({why}): they count as in flight (the changes feed waits) until CloudFront \
                     lists them",
                    target.name(),
                    outbox.note_location(&note)
                );
                let unknown = Record {
                    unknown: true,
                    ..Record::default()
                };
                (unknown, true)
            }
        };
        Ok(Flights {
            place: Some((outbox, note)),
            record,
            dirty,
            ..Flights::untracked()
        })
    }

    /// A record of nothing, for a target without invalidations.
    pub fn untracked() -> Flights<'static> {
        Flights {
            place: None,
            record: Record::default(),
            dirty: false,
            survey: None,
            completed_seconds: Vec::new(),
            completed: 0,
        }
    }

    /// Adds the commit times of changes whose paths now wait for the target.
    pub fn waiting(&mut self, committed: &[f64]) {
        if self.place.is_some() && !committed.is_empty() {
            keep(&mut self.record.waiting, committed);
            self.dirty = true;
        }
    }

    /// Nothing waits for the target: the changes recorded as waiting needed no purge (or went
    /// where this record does not follow them).
    pub fn nothing_waits(&mut self) {
        if !self.record.waiting.is_empty() {
            self.record.waiting.clear();
            self.dirty = true;
        }
    }

    /// The file paths and wildcards of the invalidations this record follows, by id.
    pub(super) fn known(&self) -> BTreeMap<String, (usize, usize)> {
        let mut known = BTreeMap::new();
        for flight in self.record.in_flight.iter().filter(|f| !f.adopted) {
            // A purge of several invalidations is counted on its first, so surveys add it once.
            for (index, id) in flight.ids.iter().enumerate() {
                let counts = if index == 0 {
                    (flight.files, flight.wildcards)
                } else {
                    (0, 0)
                };
                known.insert(id.clone(), counts);
            }
        }
        known
    }

    /// Takes what CloudFront has in progress: purges whose invalidations all completed leave the
    /// record, and their changes' commit-to-completed times are observed.
    pub(super) fn observe(&mut self, survey: Survey) {
        let now = now_seconds();
        let before = self.record.in_flight.len();
        let mut still = Vec::with_capacity(before);
        for flight in std::mem::take(&mut self.record.in_flight) {
            if flight.ids.iter().all(|id| survey.completed(id)) {
                self.completed += flight.ids.len() as u64;
                self.completed_seconds
                    .extend(flight.committed.iter().map(|c| (now - c).max(0.0)));
            } else {
                still.push(flight);
            }
        }
        self.dirty |= still.len() != before;
        if std::mem::take(&mut self.record.unknown) {
            // The record was lost: whatever is in progress may be this tool's.
            let ids: Vec<String> = survey
                .in_progress
                .iter()
                .filter(|id| !still.iter().any(|f| f.ids.contains(id)))
                .cloned()
                .collect();
            if !ids.is_empty() {
                still.push(Flight {
                    ids,
                    files: 0,
                    wildcards: 0,
                    committed: Vec::new(),
                    adopted: true,
                });
            }
            self.dirty = true;
        }
        self.record.in_flight = still;
        self.survey = Some(survey);
    }

    /// CloudFront accepted a purge of `files` file paths and `wildcards` wildcards as the
    /// invalidations `ids`: the changes that waited are now in flight with it.
    pub(super) fn launched(&mut self, ids: Vec<String>, files: usize, wildcards: usize) {
        if let Some(survey) = &mut self.survey {
            // A later purge of the same delivery counts this one as in flight.
            survey.files += files;
            survey.wildcards += wildcards;
            survey.in_progress.extend(ids.iter().cloned());
        }
        if self.place.is_none() {
            return;
        }
        let committed = std::mem::take(&mut self.record.waiting);
        self.record.in_flight.push(Flight {
            ids,
            files,
            wildcards,
            committed,
            adopted: false,
        });
        self.dirty = true;
    }

    /// The target's purges still in flight, as far as this record follows them; at least one
    /// while the record is lost and no survey has said what is in flight.
    pub fn in_flight(&self) -> u64 {
        self.record.in_flight.len() as u64 + u64::from(self.record.unknown)
    }

    /// Invalidations seen completed in this delivery.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Seconds from commit to completed, per change whose invalidation was seen completed in
    /// this delivery.
    pub fn completed_seconds(&self) -> &[f64] {
        &self.completed_seconds
    }

    /// Writes the record back when it changed, durably.
    pub async fn save(&mut self) -> Result<()> {
        if let (true, Some((outbox, note))) = (self.dirty, &self.place) {
            let bytes = serde_json::to_vec(&self.record).unwrap_or_default();
            outbox.write_note(note, &bytes).await?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(in_progress: &[&str]) -> Survey {
        Survey {
            in_progress: in_progress.iter().map(|s| s.to_string()).collect(),
            ..Survey::default()
        }
    }

    #[test]
    fn a_purge_leaves_the_record_when_all_its_invalidations_completed() {
        let mut flights = Flights::untracked();
        // Followed as a tracked record would be, without an outbox to save to.
        flights.record.waiting = vec![100.0, 101.0];
        flights.record.in_flight.push(Flight {
            ids: vec!["A".into(), "B".into()],
            files: 10,
            wildcards: 1,
            committed: vec![90.0],
            adopted: false,
        });
        assert_eq!(flights.known().get("A"), Some(&(10, 1)));
        assert_eq!(flights.known().get("B"), Some(&(0, 0)));
        flights.observe(survey(&["B"]));
        assert_eq!(flights.in_flight(), 1);
        assert!(flights.completed_seconds().is_empty());
        flights.observe(survey(&[]));
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(flights.completed(), 2);
        assert_eq!(flights.completed_seconds().len(), 1);
        assert!(flights.completed_seconds()[0] > 0.0);
    }

    #[test]
    fn a_lost_record_counts_as_in_flight_until_a_survey_says_what_is() {
        let lost = || {
            let mut flights = Flights::untracked();
            flights.record.unknown = true;
            flights
        };
        let mut flights = lost();
        assert_eq!(flights.in_flight(), 1);
        // CloudFront has two invalidations in progress: both may be this tool's, and their
        // paths are counted by asking CloudFront.
        flights.observe(survey(&["A", "B"]));
        assert_eq!(flights.in_flight(), 1);
        assert!(flights.known().is_empty());
        flights.observe(survey(&["B"]));
        assert_eq!(flights.in_flight(), 1);
        flights.observe(survey(&[]));
        assert_eq!(flights.in_flight(), 0);
        // Nothing in progress: nothing is in flight.
        let mut flights = lost();
        flights.observe(survey(&[]));
        assert_eq!(flights.in_flight(), 0);
        // A lost record is written back as lost, and read so.
        let text = serde_json::to_string(&lost().record).unwrap();
        let read: Record = serde_json::from_str(&text).unwrap();
        assert!(read.unknown, "{text}");
    }
}
