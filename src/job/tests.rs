//! Unit tests of `job`.

use super::*;
use std::path::Path;

const TWO_TILESETS: &str = r#"
[database]
url = "postgresql://localhost/oar"
pool_size = 3
[[tileset]]
name = "all"
output = "/tmp/all.mbtiles"
maxzoom = 12
[[tileset.layer]]
name = "f"
table = "f"
[[tileset]]
name = "bd"
[[tileset.layer]]
name = "f"
table = "f"
filter = "country_code = 'BD'"
"#;

fn config() -> Config {
    Config::parse(Path::new("c.toml"), TWO_TILESETS, None).unwrap()
}

#[test]
fn the_command_line_overrides_the_config() {
    let options = SeedOptions {
        tilesets: vec!["all".into()],
        zooms: Some(ZoomRange::new(2, 5).unwrap()),
        output: Some("x.mbtiles".into()),
        ..Default::default()
    };
    let job = SeedJob::resolve(config(), options).unwrap();
    assert_eq!(job.concurrency, 3);
    assert_eq!(job.tilesets.len(), 1);
    assert_eq!(job.tilesets[0].zooms, ZoomRange::new(2, 5).unwrap());
    assert_eq!(
        job.tilesets[0].output,
        Some(OutputTarget::Mbtiles("x.mbtiles".into()))
    );
}

#[test]
fn shard_i_renders_from_replica_i_mod_r_and_unsharded_runs_from_the_primary() {
    let with_replicas = |list: &str| {
        let text = TWO_TILESETS.replace(
            "pool_size = 3",
            &format!("pool_size = 3\nreplicas = {list}"),
        );
        Config::parse(Path::new("c.toml"), &text, None).unwrap()
    };
    let shard = |index| SeedOptions {
        tilesets: vec!["all".into()],
        shard: Some(ShardSpec::new(index, 5).unwrap()),
        ..Default::default()
    };
    let two = r#"["postgresql://r0/oar", "postgresql://r1/oar"]"#;
    for (index, replica) in [(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)] {
        let job = SeedJob::resolve(with_replicas(two), shard(index)).unwrap();
        assert_eq!(
            job.replica().map(|(i, _)| i),
            Some(replica),
            "shard {index}"
        );
    }
    let job = SeedJob::resolve(with_replicas("[]"), shard(3)).unwrap();
    assert_eq!(job.replica(), None);
    let unsharded = SeedOptions {
        tilesets: vec!["all".into()],
        ..Default::default()
    };
    assert_eq!(
        SeedJob::resolve(with_replicas(two), unsharded)
            .unwrap()
            .replica(),
        None
    );
}

#[test]
fn unknown_tilesets_and_missing_outputs_are_usage_errors() {
    let options = SeedOptions {
        tilesets: vec!["nope".into()],
        ..Default::default()
    };
    let err = SeedJob::resolve(config(), options).unwrap_err();
    assert!(err.to_string().contains("unknown tileset `nope`"), "{err}");
    let err = SeedJob::resolve(config(), SeedOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("tileset `bd` has no output"),
        "{err}"
    );
    let dry = SeedOptions {
        run: RunSettings {
            dry_run: true,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(SeedJob::resolve(config(), dry).unwrap().tilesets.len(), 2);
}

#[test]
fn pmtiles_versions_refuse_an_output_from_the_command_line_that_is_not_pmtiles() {
    let text = TWO_TILESETS.replace(
        "name = \"bd\"\n",
        "name = \"bd\"\npmtiles_versions = true\n",
    );
    let config = || Config::parse(Path::new("c.toml"), &text, None).unwrap();
    let with_output = |output: &str| SeedOptions {
        tilesets: vec!["bd".into()],
        output: Some(output.into()),
        ..Default::default()
    };
    let err = SeedJob::resolve(config(), with_output("bd.mbtiles")).unwrap_err();
    assert!(
        err.to_string()
            .contains("tileset `bd` sets pmtiles_versions, which applies to PMTiles outputs"),
        "{err}"
    );
    assert!(SeedJob::resolve(config(), with_output("bd.pmtiles")).is_ok());
}
