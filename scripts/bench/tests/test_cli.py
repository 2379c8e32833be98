"""Tests of bench.cli: option names, defaults, the = form, validation messages and order."""
import contextlib
import io
import unittest

from bench import cli


def error(argv):
    """The CliError parsing ARGV raises."""
    with unittest.TestCase().assertRaises(cli.CliError) as caught:
        cli.parse(argv)
    return caught.exception


class Defaults(unittest.TestCase):
    def test_defaults_are_bench_sh_s(self):
        o = cli.parse([])
        self.assertEqual(o.rows, 100000)
        self.assertEqual(o.zoom, "0-14")
        self.assertIsNone(o.concurrency)
        self.assertIsNone(o.baseline_sessions)
        self.assertFalse(o.reload)
        self.assertEqual(o.cluster_rows, [100000])
        self.assertEqual(o.growth_rows, [100000, 1000000])
        self.assertEqual(o.capacity_rows, [100000, 1000000])
        self.assertEqual(o.partition_by, "contributor_ids")
        self.assertEqual(o.generalise_rounds, 3)
        self.assertEqual(o.shard_runs, 3)
        self.assertIsNone(o.baseline_bin)
        self.assertEqual(o.sections[0], "main")
        self.assertEqual(len(o.sections), 15)
        self.assertNotIn("polygons", o.sections)

    def test_cluster_rows_default_to_rows(self):
        self.assertEqual(cli.parse(["--rows", "2000"]).cluster_rows, [2000])
        self.assertEqual(cli.parse(["--rows", "2000", "--cluster-rows=5,6"]).cluster_rows, [5, 6])


class Forms(unittest.TestCase):
    def test_space_and_equals_forms_and_last_wins(self):
        o = cli.parse(["--rows=7", "--zoom", "3", "--rows", "9", "--reload", "--concurrency=2"])
        self.assertEqual((o.rows, o.zoom, o.reload, o.concurrency), (9, "3", True, 2))

    def test_two_options_took_no_equals_form(self):
        e = error(["--capture-rounds=3"])
        self.assertEqual((e.message, e.status, e.show_help), ("unknown argument: --capture-rounds=3", 2, True))
        self.assertEqual(cli.parse(["--capture-rounds", "3"]).capture_rounds, 3)

    def test_missing_or_empty_value(self):
        self.assertEqual(error(["--rows"]).message, "--rows needs a value")
        self.assertEqual(error(["--zoom", ""]).message, "--zoom needs a value")
        self.assertEqual(error(["--rows="]).message, "ERROR: --rows must be a positive integer, got ''")

    def test_a_value_may_look_like_an_option(self):
        self.assertEqual(error(["--partition-by", "-h"]).message,
                         "ERROR: --partition-by must be a column name, got '-h'")

    def test_help(self):
        e = error(["--rows", "5", "-h"])
        self.assertEqual((e.message, e.status, e.show_help), (None, 0, True))
        self.assertTrue(cli.HELP.startswith("Benchmark `oar-tiles seed` end to end"))
        self.assertIn("  --sections LIST  comma-separated sections", cli.HELP)
        self.assertTrue(cli.HELP.rstrip().endswith("wait for it; other runs may overlap."))

    def test_parse_or_exit_prints_and_exits(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            cli.parse_or_exit(["--bogus"])
        self.assertEqual(caught.exception.code, 2)
        self.assertTrue(err.getvalue().startswith("bench: unknown argument: --bogus\nBenchmark"))


class Validation(unittest.TestCase):
    CASES = [
        (["--rows", "0"], "--rows must be a positive integer, got '0'"),
        (["--zoom", "a-b"], "--zoom must be A-B or N, got 'a-b'"),
        (["--concurrency", "01"], "--concurrency must be a positive integer, got '01'"),
        (["--baseline-sessions", "x"], "--baseline-sessions must be a positive integer, got 'x'"),
        (["--capacity-rows", "1,,2"], "--capacity-rows must be a comma-separated list of positive integers, got '1,,2'"),
        (["--baseline-bin", "/nonexistent/oar"], "--baseline-bin: /nonexistent/oar is not an executable"),
        (["--shard-rows", "-1"], "--shard-rows must be a positive integer, got '-1'"),
        (["--shard-runs", "0"], "--shard-runs must be a positive integer, got '0'"),
        (["--reseed-rows", "1e5"], "--reseed-rows must be a positive integer, got '1e5'"),
        (["--reseed-changes", "3"], "--reseed-changes must be an integer >= 4, got '3'"),
        (["--cluster-rows", "5,"], "--cluster-rows must be a comma-separated list of positive integers, got '5,'"),
        (["--cluster-zoom", "5-2"], "--cluster-zoom must be A-B with A <= B, got '5-2'"),
        (["--cluster-zoom", "5"], "--cluster-zoom must be A-B with A <= B, got '5'"),
        (["--cluster-position", "middle"], "--cluster-position must be centroid or cell-center, got 'middle'"),
        (["--partition-zoom", "9-1"], "--partition-zoom must be A-B with A <= B, got '9-1'"),
        (["--polygon-nyc-zoom", "3-1"], "--polygon-world-zoom and --polygon-nyc-zoom must be A-B with A <= B, got '3-1'"),
        (["--generalise-nyc-zoom", "x"], "--generalise-nyc-zoom must be A-B with A <= B, got 'x'"),
        (["--moved-zoom", "1-"], "--moved-zoom must be A-B with A <= B, got '1-'"),
        (["--subtrees-zoom", "2-1"], "--subtrees-zoom must be A-B with A <= B, got '2-1'"),
        (["--generalise-rounds", "0"], "--generalise-rounds must be a positive integer, got '0'"),
        (["--partition-rounds", "4"], "--partition-rounds must be 1, 2 or 3, got '4'"),
        (["--partition-by", "Country"], "--partition-by must be a column name, got 'Country'"),
        (["--capture-rounds", "x;"], "--capture-rounds must be a positive integer, got 'x;'"),
        (["--growth-rows", "1;DROP"], "--growth-rows must be a comma-separated list of positive integers, got '1;DROP'"),
        (["--sections", ""], "--sections needs a value"),
        (["--sections=,"], "--sections is empty"),
    ]

    def test_messages(self):
        for argv, message in self.CASES:
            with self.subTest(argv=argv):
                e = error(argv)
                self.assertIn(e.message, (message, f"ERROR: {message}"))
                self.assertEqual(e.status, 1)

    def test_first_failure_in_bench_sh_order(self):
        self.assertEqual(error(["--subtrees-zoom", "2-1", "--rows", "x"]).message,
                         "ERROR: --rows must be a positive integer, got 'x'")

    def test_sections_split_as_bash_read_did(self):
        self.assertEqual(cli.split_sections("main,"), ["main"])
        self.assertEqual(cli.split_sections("main,,reseed"), ["main", "", "reseed"])
        self.assertEqual(cli.split_sections(""), [])
        self.assertEqual(cli.parse(["--sections", "reseed,main,"]).sections, ["reseed", "main"])
        e = error(["--sections", "main,,reseed"])
        self.assertTrue(e.message.startswith("ERROR: unknown section '' (expected main, reseed,"))


if __name__ == "__main__":
    unittest.main()
