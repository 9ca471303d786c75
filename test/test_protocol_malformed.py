"""msrplib.protocol: MSRPParser on malformed and hostile input: typed errors, bounded memory."""

import time

import pytest

from msrplib import MSRPError
from msrplib.protocol import (
    MSRPParser, ParsingError, ChunkParseError, InvalidStartLine, InvalidHeaderLine, InvalidEndLine,
    LimitExceeded, CHUNK_START, CHUNK_END)

# every test runs with the parser's C fast path and without it (test/conftest.py)
pytestmark = pytest.mark.usefixtures('parser_implementation')

GOOD_HEAD = (b'MSRP abcd1234 SEND\r\nTo-Path: msrp://b.example.com:2855/s2;tcp\r\n'
             b'From-Path: msrp://a.example.com:2855/s1;tcp\r\n')
GOOD = GOOD_HEAD + b'Content-Type: text/plain\r\n\r\nhello\r\n-------abcd1234$\r\n'


def feed_whole(data, **limits):
    return MSRPParser(**limits).feed(data)


def feed_bytewise(data, **limits):
    parser = MSRPParser(**limits)
    events = []
    for i in range(len(data)):
        events.extend(parser.feed(data[i:i + 1]))
    return events


FEEDERS = [feed_whole, feed_bytewise]

MALFORMED = [
    # not MSRP at all
    (b'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n', InvalidStartLine),
    (b'SIP/2.0 200 OK\r\n\r\n', InvalidStartLine),
    (b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03', InvalidStartLine),  # a TLS ClientHello
    (b'msrp abcd1234 SEND\r\n-------abcd1234$\r\n', InvalidStartLine),    # lower-case protocol
    (b'\r\nMSRP abcd1234 SEND\r\n-------abcd1234$\r\n', InvalidStartLine),  # stray empty line
    (b' MSRP abcd1234 SEND\r\n', InvalidStartLine),
    (b'\x00\x00\x00\x00\x00\x00', InvalidStartLine),
    (b'MSRPabcd1234 SEND\r\n', InvalidStartLine),
    # bad transaction ids
    (b'MSRP abc SEND\r\n-------abc$\r\n', InvalidStartLine),                          # too short
    (b'MSRP ' + b'a' * 33 + b' SEND\r\n-------' + b'a' * 33 + b'$\r\n', InvalidStartLine),  # too long
    (b'MSRP ab_cd SEND\r\n-------ab_cd$\r\n', InvalidStartLine),                       # bad character
    (b'MSRP .abcd SEND\r\n-------.abcd$\r\n', InvalidStartLine),                       # bad first character
    (b'MSRP ab/cd SEND\r\n', InvalidStartLine),
    (b'MSRP \xc3\xa9abcd SEND\r\n', InvalidStartLine),
    (b'MSRP  abcd1234 SEND\r\n', InvalidStartLine),                                    # two spaces
    (b'MSRP abcd1234\r\n', InvalidStartLine),                                          # no method
    (b'MSRP abcd1234 \r\n', InvalidStartLine),
    # bad method / status
    (b'MSRP abcd1234 SEND extra\r\n', InvalidStartLine),                               # garbage after method
    (b'MSRP abcd1234 SEND \r\n', InvalidStartLine),
    (b'MSRP abcd1234 SE-ND\r\n', InvalidStartLine),
    (b'MSRP abcd1234 _SEND\r\n', InvalidStartLine),
    (b'MSRP abcd1234 20\r\n', InvalidStartLine),
    (b'MSRP abcd1234 2000\r\n', InvalidStartLine),
    (b'MSRP abcd1234 200OK\r\n', InvalidStartLine),
    (b'MSRP abcd1234 SEND\rTo-Path: x\r\n', InvalidStartLine),                        # CR without LF
    (b'MSRP abcd1234 SEND\nTo-Path: x\r\n', InvalidStartLine),                        # LF without CR
    (b'MSRP abcd1234 200 O\rK\r\n', InvalidStartLine),
    # bad header lines
    (GOOD_HEAD + b'No colon here\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b'Bad Name: value\r\n-------abcd1234$\r\n', InvalidHeaderLine),     # space in name
    (GOOD_HEAD + b'To-Path : value\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b': no name\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b' X-Folded: value\r\n-------abcd1234$\r\n', InvalidHeaderLine),    # leading space
    (GOOD_HEAD + b'\tX-Folded: value\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b'X(y): value\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b'N\xc3\xa4me: value\r\n-------abcd1234$\r\n', InvalidHeaderLine),   # non-ASCII name
    (GOOD_HEAD + b'X-A: a\rb\r\n-------abcd1234$\r\n', InvalidHeaderLine),          # CR without LF in a value
    (GOOD_HEAD + b'X-A: a\nb\r\n-------abcd1234$\r\n', InvalidHeaderLine),          # LF without CR
    (GOOD_HEAD + b'X-A: a\r\nX-B\r\n\r\nbody\r\n-------abcd1234$\r\n', InvalidHeaderLine),
    (GOOD_HEAD + b'To-Path\r\n-------abcd1234$\r\n', InvalidHeaderLine),             # a known name, no colon
    # bad end-line of a chunk without body
    (GOOD_HEAD + b'-------abcd1234x\r\n', InvalidEndLine),
    (GOOD_HEAD + b'-------abcd1234\r\n\r\n', InvalidEndLine),
    (GOOD_HEAD + b'-------abcd1234$x\r\n', InvalidEndLine),
    (GOOD_HEAD + b'-------abcd1234$\rX', InvalidEndLine),
    (GOOD_HEAD + b'-------abcd1234$\n\r\n', InvalidEndLine),
    (GOOD_HEAD + b'-------abcd1234 $\r\n', InvalidEndLine),
    (b'MSRP abcd1234 200 OK\r\n-------abcd1234*\r\n', InvalidEndLine),
    # garbage after a good chunk
    (GOOD + b'garbage\r\n', InvalidStartLine),
    (GOOD + b'\r\n', InvalidStartLine),
    (GOOD + b'MSRP abcd1234 SEN\x00\r\n', InvalidStartLine),
]


@pytest.mark.parametrize('feed', FEEDERS)
@pytest.mark.parametrize('data,error', MALFORMED, ids=[repr(d[:60]) for d, e in MALFORMED])
def test_malformed_input_raises_typed_error(feed, data, error):
    with pytest.raises(error) as info:
        feed(data)
    assert isinstance(info.value, ChunkParseError)
    assert isinstance(info.value, ParsingError)
    assert isinstance(info.value, MSRPError)


@pytest.mark.parametrize('data,error', MALFORMED[:3] + MALFORMED[-3:])
def test_parser_stays_failed(data, error):
    parser = MSRPParser()
    with pytest.raises(error) as info:
        parser.feed(data)
    for more in (b'', GOOD, b'MSRP'):
        with pytest.raises(error) as again:
            parser.feed(more)
        assert again.value is info.value
    assert parser.buffered == 0
    assert not parser.in_body


def test_events_before_the_error_are_not_returned_but_the_error_is():
    parser = MSRPParser()
    assert len(parser.feed(GOOD)) == 3
    with pytest.raises(InvalidStartLine):
        parser.feed(GOOD + b'HTTP/1.1 200 OK\r\n')


def test_not_msrp_detected_before_a_line_ends():
    # a peer that is not MSRP is refused at once, without waiting for a CRLF
    for data in (b'G', b'GET', b'MSRX', b'\x16\x03\x01'):
        with pytest.raises(InvalidStartLine):
            MSRPParser().feed(data)
    parser = MSRPParser()
    for byte in b'MSRP ':
        assert parser.feed(bytes([byte])) == []


# -- limits

def test_endless_start_line():
    parser = MSRPParser(max_line_length=100)
    with pytest.raises(LimitExceeded) as info:
        parser.feed(b'MSRP ' + b'a' * 200)
    assert info.value.limit == 'max_line_length'
    assert info.value.value == 100


def test_endless_start_line_bytewise():
    parser = MSRPParser(max_line_length=100)
    with pytest.raises(LimitExceeded) as info:
        for byte in b'MSRP ' + b'a' * 200:
            parser.feed(bytes([byte]))
            assert parser.buffered <= 102
    assert info.value.limit == 'max_line_length'


@pytest.mark.parametrize('feed', FEEDERS)
def test_endless_header_line(feed):
    with pytest.raises(LimitExceeded) as info:
        feed(GOOD_HEAD + b'X-Long: ' + b'v' * 300, max_line_length=100)
    assert info.value.limit == 'max_line_length'


@pytest.mark.parametrize('feed', FEEDERS)
def test_long_header_line_in_a_complete_block(feed):
    with pytest.raises(LimitExceeded) as info:
        feed(GOOD_HEAD + b'X-Long: ' + b'v' * 300 + b'\r\n-------abcd1234$\r\n', max_line_length=100)
    assert info.value.limit == 'max_line_length'


@pytest.mark.parametrize('feed', FEEDERS)
def test_too_many_headers(feed):
    data = GOOD_HEAD + b'X-A: 1\r\n' * 20 + b'-------abcd1234$\r\n'
    with pytest.raises(LimitExceeded) as info:
        feed(data, max_headers=10)
    assert info.value.limit == 'max_headers'
    assert info.value.value == 10


@pytest.mark.parametrize('feed', FEEDERS)
def test_too_many_headers_never_ending(feed):
    with pytest.raises(LimitExceeded) as info:
        feed(GOOD_HEAD + b'X-A: 1\r\n' * 20, max_headers=10)
    assert info.value.limit == 'max_headers'


@pytest.mark.parametrize('feed', FEEDERS)
def test_header_block_too_large(feed):
    data = GOOD_HEAD + b'X-A: ' + b'1' * 50 + b'\r\n'
    with pytest.raises(LimitExceeded) as info:
        feed(data * 10, max_header_block=300)
    assert info.value.limit == 'max_header_block'
    assert info.value.value == 300


def test_header_block_too_large_with_a_body_after_it():
    data = GOOD_HEAD + (b'X-A: ' + b'1' * 50 + b'\r\n') * 10 + b'\r\nbody\r\n-------abcd1234$\r\n'
    with pytest.raises(LimitExceeded) as info:
        MSRPParser(max_header_block=300).feed(data)
    assert info.value.limit == 'max_header_block'


def test_limit_exceeded_attributes():
    error = LimitExceeded('max_headers', 64, 'number of headers')
    assert error.limit == 'max_headers'
    assert error.value == 64
    assert 'max_headers' in str(error) and '64' in str(error)
    assert isinstance(error, ChunkParseError)


def test_default_limits():
    parser = MSRPParser()
    assert (parser.max_line_length, parser.max_headers, parser.max_header_block) == (16384, 64, 65536)


def test_default_limits_accept_a_large_but_legal_chunk():
    data = (b'MSRP abcd1234 SEND\r\n' + b'To-Path: ' + b' '.join(
        b'msrp://relay%d.example.com:2855/abcdefghij%d;tcp' % (i, i) for i in range(100)) + b'\r\n'
        + b''.join(b'X-H%d: %s\r\n' % (i, b'v' * 200) for i in range(60)) + b'-------abcd1234$\r\n')
    events = MSRPParser().feed(data)
    assert [kind for kind, _ in events] == [CHUNK_START, CHUNK_END]


# -- memory stays bounded under hostile slow input

def test_regression_header_block_fed_bytewise_costs_linear_time():
    # Each byte of an incomplete head used to copy and rescan everything before it: a 58 KB head
    # fed one byte at a time (a slow or hostile peer) took seconds; now it takes a few tens of ms.
    data = b'MSRP abcd1234 SEND\r\n' + (b'X-Some-Header: ' + b'v' * 100 + b'\r\n') * 500
    parser = MSRPParser(max_header_block=10 ** 6, max_headers=1000)
    started = time.perf_counter()
    for i in range(len(data)):
        assert parser.feed(data[i:i + 1]) == []
    elapsed = time.perf_counter() - started
    assert parser.buffered == len(data)
    events = parser.feed(b'-------abcd1234$\r\n')
    assert [kind for kind, _ in events] == [CHUNK_START, CHUNK_END]
    assert len(events[0][1].headers) == 1
    assert elapsed < 1.0


def test_bytewise_head_limits_checked_incrementally():
    parser = MSRPParser(max_header_block=500)
    with pytest.raises(LimitExceeded):
        for byte in GOOD_HEAD + b'X-A: 1\r\n' * 100:
            parser.feed(bytes([byte]))
            assert parser.buffered <= 501
