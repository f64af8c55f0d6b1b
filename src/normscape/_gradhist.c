/* Native kernel of normscape.gradhist: the |grad| histogram of every gradient element, in one pass.

   The bin of |g| is the float32 bit pattern of |g| shifted right (see gradhist.py): clearing the sign bit and
   shifting gives the fine bin code, so a step's histogram is one read of the flat gradient and one counter
   increment per element. torch.bincount needs three extra passes for the same (abs, shift + offset, and its
   own min/max scans) and cannot keep hot counters apart; here four interleaved sub-histograms break the
   store-to-load chains on the few bins where most gradients fall. The GIL is released while counting.

   count_codes(values, segment_ends, shift, n_codes, counts)
     values        C-contiguous float32 buffer (the flat gradient), read as uint32 bit patterns
     segment_ends  int64 buffer: end offset (in elements) of each parameter's segment, ascending
     shift         right shift of the bit pattern giving the code, 0..31
     n_codes       codes per parameter: 1 << (31 - shift)
     counts        writable int64 buffer of n_segments * n_codes counters; codes are ADDED to it
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 4
/* uint32 sub-counters are flushed at least this often, so they cannot overflow */
#define CHUNK ((int64_t)1 << 30)

static void count_segment(const uint32_t *bits, int64_t n, int shift, int64_t n_codes, int64_t *counts,
                          uint32_t *lanes) {
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t end = n - start < CHUNK ? n : start + CHUNK;
        memset(lanes, 0, LANES * (size_t)n_codes * sizeof(uint32_t));
        uint32_t *c0 = lanes, *c1 = lanes + n_codes, *c2 = lanes + 2 * n_codes, *c3 = lanes + 3 * n_codes;
        int64_t i = start;
        for (; i + LANES <= end; i += LANES) {
            c0[(bits[i] & 0x7fffffffu) >> shift]++;
            c1[(bits[i + 1] & 0x7fffffffu) >> shift]++;
            c2[(bits[i + 2] & 0x7fffffffu) >> shift]++;
            c3[(bits[i + 3] & 0x7fffffffu) >> shift]++;
        }
        for (; i < end; i++) c0[(bits[i] & 0x7fffffffu) >> shift]++;
        for (int64_t k = 0; k < n_codes; k++)
            counts[k] += (int64_t)c0[k] + (int64_t)c1[k] + (int64_t)c2[k] + (int64_t)c3[k];
    }
}

static PyObject *count_codes(PyObject *self, PyObject *args) {
    Py_buffer values, ends, counts;
    int shift;
    Py_ssize_t n_codes;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*inw*", &values, &ends, &shift, &n_codes, &counts)) return NULL;
    const char *error = NULL;
    int64_t n_values = values.len / 4, n_segments = ends.len / 8;
    const int64_t *seg_end = (const int64_t *)ends.buf;
    if (values.len % 4 || ends.len % 8 || counts.len % 8) error = "buffers must hold float32 values and int64 ends/counts";
    else if (shift < 0 || shift > 31 || n_codes != ((Py_ssize_t)1 << (31 - shift))) error = "n_codes must be 1 << (31 - shift)";
    else if (counts.len / 8 != n_segments * (int64_t)n_codes) error = "counts must hold n_segments * n_codes int64";
    else if (n_segments && seg_end[n_segments - 1] > n_values) error = "segment ends run past the values";
    for (int64_t s = 0; !error && s < n_segments; s++)
        if (seg_end[s] < (s ? seg_end[s - 1] : 0)) error = "segment ends must ascend from >= 0";
    uint32_t *lanes = NULL;
    if (!error && !(lanes = malloc(LANES * (size_t)n_codes * sizeof(uint32_t)))) error = "out of memory";
    if (!error) {
        Py_BEGIN_ALLOW_THREADS
        const uint32_t *bits = (const uint32_t *)values.buf;
        int64_t *out = (int64_t *)counts.buf;
        int64_t start = 0;
        for (int64_t s = 0; s < n_segments; s++) {
            count_segment(bits + start, seg_end[s] - start, shift, n_codes, out + s * n_codes, lanes);
            start = seg_end[s];
        }
        Py_END_ALLOW_THREADS
    }
    free(lanes);
    PyBuffer_Release(&values);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&counts);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"count_codes", count_codes, METH_VARARGS,
     "count_codes(values, segment_ends, shift, n_codes, counts): add every value's |x| bit-pattern code "
     "(bits & 0x7fffffff) >> shift to its segment's counters."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gradhist", "Native |grad| histogram kernel.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__gradhist(void) { return PyModule_Create(&module); }
