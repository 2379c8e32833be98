//! Debian's Varnish as the CDN in front of a test's S3 server (`scripts/varnish.sh`), on a free
//! loopback port, stopped when the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::serve::{get, Reply};

/// Variable naming the `varnishd` executable, which `scripts/test.sh` installs.
pub const VARNISHD_ENV: &str = "OAR_TILES_TEST_VARNISHD";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/varnish.sh")
}

/// One varnishd.
pub struct Varnish {
    /// Its port on 127.0.0.1.
    pub port: u16,
    pid: String,
}

impl Varnish {
    /// Starts a cache in front of the S3 server on `s3_port`.
    pub fn start(s3_port: u16) -> Varnish {
        Varnish::launch(s3_port, None, None)
    }

    /// Starts a cache in front of the HTTP origin on `origin_port` that keeps every answer for
    /// `ttl` (`1d`), as a CDN set up for a static origin does.
    pub fn keeping(origin_port: u16, ttl: &str) -> Varnish {
        Varnish::launch(origin_port, Some(ttl), None)
    }

    /// [`Varnish::keeping`], answering every object with `cache_control` (`public,
    /// max-age=86400`), as browsers get it from an origin that sends that header.
    pub fn keeping_with_header(origin_port: u16, ttl: &str, cache_control: &str) -> Varnish {
        Varnish::launch(origin_port, Some(ttl), Some(cache_control))
    }

    fn launch(origin_port: u16, ttl: Option<&str>, cache_control: Option<&str>) -> Varnish {
        match std::env::var(VARNISHD_ENV) {
            Ok(path) if Path::new(&path).exists() => {}
            _ => panic!(
                "{VARNISHD_ENV} is not set: the CDN tests run through scripts/test.sh, which \
                 installs Debian's varnish and sets it"
            ),
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = vec![
            "start".to_string(),
            port.to_string(),
            origin_port.to_string(),
        ];
        args.extend(ttl.map(str::to_string));
        args.extend(cache_control.map(str::to_string));
        let output = Command::new(script())
            .args(&args)
            .output()
            .expect("run scripts/varnish.sh");
        assert!(
            output.status.success(),
            "varnish start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Varnish {
            port,
            pid: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        }
    }

    /// A counter of the cache's statistics (`MAIN.bans_added`, `MAIN.n_purges`), read with
    /// `varnishstat`.
    pub fn counter(&self, name: &str) -> u64 {
        let work = format!("/tmp/oar-tiles-varnish-{}/n", self.port);
        let output = Command::new("varnishstat")
            .args(["-n", &work, "-1", "-f", name])
            .output()
            .expect("run varnishstat");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(name)).then(|| fields.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in varnishstat's output: {text}"))
    }

    /// `GET path` through the cache.
    pub fn get_path(&self, path: &str) -> Reply {
        get(self.port, path, &format!("127.0.0.1:{}", self.port))
    }

    /// `GET` of a presigned S3 URL through the cache (the path and query of `presigned`).
    pub fn get(&self, presigned: &str) -> Reply {
        let target = presigned
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .expect("an absolute URL");
        get(self.port, target, &format!("127.0.0.1:{}", self.port))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.pid]).output();
    }
}
