/*
 * Per-level best box IoU of all the nested binarizations of a uint8 map, from one component
 * tree per map instead of one contour trace per level (see wsol/localization/leveltree.py for
 * the derivation and the exactness argument).
 *
 * For a uint8 image img (H x W), ascending levels L_0 < ... < L_{n-1} and GT boxes G, level k
 * has the foreground F_k = {img > L_k}. Two union-find passes:
 *
 *   - foreground, 8-connected, pixels added in decreasing value: after all pixels > L_k are in,
 *     the sets are the 8-connected components of F_k (outer contours of RETR_TREE); each keeps
 *     its bounding box (inclusive pixel coordinates);
 *   - background, 4-connected, pixels added in increasing value: after all pixels <= L_k are
 *     in, the sets are the 4-connected components of the complement; those not touching the
 *     image border are the holes (hole contours of RETR_TREE).
 *
 * The box of a contour (wsolevaluation): (x, y, min(x + w, W - 1), min(y + h, H - 1)) from
 * its bounding rectangle. An outer contour's points are border pixels of its component, so its
 * rectangle is the component's bounding box. A hole's contour runs through the foreground
 * pixels 4-adjacent to the hole, so its rectangle is the hole's bounding box grown by one pixel
 * on every side.
 *
 * Outputs per level k: fg_max[k] / fg_min[k] (max / min over components of the best IoU of the
 * component's box with G), fg_count[k] (number of components), hole_max[k] (max over holes, -1
 * when there is none). IoU exactly as wsolevaluation's calculate_multiple_iou, in double.
 *
 * The computation runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t *parent;
    int32_t *size;
    int32_t *x0, *y0, *x1, *y1;
    uint8_t *flag;   /* foreground: dirty; background: touches the border */
    uint8_t *dirty;
    double *iou;
    int32_t *roots;  /* candidate roots, compacted at every snapshot */
    Py_ssize_t n_roots;
} Forest;

static int32_t find_root(int32_t *parent, int32_t p) {
    int32_t r = p;
    while (parent[r] != r) r = parent[r];
    while (parent[p] != r) { int32_t next = parent[p]; parent[p] = r; p = next; }
    return r;
}

static void unite(Forest *f, int32_t a, int32_t b) {
    int32_t ra = find_root(f->parent, a), rb = find_root(f->parent, b);
    if (ra == rb) return;
    if (f->size[ra] < f->size[rb]) { int32_t t = ra; ra = rb; rb = t; }
    f->parent[rb] = ra;
    f->size[ra] += f->size[rb];
    if (f->x0[rb] < f->x0[ra]) f->x0[ra] = f->x0[rb];
    if (f->y0[rb] < f->y0[ra]) f->y0[ra] = f->y0[rb];
    if (f->x1[rb] > f->x1[ra]) f->x1[ra] = f->x1[rb];
    if (f->y1[rb] > f->y1[ra]) f->y1[ra] = f->y1[rb];
    f->flag[ra] |= f->flag[rb];
    f->dirty[ra] = 1;
}

/* Best IoU of box (bx0, by0, bx1, by1) with the GT boxes (inclusive pixel boxes). */
static double best_iou(int64_t bx0, int64_t by0, int64_t bx1, int64_t by1,
                       const int64_t *gt, Py_ssize_t n_gt) {
    double best = 0.0;
    int64_t area_b = (bx1 - bx0 + 1) * (by1 - by0 + 1);
    for (Py_ssize_t g = 0; g < n_gt; g++) {
        const int64_t *q = gt + 4 * g;
        int64_t iw = (bx1 < q[2] ? bx1 : q[2]) - (bx0 > q[0] ? bx0 : q[0]) + 1;
        int64_t ih = (by1 < q[3] ? by1 : q[3]) - (by0 > q[1] ? by0 : q[1]) + 1;
        int64_t inter = (iw > 0 ? iw : 0) * (ih > 0 ? ih : 0);
        int64_t uni = area_b + (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - inter;
        double v = uni > 0 ? (double)inter / (double)uni : 1.0;
        if (v > best || g == 0) best = v;
    }
    return best;
}

static int forest_alloc(Forest *f, Py_ssize_t n) {
    memset(f, 0, sizeof(*f));
    f->parent = malloc(n * sizeof(int32_t));
    f->size = malloc(n * sizeof(int32_t));
    f->x0 = malloc(n * sizeof(int32_t));
    f->y0 = malloc(n * sizeof(int32_t));
    f->x1 = malloc(n * sizeof(int32_t));
    f->y1 = malloc(n * sizeof(int32_t));
    f->flag = malloc(n);
    f->dirty = malloc(n);
    f->iou = malloc(n * sizeof(double));
    f->roots = malloc(n * sizeof(int32_t));
    if (!f->parent || !f->size || !f->x0 || !f->y0 || !f->x1 || !f->y1 || !f->flag
        || !f->dirty || !f->iou || !f->roots)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) f->parent[i] = -1;
    return 0;
}

static void forest_free(Forest *f) {
    free(f->parent); free(f->size); free(f->x0); free(f->y0); free(f->x1); free(f->y1);
    free(f->flag); free(f->dirty); free(f->iou); free(f->roots);
}

static void add_pixel(Forest *f, int32_t p, int32_t x, int32_t y, uint8_t flag) {
    f->parent[p] = p;
    f->size[p] = 1;
    f->x0[p] = f->x1[p] = x;
    f->y0[p] = f->y1[p] = y;
    f->flag[p] = flag;
    f->dirty[p] = 1;
    f->roots[f->n_roots++] = p;
}

static int run(const uint8_t *img, Py_ssize_t h, Py_ssize_t w, const int64_t *levels,
               Py_ssize_t n_levels, const int64_t *gt, Py_ssize_t n_gt, double *fg_max,
               double *fg_min, int64_t *fg_count, double *hole_max) {
    Py_ssize_t n = h * w;
    Py_ssize_t start[257];
    int32_t *order = malloc((n > 0 ? n : 1) * sizeof(int32_t));
    Forest f;
    if (!order || forest_alloc(&f, n > 0 ? n : 1) < 0) { free(order); forest_free(&f); return -1; }
    /* Counting sort of the pixels by value: order[start[v]:start[v+1]] have value v. */
    Py_ssize_t hist[256] = {0};
    for (Py_ssize_t i = 0; i < n; i++) hist[img[i]]++;
    start[0] = 0;
    for (int v = 0; v < 256; v++) start[v + 1] = start[v] + hist[v];
    {
        Py_ssize_t pos[256];
        memcpy(pos, start, sizeof(pos));
        for (Py_ssize_t i = 0; i < n; i++) order[pos[img[i]]++] = (int32_t)i;
    }
    const int dx8[8] = {-1, 0, 1, -1, 1, -1, 0, 1}, dy8[8] = {-1, -1, -1, 0, 0, 1, 1, 1};
    const int dx4[4] = {0, -1, 1, 0}, dy4[4] = {-1, 0, 0, 1};

    /* Foreground: levels from the top down; pixels > L_k join before the snapshot of k. */
    int v_next = 255;  /* pixels with value > v_next are in */
    for (Py_ssize_t k = n_levels - 1; k >= 0; k--) {
        int64_t lv = levels[k];
        for (; v_next > lv && v_next >= 0; v_next--) {
            for (Py_ssize_t i = start[v_next]; i < start[v_next + 1]; i++) {
                int32_t p = order[i];
                int32_t x = (int32_t)(p % w), y = (int32_t)(p / w);
                add_pixel(&f, p, x, y, 0);
                for (int d = 0; d < 8; d++) {
                    int32_t nx = x + dx8[d], ny = y + dy8[d];
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    int32_t q = ny * (int32_t)w + nx;
                    if (f.parent[q] >= 0) unite(&f, p, q);
                }
            }
        }
        double mx = -1.0, mn = 2.0;
        Py_ssize_t kept = 0;
        for (Py_ssize_t r = 0; r < f.n_roots; r++) {
            int32_t p = f.roots[r];
            if (f.parent[p] != p) continue;
            f.roots[kept++] = p;
            if (f.dirty[p]) {
                f.iou[p] = best_iou(f.x0[p], f.y0[p], f.x1[p] + 1 < w ? f.x1[p] + 1 : w - 1,
                                    f.y1[p] + 1 < h ? f.y1[p] + 1 : h - 1, gt, n_gt);
                f.dirty[p] = 0;
            }
            if (f.iou[p] > mx) mx = f.iou[p];
            if (f.iou[p] < mn) mn = f.iou[p];
        }
        f.n_roots = kept;
        fg_max[k] = mx;
        fg_min[k] = mn;
        fg_count[k] = kept;
    }

    /* Background (holes): levels from the bottom up; pixels <= L_k join before snapshot k. */
    for (Py_ssize_t i = 0; i < n; i++) f.parent[i] = -1;
    f.n_roots = 0;
    int v_in = -1;  /* pixels with value <= v_in are in */
    for (Py_ssize_t k = 0; k < n_levels; k++) {
        int64_t lv = levels[k] < 255 ? levels[k] : 255;
        for (; v_in < lv; ) {
            v_in++;
            for (Py_ssize_t i = start[v_in]; i < start[v_in + 1]; i++) {
                int32_t p = order[i];
                int32_t x = (int32_t)(p % w), y = (int32_t)(p / w);
                add_pixel(&f, p, x, y, (x == 0 || y == 0 || x == w - 1 || y == h - 1));
                for (int d = 0; d < 4; d++) {
                    int32_t nx = x + dx4[d], ny = y + dy4[d];
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    int32_t q = ny * (int32_t)w + nx;
                    if (f.parent[q] >= 0) unite(&f, p, q);
                }
            }
        }
        double mx = -1.0;
        Py_ssize_t kept = 0;
        for (Py_ssize_t r = 0; r < f.n_roots; r++) {
            int32_t p = f.roots[r];
            if (f.parent[p] != p || f.flag[p]) continue;  /* merged, or open to the outside */
            f.roots[kept++] = p;
            if (f.dirty[p]) {
                int64_t x1 = f.x1[p] + 2, y1 = f.y1[p] + 2;
                f.iou[p] = best_iou(f.x0[p] - 1, f.y0[p] - 1, x1 < w ? x1 : w - 1,
                                    y1 < h ? y1 : h - 1, gt, n_gt);
                f.dirty[p] = 0;
            }
            if (f.iou[p] > mx) mx = f.iou[p];
        }
        f.n_roots = kept;
        hole_max[k] = mx;
    }
    free(order);
    forest_free(&f);
    return 0;
}

static int check_buffer(Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t count, const char *name) {
    if (b->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "level_ious: %s has %zd bytes, expected %zd", name,
                     b->len, itemsize * count);
        return -1;
    }
    return 0;
}

static PyObject *level_ious(PyObject *self, PyObject *args) {
    Py_buffer img, levels, gt, fg_max, fg_min, fg_count, hole_max;
    Py_ssize_t h, w;
    if (!PyArg_ParseTuple(args, "y*nny*y*w*w*w*w*", &img, &h, &w, &levels, &gt, &fg_max,
                          &fg_min, &fg_count, &hole_max))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_levels = levels.len / 8, n_gt = gt.len / 32;
    int rc = 0;
    if (h <= 0 || w <= 0 || h * w > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "level_ious: bad map size");
        goto done;
    }
    if (check_buffer(&img, 1, h * w, "img") || check_buffer(&levels, 8, n_levels, "levels")
        || check_buffer(&gt, 32, n_gt, "gt") || check_buffer(&fg_max, 8, n_levels, "fg_max")
        || check_buffer(&fg_min, 8, n_levels, "fg_min")
        || check_buffer(&fg_count, 8, n_levels, "fg_count")
        || check_buffer(&hole_max, 8, n_levels, "hole_max"))
        goto done;
    if (n_gt == 0) {
        PyErr_SetString(PyExc_ValueError, "level_ious: at least one GT box is needed");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = run((const uint8_t *)img.buf, h, w, (const int64_t *)levels.buf, n_levels,
             (const int64_t *)gt.buf, n_gt, (double *)fg_max.buf, (double *)fg_min.buf,
             (int64_t *)fg_count.buf, (double *)hole_max.buf);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&img); PyBuffer_Release(&levels); PyBuffer_Release(&gt);
    PyBuffer_Release(&fg_max); PyBuffer_Release(&fg_min); PyBuffer_Release(&fg_count);
    PyBuffer_Release(&hole_max);
    return result;
}

static PyMethodDef methods[] = {
    {"level_ious", level_ious, METH_VARARGS,
     "level_ious(img, h, w, levels, gt, fg_max, fg_min, fg_count, hole_max): per-level best "
     "IoU of the components and holes of img > level (see wsol.localization.leveltree)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_leveltree",
                                    "Component trees of nested binarizations (C).", -1, methods};

PyMODINIT_FUNC PyInit__leveltree(void) { return PyModule_Create(&module); }
