"""Replays of the call patterns of a SIP SIMPLE client's MSRP streams (issue 16), between two endpoints.

The calls below are written from the behaviour the issue describes (no
client code is copied): what such a client does with the classic API, in the
order it does it, with nothing adapted to this library.

(a) a chat stream: ``accept_types`` with message/cpim, ``automatic_reports=False``
    and the Success-Reports sent by hand with ``send_report``, a NICKNAME
    request, an is-composing notification with ``Failure-Report: no`` (and a
    response callback), then the hang-up, which must take under 0.5 s;
(b) a file-transfer stream: the file offered with an SDP ``a=file-selector``
    (msrplib.sdp), a FILE_OFFSET request answered by the receiver's session
    subclass through ``_handle_incoming_FILE_OFFSET`` with an ``Offset``
    header of the client's own header class, the transfer resumed from that
    offset, and the received file checked against the selector's hash.

Both run over loopback: plain TCP, TLS with msrplib's own credentials, and
TLS with GnuTLS-style credential objects (see
:func:`gnutls_style_credential_pair`).  All the connection setup
is in :func:`connect_endpoints`, parametrized by ``tls``, with no change to
the replayed calls.
"""

import io
import os
import time

import gevent
import pytest
from gevent.event import AsyncResult, Event

import msrplib.protocol as protocol
from msrplib import sdp
from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.protocol import (
    ContentTypeHeader, FailureReportHeader, IntegerHeaderType, MSRPHeader, MSRPNamedHeader, SuccessReportHeader,
    URI, UseNicknameHeader)
from msrplib.session import MSRPSession
from msrplib.transport import make_response

try:  # what the client tests a session's end with (its own import); ours when Twisted is absent
    from twisted.internet.error import ConnectionDone
except ImportError:
    from msrplib.transport import ConnectionDone

TIMEOUT = 10         # seconds any one step may take
HANG_UP_BOUND = 0.5  # seconds: the most a chat hang-up may take (the bound)

# False: plain TCP; True: TLS with msrplib's own credentials; 'gnutls': TLS with GnuTLS-style credential
# objects as SIP SIMPLE clients pass them (a CA-issued certificate on each side, the CA trusted by the caller)
TLS_VARIANTS = [pytest.param(False, id='tcp'), pytest.param(True, id='tls'), pytest.param('gnutls', id='gnutls')]


# ---------------------------------------------------------------------------
# Connection setup: the only part that knows about TLS.  A further credentials variant goes here.

def connect_endpoints(tls, caller_sdp_lines, make_answer_lines):
    """Connect a caller and a callee through an SDP offer/answer of ``a=`` lines.

    ``caller_sdp_lines(path)`` -> the caller's offer lines; ``make_answer_lines(offer, path)`` -> the
    callee's answer lines.  Returns ``(caller transport, callee transport, offer, answer)`` with the
    offer and answer parsed as :class:`msrplib.sdp.MSRPMediaAttributes`.  ``tls`` False: plain TCP;
    True: msrps with msrplib's own credentials (the callee's self-signed certificate, authenticated by
    its SDP fingerprint).
    """
    caller_credentials = callee_credentials = None
    if tls == 'gnutls':
        caller_credentials, callee_credentials = gnutls_style_credential_pair()
    acceptor = AcceptorDirect()
    connector = ConnectorDirect()
    caller_path = connector.prepare(URI(host='127.0.0.1', use_tls=bool(tls), credentials=caller_credentials))
    offer = sdp.MSRPMediaAttributes.parse(caller_sdp_lines(caller_path))
    callee_path = acceptor.prepare(URI(host='127.0.0.1', port=0, use_tls=bool(tls), credentials=callee_credentials))
    answer_lines = make_answer_lines(offer, callee_path)
    if tls is True:
        answer_lines.append(sdp.format_attribute('fingerprint', sdp.format_fingerprint(acceptor.fingerprint)))
    answer = sdp.MSRPMediaAttributes.parse(answer_lines)
    if tls is True:
        connector.expected_fingerprint = answer.fingerprints
    try:
        with gevent.Timeout(TIMEOUT):
            accepting = gevent.spawn(acceptor.complete, offer.path)
            caller = connector.complete(answer.path)
            callee = accepting.get()
    finally:
        connector.cleanup()
        acceptor.cleanup()
    return caller, callee, offer, answer


def gnutls_style_credential_pair():
    """(caller's, callee's) GnuTLS-style credentials: certificates from one CA, trusted by both sides."""
    from gnutls_style import make_gnutls_pair
    return make_gnutls_pair()


# ---------------------------------------------------------------------------
# (a) chat

CPIM_TYPES = ['message/cpim', 'text/plain', 'application/im-iscomposing+xml']


def cpim(content_type, body, sender='alice@example.com', recipient='bob@example.com'):
    """A message/cpim wrapper around ``body`` (RFC 3862), as a chat client builds it."""
    return ('From: <sip:%s>\r\nTo: <sip:%s>\r\nDateTime: 2026-12-04T12:00:00Z\r\n\r\n'
            'Content-Type: %s\r\n\r\n%s' % (sender, recipient, content_type, body)).encode('utf-8')


class ChatStream:
    """One side of a chat stream, as a SIP SIMPLE client drives its MSRPSession."""

    def __init__(self, transport):
        self.incoming = []
        self.reports = []
        self.nicknames = []
        self.ended = AsyncResult()
        self.arrived = Event()
        self.session = MSRPSession(transport, accept_types=CPIM_TYPES, on_incoming_cb=self._on_incoming,
                                   automatic_reports=False)

    # incoming

    def _on_incoming(self, chunk=None, error=None):
        if error is not None:
            self.ended.set(error)
            return
        if chunk.method == 'REPORT':
            self.reports.append(chunk)
        elif chunk.method == 'NICKNAME':
            self.nicknames.append(chunk.headers['Use-Nickname'].decoded)
            self.session.send_chunk(make_response(chunk, 200, 'OK'))
        elif chunk.method == 'SEND':
            self.incoming.append(chunk)
            if chunk.success_report == 'yes':
                self.session.send_report(chunk, 200, 'OK')  # reports by hand (automatic_reports=False)
        self.arrived.set()

    # outgoing

    def send_message(self, text, outcome):
        chunk = self.session.msrp.make_send_request(data=cpim('text/plain', text))
        chunk.add_header(ContentTypeHeader('message/cpim'))
        chunk.add_header(SuccessReportHeader('yes'))
        chunk.add_header(FailureReportHeader('yes'))
        self.session.send_chunk(chunk, response_cb=outcome)
        return chunk

    def send_composing(self, outcome):
        body = ('<?xml version="1.0" encoding="UTF-8"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
                '<state>active</state><contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>')
        chunk = self.session.msrp.make_send_request(data=cpim('application/im-iscomposing+xml', body))
        chunk.add_header(ContentTypeHeader('message/cpim'))
        chunk.add_header(SuccessReportHeader('no'))
        chunk.add_header(FailureReportHeader('no'))
        self.session.send_chunk(chunk, response_cb=outcome)
        return chunk

    def set_nickname(self, nickname, outcome):
        chunk = self.session.msrp.make_request('NICKNAME')
        chunk.add_header(UseNicknameHeader(nickname))
        self.session.send_chunk(chunk, response_cb=outcome)

    def hang_up(self):
        self.session.shutdown()


def chat_offer(path):
    return sdp.MSRPMediaAttributes(path=path, accept_types=['message/cpim', 'text/*'],
                                   accept_wrapped_types=['*'], setup='active').to_lines()


def chat_answer(offer, path):
    return sdp.MSRPMediaAttributes(path=path, accept_types=['message/cpim', 'text/*'],
                                   accept_wrapped_types=['*'], setup='passive').to_lines()


def wait_until(condition, event):
    while not condition():
        event.clear()
        event.wait()


@pytest.mark.parametrize('tls', TLS_VARIANTS)
def test_chat_stream(tls):
    caller, callee, offer, answer = connect_endpoints(tls, chat_offer, chat_answer)
    assert 'message/cpim' in answer.accept_types and 'message/cpim' in offer.accept_types
    alice, bob = ChatStream(caller), ChatStream(callee)
    try:
        with gevent.Timeout(TIMEOUT):
            # a message with a delivery report asked for, sent by hand by the receiver
            response = AsyncResult()
            sent = alice.send_message('Hello Bob', response.set)
            assert response.get().code == 200
            wait_until(lambda: bob.incoming, bob.arrived)
            wait_until(lambda: alice.reports, alice.arrived)
            received = bob.incoming[0]
            assert received.content_type == 'message/cpim' and b'Hello Bob' in received.data
            report = alice.reports[0]
            assert report.message_id == sent.message_id and report.status.code == 200

            # a nickname
            nickname = AsyncResult()
            alice.set_nickname('Alice', nickname.set)
            assert nickname.get().code == 200
            assert bob.nicknames == ['Alice']

            # is-composing: no response comes (Failure-Report: no), the callback is still given
            composing = AsyncResult()
            alice.send_composing(composing.set)
            wait_until(lambda: len(bob.incoming) == 2, bob.arrived)
            assert b'isComposing' in bob.incoming[1].data

            # hang-up with the notification outstanding
            started = time.monotonic()
            alice.hang_up()
            elapsed = time.monotonic() - started
            assert composing.get().code == 200  # its local outcome
            for side in (alice, bob):
                assert side.ended.get().check(ConnectionDone)  # a normal end, not a failure
        assert elapsed < HANG_UP_BOUND, 'hang-up took %.2f s' % elapsed
    finally:
        caller.loseConnection()
        callee.loseConnection()


# ---------------------------------------------------------------------------
# (b) file transfer

@pytest.fixture
def offset_header_class():
    """The client's own header class, defined as the client does; the registry is put back afterwards."""
    saved = dict(protocol._HEADER_CLASSES), dict(protocol._HEADER_CLASSES_EXACT)

    class OffsetHeader(MSRPNamedHeader):
        name = 'Offset'
        type = IntegerHeaderType

    yield OffsetHeader
    protocol._HEADER_CLASSES.clear()
    protocol._HEADER_CLASSES.update(saved[0])
    protocol._HEADER_CLASSES_EXACT.clear()
    protocol._HEADER_CLASSES_EXACT.update(saved[1])
    protocol._configure_cparser()


def make_receiver_session_class(OffsetHeader):
    class FileReceiverSession(MSRPSession):
        """The receiving stream's session: answers FILE_OFFSET with how much of the file it already has."""

        received_bytes = 0

        def _handle_incoming_FILE_OFFSET(self, chunk):
            response = make_response(chunk, 200, 'OK')
            response.add_header(OffsetHeader(self.received_bytes))
            self.send_chunk(response)

    return FileReceiverSession


class FileReceiver:
    def __init__(self, session_class, transport, selector, partial):
        self.selector = selector
        self.file = io.BytesIO(partial)  # what an interrupted earlier transfer left
        self.done = AsyncResult()
        self.session = session_class(transport, accept_types=['*'], on_incoming_cb=self._on_incoming)
        self.session.received_bytes = len(partial)

    def _on_incoming(self, chunk=None, error=None):
        if error is not None:
            if not self.done.ready():
                self.done.set_exception(error.value)
            return
        if chunk.method != 'SEND':
            return
        start, end, total = chunk.byte_range
        self.file.seek(start - 1)
        self.file.write(chunk.data)
        self.session.received_bytes = max(self.session.received_bytes, start - 1 + len(chunk.data))
        if chunk.contflag == '$' and self.session.received_bytes == total:
            self.done.set(self.file.getvalue())


def file_offer(selector):
    def offer(path):
        return sdp.MSRPMediaAttributes(path=path, accept_types=['*'], setup='active', direction='sendonly',
                                       file_selector=selector, file_transfer_id='ft-%s' % os.urandom(4).hex(),
                                       file_disposition='attachment').to_lines()
    return offer


def file_answer(offer, path):
    return sdp.MSRPMediaAttributes(path=path, accept_types=['*'], setup='passive', direction='recvonly',
                                   file_selector=offer.file_selector, file_transfer_id=offer.file_transfer_id
                                   ).to_lines()


def send_file_from(session, fd, selector, message_id, offset, chunk_size=16384):
    """The sender's loop: chunks from ``offset`` to the end, each with its Byte-Range, the last one '$'."""
    total = selector.size
    fd.seek(offset)
    position = offset
    outcomes = []
    while position < total:
        data = fd.read(chunk_size)
        chunk = session.msrp.make_send_request(message_id=message_id, data=data, start=position + 1,
                                               end=position + len(data), length=total)
        chunk.add_header(ContentTypeHeader(selector.type or 'application/octet-stream'))
        chunk.add_header(MSRPHeader('File-Selector', str(selector)))
        position += len(data)
        chunk.contflag = '$' if position == total else '+'
        outcome = AsyncResult()
        session.send_chunk(chunk, response_cb=outcome.set)
        outcomes.append(outcome)
    return [outcome.get().code for outcome in outcomes]


@pytest.mark.parametrize('tls', TLS_VARIANTS)
def test_file_transfer_stream_resumes_from_the_offset(tls, offset_header_class):
    content = os.urandom(200000)
    selector = sdp.FileSelector.from_file(io.BytesIO(content), name='holiday photo.jpg', type='image/jpeg')
    already = 70001  # bytes the receiver kept from an interrupted transfer
    caller, callee, offer, answer = connect_endpoints(tls, file_offer(selector), file_answer)
    # the receiver learns the file from the SDP offer
    assert offer.file_selector == selector
    receiver = FileReceiver(make_receiver_session_class(offset_header_class), callee, offer.file_selector,
                            content[:already])
    sender = MSRPSession(caller, accept_types=['*'])
    try:
        with gevent.Timeout(TIMEOUT):
            # where to resume: FILE_OFFSET, answered with the client's Offset header
            request = sender.msrp.make_request('FILE_OFFSET')
            response = sender.deliver_chunk(request)
            offset = response.headers['Offset'].decoded
            assert offset == already and isinstance(offset, int)

            codes = send_file_from(sender, io.BytesIO(content), selector, 'file-message-1', offset)
            assert set(codes) == {200}
            received = receiver.done.get()
        assert received == content
        assert offer.file_selector.verify(received)  # the hash check
        assert offer.file_selector.verify(io.BytesIO(received))
        with gevent.Timeout(TIMEOUT):
            started = time.monotonic()
            sender.shutdown()
            assert time.monotonic() - started < HANG_UP_BOUND
    finally:
        caller.loseConnection()
        callee.loseConnection()
