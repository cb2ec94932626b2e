/* The statistics extras: PyMalloc_GetStats (geometry, per-class counts that
   follow allocations, the accounting identity, the versioned struct_size
   rule) and PyMalloc_PrintStats (the table agrees with the struct; errors
   for NULL and unwritable streams). Prints the table after "=== table" for
   the harness, which compares its layout with CPython 3.11's. */
#include "check.h"

#include <pymalloc.h>

static PyMalloc_Stats get(void)
{
    PyMalloc_Stats s;
    memset(&s, 0xEE, sizeof s);
    s.struct_size = sizeof s;
    CHECK(PyMalloc_GetStats(&s) == PYMALLOC_OK);
    CHECK(s.struct_size == sizeof s);
    return s;
}

static void geometry(const PyMalloc_Stats *s)
{
    CHECK(s->version == PYMALLOC_STATS_VERSION);
    CHECK(s->nclasses == 32 && s->alignment == 16 && s->small_request_threshold == 512);
    CHECK(s->pool_size == 16384 && s->pool_overhead == 48 && s->arena_size == 1048576);
    for (unsigned i = 0; i < PYMALLOC_MAX_SIZE_CLASSES; i++) {
        if (i < s->nclasses) {
            CHECK(s->classes[i].size == 16 * (i + 1));
        } else {
            const PyMalloc_ClassStats *c = &s->classes[i];
            CHECK(c->size == 0 && c->pools == 0 && c->blocks_in_use == 0 && c->avail_blocks == 0);
        }
    }
}

static void identities(const PyMalloc_Stats *s)
{
    size_t blocks = 0, allocated = 0, available = 0, headers = 0;
    for (unsigned i = 0; i < s->nclasses; i++) {
        const PyMalloc_ClassStats *c = &s->classes[i];
        blocks += c->blocks_in_use;
        allocated += c->blocks_in_use * c->size;
        available += c->avail_blocks * c->size;
        headers += c->pools * s->pool_overhead;
        if (c->pools) {
            size_t per_pool = (s->pool_size - s->pool_overhead) / c->size;
            CHECK(c->blocks_in_use + c->avail_blocks == c->pools * per_pool);
        }
    }
    CHECK(blocks == s->blocks_in_use);
    CHECK(allocated == s->allocated_bytes && available == s->available_bytes);
    CHECK(headers == s->pool_header_bytes);
    CHECK(s->arena_bytes == s->arenas_current * s->arena_size);
    CHECK(s->unused_pool_bytes == s->unused_pools * s->pool_size);
    CHECK(s->allocated_bytes + s->available_bytes + s->unused_pool_bytes + s->pool_header_bytes +
              s->quantization_bytes + s->arena_alignment_bytes ==
          s->arena_bytes);
    CHECK(s->allocated_blocks == (Py_ssize_t)s->blocks_in_use + s->raw_allocated_blocks);
    CHECK(s->arenas_current + s->arenas_reclaimed == s->arenas_allocated_total);
    CHECK(s->arenas_highwater >= s->arenas_current);
    CHECK(s->map_root_bytes > 0 && s->map_mid_node_bytes > 0 && s->map_bot_node_bytes > 0);
    /* The radix map holds only arenas outside the reserved region (none
     * when the region could be had): nodes, if any, come in a chain. */
    CHECK(s->map_bot_nodes >= s->map_mid_nodes && (s->map_bot_nodes == 0) == (s->map_mid_nodes == 0));
}

/* CPython's thousands separators. */
static const char *commas(size_t v, char buf[32])
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", v), j = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[j++] = ',';
        buf[j++] = digits[i];
    }
    buf[j] = '\0';
    return buf;
}

/* The line CPython's printone() writes: label padded to 35, '=', value in 21. */
static int has_line(const char *text, const char *label, size_t value)
{
    char line[128], num[32];
    snprintf(line, sizeof line, "\n%-35s=%21s\n", label, commas(value, num));
    return strstr(text, line) != NULL;
}

static char *print_to_string(void)
{
    FILE *f = tmpfile();
    CHECK(f != NULL);
    CHECK(PyMalloc_PrintStats(f) == PYMALLOC_OK);
    long len = ftell(f);
    CHECK(len > 0);
    rewind(f);
    char *text = calloc((size_t)len + 1, 1);
    CHECK(text != NULL && fread(text, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    return text;
}

int main(void)
{
    report_linkage((void *)(uintptr_t)PyMalloc_GetStats);
    CHECK(PyMalloc_SetupByName("pymalloc") == PYMALLOC_OK);
    PyMalloc_Stats s0 = get();
    geometry(&s0);
    identities(&s0);

    /* Blocks show up in their class; raw blocks in raw_allocated_blocks. */
    enum { N = 1000, BIG = 10 };
    void *obj[N], *mem[N], *big[BIG];
    for (int i = 0; i < N; i++) obj[i] = PyObject_Malloc(100); /* class 6: 112 bytes */
    for (int i = 0; i < N; i++) mem[i] = PyMem_Calloc(1, 17);  /* class 1: 32 bytes */
    for (int i = 0; i < BIG; i++) big[i] = PyMem_Malloc(10000);
    PyMalloc_Stats s1 = get();
    geometry(&s1);
    identities(&s1);
    CHECK(s1.classes[6].blocks_in_use == s0.classes[6].blocks_in_use + N);
    CHECK(s1.classes[1].blocks_in_use == s0.classes[1].blocks_in_use + N);
    CHECK(s1.blocks_in_use == s0.blocks_in_use + 2 * N);
    CHECK(s1.raw_allocated_blocks == s0.raw_allocated_blocks + BIG);
    CHECK(s1.allocated_blocks == s0.allocated_blocks + 2 * N + BIG);
    CHECK(s1.classes[6].pools >= (N + 144) / 145); /* 145 112-byte blocks per pool */
    CHECK(s1.arenas_current >= 1);
    /* RAW is not pymalloc's: not counted */
    void *raw = PyMem_RawMalloc(100);
    CHECK(get().allocated_blocks == s1.allocated_blocks);
    PyMem_RawFree(raw);

    /* The table agrees with the struct (nothing allocates in between). */
    PyMalloc_Stats s = get();
    char *text = print_to_string();
    char line[128];
    const char *head = "Small block threshold = 512, in 32 size classes.\n\n";
    CHECK(strncmp(text, head, strlen(head)) == 0);
    CHECK(strstr(text, "class   size   num pools   blocks in use  avail blocks\n"
                       "-----   ----   ---------   -------------  ------------\n") != NULL);
    for (unsigned i = 0; i < s.nclasses; i++) {
        const PyMalloc_ClassStats *c = &s.classes[i];
        snprintf(line, sizeof line, "\n%5u %6zu %11zu %15zu %13zu\n", i, c->size, c->pools,
                 c->blocks_in_use, c->avail_blocks);
        CHECKF((strstr(text, line) != NULL) == (c->pools != 0), "class %u", i);
    }
    CHECK(has_line(text, "# arenas allocated total", s.arenas_allocated_total));
    CHECK(has_line(text, "# arenas reclaimed", s.arenas_reclaimed));
    CHECK(has_line(text, "# arenas highwater mark", s.arenas_highwater));
    CHECK(has_line(text, "# arenas allocated current", s.arenas_current));
    snprintf(line, sizeof line, "%zu arenas * %zu bytes/arena", s.arenas_current, s.arena_size);
    CHECK(has_line(text, line, s.arena_bytes));
    CHECK(has_line(text, "# bytes in allocated blocks", s.allocated_bytes));
    CHECK(has_line(text, "# bytes in available blocks", s.available_bytes));
    snprintf(line, sizeof line, "%zu unused pools * %zu bytes", s.unused_pools, s.pool_size);
    CHECK(has_line(text, line, s.unused_pool_bytes));
    CHECK(has_line(text, "# bytes lost to pool headers", s.pool_header_bytes));
    CHECK(has_line(text, "# bytes lost to quantization", s.quantization_bytes));
    CHECK(has_line(text, "# bytes lost to arena alignment", s.arena_alignment_bytes));
    CHECK(has_line(text, "Total", s.arena_bytes));
    CHECK(has_line(text, "# arena map mid nodes", s.map_mid_nodes));
    CHECK(has_line(text, "# arena map bot nodes", s.map_bot_nodes));
    CHECK(has_line(text, "# bytes lost to arena map root", s.map_root_bytes));
    CHECK(has_line(text, "# bytes lost to arena map mid", s.map_mid_nodes * s.map_mid_node_bytes));
    CHECK(has_line(text, "# bytes lost to arena map bot", s.map_bot_nodes * s.map_bot_node_bytes));
    printf("=== table\n%s=== end\n", text);
    free(text);

    for (int i = 0; i < N; i++) PyObject_Free(obj[i]);
    for (int i = 0; i < N; i++) PyMem_Free(mem[i]);
    for (int i = 0; i < BIG; i++) PyMem_Free(big[i]);
    PyMalloc_Stats s2 = get();
    identities(&s2);
    CHECK(s2.blocks_in_use == s0.blocks_in_use);
    CHECK(s2.raw_allocated_blocks == s0.raw_allocated_blocks);
    CHECK(s2.arenas_allocated_total >= s1.arenas_allocated_total);

    /* Errors. */
    CHECK(PyMalloc_GetStats(NULL) == PYMALLOC_ERR_INVALID_ARGUMENT);
    PyMalloc_Stats small;
    memset(&small, 0x77, sizeof small);
    small.struct_size = sizeof small - 1;
    CHECK(PyMalloc_GetStats(&small) == PYMALLOC_ERR_INVALID_ARGUMENT);
    small.struct_size = 0;
    CHECK(PyMalloc_GetStats(&small) == PYMALLOC_ERR_INVALID_ARGUMENT);
    const unsigned char *raw_bytes = (const unsigned char *)&small;
    for (size_t i = sizeof(size_t); i < sizeof small; i++) CHECK(raw_bytes[i] == 0x77);

    /* A caller compiled with a later, larger struct: the library fills the
       part it knows and leaves the rest alone. */
    struct {
        PyMalloc_Stats v1;
        size_t later_fields[8];
    } future;
    memset(&future, 0x33, sizeof future);
    future.v1.struct_size = sizeof future;
    CHECK(PyMalloc_GetStats(&future.v1) == PYMALLOC_OK);
    CHECK(future.v1.struct_size == sizeof future && future.v1.version == PYMALLOC_STATS_VERSION);
    geometry(&future.v1);
    identities(&future.v1);
    for (int i = 0; i < 8; i++) CHECK(future.later_fields[i] == (size_t)0x3333333333333333ull);

    CHECK(PyMalloc_PrintStats(NULL) == PYMALLOC_ERR_INVALID_ARGUMENT);
    FILE *ro = fopen("/dev/null", "r");
    CHECK(ro != NULL);
    CHECK(PyMalloc_PrintStats(ro) == PYMALLOC_ERR_IO);
    fclose(ro);

    report_done("stats");
    return 0;
}
