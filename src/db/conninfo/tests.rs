//! Unit tests of `conninfo`.

use super::*;
use std::collections::HashMap;

fn with_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |key| vars.get(key).cloned()
}

#[test]
fn url_keeps_its_parts_and_takes_the_tls_keys_out() {
    let info = ConnInfo::resolve(
        "postgresql://oar:s3cret@db.example.org:6543/tiles?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=job",
        &with_env(&[]),
    )
    .unwrap();
    assert_eq!(info.target(), "oar@db.example.org:6543/tiles");
    assert_eq!(info.config.get_application_name(), Some("job"));
    assert_eq!(info.tls.mode, SslMode::VerifyFull);
    assert_eq!(info.tls.root_cert, RootCert::File("/etc/ca.pem".into()));
}

#[test]
fn key_values_take_quotes_and_escapes() {
    let info = ConnInfo::resolve(
        "host=db port=5433 dbname='my db' user=o\\'k password='it''s' sslmode = verify-ca sslrootcert='/a b/ca.pem'",
        &with_env(&[]),
    );
    // `'it''s'` is not libpq syntax either (the quote ends the value, then `s'` starts a key).
    assert!(info.is_err());
    let info = ConnInfo::resolve(
        "host=db port=5433 dbname='my db' user=o\\'k password='it\\'s' sslmode = verify-ca sslrootcert='/a b/ca.pem'",
        &with_env(&[]),
    )
    .unwrap();
    assert_eq!(info.config.get_dbname(), Some("my db"));
    assert_eq!(info.config.get_user(), Some("o'k"));
    assert_eq!(info.config.get_password(), Some(&b"it's"[..]));
    assert_eq!(info.tls.mode, SslMode::VerifyCa);
    assert_eq!(info.tls.root_cert, RootCert::File("/a b/ca.pem".into()));
}

#[test]
fn the_environment_fills_in_what_the_string_leaves_out() {
    let env = with_env(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "6000"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", "envpass"),
        ("PGDATABASE", "envdb"),
        ("PGAPPNAME", "nightly"),
        ("PGSSLMODE", "require"),
    ]);
    let info = ConnInfo::resolve("", &env).unwrap();
    assert_eq!(info.target(), "envuser@envhost:6000/envdb");
    assert_eq!(info.config.get_password(), Some(&b"envpass"[..]));
    assert_eq!(info.config.get_application_name(), Some("nightly"));
    assert_eq!(info.tls.mode, SslMode::Require);
    let env_attrs = with_env(&[
        ("PGTARGETSESSIONATTRS", "read-only"),
        ("PGCONNECT_TIMEOUT", "7"),
    ]);
    let info = ConnInfo::resolve("host=h", &env_attrs).unwrap();
    assert_eq!(
        info.config.get_target_session_attrs(),
        TargetSessionAttrs::ReadOnly
    );
    assert_eq!(
        info.config.get_connect_timeout(),
        Some(&std::time::Duration::from_secs(7))
    );
    let info = ConnInfo::resolve("host=h target_session_attrs=read-write", &env_attrs).unwrap();
    assert_eq!(
        info.config.get_target_session_attrs(),
        TargetSessionAttrs::ReadWrite
    );
    // What the string says wins over the environment.
    let info = ConnInfo::resolve("postgresql://u:p@h:1/d?sslmode=disable", &env).unwrap();
    assert_eq!(info.target(), "u@h:1/d");
    assert_eq!(info.config.get_password(), Some(&b"p"[..]));
    assert_eq!(info.tls.mode, SslMode::Disable);
    assert_eq!(info.config.get_application_name(), Some("nightly"));
}

#[test]
fn defaults_follow_libpq() {
    let info = ConnInfo::resolve("postgresql://u@h/d", &with_env(&[])).unwrap();
    assert_eq!(info.tls.mode, SslMode::Prefer);
    assert_eq!(info.config.get_application_name(), Some("oar-tiles"));
    assert_eq!(
        info.config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Prefer
    );
    let info =
        ConnInfo::resolve("host=/var/run/postgresql sslmode=require", &with_env(&[])).unwrap();
    assert!(matches!(info.config.get_hosts()[0], Host::Unix(_)));
    assert_eq!(
        info.config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable,
        "no TLS over a Unix socket"
    );
}

#[test]
fn verifying_modes_need_a_root() {
    let err = ConnInfo::resolve(
        "postgresql://u@h/d?sslmode=verify-full",
        &with_env(&[("HOME", "/nonexistent")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/.postgresql/root.crt") && err.contains("sslrootcert"),
        "{err}"
    );
    let info = ConnInfo::resolve("postgresql://u@h/d?sslrootcert=system", &with_env(&[])).unwrap();
    assert_eq!(info.tls.mode, SslMode::VerifyFull);
    let err = ConnInfo::resolve(
        "postgresql://u@h/d?sslrootcert=system&sslmode=require",
        &with_env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("weak sslmode `require`"), "{err}");
    let err = ConnInfo::resolve("postgresql://u@h/d?sslmode=sure", &with_env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sslmode `sure`"), "{err}");
}

#[test]
fn disable_reads_no_certificate() {
    let info = ConnInfo::resolve(
        "postgresql://u@h/d?sslmode=disable&sslcert=/missing.crt&sslrootcert=/missing.pem",
        &with_env(&[]),
    )
    .unwrap();
    assert_eq!(info.tls.root_cert, RootCert::None);
    assert_eq!(info.tls.client_cert, None);
    assert!(super::super::tls::connector(&info.tls).is_ok());
}

#[test]
fn malformed_strings_never_echo_the_password() {
    for bad in [
        "postgresql://oar:s3cret@db:notaport/tiles",
        "host=db password=s3cret port=x",
        "host=db password='s3cret",
        "host=db password=s3cret bogus",
    ] {
        let err = ConnInfo::resolve(bad, &with_env(&[]))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{bad}: {err}");
    }
}
