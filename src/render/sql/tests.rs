//! The statements' shapes: parameters, layer names and what each zoom renders.

use super::generalise::pixel_metres;
use super::*;
use crate::config::LayerConfig;
use crate::render::source::FieldType;
use crate::render::source::Property;

pub(super) fn layer(name: &str, zooms: Option<ZoomRange>) -> LayerSource {
    LayerSource {
        config: LayerConfig {
            name: name.into(),
            schema: Some("my schema".into()),
            table: "fac\"ilities".into(),
            geometry_column: "location".into(),
            srid: None,
            id_column: "id".into(),
            attributes: vec!["name".into()],
            filter: Some("country_code = 'BD'".into()),
            zooms,
            cluster: None,
            cluster_breakdown: None,
            partition: None,
            generalisation: crate::config::Generalisation::DEFAULT,
        },
        srid: 4326,
        integer_id: true,
        properties: vec![Property {
            column: "name".into(),
            field_type: FieldType::String,
            encoding: Encoding::Native,
        }],
        has_spatial_index: true,
        estimated_rows: 0.0,
        points_only: true,
        geography: false,
    }
}

#[test]
fn identifiers_are_quoted_and_values_bound() {
    let job = ZoomRange::new(0, 14).unwrap();
    let query = render_query(&[layer("points", None)], &[], 3, job, (4096, 64));
    let sql = &query.sql;
    assert!(
        sql.contains("FROM \"my schema\".\"fac\"\"ilities\" t"),
        "{sql}"
    );
    assert!(
        sql.contains("t.\"location\" && ST_MakeEnvelope(b.p4, b.p5, b.p6, b.p7, 4326)"),
        "{sql}"
    );
    let aggregate = "ST_AsMVT(r, $44, 4096, '__oar_geom', '__oar_fid' ORDER BY r.\"__oar_fid\")";
    assert!(sql.contains(aggregate), "{sql}");
    assert!(sql.contains("AND (country_code = 'BD')"), "{sql}");
    assert!(
        sql.contains("ST_MakeEnvelope(b.p40, b.p41, b.p42, b.p43, 3857) AS child4"),
        "{sql}"
    );
    assert!(
        sql.contains("bool_or(s.\"__oar_merc\" && env.child4) AS c4"),
        "{sql}"
    );
    assert!(
        sql.contains("FROM unnest($2::int4[], $3::int4[], $4::float8[], $5::float8[]"),
        "tiles arrive as arrays: {sql}"
    );
    assert!(
        !sql.contains("points"),
        "layer names are bound, not inlined"
    );
    assert_eq!(query.layer_names, ["points"]);
    assert_eq!(query.types.len(), 44);
}

#[test]
fn the_deepest_zoom_never_descends() {
    let job = ZoomRange::new(0, 14).unwrap();
    let deepest = render_query(&[layer("p", None)], &[], 14, job, (4096, 64));
    assert!(
        deepest
            .sql
            .contains("ARRAY[false, false, false, false] AS children"),
        "{}",
        deepest.sql
    );
    assert!(!deepest.sql.contains("bool_or"), "{}", deepest.sql);
    let above = render_query(&[layer("p", None)], &[], 13, job, (4096, 64));
    assert!(
        above.sql.contains("ARRAY[coalesce(l0.c1, false), "),
        "{}",
        above.sql
    );
}

#[test]
fn layers_outside_a_zoom_only_steer_the_walk() {
    let job = ZoomRange::new(0, 14).unwrap();
    let detail = layer("detail", Some(ZoomRange::new(12, 14).unwrap()));
    let overview = layer("overview", Some(ZoomRange::new(0, 11).unwrap()));
    let query = render_query(&[overview.clone(), detail.clone()], &[], 5, job, (4096, 64));
    assert_eq!(query.layer_names, ["overview"]);
    let from_rows = "coalesce(l0.c1, false)";
    let from_table = "OR EXISTS (SELECT 1 FROM \"my schema\".\"fac\"\"ilities\" t WHERE t.\"location\" && ST_MakeEnvelope(b.p12, b.p13, b.p14, b.p15, 4326)";
    assert!(
        query.sql.contains(&format!("{from_rows} {from_table}")),
        "{}",
        query.sql
    );
    let probe = probe_query(&[overview, detail], 12, job);
    assert!(
        probe.sql.contains("(SELECT ''::bytea AS mvt, ARRAY[EXISTS"),
        "{}",
        probe.sql
    );
    assert!(probe.layer_names.is_empty());
}

/// Lines and polygons are simplified with a tolerance of the zoom's pixel and left out below the
/// thresholds; a column of points only, or rules turned off, gets the plain clip.
#[test]
fn generalisation_applies_to_columns_that_may_hold_lines_or_polygons() {
    let job = ZoomRange::new(0, 14).unwrap();
    let points = layer("p", None);
    let mut any = points.clone();
    any.points_only = false;
    let sql = |layer: &LayerSource, z: u8| {
        render_query(std::slice::from_ref(layer), &[], z, job, (4096, 64)).sql
    };
    assert!(
        !sql(&points, 3).contains("ST_Simplify"),
        "{}",
        sql(&points, 3)
    );
    for z in [0u8, 7] {
        let text = sql(&any, z);
        let pixel = pixel_metres(z);
        // Simplified once per statement, in the batch's rows; each tile clips that.
        assert!(
            text.contains(&format!(
                "CASE WHEN ST_Dimension(s.\"__oar_merc\") > 0 THEN ST_Simplify(s.\"__oar_merc\", {}, true) END",
                0.25 * pixel
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "COALESCE(ST_AsMVTGeom(s.\"__oar_simple\", env.tile, 4096, 64, true), \
                 ST_AsMVTGeom(s.\"__oar_merc\", env.tile, 4096, 64, true))"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "ST_Area(s.\"__oar_merc\") < {}",
                0.25 * pixel * pixel
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("ST_Length(s.\"__oar_merc\") < {}", 0.25 * pixel)),
            "{text}"
        );
    }
    assert!(
        sql(&any, 5).contains(
            "CASE WHEN s.\"__oar_point\" THEN ST_AsMVTGeom(s.\"__oar_merc\", env.tile, 4096, 64, true) WHEN"
        ),
        "points first, as they are"
    );
    assert!(
        sql(&any, 5).contains("ST_Dimension(s.\"__oar_merc\") = 0 AS \"__oar_point\"")
            && sql(&any, 5).contains(
                "(ST_GeometryType(s.\"__oar_merc\") IN ('ST_Polygon', 'ST_MultiPolygon') \
                 OR (ST_GeometryType(s.\"__oar_merc\") = 'ST_GeometryCollection' \
                 AND ST_Dimension(s.\"__oar_merc\") = 2)) AS \"__oar_polygon\""
            ),
        "whether a row is a point or drawn as polygons is found once per batch"
    );
    assert!(
        sql(&any, 5).contains(
            "WHEN s.\"__oar_polygon\" THEN ST_ForcePolygonCCW(ST_Normalize(COALESCE(\
             ST_AsMVTGeom(s.\"__oar_simple\", env.tile, 4096, 64, true), \
             ST_AsMVTGeom(s.\"__oar_merc\", env.tile, 4096, 64, true)))) ELSE COALESCE("
        ),
        "polygons' rings in canonical order, lines as they run: {}",
        sql(&any, 5)
    );
    assert!(
        !sql(&points, 5).contains("ST_Normalize"),
        "points pay nothing"
    );
    assert!((pixel_metres(0) - 156_543.033_928_041).abs() < 1e-6);
    let mut off = any.clone();
    off.config.generalisation = crate::config::Generalisation {
        simplify: 0.0,
        min_area: 0.0,
        min_length: 0.0,
    };
    let text = sql(&off, 5);
    assert!(
        !text.contains("ST_Simplify") && !text.contains("ST_Area"),
        "{text}"
    );
    assert!(
        text.contains(
            "THEN CASE WHEN s.\"__oar_polygon\" THEN ST_ForcePolygonCCW(ST_Normalize(\
             ST_AsMVTGeom(s.\"__oar_merc\", env.tile, 4096, 64, true))) \
             ELSE ST_AsMVTGeom(s.\"__oar_merc\", env.tile, 4096, 64, true) END END"
        ),
        "without generalisation too: {text}"
    );
    let mut only_area = off.clone();
    only_area.config.generalisation.min_area = 1.0;
    let text = sql(&only_area, 5);
    assert!(
        !text.contains("ST_Simplify") && text.contains("ST_Area") && !text.contains("ST_Length"),
        "{text}"
    );
}
