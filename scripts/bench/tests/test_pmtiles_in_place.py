"""Tests of the pmtiles-in-place section's counting proxy, config and report (no store needed)."""
import contextlib
import http.server
import io
import socket
import threading
import unittest

from bench.proxy import CountingProxy
from bench.sections import pmtiles_in_place as inplace
from bench.sections.pmtiles_in_place import Run


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers a PUT with its body's length in bytes, then closes."""

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = str(len(body)).encode() * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


class Proxy(unittest.TestCase):
    def setUp(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.proxy = CountingProxy("127.0.0.1", self.server.server_address[1])

    def tearDown(self):
        self.proxy.close()
        self.server.shutdown()
        self.server.server_close()

    def exchange(self, request: bytes) -> bytes:
        """Sends REQUEST through the proxy and reads until the proxy closes (or resets)."""
        answer = b""
        with socket.create_connection(("127.0.0.1", self.proxy.port)) as s:
            try:
                s.sendall(request)
                s.shutdown(socket.SHUT_WR)
                while chunk := s.recv(65536):
                    answer += chunk
            except OSError:  # the proxy closed or reset the connection first
                pass
        return answer

    def test_counts_every_byte_each_way_over_connections(self):
        body = b"x" * 300_000
        request = (b"PUT /bucket/key HTTP/1.1\r\nHost: store\r\nContent-Length: 300000\r\n\r\n" + body)
        first = self.exchange(request)
        self.assertTrue(first.startswith(b"HTTP/1.0 200") and first.endswith(b"300000"), first[:80])
        self.assertEqual(self.proxy.counts(), (len(request), len(first)))
        second = self.exchange(request)
        self.assertEqual(self.proxy.counts(), (2 * len(request), len(first) + len(second)))

    def test_a_refused_upstream_closes_the_client_and_counts_nothing(self):
        self.server.shutdown()
        self.server.server_close()
        self.assertEqual(self.exchange(b"GET / HTTP/1.1\r\n\r\n"), b"")
        self.assertEqual(self.proxy.counts(), (0, 0))


class Config(unittest.TestCase):
    def test_store_points_at_the_proxy_path_style(self):
        text = ('[database]\npool_size = 4\n[store]\n# a comment\nforce_path_style = false\n'
                'endpoint = "http://x"\nmax_attempts = 6\n[changes]\nschema = "c"\n')
        self.assertEqual(inplace.with_store(text, 4321), (
            '[database]\npool_size = 4\n[store]\nendpoint = "http://127.0.0.1:4321"\nforce_path_style = true\n'
            'region = "us-east-1"\n# a comment\nmax_attempts = 6\n[changes]\nschema = "c"\n'))

    def test_a_config_without_store_gains_one(self):
        self.assertEqual(inplace.with_store("[changes]\n", 1),
                         '[changes]\n\n[store]\nendpoint = "http://127.0.0.1:1"\nforce_path_style = true\n'
                         'region = "us-east-1"\n')


def run(label, sent, received, size, clustered=False, wall=1.0):
    return Run(label, sent, received, wall, size, clustered)


class Report(unittest.TestCase):
    def test_units_and_labels(self):
        self.assertEqual([inplace.human(n) for n in (999, 999_999, 1_000_000, 63_812_345)],
                         ["1.0 kB", "1000.0 kB", "1.00 MB", "63.81 MB"])
        self.assertEqual([inplace.rows_label(n) for n in (1, 1000, 100000)],
                         ["1 row", "1,000 rows", "100,000 rows"])

    def test_compactions_are_runs_that_cluster_again(self):
        runs = [run("seed", 0, 0, 1, True), run("a", 0, 0, 1), run("b", 0, 0, 1, True), run("c", 0, 0, 1, True),
                run("d", 0, 0, 1), run("e", 0, 0, 1, True)]
        self.assertEqual(inplace.compactions(runs), ["b", "e"])

    def test_report(self):
        this = inplace.Build("this build", "bin", "t", None, "b0", None, [
            run("seed", 10_000_000, 2_000, 10_000_000, True, 5.0),
            run("1 row", 60_000, 9_000, 10_050_000, False, 0.5),
            run("1 row, empty cache", 70_000, 300_000, 10_100_000, False, 0.7),
            run("round 1", 40_000, 9_000, 10_140_000), run("round 2", 600_000, 9_000, 10_000_000, True),
            run("round 3", 30_000, 9_000, 10_030_000)])
        base = inplace.Build("baseline-bin", "old", "t", None, "b1", None, [
            run("seed", 10_000_000, 2_000, 10_000_000, True, 5.5),
            run("1 row", 10_000_000, 2_000, 10_000_000, True, 4.0),
            run("1 row, empty cache", 10_000_000, 10_002_000, 10_000_000, True, 6.0)])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = inplace.print_report({"rows": 100000, "zoom": "0-14", "load": "1 / 2"}, [this, base],
                                          run("fresh seed", 10_000_000, 2_000, 10_000_000, True, 5.0))
        self.assertEqual(status, 0)
        self.assertEqual(out.getvalue().splitlines(), [
            "pmtiles-in-place: 100000 facilities, zoom 0-14, unclustered, one PMTiles object in S3 (moto) per"
            " build, through a byte-counting proxy",
            "  run                  build                sent    received       wall     archive  clustered",
            "  seed                 this build       10.00 MB      2.0 kB     5.00 s    10.00 MB  yes",
            "  seed                 baseline-bin     10.00 MB      2.0 kB     5.50 s    10.00 MB  yes",
            "  1 row                this build        60.0 kB      9.0 kB     0.50 s    10.05 MB  no",
            "  1 row                baseline-bin     10.00 MB      2.0 kB     4.00 s    10.00 MB  yes",
            "  1 row, empty cache   this build        70.0 kB    300.0 kB     0.70 s    10.10 MB  no",
            "  1 row, empty cache   baseline-bin     10.00 MB    10.00 MB     6.00 s    10.00 MB  yes",
            "  empty cache, this build: received 300.0 kB = 3.0% of the archive it updated (10.05 MB)"
            "   (target <= 10%: met)",
            "  empty cache, baseline-bin: received 10.00 MB = 100.0% of the archive it updated (10.00 MB)"
            "   (target <= 10%: NOT met)",
            "  3 successive 10-row reseeds (this build), the archive after each as a multiple of a fresh seed"
            " of the same data (10.00 MB, seeded in 5.00 s):",
            "    1.01 1.00 1.00",
            "    compacted (written whole and clustered again) by round(s): 2",
            "    largest 10.14 MB = 1.01 x the fresh seed   (target <= 1.5 x, or compacted once: met)",
            "    sent per reseed: mean 223.3 kB, median 40.0 kB, max 600.0 kB = at most 6.0% of the archive   (target <= 5%:"
            " NOT met, over it in 1 of 3 rounds)",
            "    received per reseed: median 9.0 kB; wall median 1.00 s",
            "  load average at the start / end: 1 / 2",
        ])


if __name__ == "__main__":
    unittest.main()
