#!/usr/bin/env bash
# Benchmark `oar-tiles seed` end to end and its parts: `scripts/bench.sh --help` lists the sections
# and options. The benchmark is the Python package scripts/bench/ (standard library only; its unit
# tests run in scripts/test.sh); this entry point keeps the command people and notes use.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m bench "$@"
