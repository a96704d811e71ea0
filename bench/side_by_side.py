"""Before and after, in one run: the cold-start and warm-invoke rows of two checkouts, interleaved.

    .venv/bin/python bench/side_by_side.py ../before-checkout [--rounds 2]

The other checkout needs its own virtualenv (`make .venv/.installed` in it), e.g. a worktree of the commit
before a change: `git worktree add ../before <commit> && make -C ../before .venv/.installed`. Each round runs
`bench/cold_start.py --quick` and `bench/invoke_latency.py --quick` of the other checkout, then of this one
(then the other way round in the next round, so neither always goes first), and keeps the p50 of the rows
below. It prints each p50 per round, the median over rounds for both, and after/before: compare that ratio,
not the milliseconds (the machine is shared and noisy; `uptime` is printed at the start and the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
ROWS = {  # script → rows whose p50 (the first number after the label) is compared
    "cold_start.py": ("fresh interpreter, hello", "template, hello", "template, boto3 init"),
    "invoke_latency.py": ("health GET (lean)", "warm invoke (lean)", "cold first invoke"),
}


def run(checkout: Path, script: str) -> dict[str, float]:
    out = subprocess.run([str(checkout / ".venv/bin/python"), str(checkout / "bench" / script), "--quick"],
                         cwd=checkout, capture_output=True, text=True, timeout=900, check=True).stdout
    got: dict[str, float] = {}
    for line in out.splitlines():
        for label in ROWS[script]:
            if line.startswith(label) and label not in got:
                rest = line[len(label):].split()
                try:
                    got[label] = float(rest[0])
                except (IndexError, ValueError):
                    pass
    return got


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before", type=Path, help="the other checkout (with its own .venv)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    before = args.before.resolve()
    sides = {"before": before, "after": HERE}
    print(f"before: {before} ({_commit(before)})\nafter:  {HERE} ({_commit(HERE)})\nload at start: {uptime()}")
    samples: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for script in ROWS:
            for side in order:
                for label, p50 in run(sides[side], script).items():
                    samples.setdefault((side, label), []).append(p50)
        print(f"round {r + 1} done", file=sys.stderr)
    print(f"load at end:   {uptime()}\n")
    print(f"{'p50, ms':<28} {'before (each round)':<24} {'after (each round)':<24} {'before':>8} {'after':>8} "
          f"{'after/before':>12}")
    for labels in ROWS.values():
        for label in labels:
            b, a = samples.get(("before", label), []), samples.get(("after", label), [])
            if not a or not b:
                continue
            mb, ma = statistics.median(b), statistics.median(a)
            print(f"{label:<28} {' '.join(f'{x:.2f}' for x in b):<24} {' '.join(f'{x:.2f}' for x in a):<24} "
                  f"{mb:>8.2f} {ma:>8.2f} {ma / mb:>11.2f}x")


def _commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True, env={**os.environ, "GIT_PAGER": "cat"}).stdout.strip()[:70]


if __name__ == "__main__":
    main()
