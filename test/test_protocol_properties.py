"""msrplib.protocol: property tests (hypothesis) for MSRPData.encode() and MSRPParser.

* random chunks encoded, fed in random splits, parse back equal;
* random and mutated bytes give only well-formed events or a ChunkParseError,
  with the parser's buffer bounded by its limits.
"""

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from msrplib.protocol import (
    MSRPData, MSRPHeader, MSRPParser, ChunkParseError, HeaderParsingError, ByteRange, Status, URI,
    CHUNK_START, BODY, CHUNK_END,
    header_class, ToPathHeader, FromPathHeader, ByteRangeHeader, StatusHeader, ExpiresHeader)

# every test runs with the parser's C fast path and without it (test/conftest.py)
pytestmark = pytest.mark.usefixtures('parser_implementation')

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TID_FIRST = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
TID_REST = TID_FIRST + '.-+%='
TOKEN = TID_FIRST + "!#$%&'*+-.^_`|~"

transaction_ids = st.builds(lambda first, rest: first + rest, st.sampled_from(TID_FIRST),
                            st.text(TID_REST, min_size=3, max_size=31))
methods = st.one_of(st.sampled_from(['SEND', 'REPORT', 'AUTH', 'FILE_OFFSET', 'NICKNAME']),
                    st.from_regex(r'[A-Za-z][A-Za-z0-9_]{0,15}', fullmatch=True))
line_text = st.text(st.characters(blacklist_characters='\r\n', blacklist_categories=('Cs',)), max_size=60)
# header values are stripped of spaces and tabs at both ends when parsed
header_values = line_text.map(lambda text: text.strip(' \t'))
uris = st.builds(lambda tls, host, port, sid: URI(host, use_tls=tls, port=port, session_id=sid),
                 st.booleans(), st.sampled_from(['a.example.com', '192.0.2.1', '2001:db8::1']),
                 st.none() | st.integers(0, 65535), st.text(TID_FIRST, min_size=1, max_size=20))
byte_ranges = st.builds(lambda start, length, total: ByteRange(start, None if length is None else start + length - 1,
                                                               total),
                        st.integers(1, 10 ** 9), st.none() | st.integers(0, 10 ** 6), st.none())
known_headers = st.one_of(
    st.lists(uris, min_size=1, max_size=3).map(lambda value: ToPathHeader(decoded=value)),
    st.lists(uris, min_size=1, max_size=3).map(lambda value: FromPathHeader(decoded=value)),
    byte_ranges.map(lambda value: ByteRangeHeader(decoded=value)),
    st.builds(Status, st.integers(0, 999), st.none() | line_text.map(str.strip).filter(bool)).map(
        lambda value: StatusHeader(decoded=value)),
    st.integers(0, 10 ** 9).map(lambda value: ExpiresHeader(decoded=value)),
    st.builds(MSRPHeader, st.sampled_from(['Message-ID', 'Content-Type', 'Content-ID', 'Content-Description',
                                           'Use-Nickname', 'Success-Report', 'Failure-Report']), header_values),
    # a known header with a value that does not decode: the parser keeps it as text
    st.builds(MSRPHeader, st.sampled_from(['Byte-Range', 'Status', 'Expires', 'To-Path']), header_values),
)
unknown_names = st.text(TOKEN, min_size=1, max_size=20).filter(lambda name: header_class(name) is None)
unknown_headers = st.builds(MSRPHeader, unknown_names, header_values)


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(['empty', 'small', 'tricky', 'large']))
    if kind == 'empty':
        return b''
    if kind == 'small':
        return draw(st.binary(min_size=1, max_size=300))
    if kind == 'tricky':
        parts = draw(st.lists(st.one_of(
            st.binary(max_size=20),
            st.sampled_from([b'\r\n', b'\r', b'\n', b'-------', b'\r\n-------', b'$', b'+', b'#', b'\x00',
                             b'\r\n-------abcd$\r\n', b'MSRP abcd SEND\r\n'])), min_size=1, max_size=30))
        return b''.join(parts)
    size = draw(st.integers(1, 200 * 1024))
    return random.Random(draw(st.integers(0, 2 ** 32))).randbytes(size)


@st.composite
def chunks(draw):
    tid = draw(transaction_ids)
    if draw(st.booleans()):
        chunk = MSRPData(tid, method=draw(methods))
    else:
        chunk = MSRPData(tid, code=draw(st.integers(0, 999)), comment=draw(st.none() | line_text.filter(bool)))
    for header in draw(st.lists(st.one_of(known_headers, unknown_headers), max_size=12)):
        chunk.add_header(header)
    body = draw(bodies())
    # when the body contains its own marker, encode() picks another id: make the marker likely
    if body and draw(st.booleans()):
        position = draw(st.integers(0, len(body)))
        body = body[:position] + b'\r\n-------' + tid.encode() + draw(st.sampled_from([b'$\r\n', b'+', b'x'])) + \
            body[position:]
    chunk.data = body
    chunk.contflag = draw(st.sampled_from('$+#'))
    return chunk


def describe(chunk):
    # encode() puts headers in wire order (To-Path, From-Path, ..., Content-Type): compare them as a mapping
    return (chunk.first_line, {name: header.encoded for name, header in chunk.headers.items()}, chunk.data,
            chunk.contflag)


def parse_in_pieces(data, cuts, parser=None):
    parser = parser or MSRPParser()
    events = []
    previous = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        events.extend(parser.feed(data[previous:cut]))
        previous = cut
    return events, parser


def reassemble(events):
    result = []
    current = None
    pieces = []
    for kind, value in events:
        if kind is CHUNK_START:
            assert current is None
            current = value
            pieces = []
        elif kind is BODY:
            assert current is not None and type(value) is bytes and value
            pieces.append(value)
        else:
            assert kind is CHUNK_END and current is not None
            current.data = b''.join(pieces)
            assert current.contflag == value
            result.append(current)
            current = None
    assert current is None
    return result


@SETTINGS
@given(st.lists(chunks(), min_size=1, max_size=4), st.data())
def test_random_chunks_encode_and_parse_back_equal(originals, data):
    stream = b''.join(chunk.encode() for chunk in originals)  # encode() may change a transaction id
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label='cuts')
    events, parser = parse_in_pieces(stream, cuts)
    assert parser.buffered == 0 and not parser.in_body
    parsed = reassemble(events)
    assert [describe(chunk) for chunk in parsed] == [describe(chunk) for chunk in originals]


@SETTINGS
@given(chunks(), st.integers(1, 4000))
def test_random_chunk_fed_in_equal_pieces(chunk, size):
    stream = chunk.encode()
    parser = MSRPParser()
    events = []
    for i in range(0, len(stream), size):
        events.extend(parser.feed(stream[i:i + size]))
        assert parser.buffered <= 65536 + size
    [parsed] = reassemble(events)
    assert describe(parsed) == describe(chunk)


# -- hostile input

LIMITS = dict(max_line_length=200, max_headers=8, max_header_block=600)
BOUND = max(LIMITS['max_header_block'] + 3, LIMITS['max_line_length'] + 2)


def check_headers_decode(chunk):
    # every header of a parsed chunk decodes to a value or raises HeaderParsingError, nothing else
    for header in chunk.headers.values():
        try:
            header.decoded
        except HeaderParsingError:
            pass


def check_hostile(stream, cuts):
    parser = MSRPParser(**LIMITS)
    events = []
    previous = 0
    try:
        for cut in sorted(set(cuts)) + [len(stream)]:
            events.extend(parser.feed(stream[previous:cut]))
            previous = cut
            assert parser.buffered <= BOUND
    except ChunkParseError:
        try:
            parser.feed(b'MSRP ')
        except ChunkParseError:
            pass
        else:
            raise AssertionError('the parser accepted input after an error')
        return
    # well-formed event sequence so far
    in_chunk = False
    for kind, value in events:
        if kind is CHUNK_START:
            assert not in_chunk
            assert isinstance(value, MSRPData)
            check_headers_decode(value)
            in_chunk = True
        elif kind is BODY:
            assert in_chunk and type(value) is bytes and value
        else:
            assert kind is CHUNK_END and in_chunk and value in ('$', '+', '#')
            in_chunk = False
    assert in_chunk == parser.in_body


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_give_events_or_typed_errors(stream, cuts):
    check_hostile(stream, cuts)


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10))
def test_random_bytes_after_msrp_prefix(tail, cuts):
    check_hostile(b'MSRP abcd1234 ' + tail, cuts)


@st.composite
def mutated_streams(draw):
    stream = bytearray(b''.join(chunk.encode() for chunk in draw(st.lists(chunks(), min_size=1, max_size=3))))
    assume(len(stream) < 300 * 1024)
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(['flip', 'insert', 'delete', 'duplicate']))
        position = draw(st.integers(0, len(stream)))
        if operation == 'flip' and position < len(stream):
            stream[position] = draw(st.integers(0, 255))
        elif operation == 'insert':
            stream[position:position] = draw(st.sampled_from([b'\r', b'\n', b'\r\n', b'\r\n\r\n', b':', b' ',
                                                              b'-------', b'\x00', b'$', b'\xff']))
        elif operation == 'delete':
            del stream[position:position + draw(st.integers(1, 5))]
        else:
            stream[position:position] = stream[position:position + draw(st.integers(1, 100))]
    return bytes(stream)


@SETTINGS
@given(mutated_streams(), st.lists(st.integers(0, 300 * 1024), max_size=10))
def test_mutated_streams_give_events_or_typed_errors(stream, cuts):
    check_hostile(stream, cuts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([b'MSRP ', b'abcd1234 ', b'SEND', b'200 OK', b'\r\n', b'\r', b'\n', b'X-A: 1',
                                 b'To-Path: msrp://a.example.com:1/s;tcp', b'-------abcd1234', b'$', b'+', b'#',
                                 b'body', b':', b' ']), max_size=80),
       st.lists(st.integers(0, 1000), max_size=30))
def test_token_soup_gives_events_or_typed_errors(tokens, cuts):
    check_hostile(b''.join(tokens), cuts)


# -- header values

def reference_byte_range(text):
    # RFC 4975 §9: byte-range = range-start "-" range-end "/" total; with this library's checks
    import re
    match = re.fullmatch(r'([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)', text)
    if match is None:
        return None
    start, end, total = match.groups()
    start = int(start)
    end = None if end == '*' else int(end)
    total = None if total == '*' else int(total)
    if start < 1 or (end is not None and end < start - 1):
        return None
    if total is not None and ((end is not None and total < end) or total < start - 1):
        return None
    return ByteRange(start, end, total)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text('0123456789-/*', max_size=25),
    st.text('0123456789-/* +_\u0661', max_size=12),
    st.builds('{}-{}/{}'.format, st.integers(0, 10 ** 19), st.integers(0, 10 ** 19) | st.just('*'),
              st.integers(0, 10 ** 19) | st.just('*')),
    st.builds('{}-{}/{}'.format, st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))))
def test_byte_range_decode_matches_the_grammar(text):
    expected = reference_byte_range(text)
    header = ByteRangeHeader(text)
    if expected is None:
        try:
            value = header.decoded
        except HeaderParsingError:
            return
        raise AssertionError('accepted %r as %r' % (text, value))
    assert header.decoded == expected
    assert type(header.decoded) is ByteRange


# -- hostile input through a real transport (loopback TCP, MSRPTransport.read_chunk)

def _tcp_pair():
    import gevent.socket
    listener = gevent.socket.socket()
    try:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        client = gevent.socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    finally:
        listener.close()
    return client, server


def read_through_transport(stream, cuts, size, max_chunk_size, reset=False, limits=LIMITS, read_size=512):
    """Send ``stream`` cut at ``cuts`` over TCP to an MSRPTransport, then close (``reset``: with RST).

    Returns what read_chunk(size) gave.

    Returns (results, error): results are the chunks and Nones in order,
    error the exception that ended reading.  Fails on anything but chunks,
    None, ChunkParseError and the closure exceptions.
    """
    import socket
    import struct

    import gevent
    from msrplib.transport import MSRPTransport, ConnectionClosed

    raw, sock = _tcp_pair()
    transport = MSRPTransport(URI('127.0.0.1', use_tls=False, port=sock.getsockname()[1]), sock=sock)
    transport.parser_limits = limits
    transport._parser = MSRPParser(**limits)
    transport.max_chunk_size = max_chunk_size
    transport.read_size = read_size

    def send():
        previous = 0
        try:
            for cut in sorted(set(cuts)) + [len(stream)]:
                raw.sendall(stream[previous:cut])
                previous = cut
                gevent.sleep(0)
            if reset:  # RST instead of FIN
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            raw.close()
        except OSError:
            pass

    sender = gevent.spawn(send)
    results = []
    error = None
    try:
        with gevent.Timeout(10):
            while True:
                try:
                    result = transport.read_chunk(size)
                except (ChunkParseError, ConnectionClosed) as e:
                    error = e
                    break
                assert result is None or isinstance(result, MSRPData)
                if result is not None:
                    check_headers_decode(result)
                    assert type(result.data) is bytes and result.contflag in ('$', '+', '#')
                    if size is not None and result.segment is not None:
                        assert len(result.data) >= 1 or result.segment == 1
                    elif size is None:
                        assert len(result.data) <= max_chunk_size
                results.append(result)
                if result is None:
                    assert not transport.connected
    finally:
        transport.loseConnection()
        raw.close()
        sender.kill()
    if error is not None:
        # once it failed, the transport stays closed and says so at every read
        for _ in range(2):
            try:
                transport.read_chunk(size)
            except ConnectionClosed:
                pass
            else:
                raise AssertionError('read_chunk returned after the connection closed')
    return results, error




def test_segment_ending_a_chunk_is_never_empty_when_reads_split_the_body():
    # Found by hypothesis: with read_chunk(0) and reads of 512 bytes, every byte of the body went out in
    # '+' segments before the end-line arrived, and the segment carrying '$' was empty.
    head = b'MSRP a00000 SEND\r\nTo-Path: msrp://a.example.com/x;tcp\r\nMessage-ID: m\r\n' \
           b'Byte-Range: 1-*/*\r\nContent-Type: text/plain\r\n\r\n'
    for length in range(480, 540):
        body = bytes(range(32, 127)) * 6
        stream = head + body[:length - len(head)] + b'\r\n-------a00000$\r\n'
        results, error = read_through_transport(stream, [], 0, 10)
        segments = [result for result in results if result is not None]
        assert segments and segments[-1].contflag == '$', (length, results, error)
        assert all(len(segment.data) >= 1 for segment in segments), (length, [len(s.data) for s in segments])
        assert b''.join(segment.data for segment in segments) == body[:length - len(head)]


TRANSPORT_SETTINGS = settings(max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@TRANSPORT_SETTINGS
@given(mutated_streams(), st.lists(st.integers(0, 300 * 1024), max_size=10),
       st.sampled_from([None, 0, 1, 7, 1000]), st.sampled_from([10, 5000, 32 * 1024 * 1024]), st.booleans())
def test_mutated_streams_through_a_transport_give_chunks_none_or_typed_errors(stream, cuts, size, max_chunk_size,
                                                                             reset):
    read_through_transport(stream, cuts, size, max_chunk_size, reset)


@TRANSPORT_SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10), st.sampled_from([None, 3]))
def test_random_bytes_through_a_transport_give_chunks_none_or_typed_errors(stream, cuts, size):
    read_through_transport(b'MSRP abcd1234 ' + stream if stream[:1] == b'M' else stream, cuts, size, 5000)


@TRANSPORT_SETTINGS
@given(st.lists(chunks(), min_size=1, max_size=3), st.data(), st.sampled_from([None, 1, 100, 4096]))
def test_valid_streams_through_a_transport_come_out_whole(originals, data, size):
    stream = b''.join(chunk.encode() for chunk in originals)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label='cuts')
    results, error = read_through_transport(stream, cuts, size, 32 * 1024 * 1024, limits={}, read_size=8192)
    from msrplib.transport import ConnectionDone
    assert isinstance(error, ConnectionDone)
    assert None not in results
    # segments of one chunk carry its transaction id; join them back
    joined = []
    for chunk in results:
        if joined and chunk.segment is not None and chunk.segment > 1 and joined[-1][0] == chunk.transaction_id:
            joined[-1] = (chunk.transaction_id, joined[-1][1] + chunk.data, chunk.contflag)
        else:
            joined.append((chunk.transaction_id, chunk.data, chunk.contflag))
    assert joined == [(chunk.transaction_id, chunk.data, chunk.contflag) for chunk in originals]
