"""Tests of the shards section's math and report (bench.sections.shards_report) and its planner
order (bench.sections.shards), on small synthetic inputs with known answers."""
import contextlib
import io
import math
import tempfile
import unittest
from pathlib import Path

from bench import measure
from bench.sections import shards, shards_report as sr
from bench.tests import fixtures


def plan_text(weights, split=3, tileset="facilities"):
    """`shard-plan` output of one tileset with WEIGHTS."""
    mean = sum(weights) / len(weights)
    lines = [f"tileset {tileset}: {len(weights)} shards, split zoom {split}, heaviest shard"
             f" {max(weights) / mean:.2f} x mean"]
    lines += [f"shard {k}: weight {w} subtrees 3" for k, w in enumerate(weights)]
    return "\n".join(lines) + "\n"


class Solve(unittest.TestCase):
    def test_solves_a_square_system(self):
        x = sr.solve([[2.0, 1.0], [1.0, 3.0]], [5.0, 10.0])
        self.assertAlmostEqual(x[0], 1.0)
        self.assertAlmostEqual(x[1], 3.0)

    def test_pivots_past_a_zero_diagonal(self):
        x = sr.solve([[0.0, 1.0], [1.0, 0.0]], [2.0, 3.0])
        self.assertEqual([round(v, 9) for v in x], [3.0, 2.0])

    def test_a_singular_system_has_no_solution(self):
        self.assertIsNone(sr.solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]))


class Nnls(unittest.TestCase):
    def test_an_exact_fit_recovers_the_coefficients(self):
        xs = [(1, 0), (0, 1), (1, 1), (2, 1)]
        ys = [2 * a + 3 * b for a, b in xs]
        coef = sr.nnls(xs, ys, ("A", "B"))
        self.assertAlmostEqual(coef[0], 2.0)
        self.assertAlmostEqual(coef[1], 3.0)

    def test_a_negative_coefficient_is_dropped_and_the_rest_refitted(self):
        # y = 4a - b: unconstrained least squares gives b < 0; with b dropped, a alone fits
        # y on a (sum(a*y) / sum(a*a)).
        xs = [(1, 0), (1, 1), (2, 1), (3, 2)]
        ys = [4 * a - b for a, b in xs]
        coef = sr.nnls(xs, ys, ("A", "B"))
        self.assertEqual(coef[1], 0.0)
        expected = sum(a * y for (a, _), y in zip(xs, ys)) / sum(a * a for a, _ in xs)
        self.assertAlmostEqual(coef[0], expected)

    def test_a_column_of_zeros_gets_zero(self):
        xs = [(1, 0), (2, 0), (3, 0)]
        coef = sr.nnls(xs, [2, 4, 6], ("A", "B"))
        self.assertAlmostEqual(coef[0], 2.0)
        self.assertEqual(coef[1], 0.0)


class Census(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "census.txt"

    def tearDown(self):
        self.tmp.cleanup()

    def test_zooms_sum_their_children(self):
        # Zoom 2 as the deepest: tiles (0,0) 2 rows (listed twice), (1,1) 3 rows, (3,3) 5 rows.
        self.path.write_text("0 0 1\n0 0 1\n1 1 3\n\n3 3 5\n")
        c = sr.census(self.path, deepest=2, cluster_maxzoom=-1)
        self.assertEqual(c[2], (3, 10, 10, 10))
        self.assertEqual(c[1], (2, 10, 10, 10))  # (0,0) holds 5, (1,1) holds 5
        self.assertEqual(c[0], (1, 10, 10, 10))

    def test_clustered_zooms_count_cells_and_the_rows_their_margins_read(self):
        # Deepest zoom 2, cells one zoom deeper than the tile (cell_depth 1). At zoom 1 the
        # cells are zoom 2's tiles: (1,1) 3 rows sits at the corner of tile (0,0) next to tiles
        # (1,0), (0,1) and (1,1), of which (1,1) holds rows: read by (0,0) and (1,1).
        self.path.write_text("0 0 2\n1 1 3\n2 2 5\n")
        c = sr.census(self.path, deepest=2, cluster_maxzoom=1, cell_depth=1)
        tiles, rows, cells, read = c[1]
        self.assertEqual((tiles, rows, cells), (2, 10, 3))
        # (0,0) 2 rows: its own tile only (its margin's other tiles are empty) = 2;
        # (1,1) 3 rows: tiles (0,0) and (1,1) = 6; (2,2) 5 rows: tiles (1,1) and (0,0) = 10.
        self.assertEqual(read, 18)
        # Zoom 2 is deeper than cluster_maxzoom: plain rows.
        self.assertEqual(c[2], (3, 10, 10, 10))

    def test_margins_stop_at_the_edge_of_the_world(self):
        self.path.write_text("0 0 4\n")
        c = sr.census(self.path, deepest=1, cluster_maxzoom=0, cell_depth=1)
        self.assertEqual(c[0], (1, 4, 1, 4))


class Plan(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_reads_the_split_zoom_and_the_weights(self):
        path = self.dir / "plan.txt"
        path.write_text("planning...\n" + plan_text([10, 20, 30], split=6))
        self.assertEqual(sr.shard_plan(path), (6, [10, 20, 30]))

    def test_two_tilesets_or_no_plan_fail(self):
        path = self.dir / "two.txt"
        path.write_text(plan_text([1, 2]) + plan_text([3, 4], tileset="other"))
        with self.assertRaisesRegex(measure.ReportError, "expected one tileset"):
            sr.shard_plan(path)
        path.write_text("nothing\n")
        with self.assertRaisesRegex(measure.ReportError, "no shard plan printed"):
            sr.shard_plan(path)


class Ratios(unittest.TestCase):
    def test_max_over_mean(self):
        self.assertAlmostEqual(sr.max_over_mean([1, 2, 3]), 1.5)
        self.assertTrue(math.isnan(sr.max_over_mean([0, 0])))

    def test_the_dearest_tile_is_the_floor_of_the_mean(self):
        self.assertAlmostEqual(sr.slowest_over_floor([2, 4], dearest=1), 4 / 3)
        self.assertAlmostEqual(sr.slowest_over_floor([2, 4], dearest=5), 0.8)

    def test_render_seconds_above_a_zoom(self):
        s = {"per_zoom": [{"zoom": 0, "render_ms_total": 1000}, {"zoom": 1, "render_ms_total": 500},
                          {"zoom": 2, "render_ms_total": 250}]}
        self.assertEqual(sr.render_seconds(s), 1.75)
        self.assertEqual(sr.render_seconds(s, below=2), 1.5)

    def test_capacity_line_scales_linearly_in_rows(self):
        # 1,000 rows, 5,000 tiles at 100 tiles/s and 0.01 s PG CPU a tile: 100M points are
        # 500M tiles, 500M / (100 * 600) = 8333 shards, 5M PG CPU seconds = 8333 cores.
        line = sr.capacity_line("clustered", 16, (1.0, 1.0, 100.0, 0.01, 5000), 1000)
        self.assertIn("about 500.0M tiles, 8333 shards at 100 tiles/s each (16-shard run)", line)
        self.assertIn("= 8333 cores busy for 10 min against 32: does not fit one 32-core", line)


class PlannerOrder(unittest.TestCase):
    def test_alternates_only_with_a_baseline(self):
        self.assertEqual(shards.planner_order(0, False), ["new"])
        self.assertEqual(shards.planner_order(1, False), ["new"])
        self.assertEqual(shards.planner_order(0, True), ["new", "old"])
        self.assertEqual(shards.planner_order(1, True), ["old", "new"])


class LaterRuns(unittest.TestCase):
    def test_an_earlier_benchs_later_runs_are_removed_and_nothing_else(self):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            names = ["shards-clustered-16-new-run-3-part-0.time", "shards-unclustered-4-old-run-2-part-3.json",
                     "shards-clustered-16-new-part-0.time", "shards-clustered-real-16-new.txt"]
            for name in names:
                (d / name).write_text("x")
            shards.remove_later_runs(d)
            self.assertEqual(sorted(p.name for p in d.iterdir()), sorted(names[2:]))


class Report(unittest.TestCase):
    """shards_report over the files of one variant, 2 dry-run shards and 2 real ones."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        d = self.d
        (d / "shards-loads.txt").write_text("clustered start: 0.10 0.20 0.30\n")
        (d / "shards-census.txt").write_text("0 0 3\n16383 16383 1\n")
        (d / "shards-clustered-plan-2.txt").write_text(plan_text([3_000_000, 1_000_000], split=5))
        fixtures.write_time_v(d / "shards-clustered-plan-2.time", wall="0:00.50")
        per_zoom = [{"zoom": z, "queried": 2, "written": 2, "bytes": 1000, "render_ms_total": 100.0 * (z + 1),
                     "render_ms_max": 40.0 if z == 3 else 10.0} for z in range(15)]
        fixtures.write_summary(d / "shards-clustered-full.json",
                               fixtures.seed_summary(tiles_written=30, seconds=8.0, per_zoom=per_zoom))
        fixtures.write_time_v(d / "shards-clustered-full.time", wall="0:10.00", user=4, system=1)
        (d / "shards-clustered-full.pgcpu").write_text("3.00\n")
        (d / "shards-clustered-real-2-new.txt").write_text(plan_text([2, 2], split=5))
        fixtures.write_time_v(d / "shards-clustered-real-2-new.time", wall="0:00.25")
        for k, (wall, seconds, tiles) in enumerate(((6.0, 5.0, 20), (4.0, 3.0, 10))):
            base = f"shards-clustered-2-new-part-{k}"
            fixtures.write_time_v(d / f"{base}.time", wall=f"0:0{wall:.2f}", user=1, system=0)
            fixtures.write_summary(d / f"{base}.json", fixtures.seed_summary(
                tiles_written=tiles, seconds=seconds, bytes_written=2_000_000,
                per_zoom=[{"zoom": 4, "render_ms_total": 1000.0}, {"zoom": 9, "render_ms_total": 500.0}]))
            (d / f"{base}.pgcpu").write_text("1.00\n")
        fixtures.write_time_v(d / "shards-clustered-2-new-merge.time", wall="0:00.75")
        tiles = {(0, 0, 0): b"a", (1, 0, 1): b"b"}
        fixtures.write_mbtiles(d / "shards-clustered-full.mbtiles", tiles)
        fixtures.write_mbtiles(d / "shards-clustered-2-new.mbtiles", tiles)

    def tearDown(self):
        self.tmp.cleanup()

    def run_report(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = sr.shards_report(self.d, 1000, "0-14", ["clustered"], [2], ["new"], [2])
        return status, out.getvalue().splitlines()

    def line(self, lines, start):
        found = [line for line in lines if line.strip().startswith(start)]
        self.assertEqual(len(found), 1, f"one line starting {start!r} in {lines}")
        return found[0]

    def test_the_plans_table(self):
        _, lines = self.run_report()
        # min 1.00, mean 2.00, max 3.00 (millions), max/mean 1.5, speed-up 4/3, /N 66.7%.
        self.assertEqual(self.line(lines, "2    0.50"),
                         "    2    0.50       5      1.00      2.00      3.00     1.500      1.33  66.7%")

    def test_the_full_seed_and_its_dearest_tile(self):
        _, lines = self.run_report()
        self.assertIn("full seed (the baseline) 10.00 s wall, 8.00 s seeding, tool CPU 5.00 s,"
                      " PG CPU 3.00 s, 30 tiles, render 12.0 s", self.line(lines, "clustered: full seed"))
        self.assertIn("dearest tile 0.04 s", self.line(lines, "clustered: dearest tile"))

    def test_the_real_shards_balance_and_check(self):
        status, lines = self.run_report()
        self.assertEqual(status, 0)
        # Shard 0: wall 6, seeding 5, start 1, tool CPU 1, PG 1, 20 tiles at 4/s, 2 MB, render
        # 1.5 s of which 1.0 above zoom 5, planned 50%, real 6 / 10 = 60%.
        self.assertEqual(self.line(lines, "0    6.00"),
                         "        0    6.00    5.00   1.00     1.00    1.00       20        4     2.0    1.50   1.00"
                         "    50.0%  60.0%")
        # Walls 6 and 4: slowest over mean 5 = 1.2; seeding 5 and 3 over 4 = 1.25.
        self.assertIn("wall 1.200, seeding 1.250 (target <= 1.10); over max(mean, its render 0.04 s): wall 1.200;"
                      " max/mean: wall 1.200 (planned 1.000)", self.line(lines, "slowest / max(mean"))
        self.assertIn("shards' total / full seed 1.000; full seed / heaviest shard 1.67",
                      self.line(lines, "shards' total"))
        self.assertEqual(self.line(lines, "the merged shards"),
                         "    the merged shards equal the full seed tile for tile (2 tiles)")
        self.assertIn("clustered, 2 shards: new 1.200 wall / 1.250 seeding (1.200 over its render)",
                      self.line(lines, "slowest unit / max"))

    def test_the_dearest_tile_seeded_alone_is_the_floor(self):
        for r, (wall, seconds) in enumerate((("0:09.00", 8.0), ("0:06.00", 5.5), ("0:05.00", 4.5))):
            fixtures.write_time_v(self.d / f"shards-clustered-dearest-{r}.time", wall=wall)
            fixtures.write_summary(self.d / f"shards-clustered-dearest-{r}.json", fixtures.seed_summary(
                tiles_written=1, seconds=seconds, bytes_written=3_000_000,
                slowest_tiles=[{"tile": "0/0/0", "ms": 4000.0}]))
        _, lines = self.run_report()
        self.assertIn("seeded alone (1 tile, 0/0/0, 3.0 MB), median of 3: 6.00 s wall (9.00, 6.00, 5.00), 5.50 s"
                      " seeding, the floor", self.line(lines, "clustered: dearest tile"))
        # Walls 6 and 4 over max(mean 5, 6.00); seeding 5 and 3 over max(mean 4, 5.50); walls over
        # max(mean, the render of 0.04 s) as before.
        self.assertIn("dearest tile alone 6.00 s wall, 5.50 s seeding): wall 1.000, seeding 0.909 (target <= 1.10);"
                      " over max(mean, its render 0.04 s): wall 1.200;", self.line(lines, "slowest / max(mean"))
        self.assertIn("clustered, 2 shards: new 1.000 wall / 0.909 seeding (1.200 over its render)",
                      self.line(lines, "slowest unit / max"))

    def test_later_runs_are_read_on_each_shards_median(self):
        # Run 1 (setUp): walls 6 and 4. Runs 2 and 3: 5 and 5, then 4 and 6. Medians 5 and 5.
        for run, walls in ((2, (5.0, 5.0)), (3, (4.0, 6.0))):
            for k, wall in enumerate(walls):
                fixtures.write_time_v(self.d / f"shards-clustered-2-new-run-{run}-part-{k}.time",
                                      wall=f"0:0{wall:.2f}")
        _, lines = self.run_report()
        # Each shard's sd is 1 around a mean of 5: a spread of 20%; the slowest of 2 equal shards
        # is then expected at 1 + 0.2 x 0.589 (Blom; exactly 0.564).
        self.assertEqual(self.line(lines, "3 runs of the plan"),
                         "    3 runs of the plan: slowest / max(mean, dearest tile alone) per run 1.200, 1.000,"
                         " 1.200; on each shard's median wall 1.000 (target <= 1.10); a shard's wall varies by"
                         " 20.0% (sd) from run to run, which alone would put the slowest of 2 equal shards at"
                         " 1.118 x their mean in one run")
        self.assertEqual(self.line(lines, "median wall s per shard"), "    median wall s per shard: 5.00 5.00")
        self.assertIn("new 1.200 wall / 1.250 seeding (1.200 over its render) in the first run, 1.000 on the"
                      " shards' median walls", self.line(lines, "slowest unit / max"))

    def test_one_run_prints_no_medians(self):
        # A run missing one shard's file is not a run.
        fixtures.write_time_v(self.d / "shards-clustered-2-new-run-2-part-0.time", wall="0:05.00")
        _, lines = self.run_report()
        self.assertFalse([line for line in lines if "runs of the plan" in line or "median" in line])

    def test_merged_shards_that_differ_fail_with_3(self):
        (self.d / "shards-clustered-2-new.mbtiles").unlink()
        fixtures.write_mbtiles(self.d / "shards-clustered-2-new.mbtiles", {(0, 0, 0): b"other"})
        status, lines = self.run_report()
        self.assertEqual(status, 3)
        self.assertIn("WARNING: the merged shards differ from the full seed (1 against 2 tiles, 1 with other"
                      " bytes; 30 tiles written by the shards against 30)", self.line(lines, "WARNING"))

    def test_the_fit_closes_the_report(self):
        _, lines = self.run_report()
        self.assertEqual(lines[-19].strip(), "cost model fitted on the full seeds' per-zoom render times"
                                             " (least squares, >= 0):")
        self.assertTrue(lines[-18].strip().startswith("TILE_MICROS = "))
        self.assertTrue(lines[-17].strip().endswith("(stored bytes, fitted the same way)"))
        self.assertEqual(lines[-1].split()[:2], ["cl", "z14"])

    def test_the_cpu_beyond_the_render_is_fitted_over_the_real_shards(self):
        _, lines = self.run_report()
        # Shards of render 1.5 and 1.0 s, 20 and 10 tiles, 2 and 1 MB, CPU 2 and 2 s (fixtures):
        # the fit sees every shard of the run.
        self.assertIn("fitted over the 2 real shards", self.line(lines, "CPU beyond the render"))

    def test_the_cpu_fit_recovers_known_costs_per_tile_and_byte(self):
        # CPU = 0.8 x render + 20 µs a tile + 0.05 µs a byte; the tool's share 8 µs a tile and
        # 0.02 µs a byte. In render units: 25 µs a tile, 0.0625 µs a byte.
        samples = []
        for render, tiles, size in ((1.0, 1000, 2e6), (2.0, 50_000, 1e6), (0.5, 9000, 9e6), (3.0, 200, 4e5)):
            tool = (8 * tiles + 0.02 * size) / 1e6
            samples.append((render, tiles, size, tool, 0.8 * render + (20 * tiles + 0.05 * size) / 1e6 - tool))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            sr.cpu_beyond_render(samples)
        self.assertIn("PG + tool CPU = 0.800 x render + 20 µs a tile + 0.05 µs a byte (tool CPU alone: 8 µs a"
                      " tile + 0.02 µs a byte); in render units 25 µs a tile and 0.0625 µs a byte", out.getvalue())

    def test_the_noise_alone_of_equal_shards(self):
        # Blom: the largest of 16 normal draws is expected 1.769 sd above their mean (exactly
        # 1.766), of 4 1.049 (exactly 1.029).
        self.assertAlmostEqual(sr.noise_alone(0.05, 16), 1.0884, places=4)
        self.assertAlmostEqual(sr.noise_alone(0.05, 4), 1.0525, places=4)
        self.assertEqual(sr.noise_alone(0.0, 16), 1.0)

    def test_a_plan_of_the_wrong_count_fails(self):
        (self.d / "shards-clustered-plan-2.txt").write_text(plan_text([1, 1, 1]))
        with self.assertRaisesRegex(measure.ReportError, "printed 3 shards"):
            self.run_report()


if __name__ == "__main__":
    unittest.main()
