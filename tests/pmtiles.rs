//! PMTiles output, read back by an independent reader: the PyPI `pmtiles` package (pure Python),
//! which `scripts/test.sh` installs into a venv and names in `OAR_TILES_TEST_PYTHON`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::pmtiles::{seed, setup, setup_with};
use crate::common::pmtiles_reader::{assert_same_digests, digests_of_mbtiles, read_archive};
use crate::common::run::{
    journaled_tiles, oar_tiles, oar_tiles_command, run_from, send_signal, wait_for_progress,
    wrapped_command,
};

fn store_of(archive: &Path) -> PathBuf {
    PathBuf::from(format!("{}.store.mbtiles", archive.display()))
}

#[test]
#[ignore = "needs PostGIS and the Python pmtiles reader: run scripts/test.sh"]
fn a_pmtiles_archive_holds_the_mbtiles_tiles_byte_for_byte_clustered_and_described() {
    let setup = setup("pmseed");
    let mbtiles = setup.path("out.mbtiles");
    let pmtiles = setup.path("out.pmtiles");
    seed(&setup, &mbtiles, &[]);
    seed(&setup, &pmtiles, &[]);
    let archive = read_archive(&pmtiles);
    assert_same_digests(
        &digests_of_mbtiles(&mbtiles),
        &archive.tiles,
        "PMTiles against MBTiles",
    );
    assert!(
        archive.tiles.keys().any(|(z, _, _)| *z == 10),
        "the deepest zoom is there"
    );

    let header = &archive.header;
    assert_eq!(header["clustered"], true, "{header}");
    assert_eq!(header["tile_type"], "TileType.MVT", "{header}");
    assert_eq!(header["tile_compression"], "Compression.GZIP", "{header}");
    assert_eq!(
        (header["min_zoom"].as_u64(), header["max_zoom"].as_u64()),
        (Some(0), Some(10))
    );
    // Both declare the bounds of the tiles they hold: the same tiles, the same bounds.
    let bounds: Vec<f64> = crate::common::run::read_metadata(&mbtiles)["bounds"]
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let e7 = |v: f64| (v * 1e7).round() as i64;
    assert_eq!(header["min_lon_e7"], e7(bounds[0]), "{header}");
    assert_eq!(header["min_lat_e7"], e7(bounds[1]), "{header}");
    assert_eq!(header["max_lon_e7"], e7(bounds[2]), "{header}");
    assert_eq!(header["max_lat_e7"], e7(bounds[3]), "{header}");
    let layers = &archive.metadata["vector_layers"];
    assert_eq!(layers[0]["id"], "sites", "{}", archive.metadata);
    assert_eq!(
        layers[0]["fields"]["label"], "String",
        "{}",
        archive.metadata
    );
    assert_eq!(archive.metadata["name"], "sites");

    // The MBTiles output names its compression for converters.
    let connection = rusqlite::Connection::open(&mbtiles).unwrap();
    let compression: String = connection
        .query_row(
            "SELECT value FROM metadata WHERE name = 'compression'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(compression, "gzip");

    // inspect reads the archive itself.
    let run = oar_tiles(None, &["inspect", pmtiles.to_str().unwrap(), "--json"]);
    run.assert_success();
    let inventory: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        inventory["tiles"].as_u64(),
        Some(archive.tiles.len() as u64)
    );
    assert_eq!(inventory["metadata"]["pmtiles"]["clustered"], true);
}

#[test]
#[ignore = "needs PostGIS and the Python pmtiles reader: run scripts/test.sh"]
fn a_pmtiles_reseed_equals_a_full_seed_and_an_unchanged_archive_is_not_rewritten() {
    let mut setup = setup("pmreseed");
    let reseeded = setup.path("reseeded.pmtiles");
    seed(&setup, &reseeded, &[]);
    let before = read_archive(&reseeded).tiles;
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(90.41, 23.81), 4326) WHERE site_id % 9 = 0;
         DELETE FROM {schema}.sites WHERE site_id = 9000;
         INSERT INTO {schema}.sites (site_id, label, pt) VALUES (9100, 'new', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326));",
    );
    let changed = setup.path("changed.txt");
    seed(
        &setup,
        &reseeded,
        &["--dirty", "--changed-list", changed.to_str().unwrap()],
    );
    let listed = std::fs::read_to_string(&changed).unwrap();
    assert!(
        listed.lines().any(|l| l == reseeded.to_str().unwrap()),
        "the archive is named: {listed}"
    );
    assert_eq!(
        listed.lines().count(),
        1,
        "and nothing else: an archive's tiles have no URL of their own to invalidate: {listed}"
    );
    let full = setup.path("full.pmtiles");
    seed(&setup, &full, &[]);
    let after = read_archive(&reseeded).tiles;
    assert_same_digests(
        &read_archive(&full).tiles,
        &after,
        "reseeded archive against a full seed",
    );
    assert_ne!(before, after, "the changes reached the archive");

    // Nothing changed since: the archive is left as it is.
    let modified = std::fs::metadata(&reseeded).unwrap().modified().unwrap();
    seed(
        &setup,
        &reseeded,
        &["--dirty", "--changed-list", changed.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::metadata(&reseeded).unwrap().modified().unwrap(),
        modified
    );
    assert_eq!(
        std::fs::read_to_string(&changed).unwrap(),
        "",
        "nothing to invalidate"
    );
    // The archive is among the change log's consumers, with its watermark.
    let config = setup.config.to_str().unwrap();
    let status = oar_tiles(
        Some(&setup.schema.url),
        &["changes", "status", "--config", config],
    );
    status.assert_success();
    assert!(
        status.stdout.contains("reseeded.pmtiles"),
        "{}",
        status.stdout
    );
    // Without its archive the store is no watermark: a reseed asks for a full seed first.
    std::fs::remove_file(&reseeded).unwrap();
    let args = setup.seed_args(reseeded.to_str().unwrap(), "0-10", &["--dirty"]);
    let run = oar_tiles(Some(&setup.schema.url), &args);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no watermark"), "{}", run.stderr);
    seed(&setup, &reseeded, &[]);
    assert_same_digests(
        &read_archive(&full).tiles,
        &read_archive(&reseeded).tiles,
        "re-created archive",
    );
}

#[test]
#[ignore = "needs PostGIS and the Python pmtiles reader: run scripts/test.sh"]
fn an_interrupted_pmtiles_seed_resumes_to_the_same_archive() {
    let mut setup = setup("pmresume");
    setup.schema.execute(
        "INSERT INTO {schema}.sites (site_id, label, pt)
         SELECT 20000 + g, 'extra', ST_SetSRID(ST_MakePoint(90.3 + (g % 97) * 0.002, 23.7 + (g % 89) * 0.002), 4326)
         FROM generate_series(1, 3000) g; ANALYZE {schema}.sites;",
    );
    let slow = setup.path("slow.toml");
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "cluster_maxzoom = 5",
        "cluster_maxzoom = 5\nfilter = \"site_id % 10 <> 0 OR pg_sleep(0.0005) IS NOT NULL\"",
    );
    std::fs::write(&slow, text).unwrap();
    let archive = setup.path("out.pmtiles");
    let mut args = setup.seed_args(archive.to_str().unwrap(), "0-12", &[]);
    args[2] = slow.to_str().unwrap();
    let mut child = oar_tiles_command(Some(&setup.schema.url), &args, &[])
        .spawn()
        .unwrap();
    wait_for_progress(&mut child, &store_of(&archive));
    send_signal(&child, libc::SIGINT);
    let stopped = run_from(child.wait_with_output().unwrap());
    assert_eq!(stopped.code, 130, "{}", stopped.stderr);
    assert!(!archive.exists(), "no archive before the run is complete");
    assert!(journaled_tiles(&store_of(&archive)) > 0);
    oar_tiles(Some(&setup.schema.url), &args).assert_success();
    let reference = setup.path("reference.pmtiles");
    let mut args = setup.seed_args(reference.to_str().unwrap(), "0-12", &[]);
    args[2] = slow.to_str().unwrap();
    oar_tiles(Some(&setup.schema.url), &args).assert_success();
    assert_same_digests(
        &read_archive(&reference).tiles,
        &read_archive(&archive).tiles,
        "resumed archive",
    );
}

/// A JSON document on disk.
fn json_file(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The versions `NAME.HASH.pmtiles` in a folder, by name.
fn versions_in(folder: &Path, stem: &str) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix(&format!("{stem}."))
                .and_then(|rest| rest.strip_suffix(".pmtiles"))
                .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect()
}

/// The changed list's lines.
fn listed_lines(path: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs PostGIS and the Python pmtiles reader: run scripts/test.sh"]
fn a_versioned_pmtiles_archive_is_published_under_its_hash_before_the_pointer_names_it() {
    let mut setup = setup_with("pmversions", "", "pmtiles_versions = true");
    let archive = setup.path("sites.pmtiles");
    let pointer = setup.path("sites.latest.json");
    let tilejson = setup.path("sites.json");
    let changed = setup.path("changed.txt");
    let changed_arg = changed.to_str().unwrap().to_string();
    let documents = [
        pointer.display().to_string(),
        tilejson.display().to_string(),
    ];
    seed(&setup, &archive, &["--changed-list", &changed_arg]);

    let first = json_file(&pointer);
    let first_name = first["archive"].as_str().unwrap().to_string();
    assert_eq!(
        versions_in(setup.dir.path(), "sites"),
        [first_name.clone()].into(),
        "{first}"
    );
    let first_bytes = std::fs::read(setup.path(&first_name)).unwrap();
    assert!(
        first_bytes == std::fs::read(&archive).unwrap(),
        "the version is the archive byte for byte"
    );
    assert_eq!(first["superseded"], serde_json::json!([]), "{first}");
    assert!(
        first["published"].as_u64().unwrap() > 1_700_000_000,
        "{first}"
    );
    let document = json_file(&tilejson);
    assert_eq!(document["tilejson"], "3.0.0", "{document}");
    assert_eq!(document["name"], "sites", "{document}");
    assert_eq!(
        document["tiles"],
        serde_json::json!([format!("pmtiles://{first_name}/{{z}}/{{x}}/{{y}}")]),
        "{document}"
    );
    assert_eq!(document["vector_layers"][0]["id"], "sites", "{document}");
    assert_eq!(
        (document["minzoom"].as_u64(), document["maxzoom"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(document["bounds"].as_array().map(Vec::len), Some(4));
    assert_eq!(document["center"].as_array().map(Vec::len), Some(3));
    let listed = listed_lines(&changed);
    for name in &documents {
        assert!(
            listed.contains(name),
            "{name} goes to the CDNs; listed besides tiles: {:?}",
            listed
                .iter()
                .filter(|l| l.contains('.'))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        !listed.iter().any(|line| line.ends_with(&first_name)),
        "a new version is no purge: {listed:?}"
    );

    // A change: a new version, the pointer on it, the first still there and listed.
    setup.schema.execute(
        "UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(90.41, 23.81), 4326) WHERE site_id % 9 = 0;",
    );
    seed(
        &setup,
        &archive,
        &["--dirty", "--changed-list", &changed_arg],
    );
    let second = json_file(&pointer);
    let second_name = second["archive"].as_str().unwrap().to_string();
    assert_ne!(second_name, first_name, "{second}");
    assert!(
        std::fs::read(setup.path(&second_name)).unwrap() == std::fs::read(&archive).unwrap(),
        "the new version is the archive byte for byte"
    );
    assert!(
        std::fs::read(setup.path(&first_name)).unwrap() == first_bytes,
        "the superseded version is kept as it was"
    );
    let superseded = second["superseded"].as_array().unwrap();
    assert_eq!(superseded.len(), 1, "{second}");
    assert_eq!(superseded[0]["archive"], first_name.as_str(), "{second}");
    assert_eq!(
        json_file(&tilejson)["tiles"][0],
        format!("pmtiles://{second_name}/{{z}}/{{x}}/{{y}}")
    );
    let listed = listed_lines(&changed);
    for name in &documents {
        assert!(
            listed.contains(name),
            "{name} goes to the CDNs; listed besides tiles: {:?}",
            listed
                .iter()
                .filter(|l| l.contains('.'))
                .collect::<Vec<_>>()
        );
    }

    // Nothing changed: the same version, the pointer not written.
    let written = std::fs::metadata(&pointer).unwrap().modified().unwrap();
    let bytes = std::fs::read(&pointer).unwrap();
    seed(
        &setup,
        &archive,
        &["--dirty", "--changed-list", &changed_arg],
    );
    assert_eq!(std::fs::read(&pointer).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&pointer).unwrap().modified().unwrap(),
        written,
        "the pointer is not rewritten"
    );
    assert!(listed_lines(&changed).is_empty());

    // With no retention, the next change deletes every superseded version.
    let text = std::fs::read_to_string(&setup.config).unwrap().replace(
        "pmtiles_versions = true",
        "pmtiles_versions = true\npmtiles_keep_versions = \"0s\"",
    );
    std::fs::write(&setup.config, text).unwrap();
    setup
        .schema
        .execute("DELETE FROM {schema}.sites WHERE site_id = 9000;");
    seed(
        &setup,
        &archive,
        &["--dirty", "--changed-list", &changed_arg],
    );
    let third = json_file(&pointer);
    let third_name = third["archive"].as_str().unwrap().to_string();
    assert_eq!(
        versions_in(setup.dir.path(), "sites"),
        [third_name.clone()].into(),
        "{third}"
    );
    assert_eq!(third["superseded"], serde_json::json!([]), "{third}");
    assert!(std::fs::read(setup.path(&third_name)).unwrap() == std::fs::read(&archive).unwrap());
    assert_eq!(
        read_archive(&setup.path(&third_name)).tiles,
        read_archive(&archive).tiles
    );
}

/// A traced call: its name, its quoted paths and the path of its descriptor (`strace -y`).
type Traced = (String, Vec<PathBuf>, Option<PathBuf>);

/// The quoted paths of a traced call, in order.
fn quoted_paths(call: &str) -> Vec<PathBuf> {
    call.split('"')
        .skip(1)
        .step_by(2)
        .map(PathBuf::from)
        .collect()
}

#[test]
#[ignore = "needs PostGIS and strace: run scripts/test.sh"]
fn a_version_is_linked_and_its_folder_synced_before_a_pointer_document_names_it() {
    let setup = setup_with("pmvorder", "", "pmtiles_versions = true");
    let folder = setup.dir.path().canonicalize().unwrap();
    let archive = folder.join("sites.pmtiles");
    let log = setup.path("strace.log");
    let strace = crate::common::env::strace();
    let log_arg = log.display().to_string();
    let wrapper = [
        strace.as_str(),
        "-f",
        "-y",
        "-qq",
        "-s",
        "4096",
        "-o",
        &log_arg,
        "-e",
        "trace=fsync,fdatasync,rename,renameat,renameat2,link,linkat",
    ];
    let args = setup.seed_args(archive.to_str().unwrap(), "0-6", &[]);
    let traced = wrapped_command(&wrapper, Some(&setup.schema.url), &args, &[]).output();
    run_from(traced.expect("run strace")).assert_success();
    let pointer = folder.join("sites.latest.json");
    let version = folder.join(json_file(&pointer)["archive"].as_str().unwrap());

    // Each successful call, in the order they started: (name, quoted paths, descriptor path).
    let calls: Vec<Traced> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|line| !line.contains("= -1"))
        .filter_map(|line| {
            let call = line
                .split_once(' ')
                .map_or(line, |(_, rest)| rest.trim_start());
            let (name, rest) = call.split_once('(')?;
            let descriptor = rest
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(path, _)| PathBuf::from(path));
            Some((name.to_string(), quoted_paths(rest), descriptor))
        })
        .collect();
    let position = |what: &str, test: &dyn Fn(&Traced) -> bool| {
        calls
            .iter()
            .position(test)
            .unwrap_or_else(|| panic!("no {what} traced in {}", log.display()))
    };
    let linked = position("link to the version", &|(name, paths, _)| {
        name.starts_with("link") && paths.last() == Some(&version)
    });
    let tilejson = folder.join("sites.json");
    // Both documents name the version: the first of them to arrive.
    let switched = position("rename to the pointer or the TileJSON", &|(
        name,
        paths,
        _,
    )| {
        name.starts_with("rename")
            && (paths.last() == Some(&pointer) || paths.last() == Some(&tilejson))
    });
    let folder_synced = calls[linked..]
        .iter()
        .position(|(name, _, descriptor)| {
            name.starts_with("fsync") && descriptor.as_deref() == Some(folder.as_path())
        })
        .map(|offset| linked + offset);
    assert!(
        linked < switched,
        "the version ({linked}) is there before a document names it ({switched})"
    );
    assert!(
        folder_synced.is_some_and(|synced| synced < switched),
        "the version's name is on disk (folder synced: {folder_synced:?}) before a document \
         names it ({switched})"
    );
}
