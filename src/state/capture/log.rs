//! Reading the change log since a watermark: the boxes and shapes of what changed, or the partition
//! values it touched. The outputs that consume it keep their bookkeeping in `consumers.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures::TryStreamExt;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use crate::config::LayerConfig;
use crate::db::quote_ident;
use crate::error::{pg_message, DbError, Error, Result};
use crate::plan::{ChangedBox, Shape, SourceBox};
use crate::render::source::quoted_table;
use crate::render::sql;
use crate::state::watermark::{tell_taken, SnapshotTaken, Watermark};
use crate::tile::ZoomRange;

mod halves;
mod moved;

use halves::in_halves;
use moved::{compare_moved, pair_up, PairSide};

/// The changes of a set of layers since a watermark, as boxes and shapes in Web-Mercator metres.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// Whether a TRUNCATE means everything must be reseeded.
    pub everything: bool,
    /// Old and new geometries, per layer name.
    pub boxes: BTreeMap<String, Vec<ChangedBox>>,
    /// Changed geometries read (an update counts its old and its new position).
    pub rows: u64,
    /// When each change read was committed, in seconds since the Unix epoch: the commit timestamp
    /// when the server tracks them (`track_commit_timestamp`), else the time the row changed.
    pub committed: Vec<f64>,
    /// Why the log cannot speak for every change since the watermark (a table captured only after
    /// it), so everything must be reseeded.
    pub uncaptured: Option<String>,
    /// More geometries changed than the read's cap: `boxes` holds only the layers read before
    /// it was reached, and `rows` is the cap plus one (the geometries read in all).
    pub past_cap: bool,
}

/// What the log holds for one layer since a snapshot ([`changed_boxes`]).
#[derive(Debug, Default)]
pub struct LayerChanges {
    /// A TRUNCATE of the layer's table: every tile must be rendered again.
    pub truncated: bool,
    /// More geometries changed than the read's cap; `boxes` is then empty.
    pub past_cap: bool,
    /// The boxes and shapes of the changed geometries.
    pub boxes: Vec<ChangedBox>,
}

/// Starts the read-only, repeatable-read transaction a reseed reads the log in, once change
/// capture is known to be installed, and returns it with its snapshot (the next watermark).
async fn read_under_one_snapshot<'a>(
    schema: &str,
    tables: &[String],
    client: &'a mut deadpool_postgres::Object,
) -> Result<(deadpool_postgres::Transaction<'a>, String)> {
    if !super::installed_on(client, schema).await? {
        return Err(Error::State {
            missing: format!("change capture (schema `{schema}`)"),
            message: "change capture is not installed: run `oar-tiles changes install` before `seed --dirty`".into(),
        });
    }
    // A gap found is recorded before the snapshot is taken, so the next watermark sees it.
    super::coverage::reconcile(&***client, schema, tables).await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot: String = transaction
        .query_typed_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    Ok((transaction, snapshot))
}

/// Reads, under one snapshot, the changes to the layers' tables that `since` did not see, and
/// returns them with the snapshot they were read under (the next watermark); `taken` is told once
/// that snapshot is taken, before the changes are read. Past `cap` geometries in all, the read
/// stops and says so ([`ChangeSet::past_cap`]).
pub async fn read_since(
    pool: &Pool,
    schema: &str,
    layers: &[LayerConfig],
    since: &Watermark,
    (compare, taken, cap): (Option<Compare>, Option<SnapshotTaken>, Option<usize>),
) -> Result<(ChangeSet, Watermark)> {
    let tables: std::collections::BTreeSet<String> = layers.iter().map(quoted_table).collect();
    let tables: Vec<String> = tables.into_iter().collect();
    let mut client = crate::db::get(pool).await?;
    let (transaction, snapshot) = read_under_one_snapshot(schema, &tables, &mut client).await?;
    tell_taken(taken);
    let coverage = super::coverage::check(&*transaction, schema, &tables, &since.snapshot).await?;
    let mut changes = ChangeSet {
        uncaptured: coverage.reason(),
        ..ChangeSet::default()
    };
    for layer in layers {
        let since = &since.snapshot;
        let left = cap.map(|cap| cap.saturating_sub(changes.rows as usize));
        let read = changed_boxes(&*transaction, schema, layer, since, (compare, left)).await?;
        changes.everything |= read.truncated;
        if read.past_cap {
            // Read in all: the cap's geometries and the one past it.
            changes.rows = cap.map_or(changes.rows, |cap| cap as u64 + 1);
            changes.past_cap = true;
            break;
        }
        changes.rows += read.boxes.len() as u64 + u64::from(read.truncated);
        changes
            .boxes
            .entry(layer.name.clone())
            .or_default()
            .extend(read.boxes);
    }
    changes.committed = commit_times(&*transaction, schema, &tables, &since.snapshot).await?;
    transaction.commit().await?;
    Ok((
        changes,
        Watermark {
            snapshot,
            ..Watermark::default()
        },
    ))
}

/// The partition values a set of changes touched: what a partitioned tileset's cycle reads once,
/// before it reseeds only those values' pyramids.
#[derive(Debug, Default)]
pub struct Touched {
    /// Whether every value must be reseeded: a TRUNCATE, or a change logged before the column's
    /// values were (its log row does not say which values it touched).
    pub every_value: bool,
    /// The values the changes' rows held before or after them (text forms).
    pub values: std::collections::BTreeSet<String>,
    /// Log rows read.
    pub changes: u64,
    /// When each was committed, as in [`ChangeSet::committed`].
    pub committed: Vec<f64>,
    /// Why every value must be reseeded whole, as in [`ChangeSet::uncaptured`].
    pub uncaptured: Option<String>,
}

/// Reads, under one snapshot, which values of the partition `column` the changes to `tables`
/// (quoted) that `since` did not see touched, and returns them with that snapshot: one read of the
/// log whatever the number of values.
pub async fn read_touched(
    pool: &Pool,
    schema: &str,
    tables: &[String],
    column: &str,
    since: &Watermark,
) -> Result<(Touched, Watermark)> {
    let mut client = crate::db::get(pool).await?;
    let (transaction, snapshot) = read_under_one_snapshot(schema, tables, &mut client).await?;
    let coverage = super::coverage::check(&*transaction, schema, tables, &since.snapshot).await?;
    let row = transaction
        .query_typed_one(
            &format!(
                "SELECT count(*), coalesce(bool_or(c.everything OR c.partitions IS NULL
                                                 OR NOT c.partitions ? $3), false),
                        coalesce((SELECT array_agg(DISTINCT v) FROM {schema}.change_log d,
                                         jsonb_array_elements_text(d.partitions -> $3) v
                                  WHERE d.source IN (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)
                                    AND NOT pg_visible_in_snapshot(d.xid, $2::text::pg_snapshot)
                                    AND jsonb_typeof(d.partitions -> $3) = 'array'), '{{}}')
                 FROM {schema}.change_log c
                 WHERE c.source IN (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)
                   AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot)",
                schema = quote_ident(schema)
            ),
            &[
                (&tables, Type::TEXT_ARRAY),
                (&since.snapshot, Type::TEXT),
                (&column, Type::TEXT),
            ],
        )
        .await
        .map_err(DbError::during("reading the partition values the change log touched"))?;
    let changes: i64 = row.get(0);
    let values: Vec<String> = row.get(2);
    let uncaptured = coverage.reason();
    let mut touched = Touched {
        every_value: row.get::<_, bool>(1) || uncaptured.is_some(),
        values: values.into_iter().collect(),
        changes: u64::try_from(changes).unwrap_or(0),
        committed: Vec::new(),
        uncaptured,
    };
    touched.committed = commit_times(&*transaction, schema, tables, &since.snapshot).await?;
    transaction.commit().await?;
    Ok((
        touched,
        Watermark {
            snapshot,
            ..Watermark::default()
        },
    ))
}

/// Where a reseed compares the two shapes of a geometry-only edit as the tiles draw them: the
/// tileset's zooms and its tiles' extent.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// The zooms the run renders.
    pub zooms: ZoomRange,
    /// Units across a tile.
    pub extent: u32,
}

/// The changes to the layer's table that the snapshot `since` did not see and the client's current
/// snapshot does: whether it was truncated, and per old and new geometry its box and shape as the
/// tiles draw them (in Web-Mercator metres, through the renderer's own transform), its
/// representative point's (where clustered zooms place it), and its box in its own SRID (what the
/// renderer's prefilter tests). A layer of one partition reads only the statements that touched
/// rows of its value, and those logged before its column's values were (`partitions` lacks it).
///
/// `client` must be in a transaction: a geometry PostGIS cannot project (a latitude past ±90°)
/// fails the read of all of them, which is then rolled back to a savepoint and done in halves down
/// to single geometries, the ones that fail dirtying every tile that may fetch them.
///
/// With `compare`, the two shapes of each geometry-only edit of a line or polygon are also drawn
/// as each zoom draws them and compared there ([`compare_moved`]), so that the edit dirties only
/// the tiles where they differ.
/// With `cap`, past `cap` geometries the answer says so and holds no boxes, read from `cap + 1` of
/// them: a caller that does the same work for any number past it (the cluster cells summing every
/// cell, a reseed walking the whole pyramid) need not read a bulk statement whole.
pub async fn changed_boxes(
    client: &impl GenericClient,
    schema: &str,
    layer: &LayerConfig,
    since: &str,
    (compare, cap): (Option<Compare>, Option<usize>),
) -> Result<LayerChanges> {
    let table = quoted_table(layer);
    let column = layer.partition.as_ref().map(|p| p.column.as_str());
    let value = layer.partition.as_ref().map(|p| p.value.as_str());
    // Most reads find nothing (a reseed or watch cycle with no change to this table). Asking first
    // without PostGIS spares such a run loading PostGIS into a fresh backend (about 15 ms).
    if !any_changed(client, schema, &table, since).await? {
        return Ok(LayerChanges::default());
    }
    let geometries = logged_geometries(schema, has_pairs(client, schema).await?);
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 4] = [
        (&table, Type::TEXT),
        (&since, Type::TEXT),
        (&column, Type::TEXT),
        (&value, Type::TEXT),
    ];
    // Each row becomes its box as it arrives: a 100,000-row statement's 200,000 rows held whole
    // took some 140 MB before the first was read.
    let mut everything = false;
    let mut boxes = Vec::new();
    let mut read_rows = 0;
    let read = refused_or_each(
        client,
        &projected_sql(
            &geometries,
            &cap.map_or(String::new(), |cap| format!(" LIMIT {}", cap + 1)),
        ),
        &params,
        "reading the change log",
        |row| {
            read_rows += 1;
            if row.get::<_, bool>(0) {
                everything = true;
            } else if let Some(changed) = projected(row) {
                boxes.push(changed);
            }
        },
    )
    .await?;
    if cap.is_some_and(|cap| read_rows > cap) {
        return Ok(LayerChanges {
            truncated: everything,
            past_cap: true,
            boxes: Vec::new(),
        });
    }
    // The server refused (PROJ, GEOS): a geometry it cannot project; read in halves.
    if let Err(err) = read {
        tracing::warn!(
            "layer `{}`: PostGIS cannot project a changed geometry ({}); reading them in \
             halves, and the ones it cannot project dirty every tile that may fetch them",
            layer.name,
            pg_message(&err)
        );
        let (truncated, boxes) = in_halves(client, &geometries, &params).await?;
        return Ok(LayerChanges {
            truncated,
            past_cap: false,
            boxes,
        });
    }
    if let Some(compare) = compare.filter(|_| boxes.iter().any(|(_, pair)| pair.is_some())) {
        let compared = compare_moved(client, &geometries, &params, layer, compare).await?;
        pair_up(&mut boxes, &compared);
    }
    Ok(LayerChanges {
        truncated: everything,
        past_cap: false,
        boxes: boxes.into_iter().map(|(b, _)| b).collect(),
    })
}

/// Whether the change log holds a change to `table` that the snapshot `since` did not see.
async fn any_changed(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    since: &str,
) -> Result<bool> {
    let any = client
        .query_typed_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {}.change_log c
                 WHERE c.source = to_regclass($1)::oid
                   AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot))",
                quote_ident(schema)
            ),
            &[(&table, Type::TEXT), (&since, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log"))?;
    Ok(any.get::<_, bool>(0))
}

/// Whether the change log records the pairs of geometry-only edits: logs installed by earlier
/// versions have none.
async fn has_pairs(client: &impl GenericClient, schema: &str) -> Result<bool> {
    Ok(client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                            WHERE attrelid = to_regclass($1) AND attname = 'moved_to')",
            &[(&format!("{}.change_log", quote_ident(schema)), Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log"))?
        .get::<_, bool>(0))
}

/// What a read of the change log in `schema` selects from: every logged geometry, the pairs of
/// geometry-only edits too where the log records them.
fn logged_geometries(schema: &str, pairs: bool) -> Geometries {
    let moved = if pairs {
        " || coalesce(c.moved_from, '{}') || coalesce(c.moved_to, '{}')"
    } else {
        ""
    };
    // One row per logged geometry, numbered within its log row (`c.id`, `v.k`) so that one can be
    // read again alone. The pairs of geometry-only edits come last: the one at `k` is a pair's
    // (`pair` from 1) old (`side` 0) or new (1) shape.
    //
    // A bulk statement's log row holds its geometries in arrays stored out of line. Each mention
    // of `c.old_geoms` reads and decompresses the whole array again, so the arrays and their
    // counts are taken once per log row (`a`, kept from being inlined by `OFFSET 0`): mentioned
    // per geometry, a 17,000-row UPDATE's read took 108 s, growing with the square of the rows.
    let counts = if pairs {
        "2 + coalesce(cardinality(c.old_geoms), 0) + coalesce(cardinality(c.new_geoms), 0),
                                    greatest(coalesce(cardinality(c.moved_from), 0), 1)"
    } else {
        "NULL::int8, NULL::int8"
    };
    Geometries {
        from: format!(
            "FROM {}.change_log c
             CROSS JOIN LATERAL (SELECT ARRAY[c.old_geom, c.new_geom] || coalesce(c.old_geoms, '{{}}')
                                        || coalesce(c.new_geoms, '{{}}'){moved},
                                        {counts} OFFSET 0) AS a(geoms, unpaired, pairs)
             CROSS JOIN LATERAL unnest(a.geoms) WITH ORDINALITY AS v(g, k)",
            quote_ident(schema)
        ),
        pairs,
        filter: format!("{LOG_FILTER} AND (c.everything OR v.g IS NOT NULL)"),
        log: format!("{}.change_log c", quote_ident(schema)),
    }
}

/// Runs `statement` under a savepoint of `client`'s transaction: its rows, or, when the server
/// refused it for its data (PROJ, GEOS: not a cancelled or broken statement), the error, with the
/// transaction rolled back to before it and still usable. `what` names the read in errors.
async fn refused_or_rows(
    client: &impl GenericClient,
    statement: &str,
    params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    what: &'static str,
) -> Result<std::result::Result<Vec<Row>, tokio_postgres::Error>> {
    let mut rows = Vec::new();
    let read = refused_or_each(client, statement, params, what, |row| {
        rows.push(row.clone())
    })
    .await?;
    Ok(read.map(|()| rows))
}

/// [`refused_or_rows`] handing each row to `each` as it arrives instead of collecting them; when
/// the server refuses the statement part way, `each` has seen some of its rows.
async fn refused_or_each(
    client: &impl GenericClient,
    statement: &str,
    params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    what: &'static str,
    mut each: impl FnMut(&Row),
) -> Result<std::result::Result<(), tokio_postgres::Error>> {
    let during = || DbError::during(what);
    client
        .batch_execute("SAVEPOINT oar_tiles_read")
        .await
        .map_err(during())?;
    let streamed = async {
        let rows = client
            .query_typed_raw(statement, params.iter().cloned())
            .await?;
        futures::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            each(&row);
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    match streamed.await {
        Ok(()) => {
            client
                .batch_execute("RELEASE SAVEPOINT oar_tiles_read")
                .await
                .map_err(during())?;
            Ok(Ok(()))
        }
        Err(err) if err.code().is_some_and(|code| !is_transient(code)) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT oar_tiles_read")
                .await
                .map_err(during())?;
            Ok(Err(err))
        }
        Err(err) => Err(during()(err)),
    }
}

/// Whether an error the server reported may pass if the statement is run again: the read one
/// geometry at a time is for geometries PostGIS refuses, not for a cancelled or broken statement.
fn is_transient(code: &tokio_postgres::error::SqlState) -> bool {
    let code = code.code();
    ["08", "53", "57", "40"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// The log rows a read of a layer's changes takes (`c`): its table's (`$1`), that the snapshot
/// `$2` did not see, and for a partition's layer (column `$3`, value `$4`) those that touched rows
/// of its value or were logged before its column's values were.
const LOG_FILTER: &str = "WHERE c.source = to_regclass($1)::oid
           AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot)
           AND ($3::text IS NULL OR c.partitions IS NULL OR NOT c.partitions ? $3
                OR c.partitions -> $3 ? $4)";

/// The logged geometries a read goes through: `from` names each `v.g`, `filter` is its `WHERE`
/// ([`LOG_FILTER`] and the geometry's presence); `log` is the log table alone, as `c`; `pairs`
/// whether the log has the pairs of geometry-only edits.
struct Geometries {
    from: String,
    filter: String,
    log: String,
    pairs: bool,
}

/// The statement reading each of the `geometries`, with `and` appended to its filter: its SRID and
/// box in that SRID, then, as the tiles draw it (the renderer's transform to Web Mercator), its
/// box, its representative point's box, its WKB (lines and polygons) and, for polygons, whether it
/// is valid.
fn projected_sql(geometries: &Geometries, and: &str) -> String {
    let merc = sql::web_mercator_per_row("v.g");
    let point = sql::web_mercator_per_row(&sql::representative_point("v.g"));
    // `m` and `p` are computed once per geometry (`OFFSET 0` keeps them from being inlined into
    // each use); `ST_IsValidDetail` does not raise a notice per invalid geometry as `ST_IsValid`.
    let pair = if geometries.pairs {
        "c.id, CASE WHEN v.k > a.unpaired THEN (v.k - a.unpaired - 1) % a.pairs + 1 END,
                CASE WHEN v.k > a.unpaired THEN (v.k - a.unpaired - 1) / a.pairs END"
    } else {
        "c.id, NULL::int8, NULL::int8"
    };
    format!(
        "SELECT c.everything, ST_SRID(v.g), ST_XMin(v.g), ST_YMin(v.g), ST_XMax(v.g), ST_YMax(v.g),
                ST_XMin(m.g), ST_YMin(m.g), ST_XMax(m.g), ST_YMax(m.g),
                ST_XMin(p.g), ST_YMin(p.g), ST_XMax(p.g), ST_YMax(p.g),
                CASE WHEN ST_Dimension(m.g) > 0 THEN ST_AsBinary(ST_Force2D(m.g)) END,
                CASE WHEN ST_Dimension(m.g) = 2 THEN (ST_IsValidDetail(m.g)).valid ELSE true END,
                {pair}
         {}
         CROSS JOIN LATERAL (SELECT {merc} AS g OFFSET 0) m
         CROSS JOIN LATERAL (SELECT {point} AS g OFFSET 0) p
         {}{and}",
        geometries.from, geometries.filter
    )
}

/// Four corners from column `first` on, when all are there.
fn corners(row: &Row, first: usize) -> Option<[f64; 4]> {
    let corner = |i: usize| row.get::<_, Option<f64>>(first + i);
    Some([corner(0)?, corner(1)?, corner(2)?, corner(3)?])
}

/// A geometry as [`projected_sql`] read it, with its place in a geometry-only edit; `None` for an
/// empty one, which draws nothing.
fn projected(row: &Row) -> Option<(ChangedBox, Option<PairSide>)> {
    let whole = corners(row, 6)?;
    // A geometry with a box has a point on it; its box stands in should PostGIS find none.
    let point = corners(row, 10).unwrap_or(whole);
    let valid = row.get::<_, Option<bool>>(15).unwrap_or(false);
    // Bytes PostGIS wrote are WKB; should they not parse (a curve), the box stands in.
    let shape = row
        .get::<_, Option<&[u8]>>(14)
        .and_then(|wkb| Shape::from_wkb(wkb, valid))
        .filter(|shape| !shape.is_empty())
        .map(Arc::new);
    let pair = match (row.get::<_, Option<i64>>(17), row.get::<_, Option<i64>>(18)) {
        (Some(number), Some(side)) => Some((row.get::<_, i64>(16), number, side == 1)),
        _ => None,
    };
    Some((
        ChangedBox {
            whole,
            point,
            shape,
            source: source_box(row),
            moved: None,
        },
        pair,
    ))
}

/// The geometry's box in its own SRID, from columns 1 to 5.
fn source_box(row: &Row) -> Option<SourceBox> {
    SourceBox::new(row.get::<_, Option<i32>>(1)?, corners(row, 2)?)
}

/// When each change to `tables` (quoted) that `since` did not see was committed, in seconds since
/// the Unix epoch. Without `track_commit_timestamp` the row's own clock stands in: at most the
/// transaction's length earlier than its commit, so latencies measured from it err on the long side.
async fn commit_times(
    client: &impl GenericClient,
    schema: &str,
    tables: &[String],
    since: &str,
) -> Result<Vec<f64>> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT extract(epoch FROM CASE WHEN current_setting('track_commit_timestamp')::bool
                     THEN coalesce(pg_xact_commit_timestamp(c.xid::xid), c.changed_at)
                     ELSE c.changed_at END)::float8
                 FROM {}.change_log c
                 WHERE c.source IN (SELECT to_regclass(t)::oid FROM unnest($1::text[]) t)
                   AND NOT pg_visible_in_snapshot(c.xid, $2::text::pg_snapshot)",
                quote_ident(schema)
            ),
            &[(&tables, Type::TEXT_ARRAY), (&since, Type::TEXT)],
        )
        .await
        .map_err(DbError::during("reading the change log's commit times"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
