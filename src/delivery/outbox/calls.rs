//! The API calls a target's user made lately, kept as a note of the output's outbox
//! (`api-calls.cdn-NAME.note.json`): a cron run is a process of its own, whose windows of calls
//! start empty, and learns from the note the calls the runs before it made within the API's
//! window (Cloudflare: five minutes), so that run after run keeps to the target's share.

use super::{read_json, write_json, RunOutbox};
use crate::edge::PurgeTarget;
use crate::error::Result;

/// The note's contents.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Noted {
    /// When each call went, in milliseconds since the Unix epoch.
    calls_ms: Vec<u64>,
}

fn note_name(target: &PurgeTarget) -> String {
    format!("api-calls.{}", target.consumer())
}

impl RunOutbox {
    /// Counts the calls each target's note records against its user's window. A note that
    /// cannot be read counts as none, with a warning naming it; a 429 still holds the run back.
    pub(super) async fn learn_api_calls(&self) -> Result<()> {
        for target in &self.targets {
            if target.recent_api_calls().is_none() {
                continue;
            }
            if let Some(noted) = read_json::<Noted>(&self.outbox, &note_name(target)).await? {
                target.learn_api_calls(&noted.calls_ms);
            }
        }
        Ok(())
    }

    /// Writes each target's calls within its API's window to its note, for the next run; none
    /// leaves the note as it is (the calls it holds are past the window by the next run's reading,
    /// or still count).
    pub(super) async fn note_api_calls(&self) -> Result<()> {
        for target in &self.targets {
            if let Some(calls_ms) = target.recent_api_calls().filter(|c| !c.is_empty()) {
                write_json(&self.outbox, &note_name(target), &Noted { calls_ms }).await?;
            }
        }
        Ok(())
    }
}
