// C++'s allocation under the preload library: new and delete (plain, array,
// aligned), and the standard containers. Prints a digest of what it built.
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

struct alignas(64) Line {
    unsigned char bytes[64];
};

int main()
{
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<int, std::string> u;
    for (int i = 0; i < 200000; i++) {
        std::string k = "key-" + std::to_string(i % 5000);
        m[k].push_back(i);
        u[i % 7919] += static_cast<char>('a' + i % 26);
    }
    unsigned long digest = 0;
    for (auto &kv : m)
        for (int v : kv.second) digest = digest * 31 + static_cast<unsigned long>(v) + kv.first.size();
    for (auto &kv : u) digest ^= kv.second.size() * static_cast<unsigned long>(kv.first);
    std::vector<std::unique_ptr<Line>> lines;
    for (int i = 0; i < 10000; i++) {
        lines.emplace_back(new Line());
        if (reinterpret_cast<std::uintptr_t>(lines.back().get()) % 64 != 0) {
            std::puts("misaligned");
            return 1;
        }
    }
    int *arr = new int[1000]();
    for (int i = 0; i < 1000; i++) digest += static_cast<unsigned long>(arr[i] + i);
    delete[] arr;
    std::printf("keys %zu buckets %zu lines %zu digest %lu\n", m.size(), u.size(), lines.size(), digest);
    return 0;
}
