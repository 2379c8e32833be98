//! Freshness measured at the edge, not at the origin: after a target purged, a sample of the tiles
//! it purged is fetched through the target's `public_url` and compared with what the output holds.
//! A purge the API accepted but the cache did not apply (a wrong path, a prefix served elsewhere,
//! an invalidation still propagating) shows as stale answers instead of passing as a success.

use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;

use super::client::Client;
use crate::config::StoreConfig;
use crate::sink::{OutputReader, OutputTarget};
use crate::tile::TileCoord;

/// First wait before fetching a stale tile again; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What to check after one target's purge.
#[derive(Debug, Clone)]
pub struct EdgeProbe {
    /// The output whose tiles were purged, read as the origin.
    pub output: OutputTarget,
    /// Its tile file extension (trees, S3 prefixes).
    pub extension: String,
    /// The target's name.
    pub target: String,
    /// Its public URL, without trailing `/`.
    pub public_url: String,
    /// The sampled tiles and their paths under the public URL.
    pub tiles: Vec<(TileCoord, String)>,
    /// When the purge that covered them ended.
    pub purged_at: SystemTime,
}

/// What a check found for one target.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EdgeCheck {
    /// The target's name.
    pub target: String,
    /// Tiles sampled.
    pub sampled: u64,
    /// `GET`s sent through the edge.
    pub requests: u64,
    /// Answers that were not what the output holds (old bytes, an error, no answer).
    pub stale_answers: u64,
    /// Sampled tiles still stale when the check gave up.
    pub unconfirmed: u64,
    /// From the purge's end to the last sampled tile served fresh; `None` when one never was.
    pub seconds_after_purge: Option<f64>,
    /// When every sampled tile was served fresh.
    #[serde(skip)]
    pub fresh_at: Option<SystemTime>,
}

/// Up to `count` tiles spread evenly over `tiles` (sorted, so a sample covers every zoom).
pub fn sample(mut tiles: Vec<(TileCoord, String)>, count: usize) -> Vec<(TileCoord, String)> {
    tiles.sort();
    tiles.dedup();
    if count == 0 || tiles.len() <= count {
        return if count == 0 { Vec::new() } else { tiles };
    }
    let step = tiles.len() as f64 / count as f64;
    (0..count)
        .map(|i| tiles[(i as f64 * step) as usize].clone())
        .collect()
}

/// Fetches each sampled tile through the edge until it is served as the output holds it, or
/// `within` has passed since the check began.
pub async fn check(probe: &EdgeProbe, store_settings: &StoreConfig, within: Duration) -> EdgeCheck {
    let mut result = EdgeCheck {
        target: probe.target.clone(),
        sampled: probe.tiles.len() as u64,
        ..EdgeCheck::default()
    };
    let output = probe.output.describe();
    let opened = match Client::new() {
        Ok(client) => OutputReader::open(&output, &probe.output, store_settings, &probe.extension)
            .await
            .map(|origin| (client, origin)),
        Err(err) => Err(err),
    };
    let (client, origin) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            tracing::warn!("edge check of `{}`: {err}", probe.target);
            result.unconfirmed = result.sampled;
            return result;
        }
    };
    tracing::debug!(
        "edge check of `{}`: {:?}",
        probe.target,
        probe.tiles.iter().map(|(_, path)| path).collect::<Vec<_>>()
    );
    let deadline = Instant::now() + within;
    let outcomes = join_all(
        probe
            .tiles
            .iter()
            .map(|(tile, path)| one_tile(probe, *tile, path, &origin, &client, deadline)),
    )
    .await;
    let mut last_fresh = Some(probe.purged_at);
    for outcome in outcomes {
        result.requests += outcome.requests;
        result.stale_answers += outcome.stale;
        match (outcome.fresh_at, last_fresh) {
            (Some(at), Some(last)) => last_fresh = Some(at.max(last)),
            _ => {
                result.unconfirmed += u64::from(outcome.fresh_at.is_none());
                last_fresh = None;
            }
        }
    }
    if result.sampled > 0 {
        result.fresh_at = last_fresh;
        result.seconds_after_purge = last_fresh.map(|at| {
            at.duration_since(probe.purged_at)
                .unwrap_or_default()
                .as_secs_f64()
        });
    }
    result
}

struct Outcome {
    requests: u64,
    stale: u64,
    fresh_at: Option<SystemTime>,
}

async fn one_tile(
    probe: &EdgeProbe,
    tile: TileCoord,
    path: &str,
    origin: &OutputReader,
    client: &Client,
    deadline: Instant,
) -> Outcome {
    let url = format!("{}/{path}", probe.public_url);
    let headers = [("accept-encoding".to_string(), "gzip".to_string())];
    let mut outcome = Outcome {
        requests: 0,
        stale: 0,
        fresh_at: None,
    };
    let mut wait = FIRST_RETRY;
    loop {
        // The origin is read again each time: under `watch` a later cycle may change the tile.
        let held = match origin.tile(tile).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!("edge check of {url}: reading tile {tile} at the origin: {err}");
                return outcome;
            }
        };
        outcome.requests += 1;
        match client
            .get(&url, &headers, answer_cap(held.as_deref()))
            .await
        {
            Ok((status, body)) if is_fresh(held.as_deref(), status, &body) => {
                outcome.fresh_at = Some(SystemTime::now());
                return outcome;
            }
            Ok((status, _)) => {
                tracing::debug!(
                    "edge check: {url} answered {status} with other bytes than the origin's"
                );
                outcome.stale += 1;
            }
            Err(err) => {
                tracing::debug!("edge check: {url}: {err}");
                outcome.stale += 1;
            }
        }
        if Instant::now() + wait > deadline {
            tracing::warn!(
                "edge check: {url} (target `{}`) still differs from the origin's tile {tile}",
                probe.target
            );
            return outcome;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

/// Whether an answer serves what the origin holds: the same bytes (or the same bytes once both are
/// decompressed, for a CDN that re-encodes), or no tile where the origin has none.
fn is_fresh(origin: Option<&[u8]>, status: u16, body: &[u8]) -> bool {
    match origin {
        Some(held) => {
            status == 200
                && (body == held
                    || matches!(decoded(held), Some(plain)
                        if decoded_within(body, plain.len()).is_some_and(|b| b == plain)))
        }
        // 204 is what a static origin should answer for a missing tile; 403 and 404 are what
        // buckets answer.
        None => matches!(status, 204 | 403 | 404 | 410) || (status == 200 && body.is_empty()),
    }
}

fn decoded(bytes: &[u8]) -> Option<Vec<u8>> {
    decoded_within(bytes, usize::MAX)
}

/// [`decoded`], `None` past `cap` bytes: an answer's gzip inflating past what the origin's tile
/// holds cannot be that tile, and a gzip bomb stops there.
fn decoded_within(bytes: &[u8], cap: usize) -> Option<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return (bytes.len() <= cap).then(|| bytes.to_vec());
    }
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let inflater = std::io::Read::take(flate2::read::GzDecoder::new(bytes), limit);
    std::io::Read::read_to_end(&mut { inflater }, &mut out).ok()?;
    (out.len() <= cap).then_some(out)
}

/// The most of an edge answer worth reading for a tile the origin holds as `held`: a fresh answer
/// is those bytes or the same tile encoded otherwise (another gzip level, or none), so an answer
/// much longer than either differs anyway; where the origin holds no tile, only an empty answer
/// is fresh.
fn answer_cap(held: Option<&[u8]>) -> usize {
    const SLACK: usize = 64 * 1024;
    match held {
        None => SLACK,
        Some(held) => {
            let plain = decoded(held).map_or(0, |plain| plain.len());
            held.len()
                .max(plain)
                .saturating_mul(2)
                .saturating_add(SLACK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
        use std::io::Write;
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn an_answer_is_fresh_when_it_serves_the_origins_tile_or_its_absence() {
        let tile = gzip(b"layer bytes", 3);
        assert!(is_fresh(Some(&tile), 200, &tile));
        // A CDN that recompressed the tile serves the same tile.
        assert!(is_fresh(Some(&tile), 200, &gzip(b"layer bytes", 9)));
        assert!(is_fresh(Some(&tile), 200, b"layer bytes"));
        assert!(!is_fresh(Some(&tile), 200, &gzip(b"old bytes", 3)));
        assert!(!is_fresh(Some(&tile), 304, &tile));
        assert!(!is_fresh(Some(&tile), 204, b""));
        assert!(!is_fresh(Some(&tile), 200, &[0x1f, 0x8b, 0, 1]));
        for status in [204, 403, 404, 410] {
            assert!(is_fresh(None, status, b""));
        }
        assert!(is_fresh(None, 200, b""));
        assert!(!is_fresh(None, 200, &tile));
        assert!(!is_fresh(None, 503, b""));
    }

    #[test]
    fn a_gzip_bomb_or_a_giant_answer_is_stale_and_read_only_to_what_could_match() {
        let tile = gzip(b"layer bytes", 3);
        let bomb = gzip(&vec![0u8; 64 << 20], 9);
        assert!(bomb.len() < 100_000);
        // Inflating stops just past the origin tile's own length.
        assert_eq!(decoded_within(&bomb, 11), None);
        assert!(!is_fresh(Some(&tile), 200, &bomb));
        assert_eq!(
            decoded_within(&gzip(b"layer bytes", 9), 11).unwrap(),
            b"layer bytes"
        );
        let cap = answer_cap(Some(&tile));
        assert!((64 * 1024..=64 * 1024 + 100).contains(&cap), "{cap}");
        assert_eq!(answer_cap(None), 64 * 1024);
    }

    #[tokio::test]
    async fn an_edge_answer_is_read_no_further_than_its_cap() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
                .await
                .unwrap();
            // A gigabyte announced; the client must stop long before the server would.
            let chunk = vec![7u8; 1 << 16];
            for _ in 0..(1 << 14) {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let client = super::super::client::Client::new().unwrap();
        let answer = client
            .get(&format!("http://127.0.0.1:{port}/1/0/0.pbf"), &[], 1 << 20)
            .await;
        assert!(
            matches!(answer, Err(super::super::error::RequestError::TooLong(cap)) if cap == 1 << 20),
            "{answer:?}"
        );
        server.abort();
    }

    #[test]
    fn a_sample_spreads_over_every_zoom_and_never_repeats() {
        let tiles: Vec<(TileCoord, String)> = (0..8u8)
            .flat_map(|z| {
                (0..(1u32 << z).min(50))
                    .map(move |x| (TileCoord::new(z, x, 0).unwrap(), format!("{z}/{x}/0.pbf")))
            })
            .collect();
        let picked = sample(tiles.clone(), 8);
        assert_eq!(picked.len(), 8);
        let zooms: std::collections::BTreeSet<u8> = picked.iter().map(|(t, _)| t.z()).collect();
        assert!(zooms.len() >= 3, "{picked:?}");
        let unique: std::collections::BTreeSet<_> = picked.iter().collect();
        assert_eq!(unique.len(), 8);
        assert_eq!(sample(tiles.clone(), 0), Vec::new());
        assert_eq!(sample(tiles[..3].to_vec(), 8).len(), 3);
    }
}
