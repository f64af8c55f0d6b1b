/* Native kernel of normscape.planeeval: the logits of a block of plane points, hidden activations never stored.

   For points p (coefficients a_p, b_p), hidden units k and samples s:

       z = Z0[k,s] + a_p Z1[k,s] + b_p Z2[k,s]
       z = z * rstd[p,g(k),s] + shift[p,g(k),s]      (LayerNorm/GroupNorm: per-sample statistics, if given)
       z = z / sqrt(z^2 + eps_p)                     (FRN, if eps is given)
       z = z * gamma[k] + beta[k]                    (affine, if given; per point when per_point)
       z = max(z, tau[k])                            (FRN's TLU, if given; per point when per_point)
       h[p,k,s] = max(z, 0)                          (ReLU)
       logits[p,c,s] = sum_k W2_p[c,k] h[p,k,s] + c2_p[c]

   The torch path of planeeval does the same with 3-6 elementwise ops, each a full read and write of the
   (points x hidden x samples) block (larger than L2), and a batched GEMM with only `classes` rows: those passes,
   not arithmetic, were the cost. Here h is computed for 64 samples at a time into a buffer that stays in cache,
   and the second layer accumulates 16 samples x 10 classes in registers. The GIL is released while computing.

   plane_logits(z0, z1, z2, a, b, logits, hidden, samples, shift, rstd, groups, eps, gamma, beta, tau, per_point,
                w2t, c2, classes, padded)
     z0, z1, z2   float32 (hidden, samples), C-contiguous
     a, b         float32 (points,)
     logits       writable float32 (points, classes, samples)
     shift, rstd  float32 (points, groups, samples), or empty buffers: no statistics
     eps          float32 (points,), or empty: no FRN
     gamma, beta  float32 (points, hidden) if per_point else (hidden,), or empty: no affine
     tau          float32 like gamma, or empty: no TLU
     w2t          float32 (points, hidden, padded): each point's second-layer weight, transposed, classes
                  zero-padded to `padded` (a multiple of TILE_CLASSES)
     c2           float32 (points, padded): each point's second-layer bias, padded likewise
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one build for every x86-64 CPU; the widest vector unit present is picked at load time */
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

typedef struct {
    const float *z0, *z1, *z2, *a, *b, *shift, *rstd, *eps, *gamma, *beta, *tau;
    float *out;
    int64_t points, hidden, samples, groups;
    int per_point;
} Plane;

/* h[0..n) of point p, unit k, samples s0..s0+n: the pipeline in the header comment */
static inline void hidden_row(const Plane *q, int64_t p, int64_t k, int64_t s0, int64_t n, float *restrict o) {
    const int64_t S = q->samples, H = q->hidden, per_group = H / q->groups;
    const float ap = q->a[p], bp = q->b[p];
    const float eps = q->eps ? q->eps[p] : 0.0f;
    const int64_t param = q->per_point ? p * H : 0;
    const float *restrict r0 = q->z0 + k * S + s0, *restrict r1 = q->z1 + k * S + s0, *restrict r2 = q->z2 + k * S + s0;
    const float gamma = q->gamma ? q->gamma[param + k] : 1.0f;
    const float beta = q->gamma ? q->beta[param + k] : 0.0f;
    const float tau = q->tau ? q->tau[param + k] : 0.0f;
    const float *restrict sh = q->shift ? q->shift + (p * q->groups + k / per_group) * S + s0 : NULL;
    const float *restrict rs = q->shift ? q->rstd + (p * q->groups + k / per_group) * S + s0 : NULL;
    if (sh && q->gamma) {
        for (int64_t s = 0; s < n; s++) {
            float z = r0[s] + ap * r1[s] + bp * r2[s];
            z = (z * rs[s] + sh[s]) * gamma + beta;
            o[s] = z > 0.0f ? z : 0.0f;
        }
    } else if (q->eps) {
        for (int64_t s = 0; s < n; s++) {
            float z = r0[s] + ap * r1[s] + bp * r2[s];
            z = z * (1.0f / sqrtf(z * z + eps));
            if (q->gamma) z = z * gamma + beta;
            if (q->tau) z = z > tau ? z : tau;
            o[s] = z > 0.0f ? z : 0.0f;
        }
    } else if (q->gamma) {
        for (int64_t s = 0; s < n; s++) {
            float z = (r0[s] + ap * r1[s] + bp * r2[s]) * gamma + beta;
            o[s] = z > 0.0f ? z : 0.0f;
        }
    } else if (sh) {
        for (int64_t s = 0; s < n; s++) {
            float z = (r0[s] + ap * r1[s] + bp * r2[s]) * rs[s] + sh[s];
            o[s] = z > 0.0f ? z : 0.0f;
        }
    } else {
        for (int64_t s = 0; s < n; s++) {
            float z = r0[s] + ap * r1[s] + bp * r2[s];
            o[s] = z > 0.0f ? z : 0.0f;
        }
    }
}

#define TILE_SAMPLES 16 /* one 512-bit vector of floats */
#define TILE_CLASSES 10 /* accumulators of one class tile: CIFAR-10's classes, in registers */
typedef float vfloat __attribute__((vector_size(TILE_SAMPLES * sizeof(float))));

#define TILE_HIDDEN 64 /* samples whose hidden activations are computed in one go (per-unit set-up amortised) */

/* logits[p, c, s] = sum_k w2t[p, k, c] h[p, k, s] + c2[p, c] for every point, class and sample: the hidden
   activations are computed TILE_HIDDEN samples at a time into a buffer that stays in L1/L2 and never reach memory;
   the second layer runs on TILE_SAMPLES x TILE_CLASSES register tiles */
VECTOR_CLONES
static void logits_block(const Plane *q, const float *w2t, const float *c2, int64_t classes, int64_t padded,
                         float *logits, float *hbuf /* hidden x TILE_HIDDEN scratch */) {
    const int64_t S = q->samples, H = q->hidden;
    for (int64_t p = 0; p < q->points; p++) {
        for (int64_t t0 = 0; t0 < S; t0 += TILE_HIDDEN) {
            const int64_t nt = S - t0 < TILE_HIDDEN ? S - t0 : TILE_HIDDEN;
            for (int64_t k = 0; k < H; k++) {
                hidden_row(q, p, k, t0, nt, hbuf + k * TILE_HIDDEN);
                for (int64_t l = nt; l < TILE_HIDDEN; l++) hbuf[k * TILE_HIDDEN + l] = 0.0f;
            }
            for (int64_t s0 = 0; s0 < nt; s0 += TILE_SAMPLES) {
                const int64_t n = nt - s0 < TILE_SAMPLES ? nt - s0 : TILE_SAMPLES;
                for (int64_t c0 = 0; c0 < padded; c0 += TILE_CLASSES) {
                    /* the class tile's accumulators as whole vectors (GCC vector extension), so they stay in
                       registers through the loop over the hidden units */
                    vfloat acc[TILE_CLASSES];
#pragma GCC unroll 16
                    for (int c = 0; c < TILE_CLASSES; c++) acc[c] = (vfloat){0} + c2[p * padded + c0 + c];
                    const float *w = w2t + p * H * padded + c0;
                    for (int64_t k = 0; k < H; k++) {
                        vfloat h;
                        memcpy(&h, hbuf + k * TILE_HIDDEN + s0, sizeof h);
                        const float *wk = w + k * padded;
#pragma GCC unroll 16
                        for (int c = 0; c < TILE_CLASSES; c++) acc[c] += wk[c] * h;
                    }
                    for (int64_t c = 0; c < TILE_CLASSES && c0 + c < classes; c++) {
                        float row[TILE_SAMPLES];
                        memcpy(row, &acc[c], sizeof row);
                        memcpy(logits + (p * classes + c0 + c) * S + t0 + s0, row, (size_t)n * sizeof(float));
                    }
                }
            }
        }
    }
}

/* a float32 buffer of exactly n elements, or (allow_empty) an empty one -> NULL; else an error message */
static const char *check(Py_buffer *buf, int64_t n, int allow_empty, const float **out) {
    if (allow_empty && buf->len == 0) {
        *out = NULL;
        return NULL;
    }
    if (buf->len != n * 4) return "a buffer has the wrong size for its shape";
    *out = (const float *)buf->buf;
    return NULL;
}

/* checks the plane's buffers (and the output's size, out_elements float32) and fills q; NULL or an error */
static const char *plane_from(Plane *q, Py_buffer *b, Py_ssize_t hidden, Py_ssize_t samples, Py_ssize_t groups,
                              int per_point, Py_buffer *out, int64_t out_elements) {
    /* b: z0, z1, z2, a, b, shift, rstd, eps, gamma, beta, tau */
    const char *error = NULL;
    q->hidden = hidden, q->samples = samples, q->groups = groups, q->per_point = per_point;
    q->points = b[3].len / 4;
    int64_t params = per_point ? q->points * hidden : hidden;
    if (hidden <= 0 || samples <= 0 || groups <= 0 || hidden % groups) error = "hidden and samples must be > 0, groups divide hidden";
    if (!error) error = check(&b[0], hidden * samples, 0, &q->z0);
    if (!error) error = check(&b[1], hidden * samples, 0, &q->z1);
    if (!error) error = check(&b[2], hidden * samples, 0, &q->z2);
    if (!error) error = check(&b[3], q->points, 0, &q->a);
    if (!error) error = check(&b[4], q->points, 0, &q->b);
    if (!error && out->len != out_elements * 4) error = "logits must hold points * classes * samples float32";
    if (!error) error = check(&b[5], q->points * groups * samples, 1, &q->shift);
    if (!error) error = check(&b[6], q->points * groups * samples, 1, &q->rstd);
    if (!error && (q->shift == NULL) != (q->rstd == NULL)) error = "shift and rstd go together";
    if (!error) error = check(&b[7], q->points, 1, &q->eps);
    if (!error) error = check(&b[8], params, 1, &q->gamma);
    if (!error) error = check(&b[9], params, 1, &q->beta);
    if (!error && (q->gamma == NULL) != (q->beta == NULL)) error = "gamma and beta go together";
    if (!error) error = check(&b[10], params, 1, &q->tau);
    q->out = (float *)out->buf;
    return error;
}

static PyObject *finish(Py_buffer *buffers, size_t n, const char *error) {
    for (size_t i = 0; i < n; i++) PyBuffer_Release(&buffers[i]);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *plane_logits(PyObject *self, PyObject *args) {
    Py_buffer b[11], out, w2t, c2;
    Py_ssize_t hidden, samples, groups, classes, padded;
    int per_point;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*nny*y*ny*y*y*y*py*y*nn", &b[0], &b[1], &b[2], &b[3], &b[4], &out, &hidden,
                          &samples, &b[5], &b[6], &groups, &b[7], &b[8], &b[9], &b[10], &per_point, &w2t, &c2, &classes,
                          &padded))
        return NULL;
    Plane q = {0};
    int64_t points = b[3].len / 4;
    const char *error = plane_from(&q, b, hidden, samples, groups, per_point, &out, points * classes * samples);
    if (!error && (classes <= 0 || padded < classes || padded % TILE_CLASSES))
        error = "padded must be >= classes and a multiple of the class tile";
    if (!error && (w2t.len != points * hidden * padded * 4 || c2.len != points * padded * 4))
        error = "w2t must hold points * hidden * padded and c2 points * padded float32";
    float *hbuf = NULL;
    if (!error && !(hbuf = (float *)malloc((size_t)hidden * TILE_HIDDEN * sizeof(float)))) error = "out of memory";
    if (!error) {
        Py_BEGIN_ALLOW_THREADS
        logits_block(&q, (const float *)w2t.buf, (const float *)c2.buf, classes, padded, q.out, hbuf);
        Py_END_ALLOW_THREADS
    }
    free(hbuf);
    PyBuffer_Release(&out);
    PyBuffer_Release(&w2t);
    PyBuffer_Release(&c2);
    return finish(b, 11, error);
}

static PyMethodDef methods[] = {
    {"plane_logits", plane_logits, METH_VARARGS,
     "plane_logits(z0, z1, z2, a, b, logits, hidden, samples, shift, rstd, groups, eps, gamma, beta, tau, per_point, "
     "w2t, c2, classes, padded): each point's second layer applied to its hidden activations, which are computed "
     "in tiles and never stored: logits (points, classes, samples)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planekernel", "Native plane-evaluation kernel.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__planekernel(void) { return PyModule_Create(&module); }
