//! Unit tests of the capture DDL.

use super::*;
use crate::state::watermark::Watermark;
use std::path::Path;

/// The DDL a first install of `config` runs for `tables`.
fn installed(config: &Config, mut tables: Vec<Watched>) -> String {
    let widenings: Vec<Widening> = tables
        .iter_mut()
        .map(|watched| widen(watched, &[], "c.toml").unwrap())
        .collect();
    install_sql(config, &tables, &widenings)
}

#[test]
fn triggers_watch_each_table_once_with_every_rendered_column() {
    let text = r#"
[database]
url = "postgresql://x/y"
[[tileset]]
name = "a"
layer = [{ name = "f", table = "public.facilities", geometry_column = "location", attributes = ["name"] }]
[[tileset]]
name = "b"
layer = [{ name = "f", table = "public.facilities", geometry_column = "location", attributes = ["country_code"] }]
"#;
    let config = Config::parse(Path::new("c.toml"), text, None).unwrap();
    let sql = installed(&config, watched_tables(&config));
    assert_eq!(
        sql.matches("CREATE TRIGGER oar_tiles_capture_update AFTER UPDATE")
            .count(),
        1
    );
    // One notification per statement that logged, on the change schema's channel, sent by
    // the capture functions (each path of insert, update and delete, and truncate); the
    // earlier trigger that only notified is dropped.
    assert_eq!(
        sql.matches("PERFORM pg_notify(E'oar_tiles', TG_TABLE_SCHEMA")
            .count(),
        7
    );
    assert!(!sql.contains("CREATE TRIGGER oar_tiles_notify"));
    // Dropped only where it calls this schema's functions, never another schema's.
    assert!(sql.contains("E'oar_tiles_notify'"));
    assert!(sql.contains("AND p.pronamespace = to_regnamespace("));
    assert!(sql.contains(
        "(o.\"name\", o.\"id\", o.\"location\", o.\"country_code\") IS DISTINCT FROM (n.\"name\", n.\"id\", n.\"location\", n.\"country_code\")"
    ));
    // A single row is never aggregated; a bulk statement is planned for its own size.
    assert_eq!(
        sql.matches("PERFORM FROM oar_old LIMIT 1 OFFSET 1").count(),
        2
    );
    assert!(sql.contains(
        "IF (o.\"name\", o.\"id\", o.\"location\", o.\"country_code\") IS DISTINCT FROM"
    ));
    assert_eq!(sql.matches("EXECUTE $f$").count(), 3);
    assert!(sql.contains("FULL JOIN oar_new n ON o.\"id\" = n.\"id\" OFFSET 0) d"));
    assert!(sql.contains("SET COMPRESSION lz4"));
    // A row whose geometry alone changed is logged as a pair; the comparison calls no PostGIS
    // function, which the application's search path may not reach.
    assert!(sql.contains(
        "IF (ROW(o.\"name\", o.\"id\", o.\"country_code\") IS NOT DISTINCT FROM ROW(n.\"name\", n.\"id\", n.\"country_code\") AND o.\"location\" IS NOT NULL"
    ));
    assert_eq!(
        sql.matches(
            "array_agg(d.og) FILTER (WHERE (d.same AND d.og IS NOT NULL AND d.ng IS NOT NULL))"
        )
        .count(),
        1
    );
    assert!(sql.contains("WHERE NOT d.same OR d.og IS DISTINCT FROM d.ng"));
    assert!(!sql.contains("ST_Dimension"));
    let mut text_ids = watched_tables(&config);
    text_ids[0].id_collatable = true;
    assert!(installed(&config, text_ids)
        .contains("ON o.\"id\" COLLATE \"C\" = n.\"id\" COLLATE \"C\" OFFSET 0"));
    // A geography column is logged, and compared, as geometry.
    let mut geography = watched_tables(&config);
    geography[0].geography = true;
    let sql = installed(&config, geography);
    assert!(sql.contains("VALUES (TG_RELID, o.\"location\"::geometry, n.\"location\"::geometry"));
    assert!(sql.contains("array_agg(t.\"location\"::geometry)"));
    assert!(sql.contains("(o.\"name\", o.\"id\", o.\"location\"::geometry, o.\"country_code\")"));
    assert!(!sql.contains("o.\"location\","));
    // A body holding the tags quotes itself with one it does not hold.
    assert_eq!(dollar_quote("a $f$ b $f1$"), "$f2$a $f$ b $f1$\n$f2$");
    let watermark = Watermark {
        snapshot: "5:9:7".into(),
        settings: Some("abc".into()),
        zooms: Some("0-14".into()),
        bbox: Some("-180,-85,180,85".into()),
    };
    assert_eq!(
        Watermark::from_state(&watermark.to_state()),
        Some(watermark)
    );
    // Outputs of earlier versions recorded only the snapshot.
    assert_eq!(
        Watermark::from_state(r#"{"snapshot":"5:9:7"}"#).map(|w| w.settings),
        Some(None)
    );
}
