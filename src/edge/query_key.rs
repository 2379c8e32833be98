//! Whether a CDN keys its cache on the query string, which a versioned changes feed needs: maps
//! that follow it ask a changed tile with `?v=VERSION`, and a cache that ignores the query string
//! answers that from the copy it keeps under the plain URL, the old bytes. A tile is asked twice
//! through the CDN's `public_url`, each time with a version never used before: an answer from
//! cache to the second proves the cache took it for the first.

use std::time::{SystemTime, UNIX_EPOCH};

use super::client::Client;

/// What a versioned feed needs from the CDN named `target`, as the line that refuses it: the
/// settings to change, per CDN (docs/src/cdn.md says more).
pub fn refusal(target: &str, url: &str) -> String {
    format!(
        "cdn `{target}` answered {url} from its cache although that version was never asked \
         before: it ignores the query string, which `versioned = true` in [tileset.feed] needs; \
         key its cache on the query string (CloudFront: the cache policy's query strings \
         \"All\" or the `v` one; Cloudflare: cache level Standard, no \"Ignore Query String\"; \
         Fastly and Varnish: hash `req.url` whole; nginx: `proxy_cache_key` with `$args`), or \
         set `versioned = false`"
    )
}

/// Whether the answer's headers say it came from the cache (`X-Cache: HIT`, CloudFront's `Hit
/// from cloudfront`, Cloudflare's `CF-Cache-Status: HIT`, nginx's `X-Cache-Status: HIT`).
fn from_cache(headers: &hyper::HeaderMap) -> bool {
    ["x-cache", "cf-cache-status", "x-cache-status"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .any(|value| value.to_ascii_lowercase().starts_with("hit"))
}

/// Asks `{public_url}/{tile_path}` twice, each with a version of its own never used before;
/// `Err` with [`refusal`] when the second answer came from the cache. A CDN that cannot be
/// reached is not judged here (the purges and the edge check report it).
pub async fn check_keys_on_query(
    target: &str,
    public_url: &str,
    tile_path: &str,
) -> Result<(), String> {
    let Ok(client) = Client::new() else {
        return Ok(());
    };
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let base = format!("{}/{tile_path}", public_url.trim_end_matches('/'));
    // The first asks the cache to keep the tile (under the plain URL, if it ignores the query).
    for attempt in ["a", "b"] {
        let url = format!("{base}?v=oar-tiles-check-{unique:x}{attempt}");
        match client.head_of(&url).await {
            Ok(headers) if attempt == "b" && from_cache(&headers) => {
                return Err(refusal(target, &url));
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("cdn `{target}`: {url}: {err}; its cache key is not checked");
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_read_from_each_cdns_header() {
        for (name, value, hit) in [
            ("x-cache", "HIT", true),
            ("x-cache", "Hit from cloudfront", true),
            ("x-cache", "Miss from cloudfront", false),
            ("cf-cache-status", "HIT", true),
            ("cf-cache-status", "DYNAMIC", false),
            ("x-cache-status", "HIT", true),
        ] {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            assert_eq!(from_cache(&headers), hit, "{name}: {value}");
        }
        assert!(!from_cache(&hyper::HeaderMap::new()));
    }
}
