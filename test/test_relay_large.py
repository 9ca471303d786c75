"""Large messages through a real Kamailio relay with its default TCP/TLS settings (issue 18).

Only the routing script (msrplib/testing/kamailio.cfg.in) is ours.  The data is
streamed from a seeded generator and hashed as it arrives: nothing holds the
whole message in memory.  ``LARGE`` (1 GiB) is the size of the main variants (both
ends through the relay, TCP and TLS; one end through it, TCP and TLS) and of
the file ``msrp sendfile`` sends (``CLI_SIZE``); ``MEDIUM`` (256 MiB) that of
the remaining one-end combinations, to keep the suite short.  The environment
variables MSRP_RELAY_LARGE, MSRP_RELAY_MEDIUM and MSRP_RELAY_CLI change them.
"""

import hashlib
import io
import os
import random
import subprocess
import sys
import time

import gevent
import pytest

from msrplib.testing import KamailioRelay
from msrplib.testing.pytest_plugin import require_kamailio

from test_relay import connect, settings

from msrplib.connect import AcceptorDirect, ConnectorDirect
from msrplib.message import DEFAULT_RELAY_CHUNK_SIZE, MessageAssembler
from msrplib.protocol import URI
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPRelaySettings
from msrplib.session import GreenMSRPSession
from msrplib.transport import MSRPTransactionError

MiB = 1024 * 1024
#: Size of the main variants (both ends through the relay, TCP and TLS).
LARGE = int(os.environ.get('MSRP_RELAY_LARGE', 1024 * MiB))
#: Size of the other variants (one end through the relay).
MEDIUM = int(os.environ.get('MSRP_RELAY_MEDIUM', 256 * MiB))
#: Size of the file `msrp sendfile` sends through the relay.
CLI_SIZE = int(os.environ.get('MSRP_RELAY_CLI', LARGE))
STEP = 10
#: Bound for a whole transfer (generous: the machine may be shared).
TRANSFER_TIMEOUT = 600
#: The deadline for Success-Reports in the tests that provoke it.
REPORT_TIMEOUT = 2

TRANSPORTS = [pytest.param(False, id='tcp'), pytest.param(True, id='tls')]

# a gigabyte through the relay takes ~40 s on a quiet 2-core machine: the suite's 60 s default is too tight
pytestmark = pytest.mark.timeout(TRANSFER_TIMEOUT + 60)


@pytest.fixture(scope='module')
def relay():
    require_kamailio()
    r = KamailioRelay(debug=1).__enter__()  # warnings only: no log line per frame (gigabytes of log)
    yield r
    r.close()


class SeededStream(io.RawIOBase):
    """``size`` pseudo-random bytes from ``seed``, generated as they are read (tell/seek(0, 2) give the size)."""

    BLOCK = MiB

    def __init__(self, size, seed):
        self.size = size
        self.position = 0
        self._random = random.Random(seed)
        self._buffer = b''

    def readable(self):
        return True

    def tell(self):
        return self.position

    def seek(self, offset, whence=io.SEEK_SET):
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.position + offset, io.SEEK_END: self.size + offset}[whence]
        if target != self.position and not (whence == io.SEEK_END and offset == 0):
            raise io.UnsupportedOperation('a SeededStream is read in order')
        return target

    def read(self, n=-1):
        n = self.size - self.position if n is None or n < 0 else min(n, self.size - self.position)
        while len(self._buffer) < n:
            self._buffer += self._random.randbytes(self.BLOCK)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        self.position += n
        return data


def seeded_sha256(size, seed):
    stream = SeededStream(size, seed)
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(MiB), b''):
        digest.update(block)
    return digest.hexdigest()


class HashingSink:
    """A file for MessageAssembler(open_file=...): hashes what is written in order, keeps nothing."""

    def __init__(self, message=None):
        self.digest = hashlib.sha256()
        self.written = 0
        self.position = 0

    def seek(self, offset, whence=io.SEEK_SET):
        self.position = offset
        return offset

    def tell(self):
        return self.position

    def write(self, data):
        assert self.position == self.written, 'written out of order'
        self.digest.update(data)
        self.written += len(data)
        self.position += len(data)
        return len(data)

    def flush(self):
        pass


    def read(self, n=-1):
        return b''

    def close(self):
        pass


def topology(relay, tls, which, closing):
    """Sessions (sender, receiver) for ``which``: 'both' ends through the relay, or only the 'connector' or
    the 'acceptor'; the receiver reassembles into a HashingSink."""
    sinks = []

    def open_file(message):
        sinks.append(HashingSink())
        return sinks[-1]
    assembler = MessageAssembler(max_message_size=4 * 1024 * MiB, open_file=open_file)
    if which == 'both':
        sa, sb = connect(ConnectorRelay(settings(relay, tls)), AcceptorRelay(settings(relay, tls)), closing,
                         assembler=assembler)
    elif which == 'acceptor':
        uri = URI(host=relay.host, use_tls=tls, credentials=relay.client_ssl_context() if tls else None)
        sa, sb = connect(ConnectorDirect(), AcceptorRelay(settings(relay, tls)), closing, connector_uri=uri,
                         assembler=assembler)
    else:
        sa, sb = connect(ConnectorRelay(settings(relay, tls)), AcceptorDirect(), closing,
                         acceptor_uri=URI(host=relay.host, port=0, use_tls=tls), assembler=assembler)
    return sa, sb, sinks


def transfer(sa, sb, sinks, size, seed):
    """Send ``size`` seeded bytes from ``sa`` with the default settings; check they arrive whole at ``sb``."""
    assert sa.relayed
    with gevent.Timeout(TRANSFER_TIMEOUT):
        message = sa.send_large_message(SeededStream(size, seed), 'application/octet-stream')
        assert message.chunk_size == DEFAULT_RELAY_CHUNK_SIZE
        received = sb.receive_chunk()
        message.wait()
    assert received.size == size
    assert len(sinks) == 1 and sinks[0].written == size
    assert sinks[0].digest.hexdigest() == seeded_sha256(size, seed)
    assert message.confirmed  # the receiver's REPORTs cover every byte, not only the relay's 200s
    assert message.bytes_confirmed == size


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_large_message_both_ends_through_the_relay(relay, closing, tls):
    sa, sb, sinks = topology(relay, tls, 'both', closing)
    transfer(sa, sb, sinks, LARGE, seed=18)


@pytest.mark.parametrize('tls, which, size', [
    pytest.param(False, 'connector', LARGE, id='tcp-connector'),
    pytest.param(True, 'acceptor', LARGE, id='tls-acceptor'),
    pytest.param(False, 'acceptor', MEDIUM, id='tcp-acceptor'),
    pytest.param(True, 'connector', MEDIUM, id='tls-connector'),
])
def test_large_message_one_end_through_the_relay(relay, closing, tls, which, size):
    """Only one end through the relay: 1 GiB over TCP with the connector's relay and over TLS with the acceptor's;
    the two other combinations with MEDIUM (the suite's time)."""
    sa, sb, sinks = topology(relay, tls, which, closing)
    transfer(sa, sb, sinks, size, seed=81)


def test_relay_chunk_size_is_settable_per_relay_and_per_call(relay, closing):
    sa, sb = connect(ConnectorRelay(settings(relay, False, chunk_size=2048)), AcceptorRelay(settings(relay, False)),
                     closing, assembler=MessageAssembler())
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(3 * MiB + 5), 'application/octet-stream')
        assert message.chunk_size == 2048
        message.wait()
        assert sb.receive_chunk().size == 3 * MiB + 5
        # the other direction: the peer's relay is in the path too, so the default relay chunk size
        back = sb.send_large_message(b'x' * 50000, 'application/octet-stream')
        assert back.chunk_size == DEFAULT_RELAY_CHUNK_SIZE
        back.wait()
        pieces = [sa.receive_chunk() for _ in range(-(-50000 // DEFAULT_RELAY_CHUNK_SIZE))]
        assert b''.join(chunk.data for chunk in pieces) == b'x' * 50000
        assert pieces[-1].contflag == '$'
        explicit = sa.send_large_message(b'y' * 50000, 'application/octet-stream', chunk_size=4096)
        assert explicit.chunk_size == 4096
        explicit.wait()
        assert sb.receive_chunk().data == b'y' * 50000


def test_too_large_chunk_fails_fast_naming_the_cause(relay, closing):
    """Kamailio closes the connection on a frame of 16 KiB or more: the error says why, at once."""
    sa, sb = connect(ConnectorRelay(settings(relay, False)), AcceptorRelay(settings(relay, False)), closing,
                     assembler=MessageAssembler())
    started = time.monotonic()
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(4 * MiB), 'application/octet-stream', chunk_size=65536)
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert time.monotonic() - started < 5
    assert 'relay' in info.value.comment and 'chunk_size' in info.value.comment


def test_frame_refused_with_501_names_the_cause(relay, closing):
    """A frame between ~11 KB and 16 KiB gets Kamailio's 501."""
    sa, sb = connect(ConnectorRelay(settings(relay, False)), AcceptorRelay(settings(relay, False)), closing,
                     assembler=MessageAssembler())
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(100000), 'application/octet-stream', chunk_size=12000)
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert info.value.code == 501
    assert 'relay' in info.value.comment and 'chunk_size' in info.value.comment


def _gone_session(relay, closing):
    """A sender whose peer's session at the relay does not exist: the relay answers 200 hop by hop."""
    connector = ConnectorRelay(settings(relay, False))
    acceptor = AcceptorRelay(settings(relay, False))
    sa, sb = connect(connector, acceptor, closing, assembler=MessageAssembler())
    bogus = URI(host=relay.host, port=relay.port, session_id='s1.2.3', use_tls=False)
    sa.msrp.set_full_remote_path([bogus, sb.msrp.local_uri])
    sa.SUCCESS_REPORT_TIMEOUT = REPORT_TIMEOUT
    return sa


@pytest.mark.parametrize('size', [pytest.param(10, id='small'), pytest.param(4 * MiB, id='large')])
def test_message_to_a_session_that_does_not_exist_fails_within_the_deadline(relay, closing, size):
    sa = _gone_session(relay, closing)
    started = time.monotonic()
    with gevent.Timeout(REPORT_TIMEOUT + STEP):
        message = sa.send_large_message(b'z' * size, 'text/plain', success_report=True)
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert info.value.code == 408
    assert 'No Success-Report' in info.value.comment
    assert time.monotonic() - started < REPORT_TIMEOUT + 3
    assert not message.confirmed


def test_far_end_gone_fails_within_the_deadline(relay, closing):
    sa, sb = connect(ConnectorRelay(settings(relay, False)), AcceptorRelay(settings(relay, False)), closing,
                     assembler=MessageAssembler())
    sa.SUCCESS_REPORT_TIMEOUT = REPORT_TIMEOUT
    sb.msrp.loseConnection(wait=False)
    gevent.sleep(0.2)
    with gevent.Timeout(REPORT_TIMEOUT + STEP):
        message = sa.send_large_message(b'hello?', 'text/plain', success_report=True)
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert info.value.code == 408 and 'No Success-Report' in info.value.comment


# ---------------------------------------------------------------------------
# A receiver that stops reading: the relay's write queue must not overflow

PAUSE = 5  #: seconds the receiver process stops, after PAUSE_AFTER bytes
PAUSE_AFTER = 8 * MiB


def paused_receiver(settings_json):
    """Child process: accept one peer through the relay, stop the whole process for PAUSE s once PAUSE_AFTER bytes
    arrived, then print the size and sha256 of what was received (JSON)."""
    import json
    import ssl
    info = json.loads(settings_json)
    context = ssl.create_default_context(cafile=info['ca']) if info['tls'] else None
    relay_settings = MSRPRelaySettings(info['domain'], info['username'], info['password'], host=info['host'],
                                       port=info['port'], use_tls=info['tls'], credentials=context)

    class PausingSink(HashingSink):
        def write(self, data):
            if self.written >= PAUSE_AFTER and not getattr(self, 'paused', False):
                self.paused = True
                time.sleep(PAUSE)  # blocks this process: nothing is read from the relay meanwhile
            return HashingSink.write(self, data)
    sinks = []

    def open_file(message):
        sinks.append(PausingSink())
        return sinks[-1]
    acceptor = AcceptorRelay(relay_settings)
    print(' '.join(str(uri) for uri in acceptor.prepare()), flush=True)
    with gevent.Timeout(TRANSFER_TIMEOUT):
        session = GreenMSRPSession(acceptor.complete(None),
                                   assembler=MessageAssembler(max_message_size=4 * 1024 * MiB, open_file=open_file))
        message = session.receive_chunk()
        session.shutdown()
    print(json.dumps({'size': message.size, 'sha256': sinks[0].digest.hexdigest()}), flush=True)


@pytest.mark.parametrize('tls', TRANSPORTS)
def test_receiver_that_stops_reading_does_not_overflow_the_relay(relay, closing, tls):
    """Paced on the receiver's REPORTs, the sender waits while the receiver is stopped: Kamailio's write queue
    towards the receiver (default tcp_conn_wq_max) does not overflow.  Trusting the relay's 200s instead
    (sa.REPORT_WINDOW = 0) Kamailio logs "write queue full", marks the connection bad and resets it."""
    import json
    size = 64 * MiB
    info = {'domain': relay.domain, 'username': relay.username, 'password': relay.password, 'host': relay.host,
            'port': relay.tls_port if tls else relay.port, 'tls': tls, 'ca': relay.ca_file}
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--paused-receiver', json.dumps(info)],
                             stdout=subprocess.PIPE, text=True)
    try:
        path = [URI.parse(text) for text in child.stdout.readline().split()]
        assert path, 'the receiver did not start'
        connector = ConnectorRelay(settings(relay, tls))
        closing.append(connector)
        with gevent.Timeout(STEP):
            connector.prepare()
            sa = GreenMSRPSession(connector.complete(path))
        closing.append(sa)
        with gevent.Timeout(TRANSFER_TIMEOUT):
            message = sa.send_large_message(SeededStream(size, 5), 'application/octet-stream')
            message.wait()
        result = json.loads(child.stdout.readline())
    finally:
        try:
            child.wait(timeout=STEP)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    assert result == {'size': size, 'sha256': seeded_sha256(size, 5)}
    assert message.confirmed
    assert 'write queue full' not in relay.log_text()


# ---------------------------------------------------------------------------
# The command line


def _msrp(*args, **kwargs):
    return subprocess.Popen([sys.executable, '-m', 'msrplib'] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _relay_args(relay):
    return ['--relay', '%s:%s@%s' % (relay.username, relay.password, relay.domain), '--relay-host', relay.host,
            '--relay-port', str(relay.port), '--relay-no-tls']


def _listen(relay, save_dir):
    listener = _msrp('listen', '--count', '1', '--save-dir', save_dir, *_relay_args(relay))
    line = listener.stdout.readline().strip()
    assert line.startswith('path: msrp://'), (line, listener.stderr.read() if listener.poll() is not None else '')
    return listener, line[len('path: '):]


def test_cli_sendfile_through_the_relay(relay, tmp_path):
    source = tmp_path / 'big.bin'
    stream = SeededStream(CLI_SIZE, 7)
    with open(source, 'wb') as f:
        for block in iter(lambda: stream.read(MiB), b''):
            f.write(block)
    save_dir = tmp_path / 'in'
    save_dir.mkdir()
    listener, path = _listen(relay, str(save_dir))
    try:
        sender = _msrp('sendfile', '--to', path, '--no-progress', *_relay_args(relay), str(source))
        out, err = sender.communicate(timeout=TRANSFER_TIMEOUT)
        assert sender.returncode == 0, err
        listener_out, listener_err = listener.communicate(timeout=STEP * 3)
    finally:
        for process in (listener,):
            if process.poll() is None:
                process.kill()
    saved = save_dir / 'big.bin'
    assert 'saved' in listener_out, listener_out + listener_err
    assert saved.stat().st_size == CLI_SIZE
    digest = hashlib.sha256()
    with open(saved, 'rb') as f:
        for block in iter(lambda: f.read(MiB), b''):
            digest.update(block)
    assert digest.hexdigest() == seeded_sha256(CLI_SIZE, 7)


def test_cli_send_to_a_session_that_does_not_exist_exits_non_zero(relay):
    # a path through the relay to a session it does not know: the relay answers 200 and drops the message
    path = 'msrp://%s:%d/s1.2.3;tcp msrp://127.0.0.1:9/abc;tcp' % (relay.host, relay.port)
    started = time.monotonic()
    sender = _msrp('send', '--to', path, '--report-timeout', str(REPORT_TIMEOUT), *_relay_args(relay), 'hello')
    out, err = sender.communicate(timeout=REPORT_TIMEOUT + STEP * 2)
    assert sender.returncode != 0, (out, err)
    assert 'Success-Report' in err
    assert time.monotonic() - started < REPORT_TIMEOUT + STEP


def test_cli_send_without_success_report_says_delivery_is_not_confirmed(relay):
    path = 'msrp://%s:%d/s1.2.3;tcp msrp://127.0.0.1:9/abc;tcp' % (relay.host, relay.port)
    sender = _msrp('send', '--to', path, '--no-success-report', *_relay_args(relay), 'hello')
    out, err = sender.communicate(timeout=STEP * 2)
    assert sender.returncode == 0, (out, err)
    assert 'sent; delivery not confirmed' in out + err


# ---------------------------------------------------------------------------
# Without a relay: the deadline and the receiver's progress reports


def direct_pair(closing, assembler=None, automatic_reports=True, session_class=GreenMSRPSession):
    """Two sessions over loopback: the sender, and the receiver with ``assembler``."""
    acceptor, connector = AcceptorDirect(), ConnectorDirect()
    closing.extend([acceptor, connector])
    with gevent.Timeout(STEP):
        path = acceptor.prepare(URI(host='127.0.0.1', port=0))
        connector_path = connector.prepare(URI(host='127.0.0.1'))
        job = gevent.spawn(acceptor.complete, connector_path)
        sa = session_class(connector.complete(path))
        sb = session_class(job.get(), assembler=assembler, automatic_reports=automatic_reports)
    closing.extend([sa, sb])
    return sa, sb


def test_no_success_report_fails_with_408_after_the_deadline(closing):
    sa, sb = direct_pair(closing, automatic_reports=False)  # answers 200, never reports
    assert not sa.relayed
    sa.SUCCESS_REPORT_TIMEOUT = 0.5
    started = time.monotonic()
    with gevent.Timeout(STEP):
        message = sa.send_large_message(b'hello', 'text/plain', success_report=True)
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert 0.5 <= time.monotonic() - started < 3
    assert info.value.code == 408 and 'No Success-Report within 0.5 s' in info.value.comment
    assert message.bytes_acknowledged == 5 and not message.confirmed


def test_receiver_reports_progress_while_reassembling(closing):
    """Without automatic reports the message's own REPORT never comes, but the progress reports do."""
    sa, sb = direct_pair(closing, assembler=MessageAssembler(), automatic_reports=False)
    sa.SUCCESS_REPORT_TIMEOUT = 1
    size = 1024 * 1024 + 100
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(size), 'application/octet-stream', success_report=True,
                                        chunk_size=8192)
        incoming = sb.receive_chunk()
        with pytest.raises(MSRPTransactionError) as info:
            message.wait()
    assert incoming.size == size
    # every 256 KiB reported, never the chunk that completed the message: that one is the application's
    assert message.bytes_confirmed == 4 * sb.PROGRESS_REPORT_INTERVAL
    assert 'confirmed %d of %d bytes' % (4 * sb.PROGRESS_REPORT_INTERVAL, size) in info.value.comment


def test_direct_sessions_keep_the_direct_chunk_size(closing):
    sa, sb = direct_pair(closing, assembler=MessageAssembler())
    with gevent.Timeout(STEP):
        message = sa.send_large_message(os.urandom(300000), 'application/octet-stream')
        assert message.chunk_size == sa.MESSAGE_CHUNK_SIZE and message.report_window is None
        message.wait()
        assert sb.receive_chunk().size == 300000
    assert not message.confirmed  # no Success-Report asked for: only the 200s


if __name__ == '__main__' and sys.argv[1:2] == ['--paused-receiver']:
    paused_receiver(sys.argv[2])
