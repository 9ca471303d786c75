"""Prompt hang-up, RESPONSE_TIMEOUT = 0, and the local responses a session gives when it ends.

shutdown() waits only for responses that will come: none comes for a chunk
with Failure-Report ``no``, nor on success for ``partial``, nor for a
REPORT.  Over real loopback connections (plain TCP and TLS), every wait
under a timeout.
"""

import select
import socket
import struct
import time

import gevent
import pytest
from gevent.event import AsyncResult

from msrplib.message import MessageAssembler
from msrplib.protocol import FailureReportHeader
from msrplib.session import GreenMSRPSession
from msrplib.testing.loopback import raw_peer_transport
from msrplib.transport import make_response

from test_session import TIMEOUT, pair, text_message  # noqa: F401 (pair: the fixture, over TCP and TLS)

HANG_UP_BOUND = 0.5  # seconds: what the issue allows a chat hang-up


def is_composing(session, failure_report='no'):
    chunk = session.make_message(b'<?xml version="1.0"?><isComposing><state>active</state></isComposing>',
                                 'application/im-iscomposing+xml')
    chunk.add_header(FailureReportHeader(failure_report))
    return chunk


@pytest.mark.parametrize('failure_report', ['no', 'partial'])
def test_hang_up_with_a_notification_outstanding_is_prompt(pair, failure_report):
    a, b = pair.sessions_both_ways()
    a.SHUTDOWN_TIMEOUT = 10  # the classic default: must not be what bounds the hang-up
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(is_composing(a, failure_report), result.set)
        assert b.receive_chunk().content_type == 'application/im-iscomposing+xml'
        started = time.monotonic()
        a.shutdown()
        elapsed = time.monotonic() - started
        response = result.get()
    assert elapsed < HANG_UP_BOUND
    assert response.code == 200  # the callback still gets its one (local) outcome


def test_hang_up_with_a_report_outstanding_is_prompt(pair):
    a, b = pair.sessions_both_ways(automatic_reports=False)
    a.SHUTDOWN_TIMEOUT = 10
    with gevent.Timeout(TIMEOUT):
        b.send_chunk(text_message(b, success_report='yes'))
        chunk = a.receive_chunk()
        report_outcome = AsyncResult()
        from msrplib.transport import make_report
        a.send_chunk(make_report(chunk, 200, 'OK'), report_outcome.set)
        b.receive_chunk()
        started = time.monotonic()
        a.shutdown()
        assert time.monotonic() - started < HANG_UP_BOUND
        report_outcome.get()


def test_hang_up_still_waits_for_a_response_that_will_come(pair):
    # Failure-Report yes: shutdown() waits for the peer's answer (here the raw peer answers after 0.3 s).
    a = pair.session(pair.active)
    raw = pair.passive
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), result.set)
        chunk = raw.read_chunk()
        answering = gevent.spawn_later(0.3, raw.write_response, chunk, 200, 'OK')
        started = time.monotonic()
        a.shutdown()
        elapsed = time.monotonic() - started
        answering.get()
    assert result.get().code == 200  # the peer's response, not a local one
    assert 0.25 <= elapsed < 5


def test_shutdown_wakes_on_the_response_not_on_a_poll(pair):
    # The response arrives while shutdown() waits: shutdown() ends right after it, from an event.
    a = pair.session(pair.active)
    raw = pair.passive
    woke = []
    original = a._note_progress

    def note_progress():
        woke.append(time.monotonic())
        original()

    a._note_progress = note_progress
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a))
        chunk = raw.read_chunk()
        gevent.spawn_later(0.2, raw.write_response, chunk, 200, 'OK')
        a.shutdown()
    assert 1 <= len(woke) <= 3  # woken by the response (and the writer), not 20 times by a 10 ms poll


def test_response_timeout_zero_gives_a_local_408_even_when_the_response_is_already_in(pair):
    # The peer's 200 reaches the session before the response timer had a chance to run.
    a = pair.session(pair.active)
    a.RESPONSE_TIMEOUT = 0
    outcomes = []
    with gevent.Timeout(TIMEOUT):
        chunk = text_message(a)
        a.send_chunk(chunk, outcomes.append)
        a._handle_response(make_response(chunk, 200, 'OK'))  # as the reader would, first
        gevent.sleep(0.05)
    assert [r.code for r in outcomes] == [408]


def test_response_timeout_zero_against_a_fast_live_peer(pair):
    a, b = pair.sessions_both_ways()
    a.RESPONSE_TIMEOUT = 0
    with gevent.Timeout(TIMEOUT):
        for _ in range(20):
            result = AsyncResult()
            a.send_chunk(text_message(a), result.set)
            assert result.get().code == 408
            b.receive_chunk()


def test_pending_callbacks_get_a_local_408_when_the_session_ends(pair):
    a = pair.session(pair.active)
    raw = pair.passive
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        a.send_chunk(text_message(a), result.set)
        raw.read_chunk()
        raw.loseConnection()
        response = result.get()
    assert response.code == 408


def test_failure_report_no_callback_gets_a_local_200_after_response_timeout(pair):
    a, b = pair.sessions_both_ways()
    a.RESPONSE_TIMEOUT = 0.2
    result = AsyncResult()
    with gevent.Timeout(TIMEOUT):
        started = time.monotonic()
        a.send_chunk(is_composing(a), result.set)
        b.receive_chunk()
        response = result.get()
    assert response.code == 200 and time.monotonic() - started >= 0.15


def test_local_response_names(pair):
    from msrplib.session import LocalResponse, Response200OK, Response408Timeout
    from msrplib.transport import MSRPTransactionError
    assert issubclass(LocalResponse, MSRPTransactionError)
    assert (Response200OK.code, Response408Timeout.code) == (200, 408)
    assert isinstance(Response200OK, LocalResponse) and isinstance(Response408Timeout, LocalResponse)
    assert 'LocalResponse 408' in repr(Response408Timeout)
    # a local outcome compares with them by code
    a = pair.session(pair.active)
    a.RESPONSE_TIMEOUT = 0
    with gevent.Timeout(TIMEOUT):
        result = AsyncResult()
        a.send_chunk(text_message(a), result.set)
        assert result.get().code == Response408Timeout.code


def test_a_message_the_peer_aborts_just_before_a_reset_is_dropped_as_aborted():
    # msrp sendfile at Ctrl-C: the last chunks and the '#' come, then the connection is reset; a REPORT then
    # fails to go out, and the '#' already received must still end the message as aborted
    def chunk(tid, start, end, flag, body=b''):
        head = ('MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: m1\r\nByte-Range: %d-%d/500\r\n'
                % (tid, transport.local_uri, transport.full_remote_path[0], start, end))
        if flag == '#':
            return (head + 'Failure-Report: no\r\n-------%s#\r\n' % tid).encode()
        return (head + 'Success-Report: yes\r\nContent-Type: text/plain\r\n\r\n').encode() + body + \
            ('\r\n-------%s%s\r\n' % (tid, flag)).encode()

    discarded = AsyncResult()
    transport, raw = raw_peer_transport()
    session = GreenMSRPSession(transport, assembler=MessageAssembler(on_discard=discarded.set))
    # after each chunk the reader lets the writer run, which has a progress REPORT to send: the write that fails
    session.READER_YIELD_BYTES = 1
    session.PROGRESS_REPORT_INTERVAL = 100
    try:
        raw.sendall(chunk('tid00001', 1, 100, '+', b'a' * 100))
        gevent.sleep(0.05)                       # taken and answered
        # from here until the session's reader runs, nothing yields
        raw.sendall(chunk('tid00002', 101, 200, '+', b'b' * 100) + chunk('tid00003', 201, 200, '#'))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        raw.close()                              # sends RST
        poller = select.poll()
        poller.register(transport._sock.fileno(), select.POLLIN)
        assert poller.poll(TIMEOUT * 1000)      # the RST has arrived (blocks the hub: the reader waits)
        message = discarded.get(timeout=TIMEOUT)
        assert message.discard_reason == 'aborted by the sender'
        assert message.bytes_received == 200
    finally:
        session.msrp.loseConnection()
