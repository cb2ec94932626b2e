//! The C library as C programs see it: the programs in `tests/c/` are
//! compiled with the system C compiler against `include/pymalloc.h`, linked
//! both ways (`libpymalloc.so` with an rpath, and `libpymalloc.a`), run, and
//! their exit status and output checked.
//!
//! The library is built first with `cargo build -p pymalloc-capi` in the
//! profile and target directory of this test binary (cargo does not build a
//! cdylib/staticlib-only crate for its integration tests); when it is fresh
//! that is a no-op.
//!
//! Every program prints `linked: shared <path>` or `linked: static` first
//! (from `dladdr`, so the linkage is what the test asked for) and
//! `<name>: <n> checks passed` last; a failed check prints its line and exits
//! with 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Where things are.
struct Env {
    /// `target/<profile>`: `libpymalloc.so`, `libpymalloc.a`, `*.pc`.
    lib_dir: PathBuf,
    /// `crates/pymalloc-capi/include`.
    include: PathBuf,
    /// `crates/pymalloc-capi/tests/c`.
    c_dir: PathBuf,
    /// Scratch directory for the executables.
    out: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // This binary is <target>/<profile>/deps/c_programs-<hash>.
        let exe = std::env::current_exe().unwrap();
        let lib_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        build_library(&lib_dir);
        for f in ["libpymalloc.so", "libpymalloc.a", "pymalloc.pc", "pymalloc-static.pc"] {
            assert!(lib_dir.join(f).is_file(), "{} missing after the build", f);
        }
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pymalloc-capi-c-tests");
        std::fs::create_dir_all(&out).unwrap();
        Env { lib_dir, include: manifest.join("include"), c_dir: manifest.join("tests/c"), out }
    })
}

/// `cargo build -p pymalloc-capi` into `lib_dir` (`<target>/<profile>`).
fn build_library(lib_dir: &Path) {
    let profile = match lib_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev".to_string(),
        other => other.to_string(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "-p", "pymalloc-capi", "--profile", &profile])
        .arg("--target-dir")
        .arg(lib_dir.parent().unwrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build -p pymalloc-capi failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Shared,
    Static,
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// The flags every program is compiled with.
const CFLAGS: &[&str] = &["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"];

/// The system libraries a Rust staticlib needs (`--print native-static-libs`).
const NATIVE_STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// Compiles `tests/c/<name>.c` and links it `link`-wise; `extra` goes
/// before the source (include paths, `-pedantic`). Returns the executable.
///
/// Several tests build the same program concurrently, so each links to a
/// private name and renames it into place: a test never runs a file that
/// another is still writing (EACCES or ETXTBSY).
fn build(name: &str, link: Link, extra: &[&str]) -> PathBuf {
    static UNIQUE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let e = env();
    let exe = e.out.join(format!("{name}-{link:?}").to_lowercase());
    let n = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = e.out.join(format!("{name}-{link:?}.{}.{n}.tmp", std::process::id()).to_lowercase());
    let mut cmd = Command::new(cc());
    cmd.args(CFLAGS)
        .args(extra)
        .arg("-I")
        .arg(&e.include)
        .arg(e.c_dir.join(format!("{name}.c")))
        .arg("-o")
        .arg(&tmp)
        .arg("-pthread")
        .arg(format!("-L{}", e.lib_dir.display()));
    match link {
        Link::Shared => {
            cmd.arg("-lpymalloc").arg(format!("-Wl,-rpath,{}", e.lib_dir.display()));
        }
        Link::Static => {
            cmd.args(["-Wl,-Bstatic", "-lpymalloc", "-Wl,-Bdynamic"]).args(NATIVE_STATIC_LIBS);
        }
    }
    compile(cmd, name);
    std::fs::rename(&tmp, &exe).unwrap_or_else(|err| panic!("renaming {} to {}: {err}", tmp.display(), exe.display()));
    exe
}

fn compile(mut cmd: Command, what: &str) {
    let out = output(&mut cmd);
    assert!(out.status.success(), "compiling {what} failed: {cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A command for a test program. cargo sets `LD_LIBRARY_PATH` (to the
/// target directory) for tests; it is removed so that the program finds its
/// library through its rpath, as it would anywhere else.
fn program(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd
}

fn run(exe: &Path, args: &[&str]) -> Output {
    output(program(exe).args(args))
}

/// Runs `cmd`, retrying while the kernel says the executable is busy: a
/// program just linked by one test can still be open for writing in a child
/// that another test thread forked at that moment (ETXTBSY).
fn output(cmd: &mut Command) -> Output {
    let mut tries = 0;
    loop {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 250 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.unwrap_or_else(|e| panic!("running {cmd:?}: {e} (after {tries} retries)")),
        }
    }
}

/// Checks a successful run of program `name` linked `link`: exit status 0,
/// the linkage line (a shared build must have loaded the build's
/// `libpymalloc.so`), and the final count of checks. Returns stdout.
fn check_success(name: &str, link: Link, out: &Output) -> String {
    check_success_with(name, link, out, &env().lib_dir)
}

/// [`check_success`], for a shared build that must have loaded
/// `lib_dir/libpymalloc.so`.
fn check_success_with(name: &str, link: Link, out: &Output, lib_dir: &Path) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} ({link:?}) failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let first = stdout.lines().next().unwrap_or("");
    match link {
        Link::Shared => {
            let path = first.strip_prefix("linked: shared ").unwrap_or_else(|| panic!("{name}: {first:?}"));
            let want = lib_dir.join("libpymalloc.so");
            assert_eq!(std::fs::canonicalize(path).unwrap(), std::fs::canonicalize(want).unwrap());
        }
        Link::Static => assert_eq!(first, "linked: static", "{name}"),
    }
    let last = stdout.lines().last().unwrap();
    let count: u64 = last
        .strip_prefix(&format!("{name}: "))
        .and_then(|r| r.strip_suffix(" checks passed"))
        .unwrap_or_else(|| panic!("{name}: last line {last:?}"))
        .parse()
        .unwrap();
    assert!(count > 0, "{name}: no checks ran");
    stdout
}

fn run_program(name: &str, link: Link) -> String {
    let exe = build(name, link, &["-pedantic"]);
    check_success(name, link, &run(&exe, &[]))
}

// ---------------------------------------------------------------------------
// The semantic programs, both ways.

const CONFIGS: [&str; 6] = ["default", "pymalloc", "malloc", "debug", "pymalloc_debug", "malloc_debug"];

fn api_semantics(link: Link) {
    let out = run_program("api_semantics", link);
    for c in CONFIGS {
        assert!(out.contains(&format!("\nconfiguration {c}: ok\n")), "{c} not run:\n{out}");
    }
}

#[test]
fn api_semantics_shared() {
    api_semantics(Link::Shared);
}

#[test]
fn api_semantics_static() {
    api_semantics(Link::Static);
}

#[test]
fn hooks_shared() {
    run_program("hooks", Link::Shared);
}

#[test]
fn hooks_static() {
    run_program("hooks", Link::Static);
}

fn arenas(link: Link) {
    let out = run_program("arenas", link);
    assert!(out.contains("\narenas: allocated 2, freed "), "{out}");
}

#[test]
fn arenas_shared() {
    arenas(Link::Shared);
}

#[test]
fn arenas_static() {
    arenas(Link::Static);
}

fn threads(link: Link) {
    let out = run_program("threads", link);
    for c in ["pymalloc", "malloc", "pymalloc_debug", "malloc_debug"] {
        assert!(out.contains(&format!("\nconfiguration {c}: 4 threads x 20000 operations, ")), "{c} not run:\n{out}");
    }
}

#[test]
fn threads_shared() {
    threads(Link::Shared);
}

#[test]
fn threads_static() {
    threads(Link::Static);
}

// ---------------------------------------------------------------------------
// PyMalloc_InitFromEnv.

fn env_config(link: Link) {
    let exe = build("env_config", link, &["-pedantic"]);
    let cases: [(Option<&str>, &str); 11] = [
        (None, "pymalloc"),
        (Some(""), "pymalloc"),
        (Some("default"), "pymalloc"),
        (Some("pymalloc"), "pymalloc"),
        (Some("malloc"), "malloc"),
        (Some("debug"), "pymalloc_debug"),
        (Some("pymalloc_debug"), "pymalloc_debug"),
        (Some("malloc_debug"), "malloc_debug"),
        (Some("pymalloc_all"), "pymalloc_all"),
        (Some("pymalloc_all_debug"), "pymalloc_all_debug"),
        (Some("jemalloc"), "error"),
    ];
    for (value, expected) in cases {
        let mut cmd = program(&exe);
        cmd.arg(expected).env_remove("PYTHONMALLOCSTATS");
        match value {
            Some(v) => cmd.env("PYTHONMALLOC", v),
            None => cmd.env_remove("PYTHONMALLOC"),
        };
        let out = output(&mut cmd);
        let stdout = check_success("env_config", link, &out);
        let shown = if expected == "error" { "pymalloc" } else { expected };
        assert!(stdout.contains(&format!("\nconfiguration: {shown}\n")), "{value:?}");
        assert!(out.stderr.is_empty(), "{value:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // PYTHONMALLOCSTATS: the table when the first arena is allocated and at
    // exit with pymalloc; only at exit with malloc (no arena).
    for (config, tables) in [("pymalloc", 2), ("malloc", 1)] {
        let out = program(&exe).arg(config).env("PYTHONMALLOC", config).env("PYTHONMALLOCSTATS", "1").output().unwrap();
        check_success("env_config", link, &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.matches("Small block threshold = 512, in 32 size classes.\n").count(),
            tables,
            "{config}:\n{err}"
        );
    }
}

#[test]
fn init_from_env_shared() {
    env_config(Link::Shared);
}

#[test]
fn init_from_env_static() {
    env_config(Link::Static);
}

// ---------------------------------------------------------------------------
// tracemalloc in C, started from the environment, with a snapshot at exit.

fn tracing(link: Link) {
    let exe = build("tracing", link, &["-pedantic", "-rdynamic"]);
    let dump = env().out.join(format!("tracing-{link:?}.snapshot"));
    let _ = std::fs::remove_file(&dump);
    let peak_dump = env().out.join(format!("tracing-{link:?}.peak"));
    let _ = std::fs::remove_file(&peak_dump);
    let out = output(
        program(&exe)
            .arg("run")
            .env("PYTHONTRACEMALLOC", "3")
            .env("PYMALLOC_TRACE_DUMP", &dump)
            .env("PYMALLOC_TRACE_PEAK_DUMP", &peak_dump),
    );
    check_success("tracing", link, &out);
    // The peak since the restart: the leak and the block beside it.
    let peak = pymalloc_core::snapshot::Snapshot::load(&peak_dump).unwrap();
    let mut sizes: Vec<usize> = peak.traces.iter().map(|t| t.size).collect();
    sizes.sort();
    assert_eq!(sizes, [4096, 10_000], "{peak:?}");
    // The snapshot at exit: the one block left alive, made by make_leak()
    // in tracing.c, with up to three frames (make_leak's caller, main).
    let snap = pymalloc_core::snapshot::Snapshot::load(&dump).unwrap();
    assert_eq!(snap.traceback_limit, 3);
    assert_eq!(snap.traces.len(), 1, "{snap:?}");
    let t = &snap.traces[0];
    assert_eq!((t.size, t.domain, t.source), (4096, 0, pymalloc_core::trace::Source::Mem));
    let recent = t.frames.last().unwrap();
    assert_eq!(recent.function, "make_leak", "{:?}", t.frames);
    assert!(recent.filename.ends_with("tracing.c"), "{recent:?}");
    assert!(t.frames.iter().any(|f| f.function == "main"), "{:?}", t.frames);

    let out = output(program(&exe).arg("bad-env").env("PYTHONTRACEMALLOC", "70000"));
    check_success("tracing", link, &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PYTHONTRACEMALLOC: invalid number of frames: \"70000\" (0 to 65535)"), "{err}");
    // 0 leaves tracing off, as CPython reads it.
    let out = output(program(&exe).arg("off").env("PYTHONTRACEMALLOC", "0"));
    check_success("tracing", link, &out);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tracing_shared() {
    tracing(Link::Shared);
}

#[test]
fn tracing_static() {
    tracing(Link::Static);
}

// ---------------------------------------------------------------------------
// Purge policies by name, and the background decay thread.

fn purge_policy(link: Link) {
    let exe = build("purge_policy", link, &["-pedantic"]);
    let out = output(program(&exe).arg("run").env_remove("PYMALLOC_PURGE"));
    let stdout = check_success("purge_policy", link, &out);
    assert!(stdout.contains("decay: "), "{stdout}");
    // An unknown PYMALLOC_PURGE: an error code, the configuration left
    // alone, and the valid names on stderr.
    let out = output(program(&exe).arg("env-error").env("PYMALLOC_PURGE", "soon").env_remove("PYTHONMALLOC"));
    check_success("purge_policy", link, &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PYMALLOC_PURGE: unknown purge policy 'soon'; valid: default, decay, decay:MS, never"),
        "{err}"
    );
}

#[test]
fn purge_policy_shared() {
    purge_policy(Link::Shared);
}

#[test]
fn purge_policy_static() {
    purge_policy(Link::Static);
}

// ---------------------------------------------------------------------------
// Statistics: the table printed through a FILE * has CPython 3.11's layout.

/// The allocator part of the reference `sys._debugmallocstats()` output.
fn reference_table() -> Vec<String> {
    let text = include_str!("../../pymalloc/tests/data/cpython-3.11/debugmallocstats.txt");
    let lines: Vec<&str> = text.lines().collect();
    // Up to the second "Total" line (the arena map's); free lists follow.
    let end = lines.iter().enumerate().filter(|(_, l)| l.starts_with("Total ")).nth(1).unwrap().0;
    lines[..=end].iter().map(|l| l.to_string()).collect()
}

/// A line reduced to its layout: class rows to `ROW` (after checking their
/// columns), `printone` lines to their label with numbers as `N` (after
/// checking the `=` column and the value's field), others unchanged.
fn shape(line: &str) -> String {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if fields.len() == 5 && fields.iter().all(|f| numeric(f)) {
        // "{:5} {:6} {:11} {:15} {:13}"
        assert_eq!(line.len(), 54, "class row {line:?}");
        for (end, f) in [5, 12, 24, 40, 54].iter().zip(&fields) {
            assert!(line[..*end].ends_with(f), "column of {f} in {line:?}");
        }
        let (class, size): (usize, usize) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
        assert_eq!(size, 16 * (class + 1), "{line:?}");
        return "ROW".into();
    }
    if line.len() > 35 && line.as_bytes()[35] == b'=' {
        assert_eq!(line.len(), 57, "printone line {line:?}");
        let value = line[36..].trim_start();
        assert!(value.bytes().all(|b| b.is_ascii_digit() || b == b','), "{line:?}");
        let mut label = String::new();
        for c in line[..35].trim_end().chars() {
            if !c.is_ascii_digit() {
                label.push(c);
            } else if !label.ends_with('N') {
                label.push('N');
            }
        }
        return format!("{label} =");
    }
    line.to_string()
}

fn layout(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let s = shape(l);
        if s == "ROW" && out.last().map(String::as_str) == Some("ROW") {
            continue;
        }
        out.push(s);
    }
    out
}

fn stats(link: Link) {
    let out = run_program("stats", link);
    let start = out.find("=== table\n").unwrap() + "=== table\n".len();
    let end = out.find("=== end\n").unwrap();
    let ours: Vec<String> = out[start..end].lines().map(str::to_string).collect();
    let reference = reference_table();
    assert_eq!(layout(&ours), layout(&reference));
    // Sanity of the comparison itself: a class row, every total line.
    assert!(layout(&ours).contains(&"ROW".to_string()));
    assert_eq!(layout(&ours).iter().filter(|l| l.ends_with(" =")).count(), 18);
    assert!(layout(&ours).contains(&"N arenas * N bytes/arena =".to_string()));
}

#[test]
fn stats_shared() {
    stats(Link::Shared);
}

#[test]
fn stats_static() {
    stats(Link::Static);
}

// ---------------------------------------------------------------------------
// Debug hooks: faults caught in a child process, reports checked.

/// The reference report of `case`, up to and including the fatal-error line
/// (what follows it is the interpreter's).
fn reference_report(case: &str) -> String {
    let text = include_str!("../../pymalloc/tests/data/cpython-3.11/debug-hooks-reports.txt");
    let start = text.find(&format!("=== {case}\n")).unwrap() + case.len() + 5;
    let body = &text[start..];
    let end = body.find("Python runtime state").unwrap();
    body[..end].to_string()
}

/// Replaces addresses (`0x` and more than two hex digits) with `ADDR`.
fn scrub(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let hex = rest[i + 2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex == 2 {
            out.push_str(&rest[i..i + 4]); // a byte value: keep
        } else {
            out.push_str("ADDR");
        }
        rest = &rest[i + 2 + hex..];
    }
    out.push_str(rest);
    out
}

/// Runs `debug_fault` with `args`; returns the child's report.
fn fault_report(exe: &Path, link: Link, args: &[&str]) -> String {
    let out = check_success("debug_fault", link, &run(exe, args));
    let start = out.find("=== report\n").unwrap() + "=== report\n".len();
    let end = out.find("=== end\n").unwrap();
    out[start..end].to_string()
}

fn cpython_reports(link: Link) {
    let exe = build("debug_fault", link, &["-pedantic"]);
    // Release builds of CPython print no serial-number line.
    for setup in ["hooks", "debug", "pymalloc_debug"] {
        let report = fault_report(&exe, link, &["overflow", "m", "m", "noserial", setup]);
        assert_eq!(scrub(&report), scrub(&reference_report("pymem_buffer_overflow")), "{setup}");
        let report = fault_report(&exe, link, &["misuse", "m", "r", "noserial", setup]);
        assert_eq!(scrub(&report), scrub(&reference_report("pymem_api_misuse")), "{setup}");
    }
}

#[test]
fn debug_hooks_reports_are_cpythons_shared() {
    cpython_reports(Link::Shared);
}

#[test]
fn debug_hooks_reports_are_cpythons_static() {
    cpython_reports(Link::Static);
}

#[test]
fn debug_hooks_reports_show_the_tracers_traceback() {
    let exe = build("debug_fault", Link::Shared, &["-pedantic"]);
    let report = fault_report(&exe, Link::Shared, &["overflow", "m", "m", "noserial", "traced"]);
    let tb = report.find("Memory block allocated at (most recent call first):\n").expect(&report);
    let frames: Vec<&str> = report[tb..].lines().skip(1).take_while(|l| l.starts_with("  File ")).collect();
    // The allocation in child(), then its callers: the caller's line first.
    assert!(!frames.is_empty() && frames.len() <= 3, "{report}");
    assert!(frames[0].starts_with("  File \"") && frames[0].contains("debug_fault.c\", line "), "{report}");
    assert!(!report.contains("Enable tracemalloc"), "{report}");
}

#[test]
fn debug_hooks_catch_every_fault_in_every_domain() {
    let exe = build("debug_fault", Link::Shared, &["-pedantic"]);
    for setup in ["pymalloc_debug", "malloc_debug"] {
        for d in ["r", "m", "o"] {
            for fault in ["overflow", "underflow", "realloc_overflow"] {
                // With the serial-number line (the library's default), which
                // CPython's test regex allows between the tail and the data.
                let report = fault_report(&exe, Link::Shared, &[fault, d, d, "serial", setup]);
                let lines: Vec<&str> = report.lines().collect();
                assert_eq!(scrub(lines[0]), format!("Debug memory block at address p=ADDR: API '{d}'"));
                let serial = lines
                    .iter()
                    .position(|l| l.starts_with("    The block was made by call #"))
                    .unwrap_or_else(|| panic!("no serial line:\n{report}"));
                assert!(lines[serial].ends_with(" to debug malloc/realloc."));
                assert!(
                    lines[serial - 1].starts_with("        at tail+7: ")
                        || lines[serial - 1].ends_with("are FORBIDDENBYTE, as expected.")
                );
                assert!(lines[serial + 1].starts_with("    Data at p: "));
            }
            for other in ["r", "m", "o"] {
                if other == d {
                    continue;
                }
                let report = fault_report(&exe, Link::Shared, &["misuse", d, other, "noserial", setup]);
                assert!(report.ends_with(&format!("bad ID: Allocated using API '{d}', verified using API '{other}'\n")));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The header against CPython's own headers.

fn python_includes() -> Vec<String> {
    let out = Command::new("python3-config")
        .arg("--includes")
        .output()
        .expect("python3-config (CPython's development files) is needed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

fn abi_layout(link: Link) {
    let includes = python_includes();
    let extra: Vec<&str> = includes.iter().map(String::as_str).collect();
    let exe = build("abi_layout", link, &extra);
    let out = check_success("abi_layout", link, &run(&exe, &[]));
    assert!(out.contains(" results identical\n"), "{out}");
}

#[test]
fn layouts_constants_signatures_and_macros_match_cpython_shared() {
    abi_layout(Link::Shared);
}

#[test]
fn layouts_constants_signatures_and_macros_match_cpython_static() {
    abi_layout(Link::Static);
}

/// `include/pymalloc.h` with `from` replaced by `to`, in a directory of its
/// own; returns the directory.
fn mutated_header(tag: &str, from: &str, to: &str) -> PathBuf {
    let e = env();
    let header = std::fs::read_to_string(e.include.join("pymalloc.h")).unwrap();
    assert_eq!(header.matches(from).count(), 1, "{from:?} not once in pymalloc.h");
    let dir = e.out.join(format!("mutant-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pymalloc.h"), header.replace(from, to)).unwrap();
    std::fs::copy(e.include.join("pymalloc_gc.h"), dir.join("pymalloc_gc.h")).unwrap();
    dir
}

/// The comparison with CPython's headers is live: each change to a copy of
/// the header that breaks compatibility fails a static assertion.
#[test]
fn abi_layout_catches_incompatible_declarations() {
    let mutations = [
        (
            "member-type",
            "void *(*calloc)(void *ctx, size_t nelem, size_t elsize);",
            "void *(*calloc)(void *ctx, size_t nelem);",
            "PyMemAllocatorEx.calloc: type",
        ),
        (
            "member-missing",
            "    /* allocates a memory block */\n    void *(*malloc)(void *ctx, size_t size);\n",
            "",
            "PyMemAllocatorEx size",
        ),
        (
            "arena-free",
            "void (*free)(void *ctx, void *ptr, size_t size);",
            "void (*free)(void *ctx, void *ptr);",
            "PyObjectArenaAllocator.free: type",
        ),
        ("enum-order", "    PYMEM_DOMAIN_RAW,\n", "    PYMEM_DOMAIN_RAW = 4,\n", "PYMEM_DOMAIN_RAW"),
        (
            "ssize-max",
            "#define PY_SSIZE_T_MAX ((Py_ssize_t)(((size_t)-1) >> 1))",
            "#define PY_SSIZE_T_MAX ((Py_ssize_t)(((size_t)-1) >> 2))",
            "bits 48-63",
        ),
        (
            "function",
            "void *PyMem_Calloc(size_t nelem, size_t elsize);",
            "void *PyMem_Calloc(size_t nelem, int elsize);",
            "PyMem_Calloc: signature",
        ),
        ("ssize-type", "typedef ssize_t Py_ssize_t;", "typedef long long Py_ssize_t;", "Py_ssize_t"),
    ];
    let e = env();
    let includes = python_includes();
    for (tag, from, to, message) in mutations {
        let dir = mutated_header(tag, from, to);
        let mut cmd = Command::new(cc());
        cmd.args(CFLAGS).arg("-I").arg(&dir).args(&includes).arg("-fsyntax-only").arg(e.c_dir.join("abi_layout.c"));
        let out = output(&mut cmd);
        assert!(!out.status.success(), "{tag}: the mutant compiled");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("static assertion failed") && err.contains(message),
            "{tag}: expected a static assertion about {message:?}:\n{err}"
        );
    }
}

/// The macro comparison is live too: a copy of the header whose macros
/// differ from CPython's compiles, and the program fails at run time.
#[test]
fn abi_layout_catches_macros_that_differ_from_cpythons() {
    let mutations = [
        (
            "new-bound",
            "(((size_t)(n) > (size_t)PY_SSIZE_T_MAX / sizeof(type)) \\\n         ? NULL \\\n         : ((type *)PyMem_Malloc",
            "(((size_t)(n) >= (size_t)PY_SSIZE_T_MAX / sizeof(type)) \\\n         ? NULL \\\n         : ((type *)PyMem_Malloc",
        ),
        (
            "resize-keeps-p",
            "    ((p) = ((size_t)(n) > (size_t)PY_SSIZE_T_MAX / sizeof(type)) \\\n               ? NULL \\\n               : (type *)PyMem_Realloc((p), (n) * sizeof(type)))",
            "    (((size_t)(n) > (size_t)PY_SSIZE_T_MAX / sizeof(type)) \\\n               ? NULL \\\n               : ((p) = (type *)PyMem_Realloc((p), (n) * sizeof(type))))",
        ),
        (
            "obj-alias",
            "#define PyObject_Del PyObject_Free",
            "#define PyObject_Del PyMem_Free",
        ),
    ];
    let e = env();
    let includes = python_includes();
    for (tag, from, to) in mutations {
        let dir = mutated_header(tag, from, to);
        let exe = e.out.join(format!("abi_layout-mutant-{tag}"));
        let mut cmd = Command::new(cc());
        cmd.args(CFLAGS)
            .arg("-I")
            .arg(&dir)
            .args(&includes)
            .arg(e.c_dir.join("abi_layout.c"))
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", e.lib_dir.display()))
            .arg("-lpymalloc")
            .arg(format!("-Wl,-rpath,{}", e.lib_dir.display()));
        compile(cmd, &format!("abi_layout.c with mutant {tag}"));
        let out = run(&exe, &[]);
        assert_eq!(out.status.code(), Some(1), "{tag}: the mutant passed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("abi_layout.c:") && err.contains("CHECK failed"), "{tag}: {err}");
    }
}

#[test]
fn pymalloc_h_refuses_to_follow_python_h() {
    let e = env();
    let mut cmd = Command::new(cc());
    cmd.args(python_includes())
        .arg("-I")
        .arg(&e.include)
        .arg("-fsyntax-only")
        .arg(e.c_dir.join("guard_after_python.c"));
    let out = output(&mut cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("#error \"pymalloc.h is for programs that do not link libpython"), "{err}");
}

#[test]
fn python_h_cannot_follow_pymalloc_h() {
    let e = env();
    let mut cmd = Command::new(cc());
    cmd.args(python_includes())
        .arg("-I")
        .arg(&e.include)
        .arg("-fsyntax-only")
        .arg(e.c_dir.join("guard_before_python.c"));
    let out = output(&mut cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflicting types for \u{2018}PyMemAllocatorEx\u{2019}")
            || err.contains("conflicting types for 'PyMemAllocatorEx'")
            || err.contains("typedef redefinition with different types"),
        "{err}"
    );
}

#[test]
fn header_works_from_cpp() {
    let e = env();
    let exe = e.out.join("cxx_header");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cmd = Command::new(cxx);
    cmd.args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(&e.include)
        .arg(e.c_dir.join("cxx_header.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", e.lib_dir.display()))
        .arg("-lpymalloc")
        .arg(format!("-Wl,-rpath,{}", e.lib_dir.display()));
    compile(cmd, "cxx_header.cpp");
    let out = run(&exe, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cxx_header: ok\n");
}

// ---------------------------------------------------------------------------
// Memcheck: no invalid access, no use of uninitialised memory, in the
// library or the programs. In the malloc configurations every block is a
// C-library block valgrind tracks, so this also checks the debug hooks'
// framing and the copies of realloc byte by byte.

#[test]
fn no_memory_errors_under_valgrind() {
    for name in ["api_semantics", "hooks", "arenas", "stats", "gc"] {
        let exe = build(name, Link::Shared, &["-pedantic"]);
        let mut cmd = program(Path::new("valgrind"));
        let out = cmd.args(["-q", "--error-exitcode=99"]).arg(&exe).output().expect("valgrind is needed");
        assert_ne!(
            out.status.code(),
            Some(99),
            "{name}: valgrind found errors:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_success(name, Link::Shared, &out);
    }
}

// ---------------------------------------------------------------------------
// Symbols: the libraries define exactly the functions the header declares.

/// The functions the installed headers declare: `pymalloc.h` and the
/// `pymalloc_gc.h` it includes. A declaration starts in column 0 with its
/// return type; the name is the identifier before the first `(`.
fn declared_functions() -> Vec<String> {
    let mut names = Vec::new();
    for file in ["pymalloc.h", "pymalloc_gc.h"] {
        let header = std::fs::read_to_string(env().include.join(file)).unwrap();
        for line in header.lines() {
            let starts_a_declaration = line.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && !["typedef", "struct", "extern", "enum", "union"].iter().any(|k| line.starts_with(k));
            let Some(paren) = line.find('(').filter(|_| starts_a_declaration) else { continue };
            let name = line[..paren].trim_end().rsplit([' ', '*']).next().unwrap_or("");
            if (name.starts_with("Py") || name.starts_with("_Py"))
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names
}

fn defined_symbols(args: &[&str], file: &Path) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().expect("nm");
    assert!(out.status.success());
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] == "T").then(|| f[2].to_string())
        })
        .filter(|n| n.starts_with("Py") || n.starts_with("_Py"))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn libraries_export_exactly_the_headers_functions() {
    let declared = declared_functions();
    // 42 of the memory API and its extras, 48 of the object layer.
    assert_eq!(declared.len(), 42 + 48, "{declared:?}");
    let e = env();
    // The shared library exports nothing else at all.
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(e.lib_dir.join("libpymalloc.so")).output().unwrap();
    let mut dynamic: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    dynamic.sort();
    assert_eq!(dynamic, declared);
    assert_eq!(defined_symbols(&["--defined-only"], &e.lib_dir.join("libpymalloc.a")), declared);
}

// ---------------------------------------------------------------------------
// The README's example, as printed there.

#[test]
fn readme_example_compiles_and_runs() {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let section = &readme[readme.find("## The C library").unwrap()..];
    let start = section.find("```c\n").unwrap() + "```c\n".len();
    let code = &section[start..start + section[start..].find("```").unwrap()];
    assert!(code.contains("#include <pymalloc.h>"));
    let e = env();
    let src = e.out.join("readme_example.c");
    std::fs::write(&src, code).unwrap();
    let exe = e.out.join("readme_example");
    let mut cmd = Command::new(cc());
    cmd.args(CFLAGS)
        .arg("-pedantic")
        .arg("-I")
        .arg(&e.include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", e.lib_dir.display()))
        .arg("-lpymalloc")
        .arg(format!("-Wl,-rpath,{}", e.lib_dir.display()));
    compile(cmd, "the README's example");
    let out = run(&exe, &[]);
    assert!(out.status.success(), "{:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Small block threshold = 512, in 32 size classes.\n"), "{stdout}");
}

// ---------------------------------------------------------------------------
// pkg-config and installation.

fn pkg_config(pc_path: &Path, args: &[&str]) -> Vec<String> {
    let out =
        Command::new("pkg-config").args(args).env("PKG_CONFIG_PATH", pc_path).output().expect("pkg-config is needed");
    assert!(out.status.success(), "pkg-config {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

/// Compiles `hooks.c` with the flags pkg-config gives for `module` from the
/// `.pc` files in `pc_path`, runs it, checks it linked `link`-wise against
/// `lib_dir`'s library.
fn build_with_pkg_config(pc_path: &Path, module: &str, link: Link, tag: &str) {
    let e = env();
    let flags = pkg_config(pc_path, &["--cflags", "--libs", module]);
    let libdir = pkg_config(pc_path, &["--variable=libdir", module]);
    let exe = e.out.join(format!("hooks-pkgconfig-{tag}"));
    let mut cmd = Command::new(cc());
    cmd.args(CFLAGS)
        .arg(e.c_dir.join("hooks.c"))
        .arg("-o")
        .arg(&exe)
        .args(&flags)
        .arg(format!("-Wl,-rpath,{}", libdir[0]));
    compile(cmd, "hooks.c with pkg-config");
    let out = run(&exe, &[]);
    check_success_with("hooks", link, &out, Path::new(&libdir[0]));
}

#[test]
fn pkg_config_files_in_the_build_tree() {
    let e = env();
    let version = pkg_config(&e.lib_dir, &["--modversion", "pymalloc"]);
    assert_eq!(version, [env!("CARGO_PKG_VERSION")]);
    let cflags = pkg_config(&e.lib_dir, &["--cflags", "pymalloc"]);
    assert_eq!(cflags, [format!("-I{}", e.include.display())]);
    build_with_pkg_config(&e.lib_dir, "pymalloc", Link::Shared, "shared");
    build_with_pkg_config(&e.lib_dir, "pymalloc-static", Link::Static, "static");
}

#[test]
fn install_script_installs_a_usable_copy() {
    let e = env();
    let prefix = e.out.join(format!("prefix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let out = Command::new("sh")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("install.sh"))
        .arg(&prefix)
        .arg(&e.lib_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "lib/libpymalloc.so",
        "lib/libpymalloc.a",
        "include/pymalloc.h",
        "lib/pkgconfig/pymalloc.pc",
        "lib/pkgconfig/pymalloc-static.pc",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }
    let pc_path = prefix.join("lib/pkgconfig");
    let cflags = pkg_config(&pc_path, &["--cflags", "pymalloc"]);
    assert_eq!(cflags, [format!("-I{}", prefix.join("include").display())]);
    build_with_pkg_config(&pc_path, "pymalloc", Link::Shared, "installed-shared");
    build_with_pkg_config(&pc_path, "pymalloc-static", Link::Static, "installed-static");
    std::fs::remove_dir_all(&prefix).unwrap();
}

#[test]
fn install_script_rejects_bad_usage() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let out = Command::new("sh").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let empty = env().out.join("empty-build-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new("sh").arg(&script).arg(env().out.join("unused-prefix")).arg(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"));
    assert!(!env().out.join("unused-prefix").exists());
}

// ---------------------------------------------------------------------------
// The object layer and the collector, exported from the same library.

#[test]
fn gc_shared() {
    run_program("gc", Link::Shared);
}

#[test]
fn gc_static() {
    run_program("gc", Link::Static);
}

// ---------------------------------------------------------------------------
// Thread-local storage in the shared library.

/// The optimised `libpymalloc.so`, built if needed, disassembled
/// (demangled).
fn release_library_disassembly() -> (PathBuf, String) {
    let lib_dir = env().lib_dir.parent().unwrap().join("release");
    build_library(&lib_dir);
    let so = lib_dir.join("libpymalloc.so");
    let out = Command::new("objdump").args(["-d", "-C", "--no-show-raw-insn"]).arg(&so).output().unwrap();
    assert!(out.status.success(), "objdump: {}", String::from_utf8_lossy(&out.stderr));
    (so, String::from_utf8(out.stdout).unwrap())
}

/// The disassembled body of the function named `name` (demangled) in `lib`.
fn function_body(disassembly: &str, name: &str) -> String {
    let header = format!("<{name}>:");
    let start = disassembly.lines().position(|l| l.ends_with(&header)).unwrap_or_else(|| panic!("no function {name}"));
    disassembly.lines().skip(start + 1).take_while(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n")
}

/// The thread-safe default reaches the calling thread's heap with one
/// `%fs`-relative load in `libpymalloc.so` too, not through
/// `__tls_get_addr` (general-dynamic TLS, which Rust's `thread_local!` gets
/// in a shared object and which cost about 5 ns a call). Read in the
/// optimised library, where the fast paths are inlined into the domain
/// functions every `PyObject_Malloc`/`PyObject_Free` jumps to.
#[test]
fn shared_library_reaches_the_thread_heap_without_tls_get_addr() {
    let (so, asm) = release_library_disassembly();
    for f in ["pymalloc::thread::threaded_malloc", "pymalloc::thread::threaded_free"] {
        let body = function_body(&asm, f);
        assert!(!body.contains("__tls_get_addr"), "{f} calls __tls_get_addr:\n{body}");
        assert!(body.contains("%fs:"), "{f} does not read thread-local storage inline:\n{body}");
    }
    // Initial-exec TLS marks the library: it takes its slot from the static
    // TLS block, which glibc sizes for dlopen'ed libraries too.
    let out = Command::new("readelf").arg("-d").arg(&so).output().unwrap();
    let dynamic = String::from_utf8(out.stdout).unwrap();
    assert!(dynamic.lines().any(|l| l.contains("(FLAGS)") && l.contains("STATIC_TLS")), "{dynamic}");
}

/// The `.got` section of `so`: its start address and size.
fn got_range(so: &Path) -> (u64, u64) {
    let out = Command::new("readelf").args(["-SW"]).arg(so).output().unwrap();
    let sections = String::from_utf8(out.stdout).unwrap();
    let line = sections.lines().find(|l| l.split_whitespace().any(|w| w == ".got")).expect("no .got section");
    // [Nr] Name Type Address Off Size ...: the fields after the name.
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    (hex(fields[2]), hex(fields[4]))
}

/// The lines of `body` that load through the global offset table: a
/// `%rip`-relative operand whose target (objdump's `# address` note) lies in
/// `.got`.
fn got_loads(body: &str, (start, size): (u64, u64)) -> Vec<&str> {
    body.lines()
        .filter(|l| {
            let Some((_, note)) = l.split_once("(%rip)") else { return false };
            let Some(target) = note.split('#').nth(1).and_then(|t| t.split_whitespace().next()) else { return false };
            u64::from_str_radix(target, 16).is_ok_and(|a| a >= start && a < start + size)
        })
        .collect()
}

/// `libpymalloc.so` reads its own statics where they are, not through the
/// global offset table. The release profile's whole-program LTO gives that
/// (rustc on stable marks GOT loads of statics from another crate or
/// module as not relaxable, and with thin LTO every domain call, every
/// region bound and every block-map table cost one more dependent load:
/// about 1 ns per alloc+free pair on the ring, docs/every-size.md "Tenth
/// pass"). The one GOT load left on the fast paths is the heap's
/// initial-exec TLS offset, which a shared object cannot know before it is
/// loaded (once on each path through the function).
#[test]
fn shared_library_reads_its_own_statics_without_the_got() {
    let (so, asm) = release_library_disassembly();
    let got = got_range(&so);
    for f in ["PyObject_Malloc", "PyObject_Free", "PyMem_Malloc", "PyMem_Free"] {
        let body = function_body(&asm, f);
        let loads = got_loads(&body, got);
        assert!(loads.is_empty(), "{f} loads through the GOT:\n{}\n\nin:\n{body}", loads.join("\n"));
    }
    for f in ["pymalloc::thread::threaded_malloc", "pymalloc::thread::threaded_free"] {
        let body = function_body(&asm, f);
        let first_ret = body.lines().position(|l| l.contains("\tret")).unwrap_or_else(|| panic!("no ret:\n{body}"));
        let fast = body.lines().take(first_ret).collect::<Vec<_>>().join("\n");
        let loads = got_loads(&fast, got);
        assert!(!loads.is_empty(), "{f}'s fast path reads no TLS offset:\n{fast}");
        let lines: Vec<&str> = fast.lines().collect();
        for load in loads {
            let i = lines.iter().position(|l| *l == load).unwrap();
            let next = lines.get(i + 1).copied().unwrap_or_default();
            assert!(
                next.contains("%fs:"),
                "{f}'s fast path loads through the GOT for other than the TLS offset:\n{load}\n\nin:\n{fast}"
            );
        }
    }
}

/// The library's static heaps (the shared locked heap, 32 KiB, and the GIL
/// heap) are all zeroes when made, so they sit in `.bss`: their pages are
/// not in the file and cost nothing until used. A heap field that starts
/// other than zero moves the whole heap to `.data`, whose pages the
/// kernel maps 64 KiB at a time from the file when one is read (the owner
/// tag of a heap that is not a thread heap did, before it was kept null
/// and stamped as `NOT_THREAD_TAG`; the block caches' tops would have).
#[test]
fn shared_library_static_heaps_are_zeroes_in_bss() {
    let (so, _) = release_library_disassembly();
    let out = Command::new("nm").args(["-C"]).arg(&so).output().unwrap();
    assert!(out.status.success(), "nm: {}", String::from_utf8_lossy(&out.stderr));
    let symbols = String::from_utf8(out.stdout).unwrap();
    for name in ["pymalloc::locked::GLOBAL_HEAP", "pymalloc::gil::GIL_HEAP"] {
        let line = symbols
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no symbol {name} in:\n{symbols}"));
        let kind = line.split_whitespace().nth(1).unwrap();
        assert!(kind.eq_ignore_ascii_case("b"), "{name} is not in .bss: {line}");
    }
}

/// The thread-safe default's small-block fast path calls nothing, so
/// `threaded_malloc` needs no stack frame: from its entry to its first
/// `ret` (a block from the cache, or the head of the class's first used
/// pool) there is no `push` and no `call`; every slower path leaves by a
/// tail jump. Before the fast path was split from the full one, the entry
/// saved three registers on every call.
#[test]
fn shared_library_malloc_fast_path_needs_no_stack_frame() {
    let (_, asm) = release_library_disassembly();
    let body = function_body(&asm, "pymalloc::thread::threaded_malloc");
    let first_ret = body.lines().position(|l| l.contains("\tret")).unwrap_or_else(|| panic!("no ret:\n{body}"));
    let fast: Vec<&str> = body.lines().take(first_ret).collect();
    for l in &fast {
        assert!(!l.contains("\tpush") && !l.contains("\tcall"), "the fast path saves or calls:\n{}", fast.join("\n"));
    }
    assert!(fast.iter().any(|l| l.contains("%fs:")), "the fast path reads no heap:\n{}", fast.join("\n"));
}
