#!/usr/bin/env python3
"""CPython's own collector on the shapes of benches/gc_compare.rs.

Same node (three slots), same shapes, same timed part:
  alloc_drop     allocate one object and drop it, n times
  acyclic_tree   build a binary tree (children only) and drop it
  ring, tree_parent, random
                 built untimed; timed: drop the last outside reference
                 plus one gc.collect()
Prints one JSON object per line: {"group", "n", "ns_per_object"} (median of
the repetitions).

    python3 cpython_gc_bench.py [sizes, default 100000,1000000] [reps]
"""
import gc
import json
import statistics
import sys
import time


class Node:
    __slots__ = ("a", "b", "c")

    def __init__(self):
        self.a = self.b = self.c = None


def ring(n):
    first = last = Node()
    for _ in range(1, n):
        x = Node()
        last.a = x
        last = x
    last.a = first
    return first


def tree(n, parent_links):
    nodes = [Node() for _ in range(n)]
    for i in range(1, n):
        p = nodes[(i - 1) // 2]
        if i % 2 == 1:
            p.b = nodes[i]
        else:
            p.c = nodes[i]
        if parent_links:
            nodes[i].a = p
    return nodes[0]


M64 = (1 << 64) - 1


def random_graph(n):
    s = 0x9E3779B97F4A7C15

    def nxt():
        nonlocal s
        s ^= s >> 12
        s ^= (s << 25) & M64
        s ^= s >> 27
        return ((s * 0x2545F4914F6CDD1D) & M64) >> 33

    nodes = [Node() for _ in range(n)]
    for x in nodes:
        x.a = nodes[nxt() % n]
        x.b = nodes[nxt() % n]
    return nodes[0]


def time_cyclic(build, n):
    holder = [build(n)]
    gc.collect()  # the build's own garbage, if any
    t0 = time.perf_counter_ns()
    del holder[0]
    found = gc.collect()
    t1 = time.perf_counter_ns()
    # (in the random graph, nodes nobody points to die by reference
    # count when the build's list goes, as in the Rust benchmark)
    assert found > 0, (found, n)
    return (t1 - t0) / n


def time_acyclic(n):
    t0 = time.perf_counter_ns()
    root = tree(n, False)
    del root
    t1 = time.perf_counter_ns()
    return (t1 - t0) / n


def time_alloc_drop(n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        Node()
    t1 = time.perf_counter_ns()
    return (t1 - t0) / n


def main():
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "100000,1000000").split(",")]
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    shapes = [
        ("alloc_drop", lambda n: time_alloc_drop(n)),
        ("acyclic_tree", lambda n: time_acyclic(n)),
        ("ring", lambda n: time_cyclic(ring, n)),
        ("tree_parent", lambda n: time_cyclic(lambda k: tree(k, True), n)),
        ("random", lambda n: time_cyclic(random_graph, n)),
    ]
    for group, f in shapes:
        for n in sizes:
            xs = [f(n) for _ in range(reps)]
            print(json.dumps({"group": group, "n": n, "ns_per_object": statistics.median(xs)}), flush=True)


if __name__ == "__main__":
    main()
