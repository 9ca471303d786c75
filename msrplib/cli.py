"""The ``msrp`` command: listen, send, send files and chat over MSRP from a shell.

``msrp listen`` prints the full local path (what SDP ``a=path`` would carry)
for the peer to use; ``msrp send``, ``msrp sendfile`` and ``msrp chat --to
PATH`` connect to it.  There is no SIP: the path (and, for ``--tls``, the
certificate fingerprint) is pasted from one terminal to the other.  See
doc/cli.md.

Exit status (:data:`EXIT_CODES`): 0 ok, 2 usage or bad URI, 3 cannot
connect, 4 relay authentication failed, 5 TLS certificate error, 6 transfer
failed, 130 interrupted.  The errors behind them are reported as one line on
stderr, never as a traceback.
"""

import argparse
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import ssl
import sys
import unicodedata
import urllib.parse

import gevent
import gevent.pool
from gevent import socket
from gevent.event import AsyncResult

from msrplib import __version__, tls
from msrplib.connect import (
    AcceptorDirect, ConnectorDirect, MSRPBindError, MSRPBindSessionTimeout, MSRPCertificateError, MSRPConnectError,
    MSRPConnectTimeout, MSRPIncomingConnectTimeout, MSRPTimeout)
from msrplib.message import IncomingMessage, MessageAssembler, PartialBudget
from msrplib.protocol import URI, ByteRange, ByteRangeHeader, HeaderParsingError, ParsingError
from msrplib.relay import AcceptorRelay, ConnectorRelay, MSRPAuthTimeout, MSRPRelayAuthError, MSRPRelaySettings
from msrplib.sdp import FILE_HASH_ALGORITHMS, FileSelector, SDPError
from msrplib.session import GreenMSRPSession, MSRPSessionError, SessionState
from msrplib.trafficlog import Logger, escape_controls
from msrplib.transport import ConnectionClosed, MSRPTransactionError, make_report
from msrplib.websocket import MSRPWebSocketError

__all__ = ['main', 'EXIT_OK', 'EXIT_USAGE', 'EXIT_CONNECT', 'EXIT_AUTH', 'EXIT_TLS', 'EXIT_TRANSFER',
           'EXIT_INTERRUPTED', 'EXIT_CODES']

EXIT_OK = 0
EXIT_USAGE = 2           #: bad arguments, a bad URI or path, an unreadable file or save directory
EXIT_CONNECT = 3         #: refused, unreachable, timed out, relay down, binding refused, port in use
EXIT_AUTH = 4            #: the relay refused AUTH (wrong user or password)
EXIT_TLS = 5             #: a certificate did not verify (peer fingerprint, relay CA)
EXIT_TRANSFER = 6        #: a message or file was not delivered (error response, 413, size/hash mismatch)
EXIT_INTERRUPTED = 130   #: SIGINT or SIGTERM during send, sendfile or chat

EXIT_CODES = {
    EXIT_OK: 'ok',
    EXIT_USAGE: 'usage error or bad URI',
    EXIT_CONNECT: 'cannot connect',
    EXIT_AUTH: 'relay authentication failed',
    EXIT_TLS: 'TLS certificate error',
    EXIT_TRANSFER: 'transfer failed',
    EXIT_INTERRUPTED: 'interrupted',
}

#: Default for ``--timeout``: seconds for a connection, a TLS handshake, a relay's AUTH answer and a binding.
DEFAULT_TIMEOUT = 10.0
#: Default for ``--max-size``: the largest message ``listen``/``chat`` accept (413 beyond it).
DEFAULT_MAX_SIZE = 4 * 1024 ** 3
#: Longest a file name taken from a peer may be (in UTF-8 bytes) before it is shortened.
MAX_NAME_BYTES = 200
#: How long ``listen`` flushes its sessions when it stops.
STOP_TIMEOUT = 5.0
#: After SIGINT/SIGTERM, how long ``send``/``sendfile``/``chat`` may spend telling the peer (the ``#`` abort chunk).
INTERRUPT_GRACE = 0.3
#: Default for ``--max-text``: larger text messages are saved as files instead of being printed.
DEFAULT_MAX_TEXT = 64 * 1024
#: Default for ``--max-sessions``: sessions ``listen`` serves at once.
DEFAULT_MAX_SESSIONS = 16
#: Default for ``--report-timeout``: seconds without a Success-Report (or other progress) before a transfer fails.
REPORT_TIMEOUT = 30.0

_PROG = 'msrp'


class CommandError(Exception):
    """Ends the command with ``status`` after printing ``message`` on stderr."""

    def __init__(self, message, status):
        Exception.__init__(self, message)
        self.status = status


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (thrown into the main greenlet)."""


def _usage_error(message):
    return CommandError(message, EXIT_USAGE)


# ---------------------------------------------------------------------------
# Output


def _out(line):
    sys.stdout.write(escape_controls(line) + '\n')
    sys.stdout.flush()


def _note(line):
    sys.stderr.write('%s: %s\n' % (_PROG, escape_controls(line)))
    sys.stderr.flush()


class _EscapingFormatter(logging.Formatter):
    # Log records (the traffic log, the library's warnings) may carry a peer's bytes: escaped like every line.

    def format(self, record):
        return escape_controls(logging.Formatter.format(self, record))


def printable(text):
    """``text`` safe for a terminal: control characters (escape sequences, bidi overrides) become ``\\xNN``;
    line breaks are kept, continuation lines indented by two spaces."""
    text = escape_controls(text.replace('\r\n', '\n'))
    return text.replace('\n', '\n  ')


def _path_text(path):
    return ' '.join(str(uri) for uri in path)


# ---------------------------------------------------------------------------
# Arguments


def parse_path(text):
    """Parse a full MSRP path (space-separated URIs; a leading ``path:`` or ``a=path:`` is ignored).

    Returns the list of :class:`~msrplib.protocol.URI`; raises
    :class:`CommandError` (status 2) for anything that is not a usable path.
    """
    if not text.strip() or text.strip().lower() in ('path:', 'a=path:'):
        raise _usage_error('bad path: no URI given')
    try:
        path = URI.parse_path(text)
    except ParsingError as e:
        raise _usage_error('bad URI: %s' % (e,))
    if not path[-1].session_id:
        raise _usage_error('bad path: the last URI %s has no session-id' % (path[-1],))
    for uri in path:
        if uri.transport.lower() not in ('tcp', 'ws'):
            raise _usage_error('bad URI: %s: only the tcp and ws transports are supported' % (uri,))
    return path


def relay_settings(args):
    """The :class:`~msrplib.relay.MSRPRelaySettings` of ``--relay`` and friends, or None.

    ``--relay`` is ``USER[:PASSWORD]@DOMAIN`` (MSRP over TCP/TLS, RFC 4976)
    or a WebSocket URL ``ws[s]://USER[:PASSWORD]@HOST[:PORT][/PATH]``
    (RFC 7977; the relay's domain is HOST).  Without a password it comes from
    ``MSRP_RELAY_PASSWORD``.  Raises :class:`CommandError` (status 2) for a
    malformed value.
    """
    if not args.relay:
        return None
    if args.relay.lower().startswith(('ws://', 'wss://')):
        return _websocket_relay_settings(args)
    userinfo, at, domain = args.relay.rpartition('@')
    if not at or not userinfo or not domain:
        raise _usage_error('--relay must be USER:PASSWORD@DOMAIN or wss://USER:PASSWORD@HOST[:PORT][/PATH] '
                           '(or without :PASSWORD, with MSRP_RELAY_PASSWORD set)')
    username, password = _relay_credentials(args, userinfo)
    return MSRPRelaySettings(domain, username, password, host=args.relay_host, port=args.relay_port,
                             use_tls=not args.relay_no_tls, credentials=_relay_context(args))


def _relay_credentials(args, userinfo):
    username, colon, password = userinfo.partition(':')
    if not colon:
        password = os.environ.get('MSRP_RELAY_PASSWORD')
        if password is None:
            raise _usage_error('--relay %s has no password: give USER:PASSWORD@... or set MSRP_RELAY_PASSWORD'
                               % (args.relay,))
    if not username:
        raise _usage_error('--relay: the user name is empty')
    return username, password


def _relay_context(args):
    if not args.relay_ca:
        return None
    try:
        return gevent.ssl.create_default_context(cafile=args.relay_ca)
    except (OSError, ssl.SSLError) as e:
        raise _usage_error('--relay-ca %s: %s' % (args.relay_ca, e))


def _websocket_relay_settings(args):
    # --relay ws[s]://USER[:PASSWORD]@HOST[:PORT][/PATH]: the credentials come out of the URL the relay gets
    scheme, _, rest = args.relay.partition('://')
    authority, slash, path = rest.partition('/')
    userinfo, at, hostport = authority.rpartition('@')
    if not at or not userinfo:
        raise _usage_error('--relay %s://...: give the account as %s://USER:PASSWORD@HOST[:PORT][/PATH] '
                           '(or USER@HOST with MSRP_RELAY_PASSWORD set)' % (scheme, scheme))
    if args.relay_host or args.relay_port or args.relay_no_tls:
        raise _usage_error('--relay-host, --relay-port and --relay-no-tls do not apply to a WebSocket relay: '
                           'the URL says where it is, and wss:// or ws:// whether TLS is used')
    username, password = _relay_credentials(args, userinfo)
    username, password = urllib.parse.unquote(username), urllib.parse.unquote(password)
    url = '%s://%s%s%s' % (scheme.lower(), hostport, slash, path)
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as e:
        raise _usage_error('--relay: bad WebSocket URL %s: %s' % (url, e))
    if not host:
        raise _usage_error('--relay: the WebSocket URL %s has no host' % (url,))
    try:
        return MSRPRelaySettings(host, username, password, ws_url=url, credentials=_relay_context(args))
    except ValueError as e:
        raise _usage_error('--relay: %s' % (e,))


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('not a number: %r' % (text,))
    if not value > 0:
        raise argparse.ArgumentTypeError('must be positive: %r' % (text,))
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('not an integer: %r' % (text,))
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1: %r' % (text,))
    return value


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('not a port number: %r' % (text,))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError('port out of range: %r' % (text,))
    return value


def _report_options(parser):
    parser.add_argument('--no-success-report', action='store_true',
                        help="do not ask for the receiver's Success-Report (for receivers that send none); "
                             "delivery is then not confirmed")
    parser.add_argument('--report-timeout', metavar='SECONDS', type=_positive_float, default=REPORT_TIMEOUT,
                        help='fail when no Success-Report came for this long (default %(default)s)')


def build_parser():
    """The ``argparse`` parser of the ``msrp`` command."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group('common options')
    group.add_argument('--relay', metavar='USER:PASSWORD@DOMAIN',
                       help='go through this MSRP relay (RFC 4976), or wss://USER:PASSWORD@HOST[:PORT][/PATH] '
                            '(ws://...) for one reached over WebSocket (RFC 7977); without :PASSWORD it is '
                            'read from the MSRP_RELAY_PASSWORD environment variable')
    group.add_argument('--relay-host', metavar='HOST', help='where the relay is (default: DNS SRV of DOMAIN, '
                                                            'else DOMAIN)')
    group.add_argument('--relay-port', metavar='PORT', type=_port, help='relay port (default 2855)')
    group.add_argument('--relay-no-tls', action='store_true', help='talk to the relay over plain TCP')
    group.add_argument('--relay-ca', metavar='FILE', help="CA bundle (PEM) for the relay's certificate "
                                                          "(default: the system's CAs)")
    group.add_argument('--timeout', metavar='SECONDS', type=_positive_float, default=DEFAULT_TIMEOUT,
                       help='limit for connecting, TLS handshakes, relay AUTH and binding (default %(default)s)')
    group.add_argument('--log-traffic', action='store_true', help='log every chunk on stderr')

    receiving = argparse.ArgumentParser(add_help=False)
    group = receiving.add_argument_group('receiving options')
    group.add_argument('--host', default='127.0.0.1', help='address to listen on (default %(default)s)')
    group.add_argument('--port', type=_port, default=0, help='port to listen on (default: any free port)')
    group.add_argument('--tls', action='store_true', help='listen for msrps (TLS) with an ephemeral certificate; '
                                                          'its fingerprint is printed')
    group.add_argument('--save-dir', metavar='DIR', default='.', help='where incoming files go '
                                                                      '(default: current directory)')
    group.add_argument('--max-size', metavar='BYTES', type=_positive_int, default=DEFAULT_MAX_SIZE,
                       help='largest incoming message accepted, 413 beyond (default %(default)s)')
    group.add_argument('--max-text', metavar='BYTES', type=_positive_int, default=DEFAULT_MAX_TEXT,
                       help='larger text messages are saved as files, not printed (default %(default)s)')
    group.add_argument('--max-partial-disk', metavar='BYTES', type=_positive_int,
                       help='disk space that partly received messages may take in --save-dir, 413 beyond '
                            '(default: half the free space of --save-dir when the command starts)')

    connecting = argparse.ArgumentParser(add_help=False)
    group = connecting.add_argument_group('connecting options')
    group.add_argument('--tls-fingerprint', metavar='FP',
                       help="the listener's certificate fingerprint, e.g. 'sha-256 AB:CD:...' (msrps peers)")

    parser = argparse.ArgumentParser(
        prog=_PROG, description='MSRP (RFC 4975/4976) from the command line (msrplib %s).' % __version__,
        epilog='Exit status: ' + ', '.join('%d %s' % item for item in sorted(EXIT_CODES.items())) + '.')
    parser.add_argument('--version', action='version', version='msrplib %s' % __version__)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    listen = commands.add_parser('listen', parents=[receiving, common], help='print a path, then receive',
                                 description='Print the full local path (and the fingerprint with --tls), accept '
                                             'peers, print incoming messages and save incoming files.')
    listen.add_argument('--count', metavar='N', type=_positive_int,
                        help='exit after N messages or files (default: run until SIGINT/SIGTERM)')
    listen.add_argument('--max-sessions', metavar='N', type=_positive_int, default=DEFAULT_MAX_SESSIONS,
                        help='sessions served at once; further peers wait (default %(default)s)')
    listen.add_argument('--reply', metavar='TEXT',
                        help='answer every text message with TEXT (a text/plain message back, sent before '
                             'the Success-Report of the message it answers)')
    listen.set_defaults(handler=cmd_listen)

    send = commands.add_parser('send', parents=[connecting, common], help='send text messages',
                               description='Connect to PATH and send each TEXT as one message.')
    send.add_argument('--to', metavar='PATH', required=True, help="the listener's full path (space-separated "
                                                                  "URIs, as 'msrp listen' prints it)")
    send.add_argument('--content-type', default='text/plain', help='default %(default)s')
    _report_options(send)
    send.add_argument('text', metavar='TEXT', nargs='+', help='a message')
    send.set_defaults(handler=cmd_send)

    sendfile = commands.add_parser('sendfile', parents=[connecting, common], help='send a file',
                                   description='Connect to PATH and stream FILE (RFC 5547 file-selector: name, '
                                               'type, size, sha-1) with a progress bar on stderr.')
    sendfile.add_argument('--to', metavar='PATH', required=True, help="the listener's full path")
    sendfile.add_argument('--chunk-size', metavar='N', type=_positive_int,
                          help='bytes per chunk (default 65536; 8192 when a relay is in the path)')
    sendfile.add_argument('--content-type', help='default: guessed from the file name')
    sendfile.add_argument('--name', help='file name announced to the peer (default: the base name of FILE)')
    sendfile.add_argument('--no-progress', action='store_true', help='no progress bar (also off when stderr '
                                                                     'is not a terminal)')
    _report_options(sendfile)
    sendfile.add_argument('file', metavar='FILE')
    sendfile.set_defaults(handler=cmd_sendfile)

    chat = commands.add_parser('chat', parents=[connecting, receiving, common], help='interactive chat',
                               description='Send each line of stdin, print incoming messages; EOF ends the '
                                           'session.  Without --to, listen for one peer first.')
    chat.add_argument('--to', metavar='PATH', help="the peer's full path (default: listen for one peer)")
    chat.set_defaults(handler=cmd_chat)

    for name, help_text in (('demo', 'the loopback demo (python -m msrplib demo)'),
                            ('decode', "parse RFC 4975's example exchange")):
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument('rest', nargs=argparse.REMAINDER)
        sub.set_defaults(handler=None)
    return parser


# ---------------------------------------------------------------------------
# Process setup: logging, timeouts, signals


class _CommandLogger(Logger):
    """The command's logger: a peer that starts a TLS handshake on a plain connection is named as such."""

    tls_peer = None   # the address of the last peer whose "illegal data" was a TLS record

    def received_illegal_data(self, data, transport):
        if bytes(data[:2]) in _TLS_RECORD_STARTS:
            try:
                peer = transport.getPeer()
            except (AttributeError, OSError):
                peer = None
            self.tls_peer = '%s:%s' % (peer.host, peer.port) if peer is not None else '?'
            self.warning('a peer at %s speaks TLS (msrps), but this side speaks plain msrp: it must be given '
                         'the msrp:// path', self.tls_peer)
            return
        Logger.received_illegal_data(self, data, transport)


_TLS_RECORD_STARTS = (b'\x16\x03', b'\x15\x03')   # a TLS handshake or alert record


def _configure_logging(log_traffic):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter('%(message)s' if log_traffic else _PROG + ': %(message)s'))
    msrp_logger = logging.getLogger('msrplib.cli')
    msrp_logger.handlers[:] = [handler]
    msrp_logger.propagate = False
    msrp_logger.setLevel(logging.INFO if log_traffic else logging.WARNING)
    return _CommandLogger(log_traffic=log_traffic, logger=msrp_logger)


_TIMEOUT_CLASSES = (MSRPConnectTimeout, MSRPIncomingConnectTimeout, MSRPBindSessionTimeout, MSRPAuthTimeout)


@contextlib.contextmanager
def _timeouts(seconds):
    # The connect layer's limits are class attributes (documented as such): set them for this command.
    saved = [(cls, cls.__dict__.get('seconds', _MISSING)) for cls in _TIMEOUT_CLASSES]
    for cls in _TIMEOUT_CLASSES:
        cls.seconds = seconds
    try:
        yield
    finally:
        for cls, value in saved:
            if value is _MISSING:
                del cls.seconds
            else:
                cls.seconds = value


_MISSING = object()


@contextlib.contextmanager
def _signals():
    main_greenlet = gevent.getcurrent()

    def interrupt(signum):
        gevent.kill(main_greenlet, Interrupted(signum))

    handlers = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers.append(gevent.signal_handler(signum, interrupt, signum))
    try:
        yield
    finally:
        for handler in handlers:
            handler.cancel()


# ---------------------------------------------------------------------------
# Connecting


def _local_host_for(uri):
    # The local address the kernel would use towards ``uri`` (asks only; sends nothing).
    try:
        info = socket.getaddrinfo(uri.host, uri.port or 2855, 0, socket.SOCK_DGRAM)
        family, _, _, _, address = info[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return probe.getsockname()[0]
    except (OSError, IndexError, UnicodeError):
        return None


def connect(args, logger):
    """Connect to ``--to`` (directly or through ``--relay``) and return the bound transport.

    Raises :class:`CommandError` with the exit status for every failure to
    establish the session.
    """
    path = parse_path(args.to)
    relay = relay_settings(args)
    fingerprint = args.tls_fingerprint
    if fingerprint is not None:
        try:
            tls.parse_fingerprint(fingerprint)
        except ValueError as e:
            raise _usage_error('--tls-fingerprint: %s' % (e,))
    if relay is not None:
        if fingerprint is not None:
            raise _usage_error('--tls-fingerprint cannot be checked through a relay (the relay terminates TLS)')
        connector = ConnectorRelay(relay, logger=logger)
        local_uri = None
    else:
        connector = ConnectorDirect(logger=logger, expected_fingerprint=fingerprint)
        first = path[0]
        local_uri = URI(host=_local_host_for(first) or '127.0.0.1', port=0, use_tls=first.use_tls)
    try:
        with _establishing(tls_expected=path[0].use_tls if relay is None else None):
            connector.prepare(local_uri)
            return connector.complete(path)
    finally:
        connector.cleanup()


_HANDSHAKE_DROPPED = ('EOF', 'Connection reset', 'WRONG_VERSION_NUMBER', 'wrong version number',
                      'PACKET_LENGTH_TOO_LONG', 'record layer failure', 'UNKNOWN_PROTOCOL')


@contextlib.contextmanager
def _establishing(tls_expected=None):
    # Turn the errors of prepare()/complete() into exit statuses.  ``tls_expected``: the scheme of the first hop
    # when connecting directly (True msrps, False msrp), to say so when the peer seems to speak the other one.
    try:
        yield
    except MSRPConnectError as e:
        reason = str(getattr(e, 'reason', e))
        if tls_expected and any(text in reason for text in _HANDSHAKE_DROPPED):
            raise CommandError('%s: the TLS handshake failed; the peer probably speaks plain msrp, not msrps (TLS) '
                               'as this path says: use its msrp:// path' % (e,), EXIT_CONNECT)
        raise CommandError(str(e), EXIT_CONNECT)
    except ConnectionClosed as e:
        if tls_expected is False:
            raise CommandError('the peer closed the connection at the binding (%s): either it speaks msrps (TLS), '
                               'not plain msrp as this path says (then use its msrps:// path), or it dropped '
                               'the connection (a busy listener over its limit of pending connections: '
                               'try again)' % (e or type(e).__name__,), EXIT_CONNECT)
        raise CommandError('the connection closed while binding the session: %s' % (e or type(e).__name__),
                           EXIT_CONNECT)
    except MSRPRelayAuthError as e:
        raise CommandError('relay authentication failed: %s' % (e,), EXIT_AUTH)
    except MSRPCertificateError as e:
        raise CommandError('TLS certificate error: %s' % (e,), EXIT_TLS)
    except MSRPBindError as e:
        raise CommandError(str(e), EXIT_CONNECT)
    except MSRPTimeout as e:
        raise CommandError(str(e), EXIT_CONNECT)
    except MSRPTransactionError as e:
        raise CommandError('the peer refused the session: %s %s' % (e.code, e.comment), EXIT_CONNECT)
    except MSRPWebSocketError as e:
        # the relay refused the WebSocket (e.g. HTTP 400/404, no msrp subprotocol), or a ;ws URI to connect to directly
        raise CommandError(str(e), EXIT_CONNECT)


def _peer_failure(error, logger, listener):
    """The line ``listen``/``chat`` print when a peer failed to connect or bind."""
    if isinstance(logger, _CommandLogger) and logger.tls_peer is not None:
        logger.tls_peer = None
        return None   # already said: the peer speaks TLS to a plain listener
    reason = str(getattr(error, 'reason', error))
    if isinstance(error, MSRPConnectError) and listener.args.tls and any(
            text in reason for text in ('WRONG_VERSION_NUMBER', 'wrong version number', 'HTTP_REQUEST',
                                        'UNKNOWN_PROTOCOL', 'record layer failure')):
        return ('a peer connected with plain msrp, but this listener speaks msrps (TLS): it must be given the '
                'msrps:// path (%s)' % (reason,))
    if isinstance(error, MSRPIncomingConnectTimeout):
        return 'a peer connected but did not complete the TLS handshake within %s s' % (listener.args.timeout,)
    return 'a peer failed to connect: %s' % (error,)


def _peer_of(transport):
    uri = transport.remote_uri
    return str(uri) if uri is not None else '?'


# ---------------------------------------------------------------------------
# Receiving: text is printed, files are saved


def file_selector_of(message):
    """The :class:`~msrplib.sdp.FileSelector` of ``message``'s File-Selector header; None when absent or malformed."""
    header = message.headers.get('File-Selector')
    if header is None:
        return None
    try:
        return FileSelector.parse(header.encoded)
    except SDPError:
        return None


def verify_file(message, selector):
    """Compare ``message`` with ``selector``; return ``(checked, problem)``.

    ``checked`` names what was compared (``'sha-1 ok'``, ``'size ok'``,
    ``'unverified'``); ``problem`` is None or what did not match.  Hashing
    runs in gevent's thread pool, so other sessions go on meanwhile.
    """
    if selector is None:
        return 'unverified', None
    if selector.size is not None and selector.size != message.size:
        return None, 'size mismatch: announced %d bytes, received %d' % (selector.size, message.size)
    expected = selector.hash
    if expected is None or expected.algorithm not in FILE_HASH_ALGORITHMS:
        return ('size ok' if selector.size is not None else 'unverified'), None
    if expected.algorithm == 'sha-1':
        actual = gevent.get_hub().threadpool.apply(message.sha1)
        if actual != expected.digest:
            return None, 'sha-1 mismatch: announced %s, received %s' % (expected.digest.hex(), actual.hex())
        return 'sha-1 ok', None
    source = message.file if message.file is not None else message.data
    if message.file is not None:
        message.file.seek(0)
    if not gevent.get_hub().threadpool.apply(FileSelector(hash=expected).verify, (source,)):
        return None, '%s mismatch' % expected.algorithm
    return '%s ok' % expected.algorithm, None


def safe_file_name(name, fallback='msrp-file'):
    """A file name from a peer made safe: no directories, no control characters, no leading dots, not too long."""
    name = (name or '').replace('\\', '/').split('/')[-1]
    name = ''.join(c for c in name if unicodedata.category(c)[0] != 'C')
    name = name.strip().lstrip('.').strip()
    if not name:
        return fallback
    while len(name.encode('utf-8')) > MAX_NAME_BYTES:
        base, ext = os.path.splitext(name)
        name = base[:-1] + ext if len(base) > 1 else name[:-1]
    return name


def reserve_path(directory, name):
    """Create an empty file for ``name`` in ``directory`` without overwriting anything; return its path.

    ``name``, ``name-1``, ``name-2``... (before the extension) are tried in turn.
    """
    base, ext = os.path.splitext(name)
    for number in itertools.count():
        candidate = name if number == 0 else '%s-%d%s' % (base, number, ext)
        path = os.path.join(directory, candidate)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


class _Receiver:
    """What ``listen`` and ``chat`` do with incoming messages: print text, save and verify files.

    Messages above 1 MiB are written to hidden partial files in ``save_dir``
    as they arrive; a partial file is deleted as soon as its message ends
    without completing (``#``, 413, a write error, the session's end) and,
    for whatever is left, by :meth:`discard_all` when the command stops.
    Partial files of every session share one disk budget (``disk_budget``
    bytes; None: no limit): a chunk that would pass it is answered 413.
    Text messages larger than ``max_text`` bytes are saved like files, never
    decoded whole.
    """

    def __init__(self, save_dir, count=None, disk_budget=None, max_text=None, reply=None):
        self.save_dir = save_dir
        self.reply = reply              # text sent back for every text message (listen --reply)
        self.count = count
        self.max_text = DEFAULT_MAX_TEXT if max_text is None else max_text
        self.handled = 0
        self.failed = 0
        self.enough = AsyncResult()     # set when --count messages were handled
        self.budget = PartialBudget(max_files=disk_budget)
        self.partials = {}              # IncomingMessage -> (path of its partial file, its assembler)

    def new_assembler(self, max_size):
        """A :class:`MessageAssembler` for one session, writing big messages to partial files in ``save_dir``."""
        assembler = MessageAssembler(max_message_size=max_size, budget=self.budget, file_budget=self.budget.max_files,
                                     on_discard=self._discard_partial)
        assembler.open_file = lambda message: self._open_partial(message, assembler)
        return assembler

    def _open_partial(self, message, assembler):
        fd, path = _mkstemp(self.save_dir)
        self.partials[message] = (path, assembler)
        return os.fdopen(fd, 'w+b')

    def _discard_partial(self, message):
        entry = self.partials.pop(message, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.unlink(entry[0])
        if message.discard_reason is not None:  # dropped by the assembler (not a file left at exit)
            what = 'message %s' % printable(message.message_id)
            disposition = _disposition(message)
            name = disposition.parameters.get('filename') if disposition is not None else None
            if name:
                what = 'file %s' % printable(name)
            total = '?' if message.total is None else message.total
            _note('dropped %s (%d of %s bytes received): %s%s' % (
                what, message.bytes_received, total, message.discard_reason,
                '; partial file deleted' if entry is not None else ''))

    def discard_partials(self, assembler):
        """Delete the files of ``assembler``'s messages that never completed or were never handled."""
        assembler.clear()
        for message, (path, owner) in list(self.partials.items()):
            if owner is assembler:
                self._close_and_discard(message)

    def discard_all(self):
        """Delete every partial file left (the command is stopping)."""
        for message in list(self.partials):
            self._close_and_discard(message)

    def _close_and_discard(self, message):
        if message.file is not None:
            with contextlib.suppress(OSError):
                message.file.close()
        self._discard_partial(message)

    def serve(self, session, assembler):
        """Handle what ``session`` receives until it ends (raises nothing)."""
        peer = _peer_of(session.msrp)
        try:
            while True:
                try:
                    item = session.receive_chunk()
                except ConnectionClosed:
                    return
                except Exception as e:
                    _note('session with %s ended: %s' % (peer, e))
                    return
                if isinstance(item, IncomingMessage):
                    self.handle(session, item)
                elif item.method == 'NICKNAME':
                    session.respond(item, 501, 'Nicknames are not supported')
        finally:
            self.discard_partials(assembler)

    def handle(self, session, message):
        try:
            sender = str(message.chunk.from_path[-1])
        except (HeaderParsingError, IndexError, TypeError):
            sender = _peer_of(session.msrp)
        try:
            if self._is_file(message):
                ok = self._save(session, message, sender)
            elif message.size > self.max_text:
                _note('text message of %d bytes from %s: saved as a file (over --max-text)' % (message.size, sender))
                ok = self._save(session, message, sender, extension='.txt')
            else:
                _out('message from %s: %s' % (sender, printable(self._text(message))))
                if self.reply is not None:   # queued before the REPORT: the sender has it when delivery is confirmed
                    with contextlib.suppress(MSRPSessionError):
                        session.send_message(self.reply.encode('utf-8'), 'text/plain; charset=utf-8')
                _report(session, message, 200, 'OK')
                ok = True
        finally:
            self._close_and_discard(message)
        self.handled += 1
        if not ok:
            self.failed += 1
        if self.count is not None and self.handled >= self.count and not self.enough.ready():
            self.enough.set(self.handled)

    @staticmethod
    def _is_file(message):
        headers = message.headers
        if 'File-Selector' in headers:
            return True
        disposition = _disposition(message)
        if disposition is not None and (disposition.disposition.lower() == 'attachment'
                                        or 'filename' in disposition.parameters):
            return True
        content_type = (message.content_type or '').split(';', 1)[0].strip().lower()
        return not (content_type.startswith('text/') or content_type == 'message/cpim')

    @staticmethod
    def _text(message):
        content_type = message.content_type or ''
        match = re.search(r';\s*charset="?([A-Za-z0-9._-]+)', content_type, re.I)
        charset = match.group(1) if match else 'utf-8'
        try:
            return message.data.decode(charset, 'replace')
        except LookupError:
            return message.data.decode('utf-8', 'replace')

    def _save(self, session, message, sender, extension=''):
        selector = file_selector_of(message)
        disposition = _disposition(message)
        name = disposition.parameters.get('filename') if disposition is not None else None
        if not name and selector is not None:
            name = selector.name
        name = safe_file_name(name, fallback='msrp-%s%s' % (safe_file_name(message.message_id), extension))
        checked, problem = verify_file(message, selector)
        if problem is not None:
            _out('failed %s from %s: %s (not saved)' % (printable(name), sender, problem))
            _report(session, message, 400, 'File %s' % problem.split(':')[0])
            return False
        path = None
        try:
            path = reserve_path(self.save_dir, name)
            entry = self.partials.get(message)
            if entry is not None and message.file is not None:
                message.file.flush()
                os.replace(entry[0], path)
                del self.partials[message]
                _chmod_default(path)
            else:
                with open(path, 'wb') as f:
                    f.write(message.data)
            size = os.path.getsize(path)
        except OSError as e:
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            _out('failed %s from %s: cannot save: %s' % (printable(name), sender, e))
            _report(session, message, 413, 'Cannot store the file')
            return False
        if size != message.size:   # what is reported saved is what is on disk
            with contextlib.suppress(OSError):
                os.unlink(path)
            _out('failed %s from %s: %d bytes on disk for a message of %d (not saved)'
                 % (printable(name), sender, size, message.size))
            _report(session, message, 400, 'File size mismatch')
            return False
        _out('saved %s (%d bytes, %s)' % (printable(path), size, checked))
        _report(session, message, 200, 'OK')
        return True


def _disposition(message):
    return message.chunk.header_value('Content-Disposition')


def _mkstemp(directory):
    import tempfile
    return tempfile.mkstemp(dir=directory, prefix='.msrp-', suffix='.part')


def _chmod_default(path):
    # mkstemp makes 0600 files; a saved file gets the permissions open() would have given it.
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~mask)


def _report(session, message, code, comment):
    # The one REPORT for a whole reassembled message (automatic reports are off: files are verified first).
    try:
        report = make_report(message.chunk, code, comment)
    except HeaderParsingError:
        return
    if report is None:
        return
    report.headers['Byte-Range'] = ByteRangeHeader(decoded=ByteRange(1, message.size, message.size))
    with contextlib.suppress(MSRPSessionError):
        session.send_chunk(report)


def _check_save_dir(directory):
    if not os.path.lexists(directory):
        try:
            os.makedirs(directory)
        except OSError as e:
            raise _usage_error('--save-dir %s does not exist and cannot be created: %s'
                               % (directory, e.strerror or e))
        _note('created the directory %s' % (directory,))
    if not os.path.isdir(directory):
        raise _usage_error('--save-dir %s: not a directory' % (directory,))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _usage_error('--save-dir %s: not writable' % (directory,))


def _disk_budget(args):
    # --max-partial-disk, or half the space free in --save-dir now.
    if args.max_partial_disk is not None:
        return args.max_partial_disk
    try:
        return shutil.disk_usage(args.save_dir).free // 2
    except OSError:
        return None


def _new_receiver(args, count=None):
    return _Receiver(args.save_dir, count, disk_budget=_disk_budget(args), max_text=args.max_text,
                     reply=getattr(args, 'reply', None))


# ---------------------------------------------------------------------------
# Accepting


class _Listener:
    """Accepts peers: directly, on one listening socket kept open throughout (every connection is taken and
    bound in its own greenlet, see AcceptorDirect), or through the relay with a fresh reservation each."""

    def __init__(self, args, logger):
        self.args = args
        self.logger = logger
        self.relay = relay_settings(args)
        if self.relay is not None and args.tls:
            raise _usage_error('--tls is for listening directly; the relay connection uses TLS unless '
                               '--relay-no-tls is given')
        self.credentials = tls.TLSCredentials.ephemeral() if args.tls and self.relay is None else None
        self.local_uri = URI(host=args.host, port=args.port, use_tls=args.tls, credentials=self.credentials)
        self.acceptor = None
        self.printed = None

    def prepare(self):
        """Make the acceptor ready and print its path (when it changed)."""
        if self.relay is not None:
            self.acceptor = AcceptorRelay(self.relay, logger=self.logger)
            with _establishing():
                path = self.acceptor.prepare()
        elif self.acceptor is None:
            self.acceptor = AcceptorDirect(logger=self.logger)
            self.acceptor.keep_listening = True
            self.acceptor.on_connection_dropped = self._dropped
            with _establishing():
                path = self.acceptor.prepare(self.local_uri)
        else:
            path = self.acceptor.getLocalPath()
        text = _path_text(path)
        if text != self.printed:
            _out('path: %s' % text)
            if self.credentials is not None and self.printed is None:
                _out('fingerprint: %s' % self.credentials.fingerprint)
            self.printed = text

    def accept(self):
        """Wait for the next peer and return its bound transport (None when a peer failed to bind)."""
        acceptor = self.acceptor
        try:
            if self.relay is not None and acceptor.expires:
                # a reservation lapses at the relay: renew it (a new path is printed) before it does
                with gevent.Timeout(max(5.0, acceptor.expires * 0.9), False):
                    return acceptor.complete(None)
                _note('relay reservation renewed')
                return None
            return acceptor.complete(None)
        except (MSRPConnectError, MSRPTimeout, MSRPTransactionError, ConnectionClosed) as e:
            if self.relay is not None and not isinstance(e, MSRPTransactionError):
                raise CommandError('relay connection lost: %s' % (e,), EXIT_CONNECT)
            line = _peer_failure(e, self.logger, self)
            if line is not None:
                _note(line)
            return None
        finally:
            if self.relay is not None:
                acceptor.cleanup()
                self.acceptor = None

    def _dropped(self, address, error):
        # a connection the acceptor dropped while waiting for peers (it goes on accepting)
        line = _peer_failure(error, self.logger, self)
        if line is not None:
            _note(line)

    def cleanup(self):
        if self.acceptor is not None:
            self.acceptor.cleanup()
            self.acceptor = None


def _listen_timeouts(listener):
    # Waiting for peers is not bounded; a peer that connected must bind within --timeout.
    MSRPIncomingConnectTimeout.seconds = None
    if listener.relay is not None:
        MSRPBindSessionTimeout.seconds = None   # through a relay, waiting for the binding is waiting for the peer


def cmd_listen(args, logger):
    _check_save_dir(args.save_dir)
    listener = _Listener(args, logger)
    _listen_timeouts(listener)
    receiver = _new_receiver(args, args.count)
    sessions = []
    jobs = gevent.pool.Pool(args.max_sessions)

    def serve(transport):
        assembler = receiver.new_assembler(args.max_size)
        session = GreenMSRPSession(transport, automatic_reports=False, assembler=assembler)
        sessions.append(session)
        _note('session from %s' % _peer_of(transport))
        try:
            receiver.serve(session, assembler)
        finally:
            sessions.remove(session)
            _note('session with %s ended' % _peer_of(transport))

    def accept_loop():
        try:
            while True:
                if jobs.full():
                    _note('%d sessions: the next peer waits until one ends (--max-sessions)' % args.max_sessions)
                    jobs.wait_available()
                listener.prepare()
                transport = listener.accept()
                if transport is not None:
                    jobs.spawn(serve, transport)
        except CommandError as e:  # e.g. the relay went away: the command ends with its status
            receiver.enough.set_exception(e)

    acceptor_job = gevent.spawn(accept_loop)
    acceptor_job.link_exception(lambda job: receiver.enough.ready() or receiver.enough.set_exception(job.exception))
    try:
        receiver.enough.get()
    except Interrupted:
        pass
    finally:
        acceptor_job.kill()
        listener.cleanup()
        _stop_sessions(sessions)
        jobs.kill(timeout=STOP_TIMEOUT)
        receiver.discard_all()
    return EXIT_TRANSFER if receiver.failed else EXIT_OK


def _stop_sessions(sessions):
    # Flush responses and REPORTs still queued, then close.
    stopping = [gevent.spawn(session.shutdown) for session in list(sessions)]
    gevent.joinall(stopping, timeout=STOP_TIMEOUT)
    for session in list(sessions):
        session.msrp.loseConnection(wait=False)


# ---------------------------------------------------------------------------
# Sending


def cmd_send(args, logger):
    session = GreenMSRPSession(connect(args, logger))
    session.SUCCESS_REPORT_TIMEOUT = args.report_timeout
    confirmed = True
    try:
        for text in args.text:
            try:
                message = session.send_large_message(text.encode('utf-8', 'surrogateescape'), args.content_type,
                                                     success_report=not args.no_success_report)
            except MSRPSessionError as e:
                raise CommandError('message not delivered: %s' % (e,), EXIT_TRANSFER)
            _wait_delivered(session, message, 'message')
            confirmed = confirmed and message.confirmed
    finally:
        _shutdown(session)
    if not confirmed:
        _note('sent; delivery not confirmed (no Success-Report asked for)')
    return EXIT_OK


def _shutdown(session):
    if sys.exc_info()[0] is Interrupted:
        # Ctrl-C: no waiting for the peer; the flush of what is written is bounded too (a stalled peer may
        # have filled the socket: the process then exits and the kernel closes it)
        with gevent.Timeout(INTERRUPT_GRACE, False):
            session.msrp.loseConnection(wait=False)
        return
    with gevent.Timeout(STOP_TIMEOUT, False):
        session.shutdown()
    session.msrp.loseConnection(wait=False)


def _progress_bar(total, name, disabled):
    from tqdm import tqdm
    tqdm.monitor_interval = 0  # no monitor thread: the bar is updated from greenlets only
    # unit 'iB' with the divisor 1024: tqdm writes KiB, MiB, MiB/s (binary prefixes for binary multiples)
    return tqdm(total=total, desc=name, unit='iB', unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=True if disabled else None, leave=True, dynamic_ncols=True)


def cmd_sendfile(args, logger):
    try:
        handle = open(args.file, 'rb')
    except OSError as e:
        raise _usage_error('cannot read %s: %s' % (args.file, e.strerror or e))
    with handle:
        if not os.path.isfile(args.file):
            raise _usage_error('%s is not a regular file' % (args.file,))
        size = os.fstat(handle.fileno()).st_size
        name = args.name or os.path.basename(args.file)
        session = GreenMSRPSession(connect(args, logger))
        session.SUCCESS_REPORT_TIMEOUT = args.report_timeout
        bar = _progress_bar(size, name, args.no_progress)
        message = None
        try:
            def progress(message):
                bar.update(message.bytes_acknowledged - bar.n)

            try:
                message = session.send_file(handle, content_type=args.content_type, chunk_size=args.chunk_size,
                                            success_report=not args.no_success_report, progress_cb=progress,
                                            name=name)
            except MSRPSessionError as e:
                raise CommandError('file not sent: %s' % (e,), EXIT_TRANSFER)
            _wait_delivered(session, message, 'file')
        except Interrupted:
            bar.close()
            _abort(session, message)
            raise
        finally:
            bar.close()
            _shutdown(session)
    if not message.confirmed:
        _note('sent %s (%d bytes); delivery not confirmed (no Success-Report asked for)' % (name, size))
    else:
        _note('delivered %s (%d bytes)' % (name, size))
    return EXIT_OK


def _abort(session, message):
    """Ctrl-C: end ``message`` with ``#`` (the peer drops it), waiting at most :data:`INTERRUPT_GRACE`."""
    if message is not None:
        message.abort()
        with gevent.Timeout(INTERRUPT_GRACE, False):
            with contextlib.suppress(MSRPTransactionError):
                message.wait()   # fails (aborted) once the '#' chunk is made; the writer sends it next
            gevent.sleep(0)      # let the writer put the '#' on the wire


def _wait_delivered(session, message, what):
    """Wait for ``message``'s outcome (the library bounds the wait: responses, then Success-Reports)."""
    try:
        message.wait()
    except MSRPTransactionError as e:
        raise _not_delivered(session, message, e, what)


def _not_delivered(session, message, error, what):
    code = error.code if error.code is not None else '?'
    comment = error.comment or ''
    if code == 408 and 'No Success-Report' in comment:
        return CommandError('%s not delivered: %s %s (--no-success-report for a receiver that sends none: delivery '
                            'is then not confirmed)' % (what, code, comment), EXIT_TRANSFER)
    if code == 408 and session.state != SessionState.CONNECTED:
        # the local 408 of a session that ended: what the user needs to know is that the peer went away
        return CommandError('%s not delivered: the peer closed the connection (%d of %s bytes acknowledged)'
                            % (what, message.bytes_acknowledged, message.size if message.size is not None else '?'),
                            EXIT_TRANSFER)
    return CommandError('%s not delivered: %s %s' % (what, code, comment), EXIT_TRANSFER)


# ---------------------------------------------------------------------------
# Chat


def _stdin_lines(fd):
    """Lines (bytes, without the line break) read from ``fd`` without blocking other greenlets; ends at EOF."""
    pending = b''
    while True:
        socket.wait_read(fd)
        data = os.read(fd, 65536)
        if not data:
            if pending:
                yield pending
            return
        pending += data
        *lines, pending = pending.split(b'\n')
        for line in lines:
            yield line.rstrip(b'\r')


def cmd_chat(args, logger):
    if args.to is None:
        _check_save_dir(args.save_dir)
        listener = _Listener(args, logger)
        _listen_timeouts(listener)
        try:
            transport = None
            while transport is None:
                listener.prepare()
                transport = listener.accept()
        finally:
            listener.cleanup()
    else:
        transport = connect(args, logger)
    _note('chatting with %s (end with EOF)' % _peer_of(transport))
    receiver = _new_receiver(args)
    assembler = receiver.new_assembler(args.max_size)
    session = GreenMSRPSession(transport, automatic_reports=False, assembler=assembler)
    failures = []

    def send_lines():
        for line in _stdin_lines(sys.stdin.fileno()):
            if not line.strip():
                continue
            try:
                session.deliver_message(line, 'text/plain')
            except MSRPTransactionError as e:
                failures.append(e)
                _note('not delivered: %s %s' % (e.code, e.comment))
            except MSRPSessionError:
                return

    printer = gevent.spawn(receiver.serve, session, assembler)
    sender = gevent.spawn(send_lines)
    try:
        gevent.wait([printer, sender], count=1)
        if sender.ready():
            sender.get()
            _shutdown(session)
            printer.join(STOP_TIMEOUT)
        else:
            _note('the peer ended the session')
    finally:
        sender.kill()
        printer.kill()
        session.msrp.loseConnection(wait=False)
        receiver.discard_all()
    return EXIT_TRANSFER if failures or receiver.failed else EXIT_OK


# ---------------------------------------------------------------------------
# Entry point


def main(argv=None):
    """Run the ``msrp`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ('demo', 'decode'):
        from msrplib.__main__ import main as classic_main
        return classic_main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    logger = _configure_logging(args.log_traffic)
    interrupted_status = EXIT_OK if args.command == 'listen' else EXIT_INTERRUPTED
    try:
        with _timeouts(args.timeout), _signals():
            return args.handler(args, logger)
    except CommandError as e:
        _note(str(e))
        return e.status
    except (Interrupted, KeyboardInterrupt):
        if interrupted_status == EXIT_INTERRUPTED:
            _note('interrupted')
        return interrupted_status
    except BrokenPipeError:
        return EXIT_TRANSFER


if __name__ == '__main__':
    sys.exit(main())
