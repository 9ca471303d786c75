"""A hostile WebSocket relay (RFC 7977): bad frames, odd framing, bad handshakes, memory.

The relay is msrplib.testing's ScriptedWebSocketRelay; its hostile part is
written by hand (RelayClient.send_raw with ws_frame, handshake_response).
The victims are sessions in this process, or test/ws_victim.py in another
process where memory is at stake (its RSS read with psutil).  The
guarantees are TCP's: a clear, documented error (ConnectionLost with the
WebSocket reason, WebSocketHandshakeError), bounded memory, one outcome per
chunk.  Every wait is under a timeout.
"""

import os

import gevent
import psutil
import pytest

import msrplib.websocket
from msrplib.connect import MSRPConnectTimeout
from msrplib.protocol import (
    MSRPData, ToPathHeader, FromPathHeader, MessageIDHeader, ByteRangeHeader, ByteRange, ContentTypeHeader)
from msrplib.relay import (
    AcceptorRelay, ConnectorRelay, MSRPRelayConnectTimeout, MSRPRelaySettings)
from msrplib.testing.wsrelay import ScriptedWebSocketRelay, handshake_answer, ws_frame
from msrplib.transport import ConnectionDone, ConnectionLost
from msrplib.websocket import WebSocketHandshakeError

from test_websocket_relay import connect, chat
from victim_process import VictimProcess

T = 10
MiB = 1024 * 1024
OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING = 1, 2, 0, 8, 9


@pytest.fixture
def relay():
    with ScriptedWebSocketRelay() as r:
        yield r


def pair(relay, closing):
    """Two sessions over WebSocket through ``relay``; returns (sa, sb, b's RelayClient, chunk maker for b)."""
    sa, sb, pa, pb = connect(ConnectorRelay(relay.settings()), AcceptorRelay(relay.settings()), closing)
    [client_b] = [c for c in relay.clients if c.use_path == pb[0]]

    def chunk_for_b(body=b'', tid=None, message_id='m1', flag='$', start=1, total=None):
        # a SEND as the relay forwards it to b (To-Path: b; From-Path: b's relay, a's relay, a)
        chunk = MSRPData(tid or os.urandom(6).hex(), method='SEND', data=body, contflag=flag)
        chunk.add_header(ToPathHeader(decoded=[pb[-1]]))
        chunk.add_header(FromPathHeader(decoded=[pb[0], pa[0], pa[-1]]))
        chunk.add_header(MessageIDHeader(message_id))
        end = start + len(body) - 1 if body else start
        chunk.add_header(ByteRangeHeader(decoded=ByteRange(start, end, total if total is not None else end)))
        if body:
            chunk.add_header(ContentTypeHeader('text/plain'))
        return chunk
    return sa, sb, client_b, chunk_for_b


def receive(session):
    with gevent.Timeout(T):
        return session.receive_chunk()


def ended_with(session, cls):
    with gevent.Timeout(T):
        session.reader_job.join()
        with pytest.raises(cls) as info:
            while True:
                session.receive_chunk()
    return info.value


def wait_for(condition, what):
    with gevent.Timeout(T, AssertionError('timed out waiting for %s' % what)):
        while not condition():
            gevent.sleep(0.01)


def assert_one_answer(client, sent):
    """The victim answered chunk ``sent`` exactly once, with 200 (as the relay's side ``client`` saw)."""
    def answers():
        return [entry for entry in client.history if entry[1] == sent.transaction_id]
    wait_for(lambda: answers(), 'the answer to %s' % sent.transaction_id)
    gevent.sleep(0.1)
    assert answers() == [(200, sent.transaction_id)]


# ---------------------------------------------------------------------------
# Framing a real relay would not produce

def test_fragmented_frames_with_a_ping_in_between_carry_one_chunk(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    sent = chunk_for_b(b'in three fragments')
    data = sent.encode()
    client_b.send_raw(ws_frame(data[:5], OP_BINARY, fin=False) + ws_frame(b'hi', OP_PING) +
                      ws_frame(data[5:40], OP_CONT, fin=False) + ws_frame(data[40:], OP_CONT))
    chunk = receive(sb)
    assert chunk.data == b'in three fragments'
    assert_one_answer(client_b, sent)
    chat(sa, sb)
    assert sb.incoming.empty()


def test_a_chunk_split_over_two_messages_is_delivered_once(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    sent = chunk_for_b(b'split in two messages')
    data = sent.encode()
    client_b.send_message(data[:30])
    gevent.sleep(0.05)
    client_b.send_message(data[30:])
    assert receive(sb).data == b'split in two messages'
    assert_one_answer(client_b, sent)
    chat(sa, sb)
    assert sb.incoming.empty()


def test_chunks_joined_in_one_message_are_each_delivered_once(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    chunks = [chunk_for_b(b'joined %d' % i, message_id='j%d' % i) for i in range(3)]
    client_b.send_message(b''.join(chunk.encode() for chunk in chunks), binary=False)
    assert [receive(sb).data for _ in range(3)] == [b'joined 0', b'joined 1', b'joined 2']

    def answers():
        return [entry for entry in client_b.history if entry[1] in {c.transaction_id for c in chunks}]
    wait_for(lambda: len(answers()) == 3, 'the three 200s')
    gevent.sleep(0.1)
    assert sorted(answers()) == sorted((200, c.transaction_id) for c in chunks)  # one answer per chunk
    chat(sa, sb)
    assert sb.incoming.empty()


def test_oversized_message_closes_with_1009_and_a_clear_error(relay, closing, monkeypatch):
    monkeypatch.setattr(msrplib.websocket, 'DEFAULT_MAX_MESSAGE_SIZE', 64 * 1024)
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    head = chunk_for_b(b'x' * 10).encode()[:-30]   # a chunk whose body goes on and on...
    client_b.send_raw(ws_frame(head, OP_BINARY, length=10 ** 9))
    try:
        for _ in range(40):
            client_b.send_raw(b'x' * 4096)           # ... inside a frame announcing a gigabyte
    except OSError:
        pass
    error = ended_with(sb, ConnectionLost)
    assert 'max_message_size' in str(error)
    client_b.wait_closed(T)


def test_relay_closing_mid_frame_is_a_lost_connection(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    data = chunk_for_b(b'never finished').encode()
    client_b.send_raw(ws_frame(data)[:len(data) // 2])
    gevent.sleep(0.05)
    client_b.close_raw()
    error = ended_with(sb, ConnectionLost)
    assert 'middle of a WebSocket frame' in str(error)


def test_relay_closing_after_a_message_holding_half_a_chunk_is_a_lost_connection(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    data = chunk_for_b(b'never finished').encode()
    client_b.send_message(data[:len(data) // 2])
    client_b.send_raw(ws_frame(b'', OP_CLOSE))
    error = ended_with(sb, ConnectionLost)
    assert 'middle of a chunk' in str(error)


def test_relay_cut_during_a_large_outgoing_message_fails_that_message(relay, closing):
    from msrplib.transport import MSRPTransactionError
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    [client_a] = [c for c in relay.clients if c is not client_b]
    with gevent.Timeout(T):
        message = sa.send_large_message(os.urandom(4 * MiB), 'application/octet-stream')
        wait_for(lambda: client_a.chunks_received > 20, 'the transfer to start')
        client_a.close_raw()
        with pytest.raises((MSRPTransactionError, ConnectionLost)):
            message.wait()
    assert not message.confirmed
    ended_with(sa, ConnectionLost)


def test_close_frame_between_chunks_is_a_clean_close(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    client_b.send_raw(ws_frame(b'\x03\xe8bye', OP_CLOSE))
    ended_with(sb, ConnectionDone)


def test_close_with_an_error_code_is_a_lost_connection_naming_it(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    client_b.send_raw(ws_frame(b'\x03\xf3relay overloaded', OP_CLOSE))  # 1011
    error = ended_with(sb, ConnectionLost)
    assert '1011' in str(error) and 'relay overloaded' in str(error)


def test_reserved_opcode_is_a_lost_connection(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    client_b.send_raw(ws_frame(b'??', 3))
    assert 'WebSocket protocol error' in str(ended_with(sb, ConnectionLost))


def test_bad_utf8_in_a_text_frame_is_a_lost_connection_and_earlier_chunks_are_kept(relay, closing):
    sa, sb, client_b, chunk_for_b = pair(relay, closing)
    good = chunk_for_b(b'before').encode()
    client_b.send_raw(ws_frame(good, OP_TEXT) + ws_frame(b'MSRP \xff\xfe', OP_TEXT))
    assert receive(sb).data == b'before'
    ended_with(sb, ConnectionLost)


# ---------------------------------------------------------------------------
# Handshakes

@pytest.mark.parametrize('answer, status, match', [
    (lambda request: handshake_answer(request, status=403), 403, 'HTTP 403'),
    (lambda request: handshake_answer(request, status=200), 200, 'HTTP 200'),
    (lambda request: handshake_answer(request, subprotocol='sip'), None, 'subprotocol'),
    (lambda request: handshake_answer(request, subprotocol=None), 101, 'subprotocol'),
    (lambda request: b'HTTP/1.1 101 Switching Protocols\r\n\r\n', None, 'handshake'),
    (lambda request: b'SSH-2.0-OpenSSH\r\n\r\n', None, 'handshake'),
    (lambda request: b'', None, 'closed during the WebSocket handshake'),
])
def test_bad_handshake_answers_are_handshake_errors(closing, answer, status, match):
    with ScriptedWebSocketRelay(handshake_response=answer) as relay:
        connector = ConnectorRelay(relay.settings())
        closing.append(connector)
        with gevent.Timeout(T), pytest.raises(WebSocketHandshakeError, match=match) as info:
            connector.prepare()
    assert info.value.status_code == status


def test_relay_that_never_answers_the_handshake_is_a_connect_timeout(closing, monkeypatch):
    monkeypatch.setattr(MSRPConnectTimeout, 'seconds', 0.5)
    import gevent.server
    server = gevent.server.StreamServer(('127.0.0.1', 0), lambda sock, address: gevent.sleep(5))
    server.start()
    try:
        settings = MSRPRelaySettings('example.com', 'alice', 'secret', ws_url='ws://127.0.0.1:%d/' % server.server_port)
        connector = ConnectorRelay(settings)
        closing.append(connector)
        with gevent.Timeout(T), pytest.raises(MSRPRelayConnectTimeout):
            connector.prepare()
    finally:
        server.stop(timeout=0)


def test_endless_handshake_answer_is_refused_without_growing(closing):
    with ScriptedWebSocketRelay(handshake_response=lambda request: b'HTTP/1.1 101 OK\r\n' +
                                b'X-Pad: ' + b'a' * 200000 + b'\r\n\r\n') as relay:
        connector = ConnectorRelay(relay.settings())
        closing.append(connector)
        with gevent.Timeout(T), pytest.raises(WebSocketHandshakeError, match='Bad HTTP'):
            connector.prepare()


# ---------------------------------------------------------------------------
# Memory: a victim in another process

class Victim(VictimProcess):
    """test/ws_victim.py in a subprocess, bound through ``relay``; ``peak`` is its largest RSS seen."""

    def __init__(self, relay):
        super().__init__('ws_victim.py', [relay.ws_url, relay.username, relay.password], T)
        self.path = self.line().split()

    def rss(self):
        try:
            return super().rss()
        except psutil.NoSuchProcess:
            return 0


@pytest.fixture
def victim(relay):
    made = Victim(relay)
    yield made
    made.close()


def bind_victim(relay, victim):
    """Bind the victim's session from the relay's side of its connection; return that RelayClient and the
    head of a chunk addressed to it."""
    from msrplib.protocol import URI
    [client] = relay.wait_for_clients(1, T)
    to_uri = URI.parse(victim.path[-1])
    attacker = URI(host='127.0.0.1', port=9, use_tls=False, session_id='attacker')

    def chunk(body=b'', flag='$'):
        c = MSRPData(os.urandom(6).hex(), method='SEND', data=body, contflag=flag)
        c.add_header(ToPathHeader(decoded=[to_uri]))
        c.add_header(FromPathHeader(decoded=[client.use_path, attacker]))
        c.add_header(MessageIDHeader(os.urandom(4).hex()))
        c.add_header(ByteRangeHeader(decoded=ByteRange(1, len(body) or 1, len(body) if body else 0)))
        if body:
            c.add_header(ContentTypeHeader('application/octet-stream'))
        return c
    client.send_message(chunk().encode())
    assert victim.line() == 'bound'
    return client, chunk


def push(client, data, limit):
    """Send ``data`` over and over (raw) until ``limit`` bytes went or the victim closed; return the bytes sent."""
    sent = 0
    try:
        with gevent.Timeout(60):
            while sent < limit:
                client.send_raw(data)
                sent += len(data)
    except OSError:
        pass
    return sent


def report(label, start, peak, pushed):
    print('\n[memory] %s: victim RSS %.1f MiB bound, peak %.1f MiB (+%.1f MiB); %.1f MiB pushed' % (
        label, start / MiB, peak / MiB, (peak - start) / MiB, pushed / MiB))


def test_endless_frame_costs_the_victim_a_bounded_amount_of_memory(relay, victim):
    # one frame announcing 2**40 bytes: an MSRP chunk head, then a body that never ends
    client, chunk = bind_victim(relay, victim)
    start = victim.rss()
    victim.start_sampling()
    head = chunk(b'x' * 16, flag='$').encode()[:-30]
    client.send_raw(ws_frame(head, OP_BINARY, length=2 ** 40))
    pushed = push(client, b'a' * 65536, 200 * MiB)
    ended = victim.line()
    report('endless frame', start, victim.peak, pushed)
    assert 'max_message_size' in ended  # (the session reads the chunk in segments: no max_chunk_size)
    assert pushed < 60 * MiB
    assert victim.peak - start < 100 * MiB


def test_endless_message_of_whole_chunks_is_cut_at_max_message_size(relay, victim):
    # one message that never ends, made of valid chunks: each is fine for MSRP, the message is not
    client, chunk = bind_victim(relay, victim)
    start = victim.rss()
    victim.start_sampling()
    client.send_raw(ws_frame(chunk(b'first').encode(), OP_BINARY, fin=False))
    piece = ws_frame(chunk(b'z' * 60000).encode(), OP_CONT, fin=False)
    pushed = push(client, piece, 200 * MiB)
    ended = victim.line()
    report('endless message of whole chunks', start, victim.peak, pushed)
    assert 'max_message_size' in ended
    assert pushed < 60 * MiB  # cut at 32 MiB + 64 KiB (and what the socket buffers held)
    assert victim.peak - start < 100 * MiB
