//! TLS with libpq's semantics on rustls (the build's one TLS stack, on ring).
//!
//! - `require` (and `prefer`, `allow`) encrypt; they check the chain only when a root certificate
//!   is at hand, as libpq does.
//! - `verify-ca` checks the chain but not the host name.
//! - `verify-full` checks both.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{RootCert, SslMode, TlsSettings};
use crate::error::{Error, Result};

/// The connector for `settings`: certificates are read (and any problem with them reported) here,
/// before the first connection.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::setting("TLS", format!("TLS setup failed: {err}")))?;
    let roots = match &settings.root_cert {
        RootCert::None => None,
        RootCert::File(path) => Some(roots_from_file(path)?),
        RootCert::System => Some(system_roots()?),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(NoVerification(provider)),
        Some(roots) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| Error::setting("TLS", format!("TLS setup failed: {err}")))?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert)?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|err| {
                Error::setting(
                    cert.display().to_string(),
                    format!(
                        "client certificate {} and key do not go together: {err}",
                        cert.display()
                    ),
                )
            })?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|err| {
            Error::setting(
                path.display().to_string(),
                format!("root certificate file {}: {err}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(Error::setting(
            "sslrootcert",
            format!(
            "sslrootcert=system: cannot load the platform's trusted roots ({why}); install the \
             ca-certificates package or name a root certificate file"
        ),
        ));
    }
    Ok(roots)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |err: &dyn std::fmt::Display| {
        Error::setting(
            path.display().to_string(),
            format!("cannot read certificate file {}: {err}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"it holds no PEM certificate"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Error::setting(
            path.display().to_string(),
            format!("cannot read private key file {}: {err}", path.display()),
        )
    })?;
    if text.contains("ENCRYPTED") {
        return Err(Error::setting(
            path.display().to_string(),
            format!(
            "private key file {} is encrypted; oar-tiles reads only unencrypted keys (decrypt it \
             with `openssl pkey -in KEY -out KEY.plain` and keep it mode 0600)",
            path.display()
        ),
        ));
    }
    check_key_permissions(path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|err| {
        Error::setting(
            path.display().to_string(),
            format!(
                "private key file {} holds no usable PEM key: {err}",
                path.display()
            ),
        )
    })
}

/// libpq's rule: a key others may read is refused (0640 is allowed for a key owned by root, so a
/// group of services can share it).
#[cfg(unix)]
fn check_key_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(Error::setting(
            path.display().to_string(),
            format!(
            "private key file {} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_: &Path) -> Result<()> {
    Ok(())
}

/// `require` without a root certificate: encrypted, but the server is not authenticated (the
/// handshake's signatures are still checked, so the session key belongs to whoever presented the
/// certificate).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full web-PKI check, except that a certificate for another name is accepted.
/// webpki checks the chain (and revocation) before the name, so a name error means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A one-line account of a TLS failure in `err` (anywhere in its sources), naming `host_port`:
/// `certificate verify failed for db.example.org:5432: unknown issuer`. `None` when the failure
/// was not about TLS.
pub fn describe_failure(
    err: &(dyn std::error::Error + 'static),
    host_port: &str,
    mode: SslMode,
) -> Option<String> {
    let mut source = Some(err);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(describe_rustls(tls, host_port));
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return Some(describe_rustls(tls, host_port));
            }
        }
        if current.to_string() == "server does not support TLS" {
            return Some(format!(
                "{host_port} does not support TLS, and sslmode={} requires it",
                mode.name()
            ));
        }
        source = current.source();
    }
    None
}

fn describe_rustls(err: &rustls::Error, host_port: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            let why = match cert {
                CertificateError::UnknownIssuer => "unknown issuer".to_string(),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "certificate has expired".to_string()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "certificate is not yet valid".to_string()
                }
                CertificateError::BadSignature => "bad signature".to_string(),
                CertificateError::Revoked => "certificate revoked".to_string(),
                other => other.to_string(),
            };
            format!("certificate verify failed for {host_port}: {why}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the TLS handshake with {host_port} failed: the server sent alert {alert:?} \
             (a missing or untrusted client certificate?)"
        ),
        other => format!("the TLS handshake with {host_port} failed: {other}"),
    }
}
