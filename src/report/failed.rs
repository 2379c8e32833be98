//! The summary's lines on tiles that failed after retries.

use super::TilesetSummary;

impl TilesetSummary {
    /// The tiles that failed after retries and, once each, what made them fail.
    pub(super) fn failed_text(&self) -> String {
        let mut out = String::new();
        if self.failed_tiles.is_empty() {
            return out;
        }
        let listed: Vec<&str> = self
            .failed_tiles
            .iter()
            .take(20)
            .map(|t| t.tile.as_str())
            .collect();
        out.push_str(&format!(
            "FAILED: {} tile(s) after retries: {}\n",
            self.failed_tiles.len(),
            listed.join(", ")
        ));
        // Tiles that one bad row fails share its message (layer, table, row ids): each
        // cause once, so the summary says what to fix.
        let mut causes: Vec<&str> = Vec::new();
        for failed in &self.failed_tiles {
            let cause = failed.error.as_str();
            if !causes.contains(&cause) {
                causes.push(cause);
            }
        }
        for cause in causes.iter().take(5) {
            out.push_str(&format!("  because: {cause}\n"));
        }
        if causes.len() > 5 {
            out.push_str(&format!(
                "  and {} other cause(s), in the log and --summary-json\n",
                causes.len() - 5
            ));
        }
        out
    }
}
