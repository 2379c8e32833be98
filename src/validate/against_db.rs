//! `validate --against-db`: tiles rendered again from the database and compared with the stored
//! ones. The render is a seed into a throwaway MBTiles file in a private temporary folder, so the
//! bytes come from the very pipeline that wrote the output, with the zooms, bbox and settings the
//! output's watermark recorded. It is no consumer of the change log, and clustered layers
//! aggregate rows rather than reading the maintained cells, which drift would have left as stale
//! as the output.
//!
//! A tile that differs but that changes committed since the output's watermark touched is
//! *pending* (the next `seed --dirty` or `watch` cycle renders it), not wrong.

use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::path::Path;

use futures::StreamExt;
use serde::Serialize;

use super::{Problem, Problems};
use crate::config::{Config, OutputTarget};
use crate::error::{Error, Result};
use crate::job::{RunSettings, SeedJob, SeedOptions, Selection};
use crate::plan::Work;
use crate::report::{ProgressKind, TilesetSummary};
use crate::sink::OutputReader;
use crate::state::{reseed, Watermark};
use crate::tile::{BBox, TileCoord, ZoomRange};

/// How much of an output to compare with the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCheck {
    /// This many random stored tiles, and their neighbours the output does not hold.
    Sample(u64),
    /// Every tile of the pyramid.
    All,
}

/// What the comparison found.
#[derive(Debug, Default, Serialize)]
pub struct DbComparison {
    /// Tiles rendered and compared.
    pub compared: u64,
    /// Stored with bytes other than the database renders now.
    pub differ: Vec<String>,
    /// Rendered with features but not stored.
    pub missing: Vec<String>,
    /// Stored, but the database renders nothing there.
    pub unexpected: Vec<String>,
    /// Differing tiles that changes committed since the output's watermark touched: the next
    /// `seed --dirty` renders them.
    pub pending: Vec<String>,
    /// Whether the output recorded the settings the config gives now; when not, every tile may
    /// differ and only a full reseed repairs it.
    pub settings_match: bool,
    /// What repairs the output, as a command.
    pub repair: Option<String>,
    /// Tiles found wrong, for the repair list.
    #[serde(skip)]
    wrong: Vec<TileCoord>,
}

/// The tileset that wrote an output, and how to render its tiles again.
pub(super) struct Prepared {
    /// A seed job of that one tileset into the output, which renders are made from.
    job: SeedJob,
    output: String,
    check: DbCheck,
}

impl Prepared {
    /// Finds the tileset of `config` that writes `target` (`tileset` names it when the output was
    /// given with `--output`).
    pub(super) fn from_config(
        config: &Config,
        target: &OutputTarget,
        output: &str,
        tileset: Option<&str>,
        check: DbCheck,
    ) -> Result<Prepared> {
        let writes = |t: &&crate::config::TilesetConfig| {
            t.output
                .as_deref()
                .and_then(|o| OutputTarget::parse(o).ok())
                .is_some_and(|o| &o == target)
        };
        let found = match tileset {
            Some(name) => config.tilesets.iter().find(|t| t.name == name),
            None => config
                .tilesets
                .iter()
                .find(writes)
                .or_else(|| (config.tilesets.len() == 1).then(|| &config.tilesets[0])),
        };
        let Some(found) = found else {
            return Err(Error::Usage(match tileset {
                Some(name) => format!("--tileset {name}: the config has no such tileset"),
                None => format!(
                    "no tileset of the config writes {output}: name the one that wrote it with \
                     --tileset"
                ),
            }));
        };
        let options = SeedOptions {
            tilesets: vec![found.name.clone()],
            output: Some(output.to_string()),
            ..Default::default()
        };
        let job = SeedJob::resolve_with(config.clone(), options, |_| None)?;
        Ok(Prepared::new(job, output, check))
    }

    /// Renders from `job`, a seed job of the one tileset that wrote `output`.
    pub(super) fn new(job: SeedJob, output: &str, check: DbCheck) -> Prepared {
        Prepared {
            job,
            output: output.to_string(),
            check,
        }
    }

    fn tileset(&self) -> &crate::job::TilesetJob {
        &self.job.tilesets[0]
    }

    /// Whether the tileset is partitioned: its partitions are then rendered in full, once.
    pub(super) fn partitioned(&self) -> bool {
        self.tileset().tileset.partition_by.is_some()
    }

    /// Renders the tiles to compare into a throwaway output in `scratch`, and returns it with the
    /// run's summaries. `list` is the tile list of a sampled comparison.
    async fn render(
        &self,
        scratch: &Path,
        recorded: Option<&Watermark>,
        list: Option<&[TileCoord]>,
    ) -> Result<(OutputTarget, Vec<TilesetSummary>)> {
        let rendered = OutputTarget::Mbtiles(scratch.join("against-db.mbtiles"));
        let mut job = self.job.clone();
        job.selection = match list {
            Some(list) => Selection::List(list.to_vec()),
            None => Selection::Pyramid,
        };
        job.partitions.clear();
        job.run = RunSettings {
            scratch: true,
            ..Default::default()
        };
        for tileset in &mut job.tilesets {
            tileset.output = Some(rendered.clone());
            if let Some(zooms) = recorded
                .and_then(|w| w.zooms.as_deref())
                .and_then(|z| z.parse::<ZoomRange>().ok())
            {
                tileset.zooms = zooms;
            }
            if let Some(bbox) = recorded
                .and_then(|w| w.bbox.as_deref())
                .and_then(|b| b.parse::<BBox>().ok())
            {
                tileset.bbox = bbox;
            }
            // Nothing a verification render writes is anyone's to purge.
            tileset.tileset.cdn.clear();
        }
        let summaries = crate::seed::run(&job, ProgressKind::Quiet).await?;
        Ok((rendered, summaries))
    }

    /// Compares the output at `target` (read by `reader`, whose stored tiles are `stored`) with
    /// the database.
    pub(super) async fn compare(
        &self,
        reader: &OutputReader,
        stored: &BTreeSet<TileCoord>,
    ) -> Result<DbComparison> {
        let scratch = scratch_folder()?;
        let recorded = reader
            .state()
            .await?
            .as_deref()
            .and_then(Watermark::from_state);
        let list = match self.check {
            DbCheck::All => None,
            DbCheck::Sample(n) => Some(sample(stored, n, recorded.as_ref())),
        };
        let (rendered, summaries) = self
            .render(scratch.path(), recorded.as_ref(), list.as_deref())
            .await?;
        let settings = summaries.first().and_then(|s| s.header.settings.clone());
        let mut comparison = self
            .compare_with(&rendered, reader, stored, list, recorded.as_ref(), settings)
            .await?;
        self.set_aside_pending(recorded.as_ref(), &mut comparison)
            .await;
        comparison.repair = self.repair(&comparison, None);
        Ok(comparison)
    }

    /// Renders every partition of a partitioned tileset in full into a throwaway folder, once
    /// for all of its partitions' comparisons, with the zooms and bbox a partition (read by
    /// `reader`) recorded: one run wrote them all.
    pub(super) async fn render_partitions(
        &self,
        reader: &OutputReader,
    ) -> Result<RenderedPartitions> {
        let folder = scratch_folder()?;
        let recorded = reader
            .state()
            .await?
            .as_deref()
            .and_then(Watermark::from_state);
        let (rendered, summaries) = self.render(folder.path(), recorded.as_ref(), None).await?;
        let settings = summaries
            .into_iter()
            .filter_map(|s| Some((s.header.output, s.header.settings?)))
            .collect();
        Ok(RenderedPartitions {
            _folder: folder,
            rendered,
            settings,
        })
    }

    /// Compares one partition (its escaped value `segment`) with its rendering in `rendered`.
    pub(super) async fn compare_partition(
        &self,
        rendered: &RenderedPartitions,
        (value, segment): (&str, &str),
        reader: &OutputReader,
        stored: &BTreeSet<TileCoord>,
    ) -> Result<DbComparison> {
        let recorded = reader
            .state()
            .await?
            .as_deref()
            .and_then(Watermark::from_state);
        let partition = rendered.rendered.for_partition(segment);
        let settings = rendered.settings.get(&partition.describe()).cloned();
        let mut comparison = self
            .compare_with(
                &partition,
                reader,
                stored,
                None,
                recorded.as_ref(),
                settings,
            )
            .await?;
        comparison.repair = self.repair(&comparison, Some(value));
        Ok(comparison)
    }

    /// Compares the tiles of `list` (all of both outputs' tiles when `None`) of the output read by
    /// `reader` with the rendering at `rendered`.
    async fn compare_with(
        &self,
        rendered: &OutputTarget,
        reader: &OutputReader,
        stored: &BTreeSet<TileCoord>,
        list: Option<Vec<TileCoord>>,
        recorded: Option<&Watermark>,
        settings: Option<String>,
    ) -> Result<DbComparison> {
        let fresh =
            OutputReader::open(&self.output, rendered, &self.job.store_settings, "pbf").await;
        let fresh = match fresh {
            Ok(fresh) => Some(fresh),
            // A partition the database no longer holds renders nothing, so it has no output.
            Err(_) if list.is_none() && !rendered_exists(rendered) => None,
            Err(e) => return Err(e),
        };
        let compared: Vec<TileCoord> = match list {
            Some(list) => list,
            None => {
                let mut all: BTreeSet<TileCoord> = stored.clone();
                if let Some(fresh) = &fresh {
                    all.extend(fresh.tile_sizes().await?.into_iter().map(|(t, _)| t));
                }
                all.into_iter().collect()
            }
        };
        let mut comparison = DbComparison {
            compared: compared.len() as u64,
            settings_match: true,
            ..Default::default()
        };
        if let (Some(recorded), Some(now)) = (recorded.and_then(|w| w.settings.as_ref()), &settings)
        {
            comparison.settings_match = recorded == now;
        }
        let mut ours = reader.read_many(compared.clone());
        let mut theirs = match &fresh {
            Some(fresh) => fresh.read_many(compared),
            None => futures::stream::iter(compared.into_iter().map(|t| Ok((t, None)))).boxed(),
        };
        while let (Some(fresh_tile), Some(stored_tile)) = (theirs.next().await, ours.next().await) {
            let ((tile, fresh_bytes), (_, stored_bytes)) = (fresh_tile?, stored_tile?);
            match (fresh_bytes, stored_bytes) {
                (None, None) => {}
                (Some(_), None) => {
                    comparison.missing.push(tile.to_string());
                    comparison.wrong.push(tile);
                }
                (None, Some(_)) => {
                    comparison.unexpected.push(tile.to_string());
                    comparison.wrong.push(tile);
                }
                (Some(fresh), Some(stored)) => {
                    if mvt_bytes(&fresh) != mvt_bytes(&stored) {
                        comparison.differ.push(tile.to_string());
                        comparison.wrong.push(tile);
                    }
                }
            }
        }
        Ok(comparison)
    }

    /// Moves the wrong tiles that changes since the output's watermark touched into `pending`.
    async fn set_aside_pending(&self, recorded: Option<&Watermark>, comparison: &mut DbComparison) {
        let (Some(recorded), false) = (recorded, comparison.wrong.is_empty()) else {
            return;
        };
        match self.dirty_since(recorded).await {
            Ok(Work::Subtrees { tiles, subtrees }) => {
                let tiles: HashSet<TileCoord> = tiles.into_iter().collect();
                let (pending, wrong): (Vec<TileCoord>, Vec<TileCoord>) = comparison
                    .wrong
                    .iter()
                    .partition(|t| tiles.contains(t) || subtrees.contains(**t));
                comparison.pending = pending.iter().map(|t| t.to_string()).collect();
                comparison.wrong = wrong;
            }
            Ok(Work::Pyramid) => {
                comparison.pending = comparison.wrong.iter().map(|t| t.to_string()).collect();
                comparison.wrong.clear();
            }
            Ok(Work::Tiles(dirty)) => {
                let dirty: HashSet<TileCoord> = dirty.into_iter().collect();
                let (pending, wrong): (Vec<TileCoord>, Vec<TileCoord>) =
                    comparison.wrong.iter().partition(|t| dirty.contains(t));
                comparison.pending = pending.iter().map(|t| t.to_string()).collect();
                comparison.wrong = wrong;
            }
            Err(e) => tracing::warn!(
                "{}: cannot read the changes since its watermark ({e}); every differing tile \
                 counts as wrong",
                self.output
            ),
        }
        let wrong: HashSet<String> = comparison.wrong.iter().map(|t| t.to_string()).collect();
        for list in [
            &mut comparison.differ,
            &mut comparison.missing,
            &mut comparison.unexpected,
        ] {
            list.retain(|t| wrong.contains(t));
        }
    }

    /// The tiles a `seed --dirty` of the output would render now.
    async fn dirty_since(&self, recorded: &Watermark) -> Result<Work> {
        // Reading the change log holds one connection while it checks another out.
        let pool = crate::db::connect(&self.job.database, 4).await?;
        let tileset = self.tileset();
        let decision = reseed::decide(
            (&pool, &pool),
            &self.job.change_schema,
            tileset,
            (&tileset.tileset.layers, &[]),
            &Selection::Dirty,
            (
                Some(&recorded.to_state()),
                recorded.settings.clone().unwrap_or_default(),
                None,
            ),
        )
        .await?;
        Ok(decision.work)
    }

    fn repair(&self, comparison: &DbComparison, partition: Option<&str>) -> Option<String> {
        let tileset = &self.tileset().tileset;
        let name = &tileset.name;
        let output = &self.output;
        if let Some(value) = partition {
            // A partition has no cells, and is rendered whole in a moment.
            return (!comparison.wrong.is_empty() || !comparison.settings_match).then(|| {
                format!("oar-tiles seed --tileset {name} --output {output} --partition {value}")
            });
        }
        let clustered = tileset.layers.iter().any(|l| l.cluster.is_some());
        let cells = if clustered { " --rebuild-cells" } else { "" };
        let seed = format!("oar-tiles seed --tileset {name} --output {output}{cells}");
        if !comparison.settings_match {
            return Some(format!(
                "the output was rendered with other settings than the config's: a full reseed \
                 repairs it ({seed})"
            ));
        }
        if comparison.wrong.is_empty() {
            return None;
        }
        Some(match self.check {
            DbCheck::All => format!("{seed} --tiles-from LIST, LIST being the --repair-list"),
            DbCheck::Sample(_) => format!(
                "only a sample was compared: `validate --against-db --all --repair-list LIST` \
                 lists every wrong tile for `{seed} --tiles-from LIST`; or reseed in full ({seed})"
            ),
        })
    }
}

impl DbComparison {
    /// Lists the tiles found wrong among `problems`.
    pub(super) fn report(&self, problems: &mut Problems) {
        let mut push = |tiles: &[String], message: &str| {
            for tile in tiles {
                problems.push(Problem {
                    tile: Some(tile.clone()),
                    check: "database".into(),
                    message: message.into(),
                });
            }
        };
        push(&self.differ, "differs from what the database renders now");
        push(&self.missing, "missing: the database renders features here");
        push(
            &self.unexpected,
            "should not exist: the database renders nothing here",
        );
        if !self.settings_match {
            problems.push(Problem {
                tile: None,
                check: "database".into(),
                message: "the output recorded other tile settings than the config gives".into(),
            });
        }
    }

    /// Tiles found wrong (pending ones aside).
    pub(super) fn count_wrong(&self) -> usize {
        self.wrong.len()
    }

    /// The tiles a `--tiles-from` repair renders again.
    pub(super) fn repair_tiles(&self) -> Vec<TileCoord> {
        self.wrong.clone()
    }

    /// The comparison as an operator reads it.
    pub(super) fn to_text(&self) -> String {
        let mut out = format!(
            "  against the database: {} tile(s) compared, {} differ, {} missing, {} should not \
             exist, {} pending (changes since the watermark)\n",
            self.compared,
            self.differ.len(),
            self.missing.len(),
            self.unexpected.len(),
            self.pending.len()
        );
        if let Some(repair) = &self.repair {
            out.push_str(&format!("  repair: {repair}\n"));
        }
        out
    }
}

/// Every partition of a tileset rendered again, in a folder removed when this is dropped.
pub(super) struct RenderedPartitions {
    _folder: tempfile::TempDir,
    /// The rendering's base output; each partition's is beside it.
    rendered: OutputTarget,
    /// The digest of the settings each partition rendered with, by its rendering's output.
    settings: std::collections::HashMap<String, String>,
}

fn scratch_folder() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::File {
        path: std::env::temp_dir(),
        message: format!("cannot make a private folder for the comparison: {e}"),
    })
}

fn rendered_exists(rendered: &OutputTarget) -> bool {
    rendered.local_path().is_some_and(|p| p.exists())
}

/// `n` random stored tiles, and each one's neighbours at its zoom that the output does not hold
/// (inside the recorded bbox): a tile missing beside the data is caught too.
fn sample(stored: &BTreeSet<TileCoord>, n: u64, recorded: Option<&Watermark>) -> Vec<TileCoord> {
    let bbox = recorded
        .and_then(|w| w.bbox.as_deref())
        .and_then(|b| b.parse::<BBox>().ok());
    let random = std::collections::hash_map::RandomState::new();
    let mut shuffled: Vec<&TileCoord> = stored.iter().collect();
    shuffled.sort_by_key(|t| random.hash_one(t));
    let mut list = BTreeSet::new();
    for tile in shuffled.into_iter().take(n as usize) {
        list.insert(*tile);
        for (dx, dy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ] {
            let (x, y) = (i64::from(tile.x()) + dx, i64::from(tile.y()) + dy);
            let Ok(neighbour) =
                TileCoord::from_tms(i64::from(tile.z()), x, (1i64 << tile.z()) - 1 - y)
            else {
                continue;
            };
            let inside = bbox
                .as_ref()
                .is_none_or(|b| b.tile_range(neighbour.z()).contains(neighbour));
            if inside && !stored.contains(&neighbour) {
                list.insert(neighbour);
            }
        }
    }
    list.into_iter().collect()
}

/// A tile's MVT bytes, gzip undone: outputs of either compression compare equal. A stream that
/// does not inflate within the tile cap is compared as stored (and differs); the MVT pass has
/// named it.
fn mvt_bytes(stored: &[u8]) -> Vec<u8> {
    if stored.starts_with(&[0x1f, 0x8b]) {
        if let Ok(out) = crate::encode::gunzip_capped(stored, super::mvt::MAX_INFLATED) {
            return out;
        }
    }
    stored.to_vec()
}
