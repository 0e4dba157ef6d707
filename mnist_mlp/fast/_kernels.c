/* Compiled versions of small passes of a training step, and of the distortions of its batches;
 * see mnist_mlp/fast/kernels.py.
 *
 * Each function fuses what NumPy does in several passes into one, with the same arithmetic;
 * the NumPy code in fast/step.py, data.py and augment.py stays the definition, and tests check that the two
 * agree. Arrays arrive through the buffer protocol and are checked here (item type, C order,
 * size, index range), so a wrong argument raises a Python exception instead of corrupting
 * memory.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* GCC (12 or later, which knows the x86-64-v3 level) compiles each hot loop twice, for AVX2 with
 * FMA and for any x86-64, and the loader picks the one this CPU can run: the build stays
 * portable and still gets 8-wide arithmetic. Elsewhere the compiler's default target is used. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define CLONES 1
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES 0
#define HOT
#endif
/* Helpers of a hot loop are inlined into each of its clones, so that they get its instructions. */
#define INLINE static inline __attribute__((always_inline))

/* Eight floats that GCC and Clang treat as one SIMD value; aligned(4) lets it load from any
 * float's address. It is one register with AVX; without, GCC emulates it slowly (backprop_relu
 * then takes 900 us instead of 20-60), so the module tells kernels.py whether it is native. */
typedef float f32x8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t i32x8 __attribute__((vector_size(32), aligned(4)));

static int wide_vectors_native(void) {
#if defined(__AVX2__) && defined(__FMA__)
    return 1;
#elif CLONES
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3") != 0; /* the clone the loader picks */
#else
    return 0;
#endif
}

/* ---- arguments --------------------------------------------------------------------------- */

/* Fill `view` with `obj`'s memory if it is C-contiguous and holds `count` items of struct
 * format `format` ("f" float32, "B" uint8, "q" int64); else set a ValueError and return -1. */
static int get_array(PyObject *obj, Py_buffer *view, int writable, const char *format,
                     Py_ssize_t count, const char *name) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '=' || *f == '<' || *f == '@')
        f++;
    /* NumPy's int64 is "l" where a C long has 64 bits and "q" where it has 32 (Windows) */
    const int same = strcmp(f, format) == 0 || (strcmp(format, "q") == 0 && strcmp(f, "l") == 0 &&
                                                view->itemsize == 8);
    if (!same || view->len != count * view->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of format '%s', got %zd of format '%s'",
                     name, count, format, view->len / (view->itemsize ? view->itemsize : 1), f);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Release the first `held` views and return `result` (NULL after an error) as a new reference. */
static PyObject *release(Py_buffer *views, int held, PyObject *result) {
    for (int v = 0; v < held; v++)
        PyBuffer_Release(&views[v]);
    Py_XINCREF(result);
    return result;
}

/* ---- bias and ReLU: z = max(z + b, 0) ------------------------------------------------------ */

HOT static void bias_relu_loop(float *z, const float *b, Py_ssize_t rows, Py_ssize_t cols) {
    for (Py_ssize_t i = 0; i < rows; i++) {
        float *row = z + i * cols;
        for (Py_ssize_t j = 0; j < cols; j++) {
            const float v = row[j] + b[j];
            row[j] = v > 0.0f ? v : 0.0f;
        }
    }
}

static PyObject *bias_relu(PyObject *self, PyObject *args) {
    PyObject *z, *b;
    Py_ssize_t rows, cols;
    if (!PyArg_ParseTuple(args, "OOnn", &z, &b, &rows, &cols))
        return NULL;
    Py_buffer views[2];
    int held = 0;
    if (get_array(z, &views[held++], 1, "f", rows * cols, "z") < 0 ||
        get_array(b, &views[held++], 0, "f", cols, "b") < 0)
        return release(views, held - 1, NULL);
    Py_BEGIN_ALLOW_THREADS
    bias_relu_loop(views[0].buf, views[1].buf, rows, cols);
    Py_END_ALLOW_THREADS
    return release(views, held, Py_None);
}

/* ---- back through a thin layer and the ReLU before it: out = (dz @ w.T) * (a > 0) ---------- */

/* For dz (rows, k) and w (n, k) with k small (the 10 classes), BLAS is slow (a thin product
 * spends its time on overheads) and NumPy then needs a second pass for the mask. Here 2 x 32
 * outputs at a time are summed in registers and masked before they are stored. */

/* x where a > 0, else 0: comparing vectors gives all-ones or all-zero bits per lane. */
INLINE f32x8 where_positive(f32x8 a, f32x8 x) { return (f32x8)((i32x8)x & (a > 0.0f)); }

/* w is first repacked as w.T in panels of 32 columns: panel p holds w.T[:, 32p : 32p + 32] as
 * k x 32 contiguous floats. (In w.T itself the k rows a block reads lie 4 KB apart, which maps
 * them to the same few L1 cache sets: they evicted one another, and the loop was 4x slower.) */
static void pack_panels(float *panels, const float *w, Py_ssize_t n, Py_ssize_t k) {
    for (Py_ssize_t j = 0; j < n - n % 32; j++)
        for (Py_ssize_t c = 0; c < k; c++)
            panels[(j / 32) * 32 * k + c * 32 + j % 32] = w[j * k + c];
}

/* Two rows u and v (k floats each) times a k x 32 panel whose row c starts at panel + 32 c: the
 * 2 x 32 sums, as four vectors per row. Eight independent sums keep both FMA units busy (one
 * alone would wait for each addition to finish), and every panel value loaded serves both rows. */
typedef struct {
    f32x8 u[4], v[4];
} two_rows;

INLINE two_rows two_rows_times_panel(const float *u, const float *v, const float *panel, Py_ssize_t k) {
    two_rows r = {{{0}}};
    for (Py_ssize_t c = 0; c < k; c++) {
        const f32x8 *w = (const f32x8 *)(panel + c * 32);
        const float uc = u[c], vc = v[c];
        for (int q = 0; q < 4; q++) {
            r.u[q] += uc * w[q];
            r.v[q] += vc * w[q];
        }
    }
    return r;
}

/* Rows i and i + 1 (only i if `pair` is 0), columns j0 .. j0 + 31, masked by a > 0. */
INLINE void backprop_block(float *out, const float *dz, const float *panel, const float *a,
                           Py_ssize_t i, int pair, Py_ssize_t j0, Py_ssize_t n, Py_ssize_t k) {
    const float *d = dz + i * k;
    const two_rows r = two_rows_times_panel(d, pair ? d + k : d, panel, k);
    for (int row = 0; row <= pair; row++) {
        const f32x8 *ai = (const f32x8 *)(a + (i + row) * n + j0);
        f32x8 *o = (f32x8 *)(out + (i + row) * n + j0);
        for (int q = 0; q < 4; q++)
            o[q] = where_positive(ai[q], row ? r.v[q] : r.u[q]);
    }
}

#define CHUNK 256 /* columns whose panels (10 KB for k = 10) stay in the L1 cache over all rows */

HOT static void backprop_relu_loop(float *out, const float *dz, const float *w, const float *panels,
                                   const float *a, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t k) {
    const Py_ssize_t full = n - n % 32;
    for (Py_ssize_t c0 = 0; c0 < full; c0 += CHUNK) {
        const Py_ssize_t c1 = c0 + CHUNK < full ? c0 + CHUNK : full;
        for (Py_ssize_t i = 0; i < rows; i += 2)
            for (Py_ssize_t j0 = c0; j0 < c1; j0 += 32)
                backprop_block(out, dz, panels + j0 * k, a, i, i + 1 < rows, j0, n, k);
    }
    for (Py_ssize_t i = 0; i < rows; i++) /* the last n % 32 columns, one at a time */
        for (Py_ssize_t j = full; j < n; j++) {
            float sum = 0.0f;
            for (Py_ssize_t c = 0; c < k; c++)
                sum += dz[i * k + c] * w[j * k + c];
            out[i * n + j] = a[i * n + j] > 0.0f ? sum : 0.0f;
        }
}

static PyObject *backprop_relu(PyObject *self, PyObject *args) {
    PyObject *out, *dz, *w, *a;
    Py_ssize_t rows, n, k;
    if (!PyArg_ParseTuple(args, "OOOOnnn", &out, &dz, &w, &a, &rows, &n, &k))
        return NULL;
    Py_buffer views[4];
    int held = 0;
    if (get_array(out, &views[held++], 1, "f", rows * n, "out") < 0 ||
        get_array(dz, &views[held++], 0, "f", rows * k, "dz") < 0 ||
        get_array(w, &views[held++], 0, "f", n * k, "w") < 0 ||
        get_array(a, &views[held++], 0, "f", rows * n, "a") < 0)
        return release(views, held - 1, NULL);
    /* 64-byte aligned, so that no 32-byte load of a panel straddles two cache lines */
    void *block = malloc(sizeof(float) * n * k + 64);
    if (block == NULL)
        return release(views, held, PyErr_NoMemory());
    float *panels = (float *)(((uintptr_t)block + 63) & ~(uintptr_t)63);
    Py_BEGIN_ALLOW_THREADS
    pack_panels(panels, views[2].buf, n, k);
    backprop_relu_loop(views[0].buf, views[1].buf, views[2].buf, panels, views[3].buf, rows, n, k);
    Py_END_ALLOW_THREADS
    free(block);
    return release(views, held, Py_None);
}

/* ---- softmax and cross-entropy, and their gradient ------------------------------------------ */

/* Overwrites logits (rows, k) with (softmax - q) / rows, q = (1 - e) onehot(y) + e / k the smoothed
 * target; returns the mean cross-entropy against q. */
static PyObject *softmax_cross_entropy(PyObject *self, PyObject *args) {
    PyObject *logits, *labels;
    Py_ssize_t rows, k;
    float smoothing;
    if (!PyArg_ParseTuple(args, "OOnnf", &logits, &labels, &rows, &k, &smoothing))
        return NULL;
    Py_buffer views[2];
    int held = 0;
    if (get_array(logits, &views[held++], 1, "f", rows * k, "logits") < 0 ||
        get_array(labels, &views[held++], 0, "q", rows, "y") < 0)
        return release(views, held - 1, NULL);
    if (rows < 1 || k < 1) {
        PyErr_Format(PyExc_ValueError, "logits of shape (%zd, %zd): need a row and a class at least",
                     rows, k);
        return release(views, held, NULL);
    }
    const int64_t *y = views[1].buf;
    for (Py_ssize_t i = 0; i < rows; i++)
        if (y[i] < 0 || y[i] >= k) {
            PyErr_Format(PyExc_ValueError, "y[%zd] = %lld is not a class in 0..%zd", i, (long long)y[i],
                         k - 1);
            return release(views, held, NULL);
        }
    double loss = 0.0;
    const float inv_n = 1.0f / (float)rows, spread = smoothing / (float)(k * rows);
    for (Py_ssize_t i = 0; i < rows; i++) {
        float *z = (float *)views[0].buf + i * k;
        float top = z[0];
        for (Py_ssize_t c = 1; c < k; c++)
            top = z[c] > top ? z[c] : top;
        /* shifted so that the largest logit is 0: exp cannot overflow */
        const float true_logit = z[y[i]] - top;
        float total = 0.0f, sum = 0.0f;
        for (Py_ssize_t c = 0; c < k; c++) {
            sum += z[c] - top;
            z[c] = expf(z[c] - top);
            total += z[c];
        }
        loss += (double)logf(total) - (1.0 - smoothing) * (double)true_logit - smoothing * (double)sum / (double)k;
        const float scale = inv_n / total;
        for (Py_ssize_t c = 0; c < k; c++)
            z[c] = z[c] * scale - spread;
        z[y[i]] -= (1.0f - smoothing) * inv_n;
    }
    PyObject *result = PyFloat_FromDouble(loss / (double)rows);
    release(views, held, NULL);
    return result;
}

/* ---- pixels to inputs: out[i] = images[rows[i]] * scale + offset --------------------------- */

#define AHEAD 4

/* Random rows of the training set come from memory: ask for row i + AHEAD while row i is read. */
INLINE void prefetch_ahead(const uint8_t *images, const int64_t *rows, Py_ssize_t i, Py_ssize_t n_out,
                           Py_ssize_t d) {
    if (rows && i + AHEAD < n_out) {
        const uint8_t *next = images + rows[i + AHEAD] * d;
        for (Py_ssize_t j = 0; j < d; j += 64)
            __builtin_prefetch(next + j);
    }
}

/* 0 if every rows[i] (or i, for rows NULL) is an index of one of n_images images; else an IndexError. */
static int check_rows(const int64_t *rows, Py_ssize_t n_out, Py_ssize_t n_images) {
    for (Py_ssize_t i = 0; i < n_out; i++) {
        const Py_ssize_t r = rows ? rows[i] : i;
        if (r < 0 || r >= n_images) {
            PyErr_Format(PyExc_IndexError, "row %zd of the batch would be image %zd, not one of 0..%zd", i, r,
                         n_images - 1);
            return -1;
        }
    }
    return 0;
}

HOT static void scale_pixels_loop(float *out, const uint8_t *images, const int64_t *rows,
                                  Py_ssize_t n_out, Py_ssize_t d, float scale, float offset) {
    for (Py_ssize_t i = 0; i < n_out; i++) {
        prefetch_ahead(images, rows, i, n_out, d);
        const uint8_t *src = images + (rows ? rows[i] : i) * d;
        float *dst = out + i * d;
        for (Py_ssize_t j = 0; j < d; j++)
            dst[j] = (float)src[j] * scale + offset;
    }
}

/* Gathering the rows here saves NumPy's copy of the batch's uint8 images; rows None: images[i]. */
static PyObject *scale_pixels(PyObject *self, PyObject *args) {
    PyObject *out, *images, *rows_obj;
    Py_ssize_t n_out, n_images, d;
    float scale, offset;
    if (!PyArg_ParseTuple(args, "OOOnnnff", &out, &images, &rows_obj, &n_out, &n_images, &d, &scale,
                          &offset))
        return NULL;
    Py_buffer views[3];
    int held = 0;
    if (get_array(out, &views[held++], 1, "f", n_out * d, "out") < 0 ||
        get_array(images, &views[held++], 0, "B", n_images * d, "images") < 0 ||
        (rows_obj != Py_None && get_array(rows_obj, &views[held++], 0, "q", n_out, "rows") < 0))
        return release(views, held - 1, NULL);
    const int64_t *rows = rows_obj != Py_None ? views[2].buf : NULL;
    if (check_rows(rows, n_out, n_images) < 0)
        return release(views, held, NULL);
    Py_BEGIN_ALLOW_THREADS
    scale_pixels_loop(views[0].buf, views[1].buf, rows, n_out, d, scale, offset);
    Py_END_ALLOW_THREADS
    return release(views, held, Py_None);
}

/* ---- a batch's inked columns: cols = columns non-zero in some row, values = pixels * scale --- */

/* OR of the batch's rows finds the inked columns; then each row's inked pixels are gathered
 * and scaled. Returns K, the number of inked columns; when K > max_k nothing is gathered (the
 * caller then takes the dense path, and the OR pass is all this cost). */
HOT static Py_ssize_t gather_inked_loop(float *values, int64_t *cols, uint8_t *any, const uint8_t *images,
                                        const int64_t *rows, Py_ssize_t n_out, Py_ssize_t d, float scale,
                                        Py_ssize_t max_k) {
    memset(any, 0, (size_t)d);
    for (Py_ssize_t i = 0; i < n_out; i++) {
        prefetch_ahead(images, rows, i, n_out, d);
        const uint8_t *src = images + (rows ? rows[i] : i) * d;
        for (Py_ssize_t j = 0; j < d; j++)
            any[j] |= src[j];
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t j = 0; j < d; j++)
        if (any[j])
            cols[k++] = j;
    if (k > max_k)
        return k;
    for (Py_ssize_t i = 0; i < n_out; i++) {
        const uint8_t *src = images + (rows ? rows[i] : i) * d;
        float *dst = values + i * k;
        for (Py_ssize_t c = 0; c < k; c++)
            dst[c] = (float)src[cols[c]] * scale;
    }
    return k;
}

static PyObject *gather_inked(PyObject *self, PyObject *args) {
    PyObject *values, *cols, *images, *rows_obj;
    Py_ssize_t n_out, n_images, d, max_k;
    float scale;
    if (!PyArg_ParseTuple(args, "OOOOnnnfn", &values, &cols, &images, &rows_obj, &n_out, &n_images, &d, &scale,
                          &max_k))
        return NULL;
    Py_buffer views[4];
    int held = 0;
    if (get_array(values, &views[held++], 1, "f", n_out * d, "values") < 0 ||
        get_array(cols, &views[held++], 1, "q", d, "cols") < 0 ||
        get_array(images, &views[held++], 0, "B", n_images * d, "images") < 0 ||
        (rows_obj != Py_None && get_array(rows_obj, &views[held++], 0, "q", n_out, "rows") < 0))
        return release(views, held - 1, NULL);
    const int64_t *rows = rows_obj != Py_None ? views[3].buf : NULL;
    if (check_rows(rows, n_out, n_images) < 0)
        return release(views, held, NULL);
    uint8_t *any = malloc((size_t)d);
    if (any == NULL) {
        PyErr_NoMemory();
        return release(views, held, NULL);
    }
    Py_ssize_t k;
    Py_BEGIN_ALLOW_THREADS
    k = gather_inked_loop(views[0].buf, views[1].buf, any, views[2].buf, rows, n_out, d, scale, max_k);
    Py_END_ALLOW_THREADS
    free(any);
    PyObject *result = PyLong_FromSsize_t(k);
    release(views, held, NULL);
    return result;
}

/* ---- the first layer's momentum step with the blank rows' gradient as one vector ------------ */

/* p = decay * w - mu * p + v (+ g[k] on the k-th inked row), and s = the column sums of the new
 * p, summed row by row in order as NumPy's p.sum(axis=0) does: one pass over p and w where
 * NumPy needs five (see FusedSGD in optim.py). (Splitting it between two threads was slower
 * inside a training step: the helper thread competes with OpenBLAS's, which wait spinning.) */
HOT static void update_inked_loop(float *restrict p, const float *restrict w, const float *restrict g,
                                  const int64_t *cols, const float *restrict v, float *restrict s, Py_ssize_t n_in,
                                  Py_ssize_t n, Py_ssize_t k, float decay, float mu) {
    for (Py_ssize_t j = 0; j < n; j++)
        s[j] = 0.0f;
    Py_ssize_t c = 0;
    for (Py_ssize_t i = 0; i < n_in; i++) {
        float *restrict pi = p + i * n;
        const float *restrict wi = w + i * n;
        if (c < k && cols[c] == i) {
            const float *restrict gi = g + (c++) * n;
            for (Py_ssize_t j = 0; j < n; j++) {
                const float value = decay * wi[j] - mu * pi[j] + v[j] + gi[j];
                pi[j] = value;
                s[j] += value;
            }
        } else {
            for (Py_ssize_t j = 0; j < n; j++) {
                const float value = decay * wi[j] - mu * pi[j] + v[j];
                pi[j] = value;
                s[j] += value;
            }
        }
    }
}

static PyObject *update_inked(PyObject *self, PyObject *args) {
    PyObject *p, *w, *g, *cols_obj, *v, *s;
    Py_ssize_t n_in, n, k;
    float decay, mu;
    if (!PyArg_ParseTuple(args, "OOOOOOnnnff", &p, &w, &g, &cols_obj, &v, &s, &n_in, &n, &k, &decay, &mu))
        return NULL;
    Py_buffer views[6];
    int held = 0;
    if (get_array(p, &views[held++], 1, "f", n_in * n, "p") < 0 ||
        get_array(w, &views[held++], 0, "f", n_in * n, "w") < 0 ||
        get_array(g, &views[held++], 0, "f", k * n, "g") < 0 ||
        get_array(cols_obj, &views[held++], 0, "q", k, "cols") < 0 ||
        get_array(v, &views[held++], 0, "f", n, "v") < 0 ||
        get_array(s, &views[held++], 1, "f", n, "s") < 0)
        return release(views, held - 1, NULL);
    const int64_t *cols = views[3].buf;
    for (Py_ssize_t c = 0; c < k; c++) {
        if (cols[c] < 0 || cols[c] >= n_in || (c > 0 && cols[c] <= cols[c - 1])) {
            PyErr_Format(PyExc_ValueError, "cols must be ascending rows in 0..%zd; cols[%zd] is %lld", n_in - 1, c,
                         (long long)cols[c]);
            return release(views, held, NULL);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    update_inked_loop(views[0].buf, views[1].buf, views[2].buf, cols, views[4].buf, views[5].buf, n_in, n, k,
                      decay, mu);
    Py_END_ALLOW_THREADS
    return release(views, held, Py_None);
}

/* ---- distortions: each digit resampled at its affine + elastic source positions ------------ */

#define SIDE 28
#define PIXELS (SIDE * SIDE) /* 98 vectors of eight */
#define PADDED 32            /* a row of a field, rounded up to four vectors */

/* Lane-wise v clipped into [lo, hi], lo for a NaN: an index computed from it then stays inside
 * the image whatever the distortion's parameters. */
INLINE f32x8 clip8(f32x8 v, float lo, float hi) {
    const f32x8 zero = {0}, low = zero + lo, high = zero + hi;
    const i32x8 above = v > low, below = v < high;
    const f32x8 upper = (f32x8)((below & (i32x8)v) | (~below & (i32x8)high));
    return (f32x8)((above & (i32x8)upper) | (~above & (i32x8)low));
}

/* Rows i and i + 1 of scale * a @ b, for (SIDE, PADDED) a and b. */
INLINE void product_rows(float out[][PADDED], const float a[][PADDED], const float b[][PADDED], int i,
                         float scale) {
    const two_rows r = two_rows_times_panel(a[i], a[i + 1], b[0], SIDE);
    f32x8 *o = (f32x8 *)out[i], *q = (f32x8 *)out[i + 1];
    for (int c = 0; c < 4; c++) {
        o[c] = r.u[c] * scale;
        q[c] = r.v[c] * scale;
    }
}

/* out = alpha * G @ (2u - 1) @ G^T, one displacement field, as PIXELS contiguous floats; g and gt
 * hold G and G^T in rows of PADDED floats, zero beyond SIDE. */
INLINE void blur_field(float *out, const float *u, const float g[SIDE][PADDED], const float gt[SIDE][PADDED],
                       float alpha) {
    float f[SIDE][PADDED], t[SIDE][PADDED], smooth[SIDE][PADDED];
    for (int i = 0; i < SIDE; i++) {
        for (int j = 0; j < SIDE; j++)
            f[i][j] = u[i * SIDE + j] * 2.0f - 1.0f;
        for (int j = SIDE; j < PADDED; j++)
            f[i][j] = 0.0f;
    }
    for (int i = 0; i < SIDE; i += 2)
        product_rows(t, g, f, i, 1.0f);
    for (int i = 0; i < SIDE; i += 2)
        product_rows(smooth, t, gt, i, alpha);
    for (int i = 0; i < SIDE; i++)
        memcpy(out + i * SIDE, smooth[i], SIDE * sizeof(float));
}

/* Each of `n` images: its pixels pulled from source positions source = A^-1 (p - centre - shift)
 * + centre (+ the blurred field), bilinear weights, zero outside; rounded back to uint8. Per image,
 * `inverse` holds A^-1 row-major and the shift (y, x): six floats. `field` is NULL without elastic
 * distortions, else 2n uniform (SIDE, SIDE) fields: the n dy fields, then the n dx fields. */
HOT static void distort_loop(uint8_t *out, const uint8_t *images, const float *inverse, const float *field,
                             const float *g_in, float alpha, Py_ssize_t n) {
    float g[SIDE][PADDED] = {{0}}, gt[SIDE][PADDED] = {{0}}, grid_y[PIXELS], grid_x[PIXELS];
    const float centre = (SIDE - 1) / 2.0f, top = SIDE + 0.999f;
    for (int i = 0; i < SIDE; i++)
        for (int j = 0; j < SIDE; j++) {
            g[i][j] = g_in[i * SIDE + j];
            gt[j][i] = g_in[i * SIDE + j];
            grid_y[i * SIDE + j] = (float)i - centre;
            grid_x[i * SIDE + j] = (float)j - centre;
        }
    float dy[PIXELS] = {0}, dx[PIXELS] = {0}, fy[PIXELS], fx[PIXELS];
    int32_t corner[PIXELS];
    float padded[(SIDE + 2) * (SIDE + 2)]; /* a border of zeros: sources outside sample it */
    memset(padded, 0, sizeof padded);
    for (Py_ssize_t b = 0; b < n; b++) {
        const float *m = inverse + 6 * b;
        if (field != NULL) {
            blur_field(dy, field + b * PIXELS, g, gt, alpha);
            blur_field(dx, field + (n + b) * PIXELS, g, gt, alpha);
        }
        const uint8_t *src = images + b * PIXELS;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++)
                padded[(y + 1) * (SIDE + 2) + x + 1] = src[y * SIDE + x];
        for (int p = 0; p < PIXELS; p += 8) { /* where each pixel comes from */
            const f32x8 gy = *(const f32x8 *)(grid_y + p) - m[4], gx = *(const f32x8 *)(grid_x + p) - m[5];
            const f32x8 sy = clip8(m[0] * gy + m[1] * gx + centre + *(const f32x8 *)(dy + p) + 1.0f, 0.0f, top);
            const f32x8 sx = clip8(m[2] * gy + m[3] * gx + centre + *(const f32x8 *)(dx + p) + 1.0f, 0.0f, top);
            const i32x8 y0 = __builtin_convertvector(sy, i32x8), x0 = __builtin_convertvector(sx, i32x8);
            *(f32x8 *)(fy + p) = sy - __builtin_convertvector(y0, f32x8); /* >= 0: truncating is floor */
            *(f32x8 *)(fx + p) = sx - __builtin_convertvector(x0, f32x8);
            *(i32x8 *)(corner + p) = y0 * (SIDE + 2) + x0;
        }
        uint8_t *dst = out + b * PIXELS;
        for (int p = 0; p < PIXELS; p++) {
            const float *q = padded + corner[p];
            const float upper = q[0] + fx[p] * (q[1] - q[0]);
            const float lower = q[SIDE + 2] + fx[p] * (q[SIDE + 3] - q[SIDE + 2]);
            const float v = upper + fy[p] * (lower - upper) + 0.5f;
            dst[p] = (uint8_t)(v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f);
        }
    }
}

static PyObject *distort(PyObject *self, PyObject *args) {
    PyObject *out, *images, *inverse, *field_obj, *g;
    Py_ssize_t n;
    float alpha;
    if (!PyArg_ParseTuple(args, "OOOOOfn", &out, &images, &inverse, &field_obj, &g, &alpha, &n))
        return NULL;
    Py_buffer views[5];
    int held = 0;
    if (get_array(out, &views[held++], 1, "B", n * SIDE * SIDE, "out") < 0 ||
        get_array(images, &views[held++], 0, "B", n * SIDE * SIDE, "images") < 0 ||
        get_array(inverse, &views[held++], 0, "f", n * 6, "inverse") < 0 ||
        get_array(g, &views[held++], 0, "f", SIDE * SIDE, "g") < 0 ||
        (field_obj != Py_None && get_array(field_obj, &views[held++], 0, "f", 2 * n * SIDE * SIDE, "field") < 0))
        return release(views, held - 1, NULL);
    const float *field = field_obj != Py_None ? views[4].buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    distort_loop(views[0].buf, views[1].buf, views[2].buf, field, views[3].buf, alpha, n);
    Py_END_ALLOW_THREADS
    return release(views, held, Py_None);
}

/* ---- the module -------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"bias_relu", bias_relu, METH_VARARGS, "bias_relu(z, b, rows, cols): z = max(z + b, 0), in place."},
    {"backprop_relu", backprop_relu, METH_VARARGS,
     "backprop_relu(out, dz, w, a, rows, n, k): out = (dz @ w.T) * (a > 0)."},
    {"softmax_cross_entropy", softmax_cross_entropy, METH_VARARGS,
     "softmax_cross_entropy(logits, y, rows, k, smoothing) -> mean loss; logits become its gradient."},
    {"scale_pixels", scale_pixels, METH_VARARGS,
     "scale_pixels(out, images, rows, n_out, n_images, d, scale, offset): "
     "out = images[rows] * scale + offset."},
    {"gather_inked", gather_inked, METH_VARARGS,
     "gather_inked(values, cols, images, rows, n_out, n_images, d, scale, max_k) -> K: the batch's inked "
     "columns and their pixels * scale (gathered only when K <= max_k)."},
    {"update_inked", update_inked, METH_VARARGS,
     "update_inked(p, w, g, cols, v, s, n_in, n, k, decay, mu): p = decay * w - mu * p + v (+ g on the "
     "inked rows); s = p.sum(axis=0)."},
    {"distort", distort, METH_VARARGS,
     "distort(out, images, inverse, field, g, alpha, n): n 28x28 uint8 digits resampled at their affine "
     "(inverse: 6 floats each) and elastic (field: 2n uniform fields, blurred by g, times alpha) sources."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Compiled kernels of mnist_mlp.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "WIDE_VECTORS", wide_vectors_native()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
