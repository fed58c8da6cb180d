"""Run the conformance suite several times with different hypothesis seeds: does it flake?

    python scripts/flake_check.py                      # 10 runs, reference, thorough profile
    python scripts/flake_check.py --runs 3 --impl torch.nn --seed 100
    python scripts/flake_check.py -- --spec-timeout 120 # arguments after -- go to the suite

Each run is ``python -m spec --spec-profile PROFILE --hypothesis-seed SEED`` in a fresh process
and an empty temporary directory (seeds SEED, SEED + 1, ...). A run *passes* when the suite
exits 0 and, against the reference, every clause CONFORMS. Against another implementation the
verdicts must be the same in every run. Prints one line per run and a summary; exits 1 if any
run failed or the verdicts differ between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_once(impl: str, profile: str, seed: int, extra: list[str]) -> dict[str, Any]:
    """One run of the suite; its exit status, wall time and verdicts."""
    with tempfile.TemporaryDirectory(prefix="attention-spec-flakes-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "spec", "-q", "--impl", impl, "--spec-profile", profile,
            "--hypothesis-seed", str(seed), "--conformance-json", str(report), *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        clauses = json.loads(report.read_text())["clauses"] if report.exists() else []
    verdicts = {c["id"]: c["verdict"] for c in clauses}
    reasons = {c["id"]: c["reason"] for c in clauses if c["verdict"] != "CONFORMS"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"seed": seed, "rc": done.returncode, "seconds": seconds, "verdicts": verdicts,
            "reasons": reasons, "tail": tail}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="how many runs (default 10)")
    parser.add_argument("--impl", default="reference", help="the implementation (--impl)")
    parser.add_argument("--profile", default="thorough", choices=["ci", "thorough"])
    parser.add_argument("--seed", type=int, default=1, help="the first hypothesis seed")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("extra", nargs="*", help="arguments for the suite, after --")
    args = parser.parse_args(argv)

    results = []
    first: dict[str, str] | None = None
    for i in range(args.runs):
        seed = args.seed + i
        r = run_once(args.impl, args.profile, seed, args.extra)
        first = first if first is not None else r["verdicts"]
        problems = []
        if r["rc"] != 0:
            problems.append(f"exit status {r['rc']}")
        if not r["verdicts"]:
            problems.append("no report")
        elif args.impl == "reference" and r["reasons"]:
            problems.append(
                "not CONFORMS: " + "; ".join(f"{k}: {v}" for k, v in r["reasons"].items())
            )
        elif r["verdicts"] != first:
            changed = sorted(k for k in set(first) | set(r["verdicts"])
                             if first.get(k) != r["verdicts"].get(k))  # fmt: skip
            problems.append(f"verdicts differ from run 1 on {changed}")
        r["passed"] = not problems
        counts: dict[str, int] = {}
        for verdict in r["verdicts"].values():
            counts[verdict] = counts.get(verdict, 0) + 1
        summary = ", ".join(f"{n} {v}" for v, n in counts.items())
        status = "pass" if r["passed"] else "FAIL: " + "; ".join(problems)
        print(f"run {i + 1:2d}/{args.runs}  seed {seed:<6d} {r['seconds']:6.1f} s  "
              f"{summary}  {status}", flush=True)  # fmt: skip
        if not r["passed"]:
            print("\n".join("    " + line for line in r["tail"]), flush=True)
        results.append(r)

    failed = [r["seed"] for r in results if not r["passed"]]
    total = sum(r["seconds"] for r in results)
    print(f"{args.runs - len(failed)} of {args.runs} runs passed ({args.impl}, profile "
          f"{args.profile}, seeds {args.seed}..{args.seed + args.runs - 1}); {total:.0f} s in all, "
          f"{total / max(args.runs, 1):.1f} s per run" + (f"; failed seeds: {failed}" if failed else ""))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
