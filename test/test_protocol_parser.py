"""msrplib.protocol: MSRPParser on well-formed input (RFC 4975 and RFC 4976 exchanges, any split)."""

import pytest

from msrplib.protocol import (
    MSRPParser, MSRPData, MSRPHeader, ParserEvent, CHUNK_START, BODY, CHUNK_END, URI, ByteRange, Status,
    ToPathHeader, ByteRangeHeader, StatusHeader, WWWAuthenticateHeader, AuthorizationHeader, UsePathHeader,
    ExpiresHeader, InvalidStartLine, LimitExceeded)

# every test runs with the parser's C fast path and without it (test/conftest.py)
pytestmark = pytest.mark.usefixtures('parser_implementation')


def summary(events):
    """Events in a comparable form, consecutive BODY pieces joined."""
    result = []
    for kind, value in events:
        if kind is CHUNK_START:
            assert isinstance(value, MSRPData)
            assert value.data == b''
            result.append(('start', value.first_line, tuple((n, h.encoded) for n, h in value.headers.items())))
        elif kind is BODY:
            assert type(value) is bytes and value
            if result and result[-1][0] == 'body':
                result[-1] = ('body', result[-1][1] + value)
            else:
                result.append(('body', value))
        else:
            assert kind is CHUNK_END
            assert value in ('$', '+', '#')
            result.append(('end', value))
    return result


def feed_in_pieces(data, size, parser=None):
    parser = parser or MSRPParser()
    events = []
    for i in range(0, len(data), size):
        events.extend(parser.feed(data[i:i + size]))
    return events, parser


def chunks_of(events):
    """Reassemble (MSRPData with data, flag) from events."""
    chunks = []
    for kind, value in events:
        if kind is CHUNK_START:
            chunks.append(value)
            value.data = b''
        elif kind is BODY:
            chunks[-1].data += value
        else:
            assert chunks[-1].contflag == value
    return chunks


def check_any_split(data, expected=None):
    whole, parser = feed_in_pieces(data, len(data) or 1)
    assert parser.buffered == 0 and not parser.in_body
    reference = summary(whole)
    if expected is not None:
        assert reference == expected
    for size in (1, 2, 3, 7, 13, 64):
        events, parser = feed_in_pieces(data, size)
        assert summary(events) == reference, size
        assert parser.buffered == 0 and not parser.in_body
    return whole


# RFC 4975 §4 / §7: a SEND, its 200 and a REPORT

RFC4975_SEND = (
    b'MSRP a786hjs2 SEND\r\n'
    b'To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n'
    b'From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n'
    b'Message-ID: 87652491\r\n'
    b'Byte-Range: 1-25/25\r\n'
    b'Content-Type: text/plain\r\n'
    b'\r\n'
    b'Hey Bob, are you there?\r\n'
    b'-------a786hjs2$\r\n')

RFC4975_200 = (
    b'MSRP a786hjs2 200 OK\r\n'
    b'To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n'
    b'From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n'
    b'-------a786hjs2$\r\n')

RFC4975_CHUNKED = (
    b'MSRP d93kswow SEND\r\n'
    b'To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n'
    b'From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n'
    b'Message-ID: 12339sdqwer\r\n'
    b'Byte-Range: 1-16/36\r\n'
    b'Content-Type: text/plain\r\n'
    b'\r\n'
    b'Hi, this is the \r\n'
    b'-------d93kswow+\r\n'
    b'MSRP op2nc9a SEND\r\n'
    b'To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n'
    b'From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n'
    b'Message-ID: 12339sdqwer\r\n'
    b'Byte-Range: 17-36/36\r\n'
    b'Content-Type: text/plain\r\n'
    b'\r\n'
    b'first message, bye.\r\n'
    b'-------op2nc9a$\r\n')

RFC4975_REPORT = (
    b'MSRP dkei38sd REPORT\r\n'
    b'To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n'
    b'From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n'
    b'Message-ID: 12339sdqwer\r\n'
    b'Byte-Range: 1-36/36\r\n'
    b'Status: 000 200 OK\r\n'
    b'-------dkei38sd$\r\n')

RFC4975_ABORTED = (
    b'MSRP 4rte9tv SEND\r\n'
    b'To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n'
    b'From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n'
    b'Message-ID: 9sd8wd8w\r\n'
    b'Byte-Range: 1-*/*\r\n'
    b'Content-Type: application/octet-stream\r\n'
    b'\r\n'
    b'\x00\x01\x02\x03partial data\r\n'
    b'-------4rte9tv#\r\n')

# RFC 4976 §5: AUTH at a relay, 401 with a challenge, AUTH with credentials, 200 with Use-Path

RFC4976_AUTH = (
    b'MSRP 49fi AUTH\r\n'
    b'To-Path: msrps://alice@intra.example.com;tcp\r\n'
    b'From-Path: msrps://alice.example.com:9892/98cjs;tcp\r\n'
    b'-------49fi$\r\n')

RFC4976_401 = (
    b'MSRP 49fi 401 Unauthorized\r\n'
    b'To-Path: msrps://alice.example.com:9892/98cjs;tcp\r\n'
    b'From-Path: msrps://alice@intra.example.com;tcp\r\n'
    b'WWW-Authenticate: Digest realm="intra.example.com", qop="auth", '
    b'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"\r\n'
    b'-------49fi$\r\n')

RFC4976_AUTH2 = (
    b'MSRP 49fj AUTH\r\n'
    b'To-Path: msrps://alice@intra.example.com;tcp\r\n'
    b'From-Path: msrps://alice.example.com:9892/98cjs;tcp\r\n'
    b'Authorization: Digest username="Alice", realm="intra.example.com", '
    b'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=auth, nc=00000001, cnonce="0a4f113b", '
    b'response="6629fae49393a05397450978507c4ef1"\r\n'
    b'-------49fj$\r\n')

RFC4976_200 = (
    b'MSRP 49fj 200 OK\r\n'
    b'To-Path: msrps://alice.example.com:9892/98cjs;tcp\r\n'
    b'From-Path: msrps://alice@intra.example.com;tcp\r\n'
    b'Use-Path: msrps://intra.example.com:9000/jui787s2f;tcp\r\n'
    b'Expires: 900\r\n'
    b'-------49fj$\r\n')

RFC4976_423 = (
    b'MSRP 49fk 423 Interval Out-of-Bounds\r\n'
    b'To-Path: msrps://alice.example.com:9892/98cjs;tcp\r\n'
    b'From-Path: msrps://alice@intra.example.com;tcp\r\n'
    b'Min-Expires: 300\r\n'
    b'Max-Expires: 7200\r\n'
    b'-------49fk$\r\n')

EXAMPLES = {
    'rfc4975-send': RFC4975_SEND, 'rfc4975-200': RFC4975_200, 'rfc4975-chunked': RFC4975_CHUNKED,
    'rfc4975-report': RFC4975_REPORT, 'rfc4975-aborted': RFC4975_ABORTED, 'rfc4976-auth': RFC4976_AUTH,
    'rfc4976-401': RFC4976_401, 'rfc4976-auth2': RFC4976_AUTH2, 'rfc4976-200': RFC4976_200,
    'rfc4976-423': RFC4976_423,
}
ALL_EXAMPLES = b''.join(EXAMPLES.values())


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_rfc_example_whole_and_byte_by_byte(name):
    check_any_split(EXAMPLES[name])


def test_rfc_examples_all_in_one_feed_and_byte_by_byte():
    events = check_any_split(ALL_EXAMPLES)
    assert len(chunks_of(events)) == 11


def test_rfc4975_send_parsed():
    [chunk] = chunks_of(MSRPParser().feed(RFC4975_SEND))
    assert chunk.transaction_id == 'a786hjs2'
    assert chunk.method == 'SEND' and chunk.code is None
    assert chunk.to_path == [URI.parse('msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp')]
    assert chunk.from_path == [URI.parse('msrp://atlanta.example.com:7654/jshA7weztas;tcp')]
    assert chunk.message_id == '87652491'
    assert chunk.byte_range == ByteRange(1, 25, 25)
    assert chunk.content_type == 'text/plain'
    assert chunk.data == b'Hey Bob, are you there?'
    assert chunk.contflag == '$'
    assert list(chunk.headers) == ['To-Path', 'From-Path', 'Message-ID', 'Byte-Range', 'Content-Type']
    chunk.verify_headers()
    assert chunk.encode() == RFC4975_SEND


def test_rfc4975_events_exactly():
    events = MSRPParser().feed(RFC4975_SEND + RFC4975_200)
    assert [kind for kind, _ in events] == [CHUNK_START, BODY, CHUNK_END, CHUNK_START, CHUNK_END]
    assert events[1][1] == b'Hey Bob, are you there?'
    assert events[2][1] == '$'
    response = events[3][1]
    assert (response.code, response.comment, response.method) == (200, 'OK', None)
    assert response.contflag == '$'


def test_rfc4975_report_parsed():
    [chunk] = chunks_of(MSRPParser().feed(RFC4975_REPORT))
    assert chunk.method == 'REPORT'
    assert isinstance(chunk.headers['Status'], StatusHeader)
    assert chunk.status == Status(200, 'OK')
    assert chunk.encode() == RFC4975_REPORT


def test_rfc4975_chunked_message():
    first, second = chunks_of(MSRPParser().feed(RFC4975_CHUNKED))
    assert first.contflag == '+' and second.contflag == '$'
    assert first.data + second.data == b'Hi, this is the first message, bye.'
    assert (first.byte_range, second.byte_range) == (ByteRange(1, 16, 36), ByteRange(17, 36, 36))


def test_rfc4975_aborted_chunk():
    [chunk] = chunks_of(MSRPParser().feed(RFC4975_ABORTED))
    assert chunk.contflag == '#'
    assert chunk.byte_range == ByteRange(1, None, None)
    assert chunk.data == b'\x00\x01\x02\x03partial data'


def test_rfc4976_exchange_parsed():
    auth, challenge, auth2, ok, bounds = chunks_of(MSRPParser().feed(
        RFC4976_AUTH + RFC4976_401 + RFC4976_AUTH2 + RFC4976_200 + RFC4976_423))
    assert auth.method == 'AUTH'
    assert auth.to_path == [URI.parse('msrps://alice@intra.example.com;tcp')]
    assert auth.to_path[0].session_id == ''
    assert (challenge.code, challenge.comment) == (401, 'Unauthorized')
    assert isinstance(challenge.headers['WWW-Authenticate'], WWWAuthenticateHeader)
    assert challenge.headers['WWW-Authenticate'].decoded == {
        'realm': 'intra.example.com', 'qop': 'auth', 'nonce': 'dcd98b7102dd2f0e8b11d0f600bfb0c093'}
    assert isinstance(auth2.headers['Authorization'], AuthorizationHeader)
    credentials = auth2.headers['Authorization'].decoded
    assert credentials['username'] == 'Alice'
    assert credentials['nc'] == '00000001'
    assert credentials['response'] == '6629fae49393a05397450978507c4ef1'
    assert 'opaque' not in credentials
    assert isinstance(ok.headers['Use-Path'], UsePathHeader)
    assert ok.headers['Use-Path'].decoded == [URI.parse('msrps://intra.example.com:9000/jui787s2f;tcp')]
    assert isinstance(ok.headers['Expires'], ExpiresHeader)
    assert ok.headers['Expires'].decoded == 900
    assert bounds.code == 423 and bounds.comment == 'Interval Out-of-Bounds'
    assert bounds.headers['Min-Expires'].decoded == 300
    assert bounds.headers['Max-Expires'].decoded == 7200
    for chunk in (auth, challenge, auth2, ok, bounds):
        chunk.verify_headers()


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_rfc_examples_encode_back_identically(name):
    [chunk, *rest] = chunks_of(MSRPParser().feed(EXAMPLES[name]))
    assert b''.join(c.encode() for c in [chunk] + rest) == EXAMPLES[name]


# -- splits

@pytest.mark.parametrize('data', [RFC4975_SEND, RFC4975_200, RFC4975_CHUNKED], ids=['body', 'no-body', 'two'])
def test_split_at_every_position(data):
    reference = summary(MSRPParser().feed(data))
    for cut in range(1, len(data)):
        parser = MSRPParser()
        events = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert summary(events) == reference, cut
        assert parser.buffered == 0


@pytest.mark.parametrize('data', [RFC4975_SEND, RFC4975_200], ids=['body', 'no-body'])
def test_end_line_split_at_every_position_in_three_feeds(data):
    # The classic library lost the flag when a read ended right after the transaction id.
    reference = summary(MSRPParser().feed(data))
    end_line = data.rindex(b'-------') - (2 if data.endswith(b'$\r\n') and b'\r\n\r\n' in data else 0)
    for first in range(end_line - 2, len(data)):
        for second in range(first + 1, len(data)):
            parser = MSRPParser()
            events = parser.feed(data[:first]) + parser.feed(data[first:second]) + parser.feed(data[second:])
            assert summary(events) == reference, (first, second)
            assert parser.buffered == 0 and not parser.in_body


def test_feed_accepts_bytes_like():
    for convert in (bytearray, memoryview):
        events = MSRPParser().feed(convert(RFC4975_SEND))
        assert summary(events) == summary(MSRPParser().feed(RFC4975_SEND))
        assert all(type(value) is bytes for kind, value in events if kind is BODY)


def test_feed_empty_bytes():
    parser = MSRPParser()
    assert parser.feed(b'') == []
    parser.feed(RFC4975_SEND[:10])
    assert parser.feed(b'') == []
    assert summary(parser.feed(RFC4975_SEND[10:])) == summary(MSRPParser().feed(RFC4975_SEND))


def test_many_chunks_in_one_feed():
    stream = RFC4975_SEND * 200 + RFC4975_200 * 200
    events = MSRPParser().feed(stream)
    assert len(chunks_of(events)) == 400
    assert sum(1 for kind, _ in events if kind is CHUNK_END) == 400


def test_buffered_and_in_body():
    parser = MSRPParser()
    head_end = RFC4975_SEND.index(b'\r\n\r\n') + 4
    assert parser.feed(RFC4975_SEND[:30]) == []
    assert parser.buffered == 30 and not parser.in_body
    events = parser.feed(RFC4975_SEND[30:head_end + 3])
    assert [kind for kind, _ in events] == [CHUNK_START]
    assert parser.in_body
    events = parser.feed(RFC4975_SEND[head_end + 3:])
    assert [kind for kind, _ in events] == [BODY, CHUNK_END]
    assert parser.buffered == 0 and not parser.in_body


def test_event_kinds():
    assert ParserEvent.CHUNK_START is CHUNK_START
    assert {CHUNK_START, BODY, CHUNK_END} == set(ParserEvent)


# -- bodies

def make_chunk(body, tid='abcd1234', flag='$', content_type='application/octet-stream'):
    chunk = MSRPData(tid, method='SEND', data=body, contflag=flag)
    chunk.add_header(ToPathHeader('msrp://b.example.com:2855/s2;tcp'))
    chunk.add_header(MSRPHeader('From-Path', 'msrp://a.example.com:2855/s1;tcp'))
    chunk.add_header(MSRPHeader('Message-ID', 'm1'))
    chunk.add_header(ByteRangeHeader(decoded=ByteRange(1, len(body), len(body))))
    if content_type:
        chunk.add_header(MSRPHeader('Content-Type', content_type))
    return chunk


@pytest.mark.parametrize('body', [
    b'line one\r\nline two\r\n\r\nline four\r\n',
    b'\r\n',
    b'\r\n\r\n',
    b'\x00' * 50 + b'\x00\r\n\x00',
    b'-------',
    b'\r\n-------',
    b'\r\n-------\r\n',
    b'-------abcd1234$\r\n',                      # this transaction's end-line without its leading CRLF
    b'\r\n-------abcd123$\r\n',                   # a shorter transaction id
    b'\r\n-------abcd12345$\r\n',                 # a longer one: the marker followed by a non-flag
    b'\r\n-------zzzz9999$\r\nMSRP zzzz9999 SEND\r\n',   # another transaction's end-line
    b'\r\n-------abcd1234x\r\n',                  # this transaction's marker followed by a non-flag
    b'\r\n-------abcd1234$x',                     # ... by a flag and something else
    b'\r\n-------abcd1234$\r',                    # ... by a flag and a lone CR
    b'\r\n-------abcd1234$\n',
    b'\r\n-------abcd1234',                       # ... at the very end
    b'\r\n-------abcd1234\r\n-------abcd1234+ \r\n',
    b'MSRP abcd1234 SEND\r\nTo-Path: x\r\n\r\n',  # something like a chunk
    b'\xff\xfe\xfd' * 1000,
    bytes(range(256)) * 40,
])
def test_body_contents_survive(body):
    chunk = make_chunk(body)
    # framed by hand: encode() would change the transaction id of a body containing its marker at all
    data = chunk.encoded_header + chunk.data + chunk.encoded_footer
    events = check_any_split(data)
    [parsed] = chunks_of(events)
    assert parsed.data == body


def test_body_containing_this_end_line_is_reencoded():
    body = b'abc\r\n-------abcd1234$\r\ndef'
    chunk = make_chunk(body)
    data = chunk.encode()
    assert chunk.transaction_id != 'abcd1234'
    [parsed] = chunks_of(check_any_split(data))
    assert parsed.data == body


def test_empty_body_after_the_blank_line():
    # content-stuff = ... Content-Type 2CRLF data CRLF end-line, with empty data (RFC 4975 §9)
    data = (b'MSRP abcd1234 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n'
            b'From-Path: msrp://a.example.com:2855/s1;tcp\r\nContent-Type: text/plain\r\n\r\n'
            b'\r\n-------abcd1234$\r\n')
    events = check_any_split(data)
    assert [kind for kind, _ in events] == [CHUNK_START, CHUNK_END]


def test_body_without_headers():
    data = b'MSRP abcd1234 SEND\r\n\r\nbody\r\n-------abcd1234+\r\n'
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.headers == {} and chunk.data == b'body' and chunk.contflag == '+'


def test_chunk_without_headers_or_body():
    data = b'MSRP abcd1234 SEND\r\n-------abcd1234$\r\n'
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.headers == {} and chunk.data == b''


@pytest.mark.parametrize('flag', ['$', '+', '#'])
def test_no_body_chunk_flags(flag):
    data = make_chunk(b'', flag=flag).encode()
    events = check_any_split(data)
    assert events[-1] == (CHUNK_END, flag)
    assert events[0][1].contflag == flag


@pytest.mark.parametrize('flag', ['$', '+', '#'])
def test_regression_body_chunk_contflag_set_on_the_chunk_at_its_end(flag):
    data = make_chunk(b'xyz', flag=flag).encode()
    events = MSRPParser().feed(data)
    assert events[-1] == (CHUNK_END, flag)
    assert events[0][1].contflag == flag


def test_large_body_in_small_feeds_is_handed_out_in_pieces():
    body = bytes(range(256)) * 4096  # 1 MiB
    data = make_chunk(body).encode()
    parser = MSRPParser()
    pieces = []
    for i in range(0, len(data), 65536):
        for kind, value in parser.feed(data[i:i + 65536]):
            if kind is BODY:
                pieces.append(value)
        assert parser.buffered < 100  # never holds the body
    assert len(pieces) > 10
    assert b''.join(pieces) == body


def test_body_ending_exactly_at_a_feed_boundary():
    data = make_chunk(b'x' * 1000).encode()
    cut = data.index(b'\r\n-------')
    parser = MSRPParser()
    first = parser.feed(data[:cut])
    assert parser.buffered <= len('\r\n-------abcd1234') + 2
    events = first + parser.feed(data[cut:])
    assert chunks_of(events)[0].data == b'x' * 1000


# -- start lines, methods, headers

@pytest.mark.parametrize('method', ['SEND', 'REPORT', 'AUTH', 'FILE_OFFSET', 'NICKNAME', 'X_FOO_BAR', 'send'])
def test_any_method_name(method):
    data = ('MSRP abcd1234 %s\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n'
            'From-Path: msrp://a.example.com:2855/s1;tcp\r\n-------abcd1234$\r\n' % method).encode()
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.method == method


@pytest.mark.parametrize('line,code,comment', [
    (b'MSRP abcd1234 200', 200, None),
    (b'MSRP abcd1234 200 OK', 200, 'OK'),
    (b'MSRP abcd1234 413 Stop sending that, please', 413, 'Stop sending that, please'),
    (b'MSRP abcd1234 481 \xc3\xa9t\xc3\xa9', 481, '\u00e9t\u00e9'),
    (b'MSRP abcd1234 000', 0, None),
])
def test_response_lines(line, code, comment):
    [chunk] = chunks_of(check_any_split(line + b'\r\n-------abcd1234$\r\n'))
    assert (chunk.code, chunk.comment, chunk.method) == (code, comment, None)


def test_response_comment_not_utf8_kept():
    [chunk] = chunks_of(MSRPParser().feed(b'MSRP abcd1234 200 \xff\r\n-------abcd1234$\r\n'))
    assert chunk.comment.encode('utf-8', 'surrogateescape') == b'\xff'


@pytest.mark.parametrize('tid', ['abcd', 'a' * 32, 'A1.-+%=', '0abc', 'Z.z.'])
def test_transaction_id_forms(tid):
    data = ('MSRP %s SEND\r\n-------%s$\r\n' % (tid, tid)).encode()
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.transaction_id == tid


def test_unknown_headers_kept():
    data = (b'MSRP abcd1234 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n'
            b'From-Path: msrp://a.example.com:2855/s1;tcp\r\nX-Foo: bar\r\nP-Header-1: some: thing\r\n'
            b"Odd!#$%&'*+.^_`|~: \r\n-------abcd1234$\r\n")
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.headers['X-Foo'].encoded == 'bar'
    assert type(chunk.headers['X-Foo']) is MSRPHeader
    assert chunk.headers['P-Header-1'].encoded == 'some: thing'
    assert chunk.headers["Odd!#$%&'*+.^_`|~"].encoded == ''


def test_lower_case_known_header_names_normalised():
    data = (b'MSRP abcd1234 SEND\r\nto-path: msrp://b.example.com:2855/s2;tcp\r\n'
            b'FROM-PATH: msrp://a.example.com:2855/s1;tcp\r\nbyte-range: 1-3/3\r\ncontent-TYPE: text/plain\r\n'
            b'\r\nabc\r\n-------abcd1234$\r\n')
    [chunk] = chunks_of(check_any_split(data))
    assert list(chunk.headers) == ['To-Path', 'From-Path', 'Byte-Range', 'Content-Type']
    assert isinstance(chunk.headers['To-Path'], ToPathHeader)
    assert chunk.byte_range == ByteRange(1, 3, 3)
    chunk.verify_headers()


def test_header_whitespace_around_values_stripped():
    data = b'MSRP abcd1234 SEND\r\nMessage-ID:abc\r\nExpires: \t 5 \t\r\nX-A:\r\n-------abcd1234$\r\n'
    [chunk] = chunks_of(check_any_split(data))
    assert chunk.message_id == 'abc'
    assert chunk.headers['Expires'].decoded == 5
    assert chunk.headers['X-A'].encoded == ''


def test_repeated_header_last_wins():
    data = b'MSRP abcd1234 SEND\r\nX-A: 1\r\nExpires: 5\r\nX-A: 2\r\n-------abcd1234$\r\n'
    [chunk] = chunks_of(MSRPParser().feed(data))
    assert chunk.headers['X-A'].encoded == '2'
    assert list(chunk.headers) == ['X-A', 'Expires']


def test_bad_header_value_is_not_a_parse_error():
    # the framing is fine; the bad value surfaces when the header is decoded
    data = b'MSRP abcd1234 SEND\r\nByte-Range: nonsense\r\nTo-Path: \xff\r\n-------abcd1234$\r\n'
    [chunk] = chunks_of(MSRPParser().feed(data))
    assert chunk.headers['Byte-Range'].encoded == 'nonsense'
    assert chunk.headers['To-Path'].encoded.encode('utf-8', 'surrogateescape') == b'\xff'


def test_header_values_may_contain_utf8():
    data = 'MSRP abcd1234 SEND\r\nUse-Nickname: J\u00fcrgen \u2603\r\n-------abcd1234$\r\n'.encode('utf-8')
    [chunk] = chunks_of(MSRPParser().feed(data))
    assert chunk.headers['Use-Nickname'].decoded == 'J\u00fcrgen \u2603'


def test_limits_are_generous_enough_for_exact_values():
    # exactly at every limit is fine
    parser = MSRPParser(max_line_length=40, max_headers=3, max_header_block=200)
    data = b'MSRP abcd1234 SEND\r\n' + b'X-A: ' + b'a' * 35 + b'\r\nX-B: 1\r\nX-C: 2\r\n-------abcd1234$\r\n'
    events = parser.feed(data)
    assert len(chunks_of(events)) == 1


def test_parser_reusable_after_many_chunks_of_different_kinds():
    parser = MSRPParser()
    stream = ALL_EXAMPLES * 3
    events = []
    for i in range(0, len(stream), 97):
        events.extend(parser.feed(stream[i:i + 97]))
    assert summary(events) == summary(MSRPParser().feed(stream))


# -- regressions for the parser's shortcuts (one search for the end-line, the start line matched first)

def test_regression_end_line_right_after_the_blank_line_is_body():
    # the one end-line search must not take an end-line overlapping the blank line for the body's end:
    # without the CRLF of content-stuff it is body, as it always was
    data = (b'MSRP abcd1234 SEND\r\nTo-Path: msrp://b:1/s;tcp\r\n\r\n-------abcd1234$\r\nmore\r\n'
            b'-------abcd1234+\r\n')
    assert summary(check_any_split(data)) == [
        ('start', 'MSRP abcd1234 SEND', (('To-Path', 'msrp://b:1/s;tcp'),)),
        ('body', b'-------abcd1234$\r\nmore'), ('end', '+')]


def test_regression_chunk_without_body_then_one_with_a_body_in_one_feed():
    # the blank line found first belongs to the second chunk; the end-line before it ends the first
    first = b'MSRP abcd1234 200 OK\r\nTo-Path: msrp://b:1/s;tcp\r\n-------abcd1234$\r\n'
    second = b'MSRP efgh5678 SEND\r\nMessage-ID: m\r\n\r\nbody\r\n-------efgh5678#\r\n'
    assert summary(check_any_split(first + second)) == [
        ('start', 'MSRP abcd1234 200 OK', (('To-Path', 'msrp://b:1/s;tcp'),)), ('end', '$'),
        ('start', 'MSRP efgh5678 SEND', (('Message-ID', 'm'),)), ('body', b'body'), ('end', '#')]


@pytest.mark.parametrize('extra, refused', [(0, False), (1, True)])
def test_regression_start_line_of_exactly_max_line_length_bytes(extra, refused):
    line = b'MSRP abcd1234 200 ' + b'x' * 20
    parser = MSRPParser(max_line_length=len(line) - extra)
    data = line + b'\r\n-------abcd1234$\r\n'
    if refused:
        with pytest.raises(LimitExceeded) as info:
            parser.feed(data)
        assert info.value.limit == 'max_line_length'
    else:
        assert [kind for kind, _ in parser.feed(data)] == [CHUNK_START, CHUNK_END]


def test_regression_complete_line_that_is_not_a_start_line():
    with pytest.raises(InvalidStartLine) as info:
        MSRPParser().feed(b'MSRP abcd1234 20 OK\r\n-------abcd1234$\r\n')
    assert str(info.value) == "not an MSRP start line: b'MSRP abcd1234 20 OK'"


def test_regression_parsed_chunk_attributes_as_constructed():
    # a parsed chunk gets only the attributes that differ from MSRPData's class defaults set
    data = (b'MSRP abcd1234 SEND\r\n-------abcd1234$\r\nMSRP abcd1234 200 OK\r\n-------abcd1234+\r\n'
            b'MSRP abcd1234 481\r\n-------abcd1234$\r\n')
    send, ok, no_session = [value for kind, value in MSRPParser().feed(data) if kind is CHUNK_START]
    for chunk, expected in ((send, MSRPData('abcd1234', method='SEND')),
                            (ok, MSRPData('abcd1234', code=200, comment='OK', contflag='+')),
                            (no_session, MSRPData('abcd1234', code=481))):
        for name in ('transaction_id', 'method', 'code', 'comment', 'data', 'contflag', 'headers'):
            assert getattr(chunk, name) == getattr(expected, name), name
