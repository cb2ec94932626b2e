#!/usr/bin/env python3
"""The tracer's overhead, side by side: the Rust workloads of pymalloc-bench
untraced (`rust-pymalloc`), under the `Traced` wrapper with tracing off, on
with 1 and with 16 frames (`rust-pymalloc-traced`, `TRACE_NFRAME`), and
with 16 frames sampling one block per 512 KiB (`TRACE_SAMPLE`), and under
dhat-rs (`rust-dhat`). Each run is a process of its own; the variants
take turns within each round and their order rotates from round to round.
Figures are medians over the rounds.

    cargo build --release -p pymalloc-bench
    python3 scripts/trace_overhead.py --rounds 3 --out docs/tracing-overhead.md

`--scale K` divides the workloads' iteration counts (BENCH_SCALE), for a
smoke run. Standard library only.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

VARIANTS = [
    ("untraced", "rust-pymalloc", None, None),
    ("off", "rust-pymalloc-traced", None, None),
    ("1 frame", "rust-pymalloc-traced", "1", None),
    ("16 frames", "rust-pymalloc-traced", "16", None),
    ("16 frames, 1 per 512 KiB", "rust-pymalloc-traced", "16", "524288"),
    ("dhat-rs", "rust-dhat", None, None),
]


def run(bin_dir, exe, nframe, sample, workload, scale):
    env = dict(os.environ, BENCH_SCALE=str(scale))
    env.pop("TRACE_NFRAME", None)
    env.pop("TRACE_SAMPLE", None)
    if nframe:
        env["TRACE_NFRAME"] = nframe
    if sample:
        env["TRACE_SAMPLE"] = sample
    out = subprocess.run([os.path.join(bin_dir, exe), workload, exe], env=env, capture_output=True, text=True,
                         timeout=1800)
    if out.returncode != 0:
        sys.exit(f"{exe} {workload} failed: {out.stderr[-2000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["ns_per_op"]


def alternating_runs(rounds, workloads, variants, run_one):
    """Runs `run_one(variant, workload)` (a time in ns) for every variant
    and workload, `rounds` times; the variants take turns within a round,
    their order rotating from round to round. Returns every time, keyed by
    (workload, variant name), the name being each variant's first field,
    in round order."""
    times = {(w, v[0]): [] for w in workloads for v in variants}
    for r in range(rounds):
        for w in workloads:
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                t = run_one(v, w)
                times[(w, v[0])].append(t)
                print(f"round {r} {w:7} {v[0]:26} {t:12.1f} ns/op", flush=True)
    return times


def alternating_medians(rounds, workloads, variants, run_one):
    """[`alternating_runs`], each list reduced to its median."""
    return {k: statistics.median(v) for k, v in alternating_runs(rounds, workloads, variants, run_one).items()}


def paired_ratio(times, w, a, b):
    """The median over the rounds of variant `a`'s time over `b`'s in the
    same round: steadier than a ratio of medians when the machine's speed
    drifts between rounds."""
    return statistics.median(x / y for x, y in zip(times[(w, a)], times[(w, b)]))


def emit(lines, out):
    """Prints the table's lines, and writes them to `out` if given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--workloads", default="ring,json,btree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--out", help="Markdown table to write (default: stdout only)")
    a = ap.parse_args()
    workloads = a.workloads.split(",")
    times = alternating_runs(a.rounds, workloads, VARIANTS,
                             lambda v, w: run(a.bin_dir, v[1], v[2], v[3], w, a.scale))
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"Medians of {a.rounds} alternating rounds, BENCH_SCALE={a.scale}, each run a process of its own "
        "(`scripts/trace_overhead.py`). Time per operation. Ratios: the median over the rounds of each "
        "round's ratio (the variants of a round ran minutes apart at most).",
        "",
        "| workload | " + " | ".join(v[0] for v in VARIANTS) + " | 1 frame / untraced | 1 frame / dhat-rs | sampled / untraced |",
        "|---|" + "---|" * (len(VARIANTS) + 3),
    ]
    for w in workloads:
        cells = [f"{med[(w, v[0])]:.1f} ns" for v in VARIANTS]
        lines.append(f"| {w} | " + " | ".join(cells) +
                     f" | {paired_ratio(times, w, '1 frame', 'untraced'):.2f}x"
                     f" | {paired_ratio(times, w, '1 frame', 'dhat-rs'):.2f}"
                     f" | {paired_ratio(times, w, '16 frames, 1 per 512 KiB', 'untraced'):.2f}x |")
    emit(lines, a.out)


if __name__ == "__main__":
    main()
