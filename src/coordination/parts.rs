//! A shard's part of a sharded run, as the sinks that write parts and `finalize` that reads them
//! both know it: which shard it is, its record, and the list of tiles it holds. (Where the parts
//! are kept and read back is `shards.rs`.)

use std::collections::HashMap;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::TilesetMetadata;
use crate::error::{Error, Result};
use crate::job::ShardSpec;

/// The folder of a tree's shard files.
pub const TREE_FOLDER: &str = ".oar-tiles-shards";

/// The folder, under a prefix of a remote store, of its shard objects.
pub const PREFIX_FOLDER: &str = ".oar-tiles/shards";

/// The version of the part record's format.
pub const PART_VERSION: u32 = 1;

/// Which shard a sink writes for, under which plan: set when a directory or prefix sink writes a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartOf {
    /// The shard.
    pub spec: ShardSpec,
    /// The identity of the plan the shard ran under ([`plan_id`]).
    pub plan: String,
}

impl PartOf {
    /// The part's file or object name, with `extension`.
    pub fn name(&self, extension: &str) -> String {
        part_name(self.spec, extension)
    }
}

/// `part-I-of-N.EXT`.
pub fn part_name(spec: ShardSpec, extension: &str) -> String {
    format!("part-{}-of-{}.{extension}", spec.index, spec.count)
}

/// The identity of a stored plan: the MD5 of its text, so parts of another plan are told apart.
pub fn plan_id(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// What a finished shard records about its part of the output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRecord {
    /// Format version, [`PART_VERSION`].
    pub version: u32,
    /// `I/N`.
    pub shard: String,
    /// The plan the shard ran under ([`plan_id`]).
    pub plan: String,
    /// The shard's watermark, as an output's state records it.
    pub state: String,
    /// The tileset's metadata, for the TileJSON and the sweep that `finalize` writes and does.
    pub metadata: TilesetMetadata,
    /// How many tiles the part's tile list holds.
    pub tiles: u64,
}

impl PartRecord {
    /// The record of a finished shard.
    pub fn new(part: &PartOf, state: &str, metadata: &TilesetMetadata, tiles: u64) -> Self {
        PartRecord {
            version: PART_VERSION,
            shard: part.spec.to_string(),
            plan: part.plan.clone(),
            state: state.to_string(),
            metadata: metadata.clone(),
            tiles,
        }
    }

    /// The record as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("part records serialize")
    }

    pub(super) fn from_json(bytes: &[u8], source: &str) -> Result<PartRecord> {
        let record: PartRecord = serde_json::from_slice(bytes)
            .map_err(|e| Error::output(source, format!("not a shard's part record: {e}")))?;
        if record.version != PART_VERSION {
            return Err(Error::output(
                source,
                format!(
                    "part record format version {}, this oar-tiles reads version {PART_VERSION}",
                    record.version
                ),
            ));
        }
        Ok(record)
    }
}

/// A tile list: each tile's packed key and the MD5 of its bytes (zeros when unknown),
/// gzip-compressed. Prefixes in remote stores keep their tile manifest in the same form.
pub fn encode_tiles(tiles: &HashMap<u64, [u8; 16]>) -> Vec<u8> {
    let mut entries: Vec<(&u64, &[u8; 16])> = tiles.iter().collect();
    entries.sort_unstable();
    let mut raw = Vec::with_capacity(entries.len() * 24);
    for (key, md5) in entries {
        raw.extend_from_slice(&key.to_le_bytes());
        raw.extend_from_slice(md5);
    }
    crate::encode::gzip(&raw, crate::encode::DEFAULT_LEVEL)
}

/// Reads a tile list; `None` when the bytes are not one.
pub fn decode_tiles(bytes: &[u8]) -> Option<HashMap<u64, [u8; 16]>> {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .ok()?;
    if raw.len() % 24 != 0 {
        return None;
    }
    Some(
        raw.chunks_exact(24)
            .map(|entry| {
                let key = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
                let md5: [u8; 16] = entry[8..].try_into().expect("16 bytes");
                (key, md5)
            })
            .collect(),
    )
}
