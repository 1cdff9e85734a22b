/*
 * Per-level best box IoU of all the nested binarizations of uint8 maps, from one component
 * tree per map instead of one contour trace per level (wsol/localization/leveltree.py has the
 * derivation and the exactness argument).
 *
 * For a uint8 image img (H x W), ascending levels L_0 < ... < L_{n-1} and GT boxes G, level k
 * has the foreground F_k = {img > L_k}. Two union-find passes:
 *
 *   - foreground, 8-connected, pixels added in decreasing value: once all pixels > L_k are in,
 *     the sets are the 8-connected components of F_k (the outer contours of RETR_TREE); each
 *     keeps its bounding box (inclusive pixel coordinates) and its number of interior pixels
 *     (pixels of F_k off the image edge whose 3x3 neighbourhood lies in F_k: the pixels with
 *     erosion(img) > L_k, counted when the level passes their erosion value);
 *   - background, 4-connected, pixels added in increasing value: once all pixels <= L_k are
 *     in, the sets are the 4-connected components of the complement; those not touching the
 *     image edge are the holes (the hole contours of RETR_TREE).
 *
 * The box of a contour (wsolevaluation): (x, y, min(x + w, W - 1), min(y + h, H - 1)) from
 * its bounding rectangle. An outer contour's points are edge pixels of its component, so its
 * rectangle is the component's bounding box. A hole's contour runs through the foreground
 * pixels 4-adjacent to the hole, so its rectangle is the hole's bounding box grown by one pixel
 * on every side.
 *
 * Bounds on an outer contour's cv2.contourArea A. Its polygon joins 8-adjacent edge pixels'
 * centres, so the only lattice points on it are its own pixels, and it lies in the rectangle
 * of its vertices: A <= (x1 - x0)(y1 - y0). Every interior pixel is a lattice point strictly
 * inside it, and a face of the polygon holding i lattice points strictly inside has area
 * i + b/2 - 1 >= i + 1/2 (Pick, b >= 3 on its boundary): A >= I, the interior pixel count.
 * At a level without holes (no background component off the image edge) every component is
 * simply connected and its polygon lies in the union of the closed unit squares of its pixels,
 * so also A <= its pixel count (the background pass runs first to know the levels with holes).
 * A component whose upper bound is below another's lower bound cannot hold the largest contour.
 *
 * Outputs per level (row-major (5, total levels) doubles, and one int64 count):
 *   0 fg_max, 1 fg_min: max / min over the components of their box's best IoU with G;
 *   2 hole_max: max over the holes (-1 when there is none);
 *   3 v1_max, 4 v1_min: the same over the components that can hold the largest contour
 *     (upper bound >= the largest lower bound);
 *   count: the number of components. Empty foreground: fg_max = v1_max = -1, fg_min = v1_min = 2.
 * IoU exactly as wsolevaluation's calculate_multiple_iou, in double.
 *
 * The computation runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#endif

/* Per pixel: its parent (a dense array, read for every neighbour of every pixel) and, for the
 * pixels that are the root of a set, the set's data (20 bytes: coordinates fit 16 bits, maps
 * are at most MAX_SIDE pixels a side). A pixel that joins an existing set never writes its own
 * node: only the pixels that start a set do. */
#define MAX_SIDE 65535

typedef struct {
    int32_t size;          /* pixels */
    int32_t inner;         /* interior pixels (foreground pass) */
    uint16_t x0, y0, x1, y1;
    uint8_t rank;          /* union by rank */
    uint8_t edge;          /* touches the image edge (background pass) */
    uint8_t dirty;         /* box changed since its IoU was computed */
    uint8_t pad;
} Node;

typedef struct {
    int32_t *parent;       /* -1: not added yet */
    Node *node;
    double *iou;
    int32_t *roots;        /* candidate roots, compacted at every snapshot */
    Py_ssize_t n_roots;
} Forest;

typedef struct {
    Forest f;
    int32_t *order, *oxy;       /* pixels sorted by value, with their coordinates y << 16 | x */
    int32_t *order_e;           /* pixels sorted by erosion value */
    uint8_t *erosion, *rowmin;
} Work;

/* Index of the lowest set bit of a nonzero mask. */
#if defined(_MSC_VER)
#include <intrin.h>
static inline int lowest_bit(unsigned m) { unsigned long i; _BitScanForward(&i, m); return (int)i; }
#else
static inline int lowest_bit(unsigned m) { return __builtin_ctz(m); }
#endif

static int32_t find_root(int32_t *parent, int32_t p) {
    int32_t r = p;
    while (parent[r] != r) r = parent[r];
    while (parent[p] != r) { int32_t next = parent[p]; parent[p] = r; p = next; }
    return r;
}

/* Merge the sets of roots ra != rb; returns the new root. */
static int32_t merge_sets(int32_t *parent, Node *node, int32_t ra, int32_t rb) {
    Node *a = node + ra, *b = node + rb;
    if (a->rank < b->rank) { Node *t = a; a = b; b = t; int32_t u = ra; ra = rb; rb = u; }
    parent[rb] = ra;
    if (a->rank == b->rank) a->rank++;
    a->size += b->size;
    a->inner += b->inner;
    if (b->x0 < a->x0) a->x0 = b->x0;
    if (b->y0 < a->y0) a->y0 = b->y0;
    if (b->x1 > a->x1) a->x1 = b->x1;
    if (b->y1 > a->y1) a->y1 = b->y1;
    a->edge |= b->edge;
    a->dirty = 1;
    return ra;
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

static void work_free(Work *wk) {
    free(wk->f.parent); free(wk->f.node); free(wk->f.iou); free(wk->f.roots);
    free(wk->order); free(wk->oxy); free(wk->order_e); free(wk->erosion);
    free(wk->rowmin);
}

static int work_alloc(Work *wk, Py_ssize_t n) {
    Forest *f = &wk->f;
    memset(wk, 0, sizeof(*wk));
    if (n < 1) n = 1;
    f->parent = malloc(n * sizeof(int32_t));
    f->node = malloc(n * sizeof(Node));
    f->iou = malloc(n * sizeof(double));
    f->roots = malloc(n * sizeof(int32_t));
    wk->order = malloc(n * sizeof(int32_t));
    wk->oxy = malloc(n * sizeof(int32_t));
    wk->order_e = malloc(n * sizeof(int32_t));
    wk->erosion = malloc(n);
    wk->rowmin = malloc(n);
    if (!f->parent || !f->node || !f->iou || !f->roots || !wk->order || !wk->oxy || !wk->order_e
        || !wk->erosion || !wk->rowmin) {
        work_free(wk);
        memset(wk, 0, sizeof(*wk));
        return -1;
    }
    return 0;
}

/* Workspaces are kept per thread between calls (up to CACHED_PIXELS pixels): allocating ~40
 * bytes per pixel afresh for every map costs page faults comparable to the work itself. A
 * thread's workspace is freed when the thread exits. */
#define CACHED_PIXELS ((Py_ssize_t)1 << 22)

#ifndef _WIN32
typedef struct {
    Work wk;
    Py_ssize_t capacity;
} CachedWork;

static pthread_key_t work_key;
static pthread_once_t work_key_once = PTHREAD_ONCE_INIT;
static int work_key_ok = 0;

static void cached_work_free(void *ptr) {
    CachedWork *c = ptr;
    work_free(&c->wk);
    free(c);
}

static void make_work_key(void) { work_key_ok = pthread_key_create(&work_key, cached_work_free) == 0; }
#endif

/* A workspace for maps of n pixels: the thread's cached one, or a fresh one (*owned = 1, to be
 * released with work_free). NULL when out of memory. */
static Work *get_work(Py_ssize_t n, Work *fresh, int *owned) {
    *owned = 0;
#ifndef _WIN32
    if (n <= CACHED_PIXELS) {
        pthread_once(&work_key_once, make_work_key);
        if (work_key_ok) {
            CachedWork *c = pthread_getspecific(work_key);
            if (c != NULL && c->capacity >= n) return &c->wk;
            if (c == NULL) {
                c = calloc(1, sizeof(*c));
                if (c == NULL || pthread_setspecific(work_key, c) != 0) { free(c); return NULL; }
            }
            work_free(&c->wk);
            c->capacity = 0;
            /* Grow to the largest map size seen so far (at least 224 x 224). */
            Py_ssize_t want = n > 224 * 224 ? n : 224 * 224;
            if (work_alloc(&c->wk, want) < 0) return NULL;
            c->capacity = want;
            return &c->wk;
        }
    }
#endif
    if (work_alloc(fresh, n) < 0) return NULL;
    *owned = 1;
    return fresh;
}

/* Run fn(wk, i, ctx) for maps i = 0 .. b - 1 of n pixels each, on one workspace (get_work),
 * without the GIL. Returns -1 (no exception set) when out of memory. */
typedef void (*MapFn)(Work *wk, Py_ssize_t i, void *ctx);

static int for_each_map(Py_ssize_t n, Py_ssize_t b, MapFn fn, void *ctx) {
    Work fresh;
    int owned = 0, rc = 0;
    Py_BEGIN_ALLOW_THREADS
    Work *wk = get_work(n, &fresh, &owned);
    if (wk == NULL) {
        rc = -1;
    } else {
        for (Py_ssize_t i = 0; i < b; i++) fn(wk, i, ctx);
        if (owned) work_free(wk);
    }
    Py_END_ALLOW_THREADS
    return rc;
}

/* Add pixel p = (x, y) to the root rp of the set it joins (rp < 0: none, p starts a set). */
static int32_t attach_pixel(Forest *f, int32_t p, int32_t rp, int32_t x, int32_t y,
                            uint8_t edge) {
    if (rp < 0) {
        Node *q = f->node + p;
        f->parent[p] = p;
        q->size = 1;
        q->inner = 0;
        q->x0 = q->x1 = (uint16_t)x;
        q->y0 = q->y1 = (uint16_t)y;
        q->rank = 0;
        q->edge = edge;
        q->dirty = 1;
        f->roots[f->n_roots++] = p;
        return p;
    }
    Node *r = f->node + rp;
    f->parent[p] = rp;
    r->size++;
    if (r->rank == 0) r->rank = 1;
    if (x < r->x0) r->x0 = (uint16_t)x;
    if (x > r->x1) r->x1 = (uint16_t)x;
    if (y < r->y0) r->y0 = (uint16_t)y;
    if (y > r->y1) r->y1 = (uint16_t)y;
    r->edge |= edge;
    r->dirty = 1;
    return rp;
}

/* Add pixel p = (x, y) to the 4-connected background forest, joining its added neighbours. */
static void add_pixel4(Forest *f, int32_t p, int32_t x, int32_t y, Py_ssize_t w, Py_ssize_t h) {
    int32_t *parent = f->parent;
    const int32_t off[4] = {-(int32_t)w, -1, 1, (int32_t)w};
    unsigned mask;
    if (x > 0 && y > 0 && x + 1 < w && y + 1 < h) {
        mask = (unsigned)(parent[p - w] >= 0) | (unsigned)(parent[p - 1] >= 0) << 1
               | (unsigned)(parent[p + 1] >= 0) << 2 | (unsigned)(parent[p + w] >= 0) << 3;
    } else {
        mask = (unsigned)(y > 0 && parent[p - w] >= 0) | (unsigned)(x > 0 && parent[p - 1] >= 0) << 1
               | (unsigned)(x + 1 < w && parent[p + 1] >= 0) << 2
               | (unsigned)(y + 1 < h && parent[p + w] >= 0) << 3;
    }
    uint8_t edge = x == 0 || y == 0 || x == w - 1 || y == h - 1;
    if (!mask) {
        attach_pixel(f, p, -1, x, y, edge);
        return;
    }
    int32_t rp = attach_pixel(f, p, find_root(parent, p + off[lowest_bit(mask)]), x, y, edge);
    for (mask &= mask - 1; mask; mask &= mask - 1) {
        int32_t rq = find_root(parent, p + off[lowest_bit(mask)]);
        if (rq != rp) rp = merge_sets(parent, f->node, rp, rq);
    }
}

/* Add pixel p = (x, y) to the 8-connected foreground forest. The neighbours in ring order (NW,
 * N, NE, E, SE, S, SW, W) are each 8-adjacent to the next, so a run of added neighbours along
 * the ring is already one set (they were joined when the later of them was added): one find per
 * run instead of one per neighbour. The added neighbours are a bit mask; the runs start at the
 * bits whose predecessor on the ring is clear. */
static void add_pixel8(Forest *f, int32_t p, int32_t x, int32_t y, Py_ssize_t w, Py_ssize_t h) {
    static const int rx[8] = {-1, 0, 1, 1, 1, 0, -1, -1}, ry[8] = {-1, -1, -1, 0, 1, 1, 1, 0};
    int32_t *parent = f->parent;
    const int32_t wi = (int32_t)w;
    const int32_t off[8] = {-wi - 1, -wi, -wi + 1, 1, wi + 1, wi, wi - 1, -1};
    unsigned mask = 0;
    if (x > 0 && y > 0 && x + 1 < w && y + 1 < h) {
        for (int d = 0; d < 8; d++) mask |= (unsigned)(parent[p + off[d]] >= 0) << d;
    } else {
        for (int d = 0; d < 8; d++) {
            int32_t nx = x + rx[d], ny = y + ry[d];
            mask |= (unsigned)(nx >= 0 && ny >= 0 && nx < w && ny < h && parent[p + off[d]] >= 0)
                    << d;
        }
    }
    if (!mask) {
        attach_pixel(f, p, -1, x, y, 0);
        return;
    }
    unsigned starts = mask & ~((mask << 1 | mask >> 7) & 0xffu);
    if (!starts) {  /* all eight added: one run around the whole ring */
        attach_pixel(f, p, find_root(parent, p + off[0]), x, y, 0);
        return;
    }
    int32_t rp = attach_pixel(f, p, find_root(parent, p + off[lowest_bit(starts)]), x, y, 0);
    for (starts &= starts - 1; starts; starts &= starts - 1) {
        int32_t rq = find_root(parent, p + off[lowest_bit(starts)]);
        if (rq != rp) rp = merge_sets(parent, f->node, rp, rq);
    }
}

/* 3x3 minimum of img at pixels off the image edge; 0 on the edge (never interior). */
static void erode(const uint8_t *img, Py_ssize_t h, Py_ssize_t w, uint8_t *rowmin,
                  uint8_t *out) {
    for (Py_ssize_t y = 0; y < h; y++) {
        const uint8_t *r = img + y * w;
        uint8_t *m = rowmin + y * w;
        m[0] = 0;
        if (w > 1) m[w - 1] = 0;
        for (Py_ssize_t x = 1; x + 1 < w; x++) {
            uint8_t v = r[x - 1] < r[x] ? r[x - 1] : r[x];
            m[x] = v < r[x + 1] ? v : r[x + 1];
        }
    }
    memset(out, 0, (size_t)(h * w));
    for (Py_ssize_t y = 1; y + 1 < h; y++)
        for (Py_ssize_t x = 1; x + 1 < w; x++) {
            uint8_t a = rowmin[(y - 1) * w + x], b = rowmin[y * w + x], c = rowmin[(y + 1) * w + x];
            uint8_t v = a < b ? a : b;
            out[y * w + x] = v < c ? v : c;
        }
}

static void one_map(Work *wk, const uint8_t *img, Py_ssize_t h, Py_ssize_t w,
                    const int64_t *levels, Py_ssize_t n_levels, const int64_t *gt,
                    Py_ssize_t n_gt, Py_ssize_t stride, double *out, int64_t *fg_count) {
    Forest *f = &wk->f;
    Py_ssize_t n = h * w;
    Py_ssize_t start[257], start_e[257];
    Py_ssize_t hist[256] = {0}, hist_e[256] = {0};
    erode(img, h, w, wk->rowmin, wk->erosion);
    for (Py_ssize_t i = 0; i < n; i++) { hist[img[i]]++; hist_e[wk->erosion[i]]++; }
    start[0] = start_e[0] = 0;
    for (int v = 0; v < 256; v++) {
        start[v + 1] = start[v] + hist[v];
        start_e[v + 1] = start_e[v] + hist_e[v];
    }
    {   /* Counting sorts; with each pixel its coordinates, so the passes need no division. */
        Py_ssize_t pos[256], pos_e[256];
        memcpy(pos, start, sizeof(pos));
        memcpy(pos_e, start_e, sizeof(pos_e));
        Py_ssize_t i = 0;
        for (int32_t y = 0; y < (int32_t)h; y++)
            for (int32_t x = 0; x < (int32_t)w; x++, i++) {
                Py_ssize_t at = pos[img[i]]++;
                wk->order[at] = (int32_t)i;
                wk->oxy[at] = y << 16 | x;
                wk->order_e[pos_e[wk->erosion[i]]++] = (int32_t)i;
            }
    }
    double *fg_max = out, *fg_min = out + stride, *hole_max = out + 2 * stride;
    double *v1_max = out + 3 * stride, *v1_min = out + 4 * stride;

    /* Background (holes): levels from the bottom up; pixels <= L_k join before snapshot k. */
    memset(f->parent, 0xff, (size_t)n * sizeof(int32_t));
    f->n_roots = 0;
    int v_in = -1;  /* pixels with value <= v_in are in */
    for (Py_ssize_t k = 0; k < n_levels; k++) {
        int64_t lv = levels[k] < 255 ? levels[k] : 255;
        while (v_in < lv) {
            v_in++;
            for (Py_ssize_t i = start[v_in]; i < start[v_in + 1]; i++)
                add_pixel4(f, wk->order[i], wk->oxy[i] & 0xffff, wk->oxy[i] >> 16, w, h);
        }
        double mx = -1.0;
        Py_ssize_t kept = 0;
        for (Py_ssize_t r = 0; r < f->n_roots; r++) {
            int32_t p = f->roots[r];
            if (f->parent[p] != p || f->node[p].edge) continue;  /* merged, or open to the outside */
            f->roots[kept++] = p;
            if (f->node[p].dirty) {
                int64_t x1 = f->node[p].x1 + 2, y1 = f->node[p].y1 + 2;
                f->iou[p] = best_iou(f->node[p].x0 - 1, f->node[p].y0 - 1, x1 < w ? x1 : w - 1,
                                     y1 < h ? y1 : h - 1, gt, n_gt);
                f->node[p].dirty = 0;
            }
            if (f->iou[p] > mx) mx = f->iou[p];
        }
        f->n_roots = kept;
        hole_max[k] = mx;
    }

    /* Foreground: levels from the top down; pixels > L_k join before the snapshot of k. */
    memset(f->parent, 0xff, (size_t)n * sizeof(int32_t));  /* -1: not added */
    f->n_roots = 0;
    int v_next = 255;    /* pixels with value > v_next are in */
    int e_next = 255;    /* pixels with erosion > e_next are counted as interior */
    for (Py_ssize_t k = n_levels - 1; k >= 0; k--) {
        int64_t lv = levels[k];
        for (; v_next > lv && v_next >= 0; v_next--) {
            for (Py_ssize_t i = start[v_next]; i < start[v_next + 1]; i++)
                add_pixel8(f, wk->order[i], wk->oxy[i] & 0xffff, wk->oxy[i] >> 16, w, h);
        }
        /* erosion <= img, so a pixel counted here has joined above; value 0 never counts */
        for (; e_next > lv && e_next >= 1; e_next--)
            for (Py_ssize_t i = start_e[e_next]; i < start_e[e_next + 1]; i++)
                f->node[find_root(f->parent, wk->order_e[i])].inner++;
        double mx = -1.0, mn = 2.0;
        int64_t largest_lower = 0;
        Py_ssize_t kept = 0;
        for (Py_ssize_t r = 0; r < f->n_roots; r++) {
            int32_t p = f->roots[r];
            if (f->parent[p] != p) continue;
            f->roots[kept++] = p;
            if (f->node[p].dirty) {
                f->iou[p] = best_iou(f->node[p].x0, f->node[p].y0,
                                     f->node[p].x1 + 1 < w ? f->node[p].x1 + 1 : w - 1,
                                     f->node[p].y1 + 1 < h ? f->node[p].y1 + 1 : h - 1, gt, n_gt);
                f->node[p].dirty = 0;
            }
            if (f->iou[p] > mx) mx = f->iou[p];
            if (f->iou[p] < mn) mn = f->iou[p];
            if (f->node[p].inner > largest_lower) largest_lower = f->node[p].inner;
        }
        f->n_roots = kept;
        double cmx = -1.0, cmn = 2.0;
        for (Py_ssize_t r = 0; r < kept; r++) {
            int32_t p = f->roots[r];
            int64_t upper = (int64_t)(f->node[p].x1 - f->node[p].x0) * (int64_t)(f->node[p].y1 - f->node[p].y0);
            /* Without a hole at this level every component is simply connected: its contour
             * polygon lies in the union of its pixels' unit squares, so A <= its size. */
            if (hole_max[k] < 0 && f->node[p].size < upper) upper = f->node[p].size;
            if (upper < largest_lower) continue;  /* smaller than some other contour */
            if (f->iou[p] > cmx) cmx = f->iou[p];
            if (f->iou[p] < cmn) cmn = f->iou[p];
        }
        fg_max[k] = mx;
        fg_min[k] = mn;
        v1_max[k] = cmx;
        v1_min[k] = cmn;
        fg_count[k] = kept;
    }

}

static int check_buffer(Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t count, const char *name) {
    if (b->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "level_ious: %s has %zd bytes, expected %zd", name,
                     b->len, itemsize * count);
        return -1;
    }
    return 0;
}

/* Offsets (B + 1 int64) must start at 0, not decrease (strictly increase if nonempty) and end
 * at total. */
static int check_offsets(const int64_t *off, Py_ssize_t b, Py_ssize_t total, int nonempty,
                         const char *name) {
    if (off[0] != 0 || off[b] != total) goto bad;
    for (Py_ssize_t i = 0; i < b; i++)
        if (off[i + 1] < off[i] + (nonempty ? 1 : 0)) goto bad;
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "level_ious: bad %s", name);
    return -1;
}

typedef struct {
    const uint8_t *img;
    Py_ssize_t h, w;
    const int64_t *levels, *level_off, *gt, *gt_off;
    Py_ssize_t n_levels;
    double *out;
    int64_t *count;
} LevelArgs;

static void level_map(Work *wk, Py_ssize_t i, void *ctx) {
    const LevelArgs *a = ctx;
    one_map(wk, a->img + i * a->h * a->w, a->h, a->w, a->levels + a->level_off[i],
            (Py_ssize_t)(a->level_off[i + 1] - a->level_off[i]), a->gt + 4 * a->gt_off[i],
            (Py_ssize_t)(a->gt_off[i + 1] - a->gt_off[i]), a->n_levels, a->out + a->level_off[i],
            a->count + a->level_off[i]);
}

static PyObject *level_ious(PyObject *self, PyObject *args) {
    Py_buffer img, levels, level_off, gt, gt_off, out, count;
    Py_ssize_t b, h, w;
    if (!PyArg_ParseTuple(args, "y*nnny*y*y*y*w*w*", &img, &b, &h, &w, &levels, &level_off,
                          &gt, &gt_off, &out, &count))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_levels = levels.len / 8, n_gt = gt.len / 32;
    int rc = 0;
    if (b < 0 || h <= 0 || w <= 0 || h > MAX_SIDE || w > MAX_SIDE || h * w > INT32_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "level_ious: bad map size (at most 65535 a side)");
        goto done;
    }
    if (check_buffer(&img, 1, b * h * w, "imgs") || check_buffer(&levels, 8, n_levels, "levels")
        || check_buffer(&level_off, 8, b + 1, "level offsets")
        || check_buffer(&gt, 32, n_gt, "gt") || check_buffer(&gt_off, 8, b + 1, "gt offsets")
        || check_buffer(&out, 8, 5 * n_levels, "out")
        || check_buffer(&count, 8, n_levels, "count"))
        goto done;
    const int64_t *lo = level_off.buf, *go = gt_off.buf, *lv = levels.buf;
    if (check_offsets(lo, b, n_levels, 0, "level offsets")
        || check_offsets(go, b, n_gt, 1, "gt offsets (every map needs a GT box)"))
        goto done;
    for (Py_ssize_t i = 0; i < b; i++)
        for (int64_t k = lo[i] + 1; k < lo[i + 1]; k++)
            if (lv[k] <= lv[k - 1]) {
                PyErr_Format(PyExc_ValueError, "level_ious: levels of map %zd not ascending", i);
                goto done;
            }
    LevelArgs a = {img.buf, h, w, lv, lo, gt.buf, go, n_levels, out.buf, count.buf};
    rc = for_each_map(h * w, b, level_map, &a);
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&img); PyBuffer_Release(&levels); PyBuffer_Release(&level_off);
    PyBuffer_Release(&gt); PyBuffer_Release(&gt_off); PyBuffer_Release(&out);
    PyBuffer_Release(&count);
    return result;
}

/* One map, per threshold t of the sweep: level thr[t] (thr = thr_table row of the map's
 * maximum), the distinct binarizations found from the grey values present (two levels give the
 * same img > L iff as many present values lie at or below each), one_map over those, and per
 * threshold: out[0] v2 IoU, out[1] / out[2] the max / min IoU of the v1 candidates (rows of
 * stride n_thr). An empty foreground has the box (0, 0, 0, 0) in both modes. */
/* A table level as an index into 256 grey values (the table's are in range; be safe). */
static inline int64_t clamp_level(int64_t level) { return level < 0 ? 0 : level > 255 ? 255 : level; }

static void one_map_thresholds(Work *wk, const uint8_t *img, Py_ssize_t h, Py_ssize_t w,
                               const int64_t *thr_table, Py_ssize_t n_thr, const int64_t *gt,
                               Py_ssize_t n_gt, double *out) {
    Py_ssize_t n = h * w;
    int present[256] = {0};
    int max_value = 0;
    for (Py_ssize_t i = 0; i < n; i++) present[img[i]] = 1;
    for (int v = 255; v >= 0; v--) if (present[v]) { max_value = v; break; }
    int cum[256];
    for (int v = 0, c = 0; v < 256; v++) { c += present[v]; cum[v] = c; }
    const int64_t *thr = thr_table + (Py_ssize_t)max_value * n_thr;
    int64_t level_of_key[257];
    int index_of_key[257];
    for (int k = 0; k < 257; k++) level_of_key[k] = -1;
    for (Py_ssize_t t = 0; t < n_thr; t++) {
        int64_t lv = clamp_level(thr[t]);
        int key = cum[lv];
        if (level_of_key[key] < 0) level_of_key[key] = lv;
    }
    int64_t levels[257];
    Py_ssize_t n_levels = 0;
    for (int k = 0; k < 257; k++)
        if (level_of_key[k] >= 0) { index_of_key[k] = (int)n_levels; levels[n_levels++] = level_of_key[k]; }
    double per_level[5 * 257];
    int64_t count[257];
    one_map(wk, img, h, w, levels, n_levels, gt, n_gt, 257, per_level, count);
    double empty_iou = best_iou(0, 0, 0, 0, gt, n_gt);
    for (Py_ssize_t t = 0; t < n_thr; t++) {
        int k = index_of_key[cum[clamp_level(thr[t])]];
        if (count[k] == 0) {
            out[t] = out[n_thr + t] = out[2 * n_thr + t] = empty_iou;
            continue;
        }
        double fg = per_level[k], hole = per_level[2 * 257 + k];
        out[t] = fg > hole ? fg : hole;
        out[n_thr + t] = per_level[3 * 257 + k];
        out[2 * n_thr + t] = per_level[4 * 257 + k];
    }
}

typedef struct {
    const uint8_t *img;
    Py_ssize_t h, w;
    const int64_t *table;
    Py_ssize_t n_thr;
    const int64_t *gt, *gt_off;
    double *out;
} ThresholdArgs;

static void threshold_map(Work *wk, Py_ssize_t i, void *ctx) {
    const ThresholdArgs *a = ctx;
    one_map_thresholds(wk, a->img + i * a->h * a->w, a->h, a->w, a->table, a->n_thr,
                       a->gt + 4 * a->gt_off[i], (Py_ssize_t)(a->gt_off[i + 1] - a->gt_off[i]),
                       a->out + i * 3 * a->n_thr);
}

static PyObject *threshold_ious(PyObject *self, PyObject *args) {
    Py_buffer img, thr_table, gt, gt_off, out;
    Py_ssize_t b, h, w, n_thr;
    if (!PyArg_ParseTuple(args, "y*nnny*ny*y*w*", &img, &b, &h, &w, &thr_table, &n_thr, &gt,
                          &gt_off, &out))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_gt = gt.len / 32;
    int rc = 0;
    if (b < 0 || h <= 0 || w <= 0 || h > MAX_SIDE || w > MAX_SIDE || h * w > INT32_MAX / 2
        || n_thr < 0) {
        PyErr_SetString(PyExc_ValueError, "threshold_ious: bad map size (at most 65535 a side)");
        goto done;
    }
    if (check_buffer(&img, 1, b * h * w, "imgs")
        || check_buffer(&thr_table, 8, 256 * n_thr, "threshold table")
        || check_buffer(&gt, 32, n_gt, "gt") || check_buffer(&gt_off, 8, b + 1, "gt offsets")
        || check_buffer(&out, 8, b * 3 * n_thr, "out"))
        goto done;
    const int64_t *table = thr_table.buf, *go = gt_off.buf;
    if (check_offsets(go, b, n_gt, 1, "gt offsets (every map needs a GT box)"))
        goto done;
    ThresholdArgs a = {img.buf, h, w, table, n_thr, gt.buf, go, out.buf};
    rc = for_each_map(h * w, b, threshold_map, &a);
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&img); PyBuffer_Release(&thr_table); PyBuffer_Release(&gt);
    PyBuffer_Release(&gt_off); PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"level_ious", level_ious, METH_VARARGS,
     "level_ious(imgs, b, h, w, levels, level_offsets, gt, gt_offsets, out, count): per-level "
     "best IoU of the components and holes of img > level for a batch of uint8 maps (see "
     "wsol.localization.leveltree)."},
    {"threshold_ious", threshold_ious, METH_VARARGS,
     "threshold_ious(imgs, b, h, w, thr_table, n_thr, gt, gt_offsets, out): per threshold, the "
     "v2 IoU and the v1 candidates' max / min IoU, for a batch of uint8 maps (see "
     "wsol.localization.leveltree)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_leveltree",
                                    "Component trees of nested binarizations (C).", -1, methods};

PyMODINIT_FUNC PyInit__leveltree(void) { return PyModule_Create(&module); }
