//! The set-up scripts on a machine that has never run `apt-get update`, as a fresh `debian:bookworm`
//! container or debootstrap image is: real `apt-get` and `apt-cache` against a private, empty apt
//! state (`APT_CONFIG`) and a local file repository, with installs simulated. The fresh-machine bug
//! this guards against: `apt-cache` failing on empty lists ended `setup-postgis.sh` silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private apt world: its own lists, status and sources, and a repository on disk.
struct FreshApt {
    dir: tempfile::TempDir,
}

impl FreshApt {
    /// An apt state with no package lists, whose only source is a local repository holding `packages`
    /// (name and dependency), and a root with no PostgreSQL installed.
    fn new(packages: &[(&str, &str)]) -> FreshApt {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "repo",
            "etc/sources.list.d",
            "etc/preferences.d",
            "bin",
            "pgroot",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("status"), "").unwrap();
        let index: String = packages
            .iter()
            .map(|(name, depends)| {
                let depends = if depends.is_empty() {
                    String::new()
                } else {
                    format!("Depends: {depends}\n")
                };
                format!(
                    "Package: {name}\nVersion: 1.0\nArchitecture: all\n{depends}Filename: ./{name}.deb\n\
                     Size: 1\nMD5sum: 0cc175b9c0f1b6a831c399e269772661\nDescription: test\n\n"
                )
            })
            .collect();
        std::fs::write(root.join("repo/Packages"), index).unwrap();
        std::fs::write(
            root.join("etc/sources.list"),
            format!(
                "deb [trusted=yes] file:{} ./\n",
                root.join("repo").display()
            ),
        )
        .unwrap();
        let r = root.display();
        std::fs::write(
            root.join("apt.conf"),
            format!(
                "Dir::State::Lists \"{r}/lists/\";\nDir::State::status \"{r}/status\";\n\
                 Dir::Cache \"{r}/cache/\";\nDir::Etc::sourcelist \"{r}/etc/sources.list\";\n\
                 Dir::Etc::sourceparts \"{r}/etc/sources.list.d/\";\n\
                 Dir::Etc::preferencesparts \"{r}/etc/preferences.d/\";\n\
                 APT::Get::Simulate \"true\";\nDebug::NoLocking \"true\";\nAPT::Sandbox::User \"root\";\n"
            ),
        )
        .unwrap();
        // A simulated install changes nothing, so this stand-in for apt-get leaves behind the files
        // a real install of PostgreSQL 15 and PostGIS would, under the private root.
        let shim = root.join("bin/apt-get");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\n/usr/bin/apt-get \"$@\" || exit $?\n\
                 case \" $* \" in *\" install \"*)\n\
                 mkdir -p {r}/pgroot/usr/lib/postgresql/15/bin {r}/pgroot/usr/share/postgresql/15/extension\n\
                 touch {r}/pgroot/usr/share/postgresql/15/extension/postgis.control\n\
                 printf '#!/bin/sh\\n' > {r}/pgroot/usr/lib/postgresql/15/bin/postgres\n\
                 chmod +x {r}/pgroot/usr/lib/postgresql/15/bin/postgres ;;\nesac\n"
            ),
        )
        .unwrap();
        make_executable(&shim);
        FreshApt { dir }
    }

    /// Runs `scripts/setup-postgis.sh --packages-only` in this apt world.
    fn setup_postgis(&self) -> (i32, String) {
        let root = self.dir.path();
        let path = format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = Command::new("bash")
            .arg(script("setup-postgis.sh"))
            .arg("--packages-only")
            .env("APT_CONFIG", root.join("apt.conf"))
            .env("OAR_PG_ROOT", root.join("pgroot"))
            .env("PATH", path)
            .env("TMPDIR", root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code().unwrap_or(-1), stderr)
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether this machine has apt at all; the scripts target Debian and Ubuntu only.
fn apt_available() -> bool {
    let found = Path::new("/usr/bin/apt-get").exists() && Path::new("/usr/bin/apt-cache").exists();
    if !found {
        eprintln!("SKIPPED: no apt on this machine; the set-up scripts target Debian and Ubuntu");
    }
    found
}

#[test]
fn setup_postgis_updates_empty_package_lists_before_it_installs() {
    if !apt_available() {
        return;
    }
    let apt = FreshApt::new(&[
        ("postgresql", "postgresql-15"),
        ("postgresql-15", ""),
        ("postgresql-contrib", "postgresql-15"),
        ("postgresql-15-postgis-3", "postgresql-15"),
    ]);
    let (code, stderr) = apt.setup_postgis();
    assert_eq!(code, 0, "setup-postgis.sh failed:\n{stderr}");
    assert_eq!(
        stderr.matches("running apt-get update").count(),
        1,
        "one update, before anything else:\n{stderr}"
    );
    for package in [
        "postgresql",
        "postgresql-contrib",
        "postgresql-15-postgis-3",
    ] {
        assert!(
            stderr.contains(&format!("Inst {package} ")),
            "{package} is installed:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("PostgreSQL 15 and PostGIS are installed"),
        "{stderr}"
    );
}

#[test]
fn setup_postgis_says_what_failed_when_apt_has_no_postgresql() {
    if !apt_available() {
        return;
    }
    let apt = FreshApt::new(&[("gdal-bin", "")]);
    let (code, stderr) = apt.setup_postgis();
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("setup-postgis: ERROR:") && last.contains("'postgresql'"),
        "the last line names what failed:\n{stderr}"
    );
}
