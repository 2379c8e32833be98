//! What no message may hold: the secrets the tool sends (API tokens, header values and store
//! credentials from the environment), in any form an answer may echo them in, and the signatures
//! and tokens of a signed request's query or headers.
//!
//! A server's error page may quote a secret whole, without its scheme word (`Bearer`), one word of
//! it, percent-encoded (as a URL's query carries it, in either case of hex, `+` for a space) or in
//! base64 (standard or URL-safe, padded or not, even inside a longer base64 text such as a `Basic`
//! credential). [`Secrets`] knows each of those forms of each secret and replaces them all; and
//! whatever the secrets, the values of the query parameters and headers that carry a signed
//! request's credentials (an Azure SAS `sig=`, `X-Amz-Security-Token`, `X-Amz-Signature`,
//! `Authorization`) are replaced too. The CDN targets (`edge`) and the object stores (`store`)
//! route every message they make through it, each retry's warning as well as the final error.
//!
//! A secret the tool comes to hold only while it runs (an access token minted from a service
//! account key or fetched from a metadata server, credentials a provider chain read from a file)
//! joins the [`Secrets`] the moment it is held ([`Secrets::add`]): the clones share one list, so
//! every message made after that is redacted of it too.

use std::sync::{Arc, RwLock};

use base64::Engine as _;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Words that name an authorization scheme before the secret itself (`Bearer TOKEN`), compared
/// without case.
const SCHEMES: &[&str] = &[
    "bearer",
    "basic",
    "token",
    "digest",
    "sharedkey",
    "sharedkeylite",
    "apikey",
    "key",
];

/// A word of a secret shorter than this is not replaced on its own: `Bearer`'s `a` is no secret,
/// and replacing every `a` would leave no message. The whole value is replaced at any length.
const SHORTEST_PART: usize = 6;

/// A whole value shorter than this is replaced only where it stands alone as a word: a secret of
/// one or two characters (a test's `AZURE_STORAGE_ACCOUNT_KEY=x`) replaced wherever its letters
/// appear would leave no message readable, and is no secret worth that.
const SHORTEST_WHOLE: usize = 3;

/// Query parameters whose value is a credential: `NAME=VALUE` has its value replaced.
const CREDENTIAL_PARAMETERS: &[&str] = &[
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
    "x-goog-signature",
    "access_token",
];

/// Headers whose value is a credential: `NAME: VALUE` (or `"NAME": "VALUE"`, as a JSON echo of
/// the request shows it) has its value replaced to the closing quote, or unquoted to the end of
/// the line or a `;` (a signature's list of signed headers goes on past it, with its own
/// `Signature=`).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "x-ms-copy-source-authorization",
    "fastly-key",
];

/// Percent-encodings of a secret as different encoders make them: everything but letters and
/// digits, and RFC 3986's unreserved characters kept.
const ENCODE_ALL: &percent_encoding::AsciiSet = percent_encoding::NON_ALPHANUMERIC;
const ENCODE_RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const ENCODE_PATH: &percent_encoding::AsciiSet = &ENCODE_RESERVED.remove(b'/');

/// Secret values, each with every form a message must not hold it in. Clones share the list, so
/// a secret one of them [adds](Secrets::add) is redacted by all.
#[derive(Clone, Default)]
pub struct Secrets(Arc<RwLock<Held>>);

/// The forms replaced wherever they appear, longest first, and the values too short for that,
/// replaced only as whole words.
#[derive(Default)]
struct Held {
    forms: Vec<String>,
    short: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} form(s))", self.held().forms.len())
    }
}

impl Secrets {
    /// The secrets `values` (empty ones ignored) in all their forms.
    pub fn new(values: impl IntoIterator<Item = String>) -> Secrets {
        let secrets = Secrets::default();
        for value in values {
            secrets.add(&value);
        }
        secrets
    }

    /// Adds `value` (ignored when empty, or known already) in all its forms, for these secrets and
    /// every clone of them: a token minted at run time is redacted from then on.
    /// A value shorter than three characters is replaced only where it stands alone as a word,
    /// with a warning that it is: replacing each of its letters would leave no message.
    pub fn add(&self, value: &str) {
        let known = {
            let held = self.held();
            held.forms
                .iter()
                .chain(&held.short)
                .any(|form| form == value)
        };
        if value.is_empty() || known {
            return;
        }
        // A lock poisoned by a panic elsewhere still holds whole lists: each change is one push
        // and one sort of owned strings.
        let mut held = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if value.chars().count() < SHORTEST_WHOLE {
            tracing::warn!(
                "a secret of {} character(s) is redacted only where it stands alone as a word: \
                 a real credential is longer (check the environment's credential variables)",
                value.chars().count()
            );
            held.short.push(value.to_string());
            return;
        }
        held.forms.extend(forms(value));
        // A form that holds another is replaced whole first.
        held.forms
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        held.forms.dedup();
    }

    fn held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The values of the environment variables `names` that are set.
    pub fn from_env(names: &[&str]) -> Secrets {
        Secrets::new(names.iter().filter_map(|name| std::env::var(name).ok()))
    }

    /// `text` with every form of every secret, and every credential a signed request carries in
    /// its query or headers, replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        let held = self.held();
        for form in &held.forms {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), REDACTED);
            }
        }
        for word in &held.short {
            text = replace_word(&text, word);
        }
        scrub_credentials(&text)
    }
}

/// `text` with `word` replaced where neither the character before it nor the one after it is a
/// letter or digit.
fn replace_word(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, _) in text.match_indices(word) {
        if start < at {
            continue;
        }
        let end = start + word.len();
        let alone = !text[..start]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
            && !text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        if alone {
            out.push_str(&text[at..start]);
            out.push_str(REDACTED);
            at = end;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// Every form of `value` a message may hold: the value, its words (split on whitespace, the scheme
/// word left out) and what follows a scheme word, each as it is, percent-encoded and percent-decoded,
/// and in base64.
pub fn forms(value: &str) -> Vec<String> {
    let mut candidates = vec![value.to_string()];
    let words: Vec<&str> = value.split_whitespace().collect();
    if let Some((first, rest)) = value.trim().split_once(char::is_whitespace) {
        if SCHEMES
            .iter()
            .any(|scheme| first.eq_ignore_ascii_case(scheme))
        {
            let rest = rest.trim();
            if !rest.is_empty() {
                candidates.push(rest.to_string());
            }
        }
    }
    if words.len() > 1 {
        candidates.extend(
            words
                .iter()
                .filter(|word| word.chars().count() >= SHORTEST_PART)
                .filter(|word| !SCHEMES.iter().any(|s| word.eq_ignore_ascii_case(s)))
                .map(|word| word.to_string()),
        );
    }
    // A value given already encoded (a SAS token) may be echoed decoded.
    if let Ok(decoded) = percent_encoding::percent_decode_str(value).decode_utf8() {
        if decoded != value {
            candidates.push(decoded.into_owned());
        }
    }
    let mut all = Vec::new();
    for candidate in &candidates {
        all.push(candidate.clone());
        all.extend(percent_forms(candidate));
        all.extend(base64_forms(candidate));
    }
    all.retain(|form| !form.is_empty());
    all.sort();
    all.dedup();
    all
}

/// `value` percent-encoded as encoders do: strictly, keeping RFC 3986's unreserved characters,
/// keeping `/` too, as an HTML form (`+` for a space); each with upper- and lower-case hex.
fn percent_forms(value: &str) -> Vec<String> {
    let mut encoded: Vec<String> = [ENCODE_ALL, ENCODE_RESERVED, ENCODE_PATH]
        .into_iter()
        .map(|set| percent_encoding::utf8_percent_encode(value, set).to_string())
        .collect();
    encoded.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    let spaces_as_plus: Vec<String> = encoded.iter().map(|e| e.replace("%20", "+")).collect();
    encoded.extend(spaces_as_plus);
    let lower: Vec<String> = encoded.iter().map(|e| lower_hex(e)).collect();
    encoded.extend(lower);
    encoded.retain(|form| form != value);
    encoded
}

/// `encoded` with the hex digits of each `%XX` in lower case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut after_percent = 0;
    for c in encoded.chars() {
        if after_percent > 0 {
            out.push(c.to_ascii_lowercase());
            after_percent -= 1;
        } else {
            if c == '%' {
                after_percent = 2;
            }
            out.push(c);
        }
    }
    out
}

/// `value` in base64, standard and URL-safe, padded and not; and, for a value long enough, the
/// characters that encode it wherever it starts in a longer encoded text (a `Basic` credential's
/// `user:password`), whichever bytes come before and after it.
fn base64_forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let mut all: Vec<String> = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .into_iter()
        .map(|engine| engine.encode(bytes))
        .collect();
    if bytes.len() >= SHORTEST_PART {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(bytes);
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let encoded = engine.encode(&shifted);
                // The characters that also encode the bytes before it (2 for one byte, 3 for
                // two), and the last one when it also encodes bytes after it.
                let skip = [0, 2, 3][offset];
                let keep = if shifted.len() % 3 == 0 {
                    encoded.len()
                } else {
                    encoded.len() - 1
                };
                if keep > skip {
                    all.push(encoded[skip..keep].to_string());
                }
            }
        }
    }
    all
}

/// `text` with the value of every credential query parameter and header replaced.
pub fn scrub_credentials(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    // Byte ranges of values to replace, in order, not overlapping.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for name in CREDENTIAL_PARAMETERS.iter().chain(CREDENTIAL_HEADERS) {
        let header = CREDENTIAL_HEADERS.contains(name);
        let mut from = 0;
        while let Some(found) = lower[from..].find(name) {
            let start = from + found;
            from = start + name.len();
            if start > 0 {
                let before = lower.as_bytes()[start - 1];
                if before.is_ascii_alphanumeric() || before == b'-' || before == b'_' {
                    continue;
                }
            }
            if let Some(cut) = value_after(text.as_bytes(), from, header) {
                cuts.push(cut);
            }
        }
    }
    if cuts.is_empty() {
        return text.to_string();
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            // Inside a value already replaced (a signature within an `Authorization` value).
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// The byte range of the value after a credential's name ending at `at`: after `=` for any, and
/// for a header also after `:` (a closing quote of the name first, and opening ones and spaces
/// before the value).
fn value_after(text: &[u8], mut at: usize, header: bool) -> Option<(usize, usize)> {
    let quoted_name = matches!(text.get(at), Some(b'"' | b'\''));
    if quoted_name {
        at += 1;
    }
    let separator = *text.get(at)?;
    if !(separator == b'=' || header && separator == b':') {
        return None;
    }
    at += 1;
    let query = separator == b'=' && !quoted_name;
    while matches!(text.get(at), Some(b' ' | b'\t')) && !query {
        at += 1;
    }
    let quote = match text.get(at) {
        Some(q @ (b'"' | b'\'')) if !query => {
            at += 1;
            Some(*q)
        }
        _ => None,
    };
    let start = at;
    let mut end = at;
    while let Some(&c) = text.get(end) {
        let stop = match quote {
            Some(q) => c == q || c == b'\n' || c == b'\r',
            None if query => {
                c.is_ascii_whitespace()
                    || matches!(c, b'&' | b'"' | b'\'' | b'<' | b'>' | b',' | b';' | b')')
            }
            None => matches!(c, b'\n' | b'\r' | b'"' | b'\'' | b'<' | b';'),
        };
        if stop {
            break;
        }
        end += 1;
    }
    // Not past a character boundary: the stops are ASCII, so `end` is one.
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const TOKEN: &str = "s3cr3t/T0ken+with=odd&chars ü";

    fn redacted(secrets: &Secrets, text: &str) -> String {
        let out = secrets.redact(text);
        assert!(
            out.contains(REDACTED),
            "nothing redacted in {text:?}: {out}"
        );
        out
    }

    #[test]
    fn a_secret_is_redacted_whole_without_its_scheme_word_and_word_by_word() {
        let secrets = Secrets::new(vec![format!("Bearer {TOKEN}"), String::new()]);
        for text in [
            format!("echo: Authorisation was Bearer {TOKEN}!"),
            format!("the token {TOKEN} is refused"),
            "the first word s3cr3t/T0ken+with=odd&chars alone".to_string(),
        ] {
            let out = redacted(&secrets, &text);
            assert!(!out.contains("s3cr3t"), "{out}");
        }
        // A short word of it (`ü`) and the scheme word stay: they are no secret alone.
        assert_eq!(secrets.redact("Bearer ü"), "Bearer ü");
    }

    #[test]
    fn a_secret_added_to_one_clone_is_redacted_by_every_clone() {
        let secrets = Secrets::new(vec![TOKEN.to_string()]);
        let held = secrets.clone();
        let minted = "ya29.minted-at-run-time";
        assert_eq!(held.redact(minted), minted);
        secrets.add(minted);
        secrets.add(minted);
        assert_eq!(held.redact(&format!("echo {minted}!")), "echo [redacted]!");
        assert_eq!(held.redact(&format!("and {TOKEN}")), "and [redacted]");
        let encoded = STANDARD.encode(minted);
        assert_eq!(held.redact(&encoded), REDACTED);
    }

    #[test]
    fn a_secret_of_one_or_two_characters_is_redacted_only_where_it_stands_alone() {
        let secrets = Secrets::new(vec!["a".to_string(), "k9".to_string()]);
        assert_eq!(
            secrets.redact("a bad answer: key=a, then k9; ak9a stays"),
            "[redacted] bad answer: key=[redacted], then [redacted]; ak9a stays"
        );
        assert_eq!(secrets.redact("nothing alone"), "nothing alone");
        // Three characters and more are replaced wherever they appear.
        let three = Secrets::new(vec!["x7z".to_string()]);
        assert_eq!(three.redact("ax7zb"), "a[redacted]b");
    }

    #[test]
    fn percent_encoded_forms_in_either_hex_case_and_plus_for_space_are_redacted() {
        let secrets = Secrets::new(vec![TOKEN.to_string()]);
        let strict = percent_encoding::utf8_percent_encode(TOKEN, ENCODE_ALL).to_string();
        let form: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
        assert!(form.contains('+'), "{form}");
        for encoded in [
            strict.clone(),
            lower_hex(&strict),
            form.clone(),
            lower_hex(&form),
            percent_encoding::utf8_percent_encode(TOKEN, ENCODE_RESERVED).to_string(),
        ] {
            let text = format!("GET /x?token={encoded}&y=1 refused");
            let out = redacted(&secrets, &text);
            assert!(!out.contains(&encoded), "{out}");
            assert!(out.ends_with("&y=1 refused"), "{out}");
        }
        // A value set already encoded is found decoded.
        let given = Secrets::new(vec!["tok%2Ben%3D".to_string()]);
        assert_eq!(
            given.redact("echoed tok+en= back"),
            "echoed [redacted] back"
        );
    }

    #[test]
    fn base64_forms_standard_and_url_safe_padded_or_not_and_inside_longer_text_are_redacted() {
        let secrets = Secrets::new(vec![TOKEN.to_string()]);
        for encoded in [
            STANDARD.encode(TOKEN),
            STANDARD.encode(TOKEN).trim_end_matches('=').to_string(),
            URL_SAFE_NO_PAD.encode(TOKEN),
            base64::engine::general_purpose::URL_SAFE.encode(TOKEN),
        ] {
            let out = redacted(&secrets, &format!("body: {encoded}."));
            assert!(!out.contains(&encoded), "{out}");
        }
        // A Basic credential: `user:TOKEN` encoded whole, at each alignment.
        for user in ["u", "us", "usr"] {
            let basic = STANDARD.encode(format!("{user}:{TOKEN}"));
            let out = redacted(&secrets, &format!("Basic {basic}"));
            // What is left of the encoding is the user's part and a few characters either side.
            let left = out.trim_start_matches("Basic ").replace(REDACTED, "");
            assert!(left.len() <= 10, "{basic} -> {out}");
        }
    }

    #[test]
    fn signed_request_credentials_are_redacted_whatever_the_secrets() {
        let none = Secrets::default();
        let cases = [
            (
                "Error performing GET http://127.0.0.1:1/acct/c/k?sv=2022-11-02&sig=AbC%2Bd%3D&se=x in 1s",
                "?sv=2022-11-02&sig=[redacted]&se=x in 1s",
            ),
            (
                "<Message>https://b.s3/k?X-Amz-Security-Token=FwoG%2Fabc&X-Amz-Signature=99ff</Message>",
                "?X-Amz-Security-Token=[redacted]&X-Amz-Signature=[redacted]</Message>",
            ),
            (
                r#"{"headers": {"x-amz-security-token": "FwoGZXIvYXdz", "authorization": "AWS4-HMAC-SHA256 Credential=AKID/x, Signature=abc"}}"#,
                r#"{"headers": {"x-amz-security-token": "[redacted]", "authorization": "[redacted]"}}"#,
            ),
            (
                "request header Authorization: Bearer abc.def\nnext line",
                "Authorization: [redacted]\nnext line",
            ),
        ];
        for (text, tail) in cases {
            let out = none.redact(text);
            assert!(out.ends_with(tail), "{text}\n-> {out}");
        }
        // Words that only contain a name are left alone.
        let plain = "design=3; the signature check; authorization is needed";
        assert_eq!(none.redact(plain), plain);
    }
}
