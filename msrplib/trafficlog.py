"""Logging for msrplib: state messages on stdlib logging, plus an optional wire log.

Every transport, connector and session takes a ``logger`` argument: any
object with the methods of :class:`Logger`.  Without one they use a quiet
default (messages go to the ``msrplib`` stdlib logger, where nothing is shown
unless the application configures logging).
"""

import logging
import re

from zope.interface import implementer

from msrplib.interfaces import ILogger
from msrplib.protocol import HeaderParsingError

__all__ = ['Logger', 'wants_chunks', 'escape_controls', 'MAX_LOGGED_BODY']

# A library must not print on its own: without configuration, warnings stay quiet.
logging.getLogger('msrplib').addHandler(logging.NullHandler())

#: The largest body the wire log shows (escaped); a larger one is shown as ``<N bytes of TYPE>``.
MAX_LOGGED_BODY = 1024

_UNPRINTABLE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]')


def _escape(match):
    code = ord(match.group())
    return '\\x%02x' % code if code < 0x100 else '\\u%04x' % code


def escape_controls(text):
    """``text`` safe for a terminal: every control character but tab and line feed (escape sequences, BEL,
    NUL, CR, C1 controls) becomes ``\\xNN``, bidi overrides ``\\uNNNN``.  Applying it twice changes nothing
    more.  Used for every line of the wire log, so that a peer cannot drive the terminal that shows it."""
    return _UNPRINTABLE.sub(_escape, text)


def _wire_text(data):
    # Bytes off the wire as one safe text: lines end in LF, everything else non-printable is escaped.
    return escape_controls(bytes(data).decode('utf-8', 'backslashreplace').replace('\r\n', '\n'))


def _endpoint(address):
    if address is None:
        return '?'
    host, port = address.host, address.port
    return '[%s]:%s' % (host, port) if ':' in str(host) else '%s:%s' % (host, port)


@implementer(ILogger)
class Logger:
    """Logs msrplib's state messages and, with ``log_traffic``, every chunk.

    ``prefix`` is put before every message.  ``log_traffic=True`` logs each
    chunk sent or received as it appears on the wire (the start of the body
    only, for large ones), with its direction and the local and remote
    addresses.  ``logger`` is the stdlib logger to use (default: the
    ``msrplib`` logger).
    """

    def __init__(self, prefix=None, log_traffic=False, logger=None):
        self.prefix = prefix or ''
        self.log_traffic = log_traffic
        self.logger = logger if logger is not None else logging.getLogger('msrplib')

    def _log(self, level, message, args, **kwargs):
        if self.logger.isEnabledFor(level):
            self.logger.log(level, self.prefix + message, *args, **kwargs)

    def debug(self, message, *args, **kwargs):
        """Log a debugging message (``%``-style arguments as in stdlib logging)."""
        self._log(logging.DEBUG, message, args, **kwargs)

    def info(self, message, *args, **kwargs):
        """Log an informational message."""
        self._log(logging.INFO, message, args, **kwargs)

    def warning(self, message, *args, **kwargs):
        """Log a warning."""
        self._log(logging.WARNING, message, args, **kwargs)

    warn = warning

    def error(self, message, *args, **kwargs):
        """Log an error."""
        self._log(logging.ERROR, message, args, **kwargs)

    def exception(self, message='', *args, **kwargs):
        """Log an error with the traceback of the exception being handled."""
        kwargs.setdefault('exc_info', True)
        self._log(logging.ERROR, message, args, **kwargs)

    def _traffic(self, direction, data, transport):
        if not self.log_traffic:
            return
        text = _wire_text_of_bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else _render_chunk(data)
        local = _endpoint(_call(transport, 'getHost'))
        remote = _endpoint(_call(transport, 'getPeer'))
        arrow = '%s <-- %s' % (local, remote) if direction == 'received' else '%s --> %s' % (local, remote)
        self.logger.info('%s%s %s\n%s', self.prefix, direction.upper(), arrow, text)

    def received_chunk(self, data, transport):
        """Record a chunk (an MSRPData, or raw bytes) read from ``transport``."""
        self._traffic('received', data, transport)

    def sent_chunk(self, data, transport):
        """Record a chunk (an MSRPData, or raw bytes) written to ``transport``."""
        self._traffic('sent', data, transport)

    def received_illegal_data(self, data, transport):
        """Record bytes from ``transport`` that are not MSRP (always logged, as a warning)."""
        remote = _endpoint(_call(transport, 'getPeer'))
        self.logger.warning('%sillegal data from %s: %r', self.prefix, remote, bytes(data[:200]))


def wants_chunks(logger):
    """False for a stock :class:`Logger` without ``log_traffic``: its chunk methods do nothing, so callers
    may skip them (and skip making what they would be given).  True for any other logger."""
    return type(logger) is not Logger or logger.log_traffic


def _call(transport, name):
    method = getattr(transport, name, None)
    try:
        return method() if method is not None else None
    except Exception:
        return None


def _wire_text_of_bytes(data):
    if len(data) <= MAX_LOGGED_BODY:
        return _wire_text(data)
    return _wire_text(data[:MAX_LOGGED_BODY]) + '\n<%d more bytes>\n' % (len(data) - MAX_LOGGED_BODY)


def _render_chunk(chunk):
    data = chunk.data
    if len(data) <= MAX_LOGGED_BODY:
        return _wire_text(chunk.encode())
    try:
        content_type = chunk.content_type
    except HeaderParsingError:   # a peer's malformed header: the summary still goes out
        content_type = None
    summary = '<%d bytes of %s>' % (len(data), escape_controls(content_type or 'unknown type'))
    return _wire_text(chunk.encoded_header) + summary + _wire_text(chunk.encoded_footer)
