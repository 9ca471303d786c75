"""MSRPSession and GreenMSRPSession over real loopback connections, plain TCP and TLS.

Every test builds its own bound pair of transports (ConnectorDirect and
AcceptorDirect on 127.0.0.1, OS-chosen port).  A "raw peer" is one of the two
transports driven by hand, without a session: it reads what the session sends
with ``read_chunk()`` and writes hand-made bytes with ``write()``.  Every
blocking call runs under ``gevent.Timeout``.
"""

import time

import gevent
import pytest
from gevent.event import AsyncResult, Event

from msrplib import MSRPError
from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import (URI, ByteRange, ContentTypeHeader, FailureReportHeader, MSRPData,
                              SuccessReportHeader)
from msrplib.session import (Failure, GreenMSRPSession, MSRPSession, MSRPSessionError, SessionState,
                             contains_mime_type)
from msrplib.trafficlog import Logger
from msrplib.transport import ConnectionClosed, ConnectionDone, ConnectionLost, MSRPTransactionError

TIMEOUT = 5  # seconds any single blocking step of a test may take


class Pair:
    """Two bound transports: ``active`` (the connector's) and ``passive`` (the acceptor's)."""

    def __init__(self, active, passive, use_tls):
        self.active = active
        self.passive = passive
        self.use_tls = use_tls
        self.sessions = []

    def session(self, transport, cls=GreenMSRPSession, **kwargs):
        session = cls(transport, **kwargs)
        self.sessions.append(session)
        return session

    def sessions_both_ways(self, cls=GreenMSRPSession, **kwargs):
        return self.session(self.active, cls, **kwargs), self.session(self.passive, cls, **kwargs)


def make_pair(use_tls):
    acceptor = AcceptorDirect()
    passive_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=use_tls))
    connector = ConnectorDirect(expected_fingerprint=acceptor.fingerprint)
    active_path = connector.prepare(URI(host='127.0.0.1', use_tls=use_tls))
    with gevent.Timeout(TIMEOUT):
        accepting = gevent.spawn(acceptor.complete, active_path)
        try:
            active = connector.complete(passive_path)
        finally:
            connector.cleanup()
        passive = accepting.get()
    return Pair(active, passive, use_tls)


@pytest.fixture(params=['tcp', 'tls'])
def pair(request):
    pair = make_pair(request.param == 'tls')
    yield pair
    for session in pair.sessions:
        session.reader_job.kill(block=False)
    pair.active.loseConnection()
    pair.passive.loseConnection()
    gevent.joinall([s.reader_job for s in pair.sessions], timeout=TIMEOUT)


def raw_chunk(tid, method, to_path, from_path, headers=(), body=b'', flag='$'):
    """The bytes of a request written by hand (so that it may break the rules)."""
    lines = ['MSRP %s %s' % (tid, method)]
    if to_path is not None:
        lines.append('To-Path: %s' % to_path)
    if from_path is not None:
        lines.append('From-Path: %s' % from_path)
    lines.extend(headers)
    data = '\r\n'.join(lines).encode('utf-8') + b'\r\n'
    if body:
        data += b'\r\n' + body + b'\r\n'
    return data + b'-------' + tid.encode('ascii') + flag.encode('ascii') + b'\r\n'


def raw_send(transport, tid, headers=('Message-ID: m1', 'Byte-Range: 1-5/5', 'Content-Type: text/plain'),
             body=b'hello', method='SEND', to_path=None, flag='$'):
    """Write a hand-made request from the raw ``transport`` to its peer's session."""
    to_path = str(transport.remote_uri) if to_path is None else to_path
    transport.write(raw_chunk(tid, method, to_path, str(transport.local_uri), headers, body, flag))


def read_response(transport):
    """The next response the raw ``transport`` reads (requests in between are skipped)."""
    while True:
        chunk = transport.read_chunk()
        if chunk is not None and chunk.method is None:
            return chunk


def text_message(session, data=b'hello', content_type='text/plain', **headers):
    chunk = session.make_message(data, content_type)
    if 'success_report' in headers:
        chunk.add_header(SuccessReportHeader(headers['success_report']))
    if 'failure_report' in headers:
        chunk.add_header(FailureReportHeader(headers['failure_report']))
    return chunk


class Recorder:
    """An on_incoming_cb that keeps chunks and errors."""

    def __init__(self):
        self.chunks = []
        self.errors = []
        self.ended = Event()
        self.arrived = Event()

    def __call__(self, chunk=None, error=None):
        if error is not None:
            self.errors.append(error)
            self.ended.set()
        else:
            self.chunks.append(chunk)
            self.arrived.set()


class MyError(Exception):
    pass


# Delivery

def test_deliver_both_ways(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        response = a.deliver_message(b'hello from a', 'text/plain')
        assert response.code == 200
        chunk = b.receive_chunk()
        assert chunk.method == 'SEND'
        assert chunk.data == b'hello from a'
        assert chunk.content_type == 'text/plain'

        response = b.deliver_message('héllo from b', 'text/plain; charset=utf-8')
        assert response.code == 200
        chunk = a.receive_chunk()
        assert chunk.data == 'héllo from b'.encode('utf-8')
        assert chunk.content_type == 'text/plain; charset=utf-8'


def test_deliver_many_in_order_both_ways_at_once(pair):
    a, b = pair.sessions_both_ways()
    count = 50
    with gevent.Timeout(TIMEOUT):
        senders = [gevent.spawn(lambda s=s: [s.deliver_message(b'%d' % i, 'text/plain') for i in range(count)])
                   for s in (a, b)]
        for receiver in (b, a):
            assert [receiver.receive_chunk().data for _ in range(count)] == [b'%d' % i for i in range(count)]
        gevent.joinall(senders, raise_error=True)


def test_large_message_is_delivered_whole(pair):
    a, b = pair.sessions_both_ways()
    body = bytes(range(256)) * 12 * 1024  # 3 MiB, every byte value, CRLFs included
    with gevent.Timeout(TIMEOUT):
        assert a.deliver_message(body, 'application/octet-stream').code == 200
        chunk = b.receive_chunk()
    assert chunk.data == body
    assert chunk.byte_range == ByteRange(1, None, len(body))  # end "*" above 2048 bytes, as classically


def test_send_chunk_response_cb_gets_the_response(pair):
    a, b = pair.sessions_both_ways()
    result = AsyncResult()
    chunk = text_message(a)
    a.send_chunk(chunk, response_cb=result.set)
    with gevent.Timeout(TIMEOUT):
        response = result.get()
        assert b.receive_chunk().data == b'hello'
    assert response.code == 200
    assert response.transaction_id == chunk.transaction_id
    assert response.to_path == [a.msrp.local_uri]


def test_deliver_chunk_event_with_set_get_or_send_wait(pair):
    a, b = pair.sessions_both_ways()

    class ClassicEvent:  # eventlet's coros.event spelling
        def __init__(self):
            self.result = AsyncResult()

        def send(self, value):
            self.result.set(value)

        def wait(self):
            return self.result.get()

    with gevent.Timeout(TIMEOUT):
        event = AsyncResult()
        assert a.deliver_chunk(text_message(a), event=event).code == 200
        assert event.get().code == 200
        assert a.deliver_chunk(text_message(a), event=ClassicEvent()).code == 200


def test_chunk_whose_body_contains_its_end_line_gets_its_response(pair):
    # Regression: encode() picks a new transaction id when the body contains the
    # end-line; the writer used to register the response under the old one and
    # the transaction was never answered (deliver_chunk hung forever).
    a, b = pair.sessions_both_ways()
    chunk = text_message(a)
    old_tid = chunk.transaction_id
    chunk.data = b'before\r\n-------' + old_tid.encode('ascii') + b'$\r\nafter'
    a.RESPONSE_TIMEOUT = TIMEOUT
    with gevent.Timeout(TIMEOUT):
        response = a.deliver_chunk(chunk)
        received = b.receive_chunk()
    assert response.code == 200
    assert chunk.transaction_id != old_tid
    assert response.transaction_id == chunk.transaction_id
    assert received.data == chunk.data


# Reports

@pytest.mark.parametrize('size', [5, 5000])
def test_success_report_round_trip(pair, size):
    a, b = pair.sessions_both_ways()
    body = b'x' * size
    chunk = text_message(a, body, success_report='yes')
    with gevent.Timeout(TIMEOUT):
        a.deliver_chunk(chunk)
        assert b.receive_chunk().data == body
        report = a.receive_chunk()
    assert report.method == 'REPORT'
    assert report.status.code == 200
    assert report.message_id == chunk.message_id
    assert report.byte_range == ByteRange(1, size, size)
    assert report.to_path == [a.msrp.local_uri]


def test_success_report_for_each_chunk_of_a_message(pair):
    a, b = pair.sessions_both_ways()
    first = a.msrp.make_send_request(message_id='msg1', data=b'abc', start=1, end=3, length=6)
    second = a.msrp.make_send_request(message_id='msg1', data=b'def', start=4, end=6, length=6)
    reports = []
    with gevent.Timeout(TIMEOUT):
        for chunk in (first, second):
            chunk.add_header(ContentTypeHeader('text/plain'))
            chunk.add_header(SuccessReportHeader('yes'))
            a.deliver_chunk(chunk)
            assert b.receive_chunk().data == chunk.data
            reports.append(a.receive_chunk())
    assert first.contflag == '+' and second.contflag == '$'
    assert [r.byte_range for r in reports] == [ByteRange(1, 3, 6), ByteRange(4, 6, 6)]
    assert {r.message_id for r in reports} == {'msg1'}


def test_no_automatic_report_when_turned_off_but_send_report_works(pair):
    a = pair.session(pair.active)
    b = pair.session(pair.passive, automatic_reports=False)
    chunk = text_message(a, success_report='yes')
    with gevent.Timeout(TIMEOUT):
        a.deliver_chunk(chunk)
        received = b.receive_chunk()
        a.deliver_message(b'marker', 'text/plain')  # the report, had it been sent, would come first
        assert b.receive_chunk().data == b'marker'
        assert a.incoming.qsize() == 0
        b.send_report(received, 200, 'OK')
        report = a.receive_chunk()
    assert report.method == 'REPORT'
    assert report.status == (200, 'OK')
    assert report.message_id == chunk.message_id


def test_send_report_of_a_failure(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'hello', 'text/plain')
        received = b.receive_chunk()
        b.send_report(received, 413, 'Too big')
        report = a.receive_chunk()
    assert report.status == (413, 'Too big')


def test_send_report_sends_nothing_when_the_chunk_asks_for_no_report(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'hello', 'text/plain')   # Success-Report absent: no
        received = b.receive_chunk()
        b.send_report(received, 200, 'OK')
        b.deliver_message(b'marker', 'text/plain')
        assert a.receive_chunk().data == b'marker'


def test_send_report_refuses_a_non_send_chunk(pair):
    a = pair.session(pair.active)
    with pytest.raises(ValueError):
        a.send_report(MSRPData('t1', method='REPORT'), 200, 'OK')


def test_report_is_delivered_and_never_answered(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'report1', method='REPORT', body=b'',
                 headers=('Message-ID: m1', 'Byte-Range: 1-5/5', 'Status: 000 200 OK'))
        raw_send(raw, 'send2')
        assert read_response(raw).transaction_id == 'send2'  # nothing came back for the REPORT
        report = b.receive_chunk()
        assert report.method == 'REPORT'
        assert report.status == (200, 'OK')
        assert b.receive_chunk().transaction_id == 'send2'


# Local responses and Failure-Report

def test_local_408_when_the_peer_never_answers(pair):
    a = pair.session(pair.active)
    a.RESPONSE_TIMEOUT = 0
    raw = pair.passive
    result = AsyncResult()
    chunk = text_message(a)
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(chunk, result.set)
        assert raw.read_chunk().transaction_id == chunk.transaction_id
        response = result.get()
        assert response.code == 408
        assert response.transaction_id == chunk.transaction_id
        with pytest.raises(MSRPTransactionError) as info:
            a.deliver_chunk(text_message(a))
    assert info.value.code == 408
    assert a.connected  # a missing response does not end the session


def test_late_response_after_local_408_is_ignored(pair):
    a = pair.session(pair.active)
    a.RESPONSE_TIMEOUT = 0
    raw = pair.passive
    calls = []
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), calls.append)
        chunk = raw.read_chunk()
        while not calls:
            gevent.sleep(0.01)
        raw.write_response(chunk, 200, 'OK')
        a.RESPONSE_TIMEOUT = TIMEOUT
        raw_send(raw, 'marker')
        assert a.receive_chunk().transaction_id == 'marker'
    assert [r.code for r in calls] == [408]


def test_failure_report_no_deliver_chunk_returns_none_at_once(pair):
    a, b = pair.sessions_both_ways()
    a.RESPONSE_TIMEOUT = 0.3
    with gevent.Timeout(TIMEOUT):
        started = time.monotonic()
        assert a.deliver_chunk(text_message(a, failure_report='no')) is None
        assert time.monotonic() - started < 0.1
        assert b.receive_chunk().data == b'hello'


def test_failure_report_no_response_cb_gets_local_200_after_timeout(pair):
    a, b = pair.sessions_both_ways()
    a.RESPONSE_TIMEOUT = 0.3
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        started = time.monotonic()
        a.send_chunk(text_message(a, failure_report='no'), result.set)
        assert b.receive_chunk().data == b'hello'
        response = result.get()
        assert time.monotonic() - started >= 0.25
    assert response.code == 200


def test_failure_report_no_is_never_answered(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'quiet1', headers=('Message-ID: m1', 'Byte-Range: 1-5/5', 'Failure-Report: no',
                                         'Content-Type: text/plain'))
        raw_send(raw, 'quiet2', headers=('Message-ID: m2', 'Byte-Range: 1-5/5', 'Failure-Report: no',
                                         'Content-Type: image/png'))  # would be an error, still no answer
        raw_send(raw, 'marker')
        assert read_response(raw).transaction_id == 'marker'
        assert b.receive_chunk().transaction_id == 'quiet1'


def test_failure_report_partial_answers_errors_only(pair):
    raw = pair.active
    b = pair.session(pair.passive, accept_types=['text/plain'])
    partial = ('Message-ID: m1', 'Byte-Range: 1-5/5', 'Failure-Report: partial')
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'good', headers=partial + ('Content-Type: text/plain',))
        raw_send(raw, 'bad1', headers=partial + ('Content-Type: image/png',))
        response = read_response(raw)
        assert (response.transaction_id, response.code) == ('bad1', 415)
        assert b.receive_chunk().transaction_id == 'good'


def test_failure_report_partial_local_200_and_peer_errors(pair):
    a = pair.session(pair.active)
    b = pair.session(pair.passive, accept_types=['text/plain'])
    a.RESPONSE_TIMEOUT = 0.3
    with gevent.Timeout(TIMEOUT):
        result = AsyncResult()
        a.send_chunk(text_message(a, failure_report='partial'), result.set)
        assert b.receive_chunk().data == b'hello'
        assert result.get().code == 200
        with pytest.raises(MSRPTransactionError) as info:
            a.deliver_chunk(text_message(a, content_type='image/png', failure_report='partial'))
    assert info.value.code == 415


# Requests the session answers by itself

@pytest.mark.parametrize('accept_types, accepted, refused', [
    (['text/plain'], ['text/plain', 'TEXT/Plain; charset=utf-8'], ['text/html', 'image/png']),
    (['text/*'], ['text/plain', 'text/html'], ['image/png', 'message/cpim']),
    (['*'], ['text/plain', 'image/png', 'message/cpim'], []),
    (['message/cpim', 'image/*'], ['message/cpim', 'image/jpeg'], ['text/plain']),
])
def test_415_for_types_not_accepted(pair, accept_types, accepted, refused):
    a = pair.session(pair.active)
    b = pair.session(pair.passive, accept_types=accept_types)
    with gevent.Timeout(TIMEOUT):
        for content_type in refused:
            with pytest.raises(MSRPTransactionError) as info:
                a.deliver_message(b'data', content_type)
            assert info.value.code == 415
        for content_type in accepted:
            assert a.deliver_message(b'data', content_type).code == 200
            assert b.receive_chunk().content_type == content_type
    assert b.incoming.qsize() == 0


@pytest.mark.parametrize('types, mimetype, expected', [
    (['*'], 'text/plain', True),
    (['*/*'], 'image/png', True),
    (['text/*'], 'text/html', True),
    (['text/*'], 'textual/html', False),
    (['text/*'], 'image/png', False),
    (['text/plain'], 'text/plain', True),
    (['text/plain'], 'Text/PLAIN', True),
    (['text/plain'], 'text/plain; charset=utf-8', True),
    (['text/plain; charset=utf-8'], 'text/plain', True),
    (['text/plain'], 'text/html', False),
    ([], 'text/plain', False),
    (['message/cpim', 'text/*'], 'text/x-foo', True),
])
def test_contains_mime_type(types, mimetype, expected):
    assert contains_mime_type(types, mimetype) is expected


def test_481_for_a_send_with_a_wrong_to_path(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    wrong = URI(host='127.0.0.1', port=pair.passive.local_uri.port, use_tls=pair.use_tls)  # another session-id
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'wrongpath', to_path=str(wrong))
        response = read_response(raw)
        assert (response.transaction_id, response.code) == ('wrongpath', 481)
        raw_send(raw, 'rightpath')
        assert read_response(raw).code == 200
        assert b.receive_chunk().transaction_id == 'rightpath'


@pytest.mark.parametrize('headers, body', [
    (('Message-ID: m1', 'Byte-Range: 1-5/5'), b'hello'),                              # no Content-Type
    (('Byte-Range: 1-5/5', 'Content-Type: text/plain'), b'hello'),                     # no Message-ID
    (('Message-ID: m1', 'Byte-Range: one-five/5', 'Content-Type: text/plain'), b'hello'),  # bad Byte-Range
    (('Message-ID: m1', 'Byte-Range: 1-5/5', 'Failure-Report: maybe', 'Content-Type: text/plain'), b'hello'),
], ids=['no-content-type', 'no-message-id', 'bad-byte-range', 'bad-failure-report'])
def test_400_for_a_malformed_send(pair, headers, body):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'malformed', headers=headers, body=body)
        response = read_response(raw)
        assert (response.transaction_id, response.code) == ('malformed', 400)
        raw_send(raw, 'fine')
        assert read_response(raw).transaction_id == 'fine'
        assert b.receive_chunk().transaction_id == 'fine'  # the malformed one was not delivered


def test_501_for_an_unknown_method(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'unknown1', method='FROBNICATE', body=b'')
        response = read_response(raw)
        assert (response.transaction_id, response.code) == ('unknown1', 501)
        raw_send(raw, 'offset1', method='FILE_OFFSET', headers=('Message-ID: m1',), body=b'')
        assert read_response(raw).code == 501  # FILE_OFFSET needs a subclass hook
    assert b.incoming.qsize() == 0


def test_subclass_hook_gets_file_offset_requests(pair):
    class FileSession(GreenMSRPSession):
        def _handle_incoming_FILE_OFFSET(self, chunk):
            self._on_incoming_cb(chunk)
            self.respond(chunk, 200, 'OK')

    raw = pair.active
    b = pair.session(pair.passive, cls=FileSession)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'offset1', method='FILE_OFFSET', headers=('Message-ID: m1',), body=b'')
        chunk = b.receive_chunk()
        assert (chunk.method, chunk.transaction_id, chunk.message_id) == ('FILE_OFFSET', 'offset1', 'm1')
        response = read_response(raw)
        assert (response.transaction_id, response.code) == ('offset1', 200)


def test_nickname_with_use_nickname_is_delivered(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'nick1', method='NICKNAME', headers=('Use-Nickname: "Alice"',), body=b'')
        chunk = b.receive_chunk()
        assert (chunk.method, chunk.headers['Use-Nickname'].decoded) == ('NICKNAME', '"Alice"')
        b.respond(chunk, 425, 'Nickname reserved or already in use')
        response = read_response(raw)
    assert (response.transaction_id, response.code) == ('nick1', 425)
    assert response.to_path == [pair.active.local_uri]


@pytest.mark.parametrize('headers', [
    (),
    ('Use-Nickname: "Alice"', 'Success-Report: yes'),
    ('Use-Nickname: "Alice"', 'Failure-Report: yes'),
], ids=['no-use-nickname', 'success-report', 'failure-report'])
def test_400_for_a_bad_nickname(pair, headers):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'nick1', method='NICKNAME', headers=headers, body=b'')
        response = read_response(raw)
    assert (response.transaction_id, response.code) == ('nick1', 400)
    assert b.incoming.qsize() == 0


def test_response_to_an_unknown_transaction_is_ignored(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw.write(b'MSRP nobodyasked 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------nobodyasked$\r\n'
                  % (str(raw.remote_uri).encode(), str(raw.local_uri).encode()))
        raw_send(raw, 'after')
        assert read_response(raw).transaction_id == 'after'
        assert b.receive_chunk().transaction_id == 'after'
    assert b.connected


def test_empty_send_is_answered_and_not_delivered(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw_send(raw, 'empty', headers=('Message-ID: m1', 'Byte-Range: 1-0/0'), body=b'')
        assert read_response(raw).transaction_id == 'empty'
        raw_send(raw, 'full')
        assert b.receive_chunk().transaction_id == 'full'


# The end of a session

@pytest.mark.parametrize('closer', ['shutdown', 'loseConnection'])
def test_peer_closes_both_sides_end_with_connection_done(pair, closer):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'one', 'text/plain')
        if closer == 'shutdown':
            a.shutdown()
        else:
            a.msrp.loseConnection()
        assert b.receive_chunk().data == b'one'  # what arrived before the end is still delivered
        for session in (b, a, b):  # every call raises, on both sides
            with pytest.raises(ConnectionDone):
                session.receive_chunk()
    for session in (a, b):
        assert session.state == SessionState.DONE
        with pytest.raises(MSRPSessionError):
            session.send_chunk(text_message(session))
        with pytest.raises(MSRPSessionError):
            session.deliver_message(b'late', 'text/plain')


def test_peer_cut_in_the_middle_of_a_chunk_is_connection_lost(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw.write(raw_chunk('cut', 'SEND', str(raw.remote_uri), str(raw.local_uri),
                            ('Message-ID: m1', 'Content-Type: text/plain'), b'0123456789')[:-20])
        raw.loseConnection()
        with pytest.raises(ConnectionLost):
            b.receive_chunk()


def test_garbage_from_the_peer_ends_the_session(pair):
    raw = pair.active
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        raw.write(b'GET / HTTP/1.1\r\nHost: example.com\r\n\r\n')
        with pytest.raises(ConnectionLost):
            b.receive_chunk()
    assert not b.connected


def test_on_incoming_cb_gets_the_failure_exactly_once(pair):
    recorder = Recorder()
    a = pair.session(pair.active)
    b = pair.session(pair.passive, cls=MSRPSession, on_incoming_cb=recorder)
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'hi', 'text/plain')
        a.shutdown()
        recorder.ended.wait()
        b.shutdown()        # after the end: does nothing, calls nothing
        b.reader_job.kill()
        gevent.sleep(0.05)
    assert [c.data for c in recorder.chunks] == [b'hi']
    assert len(recorder.errors) == 1
    failure = recorder.errors[0]
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, ConnectionDone)
    assert failure.type is ConnectionDone
    assert failure.tb is not None
    assert failure.getErrorMessage() == 'Connection was closed cleanly.'
    assert failure.check(ConnectionLost, ConnectionDone) is ConnectionDone
    assert 'ConnectionDone' in failure.getTraceback()
    with pytest.raises(ConnectionDone):
        failure.raiseException()


def test_failure_without_message_names_its_type():
    assert Failure(MyError()).getErrorMessage() == 'MyError'
    assert Failure(MyError()).check(KeyError) is None
    assert 'MyError' in repr(Failure(MyError('boom')))


def test_reader_killed_with_an_exception_is_raised_by_receive_chunk(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'before', 'text/plain')
        assert b.receive_chunk().data == b'before'
        b.reader_job.kill(MyError('killed'))
        for _ in range(2):
            with pytest.raises(MyError):
                b.receive_chunk()
        with pytest.raises(ConnectionDone):  # the peer sees the connection close
            a.receive_chunk()
    with pytest.raises(MSRPSessionError):
        b.send_chunk(text_message(b))


def test_reader_killed_before_it_ran_still_ends_the_session(pair):
    # Regression: killing the reader greenlet before its first run skipped the
    # session's end entirely; receive_chunk() then waited forever.
    recorder = Recorder()
    b = pair.session(pair.passive, cls=MSRPSession, on_incoming_cb=recorder)
    b.reader_job.kill(MyError('early'), block=False)
    g = pair.session(pair.active)
    g.reader_job.kill(MyError('early too'))
    with gevent.Timeout(TIMEOUT):
        recorder.ended.wait()
        with pytest.raises(MyError):
            g.receive_chunk()
    assert len(recorder.errors) == 1 and isinstance(recorder.errors[0].value, MyError)
    assert b.state == SessionState.DONE and g.state == SessionState.DONE


def test_reader_killed_plainly_ends_with_connection_done(pair):
    a, b = pair.sessions_both_ways()
    with gevent.Timeout(TIMEOUT):
        gevent.sleep(0)
        b.reader_job.kill()
        with pytest.raises(ConnectionDone):
            b.receive_chunk()


def test_shutdown_flushes_queued_chunks_before_closing(pair):
    a, b = pair.sessions_both_ways()
    count = 300
    body = b'y' * 3000
    for i in range(count):
        a.send_chunk(text_message(a, b'%04d' % i + body))
    with gevent.Timeout(TIMEOUT):
        def consume():
            received = []
            try:
                while True:
                    received.append(b.receive_chunk().data[:4])
            except ConnectionClosed as e:
                return received, e
        consumer = gevent.spawn(consume)
        a.shutdown()
        assert a.state == SessionState.DONE
        received, reason = consumer.get()
        assert received == [b'%04d' % i for i in range(count)]
        assert isinstance(reason, ConnectionDone)


def test_shutdown_waits_for_the_response_to_a_chunk_sent_without_response_cb(pair):
    # Regression: shutdown() closed as soon as chunks without response_cb were
    # written; the peer's 200s then hit a closed connection and, over TLS, the
    # peer saw ConnectionLost instead of a clean close.
    a = pair.session(pair.active)
    raw = pair.passive
    with gevent.Timeout(TIMEOUT):
        a.send_message(b'hello', 'text/plain')
        chunk = raw.read_chunk()
        gevent.spawn_later(0.2, raw.write_response, chunk, 200, 'OK')
        started = time.monotonic()
        a.shutdown()
        assert time.monotonic() - started >= 0.15
        with pytest.raises(ConnectionDone):
            raw.read_chunk()


def test_shutdown_wait_false_returns_at_once(pair):
    a, b = pair.sessions_both_ways()
    for i in range(10):
        a.send_message(b'%d' % i, 'text/plain')
    a.shutdown(wait=False)
    assert a.state == SessionState.FLUSHING
    assert not a.connected
    with pytest.raises(MSRPSessionError):
        a.send_message(b'late', 'text/plain')
    with gevent.Timeout(TIMEOUT):
        assert [b.receive_chunk().data for _ in range(10)] == [b'%d' % i for i in range(10)]
        with pytest.raises(ConnectionDone):
            b.receive_chunk()
        a.shutdown(sync=True)  # a second call waits for the end
    assert a.state == SessionState.DONE


def test_shutdown_waits_for_outstanding_responses_up_to_shutdown_timeout(pair):
    a = pair.session(pair.active)
    a.SHUTDOWN_TIMEOUT = 0.3
    raw = pair.passive
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), result.set)
        raw.read_chunk()
        started = time.monotonic()
        a.shutdown()
        elapsed = time.monotonic() - started
        response = result.get()
    assert 0.25 <= elapsed < 2
    assert response.code == 408  # local: the connection closed before the answer


def test_shutdown_returns_once_the_response_arrives(pair):
    a = pair.session(pair.active)
    raw = pair.passive
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), result.set)
        chunk = raw.read_chunk()
        gevent.spawn_later(0.1, raw.write_response, chunk, 200, 'OK')
        started = time.monotonic()
        a.shutdown()
        assert time.monotonic() - started < 2
    assert result.get().code == 200


@pytest.mark.parametrize('failure_report, code', [(None, 408), ('yes', 408), ('partial', 200), ('no', 200)])
def test_pending_transactions_get_a_local_response_when_the_connection_dies(pair, failure_report, code):
    a = pair.session(pair.active)
    raw = pair.passive
    responses = []
    count = 200
    with gevent.Timeout(TIMEOUT):
        for i in range(count):
            chunk = text_message(a, b'%d' % i)
            if failure_report is not None:
                chunk.add_header(FailureReportHeader(failure_report))
            a.send_chunk(chunk, responses.append)
        raw.read_chunk()  # some are written, some still queued
        raw.loseConnection()
        with pytest.raises(ConnectionDone):
            a.receive_chunk()
    assert len(responses) == count  # none lost
    assert {r.code for r in responses} == {code}


def test_response_cb_and_on_incoming_cb_errors_do_not_break_the_session(pair):
    def broken(chunk=None, error=None):
        raise RuntimeError('application bug')

    a = pair.session(pair.active)
    b = pair.session(pair.passive, cls=MSRPSession, on_incoming_cb=broken)
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), lambda response: 1 / 0)
        assert a.deliver_message(b'still working', 'text/plain').code == 200
        assert b.deliver_message(b'back', 'text/plain').code == 200
        assert a.receive_chunk().data == b'back'
        a.shutdown()
        b.shutdown()


# Keep-alive

class KeepAliveRecorder(Logger):
    """A Logger that remembers the chunks a transport reads."""

    def __init__(self):
        Logger.__init__(self)
        self.received = []

    def received_chunk(self, data, transport):
        self.received.append((time.monotonic(), data))


def test_keepalive_between_two_sessions_is_answered_and_not_delivered(pair):
    class QuickKeepAlive(GreenMSRPSession):
        KEEPALIVE_INTERVAL = 0.1

    recorder = KeepAliveRecorder()
    pair.passive.logger = recorder
    started = time.monotonic()
    a = pair.session(pair.active, cls=QuickKeepAlive)
    b = pair.session(pair.passive)
    with gevent.Timeout(TIMEOUT):
        gevent.sleep(0.45)
    keepalives = [(t, c) for t, c in recorder.received if c.method == 'SEND']
    assert 2 <= len(keepalives) <= 5
    assert keepalives[0][0] - started >= 0.09  # not right after start
    assert all(c.data == b'' and c.content_type is None for _, c in keepalives)
    assert b.incoming.qsize() == 0 and a.incoming.qsize() == 0
    assert a.connected and b.connected


def test_keepalive_interval_set_on_the_instance(pair):
    a = pair.session(pair.active)
    a.KEEPALIVE_INTERVAL = 0.1  # before the session's greenlets first run
    raw = pair.passive
    with gevent.Timeout(TIMEOUT):
        for _ in range(2):
            chunk = raw.read_chunk()
            assert (chunk.method, chunk.data) == ('SEND', b'')
            raw.write_response(chunk, 200, 'OK')
    assert a.connected


def test_keepalive_is_not_sent_while_traffic_flows(pair):
    a = pair.session(pair.active)
    a.KEEPALIVE_INTERVAL = 0.2
    raw = pair.passive
    with gevent.Timeout(TIMEOUT):
        for i in range(6):
            a.send_message(b'%d' % i, 'text/plain')
            gevent.sleep(0.05)
        for i in range(6):
            chunk = raw.read_chunk()
            assert chunk.data == b'%d' % i
            raw.write_response(chunk, 200, 'OK')


def test_keepalive_disabled_on_the_instance(pair, capsys):
    a = pair.session(pair.active)
    b = pair.session(pair.passive)
    a.KEEPALIVE_INTERVAL = 0.05
    b.KEEPALIVE_INTERVAL = 0.05
    gevent.sleep(0)
    a.KEEPALIVE_INTERVAL = None  # switched off while the keep-alive greenlet waits
    b.KEEPALIVE_INTERVAL = 0
    with gevent.Timeout(TIMEOUT):
        gevent.sleep(0.15)
    for session in (a, b):  # the keep-alive timer is off and no keep-alive greenlet ran or failed
        assert session._keepalive_timer is None
        assert session._keepalive_job is None or (session._keepalive_job.dead and
                                                   session._keepalive_job.exception is None)
    assert 'Traceback' not in capsys.readouterr().err


def test_keepalive_without_answer_ends_the_session(pair):
    class QuickKeepAlive(GreenMSRPSession):
        KEEPALIVE_INTERVAL = 0.1
        RESPONSE_TIMEOUT = 0.1

    a = pair.session(pair.active, cls=QuickKeepAlive)
    raw = pair.passive
    with gevent.Timeout(TIMEOUT):
        chunk = raw.read_chunk()
        assert (chunk.method, chunk.data) == ('SEND', b'')
        with pytest.raises(ConnectionLost):
            a.receive_chunk()
    assert a.state == SessionState.DONE


# Attributes and arguments

def test_state_connected_msrp_and_logger(pair):
    logger = Logger(prefix='[test] ')
    pair.active.logger = logger
    a, b = pair.sessions_both_ways()
    assert a.msrp is pair.active
    assert a.logger is logger
    assert b.logger is pair.passive.logger
    assert a.state == SessionState.CONNECTED == 'CONNECTED'
    assert str(a.state) == 'CONNECTED'
    assert a.connected
    with gevent.Timeout(TIMEOUT):
        a.shutdown()
    assert a.state == SessionState.DONE == 'DONE'
    assert not a.connected


def test_class_attribute_defaults():
    assert MSRPSession.RESPONSE_TIMEOUT == 30
    assert MSRPSession.KEEPALIVE_INTERVAL == 60
    assert MSRPSession.SHUTDOWN_TIMEOUT == 10
    assert MSRPSession.OUTGOING_QUEUE_SIZE == 1000
    assert GreenMSRPSession.INCOMING_QUEUE_SIZE == 1000
    assert issubclass(MSRPSessionError, MSRPError)
    assert [s.value for s in SessionState] == ['CONNECTED', 'FLUSHING', 'CLOSING', 'DONE']


def test_non_callable_callbacks_raise_type_error(pair):
    a = pair.session(pair.active)
    with pytest.raises(TypeError):
        a.send_chunk(text_message(a), response_cb='not callable')
    with pytest.raises(TypeError):
        MSRPSession(pair.passive, on_incoming_cb=42)


def test_accept_types_default_is_not_shared(pair):
    a, b = pair.sessions_both_ways()
    a.accept_types.append('text/plain')
    assert b.accept_types == ['*']
    assert MSRPSession.__init__.__defaults__[0] is None


def test_make_message_and_send_message(pair):
    a, b = pair.sessions_both_ways()
    chunk = a.make_message('hëllo', 'text/plain', message_id='mine')
    assert (chunk.method, chunk.data, chunk.content_type, chunk.message_id) == \
        ('SEND', 'hëllo'.encode('utf-8'), 'text/plain', 'mine')
    assert chunk.byte_range == ByteRange(1, 6, 6)
    assert chunk.to_path == [pair.passive.local_uri]
    with gevent.Timeout(TIMEOUT):
        sent = a.send_message(b'queued', 'text/plain')
        received = b.receive_chunk()
    assert (received.data, received.message_id) == (b'queued', sent.message_id)


def test_green_session_takes_on_incoming_cb_keyword_and_queues_anyway(pair):
    a = pair.session(pair.active)
    b = pair.session(pair.passive, on_incoming_cb=lambda *args, **kwargs: None)
    with gevent.Timeout(TIMEOUT):
        a.deliver_message(b'x', 'text/plain')
        assert b.receive_chunk().data == b'x'


# ---------------------------------------------------------------------------
# A reader whose socket never runs dry still lets the application run

def test_reader_lets_the_consumer_keep_up_with_a_flood():
    import os
    import socket
    import threading
    pair = make_pair(False)
    session = GreenMSRPSession(pair.passive)
    count, size = 256, 65536
    body = os.urandom(size)
    head = 'To-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: flood\r\nFailure-Report: no\r\n' % (
        pair.active.remote_uri, pair.active.local_uri)
    stream = b''.join(
        ('MSRP f%07d SEND\r\n%sByte-Range: %d-%d/%d\r\nContent-Type: application/octet-stream\r\n\r\n' % (
            i, head, i * size + 1, (i + 1) * size, count * size)).encode() + body +
        ('\r\n-------f%07d%s\r\n' % (i, '$' if i == count - 1 else '+')).encode()
        for i in range(count))
    # a thread writes the whole stream at once, so the session's socket is never empty for long
    writer_socket = socket.socket(fileno=os.dup(pair.active._sock.fileno()))
    writer_socket.setblocking(True)
    writer = threading.Thread(target=writer_socket.sendall, args=(stream,), daemon=True)
    ticks = [0]
    done = Event()

    def ticker():
        while not done.is_set():
            ticks[0] += 1
            gevent.sleep(0)
    ticking = gevent.spawn(ticker)
    try:
        writer.start()
        longest, received, ticks_during = 0, 0, None
        with gevent.Timeout(20):
            while received < count * size:
                chunk = session.receive_chunk()
                assert chunk.byte_range.start == received + 1
                received += len(chunk.data)
                longest = max(longest, session.incoming.qsize())
                if received == (count // 2) * size:
                    ticks_during = ticks[0]
        done.set()
        assert received == count * size
        # every READER_YIELD_BYTES the reader yields: the queue never holds more than a few reads' worth,
        # and other greenlets run during the flood (without the yield: hundreds queued, no tick)
        assert longest <= 4 * MSRPSession.READER_YIELD_BYTES // size, longest
        assert ticks_during >= count // 8, ticks_during
    finally:
        done.set()
        writer.join(5)
        writer_socket.close()
        ticking.kill()
        session.reader_job.kill(block=False)
        pair.active.loseConnection()
        pair.passive.loseConnection()
