//! The MBTiles store beside an archive, which holds its tiles, the job state and what the
//! archive was last written from: where it lies and how it is opened.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// The MBTiles store that backs an archive.
pub fn store_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".store.mbtiles");
    archive.with_file_name(name)
}

/// Opens the store at `store`, an error naming it otherwise.
pub(super) fn open_store(store: &Path, flags: OpenFlags) -> Result<Connection> {
    Connection::open_with_flags(store, flags)
        .map_err(|e| Error::output(store, format!("cannot open the tile store: {e}")))
}
