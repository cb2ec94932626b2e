#!/usr/bin/env python3
"""A table from criterion's estimates of benches/gc_compare.rs plus CPython's
figures (from cpython_gc_bench.py), in ns per object, with the ratios the
issue's targets are about. gc_compare runs every peer in one process, which
distorts the later ones: this is for a quick look; the README's tables come
from peer_bench.py (one peer per process).

    cargo bench -p pymalloc-gc --bench gc_compare
    python3 crates/pymalloc-gc/scripts/cpython_gc_bench.py > /tmp/cpython.jsonl
    python3 crates/pymalloc-gc/scripts/bench_table.py target/criterion /tmp/cpython.jsonl
"""
import glob
import json
import os
import sys

OURS = "pymalloc-gc"
CRATES = ["gcmodule", "rust-cc", "dumpster", "bacon_rajan_cc"]


def load(criterion_dir):
    res = {}
    for bj in glob.glob(os.path.join(criterion_dir, "*", "*", "*", "new", "benchmark.json")):
        b = json.load(open(bj))
        est = json.load(open(os.path.join(os.path.dirname(bj), "estimates.json")))
        n = int(b["value_str"])
        res[(b["group_id"], b["function_id"], n)] = est["mean"]["point_estimate"] / n
    return res


def main():
    res = load(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    if len(sys.argv) > 2:
        for line in open(sys.argv[2]):
            d = json.loads(line)
            res[(d["group"], "CPython gc", d["n"])] = d["ns_per_object"]
    groups = ["alloc_drop", "acyclic_tree", "ring", "tree_parent", "random"]
    for g in groups:
        impls = []
        for (gg, f, _n) in res:
            if gg == g and f not in impls:
                impls.append(f)
        order = ["Rc (system allocator)", OURS, "pymalloc-gc (gc disabled)"] + CRATES + ["CPython gc"]
        impls = [i for i in order if i in impls] + [i for i in impls if i not in order]
        ns = sorted({n for (gg, _f, n) in res if gg == g})
        if not ns:
            continue
        ratio_cols = ["ours / best crate", "ours / CPython"]
        if g in ("alloc_drop", "acyclic_tree"):
            ratio_cols.append("ours / Rc")
        print(f"\n**{g}** (ns per object)\n")
        print("| n | " + " | ".join(impls) + " | " + " | ".join(ratio_cols) + " |")
        print("|---" * (1 + len(impls) + len(ratio_cols)) + "|")
        for n in ns:
            row = [f"{n:,}"]
            for i in impls:
                v = res.get((g, i, n))
                row.append("—" if v is None else f"{v:.1f}")
            ours = res.get((g, OURS, n))
            crates = [res[(g, c, n)] for c in CRATES if (g, c, n) in res]
            best = min(crates) if crates else None
            cp = res.get((g, "CPython gc", n))
            rc = res.get((g, "Rc (system allocator)", n))
            row.append(f"{ours / best:.2f}" if ours and best else "—")
            row.append(f"{ours / cp:.2f}" if ours and cp else "—")
            if g in ("alloc_drop", "acyclic_tree"):
                row.append(f"{ours / rc:.2f}" if ours and rc else "—")
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
