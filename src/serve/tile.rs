//! `/{tileset}/{z}/{x}/{y}.pbf`: a stored tile with the headers the tool gives tiles everywhere it
//! publishes them (`config::DEFAULT_CACHE_CONTROL`: a shared cache keeps it, a browser revalidates
//! it), its `ETag` (the MD5 of its stored bytes, as S3 names a single-part object) and `304 Not
//! Modified` to a revalidation that names it, so an open map refreshing a tile the feed lists gets
//! the new bytes, and an unchanged one costs an answer of headers only.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};

use crate::config::DEFAULT_CACHE_CONTROL;
use crate::store::MVT_CONTENT_TYPE;
use crate::tile::{TileCoord, TileError};

/// The answer to a tile request, given the stored bytes (`None`: the output holds no such tile)
/// and the request's headers.
pub(super) fn answer(bytes: Option<Vec<u8>>, request: &HeaderMap) -> Response {
    let cache_control = HeaderValue::from_static(DEFAULT_CACHE_CONTROL);
    let Some(bytes) = bytes else {
        return (
            StatusCode::NO_CONTENT,
            [(header::CACHE_CONTROL, cache_control)],
        )
            .into_response();
    };
    let etag = entity_tag(&bytes);
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, cache_control);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let revalidated = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| none_match_names(value, &etag));
    if revalidated {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(MVT_CONTENT_TYPE),
    );
    // Directory and S3 tiles may be stored plain (`compress = false`): say gzip only when the
    // bytes are gzip.
    if bytes.starts_with(&[0x1f, 0x8b]) {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    (headers, bytes).into_response()
}

/// A strong entity tag of stored bytes: their MD5 in hex, quoted.
fn entity_tag(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(bytes)))
}

/// Whether an `If-None-Match` value names `etag`: `*`, or a list of entity tags one of which
/// matches it by the weak comparison RFC 9110 prescribes for this header (`W/` ignored).
fn none_match_names(value: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    value.trim() == "*" || value.split(',').any(|tag| opaque(tag) == ours)
}

/// A tile request that names no tile.
#[derive(Debug, thiserror::Error)]
pub(super) enum BadTile {
    /// Not `z/x/y.pbf` in whole numbers.
    #[error("`{0}` is not a tile: expected /{{tileset}}/z/x/y.pbf with whole numbers")]
    Form(String),
    /// Numbers that name no tile (x or y past the zoom's tiles, a zoom too deep).
    #[error(transparent)]
    Outside(#[from] TileError),
}

/// The tile a `z/x/y.pbf` request names, or what is wrong with it.
pub(super) fn parse_tile(z: &str, x: &str, y: &str) -> std::result::Result<TileCoord, BadTile> {
    let bad = || BadTile::Form(format!("{z}/{x}/{y}"));
    let y = y.strip_suffix(".pbf").ok_or_else(bad)?;
    let number = |text: &str| -> std::result::Result<u32, BadTile> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        text.parse().map_err(|_| bad())
    };
    let z = u8::try_from(number(z)?).map_err(|_| bad())?;
    Ok(TileCoord::new(z, number(x)?, number(y)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_are_validated_numbers() {
        assert_eq!(parse_tile("3", "2", "5.pbf").unwrap().to_string(), "3/2/5");
        for (z, x, y) in [
            ("3", "8", "0.pbf"),
            ("25", "0", "0.pbf"),
            ("a", "0", "0.pbf"),
            ("3", "-1", "0.pbf"),
            ("3", "0", "0"),
            ("3", "0", "0.png"),
            ("3", "+1", "0.pbf"),
            ("999", "0", "0.pbf"),
        ] {
            assert!(parse_tile(z, x, y).is_err(), "{z}/{x}/{y}");
        }
        assert_eq!(
            parse_tile("3", "a", "0.pbf").unwrap_err().to_string(),
            "`3/a/0.pbf` is not a tile: expected /{tileset}/z/x/y.pbf with whole numbers"
        );
        assert_eq!(
            parse_tile("3", "8", "0.pbf").unwrap_err().to_string(),
            "tile 3/8/0 is outside zoom 3 (x and y must be below 8)"
        );
    }

    #[test]
    fn a_revalidation_naming_the_stored_bytes_is_answered_304_and_any_other_gets_the_tile() {
        let gzip = vec![0x1f, 0x8b, 8, 0, 1, 2, 3];
        let etag = entity_tag(&gzip);
        assert_eq!(etag.len(), 34, "{etag}");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            answer(Some(gzip.clone()), &headers)
        };
        for named in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".into(),
        ] {
            let response = with(&named);
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{named}");
            assert_eq!(response.headers()[header::ETAG], etag.as_str());
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                DEFAULT_CACHE_CONTROL
            );
        }
        let fresh = with("\"d41d8cd98f00b204e9800998ecf8427e\"");
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(fresh.headers()[header::ETAG], etag.as_str());
        let plain = answer(Some(b"mvt".to_vec()), &HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let none = answer(None, &HeaderMap::new());
        assert_eq!(none.status(), StatusCode::NO_CONTENT);
        assert_eq!(none.headers()[header::CACHE_CONTROL], DEFAULT_CACHE_CONTROL);
    }
}
