"""Checks of the results files in scripts/bench/results/: they are read beside the code on any
machine, so none may name where a file sat on the machine that measured it."""
import re
import unittest
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results"

# A home or work directory of a developer's machine: `/home/NAME/...`, `/work/...`.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:home|work)/[\w.-]")


def machine_paths(text):
    """The lines of TEXT (numbered from 1) that name a developer machine's path."""
    return [(number, line) for number, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATH.search(line)]


class MachinePaths(unittest.TestCase):
    def test_no_results_file_names_a_machines_path(self):
        found = [f"{path.name}:{number}: {line.strip()}"
                 for path in sorted(RESULTS.glob("*.md"))
                 for number, line in machine_paths(path.read_text(encoding="utf-8"))]
        self.assertEqual(found, [], "results files name a developer machine's paths (write the "
                         "binary as $BIN, a script outside the repository by its name): "
                         + "; ".join(found))

    def test_the_check_sees_home_and_work_but_not_repository_paths(self):
        self.assertTrue(machine_paths("OAR_TILES_BENCH_BIN=/work/bin/oar-tiles scripts/bench.sh"))
        self.assertTrue(machine_paths("`/home/ana/oar-tiles/target/release/oar-tiles`"))
        self.assertFalse(machine_paths("scripts/bench/results/2026-11-27-import.md"))
        self.assertFalse(machine_paths("dir:/dev/shm/purger/out, ~/work/x"))


if __name__ == "__main__":
    unittest.main()
