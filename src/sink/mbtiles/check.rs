//! The MBTiles 1.3 container check (<https://github.com/mapbox/mbtiles-spec/blob/master/1.3/spec.md>):
//! the `metadata` and `tiles` tables, the required keys and what they say, one row per tile at
//! coordinates that exist, tiles stored as `format` and `compression` say, SQLite's own integrity
//! check, and no unfinished write beside the file.
//!
//! The file is opened read-only and never changed. With a journal or write-ahead log beside it
//! SQLite would want to roll back or replay it first, which a read-only connection cannot do, so
//! then (and for a file in WAL mode, whose reader would create its `-shm` file) it is opened
//! `immutable`: what is read is the file exactly as it lies on disk.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sink::check::{
    check_bounds, check_center, check_vector_layers, check_zooms, gzip_holds_mvt, Finding,
    Findings, Magic, MAX_SPEC_ZOOM,
};
use crate::tile::TileCoord;

/// The first bytes of every SQLite 3 database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Bytes of each tile read to tell its compression and, inflated, whether it holds MVT.
const TILE_START: i64 = 512;

/// Checks the MBTiles file at `path`. Fails only when there is no file to read.
pub fn check_mbtiles(path: &Path) -> Result<Vec<Finding>> {
    let header = read_start(path)?;
    let mut findings = Findings::default();
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        findings.add("the file is not an SQLite 3 database, which MBTiles is");
        return Ok(findings.finish());
    }
    let unfinished = check_journals(&mut findings, path);
    // Bytes 18 and 19 are the file format's write and read versions; 2 means WAL.
    let wal_mode = header[18] == 2 || header[19] == 2;
    let connection = match open(path, unfinished || wal_mode) {
        Ok(connection) => connection,
        Err(e) => {
            findings.add(format!("SQLite cannot open it: {e}"));
            return Ok(findings.finish());
        }
    };
    check_integrity(&mut findings, &connection);
    let metadata = check_metadata(&mut findings, &connection);
    check_tiles(&mut findings, &connection, metadata.as_ref());
    Ok(findings.finish())
}

fn read_start(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::output(path, "no such MBTiles file"),
        _ => Error::output(path, format!("cannot read it: {e}")),
    };
    let file = std::fs::File::open(path).map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(Error::output(
            path,
            "is not a file, as an MBTiles output is",
        ));
    }
    let mut start = Vec::with_capacity(100);
    file.take(100).read_to_end(&mut start).map_err(fail)?;
    Ok(start)
}

/// Reports a hot rollback journal or a write-ahead log with content beside the file; says
/// whether there is either.
fn check_journals(findings: &mut Findings, path: &Path) -> bool {
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let mut unfinished = false;
    let journal = beside("-journal");
    // An empty journal (journal_mode TRUNCATE) or one whose header is zeroed (PERSIST) is done.
    if let Ok(bytes) = read_prefix(&journal, 8) {
        if bytes.iter().any(|b| *b != 0) {
            unfinished = true;
            findings.add(format!(
                "a hot rollback journal lies beside the file ({}): a write was interrupted or is \
                 still running, and the file is not in a committed state until a writer rolls it \
                 back; a copy of the file alone keeps the half-done write",
                journal.display()
            ));
        }
    }
    let wal = beside("-wal");
    if let Ok(size) = std::fs::metadata(&wal).map(|m| m.len()) {
        if size > 0 {
            unfinished = true;
            findings.add(format!(
                "a write-ahead log with {size} bytes lies beside the file ({}): writes not yet \
                 checkpointed into it, which a copy of the file alone loses",
                wal.display()
            ));
        }
    }
    unfinished
}

fn read_prefix(path: &Path, len: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(len)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn open(path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    if !immutable {
        return Connection::open_with_flags(path, flags);
    }
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| rusqlite::Error::InvalidPath(format!("{}: {e}", path.display()).into()))?;
    // The URL form percent-encodes what SQLite's URI parser would read as a query or fragment.
    let mut uri = url::Url::from_file_path(&absolute)
        .map_err(|()| rusqlite::Error::InvalidPath(absolute.clone()))?;
    uri.set_query(Some("immutable=1"));
    Connection::open_with_flags(uri.as_str(), flags)
}

fn check_integrity(findings: &mut Findings, connection: &Connection) {
    let rows: rusqlite::Result<Vec<String>> = connection
        .prepare("PRAGMA integrity_check")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect()
        });
    match rows {
        Ok(rows) if rows == ["ok"] => {}
        Ok(rows) => {
            for row in rows {
                findings.under("SQLite integrity", None, || {
                    format!("SQLite's integrity check: {row}")
                });
            }
        }
        Err(e) => findings.add(format!("SQLite's integrity check cannot run: {e}")),
    }
}

/// Reports a missing `table` (a table or view) or one without exactly `columns`; says whether
/// it can be read as MBTiles reads it.
fn check_table(
    findings: &mut Findings,
    connection: &Connection,
    table: &str,
    columns: &[&str],
) -> bool {
    let found: rusqlite::Result<Vec<String>> = connection
        .prepare("SELECT lower(name) FROM pragma_table_info(?1)")
        .and_then(|mut statement| statement.query_map([table], |row| row.get(0))?.collect());
    let found = match found {
        Ok(found) if found.is_empty() => {
            findings.add(format!(
                "there is no `{table}` table or view, which MBTiles requires"
            ));
            return false;
        }
        Ok(found) => found,
        Err(e) => {
            findings.add(format!("the `{table}` table cannot be read: {e}"));
            return false;
        }
    };
    let missing: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !found.iter().any(|f| f == c))
        .collect();
    let extra: Vec<&str> = found
        .iter()
        .map(String::as_str)
        .filter(|f| !columns.contains(f))
        .collect();
    if !missing.is_empty() {
        findings.add(format!(
            "the `{table}` table has no column {}",
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        findings.add(format!(
            "the `{table}` table has columns {} besides {}: MBTiles says it yields exactly those",
            extra.join(", "),
            columns.join(", ")
        ));
    }
    missing.is_empty()
}

/// What the metadata says, as far as the tiles check needs it.
struct Stated {
    format: Option<String>,
    compression: Option<String>,
    zooms: Option<(u8, u8)>,
}

fn check_metadata(findings: &mut Findings, connection: &Connection) -> Option<Stated> {
    if !check_table(findings, connection, "metadata", &["name", "value"]) {
        return None;
    }
    let mut rows: BTreeMap<String, Vec<SqlValue>> = BTreeMap::new();
    let read = connection
        .prepare("SELECT name, value FROM metadata")
        .and_then(|mut statement| {
            let mut cursor = statement.query([])?;
            while let Some(row) = cursor.next()? {
                let name = match row.get::<_, SqlValue>(0)? {
                    SqlValue::Text(name) => name,
                    other => format!("{other:?}"),
                };
                rows.entry(name).or_default().push(row.get(1)?);
            }
            Ok(())
        });
    if let Err(e) = read {
        findings.add(format!("the `metadata` table cannot be read: {e}"));
        return None;
    }
    let mut text = BTreeMap::new();
    for (name, values) in rows {
        if values.len() > 1 {
            findings.add(format!(
                "metadata has {} rows named `{name}`: readers take any one of them",
                values.len()
            ));
        }
        let value = match &values[0] {
            SqlValue::Text(value) => Some(value.clone()),
            SqlValue::Integer(value) => Some(value.to_string()),
            SqlValue::Real(value) => Some(value.to_string()),
            SqlValue::Null => None,
            SqlValue::Blob(_) => {
                findings.add(format!("metadata `{name}` is a BLOB, not text"));
                None
            }
        };
        if let Some(value) = value {
            text.insert(name, value);
        }
    }
    Some(check_values(findings, &text))
}

/// The rules on the metadata's values.
fn check_values(findings: &mut Findings, metadata: &BTreeMap<String, String>) -> Stated {
    let get = |name: &str| metadata.get(name).map(|v| v.trim());
    if get("name").is_none_or(str::is_empty) {
        findings.add("metadata has no `name`, which MBTiles requires");
    }
    let format = get("format");
    match format {
        None => findings.add(
            "metadata has no `format` (png, jpg, pbf or mvt), which MBTiles requires: readers \
             cannot tell what the tiles are",
        ),
        Some("png" | "jpg" | "pbf" | "mvt") => {}
        Some(other) => findings.add(format!(
            "metadata `format` is `{other}`, not one of MBTiles 1.3's png, jpg, pbf, mvt"
        )),
    }
    let vector = matches!(format, Some("pbf" | "mvt"));
    match (get("json"), vector) {
        (None, true) => findings.add(
            "metadata has no `json` with `vector_layers`, which MBTiles requires of vector tiles",
        ),
        (Some(json), _) => match serde_json::from_str::<Value>(json) {
            Ok(json) if json.is_object() => {
                if vector || !json["vector_layers"].is_null() {
                    let zooms = stated_zooms(findings, metadata, false);
                    check_vector_layers(findings, "metadata `json`", &json["vector_layers"], zooms);
                }
            }
            Ok(_) => findings.add("metadata `json` is not a JSON object"),
            Err(e) => findings.add(format!("metadata `json` is not valid JSON: {e}")),
        },
        (None, false) => {}
    }
    let zooms = stated_zooms(findings, metadata, true);
    let bounds = get("bounds").and_then(|bounds| match numbers::<4>(bounds) {
        Some(b) => check_bounds(findings, "metadata", b),
        None => {
            findings.add(format!(
                "metadata `bounds` `{bounds}` is not four numbers (left,bottom,right,top)"
            ));
            None
        }
    });
    if let Some(center) = get("center") {
        match numbers::<3>(center) {
            Some([lon, lat, zoom]) => check_center(
                findings,
                "metadata",
                (lon, lat, zoom),
                bounds,
                zooms.unwrap_or((0, MAX_SPEC_ZOOM)),
            ),
            None => findings.add(format!(
                "metadata `center` `{center}` is not three numbers (longitude,latitude,zoom)"
            )),
        }
    }
    if let Some(scheme) = get("scheme").filter(|s| *s != "tms") {
        findings.add(format!(
            "metadata `scheme` is `{scheme}`: MBTiles rows are TMS, so only `tms` is right"
        ));
    }
    Stated {
        format: format.map(str::to_string),
        compression: get("compression").map(str::to_string),
        zooms,
    }
}

/// `minzoom` and `maxzoom` when both parse; `report` says whether to report what is wrong.
fn stated_zooms(
    findings: &mut Findings,
    metadata: &BTreeMap<String, String>,
    report: bool,
) -> Option<(u8, u8)> {
    let mut zoom = |key: &str| {
        let value = metadata.get(key)?.trim();
        let zoom = value.parse::<u8>().ok();
        if zoom.is_none() && report {
            findings.add(format!("metadata `{key}` `{value}` is not a zoom level"));
        }
        zoom
    };
    let (min, max) = (zoom("minzoom"), zoom("maxzoom"));
    let (min, max) = (min?, max?);
    if report {
        check_zooms(findings, "metadata", min, max);
    }
    Some((min, max))
}

fn numbers<const N: usize>(text: &str) -> Option<[f64; N]> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|part| part.trim().parse::<f64>().ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

/// The compressions `format` and `compression` allow for the tiles, and what to call that.
fn expected_magic(stated: &Stated) -> Option<(Vec<Magic>, String)> {
    let format = stated.format.as_deref()?;
    let expected = match (format, stated.compression.as_deref()) {
        ("png", _) => (vec![Magic::Png], "PNG".to_string()),
        ("jpg", _) => (vec![Magic::Jpeg], "JPEG".to_string()),
        // What tippecanoe and martin write, and what they expect when `compression` is absent
        // (MBTiles 1.3 says "zlib-deflated", so zlib is accepted too).
        ("pbf" | "mvt", None) => (
            vec![Magic::Gzip, Magic::Zlib],
            format!("gzip-compressed MVT, as `format` {format} says"),
        ),
        ("pbf" | "mvt", Some(compression)) => {
            let magic = match compression {
                "gzip" => Magic::Gzip,
                "zlib" | "deflate" => Magic::Zlib,
                "zstd" => Magic::Zstd,
                "none" | "identity" | "" => Magic::Other,
                _ => return None,
            };
            (
                vec![magic],
                format!("{}, as `compression` {compression} says", magic.name()),
            )
        }
        _ => return None,
    };
    Some(expected)
}

fn check_tiles(findings: &mut Findings, connection: &Connection, stated: Option<&Stated>) {
    let columns = ["zoom_level", "tile_column", "tile_row", "tile_data"];
    if !check_table(findings, connection, "tiles", &columns) {
        return;
    }
    if let Some(compression) = stated.and_then(|s| s.compression.as_deref()) {
        if !["gzip", "zlib", "deflate", "zstd", "none", "identity", ""].contains(&compression) {
            findings.add(format!(
                "metadata `compression` `{compression}` is not a compression readers know"
            ));
        }
    }
    if !has_unique_index(connection) {
        check_duplicates(findings, connection);
    }
    let expected = stated.and_then(expected_magic);
    let statement = format!(
        "SELECT zoom_level, tile_column, tile_row, typeof(tile_data), substr(tile_data, 1, {TILE_START}) FROM tiles"
    );
    let mut lowest: Option<(i64, Option<TileCoord>)> = None;
    let mut highest: Option<(i64, Option<TileCoord>)> = None;
    let scanned = connection.prepare(&statement).and_then(|mut statement| {
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let (z, x, y): (SqlValue, SqlValue, SqlValue) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let (SqlValue::Integer(z), SqlValue::Integer(x), SqlValue::Integer(y)) = (&z, &x, &y)
            else {
                findings.under("tile coordinates not integers", None, || {
                    format!(
                        "a tiles row has zoom_level {z:?}, tile_column {x:?}, tile_row {y:?}: \
                         all three must be integers"
                    )
                });
                continue;
            };
            let (z, x, y) = (*z, *x, *y);
            let side = (0..=i64::from(MAX_SPEC_ZOOM))
                .contains(&z)
                .then(|| 1i64 << z);
            if !side.is_some_and(|side| (0..side).contains(&x) && (0..side).contains(&y)) {
                findings.under("tile coordinates out of range", None, || {
                    format!(
                        "a tiles row has zoom_level {z}, tile_column {x}, tile_row {y}, which \
                         address no tile: zoom_level lies in 0..={MAX_SPEC_ZOOM} and tile_column \
                         and tile_row in 0..2^zoom_level (TMS)"
                    )
                });
                continue;
            }
            let tile = TileCoord::from_tms(z, x, y).ok();
            if lowest.is_none_or(|(low, _)| z < low) {
                lowest = Some((z, tile));
            }
            if highest.is_none_or(|(high, _)| z > high) {
                highest = Some((z, tile));
            }
            let kind: String = row.get(3)?;
            match kind.as_str() {
                "blob" => {}
                // Empty tiles are the tile check's to report.
                "null" => continue,
                _ => {
                    findings.under("tile_data not a BLOB", tile, || {
                        format!("tile_data is {kind}, not a BLOB")
                    });
                    continue;
                }
            }
            let start: Vec<u8> = row.get(4)?;
            if let (Some((allowed, what)), false) = (&expected, start.is_empty()) {
                check_tile_start(findings, tile, &start, allowed, what);
            }
        }
        Ok(())
    });
    if let Err(e) = scanned {
        findings.add(format!("the `tiles` table cannot be read through: {e}"));
    }
    if let Some((min, max)) = stated.and_then(|s| s.zooms) {
        if let Some((z, tile)) = lowest.filter(|(z, _)| *z < i64::from(min)) {
            findings.under("tiles outside the metadata's zooms", tile, || {
                format!(
                    "the tiles table holds tiles at zoom {z}, below metadata `minzoom` {min}: \
                     clients never ask for them"
                )
            });
        }
        if let Some((z, tile)) = highest.filter(|(z, _)| *z > i64::from(max)) {
            findings.under("tiles outside the metadata's zooms", tile, || {
                format!(
                    "the tiles table holds tiles at zoom {z}, above metadata `maxzoom` {max}: \
                     clients overzoom from {max} and never ask for them"
                )
            });
        }
    }
}

fn check_tile_start(
    findings: &mut Findings,
    tile: Option<TileCoord>,
    start: &[u8],
    allowed: &[Magic],
    what: &str,
) {
    let magic = Magic::of(start);
    if !allowed.contains(&magic) {
        findings.under("tile compression", tile, || {
            format!("the tile holds {}, not {what}", magic.name())
        });
    } else if magic == Magic::Gzip && gzip_holds_mvt(start) == Some(false) && what.contains("MVT") {
        findings.under("tile format", tile, || {
            "the tile's gzip stream does not inflate to MVT, which `format` says it holds".into()
        });
    }
}

/// Whether a unique index covers exactly (zoom_level, tile_column, tile_row).
fn has_unique_index(connection: &Connection) -> bool {
    let wanted: HashSet<String> = ["zoom_level", "tile_column", "tile_row"]
        .map(String::from)
        .into();
    let indexes: rusqlite::Result<Vec<String>> = connection
        .prepare("SELECT name FROM pragma_index_list('tiles') WHERE \"unique\" = 1")
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect());
    indexes.unwrap_or_default().into_iter().any(|index| {
        let columns: rusqlite::Result<HashSet<String>> = connection
            .prepare("SELECT lower(name) FROM pragma_index_info(?1)")
            .and_then(|mut s| s.query_map([&index], |row| row.get(0))?.collect());
        columns.is_ok_and(|columns| columns == wanted)
    })
}

/// Without a unique index, looks for two rows of one tile.
fn check_duplicates(findings: &mut Findings, connection: &Connection) {
    let found = connection
        .prepare(
            "SELECT zoom_level, tile_column, tile_row, count(*) FROM tiles
             GROUP BY zoom_level, tile_column, tile_row HAVING count(*) > 1",
        )
        .and_then(|mut statement| {
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                let (z, x, y, count): (i64, i64, i64, i64) =
                    (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                let tile = TileCoord::from_tms(z, x, y).ok();
                findings.under("duplicate tiles", tile, || {
                    format!(
                        "the tiles table holds {count} rows for this tile (zoom_level {z}, \
                         tile_column {x}, tile_row {y}) and has no unique index on (zoom_level, \
                         tile_column, tile_row): readers get any one of them"
                    )
                });
            }
            Ok(())
        });
    if let Err(e) = found {
        findings.add(format!(
            "the `tiles` table cannot be searched for duplicates: {e}"
        ));
    }
}

#[cfg(test)]
mod tests;
