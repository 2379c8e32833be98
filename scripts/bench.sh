#!/usr/bin/env bash
# Benchmark `oar-tiles seed` end to end against what PostGIS alone needs to
# render the same tiles, an incremental reseed against a full seed, and
# clustered against unclustered low zooms.
#
#   scripts/bench.sh [--sections LIST] [--rows N] [--zoom A-B] [--concurrency N]
#                    [--reload] [--baseline-sessions N]
#                    [--reseed-rows N] [--reseed-changes N]
#                    [--cluster-rows LIST] [--cluster-zoom A-B]
#                    [--cluster-position centroid|cell-center]
#                    [--capture-rounds N] [--growth-rows LIST]
#                    [--partition-by COLUMN] [--partition-zoom A-B]
#                    [--partition-rounds N] [--shard-rows N]
#                    [--capacity-rows LIST] [--baseline-bin PATH]
#                    [--polygon-world-zoom A-B] [--polygon-nyc-zoom A-B]
#                    [--generalise-nyc-zoom A-B] [--generalise-rounds N]
#                    [--moved-zoom A-B] [--subtrees-zoom A-B]
#
#   --sections LIST  comma-separated sections to run, in this order (default
#                    all): main, reseed, cluster, tls, pmtiles, capture, growth,
#                    watch, edge, partitions, watch-partitions, shards,
#                    validate, capacity; polygons, generalise, moved, subtrees and
#                    changelog run only when listed
#   --rows N         facilities in the sample of the main section (default
#                    100000; 1000000 is the stress figure behind the 256 MB
#                    peak RSS target); also the default of --cluster-rows
#   --zoom A-B       zoom levels the main section seeds (default 0-14)
#   --concurrency N  passed to every `seed --concurrency` (default: the tool's
#                    own, i.e. database.pool_size of sample-config.toml)
#   --reload         reload the samples even if they look current
#   --baseline-sessions N
#                    sessions the server-side baseline splits the tiles
#                    over, one statement each (default: the seed's
#                    concurrency, capped at the number of cores). It runs
#                    twice: counting the MVT bytes server-side, and shipping
#                    them to a client (a binary COPY per session read by
#                    psql); the target ratio (>= 0.85) is against the
#                    latter, as issue 14 defines it. The ratio against one
#                    statement in one session is printed too, and the
#                    PostgreSQL CPU of each (its backends' user+sys)
#   --reseed-rows N  facilities in the sample of the reseed section (default
#                    100000)
#   --reseed-changes N
#                    changes applied before `seed --dirty` (default 100)
#   --cluster-rows LIST
#                    comma-separated sample sizes of the clustering section,
#                    e.g. 100000,1000000 (default: --rows)
#   --cluster-zoom A-B
#                    zooms the clustering section seeds (default 0-11: the
#                    layer is clustered up to zoom 11 and deeper tiles are the
#                    same either way)
#   --cluster-position P
#                    cluster_position of the clustered variant (default
#                    centroid)
#   --capture-rounds N
#                    rounds of each write in the capture section (default 5)
#   --growth-rows LIST
#                    comma-separated sample sizes of the growth section
#                    (default 100000,1000000; add 10000000 for the 10M figure,
#                    which loads a 10M-row sample with set-based SQL first)
#   --partition-by COLUMN
#                    column the partitions section partitions the sample by
#                    (default contributor_ids: 2,000 overlapping values;
#                    country_code: 42 values, one a row)
#   --partition-zoom A-B
#                    zooms of the partitions and watch-partitions sections
#                    (default 0-14, the sample config's; on 2,000 values
#                    most of a small partition's cost is fixed (its file, the
#                    round trips of its walk), so fewer zooms barely shorten
#                    it: 0-8 takes 56 s where 0-14 takes 67)
#   --partition-rounds N
#                    rounds of the partitioned seed in the partitions section
#                    (default 1; the whole tileset always runs 3)
#   --shard-rows N   facilities in the sample of the shards section (default
#                    1000000)
#   --capacity-rows LIST
#                    comma-separated sample sizes of the capacity section
#                    (default 100000,1000000)
#   --baseline-bin PATH
#                    another oar-tiles binary (an earlier release, say) the
#                    capacity section also measures, alternating with this
#                    one, as the baseline of the tool's own CPU per tile;
#                    the shards section runs its planner and shards beside
#                    this one's, alternated (today's planner: build main's
#                    binary before the change and pass it here)
#   --polygon-world-zoom A-B, --polygon-nyc-zoom A-B
#                    zooms the polygons section seeds the countries and the
#                    boroughs at (default 0-8 and 0-14); the first is also
#                    generalise's world zooms
#   --generalise-nyc-zoom A-B
#                    zooms the generalise section seeds the boroughs at
#                    (default 0-16)
#   --generalise-rounds N
#                    timed rounds of the generalise section (default 3; its
#                    nyc seed takes minutes per round, so 1 is quicker)
#   --moved-zoom A-B zooms of the moved section (default 0-14)
#   --subtrees-zoom A-B
#                    zooms of the subtrees section (default 0-14: about 45 min
#                    on 2 cores; its baseline stops at zoom 11 at most)
#
# Sections:
#   main     seed (--zoom) with the layer unclustered, next to PostGIS rendering
#            the same tiles server-side (the baseline renders points, so the
#            layer must be unclustered for the tiles to match); throughput,
#            peak RSS, ratios, and the CPU of the tool and of PostgreSQL in the
#            seed and in the shipped baseline.
#   reseed   on the --reseed-rows sample with the layer clustered
#            (cluster_maxzoom 11, cluster_cell 512): installs change capture in
#            its own schema (bench_changes), full seed z0-14, applies
#            --reseed-changes deterministic changes in one transaction
#            (scripts/bench_reseed_changes.sql), `seed --dirty` (timed), the
#            five reseeds with no changes (timed: target <= 50 ms), then the
#            same reseed of copies of the output over z0-5 and z6-14 alone
#            (where the time goes), a floor (PostGIS alone rendering the
#            changed tiles above cluster_maxzoom, and zlib compressing every
#            changed tile: what any reseed must spend), and a full seed of the changed data that
#            aggregates clusters from rows (not from the maintained cell
#            tables) to check the reseed against; then uninstalls change
#            capture and reloads the sample.
#   cluster  per --cluster-rows size, seeds --cluster-zoom clustered and
#            unclustered and prints per zoom the stored tile sizes (median,
#            p99, max), render times and tiles over the size budget.
#   capture  what change capture costs the application that writes the data:
#            on a copy of the 100k sample (bench_capture.facilities) with
#            `changes install`ed, 20,000-row UPDATEs (geometry moved, name,
#            a rendered integer, a column no layer renders), a 20,000-row
#            INSERT and DELETE, and 2,000 single-row UPDATEs, each timed inside
#            the server with the triggers disabled and enabled, and with the
#            first design's row trigger alone and with the statement trigger
#            that notified watch before (alternating, median of
#            --capture-rounds, every write rolled back); prints the overhead
#            (target: <= +25% on bulk statements, single-row no worse).
#   growth   how cost grows with the data: per --growth-rows size, the time to
#            load the sample (set-based SQL), then a seed of the sample config
#            (clustered), z0-14; prints wall time, non-empty tiles, tiles/s,
#            wall time per tile relative to the smallest size (growth no faster
#            than the tiles: <= about 1), peak RSS (target <= 256 MB) and the
#            table's size with its indexes; then, per tile, the stored bytes and
#            the CPU time of the tool and of PostgreSQL's backends. Then, per
#            size, with change capture: full seeds into a tree and an MBTiles
#            file, one facility renamed, and `seed --dirty` into each; prints
#            the run's wall time, the agg_tiles_hash read after the purges, the
#            time until the purges went out, and that against the smallest
#            size's (target <= 1.2x); the rename is undone afterwards.
#   watch    on the --reseed-rows sample, clustered: change capture, a full
#            seed, then `oar-tiles watch` with its default settings while
#            300 single-row changes are committed at 10 per second (one
#            transaction each); prints the change-to-tile latency p50, p95
#            and max (from each change's commit to its cycle's output being
#            complete), checks the output against a full seed of the changed
#            data, and reloads the sample.
#   live     on the --reseed-rows sample, unclustered then clustered (LIVE_LAYOUTS; also
#            "partition": unclustered, partitioned by country, the page on the largest
#            country's partition and its own feed): a full seed into a tree with a
#            changes feed, `serve` over it behind Varnish (keeping every answer
#            for a day, the feed's head too), `watch` purging it per tile; the
#            preview page open through the cache in headless Chromium; 24
#            facilities renamed one at a time (LIVE_CHANGES), each timed from its
#            commit to the first frame drawing the new name at z14.5, without a
#            reload (target p95 <= 3 s); the feed's bytes per change, and the
#            requests an idle open map makes per minute (LIVE_IDLE_SECONDS).
#            The cache hands browsers LIVE_BROWSER_CACHE_CONTROL (default
#            "public, max-age=86400", an origin that lets browsers keep tiles a
#            day) with every answer; LIVE_EVENTS=1 has the page
#            follow watch's Server-Sent Events (serve --watch).
#   edge     on the --reseed-rows sample, clustered: a full seed into a tree,
#            `oar-tiles serve` over it as the origin and Debian's Varnish in
#            front keeping every tile for a day (scripts/varnish.sh), warmed
#            with the whole pyramid; then `watch` purging Varnish (PURGE per
#            tile) and checking 8 purged tiles per cycle through it, while 300
#            single-row changes are committed at 10 per second; prints the
#            commit-to-edge latency p50, p95 and max (from each change's commit
#            to the cache serving its cycle's sampled tiles as the origin holds
#            them; target p95 <= 3 s) beside the commit-to-origin one, and purge
#            requests per change. Then 90 facilities moved in one transaction
#            and `seed --dirty --dry-run` with a CloudFront target: the paths
#            before and after folding, and their price (no request is sent).
#            Then (section edge-zooms, also run alone) the same sample
#            unclustered, whose low zooms hold every facility, behind Varnish
#            with watch purging per tile: EDGE_ZOOM_CHANGES (20) renames one at
#            a time, each timed from just before its commit until Varnish and
#            the origin serve new bytes for its tile at z10-z14 (target: edge
#            p95 <= 1.5 s), with those zooms' p50/p95/max.
#            Then the same with CloudFront as it is (section edge-cloudfront,
#            also run alone): moto's server extended so that an invalidation is
#            in progress for EDGE_CF_PROPAGATION s (30) and the quotas in flight
#            hold, on the --reseed-rows sample unclustered into a tree: a full
#            seed's invalidations, price and whether seed waited; a
#            EDGE_CF_UPDATE-row (6,000) UPDATE's price; `watch` at EDGE_CF_RATE
#            (10) changes a second for EDGE_CF_SECONDS (60): changes missed,
#            cycle time against the same run without a CDN, commit →
#            invalidation completed p50/p95, the projected daily price; then the
#            same with budget_per_day = 10.
#   partitions
#            on a copy of the --rows sample with a column contributor_ids int[]
#            (bench_<rows>_contributors.facilities: each row belongs to 1-4 of
#            2,000 contributors, Zipf-like by a hash of its id, from about
#            15,000 rows for the largest to a few for the smallest; a GIN index
#            on it), the sample config (clustered, --partition-zoom) seeded
#            whole (three rounds) and partitioned by --partition-by (one
#            MBTiles per value; --partition-rounds rounds), alternately;
#            prints for each the tiles written, median wall time, wall time
#            per tile written and peak RSS, the ratio of the per-tile times
#            (target <= 1.5) and the partitioned seed's peak RSS (target <=
#            256 MB), the partitions and their sizes, and the time each
#            partition costs beyond the whole tileset's per-tile time. About
#            2 minutes at 0-14 on 2 cores (the partitioned seed 67 s; 4.4
#            minutes before partitions had row sets and ran side by side).
#   watch-partitions
#            on the same copy, partitioned by --partition-by, --partition-zoom:
#            change capture, a full partitioned seed, then `oar-tiles watch`
#            while 300 single-row changes are committed at 10 per second
#            (moves, inserts, deletes, and facilities gaining or losing a
#            contributor); prints the change-to-tile latency p50, p95 and max
#            (target p95 <= 3 s) and the partitions rendered per cycle (from
#            the watcher's debug log), checks each partition against a fresh
#            partitioned seed of the changed data, and drops the modified
#            copy. Fails at the watch start (exit 3, the watcher's error
#            shown) while `watch` refuses partitioned tilesets.
#   shards   (about 15 minutes at 1M rows on 2 cores when idle): on the
#            --shard-rows sample, z0-14, with the sample config clustered as
#            shipped and unclustered: per variant, `shard-plan --shards N
#            --dry-run` for N = 4, 16 and 64 (the time the plan took, the split
#            zoom, each shard's estimated render time: min / mean / max,
#            max/mean, and the estimated speed-up with N replicas, total /
#            heaviest shard; the zooms above the split zoom, the plan's top,
#            are weighed into the shard that renders them); then a full seed
#            (the baseline, after a discarded z0-2 warm-up) and, for N = 4 and
#            16, the stored plan's shards one after another (`seed --shard
#            I/N`) and `merge`, with this binary's planner ("new") and, given
#            --baseline-bin, the baseline's ("old") alternated in the same run.
#            Prints per shard its wall time, its seeding time and the rest
#            (start-up, finish), tool CPU, PG CPU, tiles, tiles/s, bytes,
#            render time (all zooms, and above the split zoom), planned and
#            real share; the slowest unit over max(mean of the units, the
#            dearest tile: the full seed's largest render_ms_max) on wall
#            times and on seeding times (target <= 1.10) beside the plan's;
#            the shards' total and the heaviest shard against the full seed;
#            checks that each merged file equals the full seed tile for tile
#            (exit 3 if not); and, from the new planner's 16 shards, the
#            shards a 100M-point registry needs for z0-14 in 10 minutes on one
#            32-core PostgreSQL (tiles and PG CPU scaled linearly in rows from
#            this sample: a rough figure). Last, the cost model's
#            coefficients fitted on the full seeds' per-zoom render times
#            (`bench_helpers.py shards-fit`), beside those in
#            src/plan/shard/cost.rs.
#   capacity how many database cores one oar-tiles process can keep busy: per
#            --capacity-rows size, the sample unclustered (--zoom), a
#            discarded warm-up seed, then the measured seed run by
#            scripts/thread_cpu.py, which reads every thread's CPU from
#            /proc/PID/task; the CPU of PostgreSQL's backends that served it;
#            and the shipped baseline (the same tiles rendered server-side and
#            copied to a client, split over as many sessions as main's) for
#            PostgreSQL's own CPU per tile. Prints per thread role (render
#            driver, connections, writer, blocking pool) the CPU per tile, the
#            capacity (PostgreSQL's CPU / the busiest thread's; target >= 16),
#            PostgreSQL's CPU per tile against the baseline's (target <= 1.10)
#            and, with --baseline-bin, the tool's CPU per tile against that
#            binary's (target <= +10%), checking both wrote the same tiles.
#            About 2 minutes at 100k, 12 at 1M (2 cores).
#   polygons real polygons and lines, with and without generalisation:
#            Natural Earth's 177 countries and their boundaries as lines
#            (tileset world, --polygon-world-zoom) and New York's five
#            boroughs, the heaviest polygons (Queens alone 29,000 vertices,
#            stored in EPSG:2263), and their outlines (tileset nyc,
#            --polygon-nyc-zoom), from scripts/geodata.sh, loaded with ogr2ogr
#            into a schema of the run's own. Each tileset is seeded with the
#            layers' default generalisation and with `simplify = 0, min_area =
#            0, min_length = 0` (the baseline), alternately, three rounds after
#            a discarded warm-up; prints per tileset and variant the median
#            wall time, peak RSS, tiles and bytes, and per zoom the tiles, bytes
#            and the largest tile (z/x/y and bytes). Not in the default list.
#   generalise
#            what generalisation and projected sources cost (issue 46), on the
#            polygons section's data: the world (--polygon-world-zoom) seeded
#            with the default generalisation and with `simplify = 0, min_area
#            = 0, min_length = 0`, and their median wall time ratio (target
#            <= 1.10); the boroughs and outlines (EPSG:2263) at
#            --generalise-nyc-zoom with the default generalisation, in tiles
#            per second. With --baseline-bin, the same seeds with that binary
#            in the same rounds (alternating), its figures beside these, and
#            each pair of outputs compared tile by tile (uncompressed MVT; any
#            difference fails the run). Not in the default list.
#   moved    what a geometry-only edit costs (issue 46): Natural Earth's
#            Russia (countries and their boundaries as lines) with one border
#            vertex moved north by 0.01 degrees (about 1.1 km). Over a region
#            of 3 x 2 degrees around the vertex at --moved-zoom: a full seed,
#            the move's `seed --dirty` (tiles rendered, wall time), a second
#            full seed compared with it tile by tile (any difference fails the
#            run), and, as the baseline in the same run, a rename of Russia,
#            which renders every tile of its shapes as any edit did before.
#            Over the whole world, the move's dry run (tiles planned) against
#            the tiles Russia's area covers at those zooms (its area in
#            Web-Mercator tiles: target <= 1%). Not in the default list.
#   subtrees what an attribute edit of a huge polygon costs past listed_tiles
#            (issue 46): Russia renamed, `seed --dirty` over the whole world.
#            Baseline in the same run, at the zooms up to 11: the
#            reseed listing every dirty tile (listed_tiles large) beside the
#            one walking subtrees (listed_tiles = 20000), compared tile by
#            tile (any difference fails the run). Then at --subtrees-zoom with
#            the default listed_tiles: tiles rendered and written, wall time,
#            peak RSS (target <= 256 MB), against the tiles Russia's area
#            covers. The baseline's outputs start from a full seed of the world
#            at those zooms; the target's from a seed over a speck of ocean,
#            which records its watermark. Not in the default list.
#   changelog reading the change log of bulk statements (issue 62): a copy of
#            the 144,563-row sample (schema bench_changelog) under change
#            capture, a full seed of a z0-12 tree (clustered as the sample
#            config), then one UPDATE of the names of 1,994 rows (Sri Lanka),
#            17,569 (Viet Nam and Turkey) and 100,000, and `seed --dirty`:
#            its change-log read (the time its log line reports) per 1,000
#            changed rows, and its whole run against the full seed. Baseline in
#            the same run, before each reseed: the read as oar-tiles sent it
#            before the fix (scripts/bench_changelog_before.sql) by psql,
#            cancelled after 300 s. Not in the default list.
#
# Every config is derived from sample-config.toml, pointed at the benchmark
# schema, with clustering set explicitly per variant whatever the sample config
# says, and with `[changes] schema = "bench_changes"`.
#
# The samples live in schemas of their own, bench_<rows>, so benchmarking never
# touches public.facilities that tests and demos use; each is (re)loaded only
# when missing, of the wrong size, or marked as modified by an unfinished
# reseed section. This is a benchmark, not a test: it reports timings and
# asserts nothing about them. It fails (exit 3, after all sections) only if
# something breaks or a cross-check fails: the baseline does not render the
# same set of tiles (the ratio would be meaningless), the reseeded output
# differs from a full seed of the same data, or the tiles over budget disagree
# with the summary. Other work on the machine skews the figures, so each
# section shows the load average around its measurements. A run with the reseed
# section (which rewrites a sample) waits for other benchmark runs and they
# wait for it; other runs may overlap.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
    exit "${1:-2}"
}
log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sections=main,reseed,cluster,tls,pmtiles,capture,growth,watch,edge,live,partitions,watch-partitions,shards,validate,capacity
partition_by=contributor_ids
partition_zoom=0-14
partition_rounds=1
shard_rows=1000000
capture_rounds=5
growth_rows=100000,1000000
capacity_rows=100000,1000000
baseline_bin=
polygon_world_zoom=0-8
polygon_nyc_zoom=0-14
generalise_nyc_zoom=0-16
generalise_rounds=3
moved_zoom=0-14
subtrees_zoom=0-14
rows=100000
zoom=0-14
concurrency=
reload=0
sessions=
reseed_rows=100000
reseed_changes=100
cluster_rows=
cluster_zoom=0-11
cluster_position=centroid
while (($#)); do
    case $1 in
        --sections) sections=${2:?--sections needs a value}; shift 2 ;;
        --capture-rounds) capture_rounds=${2:?--capture-rounds needs a value}; shift 2 ;;
        --growth-rows) growth_rows=${2:?--growth-rows needs a value}; shift 2 ;;
        --sections=*) sections=${1#*=}; shift ;;
        --partition-by) partition_by=${2:?--partition-by needs a value}; shift 2 ;;
        --partition-by=*) partition_by=${1#*=}; shift ;;
        --partition-zoom) partition_zoom=${2:?--partition-zoom needs a value}; shift 2 ;;
        --partition-zoom=*) partition_zoom=${1#*=}; shift ;;
        --partition-rounds) partition_rounds=${2:?--partition-rounds needs a value}; shift 2 ;;
        --partition-rounds=*) partition_rounds=${1#*=}; shift ;;
        --capacity-rows) capacity_rows=${2:?--capacity-rows needs a value}; shift 2 ;;
        --capacity-rows=*) capacity_rows=${1#*=}; shift ;;
        --baseline-bin) baseline_bin=${2:?--baseline-bin needs a value}; shift 2 ;;
        --baseline-bin=*) baseline_bin=${1#*=}; shift ;;
        --polygon-world-zoom) polygon_world_zoom=${2:?--polygon-world-zoom needs a value}; shift 2 ;;
        --polygon-world-zoom=*) polygon_world_zoom=${1#*=}; shift ;;
        --polygon-nyc-zoom) polygon_nyc_zoom=${2:?--polygon-nyc-zoom needs a value}; shift 2 ;;
        --polygon-nyc-zoom=*) polygon_nyc_zoom=${1#*=}; shift ;;
        --generalise-nyc-zoom) generalise_nyc_zoom=${2:?--generalise-nyc-zoom needs a value}; shift 2 ;;
        --generalise-nyc-zoom=*) generalise_nyc_zoom=${1#*=}; shift ;;
        --generalise-rounds) generalise_rounds=${2:?--generalise-rounds needs a value}; shift 2 ;;
        --generalise-rounds=*) generalise_rounds=${1#*=}; shift ;;
        --moved-zoom) moved_zoom=${2:?--moved-zoom needs a value}; shift 2 ;;
        --moved-zoom=*) moved_zoom=${1#*=}; shift ;;
        --subtrees-zoom) subtrees_zoom=${2:?--subtrees-zoom needs a value}; shift 2 ;;
        --subtrees-zoom=*) subtrees_zoom=${1#*=}; shift ;;
        --shard-rows) shard_rows=${2:?--shard-rows needs a value}; shift 2 ;;
        --shard-rows=*) shard_rows=${1#*=}; shift ;;
        --rows) rows=${2:?--rows needs a value}; shift 2 ;;
        --rows=*) rows=${1#*=}; shift ;;
        --zoom) zoom=${2:?--zoom needs a value}; shift 2 ;;
        --zoom=*) zoom=${1#*=}; shift ;;
        --concurrency) concurrency=${2:?--concurrency needs a value}; shift 2 ;;
        --concurrency=*) concurrency=${1#*=}; shift ;;
        --baseline-sessions) sessions=${2:?--baseline-sessions needs a value}; shift 2 ;;
        --baseline-sessions=*) sessions=${1#*=}; shift ;;
        --reload) reload=1; shift ;;
        --reseed-rows) reseed_rows=${2:?--reseed-rows needs a value}; shift 2 ;;
        --reseed-rows=*) reseed_rows=${1#*=}; shift ;;
        --reseed-changes) reseed_changes=${2:?--reseed-changes needs a value}; shift 2 ;;
        --reseed-changes=*) reseed_changes=${1#*=}; shift ;;
        --cluster-rows) cluster_rows=${2:?--cluster-rows needs a value}; shift 2 ;;
        --cluster-rows=*) cluster_rows=${1#*=}; shift ;;
        --cluster-zoom) cluster_zoom=${2:?--cluster-zoom needs a value}; shift 2 ;;
        --cluster-zoom=*) cluster_zoom=${1#*=}; shift ;;
        --cluster-position) cluster_position=${2:?--cluster-position needs a value}; shift 2 ;;
        --cluster-position=*) cluster_position=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
cluster_rows=${cluster_rows:-$rows}
positive='^[1-9][0-9]*$'
[[ $rows =~ $positive ]] || die "--rows must be a positive integer, got '$rows'"
[[ $zoom =~ ^[0-9]+(-[0-9]+)?$ ]] || die "--zoom must be A-B or N, got '$zoom'"
[[ -z $concurrency || $concurrency =~ $positive ]] \
    || die "--concurrency must be a positive integer, got '$concurrency'"
[[ -z $sessions || $sessions =~ $positive ]] \
    || die "--baseline-sessions must be a positive integer, got '$sessions'"
[[ $capacity_rows =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] \
    || die "--capacity-rows must be a comma-separated list of positive integers, got '$capacity_rows'"
[[ -z $baseline_bin || -x $baseline_bin ]] || die "--baseline-bin: $baseline_bin is not an executable"
[[ $shard_rows =~ $positive ]] || die "--shard-rows must be a positive integer, got '$shard_rows'"
[[ $reseed_rows =~ $positive ]] || die "--reseed-rows must be a positive integer, got '$reseed_rows'"
[[ $reseed_changes =~ $positive ]] && ((reseed_changes >= 4)) \
    || die "--reseed-changes must be an integer >= 4, got '$reseed_changes'"
[[ $cluster_rows =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] \
    || die "--cluster-rows must be a comma-separated list of positive integers, got '$cluster_rows'"
[[ $cluster_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
    || die "--cluster-zoom must be A-B with A <= B, got '$cluster_zoom'"
[[ $cluster_position == centroid || $cluster_position == cell-center ]] \
    || die "--cluster-position must be centroid or cell-center, got '$cluster_position'"
[[ $partition_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
    || die "--partition-zoom must be A-B with A <= B, got '$partition_zoom'"
for polygon_zoom in "$polygon_world_zoom" "$polygon_nyc_zoom"; do
    [[ $polygon_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
        || die "--polygon-world-zoom and --polygon-nyc-zoom must be A-B with A <= B, got '$polygon_zoom'"
done
[[ $generalise_nyc_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
    || die "--generalise-nyc-zoom must be A-B with A <= B, got '$generalise_nyc_zoom'"
[[ $moved_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
    || die "--moved-zoom must be A-B with A <= B, got '$moved_zoom'"
[[ $subtrees_zoom =~ ^([0-9]+)-([0-9]+)$ ]] && ((BASH_REMATCH[1] <= BASH_REMATCH[2])) \
    || die "--subtrees-zoom must be A-B with A <= B, got '$subtrees_zoom'"
[[ $generalise_rounds =~ $positive ]] || die "--generalise-rounds must be a positive integer, got '$generalise_rounds'"
[[ $partition_rounds =~ $positive ]] && ((partition_rounds <= 3)) \
    || die "--partition-rounds must be 1, 2 or 3, got '$partition_rounds'"
[[ $partition_by =~ ^[a-z_][a-z0-9_]*$ ]] || die "--partition-by must be a column name, got '$partition_by'"
run_main=0 run_reseed=0 run_cluster=0 run_tls=0 run_pmtiles=0 run_watch=0 run_growth=0
IFS=, read -r -a section_list <<<"$sections"
((${#section_list[@]})) || die "--sections is empty"
for s in "${section_list[@]}"; do
    case $s in
        main) run_main=1 ;;
        reseed) run_reseed=1 ;;
        cluster) run_cluster=1 ;;
        tls) run_tls=1 ;;
        pmtiles) run_pmtiles=1 ;;
        growth) run_growth=1 ;;
        capture | partitions | shards | validate | capacity | polygons | generalise | moved | subtrees) ;;
        changelog) run_reseed=1 ;;
        watch | edge | edge-zooms | edge-cloudfront | watch-partitions | live) run_watch=1 ;;
        *) die "unknown section '$s' (expected main, reseed, cluster, tls, pmtiles, capture, growth, watch, edge, edge-zooms, edge-cloudfront, live, partitions, watch-partitions, shards, validate, capacity, polygons, generalise, moved, subtrees, changelog)" ;;
    esac
done

# Clustering as sample-config.toml is meant to use it.
readonly CLUSTER_MAXZOOM=11 CLUSTER_CELL=512
# Change capture of the benchmark's configs, apart from whatever the sample config names.
readonly CHANGES_SCHEMA=bench_changes
readonly RESEED_ZOOM=0-14 RESEED_SEED=0.42 RESEED_BANDS="0-5 6-14"
cluster_spec=$CLUSTER_MAXZOOM,$CLUSTER_CELL,$cluster_position

# --- environment ----------------------------------------------------------------------------

url_line=$("$ROOT/scripts/setup-postgis.sh")
export DATABASE_URL=${url_line#DATABASE_URL=}

if [[ ! -x /usr/bin/time ]]; then
    # Only GNU time reports peak RSS; the shell keyword does not.
    # shellcheck source=scripts/apt.sh
    . "$ROOT/scripts/apt.sh"
    apt_install time
fi

# The reseed section rewrites its sample (and reloads it): it runs alone; so do the sections that
# install change capture on a shared sample (watch, edge, growth's one change).
LOCK_FILE=${TMPDIR:-/tmp}/oar-tiles-bench.lock
exec 8>>"$LOCK_FILE"
lock_mode=-s
if ((run_reseed || run_watch || run_growth)); then lock_mode=-x; fi
if ! flock -n "$lock_mode" 8; then
    log "waiting for another benchmark run ($LOCK_FILE)"
    flock "$lock_mode" 8
fi

log "building the release binary"
(cd "$ROOT" && cargo build --release --locked -q)
# Where cargo put it: CARGO_TARGET_DIR (relative to the repository, as cargo takes it there) or
# target/.
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
BIN=$target_dir/release/oar-tiles

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oar-tiles-bench.XXXXXX")
psql_() { (cd / && psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"); }
# psql_measured OUT.json ARGS...: psql_ ARGS under scripts/thread_cpu.py, which writes the CPU of the
# backend serving it to OUT.json.
psql_measured() {
    local out=$1
    shift
    (cd / && python3 "$ROOT/scripts/thread_cpu.py" "$out" -- \
        psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@")
}
now() { date +%s.%N; }
# The server's CPU over a run: what the backends that ended within it used, from the postmaster's
# count of its exited children (so every backend of a run must have ended when it is read; a
# backend ends as soon as its client closes the connection). Any other backend that ends meanwhile
# (an autovacuum worker, say) is counted too.
postmaster=
reaped_cpu() {
    if [[ -z $postmaster ]]; then
        local checkpointer
        checkpointer=$(psql_ -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
        postmaster=$(python3 "$ROOT/scripts/bench_helpers.py" parent-pid "$checkpointer")
    fi
    sleep 0.2 # lets the postmaster reap the backends of a client that just exited
    python3 "$ROOT/scripts/bench_helpers.py" reaped-cpu "$postmaster"
}
cpu_since() { awk -v a="$1" -v b="$(reaped_cpu)" 'BEGIN { printf "%.2f\n", b - a }'; }
tiles_table=
floor_table=
polygons_schema=
reseed_pending=0 # the reseed sample is modified or change capture is installed
reseed_config=
parts_pending=0 # the contributors copy has change capture installed or is modified
parts_config=
watch_pid=
serve_pid=
varnish_pid=
changelog_schema= # the changelog section's copy of the sample
growth_config= # the growth config whose change capture is installed, its sample renamed
moto_pid=
cleanup() {
    if [[ -n $watch_pid ]]; then kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true; fi
    if [[ -n $serve_pid ]]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    if [[ -n $varnish_pid ]]; then "$ROOT/scripts/varnish.sh" stop "$varnish_pid" || true; fi
    if [[ -n $moto_pid ]]; then "$ROOT/scripts/moto-server.sh" stop "$moto_pid" || true; fi
    for table in $tiles_table $floor_table; do
        psql_ -c "DROP TABLE IF EXISTS $table" >/dev/null 2>&1 || true
    done
    if [[ -n $polygons_schema ]]; then
        psql_ -c "DROP SCHEMA IF EXISTS $polygons_schema CASCADE;
                  DROP SCHEMA IF EXISTS ${polygons_schema}_changes CASCADE" >/dev/null 2>&1 || true
    fi
    if [[ -n $changelog_schema ]]; then
        psql_ -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $changelog_schema CASCADE;
                  DROP SCHEMA IF EXISTS ${CHANGES_SCHEMA}_changelog CASCADE" >/dev/null 2>&1 || true
    fi
    if [[ -n $growth_config ]]; then
        # The sample's comment, set before the rename, makes the next run reload it.
        "$BIN" -q changes uninstall --config "$growth_config" >/dev/null 2>&1 || true
    fi
    if ((parts_pending)); then
        log "dropping bench_${rows}_contributors after an unfinished watch-partitions section"
        restore_contributors || true
    fi
    if ((reseed_pending)); then
        log "restoring bench_$reseed_rows after an unfinished reseed section"
        "$BIN" -q changes uninstall --config "$reseed_config" >/dev/null 2>&1 \
            || psql_ -c "DROP TRIGGER IF EXISTS oar_tiles_capture ON bench_$reseed_rows.facilities;
                         DROP TRIGGER IF EXISTS oar_tiles_capture_truncate ON bench_$reseed_rows.facilities;
                         DROP TRIGGER IF EXISTS oar_tiles_notify ON bench_$reseed_rows.facilities;
                         DROP SCHEMA IF EXISTS $CHANGES_SCHEMA CASCADE" >/dev/null 2>&1 || true
        # If this fails too, the table's comment makes the next run reload it.
        "$ROOT/scripts/load-sample.sh" --rows "$reseed_rows" --schema "bench_$reseed_rows" \
            --table facilities || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
status=0
failed() { if (($1 > status)); then status=$1; fi; }

cores=$(nproc)
concurrency_args=()
if [[ -n $concurrency ]]; then concurrency_args=(--concurrency "$concurrency"); fi

# --- sample data ----------------------------------------------------------------------------

# Loads bench_<rows>.facilities unless it holds the unmodified sample of that size.
declare -A loaded=()
ensure_sample() {
    local n=$1 schema=bench_$1 count=none mark=
    if [[ $(psql_ -Atc "SELECT to_regclass('$schema.facilities') IS NOT NULL") == t ]]; then
        count=$(psql_ -Atc "SELECT count(*) FROM $schema.facilities")
        mark=$(psql_ -Atc "SELECT coalesce(obj_description('$schema.facilities'::regclass, 'pg_class'), '')")
    fi
    if { ((reload)) && [[ -z ${loaded[$schema]:-} ]]; } || [[ $count != "$n" || -n $mark ]]; then
        log "loading $n facilities into $schema.facilities (found: $count${mark:+, \"$mark\"})"
        "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    else
        log "reusing $schema.facilities ($count rows)"
    fi
    loaded[$schema]=1
}

# ensure_contributors ROWS: bench_<rows>_contributors.facilities, a copy of the unmodified
# bench_<rows> sample with a column contributor_ids int[] (and a GIN index on it) that no other
# section sees. Each row belongs to 1 (55%), 2 (25%), 3 (13%) or 4 (7%) of 2,000 contributors; each
# draw takes contributor r with probability about 1/r (floor(2001^u), u uniform: Zipf with s = 1),
# so contributor 1 holds about 15% of the 100k rows and the smallest hold a handful. The draws come
# from md5 of the id (a 24-bit slice per draw), so the column is the same on every run and row i's
# value does not depend on the size; one row in 50 takes the contributor of its own number (id / 50
# modulo 2,000) as its first, so at 100k rows every one of the 2,000 holds rows. Rebuilt (about a
# second at 100k rows) when missing, of the wrong size, of another recipe or marked as modified.
readonly CONTRIBUTORS_RECIPE="bench contributors 1: 1-4 of 2000, floor(2001^u) from md5(id)"
ensure_contributors() {
    local n=$1 schema=bench_$1_contributors state
    ensure_sample "$n"
    state=missing
    if [[ $(psql_ -Atc "SELECT to_regclass('$schema.facilities') IS NOT NULL") == t ]]; then
        state=$(psql_ -Atc "SELECT (SELECT count(*) FROM $schema.facilities)::text || '|'
            || coalesce(obj_description('$schema.facilities'::regclass, 'pg_class'), '') || '|'
            || coalesce((SELECT col_description(attrelid, attnum) FROM pg_attribute
                         WHERE attrelid = '$schema.facilities'::regclass
                           AND attname = 'contributor_ids'), '')")
    fi
    if [[ $state == "$n||$CONTRIBUTORS_RECIPE" ]] && ! ((reload)); then
        log "reusing $schema.facilities ($n rows with contributor_ids)"
        return
    fi
    log "copying bench_$n.facilities to $schema.facilities with contributor_ids (found: $state)"
    psql_ <<SQL
SET client_min_messages = warning;
BEGIN;
CREATE SCHEMA IF NOT EXISTS $schema;
DROP TABLE IF EXISTS $schema.facilities;
CREATE TABLE $schema.facilities (LIKE bench_$n.facilities INCLUDING ALL);
ALTER TABLE $schema.facilities ADD COLUMN contributor_ids int[];
INSERT INTO $schema.facilities
SELECT f.*, ARRAY(SELECT DISTINCT c FROM unnest(ARRAY[
           CASE WHEN f.id % 50 = 0 THEN (f.id / 50 - 1) % 2000 + 1 ELSE floor(2001 ^ u.u1) END,
           CASE WHEN u.u0 >= 0.55 THEN floor(2001 ^ u.u2) END,
           CASE WHEN u.u0 >= 0.80 THEN floor(2001 ^ u.u3) END,
           CASE WHEN u.u0 >= 0.93 THEN floor(2001 ^ u.u4) END]::int[]) c
       WHERE c IS NOT NULL ORDER BY c)
FROM bench_$n.facilities f
CROSS JOIN LATERAL (
    SELECT ('x' || substr(h, 1, 6))::bit(24)::int / 16777216.0::float8 AS u0,
           ('x' || substr(h, 7, 6))::bit(24)::int / 16777216.0::float8 AS u1,
           ('x' || substr(h, 13, 6))::bit(24)::int / 16777216.0::float8 AS u2,
           ('x' || substr(h, 19, 6))::bit(24)::int / 16777216.0::float8 AS u3,
           ('x' || substr(h, 25, 6))::bit(24)::int / 16777216.0::float8 AS u4
    FROM md5(f.id::text) h
) u;
CREATE INDEX ON $schema.facilities USING gin (contributor_ids);
COMMENT ON COLUMN $schema.facilities.contributor_ids IS '$CONTRIBUTORS_RECIPE';
COMMIT;
VACUUM ANALYZE $schema.facilities;
SQL
}

# make_config ROWS clustered|unclustered FILE: sample-config.toml pointed at bench_<rows>, with
# clustering as asked. Sets extent, buffer, layer, pool_size and size_budget from it.
make_config() {
    local variant
    if [[ $2 == clustered ]]; then variant=(--cluster "$cluster_spec"); else variant=(--unclustered); fi
    read -r extent buffer layer pool_size size_budget < <(
        python3 "$ROOT/scripts/bench_helpers.py" config "$ROOT/sample-config.toml" "$3" \
            "bench_$1.facilities" --changes-schema "$CHANGES_SCHEMA" "${variant[@]}"
    )
    [[ -n ${size_budget:-} ]] || die "could not derive a config from $ROOT/sample-config.toml"
}

# timed_seed NAME ARGS...: `seed -q ARGS`, with /usr/bin/time -v in NAME.time and the summary in
# NAME.json.
timed_seed() {
    local name=$1
    shift
    /usr/bin/time -v -o "$WORK/$name.time" "$BIN" -q seed "${concurrency_args[@]}" "$@" \
        --summary-json "$WORK/$name.json" >/dev/null
}

# load_tile_list TABLE CSV: a tile list written by bench_helpers.py into a new unlogged TABLE.
load_tile_list() {
    psql_ <<SQL
CREATE UNLOGGED TABLE $1 (z int, x int, y int, w float8, s float8, e float8, n float8, session int);
\copy $1 FROM '$2' WITH (FORMAT csv)
ANALYZE $1;
SQL
}

# tile_list_sql TABLE SCHEMA CONDITION COLUMNS: one statement rendering the tiles of TABLE that
# meet CONDITION from SCHEMA.facilities, selecting COLUMNS over their MVTs `m.mvt`. The per-tile
# work is the tool's render statement: same MVT layer, columns, feature ids and order, same index
# predicate; only the tool's extra feature count and COALESCE are left out. LATERAL keeps
# everything server-side; it also keeps PostgreSQL 15 from running the rendering in parallel
# workers, hence one session per connection of the seed. Run it with JIT off: the tool's small
# per-tile statements never reach the JIT threshold either.
tile_list_sql() {
    cat <<SQL
SELECT $4
FROM $1 b
CROSS JOIN LATERAL (
    SELECT ST_AsMVT(q, '$layer', $extent, 'geom', 'id' ORDER BY q.id) AS mvt
    FROM (SELECT ST_AsMVTGeom(ST_Transform(t.location, 3857), ST_TileEnvelope(b.z, b.x, b.y),
                              $extent, $buffer, true) AS geom,
                 t.id, t.os_id, t.name, t.address, t.country_code::text AS country_code,
                 t.contributors
          FROM $2.facilities t
          WHERE t.location && ST_MakeEnvelope(b.w, b.s, b.e, b.n, 4326)) q
) m
WHERE $3;
SQL
}

# The server-side baseline over the tile list in $tiles_table (of $schema), split by session.
baseline_sql() {
    echo "SET jit = off;"
    tile_list_sql "$tiles_table" "$schema" "$1" \
        "count(*) FILTER (WHERE length(m.mvt) > 0), coalesce(sum(length(m.mvt)), 0)"
}
# The same tiles with their bytes shipped to the client, as issue 14 defines the baseline: one
# binary COPY per session (the issue's own measurement did the same), read by psql into /dev/null.
baseline_copy_sql() {
    echo "SET jit = off;"
    echo "COPY ("
    tile_list_sql "$tiles_table" "$schema" "$1" "b.x, b.y, m.mvt" | sed '$ s/;$//'
    echo ") TO STDOUT (FORMAT binary);"
}
# run_baseline N [copy]: the baseline split over N concurrent sessions (N = 1: the one statement
# over the whole tile list that the issue defines); twice, printing the faster wall time and the
# server CPU of its backends: the first run also warms the caches for this access pattern. Each
# session's counts land in baseline.N.K (not with `copy`, whose bytes go to /dev/null).
run_baseline() {
    local n=$1 how=${2:-count} best= best_cpu= run k t0 pids secs cpu sql
    for run in 1 2; do
        log "server-side baseline ($how), run $run of 2 ($n session(s))"
        pids=()
        t0=$(now)
        for ((k = 0; k < n; k++)); do
            local condition="b.session = $k"
            ((n > 1)) || condition=true
            sql=$WORK/baseline-session.$k.sql
            if [[ $how == copy ]]; then
                baseline_copy_sql "$condition" >"$sql"
                psql_measured "$WORK/baseline-session.$k.json" -At -f "$sql" >/dev/null &
            else
                baseline_sql "$condition" >"$sql"
                psql_measured "$WORK/baseline-session.$k.json" -At -f "$sql" >"$WORK/baseline.$n.$k" &
            fi
            pids+=("$!")
        done
        for pid in "${pids[@]}"; do wait "$pid"; done
        secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.6f", b - a }')
        # The CPU of the sessions' own backends, whatever else the server serves meanwhile.
        cpu=$(python3 -c 'import json, sys
print(round(sum(json.load(open(p))["backends"] for p in sys.argv[1:]), 2))' \
            "$WORK"/baseline-session.*.json)
        rm -f "$WORK"/baseline-session.*
        if [[ -z $best ]] || awk -v d="$secs" -v b="$best" 'BEGIN { exit !(d < b) }'; then
            best=$secs best_cpu=$cpu
        fi
    done
    echo "$best $best_cpu"
}

# --- main: end-to-end seed against PostGIS alone ---------------------------------------------

section_main() {
    local schema=bench_$rows
    ensure_sample "$rows"
    # Unique per run so that concurrent benchmarks of the same size cannot collide.
    tiles_table="$schema.bench_tiles_$$"
    config=$WORK/bench-config.toml
    make_config "$rows" unclustered "$config"
    effective_concurrency=${concurrency:-$pool_size}
    sessions=${sessions:-$((effective_concurrency < cores ? effective_concurrency : cores))}

seed_args=(-q seed --config "$config" --zoom "$zoom" "${concurrency_args[@]}")
# The first pass pays for cold shared buffers and page cache; only the second is measured.
log "warm-up seed (discarded)"
"$BIN" "${seed_args[@]}" --output "$WORK/warmup.mbtiles" >/dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "measured seed"
# The server's side of the same seed: the CPU of the backends that served it, read by
# thread_cpu.py; the tool's CPU is the seed's own (time -v would add the reader's).
/usr/bin/time -v -o "$WORK/time.txt" python3 "$ROOT/scripts/thread_cpu.py" "$WORK/threads.json" -- \
    "$BIN" "${seed_args[@]}" --output "$WORK/bench.mbtiles" --summary-json "$WORK/summary.json" \
    >/dev/null
read -r server_cpu tool_cpu < <(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); print(round(d["backends"], 2), round(d["total"], 2))' "$WORK/threads.json")

# The server-side baseline, over the written tiles (bench_helpers.py write_tile_list says how the
# list is built); also the total uncompressed MVT bytes, so that the baseline's output can be
# compared with the seed's.
mvt_bytes=$(python3 "$ROOT/scripts/bench_helpers.py" tile-list "$WORK/bench.mbtiles" \
    "$buffer" "$extent" "$sessions" "$WORK/tiles.csv")

load_tile_list "$tiles_table" "$WORK/tiles.csv"

read -r best_one _ < <(run_baseline 1)
read -r best best_cpu < <(run_baseline "$sessions")
read -r best_copy best_copy_cpu < <(run_baseline "$sessions" copy)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
read -r baseline_tiles baseline_bytes < <(
    awk -F'|' '{ t += $1; b += $2 } END { printf "%.0f %.0f\n", t, b }' "$WORK"/baseline."$sessions".*)
read -r one_tiles one_bytes < <(awk -F'|' '{ print $1, $2 }' "$WORK"/baseline.1.0)
[[ $one_tiles == "$baseline_tiles" && $one_bytes == "$baseline_bytes" ]] \
    || die "the one-statement baseline rendered other tiles ($one_tiles, $one_bytes bytes) than the split one ($baseline_tiles, $baseline_bytes)"

# The report.
BENCH_ROWS=$rows BENCH_ZOOM=$zoom BENCH_CONCURRENCY=${concurrency:-"$pool_size (tool default)"} \
BASE_TILES=$baseline_tiles BASE_BYTES=$baseline_bytes BASE_SECS=$best BASE_SESSIONS=$sessions \
BASE_ONE_SECS=$best_one BASE_CPU=$best_cpu BASE_COPY_SECS=$best_copy BASE_COPY_CPU=$best_copy_cpu \
SERVER_CPU=$server_cpu TOOL_CPU=$tool_cpu \
SEED_MVT_BYTES=$mvt_bytes LOAD_BEFORE=$load_before LOAD_AFTER=$load_after CORES=$cores \
python3 - "$WORK/summary.json" "$WORK/time.txt" <<'PY' || failed $?
import json, os, re, sys
summary = json.load(open(sys.argv[1]))
time_v = open(sys.argv[2]).read()
if len(summary) != 1:
    sys.exit(f"bench: expected one tileset in the summary, got {len(summary)}")
s = summary[0]
env = os.environ

def field(label):
    m = re.search(r"^\s*" + re.escape(label) + r": (.+)$", time_v, re.M)
    if not m:
        sys.exit(f"bench: /usr/bin/time -v printed no '{label}'")
    return m.group(1).strip()

wall = 0.0
for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
    wall = wall * 60 + float(part)
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
# The tool's own CPU time tells whether the client side or the database limits throughput.
cpu = float(env["TOOL_CPU"])
rows = int(env["BENCH_ROWS"])
written = s["tiles_written"]
base_tiles, base_bytes = int(env["BASE_TILES"]), int(env["BASE_BYTES"])
base_secs = float(env["BASE_SECS"])
e2e_rate = written / wall
base_rate = base_tiles / base_secs
sessions = int(env["BASE_SESSIONS"])

print(f"== main: oar-tiles benchmark: {rows} facilities, zoom {env['BENCH_ZOOM']}, "
      f"concurrency {env['BENCH_CONCURRENCY']}, {env['CORES']} cores, layer unclustered ==")
print(f"  end-to-end seed:   {written} tiles written in {wall:.2f} s = {e2e_rate:.0f} tiles/s"
      f"  (queried {s['tiles_queried']}, peak RSS {rss_mb:.1f} MB)")
print(f"                     probed {s['tiles_probed']}; oar-tiles CPU {cpu:.2f} s ="
      f" {cpu / wall:.0%} of one core; tool's own timer {s['seconds']:.2f} s")
server_cpu = float(env["SERVER_CPU"])
per_tile = f"{cpu / written * 1e6:.1f}" if written else "-"
print(f"  CPU, client beside server: oar-tiles {cpu:.2f} s user+sys ({per_tile} us per tile written),"
      f" PostgreSQL {server_cpu:.2f} s in the backends that served this seed;"
      f" client / server {cpu / server_cpu if server_cpu else float('inf'):.0%}   (target <= 25%)")
one_secs = float(env["BASE_ONE_SECS"])
one_rate = base_tiles / one_secs
print(f"  PostGIS alone:     {base_tiles} tiles in {one_secs:.2f} s = {one_rate:.0f} tiles/s"
      f" (server-side, one SQL statement over the tile list; faster of 2 runs)")
print(f"  ratio end-to-end / server-side tiles/s: {e2e_rate / one_rate:.2f}")
print(f"  split sessions:    {base_tiles} tiles in {base_secs:.2f} s = {base_rate:.0f} tiles/s"
      f" split over {sessions} concurrent sessions, as many as the seed uses (all cores rendering,"
      f" nothing left for the client)")
base_cpu = float(env["BASE_CPU"])
print(f"                     PostgreSQL CPU {base_cpu:.2f} s in its {sessions} backends, the results"
      f" counted server-side, no bytes shipped")
print(f"  ratio end-to-end / split sessions, no bytes shipped: {e2e_rate / base_rate:.2f}")
copy_secs, copy_cpu = float(env["BASE_COPY_SECS"]), float(env["BASE_COPY_CPU"])
copy_rate = base_tiles / copy_secs
print(f"  split, bytes shipped: {base_tiles} tiles in {copy_secs:.2f} s = {copy_rate:.0f} tiles/s over"
      f" {sessions} sessions, each a binary COPY of (x, y, mvt) read by psql into /dev/null;"
      f" PostgreSQL CPU {copy_cpu:.2f} s")
print(f"  ratio end-to-end / split-session baseline with bytes shipped (issue 14's definition):"
      f" {e2e_rate / copy_rate:.2f}   (target >= 0.85)")
if copy_cpu:
    print(f"  where the seed's CPU goes, against the shipped baseline: PostgreSQL {server_cpu:.2f} s"
          f" = baseline {copy_cpu:.2f} s + {server_cpu - copy_cpu:.2f} s of the tool's statements"
          f" ({server_cpu / copy_cpu - 1:+.0%}); oar-tiles {cpu:.2f} s; on {env['CORES']} cores"
          f" the seed cannot take less than {(server_cpu + cpu) / int(env['CORES']):.2f} s")
print(f"  peak RSS target (< 256 MB at 1,000,000 facilities): {rss_mb:.1f} MB at {rows}")
same_tiles = base_tiles == written
seed_mvt = int(env["SEED_MVT_BYTES"])
print(f"  baseline tiles {'match' if same_tiles else 'DIFFER FROM'} tiles_written"
      f" ({base_tiles} vs {written}); uncompressed MVT bytes"
      f" {'identical' if base_bytes == seed_mvt else 'DIFFERENT'}"
      f" (baseline {base_bytes}, seed {seed_mvt}); stored gzip {s['bytes_written']}")
print(f"  load average before seed / after baseline: {env['LOAD_BEFORE']} / {env['LOAD_AFTER']}")
print()
print("  zoom   queried   written   stored KB  p95 ms  largest tile")
for z in s["per_zoom"]:
    big = z.get("largest_tile")
    big = f"{big['tile']} ({big['bytes'] / 1024:.1f} KB)" if big else "-"
    print(f"  {z['zoom']:>4} {z['queried']:>9} {z['written']:>9} {z['bytes'] / 1024:>11.1f}"
          f" {z['render_ms_p95']:>7.1f}  {big}")
slow = ", ".join(f"{t['tile']} {t['ms']:.0f} ms" for t in s["slowest_tiles"][:3])
print(f"  slowest tiles: {slow or '-'}")
# A different tile set makes the ratio meaningless: say so through the exit status too.
sys.exit(0 if same_tiles else 3)
PY
}

# --- reseed: seed --dirty after a burst of changes, against a full seed ----------------------

# reseed_floor SCHEMA: what re-rendering the tiles the reseed changed costs with nothing around it.
# The unclustered ones (above CLUSTER_MAXZOOM) are rendered by the baseline's tile_list_sql
# statement, split over as many sessions as the reseed had connections (at most the cores), best
# of two runs; and zlib's CPU time for compressing every changed tile is measured. Both are lower
# bounds: a reseed also starts up, reads changes, renders clustered tiles and writes.
reseed_floor() {
    local schema=$1 level s best= run k pids tiles mvt_bytes all_tiles all_bytes zlib_secs
    level=$(sed -n 's/^compression_level *= *\([0-9]*\).*/\1/p' "$reseed_config" | head -1)
    s=${concurrency:-$pool_size}
    ((s < cores)) || s=$cores
    read -r tiles mvt_bytes all_tiles all_bytes zlib_secs < <(
        python3 "$ROOT/scripts/bench_helpers.py" reseed-floor "$WORK/reseed.mbtiles" \
            "$WORK/reseed-changed.txt" "$CLUSTER_MAXZOOM" "$extent" "$buffer" "$s" "${level:-3}" \
            "$WORK/floor.csv")
    floor_table="$schema.bench_floor_$$"
    load_tile_list "$floor_table" "$WORK/floor.csv"
    # Each session first loads PostGIS and PROJ (a new session's fixed cost, which the reseed pays
    # too but a floor should not), then times its share server-side; the slowest share is the wall.
    for run in 1 2; do
        log "reseed: floor, PostGIS alone on the changed unclustered tiles, run $run of 2"
        pids=()
        for ((k = 0; k < s; k++)); do
            psql_ -At >"$WORK/floor.$k" <<SQL &
SET jit = off;
SELECT ST_AsMVT(q, 'warm-up') FROM (SELECT ST_AsMVTGeom(
    ST_Transform('SRID=4326;POINT(0 0)'::geometry, 3857), ST_TileEnvelope(0, 0, 0)) AS geom) q \\g /dev/null
$(tile_list_sql "$floor_table" "$schema" "b.session = $k" \
    "extract(epoch FROM clock_timestamp() - statement_timestamp()), count(*), sum(length(m.mvt))")
SQL
            pids+=("$!")
        done
        for pid in "${pids[@]}"; do wait "$pid"; done
        best=$(cat "$WORK"/floor.[0-9]* | python3 -c 'import sys
d = max(float(line.split("|")[0]) for line in sys.stdin if line.strip()); b = sys.argv[1]
print(f"{min(d, float(b)) if b else d:.6f}")' "$best")
    done
    psql_ -c "DROP TABLE $floor_table"
    floor_table=
    cat >"$WORK/reseed-floor.txt" <<INFO
tiles=$tiles
mvt_bytes=$mvt_bytes
all_tiles=$all_tiles
all_mvt_bytes=$all_bytes
zlib_seconds=$zlib_secs
level=${level:-3}
sessions=$s
cluster_maxzoom=$CLUSTER_MAXZOOM
postgis_seconds=$best
INFO
}

section_reseed() {
    local n=$reseed_rows schema=bench_$reseed_rows applied logged load_before round
    ensure_sample "$n"
    reseed_config=$WORK/reseed.toml
    make_config "$n" clustered "$reseed_config"
    # Leftovers of an earlier run that could not clean up.
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    log "reseed: installing change capture in schema $CHANGES_SCHEMA"
    "$BIN" -q changes install --config "$reseed_config" >&2
    log "reseed: full seed, zoom $RESEED_ZOOM (clustered)"
    timed_seed reseed-full --config "$reseed_config" --zoom "$RESEED_ZOOM" \
        --output "$WORK/reseed.mbtiles"
    # Copies of the output, each reseeded over one zoom band after the measured reseed, show where
    # its time goes. A reseed with nothing to do registers each copy as a consumer of the change
    # log now, so that the measured reseed cannot prune the changes the copies still need.
    for band in $RESEED_BANDS; do
        cp "$WORK/reseed.mbtiles" "$WORK/reseed-z$band.mbtiles"
        "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" --zoom "$band" --dirty \
            --output "$WORK/reseed-z$band.mbtiles" >/dev/null
    done
    # A reseed with nothing to do, five times (the first registered the copies above).
    for round in 1 2 3 4 5; do
        log "reseed: seed --dirty with no changes, round $round of 5"
        timed_seed "reseed-noop-$round" --config "$reseed_config" --zoom "$RESEED_ZOOM" --dirty \
            --output "$WORK/reseed.mbtiles"
    done
    log "reseed: applying $reseed_changes changes in one transaction"
    applied=$(psql_ -At -v schema="$schema" -v n="$reseed_changes" -v seed="$RESEED_SEED" \
        -f "$ROOT/scripts/bench_reseed_changes.sql")
    logged=$(psql_ -Atc "SELECT count(*) FROM $CHANGES_SCHEMA.change_log")
    log "reseed: seed --dirty"
    timed_seed reseed-dirty --config "$reseed_config" --zoom "$RESEED_ZOOM" --dirty \
        --output "$WORK/reseed.mbtiles" --changed-list "$WORK/reseed-changed.txt"
    for band in $RESEED_BANDS; do
        log "reseed: seed --dirty of a copy, zoom $band only"
        timed_seed "reseed-z$band" --config "$reseed_config" --zoom "$band" --dirty \
            --output "$WORK/reseed-z$band.mbtiles"
    done
    reseed_floor "$schema"
    # The check aggregates clusters from rows: its config names a change schema that does not
    # exist, so it shares nothing with the reseed's maintained cluster cells.
    log "reseed: full seed of the changed data from rows, to check the reseed against"
    sed "s/\"$CHANGES_SCHEMA\"/\"${CHANGES_SCHEMA}_absent\"/" "$reseed_config" >"$WORK/reseed-rows.toml"
    timed_seed reseed-fresh --config "$WORK/reseed-rows.toml" --zoom "$RESEED_ZOOM" \
        --output "$WORK/reseed-fresh.mbtiles"
    echo "load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" >"$WORK/reseed-load.txt"
    log "reseed: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    reseed_pending=0
    cat >"$WORK/reseed-info.txt" <<INFO
rows=$n
zoom=$RESEED_ZOOM
cluster=clustered (cluster_maxzoom $CLUSTER_MAXZOOM, cluster_cell $CLUSTER_CELL, $cluster_position)
concurrency=${concurrency:-$pool_size (tool default)}
applied=$applied
logged=$logged
seed=$RESEED_SEED
bands=$RESEED_BANDS
$(cat "$WORK/reseed-load.txt")
INFO
    python3 "$ROOT/scripts/bench_helpers.py" reseed-report "$WORK" || failed $?
}

# --- cluster: clustered against unclustered low zooms ----------------------------------------

section_cluster() {
    local n variant load_before sizes
    IFS=, read -r -a sizes <<<"$cluster_rows"
    for n in "${sizes[@]}"; do
        ensure_sample "$n"
        make_config "$n" unclustered "$WORK/cluster-$n-unclustered.toml"
        make_config "$n" clustered "$WORK/cluster-$n-clustered.toml"
        # Reads every row once (clustered low zooms are cheap), so neither measured seed pays for
        # a cold cache.
        log "cluster: $n facilities, warm-up seed z0-2 clustered (discarded)"
        "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/cluster-$n-clustered.toml" \
            --zoom 0-2 --output "$WORK/cluster-warmup.mbtiles" >/dev/null
        load_before=$(cut -d' ' -f1-3 /proc/loadavg)
        for variant in clustered unclustered; do
            log "cluster: $n facilities, $variant seed, zoom $cluster_zoom"
            timed_seed "cluster-$n-$variant" --config "$WORK/cluster-$n-$variant.toml" \
                --zoom "$cluster_zoom" --output "$WORK/cluster-$n-$variant.mbtiles"
        done
        ((n == ${sizes[0]})) || echo
        BENCH_LOAD="$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
        python3 "$ROOT/scripts/bench_helpers.py" cluster-report "$WORK" "$n" "$cluster_zoom" \
            "$size_budget" "cluster_maxzoom $CLUSTER_MAXZOOM, cluster_cell $CLUSTER_CELL/$extent, $cluster_position" \
            || failed $?
        rm -f "$WORK"/cluster-"$n"-*.mbtiles "$WORK/cluster-warmup.mbtiles"
    done
}

# compare_runs TITLE TARGET NAME_A LABEL_A NAME_B LABEL_B: the median wall time and peak RSS of
# rounds 1-3 of two timed_seed variants (NAME_A-1 … NAME_B-3), and B's time as a ratio of A's
# against TARGET.
compare_runs() {
    python3 - "$WORK" "$@" <<'PY'
import re, statistics, sys
work, title, target, name_a, label_a, name_b, label_b = sys.argv[1:]
def measure(path):
    text = open(path).read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), rss / 1024
def medians(name):
    runs = [measure(f"{work}/{name}-{r}.time") for r in (1, 2, 3)]
    return statistics.median(w for w, _ in runs), max(r for _, r in runs)
a, b = medians(name_a), medians(name_b)
print(f"{title}; median wall of 3 runs each, peak RSS")
for label, (wall, rss) in ((label_a, a), (label_b, b)):
    print(f"  {label:<34} {wall:8.2f} s  {rss:8.1f} MB")
ratio = b[0] / a[0]
print(f"  {label_b} / {label_a.split(' ')[0]:<12} {ratio:8.3f}   (target <= {target}: {'met' if ratio <= float(target) else 'NOT met'})")
PY
}

# --- tls: the same seed over TLS (verify-full) and in plain text -------------------------------

# The seed of the main section (--rows, --zoom, unclustered), alternately in plain text and over
# TLS with full verification against the test CA of scripts/pg-test-servers.sh, three rounds each,
# on the same server; prints the median wall time of each and their ratio (target: <= 1.05).
section_tls() {
    local certs base mode round
    ensure_sample "$rows"
    make_config "$rows" unclustered "$WORK/tls.toml"
    certs=$("$ROOT/scripts/pg-test-servers.sh" | sed -n 's/^OAR_TILES_TEST_TLS_DIR=//p')
    [[ -n $certs ]] || die "scripts/pg-test-servers.sh printed no certificate directory"
    # The server certificate names localhost.
    base=${DATABASE_URL/@127.0.0.1:/@localhost:}
    declare -A url=(
        [plain]="$base?sslmode=disable"
        [tls]="$base?sslmode=verify-full&sslrootcert=$certs/ca.crt"
    )
    log "tls: warm-up seed (discarded)"
    DATABASE_URL=${url[plain]} "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/tls.toml" \
        --zoom "$zoom" --output "$WORK/tls-warmup.mbtiles" >/dev/null
    for round in 1 2 3; do
        for mode in plain tls; do
            log "tls: round $round, $mode"
            DATABASE_URL=${url[$mode]} timed_seed "tls-$mode-$round" --config "$WORK/tls.toml" \
                --zoom "$zoom" --output "$WORK/tls-$mode-$round.mbtiles"
        done
    done
    compare_runs "tls: seed of $rows facilities, zoom $zoom, unclustered" 1.05 \
        tls-plain "plain (sslmode=disable)" tls-tls "TLS (sslmode=verify-full)" || failed $?
    rm -f "$WORK"/tls-*.mbtiles
}

# --- pmtiles: the same seed into PMTiles and into MBTiles ---------------------------------------

# The seed of the main section (--rows, --zoom, unclustered), alternately into MBTiles and into a
# PMTiles archive (store plus archive), three rounds each; prints the median wall time, peak RSS
# and their ratio (target: <= 1.10).
section_pmtiles() {
    local round format
    ensure_sample "$rows"
    make_config "$rows" unclustered "$WORK/pmtiles.toml"
    log "pmtiles: warm-up seed (discarded)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/pmtiles.toml" --zoom "$zoom" \
        --output "$WORK/pm-warmup.mbtiles" >/dev/null
    for round in 1 2 3; do
        for format in mbtiles pmtiles; do
            log "pmtiles: round $round, $format"
            rm -f "$WORK"/pm-out.*
            timed_seed "pm-$format-$round" --config "$WORK/pmtiles.toml" --zoom "$zoom" \
                --output "$WORK/pm-out.$format"
        done
    done
    compare_runs "pmtiles: seed of $rows facilities, zoom $zoom, unclustered" 1.10 \
        pm-mbtiles "MBTiles" pm-pmtiles "PMTiles" || failed $?
    rm -f "$WORK"/pm-out.* "$WORK"/pm-warmup.*
}

# --- capture: what the change-capture triggers cost the writes --------------------------------

section_capture() {
    local schema=bench_capture load_before table extent buffer layer pool_size size_budget
    ensure_sample 100000
    # The sample's table, and a lean copy of its rows (text ids, a primary key and one GiST index,
    # nothing else), where a write costs least and the triggers' own cost shows most (issue 35).
    log "capture: copying bench_100000.facilities to $schema.facilities and $schema.lean"
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema;
              CREATE TABLE $schema.facilities (LIKE bench_100000.facilities INCLUDING ALL);
              INSERT INTO $schema.facilities SELECT * FROM bench_100000.facilities;
              CREATE TABLE $schema.lean (id text PRIMARY KEY, os_id text NOT NULL, name text NOT NULL,
                  address text NOT NULL, country_code char(2) NOT NULL, contributors integer NOT NULL,
                  created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                  location geometry(Point, 4326) NOT NULL);
              INSERT INTO $schema.lean SELECT id::text, os_id, name, address, country_code, contributors,
                  created_at, updated_at, location FROM bench_100000.facilities;
              CREATE INDEX lean_location ON $schema.lean USING gist (location);" >/dev/null
    psql_ -c "VACUUM ANALYZE $schema.facilities" -c "VACUUM ANALYZE $schema.lean" >/dev/null
    : >"$WORK/capture.txt"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    for table in facilities lean; do
        read -r extent buffer layer pool_size size_budget < <(
            python3 "$ROOT/scripts/bench_helpers.py" config "$ROOT/sample-config.toml" "$WORK/capture-$table.toml" \
                "$schema.$table" --changes-schema "${CHANGES_SCHEMA}_capture" --unclustered
        )
        [[ -n ${size_budget:-} ]] || die "could not derive a config from $ROOT/sample-config.toml"
        "$BIN" -q changes install --config "$WORK/capture-$table.toml" >&2
        log "capture: $capture_rounds rounds of each write to $schema.$table, triggers off and on"
        psql_ -v table="$schema.$table" -v log="${CHANGES_SCHEMA}_capture.change_log" \
            -v rounds="$capture_rounds" -v singles=2000 -f "$ROOT/scripts/bench_capture.sql" 2>&1 \
            | sed -n "s/^.*NOTICE:  capture /$table /p" >>"$WORK/capture.txt"
        "$BIN" -q changes uninstall --config "$WORK/capture-$table.toml" >&2
    done
    psql_ -c "DROP SCHEMA $schema CASCADE" >/dev/null
    python3 - "$WORK/capture.txt" "$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" <<'PY' || failed $?
import collections, statistics, sys
times = collections.defaultdict(list)
cpu = collections.defaultdict(list)
# Per round, each variant's figure against the off figure of the same round, measured moments
# apart: on a machine whose load drifts these scatter less than the ratio of the medians.
by_round = {"wall": {}, "server CPU": {}}
for line in open(sys.argv[1]):
    table, case, variant, rnd, ms, *rest = line.split()
    times[table, case, variant].append(float(ms))
    by_round["wall"][table, case, variant, rnd] = float(ms)
    if rest and rest[0] != "-":
        cpu[table, case, variant].append(float(rest[0]))
        by_round["server CPU"][table, case, variant, rnd] = float(rest[0])


def paired(kind, table, case, variant):
    runs = by_round[kind]
    return statistics.median(value / runs[t, c, "off", r] - 1 for (t, c, v, r), value in runs.items()
                             if (t, c, v) == (table, case, variant) and runs.get((t, c, "off", r)))
if not times:
    sys.exit("capture: the server printed no timings")
print("capture: writes without triggers (off), with change capture's statement triggers (on), "
      "with the row triggers of the first design alone (row) and with the statement trigger that "
      "notified watch before the capture triggers did (row+n), and with empty statement triggers "
      "reading the same transition tables (floor: PostgreSQL's cost of capturing them); median of "
      f"{len(times[next(iter(times))])} rounds, each rolled back, and (/rnd) the median of each round's "
      f"ratio to that round's off (load {sys.argv[2]})")
tables = {"facilities": "the 100k sample's table (bigint ids, primary key, unique os_id, GiST index)",
          "lean": "the same rows in a lean table (text ids, primary key and one GiST index only)"}
labels = {"move": "UPDATE 20,000 rows, geometry moved", "rename": "UPDATE 20,000 rows, name",
          "integer": "UPDATE 20,000 rows, rendered integer",
          "unrendered": "UPDATE 20,000 rows, column no layer renders",
          "insert": "INSERT 20,000 rows", "delete": "DELETE 20,000 rows",
          "single-row": "2,000 single-row UPDATEs (name)"}
variants = ("off", "row", "rownotify", "floor", "on")
# Wall time, and the server process's CPU time where it could be read: with other work on the
# machine the CPU time scatters far less.
for table, described in tables.items():
    print(f"  {table}: {described}")
    for kind, measured in (("wall", times), ("server CPU", cpu)):
        if not all((table, case, v) in measured for case in labels for v in variants):
            continue
        print(f"  {'write (' + kind + ')':<44} {'off ms':>9} {'row ms':>9} {'row+n ms':>9} {'floor ms':>9}"
              f" {'on ms':>9} {'row':>8} {'row+n':>8} {'floor':>8} {'on':>8} {'floor/rnd':>9} {'on/rnd':>8}")
        worst, worst_floor = 0.0, 0.0
        for case, label in labels.items():
            off, row, notified, floor, on = (statistics.median(measured[table, case, v]) for v in variants)
            overhead = on / off - 1
            if case != "single-row" and overhead >= worst:
                worst, worst_floor = overhead, floor / off - 1
            print(f"  {label:<44} {off:9.1f} {row:9.1f} {notified:9.1f} {floor:9.1f} {on:9.1f}"
                  f" {row / off - 1:+8.1%} {notified / off - 1:+8.1%} {floor / off - 1:+8.1%} {overhead:+8.1%}"
                  f" {paired(kind, table, case, 'floor'):+9.1%} {paired(kind, table, case, 'on'):+8.1%}")
        print(f"  worst bulk overhead {worst:+.1%}, of which the transition tables' floor {worst_floor:+.1%}   "
              f"(target <= +25%: {'met' if worst <= 0.25 else 'NOT met'}); "
              "single-row writes: compare the row, row+n and on columns (target: on no worse than row)")
PY
}

# --- growth: cost against the size of the data -------------------------------------------------

section_growth() {
    local n sizes started seed_pid server_cpu
    IFS=, read -r -a sizes <<<"$growth_rows"
    : >"$WORK/growth.txt"
    for n in "${sizes[@]}"; do
        started=$(now)
        ensure_sample "$n"
        make_config "$n" clustered "$WORK/growth-$n.toml"
        # Without change capture the clustered top tiles group every row, which at 10M rows takes
        # longer than the sample config's statement timeout on a small machine: the timeout is not
        # what this section measures.
        sed -i 's/^statement_timeout = .*/statement_timeout = "1h"/' "$WORK/growth-$n.toml"
        echo "$n load $(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" >>"$WORK/growth.txt"
        log "growth: $n facilities, seed z0-14 clustered"
        echo "$n load-avg $(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/growth.txt"
        # PostgreSQL's CPU beside the tool's shows whose work grows with the data: the CPU of the
        # backends that served this seed, read by thread_cpu.py as main and capacity read it
        # (the postmaster's count of reaped children took in any other backend that ended).
        /usr/bin/time -v -o "$WORK/growth-$n.time" python3 "$ROOT/scripts/thread_cpu.py" \
            "$WORK/growth-$n-threads.json" -- "$BIN" -q seed "${concurrency_args[@]}" \
            --config "$WORK/growth-$n.toml" --zoom 0-14 --output "$WORK/growth-$n.mbtiles" \
            --summary-json "$WORK/growth-$n.json" >/dev/null \
            || die "growth: the seed of $n facilities failed"
        read -r server_cpu tool_cpu < <(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); print(round(d["backends"], 2), round(d["total"], 2))' \
            "$WORK/growth-$n-threads.json")
        echo "$n server-cpu $server_cpu" >>"$WORK/growth.txt"
        # The seed's own CPU: time -v would add the reader's.
        echo "$n tool-cpu $tool_cpu" >>"$WORK/growth.txt"
        echo "$n bytes $(psql_ -Atc "SELECT pg_total_relation_size('bench_$n.facilities')")" >>"$WORK/growth.txt"
        rm -f "$WORK/growth-$n.mbtiles"
        growth_one_change "$n"
    done
    python3 - "$ROOT/scripts" "$WORK" "${sizes[@]}" <<'PY' || failed $?
import sys
sys.path.insert(0, sys.argv[1])
import bench_helpers as h
work, sizes = sys.argv[2], [int(n) for n in sys.argv[3:]]
facts = {}
for line in open(f"{work}/growth.txt"):
    n, key, value = line.split()
    facts[int(n), key] = float(value)
print("growth: the sample config (clustered), z0-14, per sample size")
print(f"  {'rows':>10} {'load s':>8} {'seed s':>8} {'tiles':>9} {'tiles/s':>9} {'s/tile vs first':>16} {'peak RSS':>10} {'table+indexes':>14}")
first = None
worst_rss = 0.0
costs = []
for n in sizes:
    wall, _, rss = h.time_v(f"{work}/growth-{n}.time")
    cpu = facts[n, "tool-cpu"]
    summary = h.summary(f"{work}/growth-{n}.json")
    tiles = summary["tiles_written"]
    per_tile = wall / max(tiles, 1)
    first = first or per_tile
    worst_rss = max(worst_rss, rss)
    costs.append((n, tiles, summary["bytes_written"], cpu, facts[n, "server-cpu"]))
    print(f"  {n:>10} {facts[n, 'load']:8.1f} {wall:8.1f} {tiles:>9} {tiles / wall:9.0f} {per_tile / first:16.2f} "
          f"{rss:8.1f} MB {facts[n, 'bytes'] / 2**20:11.1f} MB")
# Where the time per tile goes: a tile holds more features as the rows grow, which costs PostGIS
# (per feature) more than the tool (per tile and per stored byte).
print(f"  {'rows':>10} {'stored B/tile':>14} {'tool CPU s':>11} {'µs/tile':>8} {'PostgreSQL CPU s':>17} {'µs/tile':>8}")
for n, tiles, stored, cpu, server in costs:
    t = max(tiles, 1)
    print(f"  {n:>10} {stored / t:14.0f} {cpu:11.1f} {cpu / t * 1e6:8.1f} {server:17.1f} {server / t * 1e6:8.1f}")
print(f"  peak RSS {worst_rss:.1f} MB (target <= 256 MB: {'met' if worst_rss <= 256 else 'NOT met'})")
# One renamed facility, `seed --dirty` into the grown tree and MBTiles file: the purges go out
# before the run reads every tile for agg_tiles_hash; before that change the hash came first, so
# the purge waited for the whole run ("hash first").
print("  one change, seed --dirty (purges as soon as the tiles are stored; agg_tiles_hash read after)")
print(f"  {'rows':>10} {'output':>8} {'tiles':>9} {'run s':>7} {'hash s':>7} {'to purge s':>11} {'hash first s':>13} {'vs first':>9}")
smallest = {}
for n in sizes:
    for kind in ("tree", "mbtiles"):
        if (n, f"{kind}-run") not in facts:
            continue
        run, hashed, tiles = facts[n, f"{kind}-run"], facts[n, f"{kind}-hash"], facts[n, f"{kind}-tiles"]
        purge = run - hashed
        smallest.setdefault(kind, purge)
        print(f"  {n:>10} {kind:>8} {tiles:9.0f} {run:7.2f} {hashed:7.2f} {purge:11.2f} {run:13.2f} "
              f"{purge / smallest[kind]:8.2f}x")
print("  (target: the largest output's commit-to-purge within 1.2x of the smallest's)")
PY
}

# growth_one_change N: the growth config with change capture, full seeds into a tree and an MBTiles
# file, one facility renamed, and `seed --dirty` into each, timed, with the seconds its log says
# the hash took after the purges; then the rename undone and change capture uninstalled, so the
# sample is as it was.
growth_one_change() {
    local n=$1 config=$WORK/growth-$n-lag.toml id out kind started
    local tree=$WORK/growth-$n-tree mbtiles=$WORK/growth-$n-lag.mbtiles
    # A change schema of its own: uninstalling drops it whole.
    sed "s/^schema = \"$CHANGES_SCHEMA\"/schema = \"${CHANGES_SCHEMA}_growth\"/" "$WORK/growth-$n.toml" >"$config"
    grep -q "^schema = \"${CHANGES_SCHEMA}_growth\"" "$config" || die "growth: no [changes] schema in $config"
    growth_config=$config
    "$BIN" -q changes install --config "$config" >&2
    log "growth: $n facilities, full seeds into a tree and an MBTiles file for one change"
    for out in "dir:$tree" "$mbtiles"; do
        "$BIN" -q seed "${concurrency_args[@]}" --config "$config" --zoom 0-14 --output "$out" \
            >/dev/null || die "growth: the seed of $n facilities into $out failed"
    done
    id=$(psql_ -Atc "SELECT min(id) FROM bench_$n.facilities")
    psql_ -c "COMMENT ON TABLE bench_$n.facilities IS 'growth: one facility renamed'"
    psql_ -c "UPDATE bench_$n.facilities SET name = name || ' (renamed)' WHERE id = $id"
    # The full seeds' writes go to disk first: a tree's finish syncs its file system (syncfs),
    # which would otherwise time the writeback of every file just seeded (0.5 s at 1M rows, 7 ms
    # once flushed), not the change; a watch cycle follows cycles whose writes are long flushed.
    sync
    for kind in tree mbtiles; do
        if [[ $kind == tree ]]; then out=dir:$tree; else out=$mbtiles; fi
        started=$(now)
        RUST_LOG=info "$BIN" seed --dirty "${concurrency_args[@]}" --config "$config" --zoom 0-14 \
            --output "$out" --summary-json "$WORK/growth-$n-$kind-dirty.json" \
            >/dev/null 2>"$WORK/growth-$n-$kind-dirty.log" \
            || die "growth: seed --dirty into $out failed"
        echo "$n $kind-run $(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" >>"$WORK/growth.txt"
        echo "$n $kind-hash $(grep -o 'after the purges in [0-9.]* s' "$WORK/growth-$n-$kind-dirty.log" \
            | grep -o '[0-9.]*' | tail -1 || echo 0)" >>"$WORK/growth.txt"
        echo "$n $kind-tiles $("$BIN" -q inspect --json "$out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["tiles"])')" \
            >>"$WORK/growth.txt"
    done
    psql_ -c "UPDATE bench_$n.facilities SET name = left(name, -length(' (renamed)')) WHERE id = $id"
    "$BIN" -q changes uninstall --config "$config" >&2
    psql_ -c "COMMENT ON TABLE bench_$n.facilities IS NULL"
    growth_config=
    rm -rf "$tree" "$mbtiles"
}

# --- watch: change-to-tile latency at a steady rate of commits ----------------------------------

readonly WATCH_CHANGES=300 WATCH_RATE=10
section_watch() {
    local n=$reseed_rows schema=bench_$reseed_rows port base range load_before code
    ensure_sample "$n"
    reseed_config=$WORK/watch.toml
    make_config "$n" clustered "$reseed_config"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $schema.facilities")
    read -r lo hi count <<<"$range"
    ((hi - lo + 1 == count)) || die "watch: $schema.facilities ids are not contiguous"
    "$BIN" -q changes install --config "$reseed_config" >&2
    log "watch: full seed of the configured zooms (clustered)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base=http://127.0.0.1:$port
    log "watch: starting oar-tiles watch (default debounce, max_delay, poll_interval) on $base"
    RUST_LOG=info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug \
        "$BIN" --log-format json watch "${concurrency_args[@]}" --config "$reseed_config" \
        --listen "127.0.0.1:$port" 2>"$WORK/watch.log" &
    watch_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" health
    python3 "$ROOT/scripts/bench_helpers.py" watch-changes "$schema" "$WATCH_CHANGES" "$WATCH_RATE" \
        "$RESEED_SEED" "$lo" "$hi" >"$WORK/watch-changes.sql"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    log "watch: committing $WATCH_CHANGES changes at $WATCH_RATE per second"
    psql_ -f "$WORK/watch-changes.sql" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" applied "$WATCH_CHANGES" \
        "$WORK/watch-metrics.txt"
    kill -TERM "$watch_pid"
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "watch: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    python3 "$ROOT/scripts/bench_helpers.py" watch-report "$WORK/watch.log" "$WORK/watch-metrics.txt" \
        "$WATCH_CHANGES" "$WATCH_RATE" || failed $?
    echo "  load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg), concurrency ${concurrency:-$pool_size}"
    sed "s/\"$CHANGES_SCHEMA\"/\"${CHANGES_SCHEMA}_absent\"/" "$reseed_config" >"$WORK/watch-rows.toml"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/watch-rows.toml" \
        --output "$WORK/watch-fresh.mbtiles" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" same-tiles "$WORK/facilities.mbtiles" \
        "$WORK/watch-fresh.mbtiles" || failed $?
    log "watch: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    reseed_pending=0
}

# --- edge: commit-to-edge latency through a real cache ----------------------------------------

readonly EDGE_CHANGES=300 EDGE_RATE=10 EDGE_CHECK=8 EDGE_MOVES=90 EDGE_ZOOM_CHANGES=${EDGE_ZOOM_CHANGES:-20}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
section_edge() {
    local n=$reseed_rows schema=bench_$reseed_rows tree=$WORK/edge-tree range lo hi count
    local port sport vport base name cache load_before code warmed
    ensure_sample "$n"
    "$ROOT/scripts/varnish.sh" install
    reseed_config=$WORK/edge.toml
    make_config "$n" clustered "$reseed_config"
    # The tileset goes to a tree, and each watch cycle checks what it purged at the edge.
    sed -i "s|^output = .*|output = \"dir:$tree\"|; /^check_edge\s*=/d; s|^\[watch\]\s*$|[watch]\ncheck_edge = $EDGE_CHECK|" \
        "$reseed_config"
    grep -q "^check_edge = $EDGE_CHECK" "$reseed_config" || die "edge: no [watch] table in $reseed_config"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $schema.facilities")
    read -r lo hi count <<<"$range"
    ((hi - lo + 1 == count)) || die "edge: $schema.facilities ids are not contiguous"
    "$BIN" -q changes install --config "$reseed_config" >&2
    log "edge: full seed into a tree (clustered)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    sport=$(free_port)
    "$BIN" -q serve "dir:$tree" --listen "127.0.0.1:$sport" >"$WORK/edge-serve.log" 2>&1 &
    serve_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "http://127.0.0.1:$sport" health-path /index.json
    name=$(python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["tilesets"][0]["name"])' \
        "http://127.0.0.1:$sport/index.json")
    vport=$(free_port)
    varnish_pid=$(VARNISH_STORAGE=1g "$ROOT/scripts/varnish.sh" start "$vport" "$sport" 1d)
    cache=http://127.0.0.1:$vport/$name
    printf '\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "%s/{path}"\npublic_url = "%s"\n' \
        "$cache" "$cache" >>"$reseed_config"
    log "edge: warming Varnish with every tile of the tree"
    warmed=$(python3 "$ROOT/scripts/bench_helpers.py" edge-warm "$tree" pbf "$cache")
    port=$(free_port)
    base=http://127.0.0.1:$port
    log "edge: starting oar-tiles watch on $base (check_edge = $EDGE_CHECK)"
    RUST_LOG=info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug \
        "$BIN" --log-format json watch "${concurrency_args[@]}" --config "$reseed_config" \
        --listen "127.0.0.1:$port" 2>"$WORK/edge-watch.log" &
    watch_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" health
    python3 "$ROOT/scripts/bench_helpers.py" watch-changes "$schema" "$EDGE_CHANGES" "$EDGE_RATE" \
        "$RESEED_SEED-edge" "$lo" "$hi" >"$WORK/edge-changes.sql"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    log "edge: committing $EDGE_CHANGES changes at $EDGE_RATE per second"
    psql_ -f "$WORK/edge-changes.sql" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" applied "$EDGE_CHANGES"
    python3 "$ROOT/scripts/bench_helpers.py" edge-wait "$base" "$EDGE_CHANGES" "$WORK/edge-metrics.txt"
    kill -TERM "$watch_pid"
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "edge: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    python3 "$ROOT/scripts/bench_helpers.py" edge-report "$WORK/edge-watch.log" "$WORK/edge-metrics.txt" \
        "$EDGE_CHANGES" "$EDGE_RATE" || failed $?
    echo "  $warmed tiles cached before the changes; load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg), concurrency ${concurrency:-$pool_size}"
    # Folding: a reseed of a few dozen moved facilities, planned for CloudFront (nothing is sent).
    python3 "$ROOT/scripts/bench_helpers.py" edge-moves "$schema" "$EDGE_MOVES" "$RESEED_SEED" "$lo" "$hi" \
        >"$WORK/edge-moves.sql"
    psql_ -f "$WORK/edge-moves.sql" >/dev/null
    sed -i '/^\[\[tileset.cdn\]\]$/,$d' "$reseed_config"
    printf '[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\ndistribution_id = "EBENCH"\n' \
        >>"$reseed_config"
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
        "$BIN" -q seed --dirty --dry-run "${concurrency_args[@]}" --config "$reseed_config" \
        --summary-json "$WORK/edge-plan.json" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" edge-plan "$WORK/edge-plan.json" || failed $?
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
    "$ROOT/scripts/varnish.sh" stop "$varnish_pid"
    varnish_pid=
    log "edge: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    reseed_pending=0
    rm -rf "$tree"
    echo
    section_edge_zooms
    echo
    section_edge_cloudfront
}

# --- edge-zooms: the tiles at a change, through Varnish, on a layer whose low zooms are heavy -----

section_edge_zooms() {
    local n=$reseed_rows schema=bench_$reseed_rows tree=$WORK/zooms-tree range lo hi count
    local port sport vport name cache code warmed load_before
    ensure_sample "$n"
    "$ROOT/scripts/varnish.sh" install
    reseed_config=$WORK/zooms.toml
    make_config "$n" unclustered "$reseed_config"
    sed -i "s|^output = .*|output = \"dir:$tree\"|; /^check_edge\s*=/d; s|^\[watch\]\s*$|[watch]\ncheck_edge = 0|" \
        "$reseed_config"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $schema.facilities")
    read -r lo hi count <<<"$range"
    "$BIN" -q changes install --config "$reseed_config" >&2
    log "edge-zooms: full seed into a tree (unclustered)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    sport=$(free_port)
    "$BIN" -q serve "dir:$tree" --listen "127.0.0.1:$sport" >"$WORK/zooms-serve.log" 2>&1 &
    serve_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "http://127.0.0.1:$sport" health-path /index.json
    name=$(python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["tilesets"][0]["name"])' \
        "http://127.0.0.1:$sport/index.json")
    vport=$(free_port)
    varnish_pid=$(VARNISH_STORAGE=1g "$ROOT/scripts/varnish.sh" start "$vport" "$sport" 1d)
    cache=http://127.0.0.1:$vport/$name
    printf '\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "%s/{path}"\n' "$cache" >>"$reseed_config"
    log "edge-zooms: warming Varnish with every tile of the tree"
    warmed=$(python3 "$ROOT/scripts/bench_helpers.py" edge-warm "$tree" pbf "$cache")
    port=$(free_port)
    "$BIN" watch "${concurrency_args[@]}" --config "$reseed_config" --listen "127.0.0.1:$port" \
        2>"$WORK/zooms-watch.log" &
    watch_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "http://127.0.0.1:$port" health
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "edge-zooms: $n facilities unclustered ($RESEED_ZOOM) into a tree behind Varnish (PURGE per tile)," \
        "$EDGE_ZOOM_CHANGES renames one at a time, watch with its default settings"
    log "edge-zooms: $EDGE_ZOOM_CHANGES renames, each timed at z10-z14 through Varnish and at the origin"
    psql_ -c "COMMENT ON TABLE $schema.facilities IS 'modified by the edge-zooms benchmark'" >/dev/null
    DATABASE_URL=$DATABASE_URL python3 "$ROOT/scripts/bench_helpers.py" edge-zooms "$schema" "$EDGE_ZOOM_CHANGES" \
        "$RESEED_SEED-zooms" "$lo" "$hi" "$cache" "http://127.0.0.1:$sport/$name" 10-14 || failed $?
    echo "  $warmed tiles cached before the changes; load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
    kill -TERM "$watch_pid"
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "edge-zooms: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
    "$ROOT/scripts/varnish.sh" stop "$varnish_pid"
    varnish_pid=
    log "edge-zooms: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    reseed_pending=0
    rm -rf "$tree"
}

# --- live: commit -> drawn on a map that is already open, through Varnish ----------------------

LIVE_CHANGES=${LIVE_CHANGES:-24}
LIVE_IDLE_SECONDS=${LIVE_IDLE_SECONDS:-60}
# What the cache hands browsers with every answer: an origin that lets browsers keep tiles a
# day, which an open map must refresh past; set it empty for the headers as serve sends them.
LIVE_BROWSER_CACHE_CONTROL=${LIVE_BROWSER_CACHE_CONTROL-public, max-age=86400}
# The unclustered case first: every facility its own feature at every zoom, so its low zooms take
# seconds and only a feed that speaks as tiles are purged keeps up; then the clustered one.
# LIVE_LAYOUTS picks the cases.
LIVE_LAYOUTS=${LIVE_LAYOUTS:-unclustered partition clustered}
section_live() {
    local layout
    for layout in $LIVE_LAYOUTS; do
        [[ $layout == clustered || $layout == unclustered || $layout == partition ]] \
            || die "LIVE_LAYOUTS: '$layout' is not clustered, unclustered or partition"
        live_case "$layout"
    done
}

# live_case LAYOUT: clustered, unclustered, or partition (unclustered, partitioned by country; the
# page shows the largest country's partition and follows that partition's own feed).
live_case() {
    local layout=$1 n=$reseed_rows schema=bench_$reseed_rows tree=$WORK/live-tree range lo hi count
    local port sport vport name cache code load_before chromium chromedriver served=$WORK/live-tree
    local country='' filter=
    ensure_sample "$n"
    "$ROOT/scripts/varnish.sh" install
    # shellcheck source=scripts/apt.sh
    . "$ROOT/scripts/apt.sh"
    { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || apt_install chromium chromium-driver
    chromium=$(command -v chromium)
    chromedriver=$(command -v chromedriver)
    reseed_config=$WORK/live.toml
    make_config "$n" "${layout/partition/unclustered}" "$reseed_config"
    sed -i "s|^output = .*|output = \"dir:$tree\"|; /^check_edge\s*=/d; s|^\[watch\]\s*$|[watch]\ncheck_edge = 0|" \
        "$reseed_config"
    if [[ $layout == partition ]]; then
        country=$(psql_ -Atc "SELECT country_code FROM $schema.facilities GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        [[ $country =~ ^[A-Z]{2}$ ]] || die "live: no country to show (got '$country')"
        filter="country_code = '$country'"
        served=$tree/$country
        sed -i "0,/^\[\[tileset\]\]\s*$/s//[[tileset]]\npartition_by = \"country_code\"/" "$reseed_config"
        grep -q '^partition_by' "$reseed_config" || die "could not partition $reseed_config"
    fi
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $schema.facilities")
    read -r lo hi count <<<"$range"
    "$BIN" -q changes install --config "$reseed_config" >&2
    log "live: full seed into a tree ($layout)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    sport=$(free_port)
    port=$(free_port)
    # The page is opened through the cache under a public name, which the cache forwards, so the
    # TileJSON's tile URLs name the cache. With LIVE_EVENTS=1 it follows watch's events.
    [[ -d $served ]] || die "live: $served is not a folder after the seed"
    "$BIN" -q serve "dir:$served" --listen "127.0.0.1:$sport" --public-host live-bench.test \
        ${LIVE_EVENTS:+--watch "http://127.0.0.1:$port"} >"$WORK/live-serve.log" 2>&1 &
    serve_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "http://127.0.0.1:$sport" health-path /index.json
    name=$(python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1]))["tilesets"][0]["name"])' \
        "http://127.0.0.1:$sport/index.json")
    vport=$(free_port)
    varnish_pid=$(VARNISH_STORAGE=1g "$ROOT/scripts/varnish.sh" start "$vport" "$sport" 1d \
        ${LIVE_BROWSER_CACHE_CONTROL:+"$LIVE_BROWSER_CACHE_CONTROL"})
    cache=http://127.0.0.1:$vport/$name/
    if [[ $layout == partition ]]; then
        # The partition's tiles and feed are purged as COUNTRY/...; serve names the partition's
        # tree NAME-COUNTRY, so the purge URLs put NAME- before that path.
        [[ $name == *-"$country" ]] || die "live: serve names $served '$name', not '*-$country'"
        cache=http://127.0.0.1:$vport/${name%"$country"}
    fi
    # The feed is appended after the CDN: a tileset's tables may come in any order.
    printf '\n[[tileset.cdn]]\nkind = "http"\nname = "varnish"\nurl = "%s{path}"\n\n[tileset.feed]\n' \
        "$cache" >>"$reseed_config"
    # A first feed segment (the seed's tiles) before the page opens.
    "$BIN" -q seed --dirty "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    "$BIN" watch "${concurrency_args[@]}" --config "$reseed_config" --listen "127.0.0.1:$port" \
        2>"$WORK/live-watch.log" &
    watch_pid=$!
    python3 "$ROOT/scripts/bench_helpers.py" watch-wait "http://127.0.0.1:$port" health
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "live: $n facilities $layout${country:+ (the page shows partition $country)} ($RESEED_ZOOM) into a tree behind Varnish (PURGE per tile, the feed's" \
        "head purged too), watch with its default settings; serve's page open through the cache in headless" \
        "Chromium, following ${LIVE_EVENTS:+the events of watch, else }the feed every second; $LIVE_CHANGES" \
        "renames one at a time; browsers get Cache-Control: ${LIVE_BROWSER_CACHE_CONTROL:-as serve sends it}"
    psql_ -c "COMMENT ON TABLE $schema.facilities IS 'modified by the live benchmark'" >/dev/null
    LIVE_FILTER=$filter DATABASE_URL=$DATABASE_URL python3 "$ROOT/scripts/bench_live.py" "$chromium" "$chromedriver" \
        "http://live-bench.test:$vport/?tileset=$name" "$schema" facilities location "$lo" "$hi" \
        "$LIVE_CHANGES" "$served/changes" "$LIVE_IDLE_SECONDS" || failed $?
    echo "  load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg)"
    kill -TERM "$watch_pid"
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "live: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
    "$ROOT/scripts/varnish.sh" stop "$varnish_pid"
    varnish_pid=
    log "live: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$schema" --table facilities
    reseed_pending=0
    rm -rf "$tree"
}

# --- edge-cloudfront: CloudFront's propagation and quotas, on moto's server --------------------

EDGE_CF_PROPAGATION=${EDGE_CF_PROPAGATION:-30}
EDGE_CF_SECONDS=${EDGE_CF_SECONDS:-60}
EDGE_CF_RATE=${EDGE_CF_RATE:-10}
EDGE_CF_UPDATE=${EDGE_CF_UPDATE:-6000}
# edge_cf_watch LABEL SEED: `watch` over $reseed_config while EDGE_CF_RATE changes a second are
# committed for EDGE_CF_SECONDS; then waits for the edge to settle (nothing in flight or waiting,
# at most propagation + 60 s) and reports from its metrics and log.
edge_cf_watch() {
    local label=$1 seed=$2 port base n code
    n=$((EDGE_CF_RATE * EDGE_CF_SECONDS))
    port=$(free_port)
    base=http://127.0.0.1:$port
    RUST_LOG=info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug \
        "${cf_env[@]}" "$BIN" --log-format json watch "${concurrency_args[@]}" --config "$reseed_config" \
        --listen "127.0.0.1:$port" 2>"$WORK/cf-watch-$label.log" &
    watch_pid=$!
    WATCH_PID=$watch_pid python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" health
    python3 "$ROOT/scripts/bench_helpers.py" cf-changes "$cf_schema" "$n" "$EDGE_CF_RATE" "$seed" \
        "$cf_lo" "$cf_hi" >"$WORK/cf-changes-$label.sql"
    log "edge-cloudfront: $label: committing $n changes at $EDGE_CF_RATE per second"
    psql_ -f "$WORK/cf-changes-$label.sql" >/dev/null
    WATCH_PID=$watch_pid python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" applied "$n"
    python3 "$ROOT/scripts/bench_helpers.py" cf-settle "$base" $((EDGE_CF_PROPAGATION + 60)) \
        "$WORK/cf-metrics-$label.txt"
    kill -TERM "$watch_pid"
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "edge-cloudfront: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    python3 "$ROOT/scripts/bench_helpers.py" cf-watch-report "$label" "$WORK/cf-watch-$label.log" \
        "$WORK/cf-metrics-$label.txt" "$n" "$EDGE_CF_SECONDS" || failed $?
}

section_edge_cloudfront() {
    local n=$reseed_rows tree=$WORK/cf-tree moto url id range count started seconds
    local MOTO_PY=${MOTO_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/oar-tiles/moto-venv}/bin/python
    cf_schema=bench_$n
    ensure_sample "$n"
    "$ROOT/scripts/moto-server.sh" install
    moto=$(MOTO_CLOUDFRONT_PROPAGATION_SECONDS=$EDGE_CF_PROPAGATION "$ROOT/scripts/moto-server.sh" start)
    url=$(head -1 <<<"$moto")
    moto_pid=$(tail -1 <<<"$moto")
    id=$("$ROOT/scripts/moto-server.sh" distribution "$url" "bench-$$ propagation=$EDGE_CF_PROPAGATION")
    cf_env=(env AWS_ENDPOINT_URL_CLOUDFRONT="$url" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
        AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true)
    reseed_config=$WORK/cf.toml
    make_config "$n" unclustered "$reseed_config"
    sed -i "s|^output = .*|output = \"dir:$tree\"|" "$reseed_config"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    reseed_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $cf_schema.facilities")
    read -r cf_lo cf_hi count <<<"$range"
    "$BIN" -q changes install --config "$reseed_config" >&2

    echo "edge-cloudfront: $n facilities unclustered ($RESEED_ZOOM) into a tree; CloudFront on moto's server," \
        "invalidations in progress for $EDGE_CF_PROPAGATION s, 3,000 file paths and 15 wildcards in flight"
    log "edge-cloudfront: baseline: full seed and watch without a CDN"
    started=$(date +%s.%N)
    "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" >/dev/null
    seconds=$(echo "$(date +%s.%N) - $started" | bc)
    printf '  baseline (no CDN): full seed %.1f s\n' "$seconds"
    edge_cf_watch no-cdn "$RESEED_SEED-cf-base"

    printf '\n[[tileset.cdn]]\nkind = "cloudfront"\nname = "cloudfront"\ndistribution_id = "%s"\n' "$id" \
        >>"$reseed_config"
    log "edge-cloudfront: full seed behind CloudFront"
    rm -rf "$tree"
    started=$(date +%s.%N)
    "${cf_env[@]}" "$BIN" -q seed "${concurrency_args[@]}" --config "$reseed_config" \
        --summary-json "$WORK/cf-seed.json" >/dev/null
    seconds=$(echo "$(date +%s.%N) - $started" | bc)
    "$MOTO_PY" "$ROOT/scripts/bench_helpers.py" cf-seed-report "$WORK/cf-seed.json" "$seconds" "$url" "$id" \
        || failed $?

    log "edge-cloudfront: one UPDATE of $EDGE_CF_UPDATE facilities, seed --dirty"
    psql_ -c "COMMENT ON TABLE $cf_schema.facilities IS 'modified by the edge-cloudfront benchmark';
        UPDATE $cf_schema.facilities SET location = ST_Translate(location, 0.002, 0.001)
        WHERE id IN (SELECT id FROM $cf_schema.facilities ORDER BY md5(id::text) LIMIT $EDGE_CF_UPDATE)" >/dev/null
    "${cf_env[@]}" "$BIN" -q seed --dirty "${concurrency_args[@]}" --config "$reseed_config" \
        --summary-json "$WORK/cf-update.json" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" cf-purge-line "$EDGE_CF_UPDATE-row UPDATE" "$WORK/cf-update.json" \
        || failed $?

    edge_cf_watch cloudfront "$RESEED_SEED-cf"
    sed -i 's|^distribution_id = .*|&\nbudget_per_day = 10|' "$reseed_config"
    edge_cf_watch budget-10 "$RESEED_SEED-cf-budget"

    "$ROOT/scripts/moto-server.sh" stop "$moto_pid"
    moto_pid=
    log "edge-cloudfront: uninstalling change capture and reloading the sample"
    "$BIN" -q changes uninstall --config "$reseed_config" >&2
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$cf_schema" --table facilities
    reseed_pending=0
    rm -rf "$tree"
}

# --- partitions: one pyramid per value against the whole tileset -------------------------------

# partition_configs N: whole.toml and partitioned.toml in WORK, the sample config (clustered) on
# bench_<n>_contributors.facilities with its zooms set to --partition-zoom, the second partitioned
# by --partition-by.
partition_configs() {
    local n=$1 lo=${partition_zoom%-*} hi=${partition_zoom#*-}
    make_config "${n}_contributors" clustered "$WORK/whole.toml"
    sed -i "s/^minzoom = .*/minzoom = $lo/; s/^maxzoom = .*/maxzoom = $hi/" "$WORK/whole.toml"
    grep -q "^maxzoom = $hi\$" "$WORK/whole.toml" || die "could not set the zooms of $WORK/whole.toml"
    # The same tileset, partitioned: the key goes right under the tileset's header.
    sed "0,/^\[\[tileset\]\]\s*$/s//[[tileset]]\npartition_by = \"$partition_by\"/" \
        "$WORK/whole.toml" >"$WORK/partitioned.toml"
    grep -q "^partition_by" "$WORK/partitioned.toml" || die "could not partition $WORK/whole.toml"
}

section_partitions() {
    local round variant started load_before
    started=$(now)
    ensure_contributors "$rows"
    partition_configs "$rows"
    log "partitions: warm-up seed (discarded)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/whole.toml" \
        --output "$WORK/part-warmup.mbtiles" >/dev/null
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    # The whole tileset three times, the partitioned one --partition-rounds times, alternately.
    for round in 1 2 3; do
        for variant in whole partitioned; do
            [[ $variant == whole ]] || ((round <= partition_rounds)) || continue
            log "partitions: round $round, $variant, zoom $partition_zoom"
            rm -rf "$WORK"/part-out.* "$WORK"/part-out
            timed_seed "part-$variant-$round" --config "$WORK/$variant.toml" \
                --output "$WORK/part-out.mbtiles"
            [[ $variant == whole ]] || cp "$WORK/part-out.partitions.json" "$WORK/part-index.json"
        done
    done
    BENCH_LOAD="$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
    BENCH_SECONDS=$(awk -v a="$started" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') \
    python3 "$ROOT/scripts/bench_helpers.py" partitions-report "$WORK" "$rows" "$partition_zoom" \
        "$partition_by" "$partition_rounds" || failed $?
    rm -rf "$WORK"/part-*
}

# --- watch-partitions: watch keeping a partitioned tileset fresh -------------------------------

readonly WATCH_PARTS_CHANGES=300 WATCH_PARTS_RATE=10
# restore_contributors: change capture off the contributors copy, and the copy dropped (the next
# ensure_contributors rebuilds it).
restore_contributors() {
    "$BIN" -q changes uninstall --config "$parts_config" >&2 \
        || psql_ -c "DROP SCHEMA IF EXISTS $CHANGES_SCHEMA CASCADE" >/dev/null
    psql_ -c "DROP TABLE IF EXISTS bench_${rows}_contributors.facilities" >/dev/null
    parts_pending=0
}

section_watch_partitions() {
    local n=$rows schema=bench_${rows}_contributors port base range lo hi count load_before code
    ensure_contributors "$n"
    partition_configs "$n"
    # The watched outputs (facilities.VALUE.mbtiles and their index) in a folder of their own.
    parts_config=$WORK/watch-partitioned.toml
    mkdir -p "$WORK/wp-watched" "$WORK/wp-fresh"
    sed "s|^output = .*|output = \"$WORK/wp-watched/facilities.mbtiles\"|" "$WORK/partitioned.toml" \
        >"$parts_config"
    grep -q "^output = \"$WORK/wp-watched/" "$parts_config" || die "could not set the output of $parts_config"
    "$BIN" -q changes uninstall --config "$parts_config" >&2
    parts_pending=1
    range=$(psql_ -Atc "SELECT min(id) || ' ' || max(id) || ' ' || count(*) FROM $schema.facilities")
    read -r lo hi count <<<"$range"
    ((hi - lo + 1 == count)) || die "watch-partitions: $schema.facilities ids are not contiguous"
    "$BIN" -q changes install --config "$parts_config" >&2
    log "watch-partitions: full seed partitioned by $partition_by, zoom $partition_zoom (clustered)"
    timed_seed wp-full --config "$parts_config"
    port=$(free_port)
    base=http://127.0.0.1:$port
    log "watch-partitions: starting oar-tiles watch on the partitioned tileset ($base)"
    RUST_LOG=info,oar_tiles::seed=warn,oar_tiles::state=warn,oar_tiles::watch=debug \
        "$BIN" --log-format json watch "${concurrency_args[@]}" --config "$parts_config" \
        --listen "127.0.0.1:$port" 2>"$WORK/wp-watch.log" &
    watch_pid=$!
    # Fails at once when the watcher exits instead (today's refusal of partitioned tilesets).
    if ! WATCH_PID=$watch_pid python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" health; then
        code=0
        wait "$watch_pid" || code=$?
        watch_pid=
        log "watch-partitions: ERROR: oar-tiles watch did not start on the partitioned tileset" \
            "(exit $code); the end of its log:"
        tail -n 5 "$WORK/wp-watch.log" >&2
        failed 3
        restore_contributors
        rm -rf "$WORK"/wp-*
        return 0
    fi
    python3 "$ROOT/scripts/bench_helpers.py" watch-partition-changes "$schema" "$WATCH_PARTS_CHANGES" \
        "$WATCH_PARTS_RATE" "$RESEED_SEED-partitions" "$lo" "$hi" >"$WORK/wp-changes.sql"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    log "watch-partitions: committing $WATCH_PARTS_CHANGES changes at $WATCH_PARTS_RATE per second"
    psql_ -f "$WORK/wp-changes.sql" >/dev/null
    WATCH_PID=$watch_pid python3 "$ROOT/scripts/bench_helpers.py" watch-wait "$base" applied \
        "$WATCH_PARTS_CHANGES" "$WORK/wp-metrics.txt" || failed 3
    kill -TERM "$watch_pid" 2>/dev/null || true
    code=0
    wait "$watch_pid" || code=$?
    watch_pid=
    ((code == 143)) || { log "watch-partitions: the watcher exited $code on SIGTERM, not 143"; failed 3; }
    if [[ -s $WORK/wp-metrics.txt ]]; then
        python3 "$ROOT/scripts/bench_helpers.py" watch-partitions-report "$WORK/wp-watch.log" \
            "$WORK/wp-metrics.txt" "$WATCH_PARTS_CHANGES" "$WATCH_PARTS_RATE" "$WORK/wp-full.json" \
            "$WORK/wp-full.time" "$partition_zoom" || failed $?
        echo "  load=$load_before / $(cut -d' ' -f1-3 /proc/loadavg), concurrency ${concurrency:-$pool_size}"
    fi
    # The check: a fresh partitioned seed of the changed data that shares nothing with the
    # watcher's state (its change schema does not exist), compared partition by partition.
    log "watch-partitions: fresh partitioned seed of the changed data, to check the watched outputs"
    sed "s/\"$CHANGES_SCHEMA\"/\"${CHANGES_SCHEMA}_absent\"/; s|^output = .*|output = \"$WORK/wp-fresh/facilities.mbtiles\"|" \
        "$parts_config" >"$WORK/wp-rows.toml"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/wp-rows.toml" >/dev/null
    python3 "$ROOT/scripts/bench_helpers.py" same-partitions \
        "$WORK/wp-watched/facilities.partitions.json" "$WORK/wp-fresh/facilities.partitions.json" \
        || failed $?
    log "watch-partitions: uninstalling change capture and dropping the modified copy"
    restore_contributors
    rm -rf "$WORK"/wp-*
}

# --- shards: shard plans on paper, and sharded runs for real ----------------------------------

readonly SHARD_COUNTS="4 16 64" SHARD_REAL="4 16" SHARD_ZOOM=0-14 SHARD_VARIANTS="clustered unclustered"
section_shards() {
    local n=$shard_rows count k v parts cpu_before label labels bin round=0
    ensure_sample "$n"
    load_mark() { echo "$1: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/shards-loads.txt"; }
    rm -f "$WORK/shards-loads.txt"
    # Rows per non-empty tile of zoom 14 by the rows' points: `shards-fit` derives from them each
    # zoom's tiles, the cells of its clustered tiles and the rows those read (their margins too).
    psql_ -A -F' ' -t >"$WORK/shards-census.txt" <<SQL
SELECT floor((ST_X(m) + 20037508.342789244) / (40075016.685578488 / 16384))::int8 AS x,
       floor((20037508.342789244 - ST_Y(m)) / (40075016.685578488 / 16384))::int8 AS y,
       count(*)
FROM (SELECT ST_Transform(location, 3857) AS m FROM bench_$n.facilities
      WHERE location IS NOT NULL) r
GROUP BY 1, 2;
SQL
    for v in $SHARD_VARIANTS; do
        make_config "$n" "$v" "$WORK/shards-$v.toml"
        load_mark "$v start"
        for count in $SHARD_COUNTS; do
            log "shards ($v): shard-plan --shards $count --dry-run"
            /usr/bin/time -v -o "$WORK/shards-$v-plan-$count.time" "$BIN" -q shard-plan \
                --config "$WORK/shards-$v.toml" --zoom "$SHARD_ZOOM" \
                --output "$WORK/shards-$v.mbtiles" --shards "$count" --dry-run \
                >"$WORK/shards-$v-plan-$count.txt"
        done
        # Reads every row once (clustered low zooms are cheap), so the full seed does not pay for
        # a cold cache that the shards after it would not.
        log "shards ($v): warm-up seed z0-2 (discarded)"
        "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/shards-$v.toml" \
            --zoom 0-2 --output "$WORK/shards-warmup.mbtiles" >/dev/null
        log "shards ($v): full seed, zoom $SHARD_ZOOM (the baseline)"
        cpu_before=$(reaped_cpu)
        timed_seed "shards-$v-full" --config "$WORK/shards-$v.toml" --zoom "$SHARD_ZOOM" \
            --output "$WORK/shards-$v-full.mbtiles"
        cpu_since "$cpu_before" >"$WORK/shards-$v-full.pgcpu"
        load_mark "$v after the full seed"
        for count in $SHARD_REAL; do
            # This binary's planner and, with --baseline-bin, the baseline's, alternated: which
            # goes first changes with every count and variant, so neither always meets the warmer
            # cache or the quieter machine.
            labels=(new)
            if [[ -n $baseline_bin ]]; then
                if (( round++ % 2 == 0 )); then labels=(new old); else labels=(old new); fi
            fi
            for label in "${labels[@]}"; do
                bin=$BIN
                [[ $label == new ]] || bin=$baseline_bin
                # The plan is stored first, so the shards run the plan printed here (none plans).
                /usr/bin/time -v -o "$WORK/shards-$v-real-$count-$label.time" "$bin" -q shard-plan \
                    --config "$WORK/shards-$v.toml" --zoom "$SHARD_ZOOM" \
                    --output "$WORK/shards-$v-$count-$label.mbtiles" --shards "$count" \
                    >"$WORK/shards-$v-real-$count-$label.txt"
                parts=()
                for ((k = 0; k < count; k++)); do
                    log "shards ($v, $label planner): seed --shard $k/$count"
                    cpu_before=$(reaped_cpu)
                    /usr/bin/time -v -o "$WORK/shards-$v-$count-$label-part-$k.time" "$bin" -q seed \
                        "${concurrency_args[@]}" --config "$WORK/shards-$v.toml" \
                        --zoom "$SHARD_ZOOM" --output "$WORK/shards-$v-$count-$label.mbtiles" \
                        --shard "$k/$count" --summary-json "$WORK/shards-$v-$count-$label-part-$k.json" \
                        >/dev/null
                    cpu_since "$cpu_before" >"$WORK/shards-$v-$count-$label-part-$k.pgcpu"
                    parts+=("$WORK/shards-$v-$count-$label.part-$k-of-$count.mbtiles")
                done
                log "shards ($v, $label planner): merge $count parts"
                /usr/bin/time -v -o "$WORK/shards-$v-$count-$label-merge.time" "$bin" -q merge \
                    "$WORK/shards-$v-$count-$label.mbtiles" "${parts[@]}" >/dev/null
                load_mark "$v after $count shards ($label planner)"
            done
        done
    done
    labels=(new)
    [[ -z $baseline_bin ]] || labels=(new old)
    python3 "$ROOT/scripts/bench_helpers.py" shards-report "$WORK" "$n" \
        "$SHARD_ZOOM" "$SHARD_VARIANTS" "$SHARD_REAL" "${labels[*]}" $SHARD_COUNTS || failed $?
    rm -f "$WORK"/shards*.mbtiles*
}

# --- capacity: database cores one process can keep busy ----------------------------------------

section_capacity() {
    local n schema label labels load_before args bin best_copy best_copy_cpu
    labels=(ours)
    [[ -z $baseline_bin ]] || labels+=(baseline-bin)
    for n in ${capacity_rows//,/ }; do
        schema=bench_$n
        ensure_sample "$n"
        make_config "$n" unclustered "$WORK/capacity.toml"
        sessions=${sessions:-$(( ${concurrency:-$pool_size} < cores ? ${concurrency:-$pool_size} : cores ))}
        args=(-q seed --config "$WORK/capacity.toml" --zoom "$zoom" "${concurrency_args[@]}")
        log "capacity: warm-up seed of $n rows (discarded)"
        "$BIN" "${args[@]}" --output "$WORK/capacity-warmup.mbtiles" >/dev/null
        rm -f "$WORK/capacity-warmup.mbtiles"
        mkdir -p "$WORK/capacity-$n"
        load_before=$(cut -d' ' -f1-3 /proc/loadavg)
        for label in "${labels[@]}"; do
            bin=$BIN
            [[ $label == ours ]] || bin=$baseline_bin
            log "capacity: measured seed of $n rows ($label)"
            python3 "$ROOT/scripts/thread_cpu.py" "$WORK/capacity-$n/$label.threads.json" -- \
                "$bin" "${args[@]}" --output "$WORK/capacity-$label.mbtiles" \
                --summary-json "$WORK/capacity-$n/$label.summary.json" >/dev/null
        done
        python3 "$ROOT/scripts/bench_helpers.py" tile-list "$WORK/capacity-ours.mbtiles" \
            "$buffer" "$extent" "$sessions" "$WORK/tiles.csv" >/dev/null
        tiles_table="$schema.bench_tiles_$$"
        load_tile_list "$tiles_table" "$WORK/tiles.csv"
        read -r best_copy best_copy_cpu < <(run_baseline "$sessions" copy)
        echo "$best_copy_cpu" >"$WORK/capacity-$n/baseline.pg"
        wc -l <"$WORK/tiles.csv" >"$WORK/capacity-$n/baseline.tiles"
        psql_ -c "DROP TABLE $tiles_table" >/dev/null
        tiles_table=
        BENCH_LOAD="$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" BENCH_ZOOM="z$zoom" \
            python3 "$ROOT/scripts/bench_capacity.py" "$WORK/capacity-$n" "$n" "${labels[@]}" \
            || failed $?
        if [[ -n $baseline_bin ]]; then
            local only_ours only_theirs differ same
            read -r only_ours only_theirs differ same < <(python3 "$ROOT/scripts/bench_helpers.py" \
                compare "$WORK/capacity-ours.mbtiles" "$WORK/capacity-baseline-bin.mbtiles")
            if ((only_ours + only_theirs + differ)); then
                echo "  WARNING: the tiles differ from --baseline-bin's: $only_ours only here," \
                    "$only_theirs only there, $differ with other bytes"
                failed 3
            else
                echo "  both binaries wrote the same $same tiles, byte for byte"
            fi
        fi
        rm -f "$WORK"/capacity-*.mbtiles*
    done
}

# --- validate: how long checking an output takes, beside the seed that wrote it ---------------

# The sample (--rows) seeded as sample-config.toml ships it (clustered, --zoom) into MBTiles, then:
# `validate` (container, every tile, metadata, agg_tiles_hash), `validate --against-db --all` (the
# whole pyramid rendered again and compared), and, when martin's `mbtiles` CLI is installed
# ($OAR_TILES_TEST_MBTILES_CLI, `mbtiles` on PATH, or where scripts/test.sh builds it),
# `mbtiles validate --agg-hash verify` on the same file, whose verdict should agree. The seed's own
# wall time is the baseline.
section_validate() {
    local mbtiles_cli=${OAR_TILES_TEST_MBTILES_CLI:-$(command -v mbtiles || true)} code
    local built=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/mbtiles-cli/bin/mbtiles
    [[ -n $mbtiles_cli || ! -x $built ]] || mbtiles_cli=$built
    ensure_sample "$rows"
    make_config "$rows" clustered "$WORK/validate.toml"
    rm -f "$WORK"/validate.mbtiles*
    log "validate: seed (the baseline)"
    timed_seed validate-seed --config "$WORK/validate.toml" --zoom "$zoom" \
        --output "$WORK/validate.mbtiles"
    log "validate: validate"
    code=0
    /usr/bin/time -v -o "$WORK/validate-plain.time" "$BIN" -q validate --json \
        "$WORK/validate.mbtiles" >"$WORK/validate-plain.json" || code=$?
    echo "$code" >"$WORK/validate-plain.code"
    log "validate: validate --against-db --all"
    code=0
    /usr/bin/time -v -o "$WORK/validate-db.time" "$BIN" -q validate --json \
        --config "$WORK/validate.toml" --against-db --all "$WORK/validate.mbtiles" \
        >"$WORK/validate-db.json" || code=$?
    echo "$code" >"$WORK/validate-db.code"
    rm -f "$WORK/validate-mbtiles.code"
    if [[ -n $mbtiles_cli ]]; then
        log "validate: $mbtiles_cli validate --agg-hash verify"
        code=0
        /usr/bin/time -v -o "$WORK/validate-martin.time" "$mbtiles_cli" validate \
            --agg-hash verify "$WORK/validate.mbtiles" >"$WORK/validate-martin.out" 2>&1 || code=$?
        echo "$code" >"$WORK/validate-mbtiles.code"
    fi
    python3 - "$WORK" "$rows" "$zoom" <<'PY' || failed $?
import json, os, re, sys
work, rows, zoom = sys.argv[1:]
def measure(name):
    text = open(f"{work}/{name}.time").read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), rss / 1024
seed_wall, seed_rss = measure("validate-seed")
tiles = json.load(open(f"{work}/validate-seed.json"))[0]["tiles_written"]
print(f"validate: {rows} facilities, zoom {zoom}, clustered, MBTiles of {tiles} tiles")
print(f"  {'seed (baseline)':<40} {seed_wall:8.2f} s  {seed_rss:8.1f} MB")
for name, label in (("validate-plain", "validate"), ("validate-db", "validate --against-db --all")):
    wall, rss = measure(name)
    report = json.load(open(f"{work}/{name}.json"))
    code = open(f"{work}/{name}.code").read().strip()
    problems = report["problems"]
    print(f"  {label:<40} {wall:8.2f} s  {rss:8.1f} MB  {wall / seed_wall:6.2f} x seed  exit {code}, {problems} problem(s)")
if os.path.exists(f"{work}/validate-mbtiles.code"):
    wall, rss = measure("validate-martin")
    code = open(f"{work}/validate-mbtiles.code").read().strip()
    ours = open(f"{work}/validate-plain.code").read().strip()
    agree = (code == "0") == (ours == "0")
    print(f"  {'mbtiles validate --agg-hash verify':<40} {wall:8.2f} s  {rss:8.1f} MB  exit {code}: {'agrees' if agree else 'DISAGREES'} with validate (exit {ours})")
    if not agree:
        print(open(f"{work}/validate-martin.out").read())
        sys.exit(3)
else:
    print("  mbtiles validate: not installed (scripts/test.sh installs it; set OAR_TILES_TEST_MBTILES_CLI)")
PY
    rm -f "$WORK"/validate.mbtiles*
}

# --- polygons: real polygons and lines, with and without generalisation ---------------------

# polygons_config FILE GENERALISATION: the two tilesets over $polygons_schema, every layer with the
# GENERALISATION keys (none: the defaults).
polygons_config() {
    local s=$polygons_schema keys=$2
    cat >"$1" <<TOML
[[tileset]]
name = "world"

[[tileset.layer]]
name = "countries"
table = "$s.countries"
id_column = "id"
attributes = ["name", "iso_a3"]
$keys

[[tileset.layer]]
name = "borders"
table = "$s.borders"
id_column = "id"
attributes = ["name"]
$keys

[[tileset]]
name = "nyc"

[[tileset.layer]]
name = "boroughs"
table = "$s.boroughs"
id_column = "id"
attributes = ["boroname"]
$keys

[[tileset.layer]]
name = "outlines"
table = "$s.outlines"
id_column = "id"
attributes = ["boroname"]
$keys
TOML
}

# polygons_load: the countries, the boroughs and their outlines, from scripts/geodata.sh, into
# a schema of the run's own ($polygons_schema, dropped at the end).
polygons_load() {
    local dir shapefile table
    dir=$("$ROOT/scripts/geodata.sh") || die "scripts/geodata.sh could not provide the data"
    if ! command -v ogr2ogr >/dev/null 2>&1; then
        # shellcheck source=scripts/apt.sh
        . "$ROOT/scripts/apt.sh"
        apt_install gdal-bin
    fi
    # Unique per run, so that concurrent benchmarks cannot collide; dropped at the end.
    polygons_schema=bench_polygons_$$
    psql_ -c "CREATE SCHEMA $polygons_schema"
    for shapefile in countries:naturalearth_lowres/naturalearth_lowres.shp boroughs:nybb/nybb.shp; do
        table=${shapefile%%:*}
        log "polygons: loading $dir/${shapefile#*:} into $polygons_schema.$table"
        # PRECISION=NO: the files declare numeric widths their values overflow.
        ogr2ogr -f PostgreSQL "PG:$DATABASE_URL" "$dir/${shapefile#*:}" -nln "$table" \
            -nlt PROMOTE_TO_MULTI -lco "SCHEMA=$polygons_schema" -lco GEOMETRY_NAME=geom \
            -lco FID=id -lco PRECISION=NO
    done
    psql_ <<SQL
CREATE TABLE $polygons_schema.borders AS
    SELECT id, name, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 4326) AS geom
    FROM $polygons_schema.countries;
CREATE TABLE $polygons_schema.outlines AS
    SELECT id, boroname, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 2263) AS geom
    FROM $polygons_schema.boroughs;
ALTER TABLE $polygons_schema.borders ADD PRIMARY KEY (id);
ALTER TABLE $polygons_schema.outlines ADD PRIMARY KEY (id);
CREATE INDEX ON $polygons_schema.borders USING gist (geom);
CREATE INDEX ON $polygons_schema.outlines USING gist (geom);
ANALYZE $polygons_schema.countries; ANALYZE $polygons_schema.boroughs;
ANALYZE $polygons_schema.borders; ANALYZE $polygons_schema.outlines;
SQL
}

section_polygons() {
    local round variant tileset load_before
    polygons_load
    polygons_config "$WORK/polygons-generalised.toml" ""
    polygons_config "$WORK/polygons-baseline.toml" $'simplify = 0.0\nmin_area = 0.0\nmin_length = 0.0'
    declare -A zooms=([world]=$polygon_world_zoom [nyc]=$polygon_nyc_zoom)
    log "polygons: warm-up seeds (discarded)"
    for tileset in world nyc; do
        "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/polygons-baseline.toml" \
            --tileset "$tileset" --zoom "${zooms[$tileset]}" \
            --output "$WORK/polygons-warmup.mbtiles" >/dev/null
        rm -f "$WORK"/polygons-warmup.mbtiles*
    done
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    for round in 1 2 3; do
        for tileset in world nyc; do
            for variant in generalised baseline; do
                log "polygons: round $round, $tileset, $variant"
                rm -f "$WORK/polygons-$tileset-$variant.mbtiles"*
                timed_seed "polygons-$tileset-$variant-$round" \
                    --config "$WORK/polygons-$variant.toml" --tileset "$tileset" \
                    --zoom "${zooms[$tileset]}" --output "$WORK/polygons-$tileset-$variant.mbtiles"
            done
        done
    done
    BENCH_LOAD="$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
    python3 - "$WORK" "$polygon_world_zoom" "$polygon_nyc_zoom" <<'PY' || failed $?
import json, os, re, statistics, sys
work, world_zoom, nyc_zoom = sys.argv[1:]
def measure(name):
    text = open(f"{work}/{name}.time").read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), rss / 1024
def kib(n):
    return f"{n / 1024:.1f}"
variants = ("generalised", "baseline")
print("polygons: default generalisation (simplify, min_area, min_length 0.25 px) against none;"
      " median wall of 3 runs each, peak RSS")
print(f"  load average before / after: {os.environ.get('BENCH_LOAD', '?')}")
for tileset, zoom, what in (("world", world_zoom, "177 countries + their boundaries as lines"),
                            ("nyc", nyc_zoom, "5 boroughs (EPSG:2263) + their outlines")):
    runs = {}
    for v in variants:
        times = [measure(f"polygons-{tileset}-{v}-{r}") for r in (1, 2, 3)]
        summary = json.load(open(f"{work}/polygons-{tileset}-{v}-1.json"))[0]
        runs[v] = (statistics.median(t for t, _ in times), max(r for _, r in times), summary)
    print(f"\n  {tileset}, zoom {zoom}: {what}")
    for v in variants:
        wall, rss, s = runs[v]
        largest = max((p for p in s["per_zoom"] if p["written"]),
                      key=lambda p: p["largest_tile"]["bytes"])["largest_tile"]
        print(f"    {v:<12} {wall:7.2f} s  {rss:7.1f} MB  {s['tiles_written']:>7} tiles"
              f"  {kib(s['bytes_written']):>9} KiB  largest {largest['tile']} {kib(largest['bytes'])} KiB")
    g, b = runs["generalised"], runs["baseline"]
    print(f"    generalised / baseline: wall {g[0] / b[0]:.3f}, bytes"
          f" {g[2]['bytes_written'] / b[2]['bytes_written']:.3f}")
    head = "tiles      KiB   largest tile      KiB"
    print(f"    {'':4} | {'generalised':^{len(head)}} | {'baseline':^{len(head)}} | bytes")
    print(f"    zoom | {head} | {head} | g / b")
    per = {v: {p["zoom"]: p for p in runs[v][2]["per_zoom"]} for v in variants}
    for z in sorted(set(per["generalised"]) | set(per["baseline"])):
        cells = []
        for v in variants:
            p = per[v].get(z)
            if p and p["written"]:
                t = p["largest_tile"]
                cells.append(f"{p['written']:>5} {kib(p['bytes']):>8}   {t['tile']:<14} {kib(t['bytes']):>6}")
            else:
                cells.append(f"{0:>5} {'-':>8}   {'-':<14} {'-':>6}")
        bg, bb = (per[v].get(z, {}).get("bytes", 0) for v in variants)
        ratio = f"{bg / bb:5.3f}" if bb else "-"
        print(f"    {z:>4} | {cells[0]} | {cells[1]} | {ratio}")
PY
    rm -f "$WORK"/polygons-*.mbtiles*
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA $polygons_schema CASCADE"
    polygons_schema=
}

# --- generalise: what generalisation and projected sources cost ------------------------------

section_generalise() {
    local round bin label variant tileset zoom load_before
    local -a labels=(ours)
    [[ -z $baseline_bin ]] || labels+=(baseline-bin)
    polygons_load
    polygons_config "$WORK/generalise-default.toml" ""
    polygons_config "$WORK/generalise-off.toml" $'simplify = 0.0\nmin_area = 0.0\nmin_length = 0.0'
    # tileset:variant:zoom of each timed seed.
    local -a seeds=("world:default:$polygon_world_zoom" "world:off:$polygon_world_zoom"
        "nyc:default:$generalise_nyc_zoom")
    log "generalise: warm-up seed (discarded)"
    "$BIN" -q seed "${concurrency_args[@]}" --config "$WORK/generalise-off.toml" \
        --tileset world --zoom "$polygon_world_zoom" --output "$WORK/generalise-warmup.mbtiles" >/dev/null
    rm -f "$WORK"/generalise-warmup.mbtiles*
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    for ((round = 1; round <= generalise_rounds; round++)); do
        for seed in "${seeds[@]}"; do
            IFS=: read -r tileset variant zoom <<<"$seed"
            for label in "${labels[@]}"; do
                bin=$BIN
                [[ $label == ours ]] || bin=$baseline_bin
                log "generalise: round $round, $tileset $variant z$zoom, $label"
                rm -f "$WORK/generalise-$tileset-$variant-$label.mbtiles"*
                /usr/bin/time -v -o "$WORK/generalise-$tileset-$variant-$label-$round.time" \
                    "$bin" -q seed "${concurrency_args[@]}" --config "$WORK/generalise-$variant.toml" \
                    --tileset "$tileset" --zoom "$zoom" \
                    --output "$WORK/generalise-$tileset-$variant-$label.mbtiles" \
                    --summary-json "$WORK/generalise-$tileset-$variant-$label-$round.json" >/dev/null
            done
        done
    done
    BENCH_LOAD="$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
    python3 - "$WORK" "$generalise_rounds" "${labels[@]}" <<'PY' || failed $?
import gzip, json, os, re, sqlite3, statistics, sys
work, rounds, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def wall(name):
    text = open(f"{work}/{name}.time").read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
def median_wall(stem, label):
    return statistics.median(wall(f"generalise-{stem}-{label}-{r}") for r in range(1, rounds + 1))
def tiles(stem, label):
    return json.load(open(f"{work}/generalise-{stem}-{label}-1.json"))[0]["tiles_written"]
print(f"generalise: median wall of {rounds} round(s); load average before / after:"
      f" {os.environ.get('BENCH_LOAD', '?')}")
for label in labels:
    g, o = median_wall("world-default", label), median_wall("world-off", label)
    n = median_wall("nyc-default", label)
    print(f"  {label:<12} world default {g:7.2f} s, simplify = 0 {o:7.2f} s: ratio {g / o:.3f}"
          f" (target <= 1.10);  nyc default {tiles('nyc-default', label)} tiles in {n:.2f} s:"
          f" {tiles('nyc-default', label) / n:.1f} tiles/s")
if len(labels) == 2:
    ours, base = (median_wall("nyc-default", l) for l in labels)
    print(f"  nyc tiles/s, ours / baseline-bin: {base / ours:.2f}x (target >= 4)")
    def mvts(path):
        rows = sqlite3.connect(path).execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        return {(z, x, y): gzip.decompress(d) if d[:2] == b"\x1f\x8b" else d for z, x, y, d in rows}
    differ = 0
    for stem in ("world-default", "world-off", "nyc-default"):
        a, b = (mvts(f"{work}/generalise-{stem}-{l}.mbtiles") for l in labels)
        keys = set(a) | set(b)
        bad = sorted(k for k in keys if a.get(k) != b.get(k))
        differ += len(bad)
        print(f"  {stem}: {len(keys)} tiles, {len(bad)} differ from baseline-bin's"
              + (f" (first: {bad[:5]})" if bad else ""))
    if differ:
        sys.exit(3)
PY
    rm -f "$WORK"/generalise-*.mbtiles*
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA $polygons_schema CASCADE"
    polygons_schema=
}

# --- moved: what a geometry-only edit costs ---------------------------------------------------

section_moved() {
    local s changes vertex x y moved_vertex bbox world
    polygons_load
    s=$polygons_schema
    changes=${s}_changes
    # A vertex inside a ring of Russia's largest part, on its southern border.
    IFS='|' read -r x y vertex < <(psql_ -At <<SQL
SELECT ST_X(d.geom), ST_Y(d.geom), substring(ST_AsText(d.geom) FROM '\((.*)\)')
FROM $s.countries c, ST_DumpPoints(c.geom) d
WHERE c.name = 'Russia' AND d.path[3] > 2
  AND d.path[3] < ST_NPoints(ST_ExteriorRing(ST_GeometryN(c.geom, d.path[1]))) - 1
ORDER BY abs(ST_X(d.geom) - 90) + abs(ST_Y(d.geom) - 50) LIMIT 1
SQL
    )
    [[ -n $vertex ]] || die "moved: no vertex of Russia found"
    moved_vertex=$(python3 -c "import sys; x, y = sys.argv[1].split(); print(x, repr(float(y) + 0.01))" "$vertex")
    bbox=$(python3 -c "import sys; x, y = map(float, sys.argv[1:]); print(f'{x - 1.5},{y - 1},{x + 1.5},{y + 1}')" "$x" "$y")
    world=-180,-85.05112878,180,85.05112878
    polygons_config "$WORK/moved.toml" ""
    sed -i "1i [changes]\nschema = \"$changes\"\n" "$WORK/moved.toml"
    "$BIN" -q changes install --config "$WORK/moved.toml"
    log "moved: full seed of $bbox at zoom $moved_zoom"
    timed_seed moved-full-1 --config "$WORK/moved.toml" --tileset world --zoom "$moved_zoom" \
        --bbox "$bbox" --output "$WORK/moved.mbtiles"
    # moved_vertex_to FROM TO: the vertex at FROM (`x y`) of Russia's shapes put at TO.
    moved_vertex_to() {
        psql_ <<SQL
UPDATE $s.countries SET geom = ST_GeomFromText(replace(ST_AsText(geom), ',$1,', ',$2,'), 4326)::geometry(MultiPolygon, 4326) WHERE name = 'Russia';
UPDATE $s.borders SET geom = ST_GeomFromText(replace(ST_AsText(geom), ',$1,', ',$2,'), 4326)::geometry(MultiLineString, 4326) WHERE name = 'Russia';
SQL
    }
    moved_vertex_to "$vertex" "$moved_vertex"
    log "moved: the move's plan over the world (dry run)"
    "$BIN" -q seed --config "$WORK/moved.toml" --tileset world --zoom "$moved_zoom" --bbox "$world" \
        --output "$WORK/moved.mbtiles" --dirty --dry-run --summary-json "$WORK/moved-plan.json" >/dev/null
    log "moved: the move's reseed of the region"
    timed_seed moved-dirty --config "$WORK/moved.toml" --tileset world --zoom "$moved_zoom" \
        --bbox "$bbox" --output "$WORK/moved.mbtiles" --dirty
    log "moved: a second full seed of the region, to compare"
    timed_seed moved-full-2 --config "$WORK/moved.toml" --tileset world --zoom "$moved_zoom" \
        --bbox "$bbox" --output "$WORK/moved-full-2.mbtiles"
    cp "$WORK/moved.mbtiles" "$WORK/moved-reseeded.mbtiles"
    log "moved: the baseline, Russia renamed, reseeded"
    psql_ -c "UPDATE $s.countries SET name = 'Russian Federation' WHERE name = 'Russia';
              UPDATE $s.borders SET name = 'Russian Federation' WHERE name = 'Russia'"
    timed_seed moved-renamed --config "$WORK/moved.toml" --tileset world --zoom "$moved_zoom" \
        --bbox "$bbox" --output "$WORK/moved.mbtiles" --dirty
    local area
    area=$(psql_ -At -c "SELECT ST_Area(ST_Transform(ST_Intersection(geom, ST_MakeEnvelope(-180, -85.05112878, 180, 85.05112878, 4326)), 3857))
                         FROM $s.countries WHERE name = 'Russian Federation'")
    python3 - "$WORK" "$moved_zoom" "$bbox" "$area" <<'PY' || failed $?
import gzip, json, re, sqlite3, sys
work, zooms, bbox, area = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def run(name):
    text = open(f"{work}/{name}.time").read()
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = clock.groups()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    summary = json.load(open(f"{work}/{name}.json"))[0]
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), rss, summary
lo, hi = map(int, zooms.split("-"))
world = 2 * 20037508.342789244
covered = sum(area / (world / 2 ** z) ** 2 for z in range(lo, hi + 1))
plan = json.load(open(f"{work}/moved-plan.json"))[0]["plan"]
planned = sum(z["tiles"] for z in plan["dirty_tiles"])
print(f"moved: Russia, one border vertex moved by about 1.1 km, zooms {zooms}")
print(f"  world, dry run: {planned} tiles planned"
      + (" (the whole pyramid)" if plan["everything"] else "")
      + f"; Russia's area covers about {covered:,.0f} tiles at these zooms:"
      f" {100 * planned / covered:.4f}% (target <= 1%)")
print(f"  region {bbox}:")
for label, name in (("full seed", "moved-full-1"), ("vertex moved, --dirty", "moved-dirty"),
                    ("renamed, --dirty (baseline)", "moved-renamed")):
    wall, rss, s = run(name)
    print(f"    {label:<28} {s['tiles_queried']:>7} tiles rendered {s['tiles_written']:>7} written"
          f" {wall:7.2f} s {rss:7.1f} MB")
moved, renamed = run("moved-dirty")[2]["tiles_queried"], run("moved-renamed")[2]["tiles_queried"]
print(f"    vertex moved / renamed: {moved / renamed:.4f} of the tiles rendered")
def mvts(path):
    rows = sqlite3.connect(path).execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
    return {(z, x, y): gzip.decompress(d) if d[:2] == b"\x1f\x8b" else d for z, x, y, d in rows}
a, b = mvts(f"{work}/moved-reseeded.mbtiles"), mvts(f"{work}/moved-full-2.mbtiles")
bad = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
print(f"    reseed against a full seed: {len(set(a) | set(b))} tiles, {len(bad)} differ"
      + (f" (first: {bad[:5]})" if bad else ""))
if bad:
    sys.exit(3)
PY
    "$BIN" -q changes uninstall --config "$WORK/moved.toml" || true
    rm -f "$WORK"/moved*.mbtiles*
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA $polygons_schema CASCADE; DROP SCHEMA IF EXISTS $changes CASCADE"
    polygons_schema=
}

# --- subtrees: what an attribute edit of a huge polygon costs -------------------------------

section_subtrees() {
    local s changes lo hi low world speck area
    polygons_load
    s=$polygons_schema
    changes=${s}_changes
    lo=${subtrees_zoom%-*} hi=${subtrees_zoom#*-}
    low=$((hi < 11 ? hi : 11))
    ((lo <= low)) || low=$lo
    world=-180,-85.05112878,180,85.05112878
    # Open ocean: the first seed stores (almost) nothing and records the output's watermark.
    speck=-150,-40,-149.99,-39.99
    polygons_config "$WORK/subtrees.toml" ""
    sed -i "1i [changes]\nschema = \"$changes\"\n" "$WORK/subtrees.toml"
    sed 's/^name = "world"$/name = "world"\nlisted_tiles = 100000000/' "$WORK/subtrees.toml" >"$WORK/subtrees-listed.toml"
    sed 's/^name = "world"$/name = "world"\nlisted_tiles = 20000/' "$WORK/subtrees.toml" >"$WORK/subtrees-forced.toml"
    "$BIN" -q changes install --config "$WORK/subtrees.toml"
    log "subtrees: full seed of the world at zoom $lo-$low (the baseline's output)"
    "$BIN" -q seed --config "$WORK/subtrees.toml" --tileset world --zoom "$lo-$low" \
        --bbox "$world" --output "$WORK/subtrees-listed.mbtiles" >/dev/null
    cp "$WORK/subtrees-listed.mbtiles" "$WORK/subtrees-forced.mbtiles"
    "$BIN" -q seed --config "$WORK/subtrees.toml" --tileset world --zoom "$subtrees_zoom" \
        --bbox "$speck" --output "$WORK/subtrees-target.mbtiles" >/dev/null
    psql_ -c "UPDATE $s.countries SET name = 'Russian Federation' WHERE name = 'Russia';
              UPDATE $s.borders SET name = 'Russian Federation' WHERE name = 'Russia'"
    log "subtrees: Russia renamed, reseeded at zoom $lo-$low listing every tile (baseline)"
    timed_seed subtrees-listed --config "$WORK/subtrees-listed.toml" --tileset world \
        --zoom "$lo-$low" --bbox "$world" --output "$WORK/subtrees-listed.mbtiles" --dirty
    log "subtrees: the same past listed_tiles = 20000, walking subtrees"
    timed_seed subtrees-forced --config "$WORK/subtrees-forced.toml" --tileset world \
        --zoom "$lo-$low" --bbox "$world" --output "$WORK/subtrees-forced.mbtiles" --dirty
    log "subtrees: Russia renamed, reseeded at zoom $subtrees_zoom with the default listed_tiles"
    timed_seed subtrees-target --config "$WORK/subtrees.toml" --tileset world \
        --zoom "$subtrees_zoom" --bbox "$world" --output "$WORK/subtrees-target.mbtiles" --dirty
    area=$(psql_ -At -c "SELECT ST_Area(ST_Transform(ST_Intersection(geom, ST_MakeEnvelope(-180, -85.05112878, 180, 85.05112878, 4326)), 3857))
                         FROM $s.countries WHERE name = 'Russian Federation'")
    python3 - "$ROOT/scripts" "$WORK" "$subtrees_zoom" "$lo-$low" "$area" <<'PY' || failed $?
import sys
sys.path.insert(0, sys.argv[1])
import bench_helpers as h
work, zooms, low, area = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
def run(name):
    wall, _, rss = h.time_v(f"{work}/{name}.time")
    return wall, rss, h.summary(f"{work}/{name}.json")
def covered(zooms):
    lo, hi = map(int, zooms.split("-"))
    world = 2 * 20037508.342789244
    return sum(area / (world / 2 ** z) ** 2 for z in range(lo, hi + 1))
print(f"subtrees: Russia renamed (countries and borders), seed --dirty over the world")
for label, name, zooms in (("every dirty tile listed (baseline)", "subtrees-listed", low),
                           ("listed_tiles = 20000: subtrees", "subtrees-forced", low),
                           ("default listed_tiles", "subtrees-target", zooms)):
    wall, rss, s = run(name)
    print(f"  zoom {zooms:<6} {label:<36} {s['tiles_queried']:>9} tiles rendered"
          f" {s['tiles_written']:>9} written ({100 * s['tiles_written'] / max(s['tiles_queried'], 1):5.1f}%)"
          f" {wall:8.1f} s {rss:7.1f} MB peak RSS")
    if name == "subtrees-target":
        print(f"  Russia's area covers about {covered(zooms):,.0f} tiles at zoom {zooms};"
              f" peak RSS {rss:.1f} MB (target <= 256 MB)")
def mvts(path):
    return {(z, x, y): mvt for z, x, y, mvt in h.mbtiles_tiles(path)}
a, b = mvts(f"{work}/subtrees-listed.mbtiles"), mvts(f"{work}/subtrees-forced.mbtiles")
bad = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
only_a = sum(1 for k in bad if k not in b)
only_b = sum(1 for k in bad if k not in a)
print(f"  zoom {low}: listed against subtrees: {len(set(a) | set(b))} tiles, {len(bad)} differ"
      + (f" ({only_a} only listed, {only_b} only walked; first: {bad[:5]})" if bad else ""))
if bad:
    sys.exit(3)
PY
    "$BIN" -q changes uninstall --config "$WORK/subtrees.toml" || true
    rm -f "$WORK"/subtrees*.mbtiles*
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA $polygons_schema CASCADE; DROP SCHEMA IF EXISTS $changes CASCADE"
    polygons_schema=
}

# --- changelog: reading the change log of bulk statements ---------------------------------------

# section_changelog: see the header. Each size's UPDATE is one statement, so one log row holds
# all its geometries in arrays; the baseline reads it as the tool did before issue 62.
section_changelog() {
    local n=144563 zoom=0-12 cap=300 config=$WORK/changelog.toml rows start before read
    changelog_schema=bench_changelog
    log "changelog: loading $n facilities into $changelog_schema.facilities"
    "$ROOT/scripts/load-sample.sh" --rows "$n" --schema "$changelog_schema" --table facilities
    read -r extent buffer layer pool_size size_budget < <(
        python3 "$ROOT/scripts/bench_helpers.py" config "$ROOT/sample-config.toml" "$config" \
            "$changelog_schema.facilities" --changes-schema "${CHANGES_SCHEMA}_changelog" \
            --cluster "$cluster_spec"
    )
    [[ -n ${size_budget:-} ]] || die "could not derive a config from $ROOT/sample-config.toml"
    "$BIN" -q changes install --config "$config" >&2
    log "changelog: full seed of a zoom $zoom tree"
    timed_seed changelog-full --config "$config" --zoom "$zoom" --output "$WORK/changelog-tree/"
    : >"$WORK/changelog.txt"
    # As registries change data: a contributor's country (1,994 rows), two countries (17,569),
    # and most of the table at once (100,000).
    local -A where=([1994]="country_code = 'LK'" [17569]="country_code IN ('VN', 'TR')"
                    [100000]="id <= 100000")
    for rows in 1994 17569 100000; do
        psql_ -c "UPDATE $changelog_schema.facilities SET name = name || ' *' WHERE ${where[$rows]}"
        log "changelog: $rows rows in one UPDATE; the read as before issue 62 (at most $cap s)"
        start=$(now)
        if PGOPTIONS="-c statement_timeout=${cap}s" psql_ -o /dev/null \
            -v log="${CHANGES_SCHEMA}_changelog.change_log" -v table="$changelog_schema.facilities" \
            -f "$ROOT/scripts/bench_changelog_before.sql" 2>/dev/null; then
            before=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
        else
            before=">$cap"
        fi
        log "changelog: $rows rows in one UPDATE; seed --dirty"
        /usr/bin/time -v -o "$WORK/changelog-$rows.time" "$BIN" seed "${concurrency_args[@]}" \
            --config "$config" --zoom "$zoom" --output "$WORK/changelog-tree/" --dirty \
            --summary-json "$WORK/changelog-$rows.json" >/dev/null 2>"$WORK/changelog-$rows.log" \
            || { log "changelog: seed --dirty failed: $(tail -3 "$WORK/changelog-$rows.log")"; failed 1; }
        read=$(sed -n 's/.*change log read in \([0-9.]*\) s.*/\1/p' "$WORK/changelog-$rows.log" | head -1)
        echo "$rows $before ${read:-?}" >>"$WORK/changelog.txt"
    done
    "$BIN" -q changes uninstall --config "$config" >&2
    psql_ -c "SET client_min_messages = warning; DROP SCHEMA $changelog_schema CASCADE" >/dev/null
    changelog_schema=
    python3 - "$ROOT/scripts" "$WORK" "$zoom" <<'PY' || failed $?
import sys
sys.path.insert(0, sys.argv[1])
import bench_helpers as h
work, zoom = sys.argv[2], sys.argv[3]
full, _, _ = h.time_v(f"{work}/changelog-full.time")
print(f"changelog: one UPDATE of N names on 144,563 rows under change capture, zoom {zoom} tree"
      f" (full seed {full:.1f} s)")
print(f"  {'rows':>7} {'read before':>12} {'per 1k':>8} {'read now':>9} {'per 1k':>8}"
      f" {'seed --dirty':>13} {'x full':>7}")
for line in open(f"{work}/changelog.txt"):
    rows, before, now = line.split()
    per = lambda s: f"{1000 * float(s) / int(rows):8.3f}" if s[0].isdigit() else f"{'-':>8}"
    wall, _, _ = h.time_v(f"{work}/changelog-{rows}.time")
    print(f"  {int(rows):>7} {before + ' s':>12} {per(before)} {now + ' s':>9} {per(now)}"
          f" {wall:11.1f} s {wall / full:7.2f}")
PY
}

# --- run ------------------------------------------------------------------------------------

first=1
for s in "${section_list[@]}"; do
    ((first)) || echo
    first=0
    "section_${s//-/_}"
done
exit "$status"
