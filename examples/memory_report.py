"""A small Python workload, then the memory report of pymalloc-rs.

Run it on pymalloc-rs:

    cargo run --release -p pymalloc-python -- examples/memory_report.py

It builds and drops a few hundred thousand objects of the usual kinds
(dicts, lists, tuples, strings, ints, floats, class instances), keeps some,
and prints what the allocator holds: the sys._debugmallocstats() table, a map
of the arenas (one character per 16 KiB pool) and a summary. Run it with
python3 instead and it says pymalloc-rs is not in use.
"""
import gc
import json
import random
import sys


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def workload(n=200_000, seed=1):
    rnd = random.Random(seed)
    keep = []
    for i in range(n):
        kind = rnd.randrange(6)
        if kind == 0:
            obj = {"id": i, "name": f"item-{i}", "tags": [rnd.random() for _ in range(3)]}
        elif kind == 1:
            obj = [str(j) * rnd.randrange(1, 20) for j in range(rnd.randrange(1, 10))]
        elif kind == 2:
            obj = tuple(range(rnd.randrange(1, 12)))
        elif kind == 3:
            obj = Point(rnd.random(), rnd.random())
        elif kind == 4:
            obj = json.dumps({"k": list(range(rnd.randrange(50)))})
        else:
            obj = bytearray(rnd.choice((100, 600, 5000)))
        if rnd.random() < 0.1:
            keep.append(obj)
    gc.collect()
    return keep


def main():
    try:
        import _pymalloc
    except ImportError:
        print("This interpreter is not running on pymalloc-rs "
              "(run it with target/release/pymalloc-python).")
        return 1
    keep = workload()
    print(f"kept {len(keep)} objects; configuration: {_pymalloc.allocator()}")
    sys.stdout.flush()
    sys._debugmallocstats()          # our table, then CPython's free lists
    print(_pymalloc.arena_map())
    s = _pymalloc.stats()
    used = s["allocated_bytes"]
    print(f"{s['arenas_current']} arenas ({s['arena_bytes'] / 2**20:.0f} MiB) hold "
          f"{s['blocks_in_use']} blocks, {used / 2**20:.1f} MiB in use "
          f"({100 * used / max(s['arena_bytes'], 1):.0f}% of arena memory); "
          f"{s['arenas_allocated_total']} arenas made, {s['arenas_reclaimed']} given back")
    _pymalloc.validate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
