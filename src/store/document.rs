//! Reading a file an output keeps (TileJSON, `partitions.json`, the state, a tree's tile) when
//! whoever could write the folder may have planted something else at its name: a link to
//! `/dev/zero` or another device, a named pipe, a sparse file of terabytes. `std::fs::read` reads
//! any of them until memory runs out (or, for a pipe, waits for ever); here only a regular file
//! within a cap is read, and an error names the file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The cap on a document: `tiles.json`, `partitions.json`, a state. Real ones are kilobytes; an
/// index of a hundred thousand partitions is some tens of megabytes.
pub const DOCUMENT_CAP: u64 = 64 << 20;

/// The cap on a list a run keeps (an outbox's batch, a shard part's tiles, a prefix's tile
/// manifest): millions of lines of tens of bytes.
pub const LIST_CAP: u64 = 1 << 30;

/// The cap on a tile file of a tree, the size past which `validate` refuses to inflate a tile.
pub const TILE_FILE_CAP: u64 = 256 << 20;

/// The bytes of the regular file at `path` (links followed), at most `cap` of them; `None` when
/// nothing is there. A device, pipe, socket or folder, or a file larger than `cap`, is an error
/// naming the file.
pub fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let fail = |message: String| Error::output(path, message);
    // Non-blocking, so that opening a named pipe with no writer returns at once rather than
    // waiting for one; the flag changes nothing for a regular file's reads.
    let file = match File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
    };
    let metadata = file
        .metadata()
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a folder"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_fifo() {
            "a named pipe"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(fail(format!(
            "is not a regular file ({what}): refused, as reading it could take all memory or \
             never end"
        )));
    }
    let too_large = |size: u64| {
        let cap = if cap.is_multiple_of(1 << 20) {
            format!("{} MiB", cap >> 20)
        } else {
            format!("{cap}-byte")
        };
        fail(format!(
            "is {size} bytes, past the {cap} cap on what is read from it: refused"
        ))
    };
    if metadata.len() > cap {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // A file that grows while it is read stops at the cap all the same.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_within_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiles.json");
        assert!(read_capped(&path, 10).unwrap().is_none());
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_capped(&path, 10).unwrap().unwrap(), b"0123456789");
        let error = read_capped(&path, 9).unwrap_err().to_string();
        assert!(
            error.contains("is 10 bytes, past the 9-byte cap"),
            "{error}"
        );
        let error = read_capped(dir.path(), 10).unwrap_err().to_string();
        assert!(error.contains("not a regular file (a folder)"), "{error}");
        let error = read_capped(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/dev/zero") && error.contains("(a device)"),
            "{error}"
        );
    }
}
