/*
 * msrplib._cparser: the C fast path of msrplib.protocol.MSRPParser.
 *
 * scan_chunks() parses, from a position of a bytes buffer, every following
 * chunk that is whole in the buffer and plainly well-formed: a valid start
 * line, header lines "Name:value" whose names are known ones spelled as
 * msrplib spells them, the limits kept, and the chunk's end-line (with its
 * flag) in the buffer.  It appends the same events the Python parser would
 * and returns the position after the last chunk it took.  At the first chunk
 * it does not take (incomplete, unusual or invalid) it stops, and the Python
 * parser deals with that chunk: it waits for more input, parses it, or
 * raises the error.  So this module never decides that input is invalid,
 * and the parser's behaviour is the same with or without it.
 *
 * The protocol layer stays sans-I/O: nothing here reads or writes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* configure()d by msrplib.protocol */
static PyTypeObject *chunk_type = NULL;   /* MSRPData */
static PyObject *ev_start = NULL;         /* ParserEvent.CHUNK_START */
static PyObject *ev_body = NULL;          /* ParserEvent.BODY */
static PyObject *end_events[3] = {NULL, NULL, NULL};   /* the (CHUNK_END, flag) tuples for $ + # */
static PyObject *flags[3] = {NULL, NULL, NULL};        /* '$' '+' '#' */

#define MAX_KNOWN 64
static PyObject *known_names[MAX_KNOWN];  /* the known header names (str, ASCII) */
static const char *known_text[MAX_KNOWN];
static Py_ssize_t known_length[MAX_KNOWN];
static int known_count = 0;

#define N_METHODS 4
static const char *method_text[N_METHODS] = {"SEND", "REPORT", "AUTH", "NICKNAME"};
static PyObject *method_names[N_METHODS];

static PyObject *s_transaction_id, *s_method, *s_code, *s_comment, *s_raw, *s_contflag, *s_chunk_header;

/* a byte of a transaction id after its first: [A-Za-z0-9.\-+%=] */
static unsigned char tid_char[256];
static unsigned char alnum[256];
static unsigned char alpha[256];
static unsigned char method_char[256];   /* [A-Za-z0-9_] */

static void
init_tables(void)
{
    int c;
    for (c = 0; c < 256; c++) {
        int is_alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        int is_digit = c >= '0' && c <= '9';
        alpha[c] = (unsigned char)is_alpha;
        alnum[c] = (unsigned char)(is_alpha || is_digit);
        tid_char[c] = (unsigned char)(is_alpha || is_digit || c == '.' || c == '-' || c == '+' ||
                                      c == '%' || c == '=');
        method_char[c] = (unsigned char)(is_alpha || is_digit || c == '_');
    }
}

/* first occurrence of needle in [from, to) of data, or -1 (the whole needle within the range).  Every
   needle here starts with a CR, rare in most bodies: memchr() for it, then a comparison, is several
   times faster than a general search. */
static Py_ssize_t
find(const char *data, Py_ssize_t from, Py_ssize_t to, const char *needle, Py_ssize_t needle_length)
{
    const char *at = data + from, *last;
    if (to - from < needle_length)
        return -1;
    last = data + to - needle_length;   /* the last place where the needle can start */
    while (at <= last) {
        at = memchr(at, needle[0], (size_t)(last - at + 1));
        if (at == NULL)
            return -1;
        if (memcmp(at + 1, needle + 1, (size_t)(needle_length - 1)) == 0)
            return (Py_ssize_t)(at - data);
        at++;
    }
    return -1;
}

static int
flag_index(char flag)
{
    return flag == '$' ? 0 : flag == '+' ? 1 : flag == '#' ? 2 : -1;
}

static PyObject *
method_name(const char *text, Py_ssize_t length)
{
    int i;
    for (i = 0; i < N_METHODS; i++) {
        if ((Py_ssize_t)strlen(method_text[i]) == length && memcmp(method_text[i], text, (size_t)length) == 0) {
            Py_INCREF(method_names[i]);
            return method_names[i];
        }
    }
    return PyUnicode_DecodeASCII(text, length, NULL);
}

static PyObject *
known_name(const char *text, Py_ssize_t length)
{
    int i;
    for (i = 0; i < known_count; i++) {
        if (known_length[i] == length && memcmp(known_text[i], text, (size_t)length) == 0)
            return known_names[i];   /* borrowed */
    }
    return NULL;
}

/*
 * Parse the header lines in [start, end): into headers (name -> text after
 * the colon).  Returns 1 when done, 0 when the Python parser must handle this
 * chunk, -1 on a Python error.
 */
static int
scan_headers(const char *data, Py_ssize_t start, Py_ssize_t end, Py_ssize_t max_line, Py_ssize_t max_headers,
             PyObject *headers)
{
    Py_ssize_t line = start, count = 0;
    while (1) {
        Py_ssize_t line_end = find(data, line, end, "\r\n", 2), colon, i;
        PyObject *name, *value;
        int result;
        if (line_end < 0)
            line_end = end;
        if (++count > max_headers || line_end - line > max_line)
            return 0;
        for (i = line; i < line_end; i++) {
            if (data[i] == '\r' || data[i] == '\n')
                return 0;
        }
        colon = -1;
        for (i = line; i < line_end; i++) {
            if (data[i] == ':') {
                colon = i;
                break;
            }
        }
        if (colon < 0)
            return 0;
        name = known_name(data + line, colon - line);
        if (name == NULL)
            return 0;
        value = PyUnicode_DecodeUTF8(data + colon + 1, line_end - colon - 1, "surrogateescape");
        if (value == NULL)
            return -1;
        result = PyDict_SetItem(headers, name, value);
        Py_DECREF(value);
        if (result < 0)
            return -1;
        if (line_end == end)
            return 1;
        line = line_end + 2;
    }
}

static int
set_attribute(PyObject *chunk, PyObject *name, PyObject *value)
{
    int result;
    if (value == NULL)
        return -1;
    result = PyObject_SetAttr(chunk, name, value);
    Py_DECREF(value);
    return result;
}

static int
append_pair(PyObject *events, PyObject *kind, PyObject *value)
{
    PyObject *pair = PyTuple_Pack(2, kind, value);
    int result;
    if (pair == NULL)
        return -1;
    result = PyList_Append(events, pair);
    Py_DECREF(pair);
    return result;
}

/*
 * Parse one chunk at position.  Returns the position after it when it was
 * taken (its events appended), -1 when the Python parser must handle it, -2
 * on a Python error.  When the chunk's body goes on past the buffer, its
 * CHUNK_START and the body bytes that surely are body are appended, *partial
 * is set to (position after those bytes, chunk, end-line marker) and that
 * position is returned.
 */
static Py_ssize_t
scan_chunk(const char *data, Py_ssize_t length, Py_ssize_t position, PyObject *events, Py_ssize_t max_line,
           Py_ssize_t max_block, Py_ssize_t max_headers, PyObject **partial)
{
    Py_ssize_t p = position, tid_start, tid_end, line_end, line_limit, limit, blank, end_line, header_end;
    Py_ssize_t marker_length, flag_at = 0, name_start = 0, name_end = 0, comment_start = -1, code = -1;
    Py_ssize_t body_start = -1, next;
    char marker[9 + 32];
    int flag;
    PyObject *chunk = NULL, *headers = NULL, *value;

    /* the start line: MSRP SP transact-id SP (method | status-code [SP comment]) CRLF,
       all of it within max_line + 2 bytes (as the regular expression of the Python parser) */
    /* (limits are at least 0, see scan_chunks: no sum below can overflow) */
    line_limit = max_line >= length - position - 2 ? length : position + max_line + 2;
    if (line_limit - p < 5 + 4 + 1 + 1 + 2 || memcmp(data + p, "MSRP ", 5) != 0)
        return -1;
    p += 5;
    tid_start = p;
    if (!alnum[(unsigned char)data[p]])
        return -1;
    p++;
    while (p < line_limit && tid_char[(unsigned char)data[p]])
        p++;
    tid_end = p;
    if (tid_end - tid_start < 4 || tid_end - tid_start > 32 || p >= line_limit || data[p] != ' ')
        return -1;
    p++;
    if (p >= line_limit)
        return -1;
    if (alpha[(unsigned char)data[p]]) {
        name_start = p++;
        while (p < line_limit && method_char[(unsigned char)data[p]])
            p++;
        name_end = p;
    } else {
        if (line_limit - p < 3 || data[p] < '0' || data[p] > '9' || data[p + 1] < '0' || data[p + 1] > '9' ||
            data[p + 2] < '0' || data[p + 2] > '9')
            return -1;
        code = (data[p] - '0') * 100 + (data[p + 1] - '0') * 10 + (data[p + 2] - '0');
        p += 3;
        if (p < line_limit && data[p] == ' ') {
            comment_start = ++p;
            while (p < line_limit && data[p] != '\r' && data[p] != '\n')
                p++;
        }
    }
    if (line_limit - p < 2 || data[p] != '\r' || data[p + 1] != '\n')
        return -1;
    line_end = p;

    /* the end of the head: the blank line, or the end-line when the chunk has no body */
    marker_length = 9 + (tid_end - tid_start);
    memcpy(marker, "\r\n-------", 9);
    memcpy(marker + 9, data + tid_start, (size_t)(tid_end - tid_start));
    limit = max_block >= length - position ? length : position + max_block;
    blank = find(data, line_end, limit, "\r\n\r\n", 4);
    end_line = find(data, line_end, blank >= 0 ? blank + 2 : limit, marker, marker_length);
    if (end_line >= 0) {
        header_end = end_line;
    } else if (blank >= 0) {
        header_end = blank;
        body_start = blank + 4;
        end_line = find(data, body_start, length, marker, marker_length);
    } else {
        return -1;
    }
    flag = -1;
    if (end_line >= 0) {
        flag_at = end_line + marker_length;
        if (length - flag_at < 3 || data[flag_at + 1] != '\r' || data[flag_at + 2] != '\n')
            return -1;
        flag = flag_index(data[flag_at]);
        if (flag < 0)
            return -1;
    }

    headers = PyDict_New();
    if (headers == NULL)
        return -2;
    if (header_end > line_end + 2) {
        int result = scan_headers(data, line_end + 2, header_end, max_line, max_headers, headers);
        if (result <= 0) {
            Py_DECREF(headers);
            return result == 0 ? -1 : -2;
        }
    }

    chunk = chunk_type->tp_alloc(chunk_type, 0);
    if (chunk == NULL)
        goto error;
    if (set_attribute(chunk, s_transaction_id, PyUnicode_DecodeASCII(data + tid_start, tid_end - tid_start, NULL)))
        goto error;
    if (code < 0) {
        if (set_attribute(chunk, s_method, method_name(data + name_start, name_end - name_start)))
            goto error;
    } else {
        if (set_attribute(chunk, s_code, PyLong_FromSsize_t(code)))
            goto error;
        if (comment_start >= 0 && line_end > comment_start &&
            set_attribute(chunk, s_comment, PyUnicode_DecodeUTF8(data + comment_start, line_end - comment_start,
                                                                 "surrogateescape")))
            goto error;
    }
    if (PyObject_SetAttr(chunk, s_raw, headers) < 0)
        goto error;
    /* the raw head: up to and including the empty line, or the CRLF before the end-line */
    if (set_attribute(chunk, s_chunk_header,
                      PyBytes_FromStringAndSize(data + position,
                                                (body_start >= 0 ? body_start : end_line + 2) - position)))
        goto error;
    if (end_line < 0) {
        /* the body goes on: hand out all but a tail that could begin the end-line */
        Py_ssize_t safe_end = length - marker_length - 2;
        if (append_pair(events, ev_start, chunk) < 0)
            goto error;
        next = body_start;
        if (safe_end > body_start) {
            value = PyBytes_FromStringAndSize(data + body_start, safe_end - body_start);
            if (value == NULL || append_pair(events, ev_body, value) < 0) {
                Py_XDECREF(value);
                goto error;
            }
            Py_DECREF(value);
            next = safe_end;
        }
        Py_DECREF(headers);
        *partial = Py_BuildValue("(nNy#)", next, chunk, marker, marker_length);
        return *partial == NULL ? -2 : next;
    }
    Py_INCREF(flags[flag]);
    if (set_attribute(chunk, s_contflag, flags[flag]))
        goto error;
    if (append_pair(events, ev_start, chunk) < 0)
        goto error;
    if (body_start >= 0 && end_line > body_start) {
        value = PyBytes_FromStringAndSize(data + body_start, end_line - body_start);
        if (value == NULL || append_pair(events, ev_body, value) < 0) {
            Py_XDECREF(value);
            goto error;
        }
        Py_DECREF(value);
    }
    if (PyList_Append(events, end_events[flag]) < 0)
        goto error;
    Py_DECREF(chunk);
    Py_DECREF(headers);
    return flag_at + 3;

error:
    Py_XDECREF(chunk);
    Py_DECREF(headers);
    return -2;
}

PyDoc_STRVAR(scan_chunks_doc,
"scan_chunks(buffer, position, events, max_line, max_block, max_headers) -> position\n\n"
"Append to the list events the events of the whole, plainly well-formed chunks\n"
"that follow position in the bytes buffer; return the position after the last\n"
"one taken (position itself when the first is not one of them).  When the last\n"
"one's body goes on past the buffer, return (position, chunk, marker) instead:\n"
"the events up to position are appended, and the parser is in chunk's body.");

static PyObject *
scan_chunks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t position, length, max_line, max_block, max_headers, next;
    const char *data;
    PyObject *events, *partial = NULL;
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "scan_chunks takes 6 arguments");
        return NULL;
    }
    if (chunk_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "msrplib._cparser is not configured");
        return NULL;
    }
    position = PyLong_AsSsize_t(args[1]);
    if (position == -1 && PyErr_Occurred())
        return NULL;
    /* limits that are not ints from 0 to PY_SSIZE_T_MAX are left to the Python parser */
    if (!PyLong_CheckExact(args[3]) || !PyLong_CheckExact(args[4]) || !PyLong_CheckExact(args[5])) {
        Py_INCREF(args[1]);
        return args[1];
    }
    max_line = PyLong_AsSsize_t(args[3]);
    max_block = PyLong_AsSsize_t(args[4]);
    max_headers = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        Py_INCREF(args[1]);
        return args[1];
    }
    if (max_line < 0 || max_block < 0 || max_headers < 0) {
        Py_INCREF(args[1]);
        return args[1];
    }
    events = args[2];
    if (!PyBytes_CheckExact(args[0]) || !PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "scan_chunks needs bytes and a list");
        return NULL;
    }
    data = PyBytes_AS_STRING(args[0]);
    length = PyBytes_GET_SIZE(args[0]);
    if (position < 0)
        position = 0;
    while (position < length) {
        next = scan_chunk(data, length, position, events, max_line, max_block, max_headers, &partial);
        if (next == -2)
            return NULL;
        if (next < 0)
            break;
        if (partial != NULL)
            return partial;   /* (position, chunk, marker): the parser goes on in the body of chunk */
        position = next;
    }
    return PyLong_FromSsize_t(position);
}

PyDoc_STRVAR(find_doc,
"find(buffer, needle, start) -> int\n\n"
"buffer.find(needle, start) for a bytes buffer and a bytes needle that begins\n"
"with a byte rare in the buffer (the CR of an end-line): faster than bytes.find.");

static PyObject *
find_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, length;
    (void)module;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "find(buffer, needle, start) takes two bytes and an int");
        return NULL;
    }
    start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    length = PyBytes_GET_SIZE(args[0]);
    if (start < 0) {
        start += length;
        if (start < 0)
            start = 0;
    }
    if (start > length)
        return PyLong_FromLong(-1);
    if (PyBytes_GET_SIZE(args[1]) == 0)
        return PyLong_FromSsize_t(start);
    return PyLong_FromSsize_t(find(PyBytes_AS_STRING(args[0]), start, length, PyBytes_AS_STRING(args[1]),
                                   PyBytes_GET_SIZE(args[1])));
}

PyDoc_STRVAR(configure_doc,
"configure(chunk_class, chunk_start, body, end_events, known_names)\n\n"
"Give the parser the class of parsed chunks, the event kinds, the three\n"
"(CHUNK_END, flag) events for '$', '+' and '#', and the known header names.");

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *type, *start, *body, *ends, *names, *iterator, *name;
    int i;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!OOO!O", &PyType_Type, &type, &start, &body, &PyTuple_Type, &ends, &names))
        return NULL;
    if (PyTuple_GET_SIZE(ends) != 3) {
        PyErr_SetString(PyExc_ValueError, "end_events needs 3 events");
        return NULL;
    }
    for (i = 0; i < 3; i++) {
        PyObject *end = PyTuple_GET_ITEM(ends, i);
        if (!PyTuple_Check(end) || PyTuple_GET_SIZE(end) != 2) {
            PyErr_SetString(PyExc_ValueError, "an end event is a (kind, flag) pair");
            return NULL;
        }
        Py_INCREF(end);
        Py_XSETREF(end_events[i], end);
        Py_INCREF(PyTuple_GET_ITEM(end, 1));
        Py_XSETREF(flags[i], PyTuple_GET_ITEM(end, 1));
    }
    for (i = 0; i < known_count; i++)
        Py_CLEAR(known_names[i]);
    known_count = 0;
    iterator = PyObject_GetIter(names);
    if (iterator == NULL)
        return NULL;
    while ((name = PyIter_Next(iterator)) != NULL) {
        Py_ssize_t size;
        const char *text;
        if (!PyUnicode_Check(name) || !PyUnicode_IS_ASCII(name) || known_count >= MAX_KNOWN) {
            Py_DECREF(name);
            continue;   /* such a name is left to the Python parser */
        }
        text = PyUnicode_AsUTF8AndSize(name, &size);
        if (text == NULL) {
            Py_DECREF(name);
            Py_DECREF(iterator);
            return NULL;
        }
        known_names[known_count] = name;   /* the reference is kept */
        known_text[known_count] = text;
        known_length[known_count] = size;
        known_count++;
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(type);
    Py_XSETREF(chunk_type, (PyTypeObject *)type);
    Py_INCREF(start);
    Py_XSETREF(ev_start, start);
    Py_INCREF(body);
    Py_XSETREF(ev_body, body);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_chunks", (PyCFunction)(void (*)(void))scan_chunks, METH_FASTCALL, scan_chunks_doc},
    {"find", (PyCFunction)(void (*)(void))find_bytes, METH_FASTCALL, find_doc},
    {"configure", configure, METH_VARARGS, configure_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "msrplib._cparser",
    "The C fast path of msrplib.protocol.MSRPParser (optional: the parser works without it).",
    -1, methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC
PyInit__cparser(void)
{
    int i;
    init_tables();
    for (i = 0; i < N_METHODS; i++) {
        method_names[i] = PyUnicode_InternFromString(method_text[i]);
        if (method_names[i] == NULL)
            return NULL;
    }
    s_transaction_id = PyUnicode_InternFromString("transaction_id");
    s_method = PyUnicode_InternFromString("method");
    s_code = PyUnicode_InternFromString("code");
    s_comment = PyUnicode_InternFromString("comment");
    s_raw = PyUnicode_InternFromString("_raw");
    s_contflag = PyUnicode_InternFromString("contflag");
    s_chunk_header = PyUnicode_InternFromString("chunk_header");
    if (!s_transaction_id || !s_method || !s_code || !s_comment || !s_raw || !s_contflag || !s_chunk_header)
        return NULL;
    return PyModule_Create(&module_definition);
}
