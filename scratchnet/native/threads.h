/* The threads every loop here splits its work between: torch's OpenMP pool
 * (the libraries are linked against the libgomp torch has already loaded),
 * each thread given one contiguous block by hand. Included by adam.c and
 * gemm.c; scratchnet/native/__init__.py rebuilds a library when this changes. */
#ifndef SCRATCHNET_THREADS_H
#define SCRATCHNET_THREADS_H

#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD_SLOT(thread, count) \
    (thread = omp_get_thread_num(), count = omp_get_num_threads())
#else /* built without OpenMP: one thread */
#define THREAD_SLOT(thread, count) ((void)threads)
#endif

/* Where block `thread` of `count` starts in [0, total): even shares rounded
 * down to multiples of `align`, the last ending at total. With total ≥ count ·
 * align every block is at least `align` long. */
static inline int64_t block_start(int64_t thread, int64_t count, int64_t total,
                                  int64_t align) {
    if (thread >= count)
        return total;
    return thread * total / count / align * align;
}

#endif
