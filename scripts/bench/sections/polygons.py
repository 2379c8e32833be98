"""polygons and generalise: real polygons and lines, with and without generalisation, and what
generalisation and projected sources cost (issue 46). See the sections' entries in
`python3 -m bench --help`.

The data (Natural Earth's countries, New York's boroughs, from scripts/geodata.sh) is loaded by
polygons_load into a schema of the run's own, which moved.py uses too.
"""
import gzip
import os
import shutil
import sqlite3
import statistics
import subprocess
from pathlib import Path

from bench.measure import kib, report, summary, time_v

# The layers' keys of the baseline variant: no generalisation at all.
NO_GENERALISATION = "simplify = 0.0\nmin_area = 0.0\nmin_length = 0.0"
# (tileset, layer, table, attributes) of polygons_config, in order.
LAYERS = (("world", "countries", '["name", "iso_a3"]'), ("world", "borders", '["name"]'),
          ("nyc", "boroughs", '["boroname"]'), ("nyc", "outlines", '["boroname"]'))

DERIVED_SQL = """\
CREATE TABLE {s}.borders AS
    SELECT id, name, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 4326) AS geom
    FROM {s}.countries;
CREATE TABLE {s}.outlines AS
    SELECT id, boroname, ST_Multi(ST_Boundary(geom))::geometry(MultiLineString, 2263) AS geom
    FROM {s}.boroughs;
ALTER TABLE {s}.borders ADD PRIMARY KEY (id);
ALTER TABLE {s}.outlines ADD PRIMARY KEY (id);
CREATE INDEX ON {s}.borders USING gist (geom);
CREATE INDEX ON {s}.outlines USING gist (geom);
ANALYZE {s}.countries; ANALYZE {s}.boroughs;
ANALYZE {s}.borders; ANALYZE {s}.outlines;
"""


def polygons_config_text(schema, keys):
    """The two tilesets (world: countries and borders; nyc: boroughs and outlines) over SCHEMA,
    every layer with the KEYS lines ('': the defaults)."""
    out = []
    tileset = None
    for ts, layer, attributes in LAYERS:
        if ts != tileset:
            if tileset is not None:
                out.append("")
            out += ["[[tileset]]", f'name = "{ts}"', ""]
            tileset = ts
        else:
            out.append("")
        out += ["[[tileset.layer]]", f'name = "{layer}"', f'table = "{schema}.{layer}"',
                'id_column = "id"', f"attributes = {attributes}", keys]
    return "\n".join(out) + "\n"


def polygons_config(path, schema, keys):
    """Writes polygons_config_text to PATH."""
    Path(path).write_text(polygons_config_text(schema, keys), encoding="utf-8")


def drop_polygons_schema(b, schema):
    """The run's polygon schema and its change schema, dropped."""
    b.psql(f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE;"
           f" DROP SCHEMA IF EXISTS {schema}_changes CASCADE", check=False, out=subprocess.DEVNULL)


def ensure_ogr2ogr(b):
    """GDAL's ogr2ogr, installed with scripts/apt.sh when missing."""
    if shutil.which("ogr2ogr") is None:
        subprocess.run(["bash", "-c", '. "$1" && apt_install gdal-bin', "bash", str(b.scripts("apt.sh"))],
                       check=True)


def polygons_load(b):
    """The countries, the boroughs and their outlines, from scripts/geodata.sh, into a schema of
    the run's own (dropped at exit unless the section drops it). Returns (schema, unregister)."""
    done = subprocess.run([str(b.scripts("geodata.sh"))], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        b.die("scripts/geodata.sh could not provide the data")
    data = done.stdout.strip()
    ensure_ogr2ogr(b)
    # Unique per run, so that concurrent benchmarks cannot collide.
    schema = f"bench_polygons_{os.getpid()}"
    unregister = b.on_cleanup(lambda: drop_polygons_schema(b, schema))
    b.psql(f"CREATE SCHEMA {schema}", out=None)
    for table, shapefile in (("countries", "naturalearth_lowres/naturalearth_lowres.shp"),
                             ("boroughs", "nybb/nybb.shp")):
        b.log(f"polygons: loading {data}/{shapefile} into {schema}.{table}")
        # PRECISION=NO: the files declare numeric widths their values overflow.
        subprocess.run(["ogr2ogr", "-f", "PostgreSQL", f"PG:{b.database_url}", f"{data}/{shapefile}",
                        "-nln", table, "-nlt", "PROMOTE_TO_MULTI", "-lco", f"SCHEMA={schema}",
                        "-lco", "GEOMETRY_NAME=geom", "-lco", "FID=id", "-lco", "PRECISION=NO"],
                       check=True)
    b.psql(DERIVED_SQL.format(s=schema), out=None)
    return schema, unregister


def drop_loaded(b, schema, unregister):
    """The section's schema dropped at its end, as bash's section did."""
    b.psql(f"SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE", out=None)
    unregister()


def remove_outputs(work, pattern):
    """The work directory's files matching pattern."""
    for path in work.glob(pattern):
        path.unlink()


# --- polygons ---------------------------------------------------------------------------------

def section_polygons(b):
    """The polygons section: warm-ups, three rounds of each tileset and variant, the report."""
    schema, unregister = polygons_load(b)
    w = b.work
    polygons_config(w / "polygons-generalised.toml", schema, "")
    polygons_config(w / "polygons-baseline.toml", schema, NO_GENERALISATION)
    zooms = {"world": b.opts.polygon_world_zoom, "nyc": b.opts.polygon_nyc_zoom}
    b.log("polygons: warm-up seeds (discarded)")
    for tileset in ("world", "nyc"):
        b.tool("-q", "seed", *b.concurrency_args(), "--config", str(w / "polygons-baseline.toml"),
               "--tileset", tileset, "--zoom", zooms[tileset], "--output", str(w / "polygons-warmup.mbtiles"),
               stdout=subprocess.DEVNULL)
        remove_outputs(w, "polygons-warmup.mbtiles*")
    load_before = b.load_average()
    for round_ in (1, 2, 3):
        for tileset in ("world", "nyc"):
            for variant in ("generalised", "baseline"):
                b.log(f"polygons: round {round_}, {tileset}, {variant}")
                remove_outputs(w, f"polygons-{tileset}-{variant}.mbtiles*")
                b.timed_seed(f"polygons-{tileset}-{variant}-{round_}", "--config",
                             str(w / f"polygons-{variant}.toml"), "--tileset", tileset,
                             "--zoom", zooms[tileset], "--output", str(w / f"polygons-{tileset}-{variant}.mbtiles"))
    report(b, polygons_report, w, zooms["world"], zooms["nyc"], f"{load_before} / {b.load_average()}")
    remove_outputs(w, "polygons-*.mbtiles*")
    drop_loaded(b, schema, unregister)


def polygon_runs(work, tileset, variant):
    """(median wall of the 3 rounds, largest peak RSS, the first round's summary)."""
    times = [time_v(f"{work}/polygons-{tileset}-{variant}-{r}.time") for r in (1, 2, 3)]
    return (statistics.median(t for t, _, _ in times), max(r for _, _, r in times),
            summary(f"{work}/polygons-{tileset}-{variant}-1.json"))


def zoom_cell(p):
    """One variant's cells of a zoom's row: tiles, KiB, the largest tile and its KiB."""
    if p and p["written"]:
        t = p["largest_tile"]
        return f"{p['written']:>5} {kib(p['bytes']):>8}   {t['tile']:<14} {kib(t['bytes']):>6}"
    return f"{0:>5} {'-':>8}   {'-':<14} {'-':>6}"


def print_zooms(runs):
    """The per-zoom table of both variants."""
    head = "tiles      KiB   largest tile      KiB"
    print(f"    {'':4} | {'generalised':^{len(head)}} | {'baseline':^{len(head)}} | bytes")
    print(f"    zoom | {head} | {head} | g / b")
    per = {v: {p["zoom"]: p for p in runs[v][2]["per_zoom"]} for v in runs}
    for z in sorted(set(per["generalised"]) | set(per["baseline"])):
        cells = [zoom_cell(per[v].get(z)) for v in ("generalised", "baseline")]
        bg, bb = (per[v].get(z, {}).get("bytes", 0) for v in ("generalised", "baseline"))
        ratio = f"{bg / bb:5.3f}" if bb else "-"
        print(f"    {z:>4} | {cells[0]} | {cells[1]} | {ratio}")


def polygons_report(work, world_zoom, nyc_zoom, load="?"):
    """The polygons section's report from the files it leaves in WORK."""
    print("polygons: default generalisation (simplify, min_area, min_length 0.25 px) against none;"
          " median wall of 3 runs each, peak RSS")
    print(f"  load average before / after: {load}")
    for tileset, zoom, what in (("world", world_zoom, "177 countries + their boundaries as lines"),
                                ("nyc", nyc_zoom, "5 boroughs (EPSG:2263) + their outlines")):
        runs = {v: polygon_runs(work, tileset, v) for v in ("generalised", "baseline")}
        print(f"\n  {tileset}, zoom {zoom}: {what}")
        for v, (wall, rss, s) in runs.items():
            largest = max((p for p in s["per_zoom"] if p["written"]),
                          key=lambda p: p["largest_tile"]["bytes"])["largest_tile"]
            print(f"    {v:<12} {wall:7.2f} s  {rss:7.1f} MB  {s['tiles_written']:>7} tiles"
                  f"  {kib(s['bytes_written']):>9} KiB  largest {largest['tile']} {kib(largest['bytes'])} KiB")
        g, b = runs["generalised"], runs["baseline"]
        print(f"    generalised / baseline: wall {g[0] / b[0]:.3f}, bytes"
              f" {g[2]['bytes_written'] / b[2]['bytes_written']:.3f}")
        print_zooms(runs)
    return 0


# --- generalise ---------------------------------------------------------------------------------

def generalise_seeds(world_zoom, nyc_zoom):
    """(tileset, variant, zoom) of each timed seed of a round."""
    return (("world", "default", world_zoom), ("world", "off", world_zoom), ("nyc", "default", nyc_zoom))


def generalise_labels(baseline_bin):
    """The binaries measured: `ours`, then `baseline-bin` given --baseline-bin."""
    return ["ours", "baseline-bin"] if baseline_bin else ["ours"]


def section_generalise(b):
    """The generalise section: a warm-up, --generalise-rounds rounds of every seed with every
    binary (alternating), the report."""
    labels = generalise_labels(b.opts.baseline_bin)
    schema, unregister = polygons_load(b)
    w = b.work
    polygons_config(w / "generalise-default.toml", schema, "")
    polygons_config(w / "generalise-off.toml", schema, NO_GENERALISATION)
    b.log("generalise: warm-up seed (discarded)")
    b.tool("-q", "seed", *b.concurrency_args(), "--config", str(w / "generalise-off.toml"),
           "--tileset", "world", "--zoom", b.opts.polygon_world_zoom,
           "--output", str(w / "generalise-warmup.mbtiles"), stdout=subprocess.DEVNULL)
    remove_outputs(w, "generalise-warmup.mbtiles*")
    load_before = b.load_average()
    for round_ in range(1, b.opts.generalise_rounds + 1):
        for tileset, variant, zoom in generalise_seeds(b.opts.polygon_world_zoom, b.opts.generalise_nyc_zoom):
            for label in labels:
                binary = str(b.bin) if label == "ours" else b.opts.baseline_bin
                stem = f"generalise-{tileset}-{variant}-{label}"
                b.log(f"generalise: round {round_}, {tileset} {variant} z{zoom}, {label}")
                remove_outputs(w, f"{stem}.mbtiles*")
                subprocess.run(["/usr/bin/time", "-v", "-o", str(w / f"{stem}-{round_}.time"), binary, "-q",
                                "seed", *b.concurrency_args(), "--config", str(w / f"generalise-{variant}.toml"),
                                "--tileset", tileset, "--zoom", zoom, "--output", str(w / f"{stem}.mbtiles"),
                                "--summary-json", str(w / f"{stem}-{round_}.json")],
                               check=True, stdout=subprocess.DEVNULL)
    report(b, generalise_report, w, b.opts.generalise_rounds, labels, f"{load_before} / {b.load_average()}")
    remove_outputs(w, "generalise-*.mbtiles*")
    drop_loaded(b, schema, unregister)


def median_wall(work, stem, label, rounds):
    """The median wall time of a seed's rounds."""
    return statistics.median(time_v(f"{work}/generalise-{stem}-{label}-{r}.time")[0]
                             for r in range(1, rounds + 1))


def first_tiles(work, stem, label):
    """Tiles written by a seed's first round."""
    return summary(f"{work}/generalise-{stem}-{label}-1.json")["tiles_written"]


def differing_tiles(a, b):
    """(tiles of either, sorted keys whose MVTs differ) of two {(z, x, y): mvt} maps."""
    keys = set(a) | set(b)
    return len(keys), sorted(k for k in keys if a.get(k) != b.get(k))


def stored_mvts(path):
    """{(z, column, row): uncompressed MVT} of an MBTiles file, rows as stored (TMS, counted from
    the south: the keys these sections' reports print)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {(z, x, y): gzip.decompress(d) if d[:2] == b"\x1f\x8b" else d for z, x, y, d in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}


def generalise_report(work, rounds, labels, load="?"):
    """The generalise section's report from the files it leaves in WORK; returns 3 when the
    binaries' outputs differ."""
    print(f"generalise: median wall of {rounds} round(s); load average before / after: {load}")
    for label in labels:
        g, o = median_wall(work, "world-default", label, rounds), median_wall(work, "world-off", label, rounds)
        n = median_wall(work, "nyc-default", label, rounds)
        tiles = first_tiles(work, "nyc-default", label)
        print(f"  {label:<12} world default {g:7.2f} s, simplify = 0 {o:7.2f} s: ratio {g / o:.3f}"
              f" (target <= 1.10);  nyc default {tiles} tiles in {n:.2f} s: {tiles / n:.1f} tiles/s")
    if len(labels) != 2:
        return 0
    ours, base = (median_wall(work, "nyc-default", label, rounds) for label in labels)
    print(f"  nyc tiles/s, ours / baseline-bin: {base / ours:.2f}x (target >= 4)")
    differ = 0
    for stem in ("world-default", "world-off", "nyc-default"):
        count, bad = differing_tiles(*(stored_mvts(f"{work}/generalise-{stem}-{label}.mbtiles") for label in labels))
        differ += len(bad)
        print(f"  {stem}: {count} tiles, {len(bad)} differ from baseline-bin's"
              + (f" (first: {bad[:5]})" if bad else ""))
    return 3 if differ else 0
