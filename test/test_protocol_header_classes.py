"""Header classes defined by the application (MSRPNamedHeader subclasses with a name) decode through their type.

Every test runs with both parser implementations (the C fast path and pure
Python), and the registry of header classes is put back after each test.
"""

import gevent
import pytest

import msrplib.protocol as protocol
from msrplib.protocol import (
    CHUNK_START, ByteRangeHeader, HeaderParsingError, IntegerHeaderType, MSRPHeader, MSRPNamedHeader, MSRPParser,
    SimpleHeaderType, URIHeaderType, header_class)

pytestmark = pytest.mark.usefixtures('parser_implementation')


@pytest.fixture(autouse=True)
def header_registry():
    """Restore the registry of header classes (and the C scanner's names) after the test."""
    saved = dict(protocol._HEADER_CLASSES), dict(protocol._HEADER_CLASSES_EXACT)
    yield
    protocol._HEADER_CLASSES.clear()
    protocol._HEADER_CLASSES.update(saved[0])
    protocol._HEADER_CLASSES_EXACT.clear()
    protocol._HEADER_CLASSES_EXACT.update(saved[1])
    protocol._configure_cparser()


def response_with(*lines):
    return ('MSRP t0001 200 OK\r\nTo-Path: msrp://127.0.0.1:2855/a;tcp\r\nFrom-Path: msrp://127.0.0.1:2856/b;tcp\r\n' +
            ''.join(line + '\r\n' for line in lines) + '-------t0001$\r\n').encode('utf-8')


def parse_one(data):
    events = MSRPParser().feed(data)
    assert events[0][0] is CHUNK_START
    return events[0][1]


def define_offset_header():
    class OffsetHeader(MSRPNamedHeader):
        name = 'Offset'
        type = IntegerHeaderType
    return OffsetHeader


def test_unregistered_name_stays_text():
    chunk = parse_one(response_with('X-Unknown-Offset: 12'))
    assert chunk.headers['X-Unknown-Offset'].decoded == '12'


def test_a_defined_class_decodes_received_headers_through_its_type():
    OffsetHeader = define_offset_header()
    chunk = parse_one(response_with('Offset: 1234'))
    header = chunk.headers['Offset']
    assert type(header) is OffsetHeader
    assert header.decoded == 1234


@pytest.mark.parametrize('spelling', ['offset', 'OFFSET', 'oFfSeT'])
def test_the_name_is_matched_case_insensitively(spelling):
    OffsetHeader = define_offset_header()
    chunk = parse_one(response_with('%s: 7' % spelling))
    header = chunk.headers['Offset']  # kept under the class's spelling, as for the built-in headers
    assert type(header) is OffsetHeader and header.decoded == 7
    assert header_class(spelling) is OffsetHeader
    made = MSRPHeader(spelling, '8')
    assert type(made) is OffsetHeader and made.decoded == 8


def test_header_split_in_many_feeds_decodes_the_same():
    define_offset_header()
    data = response_with('Offset: 99')
    parser = MSRPParser()
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i:i + 1])
    assert events[0][1].headers['Offset'].decoded == 99


def test_a_bad_value_raises_header_parsing_error_and_fails_verify_headers():
    define_offset_header()
    chunk = parse_one(response_with('Offset: twelve'))
    with pytest.raises(HeaderParsingError):
        chunk.headers['Offset'].decoded
    chunk = parse_one(response_with('Offset: twelve'))
    with pytest.raises(HeaderParsingError):
        chunk.verify_headers()


def test_registration_reaches_the_c_scanner():
    # Not only correct (the Python parser would give that too): the chunk is taken by the C fast path.
    if protocol._scan_chunks is None:
        pytest.skip('pure Python parser selected')
    define_offset_header()
    data = response_with('Offset: 5')
    events = []
    taken = protocol._scan_chunks(data, 0, events, 16384, 65536, 64)
    assert taken == len(data)
    assert events[0][1]._raw['Offset'] == ' 5'


def test_the_class_defined_last_wins():
    define_offset_header()

    class TextOffsetHeader(MSRPNamedHeader):
        name = 'OFFSET'
        type = SimpleHeaderType

    chunk = parse_one(response_with('Offset: 5'))
    assert type(chunk.headers['OFFSET']) is TextOffsetHeader
    assert chunk.headers['OFFSET'].decoded == '5'
    assert header_class('offset') is TextOffsetHeader
    assert 'Offset' not in protocol._HEADER_CLASSES_EXACT  # the first class's spelling is dropped


def test_a_built_in_name_stays_with_the_built_in_class():
    class MyByteRangeHeader(MSRPNamedHeader):
        name = 'Byte-Range'
        type = SimpleHeaderType

    assert header_class('Byte-Range') is ByteRangeHeader
    chunk = parse_one(response_with('Byte-Range: 1-5/5'))
    assert chunk.headers['Byte-Range'].decoded == (1, 5, 5)
    assert MyByteRangeHeader('1-2/2').decoded == '1-2/2'  # the class itself still works


def test_a_subclass_inheriting_the_name_registers_nothing():
    OffsetHeader = define_offset_header()

    class CheckedOffsetHeader(OffsetHeader):
        pass

    assert header_class('Offset') is OffsetHeader


def test_a_name_that_is_not_a_token_is_refused():
    with pytest.raises(ValueError):
        class BadHeader(MSRPNamedHeader):
            name = 'Bad Name'


def test_a_class_with_slots_and_a_uri_type():
    class ReplyToHeader(MSRPNamedHeader):
        __slots__ = ()
        name = 'X-Reply-Path'
        type = URIHeaderType

    chunk = parse_one(response_with('X-Reply-Path: msrp://127.0.0.1:1/x;tcp'))
    assert chunk.headers['X-Reply-Path'].decoded[0].session_id == 'x'


def test_file_offset_response_offset_is_an_int_over_a_live_session():
    # The client pattern: FILE_OFFSET request, the answer carries an Offset header of the client's class.
    from test_session import make_pair, TIMEOUT
    from msrplib.session import GreenMSRPSession

    OffsetHeader = define_offset_header()

    class Sender(GreenMSRPSession):
        def _handle_incoming_FILE_OFFSET(self, chunk):
            response = protocol.MSRPData(chunk.transaction_id, code=200, comment='OK')
            response.add_header(protocol.ToPathHeader(decoded=chunk.from_path[:1]))
            response.add_header(protocol.FromPathHeader(decoded=[self.msrp.local_uri]))
            response.add_header(OffsetHeader(4096))
            self.msrp.write_chunk(response)

    pair = make_pair(False)
    sender = Sender(pair.passive)
    receiver = GreenMSRPSession(pair.active)
    try:
        with gevent.Timeout(TIMEOUT):
            request = pair.active.make_request('FILE_OFFSET')
            response = receiver.deliver_chunk(request)
        assert response.headers['Offset'].decoded == 4096
    finally:
        for session in (sender, receiver):
            session.reader_job.kill(block=False)
        pair.active.loseConnection()
        pair.passive.loseConnection()
