/* Native fast path for `observer.ingest.resolve.decode_and_resolve` (protobuf bodies).
 *
 * Parses the ExportTraceServiceRequest wire format itself and resolves clean batches exactly as
 * the Python path does (Resolver.add / _engine / _hints / merge_hints / _res_facts / _role and
 * otlp.pb_spans validity). Anything it does not handle exactly (malformed wire data, a span the
 * Python path would reject, values of an unexpected type on the keys that matter, too many
 * spans, ...) makes `Config.decode` return None: the caller then runs the Python path on the
 * whole batch, so errors and partial-success counts stay the Python path's.
 *
 * Every attribute key, span name, role and dataclass layout comes from Python (`Config(...)`,
 * built by observer.ingest.fastpath from a ResolveConfig); the wire schema used to validate the
 * fields this file does not read comes from the installed protobuf descriptors. Only the field
 * numbers of the fields read here are written below (opentelemetry-proto trace/v1, common/v1,
 * resource/v1, collector/trace/v1).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the native OTLP decoder reads fixed64 fields as little-endian (the Python path is used instead)"
#endif

#define FALLBACK 1   /* not handled exactly: run the Python path */
#define PYERR (-1)   /* a Python exception is set */
#define MAX_KEYS 64
#define KEY_TABLE 256
#define MAX_DEPTH 48
#define INTERN_SIZE 512
/* observer.conventions.MAX_TOKENS: a token count above is BAD_VALUE, decided by the Python path */
#define MAX_TOKENS (1LL << 32)

/* wire types */
#define WT_VARINT 0
#define WT_I64 1
#define WT_LEN 2
#define WT_I32 5

/* schema field kinds (observer.ingest.fastpath builds them from the descriptors) */
enum { K_VARINT = 0, K_I64 = 1, K_STRING = 2, K_BYTES = 3, K_MESSAGE = 4, K_I32 = 5, K_UNSUPPORTED = 9 };

/* attribute value tags */
enum { V_ABSENT = 0, V_NONE, V_STR, V_BOOL, V_INT, V_DOUBLE, V_ARRAY, V_KVLIST, V_BYTES };

typedef struct {
    int tag;
    const uint8_t *p; /* V_STR / V_BYTES */
    Py_ssize_t n;
    int64_t i; /* V_INT, V_BOOL */
    double d;  /* V_DOUBLE */
} Val;

typedef struct {
    uint32_t number;
    int kind;
    int sub;
} SchemaField;

typedef struct {
    int n;
    SchemaField *fields;
} SchemaMsg;

/* message indices in the schema, in this order (see fastpath.MESSAGES) */
enum { M_REQUEST = 0, M_RESOURCE_SPANS, M_RESOURCE, M_SCOPE_SPANS, M_SPAN, M_STATUS, M_KEY_VALUE, M_ANY_VALUE, M_COUNT };

/* dataclass layouts: slot offsets in the order the C code fills them */
enum { ES_TRACE_ID = 0, ES_SPAN_ID, ES_REQUEST_ID, ES_ROLE, ES_TENANT, ES_MODEL, ES_POD, ES_START, ES_END,
       ES_PROMPT, ES_OUTPUT, ES_CACHED, ES_QUEUE, ES_PREFILL, ES_DECODE, ES_TTFT, ES_E2E, ES_ERROR, ES_N };
enum { TT_HBM = 0, TT_DRAM, TT_DISK, TT_REMOTE, TT_UNKNOWN, TT_N };
enum { TH_TRACE_ID = 0, TH_TENANT, TH_MODEL, TH_DIS, TH_N };
enum { LAT_QUEUE = 0, LAT_PREFILL, LAT_DECODE, LAT_TTFT, LAT_E2E, LAT_N };
#define MAX_LIST 16
#define MAX_TIERS 8

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Bytes;

typedef struct {
    int n;
    int slot[MAX_LIST];
} KeyList;

typedef struct {
    PyObject_HEAD
    /* key table: distinct keys, each with a slot number */
    int nkeys;
    PyObject *key_bytes[MAX_KEYS];
    Bytes keys[MAX_KEYS];
    int16_t table[KEY_TABLE]; /* slot + 1, 0 = empty */
    KeyList tenant, model, pod, role, input, output;
    int marker, cached, request_id, error_type, disaggregation, service_name;
    int lat[LAT_N];
    int ntiers;
    int tier_slot[MAX_TIERS];
    int tier_field[MAX_TIERS];
    /* span names */
    PyObject *engine_names; /* tuple of bytes */
    PyObject *sidecar_names;
    /* constants */
    PyObject *role_prefill, *role_decode, *roles; /* str, str, tuple of str */
    PyObject *suffix_prefill, *suffix_decode, *unknown_pod, *unknown_model;
    long status_error;
    /* dataclasses */
    PyTypeObject *engine_type, *tier_type, *hints_type;
    Py_ssize_t es_off[ES_N], tt_off[TT_N], th_off[TH_N];
    /* wire schema */
    int nmsgs;
    SchemaMsg *msgs;
    int anyvalue_msg;
} ConfigObject;

/* ------------------------------------------------------------------------------ wire reading */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Buf;

static inline int read_varint(Buf *b, uint64_t *out) {
    const uint8_t *p = b->p;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= b->end)
            return FALLBACK;
        uint8_t byte = *p++;
        if (shift == 63 && byte > 1)
            return FALLBACK;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            b->p = p;
            *out = v;
            return 0;
        }
    }
    return FALLBACK;
}

/* upb refuses a tag or a length written in more than 5 bytes (even a non-canonical encoding of a
 * small value: 0x8a 0x80 0x80 0x80 0x80 0x00 is field 1, wire type 2, in 6 bytes) and a length of
 * INT32_MAX or more: the body is a 400 on the Python path, so it must not be accepted here. */
#define MAX_TAG_LEN_BYTES 5

static inline int read_varint5(Buf *b, uint64_t *out) {
    const uint8_t *start = b->p;
    if (read_varint(b, out))
        return FALLBACK;
    if (b->p - start > MAX_TAG_LEN_BYTES) {
        b->p = start;
        return FALLBACK;
    }
    return 0;
}

static inline int read_tag(Buf *b, uint32_t *field, int *wt) {
    uint64_t tag;
    if (read_varint5(b, &tag) || tag > UINT32_MAX || (tag >> 3) == 0)
        return FALLBACK;
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return 0;
}

static inline int read_len(Buf *b, Buf *sub) {
    uint64_t n;
    if (read_varint5(b, &n) || n >= INT32_MAX || n > (uint64_t)(b->end - b->p))
        return FALLBACK;
    sub->p = b->p;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static inline int read_fixed64(Buf *b, uint64_t *out) {
    if (b->end - b->p < 8)
        return FALLBACK;
    memcpy(out, b->p, 8); /* little-endian host (x86-64, aarch64) */
    b->p += 8;
    return 0;
}

static int skip_unknown(Buf *b, int wt) {
    uint64_t v;
    Buf sub;
    switch (wt) {
    case WT_VARINT:
        return read_varint(b, &v);
    case WT_I64:
        return read_fixed64(b, &v);
    case WT_LEN:
        return read_len(b, &sub);
    case WT_I32:
        if (b->end - b->p < 4)
            return FALLBACK;
        b->p += 4;
        return 0;
    default: /* groups and invalid wire types */
        return FALLBACK;
    }
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as upb validates proto3 strings. */
static int utf8_ok(const uint8_t *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ULL)
            break;
        i += 8;
    }
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (int k = 1; k < len; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += len;
    }
    return 1;
}

static inline int is_ascii(const uint8_t *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] & 0x80)
            return 0;
    return 1;
}

static const SchemaField *schema_field(const ConfigObject *cfg, int msg, uint32_t number) {
    const SchemaMsg *m = &cfg->msgs[msg];
    for (int i = 0; i < m->n; i++)
        if (m->fields[i].number == number)
            return &m->fields[i];
    return NULL;
}

static int validate_message(const ConfigObject *cfg, int msg, Buf b, int depth);

/* A field of `msg` this file does not read: unknown -> skipped; known -> validated as upb would. */
static int other_field(const ConfigObject *cfg, int msg, Buf *b, uint32_t number, int wt, int depth) {
    const SchemaField *f = schema_field(cfg, msg, number);
    if (f == NULL)
        return skip_unknown(b, wt);
    Buf sub;
    uint64_t v;
    switch (f->kind) {
    case K_VARINT:
        return wt == WT_VARINT ? read_varint(b, &v) : FALLBACK;
    case K_I64:
        return wt == WT_I64 ? read_fixed64(b, &v) : FALLBACK;
    case K_I32:
        return wt == WT_I32 ? skip_unknown(b, wt) : FALLBACK;
    case K_BYTES:
        return wt == WT_LEN ? read_len(b, &sub) : FALLBACK;
    case K_STRING:
        if (wt != WT_LEN || read_len(b, &sub))
            return FALLBACK;
        return utf8_ok(sub.p, sub.end - sub.p) ? 0 : FALLBACK;
    case K_MESSAGE:
        if (wt != WT_LEN || read_len(b, &sub))
            return FALLBACK;
        return validate_message(cfg, f->sub, sub, depth + 1);
    default:
        return FALLBACK;
    }
}

static int validate_message(const ConfigObject *cfg, int msg, Buf b, int depth) {
    if (depth > MAX_DEPTH)
        return FALLBACK;
    while (b.p < b.end) {
        uint32_t number;
        int wt;
        if (read_tag(&b, &number, &wt) || other_field(cfg, msg, &b, number, wt, depth))
            return FALLBACK;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ key lookup */

static inline uint32_t key_hash(const uint8_t *p, Py_ssize_t n) {
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static inline int key_slot(const ConfigObject *cfg, const uint8_t *p, Py_ssize_t n) {
    uint32_t h = key_hash(p, n) & (KEY_TABLE - 1);
    for (;;) {
        int s = cfg->table[h];
        if (s == 0)
            return -1;
        const Bytes *k = &cfg->keys[s - 1];
        if (k->n == n && memcmp(k->p, p, (size_t)n) == 0)
            return s - 1;
        h = (h + 1) & (KEY_TABLE - 1);
    }
}

/* Is some key that matters `prefix` + "." + ...? (a kvlist value under `prefix` would be
 * flattened onto it by the Python path) */
static int key_has_prefix(const ConfigObject *cfg, const uint8_t *p, Py_ssize_t n) {
    for (int i = 0; i < cfg->nkeys; i++) {
        const Bytes *k = &cfg->keys[i];
        if (k->n > n && k->p[n] == '.' && memcmp(k->p, p, (size_t)n) == 0)
            return 1;
    }
    return 0;
}

static int name_in(PyObject *names, const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t m = PyTuple_GET_SIZE(names);
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *s = PyTuple_GET_ITEM(names, i);
        if (PyBytes_GET_SIZE(s) == n && memcmp(PyBytes_AS_STRING(s), p, (size_t)n) == 0)
            return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------ attributes */

/* AnyValue -> Val. Exactly one field (or none) else fallback. */
static int parse_anyvalue(const ConfigObject *cfg, Buf b, Val *v, int depth) {
    int seen = 0;
    v->tag = V_NONE;
    while (b.p < b.end) {
        uint32_t number;
        int wt;
        uint64_t x;
        Buf sub;
        if (read_tag(&b, &number, &wt))
            return FALLBACK;
        if (number >= 1 && number <= 7) {
            if (seen++)
                return FALLBACK;
        }
        switch (number) {
        case 1: /* string_value */
            if (wt != WT_LEN || read_len(&b, &sub) || !utf8_ok(sub.p, sub.end - sub.p))
                return FALLBACK;
            v->tag = V_STR;
            v->p = sub.p;
            v->n = sub.end - sub.p;
            break;
        case 2: /* bool_value */
            if (wt != WT_VARINT || read_varint(&b, &x))
                return FALLBACK;
            v->tag = V_BOOL;
            v->i = x != 0;
            break;
        case 3: /* int_value */
            if (wt != WT_VARINT || read_varint(&b, &x))
                return FALLBACK;
            v->tag = V_INT;
            v->i = (int64_t)x;
            break;
        case 4: /* double_value */
            if (wt != WT_I64 || read_fixed64(&b, &x))
                return FALLBACK;
            v->tag = V_DOUBLE;
            memcpy(&v->d, &x, 8);
            break;
        case 5: /* array_value */
        case 6: /* kvlist_value */ {
            const SchemaField *f = schema_field(cfg, M_ANY_VALUE, number);
            if (f == NULL || f->kind != K_MESSAGE || wt != WT_LEN || read_len(&b, &sub) ||
                validate_message(cfg, f->sub, sub, depth + 1))
                return FALLBACK;
            v->tag = number == 5 ? V_ARRAY : V_KVLIST;
            break;
        }
        case 7: /* bytes_value */
            if (wt != WT_LEN || read_len(&b, &sub))
                return FALLBACK;
            v->tag = V_BYTES;
            v->p = sub.p;
            v->n = sub.end - sub.p;
            break;
        default:
            if (schema_field(cfg, M_ANY_VALUE, number) != NULL) /* e.g. string_value_strindex */
                return FALLBACK;
            if (skip_unknown(&b, wt))
                return FALLBACK;
        }
    }
    return 0;
}

/* One KeyValue into `vals` (last occurrence of a key wins, like the Python dict). */
static int parse_keyvalue(const ConfigObject *cfg, Buf b, Val *vals, int depth) {
    const uint8_t *key = (const uint8_t *)"";
    Py_ssize_t keylen = 0;
    Val v;
    int has_value = 0;
    v.tag = V_NONE;
    while (b.p < b.end) {
        uint32_t number;
        int wt;
        Buf sub;
        if (read_tag(&b, &number, &wt))
            return FALLBACK;
        if (number == 1) {
            if (wt != WT_LEN || read_len(&b, &sub) || !utf8_ok(sub.p, sub.end - sub.p))
                return FALLBACK;
            key = sub.p;
            keylen = sub.end - sub.p;
        } else if (number == 2) {
            if (has_value++ || wt != WT_LEN || read_len(&b, &sub) || parse_anyvalue(cfg, sub, &v, depth + 1))
                return FALLBACK;
        } else if (other_field(cfg, M_KEY_VALUE, &b, number, wt, depth)) {
            return FALLBACK;
        }
    }
    int slot = key_slot(cfg, key, keylen);
    if (v.tag == V_KVLIST) { /* flattened onto `key.<sub>` by the Python path */
        if (slot >= 0 || key_has_prefix(cfg, key, keylen))
            return FALLBACK;
        return 0;
    }
    if (slot < 0)
        return 0;
    if (v.tag == V_ARRAY || v.tag == V_BYTES)
        return FALLBACK;
    vals[slot] = v;
    return 0;
}

/* ------------------------------------------------------------------------------ strings */

typedef struct {
    uint32_t hash;
    PyObject *s; /* owned */
} InternEntry;

typedef struct {
    InternEntry e[INTERN_SIZE];
    int used;
} Intern;

static void intern_clear(Intern *t) {
    for (int i = 0; i < INTERN_SIZE; i++)
        Py_CLEAR(t->e[i].s);
    t->used = 0;
}

/* New reference to the ASCII str `p[:n]`, shared within the batch. */
static PyObject *intern_ascii(Intern *t, const uint8_t *p, Py_ssize_t n) {
    uint32_t h = key_hash(p, n);
    uint32_t i = h & (INTERN_SIZE - 1);
    for (int probes = 0; probes < 16; probes++) {
        InternEntry *e = &t->e[i];
        if (e->s == NULL) {
            if (t->used >= INTERN_SIZE / 2)
                break;
            PyObject *s = PyUnicode_New(n, 127);
            if (s == NULL)
                return NULL;
            memcpy(PyUnicode_DATA(s), p, (size_t)n);
            e->hash = h;
            e->s = s;
            t->used++;
            Py_INCREF(s);
            return s;
        }
        if (e->hash == h && PyUnicode_GET_LENGTH(e->s) == n && memcmp(PyUnicode_DATA(e->s), p, (size_t)n) == 0) {
            Py_INCREF(e->s);
            return e->s;
        }
        i = (i + 1) & (INTERN_SIZE - 1);
    }
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_DATA(s), p, (size_t)n);
    return s;
}

static inline int py_space(uint8_t c) { /* ASCII characters str.strip() removes */
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* str(v).strip() for a scalar value as the Python path does; NULL + no error = "skip" (None or
 * empty after strip). `lower` also applies str.lower(). Returns a new reference. */
static PyObject *value_str(Intern *t, const Val *v, int lower, int *err) {
    *err = 0;
    PyObject *s = NULL;
    if (v->tag == V_STR) {
        const uint8_t *p = v->p;
        Py_ssize_t n = v->n;
        if (is_ascii(p, n)) {
            while (n > 0 && py_space(p[0])) {
                p++;
                n--;
            }
            while (n > 0 && py_space(p[n - 1]))
                n--;
            if (n == 0)
                return NULL;
            if (lower) {
                for (Py_ssize_t i = 0; i < n; i++)
                    if (p[i] >= 'A' && p[i] <= 'Z') {
                        PyObject *raw = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
                        if (raw == NULL) {
                            *err = 1;
                            return NULL;
                        }
                        s = PyObject_CallMethod(raw, "lower", NULL);
                        Py_DECREF(raw);
                        if (s == NULL)
                            *err = 1;
                        return s;
                    }
            }
            s = intern_ascii(t, p, n);
            if (s == NULL)
                *err = 1;
            return s;
        }
        s = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    } else if (v->tag == V_INT) {
        PyObject *x = PyLong_FromLongLong(v->i);
        s = x ? PyObject_Str(x) : NULL;
        Py_XDECREF(x);
    } else if (v->tag == V_DOUBLE) {
        PyObject *x = PyFloat_FromDouble(v->d);
        s = x ? PyObject_Str(x) : NULL;
        Py_XDECREF(x);
    } else if (v->tag == V_BOOL) {
        s = PyUnicode_FromString(v->i ? "True" : "False");
    } else {
        return NULL; /* absent, None (skipped), arrays never reach here */
    }
    if (s == NULL) {
        *err = 1;
        return NULL;
    }
    PyObject *st = PyObject_CallMethod(s, "strip", NULL);
    Py_DECREF(s);
    if (st == NULL) {
        *err = 1;
        return NULL;
    }
    if (lower) {
        PyObject *lo = PyObject_CallMethod(st, "lower", NULL);
        Py_DECREF(st);
        if (lo == NULL) {
            *err = 1;
            return NULL;
        }
        st = lo;
    }
    if (PyUnicode_GET_LENGTH(st) == 0) {
        Py_DECREF(st);
        return NULL;
    }
    return st;
}

/* _first_str(keys, vals): new reference or NULL (none); -1 on a Python error via *err. */
static PyObject *first_str(Intern *t, const KeyList *keys, const Val *vals, int *err) {
    for (int i = 0; i < keys->n; i++) {
        const Val *v = &vals[keys->slot[i]];
        if (v->tag == V_ABSENT || v->tag == V_NONE || v->tag == V_ARRAY)
            continue;
        PyObject *s = value_str(t, v, 0, err);
        if (*err)
            return NULL;
        if (s != NULL)
            return s;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------ objects */

/* A result object (EngineSpan / TierTokens / TraceHints): allocated zeroed, slots set below.
 * Their slots hold only str / int / float / bool / None / TierTokens, so they can never be part
 * of a reference cycle: they are not tracked by the cyclic GC (like tuples of atoms), which
 * keeps collections short here and wherever the spans are held later. */
static inline PyObject *new_result(PyTypeObject *type) {
    PyObject *o = type->tp_alloc(type, 0);
    if (o != NULL && PyObject_GC_IsTracked(o))
        PyObject_GC_UnTrack(o);
    return o;
}

static inline void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value /* stolen */) {
    *(PyObject **)((char *)obj + off) = value;
}

static inline PyObject *get_slot(PyObject *obj, Py_ssize_t off) { return *(PyObject **)((char *)obj + off); }

static inline PyObject *new_ref(PyObject *o) {
    Py_INCREF(o);
    return o;
}

static PyObject *hex_str(const uint8_t *p, Py_ssize_t n) {
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(2 * n, 127);
    if (s == NULL)
        return NULL;
    uint8_t *out = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = (uint8_t)digits[p[i] >> 4];
        out[2 * i + 1] = (uint8_t)digits[p[i] & 15];
    }
    return s;
}

/* ------------------------------------------------------------------------------ resolution */

typedef struct {
    PyObject *role; /* borrowed from cfg or None */
    PyObject *pod, *tenant, *model; /* owned (tenant/model may be NULL = None) */
} ResFacts;

static void facts_clear(ResFacts *rf) {
    Py_CLEAR(rf->pod);
    Py_CLEAR(rf->tenant);
    Py_CLEAR(rf->model);
    rf->role = Py_None;
}

static int res_facts(ConfigObject *cfg, Intern *t, const Val *vals, ResFacts *rf) {
    int err = 0;
    rf->role = Py_None;
    int decided = 0;
    for (int i = 0; i < cfg->role.n && !decided; i++) {
        const Val *v = &vals[cfg->role.slot[i]];
        if (v->tag != V_STR)
            continue;
        PyObject *r = value_str(t, v, 1, &err);
        if (err)
            return PYERR;
        if (r == NULL)
            continue;
        decided = 1;
        int k = PySequence_Contains(cfg->roles, r);
        if (k < 0) {
            Py_DECREF(r);
            return PYERR;
        }
        if (k) {
            int pre = PyUnicode_Compare(r, cfg->role_prefill) == 0;
            int dec = PyUnicode_Compare(r, cfg->role_decode) == 0;
            rf->role = pre ? cfg->role_prefill : dec ? cfg->role_decode : Py_None;
            if (!pre && !dec) { /* a role outside prefill/decode: let Python decide */
                Py_DECREF(r);
                return FALLBACK;
            }
        }
        Py_DECREF(r);
    }
    if (!decided && cfg->service_name >= 0) {
        const Val *v = &vals[cfg->service_name];
        if (v->tag == V_STR) {
            PyObject *s = PyUnicode_DecodeUTF8((const char *)v->p, v->n, "strict");
            if (s == NULL)
                return PYERR;
            Py_ssize_t len = PyUnicode_GET_LENGTH(s);
            Py_ssize_t a = PyUnicode_Tailmatch(s, cfg->suffix_prefill, 0, len, 1);
            Py_ssize_t b = a == 1 ? 0 : PyUnicode_Tailmatch(s, cfg->suffix_decode, 0, len, 1);
            Py_DECREF(s);
            if (a < 0 || b < 0)
                return PYERR;
            rf->role = a == 1 ? cfg->role_prefill : b == 1 ? cfg->role_decode : Py_None;
        }
    }
    rf->pod = first_str(t, &cfg->pod, vals, &err);
    if (err)
        return PYERR;
    if (rf->pod == NULL)
        rf->pod = new_ref(cfg->unknown_pod);
    rf->tenant = first_str(t, &cfg->tenant, vals, &err);
    if (err)
        return PYERR;
    rf->model = first_str(t, &cfg->model, vals, &err);
    if (err)
        return PYERR;
    return 0;
}

/* _token: 0 = value in *out, 2 = absent, FALLBACK for anything not exact here. */
#define TOKEN_ABSENT 2
static int token(const Val *v, int64_t *out) {
    switch (v->tag) {
    case V_ABSENT:
        return TOKEN_ABSENT;
    case V_INT:
        if (v->i < 0 || v->i > MAX_TOKENS)
            return FALLBACK;
        *out = v->i;
        return 0;
    case V_DOUBLE:
        if (!(v->d >= 0) || v->d > (double)MAX_TOKENS || v->d != floor(v->d))
            return FALLBACK;
        *out = (int64_t)v->d;
        return 0;
    default:
        return FALLBACK;
    }
}

static int tokens(const KeyList *keys, const Val *vals, int64_t *out) {
    for (int i = 0; i < keys->n; i++) {
        const Val *v = &vals[keys->slot[i]];
        if (v->tag != V_ABSENT)
            return token(v, out);
    }
    return TOKEN_ABSENT;
}

/* _seconds: new reference (float or None), NULL + *rc set on fallback/error. */
static PyObject *seconds(const Val *v, int *rc) {
    switch (v->tag) {
    case V_ABSENT:
        return new_ref(Py_None);
    case V_DOUBLE:
        if (v->d >= 0.0 && v->d < INFINITY)
            break;
        *rc = FALLBACK;
        return NULL;
    case V_INT:
        if (v->i >= 0) {
            PyObject *f = PyFloat_FromDouble((double)v->i);
            if (f == NULL)
                *rc = PYERR;
            return f;
        }
        *rc = FALLBACK;
        return NULL;
    default:
        *rc = FALLBACK;
        return NULL;
    }
    PyObject *f = PyFloat_FromDouble(v->d);
    if (f == NULL)
        *rc = PYERR;
    return f;
}

typedef struct {
    PyObject *engine; /* list */
    PyObject *hints;  /* dict */
    Py_ssize_t ignored;
    PyObject *zero_tiers; /* TierTokens() shared by the spans without cached tokens */
    Intern intern;
} Batch;

static PyObject *new_tiers(ConfigObject *cfg, const int64_t *t) {
    PyObject *o = new_result(cfg->tier_type);
    if (o == NULL)
        return NULL;
    for (int i = 0; i < TT_N; i++) {
        PyObject *x = PyLong_FromLongLong(t[i]);
        if (x == NULL) {
            Py_DECREF(o);
            return NULL;
        }
        set_slot(o, cfg->tt_off[i], x);
    }
    return o;
}

static int engine_span(ConfigObject *cfg, Batch *bt, const Val *vals, PyObject *tid, const uint8_t *sid,
                       double start, double end, int error_status, const ResFacts *rf, PyObject *tenant,
                       PyObject *model) {
    int64_t prompt, output = 0, tiers[TT_N] = {0, 0, 0, 0, 0};
    int rc = tokens(&cfg->input, vals, &prompt);
    if (rc) /* missing (MISSING_TOKENS) or not exact: the Python path decides */
        return FALLBACK;
    rc = tokens(&cfg->output, vals, &output);
    if (rc == FALLBACK)
        return FALLBACK;
    if (rc == TOKEN_ABSENT)
        output = 0;
    int64_t known = 0, total;
    for (int i = 0; i < cfg->ntiers; i++) {
        int64_t n;
        rc = token(&vals[cfg->tier_slot[i]], &n);
        if (rc == FALLBACK)
            return FALLBACK;
        if (rc == 0) {
            tiers[cfg->tier_field[i]] = n;
            known += n;
        }
    }
    rc = cfg->cached >= 0 ? token(&vals[cfg->cached], &total) : TOKEN_ABSENT;
    if (rc == FALLBACK)
        return FALLBACK;
    tiers[TT_UNKNOWN] = (rc == TOKEN_ABSENT || total <= known) ? 0 : total - known;
    int64_t cached_total = tiers[0] + tiers[1] + tiers[2] + tiers[3] + tiers[4];
    if (cached_total > prompt)
        return FALLBACK; /* BAD_VALUE reject */

    PyObject *lat[LAT_N] = {NULL, NULL, NULL, NULL, NULL};
    rc = 0;
    for (int i = 0; i < LAT_N; i++) {
        lat[i] = seconds(&vals[cfg->lat[i]], &rc);
        if (lat[i] == NULL) {
            for (int k = 0; k < i; k++)
                Py_DECREF(lat[k]);
            return rc;
        }
    }
    /* request id: str(v) unless None / "" -> the span id */
    PyObject *span_id = hex_str(sid, 8);
    PyObject *request_id = NULL;
    const Val *rv = cfg->request_id >= 0 ? &vals[cfg->request_id] : NULL;
    if (span_id == NULL)
        goto pyerr;
    if (rv == NULL || rv->tag == V_ABSENT || rv->tag == V_NONE || (rv->tag == V_STR && rv->n == 0)) {
        request_id = new_ref(span_id);
    } else if (rv->tag == V_STR) {
        request_id = PyUnicode_DecodeUTF8((const char *)rv->p, rv->n, "strict");
    } else if (rv->tag == V_INT || rv->tag == V_DOUBLE || rv->tag == V_BOOL) {
        PyObject *x = rv->tag == V_INT      ? PyLong_FromLongLong(rv->i)
                      : rv->tag == V_DOUBLE ? PyFloat_FromDouble(rv->d)
                                            : new_ref(rv->i ? Py_True : Py_False);
        request_id = x ? PyObject_Str(x) : NULL;
        Py_XDECREF(x);
    } else {
        Py_DECREF(span_id);
        for (int k = 0; k < LAT_N; k++)
            Py_DECREF(lat[k]);
        return FALLBACK;
    }
    if (request_id == NULL)
        goto pyerr;
    const Val *ev = cfg->error_type >= 0 ? &vals[cfg->error_type] : NULL;
    int error = error_status || (ev != NULL && ev->tag != V_ABSENT && ev->tag != V_NONE);

    PyObject *cached;
    if (cached_total == 0 && bt->zero_tiers != NULL)
        cached = new_ref(bt->zero_tiers);
    else
        cached = new_tiers(cfg, tiers);
    if (cached == NULL)
        goto pyerr;
    if (cached_total == 0 && bt->zero_tiers == NULL)
        bt->zero_tiers = new_ref(cached);
    PyObject *ps = PyFloat_FromDouble(start), *pe = PyFloat_FromDouble(end);
    PyObject *pp = PyLong_FromLongLong(prompt), *po = PyLong_FromLongLong(output);
    PyObject *obj = new_result(cfg->engine_type);
    if (ps == NULL || pe == NULL || pp == NULL || po == NULL || obj == NULL) {
        Py_XDECREF(ps);
        Py_XDECREF(pe);
        Py_XDECREF(pp);
        Py_XDECREF(po);
        Py_XDECREF(obj);
        Py_DECREF(cached);
        goto pyerr;
    }
    const Py_ssize_t *off = cfg->es_off;
    set_slot(obj, off[ES_TRACE_ID], new_ref(tid));
    set_slot(obj, off[ES_SPAN_ID], span_id);
    set_slot(obj, off[ES_REQUEST_ID], request_id);
    set_slot(obj, off[ES_ROLE], new_ref(rf->role));
    set_slot(obj, off[ES_TENANT], new_ref(tenant ? tenant : Py_None));
    set_slot(obj, off[ES_MODEL], new_ref(model ? model : cfg->unknown_model));
    set_slot(obj, off[ES_POD], new_ref(rf->pod));
    set_slot(obj, off[ES_START], ps);
    set_slot(obj, off[ES_END], pe);
    set_slot(obj, off[ES_PROMPT], pp);
    set_slot(obj, off[ES_OUTPUT], po);
    set_slot(obj, off[ES_CACHED], cached);
    set_slot(obj, off[ES_QUEUE], lat[LAT_QUEUE]);
    set_slot(obj, off[ES_PREFILL], lat[LAT_PREFILL]);
    set_slot(obj, off[ES_DECODE], lat[LAT_DECODE]);
    set_slot(obj, off[ES_TTFT], lat[LAT_TTFT]);
    set_slot(obj, off[ES_E2E], lat[LAT_E2E]);
    set_slot(obj, off[ES_ERROR], new_ref(error ? Py_True : Py_False));
    int r = PyList_Append(bt->engine, obj);
    Py_DECREF(obj);
    return r < 0 ? PYERR : 0;
pyerr:
    Py_XDECREF(span_id);
    Py_XDECREF(request_id);
    for (int k = 0; k < LAT_N; k++)
        Py_XDECREF(lat[k]);
    return PYERR;
}

/* _flag: -1 None, 0 False, 1 True */
static int flag(Intern *t, const Val *v, int *err) {
    *err = 0;
    if (v->tag == V_BOOL)
        return v->i ? 1 : 0;
    if (v->tag != V_STR)
        return -1;
    PyObject *s = value_str(t, v, 1, err);
    if (s == NULL)
        return -1;
    int out = -1;
    if (PyUnicode_CompareWithASCIIString(s, "true") == 0)
        out = 1;
    else if (PyUnicode_CompareWithASCIIString(s, "false") == 0)
        out = 0;
    Py_DECREF(s);
    return out;
}

static PyObject *bool_or_none(int b) { return b < 0 ? Py_None : b ? Py_True : Py_False; }

static int add_hint(ConfigObject *cfg, Batch *bt, PyObject *tid, PyObject *tenant, PyObject *model, int dis) {
    PyObject *a = PyDict_GetItemWithError(bt->hints, tid); /* borrowed */
    if (a == NULL && PyErr_Occurred())
        return PYERR;
    PyObject *t = tenant ? tenant : Py_None, *m = model ? model : Py_None;
    PyObject *trace = tid;
    if (a != NULL) {
        const Py_ssize_t *off = cfg->th_off;
        PyObject *at = get_slot(a, off[TH_TENANT]), *am = get_slot(a, off[TH_MODEL]);
        PyObject *ad = get_slot(a, off[TH_DIS]);
        int adis = ad == Py_None ? -1 : ad == Py_True ? 1 : 0;
        int ndis = dis < 0 ? adis : adis < 0 ? dis : (adis || dis);
        PyObject *nt = at != Py_None ? at : t, *nm = am != Py_None ? am : m;
        if (nt == at && nm == am && ndis == adis)
            return 0; /* merge_hints would give an equal TraceHints */
        trace = get_slot(a, off[TH_TRACE_ID]);
        t = nt;
        m = nm;
        dis = ndis;
    }
    PyObject *h = new_result(cfg->hints_type);
    if (h == NULL)
        return PYERR;
    set_slot(h, cfg->th_off[TH_TRACE_ID], new_ref(trace));
    set_slot(h, cfg->th_off[TH_TENANT], new_ref(t));
    set_slot(h, cfg->th_off[TH_MODEL], new_ref(m));
    set_slot(h, cfg->th_off[TH_DIS], new_ref(bool_or_none(dis)));
    int r = PyDict_SetItem(bt->hints, tid, h);
    Py_DECREF(h);
    return r < 0 ? PYERR : 0;
}

static const uint8_t ZERO16[16] = {0};

/* One Span message: parse, check like otlp.pb_spans, resolve like Resolver.add. */
static int process_span(ConfigObject *cfg, Batch *bt, Buf b, const ResFacts *rf, int depth) {
    Val vals[MAX_KEYS];
    memset(vals, 0, sizeof(Val) * (size_t)cfg->nkeys);
    Bytes tid = {NULL, 0}, sid = {NULL, 0}, pid = {NULL, 0}, name = {(const uint8_t *)"", 0};
    uint64_t start = 0, end = 0, code = 0;
    while (b.p < b.end) {
        uint32_t number;
        int wt;
        Buf sub;
        if (read_tag(&b, &number, &wt))
            return FALLBACK;
        switch (number) {
        case 1: /* trace_id */
        case 2: /* span_id */
        case 4: /* parent_span_id */
        case 5: /* name */
            if (wt != WT_LEN || read_len(&b, &sub))
                return FALLBACK;
            {
                Bytes x = {sub.p, sub.end - sub.p};
                if (number == 1)
                    tid = x;
                else if (number == 2)
                    sid = x;
                else if (number == 4)
                    pid = x;
                else {
                    if (!utf8_ok(x.p, x.n))
                        return FALLBACK;
                    name = x;
                }
            }
            break;
        case 7: /* start_time_unix_nano */
        case 8: /* end_time_unix_nano */
            if (wt != WT_I64 || read_fixed64(&b, number == 7 ? &start : &end))
                return FALLBACK;
            break;
        case 9: /* attributes */
            if (wt != WT_LEN || read_len(&b, &sub) || parse_keyvalue(cfg, sub, vals, depth + 1))
                return FALLBACK;
            break;
        case 15: /* status: code (3) read here, the rest validated; repeated occurrences merge */
            if (wt != WT_LEN || read_len(&b, &sub))
                return FALLBACK;
            while (sub.p < sub.end) {
                uint32_t n2;
                int wt2;
                if (read_tag(&sub, &n2, &wt2))
                    return FALLBACK;
                if (n2 == 3) {
                    if (wt2 != WT_VARINT || read_varint(&sub, &code))
                        return FALLBACK;
                } else if (other_field(cfg, M_STATUS, &sub, n2, wt2, depth + 1)) {
                    return FALLBACK;
                }
            }
            break;
        default:
            if (other_field(cfg, M_SPAN, &b, number, wt, depth))
                return FALLBACK;
        }
    }
    /* otlp.pb_spans validity: any reject -> the Python path reports it */
    if (tid.n != 16 || sid.n != 8 || memcmp(tid.p, ZERO16, 16) == 0 || memcmp(sid.p, ZERO16, 8) == 0 ||
        (pid.n != 0 && pid.n != 8) || end < start)
        return FALLBACK;

    int err = 0;
    int is_engine = name_in(cfg->engine_names, name.p, name.n) ||
                    (cfg->marker >= 0 && vals[cfg->marker].tag != V_ABSENT);
    PyObject *tenant = first_str(&bt->intern, &cfg->tenant, vals, &err);
    if (err)
        return PYERR;
    if (tenant == NULL && rf->tenant != NULL)
        tenant = new_ref(rf->tenant);
    PyObject *model = first_str(&bt->intern, &cfg->model, vals, &err);
    if (err) {
        Py_XDECREF(tenant);
        return PYERR;
    }
    if (model == NULL && rf->model != NULL)
        model = new_ref(rf->model);
    PyObject *trace_id = hex_str(tid.p, 16);
    int rc = trace_id == NULL ? PYERR : 0;
    if (rc == 0 && is_engine)
        rc = engine_span(cfg, bt, vals, trace_id, sid.p, (double)start / 1e9, (double)end / 1e9,
                         (long)(int32_t)(uint32_t)code == cfg->status_error, rf, tenant, model);
    if (rc == 0) {
        int dis = cfg->disaggregation >= 0 ? flag(&bt->intern, &vals[cfg->disaggregation], &err) : -1;
        if (err)
            rc = PYERR;
        else {
            if (dis < 0 && name_in(cfg->sidecar_names, name.p, name.n))
                dis = 1;
            if (is_engine && rf->role == cfg->role_prefill)
                dis = 1;
            if (tenant == NULL && model == NULL && dis < 0) {
                if (!is_engine)
                    bt->ignored++;
            } else {
                rc = add_hint(cfg, bt, trace_id, tenant, model, dis);
            }
        }
    }
    Py_XDECREF(trace_id);
    Py_XDECREF(tenant);
    Py_XDECREF(model);
    return rc;
}

static int process_resource_spans(ConfigObject *cfg, Batch *bt, Buf b, Py_ssize_t *nspans, Py_ssize_t max_spans) {
    Val vals[MAX_KEYS];
    memset(vals, 0, sizeof(Val) * (size_t)cfg->nkeys);
    /* pass 1: the resource (every occurrence merges), validate the rest, count spans */
    Buf walk = b;
    while (walk.p < walk.end) {
        uint32_t number;
        int wt;
        Buf sub;
        if (read_tag(&walk, &number, &wt))
            return FALLBACK;
        if (number == 1) { /* resource */
            if (wt != WT_LEN || read_len(&walk, &sub))
                return FALLBACK;
            while (sub.p < sub.end) {
                uint32_t n2;
                int wt2;
                Buf kv;
                if (read_tag(&sub, &n2, &wt2))
                    return FALLBACK;
                if (n2 == 1) {
                    if (wt2 != WT_LEN || read_len(&sub, &kv) || parse_keyvalue(cfg, kv, vals, 3))
                        return FALLBACK;
                } else if (other_field(cfg, M_RESOURCE, &sub, n2, wt2, 3)) {
                    return FALLBACK;
                }
            }
        } else if (number == 2) { /* scope_spans: count spans, validate the non-span fields */
            if (wt != WT_LEN || read_len(&walk, &sub))
                return FALLBACK;
            while (sub.p < sub.end) {
                uint32_t n2;
                int wt2;
                Buf sp;
                if (read_tag(&sub, &n2, &wt2))
                    return FALLBACK;
                if (n2 == 2) {
                    if (wt2 != WT_LEN || read_len(&sub, &sp))
                        return FALLBACK;
                    if (++*nspans > max_spans)
                        return FALLBACK; /* PayloadTooLarge from the Python path */
                } else if (other_field(cfg, M_SCOPE_SPANS, &sub, n2, wt2, 3)) {
                    return FALLBACK;
                }
            }
        } else if (other_field(cfg, M_RESOURCE_SPANS, &walk, number, wt, 2)) {
            return FALLBACK;
        }
    }
    ResFacts rf = {Py_None, NULL, NULL, NULL};
    int rc = res_facts(cfg, &bt->intern, vals, &rf);
    /* pass 2: the spans (the structure was validated in pass 1) */
    walk = b;
    while (rc == 0 && walk.p < walk.end) {
        uint32_t number;
        int wt;
        Buf sub;
        if (read_tag(&walk, &number, &wt)) {
            rc = FALLBACK;
        } else if (number != 2) {
            rc = skip_unknown(&walk, wt);
        } else if (read_len(&walk, &sub)) {
            rc = FALLBACK;
        } else {
            while (rc == 0 && sub.p < sub.end) {
                uint32_t n2;
                int wt2;
                Buf sp;
                if (read_tag(&sub, &n2, &wt2))
                    rc = FALLBACK;
                else if (n2 != 2)
                    rc = skip_unknown(&sub, wt2);
                else
                    rc = read_len(&sub, &sp) ? FALLBACK : process_span(cfg, bt, sp, &rf, 4);
            }
        }
    }
    facts_clear(&rf);
    return rc;
}

/* ------------------------------------------------------------------------------ Config type */

static int config_clear(ConfigObject *self) {
    for (int i = 0; i < self->nkeys; i++)
        Py_CLEAR(self->key_bytes[i]);
    self->nkeys = 0;
    Py_CLEAR(self->engine_names);
    Py_CLEAR(self->sidecar_names);
    Py_CLEAR(self->role_prefill);
    Py_CLEAR(self->role_decode);
    Py_CLEAR(self->roles);
    Py_CLEAR(self->suffix_prefill);
    Py_CLEAR(self->suffix_decode);
    Py_CLEAR(self->unknown_pod);
    Py_CLEAR(self->unknown_model);
    Py_CLEAR(self->engine_type);
    Py_CLEAR(self->tier_type);
    Py_CLEAR(self->hints_type);
    if (self->msgs != NULL) {
        for (int i = 0; i < self->nmsgs; i++)
            PyMem_Free(self->msgs[i].fields);
        PyMem_Free(self->msgs);
        self->msgs = NULL;
    }
    return 0;
}

static void config_dealloc(ConfigObject *self) {
    config_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* slot of key `s` (a str), added to the table when new */
static int add_key(ConfigObject *self, PyObject *s) {
    if (s == NULL)
        return -1;
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "attribute keys must be str");
        return -1;
    }
    PyObject *b = PyUnicode_AsUTF8String(s);
    if (b == NULL)
        return -1;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    int found = key_slot(self, p, n);
    if (found >= 0) {
        Py_DECREF(b);
        return found;
    }
    if (self->nkeys >= MAX_KEYS) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_ValueError, "too many attribute keys for the native fast path");
        return -1;
    }
    int slot = self->nkeys++;
    self->key_bytes[slot] = b;
    self->keys[slot].p = p;
    self->keys[slot].n = n;
    uint32_t h = key_hash(p, n) & (KEY_TABLE - 1);
    while (self->table[h] != 0)
        h = (h + 1) & (KEY_TABLE - 1);
    self->table[h] = (int16_t)(slot + 1);
    return slot;
}

static int key_list(ConfigObject *self, PyObject *seq, KeyList *out) {
    PyObject *fast = PySequence_Fast(seq, "key list must be a sequence");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > MAX_LIST) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "key list too long for the native fast path");
        return -1;
    }
    out->n = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int s = add_key(self, PySequence_Fast_GET_ITEM(fast, i));
        if (s < 0) {
            Py_DECREF(fast);
            return -1;
        }
        out->slot[out->n++] = s;
    }
    Py_DECREF(fast);
    return 0;
}

/* names: sequence of str -> tuple of UTF-8 bytes */
static PyObject *name_tuple(PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "names must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *out = PyTuple_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *b = PyUnicode_AsUTF8String(PySequence_Fast_GET_ITEM(fast, i));
        if (b == NULL)
            Py_CLEAR(out);
        else
            PyTuple_SET_ITEM(out, i, b);
    }
    Py_DECREF(fast);
    return out;
}

/* offsets of the slots named by `descrs` (member descriptors, in the C order) of `type` */
static int layout(PyObject *type, PyObject *descrs, Py_ssize_t *off, Py_ssize_t n) {
    if (descrs == NULL)
        return -1;
    if (!PyType_Check(type) || !PyTuple_Check(descrs) || PyTuple_GET_SIZE(descrs) != n) {
        PyErr_SetString(PyExc_ValueError, "dataclass layout does not match the native fast path");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(descrs, i);
        if (Py_TYPE(d) != &PyMemberDescr_Type || PyDescr_TYPE(d) != (PyTypeObject *)type) {
            PyErr_SetString(PyExc_TypeError, "expected a slot member descriptor of the dataclass");
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
            PyErr_SetString(PyExc_TypeError, "unexpected slot member type");
            return -1;
        }
        off[i] = m->offset;
    }
    return 0;
}

static int int_arg(PyObject *dict, const char *name, long *out) {
    PyObject *v = PyDict_GetItemString(dict, name);
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "missing %s", name);
        return -1;
    }
    *out = PyLong_AsLong(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *item(PyObject *dict, const char *name) {
    PyObject *v = PyDict_GetItemString(dict, name); /* borrowed */
    if (v == NULL)
        PyErr_Format(PyExc_KeyError, "missing %s", name);
    return v;
}

static int single_key(ConfigObject *self, PyObject *spec, const char *name, int *slot) {
    PyObject *v = item(spec, name);
    if (v == NULL)
        return -1;
    *slot = add_key(self, v);
    return *slot < 0 ? -1 : 0;
}

#define OWN(field, name)                                                                                    \
    do {                                                                                                    \
        PyObject *_v = item(spec, name);                                                                    \
        if (_v == NULL)                                                                                     \
            goto fail;                                                                                      \
        Py_INCREF(_v);                                                                                      \
        self->field = (void *)_v;                                                                           \
    } while (0)

static PyObject *config_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *spec;
    static char *kwlist[] = {"spec", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!", kwlist, &PyDict_Type, &spec))
        return NULL;
    ConfigObject *self = (ConfigObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    memset(self->table, 0, sizeof(self->table));
    if (key_list(self, item(spec, "tenant_keys"), &self->tenant) || key_list(self, item(spec, "model_keys"), &self->model) ||
        key_list(self, item(spec, "pod_keys"), &self->pod) || key_list(self, item(spec, "role_keys"), &self->role) ||
        key_list(self, item(spec, "input_token_keys"), &self->input) ||
        key_list(self, item(spec, "output_token_keys"), &self->output) ||
        single_key(self, spec, "engine_marker_attribute", &self->marker) ||
        single_key(self, spec, "cached_tokens_key", &self->cached) ||
        single_key(self, spec, "request_id_key", &self->request_id) ||
        single_key(self, spec, "error_type_key", &self->error_type) ||
        single_key(self, spec, "disaggregation_key", &self->disaggregation) ||
        single_key(self, spec, "service_name_key", &self->service_name))
        goto fail;
    {
        KeyList lat;
        if (key_list(self, item(spec, "latency_keys"), &lat))
            goto fail;
        if (lat.n != LAT_N) {
            PyErr_SetString(PyExc_ValueError, "latency_keys: queue, prefill, decode, ttft, e2e");
            goto fail;
        }
        memcpy(self->lat, lat.slot, sizeof(self->lat));
        KeyList tk;
        PyObject *fields = item(spec, "tier_fields");
        if (key_list(self, item(spec, "tier_keys"), &tk) || fields == NULL)
            goto fail;
        if (tk.n > MAX_TIERS || !PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != tk.n) {
            PyErr_SetString(PyExc_ValueError, "tier_keys / tier_fields");
            goto fail;
        }
        self->ntiers = tk.n;
        for (int i = 0; i < tk.n; i++) {
            long f = PyLong_AsLong(PyTuple_GET_ITEM(fields, i));
            if (f < 0 || f >= TT_UNKNOWN) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "tier field index");
                goto fail;
            }
            self->tier_slot[i] = tk.slot[i];
            self->tier_field[i] = (int)f;
        }
    }
    self->engine_names = name_tuple(item(spec, "engine_span_names"));
    if (self->engine_names == NULL)
        goto fail;
    self->sidecar_names = name_tuple(item(spec, "sidecar_span_names"));
    if (self->sidecar_names == NULL)
        goto fail;
    OWN(role_prefill, "role_prefill");
    OWN(role_decode, "role_decode");
    OWN(roles, "roles");
    OWN(suffix_prefill, "suffix_prefill");
    OWN(suffix_decode, "suffix_decode");
    OWN(unknown_pod, "unknown_pod");
    OWN(unknown_model, "unknown_model");
    if (!PyUnicode_Check(self->role_prefill) || !PyUnicode_Check(self->role_decode) ||
        !PyUnicode_Check(self->suffix_prefill) || !PyUnicode_Check(self->suffix_decode) ||
        !PyUnicode_Check(self->unknown_pod) || !PyUnicode_Check(self->unknown_model)) {
        PyErr_SetString(PyExc_TypeError, "role / suffix / unknown constants must be str");
        goto fail;
    }
    if (int_arg(spec, "status_error", &self->status_error))
        goto fail;
    OWN(engine_type, "engine_type");
    OWN(tier_type, "tier_type");
    OWN(hints_type, "hints_type");
    if (layout((PyObject *)self->engine_type, item(spec, "engine_slots"), self->es_off, ES_N) ||
        layout((PyObject *)self->tier_type, item(spec, "tier_slots"), self->tt_off, TT_N) ||
        layout((PyObject *)self->hints_type, item(spec, "hints_slots"), self->th_off, TH_N))
        goto fail;
    /* schema: list of messages, each a list of (number, kind, sub) */
    {
        PyObject *schema = item(spec, "schema");
        if (schema == NULL || !PyList_Check(schema) || PyList_GET_SIZE(schema) < M_COUNT) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "schema");
            goto fail;
        }
        Py_ssize_t nm = PyList_GET_SIZE(schema);
        self->msgs = PyMem_Calloc((size_t)nm, sizeof(SchemaMsg));
        if (self->msgs == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        self->nmsgs = (int)nm;
        for (Py_ssize_t i = 0; i < nm; i++) {
            PyObject *fl = PyList_GET_ITEM(schema, i);
            if (!PyList_Check(fl)) {
                PyErr_SetString(PyExc_ValueError, "schema message");
                goto fail;
            }
            Py_ssize_t nf = PyList_GET_SIZE(fl);
            self->msgs[i].fields = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(SchemaField));
            if (self->msgs[i].fields == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            self->msgs[i].n = (int)nf;
            for (Py_ssize_t k = 0; k < nf; k++) {
                unsigned int number;
                int kind, sub;
                if (!PyArg_ParseTuple(PyList_GET_ITEM(fl, k), "Iii", &number, &kind, &sub))
                    goto fail;
                if (kind == K_MESSAGE && (sub < 0 || sub >= nm)) {
                    PyErr_SetString(PyExc_ValueError, "schema sub-message index");
                    goto fail;
                }
                self->msgs[i].fields[k] = (SchemaField){number, kind, sub};
            }
        }
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

PyDoc_STRVAR(decode_doc, "decode(data, max_spans) -> (engine tuple, hints dict, ignored) | None (fallback)");

static PyObject *config_decode(ConfigObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(data, max_spans)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t max_spans = PyLong_AsSsize_t(args[1]);
    if (max_spans == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Batch *bt = PyMem_Calloc(1, sizeof(Batch));
    if (bt == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    bt->engine = PyList_New(0);
    bt->hints = PyDict_New();
    int rc = (bt->engine == NULL || bt->hints == NULL) ? PYERR : 0;
    Buf b = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    Py_ssize_t nspans = 0;
    while (rc == 0 && b.p < b.end) {
        uint32_t number;
        int wt;
        Buf sub;
        if (read_tag(&b, &number, &wt)) {
            rc = FALLBACK;
        } else if (number == 1) {
            rc = (wt != WT_LEN || read_len(&b, &sub)) ? FALLBACK
                                                       : process_resource_spans(self, bt, sub, &nspans, max_spans);
        } else {
            rc = other_field(self, M_REQUEST, &b, number, wt, 0);
        }
    }
    PyObject *out = NULL;
    if (rc == 0) {
        PyObject *engine = PyList_AsTuple(bt->engine);
        out = engine ? Py_BuildValue("NOn", engine, bt->hints, bt->ignored) : NULL;
    } else if (rc == FALLBACK) {
        out = new_ref(Py_None);
    }
    Py_XDECREF(bt->engine);
    Py_XDECREF(bt->hints);
    Py_XDECREF(bt->zero_tiers);
    intern_clear(&bt->intern);
    PyMem_Free(bt);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef config_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))config_decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ConfigType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "observer.ingest._otlpfast.Config",
    .tp_basicsize = sizeof(ConfigObject),
    .tp_dealloc = (destructor)config_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("A ResolveConfig compiled for the native decoder: Config(spec: dict)."),
    .tp_methods = config_methods,
    .tp_new = config_new,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, .m_name = "observer.ingest._otlpfast",
    .m_doc = PyDoc_STR("Native OTLP protobuf decode + resolve for clean batches (see fastpath.py)."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__otlpfast(void) {
    if (PyType_Ready(&ConfigType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Config", (PyObject *)&ConfigType) < 0 ||
        PyModule_AddIntConstant(m, "K_VARINT", K_VARINT) < 0 || PyModule_AddIntConstant(m, "K_I64", K_I64) < 0 ||
        PyModule_AddIntConstant(m, "K_I32", K_I32) < 0 || PyModule_AddIntConstant(m, "K_STRING", K_STRING) < 0 ||
        PyModule_AddIntConstant(m, "K_BYTES", K_BYTES) < 0 || PyModule_AddIntConstant(m, "K_MESSAGE", K_MESSAGE) < 0 ||
        PyModule_AddIntConstant(m, "K_UNSUPPORTED", K_UNSUPPORTED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
