"""The part ``suite``: the conformance suite's wall time, in a subprocess."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

from . import ROOT


def bench_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Wall time of ``python -m spec -q -p no:cacheprovider`` (the conformance suite against
    the reference, on CPU, plus the CUDA parametrisations where a GPU is present)."""
    command = [sys.executable, "-m", "spec", "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return {
        "command": " ".join(["python", *command[1:]]),
        "seconds": seconds,
        "returncode": done.returncode,
        "summary": lines[-1] if lines else "",
    }
