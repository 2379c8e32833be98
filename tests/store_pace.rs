//! A first seed into a new bucket at the store's own pace: each store's stand-in behind a front
//! (`common::throttle`, `scripts/throttle-front.py`) that takes 200 writes a second and refuses the
//! rest as S3 (`503 SlowDown`), GCS (`429 rateLimitExceeded`, some `503`) or Azure (`503
//! ServerBusy`) does. The seed slows to what the store takes, sends each refused write again, ends
//! with exit 0 and every tile stored (`validate --against-db` finds nothing), and its summary says
//! that the store throttled.

use crate::common::fixture::Fixture;
use crate::common::pg::hub_with_scatter;
use crate::common::remote::Remote;
use crate::common::run::{oar_tiles_with, single_layer_config};
use crate::common::throttle::ThrottleFront;

const PREFIX: &str = "paced/v1";
const ZOOMS: &str = "0-9";
/// Writes a second the front lets through.
const RATE: u32 = 100;

/// Seeds a few thousand tiles into `remote` behind a front of `kind`, and checks the run.
fn a_first_seed_keeps_the_stores_pace(remote: Remote, kind: &str) {
    let upstream = match &remote {
        Remote::S3(server) => server.endpoint(),
        Remote::Azure(container) => container.url.clone(),
        Remote::Gcs(bucket) => bucket.url.clone(),
    };
    let front = ThrottleFront::start(kind, RATE, &upstream);
    let points = hub_with_scatter(3000, 11, 10, [-10.0, 35.0, 30.0, 60.0]);
    let store_table = match &remote {
        Remote::S3(_) => format!(
            "[store]\nendpoint = \"{}\"\nforce_path_style = true\nregion = \"us-east-1\"\n",
            front.url
        ),
        _ => String::new(),
    };
    let fixture = Fixture::new(&format!("pace_{kind}"), &points, "pace.toml", |schema| {
        format!(
            "{store_table}\n{}",
            single_layer_config(&schema.name, "sites", "", "")
        )
    });
    // The stand-in's address in the environment, replaced by the front's.
    let mut env: Vec<(&str, &str)> = remote
        .env()
        .into_iter()
        .map(|(name, value)| match name {
            "AZURITE_BLOB_STORAGE_URL" | "STORAGE_EMULATOR_HOST" => (name, front.url.as_str()),
            _ => (name, value),
        })
        .collect();
    env.push(("RUST_LOG", "oar_tiles=info"));
    let run = |args: &[&str]| oar_tiles_with(Some(&fixture.schema.url), args, &env);

    let output = remote.address(PREFIX);
    let summary = fixture.path("summary.json");
    let extra = ["--summary-json", summary.to_str().unwrap()];
    let seeded = run(&fixture.seed_args(&output, ZOOMS, &extra));
    let stats = front.stats();
    assert_eq!(
        seeded.code, 0,
        "the seed failed behind the front ({stats}):\n{}",
        seeded.stderr
    );
    assert!(
        stats["writes_refused"].as_u64().unwrap() > 0,
        "the front refused no write, so it tested nothing: {stats}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let written = json[0]["tiles_written"].as_u64().unwrap();
    assert!(written > 1500, "a few thousand tiles: {written}");
    let throttled = &json[0]["stored"]["throttled"];
    assert!(
        throttled["refused_writes"].as_u64().unwrap_or(0) > 0,
        "the summary says the store throttled: {json:#}"
    );
    let rate = throttled["writes_per_second"].as_u64().unwrap();
    assert!(
        rate > 0 && rate <= u64::from(RATE) * 2,
        "the rate the store took, about {RATE}: {throttled}"
    );
    let text = format!("{}{}", seeded.stdout, seeded.stderr);
    assert!(text.contains("store throttled"), "{text}");
    assert_eq!(remote.stored_tiles(PREFIX).len() as u64, written);

    let config = fixture.config.to_str().unwrap();
    let checked = run(&[
        "validate",
        "--json",
        "--config",
        config,
        "--tileset",
        "sites",
        "--against-db",
        "--all",
        &output,
    ]);
    assert_eq!(checked.code, 0, "{}\n{}", checked.stdout, checked.stderr);
}

#[test]
#[ignore = "needs PostGIS and the S3 test server: run scripts/test.sh"]
fn a_first_seed_keeps_the_stores_pace_on_s3() {
    a_first_seed_keeps_the_stores_pace(Remote::s3(), "s3");
}

#[test]
#[ignore = "needs PostGIS and Azurite: run scripts/test.sh"]
fn a_first_seed_keeps_the_stores_pace_on_azure() {
    a_first_seed_keeps_the_stores_pace(Remote::azure("pace"), "azure");
}

#[test]
#[ignore = "needs PostGIS and fake-gcs-server: run scripts/test.sh"]
fn a_first_seed_keeps_the_stores_pace_on_gcs() {
    a_first_seed_keeps_the_stores_pace(Remote::gcs("pace"), "gcs");
}
