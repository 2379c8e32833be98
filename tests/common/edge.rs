//! The edge tests' world: a tree seeded from a fixture with change capture whose changes are
//! purged through a CDN target, and `oar-tiles watch` with its purges, read over HTTP.

use std::time::Duration;

use super::fixture::Fixture;
use super::pg::{hub_with_scatter, Point};
use super::run::{oar_tiles_with, single_layer_config, Run};

/// The zooms every seed of the edge tests covers.
pub const ZOOMS: &str = "0-9";

/// The edge tests' facilities: a hub in Paris and a scatter around it.
pub fn points() -> Vec<Point> {
    hub_with_scatter(400, 31, 3, [2.2, 48.8, 2.5, 48.95])
}

/// A fixture seeding a tree, purged through `cdn`.
pub fn tree_world(label: &str, cdn: &str) -> (Fixture, std::path::PathBuf) {
    let mut tree = None;
    let fixture = Fixture::new(label, &points(), "edge.toml", |schema| {
        let changes = schema.companion("cdc");
        format!(
            "[changes]\nschema = \"{changes}\"\n{}",
            single_layer_config(&schema.name, "sites", cdn, "")
        )
    });
    tree.get_or_insert(fixture.path("tree"));
    let tree = tree.unwrap();
    let config = fixture.config.to_str().unwrap().to_string();
    super::run::oar_tiles(
        Some(&fixture.schema.url),
        &["changes", "install", "--config", &config],
    )
    .assert_success();
    (fixture, tree)
}

/// Names `tree` (to zoom 9) as the output of a [`tree_world`]'s tileset in its config, for runs
/// that take the output from the config (`watch`, `seed` without `--output`), with `before` (a
/// `[watch]` table, say) put ahead of the tileset.
pub fn tree_in_config(fixture: &Fixture, tree: &std::path::Path, before: &str) {
    let text = std::fs::read_to_string(&fixture.config).unwrap().replacen(
        "[[tileset]]\nname = \"sites\"\n",
        &format!(
            "{before}[[tileset]]\nname = \"sites\"\noutput = \"dir:{}\"\nmaxzoom = 9\n",
            tree.display()
        ),
        1,
    );
    std::fs::write(&fixture.config, &text).unwrap();
}

/// A seed of [`ZOOMS`] of a [`tree_world`] into its `tree`, with `extra` arguments and `env`.
pub fn seed_tree(
    fixture: &Fixture,
    tree: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let output = format!("dir:{}", tree.display());
    let mut args = fixture.seed_args(&output, ZOOMS, &[]);
    args.extend_from_slice(extra);
    oar_tiles_with(Some(&fixture.schema.url), &args, env)
}

/// `oar-tiles watch` on a free port, its log in a file; killed when dropped.
pub struct Watching {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Watching {
    /// Starts the watcher on the fixture's config with `env`, listening on a free loopback port.
    pub fn start(fixture: &Fixture, env: &[(&str, &str)]) -> Watching {
        let port = super::free_port();
        let log = fixture.path(&format!("watch-{port}.log"));
        let listen = format!("127.0.0.1:{port}");
        let args = [
            "watch",
            "--config",
            fixture.config.to_str().unwrap(),
            "--listen",
            &listen,
        ];
        let child = super::run::oar_tiles_command(Some(&fixture.schema.url), &args, env)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Watching { child, port, log }
    }

    /// The watcher's answer to a GET of `path`.
    pub fn get(&self, path: &str) -> super::serve::Reply {
        super::serve::get(self.port, path, "127.0.0.1")
    }

    /// Polls until `done` holds; after five minutes (a hang, not a slow machine) it fails with the
    /// watcher's log.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Watching) -> bool) {
        let started = std::time::Instant::now();
        while !done(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the watcher exited ({status}) waiting for {what}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "waited 5 minutes for {what}; the watcher's log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The watcher's process.
    pub fn child(&mut self) -> &mut std::process::Child {
        &mut self.child
    }

    /// What the watcher has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the watcher accepts connections on its port.
    pub fn listening(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a Prometheus text's samples of `name` (any labels, and any metric whose name starts
/// with it), 0 when there are none.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
