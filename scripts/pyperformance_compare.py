#!/usr/bin/env python3
"""Runs pyperformance benchmarks under stock python3 and under
pymalloc-python and writes a table of time and peak-memory ratios.

    python3 scripts/pyperformance_compare.py [--rounds 3] [--out docs/pyperformance.md]

pyperf and pyperformance (from PyPI) are installed into a private directory
(target/pyperf-site) and put on PYTHONPATH for both interpreters. A benchmark
is named as pyperformance names it (its `[tool.pyperformance]` table), so
variants such as `pickle_dict` or `unpickle_list` work; the script is the
benchmark directory's `run_benchmark.py` with the variant's `extra_opts`.

Time: for each benchmark, `--rounds` rounds, each running pyperf (`--fast`
by default) under stock then under ours, so that both see the same state of
the machine. The figure per interpreter is the median of all its values over
the rounds; the ratio is ours / stock.

Peak memory: pyperf's own `--track-memory` samples /proc/self/smaps from a
thread of the measured process, which the GIL starves (one or two samples per
second were seen here), so it is not used. Instead the benchmark runs once as
a pyperf worker (`--worker -l 1 -n N -w 1`) per interpreter and round, and
this script samples the child's /proc/PID/smaps_rollup every millisecond from
outside: the figure is the peak of private memory (Private_Clean +
Private_Dirty, what pyperf reports), median over the rounds. The peak
resident set (ru_maxrss from wait4, shared pages included) is reported beside
it.

Instructions (`--callgrind`, alone or beside the rest): this machine's
timings move by 10-20% between rounds, so each benchmark also runs once per
interpreter as a pyperf worker (`-l 1 -n 1 -w 0`, PYTHONHASHSEED=0) under
`valgrind --tool=callgrind`, whose instruction counts repeat from run to
run; the ratio of the totals (start-up included) is reported.

Ratios below 1.00 are better for pymalloc-python.
"""
import argparse
import concurrent.futures
import datetime
import glob
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Benchmarks that need nothing beyond the standard library.
DEFAULT = [
    "chaos", "comprehensions", "coroutines", "deepcopy", "deltablue", "fannkuch", "float",
    "gc_collect", "generators", "go", "hexiom", "json_dumps", "json_loads", "logging",
    "nbody", "nqueens", "pathlib", "pickle", "unpickle", "pickle_list", "pprint", "pyflate",
    "raytrace", "regex_compile", "richards", "spectral_norm", "telco", "unpack_sequence",
    "xml_etree", "regex_v8", "meteor_contest",
]


def ensure_site(site, python):
    if os.path.isdir(os.path.join(site, "pyperformance")) and os.path.isdir(os.path.join(site, "pyperf")):
        return
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--target", site, "pyperformance", "pyperf"])


def discover(site):
    """Maps each benchmark name to (run_benchmark.py, extra_opts)."""
    root = os.path.join(site, "pyperformance", "data-files", "benchmarks")
    found = {}
    for d in sorted(glob.glob(os.path.join(root, "bm_*"))):
        script = os.path.join(d, "run_benchmark.py")
        if not os.path.exists(script):
            continue
        for meta in sorted(glob.glob(os.path.join(d, "*.toml"))):
            with open(meta, "rb") as f:
                t = tomllib.load(f).get("tool", {}).get("pyperformance", {})
            name = t.get("name")
            if name and name not in found:
                found[name] = (script, list(t.get("extra_opts", [])))
        # A directory without metadata naming it: its own name.
        found.setdefault(os.path.basename(d)[3:], (script, []))
    return found


def bench_env(site, env_extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = site
    env.update(env_extra)
    return env


def run_time(python, script, opts, out, site, mode, env_extra):
    """One pyperf run; returns its values (seconds)."""
    cmd = [python, script, *opts, "--inherit-environ", ",".join(["PYTHONPATH", *env_extra]), "-o", out, *mode]
    if os.path.exists(out):
        os.remove(out)
    r = subprocess.run(cmd, env=bench_env(site, env_extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}")
    with open(out) as f:
        data = json.load(f)
    return [v for b in data["benchmarks"] for run in b["runs"] for v in run.get("values", [])]


def private_and_anonymous(pid):
    """Private_Clean + Private_Dirty, and Anonymous, of a process (bytes)."""
    private = anonymous = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_"):
                private += int(line.split()[1]) * 1024
            elif line.startswith("Anonymous:"):
                anonymous = int(line.split()[1]) * 1024
    return private, anonymous


def run_memory(python, script, opts, site, values, env_extra):
    """One pyperf worker run sampled from outside; returns (peak private
    bytes, peak anonymous bytes, peak RSS bytes)."""
    cmd = [python, script, *opts, "--worker", "--worker-task", "0", "-l", "1", "-n", str(values), "-w", "1"]
    p = subprocess.Popen(cmd, env=bench_env(site, env_extra), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    peak = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                pv, an = private_and_anonymous(p.pid)
                peak[0], peak[1] = max(peak[0], pv), max(peak[1], an)
            except (OSError, ValueError):
                pass
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, usage = os.wait4(p.pid, 0)
    done.set()
    t.join()
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
    return peak[0], peak[1], usage.ru_maxrss * 1024


def run_callgrind(python, script, opts, site, env_extra, out):
    """Instructions of one pyperf worker run under callgrind."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, script, *opts,
           "--worker", "--worker-task", "0", "-l", "1", "-n", "1", "-w", "0"]
    r = subprocess.run(cmd, env=bench_env(site, {**env_extra, "PYTHONHASHSEED": "0"}),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    os.remove(out)
    return total


def fmt_time(t):
    """Seconds, in a unit that keeps three significant digits."""
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}" if t / scale < 100 else f"{t / scale:.0f} {unit}"
    return f"{t * 1e9:.3g} ns"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stock", default=sys.executable)
    ap.add_argument("--ours", default=os.path.join(ROOT, "target", "release", "pymalloc-python"))
    ap.add_argument("--site", default=os.path.join(ROOT, "target", "pyperf-site"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "pyperformance.md"))
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--benchmarks", default=",".join(DEFAULT))
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per benchmark (default: %(default)s)")
    ap.add_argument("--mode", default="--fast", help="pyperf run mode: --fast, --rigorous or '' (default: %(default)s)")
    ap.add_argument("--memory-values", type=int, default=3, help="values per memory worker (default: %(default)s)")
    ap.add_argument("--no-memory", action="store_true", help="time only")
    ap.add_argument("--memory-only", action="store_true",
                    help="peak memory only (no timed runs: its figures do not need a quiet machine)")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions under callgrind")
    ap.add_argument("--callgrind-only", action="store_true", help="only count instructions")
    ap.add_argument("--jobs", type=int, default=2, help="parallel callgrind runs (default: %(default)s)")
    ap.add_argument("--from-json", action="append", default=[],
                    help="render the report from figures a run saved with --json instead of running"
                         " (repeat to merge a time/memory run with a --callgrind-only run)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for pymalloc-python only")
    ap.add_argument("--label", default="", help="a note for the report (e.g. the configuration)")
    args = ap.parse_args()

    if args.from_json:
        rows, instr, failed = [], {}, []
        for path in args.from_json:
            with open(path) as f:
                data = json.load(f)
            rows += data.get("rows", [])
            instr.update({k: tuple(v) for k, v in data.get("instructions", {}).items()})
            failed += data.get("failed", [])
            if data.get("rows"):
                args.mode, args.rounds = data.get("mode", args.mode), data.get("rounds", args.rounds)
                args.date = data.get("date")
        report(args, rows, instr, failed)
        return
    if not os.path.exists(args.ours):
        sys.exit(f"{args.ours} not found: build it with `cargo build --release -p pymalloc-python`")
    ensure_site(args.site, args.stock)
    known = discover(args.site)
    names = [n for n in args.benchmarks.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    work = os.path.join(os.path.dirname(os.path.abspath(args.site)), "pyperf-results")
    os.makedirs(work, exist_ok=True)
    ours_env = dict(e.split("=", 1) for e in args.env)
    mode = [args.mode] if args.mode else []
    interpreters = (("stock", args.stock, {}), ("ours", args.ours, ours_env))
    rows, failed = [], []
    instr = {}
    if args.callgrind or args.callgrind_only:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futs = {}
            for name in names:
                script, opts = known[name]
                for who, python, env in interpreters:
                    out = os.path.join(work, f"{name}-{who}.callgrind")
                    futs[(name, who)] = pool.submit(run_callgrind, python, script, opts, args.site, env, out)
            for name in names:
                try:
                    st, ou = futs[(name, "stock")].result(), futs[(name, "ours")].result()
                except RuntimeError as e:
                    print(f"{name}: callgrind failed: {e}", flush=True)
                    continue
                instr[name] = (st, ou)
                print(f"{name:22} instructions {ou / st:.4f}x ({st:,} / {ou:,})", flush=True)
    if args.callgrind_only:
        names = []
    for name in names:
        script, opts = known[name]
        vals = {"stock": [], "ours": []}
        priv = {"stock": [], "ours": []}
        anon = {"stock": [], "ours": []}
        rss = {"stock": [], "ours": []}
        rnd = []
        try:
            for r in range(args.rounds):
                med = {}
                for who, python, env in interpreters:
                    if not args.memory_only:
                        v = run_time(python, script, opts, os.path.join(work, f"{name}-{who}-{r}.json"),
                                     args.site, mode, env)
                        vals[who] += v
                        med[who] = statistics.median(v)
                    if not args.no_memory:
                        pb, ab, rb = run_memory(python, script, opts, args.site, args.memory_values, env)
                        priv[who].append(pb)
                        anon[who].append(ab)
                        rss[who].append(rb)
                if med:
                    rnd.append(med["ours"] / med["stock"])
        except RuntimeError as e:
            print(f"{name}: failed: {e}", flush=True)
            failed.append(name)
            continue
        row = {"name": name}
        if not args.memory_only:
            row["time_stock"] = statistics.median(vals["stock"])
            row["time_ours"] = statistics.median(vals["ours"])
            row["round_ratios"] = rnd
            row["time_ratio"] = row["time_ours"] / row["time_stock"]
        if not args.no_memory:
            for who in ("stock", "ours"):
                row[f"private_{who}"] = statistics.median(priv[who])
                row[f"anon_{who}"] = statistics.median(anon[who])
                row[f"rss_{who}"] = statistics.median(rss[who])
            row["private_ratio"] = row["private_ours"] / row["private_stock"]
            row["anon_ratio"] = row["anon_ours"] / row["anon_stock"]
            row["rss_ratio"] = row["rss_ours"] / row["rss_stock"]
        rows.append(row)
        msg = f"{name:22}"
        if not args.memory_only:
            msg += f" time {row['time_ratio']:.3f}x (rounds {', '.join(f'{x:.3f}' for x in rnd)})"
        if not args.no_memory:
            msg += (f"  peak private {row['private_ratio']:.3f}x  anonymous {row['anon_ratio']:.3f}x"
                    f"  RSS {row['rss_ratio']:.3f}x")
        print(msg, flush=True)

    report(args, rows, instr, failed)


def report(args, rows, instr, failed):
    """Writes the markdown report (and the JSON, with --json)."""
    timed = [r for r in rows if "time_ratio" in r]
    gt = geomean([r["time_ratio"] for r in timed]) if timed else None
    now = getattr(args, "date", None) or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    gi = geomean([o / s for s, o in instr.values()])
    iout = []
    if instr:
        iout = [
            "## Instructions (callgrind)",
            "",
            "One pyperf worker run per interpreter (`-l 1 -n 1 -w 0`, PYTHONHASHSEED=0) under"
            " `valgrind --tool=callgrind`; totals include start-up. These counts repeat from run to run,"
            " unlike this machine's timings.",
            "",
            "| benchmark | stock instructions | ours | ratio |",
            "|---|---|---|---|",
        ]
        for name, (st, ou) in instr.items():
            iout.append(f"| {name} | {st:,} | {ou:,} | {ou / st:.4f} |")
        iout += ["", f"**Geometric mean of the instruction ratios: {gi:.4f}x.**", ""]
    out = [
        "# pyperformance: stock python3 vs pymalloc-python",
        "",
        f"Generated by `scripts/pyperformance_compare.py` on {now}: {len(rows)} benchmarks, pyperf"
        f" `{args.mode or 'default'}` mode, {args.rounds} alternating rounds per benchmark."
        f" {args.label}".rstrip(),
        "",
        "Ratios are pymalloc-python / stock python3 (below 1.000 is better). Time: median of every value"
        " of the rounds; the round ratios show the spread. Peak private: the peak of Private_Clean +"
        " Private_Dirty of a pyperf worker, sampled every millisecond from outside the process, median"
        " of the rounds (pyperf's own measure); it includes the pages of the executable that only this"
        " process maps (about 0.25 MiB for pymalloc-python, whose binary holds the allocator and the"
        " launcher; stock python3's is a few KiB, libpython being shared with this script). Peak"
        " anonymous: the peak of the Anonymous pages alone (the heap, the allocator's arenas, stacks,"
        " relocated data): what the allocator decides. Peak RSS: ru_maxrss of the same worker"
        " (shared pages of libpython included).",
        "",
    ]
    if not rows:
        out = out[:2] + [f"Generated by `scripts/pyperformance_compare.py --callgrind-only` on {now}:"
                         f" {len(instr)} benchmarks. {args.label}".rstrip(), ""]
    elif args.no_memory:
        out += ["| benchmark | stock | ours | time ratio | round ratios |", "|---|---|---|---|---|"]
    elif not timed:
        out += [
            "| benchmark | stock peak private | ours | private ratio | stock peak anonymous | ours |"
            " anonymous ratio | stock peak RSS | ours | RSS ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        out += [
            "| benchmark | stock | ours | time ratio | round ratios | stock peak private | ours |"
            " private ratio | stock peak anonymous | ours | anonymous ratio | stock peak RSS | ours |"
            " RSS ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        line = f"| {r['name']} |"
        if "time_ratio" in r:
            line += (f" {fmt_time(r['time_stock'])} | {fmt_time(r['time_ours'])} |"
                     f" {r['time_ratio']:.3f} | {' '.join(f'{x:.3f}' for x in r['round_ratios'])} |")
        if not args.no_memory:
            line += (f" {r['private_stock'] / 2**20:.1f} MiB | {r['private_ours'] / 2**20:.1f} MiB |"
                     f" {r['private_ratio']:.3f} | {r['anon_stock'] / 2**20:.1f} MiB |"
                     f" {r['anon_ours'] / 2**20:.1f} MiB | {r['anon_ratio']:.3f} |"
                     f" {r['rss_stock'] / 2**20:.1f} MiB |"
                     f" {r['rss_ours'] / 2**20:.1f} MiB | {r['rss_ratio']:.3f} |")
        out.append(line)
    parts = [f"time {gt:.3f}x"] if timed else []
    if rows and "rss_ratio" in rows[0]:
        gp = geomean([r["private_ratio"] for r in rows])
        ga = geomean([r["anon_ratio"] for r in rows])
        gr = geomean([r["rss_ratio"] for r in rows])
        parts.append(f"peak private memory {gp:.3f}x, peak anonymous memory {ga:.3f}x, peak RSS {gr:.3f}x")
    summary = ("Geometric mean: " + ", ".join(parts)) if rows else ""
    if rows:
        out += ["", f"**{summary}.**", ""]
    if instr:
        summary += (", " if summary else "") + f"instructions {gi:.4f}x"
    out += iout
    if failed:
        out += [f"Failed under one of the interpreters (not in the means): {', '.join(failed)}.", ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "instructions": instr, "failed": failed, "mode": args.mode,
                       "rounds": args.rounds, "date": now}, f, indent=1)
    print(f"wrote {args.out}: {summary}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
