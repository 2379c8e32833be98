use std::time::Duration;

use super::PmtilesVersions;
use crate::config::{Config, MINIMAL};

fn parse_config(text: &str) -> crate::error::Result<Config> {
    Config::parse(std::path::Path::new("conf/oar.toml"), text, None)
}

#[test]
fn pmtiles_versions_apply_to_pmtiles_outputs_only() {
    let versioned = |output: &str, keys: &str| {
        MINIMAL.replace(
            "output = \"out.mbtiles\"",
            &format!("output = \"{output}\"\n{keys}"),
        )
    };
    let config = parse_config(&versioned("out.pmtiles", "pmtiles_versions = true")).unwrap();
    assert_eq!(
        config.tilesets[0].output_settings.pmtiles_versions,
        Some(PmtilesVersions {
            keep: Duration::from_secs(3660)
        })
    );
    let config = parse_config(&versioned(
        "s3://bkt/maps/f.pmtiles",
        "pmtiles_versions = true\npmtiles_keep_versions = \"0s\"\n\
         tiles_url = \"https://cdn.example.org/maps\"",
    ))
    .unwrap();
    assert_eq!(
        config.tilesets[0].output_settings.pmtiles_versions,
        Some(PmtilesVersions {
            keep: Duration::ZERO
        })
    );
    assert_eq!(
        parse_config(MINIMAL).unwrap().tilesets[0]
            .output_settings
            .pmtiles_versions,
        None
    );
    for (output, keys, message) in [
        (
            "out.mbtiles",
            "pmtiles_versions = true",
            "apply to PMTiles outputs; output `conf/out.mbtiles` is conf/out.mbtiles (MBTiles)",
        ),
        (
            "s3://bkt/tiles",
            "pmtiles_versions = true",
            "apply to PMTiles outputs",
        ),
        (
            "out.pmtiles",
            "pmtiles_keep_versions = \"1h\"",
            "pmtiles_keep_versions needs pmtiles_versions = true",
        ),
        (
            "out.pmtiles",
            "pmtiles_versions = true\npmtiles_keep_versions = \"soon\"",
            "pmtiles_keep_versions `soon` is not a duration",
        ),
        (
            "out.pmtiles",
            "pmtiles_versions = true\ntiles_url = \"https://cdn/{z}/{x}/{y}.pbf\"",
            "the folder that serves the archive's versions",
        ),
    ] {
        let err = parse_config(&versioned(output, keys))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tileset `facilities`"), "{err}");
        assert!(err.contains(message), "{output} {keys}: {err}");
    }
}

#[test]
fn generalisation_has_defaults_and_takes_whole_or_fractional_pixels() {
    let config = parse_config(MINIMAL).unwrap();
    assert_eq!(
        config.tilesets[0].layers[0].generalisation,
        super::Generalisation::DEFAULT
    );
    let config = parse_config(&format!(
        "{MINIMAL}simplify = 2\nmin_area = 0.5\nmin_length = 0\n"
    ))
    .unwrap();
    let rules = config.tilesets[0].layers[0].generalisation;
    assert_eq!(
        (rules.simplify, rules.min_area, rules.min_length),
        (2.0, 0.5, 0.0)
    );
    assert!(!rules.is_off());
    for bad in ["simplify = -1", "min_area = nan", "min_length = inf"] {
        let err = parse_config(&format!("{MINIMAL}{bad}\n"))
            .unwrap_err()
            .to_string();
        let key = bad.split(' ').next().unwrap();
        assert!(
            err.contains(&format!("layer `facilities`: {key}")) && err.contains("0 or more"),
            "{err}"
        );
    }
}

#[test]
fn freshness_defers_low_zooms_and_sets_cache_control_per_zoom() {
    let with = |keys: &str| format!("{MINIMAL}\n[tileset.freshness]\n{keys}\n");
    let config = parse_config(&with(
        "defer_below_zoom = 9\n[tileset.freshness.cache_control]\n\"0-8\" = \"public, max-age=600\"\n\"14\" = \"public, max-age=30\"",
    ))
    .unwrap();
    let tileset = &config.tilesets[0];
    assert_eq!(
        tileset.freshness,
        Some(super::Freshness {
            defer_below_zoom: 9,
            defer: super::DEFAULT_DEFER
        })
    );
    let settings = &tileset.output_settings;
    assert_eq!(settings.cache_control_at(3), "public, max-age=600");
    assert_eq!(settings.cache_control_at(14), "public, max-age=30");
    assert_eq!(settings.cache_control_at(10), settings.cache_control);
    assert_eq!(parse_config(MINIMAL).unwrap().tilesets[0].freshness, None);

    for (keys, message) in [
        ("defer_below_zoom = 15", "would defer every zoom"),
        ("defer_below_zoom = 9\ndefer_seconds = 0", "at least 1"),
        ("defer_seconds = 60", "needs defer_below_zoom"),
        (
            "[tileset.freshness.cache_control]\n\"0-8\" = \"a\"\n\"8-9\" = \"b\"",
            "overlap",
        ),
        (
            "[tileset.freshness.cache_control]\n\"low\" = \"a\"",
            "not a zoom or zoom range",
        ),
    ] {
        let err = parse_config(&with(keys)).unwrap_err().to_string();
        assert!(err.contains(message), "{keys}: {err}");
    }
}
