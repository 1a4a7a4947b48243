/* trainplan's CPU peak-memory counter: the CPU's counterpart of torch.cuda.max_memory_allocated.
 *
 * Preloaded (LD_PRELOAD) into a CPU trial's processes by runners/_mempeak.py. It forwards every
 * allocation to glibc's own allocator (the __libc_* entry points, so no dlsym bootstrap is needed)
 * and keeps the bytes in use (malloc_usable_size of each live block) and their peak. The rank
 * reads and resets the peak through ctypes (docs/protocol.md, "Device and peak memory").
 * Counts what is allocated, whether or not its pages were ever written, as the GPU's allocator
 * does; the resident set (VmHWM) would instead count pages written and glibc's retained free memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic long long in_use, peak;

static void *counted(void *p) {
    if (p) {
        long long size = (long long)malloc_usable_size(p);
        long long now = atomic_fetch_add_explicit(&in_use, size, memory_order_relaxed) + size;
        long long seen = atomic_load_explicit(&peak, memory_order_relaxed);
        while (now > seen && !atomic_compare_exchange_weak_explicit(&peak, &seen, now, memory_order_relaxed,
                                                                    memory_order_relaxed)) {
        }
    }
    return p;
}

static void released(void *p) {
    if (p) atomic_fetch_sub_explicit(&in_use, (long long)malloc_usable_size(p), memory_order_relaxed);
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t k, size_t n) { return counted(__libc_calloc(k, n)); }
void free(void *p) { released(p); __libc_free(p); }

void *realloc(void *p, size_t n) {
    size_t before = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q || (p && n == 0)) { /* moved, resized or freed; on failure the old block stays */
        atomic_fetch_sub_explicit(&in_use, (long long)before, memory_order_relaxed);
        counted(q);
    }
    return q;
}

void *memalign(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *aligned_alloc(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *valloc(size_t n) { return counted(__libc_memalign((size_t)sysconf(_SC_PAGESIZE), n)); }

int posix_memalign(void **out, size_t align, size_t n) {
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = counted(p);
    return 0;
}

long long trainplan_bytes_in_use(void) { return atomic_load(&in_use); }
long long trainplan_peak_bytes(void) { return atomic_load(&peak); }
void trainplan_reset_peak(void) { atomic_store(&peak, atomic_load(&in_use)); }
