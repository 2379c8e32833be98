//! The URLs a target's table names: checked as URLs, and an API's refused where it would carry
//! a bearer token in clear text.

use toml::Spanned;

use super::Fault;

/// A URL key's value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotHttpUrl {
    /// Not an `http://` or `https://` URL.
    #[error("{key} `{url}` is not an http:// or https:// URL")]
    Scheme { key: &'static str, url: String },
    /// A user name or password in the URL: a secret in the config file, which messages would
    /// print. The URL is quoted without it.
    #[error(
        "{key} `{url}` holds a user name or password: keep secrets out of the config file (an \
         `http` target sends its credentials as headers read from the environment: headers = \
         {{ \"Authorization\" = \"VARIABLE\" }})"
    )]
    UserInfo { key: &'static str, url: String },
}

/// The URL of `key` without its trailing `/`s.
pub(super) fn http_url(key: &'static str, url: &str) -> Result<String, NotHttpUrl> {
    let url = url.trim_end_matches('/');
    let Some((scheme, rest)) = url
        .split_once("://")
        .filter(|(scheme, _)| ["http", "https"].contains(scheme))
        .filter(|_| !url.contains(char::is_whitespace))
    else {
        return Err(NotHttpUrl::Scheme {
            key,
            url: url.to_string(),
        });
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some((_, host)) = rest[..authority_end].rsplit_once('@') {
        return Err(NotHttpUrl::UserInfo {
            key,
            url: format!("{scheme}://…@{host}{}", &rest[authority_end..]),
        });
    }
    Ok(url.to_string())
}

/// The host of an `http://` or `https://` URL, without its port or brackets.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    }
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &str) -> bool {
    let host = host_of(url);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An API that takes a bearer token: `https://`, or plain `http://` to this machine only (a local
/// stand-in for the API), since anything else sends the token in clear text.
pub(super) fn api_url(
    kind: &str,
    raw: Option<Spanned<String>>,
    default: &str,
) -> Result<String, Fault> {
    let (text, span) = match raw {
        Some(spanned) => {
            let span = spanned.span();
            (spanned.into_inner(), Some(span))
        }
        None => (default.to_string(), None),
    };
    let url = http_url("api_url", &text).map_err(|e| (span.clone(), e.to_string()))?;
    if url.starts_with("http://") && !is_loopback(&url) {
        return Err((
            span,
            format!(
                "api_url `{url}` would send the {kind} API token in clear text: use https://, \
                 or http:// only to a loopback host (127.0.0.0/8, ::1, localhost)"
            ),
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_a_password_is_refused_without_quoting_it() {
        let refused = http_url("url", "http://purger:s3cret@cache:6081/tiles/{path}")
            .unwrap_err()
            .to_string();
        assert!(
            !refused.contains("s3cret") && !refused.contains("purger"),
            "{refused}"
        );
        assert!(
            refused.contains("http://…@cache:6081/tiles/{path}"),
            "{refused}"
        );
        // An `@` past the authority is a path's, not a password.
        assert!(http_url("url", "https://cache.example.org/t/@{path}").is_ok());
        assert!(http_url("url", "ftp://cache/t").is_err());
        assert_eq!(
            http_url("public_url", "https://tiles.example.org/v1/").unwrap(),
            "https://tiles.example.org/v1"
        );
    }
}
