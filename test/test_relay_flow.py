"""Flow control through a real Kamailio relay with its default TCP/TLS settings: its write queues never overflow.

Kamailio forwards a frame on the next hop's connection at once when the
socket takes it, else it queues the frame (``tcp_conn_wq_max``, 32 KiB per
connection by default; over TLS while the handshake runs, the tls module's
clear-text queue, ``con_ct_wq_max``, 64 KiB).  Beyond that it logs ``write
queue full`` / ``ct write buffer full``, drops the frame and marks the
connection bad.  When the next hop's connection does not exist yet -- the
first frames of a session whose both ends use the same relay (Kamailio
forwards to itself), or whose far end has no relay (Kamailio connects to
it) -- every frame goes to that queue until Kamailio's tcp_main process
has taken the new connection over.  On a loaded machine tcp_main runs late;
these tests make it late on purpose (SIGSTOP for a second) while the
session starts and a large message goes out: the sender may then have at
most one chunk in flight (``MSRPSession.RELAY_START_WINDOW``), and the
message arrives whole.  doc/relay.md ("Flow control") has the bound.
"""

import os
import signal
import socket
import struct

import gevent
import pytest

from msrplib.connect import AcceptorDirect
from msrplib.message import MessageAssembler, OutgoingMessage
from msrplib.protocol import URI, ByteRange, ByteRangeHeader, StatusHeader
from msrplib.relay import AcceptorRelay, ConnectorRelay
from msrplib.session import GreenMSRPSession
from msrplib.testing import KamailioRelay
from msrplib.testing.pytest_plugin import require_kamailio

from test_message import RecordingTransport
from test_relay import settings
from test_relay_large import HashingSink, SeededStream, direct_pair, seeded_sha256

MiB = 1024 * 1024
STEP = 10
#: How long Kamailio's tcp_main process is stopped while the session starts.
STALL = 1.0
#: What Kamailio logs when it drops a frame because a connection's queue is full.
OVERFLOW_LINES = ('write queue full', 'ct write buffer full')

TRANSPORTS = [pytest.param(False, id='tcp'), pytest.param(True, id='tls')]

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------
# The start window on its own (no relay process needed)


def report(transport, message, start, end, total):
    chunk = transport.make_chunk(method='REPORT', message_id=message.message_id)
    chunk.add_header(StatusHeader('000 200 OK'))
    chunk.add_header(ByteRangeHeader(decoded=ByteRange(start, end, total)))
    return chunk


def send_while_ready(message, transport):
    while message.ready:
        message.next_chunk(transport)
    return message.bytes_sent


def test_start_window_holds_the_message_until_the_first_report():
    size = 1000000
    message = OutgoingMessage(b'x' * size, 'application/octet-stream', chunk_size=8192, report_window=MiB,
                              start_window=8192, window=1000)
    transport = RecordingTransport().transport
    first = message.next_chunk(transport)
    assert message.bytes_sent == 8192 and not message.ready  # one chunk, then wait for the receiver
    message.handle_report(report(transport, message, 1, 8192, size))
    assert message.bytes_confirmed == 8192 and message.ready
    assert first.byte_range.start == 1
    # then four times the step the receiver's last REPORT confirmed: 4 x 8 KiB beyond the 8 KiB confirmed
    assert send_while_ready(message, transport) == 8192 + 4 * 8192
    message.handle_report(report(transport, message, 8193, 16384, size))  # a step of 8 KiB again
    assert send_while_ready(message, transport) == 16384 + 4 * 8192
    message.handle_report(report(transport, message, 16385, 32768, size))  # 16 KiB: the window doubles
    assert send_while_ready(message, transport) == 32768 + 4 * 16384
    message.handle_report(report(transport, message, 32769, 98304, size))  # 64 KiB
    assert send_while_ready(message, transport) == 98304 + 4 * 65536
    message.handle_report(report(transport, message, 98305, 360448, size))  # 256 KiB: 1 MiB, report_window
    assert send_while_ready(message, transport) == 360448 + MiB if 360448 + MiB < size else size
    with pytest.raises(ValueError):
        OutgoingMessage(b'x', 'text/plain', start_window=0)


def test_window_follows_the_receivers_steps_and_stays_under_report_window():
    size = 4 * MiB
    message = OutgoingMessage(b'x' * size, 'application/octet-stream', chunk_size=8192, report_window=MiB,
                              start_window=8192, window=1000)
    transport = RecordingTransport().transport
    message.next_chunk(transport)
    message.handle_report(report(transport, message, 1, 524288, size))  # a receiver with large steps
    assert send_while_ready(message, transport) == 524288 + MiB  # report_window, not 4 x 512 KiB
    message.handle_report(report(transport, message, 524289, 532480, size))  # then a step of one chunk
    assert not message.ready  # 4 x 8 KiB: the window shrinks with the steps
    assert message.bytes_sent - message.bytes_confirmed > 4 * 8192
    message.handle_report(report(transport, message, 1, 532480, size))  # nothing new: the step stays
    assert not message.ready
    message.handle_report(report(transport, message, 532481, 1572864, size))  # catches up to what was sent
    assert message.ready and message.bytes_confirmed == message.bytes_sent


def test_start_window_ends_after_start_wait_without_a_report():
    message = OutgoingMessage(b'x' * 100000, 'application/octet-stream', chunk_size=8192, report_window=MiB,
                              start_window=8192, start_wait=0.05)
    woken = []
    message._wake = lambda: woken.append(message.bytes_sent)  # what the session's writer installs
    transport = RecordingTransport().transport
    message.next_chunk(transport)
    assert not message.ready
    with gevent.Timeout(STEP):
        while not woken:
            gevent.sleep(0.01)
    assert woken == [8192] and message.ready  # no REPORT came: the rest goes, paced on report_window
    with pytest.raises(ValueError):
        OutgoingMessage(b'x', 'text/plain', start_wait=-1)


class RecordingSession(GreenMSRPSession):
    """Records the REPORTs of its messages (their Byte-Range) with what it had sent when each came."""

    def __init__(self, *args, **kwargs):
        GreenMSRPSession.__init__(self, *args, **kwargs)
        self.reports = []

    def _handle_incoming_REPORT(self, chunk):
        message = self._outgoing_messages.get(chunk.message_id)
        if message is not None:
            self.reports.append((tuple(chunk.byte_range)[:2], message.bytes_sent))
        GreenMSRPSession._handle_incoming_REPORT(self, chunk)


class RelayedSession(RecordingSession):
    """Takes its (direct, loopback) path for one through a relay."""
    relayed = True


def loopback_pair(closing, session_class):
    return direct_pair(closing, assembler=MessageAssembler(), session_class=session_class)


def doubling_steps(size, chunk, cap):
    """The receiver's progress reports for a message of ``size`` bytes in ``chunk``-byte chunks through a relay:
    the first chunk at once, then each time the bytes received double, in steps of at most ``cap`` bytes (and at
    most twice the last step), each reported at the first chunk boundary past it; the message's own REPORT at the
    end."""
    reports, reported, last = [(1, chunk)], chunk, chunk
    while True:
        step = min(cap, reported, 2 * last)
        end = reported + -(-step // chunk) * chunk  # rounded up to a chunk's end
        if end >= size:
            return reports + [(1, size)]
        reports.append((reported + 1, end))
        last, reported = end - reported, end


def test_relayed_message_waits_for_the_first_report_which_the_receiver_sends_at_once(closing):
    """Through a relay the sender sends one chunk, the receiver reports it at once, and only then the rest goes:
    the receiver reports each time its bytes double, up to a quarter of RELAY_PATH_BYTES, and the sender keeps
    at most four of those steps in flight."""
    sa, sb = loopback_pair(closing, RelayedSession)
    sb.RELAY_PATH_BYTES = 256 * 1024  # steps of at most 64 KiB
    size = 2 * MiB + 5
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(size), 'application/octet-stream')
        assert message.chunk_size == sa.RELAY_CHUNK_SIZE == sa.RELAY_START_WINDOW
        received = sb.receive_chunk()
        message.wait()
    assert received.size == size and message.confirmed
    assert sa.reports[0] == ((1, 8192), 8192)  # the first chunk, reported before a second one went out
    ranges = [r for r, _ in sa.reports]
    assert ranges == doubling_steps(size, 8192, 65536)
    assert ranges[:5] == [(1, 8192), (8193, 16384), (16385, 32768), (32769, 65536), (65537, 131072)]
    # in flight: never more than four of the last step (+ what one write takes) beyond what was confirmed
    last = 8192
    for (start, end), sent in sa.reports[:-1]:
        assert sent - (start - 1) <= 4 * last + sa.RELAY_WRITE_BYTES, (start, end, sent, last)
        last = end - start + 1 if start > 1 else end


def test_receiver_steps_are_capped_by_what_its_relay_connection_holds(closing):
    """Without RELAY_PATH_BYTES the receiver asks its transport what the relay's connection to it holds for sure
    (MSRPTransport.inbound_path_bytes) and never reports in larger steps than a quarter of it: on a link with a
    1500-byte MTU that is 88,704 bytes, so steps of three chunks and a sender's window of ~96 KiB."""
    sa, sb = loopback_pair(closing, RelayedSession)
    sb.PROGRESS_REPORT_INTERVAL = 16 * MiB  # the estimate alone caps the steps
    sb.msrp.inbound_path_bytes = lambda: 16 * 1448 + 65536  # what a 1500-byte-MTU link gives (this one: loopback)
    size = 4 * MiB
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(size), 'application/octet-stream')
        sb.receive_chunk()
        message.wait()
    ranges = [r for r, _ in sa.reports]
    assert ranges == doubling_steps(size, 8192, 88704 // 4)
    assert ranges[3:5] == [(32769, 57344), (57345, 81920)]  # 22,176 bytes rounded up to three chunks
    assert all(sent - confirmed[1] <= 4 * 24576 + sa.RELAY_WRITE_BYTES for confirmed, sent in sa.reports[5:])


def test_a_step_is_at_most_twice_the_last_so_the_senders_window_lets_it_through(closing):
    """The sender keeps four of the last step in flight: however much the estimate of the path grows (a
    connection's segment size grows on loopback), the next step is at most twice the last, else the receiver
    would wait for bytes the sender may not send."""
    sa, sb = loopback_pair(closing, RelayedSession)
    sb.RELAY_PATH_BYTES = 4 * MiB
    assert sb._relayed_report_step(256 * 1024, MiB, 24576) == 49152
    assert sb._relayed_report_step(256 * 1024, 16384, 8192) == 16384  # at most the bytes reported before
    assert sb._relayed_report_step(256 * 1024, 4 * MiB, 512 * 1024) == 256 * 1024  # at most the interval
    sb.RELAY_PATH_BYTES = 96 * 1024
    assert sb._relayed_report_step(256 * 1024, 4 * MiB, 512 * 1024) == 24576  # a quarter of the path


def test_messages_received_at_once_share_the_path(closing):
    """Two large messages at the same time through one session: the receiver gives each half of the path, so the
    bytes in flight of both stay within RELAY_PATH_BYTES (+ a write and the steps set before the second began)."""
    sa, sb = loopback_pair(closing, RelayedSession)
    sb.RELAY_PATH_BYTES = 256 * 1024  # one message alone: steps of 64 KiB
    size = 2 * MiB
    samples = []
    with gevent.Timeout(STEP):
        messages = [sa.send_large_message(os.urandom(size), 'application/octet-stream') for _ in range(2)]

        def sample():
            while not all(m.done for m in messages):
                samples.append([m.bytes_sent - m.bytes_confirmed for m in messages])
                gevent.sleep(0.001)
        sampler = gevent.spawn(sample)
        received = [sb.receive_chunk(), sb.receive_chunk()]
        for message in messages:
            message.wait()
        sampler.kill()
    assert sorted(m.size for m in received) == [size, size] and all(m.confirmed for m in messages)
    assert max(sum(sample) for sample in samples[len(samples) // 4:]) <= 256 * 1024 + 2 * sa.RELAY_WRITE_BYTES
    # both started at once (one chunk each until its first REPORT): every step is at most half of 64 KiB
    assert max(r[1] - r[0] + 1 for r, _ in sa.reports if r[0] > 1) == 32768


def test_inbound_path_bytes_comes_from_the_segment_size_this_end_advertised(closing):
    """16 segments + 64 KiB: Linux starts the relay's send buffer at 20 segments of the size the receiver
    advertised (its tcp_info advmss: 65,483 bytes on loopback, 1,448 at MTU 1500)."""
    sa, sb = loopback_pair(closing, RecordingSession)
    for session in (sa, sb):
        info = session.msrp._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        advmss = struct.unpack_from('I', info, 84)[0]
        assert advmss == 65483  # loopback's MTU (65,536) less the IP and TCP headers with timestamps
        assert session.msrp.inbound_path_bytes() == 16 * advmss + 65536
    sb.msrp._sock.close()
    assert sb.msrp.inbound_path_bytes() is None  # a socket that cannot tell


def test_receiver_that_reports_only_whole_messages_gets_them_after_start_wait(closing):
    """RFC 4975 lets a receiver report a message only once it has all of it: through a relay the sender holds
    the message at RELAY_START_WINDOW for RELAY_START_WAIT, then sends the rest (held for good, it failed with 408
    once SUCCESS_REPORT_TIMEOUT passed)."""
    sa, sb = loopback_pair(closing, RelayedSession)
    sb.PROGRESS_REPORT_INTERVAL = 0  # no progress reports, no early one: one REPORT for the whole message
    sa.RELAY_START_WAIT = 0.5
    sa.SUCCESS_REPORT_TIMEOUT = 5
    size = 300000
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(size), 'application/octet-stream')
        gevent.sleep(0.2)
        assert message.bytes_sent == sa.RELAY_START_WINDOW  # still held: the receiver may yet report
        received = sb.receive_chunk()
        message.wait()
    assert received.size == size and message.confirmed
    assert sa.reports == [((1, size), size)]


def test_direct_path_has_no_start_window_and_no_early_report(closing):
    sa, sb = loopback_pair(closing, RecordingSession)
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(300000), 'application/octet-stream', success_report=True,
                                        chunk_size=8192)
        sb.receive_chunk()
        message.wait()
    assert message.start_window is None and message.confirmed
    assert [r for r, _ in sa.reports] == [(1, sb.PROGRESS_REPORT_INTERVAL), (1, 300000)]


# ---------------------------------------------------------------------------
# Kamailio's tcp_main late while a session starts


@pytest.fixture
def relay():
    """A fresh relay per test: its onward connections do not exist yet."""
    require_kamailio()
    r = KamailioRelay(debug=1).__enter__()
    yield r
    r.close()


def tcp_main_pid(relay, port):
    """The pid of Kamailio's tcp_main: the only process that holds the listening socket of ``port``."""
    inode = None
    for name in ('/proc/net/tcp', '/proc/net/tcp6'):
        with open(name) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(':%04X' % port) and fields[3] == '0A':  # 0A: LISTEN
                    inode = fields[9]
    assert inode is not None, 'no listening socket on %d' % port
    target = 'socket:[%s]' % inode
    holders = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/%s/comm' % pid) as f:
                if f.read().strip() != 'kamailio':
                    continue
            if any(os.readlink('/proc/%s/fd/%s' % (pid, fd)) == target for fd in os.listdir('/proc/%s/fd' % pid)):
                holders.append(int(pid))
        except OSError:
            continue
    assert len(holders) == 1, holders
    return holders[0]


def assert_no_overflow(relay):
    log = relay.log_text()
    for line in OVERFLOW_LINES:
        assert line not in log, relay.log_tail()


@pytest.mark.parametrize('which', ['both', 'connector'])
@pytest.mark.parametrize('tls', TRANSPORTS)
def test_late_relay_does_not_overflow_at_the_start(relay, closing, tls, which):
    """Kamailio's tcp_main is stopped while the session binds and a 4 MiB message starts: every frame for the
    connection Kamailio opens meanwhile waits in its queue.  The sender stops after one chunk until the
    receiver's first REPORT; the queue holds it, and everything arrives once tcp_main runs again.  (Paced only
    on REPORT_WINDOW, 1 MiB, the sender had sent 128 chunks by then: Kamailio kept three (over TLS, none) and
    dropped the others, and the message failed with 408 after SUCCESS_REPORT_TIMEOUT.)"""
    size = 4 * MiB
    sinks = []

    def open_file(message):
        sinks.append(HashingSink())
        return sinks[-1]
    connector = ConnectorRelay(settings(relay, tls))
    if which == 'both':
        acceptor, acceptor_uri = AcceptorRelay(settings(relay, tls)), None
    else:
        acceptor, acceptor_uri = AcceptorDirect(), URI(host=relay.host, port=0, use_tls=tls)
    closing.extend([connector, acceptor])
    with gevent.Timeout(STEP):
        acceptor_path = acceptor.prepare(acceptor_uri)
        connector_path = connector.prepare(None)
    stopped = tcp_main_pid(relay, relay.tls_port if tls else relay.port)
    os.kill(stopped, signal.SIGSTOP)
    try:
        with gevent.Timeout(STEP):
            job = gevent.spawn(acceptor.complete, connector_path)
            sa = GreenMSRPSession(connector.complete(acceptor_path))
            closing.append(sa)
            assert sa.relayed
            sa.RELAY_START_WAIT = None  # however late the first REPORT (the default gives up after 2 s)
            message = sa.send_large_message(SeededStream(size, 3), 'application/octet-stream')
            # the sender sends what its windows allow; the relay's worker holding the sender's connection (it
            # has just read the AUTH) answers each frame and queues it for the connection tcp_main has not taken
            with gevent.Timeout(STEP / 2, False):
                while message.ready or message.bytes_acknowledged < message.bytes_sent:
                    gevent.sleep(0.01)
            gevent.sleep(STALL)
        assert message.bytes_sent <= sa.RELAY_START_WINDOW  # the start window, not the 1 MiB report window
    finally:
        os.kill(stopped, signal.SIGCONT)
    try:
        with gevent.Timeout(STEP * 6):
            sb = GreenMSRPSession(job.get(), assembler=MessageAssembler(max_message_size=size, open_file=open_file))
            closing.append(sb)
            received = sb.receive_chunk()
            message.wait()
    finally:
        job.kill()
    assert received.size == size
    assert sinks[0].written == size and sinks[0].digest.hexdigest() == seeded_sha256(size, 3)
    assert message.confirmed and message.bytes_confirmed == size
    assert_no_overflow(relay)
