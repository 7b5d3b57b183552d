"""The fixed C text of a generated CUDA program: the runtime (tensor files, the
arena, `gn_gemm` for cuBLAS and its reference twin for the CPU build) and `main`
(`train`, `infer`, `run`). targets/cuda.py prints the model-specific part around it."""

RUNTIME = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <time.h>
#include <errno.h>
#include <limits.h>

#ifdef GN_CPU
/* ---- CPU build: kernels are host loops, gn_gemm a reference GEMM ---- */
#define __global__ static
#define GN_FOR_EACH(i, n) for (long i = 0; i < (n); i++)
#define GN_LAUNCH(kernel, n, ...) kernel((n), __VA_ARGS__)
static void* gn_malloc(size_t bytes) { return calloc(1, bytes); }
static void gn_free(void* p) { free(p); }
static void gn_to_device(void* dst, const void* src, size_t bytes) { if (bytes) memcpy(dst, src, bytes); }
static void gn_to_host(void* dst, const void* src, size_t bytes) { if (bytes) memcpy(dst, src, bytes); }
static void gn_copy(void* dst, const void* src, size_t bytes) { if (bytes) memmove(dst, src, bytes); }
static void gn_zero(void* dst, size_t bytes) { if (bytes) memset(dst, 0, bytes); }
static void gn_sync(void) {}
static int gn_device_init(void) { return 1; }
/* C = op(A) op(B), column-major, as cublas<t>gemmStridedBatched with alpha 1, beta 0:
   op(A) is M x K (A is lda-strided, transposed when ta), op(B) is K x N, C is M x N. */
template <typename T>
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const T* A, long lda, long sA,
                    const T* Bm, long ldb, long sB, T* C, long ldc, long sC, long batch) {
    for (long b = 0; b < batch; b++) {
        const T* a = A + b * sA; const T* bb = Bm + b * sB; T* c = C + b * sC;
        for (long j = 0; j < N; j++)
            for (long i = 0; i < M; i++) {
                T acc = 0;
                for (long l = 0; l < K; l++)
                    acc += (ta ? a[l + i * lda] : a[i + l * lda]) * (tb ? bb[j + l * ldb] : bb[l + j * ldb]);
                c[i + j * ldc] = acc;
            }
    }
}
#else
/* ---- GPU build: CUDA kernels, cuBLAS ---- */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#define GN_FOR_EACH(i, n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); \
                                  i += (long)gridDim.x * blockDim.x)
static cublasHandle_t gn_cublas;
static void gn_fail(const char* what, const char* detail) {
    fprintf(stderr, "model: CUDA error in %s: %s\n", what, detail);
    exit(5);
}
#define GN_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) gn_fail(#call, cudaGetErrorString(e_)); } while (0)
#define GN_CUBLAS(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) gn_fail(#call, "cuBLAS status"); } while (0)
#define GN_THREADS 256
static int gn_blocks(long n) { long b = (n + GN_THREADS - 1) / GN_THREADS; return (int)(b < 65535 ? (b > 0 ? b : 1) : 65535); }
#define GN_LAUNCH(kernel, n, ...) do { if ((n) > 0) { kernel<<<gn_blocks(n), GN_THREADS>>>((n), __VA_ARGS__); \
                                        GN_CUDA(cudaGetLastError()); } } while (0)
static void* gn_malloc(size_t bytes) { void* p = NULL; if (cudaMalloc(&p, bytes) != cudaSuccess) return NULL;
                                       GN_CUDA(cudaMemset(p, 0, bytes)); return p; }
static void gn_free(void* p) { cudaFree(p); }
static void gn_to_device(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice)); }
static void gn_to_host(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost)); }
static void gn_copy(void* dst, const void* src, size_t bytes) { if (bytes) GN_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); }
static void gn_zero(void* dst, size_t bytes) { if (bytes) GN_CUDA(cudaMemsetAsync(dst, 0, bytes)); }
static void gn_sync(void) { GN_CUDA(cudaDeviceSynchronize()); }
static int gn_device_init(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return 0;
    if (cublasCreate(&gn_cublas) != CUBLAS_STATUS_SUCCESS) return 0;
    return 1;
}
/* row-major data, column-major cuBLAS: the caller passes B^T A^T (see the generator) */
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const double* A, long lda, long sA,
                    const double* Bm, long ldb, long sB, double* C, long ldc, long sC, long batch) {
    const double one = 1.0, zero = 0.0;
    GN_CUBLAS(cublasDgemmStridedBatched(gn_cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
        (int)M, (int)N, (int)K, &one, A, (int)lda, sA, Bm, (int)ldb, sB, &zero, C, (int)ldc, sC, (int)batch));
}
static void gn_gemm(bool ta, bool tb, long M, long N, long K, const float* A, long lda, long sA,
                    const float* Bm, long ldb, long sB, float* C, long ldc, long sC, long batch) {
    const float one = 1.0f, zero = 0.0f;
    GN_CUBLAS(cublasSgemmStridedBatched(gn_cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
        (int)M, (int)N, (int)K, &one, A, (int)lda, sA, Bm, (int)ldb, sB, &zero, C, (int)ldc, sC, (int)batch));
}
#endif

/* an index out of range (take, gathering from indices fed at run time): the kernel
   records the first one (its node, as a host string pointer it never reads; the
   index; the axis size) and reads 0; the host checks after each step (gn_faults_ok)
   and exits with code 6, as NumPy raises IndexError */
typedef struct { const char* site; long long index; long long size; int hit; } gn_fault_t;
static int gn_index_checks = 0;  /* set by a step that ran a checked gather */
#ifdef GN_CPU
static gn_fault_t gn_fault;
static inline void gn_index_fault(const char* site, long long index, long long size) {
    if (!gn_fault.hit) { gn_fault.site = site; gn_fault.index = index; gn_fault.size = size; gn_fault.hit = 1; }
}
static void gn_fault_read(gn_fault_t* f) { *f = gn_fault; }
#else
__device__ gn_fault_t gn_fault;
__host__ __device__ inline void gn_index_fault(const char* site, long long index, long long size) {
#ifdef __CUDA_ARCH__
    if (atomicCAS(&gn_fault.hit, 0, 1) == 0) { gn_fault.site = site; gn_fault.index = index; gn_fault.size = size; }
#else
    (void)site; (void)index; (void)size;
#endif
}
static void gn_fault_read(gn_fault_t* f) { GN_CUDA(cudaMemcpyFromSymbol(f, gn_fault, sizeof *f)); }
#endif

template <typename T>
static void gn_set_scalar(T* dst, T value) { gn_to_device(dst, &value, sizeof(T)); }
template <typename T>
static void gn_fill_ones(T* dst, long n) {  /* once per allocation: through the host */
    T* host = (T*)malloc(sizeof(T) * (n > 0 ? n : 1));
    if (!host) { fprintf(stderr, "model: out of host memory\n"); exit(5); }
    for (long k = 0; k < n; k++) host[k] = (T)1;
    gn_to_device(dst, host, sizeof(T) * n);
    free(host);
}
static size_t gn_align(size_t off) { return (off + 255) & ~(size_t)255; }

/* tensor files (graphnn/cudafile.py): the header, then raw tensors in declared order */
enum { GN_FLOAT32 = 1, GN_FLOAT64 = 2, GN_INT64 = 3, GN_INT32 = 4, GN_BOOL = 5 };
typedef struct { const char* name; int dtype; int ndim; long dims[8]; void** ptr; } gn_tensor;
static size_t gn_itemsize(int d) { return d == GN_FLOAT64 || d == GN_INT64 ? 8 : d == GN_BOOL ? 1 : 4; }
"""


MAIN = r"""/* ---- files ---- */
#define GN_MAGIC "GNTENSOR"
#define GN_VERSION 1u
#define GN_HEADER 48
#define GN_MAX_BATCH (1L << 31)
enum { GN_KIND_PARAMS = 1, GN_KIND_DATA = 2, GN_KIND_OUTPUTS = 3 };

static uint32_t gn_u32(const unsigned char* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }
static uint64_t gn_u64(const unsigned char* p) { return gn_u32(p) | ((uint64_t)gn_u32(p + 4) << 32); }
static void gn_put32(unsigned char* p, uint32_t v) { for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k)); }
static void gn_put64(unsigned char* p, uint64_t v) { for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k)); }

static int gn_has_batch(const gn_tensor* t, int n) {
    for (int k = 0; k < n; k++) for (int d = 0; d < t[k].ndim; d++) if (t[k].dims[d] < 0) return 1;
    return 0;
}

/* bytes of tensor t for batch B, or 0 with *ok = 0 on overflow */
static size_t gn_bytes(const gn_tensor* t, long B, int* ok) {
    size_t n = gn_itemsize(t->dtype);
    for (int d = 0; d < t->ndim; d++) {
        size_t dim = (size_t)(t->dims[d] < 0 ? B : t->dims[d]);
        if (dim && n > SIZE_MAX / dim) { *ok = 0; return 0; }
        n *= dim;
    }
    return n;
}

/* read and check the header of a tensor file; returns the batch size (0: none) or -1 */
static long gn_open(const char* path, int kind, const char* hash, int count, int batched, FILE** out, long* size) {
    FILE* f = fopen(path, "rb");
    unsigned char h[GN_HEADER];
    if (!f) { fprintf(stderr, "model: cannot open %s\n", path); return -1; }
    if (fseek(f, 0, SEEK_END) != 0 || (*size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "model: %s: cannot find the file's size\n", path); fclose(f); return -1;
    }
    if (*size < GN_HEADER || fread(h, 1, GN_HEADER, f) != GN_HEADER) {
        fprintf(stderr, "model: %s: truncated header (%ld bytes, a header is %d)\n", path, *size, GN_HEADER);
        fclose(f); return -1;
    }
    if (memcmp(h, GN_MAGIC, 8) != 0) { fprintf(stderr, "model: %s: not a graphnn tensor file (bad magic)\n", path); fclose(f); return -1; }
    if (gn_u32(h + 8) != GN_VERSION) { fprintf(stderr, "model: %s: version %u, this program reads %u\n", path, gn_u32(h + 8), GN_VERSION); fclose(f); return -1; }
    if (gn_u32(h + 12) != (uint32_t)GN_DTYPE) { fprintf(stderr, "model: %s: dtype code %u, this program's is %d\n", path, gn_u32(h + 12), GN_DTYPE); fclose(f); return -1; }
    if (gn_u32(h + 16) != (uint32_t)count) { fprintf(stderr, "model: %s: %u tensors, this program declares %d\n", path, gn_u32(h + 16), count); fclose(f); return -1; }
    if (gn_u32(h + 20) != (uint32_t)kind) { fprintf(stderr, "model: %s: file kind %u, expected %d (1 params, 2 data, 3 outputs)\n", path, gn_u32(h + 20), kind); fclose(f); return -1; }
    if (memcmp(h + 24, hash, 16) != 0) { fprintf(stderr, "model: %s: declaration hash %.16s differs from this program's %s (other names, shapes or dtypes)\n", path, (const char*)(h + 24), hash); fclose(f); return -1; }
    uint64_t B = gn_u64(h + 40);
    if (batched ? (B < 1 || B > (uint64_t)GN_MAX_BATCH) : (B != 0)) {
        fprintf(stderr, "model: %s: batch size %llu is out of range\n", path, (unsigned long long)B); fclose(f); return -1;
    }
    *out = f;
    return (long)B;
}

/* open a tensor file and check its header and exact size (before anything is
   allocated for it); returns its batch size (0: none) or -1, the file at the tensors */
static long gn_check(const char* path, int kind, const char* hash, gn_tensor* t, int count, FILE** out) {
    FILE* f = NULL; long size = 0;
    long B = gn_open(path, kind, hash, count, gn_has_batch(t, count), &f, &size);
    if (B < 0) return -1;
    size_t total = GN_HEADER; int ok = 1;
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        if (!ok || total > SIZE_MAX - b) { fprintf(stderr, "model: %s: tensor sizes overflow\n", path); fclose(f); return -1; }
        total += b;
    }
    if ((size_t)size != total) {
        fprintf(stderr, "model: %s: %ld bytes, the declared tensors need %zu (wrong sizes or truncated)\n", path, size, total);
        fclose(f); return -1;
    }
    *out = f;
    return B;
}

/* read the tensors of a checked file into host memory: host[k] (malloc'd), for batch B_expected */
static int gn_load(const char* path, int kind, const char* hash, gn_tensor* t, int count, long B_expected, void** host) {
    FILE* f = NULL; int ok = 1;
    long B = gn_check(path, kind, hash, t, count, &f);
    if (B < 0) return 0;
    if (gn_has_batch(t, count) && B != B_expected) { fprintf(stderr, "model: %s: batch size %ld, expected %ld\n", path, B, B_expected); fclose(f); return 0; }
    for (int k = 0; k < count; k++) host[k] = NULL;
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        host[k] = malloc(b ? b : 1);
        if (!host[k] || fread(host[k], 1, b, f) != b) {
            fprintf(stderr, "model: %s: cannot read tensor %s\n", path, t[k].name);
            for (int m = 0; m <= k; m++) { free(host[m]); host[m] = NULL; }
            fclose(f); return 0;
        }
    }
    fclose(f);
    return 1;
}

/* read the tensors of a checked file into their buffers */
static int gn_read(const char* path, int kind, const char* hash, gn_tensor* t, int count, long B_expected) {
    void** host = (void**)calloc(count > 0 ? count : 1, sizeof(void*));
    int ok = 1;
    if (!host) { fprintf(stderr, "model: out of host memory\n"); return 0; }
    if (!gn_load(path, kind, hash, t, count, B_expected, host)) { free(host); return 0; }
    for (int k = 0; k < count; k++) {
        gn_to_device(*t[k].ptr, host[k], gn_bytes(&t[k], B_expected, &ok));
        free(host[k]);
    }
    free(host);
    return 1;
}

static int gn_write(const char* path, int kind, const char* hash, gn_tensor* t, int count, long B) {
    unsigned char h[GN_HEADER];
    memset(h, 0, sizeof h);
    memcpy(h, GN_MAGIC, 8);
    gn_put32(h + 8, GN_VERSION); gn_put32(h + 12, (uint32_t)GN_DTYPE); gn_put32(h + 16, (uint32_t)count);
    gn_put32(h + 20, (uint32_t)kind); memcpy(h + 24, hash, 16);
    gn_put64(h + 40, gn_has_batch(t, count) ? (uint64_t)B : 0);
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(h, 1, GN_HEADER, f) != GN_HEADER) { fprintf(stderr, "model: cannot write %s\n", path); if (f) fclose(f); return 0; }
    int ok = 1;
    for (int k = 0; k < count; k++) {
        size_t b = gn_bytes(&t[k], B, &ok);
        void* host = malloc(b ? b : 1);
        if (!host) { fclose(f); return 0; }
        gn_to_host(host, *t[k].ptr, b);
        if (fwrite(host, 1, b, f) != b) { fprintf(stderr, "model: cannot write %s\n", path); free(host); fclose(f); return 0; }
        free(host);
    }
    return fclose(f) == 0;
}

static double gn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- mini-batches: train --batch N [--shuffle SEED] [--drop-last] ----
   Step s takes rows [j*N, (j+1)*N) of the epoch's order (j: its position in the epoch),
   and the last step of an epoch the R mod N rows left, a smaller batch (gn_batch sets
   the batch size's values for it): ceil(R / N) steps per epoch, as graphnn's
   Trainer.fit; with --drop-last those rows are left out of the epoch, R / N steps of
   full batches (Trainer.fit(drop_last=True)). The order is
   0..R-1, or with --shuffle a fresh permutation per epoch: Fisher-Yates over the
   identity driven by splitmix64 seeded with SEED (cuda_build.batch_rows is its
   Python twin; NumPy's generator, which Trainer.fit uses, is another stream). */
static uint64_t gn_rng_next(uint64_t* state) {  /* splitmix64 (Steele, Lea, Flood 2014) */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static void gn_permute(long* order, long n, uint64_t* state) {
    for (long k = 0; k < n; k++) order[k] = k;
    for (long k = n - 1; k > 0; k--) {
        long j = (long)(gn_rng_next(state) % (uint64_t)(k + 1));
        long t = order[k]; order[k] = order[j]; order[j] = t;
    }
}
static void** gn_data_host = NULL;  /* the data file's tensors (train --batch): host copies */
static char* gn_stage = NULL;       /* one batch of one input, gathered on the host */
static long* gn_order = NULL;       /* the epoch's row order (--shuffle) */
static void gn_batches_free(void) {
    if (gn_data_host) for (int k = 0; k < GN_N_INPUTS; k++) free(gn_data_host[k]);
    free(gn_data_host); free(gn_stage); free(gn_order);
    gn_data_host = NULL; gn_stage = NULL; gn_order = NULL;
}
/* the only batch axis of input k (-1: none), and the bytes before (pre, in rows) and after it */
static int gn_batch_axis(const gn_tensor* t, size_t* pre, size_t* post) {
    int ax = -1;
    *pre = 1; *post = gn_itemsize(t->dtype);
    for (int d = 0; d < t->ndim; d++) if (t->dims[d] < 0) ax = d;
    for (int d = 0; d < t->ndim; d++) if (d != ax) { if (ax < 0 || d > ax) *post *= (size_t)t->dims[d]; else *pre *= (size_t)t->dims[d]; }
    return ax;
}
/* rows rows[0..N) (NULL: first..first+N) of the host data into the inputs' buffers */
static void gn_upload_batch(long R, long N, const long* rows, long first) {
    for (int k = 0; k < GN_N_INPUTS; k++) {
        size_t pre, post;
        if (gn_batch_axis(&GN_INPUTS[k], &pre, &post) < 0) continue;  /* uploaded once */
        const char* src = (const char*)gn_data_host[k];
        if (!rows && pre == 1) { gn_to_device(*GN_INPUTS[k].ptr, src + (size_t)first * post, (size_t)N * post); continue; }
        for (size_t p = 0; p < pre; p++)
            for (long r = 0; r < N; r++)
                memcpy(gn_stage + (p * (size_t)N + (size_t)r) * post,
                       src + (p * (size_t)R + (size_t)(rows ? rows[r] : first + r)) * post, post);
        gn_to_device(*GN_INPUTS[k].ptr, gn_stage, pre * (size_t)N * post);
    }
}

/* after a step: 1, or 0 with one line on stderr when a gather met an index out of range */
static int gn_faults_ok(long step) {
    if (!gn_index_checks) return 1;
    gn_fault_t f;
    gn_fault_read(&f);
    if (!f.hit) return 1;
    fprintf(stderr, "model: node %s: index %lld is out of range for an axis of size %lld", f.site, f.index, f.size);
    if (step > 0) fprintf(stderr, " (step %ld)", step);
    fprintf(stderr, "; nothing written\n");
    return 0;
}

static int gn_usage(void) {
    fprintf(stderr,
        "usage: model train --data D.bin --steps N [--batch M [--shuffle SEED] [--drop-last]] [--lr X] [--params P.bin] --out P2.bin\n"
        "       model infer --data X.bin [--params P.bin] --out Y.bin\n"
        "       model run   --data X.bin [--params P.bin] --out Y.bin [--params-out P2.bin]\n"
        "train --batch M: each step takes the next M rows of the data (an epoch of R rows: R / M\n"
        "  steps and a last, smaller one of the R mod M rows left; --drop-last leaves those rows\n"
        "  out); --shuffle SEED: a new order of the rows every epoch (Fisher-Yates, splitmix64\n"
        "  seeded with SEED)\n"
        "exit codes: 0 ok, 2 usage, 3 no CUDA device, 4 bad file, 5 CUDA error, 6 index out of range\n");
    return 2;
}

int main(int argc, char** argv) {
    if (argc < 2) return gn_usage();
    const char* mode = argv[1];
    const char *data = NULL, *params = NULL, *out = NULL, *params_out = NULL, *lr = NULL;
    long steps = 1, batch = 0;
    int shuffle = 0, drop_last = 0;
    uint64_t seed = 0;
    for (int k = 2; k < argc; k++) {
        if (!strcmp(argv[k], "--drop-last")) { drop_last = 1; continue; }
        if (k + 1 >= argc) return gn_usage();
        const char* v = argv[++k];
        char* e;
        if (!strcmp(argv[k - 1], "--data")) data = v;
        else if (!strcmp(argv[k - 1], "--params")) params = v;
        else if (!strcmp(argv[k - 1], "--out")) out = v;
        else if (!strcmp(argv[k - 1], "--params-out")) params_out = v;
        else if (!strcmp(argv[k - 1], "--lr")) lr = v;
        else if (!strcmp(argv[k - 1], "--steps")) { steps = strtol(v, &e, 10); if (*v < '0' || *v > '9' || *e || steps < 0 || steps == LONG_MAX) return gn_usage(); }
        else if (!strcmp(argv[k - 1], "--batch")) { batch = strtol(v, &e, 10); if (*v < '0' || *v > '9' || *e || batch < 1 || batch > GN_MAX_BATCH) return gn_usage(); }
        else if (!strcmp(argv[k - 1], "--shuffle")) {
            errno = 0;
            unsigned long long x = strtoull(v, &e, 10);
            if (*v < '0' || *v > '9' || *e || errno == ERANGE) return gn_usage();
            seed = (uint64_t)x; shuffle = 1;
        }
        else return gn_usage();
    }
    int train = !strcmp(mode, "train"), infer = !strcmp(mode, "infer"), run = !strcmp(mode, "run");
    if (!(train || infer || run) || !out) return gn_usage();
    if (train && !GN_HAS_UPDATES) { fprintf(stderr, "model: this program has no parameter updates (a forward-only export): use infer\n"); return 2; }
    if (lr && GN_LR_PARAM < 0) { fprintf(stderr, "model: --lr: this program has no optim/lr parameter\n"); return 2; }
    int batched = batch > 0 || shuffle || drop_last;  /* train on mini-batches of the data */
    if (batched && !train) { fprintf(stderr, "model: --batch, --shuffle and --drop-last are options of train\n"); return 2; }
    if (batched) {
        int axes = 0;
        for (int k = 0; k < GN_N_INPUTS; k++) {
            int n = 0;
            for (int d = 0; d < GN_INPUTS[k].ndim; d++) n += GN_INPUTS[k].dims[d] < 0;
            if (n > 1) { fprintf(stderr, "model: --batch: input %s has %d batch axes, mini-batches need one\n", GN_INPUTS[k].name, n); return 2; }
            axes += n;
        }
        if (!axes) { fprintf(stderr, "model: --batch: no input of this program has a batch axis\n"); return 2; }
    }
    if (!gn_device_init()) { fprintf(stderr, "model: no CUDA device or driver available (build with -DGN_CPU for the CPU)\n"); return 3; }
    char default_params[4096];
    if (!params) {  /* params.bin beside the program */
        const char* slash = strrchr(argv[0], '/');
        snprintf(default_params, sizeof default_params, "%.*sparams.bin",
                 slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
        params = default_params;
    }
    long B = 0, R = 0;  /* R: the data's rows; B: the batch a step runs (R unless --batch) */
    if (GN_N_INPUTS > 0) {
        if (!data) { fprintf(stderr, "model: --data is required (inputs: %s ...)\n", GN_INPUTS[0].name); return 2; }
        FILE* f = NULL;
        R = B = gn_check(data, GN_KIND_DATA, GN_HASH_DATA, GN_INPUTS, GN_N_INPUTS, &f);
        if (B < 0) return 4;
        fclose(f);
    }
    if (batched) {
        if (!batch) batch = R;
        if (batch > R) { fprintf(stderr, "model: --batch %ld: the data (%s) has %ld rows\n", batch, data, R); return 2; }
        B = batch;
    }
    if (!gn_alloc(B)) { fprintf(stderr, "model: cannot allocate the buffers for batch size %ld\n", B); return 5; }
    if (GN_N_PARAMS > 0 && !gn_read(params, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0)) return 4;
    if (batched) {
        size_t stage = 1;
        gn_data_host = (void**)calloc(GN_N_INPUTS, sizeof(void*));
        if (!gn_data_host) { fprintf(stderr, "model: out of host memory\n"); return 5; }
        if (!gn_load(data, GN_KIND_DATA, GN_HASH_DATA, GN_INPUTS, GN_N_INPUTS, R, gn_data_host)) { gn_batches_free(); return 4; }
        for (int k = 0; k < GN_N_INPUTS; k++) {
            size_t pre, post; int ok = 1;
            if (gn_batch_axis(&GN_INPUTS[k], &pre, &post) < 0)
                gn_to_device(*GN_INPUTS[k].ptr, gn_data_host[k], gn_bytes(&GN_INPUTS[k], R, &ok));
            else if (pre * (size_t)B * post > stage) stage = pre * (size_t)B * post;
        }
        gn_stage = (char*)malloc(stage);
        gn_order = shuffle ? (long*)malloc(sizeof(long) * (size_t)R) : NULL;
        if (!gn_stage || (shuffle && !gn_order)) { fprintf(stderr, "model: out of host memory\n"); gn_batches_free(); return 5; }
    } else if (GN_N_INPUTS > 0 && !gn_read(data, GN_KIND_DATA, GN_HASH_DATA, GN_INPUTS, GN_N_INPUTS, B)) return 4;
    if (lr) {
        double v = atof(lr);
        if (GN_PARAMS[GN_LR_PARAM].dtype == GN_FLOAT32) { float x = (float)v; gn_to_device(*GN_PARAMS[GN_LR_PARAM].ptr, &x, 4); }
        else gn_to_device(*GN_PARAMS[GN_LR_PARAM].ptr, &v, 8);
    }
    if (train) {
        int scalar_loss = GN_N_OUTPUTS > 0 && GN_OUTPUTS[0].ndim == 0 &&
                          (GN_OUTPUTS[0].dtype == GN_FLOAT64 || GN_OUTPUTS[0].dtype == GN_FLOAT32);
        long per_epoch = !batched ? 1 : drop_last ? R / B : (R + B - 1) / B;
        if (batched) {
            printf("batch size %ld, %ld data rows: %ld steps per epoch", B, R, per_epoch);
            if (drop_last) printf(", %ld rows left out of each epoch", R - per_epoch * B);
            else if (R % B) printf(", the last of %ld rows", R % B);
            if (shuffle) printf(", shuffled (seed %llu)\n", (unsigned long long)seed); else printf(", in order\n");
        }
        double total = 0, first = 0;
        for (long s = 0; s < steps; s++) {
            long j = s % per_epoch;
            if (shuffle && j == 0) gn_permute(gn_order, R, &seed);
            gn_sync();
            double t0 = gn_now();
            long m = batched && R - j * B < B ? R - j * B : B;  /* the epoch's last rows */
            if (m != B) gn_batch(m);
            if (batched && (shuffle || per_epoch > 1 || s == 0))
                gn_upload_batch(R, m, shuffle ? gn_order + j * B : NULL, j * B);
            gn_step(m, 1);
            if (m != B) gn_batch(B);
            gn_sync();
            double dt = gn_now() - t0;
            if (!gn_faults_ok(s + 1)) { gn_batches_free(); return 6; }
            total += dt;
            if (s == 0) first = dt;
            if (scalar_loss && (s < 10 || s % 100 == 0 || s == steps - 1)) {
                double loss = 0;
                if (GN_OUTPUTS[0].dtype == GN_FLOAT32) { float x; gn_to_host(&x, *GN_OUTPUTS[0].ptr, 4); loss = x; }
                else gn_to_host(&loss, *GN_OUTPUTS[0].ptr, 8);
                printf("step %ld: %s %.17g (%.4g ms)\n", s + 1, GN_OUTPUTS[0].name, loss, dt * 1e3);
            }
        }
        gn_batches_free();
        printf("%ld steps, %.4g ms per step", steps, steps ? total * 1e3 / steps : 0.0);
        if (steps > 1) printf(" (%.4g ms per step after the first)", (total - first) * 1e3 / (steps - 1));
        printf("\n");
        return gn_write(out, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0) ? 0 : 4;
    }
    gn_step(B, run ? 1 : 0);
    gn_sync();
    if (!gn_faults_ok(0)) return 6;
    if (!gn_write(out, GN_KIND_OUTPUTS, GN_HASH_OUTPUTS, GN_OUTPUTS, GN_N_OUTPUTS, B)) return 4;
    if (params_out && !gn_write(params_out, GN_KIND_PARAMS, GN_HASH_PARAMS, GN_PARAMS, GN_N_PARAMS, 0)) return 4;
    return 0;
}
"""
