//! Temporary tile files (`.Y.ext.PID.tmp`) that a killed writer left beside the tiles.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::entries::{parse_name, read_dir_if_exists};
use crate::error::Result;
use crate::store::durable;
use crate::tile::TileCoord;

/// Removes the temporary tile files the process `pid` (a killed run) left in the tree at `root`:
/// in the columns of its `planned` tiles, or in every column when it planned everything. A
/// column that is a link is not entered; nothing but that process's temporaries is removed.
pub(crate) fn remove_temporaries_of(
    root: &Path,
    pid: u32,
    planned: Option<&[TileCoord]>,
) -> Result<()> {
    let columns: Vec<PathBuf> = match planned {
        Some(tiles) => tiles
            .iter()
            .map(|t| (t.z(), t.x()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(z, x)| root.join(z.to_string()).join(x.to_string()))
            .collect(),
        None => {
            let mut columns = Vec::new();
            for zoom in read_dir_if_exists(root)? {
                if parse_name::<u8>(&zoom.file_name(), "").is_none()
                    || !zoom.file_type().is_ok_and(|t| t.is_dir())
                {
                    continue;
                }
                for column in read_dir_if_exists(&zoom.path())? {
                    if parse_name::<u32>(&column.file_name(), "").is_some()
                        && column.file_type().is_ok_and(|t| t.is_dir())
                    {
                        columns.push(column.path());
                    }
                }
            }
            columns
        }
    };
    for column in columns {
        if !std::fs::symlink_metadata(&column).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        for entry in read_dir_if_exists(&column)? {
            if durable::temporary_writer(&entry.file_name()) == Some(pid) {
                let path = entry.path();
                durable::remove_file_if_there(&path)?;
            }
        }
    }
    Ok(())
}
