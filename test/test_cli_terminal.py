"""The ``msrp`` command as a person meets it at a terminal (issue 19): Ctrl-C, control bytes from a peer,
the outcome line, the messages for common mistakes, the demo's errors, the README's instructions.

Processes run under timeouts and are killed at the end (the ``procs`` fixture of test_cli.py).
"""

import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

import gevent
import pytest

from test_cli import ROOT, STEP, _env, msrp, procs  # noqa: F401  (procs is a fixture)

from msrplib import cli
from msrplib.connect import ConnectorDirect
from msrplib.protocol import URI
from msrplib.session import GreenMSRPSession


def _has_raw_controls(text):
    """True when ``text`` holds a character that could drive a terminal (anything but tab and line feed)."""
    return bool(re.search('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]', text))


class Terminal:
    """A command run on a pseudo-terminal that is its controlling terminal (so Ctrl-C works as at a keyboard)."""

    def __init__(self, *args):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))  # tqdm draws on a sized tty
        self.output = bytearray()
        self.process = subprocess.Popen([sys.executable, '-m', 'msrplib'] + list(args), stdin=slave, stdout=slave,
                                        stderr=slave, env=_env(), preexec_fn=self._take_terminal)
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @staticmethod
    def _take_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:   # EIO: the command has exited
                return
            if not data:
                return
            self.output += data

    def text(self):
        return bytes(self.output).decode('utf-8', 'replace')

    def wait_for(self, pattern, timeout=STEP):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError('no %r on the terminal: %r' % (pattern, self.text()[-2000:]))

    def type(self, data):
        os.write(self.master, data)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STEP)
        self.reader.join(STEP)
        os.close(self.master)


@pytest.fixture
def terminal():
    started = []

    def start(*args):
        started.append(Terminal(*args))
        return started[-1]
    yield start
    for term in started:
        term.close()


def _wait_until(condition, timeout=STEP):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------
# 1. Ctrl-C stops a transfer


def test_ctrl_c_stops_sendfile_within_a_second_and_aborts_the_message(procs, terminal, tmp_path):  # noqa: F811
    source = tmp_path / 'big.bin'
    with open(source, 'wb') as f:
        f.truncate(256 * 1024 * 1024)    # sparse: made at once; 65536 chunks of 4 KiB take seconds to send
    save = tmp_path / 'saved'
    save.mkdir()
    listener = procs('listen', '--save-dir', str(save), '--log-traffic')
    sender = terminal('sendfile', '--to', listener.path(), str(source), '--chunk-size', '4096')
    sender.wait_for(r'big\.bin: +[1-9]\d?%')                     # the transfer is going (the bar shows it)
    assert any(name.startswith('.msrp-') for name in os.listdir(save))   # the listener writes a partial file
    sender.type(b'\x03')                                         # Ctrl-C at the keyboard
    pressed = time.monotonic()
    status = sender.process.wait(STEP)
    stopped = time.monotonic() - pressed
    assert status == cli.EXIT_INTERRUPTED == 130
    assert stopped < 1.0, 'the sender went on for %.2f s after Ctrl-C' % stopped
    sender.reader.join(STEP)
    text = sender.text()
    assert 'msrp: interrupted' in text and 'delivered' not in text and 'Traceback' not in text
    # the peer was told: the message ended with '#' (RFC 4975 §7.1.1), as the listener's traffic log shows
    assert _wait_until(lambda: any(re.fullmatch(r'-------\w+#', line) for line in listener.stderr)), \
        listener.stderr[-20:]
    # the listener drops the message: no partial file is left and nothing is saved
    assert _wait_until(lambda: os.listdir(save) == []), os.listdir(save)
    assert not any(line.startswith('saved ') for line in listener.stdout)
    # and says that the sender aborted it
    _wait_until(lambda: any('abort' in line.lower() for line in listener.stdout + listener.stderr), 2)
    assert any('abort' in line.lower() for line in listener.stdout + listener.stderr)


def test_ctrl_c_stops_sendfile_within_a_second_when_the_peer_stalls(procs, terminal, tmp_path):  # noqa: F811
    source = tmp_path / 'big.bin'
    with open(source, 'wb') as f:
        f.truncate(256 * 1024 * 1024)
    save = tmp_path / 'saved'
    listener = procs('listen', '--save-dir', str(save))
    sender = terminal('sendfile', '--to', listener.path(), str(source), '--chunk-size', '4096')
    sender.wait_for(r'big\.bin: +[1-9]\d?%')
    listener.process.send_signal(signal.SIGSTOP)     # the peer stops reading: the sender's socket fills up
    try:
        time.sleep(0.5)
        sender.type(b'\x03')
        pressed = time.monotonic()
        status = sender.process.wait(STEP)
        stopped = time.monotonic() - pressed
    finally:
        listener.process.send_signal(signal.SIGCONT)
    assert status == 130
    assert stopped < 1.0, 'the sender went on for %.2f s after Ctrl-C' % stopped
    sender.reader.join(STEP)
    assert 'msrp: interrupted' in sender.text()
    assert _wait_until(lambda: os.listdir(save) == []), os.listdir(save)   # the listener drops the partial file


def test_progress_bar_counts_in_binary_units(procs, terminal, tmp_path):  # noqa: F811
    source = tmp_path / 'f.bin'
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    listener = procs('listen', '--save-dir', str(tmp_path / 'in'), '--count', '1')
    sender = terminal('sendfile', '--to', listener.path(), str(source))
    assert sender.process.wait(STEP) == 0
    sender.reader.join(STEP)
    text = sender.text()
    assert '3.00M/3.00M' in text and re.search(r'\d(MiB|GiB)/s\]', text)   # MiB/s: the divisor is 1024
    assert not re.search(r'\d[kMG]B/s', text)
    assert 'msrp: delivered f.bin (3145728 bytes)' in text


# ---------------------------------------------------------------------------
# 2. No raw control bytes reach the terminal


HOSTILE = 'title \x1b]0;owned\x07 clear \x1b[2J bell \x07\x07 nul \x00 csi \x9b31m bidi \u202e cr \rover'


def _send_text(path, text, content_type='text/plain'):
    """Send ``text`` (any characters, NUL included: argv cannot carry it) as one message from this process."""
    with gevent.Timeout(STEP):
        connector = ConnectorDirect()
        connector.prepare(URI(host='127.0.0.1', port=0, use_tls=False))
        session = GreenMSRPSession(connector.complete(URI.parse_path(path)))
        try:
            session.deliver_message(text.encode('utf-8'), content_type)
        finally:
            session.shutdown()


def test_listen_log_traffic_escapes_what_a_peer_sends(procs, tmp_path):  # noqa: F811
    listener = procs('listen', '--count', '3', '--log-traffic', '--save-dir', str(tmp_path))
    path = listener.path()
    _send_text(path, HOSTILE)
    _send_text(path, HOSTILE + 'x' * 70000, 'application/octet-stream')   # a file: saved, not printed
    sent = msrp('send', '--to', path, HOSTILE.replace('\x00', ''), '--log-traffic')   # argv: no NUL
    assert sent.returncode == 0, sent.stderr
    assert listener.wait() == 0
    listener.kill()   # joins the output
    for text in ('\n'.join(listener.stdout), '\n'.join(listener.stderr), sent.stdout, sent.stderr):
        assert not _has_raw_controls(text), repr(text)
    assert '\\x00' in listener.expect('message from ')
    assert any('<70' in line and 'bytes of application/octet-stream>' in line for line in listener.stderr)
    log = '\n'.join(listener.stderr)
    assert 'RECEIVED 127.0.0.1:' in log and '\\x1b]0;owned\\x07' in log and '\\x1b[2J' in log


def test_chat_escapes_what_a_peer_sends(procs, tmp_path):  # noqa: F811
    answering = procs('chat', '--log-traffic', stdin=subprocess.PIPE, cwd=str(tmp_path))
    _send_text(answering.path(), HOSTILE)
    line = answering.expect('message from ')
    assert '\\x1b]0;owned\\x07' in line and '\\x00' in line
    answering.process.stdin.close()
    answering.wait()
    answering.kill()
    for text in ('\n'.join(answering.stdout), '\n'.join(answering.stderr)):
        assert not _has_raw_controls(text), repr(text)


def test_demo_output_has_no_control_bytes_and_summarises_big_bodies():
    result = subprocess.run([sys.executable, '-m', 'msrplib', 'demo', '--size', '70000'], capture_output=True,
                            timeout=60, env=_env())
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode('utf-8')
    assert not _has_raw_controls(text), [line for line in text.splitlines() if _has_raw_controls(line)][:3]
    assert '<70000 bytes of application/octet-stream>' in text
    assert 'result:          OK' in text


# ---------------------------------------------------------------------------
# 3. sendfile always says how it ended


@pytest.mark.parametrize('options', [['--no-progress'], []])
def test_sendfile_prints_the_outcome_without_a_bar(procs, tmp_path, options):  # noqa: F811
    source = tmp_path / 'small.txt'
    source.write_bytes(b'x' * 5000)
    listener = procs('listen', '--save-dir', str(tmp_path / 'in'), '--count', '1')
    sent = msrp('sendfile', '--to', listener.path(), str(source), *options)   # stderr is a pipe: no bar
    assert sent.returncode == 0
    assert sent.stderr == 'msrp: delivered small.txt (5000 bytes)\n'
    assert sent.stdout == ''


# ---------------------------------------------------------------------------
# 4. Messages that say what is wrong


def test_plain_msrp_to_a_tls_listener_is_named_on_both_sides(procs):  # noqa: F811
    listener = procs('listen', '--tls')
    path = listener.path().replace('msrps://', 'msrp://')
    sent = msrp('send', '--to', path, 'hello')
    assert sent.returncode == cli.EXIT_CONNECT
    assert sent.stderr.count('\n') == 1 and 'msrps (TLS)' in sent.stderr and 'msrps:// path' in sent.stderr
    assert _wait_until(lambda: any('plain msrp' in line for line in listener.stderr))
    line = [line for line in listener.stderr if 'plain msrp' in line][0]
    assert 'this listener speaks msrps (TLS)' in line and 'Cannot connect to' not in line


def test_msrps_to_a_plain_listener_is_named_on_both_sides(procs):  # noqa: F811
    listener = procs('listen')
    path = listener.path().replace('msrp://', 'msrps://')
    sent = msrp('send', '--to', path, 'hello')
    assert sent.returncode == cli.EXIT_CONNECT
    assert 'the peer probably speaks plain msrp' in sent.stderr and 'msrp:// path' in sent.stderr
    assert 'Traceback' not in sent.stderr
    assert _wait_until(lambda: any('speaks TLS (msrps)' in line for line in listener.stderr))
    assert not any('illegal data' in line or '\\x16\\x03' in line for line in listener.stderr)


def test_save_dir_that_does_not_exist_is_created(procs, tmp_path):  # noqa: F811
    save = tmp_path / 'in' / 'files'     # as in doc/cli.md: msrp listen --save-dir /tmp/in
    source = tmp_path / 'a.txt'
    source.write_bytes(b'a' * 100)
    listener = procs('listen', '--save-dir', str(save), '--count', '1')
    path = listener.path()
    # stderr is read by its own thread: the line may land after the path on stdout
    assert _wait_until(lambda: 'msrp: created the directory %s' % save in listener.stderr), listener.stderr
    assert msrp('sendfile', '--to', path, str(source)).returncode == 0
    assert listener.expect('saved ') == 'saved %s (100 bytes, sha-1 ok)' % (save / 'a.txt')
    assert listener.wait() == 0


def test_save_dir_that_cannot_be_created_says_so(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_bytes(b'')
    result = msrp('listen', '--save-dir', str(blocker / 'sub'))
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.startswith('msrp: --save-dir %s does not exist and cannot be created: ' % (blocker / 'sub'))
    result = msrp('listen', '--save-dir', str(blocker))
    assert (result.returncode, result.stderr) == (2, 'msrp: --save-dir %s: not a directory\n' % blocker)


def test_listener_stopped_mid_transfer_tells_the_sender_the_peer_closed(procs, tmp_path):  # noqa: F811
    source = tmp_path / 'big.bin'
    with open(source, 'wb') as f:
        f.truncate(128 * 1024 * 1024)
    save = tmp_path / 'saved'
    listener = procs('listen', '--save-dir', str(save))
    path = listener.path()
    sender = subprocess.Popen([sys.executable, '-m', 'msrplib', 'sendfile', '--to', path, str(source),
                               '--chunk-size', '4096', '--no-progress'], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert _wait_until(lambda: any(name.startswith('.msrp-') and os.path.getsize(save / name) > 0
                                       for name in os.listdir(save)))
        listener.process.send_signal(signal.SIGTERM)
        _, stderr = sender.communicate(timeout=STEP)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
    assert sender.returncode == cli.EXIT_TRANSFER
    assert stderr.startswith('msrp: file not delivered: the peer closed the connection (')
    assert re.fullmatch(r'msrp: file not delivered: the peer closed the connection \(\d+ of 134217728 bytes '
                        r'acknowledged\)\n', stderr)     # one line, no '408 Connection closed'


def test_tls_handshake_that_never_comes_names_the_limit(procs):  # noqa: F811
    listener = procs('listen', '--tls', '--timeout', '0.5')
    host, port = re.match(r'msrps://([^:]+):(\d+)/', listener.path()).groups()
    with socket.create_connection((host, int(port)), timeout=STEP):   # connects, says nothing
        assert _wait_until(lambda: any('handshake' in line for line in listener.stderr))
    line = [line for line in listener.stderr if 'handshake' in line][0]
    assert line == 'msrp: a peer connected but did not complete the TLS handshake within 0.5 s'


# ---------------------------------------------------------------------------
# 5. The demo: one-line errors and argument checks


@pytest.mark.parametrize('args, status, message', [
    (['--host', 'nosuchhost.invalid'], cli.EXIT_CONNECT, 'msrp: demo failed: Cannot listen on nosuchhost.invalid'),
    (['--size', '-5'], cli.EXIT_USAGE, "argument --size: must be at least 1: '-5'"),
    (['--size', 'lots'], cli.EXIT_USAGE, "argument --size: not an integer: 'lots'"),
    (['--timeout', '0'], cli.EXIT_USAGE, "argument --timeout: must be positive: '0'"),
])
def test_demo_errors_are_one_line(args, status, message):
    result = subprocess.run([sys.executable, '-m', 'msrplib', 'demo'] + args, capture_output=True, text=True,
                            timeout=STEP, env=_env())
    assert result.returncode == status
    assert message in result.stderr
    assert 'Traceback' not in result.stderr
    assert result.stderr.splitlines()[-1].count(message) == 1   # the error is the last line, as argparse's


# ---------------------------------------------------------------------------
# 6. The README says how to run the installed command


def test_readme_says_how_to_run_msrp_after_the_first_command():
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    setup = re.search(r'```sh\n(.*?)```', text, re.S).group(1)
    assert setup == ('python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/python -m msrplib demo\n'
                     'sh test/run.sh\n')     # the two set-up commands stay as they are
    first_use = text.index('msrp listen')
    assert '.venv/bin/msrp' in text[:first_use] and '.venv/bin/activate' in text[:first_use]
    installed = os.path.join(os.path.dirname(sys.executable), 'msrp')   # where the README says it is
    if os.path.exists(installed):
        result = subprocess.run([installed, '--version'], capture_output=True, text=True, timeout=STEP)
        assert result.returncode == 0 and result.stdout.startswith('msrplib ')
