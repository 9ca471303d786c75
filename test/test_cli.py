"""The ``msrp`` command (msrplib/cli.py), run as subprocesses: ``python -m msrplib listen|send|sendfile|chat``.

Every process runs under a timeout and is killed in a ``finally``.  The
Kamailio tests start ``msrplib.testing.KamailioRelay``; they are
skipped when Kamailio is not installed, except under ``CI=true``.
"""

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import gevent
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


from msrplib import cli  # noqa: E402
from msrplib.connect import ConnectorDirect  # noqa: E402
from msrplib.protocol import URI, ContentDispositionHeader, MSRPHeader  # noqa: E402
from msrplib.session import GreenMSRPSession  # noqa: E402
from msrplib.transport import MSRPTransactionError  # noqa: E402

STEP = 10  # seconds: upper bound for one process step


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHONUNBUFFERED'] = '1'
    env.pop('MSRP_RELAY_PASSWORD', None)
    return env


def msrp(*args, stdin=subprocess.DEVNULL, timeout=STEP, cwd=None, env=None):
    """Run ``python -m msrplib ARGS`` to completion; return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, '-m', 'msrplib'] + list(args), stdin=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env or _env())


class Proc:
    """A running ``python -m msrplib ...`` whose stdout and stderr lines are read by threads."""

    def __init__(self, *args, cwd=None, stdin=subprocess.DEVNULL):
        self.process = subprocess.Popen([sys.executable, '-m', 'msrplib'] + list(args), stdin=stdin,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                        env=_env(), bufsize=1)
        self.lines = queue.Queue()
        self.unread = []
        self.stdout = []
        self.stderr = []
        self.readers = [threading.Thread(target=self._read, args=(stream, store), daemon=True)
                        for stream, store in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, store):
        for line in stream:
            store.append(line.rstrip('\n'))
            if store is self.stdout:
                self.lines.put(line.rstrip('\n'))

    def expect(self, prefix, timeout=STEP):
        """The first stdout line not taken yet that starts with ``prefix`` (other lines stay for later calls)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, line in enumerate(self.unread):
                if line.startswith(prefix):
                    return self.unread.pop(index)
            try:
                self.unread.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError('no line starting with %r; stdout=%r stderr=%r'
                                     % (prefix, self.stdout, self.stderr))

    def path(self):
        return self.expect('path: ')[len('path: '):]

    def write(self, text):
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def wait(self, timeout=STEP):
        """Wait for the exit status; the output the process wrote is then all in stdout/stderr."""
        status = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return status

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STEP)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


@pytest.fixture
def procs():
    """Start processes with ``procs(*args, ...)``; every one is killed at the end of the test."""
    started = []

    def start(*args, **kwargs):
        proc = Proc(*args, **kwargs)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()


# ---------------------------------------------------------------------------
# listen + send


def test_listen_prints_text_messages_from_send(procs):
    listener = procs('listen', '--count', '2')
    path = listener.path()
    sent = msrp('send', '--to', path, 'hello world', 'second message')
    assert (sent.returncode, sent.stdout, sent.stderr) == (0, '', '')
    first = listener.expect('message from ')
    assert first.endswith(': hello world')
    assert first.startswith('message from msrp://127.0.0.1:')
    assert listener.expect('message from ').endswith(': second message')
    assert listener.wait() == 0


def test_listen_reply_answers_each_text_message_before_its_success_report(procs):
    listener = procs('listen', '--count', '2', '--reply', 'got it \u2713')
    path = listener.path()
    with gevent.Timeout(STEP):
        connector = ConnectorDirect()
        connector.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        session = GreenMSRPSession(connector.complete(cli.parse_path(path)))
        try:
            for text in ('one', 'two'):
                session.send_large_message(text, 'text/plain', success_report=True).wait()
                # the answer came before the Success-Report: it is already queued when delivery is confirmed
                assert session.incoming.qsize() == 1
                answer = session.receive_chunk()
                assert (answer.method, answer.data, answer.content_type) == (
                    'SEND', 'got it \u2713'.encode(), 'text/plain; charset=utf-8')
        finally:
            session.shutdown()
    assert listener.expect('message from ').endswith(': one')
    assert listener.wait() == 0


def test_listen_escapes_terminal_control_characters(procs):
    listener = procs('listen', '--count', '1')
    sent = msrp('send', '--to', 'path: ' + listener.path(), 'red \x1b[31mtext\nnext line', '--log-traffic')
    assert sent.returncode == 0, sent.stderr
    assert 'SENT 127.0.0.1:' in sent.stderr and 'Content-Type: text/plain' in sent.stderr   # the wire log
    line = listener.expect('message from ')
    assert line.endswith(': red \\x1b[31mtext')
    assert listener.expect('  ') == '  next line'   # continuation lines are indented
    assert listener.wait() == 0


def test_listen_tls_and_send_with_fingerprint(procs):
    listener = procs('listen', '--tls', '--count', '1')
    path = listener.path()
    assert path.startswith('msrps://127.0.0.1:')
    fingerprint = listener.expect('fingerprint: ')[len('fingerprint: '):]
    assert fingerprint.startswith('sha-256 ')
    sent = msrp('send', '--to', path, '--tls-fingerprint', fingerprint, 'over tls')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from msrps://').endswith(': over tls')
    assert listener.wait() == 0


def test_wrong_fingerprint_exits_5(procs):
    listener = procs('listen', '--tls')
    path = listener.path()
    wrong = 'sha-256 ' + ':'.join(['AB'] * 32)
    sent = msrp('send', '--to', path, '--tls-fingerprint', wrong, 'never shown')
    assert sent.returncode == cli.EXIT_TLS == 5
    assert sent.stderr.count('\n') == 1 and 'fingerprint mismatch' in sent.stderr
    assert 'Traceback' not in sent.stderr
    # the listener goes on accepting peers (a new acceptor on the same URI)
    fingerprint = listener.expect('fingerprint: ')[len('fingerprint: '):]
    assert msrp('send', '--to', path, '--tls-fingerprint', fingerprint, 'second peer').returncode == 0
    assert listener.expect('message from ').endswith(': second peer')
    listener.process.send_signal(signal.SIGTERM)
    assert listener.wait() == 0


@pytest.mark.parametrize('path', ['msrp://nonsense', 'msrp://127.0.0.1:5;tcp', 'http://example.com/x;tcp',
                                  'msrp://127.0.0.1:99999/abc;tcp'])
def test_bad_uri_exits_2_with_a_message(path):
    result = msrp('send', '--to', path, 'x')
    assert result.returncode == cli.EXIT_USAGE == 2
    assert result.stderr.startswith('msrp: bad ')
    assert 'Traceback' not in result.stderr


def test_bad_arguments_exit_2_in_process(capsys, tmp_path):
    assert cli.main(['send', 'text without --to']) == 2
    assert cli.main(['sendfile', '--to', 'msrp://127.0.0.1:9/a;tcp', '/nonexistent/file']) == 2
    assert 'cannot read /nonexistent/file' in capsys.readouterr().err
    assert cli.main(['listen', '--save-dir', '/dev/null/nonexistent']) == 2   # cannot be created
    assert cli.main(['send', '--to', 'msrp://127.0.0.1:9/a;tcp', '--relay', 'nopassword', 'x']) == 2
    assert cli.main([]) == 2
    assert cli.main(['--version']) == 0


def test_refused_connection_exits_3():
    import socket
    with socket.socket() as s:   # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = msrp('send', '--to', 'msrp://127.0.0.1:%d/abc;tcp' % port, 'x')
    assert result.returncode == cli.EXIT_CONNECT == 3
    assert 'Connection refused' in result.stderr and result.stderr.count('\n') == 1


def test_relay_down_exits_3():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = msrp('send', '--to', 'msrp://127.0.0.1:9/abc;tcp', '--relay', 'alice:secret@relay.test',
                  '--relay-host', '127.0.0.1', '--relay-port', str(port), '--relay-no-tls', 'x')
    assert result.returncode == 3
    assert 'relay' in result.stderr and 'Traceback' not in result.stderr


# ---------------------------------------------------------------------------
# files


def test_sendfile_2mib_saved_identical_with_sha1_ok(procs, tmp_path):
    data = os.urandom(2 * 1024 * 1024)
    source = tmp_path / 'random.bin'
    source.write_bytes(data)
    save = tmp_path / 'saved'
    save.mkdir()
    (save / 'random.bin').write_bytes(b'already here')   # must not be overwritten
    listener = procs('listen', '--save-dir', str(save), '--count', '1')
    path = listener.path()
    sent = msrp('sendfile', '--to', path, str(source), '--chunk-size', '100000')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == ''
    line = listener.expect('saved ')
    assert line == 'saved %s (%d bytes, sha-1 ok)' % (save / 'random-1.bin', len(data))
    assert (save / 'random-1.bin').read_bytes() == data
    assert (save / 'random.bin').read_bytes() == b'already here'
    assert listener.wait() == 0
    assert sorted(os.listdir(save)) == ['random-1.bin', 'random.bin']   # no partial files left


def test_sendfile_progress_bar_only_on_a_terminal(procs, tmp_path):
    # stderr is a pipe here: tqdm (disable=None) shows no bar, only the outcome line
    source = tmp_path / 'small.txt'
    source.write_bytes(b'x' * 300000)
    listener = procs('listen', '--save-dir', str(tmp_path), '--count', '1')
    sent = msrp('sendfile', '--to', listener.path(), str(source), '--name', 'copy.txt')
    assert (sent.returncode, sent.stderr) == (0, 'msrp: delivered copy.txt (300000 bytes)\n')
    assert listener.expect('saved ').startswith('saved %s ' % (tmp_path / 'copy.txt'))
    assert listener.wait() == 0


def test_sendfile_progress_bar_on_a_pty(procs, tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    source = tmp_path / 'f.bin'
    source.write_bytes(os.urandom(500000))
    save = tmp_path / 'saved'
    save.mkdir()
    listener = procs('listen', '--save-dir', str(save), '--count', '1')
    path = listener.path()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 80, 0, 0))  # tqdm shows nothing on a 0x0 tty
    chunks = []

    def drain():   # read while the command runs: a full pty would block its writes
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:   # EIO once the command has exited
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.Popen([sys.executable, '-m', 'msrplib', 'sendfile', '--to', path, str(source),
                                    '--chunk-size', '50000'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=slave, env=_env())
        os.close(slave)
        slave = None
        try:
            assert process.wait(STEP) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
        reader.join(STEP)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    output = b''.join(chunks)
    text = output.decode('utf-8', 'replace')
    assert 'f.bin' in text and '100%' in text and 'delivered f.bin (500000 bytes)' in text
    assert listener.expect('saved ') == 'saved %s (500000 bytes, sha-1 ok)' % (save / 'f.bin')


def _send_raw_files(path, files):
    """Send (name, data, file-selector) messages in this process, as a sender that lies about hashes would."""
    results = []
    with gevent.Timeout(STEP):
        connector = ConnectorDirect()
        connector.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        session = GreenMSRPSession(connector.complete(cli.parse_path(path)))
        try:
            for name, data, selector in files:
                headers = [ContentDispositionHeader(decoded=('attachment', {'filename': name}))]
                if selector is not None:
                    headers.append(MSRPHeader('File-Selector', selector))
                message = session.send_large_message(data, 'application/octet-stream', success_report=True,
                                                     headers=headers, chunk_size=30000)
                try:
                    message.wait()
                    results.append(200)
                except MSRPTransactionError as e:
                    results.append(e.code)
        finally:
            session.shutdown()
    return results


def test_listen_rejects_hash_mismatch_and_sanitises_names(procs, tmp_path):
    listener = procs('listen', '--save-dir', str(tmp_path), '--count', '5')
    path = listener.path()
    good = os.urandom(100000)
    sha1 = hashlib.sha1(good).digest().hex(':').upper()
    sha256 = hashlib.sha256(good).digest().hex(':').upper()
    lie = hashlib.sha1(b'other').digest().hex(':').upper()
    results = _send_raw_files(path, [
        ('../../escape.bin', good, 'name:"escape.bin" type:application/octet-stream size:100000 hash:sha-1:' + sha1),
        ('bad.bin', good, 'name:"bad.bin" size:100000 hash:sha-1:' + lie),
        ('short.bin', good, 'name:"short.bin" size:99999'),
        ('\x1b]0;title\x07.hidden', good, 'size:100000 hash:sha-256:' + sha256),
        ('plain.bin', good, None),
    ])
    assert results == [200, 400, 400, 200, 200]    # failure REPORTs reach the sender
    assert listener.expect('saved ') == 'saved %s (100000 bytes, sha-1 ok)' % (tmp_path / 'escape.bin')
    assert 'sha-1 mismatch' in listener.expect('failed bad.bin ')
    assert 'size mismatch' in listener.expect('failed short.bin ')
    assert listener.expect('saved ') == 'saved %s (100000 bytes, sha-256 ok)' % (tmp_path / ']0;title.hidden')
    assert listener.expect('saved ') == 'saved %s (100000 bytes, unverified)' % (tmp_path / 'plain.bin')
    assert listener.wait() == cli.EXIT_TRANSFER == 6
    assert sorted(os.listdir(tmp_path)) == [']0;title.hidden', 'escape.bin', 'plain.bin']
    assert (tmp_path / 'escape.bin').read_bytes() == good


def test_sendfile_rejected_by_the_receiver_exits_6(procs, tmp_path):
    source = tmp_path / 'big.bin'
    source.write_bytes(b'y' * 200000)
    listener = procs('listen', '--save-dir', str(tmp_path), '--max-size', '100000')
    sent = msrp('sendfile', '--to', listener.path(), str(source))
    assert sent.returncode == 6
    assert 'file not delivered: 413' in sent.stderr
    listener.process.send_signal(signal.SIGINT)
    assert listener.wait() == 0
    assert sorted(os.listdir(tmp_path)) == ['big.bin']


def test_safe_file_name_and_reserve_path(tmp_path):
    assert cli.safe_file_name('../../etc/passwd') == 'passwd'
    assert cli.safe_file_name('..\\..\\win.ini') == 'win.ini'
    assert cli.safe_file_name('...') == 'msrp-file'
    assert cli.safe_file_name('a\x1b[2Jb\u202e.txt') == 'a[2Jb.txt'
    assert len(cli.safe_file_name('x' * 500 + '.bin').encode()) <= cli.MAX_NAME_BYTES
    assert cli.safe_file_name('x' * 500 + '.bin').endswith('.bin')
    first = cli.reserve_path(str(tmp_path), 'a.txt')
    second = cli.reserve_path(str(tmp_path), 'a.txt')
    assert (os.path.basename(first), os.path.basename(second)) == ('a.txt', 'a-1.txt')


# ---------------------------------------------------------------------------
# chat


def test_chat_both_ways_listen_side_chat_too(procs):
    answering = procs('chat', stdin=subprocess.PIPE)
    path = answering.path()
    calling = procs('chat', '--to', path, stdin=subprocess.PIPE)
    calling.write('hello from the caller\n')
    assert answering.expect('message from ').endswith(': hello from the caller')
    answering.write('hello back\n\nand again\n')
    assert calling.expect('message from ').endswith(': hello back')
    assert calling.expect('message from ').endswith(': and again')
    calling.process.stdin.close()             # EOF ends the session cleanly on both sides
    assert calling.wait() == 0
    assert answering.wait() == 0
    assert any('ended the session' in line for line in answering.stderr)


def test_chat_interrupted_exits_130(procs):
    listener = procs('listen')
    calling = procs('chat', '--to', listener.path(), stdin=subprocess.PIPE)
    calling.write('ping\n')
    listener.expect('message from ')
    calling.process.send_signal(signal.SIGINT)
    assert calling.wait() == cli.EXIT_INTERRUPTED == 130
    assert 'Traceback' not in '\n'.join(calling.stderr)


# ---------------------------------------------------------------------------
# through a real relay (Kamailio)


@pytest.fixture
def relay(msrp_relay):
    """The session's Kamailio relay (msrplib's pytest plugin)."""
    return msrp_relay


def _relay_args(relay, password=None, tls=True):
    return ['--relay', '%s:%s@%s' % (relay.username, password or relay.password, relay.domain),
            '--relay-host', relay.host, '--relay-port', str(relay.tls_port if tls else relay.port)] + (
        ['--relay-ca', relay.ca_file] if tls else ['--relay-no-tls'])


def test_listen_through_relay_and_send_directly(procs, relay):
    listener = procs('listen', '--count', '2', *_relay_args(relay))
    path = listener.path()
    hops = path.split()
    assert len(hops) == 2 and hops[0].startswith('msrps://')   # Use-Path, then the listener
    sent = msrp('send', '--to', path, 'via the relay')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from ').endswith(': via the relay')
    # the next peer gets a fresh reservation, printed as a new path
    second = listener.path()
    assert second != path
    sent = msrp('send', '--to', second, *_relay_args(relay, tls=False), 'both through relays')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from ').endswith(': both through relays')
    assert listener.wait() == 0


def test_wrong_relay_password_exits_4(relay):
    result = msrp('listen', *_relay_args(relay, password='wrong'))
    assert result.returncode == cli.EXIT_AUTH == 4
    assert result.stdout == ''
    assert 'relay authentication failed' in result.stderr and result.stderr.count('\n') == 1


def test_relay_password_from_the_environment(relay):
    env = _env()
    env['MSRP_RELAY_PASSWORD'] = 'wrong'
    args = _relay_args(relay)
    args[1] = '%s@%s' % (relay.username, relay.domain)
    result = msrp('listen', *args, env=env)
    assert result.returncode == 4
