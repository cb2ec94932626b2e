/* A block freed twice; NOT_CAUGHT if the allocator lets it pass. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    void *volatile p = malloc(8);
    free(p);
    free(p);
    puts("NOT_CAUGHT");
    return 0;
}
