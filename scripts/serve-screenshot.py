#!/usr/bin/env python3
"""Takes a screenshot of `oar-tiles serve` (the user guide's picture of the sample,
docs/src/images/serve.png, shown in docs/src/commands.md and README.md).

    scripts/serve-screenshot.py OUTPUT PNG [VIEW [SERVE-OPTION...]]

Starts `target/debug/oar-tiles serve OUTPUT` on a free port and Debian's headless Chromium through
chromedriver (WebDriver, spoken here with the standard library only), opens the page at VIEW (the
map's URL hash, `zoom/lat/lon`, default the tileset's centre), waits for MapLibre's `idle` event
through the page's hook, clicks the biggest cluster on screen, turns the tile boundaries on, and
saves the page as PNG. SERVE-OPTIONs (such as `--size-budget 2500`) go to `serve`. Needs `cargo build` first and `chromium` + `chromium-driver` installed
(scripts/test.sh installs them).
"""

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    output, png = sys.argv[1], sys.argv[2]
    view = sys.argv[3] if len(sys.argv) > 3 else ""
    options = sys.argv[4:]
    binary = os.path.join(ROOT, "target/debug/oar-tiles")
    serve = subprocess.Popen([binary, "serve", output, "--listen", "127.0.0.1:0", *options],
                             stdout=subprocess.PIPE, text=True)
    driver_port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={driver_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp()
    try:
        base = None
        for line in serve.stdout:
            if line.startswith("serving at "):
                base = line.split()[-1].rstrip("/")
                break
        if base is None:
            sys.exit("oar-tiles serve did not start")
        wd = f"http://127.0.0.1:{driver_port}"

        def call(method, path, body=None):
            request = urllib.request.Request(wd + path, method=method,
                                             data=json.dumps(body or {}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as response:
                return json.load(response)["value"]

        while True:
            try:
                socket.create_connection(("127.0.0.1", driver_port)).close()
                break
            except OSError:
                time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--ignore-gpu-blocklist", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
                "--no-first-run", "--no-default-browser-check", "--window-size=1400,900",
                f"--user-data-dir={profile}"]
        session = call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}})["sessionId"]
        s = f"/session/{session}"

        def script(text, *arguments):
            return call("POST", s + "/execute/sync", {"script": text, "args": list(arguments)})

        def idle():
            script("window.__idleNow = false; window.__ready.then(() => window.__whenIdle())"
                   ".then(() => { window.__idleNow = true; });")
            while not script("return window.__idleNow === true"):
                time.sleep(0.1)

        call("POST", s + "/url", {"url": f"{base}/{('#' + view) if view else ''}"})
        idle()
        x, y = script("""const map = window.__map;
            const features = map.queryRenderedFeatures({ layers: window.__clusterLayers });
            features.sort((a, b) => b.properties.count - a.properties.count);
            const box = map.getContainer().getBoundingClientRect();
            const p = map.project(features[0].geometry.coordinates);
            return [Math.round(box.left + p.x), Math.round(box.top + p.y)];""")
        call("POST", s + "/actions", {"actions": [{"type": "pointer", "id": "mouse", "actions": [
            {"type": "pointerMove", "x": x, "y": y}, {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0}]}]})
        script("document.getElementById('boundaries').click()")
        idle()
        with open(png, "wb") as f:
            f.write(base64.b64decode(call("GET", s + "/screenshot")))
        call("DELETE", s)
        print(f"saved {png}")
    finally:
        serve.terminate()
        driver.terminate()
        serve.wait()
        driver.wait()


if __name__ == "__main__":
    main()
