#!/usr/bin/env python3
"""The GC comparison with one peer per process.

Measuring several collectors in one process (as benches/gc_compare.rs does)
distorts the later ones: each runs on the allocator and heap state the
earlier ones left. This runs examples/gc_peer.rs once per peer, shape, size
and round, in a process of its own, alternating the order of the peers from
round to round, and reports the median over the rounds (each process
reports the median of its own repetitions, after one warm-up repetition).
With --callgrind it also counts, under valgrind's callgrind, the
instructions of the timed part alone (`gc_peer::timed`: one repetition
after one warm-up) in one process per peer, shape and size: those do not
drift with the load of the machine, which timings on a shared 2-core machine
do.

    cargo build --release -p pymalloc-gc --example gc_peer
    python3 crates/pymalloc-gc/scripts/peer_bench.py --rounds 5 --callgrind
    python3 crates/pymalloc-gc/scripts/peer_bench.py --shapes ring --sizes 1000000 --rounds 3

It prints a Markdown table per shape (ns per object, and instructions per
object when --callgrind), and with --out appends every measurement to a
JSON-lines file. --cpython adds CPython's collector (cpython_gc_bench.py,
its own process too) to the timings.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

PEERS = ["pymalloc-gc", "gcmodule", "rust-cc", "dumpster", "bacon_rajan_cc"]
ACYCLIC_EXTRA = ["rc", "pymalloc-gc-nogc"]
SHAPES = ["alloc_drop", "acyclic_tree", "ring", "tree_parent", "random"]
LABEL = {"rc": "Rc (system allocator)", "pymalloc-gc-nogc": "pymalloc-gc (gc disabled)"}


def peers_for(shape, chosen):
    if shape == "alloc_drop":
        order = ["rc"] + PEERS
    elif shape == "acyclic_tree":
        order = ["rc", PEERS[0], "pymalloc-gc-nogc"] + PEERS[1:]
    else:
        order = PEERS
    return [p for p in order if p in chosen]


def binary(args):
    if args.bin:
        return args.bin
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "pymalloc-gc", "--example", "gc_peer"], check=True, cwd=ROOT
    )
    return os.path.join(target, "release", "examples", "gc_peer")


def run_time(b, peer, shape, n, reps):
    out = subprocess.run([b, peer, shape, str(n), str(reps)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ns_per_object"]


def run_callgrind(b, peer, shape, n):
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--collect-atstart=no",
        "--toggle-collect=gc_peer::timed",
        b,
        peer,
        shape,
        str(n),
        "1",
        "1",
    ]
    err = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
    m = re.search(r"Collected : (\d+)", err)
    return int(m.group(1)) / n


def run_cpython(sizes, reps):
    script = os.path.join(HERE, "cpython_gc_bench.py")
    out = subprocess.run(
        [sys.executable, script, ",".join(map(str, sizes)), str(reps)], check=True, capture_output=True, text=True
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {(d["group"], d["n"]): d["ns_per_object"] for d in rows}


def fmt(x):
    return "—" if x is None else (f"{x:.1f}" if x < 1000 else f"{x:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="repetitions inside each process")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--peers", default=",".join(PEERS + ACYCLIC_EXTRA))
    ap.add_argument("--callgrind", action="store_true", help="also count instructions (one process per peer)")
    ap.add_argument("--callgrind-sizes", default="100000")
    ap.add_argument("--no-time", action="store_true", help="only the callgrind counts")
    ap.add_argument("--cpython", action="store_true")
    ap.add_argument("--bin", help="a built gc_peer (default: build it with cargo)")
    ap.add_argument("--out", help="append every measurement here (JSON lines)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    chosen = args.peers.split(",")
    b = binary(args)
    out = open(args.out, "a") if args.out else None

    def record(**d):
        if out:
            out.write(json.dumps(d) + "\n")
            out.flush()

    times = {}
    if not args.no_time:
        for r in range(args.rounds):
            for shape in shapes:
                for n in sizes:
                    ps = peers_for(shape, chosen)
                    k = r % len(ps)
                    for peer in ps[k:] + ps[:k]:
                        t = run_time(b, peer, shape, n, args.reps)
                        times.setdefault((shape, peer, n), []).append(t)
                        record(kind="time", round=r, shape=shape, peer=peer, n=n, ns_per_object=t)
                        print(f"round {r} {shape} {peer} {n}: {t:.1f} ns", file=sys.stderr)
    instr = {}
    if args.callgrind:
        for shape in shapes:
            for n in [int(s) for s in args.callgrind_sizes.split(",")]:
                for peer in peers_for(shape, chosen):
                    i = run_callgrind(b, peer, shape, n)
                    instr[(shape, peer, n)] = i
                    record(kind="instructions", shape=shape, peer=peer, n=n, per_object=i)
                    print(f"callgrind {shape} {peer} {n}: {i:.0f} instructions", file=sys.stderr)
    cpy = run_cpython(sizes, args.rounds) if args.cpython and not args.no_time else {}

    for shape in shapes:
        ps = peers_for(shape, chosen)
        print(f"\n**{shape}** (one process per peer)\n")
        if times:
            with_rc = "rc" in ps
            cols = [LABEL.get(p, p) for p in ps] + (["CPython gc"] if cpy else []) + ["ours / best crate"]
            cols += ["ours / Rc"] if with_rc else []
            print("| n | " + " | ".join(cols) + " |")
            print("|---" * (len(cols) + 1) + "|")
            for n in sizes:
                med = {p: statistics.median(times[(shape, p, n)]) for p in ps if (shape, p, n) in times}
                crates = [med[p] for p in PEERS[1:] if p in med]
                ratio = med["pymalloc-gc"] / min(crates) if crates and "pymalloc-gc" in med else None
                row = [fmt(med.get(p)) for p in ps] + ([fmt(cpy.get((shape, n)))] if cpy else [])
                row.append("—" if ratio is None else f"{ratio:.2f}")
                if with_rc:
                    row.append(f"{med['pymalloc-gc'] / med['rc']:.2f}" if "rc" in med and "pymalloc-gc" in med else "—")
                print(f"| {n:,} ns | " + " | ".join(row) + " |")
        if instr:
            for n in sorted({k[2] for k in instr if k[0] == shape}):
                row = [fmt(instr.get((shape, p, n))) for p in ps]
                crates = [instr[(shape, p, n)] for p in PEERS[1:] if (shape, p, n) in instr]
                ours = instr.get((shape, "pymalloc-gc", n))
                rc = instr.get((shape, "rc", n))
                if not times:
                    cols = [LABEL.get(p, p) for p in ps] + ["ours / best crate"] + (["ours / Rc"] if rc else [])
                    print("| n | " + " | ".join(cols) + " |")
                    print("|---" * (len(cols) + 1) + "|")
                row += ["—"] if cpy else []
                row.append(f"{ours / min(crates):.2f}" if crates and ours else "—")
                row += [f"{ours / rc:.2f}"] if rc and ours else []
                print(f"| {n:,} instructions | " + " | ".join(row) + " |")

if __name__ == "__main__":
    main()
