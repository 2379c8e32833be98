//! Real data for the polygon and line tests: Natural Earth's countries and New York's boroughs as
//! shapefiles, which `scripts/geodata.sh` unpacks and `scripts/test.sh` names in
//! `OAR_TILES_TEST_GEODATA`, loaded into a test's schema with `ogr2ogr`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::pg::TestSchema;

/// Variable naming the directory `scripts/geodata.sh` prints.
const GEODATA_ENV: &str = "OAR_TILES_TEST_GEODATA";

/// The data directory; a test run without it fails, saying how to run it.
pub fn geodata() -> PathBuf {
    match std::env::var(GEODATA_ENV) {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "{GEODATA_ENV} is not set: these tests run through scripts/test.sh, which runs \
             scripts/geodata.sh and sets it"
        ),
    }
}

/// Natural Earth's countries into `{schema}.countries`, and their boundaries as lines (id, name)
/// into `{schema}.borders`, indexed.
pub fn countries_and_borders(schema: &mut TestSchema) {
    ogr2ogr(
        schema,
        &geodata().join("naturalearth_lowres/naturalearth_lowres.shp"),
        "countries",
    );
    schema.execute(
        "CREATE TABLE {schema}.borders AS
             SELECT id, name, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 4326) AS geom
             FROM {schema}.countries;
         ALTER TABLE {schema}.borders ADD PRIMARY KEY (id);
         CREATE INDEX ON {schema}.borders USING gist (geom);",
    );
}

/// Loads a shapefile into `{schema}.table` as ogr2ogr does for an operator: multi-geometries, `geom`
/// and an integer `id`, the file's own SRID.
pub fn ogr2ogr(schema: &TestSchema, shapefile: &Path, table: &str) {
    let output = Command::new("ogr2ogr")
        .args(["-f", "PostgreSQL", &format!("PG:{}", schema.url)])
        .arg(shapefile)
        .args(["-nln", table, "-nlt", "PROMOTE_TO_MULTI"])
        .args(["-lco", &format!("SCHEMA={}", schema.name)])
        .args(["-lco", "GEOMETRY_NAME=geom", "-lco", "FID=id"])
        // The shapefiles declare numeric widths their values overflow (populations, areas).
        .args(["-lco", "PRECISION=NO"])
        .output()
        .expect("run ogr2ogr (scripts/test.sh installs gdal-bin)");
    assert!(
        output.status.success(),
        "ogr2ogr {}: {}",
        shapefile.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
