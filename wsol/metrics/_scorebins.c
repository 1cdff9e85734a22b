/*
 * Score histograms over the PxAP bins, exactly as np.histogram counts them (see
 * wsol/metrics/histograms.py): bin i of the ascending float64 edges e holds the scores with
 * e_i <= s < e_{i+1}; scores below e_0 go to bin 0 and at or above the last edge to the last bin
 * (the clamp of the vectorized path; valid maps never get there). A float32 score is promoted
 * to double, which is exact, so every comparison is the one NumPy makes.
 *
 * The bin is found from a guess and a walk: for a uniform sweep (edges k * step below 1), the
 * guess floor(s / step) is at most one bin off; otherwise a binary search. labels: 1 counts
 * into fg, 0 into bg, anything else is skipped. Runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static Py_ssize_t bin_of(double s, const double *edges, Py_ssize_t n_bins, double step) {
    Py_ssize_t g;
    if (step > 0) {
        double q = s / step;
        g = (q >= 0 && q < (double)n_bins) ? (Py_ssize_t)q : (q >= (double)n_bins ? n_bins - 1 : 0);
    } else {  /* largest g with edges[g] <= s, by bisection over [0, n_bins - 1] */
        Py_ssize_t lo = 0, hi = n_bins - 1;
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo + 1) / 2;
            if (edges[mid] <= s) lo = mid; else hi = mid - 1;
        }
        g = lo;
    }
    while (g > 0 && s < edges[g]) g--;
    while (g < n_bins - 1 && s >= edges[g + 1]) g++;
    return g;
}

static PyObject *score_bins(PyObject *self, PyObject *args) {
    Py_buffer scores, labels, edges, fg, bg;
    int is_double;
    double step;
    if (!PyArg_ParseTuple(args, "y*py*y*dw*w*", &scores, &is_double, &labels, &edges, &step, &fg,
                          &bg))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t item = is_double ? 8 : 4;
    Py_ssize_t n = scores.len / item, n_edges = edges.len / 8, n_bins = n_edges - 1;
    if (scores.len % item || labels.len != n || edges.len % 8 || n_bins < 1
        || fg.len != 8 * n_bins || bg.len != 8 * n_bins) {
        PyErr_SetString(PyExc_ValueError, "score_bins: buffer sizes do not match");
        goto done;
    }
    const double *e = edges.buf;
    for (Py_ssize_t i = 0; i + 1 < n_edges; i++)
        if (!(e[i] <= e[i + 1])) {
            PyErr_SetString(PyExc_ValueError, "score_bins: edges must be ascending");
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *lab = labels.buf;
    int64_t *out_fg = fg.buf, *out_bg = bg.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lab[i] > 1) continue;
        double s = is_double ? ((const double *)scores.buf)[i] : (double)((const float *)scores.buf)[i];
        Py_ssize_t g = bin_of(s, e, n_bins, step);
        if (lab[i]) out_fg[g]++; else out_bg[g]++;
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&scores); PyBuffer_Release(&labels); PyBuffer_Release(&edges);
    PyBuffer_Release(&fg); PyBuffer_Release(&bg);
    return result;
}

static PyMethodDef methods[] = {
    {"score_bins", score_bins, METH_VARARGS,
     "score_bins(scores, is_double, labels, edges, step, fg, bg): add the histograms of the "
     "scores labelled 1 (fg) and 0 (bg) over the bins of edges (see wsol.metrics.histograms)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scorebins",
                                    "Exact score histograms (C).", -1, methods};

PyMODINIT_FUNC PyInit__scorebins(void) { return PyModule_Create(&module); }
