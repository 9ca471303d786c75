"""A victim script of test/ in its own process, its memory watched with psutil (the hostile-peer tests)."""

import os
import subprocess
import sys

import gevent
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


class VictimProcess:
    """``python test/SCRIPT ARGS`` with msrplib importable; ``rss()`` is its resident memory, ``peak`` the most
    seen while sampling.  ``timeout``: seconds any single wait on it may take."""

    def __init__(self, script, args, timeout):
        self.timeout = timeout
        env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get('PYTHONPATH', ''))
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, script)] + list(args),
                                        stdout=subprocess.PIPE, env=env, text=True)
        self.ps = psutil.Process(self.process.pid)
        self.peak = 0
        self._sampler = None

    def line(self):
        """The victim's next stdout line, stripped (AssertionError when it exited instead)."""
        with gevent.Timeout(self.timeout):
            line = gevent.get_hub().threadpool.apply(self.process.stdout.readline)
        assert line, 'the victim exited early'
        return line.strip()

    def rss(self):
        return self.ps.memory_info().rss

    def start_sampling(self):
        def sample():
            while True:
                self.peak = max(self.peak, self.rss())
                gevent.sleep(0.01)
        self._sampler = gevent.spawn(sample)

    def close(self):
        if self._sampler is not None:
            self._sampler.kill()
        self.process.kill()
        self.process.wait(self.timeout)
        self.process.stdout.close()
