"""msrplib.websocket, the sans-I/O WebSocket layer (RFC 7977): URLs, framing, handshake, control frames, limits.

No sockets here: a WebSocketClient and a WebSocketServer talk to each other
through bytes, and hand-made frames (msrplib.testing.ws_frame) play a
misbehaving peer.
"""

import subprocess
import sys

import pytest

from msrplib.protocol import URI, MSRPData, ToPathHeader, FromPathHeader
from msrplib.testing.wsrelay import ws_frame, handshake_answer
from msrplib.websocket import (
    ChunkSplitter, MSRPWebSocketError, WebSocketClient, WebSocketHandshakeError, WebSocketMessageTooBig,
    WebSocketProtocolError, WebSocketServer, host_header, invalid_host, is_invalid_host, parse_ws_url,
    sdp_protocol)

OP_TEXT, OP_BINARY, OP_CONT, OP_CLOSE, OP_PING = 1, 2, 0, 8, 9
MASK = b'\x01\x02\x03\x04'


def chunk_bytes(tid='t1', body=b'', flag='$'):
    chunk = MSRPData(tid, method='SEND', data=body, contflag=flag)
    chunk.add_header(ToPathHeader(decoded=[URI.parse('msrp://a.invalid:1/s;ws')]))
    chunk.add_header(FromPathHeader(decoded=[URI.parse('msrp://b.example:2/t;tcp')]))
    return chunk.encode()


def open_pair(max_message_size=None):
    client = WebSocketClient('relay.example.com', '/msrp', max_message_size=max_message_size)
    server = WebSocketServer(max_message_size=max_message_size)
    payload, answer = server.receive(client.handshake())
    assert server.open and payload == b''
    payload, outgoing = client.receive(answer)
    assert client.open and client.subprotocol == 'msrp' and payload == b'' and outgoing == b''
    return client, server


# -- URLs, URIs, SDP

def test_parse_ws_url():
    assert parse_ws_url('ws://relay.example.com/msrp') == (False, 'relay.example.com', 80, '/msrp')
    assert parse_ws_url('wss://relay.example.com:8443') == (True, 'relay.example.com', 8443, '/')
    assert parse_ws_url('WSS://[::1]:9/a?b=c') == (True, '::1', 9, '/a?b=c')
    for bad in ['http://x/', 'ws://', 'ws://u:p@h/', 'ws://h:99999/', 'ws://h/#f', 'relay.example.com', None]:
        with pytest.raises(ValueError):
            parse_ws_url(bad)


def test_host_header_has_the_port_only_when_not_the_default():
    assert host_header(parse_ws_url('wss://h.example/')) == 'h.example'
    assert host_header(parse_ws_url('ws://h.example:8080/')) == 'h.example:8080'
    assert host_header(parse_ws_url('ws://[::1]:81/')) == '[::1]:81'


def test_invalid_hosts_are_random_and_in_the_invalid_domain():
    hosts = {invalid_host() for _ in range(50)}
    assert len(hosts) == 50
    assert all(is_invalid_host(h) and h.endswith('.invalid') and len(h) == 20 for h in hosts)
    assert is_invalid_host('X.INVALID') and not is_invalid_host('invalid.example.com')


def test_ws_transport_uri_round_trip_and_equality():
    uri = URI.parse('msrps://df7jal23ls0d.invalid:2855/98cjs;ws')
    assert (uri.transport, uri.use_tls, uri.host) == ('ws', True, 'df7jal23ls0d.invalid')
    assert str(uri) == 'msrps://df7jal23ls0d.invalid:2855/98cjs;ws'
    assert uri == URI.parse('msrps://DF7JAL23LS0D.invalid:2855/98cjs;WS')
    assert uri != URI.parse('msrps://df7jal23ls0d.invalid:2855/98cjs;tcp')
    assert uri != URI.parse('msrp://df7jal23ls0d.invalid:2855/98cjs;ws')


def test_incoming_paths_are_checked_against_a_websocket_uri():
    from msrplib.transport import MSRPTransport, MSRPNoSuchSessionError
    local = URI.parse('msrps://k3x9q0a7b2m1.invalid:53412/mine;ws')
    relay = URI.parse('msrps://relay.example.com:2855/r1;tcp')
    peer = URI.parse('msrps://peer.example.com:2855/theirs;tcp')
    transport = MSRPTransport(local)
    transport.set_local_path([relay])
    transport.set_full_remote_path([peer])

    def send(to_uri):
        chunk = MSRPData('t', method='SEND')
        chunk.add_header(ToPathHeader(decoded=[to_uri]))
        chunk.add_header(FromPathHeader(decoded=[relay, peer]))
        return chunk
    assert transport.check_incoming_SEND_chunk(send(URI.parse('msrps://K3X9Q0A7B2M1.INVALID:53412/mine;WS'))) is None
    for other in ['msrps://k3x9q0a7b2m1.invalid:53412/mine;tcp', 'msrp://k3x9q0a7b2m1.invalid:53412/mine;ws',
                  'msrps://k3x9q0a7b2m1.invalid:53412/other;ws']:
        assert isinstance(transport.check_incoming_SEND_chunk(send(URI.parse(other))), MSRPNoSuchSessionError)


def test_sdp_protocols():
    from msrplib.sdp import media_line, parse_media_line
    assert sdp_protocol(True) == 'TCP/WSS/MSRP' and sdp_protocol(False) == 'TCP/WS/MSRP'
    assert media_line(9, use_tls=True, websocket=True) == 'm=message 9 TCP/WSS/MSRP *'
    assert media_line(9, websocket=True) == 'm=message 9 TCP/WS/MSRP *'
    assert media_line(2855) == 'm=message 2855 TCP/MSRP *'
    line = parse_media_line('m=message 9 TCP/WSS/MSRP *')
    assert line.websocket and line.use_tls
    line = parse_media_line('m=message 9 tcp/ws/msrp *')
    assert line.websocket and not line.use_tls
    assert not parse_media_line('m=message 2855 TCP/TLS/MSRP *').websocket


# -- outgoing framing

def test_splitter_passes_one_whole_chunk_as_is():
    data = chunk_bytes(body=b'hello')
    assert ChunkSplitter().feed(data) == [data]


def test_splitter_cuts_joined_chunks_and_reassembles_cut_ones():
    chunks = [chunk_bytes('a1', b'x' * 300, '+'), chunk_bytes('b22'), chunk_bytes('a1', b'\r\n-------a2$\r\n', '#')]
    stream = b''.join(chunks)
    assert ChunkSplitter().feed(stream) == chunks
    for step in (1, 7, 64, 1000):
        splitter = ChunkSplitter()
        out = []
        for i in range(0, len(stream), step):
            out += splitter.feed(memoryview(stream)[i:i + step])
        assert out == chunks and splitter.buffered == 0


def test_splitter_refuses_what_is_not_msrp():
    with pytest.raises(ValueError):
        ChunkSplitter().feed(b'GET / HTTP/1.1\r\n')
    with pytest.raises(ValueError):
        ChunkSplitter().feed(b'x' * 5000)


# -- handshake

def test_client_asks_for_the_msrp_subprotocol_with_host_and_path():
    request = WebSocketClient('relay.example.com:8443', '/msrp?x=1').handshake()
    head = request.decode().lower()
    assert head.startswith('get /msrp?x=1 http/1.1\r\n')
    assert 'host: relay.example.com:8443\r\n' in head
    assert 'sec-websocket-protocol: msrp\r\n' in head
    assert 'upgrade: websocket' in head


@pytest.mark.parametrize('answer, status', [
    (b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n', 403),
    (b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi', 200),
])
def test_handshake_refused_is_an_error_with_the_status(answer, status):
    client = WebSocketClient('h', '/')
    client.handshake()
    client.receive(answer)
    assert not client.open
    assert isinstance(client.error, WebSocketHandshakeError) and client.error.status_code == status


@pytest.mark.parametrize('subprotocol', ['sip', None])
def test_handshake_without_the_msrp_subprotocol_is_an_error(subprotocol):
    client = WebSocketClient('h', '/')
    request = client.handshake()
    client.receive(handshake_answer(request, subprotocol=subprotocol))
    assert not client.open and isinstance(client.error, WebSocketHandshakeError)


def test_handshake_with_a_bad_accept_key_or_garbage_is_an_error():
    client = WebSocketClient('h', '/')
    client.handshake()
    client.receive(handshake_answer(b'Sec-WebSocket-Key: bm90IHRoZSByaWdodCBrZXk=\r\n'))
    assert isinstance(client.error, WebSocketHandshakeError)
    client = WebSocketClient('h', '/')
    client.handshake()
    client.receive(b'\x00\x01garbage\r\n\r\n')
    assert isinstance(client.error, WebSocketHandshakeError)


def test_end_of_stream_during_the_handshake_is_an_error():
    client = WebSocketClient('h', '/')
    client.handshake()
    client.receive(b'')
    assert isinstance(client.error, WebSocketHandshakeError)


def test_server_refuses_a_client_without_the_msrp_subprotocol():
    server = WebSocketServer()
    request = WebSocketClient('h', '/', subprotocol='sip').handshake()
    payload, answer = server.receive(request)
    assert answer.startswith(b'HTTP/1.1 400')
    assert isinstance(server.error, WebSocketHandshakeError) and not server.open


def test_chunks_right_after_the_101_are_not_lost():
    client = WebSocketClient('h', '/')
    request = client.handshake()
    data = chunk_bytes(body=b'early')
    payload, _ = client.receive(handshake_answer(request) + ws_frame(data))
    assert client.open and payload == data


# -- messages

def test_text_chunk_goes_in_a_text_frame_binary_in_a_binary_frame():
    client, server = open_pair()
    text = chunk_bytes(body='caf\N{LATIN SMALL LETTER E WITH ACUTE}'.encode())
    binary = chunk_bytes(body=b'\xff\xfe\x00')
    frame = client.send_message(text)
    assert frame[0] == 0x80 | OP_TEXT
    assert server.receive(frame) == (text, b'')
    frame = client.send_message(binary)
    assert frame[0] == 0x80 | OP_BINARY
    assert server.receive(frame) == (binary, b'')
    assert server.messages_received == 2


def test_fragmented_message_is_reassembled_into_the_stream():
    client, server = open_pair()
    data = chunk_bytes(body=b'fragmented body')
    frames = (ws_frame(data[:10], OP_BINARY, fin=False) + ws_frame(data[10:20], OP_CONT, fin=False) +
              ws_frame(b'', OP_CONT, fin=False) + ws_frame(data[20:], OP_CONT))
    payload, _ = client.receive(frames)
    assert payload == data and client.messages_received == 1


def test_server_side_requires_masked_frames_from_clients():
    client, server = open_pair()
    payload, outgoing = server.receive(ws_frame(chunk_bytes()))  # unmasked: a protocol error
    assert isinstance(server.error, WebSocketProtocolError) and server.error.code == 1002
    assert outgoing[0] == 0x80 | OP_CLOSE
    payload, outgoing = server.receive(ws_frame(chunk_bytes(), mask=MASK))
    assert (payload, outgoing) == (b'', b'')  # nothing more after an error


def test_ping_is_answered_with_a_pong_carrying_its_payload():
    client, server = open_pair()
    payload, outgoing = client.receive(ws_frame(b'are you there', OP_PING))
    assert payload == b''
    assert server.receive(outgoing) == (b'', b'')  # a masked pong the server accepts
    assert outgoing[0] == 0x8A


def test_close_handshake_from_the_peer():
    client, server = open_pair()
    payload, outgoing = client.receive(server.close())
    assert client.closed and client.close_code == 1000 and client.error is None
    assert outgoing[0] == 0x80 | OP_CLOSE  # the answer
    assert client.close() == b''
    with pytest.raises(MSRPWebSocketError):
        client.send_message(chunk_bytes())


def test_close_with_an_error_code_is_an_error():
    client, server = open_pair()
    client.receive(server.close(1011, 'oops'))
    assert client.closed and isinstance(client.error, WebSocketProtocolError) and client.error.code == 1011
    assert 'oops' in str(client.error)


def test_payload_before_a_bad_frame_is_delivered_then_the_error():
    client, server = open_pair()
    data = chunk_bytes(body=b'first')
    payload, outgoing = client.receive(ws_frame(data) + b'\x83\x00')  # opcode 3 is reserved
    assert payload == data
    assert isinstance(client.error, WebSocketProtocolError) and outgoing[0] == 0x80 | OP_CLOSE


def test_invalid_utf8_in_a_text_frame_is_an_error():
    client, server = open_pair()
    client.receive(ws_frame(b'MSRP \xff\xfe', OP_TEXT))
    assert isinstance(client.error, WebSocketProtocolError) and client.error.code == 1007


def test_message_over_max_message_size_is_refused_with_1009():
    client, server = open_pair(max_message_size=1000)
    payload, outgoing = client.receive(ws_frame(b'x' * 600, OP_BINARY, fin=False) + ws_frame(b'y' * 600, OP_CONT))
    assert isinstance(client.error, WebSocketMessageTooBig) and client.error.code == 1009
    assert outgoing[0] == 0x80 | OP_CLOSE
    assert len(payload) <= 1000


def test_message_size_counts_each_message_separately():
    client, server = open_pair(max_message_size=1000)
    payload, _ = client.receive(ws_frame(b'x' * 900) * 5)
    assert len(payload) == 4500 and client.error is None and client.messages_received == 5


def test_end_of_stream_without_a_close_frame_is_an_error_inside_a_frame_or_not():
    client, server = open_pair()
    client.receive(ws_frame(b'x' * 100, length=200))
    client.receive(b'')
    assert isinstance(client.error, WebSocketProtocolError)
    client, server = open_pair()
    client.receive(ws_frame(b'x' * 100)[:1])  # half a frame header
    client.receive(b'')
    assert isinstance(client.error, WebSocketProtocolError)
    client, server = open_pair()
    client.receive(ws_frame(b'x' * 100))
    client.receive(b'')
    assert client.closed and isinstance(client.error, WebSocketProtocolError) and client.error.code == 1006
    assert 'without a close frame' in str(client.error)


def test_frames_are_streamed_not_held_whole():
    client, server = open_pair()
    payload, _ = client.receive(ws_frame(b'z' * 1000, length=10 ** 12)[:600])  # a frame announcing a terabyte
    assert 0 < len(payload) <= 600


def test_websocket_module_is_sans_io():
    code = ('import sys, msrplib.websocket; '
            'bad = [m for m in ("gevent", "socket", "ssl") if m in sys.modules]; print(bad)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == '[]', out.stderr
