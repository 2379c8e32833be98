//! Debian's nginx (`scripts/nginx.sh`, named by `OAR_TILES_TEST_NGINX`) in the foreground with
//! server blocks of a test's own, and the server block the user guide gives for a tree.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The nginx server block of the user guide (docs/src/outputs.md, "Serving a tree from nginx"),
/// as the book gives it.
pub fn nginx_block_of_the_book() -> String {
    let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/outputs.md");
    let text = std::fs::read_to_string(&book).unwrap();
    let section = text
        .split("## Serving a tree from nginx")
        .nth(1)
        .expect("outputs.md has a section serving a tree from nginx");
    let block = section
        .split("```nginx\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section holds an nginx block");
    block.to_string()
}

/// The book's block listening on 127.0.0.1:`port` with its root at `root`.
pub fn book_block_at(port: u16, root: &Path) -> String {
    let book = nginx_block_of_the_book();
    let block = book
        .replacen("listen 80;", &format!("listen 127.0.0.1:{port};"), 1)
        .replacen("root /var/www;", &format!("root {};", root.display()), 1);
    assert!(
        block.contains(&format!("listen 127.0.0.1:{port};"))
            && block.contains(&format!("root {};", root.display())),
        "the book's block no longer says `listen 80;` and `root /var/www;`: {book}"
    );
    block
}

/// One nginx process, stopped when dropped.
pub struct Nginx {
    child: Child,
    prefix: std::path::PathBuf,
}

impl Nginx {
    /// Starts nginx with `servers` (server blocks) in a working folder `prefix`, and waits for
    /// `port` (one of theirs) to answer.
    pub fn start(prefix: &Path, servers: &str, port: u16) -> Nginx {
        let nginx = super::env::required_env("OAR_TILES_TEST_NGINX");
        std::fs::create_dir_all(prefix).unwrap();
        let temp = |name: &str| format!("{name}_temp_path {}/{name};", prefix.display());
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
             events {{}}\nhttp {{\naccess_log off;\n{}\n{}\n{}\n{}\n{}\n{servers}\n}}\n",
            temp("client_body"),
            temp("proxy"),
            temp("fastcgi"),
            temp("uwsgi"),
            temp("scgi"),
            p = prefix.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, &conf).unwrap();
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let server = Nginx {
            child,
            prefix: prefix.to_path_buf(),
        };
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nginx did not start:\n{conf}\n{}", server.log());
    }

    /// Its error log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
