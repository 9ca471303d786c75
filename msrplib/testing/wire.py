"""WireCapture: what crosses a transport, as chunks with their direction, for assertions (no tshark needed)."""

import os
import shutil
import signal
import subprocess
import time

import gevent
import gevent.event

from msrplib.trafficlog import Logger
from msrplib.testing._wait import DEFAULT_TIMEOUT, waiting_for

__all__ = ['WireCapture', 'WireRecord', 'TsharkCapture', 'tshark_available']


class WireRecord:
    """One chunk that crossed a watched transport: ``direction`` ('in' or 'out'), ``chunk`` (an MSRPData),
    ``transport`` and ``time`` (``time.monotonic()``)."""

    __slots__ = ('direction', 'chunk', 'transport', 'time')

    def __init__(self, direction, chunk, transport):
        self.direction = direction
        self.chunk = chunk
        self.transport = transport
        self.time = time.monotonic()

    @property
    def method(self):
        """The chunk's method (None for a response)."""
        return self.chunk.method

    @property
    def code(self):
        """The response's code (None for a request)."""
        return self.chunk.code

    def __repr__(self):
        what = self.chunk.method or self.chunk.code
        return '<WireRecord %s %s %s>' % (self.direction, what, self.chunk.transaction_id)


class _CapturingLogger:
    # The transport's logger while a capture watches it: records, then hands on to the logger it replaced.
    def __init__(self, capture, previous):
        self._capture = capture
        self.previous = previous

    def __getattr__(self, name):
        return getattr(self.previous, name)

    def received_chunk(self, data, transport):
        self._capture._record('in', data, transport)
        self.previous.received_chunk(data, transport)

    def sent_chunk(self, data, transport):
        self._capture._record('out', data, transport)
        self.previous.sent_chunk(data, transport)


class WireCapture:
    """Records every chunk read from or written to the transports it watches.

    ``capture.watch(transport_or_session)`` puts a recording logger in front
    of the transport's logger (the :class:`~msrplib.trafficlog.Logger` chunk
    hooks, so the transport's own logging goes on); :meth:`unwatch` / closing
    the capture puts the old logger back.  ``records`` is the list of
    :class:`WireRecord` in order; :meth:`chunks` filters them;
    :meth:`wait_for` blocks until a chunk that matches arrives.
    """

    def __init__(self):
        self.records = []
        self._watched = []
        self._changed = gevent.event.Event()

    def watch(self, target):
        """Record the chunks of ``target``: an MSRPTransport or a session (its ``msrp``); return ``target``."""
        transport = getattr(target, 'msrp', target)
        if isinstance(transport.logger, _CapturingLogger) and transport.logger._capture is self:
            return target
        transport.logger = _CapturingLogger(self, transport.logger if transport.logger is not None else Logger())
        self._watched.append(transport)
        return target

    def unwatch(self, target=None):
        """Stop recording ``target`` (every watched transport when None); the old loggers come back."""
        transport = getattr(target, 'msrp', target)
        for watched in list(self._watched):
            if transport is None or watched is transport:
                if isinstance(watched.logger, _CapturingLogger):
                    watched.logger = watched.logger.previous
                self._watched.remove(watched)

    def _record(self, direction, chunk, transport):
        self.records.append(WireRecord(direction, chunk, transport))
        self._changed.set()

    def chunks(self, direction=None, method=None, code=None, transport=None):
        """The recorded chunks (MSRPData) with the given direction ('in'/'out'), method, code, transport."""
        return [record.chunk for record in self._select(direction, method, code, transport)]

    def _select(self, direction, method, code, transport):
        transport = getattr(transport, 'msrp', transport)
        return [record for record in self.records
                if (direction is None or record.direction == direction)
                and (method is None or record.chunk.method == method)
                and (code is None or record.chunk.code == code)
                and (transport is None or record.transport is transport)]

    def wait_for(self, direction=None, method=None, code=None, transport=None, count=1, timeout=DEFAULT_TIMEOUT):
        """Block until ``count`` chunks matching the filters were recorded; return them.

        Raises :class:`~msrplib.testing.WaitTimeout` naming the filters.
        """
        what = '%d chunk(s) with %s on the wire' % (count, ', '.join(
            '%s=%r' % item for item in (('direction', direction), ('method', method), ('code', code)) if item[1]))
        with waiting_for(what, timeout):
            while True:
                found = self._select(direction, method, code, transport)
                if len(found) >= count:
                    return [record.chunk for record in found]
                self._changed.clear()
                self._changed.wait()

    def clear(self):
        """Forget the records so far."""
        del self.records[:]

    def close(self):
        """Unwatch every transport."""
        self.unwatch()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def tshark_available():
    """True when the ``tshark`` command is installed."""
    return shutil.which('tshark') is not None


class TsharkCapture:
    """An optional pcap of loopback traffic on ``ports``, written by tshark to ``path``.

    ``start()`` raises RuntimeError when tshark is missing or fails to start
    (the caller decides whether that matters); ``stop()`` ends it and returns ``path``.
    """

    def __init__(self, path, ports, interface='lo', start_timeout=DEFAULT_TIMEOUT):
        self.path = path
        self.ports = list(ports)
        self.interface = interface
        self.start_timeout = start_timeout
        self.process = None

    def start(self):
        """Start tshark and wait until it writes the capture file; return self."""
        binary = shutil.which('tshark')
        if binary is None:
            raise RuntimeError('tshark is not installed (apt-get install tshark)')
        capture_filter = ' or '.join('tcp port %d' % port for port in self.ports)
        self.process = subprocess.Popen([binary, '-q', '-i', self.interface, '-f', capture_filter, '-w', self.path],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        with waiting_for('tshark to start capturing into %s' % self.path, self.start_timeout):
            while not os.path.exists(self.path):
                if self.process.poll() is not None:
                    raise RuntimeError('tshark exited: %s' % self.process.stderr.read().decode('utf-8', 'replace'))
                gevent.sleep(0.05)
        return self

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """Stop tshark (SIGINT, so that it flushes the file); return :attr:`path`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process is not None:
            self.process.stderr.close()
        self.process = None
        return self.path
