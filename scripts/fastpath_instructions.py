#!/usr/bin/env python3
"""Instructions per fast-path operation, counted by callgrind.

Builds `crates/pymalloc/examples/fastpath_ir.rs` (release) in the given
checkout and runs it under callgrind once per (mode, operation), counting
only the measured loop (`--toggle-collect=measured_malloc` or
`measured_free`). Figures are instructions per operation, including the
driver's loop and one indirect call (the same in every checkout), so two
checkouts compare exactly; absolute numbers are a few instructions above the
allocator's own.

    python3 scripts/fastpath_instructions.py [--repo PATH ...] [-n N] [--json FILE]

With several --repo, prints one column per checkout (e.g. before/after a
change: `git worktree add /tmp/before HEAD~1`).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

MODES = ["gil", "thread", "pymalloc"]
OPS = ["malloc", "free"]


def build(repo):
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "-p", "pymalloc", "--example", "fastpath_ir"],
        cwd=repo,
        check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    exe = os.path.join(target, "release", "examples", "fastpath_ir")
    if not os.path.exists(exe):
        sys.exit(f"not built: {exe}")
    return exe


def count(exe, mode, op, n):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}",
                "--collect-atstart=no", f"--toggle-collect=measured_{op}",
                exe, mode, str(n),
            ],
            check=True,
        )
        with open(out) as f:
            text = f.read()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not m:
        sys.exit(f"no total in callgrind output for {mode} {op}")
    return int(m.group(1)) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", action="append", help="checkout to measure (repeatable; default: this one)")
    ap.add_argument("-n", type=int, default=100_000, help="operations per measured loop")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    repos = args.repo or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    exes = [build(os.path.abspath(r)) for r in repos]
    figures = {r: {} for r in repos}
    print("| operation | " + " | ".join(repos) + " |")
    print("|---|" + "---:|" * len(repos))
    for mode in MODES:
        for op in OPS:
            row = []
            for r, exe in zip(repos, exes):
                v = count(exe, mode, op, args.n)
                figures[r][f"{mode} {op}"] = v
                row.append(f"{v:.2f}")
            print(f"| {mode} {op} | " + " | ".join(row) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "figures": figures}, f, indent=1)


if __name__ == "__main__":
    main()
