"""The test suite's wall time: `make test` and `make test-fast` against their targets (10 and
3 minutes on 2 cores), with the modules that took longest (worker time, setup included).

Usage: python bench/test_suite.py [--only full|fast] [--ref REV]

With ``--ref REV`` the full suite of that commit runs too, in a temporary worktree with this
checkout's environment, and both walls are printed side by side (the machine is noisy:
compare within one run).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What `make test` runs (see the Makefile), without its --durations table.
PYTEST = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", "-q", "-p", "no:cacheprovider"]
TARGETS = {"full": 600.0, "fast": 180.0}


def run_suite(checkout: Path, marker: str | None, junit: Path) -> tuple[float, str]:
    """Wall seconds of the suite in ``checkout`` and pytest's last line."""
    command = [sys.executable, "-m", "pytest", *PYTEST, f"--junitxml={junit}"]
    if marker:
        command += ["-m", marker]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, (done.stdout.strip().splitlines() or ["no output"])[-1]


def module_seconds(junit: Path) -> Counter[str]:
    """Worker seconds per test module (setup, call and teardown of its tests)."""
    seconds: Counter[str] = Counter()
    for case in ET.parse(junit).iter("testcase"):
        seconds[case.get("classname", "?")] += float(case.get("time", 0))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGETS))
    parser.add_argument("--ref", help="also run the full suite of this commit (a worktree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = []
        for name in [args.only] if args.only else ["full", "fast"]:
            junit = Path(scratch) / f"{name}.xml"
            wall, summary = run_suite(REPO, "not e2e" if name == "fast" else None, junit)
            rows.append((name, wall, TARGETS[name], summary))
            top = module_seconds(junit).most_common(8)
            print(f"{name}: slowest modules (worker s): "
                  + ", ".join(f"{m.removeprefix('tests.')} {s:.0f}" for m, s in top))  # fmt: skip
        if args.ref:
            worktree = Path(scratch) / "ref"
            subprocess.run(["git", "worktree", "add", "--detach", str(worktree), args.ref],
                           cwd=REPO, check=True, capture_output=True)  # fmt: skip
            try:
                wall, summary = run_suite(worktree, None, Path(scratch) / "ref.xml")
                rows.append((f"full at {args.ref}", wall, TARGETS["full"], summary))
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)],
                               cwd=REPO, check=True)  # fmt: skip
    print(f"{'suite':<22} {'wall':>9} {'target':>8} {'wall/target':>12}  pytest")
    for name, wall, target, summary in rows:
        print(f"{name:<22} {wall:8.0f}s {target:7.0f}s {wall / target:11.2f}x  {summary}")


if __name__ == "__main__":
    main()
