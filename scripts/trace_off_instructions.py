#!/usr/bin/env python3
"""What tracing off costs the Rust global allocator, in instructions: each
Rust workload of pymalloc-bench under callgrind, untraced (`rust-pymalloc`,
plain `PyMalloc`) and under the `Traced` wrapper with tracing off
(`rust-pymalloc-traced`, `Traced(PyMalloc)`). Whole process, each run a
process of its own. Instruction counts do not drift with the machine's
load, so one run of each is the figure.

    cargo build --release -p pymalloc-bench
    python3 scripts/trace_off_instructions.py --scale 20 --out docs/tracing-off-instructions.md

The two binaries differ in more than the allocator's own code: LTO inlines
the allocator into the workloads' functions by a cost threshold, and the
register allocation around it changes with it. docs/tracing.md reads the
table. `--scale K` divides the iteration counts (BENCH_SCALE). Needs
valgrind; standard library only.
"""

import argparse
import os
import re
import subprocess
import sys

WORKLOADS = "fastpath,ring,mixed,random,survivors,json,btree"


def instructions(bin_dir, exe, workload, scale):
    env = dict(os.environ, BENCH_SCALE=str(scale))
    env.pop("TRACE_NFRAME", None)
    env.pop("TRACE_SAMPLE", None)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          os.path.join(bin_dir, exe), workload, exe],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"{exe} {workload} failed: {out.stderr[-2000:]}")
    m = re.search(r"refs:\s+([\d,]+)", out.stderr)
    if not m:
        sys.exit(f"{exe} {workload}: no instruction count in callgrind's output")
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--workloads", default=WORKLOADS)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--out", help="Markdown table to write (default: stdout only)")
    a = ap.parse_args()
    lines = [
        f"Callgrind, whole process, BENCH_SCALE={a.scale} (`scripts/trace_off_instructions.py`): "
        "plain `PyMalloc` against `Traced(PyMalloc)` with tracing off.",
        "",
        "| workload | untraced | off | off / untraced |",
        "|---|---|---|---|",
    ]
    for w in a.workloads.split(","):
        plain = instructions(a.bin_dir, "rust-pymalloc", w, a.scale)
        off = instructions(a.bin_dir, "rust-pymalloc-traced", w, a.scale)
        print(f"{w:10} {plain:>14,} {off:>14,} {off / plain:.4f}", flush=True)
        lines.append(f"| {w} | {plain:,} | {off:,} | {off / plain:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
