//! The watermark an output keeps: the database snapshot its tiles reflect, the zooms and area they
//! cover, and a digest of the settings that decided their bytes.

use serde::{Deserialize, Serialize};

/// Told once the snapshot a run's next watermark records is taken, or dropped where the run takes
/// none: work that must see at least every change the watermark will claim (the cluster cells'
/// refresh) may start then, beside the rest of the run's decision.
pub type SnapshotTaken = tokio::sync::oneshot::Sender<()>;

/// Tells `taken`, if any, that the snapshot is taken; a receiver gone (its run failed) waits for
/// nothing.
pub fn tell_taken(taken: Option<SnapshotTaken>) {
    if let Some(taken) = taken {
        let _ = taken.send(());
    }
}

/// What an output records about the data it reflects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// `pg_current_snapshot()` as text, taken before the seed read any row.
    pub snapshot: String,
    /// A digest of the settings that decide what tiles hold (layers, extent, buffer): a reseed
    /// under other settings must redo every tile, not only the changed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// The zooms (`A-B`) and bbox (`W,S,E,N`) whose tiles all reflect `snapshot`; `None` in states
    /// of earlier versions, which meant the tileset's configured zooms and bbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zooms: Option<String>,
    /// See `zooms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<String>,
}

impl Watermark {
    /// The JSON kept in the output.
    pub fn to_state(&self) -> String {
        serde_json::to_string(self).expect("watermarks serialize")
    }

    /// Reads the JSON kept in the output.
    pub fn from_state(state: &str) -> Option<Watermark> {
        serde_json::from_str(state).ok()
    }
}

/// The snapshot that sees only what every one of `snapshots` sees (`pg_snapshot` text,
/// `xmin:xmax:xip,…`): a transaction counts as seen when it is below every `xmax` and in progress
/// in none. A sharded output records it, so a later `seed --dirty` re-renders every change one shard
/// saw and another did not. `None` when a snapshot is not in that form.
pub fn earliest_snapshot<'a>(snapshots: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut xmax: Option<u64> = None;
    let mut in_progress = std::collections::BTreeSet::new();
    for text in snapshots {
        let mut parts = text.trim().splitn(3, ':');
        let min: u64 = parts.next()?.parse().ok()?;
        let max: u64 = parts.next()?.parse().ok()?;
        let xip = parts.next()?;
        if min > max {
            return None;
        }
        for id in xip.split(',').filter(|id| !id.is_empty()) {
            in_progress.insert(id.parse::<u64>().ok()?);
        }
        xmax = Some(xmax.map_or(max, |current: u64| current.min(max)));
    }
    let xmax = xmax?;
    let xip: Vec<String> = in_progress.range(..xmax).map(|id| id.to_string()).collect();
    let xmin = in_progress.range(..xmax).next().copied().unwrap_or(xmax);
    Some(format!("{xmin}:{xmax}:{}", xip.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_combined_snapshot_sees_only_what_every_shard_saw() {
        assert_eq!(earliest_snapshot(["12:20:12,15"]).unwrap(), "12:20:12,15");
        // Shard B started later (sees 12 and 20..25) but 22 was still running for it.
        let combined = earliest_snapshot(["12:20:12,15", "18:25:18,22"]).unwrap();
        assert_eq!(combined, "12:20:12,15,18");
        assert_eq!(earliest_snapshot(["30:30:", "40:41:40"]).unwrap(), "30:30:");
        assert!(earliest_snapshot(["x"]).is_none());
        assert!(earliest_snapshot(["5:4:"]).is_none());
        assert!(earliest_snapshot(std::iter::empty()).is_none());
    }
}
