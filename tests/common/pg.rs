//! A throwaway schema in the test PostGIS server, dropped when the test ends.
//!
//! The server comes from `scripts/test.sh`, which exports `OAR_TILES_TEST_DATABASE_URL`. Tests that
//! need it are `#[ignore]`d, so a plain `cargo test` reports them as ignored (never as passed);
//! `scripts/test.sh` runs them with `--include-ignored`, and without the variable they fail. The
//! watch tests also stop and start a cluster of their own ([`Cluster`]).

use std::process::{Command, Stdio};

use postgres::{Client, NoTls};

/// Variable holding the test server's URL.
pub const TEST_URL_ENV: &str = "OAR_TILES_TEST_DATABASE_URL";

/// The test server's URL; a database test run without it fails, saying how to run it.
pub fn test_url() -> String {
    match std::env::var(TEST_URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{TEST_URL_ENV} is not set: database tests run through scripts/test.sh, which starts \
             PostGIS and sets it"
        ),
    }
}

/// A schema of its own for one test.
pub struct TestSchema {
    /// Server URL.
    pub url: String,
    /// Schema name, unique per test run.
    pub name: String,
    client: Client,
    companions: Vec<String>,
}

impl TestSchema {
    /// Creates a fresh schema on the test server.
    pub fn create(label: &str) -> TestSchema {
        Self::create_on(test_url(), label)
    }

    /// Creates a fresh schema on the server at `url` (another test server than the shared one).
    pub fn create_on(url: String, label: &str) -> TestSchema {
        let mut client = Client::connect(&url, NoTls).expect("connect to the test database");
        let unique = format!(
            "{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            rand_suffix()
        );
        let name = format!("t_{label}_{unique}").to_lowercase();
        client
            .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .expect("create the test schema");
        TestSchema {
            url,
            name,
            client,
            companions: Vec::new(),
        }
    }

    /// The name of another schema of this test's own (e.g. for change capture), dropped with it.
    pub fn companion(&mut self, suffix: &str) -> String {
        let name = format!("{}_{suffix}", self.name);
        self.companions.push(name.clone());
        name
    }

    /// Runs SQL with `{schema}` replaced by the quoted schema name.
    pub fn execute(&mut self, sql: &str) {
        let sql = sql.replace("{schema}", &format!("\"{}\"", self.name));
        self.client
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
    }

    /// Connects again, after the server was restarted under the old connection.
    pub fn reconnect(&mut self) {
        self.client = Client::connect(&self.url, NoTls).expect("reconnect to the test database");
    }

    /// The client, for queries.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Creates `{schema}.<table>` with point rows `(id, lon, lat, name, kind, score)`.
    pub fn point_table(&mut self, table: &str, points: &[Point]) {
        self.execute(&format!(
            "CREATE TABLE {{schema}}.{table} (
                 site_id bigint PRIMARY KEY, label text NOT NULL, kind text, score integer,
                 seen_at timestamptz DEFAULT '2024-01-02 03:04:05+00', pt geometry(Point, 4326) NOT NULL);
             CREATE INDEX ON {{schema}}.{table} USING gist (pt);"
        ));
        let table = format!("\"{}\".{table}", self.name);
        for chunk in points.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|p| {
                    format!(
                        "({}, '{}', {}, {}, ST_SetSRID(ST_MakePoint({:.9}, {:.9}), 4326))",
                        p.id,
                        p.label.replace('\'', "''"),
                        p.kind.as_ref().map_or("NULL".into(), |k| format!("'{k}'")),
                        p.score,
                        p.lon,
                        p.lat
                    )
                })
                .collect();
            self.client
                .batch_execute(&format!(
                    "INSERT INTO {table} (site_id, label, kind, score, pt) VALUES {}",
                    values.join(",")
                ))
                .expect("insert points");
        }
        self.client
            .batch_execute(&format!("ANALYZE {table}"))
            .unwrap();
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        for companion in &self.companions {
            let _ = self
                .client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{companion}\" CASCADE"));
        }
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// One test facility.
#[derive(Debug, Clone)]
pub struct Point {
    pub id: i64,
    pub lon: f64,
    pub lat: f64,
    pub label: String,
    pub kind: Option<String>,
    pub score: i32,
}

impl Point {
    /// A point with attributes derived from its id.
    pub fn new(id: i64, lon: f64, lat: f64) -> Point {
        Point {
            id,
            lon,
            lat,
            label: format!("Facility #{id} \"O'Brien\""),
            kind: (id % 3 != 0).then(|| ["knit", "woven"][(id % 2) as usize].to_string()),
            score: (id % 17) as i32,
        }
    }
}

/// `count` points with ids from 1, every `scatter_every`-th anywhere in the world and the others in
/// one dense hub `[west, south, east, north]`, as facility data looks; the same for the same seed.
pub fn hub_with_scatter(count: i64, seed: u64, scatter_every: i64, hub: [f64; 4]) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    (1..=count)
        .map(|id| {
            let [west, south, east, north] = if id % scatter_every == 0 {
                [-170.0, -60.0, 170.0, 70.0]
            } else {
                hub
            };
            Point::new(id, rng.range(west, east), rng.range(south, north))
        })
        .collect()
}

/// A deterministic pseudo-random stream (xorshift), so failures can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }
}

/// Waits until the hot standby at `standby` has replayed everything `primary`'s server has written
/// so far: its WAL insert position, since the test server commits with `synchronous_commit = off`
/// and a commit's record may not be flushed yet when it returns.
pub fn wait_for_replay(primary: &mut TestSchema, standby: &str) {
    let lsn: String = primary
        .client()
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    let mut replica = Client::connect(standby, NoTls).expect("connect to the standby");
    let started = std::time::Instant::now();
    while !replica
        .query_one(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            &[&lsn],
        )
        .unwrap()
        .get::<_, bool>(0)
    {
        // Not a time limit on the tool: a guard against a standby that stopped replaying.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the standby did not replay up to {lsn} in two minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Tests that stop the watch tests' cluster take turns: one test's stop would otherwise land in
/// another's outage.
static CLUSTER_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Stops and starts the watch test's own cluster (never the shared one); starts it again if the
/// test ends while it is stopped. Held by one test at a time.
pub struct Cluster {
    version: String,
    name: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// The cluster `OAR_TILES_TEST_WATCH_CLUSTER` names (`VERSION/NAME`), once no other test holds
    /// it.
    pub fn from_env() -> Cluster {
        let value = super::env::required_env("OAR_TILES_TEST_WATCH_CLUSTER");
        let (version, name) = value.split_once('/').expect("VERSION/NAME");
        // A test that failed while holding the turn leaves the cluster started (Drop), so the
        // next may go on.
        let turn = CLUSTER_TURN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Cluster {
            version: version.into(),
            name: name.into(),
            _turn: turn,
        }
    }

    /// Whether `pg_ctlcluster` did `action` (`stop`, `start`) to the cluster, in fast mode.
    pub fn ctl(&self, action: &str) -> bool {
        Command::new("pg_ctlcluster")
            .args([&self.version, &self.name, action, "-m", "fast"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctlcluster")
            .args([&self.version, &self.name, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
