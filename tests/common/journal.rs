//! SQLite files as a crash leaves them: an MBTiles output whose writer was killed mid-transaction,
//! with the hot rollback journal a reader must roll back.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// `path` with `suffix` appended to its name: SQLite's `-journal` beside a database.
pub fn companion(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// Leaves `target` as a writer killed in the middle of a large transaction leaves it: pages of the
/// transaction already in the file, and the hot rollback journal that undoes them beside it. The
/// writer works on a copy, whose file and journal are copied over `target` while it is still in
/// its transaction: the bytes a SIGKILL at that moment would leave on disk, with no process holding
/// a lock on them.
pub fn leave_a_killed_writers_journal(target: &Path) {
    let work = companion(target, ".writer");
    std::fs::copy(target, &work).unwrap();
    let writer = Connection::open(&work).unwrap();
    // A tiny page cache makes SQLite spill changed pages into the file before the commit.
    writer
        .execute_batch(
            "PRAGMA cache_size = 1; BEGIN;
             UPDATE tiles SET tile_data = randomblob(length(tile_data) + 700);
             DELETE FROM metadata;",
        )
        .unwrap();
    let journal = companion(&work, "-journal");
    assert!(journal.exists(), "the writer has a rollback journal");
    std::fs::copy(&work, target).unwrap();
    std::fs::copy(&journal, companion(target, "-journal")).unwrap();
    drop(writer);
    let _ = std::fs::remove_file(&work);
}
