/* Large blocks, touched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(64 + i % 50) * 4096;
        char *p = malloc(n);
        if (!p) return 1;
        memset(p, i, n);
        free(p);
    }
    puts("done");
    return 0;
}
