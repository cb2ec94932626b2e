#!/usr/bin/env python3
"""The tracer on a C program, beside heaptrack: pymalloc-bench's C driver
(`crates/pymalloc-bench/csrc/workloads.c`, plain malloc/free) run

* under glibc, untraced;
* under heaptrack (`heaptrack -o DIR/...`, its default: every allocation
  with its whole backtrace, written to a file);
* with `libpymalloc_preload.so` (ours, untraced);
* with `libpymalloc_preload_trace.so`, tracing off, and with
  `PYTHONTRACEMALLOC=1` and `=16`.

Each run is a process of its own; the variants take turns within each
round and their order rotates from round to round. Figures are medians
over the rounds, in the driver's own time per operation.

    cargo build --release -p pymalloc-preload -p pymalloc-preload-trace
    python3 scripts/trace_overhead_c.py --rounds 3 --out docs/tracing-overhead-c.md

A variant whose tool is missing (heaptrack is Debian's `heaptrack`
package) is left out and named. `--scale K` divides the iteration counts
(BENCH_SCALE), for a smoke run. Standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from trace_overhead import alternating_medians, emit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def variants(lib_dir, tmp):
    plain = os.path.join(lib_dir, "libpymalloc_preload.so")
    trace = os.path.join(lib_dir, "libpymalloc_preload_trace.so")
    out = [("glibc", [], {})]
    heaptrack = shutil.which("heaptrack")
    if heaptrack:
        out.append(("heaptrack", [heaptrack, "-o", os.path.join(tmp, "heaptrack")], {}))
    out += [
        ("ours", [], {"LD_PRELOAD": plain}),
        ("ours, tracing lib off", [], {"LD_PRELOAD": trace}),
        ("ours, 1 frame", [], {"LD_PRELOAD": trace, "PYTHONTRACEMALLOC": "1"}),
        ("ours, 16 frames", [], {"LD_PRELOAD": trace, "PYTHONTRACEMALLOC": "16"}),
    ]
    for _, _, env in out:
        for k in ("LD_PRELOAD",):
            if k in env and not os.path.exists(env[k]):
                sys.exit(f"{env[k]} is missing: cargo build --release -p pymalloc-preload -p pymalloc-preload-trace")
    return out, heaptrack is not None


def build_driver(tmp):
    exe = os.path.join(tmp, "c-glibc")
    src = os.path.join(ROOT, "crates/pymalloc-bench/csrc/workloads.c")
    subprocess.run(["cc", "-O2", "-g", "-std=c11", "-pthread", "-DALLOC_LIBC", src, "-o", exe, "-lpthread", "-lm"],
                   check=True)
    return exe


def run(driver, prefix, env_add, workload, scale):
    env = dict(os.environ, BENCH_SCALE=str(scale))
    for k in ("LD_PRELOAD", "PYTHONTRACEMALLOC"):
        env.pop(k, None)
    env.update(env_add)
    out = subprocess.run(prefix + [driver, workload, "c"], env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        sys.exit(f"{prefix} {workload} {env_add} failed: {out.stderr[-2000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["ns_per_op"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib-dir", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--workloads", default="ring,random,mixed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--out", help="Markdown table to write (default: stdout only)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        driver = build_driver(tmp)
        vs, have_heaptrack = variants(a.lib_dir, tmp)
        workloads = a.workloads.split(",")
        med = alternating_medians(a.rounds, workloads, vs, lambda v, w: run(driver, v[1], v[2], w, a.scale))
    names = [v[0] for v in vs]
    ratio_cols = ["1 frame / glibc", "1 frame / ours"] + (["1 frame / heaptrack", "heaptrack / glibc"]
                                                          if have_heaptrack else [])
    lines = [
        f"Medians of {a.rounds} alternating rounds, BENCH_SCALE={a.scale}, each run a process of its own "
        "(`scripts/trace_overhead_c.py`): the C driver's time per operation.",
        "",
    ]
    if not have_heaptrack:
        lines += ["heaptrack is not installed here: its column is left out.", ""]
    lines += [
        "| workload | " + " | ".join(names) + " | " + " | ".join(ratio_cols) + " |",
        "|---|" + "---|" * (len(names) + len(ratio_cols)),
    ]
    for w in workloads:
        one = med[(w, "ours, 1 frame")]
        cells = [f"{med[(w, n)]:.1f} ns" for n in names]
        ratios = [f"{one / med[(w, 'glibc')]:.1f}x", f"{one / med[(w, 'ours')]:.1f}x"]
        if have_heaptrack:
            ratios += [f"{one / med[(w, 'heaptrack')]:.2f}", f"{med[(w, 'heaptrack')] / med[(w, 'glibc')]:.1f}x"]
        lines.append(f"| {w} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
