"""moved and subtrees: what a geometry-only edit costs, and what an attribute edit of a huge
polygon costs past listed_tiles (issue 46), on Russia of the polygons section's data. See the
sections' entries in `python3 -m bench --help`.
"""
import re
import subprocess

from bench.measure import mbtiles_tiles, report, summary, time_v
from bench.sections.polygons import polygons_config, polygons_load, stored_mvts

WORLD = "-180,-85.05112878,180,85.05112878"
# Open ocean: the subtrees target's first seed stores (almost) nothing and records the output's
# watermark.
SPECK = "-150,-40,-149.99,-39.99"
WORLD_SIDE = 2 * 20037508.342789244

# A vertex inside a ring of Russia's largest part, on its southern border: x|y|"x y".
VERTEX_SQL = """\
SELECT ST_X(d.geom), ST_Y(d.geom), substring(ST_AsText(d.geom) FROM '\\((.*)\\)')
FROM {s}.countries c, ST_DumpPoints(c.geom) d
WHERE c.name = 'Russia' AND d.path[3] > 2
  AND d.path[3] < ST_NPoints(ST_ExteriorRing(ST_GeometryN(c.geom, d.path[1]))) - 1
ORDER BY abs(ST_X(d.geom) - 90) + abs(ST_Y(d.geom) - 50) LIMIT 1
"""

MOVE_SQL = """\
UPDATE {s}.countries SET geom = ST_GeomFromText(replace(ST_AsText(geom), ',{a},', ',{b},'), 4326)::geometry(MultiPolygon, 4326) WHERE name = 'Russia';
UPDATE {s}.borders SET geom = ST_GeomFromText(replace(ST_AsText(geom), ',{a},', ',{b},'), 4326)::geometry(MultiLineString, 4326) WHERE name = 'Russia';
"""

RENAME_SQL = """UPDATE {s}.countries SET name = 'Russian Federation' WHERE name = 'Russia';
              UPDATE {s}.borders SET name = 'Russian Federation' WHERE name = 'Russia'"""

AREA_SQL = ("SELECT ST_Area(ST_Transform(ST_Intersection(geom, ST_MakeEnvelope(-180, -85.05112878, 180,"
            " 85.05112878, 4326)), 3857))\n                         FROM {s}.countries"
            " WHERE name = 'Russian Federation'")

NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?")


def moved_vertex(vertex):
    """The vertex `x y` moved north by 0.01 degrees, as bash's python printed it."""
    x, y = vertex.split()
    return f"{x} {float(y) + 0.01!r}"


def region(x, y):
    """The bbox of 3 x 2 degrees around (x, y)."""
    return f"{x - 1.5},{y - 1},{x + 1.5},{y + 1}"


def covered_tiles(area, zooms):
    """Web-Mercator tiles an area (square metres) covers at the zooms A-B."""
    lo, hi = map(int, zooms.split("-"))
    return sum(area / (WORLD_SIDE / 2 ** z) ** 2 for z in range(lo, hi + 1))


def with_changes(config, schema):
    """Prepends `[changes] schema = SCHEMA` to a config file."""
    config.write_text(f'[changes]\nschema = "{schema}"\n\n' + config.read_text(encoding="utf-8"),
                      encoding="utf-8")


def finish(b, config, schema, unregister, pattern):
    """Change capture off, the outputs removed, the section's schemas dropped."""
    b.tool("-q", "changes", "uninstall", "--config", str(config), check=False)
    for path in b.work.glob(pattern):
        path.unlink()
    b.psql(f"SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE;"
           f" DROP SCHEMA IF EXISTS {schema}_changes CASCADE", out=None)
    unregister()


def russia_area(b, s):
    """Russia's (renamed) area in square Web-Mercator metres."""
    return float(b.psql(AREA_SQL.format(s=s), tuples=True).strip())


# --- moved --------------------------------------------------------------------------------------

def find_vertex(b, s):
    """(x, y, `x y`) of the vertex the section moves."""
    line = b.psql(VERTEX_SQL.format(s=s), tuples=True).strip()
    parts = line.split("|") if line else []
    if len(parts) != 3 or not parts[2]:
        b.die("moved: no vertex of Russia found")
    if not all(NUMBER.fullmatch(v) for v in (parts[0], parts[1], *parts[2].split())):
        b.die(f"moved: unexpected vertex {line!r}")
    return float(parts[0]), float(parts[1]), parts[2]


def section_moved(b):
    """The moved section: a full seed of the region, the vertex moved, the move's dry run over
    the world, its reseed of the region, a second full seed to compare, and the rename as the
    baseline."""
    s, unregister = polygons_load(b)
    w, zooms = b.work, b.opts.moved_zoom
    x, y, vertex = find_vertex(b, s)
    bbox = region(x, y)
    config = w / "moved.toml"
    polygons_config(config, s, "")
    with_changes(config, f"{s}_changes")
    b.tool("-q", "changes", "install", "--config", str(config))
    common = ("--config", str(config), "--tileset", "world", "--zoom", zooms)
    b.log(f"moved: full seed of {bbox} at zoom {zooms}")
    b.timed_seed("moved-full-1", *common, "--bbox", bbox, "--output", str(w / "moved.mbtiles"))
    b.psql(MOVE_SQL.format(s=s, a=vertex, b=moved_vertex(vertex)), out=None)
    b.log("moved: the move's plan over the world (dry run)")
    b.tool("-q", "seed", *common, "--bbox", WORLD, "--output", str(w / "moved.mbtiles"), "--dirty",
           "--dry-run", "--summary-json", str(w / "moved-plan.json"), stdout=subprocess.DEVNULL)
    b.log("moved: the move's reseed of the region")
    b.timed_seed("moved-dirty", *common, "--bbox", bbox, "--output", str(w / "moved.mbtiles"), "--dirty")
    b.log("moved: a second full seed of the region, to compare")
    b.timed_seed("moved-full-2", *common, "--bbox", bbox, "--output", str(w / "moved-full-2.mbtiles"))
    (w / "moved-reseeded.mbtiles").write_bytes((w / "moved.mbtiles").read_bytes())
    b.log("moved: the baseline, Russia renamed, reseeded")
    b.psql(RENAME_SQL.format(s=s), out=None)
    b.timed_seed("moved-renamed", *common, "--bbox", bbox, "--output", str(w / "moved.mbtiles"), "--dirty")
    report(b, moved_report, w, zooms, bbox, russia_area(b, s))
    finish(b, config, s, unregister, "moved*.mbtiles*")


def seed_run(work, name):
    """(wall, peak RSS, summary) of a timed seed."""
    wall, _, rss = time_v(f"{work}/{name}.time")
    return wall, rss, summary(f"{work}/{name}.json")


def moved_report(work, zooms, bbox, area):
    """The moved section's report; returns 3 when the reseed differs from a full seed."""
    covered = covered_tiles(area, zooms)
    plan = summary(f"{work}/moved-plan.json")["plan"]
    planned = sum(z["tiles"] for z in plan["dirty_tiles"])
    print(f"moved: Russia, one border vertex moved by about 1.1 km, zooms {zooms}")
    print(f"  world, dry run: {planned} tiles planned"
          + (" (the whole pyramid)" if plan["everything"] else "")
          + f"; Russia's area covers about {covered:,.0f} tiles at these zooms:"
          f" {100 * planned / covered:.4f}% (target <= 1%)")
    print(f"  region {bbox}:")
    for label, name in (("full seed", "moved-full-1"), ("vertex moved, --dirty", "moved-dirty"),
                        ("renamed, --dirty (baseline)", "moved-renamed")):
        wall, rss, s = seed_run(work, name)
        print(f"    {label:<28} {s['tiles_queried']:>7} tiles rendered {s['tiles_written']:>7} written"
              f" {wall:7.2f} s {rss:7.1f} MB")
    moved = seed_run(work, "moved-dirty")[2]["tiles_queried"]
    renamed = seed_run(work, "moved-renamed")[2]["tiles_queried"]
    print(f"    vertex moved / renamed: {moved / renamed:.4f} of the tiles rendered")
    a, b = stored_mvts(f"{work}/moved-reseeded.mbtiles"), stored_mvts(f"{work}/moved-full-2.mbtiles")
    bad = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    print(f"    reseed against a full seed: {len(set(a) | set(b))} tiles, {len(bad)} differ"
          + (f" (first: {bad[:5]})" if bad else ""))
    return 3 if bad else 0


# --- subtrees -----------------------------------------------------------------------------------

def baseline_zooms(zooms):
    """The baseline's zooms: --subtrees-zoom's up to 11 at most (from its lowest, if above)."""
    lo, hi = map(int, zooms.split("-"))
    low = min(hi, 11)
    return f"{lo}-{max(low, lo)}"


def with_listed_tiles(text, n):
    """A config's text with `listed_tiles = N` under the world tileset's name."""
    return re.sub(r'(?m)^name = "world"$', f'name = "world"\nlisted_tiles = {n}', text)


def subtrees_configs(b, s):
    """subtrees.toml (with change capture), and -listed / -forced with listed_tiles set."""
    config = b.work / "subtrees.toml"
    polygons_config(config, s, "")
    with_changes(config, f"{s}_changes")
    text = config.read_text(encoding="utf-8")
    (b.work / "subtrees-listed.toml").write_text(with_listed_tiles(text, 100000000), encoding="utf-8")
    (b.work / "subtrees-forced.toml").write_text(with_listed_tiles(text, 20000), encoding="utf-8")
    return config


def section_subtrees(b):
    """The subtrees section: the baseline's outputs (a full seed of the world at its zooms) and
    the target's (a speck of ocean), Russia renamed, the three reseeds, the report."""
    s, unregister = polygons_load(b)
    w, zooms = b.work, b.opts.subtrees_zoom
    low = baseline_zooms(zooms)
    config = subtrees_configs(b, s)
    b.tool("-q", "changes", "install", "--config", str(config))
    b.log(f"subtrees: full seed of the world at zoom {low} (the baseline's output)")
    b.tool("-q", "seed", "--config", str(config), "--tileset", "world", "--zoom", low, "--bbox", WORLD,
           "--output", str(w / "subtrees-listed.mbtiles"), stdout=subprocess.DEVNULL)
    (w / "subtrees-forced.mbtiles").write_bytes((w / "subtrees-listed.mbtiles").read_bytes())
    b.tool("-q", "seed", "--config", str(config), "--tileset", "world", "--zoom", zooms, "--bbox", SPECK,
           "--output", str(w / "subtrees-target.mbtiles"), stdout=subprocess.DEVNULL)
    b.psql(RENAME_SQL.format(s=s), out=None)
    b.log(f"subtrees: Russia renamed, reseeded at zoom {low} listing every tile (baseline)")
    for name, zoom in (("subtrees-listed", low), ("subtrees-forced", low), ("subtrees-target", zooms)):
        if name == "subtrees-forced":
            b.log("subtrees: the same past listed_tiles = 20000, walking subtrees")
        elif name == "subtrees-target":
            b.log(f"subtrees: Russia renamed, reseeded at zoom {zooms} with the default listed_tiles")
        cfg = config if name == "subtrees-target" else w / f"{name}.toml"
        b.timed_seed(name, "--config", str(cfg), "--tileset", "world", "--zoom", zoom, "--bbox", WORLD,
                     "--output", str(w / f"{name}.mbtiles"), "--dirty")
    report(b, subtrees_report, w, zooms, low, russia_area(b, s))
    finish(b, config, s, unregister, "subtrees*.mbtiles*")


def subtrees_report(work, zooms, low, area):
    """The subtrees section's report; returns 3 when listing and walking wrote other tiles."""
    print("subtrees: Russia renamed (countries and borders), seed --dirty over the world")
    for label, name, z in (("every dirty tile listed (baseline)", "subtrees-listed", low),
                           ("listed_tiles = 20000: subtrees", "subtrees-forced", low),
                           ("default listed_tiles", "subtrees-target", zooms)):
        wall, rss, s = seed_run(work, name)
        print(f"  zoom {z:<6} {label:<36} {s['tiles_queried']:>9} tiles rendered"
              f" {s['tiles_written']:>9} written ({100 * s['tiles_written'] / max(s['tiles_queried'], 1):5.1f}%)"
              f" {wall:8.1f} s {rss:7.1f} MB peak RSS")
        if name == "subtrees-target":
            print(f"  Russia's area covers about {covered_tiles(area, z):,.0f} tiles at zoom {z};"
                  f" peak RSS {rss:.1f} MB (target <= 256 MB)")
    a = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(f"{work}/subtrees-listed.mbtiles")}
    b = {(z, x, y): mvt for z, x, y, mvt in mbtiles_tiles(f"{work}/subtrees-forced.mbtiles")}
    bad = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    only_a = sum(1 for k in bad if k not in b)
    only_b = sum(1 for k in bad if k not in a)
    print(f"  zoom {low}: listed against subtrees: {len(set(a) | set(b))} tiles, {len(bad)} differ"
          + (f" ({only_a} only listed, {only_b} only walked; first: {bad[:5]})" if bad else ""))
    return 3 if bad else 0
