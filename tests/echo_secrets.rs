//! Secrets the tool holds only while it runs: an answer that echoes the request (each header's
//! value alone and named, and the URL) with any status (403, 500 and 429, the last two retried
//! with a warning each time) puts none of them into stderr, text or JSON logs, or the JSON on
//! stdout. Google Cloud Storage's access token, minted from the metadata server (one the echoing
//! server chose) or signed from a service account key file; an S3 session token the AWS chain read
//! from a credentials file. Azure's account key, SAS token's signature, and a service principal's
//! token, minted by the echoing server as the identity platform. The store is the echoing server (`common/echo.rs`); `inspect` is the
//! command, as it reaches a remote output without a database.

use std::path::Path;

use base64::Engine as _;

use crate::common::echo::Echo;
use crate::common::run::{oar_tiles_command, single_layer_config, Run};

/// The statuses answered: a refusal, and two the stores retry (with a warning per retry).
const STATUSES: [u16; 3] = [403, 500, 429];

/// The access token the echoing metadata server hands out.
const METADATA_TOKEN: &str = "ya29.c.echo-secrets-metadata-token-5c1e0b7a";

/// The length of the parts of a secret no message may hold either.
const PART: usize = 16;

/// Every form of `secret` an echo may show it in: whole, percent-encoded, in base64.
fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_string(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ]
}

/// `inspect --json OUTPUT` with `[store] max_attempts = 3` plus `store` in its config, logging in
/// `format`, with `env` set and no credential of the test's own environment or home.
fn inspect(dir: &Path, output: &str, store: &str, format: &str, env: &[(&str, &str)]) -> Run {
    let config = dir.join("oar-tiles.toml");
    let table = format!("[store]\nmax_attempts = 3\n{store}\n\n");
    std::fs::write(&config, table + &single_layer_config("s", "sites", "", "")).unwrap();
    let mut command = oar_tiles_command(
        None,
        &[
            "inspect",
            "--json",
            "--config",
            config.to_str().unwrap(),
            output,
        ],
        env,
    );
    for variable in [
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AZURE_STORAGE_USE_EMULATOR",
        "AZURITE_BLOB_STORAGE_URL",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_ENDPOINT",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ]
    .into_iter()
    .filter(|variable| !env.iter().any(|(set, _)| set == variable))
    {
        command.env_remove(variable);
    }
    command.env("HOME", dir).env("OAR_TILES_LOG_FORMAT", format);
    Run::from(command.output().expect("run oar-tiles"))
}

/// The tool's own warning of a retried request.
const RETRIED: &str = "attempt 1 of 3 failed";

/// Asserts the run failed on `status`, retrying a retried status with warnings (`retried` in the
/// first), and that neither stderr nor stdout holds `secret` in any form while the echo is still
/// quoted, redacted.
fn assert_refused_without(run: &Run, status: u16, secret: &str, retried: &str) {
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&status.to_string()), "{}", run.stderr);
    if status != 403 {
        assert!(
            run.stderr.contains(retried),
            "each retry is logged: {}",
            run.stderr
        );
    }
    // Nor any part of it: a message cut short through it would leave one.
    let parts = secret
        .as_bytes()
        .windows(PART)
        .map(|part| String::from_utf8_lossy(part).into());
    for form in forms(secret).into_iter().chain(parts) {
        for (what, text) in [("stderr", &run.stderr), ("stdout", &run.stdout)] {
            assert!(
                !text.contains(&form),
                "{what} holds {form} (a form or part of {secret}):\n{text}"
            );
        }
    }
    assert!(run.stderr.contains("[redacted]"), "{}", run.stderr);
}

/// The GCS output's address and the environment sending its requests, and the metadata server's,
/// to `echo`.
fn gcs_env(echo: &Echo) -> (String, String) {
    (
        format!("127.0.0.1:{}", echo.port),
        format!("http://127.0.0.1:{}", echo.port),
    )
}

#[test]
fn a_gcs_token_from_the_metadata_server_echoed_back_is_redacted_in_every_message() {
    for status in STATUSES {
        for format in ["text", "json"] {
            let echo = Echo::refusing(status, METADATA_TOKEN);
            let dir = tempfile::tempdir().unwrap();
            let (host, base) = gcs_env(&echo);
            let run = inspect(
                dir.path(),
                "gs://tiles/facilities",
                "",
                format,
                &[
                    ("GCE_METADATA_HOST", &host),
                    ("GCE_METADATA_IP", &host),
                    ("GOOGLE_BASE_URL", &base),
                ],
            );
            // The token was minted from the echoing server and sent to it.
            assert_eq!(
                echo.first("authorization"),
                format!("Bearer {METADATA_TOKEN}"),
                "{}",
                run.stderr
            );
            assert_refused_without(&run, status, METADATA_TOKEN, RETRIED);
        }
    }
}

/// A service account key file with a fresh RSA key (made by `openssl`), in `dir`.
fn service_account_file(dir: &Path) -> String {
    let key = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl makes the test's RSA key");
    assert!(made.status.success(), "{made:?}");
    let account = serde_json::json!({
        "type": "service_account",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "private_key_id": "echo-secrets-key",
        "client_email": "oar-tiles@echo-secrets.iam.gserviceaccount.com",
    });
    let file = dir.join("service-account.json");
    std::fs::write(&file, account.to_string()).unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn a_gcs_token_signed_from_a_service_account_key_echoed_back_is_redacted_in_every_message() {
    for status in STATUSES {
        for format in ["text", "json"] {
            let echo = Echo::refusing(status, METADATA_TOKEN);
            let dir = tempfile::tempdir().unwrap();
            let (_, base) = gcs_env(&echo);
            let file = service_account_file(dir.path());
            let run = inspect(
                dir.path(),
                "gs://tiles/facilities",
                "",
                format,
                &[
                    ("GOOGLE_APPLICATION_CREDENTIALS", &file),
                    ("GOOGLE_BASE_URL", &base),
                ],
            );
            // The token the tool signed (a JWT), as it was sent.
            let sent = echo.first("authorization");
            let token = sent.strip_prefix("Bearer ").unwrap_or_default();
            assert!(
                token.split('.').count() == 3,
                "a JWT was sent: {sent:?}\n{}",
                run.stderr
            );
            assert_refused_without(&run, status, token, RETRIED);
        }
    }
}

#[test]
fn an_s3_session_token_from_a_credentials_file_echoed_back_is_redacted_in_every_message() {
    let token = "IQoJb3JpZ2luX2VjEFileOnlySessionToken+echo/secrets=";
    for status in STATUSES {
        for format in ["text", "json"] {
            let echo = Echo::refusing(status, METADATA_TOKEN);
            let dir = tempfile::tempdir().unwrap();
            let credentials = dir.path().join("aws-credentials");
            std::fs::write(
                &credentials,
                format!(
                    "[default]\naws_access_key_id = AKIDOARTILESECHO\n\
                     aws_secret_access_key = echoSecretKeyFromAFile/abc\naws_session_token = {token}\n"
                ),
            )
            .unwrap();
            let nowhere = dir.path().join("no-aws-config");
            let store = format!(
                "endpoint = \"http://127.0.0.1:{}\"\nforce_path_style = true\nregion = \"us-east-1\"",
                echo.port
            );
            let run = inspect(
                dir.path(),
                "s3://tiles/facilities",
                &store,
                format,
                &[
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                    ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
                    ("AWS_CONFIG_FILE", nowhere.to_str().unwrap()),
                ],
            );
            assert_eq!(echo.first("x-amz-security-token"), token, "{}", run.stderr);
            assert_refused_without(&run, status, token, RETRIED);
        }
    }
}

/// The token the echoing identity platform mints for the Azure service principal.
const AZURE_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOi.echo-secrets-azure-token.5f2c";

/// A storage account key (base64, as Azure's are).
const ACCOUNT_KEY: &str = "ZWNoby1zZWNyZXRzLWF6dXJlLWFjY291bnQta2V5LTAxMjM0NTY3ODk=";

/// The signature of the SAS token: the part of it that is a secret.
const SAS_SIGNATURE: &str = "EchoSasSignature+azure/secret=";

/// object_store's own line for a retried Azure request (it retries inside, `max_attempts` bounding
/// its tries): it says the status and the count, nothing of the request.
const AZURE_RETRIED: &str = "retry 1 of 2";

/// An Azure credential's environment, and the secrets no message may hold with it.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn azure_keys_sas_tokens_and_minted_tokens_echoed_back_are_redacted_in_every_message() {
    let sas = format!(
        "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={}",
        percent_encoding::utf8_percent_encode(SAS_SIGNATURE, percent_encoding::NON_ALPHANUMERIC)
    );
    let client_secret = "echo~Azure.Client-Secret_9d1f";
    for status in STATUSES {
        for format in ["text", "json"] {
            let echo = Echo::refusing(status, AZURE_TOKEN);
            let base = format!("http://127.0.0.1:{}", echo.port);
            let endpoint = format!("{base}/echoaccount");
            let common = [
                ("AZURE_STORAGE_ACCOUNT_NAME", "echoaccount"),
                ("AZURE_STORAGE_ENDPOINT", endpoint.as_str()),
                ("AZURE_ALLOW_HTTP", "true"),
            ];
            let principal = [
                ("AZURE_CLIENT_ID", "0e1c5e7a-echo-client"),
                ("AZURE_CLIENT_SECRET", client_secret),
                ("AZURE_TENANT_ID", "echo-tenant"),
                ("AZURE_AUTHORITY_HOST", base.as_str()),
            ];
            let cases: [Case; 3] = [
                (
                    &[("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)],
                    &[ACCOUNT_KEY],
                ),
                (&[("AZURE_STORAGE_SAS_TOKEN", &sas)], &[SAS_SIGNATURE]),
                (&principal, &[AZURE_TOKEN, client_secret]),
            ];
            for (credential, secrets) in cases {
                let dir = tempfile::tempdir().unwrap();
                let env: Vec<(&str, &str)> = common.iter().chain(credential).copied().collect();
                let run = inspect(dir.path(), "az://tiles/facilities", "", format, &env);
                assert!(!echo.refused.lock().unwrap().is_empty(), "{}", run.stderr);
                for secret in secrets {
                    assert_refused_without(&run, status, secret, AZURE_RETRIED);
                }
            }
            // The service principal's token was minted by the echoing server and sent to it.
            let sent = echo.refused.lock().unwrap().iter().any(|headers| {
                headers.contains(&("authorization".into(), format!("Bearer {AZURE_TOKEN}")))
            });
            assert!(sent, "{status} {format}: the minted token was never sent");
        }
    }
}

/// A zone and a service id of the real shapes (32 hex digits; 22 letters and digits).
const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const SERVICE: &str = "SU1Z0isxPaozGVKXdv0eYz";

/// A target of each CDN kind, each sending its requests to its own echoing server.
fn every_cdn(cloudflare: &Echo, fastly: &Echo, http: &Echo) -> String {
    format!(
        "[[tileset.cdn]]\nkind = \"cloudfront\"\ndistribution_id = \"E2QWRUHAPOMQZL\"\n\n\
         [[tileset.cdn]]\nkind = \"cloudflare\"\nzone_id = \"{ZONE}\"\napi_url = \"http://127.0.0.1:{}/client/v4\"\npublic_url = \"https://tiles.example.org/v1\"\ntoken_env = \"OAR_TEST_CF_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"fastly\"\nservice_id = \"{SERVICE}\"\napi_url = \"http://127.0.0.1:{}\"\npublic_url = \"https://tiles.example.org\"\ntoken_env = \"OAR_TEST_FASTLY_TOKEN\"\n\n\
         [[tileset.cdn]]\nkind = \"http\"\nname = \"shield\"\nurl = \"http://127.0.0.1:{}/t/{{path}}\"\nconcurrency = 1\nheaders = {{ \"Authorization\" = \"OAR_TEST_SHIELD_AUTH\" }}\n",
        cloudflare.port, fastly.port, http.port
    )
}

#[test]
#[ignore = "needs PostGIS: run scripts/test.sh"]
fn every_cdn_kinds_secrets_from_the_environment_or_the_aws_chain_echoed_back_leak_nowhere() {
    let session = "IQoJb3JpZ2luX2VjECloudFrontFileSessionToken/echo+secrets=";
    let secrets = [
        ("OAR_TEST_CF_TOKEN", "cf-Echo-Secret-4b1d9e0a"),
        ("OAR_TEST_FASTLY_TOKEN", "fastly-Echo-Secret-77aa21c3"),
        ("OAR_TEST_SHIELD_AUTH", "Bearer shield-Echo-Secret-0c3f5e9d"),
    ];
    for (status, format) in [(403, "text"), (500, "json"), (429, "text"), (429, "json")] {
        let echoes: Vec<Echo> = (0..4)
            .map(|_| Echo::refusing(status, METADATA_TOKEN))
            .collect();
        let label = format!("echo_cdn_{status}_{format}");
        let (fixture, tree) =
            crate::common::edge::tree_world(&label, &every_cdn(&echoes[1], &echoes[2], &echoes[3]));
        let credentials = fixture.path("aws-credentials");
        std::fs::write(
            &credentials,
            format!(
                "[default]\naws_access_key_id = AKIDOARTILESECHO\n\
                 aws_secret_access_key = echoCloudFrontSecretKey/abc\naws_session_token = {session}\n"
            ),
        )
        .unwrap();
        let nowhere = fixture.path("no-aws-config");
        let cloudfront = format!("http://127.0.0.1:{}", echoes[0].port);
        let report = fixture.path("summary.json");
        let report_arg = report.display().to_string();
        let output = format!("dir:{}", tree.display());
        let args = fixture.seed_args(&output, "0-9", &["--summary-json", &report_arg]);
        let mut env = vec![
            ("AWS_ENDPOINT_URL_CLOUDFRONT", cloudfront.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
            ("AWS_CONFIG_FILE", nowhere.to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_REGION", "us-east-1"),
            ("OAR_TILES_LOG_FORMAT", format),
        ];
        env.extend_from_slice(&secrets);
        let mut command = oar_tiles_command(Some(&fixture.schema.url), &args, &env);
        for variable in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            command.env_remove(variable);
        }
        let run = Run::from(command.output().expect("run oar-tiles"));
        assert_eq!(run.code, 1, "{}", run.stderr);
        // Each server was sent its secret (CloudFront's session token, signed in).
        assert_eq!(
            echoes[0].first("x-amz-security-token"),
            session,
            "{}",
            run.stderr
        );
        assert_eq!(
            echoes[1].first("authorization"),
            "Bearer cf-Echo-Secret-4b1d9e0a"
        );
        assert_eq!(echoes[2].first("fastly-key"), "fastly-Echo-Secret-77aa21c3");
        assert_eq!(
            echoes[3].first("authorization"),
            "Bearer shield-Echo-Secret-0c3f5e9d"
        );
        let json = std::fs::read_to_string(&report).unwrap();
        let values = secrets.iter().map(|(_, value)| *value);
        for secret in values.chain([session, "shield-Echo-Secret-0c3f5e9d"]) {
            for form in forms(secret) {
                for (what, text) in [
                    ("stderr", &run.stderr),
                    ("stdout", &run.stdout),
                    ("--summary-json", &json),
                ] {
                    assert!(
                        !text.contains(&form),
                        "{what} holds {form} ({status}):\n{text}"
                    );
                }
            }
        }
        // What each target was answered is still said, less the secrets.
        let purges = &crate::common::run::summary(&report)[0]["purges"];
        for index in 0..4 {
            let failed = purges[index]["failed"].as_str().unwrap_or_default();
            assert!(failed.contains("[redacted]"), "{status}: {}", purges[index]);
        }
    }
}
