/* The ceiling of one-stream WaveNet generation on this CPU: only the matrix-vector
 * products of a generation step, hand-vectorised (AVX2 + FMA), nothing else.
 *
 *   gemv_bound L KR G H R S C THREADS HALF STEPS
 *
 * Per step and layer: a (KR x G) product (the fused dilated conv) and an (H x R) product
 * (the residual); then one (L*H x S) product (the deferred skips) and the two head
 * products (S x S, S x C): the shapes of vqaudio/fastgen/kernel.py. Weights are
 * row-major (inputs x outputs) as there. THREADS > 1 splits every product's output
 * columns between threads, with a spin barrier after each product (one stream cannot
 * do with fewer: each layer's input is the previous layer's output). HALF = 1 stores
 * the weights as float16 (F16C conversion on load): half the bytes per step, not exact
 * for float32 models. Prints: steps/s, weight MB, weight GB/s, GFLOP/s.
 * Built and run by benchmarks/gemv_bound.py.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int L, KR, G, H, R, S, C, NT, HALF, STEPS;
static float *w32;
static uint16_t *w16;
static size_t n_weights;
static float *xin, *yout; /* one shared input / output scratch, large enough for any product */
static atomic_int bar_count, bar_gen;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void barrier(void) {
    int g = atomic_load(&bar_gen);
    if (atomic_fetch_add(&bar_count, 1) == NT - 1) {
        atomic_store(&bar_count, 0);
        atomic_fetch_add(&bar_gen, 1);
    } else {
        while (atomic_load_explicit(&bar_gen, memory_order_acquire) == g) _mm_pause();
    }
}

static inline __m256 load8(size_t off) {
    if (HALF) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w16 + off)));
    return _mm256_loadu_ps(w32 + off);
}

/* y[o0:o1] = x[:nin] @ W[:, o0:o1], W at `base` with `nout` columns; o1 - o0 a multiple of 8 */
static void gemv(size_t base, int nin, int nout, int o0, int o1) {
    int o = o0;
    for (; o + 32 <= o1; o += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < nin; i++) {
            __m256 x = _mm256_broadcast_ss(xin + i);
            size_t r = base + (size_t)i * nout + o;
            a0 = _mm256_fmadd_ps(x, load8(r), a0);
            a1 = _mm256_fmadd_ps(x, load8(r + 8), a1);
            a2 = _mm256_fmadd_ps(x, load8(r + 16), a2);
            a3 = _mm256_fmadd_ps(x, load8(r + 24), a3);
        }
        _mm256_storeu_ps(yout + o, a0);
        _mm256_storeu_ps(yout + o + 8, a1);
        _mm256_storeu_ps(yout + o + 16, a2);
        _mm256_storeu_ps(yout + o + 24, a3);
    }
    for (; o + 8 <= o1; o += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int i = 0; i < nin; i++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(xin + i), load8(base + (size_t)i * nout + o), a0);
        _mm256_storeu_ps(yout + o, a0);
    }
}

static void product(size_t *base, int nin, int nout, int id) {
    int per = (nout / 8 + NT - 1) / NT * 8; /* columns per thread, multiple of 8 */
    int o0 = id * per, o1 = o0 + per < nout ? o0 + per : nout;
    if (o0 < o1) gemv(*base, nin, nout, o0, o1);
    *base += (size_t)nin * nout;
    if (NT > 1) barrier();
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int s = 0; s < STEPS; s++) {
        size_t base = 0;
        for (int l = 0; l < L; l++) {
            product(&base, KR, G, id);
            product(&base, H, R, id);
        }
        product(&base, L * H, S, id);
        product(&base, S, S, id);
        product(&base, S, C, id);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: gemv_bound L KR G H R S C THREADS HALF STEPS\n");
        return 2;
    }
    int *p[] = {&L, &KR, &G, &H, &R, &S, &C, &NT, &HALF, &STEPS};
    for (int i = 0; i < 10; i++) *p[i] = atoi(argv[i + 1]);
    if (G % 8 || R % 8 || S % 8 || C % 8 || NT < 1 || NT > 64) {
        fprintf(stderr, "output sizes must be multiples of 8, 1 <= THREADS <= 64\n");
        return 2;
    }
    n_weights = (size_t)L * (KR * G + H * R) + (size_t)L * H * S + S * S + S * C;
    w32 = aligned_alloc(64, (n_weights * 4 + 63) / 64 * 64 + 64);
    w16 = aligned_alloc(64, (n_weights * 2 + 63) / 64 * 64 + 64);
    int big = L * H > KR ? L * H : KR;
    xin = aligned_alloc(64, 4 * (size_t)(big + 64));
    yout = aligned_alloc(64, 4 * (size_t)(big + G + C + 64));
    for (size_t i = 0; i < n_weights; i++) {
        w32[i] = (float)((i * 2654435761u) % 1000) * 1e-6f;
        w16[i] = 0x1400; /* ~1e-3 in float16 */
    }
    for (int i = 0; i < big + 64; i++) xin[i] = 1e-3f;
    pthread_t th[64];
    double t = now();
    for (int i = 1; i < NT; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    worker((void *)(intptr_t)0);
    for (int i = 1; i < NT; i++) pthread_join(th[i], NULL);
    double dt = now() - t;
    double bytes = (double)n_weights * (HALF ? 2 : 4);
    printf("%.1f %.3f %.2f %.2f\n", STEPS / dt, bytes / 1e6, bytes * STEPS / dt / 1e9,
           2.0 * n_weights * STEPS / dt / 1e9);
    return yout[0] > 1e30f; /* keep the products alive */
}
