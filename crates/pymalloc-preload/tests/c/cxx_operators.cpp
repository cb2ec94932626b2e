// C++'s operators under the preload library: which library defines
// operator new (on stderr), and C++'s rules, which must hold under any
// allocator (on stdout, compared with a run under glibc): every form of new
// and delete, sizes 0 and huge, the new-handler, std::bad_alloc, and nothrow.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <initializer_list>
#include <new>

struct alignas(4096) Page {
    unsigned char bytes[4096];
};

static int handler_calls = 0;
static void handler()
{
    handler_calls++;
    std::set_new_handler(nullptr); // the next failure throws
}

static const char *library_of(void *f)
{
    Dl_info info;
    return dladdr(f, &info) && info.dli_fname ? info.dli_fname : "?";
}

int main()
{
    void *(*plain_new)(std::size_t) = &::operator new;
    void (*plain_delete)(void *) noexcept = &::operator delete;
    std::fprintf(stderr, "operator new: %s\noperator delete: %s\n", library_of(reinterpret_cast<void *>(plain_new)),
                 library_of(reinterpret_cast<void *>(plain_delete)));

    int checks = 0;
    // new of 0 bytes: a unique, non-null pointer each time.
    void *z1 = ::operator new(0), *z2 = ::operator new(0);
    checks += z1 && z2 && z1 != z2;
    ::operator delete(z1);
    ::operator delete(z2, std::size_t{0});
    // Sized, array, aligned, nothrow forms, each with its delete.
    for (std::size_t n : {1, 100, 512, 600, 5000, 40000, 300000, 3000000}) {
        char *a = new char[n];
        a[0] = a[n - 1] = 1;
        delete[] a;
        void *b = ::operator new(n);
        ::operator delete(b, n);
        Page *p = new Page[1 + n / 100000];
        checks += reinterpret_cast<std::uintptr_t>(p) % 4096 == 0;
        delete[] p;
        void *c = ::operator new(n, std::align_val_t{256}, std::nothrow);
        checks += c != nullptr && reinterpret_cast<std::uintptr_t>(c) % 256 == 0;
        ::operator delete(c, std::align_val_t{256}, std::nothrow);
        void *d = ::operator new[](n, std::nothrow);
        checks += d != nullptr;
        ::operator delete[](d, std::nothrow);
    }
    // A request no allocator can serve: the handler runs once, then
    // std::bad_alloc; nothrow forms return null.
    const std::size_t huge = SIZE_MAX / 4;
    std::set_new_handler(handler);
    try {
        void *p = ::operator new(huge);
        std::printf("huge new succeeded?\n");
        ::operator delete(p);
    } catch (const std::bad_alloc &) {
        std::printf("bad_alloc after %d handler call(s)\n", handler_calls);
    }
    try {
        void *p = ::operator new[](huge, std::align_val_t{64});
        std::printf("huge aligned new succeeded?\n");
        ::operator delete[](p, std::align_val_t{64});
    } catch (const std::bad_alloc &) {
        std::printf("aligned: bad_alloc\n");
    }
    std::printf("nothrow: %s %s\n", ::operator new(huge, std::nothrow) ? "block" : "null",
                ::operator new[](huge, std::align_val_t{64}, std::nothrow) ? "block" : "null");
    std::printf("checks %d\n", checks);
    return 0;
}
