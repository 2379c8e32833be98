//! Google Cloud Storage through fake-gcs-server, reached as Google's libraries reach an emulator
//! (`STORAGE_EMULATOR_HOST`, no credentials): a seed into `gs://`, `validate`, an edit and
//! `seed --dirty`, then `validate --against-db --all` finding nothing; a tile object carries its
//! type, `Content-Encoding: gzip` and the tileset's `Cache-Control`, and `serve` answers with it as
//! stored. The behaviours every store shares run on GCS too, in `remote_stores.rs`.

use crate::common::fixture::Fixture;
use crate::common::gcs::GcsBucket;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{
    assert_same_tiles, oar_tiles_with, problems, read_mbtiles_raw, single_layer_config, Run,
};
use crate::common::serve::Served;

const PREFIX: &str = "maps/sites";
const ZOOMS: &str = "0-7";
const CACHE_CONTROL: &str = "public, max-age=300";

fn run(fixture: &Fixture, bucket: &GcsBucket, args: &[&str]) -> Run {
    oar_tiles_with(Some(&fixture.schema.url), args, &bucket.env())
}

/// `seed` of the data as it is now into the bucket's prefix, with `extra`.
fn seed(fixture: &Fixture, bucket: &GcsBucket, extra: &[&str]) {
    let target = bucket.address(PREFIX);
    run(fixture, bucket, &fixture.seed_args(&target, ZOOMS, extra)).assert_success();
}

/// `validate --json` of the bucket's prefix with `extra`; the run and its report.
fn validate(fixture: &Fixture, bucket: &GcsBucket, extra: &[&str]) -> (Run, serde_json::Value) {
    let target = bucket.address(PREFIX);
    let config = fixture.config.to_str().unwrap();
    let mut args = vec![
        "validate",
        "--json",
        "--config",
        config,
        "--tileset",
        "sites",
    ];
    args.extend_from_slice(extra);
    args.push(&target);
    let run = run(fixture, bucket, &args);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", run.stdout, run.stderr));
    (run, report)
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn a_gcs_prefix_seeds_validates_takes_an_edit_and_matches_the_database() {
    let bucket = GcsBucket::create("gcs-target");
    let points = hub_with_scatter(250, 5, 5, [-0.3, 51.3, 0.2, 51.7]);
    let mut fixture = Fixture::new("gcs_target", &points, "gcs.toml", |schema| {
        let changes = schema.companion("cdc");
        let tileset = format!("cache_control = \"{CACHE_CONTROL}\"");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", &tileset, "")
        )
    });
    let config = fixture.config.to_str().unwrap();
    run(
        &fixture,
        &bucket,
        &["changes", "install", "--config", config],
    )
    .assert_success();
    seed(&fixture, &bucket, &[]);
    let (checked, report) = validate(&fixture, &bucket, &[]);
    assert_eq!(checked.code, 0, "{report:#}\n{}", checked.stderr);
    let stored = bucket.read_prefix(PREFIX);
    let tile = stored
        .iter()
        .find(|blob| blob.name.ends_with(".pbf"))
        .expect("a tile object");
    assert_eq!(
        tile.content_type.as_deref(),
        Some("application/vnd.mapbox-vector-tile"),
        "{}",
        tile.name
    );
    assert_eq!(tile.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(tile.cache_control.as_deref(), Some(CACHE_CONTROL));
    assert_eq!(&tile.data[..2], [0x1f, 0x8b], "stored gzip-compressed");

    fixture.schema.execute(
        "DELETE FROM {schema}.sites WHERE site_id IN (4, 19);
         UPDATE {schema}.sites SET pt = ST_SetSRID(ST_MakePoint(-0.05, 51.45), 4326) WHERE site_id = 7;
         INSERT INTO {schema}.sites (site_id, label, kind, score, pt)
           VALUES (7001, 'new', 'knit', 3, ST_SetSRID(ST_MakePoint(0.1, 51.6), 4326));",
    );
    let summary = fixture.path("summary.json");
    seed(
        &fixture,
        &bucket,
        &["--dirty", "--summary-json", summary.to_str().unwrap()],
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(
        json[0]["tiles_queried"].as_u64().unwrap() > 0,
        "the edit re-rendered tiles: {json}"
    );

    let (checked, report) = validate(&fixture, &bucket, &["--against-db", "--all"]);
    assert_eq!(checked.code, 0, "{report:#}\n{}", checked.stderr);
    assert_eq!(problems(&report), [], "{report:#}");

    // And the bucket holds exactly what a full seed of the edited data makes.
    let reference = fixture.path("after.mbtiles");
    run(
        &fixture,
        &bucket,
        &fixture.seed_args(reference.to_str().unwrap(), ZOOMS, &[]),
    )
    .assert_success();
    let objects: Vec<(String, Vec<u8>)> = bucket
        .read_prefix(PREFIX)
        .into_iter()
        .map(|blob| (blob.name, blob.data))
        .collect();
    assert_same_tiles(
        &crate::common::s3::tiles_of(&objects),
        &read_mbtiles_raw(&reference),
        "the bucket after the dirty reseed and a full seed",
    );

    // `serve` reads the bucket as it reads every output: a tile as stored.
    let served = Served::start(&[&bucket.address(PREFIX)], &bucket.env());
    let index = served.get("/index.json").json();
    let name = index["tilesets"][0]["name"].as_str().unwrap();
    let (tile_name, tile) = objects.iter().find(|(n, _)| n.ends_with(".pbf")).unwrap();
    let path = format!("/{name}/{tile_name}");
    let reply = served.get_with(&path, &[("accept-encoding", "gzip")]);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.header("content-encoding"), "gzip", "{path}");
    assert!(&reply.body == tile, "{path} is served as stored");
}
