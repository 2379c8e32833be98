//! The password file (`~/.pgpass`, `PGPASSFILE`), read as libpq reads it.

use std::path::Path;

use tokio_postgres::config::Host;

use crate::error::{Error, Result};

/// The password the file holds for the first host of `config`, if any.
///
/// Like libpq, a file that others may read is ignored with a warning, and a missing file is no
/// error. A Unix-socket host matches the file's `localhost`.
pub fn lookup(path: &Path, config: &tokio_postgres::Config) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(Error::setting(
                path.display().to_string(),
                format!("cannot read the password file {}: {err}", path.display()),
            ))
        }
    };
    if readable_by_others(path) {
        tracing::warn!(
            "password file {} has group or world access and is ignored; permissions should be \
             u=rw (0600) or less",
            path.display()
        );
        return Ok(None);
    }
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), dbname, user];
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(fields)
        .find(|fields| {
            wanted
                .iter()
                .zip(fields)
                .all(|(want, field)| field == "*" || field == want)
        })
        .map(|mut fields| fields.pop().unwrap_or_default()))
}

/// The five `:`-separated fields of a line, with `\:` and `\\` unescaped.
fn fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn password_for(file: &str, conninfo: &str, mode: u32) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, file).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        lookup(&path, &tokio_postgres::Config::from_str(conninfo).unwrap()).unwrap()
    }

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let file = "# comment\nother:5432:*:oar:wrong\ndb\\:1:5432:tiles:oar:pa\\:ss\n*:*:*:oar:fallback\n";
        assert_eq!(
            password_for(file, "host=db:1 port=5432 dbname=tiles user=oar", 0o600).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            password_for(file, "host=db2 dbname=tiles user=oar", 0o600).as_deref(),
            Some("fallback")
        );
        assert_eq!(password_for(file, "host=db2 user=else", 0o600), None);
    }

    #[test]
    fn a_socket_host_matches_localhost_and_the_database_defaults_to_the_user() {
        let file = "localhost:5432:oar:oar:local\n";
        assert_eq!(
            password_for(file, "host=/var/run/postgresql user=oar", 0o600).as_deref(),
            Some("local")
        );
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        assert_eq!(password_for("*:*:*:*:open\n", "host=h user=u", 0o644), None);
    }
}
