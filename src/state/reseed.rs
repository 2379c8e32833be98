//! What a run over an output must render, given the state the output recorded, and the watermark
//! the output will record once the run is done: the whole pyramid, the tiles its changes touched
//! since its watermark, or a given list.

use deadpool_postgres::Pool;

use super::capture;
use super::watermark::{tell_taken, SnapshotTaken, Watermark};
use crate::config::LayerConfig;
use crate::error::{Error, Result};
use crate::job::{Selection, TilesetJob};
use crate::plan::dirty::{census_pays, choose, ways_text};
use crate::plan::{dirty_work, ChangedBox, Work, ZoomWay};
use crate::render::count::rows_per_tile;
use crate::render::source::LayerSource;
use crate::tile::{BBox, TileCoord, ZoomRange};

/// What a run does and what it records when it is done.
#[derive(Debug)]
pub struct Decision {
    /// The tiles to render.
    pub work: Work,
    /// The watermark the output holds once the run is complete; `None` leaves it unchanged.
    pub watermark: Option<Watermark>,
    /// Changed geometries read from the change log (reseeds only).
    pub changes_read: Option<u64>,
    /// When the changes read were committed, in seconds since the Unix epoch (reseeds only).
    pub committed: Vec<f64>,
    /// How a reseed took each zoom, where it weighed a walk against its list.
    pub ways: Vec<ZoomWay>,
    /// The area and zooms the run renders: a reseed's only those the output holds.
    pub area: (BBox, ZoomRange),
    /// A reseed walking the whole pyramid because its changes were as many as its tables' rows
    /// (the log complete, read no further than that), not because the log cannot speak for them.
    pub bulk: bool,
}

/// Decides what to render for `selection` over the output whose recorded state is `state`; `settings`
/// is the digest of the run's tile settings (see [`super::digest::TileSettings`]). `pool` holds the
/// change log; `render` is the server the tiles are rendered from (a shard's replica, else `pool`),
/// where a full seed's snapshot is taken, as the snapshot must be one its tile queries come after.
/// `sources` are the layers' described sources, whose rows a bulk reseed counts to weigh walking
/// its zooms against listing them (none: it lists). `taken` is told once the next watermark's
/// snapshot is taken, and dropped where the run takes none.
pub async fn decide(
    (pool, render): (&Pool, &Pool),
    change_schema: &str,
    tileset: &TilesetJob,
    (layers, sources): (&[LayerConfig], &[LayerSource]),
    selection: &Selection,
    (state, settings, taken): (Option<&str>, String, Option<SnapshotTaken>),
) -> Result<Decision> {
    let configured = &tileset.tileset;
    let previous = state.and_then(Watermark::from_state);
    let mut decision = match selection {
        // Every tile query starts after this snapshot, so the output reflects at least every
        // change it saw.
        Selection::Pyramid => {
            let watermark = capture::current_watermark(render).await?;
            tell_taken(taken);
            Decision {
                work: Work::Pyramid,
                watermark: Some(watermark),
                changes_read: None,
                committed: Vec::new(),
                ways: Vec::new(),
                area: (tileset.bbox, tileset.zooms),
                bulk: false,
            }
        }
        Selection::List(tiles) => Decision {
            work: Work::Tiles(within_zooms(tiles, tileset)),
            watermark: None,
            changes_read: None,
            committed: Vec::new(),
            ways: Vec::new(),
            area: (tileset.bbox, tileset.zooms),
            bulk: false,
        },
        Selection::Dirty => {
            let since = previous.as_ref().ok_or_else(|| Error::State {
                missing: format!("tileset `{}`: the output's watermark", configured.name),
                message: format!(
                    "tileset `{}`: the output records no watermark; run a full seed first",
                    configured.name
                ),
            })?;
            let Some(held) = held_part(tileset, since) else {
                return Ok(Decision {
                    work: Work::Tiles(Vec::new()),
                    watermark: None,
                    changes_read: None,
                    committed: Vec::new(),
                    ways: Vec::new(),
                    area: (tileset.bbox, tileset.zooms),
                    bulk: false,
                });
            };
            let census = (render, sources);
            let read = (since, &settings[..], taken);
            dirty(pool, change_schema, &held, layers, read, census).await?
        }
    };
    let (bbox, zooms) = decision.area;
    let reseed = *selection == Selection::Dirty;
    decision.watermark = decision.watermark.map(|taken| {
        let next = Watermark {
            settings: Some(settings),
            zooms: Some(zooms.to_string()),
            bbox: Some(bbox.to_string()),
            ..taken
        };
        match previous {
            // What the output holds is what seeds gave it: a reseed neither adds nor drops any.
            Some(previous) if reseed && covers(zooms, bbox, configured, &previous) => Watermark {
                zooms: previous.zooms,
                bbox: previous.bbox,
                ..next
            },
            Some(previous) if !covers(zooms, bbox, configured, &previous) => {
                tracing::info!(
                    "tileset `{}`: zooms {zooms} and bbox {bbox} are part of what the output's \
                     watermark covers; it stays, so the next run over all of it renders these \
                     changes again",
                    configured.name,
                );
                joined(previous, zooms, bbox, configured)
            }
            _ => next,
        }
    });
    Ok(decision)
}

/// The area and zooms a recorded watermark covers (one of an earlier version: the configured ones).
fn recorded(configured: &crate::config::TilesetConfig, watermark: &Watermark) -> (BBox, ZoomRange) {
    let zooms = watermark
        .zooms
        .as_deref()
        .and_then(|z| z.parse::<ZoomRange>().ok())
        .unwrap_or(configured.zooms);
    let bbox = watermark
        .bbox
        .as_deref()
        .and_then(|b| b.parse::<BBox>().ok())
        .unwrap_or(configured.bbox);
    (bbox, zooms)
}

/// The part of `tileset`'s run a reseed renders: the zooms and area the output holds, by its
/// watermark `since`. Zooms asked for that it does not hold are left to a seed, and said to be;
/// `None` when it holds none of them.
fn held_part(tileset: &TilesetJob, since: &Watermark) -> Option<TilesetJob> {
    let name = &tileset.tileset.name;
    let (held_bbox, held) = recorded(&tileset.tileset, since);
    let asked = tileset.zooms;
    let zooms = ZoomRange::new(asked.min.max(held.min), asked.max.min(held.max)).ok();
    if zooms != Some(asked) {
        let below = ZoomRange::new(asked.min, asked.max.min(held.min.saturating_sub(1)));
        let above = ZoomRange::new(asked.min.max(held.max.saturating_add(1)), asked.max);
        let seeds: Vec<String> = [below.ok().filter(|_| asked.min < held.min), above.ok()]
            .into_iter()
            .flatten()
            .map(|z| format!("`oar-tiles seed --tileset {name} --zoom {z}`"))
            .collect();
        tracing::warn!(
            "tileset `{name}`: zooms {asked} asked for, but the output holds zooms {held} and a \
             reseed renders only those; to add the others, seed them: {}",
            seeds.join(" and ")
        );
    }
    let bbox = BBox::new(
        tileset.bbox.west.max(held_bbox.west),
        tileset.bbox.south.max(held_bbox.south),
        tileset.bbox.east.min(held_bbox.east),
        tileset.bbox.north.min(held_bbox.north),
    )
    .ok();
    let (Some(zooms), Some(bbox)) = (zooms, bbox) else {
        tracing::warn!(
            "tileset `{name}`: the output holds none of zooms {asked} over bbox {}: nothing to reseed",
            tileset.bbox
        );
        return None;
    };
    Some(TilesetJob {
        zooms,
        bbox,
        ..tileset.clone()
    })
}

/// The watermark `previous` with a seed over `zooms` and `bbox` (which does not cover all it
/// holds) counted in: zooms next to or overlapping the held ones join them when the seed covered
/// the held area, so a seed of the zooms a reseed refused adds them.
fn joined(
    previous: Watermark,
    zooms: ZoomRange,
    bbox: BBox,
    configured: &crate::config::TilesetConfig,
) -> Watermark {
    let (held_bbox, held) = recorded(configured, &previous);
    let touching =
        zooms.min <= held.max.saturating_add(1) && held.min <= zooms.max.saturating_add(1);
    let whole_area = bbox.west <= held_bbox.west
        && bbox.south <= held_bbox.south
        && bbox.east >= held_bbox.east
        && bbox.north >= held_bbox.north;
    match ZoomRange::new(zooms.min.min(held.min), zooms.max.max(held.max)) {
        Ok(union) if touching && whole_area && union != held => Watermark {
            zooms: Some(union.to_string()),
            ..previous
        },
        _ => previous,
    }
}

/// A reseed: the tiles the changes since `since` touched (with subtrees past the tileset's `listed_tiles`), or
/// the whole pyramid when a source was truncated or the settings changed.
async fn dirty(
    pool: &Pool,
    change_schema: &str,
    tileset: &TilesetJob,
    layers: &[LayerConfig],
    (since, settings, taken): (&Watermark, &str, Option<SnapshotTaken>),
    (render, sources): (&Pool, &[LayerSource]),
) -> Result<Decision> {
    let name = &tileset.tileset.name;
    let compare = capture::Compare {
        zooms: tileset.zooms,
        extent: tileset.tileset.extent,
    };
    let reading = std::time::Instant::now();
    let cap = bulk_cap(sources);
    let read = (Some(compare), taken, cap);
    let (changes, next) = capture::read_since(pool, change_schema, layers, since, read).await?;
    tracing::info!(
        "tileset `{name}`: {}{} geometries of rows changed since the last seed, old and new sides \
         (change log read in {:.2} s)",
        if changes.past_cap { "over " } else { "" },
        changes.rows.saturating_sub(u64::from(changes.past_cap)),
        reading.elapsed().as_secs_f64()
    );
    let everything = |why: &str| {
        tracing::info!("tileset `{name}`: {why}; reseeding everything");
        Decision {
            work: Work::Pyramid,
            watermark: Some(next.clone()),
            changes_read: Some(changes.rows),
            committed: changes.committed.clone(),
            ways: Vec::new(),
            area: (tileset.bbox, tileset.zooms),
            bulk: false,
        }
    };
    if let Some(why) = &changes.uncaptured {
        return Ok(everything(why));
    }
    if changes.everything {
        return Ok(everything("a source was truncated"));
    }
    if since.settings.as_deref() != Some(settings) {
        return Ok(everything(
            "the layers, extent or buffer differ from those of the output's last seed",
        ));
    }
    if changes.past_cap {
        return Ok(Decision {
            bulk: true,
            ..everything(
                "as many geometries changed as an update of most rows of its tables gives, so \
                 nearly every tile holding a row is dirty: the whole pyramid is walked as a seed \
                 walks it, without working out which",
            )
        });
    }
    let boxes: Vec<(&LayerConfig, &[ChangedBox])> = layers
        .iter()
        .filter_map(|c| changes.boxes.get(&c.name).map(|b| (c, b.as_slice())))
        .collect();
    let configured = &tileset.tileset;
    let work = dirty_work(
        &boxes,
        layers,
        tileset.bbox,
        tileset.zooms,
        (configured.extent, configured.buffer),
        configured.listed_tiles,
    );
    let (work, ways) = weigh_walks(work, &boxes, tileset, (render, sources)).await?;
    say_subtrees(name, configured.listed_tiles, &work);
    Ok(Decision {
        work,
        watermark: Some(next),
        changes_read: Some(changes.rows),
        committed: changes.committed,
        ways,
        area: (tileset.bbox, tileset.zooms),
        bulk: false,
    })
}

/// Changed geometries (an update counts two) past which a reseed walks the whole pyramid: those
/// of an update of three rows in four of `sources`, and at least [`MIN_BULK_GEOMETRIES`]. Past it
/// nearly every tile holding a row is dirty, and working out which (the dirty tiles, a census,
/// each zoom's way) took about 1 s of the 100k sample's 8 s reseed, for a walk of a few percent
/// fewer tiles. The walk costs what the tables' rows cost, which the changes read already match.
/// `None` (no cap) where a source's size is unknown (never analysed, a view): a stale zero must
/// not make a small edit of a large table walk all of it.
fn bulk_cap(sources: &[LayerSource]) -> Option<usize> {
    if sources.is_empty() || sources.iter().any(|s| s.estimated_rows <= 0.0) {
        return None;
    }
    let rows: f64 = sources.iter().map(|s| s.estimated_rows).sum();
    Some(((rows * 1.5) as usize).max(MIN_BULK_GEOMETRIES))
}

/// The least changed geometries a reseed walks the whole pyramid for: below it, working out the
/// dirty tiles takes well under a second, and a small table's estimate may be stale.
const MIN_BULK_GEOMETRIES: usize = 10_000;

/// A bulk reseed's listed `work` weighed zoom by zoom against walking, from a census of the rows
/// of `sources` (on `render`) where one pays; the work chosen and each zoom's way.
async fn weigh_walks(
    mut work: Work,
    boxes: &[(&LayerConfig, &[ChangedBox])],
    tileset: &TilesetJob,
    (render, sources): (&Pool, &[LayerSource]),
) -> Result<(Work, Vec<ZoomWay>)> {
    let configured = &tileset.tileset;
    let rows: f64 = sources.iter().map(|s| s.estimated_rows).sum();
    let Work::Tiles(tiles) = &mut work else {
        return Ok((work, Vec::new()));
    };
    if !census_weighs_walks(sources) || !census_pays(tiles.len(), rows) {
        return Ok((work, Vec::new()));
    }
    let counting = std::time::Instant::now();
    let census: Vec<_> = rows_per_tile(render, sources, tileset.zooms.max)
        .await?
        .into_iter()
        .map(|(tile, _)| tile)
        .collect();
    let (chosen, weighed) = choose(
        std::mem::take(tiles),
        &census,
        (boxes, tileset.bbox, tileset.zooms),
        (configured.extent, configured.buffer),
        configured.listed_tiles,
    );
    tracing::info!(
        "tileset `{}`: {} (rows counted per tile in {:.2} s)",
        configured.name,
        ways_text(&weighed),
        counting.elapsed().as_secs_f64()
    );
    Ok((chosen, weighed))
}

/// Says how a reseed past `listed_tiles` dirty tiles took them, when it walked subtrees.
fn say_subtrees(name: &str, listed_tiles: usize, work: &Work) {
    if let Work::Subtrees { tiles, subtrees } = work {
        tracing::info!(
            "tileset `{name}`: over {listed_tiles} dirty tiles (listed_tiles); {} listed and {} subtree(s) walked from zoom {}",
            tiles.len(),
            subtrees.len(),
            subtrees.top_zoom().unwrap_or(0),
        );
    }
}

/// Whether a census of rows per tile can weigh a walk of `sources`: it counts a row in the one
/// tile holding a point of it, so a line's or polygon's other tiles, which a walk renders too,
/// would go uncounted and a walk look cheap.
fn census_weighs_walks(sources: &[LayerSource]) -> bool {
    !sources.is_empty() && sources.iter().all(|s| s.points_only)
}

/// Whether a run over `zooms` and `bbox` renders every zoom and all the area whose tiles the
/// watermark speaks for (a watermark of an earlier version speaks for the configured ones).
fn covers(
    zooms: ZoomRange,
    bbox: BBox,
    configured: &crate::config::TilesetConfig,
    watermark: &Watermark,
) -> bool {
    let (covered_bbox, covered_zooms) = recorded(configured, watermark);
    zooms.min <= covered_zooms.min
        && zooms.max >= covered_zooms.max
        && bbox.west <= covered_bbox.west
        && bbox.south <= covered_bbox.south
        && bbox.east >= covered_bbox.east
        && bbox.north >= covered_bbox.north
}

/// The listed tiles at the tileset's zooms; the others are left out, and said to be.
fn within_zooms(tiles: &[TileCoord], tileset: &TilesetJob) -> Vec<TileCoord> {
    let (kept, outside): (Vec<TileCoord>, Vec<TileCoord>) = tiles
        .iter()
        .copied()
        .partition(|t| tileset.zooms.contains(t.z()));
    if let Some(first) = outside.first() {
        tracing::warn!(
            "tileset `{}`: {} listed tile(s) lie outside its zooms {} and are not rendered (first: {first})",
            tileset.tileset.name,
            outside.len(),
            tileset.zooms
        );
    }
    kept
}
