//! A full disk on demand: a tmpfs of a chosen size, mounted for one test.

use std::process::{Command, Stdio};

/// A tiny file system of this test's own, unmounted when the test ends.
pub struct TinyDisk {
    /// Where the file system is mounted.
    pub dir: tempfile::TempDir,
}

impl TinyDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on a new temporary directory; the
    /// tests run as root for it.
    pub fn mount(size: &str) -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "cannot mount a {size} tmpfs for the disk-full test: run the tests as root, as \
             scripts/test.sh does in CI"
        );
        TinyDisk { dir }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
