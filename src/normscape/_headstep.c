/* Native kernel of normscape.headstep: one training step of the head after its first layer, forward and backward.

   The head is Linear -> Norm -> ReLU -> Linear on a batch of ~64 rows and 256 hidden units: everything after
   the first layer is ~1 MFLOP, while torch spends a dispatch and an autograd node on each of its ~20 small ops
   (together about a third of a step). Here it is one call: from the first layer's pre-activations z to the
   loss, the number of correct predictions, dL/dz and the gradients of the norm and the second layer, written
   into the trainer's flat gradient buffer. The first layer's two GEMMs stay with torch (they are at the
   core's peak there). Reductions run in a fixed order: a run is bit-reproducible on one machine; against
   torch's kernels the results agree to float32 rounding (tests/test_headstep.py).

   step(rule, groups, eps, momentum, z, labels, w2, b2, norm_params, running, dz, db1, dw2, db2, norm_grads)
     rule        0 identity, 1 batch (BatchNorm, training mode), 2 moments (LayerNorm = 1 group, GroupNorm),
                 3 frn (FilterResponseNorm + TLU on (N, C): x / sqrt(x^2 + eps), learned eps optional)
     groups      groups of hidden units (rule 2)
     eps         the norm's epsilon (rule 3: the fixed part; the effective one adds |eps_l|)
     momentum    BatchNorm's running-statistics momentum (rule 1)
     z           float32 (N, H) pre-activations, C-contiguous
     labels      int64 (N,) class indices in [0, C)
     w2, b2      float32 (C, H) and (C,): the second layer
     norm_params tuple of float32 buffers: () | (gamma, beta) | (gamma, beta, tau) | (gamma, beta, tau, eps_l)
     running     () or (running_mean, running_var) float32 (H,), updated in place (rule 1)
     dz, db1     float32 (N, H) and (H,) outputs: dL/dz and the first layer's bias gradient
     dw2, db2    float32 (C, H), (C,) outputs
     norm_grads  writable buffers shaped like norm_params, written
   returns (mean cross-entropy loss, correct predictions); the GIL is released while computing.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { RULE_IDENTITY = 0, RULE_BATCH = 1, RULE_MOMENTS = 2, RULE_FRN = 3 };
#define MAX_PARAMS 4

typedef struct {
    int rule;
    int64_t n, h, c, groups;
    double eps, momentum;
    const float *z, *w2, *b2;
    const int64_t *labels;
    const float *param[MAX_PARAMS]; /* gamma, beta, tau, eps_l */
    float *running_mean, *running_var;
    float *dz, *db1, *dw2, *db2;
    float *grad[MAX_PARAMS];
} Step;

/* one copy per instruction set, chosen at load time: the loops over hidden units vectorise as wide as the CPU
   allows (results may differ in the last bit between machines, never between runs on one) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define WIDEST_SIMD __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define WIDEST_SIMD
#endif

/* Normalise z into zhat and apply the affine / TLU: act = the norm's output (before the ReLU). */
WIDEST_SIMD static void norm_forward(const Step *s, float *zhat, float *act, float *stat, float *r) {
    const int64_t n = s->n, h = s->h;
    const float *z = s->z, *gamma = s->param[0], *beta = s->param[1];
    if (s->rule == RULE_IDENTITY) {
        memcpy(act, z, (size_t)(n * h) * sizeof(float));
    } else if (s->rule == RULE_BATCH) {
        float *mean = stat, *invstd = stat + h, *var = stat + 2 * h;
        for (int64_t j = 0; j < h; j++) mean[j] = var[j] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) mean[j] += z[i * h + j];
        for (int64_t j = 0; j < h; j++) mean[j] /= (float)n;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                float d = z[i * h + j] - mean[j];
                var[j] += d * d;
            }
        for (int64_t j = 0; j < h; j++) {
            var[j] /= (float)n; /* biased: what normalises the batch */
            invstd[j] = 1.0f / sqrtf(var[j] + (float)s->eps);
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                zhat[i * h + j] = (z[i * h + j] - mean[j]) * invstd[j];
                act[i * h + j] = gamma[j] * zhat[i * h + j] + beta[j];
            }
        /* running statistics as torch's BatchNorm: the unbiased variance, exponential average by momentum */
        const float keep = (float)(1.0 - s->momentum), take = (float)s->momentum;
        const float unbias = (float)n / (float)(n - 1);
        for (int64_t j = 0; j < h; j++) {
            s->running_mean[j] = keep * s->running_mean[j] + take * mean[j];
            s->running_var[j] = keep * s->running_var[j] + take * (var[j] * unbias);
        }
    } else if (s->rule == RULE_MOMENTS) {
        const int64_t size = h / s->groups;
        for (int64_t i = 0; i < n; i++)
            for (int64_t g = 0; g < s->groups; g++) {
                const float *zg = z + i * h + g * size;
                float mean = 0.0f, var = 0.0f;
                for (int64_t j = 0; j < size; j++) mean += zg[j];
                mean /= (float)size;
                for (int64_t j = 0; j < size; j++) var += (zg[j] - mean) * (zg[j] - mean);
                var /= (float)size;
                float invstd = 1.0f / sqrtf(var + (float)s->eps);
                stat[i * s->groups + g] = invstd;
                for (int64_t j = 0; j < size; j++) {
                    int64_t k = i * h + g * size + j;
                    zhat[k] = (zg[j] - mean) * invstd;
                    act[k] = gamma[g * size + j] * zhat[k] + beta[g * size + j];
                }
            }
    } else { /* RULE_FRN: per element, nu2 = z^2 on (N, C) */
        const float *tau = s->param[2];
        const float eps = (float)s->eps + (s->param[3] ? fabsf(s->param[3][0]) : 0.0f);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                int64_t k = i * h + j;
                r[k] = 1.0f / sqrtf(z[k] * z[k] + eps);
                zhat[k] = z[k] * r[k];
                float y = gamma[j] * zhat[k] + beta[j];
                stat[k] = y; /* before the TLU: its backward compares y with tau */
                /* torch.maximum: NaN in either input gives NaN */
                act[k] = (y != y || tau[j] != tau[j]) ? y + tau[j] : (y > tau[j] ? y : tau[j]);
            }
    }
}

/* dL/d(act) in dact -> dL/dz, the norm's parameter gradients and the first layer's bias gradient. */
WIDEST_SIMD static void norm_backward(const Step *s, const float *zhat, float *dact, const float *stat,
                                      const float *r) {
    const int64_t n = s->n, h = s->h;
    const float *gamma = s->param[0];
    float *dz = s->dz, *dgamma = s->grad[0], *dbeta = s->grad[1];
    if (s->rule == RULE_IDENTITY) {
        memcpy(dz, dact, (size_t)(n * h) * sizeof(float));
    } else if (s->rule == RULE_BATCH) {
        const float *invstd = stat + h;
        for (int64_t j = 0; j < h; j++) dgamma[j] = dbeta[j] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                dbeta[j] += dact[i * h + j];
                dgamma[j] += dact[i * h + j] * zhat[i * h + j];
            }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                float scale = gamma[j] * invstd[j] / (float)n;
                dz[i * h + j] = scale * ((float)n * dact[i * h + j] - dbeta[j] - zhat[i * h + j] * dgamma[j]);
            }
    } else if (s->rule == RULE_MOMENTS) {
        const int64_t size = h / s->groups;
        for (int64_t j = 0; j < h; j++) dgamma[j] = dbeta[j] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                dbeta[j] += dact[i * h + j];
                dgamma[j] += dact[i * h + j] * zhat[i * h + j];
                dact[i * h + j] *= gamma[j]; /* now dL/d(zhat) */
            }
        for (int64_t i = 0; i < n; i++)
            for (int64_t g = 0; g < s->groups; g++) {
                const int64_t base = i * h + g * size;
                float sum = 0.0f, dot = 0.0f;
                for (int64_t j = 0; j < size; j++) {
                    sum += dact[base + j];
                    dot += dact[base + j] * zhat[base + j];
                }
                const float scale = stat[i * s->groups + g] / (float)size;
                for (int64_t j = 0; j < size; j++)
                    dz[base + j] = scale * ((float)size * dact[base + j] - sum - zhat[base + j] * dot);
            }
    } else { /* RULE_FRN */
        const float *tau = s->param[2];
        float *dtau = s->grad[2];
        const float eps = (float)s->eps + (s->param[3] ? fabsf(s->param[3][0]) : 0.0f);
        double deps = 0.0; /* a sum over every element: kept in double, its terms cancel */
        for (int64_t j = 0; j < h; j++) dgamma[j] = dbeta[j] = dtau[j] = 0.0f;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < h; j++) {
                int64_t k = i * h + j;
                /* torch.maximum's backward: the larger input takes the gradient, a tie splits it */
                float y = stat[k], g = dact[k];
                float dy = y > tau[j] ? g : (y < tau[j] ? 0.0f : 0.5f * g);
                dtau[j] += g - dy;
                dgamma[j] += dy * zhat[k];
                dbeta[j] += dy;
                float dzhat = dy * gamma[j], r3 = r[k] * r[k] * r[k];
                dz[k] = dzhat * eps * r3;            /* d(z r)/dz = eps r^3 */
                deps -= 0.5 * (double)(dzhat * s->z[k] * r3); /* d(z r)/d eps = -z r^3 / 2 */
            }
        if (s->param[3]) { /* eps = eps_fixed + |eps_l|: d|x|/dx = sign(x), 0 at 0 (torch's abs) */
            float e = s->param[3][0];
            s->grad[3][0] = (float)(e > 0 ? deps : (e < 0 ? -deps : 0.0));
        }
    }
    for (int64_t j = 0; j < h; j++) s->db1[j] = 0.0f;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < h; j++) s->db1[j] += dz[i * h + j];
}

/* ReLU, the second layer, cross-entropy and its backward to dL/d(act). Returns the summed loss. */
WIDEST_SIMD static double classifier(const Step *s, float *act, float *logits, int64_t *correct) {
    const int64_t n = s->n, h = s->h, c = s->c;
    double loss = 0.0;
    *correct = 0;
    /* ReLU as torch's clamp_min(0): NaN stays NaN (a diverging run must show it in its loss) */
    for (int64_t k = 0; k < n * h; k++) act[k] = act[k] < 0.0f ? 0.0f : act[k];
    for (int64_t i = 0; i < n; i++) {
        float *row = logits + i * c;
        for (int64_t o = 0; o < c; o++) {
            const float *w = s->w2 + o * h, *a = act + i * h;
            float acc[16] = {0};
            int64_t j = 0;
            for (; j + 16 <= h; j += 16)
                for (int l = 0; l < 16; l++) acc[l] += a[j + l] * w[j + l];
            float dot = 0.0f;
            for (int l = 0; l < 16; l++) dot += acc[l];
            for (; j < h; j++) dot += a[j] * w[j];
            row[o] = dot + s->b2[o];
        }
        int64_t best = 0;
        for (int64_t o = 1; o < c; o++)
            if (row[o] > row[best]) best = o; /* the first maximum, as argmax */
        const int64_t y = s->labels[i];
        *correct += best == y;
        const float top = row[best];
        float total = 0.0f;
        for (int64_t o = 0; o < c; o++) total += expf(row[o] - top);
        loss += (double)(logf(total) + top - row[y]);
        /* dL/dlogits of the batch mean: (softmax - onehot) / n, kept in the logits buffer */
        for (int64_t o = 0; o < c; o++) row[o] = (expf(row[o] - top) / total - (o == y ? 1.0f : 0.0f)) / (float)n;
    }
    float *dw2 = s->dw2, *db2 = s->db2;
    memset(dw2, 0, (size_t)(c * h) * sizeof(float));
    for (int64_t o = 0; o < c; o++) db2[o] = 0.0f;
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < c; o++) {
            const float d = logits[i * c + o];
            db2[o] += d;
            for (int64_t j = 0; j < h; j++) dw2[o * h + j] += d * act[i * h + j];
        }
    /* dL/d(act) through the ReLU (zero where its output is zero), written over act */
    float *dact = act;
    for (int64_t i = 0; i < n; i++) {
        float *g = s->dz; /* scratch row: dz is written only by norm_backward, after this */
        for (int64_t j = 0; j < h; j++) g[j] = 0.0f;
        for (int64_t o = 0; o < c; o++) {
            const float d = logits[i * c + o], *w = s->w2 + o * h;
            for (int64_t j = 0; j < h; j++) g[j] += d * w[j];
        }
        for (int64_t j = 0; j < h; j++) dact[i * h + j] = act[i * h + j] <= 0.0f ? 0.0f : g[j]; /* threshold_backward */
    }
    return loss;
}

/* The buffer's element type: float32 ('f') or int64 ('l' / 'q' with 8-byte items), byte-order prefix ignored. */
static int is_type(const Py_buffer *view, char type) {
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (type == 'f') return f[0] == 'f' && f[1] == 0 && view->itemsize == 4;
    return (f[0] == 'l' || f[0] == 'q') && f[1] == 0 && view->itemsize == 8;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t items, char type, const char *name) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (!is_type(view, type) || view->len != items * view->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd %s values", name, items, type == 'f' ? "float32" : "int64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *step(PyObject *self, PyObject *args) {
    (void)self;
    int rule;
    Py_ssize_t groups;
    double eps, momentum;
    PyObject *z_obj, *labels_obj, *w2_obj, *b2_obj, *params_obj, *running_obj, *dz_obj, *db1_obj, *dw2_obj,
        *db2_obj, *grads_obj;
    if (!PyArg_ParseTuple(args, "inddOOOOO!O!OOOOO!", &rule, &groups, &eps, &momentum, &z_obj, &labels_obj,
                          &w2_obj, &b2_obj, &PyTuple_Type, &params_obj, &PyTuple_Type, &running_obj, &dz_obj,
                          &db1_obj, &dw2_obj, &db2_obj, &PyTuple_Type, &grads_obj))
        return NULL;
    static const int n_params[] = {0, 2, 2, 3};
    if (rule < RULE_IDENTITY || rule > RULE_FRN) {
        PyErr_SetString(PyExc_ValueError, "rule must be 0 (identity), 1 (batch), 2 (moments) or 3 (frn)");
        return NULL;
    }
    Py_ssize_t np_ = PyTuple_GET_SIZE(params_obj);
    if (!(np_ == n_params[rule] || (rule == RULE_FRN && np_ == 4)) || PyTuple_GET_SIZE(grads_obj) != np_ ||
        PyTuple_GET_SIZE(running_obj) != (rule == RULE_BATCH ? 2 : 0)) {
        PyErr_SetString(PyExc_ValueError, "norm_params / norm_grads / running do not fit the rule");
        return NULL;
    }
    /* shapes from z (N, H) and w2 (C, H) */
    Py_buffer z, labels, w2, b2, dz, db1, dw2, db2, params[MAX_PARAMS], grads[MAX_PARAMS], running[2];
    Py_buffer *held[8 + 2 * MAX_PARAMS + 2];
    int n_held = 0;
    Step s = {0};
    PyObject *result = NULL;
    float *work = NULL;
    if (PyObject_GetBuffer(z_obj, &z, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    held[n_held++] = &z;
    if (z.ndim != 2 || !is_type(&z, 'f')) {
        PyErr_SetString(PyExc_ValueError, "z must be a float32 (N, H) array");
        goto done;
    }
    s.rule = rule;
    s.n = z.shape[0];
    s.h = z.shape[1];
    if (PyObject_GetBuffer(w2_obj, &w2, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    held[n_held++] = &w2;
    if (w2.ndim != 2 || !is_type(&w2, 'f') || w2.shape[1] != s.h || w2.shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError, "w2 must be a float32 (C, H) array");
        goto done;
    }
    s.c = w2.shape[0];
    s.groups = groups;
    s.eps = eps;
    s.momentum = momentum;
    if (s.n < 1 || s.h < 1 || (rule == RULE_BATCH && s.n < 2) ||
        (rule == RULE_MOMENTS && (groups < 1 || s.h % groups))) {
        PyErr_SetString(PyExc_ValueError, "empty batch, a batch of one row under BatchNorm, or groups not dividing H");
        goto done;
    }
    if (get_buffer(labels_obj, &labels, 0, s.n, 'l', "labels") < 0) goto done;
    held[n_held++] = &labels;
    if (get_buffer(b2_obj, &b2, 0, s.c, 'f', "b2") < 0) goto done;
    held[n_held++] = &b2;
    if (get_buffer(dz_obj, &dz, 1, s.n * s.h, 'f', "dz") < 0) goto done;
    held[n_held++] = &dz;
    if (get_buffer(db1_obj, &db1, 1, s.h, 'f', "db1") < 0) goto done;
    held[n_held++] = &db1;
    if (get_buffer(dw2_obj, &dw2, 1, s.c * s.h, 'f', "dw2") < 0) goto done;
    held[n_held++] = &dw2;
    if (get_buffer(db2_obj, &db2, 1, s.c, 'f', "db2") < 0) goto done;
    held[n_held++] = &db2;
    for (Py_ssize_t k = 0; k < np_; k++) {
        Py_ssize_t items = k == 3 ? 1 : s.h; /* eps_l is one number */
        if (get_buffer(PyTuple_GET_ITEM(params_obj, k), &params[k], 0, items, 'f', "a norm parameter") < 0) goto done;
        held[n_held++] = &params[k];
        if (get_buffer(PyTuple_GET_ITEM(grads_obj, k), &grads[k], 1, items, 'f', "a norm gradient") < 0) goto done;
        held[n_held++] = &grads[k];
        s.param[k] = params[k].buf;
        s.grad[k] = grads[k].buf;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(running_obj); k++) {
        if (get_buffer(PyTuple_GET_ITEM(running_obj, k), &running[k], 1, s.h, 'f', "a running statistic") < 0) goto done;
        held[n_held++] = &running[k];
    }
    const int64_t *label = labels.buf;
    for (int64_t i = 0; i < s.n; i++)
        if (label[i] < 0 || label[i] >= s.c) {
            PyErr_Format(PyExc_ValueError, "label %lld outside [0, %lld)", (long long)label[i], (long long)s.c);
            goto done;
        }
    s.z = z.buf;
    s.labels = label;
    s.w2 = w2.buf;
    s.b2 = b2.buf;
    s.dz = dz.buf;
    s.db1 = db1.buf;
    s.dw2 = dw2.buf;
    s.db2 = db2.buf;
    if (rule == RULE_BATCH) {
        s.running_mean = running[0].buf;
        s.running_var = running[1].buf;
    }
    /* scratch: zhat, act, r (N x H each), logits (N x C), statistics (max of 3 H, N x groups, N x H) */
    const int64_t nh = s.n * s.h, stats = 3 * s.h > nh ? 3 * s.h : nh;
    if (!(work = malloc((size_t)(3 * nh + s.n * s.c + stats) * sizeof(float)))) {
        PyErr_NoMemory();
        goto done;
    }
    double loss;
    int64_t correct;
    Py_BEGIN_ALLOW_THREADS
    float *zhat = work, *act = work + nh, *r = work + 2 * nh, *logits = work + 3 * nh, *stat = logits + s.n * s.c;
    norm_forward(&s, zhat, act, stat, r);
    loss = classifier(&s, act, logits, &correct);
    norm_backward(&s, zhat, act, stat, r);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("dL", loss / (double)s.n, (long long)correct);
done:
    free(work);
    for (int k = 0; k < n_held; k++) PyBuffer_Release(held[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"step", step, METH_VARARGS,
     "step(rule, groups, eps, momentum, z, labels, w2, b2, norm_params, running, dz, db1, dw2, db2, norm_grads) "
     "-> (mean loss, correct): the head's forward and backward after its first layer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_headstep",
                                    "Native training step of the head after its first layer.", -1, methods};

PyMODINIT_FUNC PyInit__headstep(void) { return PyModule_Create(&module); }
