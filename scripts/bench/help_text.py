"""The text `scripts/bench.sh --help` prints: the header comment of scripts/bench.sh as it was,
with every option and section (kept apart from bench.cli, which parses the options)."""

# Printed to stderr, as bench.sh did.
HELP = """\
Benchmark `oar-tiles seed` end to end against what PostGIS alone needs to
render the same tiles, an incremental reseed against a full seed, and
clustered against unclustered low zooms.

  scripts/bench.sh [--sections LIST] [--rows N] [--zoom A-B] [--concurrency N]
                   [--reload] [--baseline-sessions N]
                   [--reseed-rows N] [--reseed-changes N]
                   [--cluster-rows LIST] [--cluster-zoom A-B]
                   [--cluster-position centroid|cell-center]
                   [--capture-rounds N] [--growth-rows LIST]
                   [--partition-by COLUMN] [--partition-zoom A-B]
                   [--partition-rounds N] [--shard-rows N] [--shard-runs N]
                   [--capacity-rows LIST] [--baseline-bin PATH]
                   [--polygon-world-zoom A-B] [--polygon-nyc-zoom A-B]
                   [--generalise-nyc-zoom A-B] [--generalise-rounds N]
                   [--moved-zoom A-B] [--subtrees-zoom A-B]
                   [--import-rows N] [--import-zoom A-B]

  --sections LIST  comma-separated sections to run, in this order (default
                   all): main, reseed, cluster, tls, pmtiles, capture, growth,
                   watch, edge, partitions, watch-partitions, shards,
                   validate, capacity; polygons, generalise, moved, subtrees,
                   changelog, import and pmtiles-in-place run only when listed
  --rows N         facilities in the sample of the main section (default
                   100000; 1000000 is the stress figure behind the 256 MB
                   peak RSS target); also the default of --cluster-rows
  --zoom A-B       zoom levels the main section seeds (default 0-14)
  --concurrency N  passed to every `seed --concurrency` (default: the tool's
                   own, i.e. database.pool_size of sample-config.toml)
  --reload         reload the samples even if they look current
  --baseline-sessions N
                   sessions the server-side baseline splits the tiles
                   over, one statement each (default: the seed's
                   concurrency, capped at the number of cores). It runs
                   twice: counting the MVT bytes server-side, and shipping
                   them to a client (a binary COPY per session read by
                   psql); the target ratio (>= 0.85) is against the
                   latter, as issue 14 defines it. The ratio against one
                   statement in one session is printed too, and the
                   PostgreSQL CPU of each (its backends' user+sys)
  --reseed-rows N  facilities in the sample of the reseed section (default
                   100000)
  --reseed-changes N
                   changes applied before `seed --dirty` (default 100)
  --cluster-rows LIST
                   comma-separated sample sizes of the clustering section,
                   e.g. 100000,1000000 (default: --rows)
  --cluster-zoom A-B
                   zooms the clustering section seeds (default 0-11: the
                   layer is clustered up to zoom 11 and deeper tiles are the
                   same either way)
  --cluster-position P
                   cluster_position of the clustered variant (default
                   centroid)
  --capture-rounds N
                   rounds of each write in the capture section (default 5)
  --growth-rows LIST
                   comma-separated sample sizes of the growth section
                   (default 100000,1000000; add 10000000 for the 10M figure,
                   which loads a 10M-row sample with set-based SQL first)
  --partition-by COLUMN
                   column the partitions section partitions the sample by
                   (default contributor_ids: 2,000 overlapping values;
                   country_code: 42 values, one a row)
  --partition-zoom A-B
                   zooms of the partitions and watch-partitions sections
                   (default 0-14, the sample config's; on 2,000 values
                   most of a small partition's cost is fixed (its file, the
                   round trips of its walk), so fewer zooms barely shorten
                   it: 0-8 takes 56 s where 0-14 takes 67)
  --partition-rounds N
                   rounds of the partitioned seed in the partitions section
                   (default 1; the whole tileset always runs 3)
  --shard-rows N   facilities in the sample of the shards section (default
                   1000000)
  --shard-runs N   runs of each planner's real shards in the shards section,
                   the planners alternated (default 3; 1 is quicker): a
                   shard's wall time varies by 3-5% (sd) from run to run on 2
                   shared cores, which alone puts the slowest of 16 equal
                   shards at about 1.05-1.09 x their mean, so the balance is
                   also read on each shard's median wall time
  --capacity-rows LIST
                   comma-separated sample sizes of the capacity section
                   (default 100000,1000000)
  --baseline-bin PATH
                   another oar-tiles binary (an earlier release, say) the
                   capacity section also measures, alternating with this
                   one, as the baseline of the tool's own CPU per tile;
                   the shards section runs its planner and shards beside
                   this one's, alternated (today's planner: build main's
                   binary before the change and pass it here)
  --polygon-world-zoom A-B, --polygon-nyc-zoom A-B
                   zooms the polygons section seeds the countries and the
                   boroughs at (default 0-8 and 0-14); the first is also
                   generalise's world zooms
  --generalise-nyc-zoom A-B
                   zooms the generalise section seeds the boroughs at
                   (default 0-16)
  --generalise-rounds N
                   timed rounds of the generalise section (default 3; its
                   nyc seed takes minutes per round, so 1 is quicker)
  --moved-zoom A-B zooms of the moved section (default 0-14)
  --import-rows N  facilities in the sample of the import section, every
                   one moved by its statement (default 100000; 10000 for a
                   quick run)
  --import-zoom A-B
                   zooms of the import section's outputs (default 0-14)
  --subtrees-zoom A-B
                   zooms of the subtrees section (default 0-14: about 45 min
                   on 2 cores; its baseline stops at zoom 11 at most)

Sections:
  main     seed (--zoom) with the layer unclustered, next to PostGIS rendering
           the same tiles server-side (the baseline renders points, so the
           layer must be unclustered for the tiles to match); throughput,
           peak RSS, ratios, and the CPU of the tool and of PostgreSQL in the
           seed and in the shipped baseline.
  reseed   on the --reseed-rows sample with the layer clustered
           (cluster_maxzoom 11, cluster_cell 512): installs change capture in
           its own schema (bench_changes), full seed z0-14, applies
           --reseed-changes deterministic changes in one transaction
           (scripts/bench_reseed_changes.sql), `seed --dirty` (timed), the
           five reseeds with no changes (timed: target <= 50 ms), then the
           same reseed of copies of the output over z0-5 and z6-14 alone
           (where the time goes), a floor (PostGIS alone rendering the
           changed tiles above cluster_maxzoom, and zlib compressing every
           changed tile: what any reseed must spend), and a full seed of the changed data that
           aggregates clusters from rows (not from the maintained cell
           tables) to check the reseed against; then uninstalls change
           capture and reloads the sample.
  cluster  per --cluster-rows size, seeds --cluster-zoom clustered and
           unclustered and prints per zoom the stored tile sizes (median,
           p99, max), render times and tiles over the size budget.
  capture  what change capture costs the application that writes the data:
           on a copy of the 100k sample (bench_capture.facilities) with
           `changes install`ed, 20,000-row UPDATEs (geometry moved, name,
           a rendered integer, a column no layer renders), a 20,000-row
           INSERT and DELETE, and 2,000 single-row UPDATEs, each timed inside
           the server with the triggers disabled and enabled, and with the
           first design's row trigger alone and with the statement trigger
           that notified watch before (alternating, median of
           --capture-rounds, every write rolled back); prints the overhead
           (target: <= +25% on bulk statements, single-row no worse).
  growth   how cost grows with the data: per --growth-rows size, the time to
           load the sample (set-based SQL), then a seed of the sample config
           (clustered), z0-14; prints wall time, non-empty tiles, tiles/s,
           wall time per tile relative to the smallest size (growth no faster
           than the tiles: <= about 1), peak RSS (target <= 256 MB) and the
           table's size with its indexes; then, per tile, the stored bytes and
           the CPU time of the tool and of PostgreSQL's backends. Then, per
           size, with change capture: full seeds into a tree and an MBTiles
           file, one facility renamed, and `seed --dirty` into each; prints
           the run's wall time, the agg_tiles_hash read after the purges, the
           time until the purges went out, and that against the smallest
           size's (target <= 1.2x); the rename is undone afterwards.
  watch    on the --reseed-rows sample, clustered: change capture, a full
           seed, then `oar-tiles watch` with its default settings while
           300 single-row changes are committed at 10 per second (one
           transaction each); prints the change-to-tile latency p50, p95
           and max (from each change's commit to its cycle's output being
           complete), checks the output against a full seed of the changed
           data, and reloads the sample.
  live     on the --reseed-rows sample, unclustered, partition, clustered (LIVE_LAYOUTS:
           "partition": unclustered, partitioned by country, the page on the largest
           country's partition and its own feed): a full seed into a tree with a
           changes feed, `serve` over it behind Varnish (keeping every answer
           for a day, the feed's head too), `watch` purging it per tile; the
           preview page open through the cache in headless Chromium; 24
           facilities renamed one at a time (LIVE_CHANGES), each timed from its
           commit to the first frame drawing the new name at z14.5, without a
           reload (target p95 <= 1.5 s); the feed's bytes per change, and the
           requests an idle open map makes per minute (LIVE_IDLE_SECONDS).
           The cache hands browsers LIVE_BROWSER_CACHE_CONTROL (default
           "public, max-age=86400", an origin that lets browsers keep tiles a
           day) with every answer; LIVE_EVENTS=1 has the page
           follow watch's Server-Sent Events (serve --watch). LIVE_RATES
           (say "2 10") times the renames again beside a stream of other
           renames across the table at each rate, for LIVE_SECONDS (60) at
           least, and reads watch's cycle lag per third of the stream
           (flat, or growing: a backlog); targets p95 <= 1.5 s one at a
           time, <= 2 s beside 10 commits a second (issue 85).
           LIVE_CDN=cloudfront: Varnish keyed on the query string and
           never purged, the purges going to moto's CloudFront whose
           invalidations take LIVE_CF_PROPAGATION s (30), the feed
           versioned. With --baseline-bin, that binary's watcher in the
           same run, after this build's.
  live-edge  (not in the default list) on the --reseed-rows sample,
           unclustered then clustered (LIVE_EDGE_LAYOUTS): a full seed into a
           tree, `serve` over it behind Varnish (every tile kept a day, PURGE
           per tile), `watch` with its defaults; facilities renamed one at a
           time at 2 and 10 commits a second (LIVE_EDGE_RATES) for 20 s
           (LIVE_EDGE_SECONDS), each timed from its commit until both its z14
           and z10 tiles at the edge hold the new name (target p95 <= 0.8 s at
           2/s unclustered); with --baseline-bin the same renames again under
           that binary's watcher, in the same run.
  edge     on the --reseed-rows sample, clustered: a full seed into a tree,
           `oar-tiles serve` over it as the origin and Debian's Varnish in
           front keeping every tile for a day (scripts/varnish.sh), warmed
           with the whole pyramid; then `watch` purging Varnish (PURGE per
           tile) and checking 8 purged tiles per cycle through it, while 300
           single-row changes are committed at 10 per second; prints the
           commit-to-edge latency p50, p95 and max (from each change's commit
           to the cache serving its cycle's sampled tiles as the origin holds
           them; target p95 <= 3 s) beside the commit-to-origin one, and purge
           requests per change. Then 90 facilities moved in one transaction
           and `seed --dirty --dry-run` with a CloudFront target: the paths
           before and after folding, and their price (no request is sent).
           Then (section edge-zooms, also run alone) the same sample
           unclustered, whose low zooms hold every facility, behind Varnish
           with watch purging per tile: EDGE_ZOOM_CHANGES (20) renames one at
           a time, each timed from just before its commit until Varnish and
           the origin serve new bytes for its tile at z10-z14 (target: edge
           p95 <= 1.5 s), with those zooms' p50/p95/max.
           Then the same with CloudFront as it is (section edge-cloudfront,
           also run alone): moto's server extended so that an invalidation is
           in progress for EDGE_CF_PROPAGATION s (30) and the quotas in flight
           hold, on the --reseed-rows sample unclustered into a tree: a full
           seed's invalidations, price and whether seed waited; a
           EDGE_CF_UPDATE-row (6,000) UPDATE's price; `watch` at EDGE_CF_RATE
           (10) changes a second for EDGE_CF_SECONDS (60): changes missed,
           cycle time against the same run without a CDN, commit →
           invalidation completed p50/p95, the projected daily price; then the
           same with budget_per_day = 10.
  partitions
           on a copy of the --rows sample with a column contributor_ids int[]
           (bench_<rows>_contributors.facilities: each row belongs to 1-4 of
           2,000 contributors, Zipf-like by a hash of its id, from about
           15,000 rows for the largest to a few for the smallest; a GIN index
           on it), the sample config (clustered, --partition-zoom) seeded
           whole (three rounds) and partitioned by --partition-by (one
           MBTiles per value; --partition-rounds rounds), alternately;
           prints for each the tiles written, median wall time, wall time
           per tile written and peak RSS, the ratio of the per-tile times
           (target <= 1.5) and the partitioned seed's peak RSS (target <=
           256 MB), the partitions and their sizes, and the time each
           partition costs beyond the whole tileset's per-tile time. About
           2 minutes at 0-14 on 2 cores (the partitioned seed 67 s; 4.4
           minutes before partitions had row sets and ran side by side).
  watch-partitions
           on the same copy, partitioned by --partition-by, --partition-zoom:
           change capture, a full partitioned seed, then `oar-tiles watch`
           while 300 single-row changes are committed at 10 per second
           (moves, inserts, deletes, and facilities gaining or losing a
           contributor); prints the change-to-tile latency p50, p95 and max
           (target p95 <= 3 s) and the partitions rendered per cycle (from
           the watcher's debug log), checks each partition against a fresh
           partitioned seed of the changed data, and drops the modified
           copy. Fails at the watch start (exit 3, the watcher's error
           shown) while `watch` refuses partitioned tilesets.
  shards   (about 15 minutes at 1M rows on 2 cores when idle): on the
           --shard-rows sample, z0-14, with the sample config clustered as
           shipped and unclustered (SHARDS_VARIANTS, default "clustered
           unclustered"): per variant, `shard-plan --shards N
           --dry-run` for N = 4, 16 and 64 (the time the plan took, the split
           zoom, each shard's estimated render time: min / mean / max,
           max/mean, and the estimated speed-up with N replicas, total /
           heaviest shard; the zooms above the split zoom, the plan's top,
           are weighed into the shard that renders them); then a full seed
           (the baseline, after a discarded z0-2 warm-up), its dearest tile
           seeded alone three times (its zoom only, a box inside it; the
           median is the floor) and, for N = 4 and
           16, the stored plan's shards one after another (`seed --shard
           I/N`) and `merge`, with this binary's planner ("new") and, given
           --baseline-bin, the baseline's ("old") alternated in the same run;
           the shards run --shard-runs times (the merge once).
           Prints per shard its wall time, its seeding time and the rest
           (start-up, finish), tool CPU, PG CPU, tiles, tiles/s, bytes,
           render time (all zooms, and above the split zoom), planned and
           real share; the slowest unit over max(mean of the units, the
           dearest tile seeded alone) on wall times and on seeding times
           (target <= 1.10) beside the plan's, and on wall times over the
           dearest tile's render alone (the full seed's largest
           render_ms_max);
           the shards' total and the heaviest shard against the full seed;
           checks that each merged file equals the full seed tile for tile
           (exit 3 if not); and, from the new planner's 16 shards, the
           shards a 100M-point registry needs for z0-14 in 10 minutes on one
           32-core PostgreSQL (tiles and PG CPU scaled linearly in rows from
           this sample: a rough figure). Last, the cost model's
           coefficients fitted on the full seeds' per-zoom render times
           (scripts/bench/sections/shards_report.py), beside those in
           src/plan/shard/cost.rs.
  capacity how many database cores one oar-tiles process can keep busy: per
           --capacity-rows size, the sample unclustered (--zoom), a
           discarded warm-up seed, then the measured seed run by
           scripts/thread_cpu.py, which reads every thread's CPU from
           /proc/PID/task; the CPU of PostgreSQL's backends that served it;
           and the shipped baseline (the same tiles rendered server-side and
           copied to a client, split over as many sessions as main's) for
           PostgreSQL's own CPU per tile. Prints per thread role (render
           driver, connections, writer, blocking pool) the CPU per tile, the
           capacity (PostgreSQL's CPU / the busiest thread's; target >= 16),
           PostgreSQL's CPU per tile against the baseline's (target <= 1.10)
           and, with --baseline-bin, the tool's CPU per tile against that
           binary's (target <= +10%), checking both wrote the same tiles.
           About 2 minutes at 100k, 12 at 1M (2 cores).
  polygons real polygons and lines, with and without generalisation:
           Natural Earth's 177 countries and their boundaries as lines
           (tileset world, --polygon-world-zoom) and New York's five
           boroughs, the heaviest polygons (Queens alone 29,000 vertices,
           stored in EPSG:2263), and their outlines (tileset nyc,
           --polygon-nyc-zoom), from scripts/geodata.sh, loaded with ogr2ogr
           into a schema of the run's own. Each tileset is seeded with the
           layers' default generalisation and with `simplify = 0, min_area =
           0, min_length = 0` (the baseline), alternately, three rounds after
           a discarded warm-up; prints per tileset and variant the median
           wall time, peak RSS, tiles and bytes, and per zoom the tiles, bytes
           and the largest tile (z/x/y and bytes). Not in the default list.
  generalise
           what generalisation and projected sources cost (issue 46), on the
           polygons section's data: the world (--polygon-world-zoom) seeded
           with the default generalisation and with `simplify = 0, min_area
           = 0, min_length = 0`, and their median wall time ratio (target
           <= 1.10); the boroughs and outlines (EPSG:2263) at
           --generalise-nyc-zoom with the default generalisation, in tiles
           per second. With --baseline-bin, the same seeds with that binary
           in the same rounds (alternating), its figures beside these, and
           each pair of outputs compared tile by tile (uncompressed MVT; any
           difference fails the run). Not in the default list.
  moved    what a geometry-only edit costs (issue 46): Natural Earth's
           Russia (countries and their boundaries as lines) with one border
           vertex moved north by 0.01 degrees (about 1.1 km). Over a region
           of 3 x 2 degrees around the vertex at --moved-zoom: a full seed,
           the move's `seed --dirty` (tiles rendered, wall time), a second
           full seed compared with it tile by tile (any difference fails the
           run), and, as the baseline in the same run, a rename of Russia,
           which renders every tile of its shapes as any edit did before.
           Over the whole world, the move's dry run (tiles planned) against
           the tiles Russia's area covers at those zooms (its area in
           Web-Mercator tiles: target <= 1%). Not in the default list.
  subtrees what an attribute edit of a huge polygon costs past listed_tiles
           (issue 46): Russia renamed, `seed --dirty` over the whole world.
           Baseline in the same run, at the zooms up to 11: the
           reseed listing every dirty tile (listed_tiles large) beside the
           one walking subtrees (listed_tiles = 20000), compared tile by
           tile (any difference fails the run). Then at --subtrees-zoom with
           the default listed_tiles: tiles rendered and written, wall time,
           peak RSS (target <= 256 MB), against the tiles Russia's area
           covers. The baseline's outputs start from a full seed of the world
           at those zooms; the target's from a seed over a speck of ocean,
           which records its watermark. Not in the default list.
  changelog reading the change log of bulk statements (issue 62): a copy of
           the 144,563-row sample (schema bench_changelog) under change
           capture, a full seed of a z0-12 tree (clustered as the sample
           config), then one UPDATE of the names of 1,994 rows (Sri Lanka),
           17,569 (Viet Nam and Turkey) and 100,000, and `seed --dirty`:
           its change-log read (the time its log line reports) per 1,000
           changed rows, and its whole run against the full seed. Baseline in
           the same run, before each reseed: the read as oar-tiles sent it
           before the fix (scripts/bench_changelog_before.sql) by psql,
           cancelled after 300 s. Not in the default list.
  import   a contributor's import end to end (issue 76): the --import-rows
           sample under change capture, clustered, --import-zoom, three trees
           with a changes feed: no CDN, behind Varnish (PURGE per tile) and
           behind the tests' Cloudflare stand-in at Free's limits
           (tests/standins/cloudflare.rs). Each seeded in full, then one
           UPDATE moving every facility and `seed --dirty` of each: the
           change-log read, the reseed against the full seed, when the last
           purge was taken, commit -> the feed's last segment; then the live
           section's commit -> drawn (unclustered, on the --reseed-rows
           sample; IMPORT_LIVE=0 skips it).
           With --baseline-bin, all of it again with that binary. Not in the
           default list.
  pmtiles-in-place
           (issue 88; not in the default list) the main section's sample
           (--rows, --zoom, unclustered), a copy per build under change
           capture, seeded into a PMTiles object in S3 (moto:
           OAR_TILES_TEST_MOTO, else one of its own) through a byte-counting
           proxy; then renames of 1, 1,000 and 100,000 facilities (at most
           --rows), each followed by `seed --dirty`: bytes sent to the store
           and received from it, wall time, the archive's size and clustered
           flag after; with --baseline-bin, the same for that binary on a
           bucket of its own. Then a 1-row reseed from an empty cache (target:
           receives <= 10% of the archive), and 50 successive 10-row reseeds
           of this build's archive against a fresh seed of the same data
           (targets: each sends <= 5% of the archive; the archive stays <= 1.5
           x the fresh one, or was compacted); INPLACE_ROUNDS sets how many,
           INPLACE_LAYOUT=clustered seeds the clustered variant instead.

Every config is derived from sample-config.toml, pointed at the benchmark
schema, with clustering set explicitly per variant whatever the sample config
says, and with `[changes] schema = "bench_changes"`.

The samples live in schemas of their own, bench_<rows>, so benchmarking never
touches public.facilities that tests and demos use; each is (re)loaded only
when missing, of the wrong size, or marked as modified by an unfinished
reseed section. This is a benchmark, not a test: it reports timings and
asserts nothing about them. It fails (exit 3, after all sections) only if
something breaks or a cross-check fails: the baseline does not render the
same set of tiles (the ratio would be meaningless), the reseeded output
differs from a full seed of the same data, or the tiles over budget disagree
with the summary. Other work on the machine skews the figures, so each
section shows the load average around its measurements. A run with the reseed
section (which rewrites a sample) waits for other benchmark runs and they
wait for it; other runs may overlap.
"""
