/* Compiled versions of six small passes of a training step; see mnist_mlp/kernels.py.
 *
 * Each function fuses what NumPy does in several passes into one, with the same arithmetic;
 * the NumPy code in model.py and data.py stays the definition, and tests check that the two
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

/* Rows i and i + 1 (only i if `pair` is 0), columns j0 .. j0 + 31. Eight independent sums keep
 * both FMA units busy (one alone would wait for each addition to finish), and every weight
 * loaded serves two rows. */
INLINE void backprop_block(float *out, const float *dz, const float *panel, const float *a,
                           Py_ssize_t i, int pair, Py_ssize_t j0, Py_ssize_t n, Py_ssize_t k) {
    f32x8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, t0 = {0}, t1 = {0}, t2 = {0}, t3 = {0};
    const float *d = dz + i * k, *e = pair ? d + k : d;
    for (Py_ssize_t c = 0; c < k; c++) {
        const f32x8 *w = (const f32x8 *)(panel + c * 32);
        const f32x8 w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        const float dc = d[c], ec = e[c];
        s0 += dc * w0;
        s1 += dc * w1;
        s2 += dc * w2;
        s3 += dc * w3;
        t0 += ec * w0;
        t1 += ec * w1;
        t2 += ec * w2;
        t3 += ec * w3;
    }
    const f32x8 *ai = (const f32x8 *)(a + i * n + j0);
    f32x8 *o = (f32x8 *)(out + i * n + j0);
    o[0] = where_positive(ai[0], s0);
    o[1] = where_positive(ai[1], s1);
    o[2] = where_positive(ai[2], s2);
    o[3] = where_positive(ai[3], s3);
    if (pair) {
        ai = (const f32x8 *)(a + (i + 1) * n + j0);
        o = (f32x8 *)(out + (i + 1) * n + j0);
        o[0] = where_positive(ai[0], t0);
        o[1] = where_positive(ai[1], t1);
        o[2] = where_positive(ai[2], t2);
        o[3] = where_positive(ai[3], t3);
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

/* Overwrites logits (rows, k) with (softmax - onehot(y)) / rows; returns the mean cross-entropy. */
static PyObject *softmax_cross_entropy(PyObject *self, PyObject *args) {
    PyObject *logits, *labels;
    Py_ssize_t rows, k;
    if (!PyArg_ParseTuple(args, "OOnn", &logits, &labels, &rows, &k))
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
    const float inv_n = 1.0f / (float)rows;
    for (Py_ssize_t i = 0; i < rows; i++) {
        float *z = (float *)views[0].buf + i * k;
        float top = z[0];
        for (Py_ssize_t c = 1; c < k; c++)
            top = z[c] > top ? z[c] : top;
        /* shifted so that the largest logit is 0: exp cannot overflow */
        const float true_logit = z[y[i]] - top;
        float total = 0.0f;
        for (Py_ssize_t c = 0; c < k; c++) {
            z[c] = expf(z[c] - top);
            total += z[c];
        }
        loss += (double)logf(total) - (double)true_logit;
        const float scale = inv_n / total;
        for (Py_ssize_t c = 0; c < k; c++)
            z[c] *= scale;
        z[y[i]] -= inv_n;
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

/* ---- the module -------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"bias_relu", bias_relu, METH_VARARGS, "bias_relu(z, b, rows, cols): z = max(z + b, 0), in place."},
    {"backprop_relu", backprop_relu, METH_VARARGS,
     "backprop_relu(out, dz, w, a, rows, n, k): out = (dz @ w.T) * (a > 0)."},
    {"softmax_cross_entropy", softmax_cross_entropy, METH_VARARGS,
     "softmax_cross_entropy(logits, y, rows, k) -> mean loss; logits become its gradient."},
    {"scale_pixels", scale_pixels, METH_VARARGS,
     "scale_pixels(out, images, rows, n_out, n_images, d, scale, offset): "
     "out = images[rows] * scale + offset."},
    {"gather_inked", gather_inked, METH_VARARGS,
     "gather_inked(values, cols, images, rows, n_out, n_images, d, scale, max_k) -> K: the batch's inked "
     "columns and their pixels * scale (gathered only when K <= max_k)."},
    {"update_inked", update_inked, METH_VARARGS,
     "update_inked(p, w, g, cols, v, s, n_in, n, k, decay, mu): p = decay * w - mu * p + v (+ g on the "
     "inked rows); s = p.sum(axis=0)."},
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
