//! One job per remote output across machines: a lease object in the store beside the output's
//! other documents (`PREFIX/.oar-tiles/lock`, `KEY.oar-tiles-lock` beside an archive), which a
//! lock file in this machine's cache cannot be.
//!
//! A run creates the lease with the store's create-only write (S3 `If-None-Match: *`, GCS
//! `ifGenerationMatch=0`, Azure's create mode), naming its host, process, run and an expiry;
//! renews it while it runs; removes it at the end. A live lease of another run makes a job wait or
//! fail naming the holder. An expired one (its holder crashed, or stalled longer than
//! [`TERM`]) is taken over through a create-only marker named after the lease it replaces, so
//! of two jobs taking it over one wins; a marker whose run died before taking the lease is removed
//! ([`marked`] says when). Renewals and the release read the lease first and
//! touch it only while it is still this run's: the stores' stand-ins do not all honour a
//! conditional update (`If-Match`), so the tool does not rely on one. Cost: a create, a read and
//! a write every [`RENEW_EVERY`], a read and a delete: a few requests a run, none per tile.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Bucket, StoreConfig};
use crate::error::{Error, Result};
use crate::store::{ObjectHeaders, ObjectStore, Put};

/// How long a lease lasts without renewal: a holder that crashed keeps other machines waiting
/// at most this long.
pub const TERM: Duration = Duration::from_secs(180);

/// How often a holder renews its lease: a few renewals fit in a term, so one slow request does
/// not lose it.
pub const RENEW_EVERY: Duration = Duration::from_secs(45);

/// How often a waiting job looks at the lease again.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// A lease is one short JSON object: no more of what is at its key is read.
const LEASE_CAP: u64 = 4096;

/// Where a remote output's lease lives.
#[derive(Debug, Clone)]
pub struct LeasePlace {
    /// The store and bucket or container.
    pub bucket: Bucket,
    /// The lease object's key.
    pub key: String,
    /// The store settings to open it with.
    pub store_settings: StoreConfig,
}

impl LeasePlace {
    /// The lease of `part` (a shard's part name) of the output: shards of one output run side
    /// by side, each part once.
    fn for_part(&self, part: Option<&str>) -> LeasePlace {
        let mut place = self.clone();
        if let Some(part) = part {
            place.key = format!("{}.{part}", self.key);
        }
        place
    }

    fn location(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }
}

/// What a lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's run, unique across machines and restarts.
    pub run: String,
    /// When the lease ends unless renewed, in seconds since 1970.
    pub expires: u64,
}

impl LeaseRecord {
    fn ours(run: &str) -> LeaseRecord {
        LeaseRecord {
            host: hostname(),
            pid: std::process::id(),
            run: run.to_string(),
            expires: now_secs() + TERM.as_secs(),
        }
    }

    fn expired(&self) -> bool {
        self.expires <= now_secs()
    }

    /// The holder as messages name it.
    fn describe(&self, place: &LeasePlace) -> String {
        let until = UNIX_EPOCH + Duration::from_secs(self.expires);
        format!(
            "pid {} on {}, run {}, by its lease {} until {} unless renewed",
            self.pid,
            self.host,
            self.run,
            place.location(),
            humantime::format_rfc3339_seconds(until)
        )
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lease serializes")
    }
}

/// This machine's host name, as lock files and leases name their holders.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A held lease, renewed until released. Released on drop too, as well as a task spawned then
/// can; [`Lease::release`] waits for it.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    place: LeasePlace,
    run: String,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    /// Stops renewing and removes the lease if it is still this run's.
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        release(self.store.clone(), self.place.clone(), self.run.clone()).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(release(
                    self.store.clone(),
                    self.place.clone(),
                    self.run.clone(),
                ));
            }
        }
    }
}

async fn release(store: Arc<dyn ObjectStore>, place: LeasePlace, run: String) {
    // A lease another run took over after this one's expired is theirs to remove.
    if let Ok(Some(record)) = read(store.as_ref(), &place).await {
        if record.run == run {
            if let Err(err) = store.delete(&place.key).await {
                tracing::warn!(
                    "cannot remove the lease {}: {err}; it expires by itself",
                    place.location()
                );
            }
        }
    }
}

/// The lease at `place`: `None` when there is none, an error naming it when it cannot be read
/// as one.
async fn read(store: &dyn ObjectStore, place: &LeasePlace) -> Result<Option<LeaseRecord>> {
    let Some(bytes) = store
        .get(&place.key, LEASE_CAP)
        .await
        .map_err(|e| Error::output_caused(place.location(), e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::output(
            place.location(),
            format!(
                "this is not an oar-tiles lease ({e}); remove it once no oar-tiles job writes \
                 the output"
            ),
        )
    })
}

/// How many runs a lock file's holder line names: its holder and the runs before it that were
/// killed while holding the lock (a run killed while taking over a killed run's lease leaves that
/// lease behind, under the earlier run's name).
const RUNS_NAMED: usize = 8;

/// How a lock file's holder line ends: with `run`, which holds it, and the runs its last holder's
/// line (`previous`) named, so a later holder of the lock knows whose leases were left behind.
pub(super) fn holder_tag(run: &str, previous: &str) -> String {
    let mut runs = vec![run];
    runs.extend(runs_in(previous).into_iter().take(RUNS_NAMED - 1));
    format!(", runs {}", runs.join(" "))
}

/// The runs a lock file's holder line names.
fn runs_in(holder: &str) -> Vec<&str> {
    holder
        .trim_end()
        .rsplit_once(", runs ")
        .map_or_else(Vec::new, |(_, runs)| runs.split_whitespace().collect())
}

/// A new run id: this process and the moment it asked, so two machines' runs never share one.
pub(super) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// What one attempt at the lease found.
enum Attempt {
    Taken,
    HeldBy(LeaseRecord),
    /// Another run's takeover of the expired lease is under way (or its taker died): what holds
    /// it, as messages say it.
    Marked(String),
    Again,
}

/// Takes the lease of `output` (of its `part`) at `place` for the run `run`, waiting for a live
/// holder with `wait`, else failing naming it; a wait ends with `Error::Stopped` once `stopped`
/// resolves. `previous` is what this machine's lock file said of its last holder: a lease of a
/// run named there is stale whatever its expiry, since that run no longer holds the lock this one
/// just took (it was killed), so a run started again at once need not wait out its term.
pub async fn take<F>(
    place: &LeasePlace,
    output: &str,
    (part, run, previous): (Option<&str>, &str, &str),
    wait: bool,
    mut stopped: Pin<&mut F>,
) -> Result<Lease>
where
    F: std::future::Future<Output = &'static str>,
{
    let place = place.for_part(part);
    let store = crate::store::open(&place.bucket, &place.store_settings)
        .await
        .map_err(|e| Error::output_caused(place.location(), e))?;
    // A missing bucket must fail the run as it always did: some stores (s3s-fs) create a bucket
    // on a PUT into it where the real service answers NoSuchBucket, and a listing refuses on all.
    store
        .holds_any(&place.key)
        .await
        .map_err(|e| Error::output_caused(place.location(), e))?;
    let run = run.to_string();
    let mut announced = false;
    let mut vanished = 0;
    let mut marked = 0;
    loop {
        let holder =
            match attempt(store.as_ref(), &place, &run, previous).await? {
                Attempt::Taken => break,
                // A store that says a lease is there yet shows none (a missing bucket can) must not
                // be asked again and again at once.
                Attempt::Again if vanished < 5 => {
                    vanished += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Attempt::Again => return Err(Error::output(
                    place.location(),
                    "the store refuses to create the lease yet shows none there: check that the \
                     bucket or container exists and that the credentials may write it",
                )),
                // Another run's takeover ends within a few requests: only one that outlasts a few
                // looks holds the lease.
                Attempt::Marked(_) if marked < 5 => {
                    marked += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Attempt::Marked(holder) => holder,
                Attempt::HeldBy(holder) => holder.describe(&place),
            };
        // The store shows a holder: a lease that vanishes later is a release, not a missing bucket.
        vanished = 0;
        if !wait {
            return Err(Error::Locked {
                output: output.to_string(),
                holder,
            });
        }
        if !announced {
            tracing::info!("waiting for {output}, locked by {holder}");
            announced = true;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            signal = &mut stopped => {
                tracing::warn!("{signal} received while waiting for {output}: stopping");
                return Err(Error::Stopped { signal });
            }
        }
    }
    let renewer = tokio::spawn(renew(store.clone(), place.clone(), run.clone()));
    Ok(Lease {
        store,
        place,
        run,
        renewer,
        released: false,
    })
}

/// Creates the lease, or finds whose it is and takes it over once expired.
async fn attempt(
    store: &dyn ObjectStore,
    place: &LeasePlace,
    run: &str,
    previous: &str,
) -> Result<Attempt> {
    let ours = LeaseRecord::ours(run);
    let headers = ObjectHeaders {
        content_type: "application/json",
        ..ObjectHeaders::default()
    };
    let created = store
        .put(&place.key, ours.bytes(), headers, true)
        .await
        .map_err(|e| Error::output_caused(place.location(), e))?;
    if created != Put::Exists {
        return Ok(Attempt::Taken);
    }
    // Released between the create and this read: try again.
    let Some(held) = read(store, place).await? else {
        return Ok(Attempt::Again);
    };
    let left_by_killed_run = runs_in(previous).contains(&held.run.as_str());
    if !held.expired() && !left_by_killed_run {
        return Ok(Attempt::HeldBy(held));
    }
    // Of the jobs that found this expired lease, the one that creates its marker takes it over.
    let marker = format!("{}.taken-over.{}-{}", place.key, held.run, held.expires);
    let marker_place = || format!("{}/{marker}", place.bucket);
    let won = store
        .put(&marker, run.as_bytes().to_vec(), headers, true)
        .await
        .map_err(|e| Error::output_caused(marker_place(), e))?;
    if won == Put::Exists {
        return marked(store, place, &marker, &held, previous).await;
    }
    let still = read(store, place).await?;
    let outcome = if still.as_ref() == Some(&held) {
        let why = if left_by_killed_run {
            "left by a run killed on this machine"
        } else {
            "expired"
        };
        tracing::warn!("taking over the {why} lease of {}", held.describe(place));
        store
            .put(&place.key, ours.bytes(), headers, false)
            .await
            .map_err(|e| Error::output_caused(place.location(), e))?;
        Attempt::Taken
    } else {
        Attempt::Again
    };
    // The marker has done its work: a late taker's marker names a lease no longer there.
    let _ = store.delete(&marker).await;
    Ok(outcome)
}

/// What a takeover `marker` another run created for the expired lease `held` means for this one.
/// A run killed between its marker and taking the lease left the marker behind, which would refuse
/// every later taker; such a marker is removed and the race run again. Its taker is known dead when
/// this machine's lock file (`previous`) names it; a taker of another machine is taken for dead
/// once the lease has been expired for a further full [`TERM`]: a live taker takes the lease one
/// read after its marker, and one stalled for a term would lose even a lease it held.
async fn marked(
    store: &dyn ObjectStore,
    place: &LeasePlace,
    marker: &str,
    held: &LeaseRecord,
    previous: &str,
) -> Result<Attempt> {
    let marker_place = format!("{}/{marker}", place.bucket);
    let Some(taker) = store
        .get(marker, LEASE_CAP)
        .await
        .map_err(|e| Error::output_caused(&marker_place, e))?
    else {
        // Its taker finished (or gave up) between the create and this read: race again.
        return Ok(Attempt::Again);
    };
    let taker = String::from_utf8_lossy(&taker).trim().to_string();
    let left_after = held.expires + TERM.as_secs();
    let why = if runs_in(previous).contains(&taker.as_str()) {
        "left by a run killed on this machine while it took the lease over".to_string()
    } else if left_after <= now_secs() {
        format!(
            "left by run {taker}, which began taking over the lease of run {} (expired at {}) and \
             had not taken it a full term ({}) later: it was killed or lost its machine",
            held.run,
            rfc3339(held.expires),
            humantime::format_duration(TERM)
        )
    } else {
        return Ok(Attempt::Marked(format!(
            "run {taker} is taking over the expired lease {} of run {}, by its marker \
             {marker_place}; if no run {taker} is alive on any machine, remove that object, or \
             run again after {}, when it counts as left behind",
            place.location(),
            held.run,
            rfc3339(left_after)
        )));
    };
    tracing::warn!("removing {marker_place}, {why}");
    store
        .delete(marker)
        .await
        .map_err(|e| Error::output_caused(&marker_place, e))?;
    Ok(Attempt::Again)
}

/// `secs` after 1970 as messages write a moment.
fn rfc3339(secs: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Renews the lease until the task is aborted; a lease found taken over is left to its new
/// holder, loudly.
async fn renew(store: Arc<dyn ObjectStore>, place: LeasePlace, run: String) {
    let headers = ObjectHeaders {
        content_type: "application/json",
        ..ObjectHeaders::default()
    };
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match read(store.as_ref(), &place).await {
            Ok(Some(record)) if record.run == run => {}
            Ok(found) => {
                let holder = found.map_or("nobody".into(), |r| r.describe(&place));
                tracing::error!(
                    "the lease {} is no longer this run's (it is held by {holder}): another \
                     machine may write the output at the same time; run `seed --dirty` again \
                     once both are done",
                    place.location()
                );
                return;
            }
            Err(err) => {
                tracing::warn!("cannot renew {}: {err}; trying again", place.location());
                continue;
            }
        }
        let renewed = LeaseRecord::ours(&run).bytes();
        if let Err(err) = store.put(&place.key, renewed, headers, false).await {
            tracing::warn!("cannot renew {}: {err}; trying again", place.location());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_line_names_the_runs_killed_before_its_holder() {
        let first = format!("pid 1 on a since then{}", holder_tag("r1", ""));
        let second = format!("pid 2 on a since then{}", holder_tag("r2", &first));
        assert_eq!(runs_in(&second), ["r2", "r1"]);
        let mut line = second;
        for n in 3..20 {
            line = format!("pid {n} on a{}", holder_tag(&format!("r{n}"), &line));
        }
        assert_eq!(runs_in(&line).len(), RUNS_NAMED);
        assert_eq!(runs_in(&line)[0], "r19");
        assert!(runs_in("pid 7 on a since then").is_empty());
    }

    #[test]
    fn a_lease_names_its_holder_and_where_it_lies() {
        let place = LeasePlace {
            bucket: Bucket {
                scheme: crate::config::Scheme::Gcs,
                name: "maps".into(),
            },
            key: "tiles/.oar-tiles/lock".into(),
            store_settings: StoreConfig::default(),
        };
        let record = LeaseRecord {
            host: "builder".into(),
            pid: 42,
            run: "42-1".into(),
            expires: 0,
        };
        let said = record.describe(&place.for_part(Some("part-1-of-2")));
        assert!(said.contains("pid 42 on builder"), "{said}");
        assert!(said.contains("tiles/.oar-tiles/lock.part-1-of-2"), "{said}");
        assert!(record.expired());
    }
}
