"""msrplib._cparser: MSRPParser with its C fast path gives exactly what it gives without it.

A differential test.  Every input is fed, in the same pieces, to two
parsers: one with the C path (``msrplib.protocol._scan_chunks`` is the
extension's ``scan_chunks``, ``_find_marker`` its ``find``) and one in pure
Python (``None`` and ``bytes.find``, as with MSRPLIB_PURE_PYTHON=1).  After
every feed they must agree on everything observable: the events (kinds,
types, values), the chunk objects (every attribute, in the order set, the
``_raw`` header texts and objects in wire order), the error (type, message,
attributes; and that the failed parser raises that same error again), and
the parser state (``buffered``, ``in_body`` and the private fields the next
feed depends on).

The inputs: hand-written edge cases around what the C path takes and what
it leaves to Python, and random streams of chunks (mostly plain, some
unusual, some mutated) split at random points, from hypothesis and from a
seeded loop.  Counters on the C function prove that both paths were used.

Limits the C code cannot take as they are (over sys.maxsize, negative, not
ints) are left to the Python parser, and limits near sys.maxsize cannot make
its position arithmetic overflow: the tests for those ran the interpreter
into a crash or read past the buffer before that was fixed.
"""

import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import msrplib.protocol as protocol
from msrplib.protocol import (
    MSRPParser, CHUNK_START, BODY, CHUNK_END, ChunkParseError, InvalidStartLine, InvalidHeaderLine,
    InvalidEndLine, LimitExceeded, HeaderParsingError)

from parser_implementations import C_FUNCTIONS, C_IMPORT_ERROR, PURE_PYTHON, pure_python_requested, select

if C_FUNCTIONS is None:
    if pure_python_requested():
        pytest.skip('msrplib._cparser not built and MSRPLIB_PURE_PYTHON=%s: nothing to compare (%s)'
                    % (os.environ['MSRPLIB_PURE_PYTHON'], C_IMPORT_ERROR), allow_module_level=True)
    pytest.fail('msrplib._cparser cannot be imported (%s).  The C extension must be built for this test '
                '(pip install -e .[test] builds it; a compiler and the Python headers are needed).  Set '
                'MSRPLIB_PURE_PYTHON=1 to test the pure Python parser alone.' % C_IMPORT_ERROR, pytrace=False)

C_SCAN, C_FIND = C_FUNCTIONS
KNOWN = list(protocol._HEADER_CLASSES_EXACT)
DEFAULT_LIMITS = dict(max_line_length=16384, max_headers=64, max_header_block=65536)


# ---------------------------------------------------------------------------
# Counting what the C path does

class Counts:
    """What the C function did in the C runs, and what came out of the comparisons."""

    def __init__(self):
        self.calls = 0          # scan_chunks calls
        self.c_chunks = 0       # chunks it took (its CHUNK_START events)
        self.partial = 0        # returns of (position, chunk, marker): it stopped in a body
        self.left = 0           # returns before the end of the buffer: a chunk left to Python
        self.chunks = 0         # CHUNK_START events in all (in the C runs)
        self.streams = 0
        self.feeds = 0
        self.errors = {}        # error type name -> count

    def python_chunks(self):
        """Chunks the Python code parsed in the C runs (left to it by the C path)."""
        return self.chunks - self.c_chunks


COUNTS = Counts()


def counting_scan(buffer, position, events, *limits):
    before = len(events)
    result = C_SCAN(buffer, position, events, *limits)
    counts = COUNTS
    counts.calls += 1
    counts.c_chunks += sum(1 for kind, _ in events[before:] if kind is CHUNK_START)
    if type(result) is tuple:
        counts.partial += 1
    elif result < len(buffer):
        counts.left += 1
    return result


C_RUN = (counting_scan, C_FIND)


# ---------------------------------------------------------------------------
# Comparable snapshots

def snap_header(header):
    return (type(header), getattr(header, '_name', None), type(header._encoded), header._encoded,
            header._decoded is protocol._UNSET)


def snap_value(value):
    if type(value) is dict:
        return ('dict', [(type(name), name, snap_value(item)) for name, item in value.items()])
    if isinstance(value, protocol.MSRPHeader):
        return snap_header(value)
    return (type(value), value)


def snap_chunk(chunk):
    """Every attribute of a chunk, in the order it was set (a chunk made by __init__ or the parser)."""
    return (type(chunk), [(name, snap_value(value)) for name, value in vars(chunk).items()])


def snap_chunk_public(chunk):
    """What a user reads of a chunk (this makes its header objects: compare snap_chunk before)."""
    headers = []
    for name, header in chunk.headers.items():
        try:
            decoded = repr(header.decoded)
        except HeaderParsingError as e:
            decoded = ('error', str(e))
        headers.append((name, type(header), header.name, header.encoded, decoded))
    return (chunk.transaction_id, chunk.method, chunk.code, chunk.comment, chunk.contflag, chunk.data,
            chunk.first_line, chunk.final, headers)


def snap_events(events, chunks):
    assert type(events) is list
    result = []
    for event in events:
        assert type(event) is tuple and len(event) == 2, event
        kind, value = event
        if kind is CHUNK_START:
            chunks.append(value)
            result.append(('start', snap_chunk(value)))
        elif kind is BODY:
            assert type(value) is bytes and value, event
            result.append(('body', value))
        elif kind is CHUNK_END:
            assert value in ('$', '+', '#'), event
            result.append(('end', type(value), value))
        else:
            raise AssertionError('unknown event kind %r' % (kind,))
    return result


def snap_error(error):
    return ('error', type(error), str(error), error.args, getattr(error, 'limit', None),
            getattr(error, 'value', None))


def snap_state(parser, chunks):
    state = [parser.buffered, parser.in_body, parser._state, bytes(parser._buffer), parser._marker,
             parser._chunk is None or (bool(chunks) and parser._chunk is chunks[-1])]
    if parser._state == protocol._HEAD and parser._buffer:
        # what the next feed of an incomplete head starts from
        state += [parser._scanned, parser._lines, parser._line_start]
    return state


# ---------------------------------------------------------------------------
# Feeding both parsers

def as_bytes(piece):
    return bytes(piece)


def as_bytearray(piece):
    return bytearray(piece)


def as_memoryview(piece):
    return memoryview(bytes(piece))


class BytesSubclass(bytes):
    pass


FEED_TYPES = [as_bytes, as_bytearray, as_memoryview, BytesSubclass]


def feed_once(functions, parser, piece, chunks):
    select(functions)
    taken = COUNTS.c_chunks
    try:
        events = parser.feed(piece)
    except Exception as e:
        # the events of a feed that failed are lost, so its chunks are not among the compared ones (COUNTS.chunks):
        # nor are they counted as taken by the C path
        COUNTS.c_chunks = taken
        return snap_error(e), e
    return ('events', snap_events(events, chunks)), None


def compare(data, cuts=(), limits=None, feed_type=None, rng=None, check_public=True):
    """Feed ``data`` cut at ``cuts`` to both parsers, comparing after every feed; return the outcome.

    ``feed_type`` converts each piece (default bytes; with ``rng``, a random one of FEED_TYPES).  The
    outcome is the error type, or None when every feed gave events.
    """
    limits = limits or {}
    c_parser, py_parser = MSRPParser(**limits), MSRPParser(**limits)
    c_chunks, py_chunks = [], []
    previous_functions = select(PURE_PYTHON)
    outcome = None
    try:
        previous = 0
        positions = sorted(set(cut for cut in cuts if 0 <= cut <= len(data)))
        if not positions or positions[-1] != len(data):
            positions.append(len(data))
        for number, cut in enumerate(positions):
            piece = data[previous:cut]
            previous = cut
            convert = feed_type or (rng.choice(FEED_TYPES) if rng is not None else as_bytes)
            c_result, c_error = feed_once(C_RUN, c_parser, convert(piece), c_chunks)
            py_result, py_error = feed_once(PURE_PYTHON, py_parser, convert(piece), py_chunks)
            COUNTS.feeds += 1
            assert c_result == py_result, 'feed %d (bytes %d..%d of %d) differs' % (
                number, cut - len(piece), cut, len(data))
            assert snap_state(c_parser, c_chunks) == snap_state(py_parser, py_chunks), \
                'parser state differs after feed %d (bytes %d..%d)' % (number, cut - len(piece), cut)
            if c_error is not None:
                assert isinstance(c_error, ChunkParseError), c_result
                outcome = type(c_error)
                # a failed parser raises the same error again, whatever it is given
                for parser, functions, error in ((c_parser, C_RUN, c_error), (py_parser, PURE_PYTHON, py_error)):
                    select(functions)
                    for more in (b'', b'MSRP abcd SEND\r\n-------abcd$\r\n'):
                        with pytest.raises(type(error)) as again:
                            parser.feed(more)
                        assert again.value is error
                break
        COUNTS.chunks += len(c_chunks)
        COUNTS.streams += 1
        if outcome is not None:
            COUNTS.errors[outcome.__name__] = COUNTS.errors.get(outcome.__name__, 0) + 1
        # the chunks as they are now (a chunk's contflag is set at its end, maybe in a later feed)
        assert [snap_chunk(chunk) for chunk in c_chunks] == [snap_chunk(chunk) for chunk in py_chunks]
        if check_public:
            assert [snap_chunk_public(chunk) for chunk in c_chunks] == \
                [snap_chunk_public(chunk) for chunk in py_chunks]
    finally:
        select(previous_functions)
    return outcome


def check_splits(data, limits=None, rng_seed=0, exhaustive=2000):
    """compare() ``data`` whole, byte by byte, cut once at every point, and in random cuts.

    Data longer than ``exhaustive`` bytes: in pieces of 97 and 4096 bytes, byte by byte over its first
    and last 300 bytes, and cut once at 300 points.

    Returns the outcome of the whole feed (all splits must fail the same way or not at all: a split can
    change which error comes first only in input these tests do not use).
    """
    outcome = compare(data, limits=limits)
    rng = random.Random(rng_seed)
    length = len(data)
    if length <= exhaustive:
        compare(data, range(1, length), limits=limits, check_public=False)
        cut_points = range(length + 1)
    else:
        for size in (97, 4096):
            compare(data, range(size, length, size), limits=limits, check_public=False)
        compare(data, list(range(1, 300)) + list(range(length - 300, length)), limits=limits, check_public=False)
        cut_points = sorted(set(rng.randrange(length + 1) for _ in range(100)) |
                            set(range(0, 100)) | set(range(max(0, length - 100), length + 1)))
    for cut in cut_points:
        assert compare(data, [cut], limits=limits, check_public=False) == outcome
    for _ in range(30):
        cuts = sorted(rng.randrange(length + 1) for _ in range(rng.randrange(2, 6)))
        assert compare(data, cuts, limits=limits, rng=rng, check_public=False) == outcome
    for feed_type in FEED_TYPES:
        assert compare(data, [length // 3, length // 2], limits=limits, feed_type=feed_type) == outcome
    return outcome


def c_takes(data, limits=None):
    """Whether the C path takes the first chunk of ``data`` fed whole (it appends its CHUNK_START)."""
    limits = dict(DEFAULT_LIMITS, **(limits or {}))
    events = []
    result = C_SCAN(data, 0, events, limits['max_line_length'], limits['max_header_block'], limits['max_headers'])
    return bool(events), result


# ---------------------------------------------------------------------------
# The extension is there and used

def test_the_c_path_is_used_unless_disabled():
    if pure_python_requested():
        assert protocol._scan_chunks is None and protocol._find_marker is bytes.find
        pytest.skip('MSRPLIB_PURE_PYTHON=%s: the parser was loaded without the C path'
                    % os.environ['MSRPLIB_PURE_PYTHON'])
    from msrplib import _cparser
    assert protocol._scan_chunks is _cparser.scan_chunks
    assert protocol._find_marker is _cparser.find
    assert C_SCAN is _cparser.scan_chunks


@pytest.mark.parametrize('value, pure', [('1', True), ('yes', True), ('0', False), ('', False), (None, False)],
                         ids=['1', 'yes', '0', 'empty', 'unset'])
def test_msrplib_pure_python_environment_variable(value, pure):
    env = dict(os.environ)
    env.pop('MSRPLIB_PURE_PYTHON', None)
    if value is not None:
        env['MSRPLIB_PURE_PYTHON'] = value
    code = ('import msrplib.protocol as p, msrplib._cparser as c; '
            'print(p._scan_chunks is None, p._find_marker is bytes.find, p._scan_chunks is c.scan_chunks)')
    output = subprocess.run([sys.executable, '-c', code], env=env, check=True, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.split()
    assert output == (['True', 'True', 'False'] if pure else ['False', 'False', 'True'])


def test_parser_implementation_fixture_selects_the_functions(parser_implementation):
    if parser_implementation == 'c':
        assert protocol._scan_chunks is C_SCAN and protocol._find_marker is C_FIND
    else:
        assert protocol._scan_chunks is None and protocol._find_marker is bytes.find


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b'\r\n-------abcd', b'\r\n', b'\r', b'ab', b'']),
       st.integers(-400, 400))
def test_find_is_bytes_find(haystack, needle, start):
    if needle and haystack and start % 3 == 0:
        haystack = haystack[:start % len(haystack)] + needle + haystack[start % len(haystack):]
    assert C_FIND(haystack, needle, start) == haystack.find(needle, start)


# ---------------------------------------------------------------------------
# Hand-written edge cases

TID = b'abcd1234'
TO_PATH = b'To-Path: msrp://b.example.com:2855/s2;tcp'
FROM_PATH = b'From-Path: msrp://a.example.com:2855/s1;tcp'
PATHS = (TO_PATH, FROM_PATH)


def make(start=b'SEND', headers=PATHS, body=None, flag=b'$', tid=TID, end=None):
    """The bytes of a chunk: ``body`` None for one without body (the end-line right after the headers)."""
    head = b'MSRP ' + tid + b' ' + start + b'\r\n' + b''.join(line + b'\r\n' for line in headers)
    end_line = b'-------' + tid + flag + b'\r\n' if end is None else end
    if body is None:
        return head + end_line
    return head + b'\r\n' + body + b'\r\n' + end_line


def send(body=b'hello', headers=PATHS + (b'Message-ID: m1', b'Content-Type: text/plain'), **kwargs):
    return make(b'SEND', headers, body, **kwargs)


OK = make(b'200 OK', PATHS)
OTHER_OK = make(b'200 OK', PATHS, tid=b'other999')
TID_CHARS = b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-+%='

# (id, data, C path takes the first chunk, outcome of the whole feed)
CASES = [
    ('tid-4', make(tid=b'abcd'), True, None),
    ('tid-32', make(tid=b'a' + TID_CHARS[-31:]), True, None),
    ('tid-3', make(tid=b'abc'), False, InvalidStartLine),
    ('tid-33', make(tid=b'a' * 33), False, InvalidStartLine),
    ('tid-all-chars', make(tid=b'0.-+%=Zz9'), True, None),
    ('tid-each-punctuation', b''.join(make(tid=b'x12' + bytes([c])) for c in b'.-+%='), True, None),
    ('tid-first-punctuation', make(tid=b'.abcd'), False, InvalidStartLine),
    ('tid-other-char', make(tid=b'abc_d'), False, InvalidStartLine),
    ('tid-prefix-in-body', send(b'x\r\n-------' + TID + b'9$\r\nz'), False, None),
    ('method-SEND', make(b'SEND'), True, None),
    ('method-REPORT', make(b'REPORT', PATHS + (b'Status: 000 200 OK',)), True, None),
    ('method-AUTH', make(b'AUTH'), True, None),
    ('method-NICKNAME', make(b'NICKNAME', PATHS + (b'Use-Nickname: "Alice"',)), True, None),
    ('method-unknown', make(b'FETCH'), True, None),
    ('method-underscore-digits', make(b'X_1_2_abc9'), True, None),
    ('method-one-letter', make(b'x'), True, None),
    ('method-lower-case', make(b'send'), True, None),
    ('method-with-dash', make(b'FILE-OFFSET'), False, InvalidStartLine),
    ('method-trailing-space', make(b'SEND '), False, InvalidStartLine),
    ('method-starting-with-digit', make(b'1SEND'), False, InvalidStartLine),
    ('code-no-comment', make(b'200'), True, None),
    ('code-empty-comment', make(b'200 '), True, None),
    ('code-comment-spaces', make(b'200   '), True, None),
    ('code-comment', make(b'481 No such session here'), True, None),
    ('code-000', make(b'000'), True, None),
    ('code-leading-zero', make(b'007 Bond'), True, None),
    ('code-two-digits', make(b'20 OK'), False, InvalidStartLine),
    ('code-four-digits', make(b'2000 OK'), False, InvalidStartLine),
    ('code-comment-utf8', make('200 Gr\u00fc\u00dfe \u2713'.encode()), True, None),
    ('code-comment-not-utf8', make(b'200 \xff\xfe\xc3'), True, None),
    ('code-comment-truncated-utf8', make(b'200 ok\xe2\x82'), True, None),
    ('code-comment-nul-and-controls', make(b'200 a\x00b\x01\x7f'), True, None),
    ('code-comment-lone-cr', make(b'200 a\rb'), False, InvalidStartLine),
    ('code-comment-lone-lf', make(b'200 a\nb'), False, InvalidStartLine),
    ('header-value-not-utf8', make(headers=PATHS + (b'Content-Type: \xff\xfe',)), True, None),
    ('header-value-truncated-utf8', make(headers=(b'Message-ID: x\xe2\x82',) + PATHS), True, None),
    ('header-value-utf8', make(headers=PATHS + ('Content-Description: Gr\u00fc\u00dfe'.encode(),)), True, None),
    ('header-value-empty', make(headers=PATHS + (b'Content-Type:',)), True, None),
    ('header-value-no-space', make(headers=PATHS + (b'Content-Type:text/plain',)), True, None),
    ('header-value-spaces-tabs', make(headers=PATHS + (b'Content-Type: \t text/plain \t ',)), True, None),
    ('header-value-colons', make(headers=PATHS + (b'Message-ID: a:b::c',)), True, None),
    ('header-no-colon', make(headers=PATHS + (b'Content-Type text/plain',)), False, InvalidHeaderLine),
    ('header-lower-case', make(headers=(b'to-path: msrp://b.example.com:2855/s2;tcp', FROM_PATH)), False, None),
    ('header-upper-case', make(headers=(b'TO-PATH: msrp://b.example.com:2855/s2;tcp', FROM_PATH)), False, None),
    ('header-unknown', make(headers=PATHS + (b'X-Thing: 1',)), False, None),
    ('header-space-before-colon', make(headers=PATHS + (b'Content-Type : x',)), False, InvalidHeaderLine),
    ('header-empty-name', make(headers=PATHS + (b': x',)), False, InvalidHeaderLine),
    ('header-name-not-token', make(headers=PATHS + (b'X(y): x',)), False, InvalidHeaderLine),
    ('header-name-not-ascii', make(headers=PATHS + (b'X-\xc3\xa9: x',)), False, InvalidHeaderLine),
    ('header-duplicate-known', make(headers=(b'Message-ID: 1', TO_PATH, b'Message-ID: 2', FROM_PATH)), True, None),
    ('header-duplicate-unknown', make(headers=PATHS + (b'X-A: 1', b'Expires: 5', b'X-A: 2')), False, None),
    ('header-known-then-unknown', make(headers=(TO_PATH, b'X-A: 1', FROM_PATH, b'to-path: z')), False, None),
    ('header-lone-cr', make(headers=PATHS + (b'Content-Type: a\rb',)), False, InvalidHeaderLine),
    ('header-lone-lf', make(headers=PATHS + (b'Content-Type: a\nb',)), False, InvalidHeaderLine),
    ('header-lone-cr-at-end', make(headers=PATHS + (b'Content-Type: ab\r',)), False, InvalidHeaderLine),
    ('header-lone-lf-at-start', make(headers=PATHS + (b'\nContent-Type: ab',)), False, InvalidHeaderLine),
    ('header-all-known-names', make(headers=[name.encode() + b': v' for name in KNOWN]), True, None),
    ('no-headers', make(headers=()), True, None),
    ('no-headers-with-body', make(headers=(), body=b'body'), True, None),
    ('no-headers-response', make(b'200 OK', headers=()), True, None),
    ('no-body-flag-$', make(flag=b'$'), True, None),
    ('no-body-flag-+', make(flag=b'+'), True, None),
    ('no-body-flag-#', make(flag=b'#'), True, None),
    ('no-body-flag-invalid', make(flag=b'x'), False, InvalidEndLine),
    ('no-body-flag-missing', make(flag=b''), False, None),  # (waits: the flag may be the CR)
    ('no-body-flag-missing-then-more', make(flag=b'') + OK, False, InvalidEndLine),
    ('no-body-end-line-cr-only', make(end=b'-------' + TID + b'$\r') + OK, False, InvalidEndLine),
    ('no-body-end-line-lf-only', make(end=b'-------' + TID + b'$\n') + OK, False, InvalidEndLine),
    ('no-body-end-line-other-tid', make(end=b'-------abcd9999$\r\n'), False, None),
    ('body-flag-$', send(flag=b'$'), True, None),
    ('body-flag-+', send(flag=b'+'), True, None),
    ('body-flag-#', send(flag=b'#'), True, None),
    ('body-marker-invalid-flag-then-end-line', send(b'a\r\n-------' + TID + b'x\r\nb'), False, None),
    ('body-marker-flag-no-crlf-then-end-line', send(b'a\r\n-------' + TID + b'$\rb\r\n-------' + TID + b'+\nc'),
     False, None),
    ('body-marker-at-start-invalid-flag', send(b'\r\n-------' + TID + b'!'), False, None),
    ('body-marker-at-end-invalid-flag', send(b'data\r\n-------' + TID), False, None),
    ('body-other-transaction-end-line', send(b'a\r\n-------efgh5678$\r\nb'), True, None),
    ('body-other-chunk-inside', send(OTHER_OK + send(tid=b'zzzz9999')), True, None),
    ('body-end-line-without-crlf-before', send(b'x-------' + TID + b'$\r\ny'), True, None),
    ('blank-line-then-end-line', make(headers=PATHS, end=b'\r\n-------' + TID + b'$\r\n'), True, None),
    ('blank-line-then-end-line-then-more', make(headers=PATHS, end=b'\r\n-------' + TID + b'$\r\nmore\r\n-------'
                                                 + TID + b'#\r\n') + OTHER_OK, True, None),
    ('empty-body', send(b''), True, None),
    ('empty-body-no-headers', make(headers=(), body=b''), True, None),
    ('body-crlf-only', send(b'\r\n'), True, None),
    ('body-many-crs', send(b'\r' * 3000), True, None),
    ('body-many-crlfs', send(b'\r\n' * 1500), True, None),
    ('body-crcrlf', send(b'\r\r\n' * 500 + b'\r'), True, None),
    ('body-ends-with-cr', send(b'abc\r'), True, None),
    ('body-ends-with-dashes', send(b'abc\r\n-------'), True, None),
    ('body-is-blank-lines', send(b'\r\n\r\n\r\n'), True, None),
    ('body-all-bytes', send(bytes(range(256)) * 4), True, None),
    ('several-chunks', send() + OK + make(b'REPORT') + send(b'', flag=b'+') + make(b'200', headers=()), True, None),
    ('several-with-unusual', send() + make(headers=(b'x-a: 1',)) + OK + send(b'a\r\n-------' + TID + b'?')
     + make(b'200 \xff') + make(headers=(b'Expires: 1',) * 5) + send(b'', headers=()), True, None),
    ('several-then-garbage', send() + OK + b'GET / HTTP/1.1\r\n\r\n', True, InvalidStartLine),
    ('several-then-incomplete', send() + OK + send()[:-7], True, None),
    ('several-then-bad-header', send() + OK + make(headers=(b'Bad header',)), True, InvalidHeaderLine),
    ('several-then-bad-flag', OK + send() + make(flag=b'%'), True, InvalidEndLine),
    ('not-msrp', b'HELLO world\r\n', False, InvalidStartLine),
    ('not-msrp-no-crlf', b'MSRQ', False, InvalidStartLine),
    ('msrp-lower-case', b'msrp abcd SEND\r\n-------abcd$\r\n', False, InvalidStartLine),
    ('start-line-double-space', b'MSRP  abcd SEND\r\n-------abcd$\r\n', False, InvalidStartLine),
    ('start-line-only', b'MSRP abcd1234 SEND\r\n', False, None),
    ('empty-line-first', b'\r\n' + OK, False, InvalidStartLine),
    ('shortest-chunk', b'MSRP abcd A\r\n-------abcd$\r\n', True, None),
]


@pytest.mark.parametrize('data, c_takes_first, expected', [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_edge_case(data, c_takes_first, expected):
    c_chunks = COUNTS.c_chunks
    assert check_splits(data) is expected
    assert c_takes(data)[0] is c_takes_first
    if c_takes_first:
        assert COUNTS.c_chunks > c_chunks  # (and the C path was used in the comparisons)


def parses_whole(data):
    parser = MSRPParser()
    try:
        events = parser.feed(data)
    except ChunkParseError:
        return False
    return parser.buffered == 0 and not parser.in_body and events[-1][0] is CHUNK_END


def test_edge_cases_all_in_one_stream():
    valid = [case[1] for case in CASES if parses_whole(case[1])]
    assert len(valid) > 60
    stream = b''.join(valid)
    assert compare(stream) is None
    rng = random.Random(7)
    for _ in range(40):
        cuts = [rng.randrange(len(stream)) for _ in range(rng.randrange(1, 40))]
        assert compare(stream, cuts, rng=rng, check_public=False) is None


# -- limits

def padded_header(name, length):
    """A header line ``name: xxx`` of exactly ``length`` bytes."""
    prefix = name + b': '
    return prefix + b'x' * (length - len(prefix))


@pytest.mark.parametrize('limits', [dict(max_headers=3), dict(max_headers=64), dict(max_headers=0)],
                         ids=['3', 'default-64', '0'])
@pytest.mark.parametrize('body', [None, b'body'], ids=['no-body', 'body'])
def test_header_count_at_the_limit(limits, body):
    limit = limits['max_headers']
    outcomes = []
    for count in (limit - 1, limit, limit + 1):
        if count < 0:
            continue
        headers = [b'Message-ID: %d' % i for i in range(count)]
        data = make(headers=headers, body=body)
        outcomes.append((count, check_splits(data, limits, exhaustive=600)))
        assert c_takes(data, limits)[0] is (count <= limit)
    assert outcomes[-1] == (limit + 1, LimitExceeded)
    assert all(outcome is None for _, outcome in outcomes[:-1])


@pytest.mark.parametrize('max_line', [40, 300, 16384], ids=['40', '300', 'default-16384'])
@pytest.mark.parametrize('body', [None, b'body'], ids=['no-body', 'body'])
def test_header_line_length_at_the_limit(max_line, body):
    limits = dict(max_line_length=max_line)
    for length in (max_line - 1, max_line, max_line + 1, max_line + 2):
        for position in (0, 1):
            headers = [b'Message-ID: 1', b'Expires: 2']
            headers.insert(position, padded_header(b'Content-Type', length))
            data = make(headers=headers, body=body)
            assert check_splits(data, limits, exhaustive=400) is (None if length <= max_line else LimitExceeded)
            assert c_takes(data, limits)[0] is (length <= max_line)


def test_header_line_length_counts_bytes():
    limits = dict(max_line_length=100)
    for characters in (45, 46, 47, 50):
        line = ('Content-Description: ' + '\u00e9' * characters).encode()
        check_splits(make(headers=(line,)), limits)
        check_splits(make(headers=(line,), body=b'x'), limits)


@pytest.mark.parametrize('max_line', [20, 300, 16384], ids=['20', '300', 'default-16384'])
def test_start_line_length_at_the_limit(max_line):
    limits = dict(max_line_length=max_line)
    start = b'MSRP ' + TID + b' 200 '
    for length in range(max(max_line - 2, len(start)), max_line + 3):
        comment = b'c' * (length - len(start))
        assert len(start + comment) == length
        data = make(b'200 ' + comment, headers=())
        assert check_splits(data, limits, exhaustive=400) is (None if length <= max_line else LimitExceeded)
        assert c_takes(data, limits)[0] is (length <= max_line)


@pytest.mark.parametrize('max_line', [5, 10, 12, 13, 14], ids=str)
def test_start_line_limit_below_the_shortest_start_line(max_line):
    limits = dict(max_line_length=max_line)
    for data in (b'MSRP abcd A\r\n-------abcd$\r\n', b'MSRP abcd AB\r\n-------abcd$\r\n',
                 b'MSRP abcd 200\r\n-------abcd$\r\n', b'MSRP abcd A\r\nX: y\r\n-------abcd$\r\n'):
        check_splits(data, limits)


def head_of_size(size, body, tid=TID, fill=b'Message-ID'):
    """A chunk whose head is ``size`` bytes: up to and with the blank line (body), or the end-line's marker."""
    start = b'MSRP ' + tid + b' SEND\r\n'
    tail = 2 if body is not None else 7 + len(tid)  # the blank line, or the end-line's dashes and tid
    room = size - len(start) - tail  # for the header lines with their CRLFs
    lines = []
    if room > 0:
        count = -(-room // 4002)  # lines of at most 4000 bytes (well within the default max_line_length)
        for number in range(count):
            length = room // count - 2 + (number < room % count)
            lines.append(padded_header(fill, length))
    data = make(headers=lines, body=body, tid=tid)
    head = data.index(b'\r\n\r\n') + 4 if body is not None else data.index(b'\r\n-------' + tid) + 9 + len(tid)
    return data, head


@pytest.mark.parametrize('max_block', [200, 4096 + 30, 65536], ids=['200', '4126', 'default-65536'])
@pytest.mark.parametrize('body', [None, b'', b'body'], ids=['no-body', 'empty-body', 'body'])
def test_header_block_at_the_limit(max_block, body):
    limits = dict(max_header_block=max_block)
    seen = set()
    for size in range(max_block - 1, max_block + 3):
        data, head = head_of_size(size, body)
        if head in seen:
            continue
        seen.add(head)
        outcome = check_splits(data, limits, exhaustive=300)
        assert outcome is (None if head <= max_block else LimitExceeded), (size, head)
        assert c_takes(data, limits)[0] is (head <= max_block)
    assert max_block in seen and max_block + 1 in seen


@pytest.mark.parametrize('body', [None, b'', b'body'], ids=['no-body', 'empty-body', 'body'])
def test_head_around_the_python_parsers_search_window(body):
    # the Python parser looks for the blank line and the end-line within 4096 bytes of the start line first
    for size in range(4096 + 20 - 12, 4096 + 20 + 40):
        data, head = head_of_size(size, body)
        assert compare(data + OK) is None
        assert compare(data + OK, [len(data) - 3, len(data) + 5]) is None
        assert compare(data + OK, [head - 2]) is None


def test_a_head_of_4096_bytes_in_a_long_stream():
    rng = random.Random(4096)
    for size in (4090, 4100, 4114, 4115, 4120):
        data, _ = head_of_size(size, b'x' * 5000)
        stream = OK * 30 + data + OK * 100 + data + send() * 50
        assert compare(stream) is None
        for _ in range(10):
            assert compare(stream, [rng.randrange(len(stream)) for _ in range(20)], check_public=False) is None


@pytest.mark.parametrize('limits', [
    dict(max_header_block=2 ** 62), dict(max_headers=sys.maxsize), dict(max_line_length=2 ** 62),
    dict(max_header_block=2 ** 62, max_headers=sys.maxsize, max_line_length=2 ** 62),
    dict(max_line_length=0), dict(max_headers=-1), dict(max_header_block=0), dict(max_header_block=-2 ** 62)],
    ids=['max-block-2**62', 'max-headers-maxsize', 'max-line-2**62', 'all-huge', 'max-line-0',
         'max-headers-negative', 'max-block-0', 'max-block-negative'])
def test_extreme_limits_in_ssize_t(limits):
    # (max_header_block=sys.maxsize and -sys.maxsize-1: tested in a child process below)
    stream = send() + OK + send(b'\r\n' * 20, flag=b'+') + make(b'REPORT')
    for offset in (0, 1, len(OK)):
        check_splits(OK[:offset] + stream if offset else stream, limits, exhaustive=400)


@pytest.mark.parametrize('limit', ['max_headers', 'max_header_block'])
def test_limit_larger_than_ssize_t(limit):
    # MSRPParser(max_headers=2**63).feed(b'MSRP abcd SEND\r\n-------abcd$\r\n'): [CHUNK_START, CHUNK_END]
    # (the C path raised OverflowError before it left such limits to Python)
    compare(b'MSRP abcd SEND\r\n-------abcd$\r\n', limits={limit: 2 ** 63})


# Limits near sys.maxsize are tested in child processes: before position + limit was made safe from
# overflow, the C path read past the end of the buffer there, and could crash.
CHILD_PRELUDE = r"""
import sys
from parser_implementations import C_FUNCTIONS, PURE_PYTHON, select
from msrplib.protocol import MSRPParser, CHUNK_START

def outcome(functions, data, limit):
    select(functions)
    try:
        events = MSRPParser(max_header_block=limit).feed(data)
    except Exception as e:
        return repr(e)
    return [(kind.name, value.first_line, value._raw) if kind is CHUNK_START else (kind.name, value)
            for kind, value in events]

def check(data, limit):
    expected = outcome(PURE_PYTHON, data, limit)
    print('limit %d, %r:\n  Python %r' % (limit, data[:60], expected), flush=True)
    actual = outcome(C_FUNCTIONS, data, limit)
    print('  C      %r' % (actual,), flush=True)
    return actual == expected

ok = b'MSRP abcd 200\r\n-------abcd$\r\n'
send = b'MSRP abcd SEND\r\n\r\nx\r\n-------abcd$\r\n'
"""

# max_header_block=sys.maxsize, the largest value scan_chunks takes: for a chunk at position > 0 of the buffer,
# ``position + max_block`` overflows, and the search for the blank line goes on past the end of the buffer.  A
# no-body chunk whose head is not complete then picks up what follows the buffer in memory: here a bytes
# object of the same size (pymalloc puts it next to the buffer) holding a CRLF CRLF, so that C returns a chunk
# with the heap bytes as header values (pointers included) where Python waits for more input.  Without such a
# neighbour it reads on until it finds one, or crashes (SIGSEGV in this environment with ``send + ok``).
HUGE_LIMIT_CHILD = CHILD_PRELUDE + r"""
head = b'MSRP abcd SEND\r\nMessage-ID: x'
same = 0
for attempt in range(20):
    neighbours = [(b'\r\nTo-Path: LEAKED\r\n\r\n' + bytes([65 + i % 26]) * 100)[:len(ok + head)] for i in range(2000)]
    del neighbours[::2]
    data = (ok + head + b'!')[:-1]  # a new object in one of the holes
    same += check(data, sys.maxsize)
for data in (send + ok, ok + ok, send * 3 + ok * 3, ok + head):
    for limit in (sys.maxsize, sys.maxsize - 10):
        same += check(data, limit)
print('SAME %d OF 28' % same)
"""

# max_header_block=-sys.maxsize-1: ``limit - line_end`` overflows in find(), which then searches without bound:
# here it finds the blank line and the end-line in the buffer, and C parses the chunk that Python refuses
# (LimitExceeded).  Deterministic, but also run in a child process (it relies on the same overflow).
NEGATIVE_LIMIT_CHILD = CHILD_PRELUDE + r"""
same = check(send, -sys.maxsize - 1) + check(send + ok, -sys.maxsize - 1)
print('SAME %d OF 2' % same)
"""


def run_child(code):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get('PYTHONPATH')])))
    child = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60,
                           cwd=os.path.dirname(here))
    return child.returncode, child.stdout, child.stderr


def test_header_block_limit_of_sys_maxsize():
    # this crashed (SIGSEGV) before the fix (pure Python: the 5 events of the two chunks), one feed:
    #     MSRPParser(max_header_block=sys.maxsize).feed(
    #         b'MSRP abcd SEND\r\n\r\nx\r\n-------abcd$\r\n' + b'MSRP abcd 200\r\n-------abcd$\r\n')
    status, output, errors = run_child(HUGE_LIMIT_CHILD)
    assert status == 0 and output.endswith('SAME 28 OF 28\n'), \
        'exit status %d\n%s\n%s' % (status, output[-3000:], errors[-2000:])


def test_header_block_limit_of_minus_sys_maxsize_minus_1():
    # MSRPParser(max_header_block=-sys.maxsize - 1).feed(b'MSRP abcd SEND\r\n\r\nx\r\n-------abcd$\r\n'):
    # Python raises LimitExceeded (the C path returned 3 events before negative limits were left to Python)
    status, output, errors = run_child(NEGATIVE_LIMIT_CHILD)
    assert status == 0 and output.endswith('SAME 2 OF 2\n'), \
        'exit status %d\n%s\n%s' % (status, output[-3000:], errors[-2000:])


# ---------------------------------------------------------------------------
# Random streams

METHODS = [b'SEND'] * 6 + [b'REPORT'] * 2 + [b'AUTH', b'NICKNAME', b'FETCH', b'X_1', b'a9_', b'Zz']
CODES = [b'200', b'200 OK', b'200 ', b'403 Forbidden', b'481', b'000 x', b'999 \xff\xc3',
         b'408 Zeit\xc3\xbcberschreitung', b'413 \x00\x7f', b'200  ']
HEADER_VALUES = {
    'To-Path': [b'msrp://b.example.com:2855/s2;tcp', b'msrps://[2001:db8::1]:9/x;tcp msrp://r/a;tcp'],
    'From-Path': [b'msrp://a.example.com:2855/s1;tcp', b'not a uri'],
    'Message-ID': [b'87652491', b'', b'a:b'],
    'Success-Report': [b'yes', b'no', b'maybe'],
    'Failure-Report': [b'yes', b'no', b'partial'],
    'Byte-Range': [b'1-25/25', b'1-*/*', b'26-50/*', b'0-1/1'],
    'Status': [b'000 200 OK', b'000 481', b'1 2 3'],
    'Expires': [b'30', b'x'],
    'Min-Expires': [b'1'],
    'Max-Expires': [b'9999'],
    'Use-Path': [b'msrp://relay.example.com:2855/r;tcp'],
    'WWW-Authenticate': [b'Digest realm="x", nonce="abc", qop="auth"'],
    'Authorization': [b'Digest username="u", realm="x", nonce="abc", response="1"'],
    'Authentication-Info': [b'nextnonce="x", qop=auth'],
    'Content-Type': [b'text/plain', b'message/cpim', b'application/octet-stream'],
    'Content-ID': [b'<x@y>'],
    'Content-Description': ['d\u00e9j\u00e0 vu'.encode(), b'\xff bad'],
    'Content-Disposition': [b'attachment; filename="a b.txt"', b'render'],
    'Use-Nickname': [b'"Alice"', '"\u00c5sa"'.encode()],
}
SEPARATORS = [b': '] * 8 + [b':', b':  ', b':\t', b': \t ']
UNUSUAL_HEADERS = [b'to-path: msrp://x/y;tcp', b'X-Custom: 1', b'CONTENT-TYPE: text/plain', b'Message-Id: 1',
                   b'X-Empty:', b'Priority: urgent']
BAD_HEADERS = [b'No colon here', b'Content-Type: a\rb', b'Message-ID: \nx', b': empty name', b'X y: 1']
BODY_SPECIALS = [b'\r\n', b'\r', b'\n', b'-------', b'\r\n-------', b'$', b'+', b'#', b'\r\n\r\n', b'MSRP ',
                 b'\r\n-------abcd$\r\n', b'\r\n-------abcd1234$\r\n', b'MSRP abcd SEND\r\n']


def random_tid(rng):
    first = rng.choice(TID_CHARS[:62])
    length = rng.choice([4, 4, 32, 32] + list(range(5, 32)))
    return bytes([first]) + bytes(rng.choice(TID_CHARS) for _ in range(length - 1))


def random_body(rng, tid):
    kind = rng.random()
    if kind < 0.1:
        return b''
    if kind < 0.45:
        body = rng.randbytes(rng.randrange(1, 300))
    elif kind < 0.8:
        parts = [rng.choice([rng.randbytes(rng.randrange(0, 30)), rng.choice(BODY_SPECIALS),
                             b'\r\n-------' + tid + rng.choice([b'', b'x', b'$', b'$\r', b'$\n', b'+x', b'#\n\r']),
                             b'\r\n-------' + tid[:-1]])
                 for _ in range(rng.randrange(1, 30))]
        body = b''.join(parts)
    elif kind < 0.97:
        body = rng.randbytes(rng.randrange(300, 8000))
    else:
        body = rng.randbytes(rng.randrange(8000, 200 * 1024))
    # the body must not end this chunk early (rarely it may: the stream then goes on with garbage)
    marker = b'\r\n-------' + tid
    if rng.random() < 0.97:
        for flag in b'$+#':
            body = body.replace(marker + bytes([flag]) + b'\r\n', marker + b'?\r\n')
        if body.endswith(b'\r'):
            body += b'.'
    return body


def random_chunk(rng, unusual):
    """The bytes of a random chunk and the offsets of its parts (start, head end, end-line)."""
    tid = random_tid(rng)
    start = rng.choice(METHODS) if rng.random() < 0.6 else rng.choice(CODES)
    names = rng.sample(KNOWN, rng.randrange(0, 8))
    if rng.random() < 0.7:
        names = ['To-Path', 'From-Path'] + [name for name in names if name not in ('To-Path', 'From-Path')]
    if rng.random() < 0.05:
        names += rng.sample(names, min(len(names), 2))  # duplicates
    headers = [name.encode() + rng.choice(SEPARATORS) + rng.choice(HEADER_VALUES[name]) +
               (rng.choice([b' ', b'\t', b'']) if rng.random() < 0.1 else b'') for name in names]
    if unusual:
        kind = rng.random()
        if kind < 0.6:
            headers.insert(rng.randrange(len(headers) + 1), rng.choice(UNUSUAL_HEADERS))
        elif kind < 0.8:
            headers.insert(rng.randrange(len(headers) + 1), rng.choice(BAD_HEADERS))
        else:
            value = rng.randbytes(rng.randrange(0, 50)).replace(b'\r', b'').replace(b'\n', b'')
            headers.append(b'Message-ID: ' + value)
    body = None if rng.random() < 0.35 else random_body(rng, tid)
    flag = rng.choice(b'$$$++#') if not (unusual and rng.random() < 0.3) else rng.choice(b'x\r\n-%')
    data = make(start, headers, body, bytes([flag]), tid)
    end_line = len(data) - 10 - len(tid)
    head_end = data.index(b'\r\n\r\n') + 4 if body is not None else end_line
    return data, [0, head_end, end_line]


def random_stream(rng, chunks=None):
    """Random chunks back to back, maybe mutated; returns the bytes and interesting offsets."""
    data = bytearray()
    offsets = []
    for _ in range(chunks or rng.choice([1, 1, 2, 3, 4, 6, 10])):
        chunk, points = random_chunk(rng, unusual=rng.random() < 0.15)
        offsets += [len(data) + point for point in points]
        data += chunk
    offsets.append(len(data))
    if rng.random() < 0.25:
        for _ in range(rng.randrange(1, 4)):
            where = rng.choice(offsets) + rng.randrange(-20, 40) if rng.random() < 0.7 else rng.randrange(len(data))
            where = min(max(where, 0), len(data) - 1)
            operation = rng.random()
            if operation < 0.4:
                data[where] = rng.choice([data[where] ^ (1 << rng.randrange(8)), rng.choice(b'\r\n :$+#-M')])
            elif operation < 0.7:
                data[where:where] = bytes([rng.choice(b'\r\n :$+#-xM\x00\xff')] * rng.randrange(1, 3))
            else:
                del data[where:where + rng.randrange(1, 4)]
    if rng.random() < 0.1:
        data += rng.choice([b'MSRP ', b'MSRP abcd', b'MSRP abcd1234 SEND\r\nTo-Path: x', b'\r\n', b'garbage'])
    return bytes(data), offsets


def random_cuts(rng, length, offsets):
    mode = rng.random()
    if mode < 0.15:
        return []
    if mode < 0.4:
        return [rng.randrange(length + 1) for _ in range(rng.randrange(1, 10))]
    if mode < 0.55:
        return [rng.randrange(length + 1) for _ in range(rng.randrange(10, 80))]
    if mode < 0.65 and length <= 3000:
        return list(range(1, length))
    if mode < 0.75:
        size = rng.choice([1, 2, 3, 7, 13, 64, 1000, 4096, 65536]) if length <= 20000 else \
            rng.choice([1000, 4096, 65536])
        return list(range(size, length, size))
    # 1-byte pieces around the interesting places, a few random cuts elsewhere
    cuts = [rng.randrange(length + 1) for _ in range(rng.randrange(0, 5))]
    for offset in rng.sample(offsets, min(len(offsets), 4)):
        low = max(offset - rng.randrange(1, 50), 0)
        cuts += range(low, min(offset + rng.randrange(1, 50), length))
    return cuts


LIMIT_CHOICES = [None] * 6 + [
    dict(max_line_length=300, max_headers=12, max_header_block=1200),
    dict(max_line_length=60, max_headers=4, max_header_block=200),
    dict(max_headers=3),
    dict(max_header_block=400),
    dict(max_line_length=45),
]


def random_limits(rng):
    limits = rng.choice(LIMIT_CHOICES)
    if limits is None and rng.random() < 0.05:
        limits = dict(max_line_length=rng.randrange(13, 400), max_headers=rng.randrange(0, 12),
                      max_header_block=rng.randrange(30, 3000))
    return limits


STREAMS = 3000


def test_random_streams_seeded_loop():
    before = {name: value for name, value in vars(COUNTS).items() if name != 'errors'}
    errors_before = dict(COUNTS.errors)
    rng = random.Random(20261202)
    outcomes = {}
    for number in range(STREAMS):
        data, offsets = random_stream(rng)
        cuts = random_cuts(rng, len(data), offsets)
        limits = random_limits(rng)
        try:
            outcome = compare(data, cuts, limits, rng=rng, check_public=rng.random() < 0.2)
        except AssertionError as e:
            raise AssertionError('stream %d differs: limits %r, %d bytes, cuts %r\ndata %r' % (
                number, limits, len(data), sorted(set(cuts))[:200], data[:3000])) from e
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # both paths and every kind of outcome were exercised
    counts = {name: value - before[name] for name, value in vars(COUNTS).items() if name != 'errors'}
    errors = {name: count - errors_before.get(name, 0) for name, count in COUNTS.errors.items()}
    assert counts['streams'] == STREAMS
    assert counts['c_chunks'] > 3000, counts
    assert counts['partial'] > 300, counts
    assert counts['left'] > 1000, counts
    assert counts['chunks'] - counts['c_chunks'] > 300, counts   # chunks the Python code parsed in the C runs
    assert outcomes[None] > 1000, outcomes
    for error in ('InvalidStartLine', 'InvalidHeaderLine', 'InvalidEndLine', 'LimitExceeded'):
        assert errors.get(error, 0) > 20, errors


HEAD_TOKENS = [b'MSRP', b'MSRP ', b' ', b'  ', b'\r\n', b'\r', b'\n', b'\r\n\r\n', b':', b': ', b'\t', b'abcd',
               b'abcd1234', b'a.-+%=', b'abc', b'a' * 32, b'a' * 33, b'SEND', b'REPORT', b'x_1', b'200', b'20', b'2000',
               b'200 OK', b'\xff', b'\xc3', b'\xe2\x82', b'\x00', b'-------', b'-------abcd', b'$', b'+', b'#', b'%']
HEAD_TOKENS += [name.encode() for name in KNOWN[:6]] + [b'to-path', b'X-A', b'Message-Id']


def test_random_heads_token_soup():
    # start lines and header lines made of pieces that are, or are almost, what the C path takes
    c_chunks, chunks = COUNTS.c_chunks, COUNTS.chunks
    rng = random.Random(4975)
    outcomes = {}
    for number in range(1500):
        tid = rng.choice([b'abcd', b'abcd1234', b'a.-+%=', b'a' * 32])
        if rng.random() < 0.5:
            head = b'MSRP ' + tid + b' ' + rng.choice([b'SEND', b'200', b'200 OK', b'x_1']) + b'\r\n'
        else:
            head = b''
        head += b''.join(rng.choice(HEAD_TOKENS) for _ in range(rng.randrange(0, 12)))
        if rng.random() < 0.7:
            head += b'\r\n' + b'\r\n'.join(name.encode() + b': v' for name in rng.sample(KNOWN, rng.randrange(3)))
        tail = rng.choice([b'\r\n-------' + tid + b'$\r\n', b'\r\n\r\nbody\r\n-------' + tid + b'+\r\n',
                           b'\r\n\r\n\r\n-------' + tid + b'#\r\n', b'\r\n-------' + tid + b'\r\n',
                           b'\r\n-------' + tid + b'x\r\n'])
        data = head + tail + rng.choice([b'', OK])
        limits = rng.choice([None, None, dict(max_line_length=30, max_headers=2, max_header_block=80)])
        outcome = compare(data, limits=limits)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        cuts = rng.choice([[], [rng.randrange(len(data) + 1)], list(range(1, len(data)))])
        compare(data, cuts, limits=limits, rng=rng, check_public=False)
    taken, parsed = COUNTS.c_chunks - c_chunks, COUNTS.chunks - chunks
    assert taken > 100 and parsed - taken > 20, (taken, parsed)
    assert outcomes.get(None, 0) > 50 and all(outcomes.get(error, 0) > 5 for error in (
        InvalidStartLine, InvalidHeaderLine, InvalidEndLine, LimitExceeded)), outcomes


# -- the same with hypothesis (which shrinks a mismatch to a small example)

transaction_ids = st.builds(lambda first, rest: first + rest, st.sampled_from([bytes([c]) for c in TID_CHARS[:62]]),
                            st.binary(min_size=3, max_size=31).map(
                                lambda raw: bytes(TID_CHARS[byte % len(TID_CHARS)] for byte in raw)))
start_texts = st.one_of(st.sampled_from(METHODS + CODES),
                        st.from_regex(rb'[A-Za-z][A-Za-z0-9_]{0,12}', fullmatch=True),
                        st.builds(lambda code, comment: b'%03d' % code + comment, st.integers(0, 999),
                                  st.just(b'') | st.binary(max_size=20).map(
                                      lambda text: b' ' + text.replace(b'\r', b'').replace(b'\n', b''))))
header_lines = st.builds(lambda name, separator, value: name.encode() + separator + value,
                         st.sampled_from(KNOWN), st.sampled_from(SEPARATORS),
                         st.one_of(st.sampled_from(sum(HEADER_VALUES.values(), [])),
                                   st.binary(max_size=30).map(lambda v: v.replace(b'\r', b'').replace(b'\n', b''))))


@st.composite
def hypothesis_bodies(draw, tid):
    kind = draw(st.sampled_from(['none', 'empty', 'small', 'tricky', 'large']))
    if kind == 'none':
        return None
    if kind == 'empty':
        return b''
    if kind == 'small':
        return draw(st.binary(min_size=1, max_size=200))
    if kind == 'tricky':
        parts = draw(st.lists(st.one_of(st.binary(max_size=10), st.sampled_from(BODY_SPECIALS + [
            b'\r\n-------' + tid, b'\r\n-------' + tid + b'x', b'\r\n-------' + tid + b'$\r',
            b'\r\n-------' + tid + b'#\r\n'])), min_size=1, max_size=20))
        return b''.join(parts)
    size = draw(st.sampled_from([1000, 5000, 70000, 200 * 1024]))
    return random.Random(draw(st.integers(0, 2 ** 16))).randbytes(size)


@st.composite
def hypothesis_streams(draw):
    data = b''
    for _ in range(draw(st.integers(1, 5))):
        tid = draw(transaction_ids)
        body = draw(hypothesis_bodies(tid))
        headers = draw(st.lists(header_lines, max_size=8))
        if draw(st.integers(0, 3)) == 0:  # a chunk the C path leaves to Python
            headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(UNUSUAL_HEADERS)))
        if draw(st.integers(0, 7)) == 0:  # an invalid one
            headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(BAD_HEADERS)))
        flag = draw(st.sampled_from([b'$', b'+', b'#', b'$', b'$', b'+', b'#', b'x']))
        data += make(draw(start_texts), headers, body, flag, tid)
    mutations = draw(st.lists(st.tuples(st.integers(0, len(data)), st.sampled_from(['flip', 'insert', 'delete']),
                                        st.integers(0, 255)), max_size=3)) if draw(st.integers(0, 2)) == 0 else []
    for where, operation, value in mutations:
        if operation == 'flip' and where < len(data):
            data = data[:where] + bytes([data[where] ^ value or 1]) + data[where + 1:]
        elif operation == 'insert':
            data = data[:where] + bytes([value]) + data[where:]
        else:
            data = data[:where] + data[where + 1:]
    return data


@given(hypothesis_streams(), st.data())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def check_hypothesis_stream(data, draw):
    length = len(data)
    cuts = draw.draw(st.one_of(
        st.lists(st.integers(0, length), max_size=20),
        st.integers(1, 64).map(lambda size: list(range(size, length, size)) if length <= 30000 else []),
        st.integers(0, length).map(lambda at: list(range(max(0, at - 40), min(length, at + 40))))), label='cuts')
    limits = draw.draw(st.sampled_from(LIMIT_CHOICES), label='limits')
    feed_type = draw.draw(st.sampled_from(FEED_TYPES), label='feed type')
    compare(data, cuts, limits, feed_type=feed_type)


def test_random_streams_hypothesis():
    before = COUNTS.c_chunks, COUNTS.chunks, COUNTS.streams
    check_hypothesis_stream()
    c_chunks, chunks, streams = (now - then for now, then in zip((COUNTS.c_chunks, COUNTS.chunks, COUNTS.streams),
                                                                 before))
    assert streams >= 250
    # (typically 250 chunks, 50 of them left to Python)
    assert c_chunks > 50 and chunks - c_chunks > 5, '%d chunks, %d of them taken by the C path' % (chunks, c_chunks)


@pytest.mark.parametrize('limits', [dict(max_headers=2.5), dict(max_header_block=1e6), dict(max_line_length=True)],
                         ids=['float-headers', 'float-block', 'bool-line'])
def test_limits_that_are_not_ints(limits):
    # left to the Python parser by the C path (which takes exact ints only)
    compare(b'MSRP abcd SEND\r\nTo-Path: msrp://a/b;tcp\r\n-------abcd$\r\n' + OK, limits=limits)


# -- URIs per path header (URIHeaderType.max_uris): the limit holds whichever parser made the chunk

def path_of(count):
    return b' '.join(b'msrp://a/%d;tcp' % i for i in range(count))  # short: 895 of them fit in one line


@pytest.mark.parametrize('count', [1, 32, 33, 895])
def test_uris_per_path_header_limit_is_the_same_for_both_parsers(count):
    data = send(headers=(TO_PATH, b'From-Path: ' + path_of(count), b'Message-ID: m1', b'Content-Type: text/plain'))
    assert len(data) < 16384 + 200  # within the line-length limit: only max_uris refuses it
    assert compare(data) is None  # the same chunks and the same decoded (or refused) headers
    outcomes = []
    for functions in (C_RUN, PURE_PYTHON):
        previous = select(functions)
        try:
            [(_, chunk), _, _] = MSRPParser().feed(data)
        finally:
            select(previous)
        try:
            outcomes.append(len(chunk.from_path))
        except HeaderParsingError as e:
            assert e.header == 'From-Path' and 'max_uris=32' in str(e)
            outcomes.append('refused')
    assert outcomes[0] == outcomes[1] == (count if count <= 32 else 'refused')
