/* A parse helper's batch of points, stored the daemon's way, in C: what runner/store/metrics.py makes of
 * a batch in Python (its points split by metric, each metric's packs as marshal bytes, its chart chunks
 * as metric_chunks' rows), at a fraction of the cost: a log's metrics into the store at ~1 M lines/s.
 *
 * It runs in the daemon (root), on columns the daemon decoded from a helper's batch: fixed-width numbers
 * only (uint32 key indexes, doubles, int64 steps and epochs), copied in, their sizes and every index
 * checked here; no text of the user's is parsed, nothing is unpickled. What it writes is what the store
 * reads back with marshal.loads (tuples of floats, ints and None, as marshal.dumps of the Python path's
 * tuples gives). tests/test_packs.py holds every method to the Python path (hypothesis).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, nkeys;
    uint32_t *k;
    double *v;
    int64_t *s, *e;      /* NULL: every one null */
    Py_ssize_t *count;   /* points of each key */
    Py_ssize_t *first;   /* where each key's positions begin in pos */
    Py_ssize_t *pos;     /* the points' positions in the batch, grouped by key, in order */
} Batch;

static void batch_dealloc(Batch *b) {
    PyMem_Free(b->k);
    PyMem_Free(b->v);
    PyMem_Free(b->s);
    PyMem_Free(b->e);
    PyMem_Free(b->count);
    PyMem_Free(b->first);
    PyMem_Free(b->pos);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* A copy of a bytes-like column of n items of `size` bytes (NULL and no error for None when `optional`). */
static int copy_col(PyObject *obj, Py_ssize_t n, Py_ssize_t size, int optional, void **out, const char *what) {
    *out = NULL;
    if (obj == Py_None && optional) return 0;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) return -1;
    if (view.len != n * size) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, %zd expected", what, view.len, n * size);
        return -1;
    }
    *out = PyMem_Malloc(n * size + 1);
    if (!*out) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*out, view.buf, n * size);
    PyBuffer_Release(&view);
    return 0;
}

static PyObject *batch_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Py_ssize_t nkeys;
    PyObject *ko, *vo, *so, *eo;
    static char *names[] = {"nkeys", "k", "v", "s", "e", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nOOOO", names, &nkeys, &ko, &vo, &so, &eo)) return NULL;
    Py_buffer kv;
    if (PyObject_GetBuffer(ko, &kv, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t len = kv.len;
    PyBuffer_Release(&kv);
    if (nkeys < 0 || nkeys > (1 << 24) || len % 4) {
        PyErr_SetString(PyExc_ValueError, "a batch's key count or index bytes out of range");
        return NULL;
    }
    Batch *b = (Batch *)type->tp_alloc(type, 0);
    if (!b) return NULL;
    b->n = len / 4;
    b->nkeys = nkeys;
    if (copy_col(ko, b->n, 4, 0, (void **)&b->k, "k") < 0 || copy_col(vo, b->n, 8, 0, (void **)&b->v, "v") < 0 ||
        copy_col(so, b->n, 8, 1, (void **)&b->s, "s") < 0 || copy_col(eo, b->n, 8, 1, (void **)&b->e, "e") < 0)
        goto fail;
    b->count = PyMem_Calloc(nkeys + 1, sizeof(Py_ssize_t));
    b->first = PyMem_Calloc(nkeys + 1, sizeof(Py_ssize_t));
    b->pos = PyMem_Malloc((b->n + 1) * sizeof(Py_ssize_t));
    if (!b->count || !b->first || !b->pos) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < b->n; i++) {
        if (b->k[i] >= (uint64_t)nkeys) {
            PyErr_SetString(PyExc_ValueError, "a point names no metric of the batch");
            goto fail;
        }
        b->count[b->k[i]]++;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t j = 0; j < nkeys; j++) {
        b->first[j] = at;
        at += b->count[j];
    }
    Py_ssize_t *fill = PyMem_Malloc((nkeys + 1) * sizeof(Py_ssize_t));
    if (!fill) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(fill, b->first, (nkeys + 1) * sizeof(Py_ssize_t));
    for (Py_ssize_t i = 0; i < b->n; i++) b->pos[fill[b->k[i]]++] = i;
    PyMem_Free(fill);
    return (PyObject *)b;
fail:
    Py_DECREF(b);
    return NULL;
}

/* Key j and points a..b of it (b clipped to its count), checked. */
static int key_range(Batch *b, Py_ssize_t j, Py_ssize_t *a, Py_ssize_t *e) {
    if (j < 0 || j >= b->nkeys) {
        PyErr_SetString(PyExc_IndexError, "no such key");
        return -1;
    }
    if (*e > b->count[j]) *e = b->count[j];
    if (*a < 0 || *a > *e) {
        PyErr_SetString(PyExc_IndexError, "a range outside the key's points");
        return -1;
    }
    return 0;
}

static PyObject *batch_counts(Batch *b, PyObject *unused) {
    PyObject *out = PyList_New(b->nkeys);
    if (!out) return NULL;
    for (Py_ssize_t j = 0; j < b->nkeys; j++) {
        PyObject *c = PyLong_FromSsize_t(b->count[j]);
        if (!c) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, c);
    }
    return out;
}

static PyObject *int_or_none(const int64_t *col, Py_ssize_t i) {
    return col ? PyLong_FromLongLong(col[i]) : Py_NewRef(Py_None);
}

/* lists(j, a, b, first_id) -> (ids, values, steps, epochs): points a..b of key j as lists (ids:
 * first_id + the point's position in the batch; values as sent, NaN included; None for a null). */
static PyObject *batch_lists(Batch *b, PyObject *args) {
    Py_ssize_t j, a, e;
    long long first_id;
    if (!PyArg_ParseTuple(args, "nnnL", &j, &a, &e, &first_id) || key_range(b, j, &a, &e) < 0) return NULL;
    PyObject *cols[4] = {PyList_New(e - a), PyList_New(e - a), PyList_New(e - a), PyList_New(e - a)};
    for (int c = 0; c < 4; c++)
        if (!cols[c]) goto fail;
    for (Py_ssize_t i = a; i < e; i++) {
        Py_ssize_t p = b->pos[b->first[j] + i];
        PyObject *x[4] = {PyLong_FromLongLong(first_id + p), PyFloat_FromDouble(b->v[p]), int_or_none(b->s, p), int_or_none(b->e, p)};
        for (int c = 0; c < 4; c++) {
            if (!x[c]) {
                for (int d = 0; d < 4; d++) Py_XDECREF(x[d]);
                goto fail;
            }
        }
        for (int c = 0; c < 4; c++) PyList_SET_ITEM(cols[c], i - a, x[c]);
    }
    return Py_BuildValue("(NNNN)", cols[0], cols[1], cols[2], cols[3]);
fail:
    for (int c = 0; c < 4; c++) Py_XDECREF(cols[c]);
    return NULL;
}

/* marshal's wire (Python/marshal.c), written by hand: a tuple's header, None, a binary float, an int. */
typedef struct {
    char *p;
} Out;

static void put_u32(Out *o, uint32_t x) {
    for (int i = 0; i < 4; i++) *o->p++ = (char)((x >> (8 * i)) & 0xff);
}

static void put_tuple(Out *o, Py_ssize_t n) {
    if (n < 256) {
        *o->p++ = ')';
        *o->p++ = (char)n;
    } else {
        *o->p++ = '(';
        put_u32(o, (uint32_t)n);
    }
}

static void put_float(Out *o, double d) {
    if (isnan(d)) { /* a REAL column keeps NaN as NULL: so does the Python path (_real) */
        *o->p++ = 'N';
        return;
    }
    uint64_t u;
    memcpy(&u, &d, 8);
    *o->p++ = 'g';
    for (int i = 0; i < 8; i++) *o->p++ = (char)((u >> (8 * i)) & 0xff);
}

static void put_int(Out *o, int64_t x) {
    if (x >= INT32_MIN && x <= INT32_MAX) {
        *o->p++ = 'i';
        put_u32(o, (uint32_t)(int32_t)x);
        return;
    }
    /* 'l': a signed count of 15-bit digits, then the digits of |x|, least significant first */
    uint64_t m = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    uint16_t digits[5];
    int nd = 0;
    while (m) {
        digits[nd++] = (uint16_t)(m & 0x7fff);
        m >>= 15;
    }
    *o->p++ = 'l';
    put_u32(o, (uint32_t)(int32_t)(x < 0 ? -nd : nd));
    for (int i = 0; i < nd; i++) {
        *o->p++ = (char)(digits[i] & 0xff);
        *o->p++ = (char)(digits[i] >> 8);
    }
}

#define MAX_ITEM 15 /* the most bytes one item takes: 'l', 4, 5 digits of 2 */

static PyObject *new_out(Py_ssize_t n, Out *o) {
    PyObject *blob = PyBytes_FromStringAndSize(NULL, 5 + n * MAX_ITEM);
    if (blob) o->p = PyBytes_AS_STRING(blob);
    return blob;
}

static int end_out(PyObject **blob, Out *o) {
    return _PyBytes_Resize(blob, o->p - PyBytes_AS_STRING(*blob));
}

/* pack(j, a, b, first_id) -> (first id, last id, ids, values, steps, epochs, last_value): points a..b
 * of key j as the marshal bytes of metric_packs' arrays (values NaN as None), the ids of the first and
 * the last, and the last value (None for NaN). */
static PyObject *batch_pack(Batch *b, PyObject *args) {
    Py_ssize_t j, a, e;
    long long first_id;
    if (!PyArg_ParseTuple(args, "nnnL", &j, &a, &e, &first_id) || key_range(b, j, &a, &e) < 0) return NULL;
    if (e == a) {
        PyErr_SetString(PyExc_ValueError, "an empty pack");
        return NULL;
    }
    Py_ssize_t m = e - a;
    const Py_ssize_t *pos = b->pos + b->first[j];
    Out o[4];
    PyObject *blobs[4] = {new_out(m, &o[0]), new_out(m, &o[1]), new_out(m, &o[2]), new_out(m, &o[3])};
    for (int c = 0; c < 4; c++)
        if (!blobs[c]) goto fail;
    for (int c = 0; c < 4; c++) put_tuple(&o[c], m);
    for (Py_ssize_t i = a; i < e; i++) {
        Py_ssize_t p = pos[i];
        put_int(&o[0], first_id + p);
        put_float(&o[1], b->v[p]);
        if (b->s)
            put_int(&o[2], b->s[p]);
        else
            *o[2].p++ = 'N';
        if (b->e)
            put_int(&o[3], b->e[p]);
        else
            *o[3].p++ = 'N';
    }
    for (int c = 0; c < 4; c++)
        if (end_out(&blobs[c], &o[c]) < 0) {
            blobs[c] = NULL;
            goto fail;
        }
    double last = b->v[pos[e - 1]];
    return Py_BuildValue("(LLNNNNN)", first_id + pos[a], first_id + pos[e - 1], blobs[0], blobs[1], blobs[2], blobs[3],
                         isnan(last) ? Py_NewRef(Py_None) : PyFloat_FromDouble(last));
fail:
    for (int c = 0; c < 4; c++) Py_XDECREF(blobs[c]);
    return NULL;
}

static PyObject *opt_int(const int64_t *col, Py_ssize_t p) { return col ? PyLong_FromLongLong(col[p]) : Py_NewRef(Py_None); }

/* chunks(j, a, k, start, prev_step, chunk, first_id, job_id, name) -> [row, ...] or None: the
 * metric_chunks rows (job_id, name, then metric_chunks.COLUMNS) of points a.. of key j cut into chunks
 * k, k + 1, ... of `chunk` points, the first at series position `start`; what metric_chunks.summarize
 * gives each. None unless the points are the usual kind (_summarize_clean's): every value finite, and
 * the steps (if any) increasing, from prev_step on when k > 0. */
static PyObject *batch_chunks(Batch *b, PyObject *args) {
    Py_ssize_t j, a, e = PY_SSIZE_T_MAX, k, start, chunk;
    long long first_id;
    PyObject *prev, *job_id, *name;
    if (!PyArg_ParseTuple(args, "nnnnOnLOO", &j, &a, &k, &start, &prev, &chunk, &first_id, &job_id, &name) || key_range(b, j, &a, &e) < 0)
        return NULL;
    if (chunk < 1 || k < 0) {
        PyErr_SetString(PyExc_ValueError, "a chunk of no points");
        return NULL;
    }
    const Py_ssize_t *pos = b->pos + b->first[j];
    for (Py_ssize_t i = a; i < e; i++)
        if (!isfinite(b->v[pos[i]])) Py_RETURN_NONE;
    if (b->s && e > a) {
        if (k > 0) {
            if (prev == Py_None) Py_RETURN_NONE;
            int overflow = 0;
            long long ps = PyLong_AsLongLongAndOverflow(prev, &overflow);
            if (ps == -1 && PyErr_Occurred()) return NULL;
            if (overflow > 0 || (!overflow && !(ps < b->s[pos[a]]))) Py_RETURN_NONE;
        }
        for (Py_ssize_t i = a + 1; i < e; i++)
            if (!(b->s[pos[i - 1]] < b->s[pos[i]])) Py_RETURN_NONE;
    }
    Py_ssize_t rows = (e - a) / chunk + ((e - a) % chunk != 0); /* (no e - a + chunk: a chunk near PY_SSIZE_T_MAX) */
    PyObject *out = PyList_New(rows);
    if (!out) return NULL;
    const int64_t *s = b->s, *ep = b->e;
    for (Py_ssize_t r = 0; r < rows; r++) {
        Py_ssize_t lo_i = a + r * chunk, hi_i = e - lo_i > chunk ? lo_i + chunk : e;
        Py_ssize_t at_lo = lo_i, at_hi = lo_i; /* the first lowest and first highest, as min() and index() give */
        int64_t e_lo = 0, e_hi = 0;
        for (Py_ssize_t i = lo_i; i < hi_i; i++) {
            double x = b->v[pos[i]];
            if (x < b->v[pos[at_lo]]) at_lo = i;
            if (x > b->v[pos[at_hi]]) at_hi = i;
            if (ep) {
                int64_t y = ep[pos[i]];
                if (i == lo_i || y < e_lo) e_lo = y;
                if (i == lo_i || y > e_hi) e_hi = y;
            }
        }
        Py_ssize_t p0 = pos[lo_i], p1 = pos[hi_i - 1], pl = pos[at_lo], ph = pos[at_hi];
        PyObject *row = PyTuple_New(24);
        if (!row) goto fail;
        PyList_SET_ITEM(out, r, row);
        PyObject *x[24] = {
            Py_NewRef(job_id), Py_NewRef(name), PyLong_FromSsize_t(k + r), PyLong_FromSsize_t(hi_i - lo_i),
            PyLong_FromLongLong(first_id + p0), PyLong_FromLongLong(first_id + p1), opt_int(s, p0), opt_int(s, p1),
            PyLong_FromLong(s != NULL), opt_int(ep, p0), opt_int(ep, p1), ep ? PyLong_FromLongLong(e_lo) : Py_NewRef(Py_None),
            ep ? PyLong_FromLongLong(e_hi) : Py_NewRef(Py_None), PyLong_FromLong(ep != NULL), PyFloat_FromDouble(b->v[p0]),
            PyFloat_FromDouble(b->v[p1]), PyFloat_FromDouble(b->v[pl]), PyLong_FromSsize_t(start + (at_lo - a)), opt_int(s, pl),
            opt_int(ep, pl), PyFloat_FromDouble(b->v[ph]), PyLong_FromSsize_t(start + (at_hi - a)), opt_int(s, ph), opt_int(ep, ph)};
        int bad = 0;
        for (int c = 0; c < 24; c++) {
            if (!x[c]) bad = 1;
            PyTuple_SET_ITEM(row, c, x[c]); /* (a NULL item: the tuple's dealloc skips it) */
        }
        if (bad) goto fail;
    }
    return out;
fail:
    Py_DECREF(out); /* (items not yet set are NULL: list dealloc skips them) */
    return NULL;
}

static PyMethodDef batch_methods[] = {
    {"counts", (PyCFunction)batch_counts, METH_NOARGS, "counts() -> the number of points of each key"},
    {"lists", (PyCFunction)batch_lists, METH_VARARGS, "lists(j, a, b, first_id) -> (ids, values, steps, epochs) of points a..b of key j"},
    {"pack", (PyCFunction)batch_pack, METH_VARARGS,
     "pack(j, a, b, first_id) -> (first id, last id, marshal bytes of ids, values, steps, epochs, last value) of points a..b of key j"},
    {"chunks", (PyCFunction)batch_chunks, METH_VARARGS,
     "chunks(j, a, k, start, prev_step, chunk, first_id, job_id, name) -> metric_chunks rows of points a.. of key j, or None"},
    {NULL, NULL, 0, NULL},
};

static PyObject *batch_len(Batch *b, void *unused) { return PyLong_FromSsize_t(b->n); }

static PyGetSetDef batch_getset[] = {
    {"n", (getter)batch_len, NULL, "how many points", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "runner._packs_c.Batch",
    .tp_basicsize = sizeof(Batch),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Batch(nkeys, k, v, s, e): a helper's batch of points as columns of bytes (k: uint32 key indexes, v: doubles, "
              "s and e: int64 steps and epochs or None when all null), copied and checked.",
    .tp_methods = batch_methods,
    .tp_getset = batch_getset,
    .tp_new = batch_new,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_packs_c", "A batch of points stored the daemon's way, in C.", -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__packs_c(void) {
    if (PyType_Ready(&BatchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
