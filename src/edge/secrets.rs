//! What no message of the edge may hold: the secrets a target sends, and answers quoted only as
//! a short excerpt redacted of them.

use crate::config::{CdnConfig, ConfigLine};
use crate::error::Result;

/// The secret values a target sends (API tokens, header values from the environment, the AWS
/// secret key and session token), which no message of the edge may hold in any form.
pub(super) use crate::redact::Secrets;

/// What a message may quote of an answer's body: its first non-blank line, secrets redacted
/// before it is cut (so no part of one survives the cut), control characters dropped, at most
/// 200 characters.
pub(super) fn excerpt(body: &str, secrets: &Secrets) -> String {
    const LONGEST: usize = 200;
    let redacted = secrets.redact(body);
    let line = redacted
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() > LONGEST {
        let cut: String = clean.chars().take(LONGEST).collect();
        format!("{cut}…")
    } else {
        clean
    }
}

/// A secret named by its environment variable; a missing one is the config's fault, at the line
/// of the target's table.
pub(super) fn secret(variable: &str, target: &str, what: &str, at: &ConfigLine) -> Result<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(at.error(format!(
            "cdn `{target}`: the environment variable {variable} ({what}) is not set"
        ))),
    }
}

/// A header value read from `variable`, checked before any tile renders: a newline in it would
/// smuggle in headers of its own. The error never quotes the value.
pub(super) fn header_value(
    header: &str,
    variable: &str,
    target: &str,
    at: &ConfigLine,
) -> Result<String> {
    let value = secret(
        variable,
        target,
        &format!("the value of header {header}"),
        at,
    )?;
    if hyper::header::HeaderValue::from_str(&value).is_err() {
        return Err(at.error(format!(
            "cdn `{target}`: header {header}: the value of {variable} cannot be sent in a header \
             (it holds a line break or another control character)"
        )));
    }
    Ok(value)
}

/// The values of an `http` target's headers, read from their variables (none in a dry run).
pub(super) fn header_values(
    config: &CdnConfig,
    headers: &[(String, String)],
    read_secrets: bool,
    sent: &mut Vec<String>,
) -> Result<Vec<(String, String)>> {
    let mut values = Vec::new();
    for (header, variable) in headers.iter().filter(|_| read_secrets) {
        let value = header_value(header, variable, &config.name, &config.defined_at)?;
        sent.push(value.clone());
        values.push((header.clone(), value));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_holds_no_secret_not_even_one_cut_in_half() {
        let secrets = Secrets::new(vec!["tok-123456".into(), String::new()]);
        let body =
            "\n  {\"headers\": {\"authorization\": \"Bearer tok-123456\"}}\nsecond line tok-123456";
        let text = excerpt(body, &secrets);
        assert_eq!(text, "{\"headers\": {\"authorization\": \"[redacted]\"}}");
        // Cut at 200 characters, a secret straddling the cut still goes whole.
        let long = format!("{}tok-123456 and more", "x".repeat(195));
        let text = excerpt(&long, &secrets);
        assert!(!text.contains("tok-1"), "{text}");
        assert!(text.ends_with('…'));
        assert_eq!(excerpt("a\u{1b}[31mred\r", &secrets), "a[31mred");
    }
}
