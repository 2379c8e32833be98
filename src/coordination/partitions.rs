//! The index of a partitioned tileset (`partitions.json`): one entry per value with its own
//! pyramid, so a client can list them; read before a run (to know which values are new or gone)
//! and written after it. Also removes what a vanished value's emptied output leaves behind.

use serde::{Deserialize, Serialize};

use crate::config::{is_partition_segment, IndexLocation, StoreConfig};
use crate::error::{Error, Result};
use crate::store::document::{read_capped, DOCUMENT_CAP};
use crate::store::durable;
use crate::store::ObjectHeaders;

/// `partitions.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionIndex {
    /// The tileset's name.
    pub tileset: String,
    /// The column it is partitioned by.
    pub partition_by: String,
    /// One entry per value, ordered by value.
    pub partitions: Vec<PartitionEntry>,
    /// The snapshot (`pg_snapshot` text) whose changes every partition reflects: the next
    /// `seed --dirty` or `watch` cycle reads the change log since it once, and reseeds only the
    /// values those changes touched. `None` in indexes of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
}

/// One value of a partitioned tileset and its pyramid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// The value, as the column's text form.
    pub value: String,
    /// The value escaped for paths and keys: the subdirectory or key prefix of a tree, the part
    /// between the name and the extension of a file (`facilities.BD.mbtiles`).
    pub path: String,
    /// Features holding the value, over all layers.
    pub features: i64,
    /// Their extent `[west, south, east, north]` in degrees.
    pub bounds: Option<[f64; 4]>,
    /// Tiles the partition's output holds.
    pub tiles: u64,
}

/// Reads the index at `location`; `None` when there is none yet.
///
/// Boxed, as every command that reads outputs awaits it before anything else.
pub fn read_index<'a>(
    location: &'a IndexLocation,
    store_settings: &'a StoreConfig,
) -> futures::future::BoxFuture<'a, Result<Option<PartitionIndex>>> {
    Box::pin(read_index_now(location, store_settings))
}

async fn read_index_now(
    location: &IndexLocation,
    store_settings: &StoreConfig,
) -> Result<Option<PartitionIndex>> {
    let (bytes, name) = match location {
        IndexLocation::File(path) => match read_capped(path, DOCUMENT_CAP)? {
            Some(bytes) => (bytes, path.display().to_string()),
            None => return Ok(None),
        },
        IndexLocation::Object { bucket, key } => {
            let name = format!("{bucket}/{key}");
            let store = crate::store::open(bucket, store_settings)
                .await
                .map_err(|e| Error::output_caused(&name, e))?;
            match store
                .get(key, DOCUMENT_CAP)
                .await
                .map_err(|e| Error::output_caused(&name, e))?
            {
                Some(bytes) => (bytes, name),
                None => return Ok(None),
            }
        }
    };
    let index: PartitionIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Error::output(&name, format!("is not a partition index: {e}")))?;
    // Every path is joined to the output's (a run removes a vanished value's output by it), so
    // one that is not an escaped value is refused before any is used.
    if let Some(entry) = index
        .partitions
        .iter()
        .find(|entry| !is_partition_segment(&entry.path))
    {
        return Err(Error::output(
            name,
            format!(
                "partition `{}` has the path `{}`, which no partition value escapes to (letters, \
                 digits, `-`, `_`, `~`): refused, as it could lead outside the output",
                entry.value, entry.path
            ),
        ));
    }
    Ok(Some(index))
}

/// Writes the index to `location`, replacing it whole (by rename, or one PUT).
pub async fn write_index(
    location: &IndexLocation,
    store_settings: &StoreConfig,
    cache_control: &str,
    index: &PartitionIndex,
) -> Result<()> {
    let json = serde_json::to_vec_pretty(index).expect("the index serializes");
    match location {
        IndexLocation::File(path) => durable::replace(path, &json)
            .map_err(|e| Error::output(path, format!("cannot write it: {e}"))),
        IndexLocation::Object { bucket, key } => {
            let name = format!("{bucket}/{key}");
            let store = crate::store::open(bucket, store_settings)
                .await
                .map_err(|e| Error::output_caused(&name, e))?;
            let headers = ObjectHeaders {
                content_type: "application/json",
                cache_control,
                content_encoding: None,
            };
            store
                .put(key, json, headers, false)
                .await
                .map_err(|e| Error::output_caused(&name, e))?;
            Ok(())
        }
    }
}
