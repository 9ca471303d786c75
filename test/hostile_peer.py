"""Tools for the attack tests: victim processes, RSS sampling.

The attacker (``msrplib.testing.RawSender``, on a ``RawPeer``) writes
byte-exact chunks (any Byte-Range, any body) and reads the responses; the
victim runs in a subprocess (``msrp listen`` or a small script) so that
its memory and CPU can be measured with psutil apart from the test's own.
"""

import os
import queue
import subprocess
import sys
import threading
import time

import gevent
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEP = 15   # seconds: the most one step of an attack test may take
MiB = 1024 * 1024


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
