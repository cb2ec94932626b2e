//! Real programs under `LD_PRELOAD=libpymalloc_preload.so`: each runs once
//! with glibc's malloc and once with the preload library, and its results
//! must not change. The library writes its statistics at exit
//! (`PYMALLOC_PRELOAD_STATS=<file>`), which shows that pymalloc served the
//! program's small blocks.
//!
//! The library is built first, in release (`cargo build --release -p
//! pymalloc-preload`, a no-op when fresh): CPython's tests run under it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

struct Env {
    lib: PathBuf,
    /// `libpymalloc_preload_trace.so`: the same with the tracer.
    traced_lib: PathBuf,
    out: PathBuf,
    c_dir: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // This binary is <target>/<profile>/deps/programs-<hash>.
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--release", "-p", "pymalloc-preload", "-p", "pymalloc-preload-trace", "--target-dir"])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "building the preload library:\n{}", String::from_utf8_lossy(&out.stderr));
        let lib = target.join("release/libpymalloc_preload.so");
        let traced_lib = target.join("release/libpymalloc_preload_trace.so");
        assert!(lib.is_file() && traced_lib.is_file());
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pymalloc-preload-programs");
        std::fs::create_dir_all(&out).unwrap();
        Env { lib, traced_lib, out, c_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c") }
    })
}

/// A scratch directory of this test's own, emptied.
fn scratch(name: &str) -> PathBuf {
    let d = env().out.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd` as built by `make` twice: with glibc, and preloaded. Returns
/// both outputs and the statistics the library wrote.
fn both(name: &str, make: impl Fn() -> Command) -> (Output, Output, String) {
    let plain = make().env_remove("LD_PRELOAD").output().unwrap_or_else(|e| panic!("{name}: {e}"));
    let stats = env().out.join(format!("{name}.stats"));
    let _ = std::fs::remove_file(&stats);
    let ours = make()
        .env("LD_PRELOAD", &env().lib)
        .env("PYMALLOC_PRELOAD_STATS", &stats)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let stats = std::fs::read_to_string(&stats).unwrap_or_default();
    (plain, ours, stats)
}

fn show(o: &Output) -> String {
    format!(
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The program succeeded both ways with the same stdout, and pymalloc
/// served blocks in at least one of its processes.
fn same_results(name: &str, plain: &Output, ours: &Output, stats: &str) {
    assert!(plain.status.success(), "{name} under glibc: {}", show(plain));
    assert!(ours.status.success(), "{name} preloaded: {}", show(ours));
    assert_eq!(String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&ours.stdout), "{name}: stdout differs");
    served(name, stats);
}

/// The statistics written at exit show arenas of pymalloc's in use.
fn served(name: &str, stats: &str) {
    let arenas: Vec<u64> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("# arenas allocated total"))
        .map(|l| l.trim_start_matches([' ', '=']).replace(',', "").trim().parse().unwrap())
        .collect();
    assert!(!arenas.is_empty() && arenas.iter().any(|&n| n > 0), "{name}: pymalloc served nothing:\n{stats}");
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn compile(src: &str, compiler: &str, flags: &[&str]) -> PathBuf {
    let exe = env().out.join(Path::new(src).file_stem().unwrap());
    let out = Command::new(compiler).args(flags).arg(env().c_dir.join(src)).arg("-o").arg(&exe).output().unwrap();
    assert!(out.status.success(), "{compiler} {src}:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

#[test]
fn c_allocation_api_threads_and_fork() {
    let exe = compile("c_api.c", "cc", &["-O1", "-g", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-ldl"]);
    let plain = Command::new(&exe).output().unwrap();
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    // Immediate purging gives arenas back and takes them again all the
    // time, so fork() often finds another thread inside a locked section.
    for purge in ["default", "immediate"] {
        let stats = env().out.join(format!("c_api-{purge}.stats"));
        let _ = std::fs::remove_file(&stats);
        let ours = Command::new(&exe)
            .arg("preloaded")
            .env("LD_PRELOAD", &env().lib)
            .env("PYMALLOC_PURGE", purge)
            .env("PYMALLOC_PRELOAD_STATS", &stats)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ours.stdout);
        assert!(ours.status.success(), "{purge}: {stdout}\n{}", String::from_utf8_lossy(&ours.stderr));
        assert!(stdout.starts_with("c_api: ") && stdout.trim_end().ends_with("checks passed"), "{stdout}");
        // The count of checks depends on the threads' timing: not compared.
        served("c_api", &std::fs::read_to_string(&stats).unwrap_or_default());
    }
}

#[test]
fn cxx_new_delete_and_containers() {
    let exe = compile("cxx.cpp", "c++", &["-O1", "-std=c++17"]);
    let (plain, ours, stats) = both("cxx", || Command::new(&exe));
    same_results("cxx", &plain, &ours, &stats);
    assert!(String::from_utf8_lossy(&ours.stdout).starts_with("keys 5000 "));
}

/// C++'s operators are the library's own (`cxx.rs`), with C++'s rules:
/// every form of `new` and `delete`, the new-handler called before
/// `std::bad_alloc` is thrown through the library's frame, null from the
/// `nothrow` forms. The rules' output is the same as under libstdc++'s.
#[test]
fn cxx_operators_are_the_librarys_with_cxx_rules() {
    let exe = compile("cxx_operators.cpp", "c++", &["-O1", "-std=c++17", "-Wall", "-Werror", "-ldl"]);
    let (plain, ours, stats) = both("cxx_operators", || Command::new(&exe));
    same_results("cxx_operators", &plain, &ours, &stats);
    let stdout = String::from_utf8_lossy(&ours.stdout);
    assert!(stdout.contains("bad_alloc after 1 handler call(s)") && stdout.contains("nothrow: null null"), "{stdout}");
    let defined_in = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        ["operator new: ", "operator delete: "]
            .map(|k| err.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_else(|| panic!("{err}")).to_string())
    };
    assert!(defined_in(&ours).iter().all(|l| l.ends_with("libpymalloc_preload.so")), "{}", show(&ours));
    assert!(defined_in(&plain).iter().all(|l| !l.contains("pymalloc")), "{}", show(&plain));
}

#[test]
fn pythontracemalloc_traces_the_c_allocation_api() {
    let exe = compile("traced.c", "cc", &["-O1", "-g"]);
    let dump = env().out.join("traced.snapshot");
    // The program under the tracing library, with PYTHONTRACEMALLOC=n and
    // a dump at exit (any earlier dump removed first).
    let traced = |n: &str| {
        let _ = std::fs::remove_file(&dump);
        Command::new(&exe)
            .env("LD_PRELOAD", &env().traced_lib)
            .env("PYTHONTRACEMALLOC", n)
            .env("PYMALLOC_TRACE_DUMP", &dump)
            .output()
            .unwrap()
    };
    let out = traced("2");
    assert!(out.status.success(), "{}", show(&out));
    // No debug information was read to trace: the C library's internal
    // functions that allocate (fopen's) are the program's frames without a
    // look (with libc6-dbg installed, as here, glibc's was read and mapped).
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept 7\ndebug_maps 0\n");
    let snap = pymalloc::snapshot::Snapshot::load(&dump).unwrap();
    assert_eq!(snap.traceback_limit, 2);
    // The blocks the loop freed are gone: what stays beside the leak is the
    // C library's (the file opened, stdio's buffers), allocated in its own
    // functions, which are the program's frames as any caller of malloc.
    let in_main = |f: &pymalloc::trace::Frame| f.filename.ends_with("traced.c");
    for t in snap.traces.iter().filter(|t| t.size != 12345) {
        let newest = t.frames.last().unwrap_or_else(|| panic!("no frame: {t:?}"));
        assert!(!in_main(newest), "a block of the loop, or made in main: {t:?}");
    }
    let file = snap.traces.iter().find(|t| t.frames.first().is_some_and(in_main) && t.size != 12345);
    let file = file.unwrap_or_else(|| panic!("no trace of fopen's block under main: {snap:?}"));
    assert_eq!(file.frames.len(), 2, "main, then the C library's function: {file:?}");
    let leak = snap.traces.iter().find(|t| t.size == 12345).unwrap_or_else(|| panic!("{snap:?}"));
    assert_eq!(leak.source, pymalloc::trace::Source::Malloc);
    let names: Vec<&str> = leak.frames.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(names, ["main", "make_leak"], "{:?}", leak.frames);
    assert!(leak.frames[1].filename.ends_with("traced.c"), "{:?}", leak.frames[1]);

    let out = traced("zero");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PYTHONTRACEMALLOC: invalid number of frames"));
    // 0 is CPython's "off": the program runs, nothing is written.
    let out = traced("0");
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
    assert!(!dump.exists(), "tracing stayed off");

    // The plain library does not trace: it says which one does, and the
    // program runs as ever.
    let out = Command::new(&exe)
        .env("LD_PRELOAD", &env().lib)
        .env("PYTHONTRACEMALLOC", "2")
        .env("PYMALLOC_TRACE_DUMP", &dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept 7\ndebug_maps 0\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("preload libpymalloc_preload_trace.so"), "{}", show(&out));
    assert!(!dump.exists(), "the plain library wrote a snapshot");
}

/// The plain library carries none of the tracer (its unwinder and
/// symbolizer cost every program resident text, tracing or not): it is far
/// smaller than the tracing one and holds none of the tracer's code or
/// names. (std's own panic backtrace code is in both.)
#[test]
fn the_plain_library_leaves_the_tracer_out() {
    let plain = std::fs::metadata(&env().lib).unwrap().len();
    let traced = std::fs::metadata(&env().traced_lib).unwrap().len();
    assert!(plain * 3 < traced * 2, "plain {plain} bytes, traced {traced}");
    let has = |lib: &Path, needle: &str| {
        let bytes = std::fs::read(lib).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    for name in ["trace_frames", "trace_table", "PYMALLOC_TRACE_DUMP"] {
        assert!(!has(&env().lib, name), "the plain library contains {name}");
        assert!(has(&env().traced_lib, name), "the tracing library lacks {name}: the check finds nothing");
    }
}

/// glibc's questions about the heap (`mallinfo2`, `mallinfo`, `malloc_trim`,
/// `malloc_stats`) describe the heap the program allocates from, under
/// glibc and under both libraries alike: the program checks the figures
/// itself (`tests/c/introspect.c`). Answered by glibc's functions, as
/// before the library had its own, the preloaded run counted no bytes in
/// use and `malloc_trim(0)` gave nothing back.
#[test]
fn mallinfo_and_malloc_trim_describe_the_heap_in_use() {
    let exe = compile("introspect.c", "cc", &["-O1", "-std=c11", "-Wall", "-Wextra", "-Werror"]);
    let run = |lib: Option<&Path>, purge: &str| {
        let mut cmd = Command::new(&exe);
        cmd.env_remove("LD_PRELOAD").env("PYMALLOC_PURGE", purge);
        if let Some(lib) = lib {
            cmd.env("LD_PRELOAD", lib);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() && stdout.ends_with("introspect: ok\n"), "{lib:?} {purge}:\n{stdout}\n{stderr}");
        // glibc's own report comes last in every run.
        assert!(stderr.contains("Total (incl. mmap):"), "{lib:?}: {stderr}");
        stderr
    };
    let plain = run(None, "default");
    assert!(!plain.contains("Small block threshold"), "{plain}");
    for lib in [&env().lib, &env().traced_lib] {
        for purge in ["default", "never"] {
            let stderr = run(Some(lib), purge);
            // Ours: CPython's table, the line on the larger blocks.
            assert!(
                stderr.contains("Small block threshold = 512, in ") && stderr.contains("# blocks above 512 bytes: "),
                "{lib:?} {purge}: {stderr}"
            );
        }
    }
}

/// A thread takes its heap before it registers its exit handler, whose
/// registration allocates (glibc's `__cxa_thread_atexit_impl`): those
/// requests come from the thread's own heap. Taken the other way round,
/// they went to the shared heap, and every program held an arena of it
/// beside its thread's (its first pages and the shared heap's own, about
/// 12 KiB resident).
#[test]
fn a_single_threaded_program_uses_one_arena() {
    let exe = compile("one_thread.c", "cc", &["-O1", "-std=c11", "-Wall", "-Werror"]);
    let (plain, ours, stats) = both("one_thread", || Command::new(&exe));
    same_results("one_thread", &plain, &ours, &stats);
    let total = stats
        .lines()
        .find_map(|l| l.strip_prefix("# arenas allocated total"))
        .and_then(|l| l.trim_start_matches([' ', '=']).trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no arena total in the statistics:\n{stats}"));
    assert_eq!(total, 1, "{stats}");
}

/// The number on the line `name N` of a program's output.
fn figure(stdout: &str, name: &str) -> i64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} line: {stdout}"))
}

/// The code a program runs in the library lies in one 64 KiB window (see
/// `build.rs`): a program that makes every kind of request, from several
/// threads, and runs the phases of the field's small benchmarks has one
/// window of the library's text resident. It had 236 KiB before the
/// library's code was grouped: the kernel maps the 64 KiB around each page
/// fault of a file mapping, and the code it ran was spread among `std`'s.
/// And 128 KiB while the list of what runs first lacked the path of a pool
/// that empties (glibc-simple's phases).
#[test]
fn the_library_text_a_program_runs_is_one_window() {
    let exe = compile("resident_text.c", "cc", &["-O1", "-std=gnu11", "-Wall", "-Werror", "-pthread", "-ldl"]);
    // Under each purge policy: the default; a short decay, so that the
    // decay thread's sweep runs in the program's pause (it runs in every
    // program that lives a second or two); `immediate`.
    for purge in [None, Some("decay:20"), Some("immediate")] {
        let mut cmd = Command::new(&exe);
        cmd.env("LD_PRELOAD", &env().lib);
        if let Some(p) = purge {
            cmd.env("PYMALLOC_PURGE", p);
        }
        let out = cmd.output().unwrap();
        resident_text_is_one_window(&out, purge);
    }
    // The unwind tables' segment is read-only and lies after the text (as
    // lld lays out the script; GNU ld would put them in the text segment).
    let tool = |args: &[&str]| {
        let o = Command::new("readelf").args(args).arg(&env().lib).output().expect("readelf");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let sections = tool(&["-SW"]);
    let eh = sections.lines().find(|l| l.contains(" .eh_frame ")).expect("an .eh_frame section");
    let eh_addr = u64::from_str_radix(eh.split(']').nth(1).unwrap().split_whitespace().nth(2).unwrap(), 16).unwrap();
    let loads: Vec<(u64, u64, String)> = tool(&["-lW"])
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap();
            (hex(w[2]), hex(w[5]), w[6..w.len() - 1].concat())
        })
        .collect();
    let (start, _, flags) =
        loads.iter().find(|(a, m, _)| *a <= eh_addr && eh_addr < a + m).expect("no segment holds .eh_frame");
    assert_eq!(flags, "R", ".eh_frame in a segment {flags}");
    let text = loads.iter().find(|(_, _, f)| f == "RE").expect("a text segment");
    assert!(*start > text.0, "the unwind tables lie before the text");
}

/// One run of `resident_text.c` (under purge policy `purge`, None for the
/// default): one window of the library's text resident, and little of its
/// read-only segments.
fn resident_text_is_one_window(out: &std::process::Output, purge: Option<&str>) {
    assert!(out.status.success(), "{purge:?}: {}", show(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("libpymalloc_preload.so"), "malloc is not the library's: {stdout} ({purge:?})");
    let kib = figure(&stdout, "text_rss_kib");
    assert!(kib > 0, "the library's executable mapping was not found: {stdout} ({purge:?})");
    assert!(kib <= 64, "{kib} KiB of the library's text resident, more than one 64 KiB window: {stdout} ({purge:?})");
    // The read-only segments: headers, symbols, packed relocations and
    // read-only data before the text (about 30 KiB), the unwind tables in a
    // segment of their own after it (not read unless something unwinds),
    // and the relocated data (12 KiB). With the unwind tables and the
    // relocations in the first segment, a 64 KiB window of it was resident.
    let readonly = figure(&stdout, "readonly_rss_kib");
    assert!(readonly > 0, "the library's read-only mappings were not found: {stdout} ({purge:?})");
    assert!(readonly <= 52, "{readonly} KiB of the library's read-only segments resident: {stdout} ({purge:?})");
}

/// The heaps the library keeps in statics for the other modes (the GIL
/// heap, the locked heap: some 10 KiB each) start as all-zero values, so
/// they lie in `.bss` and cost a preloaded program nothing: in `.data` the
/// kernel mapped all of them into every process (the writable segment was
/// 28 KiB resident, now 8).
#[test]
fn the_unused_heaps_cost_no_initialised_data() {
    let out = Command::new("nm").args(["-S", "-C"]).arg(&env().lib).output().expect("nm");
    assert!(out.status.success(), "nm: {}", show(&out));
    let symbols = String::from_utf8_lossy(&out.stdout);
    for heap in ["pymalloc::gil::GIL_HEAP", "pymalloc::locked::GLOBAL_HEAP"] {
        let line = symbols
            .lines()
            .find(|l| l.ends_with(heap))
            .unwrap_or_else(|| panic!("{heap} not in the library's symbols"));
        let kind = line.split_whitespace().nth(2).unwrap_or("");
        assert_eq!(kind, "b", "{heap} is not in .bss: {line}");
    }
    let out = Command::new("readelf").args(["-SW"]).arg(&env().lib).output().expect("readelf");
    let sections = String::from_utf8_lossy(&out.stdout);
    let data = sections
        .lines()
        .find(|l| l.contains(" .data ") && l.contains("PROGBITS"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "PROGBITS").nth(3))
        .map(|size| usize::from_str_radix(size, 16).unwrap())
        .unwrap_or_else(|| panic!("no .data section: {sections}"));
    assert!(data <= 8 * 1024, ".data is {data} bytes");
}

/// The decay reads its clock in the vDSO (`pymalloc::vdso`), not through
/// glibc's `clock_gettime`: that function lies in a 64 KiB window of glibc's
/// text that glibc-simple, mleak and glibc-thread never touch under glibc's
/// own malloc, so calling it put up to 64 KiB more of page cache in their
/// resident set (mleak 5, 30 runs, libc's text resident at exit: 1,010 KiB
/// on average under the library before, 935 after, 946 under glibc).
#[test]
fn the_decay_clock_does_not_call_the_c_librarys() {
    let out = Command::new("nm").args(["-D", "--undefined-only"]).arg(&env().lib).output().expect("nm");
    assert!(out.status.success(), "nm: {}", show(&out));
    let imports = String::from_utf8_lossy(&out.stdout);
    assert!(imports.lines().any(|l| l.contains(" mmap")), "nm listed no imports: {imports}");
    let clock: Vec<&str> = imports.lines().filter(|l| l.contains("clock_gettime")).collect();
    assert!(clock.is_empty(), "the library imports {clock:?}");
}

/// The preload library, disassembled (demangled).
fn disassembly() -> String {
    disassemble(&env().lib)
}

fn disassemble(lib: &Path) -> String {
    let out = Command::new("objdump").args(["-d", "-C", "--no-show-raw-insn"]).arg(lib).output().expect("objdump");
    assert!(out.status.success(), "objdump: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The instructions of `lib`'s exported function `name` from its entry to
/// its first `ret` (found by the symbol's address: identical code may be
/// folded under another name, as `free` is under `operator delete[]`).
fn fast_path(lib: &Path, name: &str) -> Vec<String> {
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(lib).output().expect("nm");
    assert!(out.status.success(), "nm: {}", show(&out));
    let symbols = String::from_utf8_lossy(&out.stdout);
    let addr = symbols
        .lines()
        .find_map(|l| l.strip_suffix(&format!(" T {name}")))
        .unwrap_or_else(|| panic!("{name} not exported by {}", lib.display()));
    let text = disassemble(lib);
    let start = text.find(&format!("\n{addr} <")).unwrap_or_else(|| panic!("no function at {addr}"));
    let body = &text[start + 1..];
    let body = &body[..body.find("\n\n").unwrap_or(body.len())];
    let fast: Vec<String> = body.lines().skip(1).take_while(|l| !l.contains("\tret")).map(str::to_owned).collect();
    assert!(fast.len() + 1 < body.lines().count(), "no ret in {name}:\n{body}");
    fast
}

/// The tracing library's `malloc` and `free` run the plain library's fast
/// path, instruction for instruction in number, with no test of the
/// tracing flag: the tracer shuts a gate it keeps in the loads the fast
/// path makes anyway (the size-to-class table's address, the block map's
/// bound), so tracing off costs nothing (docs/tracing.md: 178.63M against
/// 178.69M instructions on scripts/preload_ring.c). Before the gate the
/// tracing library's were 3 instructions longer, a load of the flag, a
/// test and a branch (192.6M against 180.6M).
#[test]
fn the_tracing_librarys_fast_paths_are_the_plain_ones() {
    for name in ["malloc", "free"] {
        let plain = fast_path(&env().lib, name);
        let traced = fast_path(&env().traced_lib, name);
        assert_eq!(
            traced.len(),
            plain.len(),
            "{name}'s fast path: plain\n{}\ntracing\n{}",
            plain.join("\n"),
            traced.join("\n")
        );
        assert!(!traced.iter().any(|l| l.contains("TRACING")), "{name} tests the flag:\n{}", traced.join("\n"));
    }
}

/// The tracer's per-thread state is one initial-exec block
/// (`trace_thread.rs`): no function of the traced path calls
/// `__tls_get_addr`, which each of its `thread_local!`s cost in this shared
/// library (about 6.6 calls per traced malloc/free pair, 9% of a traced C
/// ring's instructions). The walk (`trace_frames::capture`) calls it at
/// most once, on the system unwinder's path; a claim of a counting slot
/// (made by a thread without one), which registers its release at thread
/// exit, does call it, and shows that the check finds such calls.
#[test]
fn the_traced_path_reaches_its_thread_state_without_tls_get_addr() {
    let text = disassemble(&env().traced_lib);
    let mut calls: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut current = "";
    for line in text.lines() {
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, n)| n) {
            current = name;
            calls.insert(name, 0);
        } else if line.contains("call") && line.contains("__tls_get_addr") {
            *calls.entry(current).or_default() += 1;
        }
    }
    let modules = [
        "pymalloc::trace::",
        "pymalloc::trace_memo::",
        "pymalloc::trace_tally::",
        "pymalloc::trace_timeline::",
        "pymalloc::trace_sample::",
        "pymalloc::trace_table::",
        "pymalloc::trace_shadow::",
        "pymalloc_preload_trace::api::",
        "pymalloc_preload_trace::traced::",
    ];
    let hot = |name: &str| modules.iter().any(|m| name.starts_with(m) || name.starts_with(&format!("<{m}")));
    for f in ["pymalloc::trace::add", "pymalloc_preload_trace::api::malloc_traced", "pymalloc::trace_frames::capture"] {
        assert!(calls.contains_key(f), "{f} is not a function of the library: the check would find nothing");
    }
    assert!(
        calls.get("pymalloc::trace_tally::claim").is_some_and(|&n| n > 0),
        "the check no longer sees the claim's call of __tls_get_addr: it would find no other either"
    );
    let calling: Vec<_> =
        calls.iter().filter(|&(f, &n)| n > 0 && hot(f) && *f != "pymalloc::trace_tally::claim").collect();
    assert!(calling.is_empty(), "calling __tls_get_addr: {calling:?}");
    let capture = calls["pymalloc::trace_frames::capture"];
    assert!(capture <= 1, "the walk calls __tls_get_addr {capture} times");
}

/// The disassembly of the function `name`, from its label to the blank
/// line after it.
fn function_body<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(&format!("<{name}>:")).unwrap_or_else(|| panic!("{name} not in the library"));
    &text[start..text[start..].find("\n\n").map_or(text.len(), |e| start + e)]
}

/// A thread's heap is made in place in zeroed memory: built as a value and
/// moved (some 10 KiB), it went through the stack of the thread's first
/// allocation, which made every thread's stack 12 KiB deeper and a
/// preloaded program's peak resident memory 50-120 KiB larger
/// (glibc-simple 1,760 -> 1,876 KiB). The function that makes it keeps a
/// small frame.
#[test]
fn a_new_thread_heap_is_not_built_on_the_stack() {
    let text = disassembly();
    let body = function_body(&text, "pymalloc::thread::current_or_create");
    let frame: u64 = body
        .lines()
        .filter_map(|l| l.split("sub    $0x").nth(1).and_then(|r| r.strip_suffix(",%rsp")))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .sum();
    assert!(frame < 1024, "current_or_create takes {frame} bytes of stack:\n{body}");
}

/// `malloc`'s small-block fast path calls nothing and saves nothing: from
/// the entry to the first `ret` there is no `push` and no `call`, and every
/// slower path (a medium size, an empty cache and pool) leaves by a tail
/// jump. Before, the entry saved three registers on every call and a
/// medium request came back through `malloc` to set `errno`, which glibc,
/// pymalloc's last resort, has already set (c_api.c checks it).
#[test]
fn malloc_fast_path_needs_no_stack_frame() {
    let text = disassembly();
    let body = function_body(&text, "malloc");
    let fast: Vec<&str> = body.lines().skip(1).take_while(|l| !l.contains("\tret")).collect();
    assert!(fast.len() + 1 < body.lines().count(), "no ret in malloc:\n{body}");
    for l in &fast {
        assert!(!l.contains("\tpush") && !l.contains("\tcall"), "malloc's fast path saves or calls:\n{body}");
    }
    let calls = body.lines().filter(|l| l.contains("\tcall") && !l.contains("unwind") && !l.contains("panic"));
    assert_eq!(calls.count(), 0, "malloc makes a call that is not a tail jump:\n{body}");
}

#[test]
fn a_bad_purge_policy_is_named_with_the_valid_ones() {
    let out = Command::new("true").env("LD_PRELOAD", &env().lib).env("PYMALLOC_PURGE", "sometimes").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown purge policy 'sometimes'") && err.contains("valid: default, decay"), "{err}");
}

/// CPython's own tests, with every Python allocation going to `malloc`.
#[test]
fn python_regression_tests_with_pythonmalloc_malloc() {
    const MODULES: &[&str] = &[
        "test_dict",
        "test_list",
        "test_set",
        "test_tuple",
        "test_deque",
        "test_bytes",
        "test_unicode",
        "test_json",
        "test_re",
        "test_pickle",
        "test_weakref",
        "test_gc",
        "test_threading_local",
        "test_subprocess",
        "test_array",
        "test_sqlite3",
        "test_zlib",
        "test_tracemalloc",
    ];
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let d = scratch("python");
    let (plain, ours, stats) = both("python", || {
        let mut c = Command::new(&python);
        c.args(["-m", "test", "-j2"]).args(MODULES).env("PYTHONMALLOC", "malloc").current_dir(&d);
        c
    });
    for (who, o) in [("glibc", &plain), ("preloaded", &ours)] {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains("Result: SUCCESS"),
            "{who}:\n{text}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(&format!("All {} tests OK.", MODULES.len())), "{who}:\n{text}");
    }
    // Timings make the rest of the output differ.
    served("python", &stats);
}

#[test]
fn git_builds_the_same_repository() {
    assert!(have("git"), "git is needed");
    let run = |d: PathBuf| {
        move || {
            let mut c = Command::new("sh");
            c.arg("-ec")
                .arg(
                    "git init -q -b main . && \
                     for i in $(seq 1 300); do printf 'line %s\\n' $(seq 1 $i) > f$i.txt; done && \
                     git add . && git commit -q -m first && \
                     for i in $(seq 1 7 300); do echo changed >> f$i.txt; done && \
                     git commit -q -am second && git gc -q && git fsck --strict && \
                     git log --stat --format='%H %s' && git diff HEAD~1 --stat && git rev-list --all --objects | sort",
                )
                .current_dir(&d)
                .env("GIT_AUTHOR_NAME", "A")
                .env("GIT_AUTHOR_EMAIL", "a@example.invalid")
                .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
                .env("GIT_COMMITTER_NAME", "A")
                .env("GIT_COMMITTER_EMAIL", "a@example.invalid")
                .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", &d);
            c
        }
    };
    let plain = run(scratch("git-plain"))().output().unwrap();
    let stats = env().out.join("git.stats");
    let _ = std::fs::remove_file(&stats);
    let ours = run(scratch("git-ours"))()
        .env("LD_PRELOAD", &env().lib)
        .env("PYMALLOC_PRELOAD_STATS", &stats)
        .output()
        .unwrap();
    same_results("git", &plain, &ours, &std::fs::read_to_string(&stats).unwrap_or_default());
}

#[test]
fn sqlite3_answers_the_same_queries() {
    assert!(have("sqlite3"), "sqlite3 is needed");
    let sql = "
        CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v REAL, blob BLOB);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
        INSERT INTO t(k, v, blob) SELECT 'key' || (i % 997), i * 0.5, zeroblob(i % 300) FROM n;
        CREATE INDEX tk ON t(k);
        SELECT k, count(*), sum(v), sum(length(blob)) FROM t GROUP BY k ORDER BY k LIMIT 20;
        DELETE FROM t WHERE id % 3 = 0;
        VACUUM;
        SELECT count(*), sum(v), group_concat(DISTINCT substr(k, 1, 4)) FROM t;
        PRAGMA integrity_check;";
    let (plain, ours, stats) = both("sqlite3", || {
        let d = scratch("sqlite3");
        let mut c = Command::new("sqlite3");
        c.arg(d.join("db.sqlite")).arg(sql);
        c
    });
    same_results("sqlite3", &plain, &ours, &stats);
}

#[test]
fn gcc_compiles_the_same_object_and_program() {
    let src = env().c_dir.join("c_api.c");
    let build = |tag: &str, preload: bool| -> (Output, Vec<u8>, String) {
        let d = scratch(&format!("gcc-{tag}"));
        let stats = env().out.join(format!("gcc-{tag}.stats"));
        let _ = std::fs::remove_file(&stats);
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g0", "-std=c11", "-c"]).arg(&src).arg("-o").arg(d.join("c_api.o"));
        if preload {
            c.env("LD_PRELOAD", &env().lib).env("PYMALLOC_PRELOAD_STATS", &stats);
        }
        let out = c.output().unwrap();
        (out, std::fs::read(d.join("c_api.o")).unwrap_or_default(), std::fs::read_to_string(&stats).unwrap_or_default())
    };
    let (plain, obj_plain, _) = build("plain", false);
    let (ours, obj_ours, stats) = build("ours", true);
    same_results("gcc", &plain, &ours, &stats);
    assert!(!obj_plain.is_empty());
    assert!(obj_plain == obj_ours, "gcc wrote a different object file under the preload library");
}

#[test]
fn perl_hashes_and_sorts_the_same() {
    assert!(have("perl"), "perl is needed");
    let script = r#"
        my %h; my @a;
        for my $i (1..200000) { $h{"k" . ($i % 9973)} .= chr(97 + $i % 26); push @a, $i * 7 % 1000003 }
        my @s = sort { $a <=> $b } @a;
        my $n = 0; $n += length($h{$_}) for keys %h;
        print scalar(keys %h), " $n $s[0] $s[-1] ", join(",", @s[1000..1005]), "\n";
        delete $h{$_} for grep { /7/ } keys %h;
        print scalar(keys %h), "\n";"#;
    let (plain, ours, stats) = both("perl", || {
        let mut c = Command::new("perl");
        c.arg("-e").arg(script);
        c
    });
    same_results("perl", &plain, &ours, &stats);
}
