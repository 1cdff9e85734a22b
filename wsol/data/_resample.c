/*
 * Bilinear resize of 8-bit images with exactly the numbers of PIL's Image.resize(size,
 * Image.BILINEAR) (its two-pass fixed-point convolution), a few times faster.
 *
 * The arithmetic, per axis (in pixels of the source of size n, target size m):
 *
 *   scale = n / m,  s = max(scale, 1),  support = s  (the triangle filter's support is 1),
 *   for output index o: center = (o + 0.5) * scale,
 *     lo = max(0, (int)(center - support + 0.5)),  hi = min(n, (int)(center + support + 0.5)),
 *     w_i = tri((lo + i - center + 0.5) / s) for i < hi - lo,  tri(x) = max(0, 1 - |x|),
 *     w_i /= sum_i w_i (when the sum is not 0),
 *     k_i = (int)(w_i * 2^22 + 0.5)   (w_i >= 0 for the triangle filter),
 *   value = clip_0^255((2^21 + sum_i k_i * p_{lo+i}) >> 22)   in 32-bit integers,
 *
 * everything before the k_i in double precision, as PIL computes it. The horizontal pass runs
 * first, on the source rows that the vertical pass reads, into 8-bit pixels; then the
 * vertical pass. A pass whose size does not change is skipped. Integer sums do not depend on
 * their order, so the passes are free to run along whichever axis vectorizes: the horizontal
 * pass on a transposed copy (each output column is then a weighted sum of whole source
 * columns), the vertical one on rows. tests/test_resample.py checks equality with PIL on
 * random images of many shapes and on real photos.
 *
 * The computation runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#define PRECISION_BITS 22

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

typedef struct {
    int ksize;
    int *lo;      /* first source index per output */
    int *count;   /* taps per output */
    int32_t *k;   /* ksize coefficients per output */
} Axis;

static void axis_free(Axis *a) {
    free(a->lo);
    free(a->count);
    free(a->k);
}

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int axis_init(Axis *a, int n, int m) {
    double scale = (double)(float)n / m;  /* PIL: (double)(in1 - in0) / outSize, floats */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    double inv = 1.0 / filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *w = malloc((size_t)ksize * sizeof(double));
    a->ksize = ksize;
    a->lo = malloc((size_t)m * sizeof(int));
    a->count = malloc((size_t)m * sizeof(int));
    a->k = calloc((size_t)m * ksize, sizeof(int32_t));
    if (!w || !a->lo || !a->count || !a->k) {
        free(w);
        axis_free(a);
        return -1;
    }
    for (int o = 0; o < m; o++) {
        double center = 0.0 + (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        double sum = 0.0;
        if (lo < 0) lo = 0;
        if (hi > n) hi = n;
        hi -= lo;
        for (int i = 0; i < hi; i++) {
            w[i] = triangle((i + lo - center + 0.5) * inv);
            sum += w[i];
        }
        for (int i = 0; i < hi; i++) {
            double v = sum != 0.0 ? w[i] / sum : w[i];
            a->k[(size_t)o * ksize + i] =
                (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        a->lo[o] = lo;
        a->count[o] = hi;
    }
    free(w);
    return 0;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* dst[j] (len values) = clip8(2^21 + sum_t k[t] * src[t][j]): one output line from `taps`
 * source lines of `len` bytes, `stride` bytes apart, starting at src. */
MULTIVERSION
static void weighted_lines(const uint8_t *src, Py_ssize_t stride, int taps, const int32_t *k,
                           Py_ssize_t len, int32_t *acc, uint8_t *dst) {
    for (Py_ssize_t j = 0; j < len; j++) acc[j] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < taps; t++) {
        const uint8_t *line = src + t * stride;
        const int32_t kt = k[t];
        for (Py_ssize_t j = 0; j < len; j++) acc[j] += (int32_t)line[j] * kt;
    }
    for (Py_ssize_t j = 0; j < len; j++) dst[j] = clip8(acc[j]);
}

/* Inside, a pixel is 1 byte (gray) or 4 (RGB padded to RGBX, so that it moves as one 32-bit
 * word in the transposes; the pad byte is computed on and dropped at the end). */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
/* One 8 x 8 block of 32-bit words: dst[c * ds + r] = src[r * ss + c]. */
__attribute__((target("avx2"))) static inline void block8(const uint32_t *src, size_t ss,
                                                          uint32_t *dst, size_t ds) {
    __m256 r0 = _mm256_loadu_ps((const float *)(src + 0 * ss));
    __m256 r1 = _mm256_loadu_ps((const float *)(src + 1 * ss));
    __m256 r2 = _mm256_loadu_ps((const float *)(src + 2 * ss));
    __m256 r3 = _mm256_loadu_ps((const float *)(src + 3 * ss));
    __m256 r4 = _mm256_loadu_ps((const float *)(src + 4 * ss));
    __m256 r5 = _mm256_loadu_ps((const float *)(src + 5 * ss));
    __m256 r6 = _mm256_loadu_ps((const float *)(src + 6 * ss));
    __m256 r7 = _mm256_loadu_ps((const float *)(src + 7 * ss));
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps((float *)(dst + 0 * ds), _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps((float *)(dst + 1 * ds), _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps((float *)(dst + 2 * ds), _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps((float *)(dst + 3 * ds), _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps((float *)(dst + 4 * ds), _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps((float *)(dst + 5 * ds), _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps((float *)(dst + 6 * ds), _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps((float *)(dst + 7 * ds), _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* The whole 8 x 8 blocks of a (rows, cols) transpose of 32-bit words; the caller does the
 * remaining edge rows and columns. */
__attribute__((target("avx2"))) static void transpose32_avx2(const uint32_t *src, int rows,
                                                             int cols, uint32_t *dst) {
    for (int r = 0; r + 8 <= rows; r += 8)
        for (int c = 0; c + 8 <= cols; c += 8)
            block8(src + (size_t)r * cols + c, (size_t)cols, dst + (size_t)c * rows + r,
                   (size_t)rows);
}
#endif

/* (rows, cols) pixels -> (cols, rows) pixels, of 1 or 4 bytes (a bit-exact copy: the words are
 * only moved, never interpreted). */
static void transpose(const uint8_t *src, int rows, int cols, int px, uint8_t *dst) {
    const int block = 32;
    int r_done = 0, c_done = 0;  /* rows x cols already moved by the AVX2 blocks */
#ifdef HAVE_AVX2_PATH
    if (px == 4 && __builtin_cpu_supports("avx2")) {
        transpose32_avx2((const uint32_t *)src, rows, cols, (uint32_t *)dst);
        r_done = rows / 8 * 8;
        c_done = cols / 8 * 8;
    }
#endif
    for (int r0 = 0; r0 < rows; r0 += block) {
        int r1 = r0 + block < rows ? r0 + block : rows;
        for (int c0 = 0; c0 < cols; c0 += block) {
            int c1 = c0 + block < cols ? c0 + block : cols;
            if (px == 4) {
                for (int r = r0; r < r1; r++) {
                    const uint32_t *s = (const uint32_t *)src + (size_t)r * cols;
                    uint32_t *d = (uint32_t *)dst + r;
                    for (int c = (r < r_done && c0 < c_done) ? c_done : c0; c < c1; c++)
                        d[(size_t)c * rows] = s[c];
                }
            } else {
                for (int r = r0; r < r1; r++) {
                    const uint8_t *s = src + (size_t)r * cols;
                    uint8_t *d = dst + r;
                    for (int c = c0; c < c1; c++) d[(size_t)c * rows] = s[c];
                }
            }
        }
    }
}

/* Scratch buffers, kept per thread between calls and grown as needed: a photo's transposed
 * copies are a few MB, and allocating them afresh for every image made glibc return the memory
 * to the system and fault it back in (a CUB photo's resize took ~0.78 ms that way, ~0.58 with
 * the buffers kept). A buffer over CACHED_BYTES is released after the call; a thread's buffers
 * are freed when it exits. */
enum { S_PADDED, S_TMP, S_RES, S_SRC_T, S_OUT_T, S_ACC, N_SLOTS };
#define CACHED_BYTES ((size_t)64 << 20)

typedef struct {
    void *p[N_SLOTS];
    size_t cap[N_SLOTS];
} Scratch;

static void scratch_release(Scratch *s, size_t keep) {
    for (int i = 0; i < N_SLOTS; i++)
        if (s->cap[i] > keep) {
            free(s->p[i]);
            s->p[i] = NULL;
            s->cap[i] = 0;
        }
}

#ifndef _WIN32
static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok = 0;

static void scratch_destroy(void *ptr) {
    scratch_release((Scratch *)ptr, 0);
    free(ptr);
}

static void make_scratch_key(void) {
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}
#endif

/* The calling thread's scratch, or *local (emptied) where none can be kept. */
static Scratch *scratch_begin(Scratch *local) {
    memset(local, 0, sizeof(*local));
#ifndef _WIN32
    pthread_once(&scratch_key_once, make_scratch_key);
    if (scratch_key_ok) {
        Scratch *s = pthread_getspecific(scratch_key);
        if (s == NULL) {
            s = calloc(1, sizeof(*s));
            if (s != NULL && pthread_setspecific(scratch_key, s) != 0) {
                free(s);
                s = NULL;
            }
        }
        if (s != NULL) return s;
    }
#endif
    return local;
}

static void scratch_end(Scratch *s, Scratch *local) {
    scratch_release(s, s == local ? 0 : CACHED_BYTES);
}

/* Slot `slot` of s with room for n bytes (its contents are not kept), or NULL. */
static void *scratch(Scratch *s, int slot, size_t n) {
    if (n == 0) n = 1;
    if (s->p[slot] != NULL && s->cap[slot] >= n) return s->p[slot];
    free(s->p[slot]);
    s->p[slot] = malloc(n);
    s->cap[slot] = s->p[slot] != NULL ? n : 0;
    return s->p[slot];
}

/* Horizontal pass: src (rows, w) pixels of px bytes -> dst (rows, ow). */
static int horizontal(const uint8_t *src, int rows, int w, int px, const Axis *ax, int ow,
                      uint8_t *dst, Scratch *s) {
    Py_ssize_t line = (Py_ssize_t)rows * px;
    uint8_t *src_t = scratch(s, S_SRC_T, (size_t)w * line);
    uint8_t *out_t = scratch(s, S_OUT_T, (size_t)ow * line);
    int32_t *acc = scratch(s, S_ACC, (size_t)line * sizeof(int32_t));
    if (!src_t || !out_t || !acc) return -1;
    transpose(src, rows, w, px, src_t);
    for (int o = 0; o < ow; o++)
        weighted_lines(src_t + (size_t)ax->lo[o] * line, line, ax->count[o],
                       ax->k + (size_t)o * ax->ksize, line, acc, out_t + (size_t)o * line);
    transpose(out_t, ow, rows, px, dst);
    return 0;
}

/* Vertical pass: src (h, line bytes) -> dst (oh, line bytes), rows lo[o] .. lo[o]+count[o]. */
static int vertical(const uint8_t *src, Py_ssize_t line, const Axis *ay, int oh, uint8_t *dst,
                    Scratch *s) {
    int32_t *acc = scratch(s, S_ACC, (size_t)line * sizeof(int32_t));
    if (!acc) return -1;
    for (int o = 0; o < oh; o++)
        weighted_lines(src + (size_t)ay->lo[o] * line, line, ay->count[o],
                       ay->k + (size_t)o * ay->ksize, line, acc, dst + (size_t)o * line);
    return 0;
}

/* src (h, w) pixels of cin bytes (1 gray, 3 RGB, 4 RGBX) -> dst (oh, ow) pixels of cout bytes
 * (cin, or 3 from RGBX); the horizontal pass first (on the source rows that the vertical pass
 * reads) or the vertical pass first, as the caller says. 0, or -1 when out of memory. */
static int resample(const uint8_t *src, int h, int w, int cin, int oh, int ow, int cout,
                    int horizontal_first, uint8_t *dst) {
    Axis ax = {0}, ay = {0};
    int px = cin == 1 ? 1 : 4;
    size_t n_in = (size_t)h * w, n_out = (size_t)oh * ow;
    uint8_t *padded = NULL, *tmp = NULL, *res = NULL;
    const uint8_t *in = src;
    int rc = -1;
    int need_h = ow != w, need_v = oh != h;
    Scratch local;
    Scratch *s = scratch_begin(&local);

    if (cin == 3) {  /* RGB -> RGBX */
        padded = scratch(s, S_PADDED, n_in * 4);
        if (!padded) goto done;
        for (size_t i = 0; i < n_in; i++) {
            memcpy(padded + 4 * i, src + 3 * i, 3);
            padded[4 * i + 3] = 0;
        }
        in = padded;
    }
    res = cout == px ? dst : scratch(s, S_RES, n_out * px);
    if (!res) goto done;
    if (need_v && axis_init(&ay, h, oh) != 0) goto done;
    if (need_h && axis_init(&ax, w, ow) != 0) goto done;
    if (!need_h && !need_v) {
        memcpy(res, in, n_in * px);
    } else if (!need_v) {
        if (horizontal(in, h, w, px, &ax, ow, res, s) != 0) goto done;
    } else if (!need_h) {
        if (vertical(in, (Py_ssize_t)w * px, &ay, oh, res, s) != 0) goto done;
    } else if (horizontal_first) {
        int first = ay.lo[0];
        int rows = ay.lo[oh - 1] + ay.count[oh - 1] - first;
        tmp = scratch(s, S_TMP, (size_t)rows * ow * px);
        if (!tmp) goto done;
        if (horizontal(in + (size_t)first * w * px, rows, w, px, &ax, ow, tmp, s) != 0) goto done;
        for (int o = 0; o < oh; o++) ay.lo[o] -= first;
        if (vertical(tmp, (Py_ssize_t)ow * px, &ay, oh, res, s) != 0) goto done;
    } else {
        tmp = scratch(s, S_TMP, (size_t)oh * w * px);
        if (!tmp) goto done;
        if (vertical(in, (Py_ssize_t)w * px, &ay, oh, tmp, s) != 0) goto done;
        if (horizontal(tmp, oh, w, px, &ax, ow, res, s) != 0) goto done;
    }
    if (res != dst)  /* RGBX -> RGB: drop the pad byte */
        for (size_t i = 0; i < n_out; i++) {
            dst[3 * i] = res[4 * i];
            dst[3 * i + 1] = res[4 * i + 1];
            dst[3 * i + 2] = res[4 * i + 2];
        }
    rc = 0;
done:
    axis_free(&ax);
    axis_free(&ay);
    scratch_end(s, &local);
    return rc;
}

/* resize(src, h, w, cin, dst, oh, ow, cout, horizontal_first): src a contiguous uint8 buffer
 * of h * w pixels of cin bytes (1 gray, 3 RGB, 4 RGBX as PIL's tobytes("raw", "RGBX")), dst a
 * writable one of oh * ow pixels of cout bytes (cout = cin, or 3 from RGBX). */
static PyObject *py_resize(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    int h, w, cin, oh, ow, cout, horizontal_first, rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iiiw*iiip", &in, &h, &w, &cin, &out, &oh, &ow, &cout,
                          &horizontal_first))
        return NULL;
    if (!(cin == 1 || cin == 3 || cin == 4) || !(cout == cin || (cin == 4 && cout == 3)) ||
        h < 1 || w < 1 || oh < 1 || ow < 1 || h > INT32_MAX / 8 || w > INT32_MAX / 8 ||
        oh > INT32_MAX / 8 || ow > INT32_MAX / 8 ||
        in.len != (Py_ssize_t)h * w * cin || out.len != (Py_ssize_t)oh * ow * cout) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError,
                        "resize: buffer sizes do not match (h, w, cin) / (oh, ow, cout), or the "
                        "channels are not 1 -> 1, 3 -> 3, 4 -> 4 or 4 -> 3");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = resample((const uint8_t *)in.buf, h, w, cin, oh, ow, cout, horizontal_first,
                  (uint8_t *)out.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"resize", py_resize, METH_VARARGS,
     "resize(src, h, w, cin, dst, oh, ow, cout, horizontal_first): bilinear resize of uint8 "
     "pixels, as PIL's Image.resize(..., BILINEAR)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample", NULL, -1, methods};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
