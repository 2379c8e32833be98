//! A throttling front (`scripts/throttle-front.py`) in front of a store's stand-in: it lets a
//! number of writes a second through and refuses the rest as the vendor does, so that a test
//! meets what a first seed into a new bucket meets.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running front, stopped when dropped.
pub struct ThrottleFront {
    child: Child,
    /// Its URL, where the tool is sent instead of the stand-in's.
    pub url: String,
}

impl ThrottleFront {
    /// A front for a store of `kind` (`s3`, `gcs`, `azure`) at `upstream`, letting `rate` writes a
    /// second through, on a free port.
    pub fn start(kind: &str, rate: u32, upstream: &str) -> ThrottleFront {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/throttle-front.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--kind",
                kind,
                "--rate",
                &rate.to_string(),
                "--upstream",
                upstream,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/throttle-front.py");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("throttle-front.py said {first:?}"))
            .to_string();
        ThrottleFront { child, url }
    }

    /// What the front counted: writes passed and refused (`writes_passed`, `writes_refused`).
    pub fn stats(&self) -> serde_json::Value {
        let url = format!("{}/__throttle_front__/stats", self.url);
        let body = ureq_get(&url);
        serde_json::from_str(&body).unwrap()
    }
}

/// The body of a GET of `url` (a loopback HTTP address), read with the standard library.
fn ureq_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

impl Drop for ThrottleFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
