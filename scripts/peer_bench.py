#!/usr/bin/env python3
"""The field's benchmark suite (mimalloc-bench), side by side: pymalloc-rs's
preload library against glibc, mimalloc, jemalloc and tcmalloc.

Every benchmark is an ordinary program run once per allocator with that
allocator preloaded (`LD_PRELOAD=lib.so ./program ...`; glibc: nothing
preloaded), each run in a process of its own, the allocators taking turns
(their order rotates from one round to the next). Per run: wall time and
peak resident memory (`ru_maxrss` of the child, from wait4), and the
benchmark's own figure where it prints one (larson's and rptest's
throughput, glibc-thread's iterations, xmalloc-test's rtime). Per
benchmark and allocator the figure is the median over the rounds.

    python3 scripts/peer_bench.py --source ../shared/peer-bench/mimalloc-bench [--rounds 3]
    python3 scripts/peer_bench.py                 # fetches upstream at the pinned commit

--source is a directory holding a copy of mimalloc-bench (its `bench/`
folder is what is built); without it the script clones
https://github.com/daanx/mimalloc-bench at PINNED. The sources are built
with CMake into --build and never copied into this repository (they are
under their own licences).

Writes a Markdown table (--out), the raw runs as JSON (--json) and a chart
of time ratios against mimalloc (--svg). The security probes
(`bench/security`) run once per allocator: a probe that prints NOT_CAUGHT
went undetected.

Standard library only. Exit status is non-zero when a benchmark fails to
run or prints no figure.
"""

import argparse
import datetime
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM = "https://github.com/daanx/mimalloc-bench"
PINNED = "ce5784f1cef3d48ddc931479e4899ffad5ab3943"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = {
    "glibc": None,
    "mimalloc": f"{LIBDIR}/libmimalloc.so.2",
    "jemalloc": f"{LIBDIR}/libjemalloc.so.2",
    "tcmalloc": f"{LIBDIR}/libtcmalloc_minimal.so.4",
}
OURS = "pymalloc-rs"
TIME = "/usr/bin/time"
HUNG = "hung"  # the exit status of a run killed at its timeout

# name -> (executable, arguments with {N} for the thread count, kind of the
# program's own figure). Kinds: "time" (wall time is the figure), "throughput"
# (higher is better; the cost is its inverse), "rtime" (the program's own
# time, lower is better). Command lines as upstream's bench.sh runs them.
BENCHMARKS = {
    "larsonN": ("larson", "5 8 1000 5000 100 4141 {N}", "throughput"),
    "larsonN-sized": ("larson-sized", "5 8 1000 5000 100 4141 {N}", "throughput"),
    "mstressN": ("mstress", "{N} 50 25", "time"),
    "xmalloc-testN": ("xmalloc-test", "-w {N} -t 5 -s 64", "rtime"),
    "cache-scratch1": ("cache-scratch", "1 1000 1 2000000 {N}", "time"),
    "cache-scratchN": ("cache-scratch", "{N} 1000 1 2000000 {N}", "time"),
    "cache-thrash1": ("cache-thrash", "1 1000 1 2000000 {N}", "time"),
    "cache-thrashN": ("cache-thrash", "{N} 1000 1 2000000 {N}", "time"),
    "glibc-simple": ("glibc-simple", "", "time"),
    "glibc-thread": ("glibc-thread", "{N}", "throughput"),
    "rptestN": ("rptest", "{N} 0 1 2 500 1000 100 8 16000", "throughput"),
    "malloc-large": ("malloc-large", "", "time"),
    "mleak10": ("mleak", "5", "time"),
    "mleak100": ("mleak", "50", "time"),
}

FIGURE = {
    "larson": re.compile(r"Throughput\s*=\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"),
    "larson-sized": re.compile(r"Throughput\s*=\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"),
    "rptest": re.compile(r"(\d+)\s+memory ops/CPU second"),
    # "N iterations" in a fixed time.
    "glibc-thread": re.compile(r"(\d+)\s+iterations\b"),
    # 100 / (millions of frees per second): lower is better.
    "xmalloc-test": re.compile(r"rtime:\s*(\d+(?:\.\d+)?)"),
}


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def fetch(dest):
    """A clone of upstream at PINNED in dest (kept between invocations)."""
    if not os.path.isdir(os.path.join(dest, "bench")):
        try:
            sh(["git", "clone", "--quiet", UPSTREAM, dest])
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            sys.exit(f"cannot fetch {UPSTREAM} ({e}); pass --source DIR with a copy of mimalloc-bench")
    sh(["git", "-C", dest, "checkout", "--quiet", PINNED])
    return dest


def build(source, build_dir):
    bench = os.path.join(source, "bench")
    if not os.path.isfile(os.path.join(bench, "CMakeLists.txt")):
        sys.exit(f"{bench}/CMakeLists.txt not found: --source must hold mimalloc-bench's bench/ folder")
    sh(["cmake", "-S", bench, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"], stdout=subprocess.DEVNULL)
    sh(["make", "-C", build_dir, "-j2", "--no-print-directory"], stdout=subprocess.DEVNULL)


def build_preload():
    cargo = os.environ.get("CARGO", "cargo")
    sh([cargo, "build", "--release", "--quiet", "-p", "pymalloc-preload"], cwd=REPO)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "libpymalloc_preload.so")


def run_once(exe, args, preload, cwd, timeout):
    """(wall seconds, peak RSS KiB, output, exit status) of one run.

    Through GNU time, as upstream's runner does: the peak resident set of a
    process forked from this (large) Python process would start at
    Python's own, since the kernel carries the pre-exec high-water mark
    into ru_maxrss.
    """
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    with tempfile.NamedTemporaryFile(dir=cwd, suffix=".time") as tf, tempfile.TemporaryFile(dir=cwd) as log:
        t = time.monotonic()
        # A session of its own: on timeout the whole group goes, not only
        # GNU time (a hung program would otherwise spin on as an orphan).
        p = subprocess.Popen([TIME, "-f", "%e %M", "-o", tf.name, exe, *args], cwd=cwd, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            code = HUNG
        wall = time.monotonic() - t  # GNU time's %e has 10 ms steps
        log.seek(0)
        out = log.read().decode(errors="replace")
        fields = open(tf.name).read().split()
    try:
        # GNU time writes "Command exited with non-zero status N" first.
        rss = int(fields[-1])
    except (IndexError, ValueError):
        rss = 0
    return wall, rss, out, code


def cost_of(name, wall, out):
    """The figure compared (lower is better) and the value shown."""
    exe, _, kind = BENCHMARKS[name]
    if kind == "time":
        return wall, wall
    m = FIGURE[exe].findall(out)
    if not m:
        return None, None
    v = float(m[-1])
    if kind == "rtime":
        return v, v
    return (1.0 / v if v > 0 else None), v


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def fmt_value(name, v):
    kind = BENCHMARKS[name][2]
    if v is None:
        return "-"
    if kind == "throughput":
        return f"{v:,.0f}/s" if v >= 1000 else f"{v:.3g}/s"
    if kind == "rtime":
        return f"rtime {v:.3f}"
    return f"{v:.3f} s"


def security(build_dir, allocators, timeout):
    """probe -> allocator -> 'caught' | 'not caught' | 'error'."""
    sec = os.path.join(build_dir, "security")
    if not os.path.isdir(sec):
        return {}
    probes = sorted(f for f in os.listdir(sec) if os.access(os.path.join(sec, f), os.X_OK)
                    and os.path.isfile(os.path.join(sec, f)))
    res = {}
    with tempfile.TemporaryDirectory() as cwd:
        for probe in probes:
            res[probe] = {}
            for a, lib in allocators.items():
                _, _, out, code = run_once(os.path.join(sec, probe), [], lib, cwd, timeout)
                res[probe][a] = ("not caught" if "NOT_CAUGHT" in out else
                                 "hung" if code == HUNG else "caught" if code != 0 else "passed")
    return res


def write_svg(path, names, ratios, allocs):
    """Grouped bars: time / mimalloc's, per benchmark (lower is better)."""
    colours = {"glibc": "#999999", "mimalloc": "#4477aa", "jemalloc": "#228833", "tcmalloc": "#ccbb44",
               OURS: "#ee6677"}
    w, h, left, top, bottom = 120 + 70 * len(names), 420, 60, 30, 110
    cap = 3.0
    plot_h = h - top - bottom
    y = lambda r: top + plot_h * (1 - min(r, cap) / cap)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13">Time relative to mimalloc (lower is better; bars capped at {cap:g}x)</text>']
    for g in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        out.append(f'<line x1="{left}" x2="{w - 10}" y1="{y(g):.1f}" y2="{y(g):.1f}" stroke="{"#000" if g == 1 else "#ddd"}"/>')
        out.append(f'<text x="{left - 6}" y="{y(g) + 4:.1f}" text-anchor="end">{g:g}x</text>')
    bw = 60 / max(1, len(allocs))
    for i, n in enumerate(names):
        x0 = left + 10 + 70 * i
        for j, a in enumerate(allocs):
            r = ratios.get((n, a))
            if r is None or r != r:
                continue
            out.append(f'<rect x="{x0 + j * bw:.1f}" y="{y(r):.1f}" width="{bw - 1:.1f}" height="{y(0) - y(r):.1f}" '
                       f'fill="{colours.get(a, "#000")}"><title>{n} {a}: {r:.2f}x</title></rect>')
        out.append(f'<text transform="translate({x0 + 30},{h - bottom + 12}) rotate(40)">{n}</text>')
    for j, a in enumerate(allocs):
        out.append(f'<rect x="{left + 110 * j}" y="{h - 22}" width="10" height="10" fill="{colours.get(a, "#000")}"/>'
                   f'<text x="{left + 110 * j + 14}" y="{h - 13}">{a}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", help="a copy of mimalloc-bench (default: clone upstream at the pinned commit)")
    ap.add_argument("--build", default=os.path.join(REPO, "target", "peer-bench-build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="N of the command lines (default 2)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--allocators", default=",".join([OURS, *PEERS]),
                    help="comma-separated names, or NAME=PATH for another build of a preload library")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-security", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "peer-bench.md"))
    ap.add_argument("--json", help="default: beside --out, named as it is, .json")
    ap.add_argument("--svg", help="default: beside --out, named as it is, .svg")
    args = ap.parse_args()
    # The JSON and the chart go beside the table unless named: a run written
    # elsewhere (a before/after comparison) must not overwrite docs/'s.
    stem = os.path.splitext(args.out)[0]
    args.json = args.json or stem + ".json"
    args.svg = args.svg or stem + ".svg"
    args.build = os.path.abspath(args.build)

    if not os.access(TIME, os.X_OK):
        sys.exit(f"{TIME} (GNU time, Debian package 'time') is needed for wall time and peak RSS")
    source = args.source or fetch(os.path.join(REPO, "target", "mimalloc-bench-src"))
    build(os.path.abspath(source), args.build)
    wanted = [a for a in args.allocators.split(",") if a]
    allocators = {}
    for a in wanted:
        if "=" in a:
            # NAME=PATH: another build of a library, for before/after runs
            # (it counts as a peer in the ratios).
            name, lib = a.split("=", 1)
            if not os.path.exists(lib):
                sys.exit(f"allocator '{name}': {lib} does not exist")
            allocators[name] = os.path.abspath(lib)
        elif a == OURS:
            allocators[a] = build_preload()
        elif a not in PEERS:
            sys.exit(f"unknown allocator '{a}'; valid: {', '.join([OURS, *PEERS])}")
        elif PEERS[a] is None or os.path.exists(PEERS[a]):
            allocators[a] = PEERS[a]
        else:
            print(f"skipping {a}: {PEERS[a]} is not installed", file=sys.stderr)
    names = [n for n in BENCHMARKS if not args.only or n in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(BENCHMARKS) - {""}
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; valid: {', '.join(BENCHMARKS)}")
    names = [n for n in names if os.path.exists(os.path.join(args.build, BENCHMARKS[n][0]))]

    runs = []
    failures = []
    order = list(allocators)
    with tempfile.TemporaryDirectory() as cwd:
        for n in names:
            exe, argline, _ = BENCHMARKS[n]
            argv = argline.format(N=args.threads).split()
            for r in range(args.rounds):
                for i in range(len(order)):
                    a = order[(i + r) % len(order)]
                    wall, rss, out, code = run_once(os.path.join(args.build, exe), argv, allocators[a], cwd, args.timeout)
                    cost, shown = cost_of(n, wall, out)
                    print(f"{n:15} {a:12} round {r}: {wall:7.3f} s  {rss / 1024:8.1f} MiB  "
                          f"{fmt_value(n, shown)}{'' if code == 0 else f'  exit {code}'}", file=sys.stderr, flush=True)
                    if code != 0 or cost is None:
                        failures.append(f"{n} under {a}: exit {code}, output: {out[-300:]!r}")
                    runs.append({"benchmark": n, "allocator": a, "round": r, "wall_s": wall, "maxrss_kib": rss,
                                 "figure": shown, "cost": cost, "exit": code})

    med = {}
    for n in names:
        for a in allocators:
            rs = [x for x in runs if x["benchmark"] == n and x["allocator"] == a and x["cost"] is not None]
            if rs:
                med[(n, a)] = {"cost": statistics.median(x["cost"] for x in rs),
                               "figure": statistics.median(x["figure"] for x in rs),
                               "rss": statistics.median(x["maxrss_kib"] for x in rs)}
    peers = [a for a in allocators if a != OURS]
    ratios = {}
    for n in names:
        base = med.get((n, "mimalloc"))
        for a in allocators:
            if base and base["cost"] > 0 and (n, a) in med:
                ratios[(n, a)] = med[(n, a)]["cost"] / base["cost"]

    sec = {} if args.no_security else security(args.build, allocators, 10)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    md = [
        "# mimalloc-bench: pymalloc-rs's preload library against glibc, mimalloc, jemalloc and tcmalloc",
        "",
        f"Generated by `scripts/peer_bench.py` on {now}: {args.rounds} alternating rounds, N = {args.threads} threads,"
        f" mimalloc-bench at {PINNED[:12]} (built with CMake, Release). Each run is a process of its own;"
        " figures are medians over the rounds. Time: wall time, or the benchmark's own figure where it prints one"
        " (throughput: higher is better; the ratio is of its inverse). Peak RSS: ru_maxrss of the run.",
        "",
        "Allocators: " + ", ".join(f"{a} (`{lib or 'no preload'}`)" if a != OURS else f"{a} (`libpymalloc_preload.so`)"
                                   for a, lib in allocators.items()) + ".",
        "",
        "## Time (ratio to mimalloc; below 1 is faster)",
        "",
        "| benchmark | " + " | ".join(allocators) + " | ours / best peer |",
        "|---|" + "---|" * (len(allocators) + 1),
    ]
    for n in names:
        cells = []
        for a in allocators:
            m = med.get((n, a))
            cells.append("-" if not m else f"{fmt_value(n, m['figure'])} ({ratios.get((n, a), float('nan')):.2f})")
        best = min((med[(n, a)]["cost"] for a in peers if (n, a) in med), default=None)
        mine = med.get((n, OURS))
        cells.append(f"{mine['cost'] / best:.2f}" if best and mine else "-")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    gm = {a: geomean([ratios.get((n, a)) for n in names]) for a in allocators}
    md.append("| **geometric mean** | " + " | ".join(f"**{gm[a]:.2f}**" for a in allocators) + " | |")
    md += ["", "## Peak resident memory (MiB)", "",
           "| benchmark | " + " | ".join(allocators) + " | ours / best peer |",
           "|---|" + "---|" * (len(allocators) + 1)]
    for n in names:
        cells = [f"{med[(n, a)]['rss'] / 1024:.1f}" if (n, a) in med else "-" for a in allocators]
        best = min((med[(n, a)]["rss"] for a in peers if (n, a) in med), default=None)
        mine = med.get((n, OURS))
        cells.append(f"{mine['rss'] / best:.2f}" if best and mine else "-")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    gmr = {a: geomean([med[(n, a)]["rss"] / 1024 for n in names if (n, a) in med]) for a in allocators}
    md.append("| **geometric mean** | " + " | ".join(f"**{gmr[a]:.1f}**" for a in allocators) + " | |")
    if sec:
        md += ["", "## Security probes (`bench/security`)", "",
               "Each probe misuses the heap (double free, use after free, overflow, invalid free) and prints"
               " NOT_CAUGHT if the allocator let it pass; a probe that neither prints it nor ends within 10 s"
               " is counted as hung (killed). Detection is not a target of pymalloc-rs.", "",
               "| allocator | caught | not caught | hung | other |", "|---|---|---|---|---|"]
        for a in allocators:
            vals = [sec[p][a] for p in sec]
            n = {k: vals.count(k) for k in ("caught", "not caught", "hung")}
            md.append(f"| {a} | {n['caught']} | {n['not caught']} | {n['hung']} | {len(vals) - sum(n.values())} |")
        md += ["", "<details><summary>Per probe</summary>", "", "| probe | " + " | ".join(allocators) + " |",
               "|---|" + "---|" * len(allocators)]
        md += [f"| {p} | " + " | ".join(sec[p][a] for a in allocators) + " |" for p in sec]
        md += ["", "</details>"]
    if failures:
        md += ["", "## Failed runs", ""] + [f"- {f}" for f in failures]
    md += ["", f"![time ratios]({os.path.relpath(args.svg, os.path.dirname(os.path.abspath(args.out)))})", ""]
    for p in (args.out, args.json, args.svg):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(args.json, "w") as f:
        json.dump({"rounds": args.rounds, "threads": args.threads, "pinned": PINNED, "runs": runs,
                   "security": sec}, f, indent=1)
    write_svg(args.svg, names, ratios, list(allocators))
    print(f"wrote {args.out}, {args.json}, {args.svg}", file=sys.stderr)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
