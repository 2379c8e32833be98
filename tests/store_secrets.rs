//! What a store's refusal can make the tool say: an S3-compatible endpoint or an Azure account
//! that answers 403 echoing the request (its URL with an Azure SAS, its headers with an S3 session
//! token, each also percent-encoded and in base64) puts none of the credentials into stderr or
//! the JSON on stdout. The store is the recording server (`common/recorder.rs`); `inspect` is the
//! command, as it reaches a remote output without a database.

use base64::Engine as _;

use crate::common::recorder::{Answer, Recorder};
use crate::common::run::{oar_tiles_with, single_layer_config, Run};

/// Every form of `secret` an echo shows it in: whole, percent-encoded, in base64.
fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_string(),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ]
}

/// Asserts the run failed naming the refusal, and that neither stderr nor stdout holds `secrets`
/// in any form.
fn assert_refused_without(run: &Run, secrets: &[&str], store: &Recorder) {
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(
        !store.requests.lock().unwrap().is_empty(),
        "the store was asked: {}",
        run.stderr
    );
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    for secret in secrets {
        for form in forms(secret) {
            for (what, text) in [("stderr", &run.stderr), ("stdout", &run.stdout)] {
                assert!(
                    !text.contains(&form),
                    "{what} holds {form} (a form of {secret}):\n{text}"
                );
            }
        }
    }
    // What the store said is still shown, less the credentials.
    assert!(run.stderr.contains("[redacted]"), "{}", run.stderr);
}

/// `inspect` of an S3 prefix at `store`, with these credentials in the environment and no AWS
/// files to fall back on.
fn inspect_s3(store: &Recorder, credentials: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oar-tiles.toml");
    let table = format!(
        "[store]\nendpoint = \"http://127.0.0.1:{}\"\nforce_path_style = true\nregion = \"us-east-1\"\nmax_attempts = 1\n\n",
        store.port
    );
    std::fs::write(&config, table + &single_layer_config("s", "sites", "", "")).unwrap();
    let nowhere = dir.path().join("no-aws-file");
    let nowhere = nowhere.to_str().unwrap();
    let mut env = vec![
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ("AWS_CONFIG_FILE", nowhere),
    ];
    env.extend_from_slice(credentials);
    oar_tiles_with(
        None,
        &[
            "inspect",
            "--json",
            "--config",
            config.to_str().unwrap(),
            "s3://tiles/facilities",
        ],
        &env,
    )
}

#[test]
fn an_s3_refusal_echoing_the_session_token_and_headers_leaks_no_credential() {
    let store = Recorder::answering(Answer::EchoAsStore(403));
    let token = "IQoJb3JpZ2luX2VjEHoaCXVzLWVhc3QtMSJGMEQCIFsession+token/with=odd";
    let secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYsecretkey";
    let run = inspect_s3(
        &store,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDOARTILESTEST"),
            ("AWS_SECRET_ACCESS_KEY", secret_key),
            ("AWS_SESSION_TOKEN", token),
        ],
    );
    // The store really was sent the token, and echoed it back.
    let sent = store.requests.lock().unwrap()[0]
        .header("x-amz-security-token")
        .to_string();
    assert_eq!(sent, token);
    assert_refused_without(&run, &[token, secret_key], &store);
}

#[test]
fn an_azure_refusal_echoing_the_sas_in_its_url_leaks_no_signature() {
    let store = Recorder::answering(Answer::EchoAsStore(403));
    let signature = "Zm9vYmFyU2VjcmV0U2lnbmF0dXJl+x/y=";
    let encoded_signature =
        percent_encoding::utf8_percent_encode(signature, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let sas = format!(
        "sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2099-01-01T00:00:00Z&spr=http&sig={encoded_signature}"
    );
    let endpoint = format!("http://127.0.0.1:{}/oaraccount", store.port);
    let run = oar_tiles_with(
        None,
        &["inspect", "--json", "az://tiles/facilities"],
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "oaraccount"),
            ("AZURE_STORAGE_SAS_TOKEN", &sas),
            ("AZURE_STORAGE_ENDPOINT", &endpoint),
            ("AZURE_ALLOW_HTTP", "true"),
        ],
    );
    let target = store.requests.lock().unwrap()[0].target.clone();
    assert!(target.contains("sig="), "the SAS was sent: {target}");
    assert_refused_without(&run, &[signature, &encoded_signature, &sas], &store);
}

#[test]
fn an_azure_error_answer_of_a_gibibyte_is_read_no_further_than_its_cap() {
    let store = Recorder::answering(Answer::Huge(403, 1 << 30));
    let endpoint = format!("http://127.0.0.1:{}/oaraccount", store.port);
    let run = oar_tiles_with(
        None,
        &["inspect", "--json", "az://tiles/facilities"],
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "oaraccount"),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=2022-11-02&sig=abc"),
            ("AZURE_STORAGE_ENDPOINT", &endpoint),
            ("AZURE_ALLOW_HTTP", "true"),
        ],
    );
    failed_reading_little(&run, &store);
    assert!(
        run.stderr.len() < 64 << 10,
        "{} bytes of messages",
        run.stderr.len()
    );
}

#[test]
fn an_s3_error_answer_of_a_gibibyte_is_read_no_further_than_its_cap() {
    let store = Recorder::answering(Answer::Huge(403, 1 << 30));
    let run = inspect_s3(
        &store,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDOARTILESTEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    failed_reading_little(&run, &store);
}

/// The run failed on the 403 having read of the gibibyte only what the server could push into
/// the connection's buffers before the tool stopped reading.
fn failed_reading_little(run: &Run, store: &Recorder) {
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    let sent = store.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{sent} bytes of the error answer were read"
    );
}
