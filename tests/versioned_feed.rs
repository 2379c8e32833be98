//! A versioned changes feed (`versioned = true`) needs every CDN in front to key its cache on the
//! query string: `seed` and `watch` ask a tile twice through the CDN's `public_url` with versions
//! never used, and refuse, in one line naming the setting, a cache that answers the second from
//! its copy. A real Varnish whose VCL hashes the path alone is refused; one that hashes the query
//! string too is not.

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::run::{oar_tiles, oar_tiles_with, single_layer_config};
use crate::common::serve::Served;
use crate::common::varnish::Varnish;

/// A seeded tree with a versioned feed, its origin (`serve`), and `cache` in front of it named
/// as the tileset's CDN with its `public_url`.
fn versioned_behind(label: &str, cache: impl FnOnce(u16) -> Varnish) -> (Fixture, Served, Varnish) {
    let points = hub_with_scatter(60, 3, 5, [13.0, 52.3, 13.8, 52.7]);
    let fixture = Fixture::new(label, &points, "versioned.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(
                &schema.name,
                "sites",
                "maxzoom = 6\n\n[tileset.feed]\nversioned = true\n",
                ""
            )
        )
    });
    let config = fixture.config.to_str().unwrap().to_string();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles(url, &["changes", "install", "--config", &config]).assert_success();
    let output = format!("dir:{}", fixture.path("tree").display());
    oar_tiles_with(
        url,
        &["seed", "--config", &config, "--output", &output],
        &[],
    )
    .assert_success();
    let origin = Served::start(&[output.as_str()], &[]);
    let name = origin.get("/index.json").json()["tilesets"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = cache(origin.port);
    let text = std::fs::read_to_string(&fixture.config).unwrap().replacen(
        "\n[[tileset.layer]]",
        &format!(
            "\n[[tileset.cdn]]\nkind = \"http\"\nname = \"edge\"\nurl = \"http://127.0.0.1:{p}/{name}/{{path}}\"\npublic_url = \"http://127.0.0.1:{p}/{name}\"\n\n[[tileset.layer]]\n",
            p = cache.port
        ),
        1,
    );
    let text = text.replacen(
        "[[tileset]]\nname = \"sites\"\n",
        &format!("[[tileset]]\nname = \"sites\"\noutput = \"{output}\"\n"),
        1,
    );
    std::fs::write(&fixture.config, text).unwrap();
    (fixture, origin, cache)
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_cache_that_ignores_the_query_string_is_refused_by_seed_and_watch() {
    let (fixture, _origin, _cache) =
        versioned_behind("versioned_refused", |origin| Varnish::keeping(origin, "1d"));
    let config = fixture.config.to_str().unwrap();
    let url = Some(fixture.schema.url.as_str());
    for command in [
        &["seed", "--dirty", "--config", config][..],
        &["watch", "--config", config],
    ] {
        let run = oar_tiles_with(url, command, &[]);
        assert_ne!(run.code, 0, "{command:?}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("ignores the query string"))
            .unwrap_or_else(|| panic!("{command:?} says why: {}", run.stderr));
        assert!(
            line.contains("cdn `edge`")
                && line.contains("versioned = true")
                && line.contains("query string"),
            "{line}"
        );
    }
}

#[test]
#[ignore = "needs PostGIS and Varnish: run scripts/test.sh"]
fn a_cache_keyed_on_the_query_string_passes() {
    let (fixture, _origin, _cache) = versioned_behind("versioned_keyed", |origin| {
        Varnish::keeping_for_versioned_feed(origin, "1d")
    });
    let config = fixture.config.to_str().unwrap();
    let url = Some(fixture.schema.url.as_str());
    oar_tiles_with(url, &["seed", "--dirty", "--config", config], &[]).assert_success();
}
