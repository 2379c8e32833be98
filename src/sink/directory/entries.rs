//! The tree's own directories and files: checks that refuse a link below the root, listings, and
//! names read as numbers.

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::document::TILE_FILE_CAP;

/// What a link inside the tree is told.
pub(super) const LINK_REFUSED: &str =
    "is a symbolic link: oar-tiles writes and deletes tiles only \
    in the tree's own directories, never through a link (only the output's root may be one); \
    replace it with a directory";

/// The entries of `dir`; none when it does not exist.
pub(super) fn read_dir_if_exists(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::output(dir, format!("cannot list it: {e}"))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(Error::output(dir, format!("cannot list it: {err}"))),
    }
}

/// Checks that `dir`, inside the tree, is a directory of the tree's own and not a link; creates it
/// when missing and `create`. `Some(created)`, or `None` when it is missing and not created.
pub(super) fn tree_dir(dir: &Path, create: bool) -> Result<Option<bool>> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(Some(false)),
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::output(dir, LINK_REFUSED)),
        Ok(_) => Err(Error::output(dir, "exists and is not a directory")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => {
            match std::fs::create_dir(dir) {
                Ok(()) => Ok(Some(true)),
                // Made by someone else meanwhile: check what it is.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => tree_dir(dir, false),
                Err(err) => Err(Error::output(dir, format!("cannot create it: {err}"))),
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::output(dir, format!("cannot read it: {err}"))),
    }
}

/// Removes a symbolic link at `path` (never its target), so the file can be made there anew.
pub(super) fn remove_if_link(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(path)
            .map_err(|e| Error::output(path, format!("cannot remove this link: {e}"))),
        _ => Ok(()),
    }
}

/// What is at a tile's name, against the bytes about to be written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// A file (not a link) holding exactly those bytes.
    Same,
    /// A file with other bytes, and those bytes where they were asked for and could be read.
    OtherFile(Option<Vec<u8>>),
    /// Nothing.
    NoFile,
    /// A link or something else that is not a regular file.
    NotAFile,
}

/// What `path` holds against `data`; with `keep_old`, a file's other bytes too (the tree's digest
/// takes them out), so a replaced tile is read once. The old bytes are read only when the sizes
/// match or they are kept, in one read of the size the name's metadata gave (a file changing
/// under the writer's lock is no concern), rather than `std::fs::read`'s extra metadata call and
/// end-of-file read; a file past [`TILE_FILE_CAP`] is not read.
pub(super) fn found(path: &Path, data: &[u8], keep_old: bool) -> Found {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Found::NoFile;
    };
    if !meta.is_file() {
        return Found::NotAFile;
    }
    let same_size = meta.len() == data.len() as u64;
    if (!same_size && !keep_old) || meta.len() > TILE_FILE_CAP {
        return Found::OtherFile(None);
    }
    let mut existing = vec![0; meta.len() as usize];
    let read = std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut existing));
    match read {
        Ok(()) if existing == data => Found::Same,
        Ok(()) if keep_old => Found::OtherFile(Some(existing)),
        _ => Found::OtherFile(None),
    }
}

/// Whether `path` is a file (not a link) holding exactly `data`.
pub(super) fn holds(path: &Path, data: &[u8]) -> bool {
    found(path, data, false) == Found::Same
}

/// `name` without `suffix`, parsed: a zoom, column or row number.
pub(super) fn parse_name<T: std::str::FromStr>(name: &std::ffi::OsStr, suffix: &str) -> Option<T> {
    name.to_str()?.strip_suffix(suffix)?.parse().ok()
}
