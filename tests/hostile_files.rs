//! Outputs an attacker (or an accident) shaped to hurt their reader: a gzip bomb in a PMTiles
//! archive's metadata or leaf directory, documents that are devices or sparse giants, a partition
//! index whose paths leave the output, an MBTiles file with a killed writer's hot journal. Every
//! input is built here, byte for byte, so the tests need no database. `validate` and `inspect` run
//! under an address-space limit (`prlimit --as`): code that reads without bound fails there at
//! once instead of taking the machine's memory, and a fixed one never comes near it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common::journal::leave_a_killed_writers_journal;
use crate::common::run::{run_from, single_layer_config, wrapped_command, Run};
use crate::common::s3::S3Server;

/// Far above what validating or inspecting these small inputs needs, far below what reading a
/// device or a bomb without a cap takes.
const ADDRESS_SPACE: &str = "--as=2147483648";

/// What the bombs inflate to: past the cap on a PMTiles directory or metadata (32 MiB) while
/// taking about 40 KiB on disk.
const BOMB_BYTES: usize = 40 << 20;

/// `oar-tiles ARGS` under the address-space limit.
fn limited(args: &[&str]) -> Run {
    limited_with(args, &[])
}

/// [`limited`] with extra environment variables.
fn limited_with(args: &[&str], envs: &[(&str, &str)]) -> Run {
    run_from(
        wrapped_command(&["prlimit", ADDRESS_SPACE], None, args, envs)
            .output()
            .expect("run oar-tiles under prlimit"),
    )
}

fn both(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A gzip stream of [`BOMB_BYTES`] zeros, written in pieces so the test never holds them.
fn bomb() -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..BOMB_BYTES >> 20 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 100_000, "the bomb is small on disk");
    bomb
}

/// One valid MVT 2.1 tile: layer `sites` (version 2, extent 4096) holding one point feature.
fn mvt() -> Vec<u8> {
    let feature = [0x08, 0x01, 0x18, 0x01, 0x22, 0x03, 0x09, 0x32, 0x22];
    let mut layer = vec![0x78, 0x02, 0x0a, 0x05];
    layer.extend_from_slice(b"sites");
    layer.extend_from_slice(&[0x12, feature.len() as u8]);
    layer.extend_from_slice(&feature);
    layer.extend_from_slice(&[0x28, 0x80, 0x20]);
    let mut tile = vec![0x1a, layer.len() as u8];
    tile.extend_from_slice(&layer);
    tile
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A PMTiles v3 directory (spec section 4), uncompressed: entries of (tile id, run length,
/// offset, length); a run length of 0 points at a leaf directory.
fn directory(entries: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, entries.len() as u64);
    let mut last = 0;
    for &(id, _, _, _) in entries {
        varint(&mut out, id - last);
        last = id;
    }
    for &(_, run, _, _) in entries {
        varint(&mut out, run);
    }
    for &(_, _, _, length) in entries {
        varint(&mut out, length);
    }
    for &(_, _, offset, _) in entries {
        varint(&mut out, offset + 1);
    }
    out
}

/// A PMTiles v3 archive of one z0 tile, gzip inside and out, from its sections: the root
/// directory and leaf directories as stored (compressed), the metadata as stored.
fn archive(root: &[u8], metadata: &[u8], leaves: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(127);
    header.extend_from_slice(b"PMTiles");
    header.push(3);
    let mut offset = 127u64;
    for section in [root, metadata, leaves, data] {
        header.extend_from_slice(&offset.to_le_bytes());
        header.extend_from_slice(&(section.len() as u64).to_le_bytes());
        offset += section.len() as u64;
    }
    for count in [1u64, 1, 1] {
        header.extend_from_slice(&count.to_le_bytes());
    }
    // Clustered, gzip directories and metadata, gzip tiles, MVT, zooms 0-0.
    header.extend_from_slice(&[1, 2, 2, 1, 0, 0]);
    for degrees in [-180i32, -85, 180, 85] {
        header.extend_from_slice(&(degrees * 10_000_000).to_le_bytes());
    }
    header.push(0);
    header.extend_from_slice(&[0; 8]);
    assert_eq!(header.len(), 127);
    [header.as_slice(), root, metadata, leaves, data].concat()
}

fn metadata_json() -> Vec<u8> {
    gzip(
        br#"{"name":"sites","format":"pbf","type":"overlay","vector_layers":[{"id":"sites","fields":{},"minzoom":0,"maxzoom":0}]}"#,
    )
}

/// An archive whose one tile the root directory addresses, with `metadata` as stored.
fn archive_with_metadata(metadata: &[u8]) -> Vec<u8> {
    let tile = gzip(&mvt());
    let root = gzip(&directory(&[(0, 1, 0, tile.len() as u64)]));
    archive(&root, metadata, &[], &tile)
}

/// An archive whose root points at one leaf directory (`leaf`, as stored), which addresses the
/// tile.
fn archive_with_leaf(leaf: &[u8]) -> Vec<u8> {
    let tile = gzip(&mvt());
    let root = gzip(&directory(&[(0, 0, 0, leaf.len() as u64)]));
    archive(&root, &metadata_json(), leaf, &tile)
}

fn leaf_directory() -> Vec<u8> {
    gzip(&directory(&[(0, 1, 0, gzip(&mvt()).len() as u64)]))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Asserts a run refused the input with an exit code of 1 and said `what` (each fragment).
fn assert_refused(run: &Run, command: &str, what: &[&str]) {
    let said = both(run);
    assert_eq!(
        run.code, 1,
        "{command} should fail (exit 1) on a hostile input\n{said}"
    );
    for fragment in what {
        assert!(
            said.contains(fragment),
            "{command} should say `{fragment}`\n{said}"
        );
    }
}

#[test]
fn a_gzip_bomb_in_a_pmtiles_archives_metadata_is_refused_at_the_cap_naming_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    // The same archive with sound metadata reads: the bomb is the only fault.
    let sound = write(
        dir.path(),
        "sound.pmtiles",
        &archive_with_metadata(&metadata_json()),
    );
    let run = limited(&["inspect", "--json", sound.to_str().unwrap()]);
    run.assert_success();
    assert!(run.stdout.contains("\"tiles\": 1"), "{}", run.stdout);

    let bombed = write(
        dir.path(),
        "bombed.pmtiles",
        &archive_with_metadata(&bomb()),
    );
    let path = bombed.to_str().unwrap();
    for command in ["inspect", "validate"] {
        assert_refused(
            &limited(&[command, path]),
            command,
            &[path, "metadata", "inflates past the 32 MiB cap"],
        );
    }
}

#[test]
fn a_gzip_bomb_in_a_pmtiles_leaf_directory_is_refused_at_the_cap_naming_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let sound = write(
        dir.path(),
        "sound.pmtiles",
        &archive_with_leaf(&leaf_directory()),
    );
    let run = limited(&["inspect", "--json", sound.to_str().unwrap()]);
    run.assert_success();
    assert!(run.stdout.contains("\"tiles\": 1"), "{}", run.stdout);
    let run = limited(&["validate", sound.to_str().unwrap()]);
    assert!(
        !both(&run).contains("leaf"),
        "a sound leaf directory passes\n{}",
        both(&run)
    );

    let bombed = write(dir.path(), "bombed.pmtiles", &archive_with_leaf(&bomb()));
    let path = bombed.to_str().unwrap();
    for command in ["inspect", "validate"] {
        assert_refused(
            &limited(&[command, path]),
            command,
            &[
                path,
                "the leaf directory at offset 0",
                "inflates past the 32 MiB cap",
            ],
        );
    }
}

/// A tree holding one sound tile and a sound `tiles.json`.
fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("0/0")).unwrap();
    // What an earlier step planted goes, rather than being written through.
    for planted in ["0/0/0.pbf", "tiles.json", "partitions.json"] {
        let _ = std::fs::remove_file(root.join(planted));
    }
    std::fs::write(root.join("0/0/0.pbf"), gzip(&mvt())).unwrap();
    std::fs::write(
        root.join("tiles.json"),
        br#"{"tilejson":"3.0.0","tiles":["https://example.org/{z}/{x}/{y}.pbf"],"minzoom":0,"maxzoom":0,"bounds":[-180,-85,180,85],"vector_layers":[{"id":"sites","fields":{},"minzoom":0,"maxzoom":0}]}"#,
    )
    .unwrap();
}

fn replace_with_symlink(path: &Path, target: &str) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

#[test]
fn documents_that_are_devices_or_giants_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tree(&root);
    let tilejson = root.join("tiles.json");
    let (path, document) = (root.to_str().unwrap(), tilejson.to_str().unwrap());

    replace_with_symlink(&tilejson, "/dev/zero");
    for command in ["validate", "inspect"] {
        assert_refused(
            &limited(&[command, path]),
            command,
            &[document, "not a regular file"],
        );
    }

    // A named pipe with no writer: opening it to read would wait for one for ever (on code
    // that reads without these checks, this step hangs rather than fails).
    let _ = std::fs::remove_file(&tilejson);
    let made = std::process::Command::new("mkfifo")
        .arg(&tilejson)
        .status()
        .unwrap();
    assert!(made.success());
    for command in ["validate", "inspect"] {
        assert_refused(
            &limited(&[command, path]),
            command,
            &[document, "not a regular file (a named pipe)"],
        );
    }

    // A sparse file: 4 GiB to a reader, nothing on disk.
    let _ = std::fs::remove_file(&tilejson);
    std::fs::File::create(&tilejson)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    for command in ["validate", "inspect"] {
        assert_refused(
            &limited(&[command, path]),
            command,
            &[document, "4294967296 bytes", "64 MiB cap"],
        );
    }

    // A tile is read as carefully as a document.
    tree(&root);
    let tile = root.join("0/0/0.pbf");
    replace_with_symlink(&tile, "/dev/zero");
    assert_refused(
        &limited(&["validate", path]),
        "validate",
        &[tile.to_str().unwrap(), "not a regular file"],
    );

    // The partition index, of a tree and beside a file.
    tree(&root);
    let index = root.join("partitions.json");
    replace_with_symlink(&index, "/dev/zero");
    assert_refused(
        &limited(&["validate", path]),
        "validate",
        &[index.to_str().unwrap(), "not a regular file"],
    );
}

/// A partition index listing one partition, `value` at `path`.
fn index(value: &str, path: &str) -> String {
    serde_json::json!({
        "tileset": "sites",
        "partition_by": "country",
        "partitions": [{"value": value, "path": path, "features": 1, "bounds": null, "tiles": 1}],
    })
    .to_string()
}

#[test]
fn partition_paths_that_leave_the_output_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    std::fs::create_dir(&root).unwrap();
    // A sound tree outside the output, which a followed path would validate as a partition.
    let outside = dir.path().join("outside");
    tree(&outside);
    let path = root.to_str().unwrap();
    for (value, entry) in [
        ("up", "../outside"),
        ("absolute", outside.to_str().unwrap()),
    ] {
        std::fs::write(root.join("partitions.json"), index(value, entry)).unwrap();
        let run = limited(&["validate", path]);
        assert_refused(
            &run,
            "validate",
            &[&format!("partition `{value}`"), entry, "refused"],
        );
        assert!(
            !run.stdout.contains("1 tile(s)"),
            "the partition outside the output was read\n{}",
            run.stdout
        );
    }

    // A partition whose path is sound but is a symbolic link out of the tree.
    std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
    std::fs::write(root.join("partitions.json"), index("linked", "linked")).unwrap();
    let run = limited(&["validate", path]);
    assert_refused(
        &run,
        "validate",
        &["partition `linked`", "leads outside", "refused"],
    );
    assert!(
        !run.stdout.contains("1 tile(s)"),
        "the partition outside the output was read\n{}",
        run.stdout
    );
}

/// An MBTiles file of 300 sound z8 tiles, as a seed leaves it.
fn mbtiles(path: &Path) {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE metadata (name TEXT, value TEXT);
             CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
             CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);
             INSERT INTO metadata VALUES ('name', 'sites'), ('format', 'pbf'), ('minzoom', '8'),
                 ('maxzoom', '8'), ('bounds', '-180,-85,180,85');",
        )
        .unwrap();
    let tile = gzip(&mvt());
    for x in 0..300 {
        connection
            .execute(
                "INSERT INTO tiles VALUES (8, ?1, 3, ?2)",
                rusqlite::params![x, tile],
            )
            .unwrap();
    }
}

#[test]
fn a_hot_journal_is_named_as_an_interrupted_write_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sites.mbtiles");
    mbtiles(&file);
    leave_a_killed_writers_journal(&file);
    let journal = format!("{}-journal", file.display());
    for command in ["validate", "inspect"] {
        let run = limited(&[command, file.to_str().unwrap()]);
        assert_refused(
            &run,
            command,
            &[&journal, "interrupted write", "seed again"],
        );
        assert!(
            !both(&run).contains("readonly database"),
            "{command} still reports SQLite's words\n{}",
            both(&run)
        );
    }
}

fn parsed(run: &Run, command: &str) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{command} --json printed no JSON ({e})\n{}", both(run)))
}

#[test]
fn validate_json_prints_a_json_document_for_an_error_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sites.mbtiles");
    mbtiles(&file);
    leave_a_killed_writers_journal(&file);
    let journal = format!("{}-journal", file.display());

    // The container pass finds the journal, so validate reports it among the problems.
    let run = limited(&["validate", "--json", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", both(&run));
    let report = parsed(&run, "validate");
    assert!(report["problems"].as_u64().unwrap() > 0, "{report}");
    let listed = report["outputs"][0]["problems"]["listed"].to_string();
    assert!(
        listed.contains(&journal) && listed.contains("interrupted write"),
        "{report}"
    );

    // Errors that leave no report: a document that says what went wrong.
    let missing = dir.path().join("missing.mbtiles");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("partitions.json"), index("up", "../up")).unwrap();
    for (command, output, said) in [
        ("validate", missing.to_str().unwrap(), "no such"),
        ("validate", tree.to_str().unwrap(), "partition `up`"),
        ("inspect", file.to_str().unwrap(), journal.as_str()),
    ] {
        let run = limited(&[command, "--json", output]);
        assert_eq!(run.code, 1, "{}", both(&run));
        let report = parsed(&run, command);
        let message = report["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(said), "{report}");
        assert!(message.contains(output), "{report}");
        assert_eq!(report["error"]["exit_code"], 1, "{report}");
        assert!(
            report["problems"].is_null(),
            "an error is no count of problems: {report}"
        );
    }
}

#[test]
#[ignore = "needs the S3 test server: run scripts/test.sh"]
fn documents_on_s3_past_the_cap_and_partition_paths_out_of_the_prefix_are_refused() {
    let server = S3Server::start("tiles");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oar.toml");
    std::fs::write(
        &config,
        server.config_table("") + &single_layer_config("public", "sites", "", ""),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // s3s-fs keeps each object as a file named by its key: a sparse one stands for an object of
    // a cap and a byte, taking nothing on disk.
    let prefix = server.data.join("tiles/big");
    tree(&prefix);
    std::fs::File::create(prefix.join("tiles.json"))
        .unwrap()
        .set_len((64 << 20) + 1)
        .unwrap();
    let env = server.env();
    for command in ["validate", "inspect"] {
        assert_refused(
            &limited_with(&[command, "-c", config, "s3://tiles/big"], &env),
            command,
            &["s3://tiles/big/tiles.json", "67108865 bytes", "64 MiB cap"],
        );
    }

    let parted = server.data.join("tiles/parted");
    std::fs::create_dir_all(&parted).unwrap();
    std::fs::write(parted.join("partitions.json"), index("up", "../big")).unwrap();
    assert_refused(
        &limited_with(&["validate", "-c", config, "s3://tiles/parted"], &env),
        "validate",
        &["partition `up`", "../big", "refused"],
    );
}
