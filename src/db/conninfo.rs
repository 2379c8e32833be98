//! Where and how to connect, with libpq's conventions: a URL or a `key=value` string, completed by
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME`, `PGSSLMODE`, … and
//! `~/.pgpass`, so oar-tiles connects wherever `psql` does with the same settings.
//!
//! tokio-postgres parses most keys itself but knows only three sslmodes and none of the certificate
//! keys, so those are taken out first and handled by [`super::tls`].

use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::pgpass;
use crate::error::{Error, Result};

/// libpq's `sslmode`, all six of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS when the server refuses a plain connection.
    Allow,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    Prefer,
    /// TLS always; the certificate is checked only when a root certificate is at hand.
    Require,
    /// TLS, and the server's chain must lead to a trusted root; any host name.
    VerifyCa,
    /// TLS, a trusted chain, and a certificate for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::setting("sslmode", format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    /// The name libpq uses.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Which roots the server's certificate must lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// No root at hand: the certificate cannot be checked.
    None,
    /// The certificates of a PEM file.
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`).
    System,
}

/// Everything the TLS layer needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The sslmode asked for.
    pub mode: SslMode,
    /// The roots to check the server against.
    pub root_cert: RootCert,
    /// A client certificate and its key, when one is configured or found in `~/.postgresql`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A fully resolved connection target.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// What tokio-postgres connects with (its sslmode is set from [`TlsSettings::mode`]).
    pub config: tokio_postgres::Config,
    /// TLS settings.
    pub tls: TlsSettings,
}

/// The keys taken out before tokio-postgres sees the string: those it does not know, and those
/// whose environment variable must apply when the string leaves them out.
const OWN_KEYS: [&str; 8] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "passfile",
    "target_session_attrs",
    "connect_timeout",
];

/// Reads the process's environment.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl ConnInfo {
    /// Resolves a connection string (URL, `key=value` list, or empty for the environment alone),
    /// with `env` standing for the process environment.
    pub fn resolve(conninfo: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnInfo> {
        let (rest, ours) = split_tls_keys(conninfo)?;
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|err| {
            // The parser's message never repeats the string, so no password can leak through it.
            Error::setting(
                "database.url",
                format!("the database URL is not valid: {err}"),
            )
        })?;
        let ours = |key: &str| {
            ours.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let setting = |key: &str, var: &str| ours(key).or_else(|| env(var));
        env_defaults(&mut config, env)?;
        session_settings(&mut config, &setting)?;
        password(&mut config, &setting, env)?;
        let tls = tls_settings(&setting, env)?;
        let all_sockets = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)))
            && config.get_hostaddrs().is_empty();
        // PostgreSQL never speaks TLS on a Unix socket; libpq ignores sslmode there, and so do we.
        config.ssl_mode(match tls.mode {
            _ if all_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(ConnInfo { config, tls })
    }

    /// `user@host:port/database`: everything but the password.
    pub fn target(&self) -> String {
        redacted_target(&self.config)
    }
}

/// Fills in what the connection string left out from the `PG*` variables, as libpq does: hosts
/// (else the local socket), ports, user (else the login name), database, application name and
/// server options.
fn env_defaults(
    config: &mut tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        match env("PGHOST") {
            Some(hosts) => hosts.split(',').for_each(|h| {
                config.host(h);
            }),
            None => {
                let port = config
                    .get_ports()
                    .first()
                    .copied()
                    .or_else(|| env("PGPORT").and_then(|p| p.split(',').next()?.parse().ok()));
                config.host(default_host(port.unwrap_or(5432)));
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for port in ports.split(',') {
                let port = port.trim().parse().map_err(|_| {
                    Error::setting("PGPORT", format!("PGPORT `{ports}` is not a port number"))
                })?;
                config.port(port);
            }
        }
    }
    if config.get_user().is_none() {
        match env("PGUSER") {
            Some(user) => config.user(user),
            None => config.user(whoami::username().unwrap_or_else(|_| "postgres".into())),
        };
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(dbname);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "oar-tiles".into()));
    }
    if config.get_options().is_none() {
        if let Some(options) = env("PGOPTIONS") {
            config.options(options);
        }
    }
    Ok(())
}

/// `target_session_attrs` and `connect_timeout`, from the connection string or their `PG*`
/// variables, as `setting` finds them.
fn session_settings(
    config: &mut tokio_postgres::Config,
    setting: &dyn Fn(&str, &str) -> Option<String>,
) -> Result<()> {
    if let Some(attrs) = setting("target_session_attrs", "PGTARGETSESSIONATTRS") {
        config.target_session_attrs(match attrs.as_str() {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            other => {
                return Err(Error::setting(
                    "target_session_attrs",
                    format!(
                        "target_session_attrs `{other}` is not one of any, read-write, read-only"
                    ),
                ))
            }
        });
    }
    if let Some(seconds) = setting("connect_timeout", "PGCONNECT_TIMEOUT") {
        let seconds: u64 = seconds.trim().parse().map_err(|_| {
            Error::setting(
                "connect_timeout",
                format!("connect_timeout `{seconds}` is not a number of seconds"),
            )
        })?;
        // As libpq: 0 means wait forever, which the config's own timeout then bounds.
        if seconds > 0 {
            config.connect_timeout(std::time::Duration::from_secs(seconds.max(2)));
        }
    }
    Ok(())
}

/// The password, where the connection string has none: `PGPASSWORD`, else the password file's
/// entry for the connection (`passfile`, `PGPASSFILE` or `~/.pgpass`).
fn password(
    config: &mut tokio_postgres::Config,
    setting: &dyn Fn(&str, &str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        } else if let Some(file) = setting("passfile", "PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| home(env).map(|h| h.join(".pgpass")))
        {
            if let Some(password) = pgpass::lookup(&file, config)? {
                config.password(password);
            }
        }
    }
    Ok(())
}

/// `user@host:port/database` of a config: everything but the password.
pub fn redacted_target(config: &tokio_postgres::Config) -> String {
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or("");
    format!("{user}{}/{dbname}", host_port(config))
}

/// `host:port` of the first host, as errors name it.
pub fn host_port(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or_else(|| "localhost".into(), ToString::to_string),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

fn tls_settings(
    setting: &dyn Fn(&str, &str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TlsSettings> {
    if setting("sslpassword", "PGSSLPASSWORD").is_some() {
        return Err(Error::setting(
            "sslpassword",
            "sslpassword is not supported: oar-tiles reads only unencrypted client keys (decrypt \
             it with `openssl pkey -in KEY -out KEY.plain` and keep it mode 0600)",
        ));
    }
    let postgresql_dir = home(env).map(|h| h.join(".postgresql"));
    let root_cert = match setting("sslrootcert", "PGSSLROOTCERT") {
        Some(value) if value == "system" => RootCert::System,
        Some(path) => RootCert::File(PathBuf::from(path)),
        None => postgresql_dir
            .as_ref()
            .map(|dir| dir.join("root.crt"))
            .map_or(RootCert::None, |default| {
                if default.exists() {
                    RootCert::File(default)
                } else {
                    RootCert::None
                }
            }),
    };
    let mode = match setting("sslmode", "PGSSLMODE") {
        Some(value) => SslMode::parse(&value)?,
        // As libpq: trusting the platform's roots only makes sense with a name to check.
        None if root_cert == RootCert::System => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if root_cert == RootCert::System && mode != SslMode::VerifyFull {
        return Err(Error::setting(
            "sslrootcert",
            format!(
                "weak sslmode `{}` may not be used with sslrootcert=system (use verify-full)",
                mode.name()
            ),
        ));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert == RootCert::None {
        let default = postgresql_dir.map_or_else(
            || "~/.postgresql/root.crt".into(),
            |d| d.join("root.crt").display().to_string(),
        );
        return Err(Error::setting(
            "sslrootcert",
            format!(
            "sslmode={} needs a root certificate, and `{default}` does not exist: set sslrootcert \
             (a file, or `system` for the platform's roots) or PGSSLROOTCERT",
            mode.name()
        ),
        ));
    }
    if mode == SslMode::Disable {
        // Never TLS: no certificate file is read, so a broken one cannot stop a plain connection.
        return Ok(TlsSettings {
            mode,
            root_cert: RootCert::None,
            client_cert: None,
        });
    }
    let explicit_cert = setting("sslcert", "PGSSLCERT").map(PathBuf::from);
    let explicit_key = setting("sslkey", "PGSSLKEY").map(PathBuf::from);
    let cert = explicit_cert.clone().or_else(|| {
        postgresql_dir
            .as_ref()
            .map(|d| d.join("postgresql.crt"))
            .filter(|p| p.exists())
    });
    let client_cert = match cert {
        None if explicit_key.is_some() => {
            return Err(Error::setting(
                "sslkey",
                "sslkey is set but sslcert is not: a client key needs its certificate",
            ))
        }
        None => None,
        Some(cert) => {
            let key = explicit_key
                .or_else(|| postgresql_dir.as_ref().map(|d| d.join("postgresql.key")))
                .ok_or_else(|| {
                    Error::setting(
                        "sslkey",
                        format!(
                            "client certificate `{}` has no key: set sslkey or PGSSLKEY",
                            cert.display()
                        ),
                    )
                })?;
            Some((cert, key))
        }
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        client_cert,
    })
}

fn home(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// libpq's default host: the local socket directory when a server listens there, else TCP on
/// localhost. Debian's libpq looks in /var/run/postgresql, upstream's in /tmp.
fn default_host(port: u16) -> String {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|dir| Path::new(dir).join(format!(".s.PGSQL.{port}")).exists())
        .unwrap_or("localhost")
        .to_string()
}

/// Takes the keys tokio-postgres does not know out of a URL or `key=value` string: the rest, and
/// the removed pairs (decoded) in order.
fn split_tls_keys(conninfo: &str) -> Result<(String, Vec<(String, String)>)> {
    let is_ours = |key: &str| OWN_KEYS.contains(&key);
    let mut ours = Vec::new();
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let Some((base, query)) = conninfo.split_once('?') else {
            return Ok((conninfo.to_string(), ours));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key_decoded = decode(key)?;
            if is_ours(&key_decoded) {
                ours.push((key_decoded, decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ours));
    }
    let mut kept = Vec::new();
    for (key, value) in parse_key_values(conninfo)? {
        if is_ours(&key) {
            ours.push((key, value));
        } else {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ours))
}

fn decode(text: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            Error::setting(
                "database.url",
                "the database URL is not valid: bad percent-encoding",
            )
        })
}

/// libpq's `key = value` syntax: values bare or single-quoted, with backslash escapes.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>> {
    let invalid = |what: &str| {
        Error::setting(
            "database.url",
            format!("the database URL is not valid: {what}"),
        )
    };
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // The word may be a mistyped secret, so it is not repeated.
            return Err(invalid(&format!(
                "missing `=` after word {}",
                pairs.len() + 1
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(invalid(&format!("unterminated quote in `{key}`"))),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests;
