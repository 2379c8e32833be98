//! What a purge sent, and what it would send.

/// What a purge sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PurgeReport {
    /// Requests (API calls, invalidations) that succeeded.
    pub requests: u64,
    /// Paths or keys purged, after folding (a wildcard counts as one).
    pub paths: u64,
    /// What the paths cost where the CDN charges per path (CloudFront: $0.005 each past the
    /// first 1,000 a month, counted here as if the free ones were used up).
    pub price_usd: Option<f64>,
    /// Unchanged stored tiles the wildcards evicted (an estimate).
    pub evicted: u64,
    /// Nothing was sent: even the coarsest plan costs more than the budget allows now; the
    /// changes wait in the outbox.
    pub over_budget: bool,
    /// Nothing was sent: CloudFront's quotas of paths in flight leave no room for any plan of the
    /// changes now; they wait in the outbox.
    pub no_room: bool,
}

/// What a purge would send, worked out without sending it (`seed --dirty --dry-run`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PurgePlan {
    /// Requests (API calls, invalidations) it takes.
    pub requests: u64,
    /// What is purged after folding: CloudFront paths, Cloudflare URLs or prefixes, Fastly URLs
    /// or surrogate keys, an HTTP cache's `METHOD URL`s.
    pub paths: Vec<String>,
    /// Their price where the CDN charges per path (CloudFront).
    pub price_usd: Option<f64>,
    /// Unchanged stored tiles its wildcards would evict (an estimate).
    pub evicted: u64,
}
