"""Tools for the attack tests: a hand-driven MSRP sender on a raw socket, victim processes, RSS sampling.

The attacker writes byte-exact chunks (any Byte-Range, any body) and reads
the responses; the victim runs in a subprocess (``msrp listen`` or a small
script) so that its memory and CPU can be measured with psutil apart from
the test's own.
"""

import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time

import gevent
import gevent.event
import gevent.socket
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEP = 15   # seconds: the most one step of an attack test may take
MiB = 1024 * 1024

_RESPONSE = re.compile(rb'MSRP (\S+) (\d{3})[^\r\n]*\r\n(?:[^\r\n]*\r\n)*?-------\1[$#+]\r\n')


class RawSender:
    """An MSRP peer speaking hand-made bytes: ``bind()``, then ``send(...)`` chunks and ``wait(tid)`` for codes.

    ``path`` is the victim's full path (a string of URIs); this peer's own
    URI gets a fresh session-id.  Responses are read by a greenlet into
    ``codes`` (transaction-id -> status code); requests from the victim
    (REPORTs) are skipped.
    """

    def __init__(self, path, session_id=None):
        self.path = path
        first = path.split()[0]
        host, port = re.match(r'msrps?://([^/]+):(\d+)/', first).groups()
        self.sock = gevent.socket.create_connection((host, int(port)), timeout=STEP)
        self.sock.settimeout(None)
        local_port = self.sock.getsockname()[1]
        self.from_path = 'msrp://127.0.0.1:%d/%s;tcp' % (local_port, session_id or secrets.token_hex(8))
        self.codes = {}
        self.closed = gevent.event.Event()
        self._changed = gevent.event.Event()
        self._reader = gevent.spawn(self._read)

    def _read(self):
        pending = b''
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                pending += data
                while True:
                    match = _RESPONSE.search(pending)
                    if match is None:
                        break
                    self.codes[match.group(1).decode()] = int(match.group(2))
                    pending = pending[match.end():]
                    self._changed.set()
                if len(pending) > MiB:
                    pending = pending[-65536:]
        except OSError:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    def send(self, message_id, body=b'', start=1, end=None, total=None, flag='$', content_type='text/plain',
             headers=()):
        """Write one SEND chunk; ``end``/``total`` default to what the body implies (``'*'`` allowed)."""
        tid = secrets.token_hex(6)
        if end is None:
            end = start + len(body) - 1
        if total is None:
            total = end
        lines = ['MSRP %s SEND' % tid, 'To-Path: %s' % self.path, 'From-Path: %s' % self.from_path,
                 'Message-ID: %s' % message_id, 'Byte-Range: %s-%s/%s' % (start, end, total)]
        lines += ['%s: %s' % header for header in headers]
        if body or content_type:
            lines.append('Content-Type: %s' % content_type)
            frame = ('\r\n'.join(lines) + '\r\n\r\n').encode() + body + ('\r\n-------%s%s\r\n' % (tid, flag)).encode()
        else:
            frame = ('\r\n'.join(lines) + '\r\n-------%s%s\r\n' % (tid, flag)).encode()
        self.sock.sendall(frame)
        return tid

    def bind(self):
        """Send the empty binding SEND; return its response code."""
        return self.wait(self.send(secrets.token_hex(4), content_type=None, start=1, end=0, total=0))

    def wait(self, tid, timeout=STEP):
        """The response code of transaction ``tid`` (None if the connection closed first)."""
        deadline = time.monotonic() + timeout
        while tid not in self.codes:
            if self.closed.is_set():
                return None
            self._changed.clear()
            if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError('no response to %s within %s s' % (tid, timeout))
        return self.codes[tid]

    def close(self):
        self._reader.kill()
        self.sock.close()


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHONUNBUFFERED'] = '1'
    return env


class Victim:
    """A subprocess (``python -m msrplib ARGS`` or ``python -c SCRIPT``) whose output lines are collected."""

    def __init__(self, argv, cwd=None, preexec_fn=None):
        self.process = subprocess.Popen([sys.executable] + list(argv), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                        env=_env(), bufsize=1, preexec_fn=preexec_fn)
        self.ps = psutil.Process(self.process.pid)
        self.lines = queue.Queue()
        self.stdout = []
        self.stderr = []
        for stream, store in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, store), daemon=True).start()

    @classmethod
    def listen(cls, *args, **kwargs):
        return cls(['-m', 'msrplib', 'listen'] + list(args), **kwargs)

    def _read(self, stream, store):
        for line in stream:
            store.append(line.rstrip('\n'))
            if store is self.stdout:
                self.lines.put(line.rstrip('\n'))

    def expect(self, prefix, timeout=STEP):
        """The next stdout line starting with ``prefix`` (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError('no line starting with %r; stdout=%r stderr=%r'
                                     % (prefix, self.stdout, self.stderr[-20:]))
            if line.startswith(prefix):
                return line

    def path(self):
        return self.expect('path: ')[len('path: '):]

    def rss(self):
        return self.ps.memory_info().rss

    def cpu(self):
        times = self.ps.cpu_times()
        return times.user + times.system

    def stop(self, sig=None, timeout=STEP):
        """End the process (SIGINT by default) and wait for it; return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig or 2)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STEP)


class PeakRSS:
    """Samples a victim's RSS every few milliseconds while the block runs; ``growth`` is peak minus start."""

    def __init__(self, victim, label):
        self.victim = victim
        self.label = label
        self.start = self.peak = 0
        self._job = None

    def _run(self):
        while True:
            self.peak = max(self.peak, self.victim.rss())
            gevent.sleep(0.01)

    def __enter__(self):
        self.start = self.peak = self.victim.rss()
        self._job = gevent.spawn(self._run)
        return self

    def __exit__(self, *exc):
        self._job.kill()
        self.peak = max(self.peak, self.victim.rss())
        print('\n[memory] %s: victim RSS %.1f MiB at start, peak %.1f MiB (+%.1f MiB)'
              % (self.label, self.start / MiB, self.peak / MiB, self.growth / MiB))

    @property
    def growth(self):
        return self.peak - self.start


def partial_files(directory):
    """Names of the hidden partial files ``msrp listen`` left in ``directory``."""
    return sorted(name for name in os.listdir(directory) if name.endswith('.part'))
