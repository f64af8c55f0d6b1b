/* Native kernel of normscape.planeeval: the hidden activations of a block of plane points in ONE pass.

   For points p (coefficients a_p, b_p), hidden units k and samples s:

       z = Z0[k,s] + a_p Z1[k,s] + b_p Z2[k,s]
       z = z * rstd[p,g(k),s] + shift[p,g(k),s]      (LayerNorm/GroupNorm: per-sample statistics, if given)
       z = z / sqrt(z^2 + eps_p)                     (FRN, if eps is given)
       z = z * gamma[k] + beta[k]                    (affine, if given; per point when per_point)
       z = max(z, tau[k])                            (FRN's TLU, if given; per point when per_point)
       out[p,k,s] = max(z, 0)                        (ReLU)

   The torch path of planeeval does the same with 3-6 separate elementwise ops, each a full read and write of the
   (points x hidden x samples) block, which does not fit in L2: those passes, not arithmetic, were the cost.
   Here every element is written once. The GIL is released while computing.

   plane_hidden(z0, z1, z2, a, b, out, hidden, samples, shift, rstd, groups, eps, gamma, beta, tau, per_point)
     z0, z1, z2   float32 (hidden, samples), C-contiguous
     a, b         float32 (points,)
     out          writable float32 (points, hidden, samples)
     shift, rstd  float32 (points, groups, samples), or empty buffers: no statistics
     eps          float32 (points,), or empty: no FRN
     gamma, beta  float32 (points, hidden) if per_point else (hidden,), or empty: no affine
     tau          float32 like gamma, or empty: no TLU
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

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

VECTOR_CLONES
static void hidden_block(const Plane *q) {
    const int64_t S = q->samples, H = q->hidden, per_group = H / q->groups;
    for (int64_t p = 0; p < q->points; p++) {
        const float ap = q->a[p], bp = q->b[p];
        const float eps = q->eps ? q->eps[p] : 0.0f;
        const int64_t param = q->per_point ? p * H : 0;
        for (int64_t k = 0; k < H; k++) {
            const float *restrict r0 = q->z0 + k * S, *restrict r1 = q->z1 + k * S, *restrict r2 = q->z2 + k * S;
            float *restrict o = q->out + (p * H + k) * S;
            const float gamma = q->gamma ? q->gamma[param + k] : 1.0f;
            const float beta = q->gamma ? q->beta[param + k] : 0.0f;
            const float tau = q->tau ? q->tau[param + k] : 0.0f;
            const float *restrict sh = q->shift ? q->shift + (p * q->groups + k / per_group) * S : NULL;
            const float *restrict rs = q->shift ? q->rstd + (p * q->groups + k / per_group) * S : NULL;
            if (sh && q->gamma) { /* LayerNorm / GroupNorm */
                for (int64_t s = 0; s < S; s++) {
                    float z = r0[s] + ap * r1[s] + bp * r2[s];
                    z = (z * rs[s] + sh[s]) * gamma + beta;
                    o[s] = z > 0.0f ? z : 0.0f;
                }
            } else if (q->eps) { /* FRN (+ affine and TLU) */
                for (int64_t s = 0; s < S; s++) {
                    float z = r0[s] + ap * r1[s] + bp * r2[s];
                    z = z * (1.0f / sqrtf(z * z + eps));
                    if (q->gamma) z = z * gamma + beta;
                    if (q->tau) z = z > tau ? z : tau;
                    o[s] = z > 0.0f ? z : 0.0f;
                }
            } else if (q->gamma) { /* a per-unit affine map (BatchNorm's running statistics, gamma/beta moving) */
                for (int64_t s = 0; s < S; s++) {
                    float z = (r0[s] + ap * r1[s] + bp * r2[s]) * gamma + beta;
                    o[s] = z > 0.0f ? z : 0.0f;
                }
            } else if (sh) { /* statistics without affine */
                for (int64_t s = 0; s < S; s++) {
                    float z = (r0[s] + ap * r1[s] + bp * r2[s]) * rs[s] + sh[s];
                    o[s] = z > 0.0f ? z : 0.0f;
                }
            } else { /* no norm, or BatchNorm folded into Z0..Z2 */
                for (int64_t s = 0; s < S; s++) {
                    float z = r0[s] + ap * r1[s] + bp * r2[s];
                    o[s] = z > 0.0f ? z : 0.0f;
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

static PyObject *plane_hidden(PyObject *self, PyObject *args) {
    Py_buffer z0, z1, z2, a, b, out, shift, rstd, eps, gamma, beta, tau;
    Py_ssize_t hidden, samples, groups;
    int per_point;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*nny*y*ny*y*y*y*p", &z0, &z1, &z2, &a, &b, &out, &hidden, &samples, &shift,
                          &rstd, &groups, &eps, &gamma, &beta, &tau, &per_point))
        return NULL;
    Plane q = {0};
    const char *error = NULL;
    q.hidden = hidden, q.samples = samples, q.groups = groups, q.per_point = per_point;
    q.points = a.len / 4;
    int64_t params = per_point ? q.points * hidden : hidden;
    if (hidden <= 0 || samples <= 0 || groups <= 0 || hidden % groups) error = "hidden and samples must be > 0, groups divide hidden";
    if (!error) error = check(&z0, hidden * samples, 0, &q.z0);
    if (!error) error = check(&z1, hidden * samples, 0, &q.z1);
    if (!error) error = check(&z2, hidden * samples, 0, &q.z2);
    if (!error) error = check(&b, q.points, 0, &q.b);
    if (!error) error = check(&a, q.points, 0, &q.a);
    if (!error && out.len != q.points * hidden * samples * 4) error = "out must hold points * hidden * samples float32";
    if (!error) error = check(&shift, q.points * groups * samples, 1, &q.shift);
    if (!error) error = check(&rstd, q.points * groups * samples, 1, &q.rstd);
    if (!error && (q.shift == NULL) != (q.rstd == NULL)) error = "shift and rstd go together";
    if (!error) error = check(&eps, q.points, 1, &q.eps);
    if (!error) error = check(&gamma, params, 1, &q.gamma);
    if (!error) error = check(&beta, params, 1, &q.beta);
    if (!error && (q.gamma == NULL) != (q.beta == NULL)) error = "gamma and beta go together";
    if (!error) error = check(&tau, params, 1, &q.tau);
    if (!error) {
        q.out = (float *)out.buf;
        Py_BEGIN_ALLOW_THREADS
        hidden_block(&q);
        Py_END_ALLOW_THREADS
    }
    Py_buffer *all[] = {&z0, &z1, &z2, &a, &b, &out, &shift, &rstd, &eps, &gamma, &beta, &tau};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) PyBuffer_Release(all[i]);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"plane_hidden", plane_hidden, METH_VARARGS,
     "plane_hidden(z0, z1, z2, a, b, out, hidden, samples, shift, rstd, groups, eps, gamma, beta, tau, per_point): "
     "ReLU(norm(Z0 + a Z1 + b Z2)) of a block of plane points into out, in one pass."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planekernel", "Native plane-evaluation kernel.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__planekernel(void) { return PyModule_Create(&module); }
