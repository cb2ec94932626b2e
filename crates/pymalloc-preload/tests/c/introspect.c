/* glibc's questions about the heap: mallinfo2, mallinfo, malloc_trim and
   malloc_stats must describe the heap the program allocates from, with
   glibc's malloc and with the preload library alike.

   Small blocks (16..512 bytes), medium ones (600..8,000) and one of 4 MiB
   are allocated and written; mallinfo2 must count their bytes in use, and
   the 4 MiB block among the blocks of their own (hblks, hblkhd). Everything
   is freed but one small block allocated last (so that glibc's heap cannot
   shrink from its top by itself); the bytes in use must drop back. Then
   malloc_trim(0) must report memory given back and the resident size must
   fall by at least half of what was allocated. malloc_stats then prints
   its report to stderr.

   Prints one line per figure and "introspect: ok", or the failed check
   and exits 1. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SMALL 150000
#define MEDIUM 3000
#define HUGE (4u << 20)

static int failed;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAILED: %s\n", what);
        failed = 1;
    }
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (!f || fscanf(f, "%lu %lu", &size, &res) != 2) {
        printf("FAILED: reading /proc/self/statm\n");
        exit(1);
    }
    fclose(f);
    return res * (size_t)sysconf(_SC_PAGESIZE);
}

static unsigned long long state = 88172645463325252ull;
static size_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (size_t)state;
}

int main(void)
{
    static void *small[SMALL], *medium[MEDIUM];
    size_t bytes = 0;
    struct mallinfo2 before = mallinfo2();

    for (int i = 0; i < SMALL; i++) {
        size_t n = 16 + next() % (512 - 16 + 1);
        small[i] = malloc(n);
        memset(small[i], 1, n);
        bytes += n;
    }
    for (int i = 0; i < MEDIUM; i++) {
        size_t n = 600 + next() % (8000 - 600 + 1);
        medium[i] = malloc(n);
        memset(medium[i], 2, n);
        bytes += n;
    }
    char *huge = malloc(HUGE);
    memset(huge, 3, HUGE);
    void *pin = malloc(64);

    struct mallinfo2 live = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
    size_t used = live.uordblks > before.uordblks ? live.uordblks - before.uordblks : 0;
    printf("requested %zu bytes; in use %zu more\n", bytes, used);
    check(used >= bytes && used <= 2 * bytes, "mallinfo2: uordblks counts the small and medium blocks");
    check(live.hblks >= before.hblks + 1 && live.hblkhd >= before.hblkhd + HUGE,
          "mallinfo2: hblks and hblkhd count the 4 MiB block");
    check(live.arena >= live.uordblks, "mallinfo2: arena holds the blocks in use");
    check((size_t)old.uordblks == live.uordblks && (size_t)old.hblkhd == live.hblkhd,
          "mallinfo: the same figures as mallinfo2's");

    size_t peak = rss_bytes();
    for (int i = 0; i < SMALL; i++)
        free(small[i]);
    for (int i = 0; i < MEDIUM; i++)
        free(medium[i]);
    free(huge);

    struct mallinfo2 freed = mallinfo2();
    size_t still = freed.uordblks > before.uordblks ? freed.uordblks - before.uordblks : 0;
    printf("in use after the frees: %zu more than before\n", still);
    check(still < bytes / 100, "mallinfo2: the freed bytes are no longer in use");
    check(freed.hblkhd < live.hblkhd, "mallinfo2: the 4 MiB block is gone");

    int trimmed = malloc_trim(0);
    size_t after = rss_bytes();
    printf("malloc_trim(0) = %d; resident %zu KiB -> %zu KiB\n", trimmed, peak >> 10, after >> 10);
    check(trimmed == 1, "malloc_trim: memory was given back");
    check(after < peak && peak - after >= bytes / 2, "malloc_trim: the resident size fell by half the bytes freed");

    fflush(stdout);
    malloc_stats();
    free(pin);
    if (failed)
        return 1;
    printf("introspect: ok\n");
    return 0;
}
