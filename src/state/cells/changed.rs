//! The cells a refresh sums again: those holding a changed geometry's representative point, as
//! the statements' array parameters; all of them when the log may miss changes (a gap in capture).

use std::collections::BTreeSet;

use tokio_postgres::types::{ToSql, Type};

use crate::config::ClusterConfig;
use crate::error::Result;
use crate::render::source::{quoted_table, LayerSource};
use crate::render::sql;
use crate::state::capture;
use crate::tile::{Envelope, MERCATOR_HALF_WORLD};

/// Why the change log may miss changes to the layer's source since `since` (the cells' own
/// watermark): triggers disabled, dropped or re-created, a deleted record. The cells are then
/// summed from the rows instead, and the log line says why.
pub(super) async fn log_gap(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    layer: &LayerSource,
    since: &str,
) -> Result<Option<String>> {
    let table = quoted_table(&layer.config);
    let gap = capture::capture_gap(client, schema, &table, since).await?;
    if let Some(why) = &gap {
        let name = &layer.config.name;
        tracing::info!("layer `{name}`: its cluster cells are summed from rows, since {why}");
    }
    Ok(gap)
}

/// Above this many cells (counted per changed geometry, before any is listed), summing every cell
/// again is cheaper than listing them, and keeps a refresh's memory from growing with the changes.
const MAX_CHANGED_CELLS: u64 = 200_000;

/// The cells at the deepest clustered zoom that hold one of `points` (boxes of changed geometries'
/// representative points in Web-Mercator metres, as PostGIS projected them for the cells), with a
/// hair of slack on every side: summing a cell too many again costs little, missing one would be
/// wrong. `None` when they would be more than [`MAX_CHANGED_CELLS`] or a point is unbounded (one
/// PostGIS could not project): the caller then sums every cell again, in memory that does not
/// grow with the boxes.
pub(super) fn changed_cells(
    points: &[[f64; 4]],
    cluster: &ClusterConfig,
    extent: u32,
) -> Option<BTreeSet<(i64, i64)>> {
    let cell = sql::cell_metres(cluster, cluster.maxzoom, extent);
    let slack = 1.0 + cell * 1e-3;
    let half = MERCATOR_HALF_WORLD;
    let mut cells = BTreeSet::new();
    let mut listed: u64 = 0;
    for [x0, y0, x1, y1] in points {
        // Not clamped to the Mercator square: rows beyond it still group into cells.
        // Far beyond the world's cells (or unbounded), a box is every cell.
        if ![x0, y0, x1, y1].iter().all(|v| v.abs() < 1e12) {
            return None;
        }
        let column = |x: f64| ((x + half) / cell).floor() as i64;
        let row = |y: f64| ((half - y) / cell).floor() as i64;
        let columns = column(x0 - slack)..=column(x1 + slack);
        let rows = row(y1 + slack)..=row(y0 - slack);
        // Counted before any is listed, so a box of the whole world costs no more than a point.
        let count = |r: &std::ops::RangeInclusive<i64>| (r.end() - r.start() + 1).max(0) as u64;
        listed = listed.saturating_add(count(&columns).saturating_mul(count(&rows)));
        if listed > MAX_CHANGED_CELLS {
            return None;
        }
        for cx in columns {
            for cy in rows.clone() {
                cells.insert((cx, cy));
            }
        }
    }
    Some(cells)
}

/// Each cell's envelope, grown a little, as eight arrays: degrees west, south, east, north, then
/// metres.
pub(super) fn cell_envelopes(
    cells: &BTreeSet<(i64, i64)>,
    cluster: &ClusterConfig,
    extent: u32,
) -> Vec<Vec<f64>> {
    let cell = sql::cell_metres(cluster, cluster.maxzoom, extent);
    let half = MERCATOR_HALF_WORLD;
    let mut columns: Vec<Vec<f64>> = (0..8).map(|_| Vec::with_capacity(cells.len())).collect();
    for (cx, cy) in cells {
        let metres = Envelope {
            west: *cx as f64 * cell - half,
            south: half - (*cy + 1) as f64 * cell,
            east: (*cx + 1) as f64 * cell - half,
            north: half - *cy as f64 * cell,
        }
        .grown(1e-6);
        let degrees = metres.mercator_to_lonlat();
        let values = [
            degrees.west,
            degrees.south,
            degrees.east,
            degrees.north,
            metres.west,
            metres.south,
            metres.east,
            metres.north,
        ];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
    }
    columns
}

/// The cells as a column of x and a column of y.
pub(super) fn split(cells: &BTreeSet<(i64, i64)>) -> (Vec<i64>, Vec<i64>) {
    cells.iter().copied().unzip()
}

/// The cell columns `xs`, `ys` as typed statement parameters.
pub(super) fn cell_params<'a>(
    xs: &'a Vec<i64>,
    ys: &'a Vec<i64>,
) -> [(&'a (dyn ToSql + Sync), Type); 2] {
    [(xs, Type::INT8_ARRAY), (ys, Type::INT8_ARRAY)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterPosition;

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            maxzoom: 11,
            cell: 512,
            position: ClusterPosition::Centroid,
        }
    }

    #[test]
    fn a_changed_point_dirties_its_cell_and_only_neighbours_it_nearly_touches() {
        let (x, y) = crate::tile::mercator(90.4, 23.8);
        let cells = changed_cells(&[[x, y, x, y]], &cluster(), 4096).unwrap();
        assert!(!cells.is_empty() && cells.len() <= 4, "{cells:?}");
        let cell = sql::cell_metres(&cluster(), 11, 4096);
        let own = (
            ((x + MERCATOR_HALF_WORLD) / cell).floor() as i64,
            ((MERCATOR_HALF_WORLD - y) / cell).floor() as i64,
        );
        assert!(cells.contains(&own));
        let envelopes = cell_envelopes(&cells, &cluster(), 4096);
        assert_eq!(envelopes.len(), 8);
        assert!(envelopes.iter().all(|c| c.len() == cells.len()));
    }

    #[test]
    fn more_cells_than_the_bound_are_not_listed() {
        let world = [-2e7, -1.5e7, 2e7, 1.5e7];
        assert!(changed_cells(&[world], &cluster(), 4096).is_none());
        let unprojected = [f64::NEG_INFINITY, 0.0, f64::INFINITY, 0.0];
        assert!(changed_cells(&[unprojected], &cluster(), 4096).is_none());
        // The changes of one cycle count together, each cell once per box.
        let apart = MAX_CHANGED_CELLS + 1;
        let points: Vec<[f64; 4]> = (0..apart)
            .map(|i| {
                let (x, y) = crate::tile::mercator(-170.0 + 340.0 * i as f64 / apart as f64, 10.0);
                [x, y, x, y]
            })
            .collect();
        assert!(changed_cells(&points[..100], &cluster(), 4096).is_some());
        assert!(changed_cells(&points, &cluster(), 4096).is_none());
    }
}
