/* The generic parser (log_parsers/generic.py) over a batch of lines, in C: what GenericParser.feed_line
 * gives each line, as the columns a parse helper sends (runner/logparse.py), at ~10x the speed.
 *
 * An ASCII line is matched here, by hand, exactly as the module's regular expressions match it: the
 * `Epoch N` and `step N` searches and the `name=value` findall (_KV), with the same classes (\w, \s,
 * \d of a str pattern on ASCII text), the same greediness and the same backtracking (each place where
 * the regex could backtrack is worked out below: in every one only the longest candidate can match).
 * A line that is not ASCII, or whose epoch or step has more than 18 digits, is handed to the parser's
 * own feed_line (its state set and read back), so that the two can never differ on it.
 * tests/test_log_parsers.py holds this to feed_line over random lines (hypothesis).
 *
 * It runs in a parse helper that has dropped to the job's user: the lines are hers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DIGITS 18 /* an epoch or step of more digits goes to Python's int() (which may refuse it) */

static int is_word(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
/* \s of a str pattern on ASCII: space, \t \n \v \f \r, and \x1c-\x1f (str.isspace() of them is True) */
static int is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f); }
static int is_name(unsigned char c) { return is_word(c) || c == '.' || c == '/' || c == '-'; }
static unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* The growing columns of a batch. */
typedef struct {
    uint32_t *k;
    double *v;
    int64_t *s, *e;
    Py_ssize_t n, cap;
    Py_ssize_t s_none, e_none;
} Cols;

static int cols_push(Cols *c, uint32_t k, double v, int64_t s, int64_t e) {
    if (c->n == c->cap) {
        Py_ssize_t cap = c->cap ? c->cap * 2 : 4096;
        uint32_t *nk = PyMem_Realloc(c->k, cap * sizeof(uint32_t));
        if (!nk) return -1;
        c->k = nk;
        double *nv = PyMem_Realloc(c->v, cap * sizeof(double));
        if (!nv) return -1;
        c->v = nv;
        int64_t *ns = PyMem_Realloc(c->s, cap * sizeof(int64_t));
        if (!ns) return -1;
        c->s = ns;
        int64_t *ne = PyMem_Realloc(c->e, cap * sizeof(int64_t));
        if (!ne) return -1;
        c->e = ne;
        c->cap = cap;
    }
    c->k[c->n] = k;
    c->v[c->n] = v;
    c->s[c->n] = s;
    c->e[c->n] = e;
    c->s_none += s < 0;
    c->e_none += e < 0;
    c->n++;
    return 0;
}

static void cols_free(Cols *c) {
    PyMem_Free(c->k);
    PyMem_Free(c->v);
    PyMem_Free(c->s);
    PyMem_Free(c->e);
}

/* The digits of `\s*[\[(:=]?\s*(\d+)` at p: their start and length (0: no match). */
static Py_ssize_t position_digits(const unsigned char *t, Py_ssize_t n, Py_ssize_t p, Py_ssize_t *start) {
    while (p < n && is_space(t[p])) p++;
    if (p < n && (t[p] == '[' || t[p] == '(' || t[p] == ':' || t[p] == '=')) p++;
    while (p < n && is_space(t[p])) p++;
    Py_ssize_t q = p;
    while (q < n && is_digit(t[q])) q++;
    *start = p;
    return q - p;
}

/* re.search of `\bepoch\b\s*[\[(:=]?\s*(\d+)` (the optional `/ M` after it changes neither whether nor
 * what group 1 matches) in the line lowered; or of `\b(?:step|iter|it)\b...` (which = 1). Returns 1 and
 * the digits' start and length, or 0. Lowering is done a character at a time (ASCII: same positions). */
static int search_position(const unsigned char *t, Py_ssize_t n, int which, Py_ssize_t *start, Py_ssize_t *len) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0 && is_word(t[i - 1])) continue; /* \b before a word character */
        Py_ssize_t w = 0;
        if (which == 0) {
            if (i + 5 <= n && lower(t[i]) == 'e' && lower(t[i + 1]) == 'p' && lower(t[i + 2]) == 'o' && lower(t[i + 3]) == 'c' &&
                lower(t[i + 4]) == 'h')
                w = 5;
        } else {
            /* step|iter|it, each then \b: at most one of them passes its \b at a place */
            if (i + 4 <= n && lower(t[i]) == 's' && lower(t[i + 1]) == 't' && lower(t[i + 2]) == 'e' && lower(t[i + 3]) == 'p' &&
                !(i + 4 < n && is_word(t[i + 4])))
                w = 4;
            else if (i + 4 <= n && lower(t[i]) == 'i' && lower(t[i + 1]) == 't' && lower(t[i + 2]) == 'e' && lower(t[i + 3]) == 'r' &&
                     !(i + 4 < n && is_word(t[i + 4])))
                w = 4;
            else if (i + 2 <= n && lower(t[i]) == 'i' && lower(t[i + 1]) == 't' && !(i + 2 < n && is_word(t[i + 2])))
                w = 2;
        }
        if (!w) continue;
        if (which == 0 && i + w < n && is_word(t[i + w])) continue; /* \b after epoch */
        Py_ssize_t l = position_digits(t, n, i + w, start);
        if (l > 0) {
            *len = l;
            return 1;
        }
    }
    return 0;
}

static int64_t digits_value(const unsigned char *t, Py_ssize_t len) {
    int64_t x = 0;
    for (Py_ssize_t i = 0; i < len; i++) x = x * 10 + (t[i] - '0');
    return x;
}

/* The end of _NUM followed by (?![\w.:/]) at p, or -1. Only the longest candidate of the numeric
 * alternative can pass the look-ahead: each shorter one ends before a digit, a '.', or an e/E.
 * So: the longest, then `[-+]?(?:nan|NaN|inf|Inf)`. */
static Py_ssize_t number_end(const unsigned char *t, Py_ssize_t n, Py_ssize_t p) {
    Py_ssize_t q = p;
    if (q < n && (t[q] == '-' || t[q] == '+')) q++;
    Py_ssize_t d = q;
    while (d < n && is_digit(t[d])) d++;
    Py_ssize_t end = -1;
    if (d > q) { /* \d+\.\d* or \d+ */
        end = d;
        if (d < n && t[d] == '.') {
            end = d + 1;
            while (end < n && is_digit(t[end])) end++;
        }
    } else if (q < n && t[q] == '.' && q + 1 < n && is_digit(t[q + 1])) { /* \.\d+ */
        end = q + 1;
        while (end < n && is_digit(t[end])) end++;
    }
    if (end >= 0) {
        if (end < n && (t[end] == 'e' || t[end] == 'E')) { /* (?:[eE][-+]?\d+)? */
            Py_ssize_t x = end + 1;
            if (x < n && (t[x] == '-' || t[x] == '+')) x++;
            Py_ssize_t y = x;
            while (y < n && is_digit(t[y])) y++;
            if (y > x) end = y;
        }
        if (end < n && (is_word(t[end]) || t[end] == '.' || t[end] == ':' || t[end] == '/')) return -1;
        return end;
    }
    /* the second alternative */
    if (q + 3 <= n && ((t[q] == 'n' && t[q + 1] == 'a' && t[q + 2] == 'n') || (t[q] == 'N' && t[q + 1] == 'a' && t[q + 2] == 'N') ||
                       (t[q] == 'i' && t[q + 1] == 'n' && t[q + 2] == 'f') || (t[q] == 'I' && t[q + 1] == 'n' && t[q + 2] == 'f'))) {
        end = q + 3;
        if (end < n && (is_word(t[end]) || t[end] == '.' || t[end] == ':' || t[end] == '/')) return -1;
        return end;
    }
    return -1;
}

/* One match of _KV at pos: name [pos, name_end), number [num, num_end); returns 1 or 0. */
static int kv_at(const unsigned char *t, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t *name_end, Py_ssize_t *num, Py_ssize_t *num_end) {
    if (pos > 0 && (is_word(t[pos - 1]) || t[pos - 1] == '.')) return 0; /* (?<![\w.]) */
    if (!is_alpha(t[pos])) return 0;
    Py_ssize_t q = pos + 1;
    while (q < n && q - pos < 64 && is_name(t[q])) q++; /* [\w./-]{0,63}: only the longest can go on */
    if (q < n && is_name(t[q])) return 0;                /* a longer name: no separator can follow */
    *name_end = q;
    Py_ssize_t r = q;
    while (r < n && is_space(t[r])) r++;
    if (r - q > 8) return 0; /* \s{0,8} */
    if (r >= n) return 0;
    if (t[r] == '=') {
        r++;
    } else if (t[r] == ':' && r + 1 < n && is_space(t[r + 1])) {
        r += 2;
    } else {
        return 0;
    }
    Py_ssize_t s = r;
    while (s < n && is_space(t[s])) s++;
    if (s - r > 8) return 0;
    Py_ssize_t e = number_end(t, n, s);
    if (e < 0) return 0;
    *num = s;
    *num_end = e;
    return 1;
}

#define SEEN 32 /* names as printed remembered a batch, with their index: a log prints the same few on each line */

typedef struct {
    Py_ssize_t len;
    char name[64]; /* (a name is at most 64 characters: kv_at's bound) */
    long k;        /* its key's index in the batch, -1 for a position name */
} Seen;

typedef struct {
    PyObject *keys;    /* name as printed -> metric key or None (the parser module's _KEYS) */
    PyObject *index;   /* key -> its index in this batch */
    PyObject *names;   /* the batch's keys, in order */
    Cols cols;
    int64_t step, epoch; /* -1: None */
    Seen seen[SEEN];   /* the first SEEN names as printed, without a str and two dict look-ups a point */
    int nseen;
} Batch;

/* The index of a metric key in the batch (added at its end when new), -2 on error. */
static long batch_index(Batch *b, PyObject *key) {
    PyObject *at = PyDict_GetItemWithError(b->index, key);
    if (at) return PyLong_AsLong(at);
    if (PyErr_Occurred()) return -2;
    long i = (long)PyList_GET_SIZE(b->names);
    PyObject *num = PyLong_FromLong(i);
    if (!num || PyDict_SetItem(b->index, key, num) < 0 || PyList_Append(b->names, key) < 0) i = -2;
    Py_XDECREF(num);
    return i;
}

/* The index of a name as printed (its key's in the batch), -1 for a position name (key None), -2 on error. */
static long key_index(Batch *b, PyObject *name) {
    PyObject *key = PyObject_GetItem(b->keys, name); /* _Keys.__missing__ normalises a new one */
    if (!key) return -2;
    long i = key == Py_None ? -1 : batch_index(b, key);
    Py_DECREF(key);
    return i;
}

/* A line in C; returns 0, 1 when it must go to Python (too many digits), -1 on error. */
static int line_c(Batch *b, const unsigned char *t, Py_ssize_t n) {
    if (!memchr(t, '=', n) && !memchr(t, ':', n)) {
        int poch = 0;
        for (Py_ssize_t i = 0; i + 4 <= n; i++)
            if (t[i] == 'p' && t[i + 1] == 'o' && t[i + 2] == 'c' && t[i + 3] == 'h') {
                poch = 1;
                break;
            }
        if (!poch) return 0;
    }
    Py_ssize_t st, len;
    int has_epoch = search_position(t, n, 0, &st, &len);
    int64_t epoch = b->epoch, step = b->step;
    if (has_epoch) {
        if (len > MAX_DIGITS) return 1;
        epoch = digits_value(t + st, len);
    }
    if (search_position(t, n, 1, &st, &len)) {
        if (len > MAX_DIGITS) return 1;
        step = digits_value(t + st, len);
    }
    b->epoch = epoch;
    b->step = step;
    Py_ssize_t pos = 0;
    char num[128];
    while (pos < n) {
        Py_ssize_t name_end, a, z;
        if (!kv_at(t, n, pos, &name_end, &a, &z)) {
            pos++;
            continue;
        }
        Py_ssize_t len = name_end - pos;
        long k = -3;
        for (int i = 0; i < b->nseen; i++) {
            if (b->seen[i].len == len && !memcmp(b->seen[i].name, t + pos, len)) {
                k = b->seen[i].k;
                break;
            }
        }
        if (k == -3) {
            PyObject *name = PyUnicode_FromStringAndSize((const char *)t + pos, len);
            if (!name) return -1;
            k = key_index(b, name);
            Py_DECREF(name);
            if (k == -2) return -1;
            if (b->nseen < SEEN && len <= (Py_ssize_t)sizeof(b->seen[0].name)) {
                Seen *at = &b->seen[b->nseen++];
                at->len = len;
                memcpy(at->name, t + pos, len);
                at->k = k;
            }
        }
        if (k >= 0) {
            double v;
            if (z - a < (Py_ssize_t)sizeof(num)) {
                memcpy(num, t + a, z - a);
                num[z - a] = 0;
                v = PyOS_string_to_double(num, NULL, NULL);
            } else {
                PyObject *s = PyUnicode_FromStringAndSize((const char *)t + a, z - a);
                if (!s) return -1;
                PyObject *f = PyFloat_FromString(s);
                Py_DECREF(s);
                if (!f) return -1;
                v = PyFloat_AS_DOUBLE(f);
                Py_DECREF(f);
            }
            if (v == -1.0 && PyErr_Occurred()) return -1;
            if (cols_push(&b->cols, (uint32_t)k, v, step, epoch) < 0) {
                PyErr_NoMemory();
                return -1;
            }
        }
        pos = z;
    }
    return 0;
}

/* An int64 >= 0 of a parser's position, -1 for None; -2 when it is neither (the caller goes slow). */
static int64_t position_of(PyObject *o) {
    if (o == Py_None) return -1;
    if (!PyLong_CheckExact(o)) return -2;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || x < 0) {
        if (!PyErr_Occurred()) return -2;
        PyErr_Clear();
        return -2;
    }
    return (int64_t)x;
}

static int set_positions(PyObject *parser, Batch *b) {
    PyObject *s = b->step < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(b->step);
    PyObject *e = b->epoch < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(b->epoch);
    int r = (!s || !e) ? -1 : (PyObject_SetAttrString(parser, "step", s) < 0 || PyObject_SetAttrString(parser, "epoch", e) < 0) ? -1 : 0;
    Py_XDECREF(s);
    Py_XDECREF(e);
    return r;
}

/* 0 read, 1 a position no int64 holds (slow path), -1 error */
static int get_positions(PyObject *parser, Batch *b) {
    PyObject *s = PyObject_GetAttrString(parser, "step");
    if (!s) return -1;
    PyObject *e = PyObject_GetAttrString(parser, "epoch");
    if (!e) {
        Py_DECREF(s);
        return -1;
    }
    int64_t step = position_of(s), epoch = position_of(e);
    Py_DECREF(s);
    Py_DECREF(e);
    if (step == -2 || epoch == -2) return 1;
    b->step = step;
    b->epoch = epoch;
    return 0;
}

/* A line through parser.feed_line (its state set before, read after): 0, 1 (slow path), -1 error. */
static int line_py(Batch *b, PyObject *parser, PyObject *line) {
    if (set_positions(parser, b) < 0) return -1;
    PyObject *pts = PyObject_CallMethod(parser, "feed_line", "O", line);
    if (!pts) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_OverflowError) ||
            PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear(); /* the line is passed over, as feed_lines does (its state as the parser left it) */
            return get_positions(parser, b);
        }
        return -1;
    }
    int r = get_positions(parser, b);
    if (r != 0) {
        Py_DECREF(pts);
        return r;
    }
    if (!PyList_Check(pts)) {
        Py_DECREF(pts);
        return 1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pts); i++) {
        PyObject *p = PyList_GET_ITEM(pts, i);
        if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 4 || !PyFloat_CheckExact(PyTuple_GET_ITEM(p, 1))) {
            Py_DECREF(pts);
            return 1;
        }
        int64_t s = position_of(PyTuple_GET_ITEM(p, 2)), e = position_of(PyTuple_GET_ITEM(p, 3));
        if (s == -2 || e == -2) {
            Py_DECREF(pts);
            return 1;
        }
        long k = batch_index(b, PyTuple_GET_ITEM(p, 0));
        if (k == -2) {
            Py_DECREF(pts);
            return -1;
        }
        if (cols_push(&b->cols, (uint32_t)k, PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(p, 1)), s, e) < 0) {
            Py_DECREF(pts);
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_DECREF(pts);
    return 0;
}

PyDoc_STRVAR(columns_doc,
"columns(parser, lines, keys) -> (names, n, k, v, s, e) or None\n\n"
"The points GenericParser `parser` gives `lines` (a list of str), as a parse helper's columns: the\n"
"batch's metric keys in order, how many points, each point's key index (uint32 bytes), value (double\n"
"bytes), step and epoch (int64 bytes, -1 for None). `keys`: the module's _KEYS. The parser's step and\n"
"epoch are read first and set after. None: a position that no int64 holds was met (the caller restores\n"
"the parser's state and parses the lines in Python).");

static PyObject *columns(PyObject *self, PyObject *args) {
    PyObject *parser, *lines, *keys;
    if (!PyArg_ParseTuple(args, "OO!O", &parser, &PyList_Type, &lines, &keys)) return NULL;
    Batch b = {0};
    b.keys = keys;
    int r = get_positions(parser, &b);
    if (r != 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    b.index = PyDict_New();
    b.names = PyList_New(0);
    PyObject *out = NULL;
    if (!b.index || !b.names) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lines); i++) {
        PyObject *line = PyList_GET_ITEM(lines, i);
        if (!PyUnicode_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "lines: str expected");
            goto done;
        }
        r = 1;
        if (PyUnicode_IS_ASCII(line)) r = line_c(&b, (const unsigned char *)PyUnicode_DATA(line), PyUnicode_GET_LENGTH(line));
        if (r == 1) r = line_py(&b, parser, line);
        if (r < 0) goto done;
        if (r == 1) {
            out = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (set_positions(parser, &b) < 0) goto done;
    Py_ssize_t n = b.cols.n;
    static const char none[1] = "";  /* y# of a NULL pointer would be None, not b"" */
    out = Py_BuildValue("(Nny#y#y#y#)", Py_NewRef(b.names), n, n ? (const char *)b.cols.k : none, n * (Py_ssize_t)sizeof(uint32_t),
                        n ? (const char *)b.cols.v : none, n * (Py_ssize_t)sizeof(double), n ? (const char *)b.cols.s : none,
                        n * (Py_ssize_t)sizeof(int64_t), n ? (const char *)b.cols.e : none, n * (Py_ssize_t)sizeof(int64_t));
done:
    Py_XDECREF(b.index);
    Py_XDECREF(b.names);
    cols_free(&b.cols);
    return out;
}

static PyMethodDef methods[] = {
    {"columns", columns, METH_VARARGS, columns_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_generic_c", "The generic parser over a batch of lines, in C.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__generic_c(void) { return PyModule_Create(&module); }
