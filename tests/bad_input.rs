//! Bad input of every kind gets one clear error line naming what is wrong, the documented exit code,
//! no panic, and no output left behind.

use crate::common::pg::{Point, TestSchema};
use crate::common::run::{oar_tiles, single_layer_config};

struct Case {
    name: &'static str,
    /// Replaces text in the default config: (from, to).
    config_edit: Option<(&'static str, &'static str)>,
    args: &'static [&'static str],
    /// Whether DATABASE_URL points to the test server.
    database: bool,
    code: i32,
    message: &'static str,
}

const fn case(
    name: &'static str,
    config_edit: Option<(&'static str, &'static str)>,
    args: &'static [&'static str],
    database: bool,
    code: i32,
    message: &'static str,
) -> Case {
    Case {
        name,
        config_edit,
        args,
        database,
        code,
        message,
    }
}

const CASES: &[Case] = &[
    case(
        "zoom range reversed",
        None,
        &["--zoom", "15-3"],
        false,
        2,
        "starts above its end",
    ),
    case(
        "zoom above 24",
        None,
        &["--zoom", "0-25"],
        false,
        2,
        "outside 0..=24",
    ),
    case(
        "zoom not a number",
        None,
        &["--zoom", "abc"],
        false,
        2,
        "is not a zoom",
    ),
    case(
        "negative zoom",
        None,
        &["--zoom=-1"],
        false,
        2,
        "`-1` is not a zoom",
    ),
    case(
        "bbox across the antimeridian",
        None,
        &["--bbox", "170,0,-170,5"],
        false,
        2,
        "antimeridian",
    ),
    case(
        "bbox longitude out of range",
        None,
        &["--bbox", "0,0,200,5"],
        false,
        2,
        "-180..180",
    ),
    case(
        "bbox latitude out of range",
        None,
        &["--bbox", "0,-95,10,5"],
        false,
        2,
        "-90..90",
    ),
    case(
        "bbox with three numbers",
        None,
        &["--bbox", "1,2,3"],
        false,
        2,
        "expected four numbers",
    ),
    case(
        "bbox south above north",
        None,
        &["--bbox", "0,10,5,5"],
        false,
        2,
        "north of north",
    ),
    case(
        "unknown tileset",
        None,
        &["--tileset", "nope"],
        false,
        2,
        "unknown tileset `nope`",
    ),
    case(
        "unsupported output",
        None,
        &["--output", "out.txt"],
        false,
        2,
        "not supported",
    ),
    case(
        "zero concurrency",
        None,
        &["--concurrency", "0"],
        false,
        2,
        "--concurrency 0",
    ),
    case(
        "missing config file",
        None,
        &["--config", "/nonexistent/oar.toml"],
        false,
        2,
        "/nonexistent/oar.toml",
    ),
    case(
        "config syntax error",
        Some(("pool_size = 2", "pool_size = = 2")),
        &[],
        false,
        2,
        "oar.toml:3:",
    ),
    case(
        "unknown config key",
        Some(("pool_size = 2", "pool_sise = 2")),
        &[],
        false,
        2,
        "unknown field `pool_sise`",
    ),
    case(
        "config zoom above 24",
        Some(("name = \"sites\"\n", "name = \"sites\"\nmaxzoom = 30\n")),
        &[],
        false,
        2,
        "maxzoom 30",
    ),
    case(
        "config extent not a power of two",
        Some(("name = \"sites\"\n", "name = \"sites\"\nextent = 1000\n")),
        &[],
        false,
        2,
        "extent 1000",
    ),
    case(
        "config buffer too large",
        Some(("name = \"sites\"\n", "name = \"sites\"\nbuffer = 3000\n")),
        &[],
        false,
        2,
        "buffer 3000",
    ),
    case(
        "config bad duration",
        Some(("pool_size = 2", "statement_timeout = \"soon\"")),
        &[],
        false,
        2,
        "statement_timeout `soon`",
    ),
    case(
        "sslmode libpq does not know",
        Some((
            "url = \"postgresql://unused@127.0.0.1:1/unused\"",
            "url = \"postgresql://unused@127.0.0.1:1/unused?sslmode=sure\"",
        )),
        &[],
        false,
        2,
        "sslmode `sure` is not one of",
    ),
    case(
        "config attribute is reserved",
        Some(("\"label\",", "\"__oar_x\",")),
        &[],
        false,
        2,
        "reserved",
    ),
    case(
        "relative tile URL",
        Some(("name = \"sites\"\n", "name = \"sites\"\ntiles_url = \"{z}/{x}/{y}.pbf\"\n")),
        &[],
        false,
        2,
        "must be an absolute URL",
    ),
    case(
        "public URL of S3 is not a URL",
        Some(("pool_size = 2\n", "pool_size = 2\n[store]\npublic_url = \"cdn.example.org\"\n")),
        &[],
        false,
        2,
        "store.public_url `cdn.example.org` must be a base URL",
    ),
    case("unreachable database", None, &[], false, 1, "127.0.0.1:1"),
    case(
        "unknown table",
        Some(("sites\"\ngeometry", "nosuch\"\ngeometry")),
        &[],
        true,
        2,
        "nosuch` does not exist",
    ),
    case(
        "unknown attribute column",
        Some(("\"kind\",", "\"colour\",")),
        &[],
        true,
        2,
        "column `colour` does not exist",
    ),
    case(
        "unknown geometry column",
        Some(("geometry_column = \"pt\"", "geometry_column = \"shape\"")),
        &[],
        true,
        2,
        "column `shape`",
    ),
    case(
        "geometry column of another type",
        Some(("geometry_column = \"pt\"", "geometry_column = \"site_id\"")),
        &[],
        true,
        2,
        "not geometry",
    ),
    case(
        "unknown id column",
        Some(("id_column = \"site_id\"", "id_column = \"fid\"")),
        &[],
        true,
        2,
        "column `fid`",
    ),
    case(
        "srid contradicting the column",
        Some((
            "geometry_column = \"pt\"",
            "geometry_column = \"pt\"\nsrid = 3857",
        )),
        &[],
        true,
        2,
        "holds SRID 4326",
    ),
    case(
        "filter that is not SQL",
        Some(("attributes", "filter = \"score >>> 3\"\nattributes")),
        &[],
        true,
        2,
        "tileset `sites`",
    ),
    case(
        "filter on an unknown column",
        Some(("attributes", "filter = \"colour = 'red'\"\nattributes")),
        &[],
        true,
        2,
        "colour",
    ),
    case(
        "filter with two statements",
        Some(("attributes", "filter = \"true; DROP TABLE x\"\nattributes")),
        &[],
        true,
        2,
        "without `;`",
    ),
    case(
        "output directory missing",
        None,
        &["--output", "/nonexistent-dir/out.mbtiles"],
        true,
        1,
        "does not exist: create it (`mkdir -p /nonexistent-dir`)",
    ),
    case(
        "tree output's parent missing",
        None,
        &["--output", "/nonexistent-dir/deeper/tiles/"],
        true,
        1,
        "directory /nonexistent-dir/deeper does not exist: create it (`mkdir -p /nonexistent-dir/deeper`)",
    ),
    case("max-duration on a full seed", None, &["--max-duration", "10m"], false, 2, "--max-duration applies"),
    case("max-duration not a duration", None, &["--dirty", "--max-duration", "soon"], false, 2, "not a duration"),
    case("dirty with a tile list", None, &["--dirty", "--tiles-from", "/dev/null"], false, 2, "cannot be combined"),
    case("dry run of a tile list", None, &["--dry-run", "--tiles-from", "/dev/null"], false, 2, "cannot be combined with --tiles-from"),
    case("tile list missing", None, &["--tiles-from", "/nonexistent/tiles.txt"], false, 2, "/nonexistent/tiles.txt"),
    case("too much concurrency", None, &["--concurrency", "1000"], false, 2, "--concurrency 1000"),
    case("invalid bucket name", None, &["--output", "s3://UPPER/x"], false, 2, "not a valid S3 bucket name"),
    case("unsupported URL output", None, &["--output", "ftp://host/x"], false, 2, "not supported"),
    case("cluster cell not a power of two", Some(("attributes", "cluster_maxzoom = 5\ncluster_cell = 100\nattributes")), &[], false, 2, "cluster_cell 100"),
    case("cluster cell without cluster zooms", Some(("attributes", "cluster_cell = 64\nattributes")), &[], false, 2, "need cluster_maxzoom"),
    case("attribute named like a cluster property", Some(("attributes = [", "cluster_maxzoom = 3\nattributes = [\"count\", ")), &[], false, 2, "clashes with a cluster property"),
    case("cluster breakdown without clusters", Some(("attributes", "cluster_breakdown = \"kind\"\nattributes")), &[], false, 2, "cluster_breakdown needs cluster_maxzoom"),
    case("cluster breakdown of a column not rendered", Some(("attributes", "cluster_maxzoom = 3\ncluster_breakdown = \"site_id\"\nattributes")), &[], false, 2, "must be one of the layer's attributes"),
    case("part size under S3's minimum", Some(("pool_size = 2", "pool_size = 2\n[store]\npart_size_mib = 1")), &[], false, 2, "store.part_size_mib"),
    case("PMTiles object without a key", None, &["--output", "pmtiles:s3://tiles/"], false, 2, "needs an object key"),
    case("tile extension with a slash", Some(("name = \"sites\"\n", "name = \"sites\"\ntile_extension = \"p/bf\"\n")), &[], false, 2, "tile_extension"),
    case("tileset defined twice", Some(("[[tileset]]", "[[tileset]]\nname = \"sites\"\n[[tileset.layer]]\nname = \"a\"\ntable = \"a\"\n[[tileset]]")), &[], false, 2, "defined twice"),
    case("store attempts out of range", Some(("pool_size = 2", "pool_size = 2\n[store]\nmax_attempts = 0")), &[], false, 2, "store.max_attempts"),
    // `[s3]`, the old name of `[store]`, is still read: the run goes on (to the unreachable database)
    // after a warning naming the file.
    case("the old [s3] table", Some(("pool_size = 2", "pool_size = 2\n[s3]\nmax_attempts = 3")), &[], false, 1, "oar.toml: the [s3] table is now called [store] (it configures every remote store, Azure included): rename it"),
    case("[store] and [s3] at once", Some(("pool_size = 2", "pool_size = 2\n[store]\nmax_attempts = 3\n[s3]\nmax_attempts = 3")), &[], false, 2, "oar.toml:6:1: both [store] and [s3] are present"),
    case("database attempts out of range", Some(("pool_size = 2", "pool_size = 2\nmax_attempts = 99")), &[], false, 2, "database.max_attempts 99"),
    case("table name trying SQL injection", Some(("sites\"\ngeometry", "sites; DROP TABLE sites; --\"\ngeometry")), &[], true, 2, "does not exist"),
    case("partition column missing from the table", Some(("name = \"sites\"\n", "name = \"sites\"\npartition_by = \"nation\"\n")), &[], true, 2, "partition_by column `nation` does not exist"),
    case("partition by the geometry", Some(("name = \"sites\"\n", "name = \"sites\"\npartition_by = \"pt\"\n")), &[], false, 2, "partition_by `pt` is the geometry column"),
    case("a partitioned tileset in a sharded run", Some(("name = \"sites\"\n", "name = \"sites\"\npartition_by = \"kind\"\n")), &["--shard", "0/2"], false, 2, "sharded runs do not support yet"),
    case("a shard index without a count", None, &["--shard", "2/2"], false, 2, "outside 0..2"),
    case("a partition without partition_by", None, &["--partition", "BD"], false, 2, "--partition needs a tileset with `partition_by`"),
    case("column name trying SQL injection", Some(("\"kind\",", "\"kind\\\"; DROP TABLE sites; --\",")), &[], true, 2, "does not exist"),
];

fn run_case(case: &Case, schema: Option<&TestSchema>) {
    let dir = tempfile::tempdir().unwrap();
    let schema_name = schema.map_or("public", |s| s.name.as_str());
    let mut config = single_layer_config(schema_name, "sites", "", "");
    if let Some((from, to)) = case.config_edit {
        assert!(config.contains(from), "{}: the edit must apply", case.name);
        config = config.replacen(from, to, 1);
    }
    let config_path = dir.path().join("oar.toml");
    std::fs::write(&config_path, config).unwrap();
    let default_output = dir.path().join("out.mbtiles");
    let mut args = vec!["seed"];
    if !case.args.contains(&"--config") {
        args.extend(["--config", config_path.to_str().unwrap()]);
    }
    if !case.args.iter().any(|a| a.starts_with("--zoom")) {
        args.extend(["--zoom", "0-3"]);
    }
    if !case.args.contains(&"--output") {
        args.extend(["--output", default_output.to_str().unwrap()]);
    }
    args.extend_from_slice(case.args);
    let url = if case.database {
        schema.map(|s| s.url.as_str())
    } else {
        None
    };
    let run = oar_tiles(url, &args);

    assert_eq!(
        run.code, case.code,
        "{}: exit code\nstderr: {}",
        case.name, run.stderr
    );
    assert!(
        run.stderr.contains(case.message),
        "{}: stderr lacks `{}`:\n{}",
        case.name,
        case.message,
        run.stderr
    );
    let error_lines = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .count();
    assert_eq!(
        error_lines, 1,
        "{}: one error line\n{}",
        case.name, run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{}: panic\n{}",
        case.name,
        run.stderr
    );
    assert!(
        !run.stderr.contains("oar_tiles:oar_tiles@"),
        "{}: password printed",
        case.name
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "oar.toml")
        .collect();
    assert!(left.is_empty(), "{}: left behind {left:?}", case.name);
}

#[test]
fn bad_command_lines_and_configs_are_refused_clearly() {
    for case in CASES.iter().filter(|c| !c.database) {
        run_case(case, None);
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn bad_sources_and_outputs_are_refused_clearly() {
    let mut schema = TestSchema::create("badinput");
    schema.point_table("sites", &[Point::new(1, 90.4, 23.8)]);
    for case in CASES.iter().filter(|c| c.database) {
        run_case(case, Some(&schema));
    }
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_wrong_password_is_reported_without_the_password() {
    let schema = TestSchema::create("password");
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("oar.toml");
    std::fs::write(
        &config_path,
        single_layer_config(&schema.name, "sites", "", ""),
    )
    .unwrap();
    let mut url: String = schema.url.clone();
    let at = url.find('@').expect("the test URL has credentials");
    let colon = url[..at].rfind(':').unwrap();
    url.replace_range(colon + 1..at, "Wr0ngSecret");
    let output = dir.path().join("out.mbtiles");
    let run = oar_tiles(
        Some(&url),
        &[
            "seed",
            "--config",
            config_path.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot connect to PostgreSQL at oar_tiles@127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Wr0ngSecret"), "{}", run.stderr);
    assert!(!output.exists());
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh, which sets OAR_TILES_TEST_DATABASE_URL"]
fn a_missing_spatial_index_is_warned_about_and_the_seed_goes_on() {
    let mut schema = TestSchema::create("noindex");
    schema.point_table("sites", &[Point::new(1, 90.4, 23.8)]);
    schema.execute(
        "DO $$ DECLARE i text; BEGIN
           FOR i IN SELECT indexrelid::regclass::text FROM pg_index
                    WHERE indrelid = '{schema}.sites'::regclass AND NOT indisprimary LOOP
             EXECUTE 'DROP INDEX ' || i;
           END LOOP; END $$;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("oar.toml");
    std::fs::write(
        &config_path,
        single_layer_config(&schema.name, "sites", "", ""),
    )
    .unwrap();
    let output = dir.path().join("out.mbtiles");
    let run = oar_tiles(
        Some(&schema.url),
        &[
            "seed",
            "--config",
            config_path.to_str().unwrap(),
            "--zoom",
            "0-2",
            "--output",
            output.to_str().unwrap(),
        ],
    );
    run.assert_success();
    assert!(run.stderr.contains("no spatial index"), "{}", run.stderr);
    assert!(output.exists());
}

/// Configs of the cases above that the parser refuses while `config schema` accepts them, by case
/// name: what JSON Schema cannot say (a rule across keys or tables, a rule on the database).
const BEYOND_THE_SCHEMA: &[(&str, &str)] = &[
    (
        "config buffer too large",
        "the buffer's bound is half of the same tileset's extent: one key's limit set by another's value",
    ),
    (
        "cluster breakdown of a column not rendered",
        "cluster_breakdown must name one of the layer's attributes: a value that must appear in another key's list",
    ),
    (
        "tileset defined twice",
        "tileset names are unique: JSON Schema's uniqueItems compares whole tables, not one key of them",
    ),
    (
        "partition by the geometry",
        "partition_by must not be any layer's geometry_column: a value compared with other tables' values",
    ),
];

/// The schema's complaints about a config text; empty when it accepts it.
fn schema_errors(text: &str) -> Vec<String> {
    let instance: serde_json::Value = toml::from_str(text).unwrap();
    let schema = oar_tiles::commands::config_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

/// An editor checking a config against `config schema` refuses what `seed` refuses, wherever
/// JSON Schema can say it; the rest is listed in [`BEYOND_THE_SCHEMA`] with why.
#[test]
fn the_schema_refuses_the_bad_configs_the_parser_refuses() {
    let mut accepted = Vec::new();
    for case in CASES {
        let Some((from, to)) = case.config_edit else {
            continue;
        };
        let text = single_layer_config("public", "sites", "", "").replacen(from, to, 1);
        if toml::from_str::<toml::Value>(&text).is_err() {
            continue;
        }
        let parsed = oar_tiles::Config::parse(std::path::Path::new("oar.toml"), &text, None);
        if parsed.is_ok() {
            continue;
        }
        let beyond = BEYOND_THE_SCHEMA.iter().any(|(name, _)| *name == case.name);
        match (schema_errors(&text).is_empty(), beyond) {
            (true, false) => accepted.push(case.name),
            (false, true) => panic!(
                "{}: the schema refuses it now; drop it from the list",
                case.name
            ),
            _ => {}
        }
    }
    assert!(
        accepted.is_empty(),
        "the parser refuses these configs but the schema accepts them: {accepted:#?}"
    );
}
