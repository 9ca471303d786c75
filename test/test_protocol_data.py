"""msrplib.protocol: MSRPData (one chunk) and its encoding."""

import os

import pytest

from msrplib.protocol import (
    URI, MSRPData, MSRPHeader, MSRPNamedHeader, HeaderParsingError, ByteRange, Status, MSRPParser,
    ToPathHeader, FromPathHeader, ByteRangeHeader, ContentTypeHeader, CHUNK_START, BODY,
    random_transaction_id, random_message_id, END_LINE_DASHES, IntegerHeaderType)

TO = 'msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp'
FROM = 'msrp://atlanta.example.com:7654/jshA7weztas;tcp'


def make_send(data=b'', tid='a786hjs2', contflag='$', content_type='text/plain'):
    chunk = MSRPData(tid, method='SEND', data=data, contflag=contflag)
    chunk.add_header(MSRPHeader('To-Path', TO))
    chunk.add_header(MSRPHeader('From-Path', FROM))
    chunk.add_header(MSRPHeader('Message-ID', '87652491'))
    chunk.add_header(MSRPHeader('Byte-Range', '1-%d/%d' % (len(data), len(data))))
    if content_type is not None:
        chunk.add_header(MSRPHeader('Content-Type', content_type))
    return chunk


def parse_all(data):
    parser = MSRPParser()
    events = parser.feed(data)
    assert parser.buffered == 0 and not parser.in_body
    chunks = []
    for kind, value in events:
        if kind is CHUNK_START:
            chunks.append(value)
            value.data = b''
        elif kind is BODY:
            chunks[-1].data += value
        else:
            assert value == chunks[-1].contflag
    return chunks


# -- construction and properties

def test_msrp_data_defaults():
    chunk = MSRPData('abcd1234')
    assert chunk.transaction_id == 'abcd1234'
    assert chunk.method is None and chunk.code is None and chunk.comment is None
    assert chunk.headers == {}
    assert chunk.data == b''
    assert chunk.contflag == '$'
    assert chunk.final
    assert chunk.size == 0
    assert chunk.segment is None


def test_msrp_data_header_properties_absent():
    chunk = MSRPData('abcd1234', method='SEND')
    assert chunk.from_path is None
    assert chunk.to_path is None
    assert chunk.content_type is None
    assert chunk.message_id is None
    assert chunk.byte_range is None
    assert chunk.status is None
    assert chunk.failure_report == 'yes'
    assert chunk.success_report == 'no'


def test_msrp_data_header_properties():
    chunk = make_send(b'Hey Bob, are you there?')
    chunk.add_header(MSRPHeader('Failure-Report', 'partial'))
    chunk.add_header(MSRPHeader('Success-Report', 'yes'))
    chunk.add_header(MSRPHeader('Status', '000 200 OK'))
    assert chunk.to_path == [URI.parse(TO)]
    assert chunk.from_path == [URI.parse(FROM)]
    assert chunk.message_id == '87652491'
    assert chunk.byte_range == ByteRange(1, 23, 23)
    assert chunk.content_type == 'text/plain'
    assert chunk.failure_report == 'partial'
    assert chunk.success_report == 'yes'
    assert chunk.status == Status(200, 'OK')
    assert chunk.size == 23


def test_msrp_data_property_with_bad_value_raises():
    chunk = MSRPData('abcd1234', method='SEND')
    chunk.add_header(MSRPHeader('Byte-Range', '5-1/3'))
    with pytest.raises(HeaderParsingError) as info:
        chunk.byte_range
    assert info.value.header == 'Byte-Range'


def test_msrp_data_str_body_is_utf8():
    chunk = MSRPData('abcd1234', method='SEND', data='h\u00e9llo \u2603')
    assert chunk.data == 'h\u00e9llo \u2603'.encode('utf-8')
    assert chunk.size == len(chunk.data)


def test_msrp_data_headers_argument_is_copied():
    headers = {'To-Path': ToPathHeader(TO)}
    chunk = MSRPData('abcd1234', method='SEND', headers=headers)
    headers['From-Path'] = FromPathHeader(FROM)
    assert list(chunk.headers) == ['To-Path']


def test_add_header_replaces():
    chunk = MSRPData('abcd1234', method='SEND')
    chunk.add_header(MSRPHeader('Expires', '1'))
    chunk.add_header(MSRPHeader('expires', '2'))
    assert list(chunk.headers) == ['Expires']
    assert chunk.headers['Expires'].decoded == 2


def test_final_flag():
    assert not MSRPData('abcd1234', contflag='+').final
    assert not MSRPData('abcd1234', contflag='#').final


def test_repr():
    assert repr(MSRPData('abcd1234', method='SEND', data=b'xy')) == '<MSRPData abcd1234 SEND 2 bytes $>'
    assert repr(MSRPData('abcd1234', code=200)) == '<MSRPData abcd1234 200 0 bytes $>'


# -- copy

def test_copy_is_equal_and_independent():
    chunk = make_send(b'body', contflag='+')
    chunk.add_header(MSRPHeader('X-Foo', 'bar'))
    chunk.to_path  # decoded before copying
    copy = chunk.copy()
    assert copy is not chunk
    assert copy.encode() == chunk.encode()
    assert (copy.transaction_id, copy.method, copy.code, copy.comment, copy.data, copy.contflag) == \
        (chunk.transaction_id, chunk.method, chunk.code, chunk.comment, chunk.data, chunk.contflag)
    assert list(copy.headers) == list(chunk.headers)
    for name in chunk.headers:
        assert copy.headers[name] is not chunk.headers[name]
        assert type(copy.headers[name]) is type(chunk.headers[name])
        assert copy.headers[name] == chunk.headers[name]
    copy.headers['X-Foo'].encoded = 'changed'
    copy.add_header(MSRPHeader('X-New', '1'))
    assert chunk.headers['X-Foo'].encoded == 'bar'
    assert 'X-New' not in chunk.headers


def test_regression_copy_does_not_share_decoded_lists():
    chunk = make_send()
    chunk.to_path.append(URI.parse('msrp://extra.example.com:1/z;tcp'))  # decoded and changed in place
    copy = chunk.copy()
    assert len(copy.to_path) == 2
    copy.to_path.append(URI.parse('msrp://more.example.com:1/w;tcp'))
    copy.from_path.clear()
    assert len(chunk.to_path) == 2
    assert len(chunk.from_path) == 1


def test_regression_copy_keeps_custom_header_class():
    class XCountHeader(MSRPNamedHeader):
        name = 'X-Count'
        type = IntegerHeaderType

    chunk = MSRPData('abcd1234', method='SEND')
    chunk.add_header(XCountHeader('7'))
    copy = chunk.copy()
    assert type(copy.headers['X-Count']) is XCountHeader
    assert copy.headers['X-Count'].decoded == 7


def test_copy_keeps_decoded_only_headers():
    chunk = MSRPData('abcd1234', code=200)
    chunk.add_header(ByteRangeHeader(decoded=ByteRange(1, 2, 3)))
    assert chunk.copy().byte_range == ByteRange(1, 2, 3)


# -- verify_headers

def test_verify_headers_ok():
    make_send(b'x').verify_headers()


@pytest.mark.parametrize('missing', ['To-Path', 'From-Path'])
def test_verify_headers_missing_path(missing):
    chunk = make_send(b'x')
    del chunk.headers[missing]
    with pytest.raises(HeaderParsingError) as info:
        chunk.verify_headers()
    assert info.value.header == missing


def test_verify_headers_bad_value():
    chunk = make_send(b'x')
    chunk.add_header(MSRPHeader('Failure-Report', 'perhaps'))
    with pytest.raises(HeaderParsingError) as info:
        chunk.verify_headers()
    assert info.value.header == 'Failure-Report'


# -- first line

def test_first_line_request():
    assert MSRPData('a786hjs2', method='SEND').first_line == 'MSRP a786hjs2 SEND'
    assert MSRPData('a786hjs2', method='FILE_OFFSET').first_line == 'MSRP a786hjs2 FILE_OFFSET'


def test_first_line_response():
    assert MSRPData('a786hjs2', code=200, comment='OK').first_line == 'MSRP a786hjs2 200 OK'
    assert MSRPData('a786hjs2', code=200).first_line == 'MSRP a786hjs2 200'
    assert MSRPData('a786hjs2', code=0).first_line == 'MSRP a786hjs2 000'


# -- encode

def test_encode_rfc4975_send():
    chunk = make_send(b'Hey Bob, are you there?', content_type='text/plain')
    chunk.headers['Byte-Range'] = ByteRangeHeader('1-25/25')
    assert chunk.encode() == (
        b'MSRP a786hjs2 SEND\r\n'
        b'To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n'
        b'From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n'
        b'Message-ID: 87652491\r\n'
        b'Byte-Range: 1-25/25\r\n'
        b'Content-Type: text/plain\r\n'
        b'\r\n'
        b'Hey Bob, are you there?\r\n'
        b'-------a786hjs2$\r\n')


def test_encode_response_without_body():
    chunk = MSRPData('a786hjs2', code=200, comment='OK')
    chunk.add_header(MSRPHeader('From-Path', TO))
    chunk.add_header(MSRPHeader('To-Path', FROM))
    assert chunk.encode() == (
        b'MSRP a786hjs2 200 OK\r\n'
        b'To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n'
        b'From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n'
        b'-------a786hjs2$\r\n')


def test_encode_header_order():
    chunk = MSRPData('abcd1234', method='SEND', data=b'x')
    chunk.add_header(MSRPHeader('Content-Type', 'text/plain'))
    chunk.add_header(MSRPHeader('Content-ID', '<id@example.com>'))
    chunk.add_header(MSRPHeader('X-Foo', 'foo'))
    chunk.add_header(MSRPHeader('From-Path', FROM))
    chunk.add_header(MSRPHeader('Content-Disposition', 'inline'))
    chunk.add_header(MSRPHeader('Message-ID', 'm'))
    chunk.add_header(MSRPHeader('To-Path', TO))
    names = [line.split(b':')[0] for line in chunk.encoded_header.split(b'\r\n')[1:] if line]
    assert names == [b'To-Path', b'From-Path', b'X-Foo', b'Message-ID', b'Content-ID', b'Content-Disposition',
                     b'Content-Type']


def test_encode_empty_line_before_body_without_content_type():
    chunk = make_send(b'body', content_type=None)
    encoded = chunk.encode()
    assert b'Byte-Range: 1-4/4\r\n\r\nbody\r\n-------a786hjs2$\r\n' in encoded
    [parsed] = parse_all(encoded)
    assert parsed.data == b'body'


def test_encode_no_empty_line_without_body():
    chunk = make_send(b'')
    encoded = chunk.encode()
    assert b'\r\n\r\n' not in encoded
    assert encoded.endswith(b'Content-Type: text/plain\r\n-------a786hjs2$\r\n')
    assert chunk.encoded_header.endswith(b'Content-Type: text/plain\r\n')
    assert chunk.encoded_footer == b'-------a786hjs2$\r\n'


def test_encoded_header_and_footer_with_body():
    chunk = make_send(b'x', contflag='+')
    assert chunk.encoded_header.endswith(b'Content-Type: text/plain\r\n\r\n')
    assert chunk.encode_start() == chunk.encoded_header
    assert chunk.encoded_footer == b'\r\n-------a786hjs2+\r\n'
    assert chunk.encode() == chunk.encoded_header + b'x' + chunk.encoded_footer


def test_encode_str_body_as_utf8():
    chunk = make_send('\u00e9t\u00e9')
    assert chunk.encode().split(b'\r\n\r\n', 1)[1].startswith('\u00e9t\u00e9'.encode('utf-8') + b'\r\n-------')


def test_encode_keeps_non_utf8_header_text():
    chunk = make_send(b'')
    chunk.add_header(MSRPHeader('X-Raw', b'\xff\xfe'.decode('utf-8', 'surrogateescape')))
    assert b'X-Raw: \xff\xfe\r\n' in chunk.encode()


@pytest.mark.parametrize('flag', ['$', '+', '#'])
def test_encode_contflag(flag):
    assert make_send(b'x', contflag=flag).encode().endswith(b'-------a786hjs2' + flag.encode() + b'\r\n')


@pytest.mark.parametrize('after', [b'$\r\n', b'+\r\n', b'#\r\n', b'x', b''])
def test_encode_body_containing_its_end_line_picks_new_transaction_id(after):
    body = b'first part\r\n-------a786hjs2' + after + b'more text'
    chunk = make_send(body)
    encoded = chunk.encode()
    assert chunk.transaction_id != 'a786hjs2'
    assert encoded.startswith(('MSRP %s SEND\r\n' % chunk.transaction_id).encode())
    assert encoded.endswith(('\r\n-------%s$\r\n' % chunk.transaction_id).encode())
    [parsed] = parse_all(encoded)
    assert parsed.data == body
    assert parsed.transaction_id == chunk.transaction_id


def test_encode_body_ending_with_its_end_line():
    body = b'\r\n-------a786hjs2$\r\n'
    chunk = make_send(body)
    [parsed] = parse_all(chunk.encode())
    assert parsed.data == body


def test_encode_body_with_other_end_lines_keeps_transaction_id():
    body = b'\r\n-------other123$\r\n-------a786hjs\r\n-------a786hjs3$\r\n'
    chunk = make_send(body)
    encoded = chunk.encode()
    assert chunk.transaction_id == 'a786hjs2'
    [parsed] = parse_all(encoded)
    assert parsed.data == body


def test_str_of_chunk():
    assert str(make_send(b'hello')).startswith('MSRP a786hjs2 SEND\r\n')


def test_random_ids():
    tids = {random_transaction_id() for _ in range(100)}
    assert len(tids) == 100
    assert all(len(tid) == 16 and int(tid, 16) >= 0 for tid in tids)
    mids = {random_message_id() for _ in range(100)}
    assert len(mids) == 100
    assert all(len(mid) == 20 for mid in mids)
    assert END_LINE_DASHES == '-------'


def test_random_ids_unique_across_pool_refills():
    # ids come from os.urandom in blocks: many blocks' worth, all distinct and well formed
    tids = [random_transaction_id() for _ in range(5000)]
    assert len(set(tids)) == len(tids)
    assert all(len(tid) == 16 and all(c in '0123456789abcdef' for c in tid) for tid in tids)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_random_ids_not_repeated_in_a_forked_child():
    random_transaction_id()  # the pool holds ids now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids to the parent
        try:
            os.write(write_end, ' '.join(random_transaction_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        child_ids = set(f.read().split())
    os.waitpid(pid, 0)
    parent_ids = {random_transaction_id() for _ in range(50)}
    assert len(child_ids) == 50
    assert not child_ids & parent_ids


def test_headers_survive_encode_and_parse():
    chunk = make_send(b'x')
    chunk.add_header(ContentTypeHeader('message/cpim'))
    chunk.add_header(MSRPHeader('X-Unknown', 'value with  spaces'))
    [parsed] = parse_all(chunk.encode())
    assert {n: h.encoded for n, h in parsed.headers.items()} == {n: h.encoded for n, h in chunk.headers.items()}


@pytest.mark.parametrize('value', ['a\r\nX-Injected: 1', 'a\rb', 'a\nb', 'end\r\n'])
def test_regression_encode_refuses_line_breaks_in_header_values(value):
    # a CR or LF in a value would inject headers or break the framing of the chunk
    chunk = make_send(b'x')
    chunk.add_header(MSRPHeader('X-Foo', value))
    with pytest.raises(HeaderParsingError) as info:
        chunk.encode()
    assert info.value.header == 'X-Foo'


def test_regression_encode_refuses_line_breaks_in_the_comment():
    from msrplib.protocol import ParsingError
    chunk = MSRPData('abcd1234', code=200, comment='OK\r\n-------abcd1234$')
    with pytest.raises(ParsingError):
        chunk.encode()


def test_header_value_gives_the_decoded_value_or_the_default():
    from msrplib.protocol import MSRPParser, CHUNK_START
    stream = (b'MSRP abcd1234 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n'
              b'From-Path: msrp://a.example.com:2855/s1;tcp\r\nMessage-ID: m1\r\nByte-Range: 9-1/x\r\n'
              b'X-Extra: yes\r\n-------abcd1234$\r\n')
    chunk = [value for kind, value in MSRPParser().feed(stream) if kind == CHUNK_START][0]
    assert chunk.header_value('Message-ID') == 'm1'
    assert chunk.header_value('Byte-Range') is None             # present but invalid
    assert chunk.header_value('Byte-Range', 'bad') == 'bad'
    assert chunk.header_value('Expires', 30) == 30              # absent
    assert chunk.header_value('X-Extra') == 'yes'               # a header of no known type


PROPERTIES = [('from_path', 'From-Path'), ('to_path', 'To-Path'), ('content_type', 'Content-Type'),
              ('message_id', 'Message-ID'), ('byte_range', 'Byte-Range'), ('status', 'Status'),
              ('failure_report', 'Failure-Report'), ('success_report', 'Success-Report')]


@pytest.mark.parametrize('lines', [
    [b'To-Path: ' + TO.encode(), b'From-Path:\t' + FROM.encode() + b' ', b'Message-ID: m1',
     b'Byte-Range: 1-5/5', b'Status: 000 200 OK', b'Failure-Report: partial', b'Success-Report: yes',
     b'Content-Type: text/plain'],
    [b'byte-range: 2-3/9', b'message-id:  odd  ', b'STATUS: 000 404', b'X-Other: 1'],   # unusual names
    [b'Byte-Range: 1-2/9', b'Byte-Range: 3-4/9', b'Message-ID: a', b'Message-ID: b'],    # last one wins
    [b'Byte-Range: 5-1/3', b'Status: nonsense', b'Failure-Report: maybe', b'To-Path: \xff'],  # bad values
    [],
])
def test_regression_typed_properties_agree_with_the_header_objects(lines):
    # MSRPData._value (the typed properties' shortcut) against reading the header objects
    data = b'MSRP abcd1234 SEND\r\n' + b''.join(line + b'\r\n' for line in lines) + b'-------abcd1234$\r\n'
    defaults = {'failure_report': 'yes', 'success_report': 'no'}
    for prop, name in PROPERTIES:
        [chunk] = parse_all(data)
        [reference] = parse_all(data)
        header = reference.headers.get(name)
        try:
            expected = defaults.get(prop) if header is None else header.decoded
        except HeaderParsingError as e:
            with pytest.raises(HeaderParsingError) as info:
                getattr(chunk, prop)
            assert (info.value.header, str(info.value)) == (e.header, str(e))
        else:
            assert getattr(chunk, prop) == expected
            if header is not None:
                # the header object made is kept: read again, and in ``headers``, it is the same one
                assert chunk.headers[name].decoded is getattr(chunk, prop)
        assert list(chunk.headers) == list(reference.headers)
        assert [(type(h), h.encoded) for h in chunk.headers.values()] == \
            [(type(h), h.encoded) for h in reference.headers.values()]


# -- memory_estimate(): an upper bound of what a parsed chunk holds, decoded headers included

def _parsed_chunks(head_lines, body, count=40):
    parser = MSRPParser()
    chunks = []
    for i in range(count):
        tid = 't%07d' % i
        lines = ['MSRP %s SEND' % tid] + [line.replace('#', str(i)) for line in head_lines]
        data = ('\r\n'.join(lines) + '\r\n').encode()
        data += (b'\r\n' + body + b'\r\n' if body else b'') + b'-------' + tid.encode() + b'$\r\n'
        chunks += [value for kind, value in parser.feed(data) if kind == 1]
    return chunks


@pytest.mark.parametrize('head_lines, body', [
    (['To-Path: msrp://a/x;tcp', 'From-Path: msrp://b/#;tcp', 'Message-ID: m#', 'Content-Type: text/plain'], b'hi'),
    (['To-Path: msrp://a/x;tcp', 'From-Path: ' + ' '.join('msrp://b/#%d;tcp' % k for k in range(32)),
      'Message-ID: m#', 'Content-Type: text/plain'], b''),
    (['To-Path: msrp://a/x;tcp', 'From-Path: msrp://b/#;tcp', 'Message-ID: m#', 'Content-Disposition: attachment' +
      ''.join(';p%d=#' % k for k in range(300)), 'Content-Type: text/plain'], b'x' * 1000),
    (['To-Path: msrp://a/x;tcp', 'From-Path: msrp://b/#;tcp', 'Message-ID: m#', 'X-Long: ' + 'z' * 5000,
      'Success-Report: yes', 'Byte-Range: 1-*/100', 'Content-Type: text/plain'], b'y' * 100),
], ids=['chat-line', '32-uri-path', 'many-parameters', 'long-unknown-header'])
def test_memory_estimate_is_an_upper_bound_of_a_decoded_chunk(head_lines, body):
    import tracemalloc
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        chunks = _parsed_chunks(head_lines, body)
        for chunk in chunks:
            chunk.verify_headers()  # decodes every header, as a session's checks do
            chunk.to_path, chunk.from_path, chunk.byte_range
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimate = sum(chunk.memory_estimate() for chunk in chunks)
    assert held <= estimate <= 4 * held + 4096 * len(chunks)  # an upper bound, and not a wild one
    # what verify_headers() counted on the way (a session uses it): an upper bound too
    verified = sum(chunk._verified_size for chunk in chunks)
    assert held <= verified <= 4 * held + 4096 * len(chunks)


def test_memory_estimate_counts_the_body_and_made_chunks_too():
    chunk = MSRPData('abcd1234', method='SEND', data=b'x' * 100000)
    chunk.add_header(ToPathHeader(decoded=[URI.parse(TO)]))
    assert chunk.memory_estimate() >= 100000 + 768


def test_memory_estimate_counts_the_received_header_bytes():
    # A parsed chunk keeps its head as received (chunk_header): a long header block costs memory twice.
    filler = ''.join('X-Filler-%d: %s\r\n' % (k, 'y' * 5000) for k in range(6))
    wire = ('MSRP abcd1234 SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m\r\n%s'
            'Content-Type: text/plain\r\n\r\nhi\r\n-------abcd1234$\r\n' % (TO, TO, filler)).encode()
    [chunk] = parse_all(wire)
    assert len(chunk.chunk_header) > 30000
    assert chunk.memory_estimate() >= 2 * 30000
    chunk.verify_headers()
    assert chunk._verified_size >= 2 * 30000
