"""MSRP entities and their wire format, with no I/O (RFC 4975 §6-§9).

This module holds the pure data of the protocol: :class:`URI` and
:class:`ConnectInfo`, the typed headers, :class:`MSRPData` (one chunk) and
:class:`MSRPParser`, an incremental parser that takes bytes in any split and
returns events.  It never touches a socket and never imports gevent.

Theory of operation of the parser
---------------------------------
A connection carries chunks back to back.  Each chunk is a start line, header
lines, optionally an empty line and a body, then an end-line
``-------<transaction-id><flag>CRLF``.  The only way to find the end of a body
is to search for ``CRLF -------<transaction-id>`` followed by a flag and CRLF,
so the parser has two states:

========== ============================================ =====================
state      waits for                                    then
========== ============================================ =====================
HEAD       start line and headers, up to the empty      BODY, or HEAD again
           line (body follows) or the end-line (none)   when there is no body
BODY       the end-line of the current transaction      HEAD
========== ============================================ =====================

In HEAD the unparsed bytes stay in a buffer whose size is bounded by the
limits given to the constructor.  In BODY the parser hands out every byte it
can prove is body and keeps only a tail shorter than the end-line, so a body
of any size costs bounded memory.  A chunk that lies whole in the bytes given
goes through HEAD and BODY in one pass of the parse loop, with no copy of the
input (see the comment in :class:`MSRPParser` on how the buffer is kept).
"""

import enum
import os
import re
import sys
from collections import namedtuple

from msrplib import MSRPError

__all__ = [
    'ParsingError', 'HeaderParsingError', 'ChunkParseError', 'InvalidStartLine',
    'InvalidHeaderLine', 'InvalidEndLine', 'LimitExceeded',
    'ConnectInfo', 'URI', 'parse_uri', 'parse_path',
    'ByteRange', 'Status', 'ContentDisposition',
    'SimpleHeaderType', 'UTF8HeaderType', 'URIHeaderType', 'IntegerHeaderType',
    'LimitedChoiceHeaderType', 'SuccessReportHeaderType', 'FailureReportHeaderType',
    'ByteRangeHeaderType', 'StatusHeaderType', 'ContentDispositionHeaderType',
    'ParameterListHeaderType', 'DigestHeaderType',
    'MSRPHeader', 'MSRPNamedHeader', 'ToPathHeader', 'FromPathHeader', 'MessageIDHeader',
    'SuccessReportHeader', 'FailureReportHeader', 'ByteRangeHeader', 'StatusHeader',
    'ExpiresHeader', 'MinExpiresHeader', 'MaxExpiresHeader', 'UsePathHeader',
    'WWWAuthenticateHeader', 'AuthorizationHeader', 'AuthenticationInfoHeader',
    'ContentTypeHeader', 'ContentIDHeader', 'ContentDescriptionHeader',
    'ContentDispositionHeader', 'UseNicknameHeader', 'header_class',
    'MSRPData', 'MSRPParser', 'ParserEvent', 'CHUNK_START', 'BODY', 'CHUNK_END',
    'random_transaction_id', 'random_message_id',
    'END_LINE_DASHES',
]


# ---------------------------------------------------------------------------
# Errors

class ParsingError(MSRPError):
    """Text that should be MSRP (a URI, a header value, a chunk) is not."""


class HeaderParsingError(ParsingError):
    """A header value cannot be decoded (or a required header is missing).

    ``header`` is the header's name, ``reason`` says what is wrong.
    """

    def __init__(self, header, reason):
        self.header = header
        self.reason = reason
        ParsingError.__init__(self, 'Error parsing %s header: %s' % (header, reason))


class ChunkParseError(ParsingError):
    """The byte stream is not well-framed MSRP; the connection cannot go on.

    Raised by :meth:`MSRPParser.feed`.  After it the parser refuses more input.
    """


class InvalidStartLine(ChunkParseError):
    """The first line of a chunk is not an MSRP request or response line."""


class InvalidHeaderLine(ChunkParseError):
    """A header line is not ``Name: value``."""


class InvalidEndLine(ChunkParseError):
    """A chunk without body is not followed by a valid end-line."""


class LimitExceeded(ChunkParseError):
    """A size a peer controls went over its limit.

    ``limit`` is the name of the limit (the constructor argument) and
    ``value`` its configured number.
    """

    def __init__(self, limit, value, what):
        self.limit = limit
        self.value = value
        ChunkParseError.__init__(self, '%s exceeds %s=%d' % (what, limit, value))


# ---------------------------------------------------------------------------
# URIs

def _default_host():
    from msrplib.hostinfo import default_host_ip  # the only network-aware lookup; kept out of this module
    return default_host_ip()


class ConnectInfo:
    """Where to connect or listen: host, port, TLS or not, TLS credentials.

    ``credentials`` is an ``ssl.SSLContext``, a
    :class:`msrplib.tls.TLSCredentials` or GnuTLS-style credentials (see
    doc/tls.md), used when ``use_tls`` is true.
    """

    def __init__(self, host=None, use_tls=None, port=None, credentials=None):
        self.host = host if host is not None else _default_host()
        self.use_tls = True if use_tls is None else bool(use_tls)
        self.port = port
        self.credentials = credentials

    @property
    def scheme(self):
        """``'msrps'`` when TLS is used, ``'msrp'`` otherwise."""
        return 'msrps' if self.use_tls else 'msrp'

    protocol_name = scheme

    def __repr__(self):
        return '%s(host=%r, use_tls=%r, port=%r)' % (type(self).__name__, self.host, self.use_tls, self.port)


_URI_RE = re.compile(r'''
    (?P<scheme>[mM][sS][rR][pP][sS]?)://
    (?:(?P<user>[A-Za-z0-9\-._~!$&'()*+,;=%]+)@)?
    (?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,=]+)
    (?::(?P<port>[0-9]{1,5}))?
    (?:/(?P<session_id>[A-Za-z0-9\-._~+=/%!$&'()*,:@]+))?
    ;(?P<transport>[A-Za-z0-9\-.!%*_+`'~]+)
    (?P<parameters>(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s]*)?)*)
    ''', re.VERBOSE)


class URI(ConnectInfo):
    """An MSRP URI: ``msrp[s]://[user@]host[:port][/session-id];transport[;name=value]``.

    Defaults: TLS on, host = this machine's default outbound IPv4 address,
    a session-id of 80 random bits (pass ``session_id=''`` for a URI without
    one, such as a relay's).  ``str(uri)`` gives the text form and
    :meth:`URI.parse` reads it back.  ``==`` and ``hash`` follow RFC 4975
    §6.1: scheme, host (case-insensitive), port, session-id (case-sensitive)
    and transport (case-insensitive); user and other parameters are ignored.
    """

    # The text form and the comparison key are cached (every chunk sent writes its path URIs, every
    # check compares them): setting any attribute drops both, and the text is kept only while
    # ``parameters`` (a dict that may be changed in place) is empty.
    _text = None
    _cached_key = None

    def __init__(self, host=None, use_tls=None, user=None, port=None, session_id=None,
                 transport='tcp', parameters=None, credentials=None):
        # straight into __dict__: nothing is cached yet, so __setattr__ has nothing to drop
        self.__dict__.update(
            host=host if host is not None else _default_host(), use_tls=True if use_tls is None else bool(use_tls),
            port=port, credentials=credentials, user=user,
            session_id=session_id if session_id is not None else os.urandom(10).hex(), transport=transport,
            parameters=dict(parameters) if parameters else {})

    def __setattr__(self, name, value):
        attributes = self.__dict__
        attributes[name] = value
        attributes.pop('_text', None)
        attributes.pop('_cached_key', None)

    @classmethod
    def parse(cls, text):
        """Parse the text form of an MSRP URI; raises :class:`ParsingError`."""
        if isinstance(text, bytes):
            try:
                text = text.decode('ascii')
            except UnicodeDecodeError:
                raise ParsingError('Invalid MSRP URI: not ASCII: %r' % (text,))
        match = _URI_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ParsingError('Invalid MSRP URI: %r' % (text,))
        port = match.group('port')
        if port is not None:
            port = int(port)
            if port > 65535:
                raise ParsingError('Invalid MSRP URI (port out of range): %r' % (text,))
        host = match.group('host')
        if host.startswith('['):
            host = host[1:-1]
        parameters = {}
        for item in match.group('parameters').split(';')[1:]:
            name, sep, value = item.partition('=')
            parameters[name] = value if sep else None
        return cls(host=host, use_tls=match.group('scheme').lower() == 'msrps', user=match.group('user'),
                   port=port, session_id=match.group('session_id') or '', transport=match.group('transport'),
                   parameters=parameters)

    @classmethod
    def parse_path(cls, text):
        """Parse a full MSRP path: URIs separated by white space, relays first, the endpoint last.

        ``text`` is what SDP ``a=path`` carries or what a person pastes: a
        str (or ASCII bytes), optionally starting with ``a=path:`` or
        ``path:`` (any case).  Returns the list of URIs; raises
        :class:`ParsingError` when no URI is there or one is invalid.
        Whether the path suits a use (a session-id on the last URI, the
        transport) is for the caller to check.
        """
        if isinstance(text, bytes):
            try:
                text = text.decode('ascii')
            except UnicodeDecodeError:
                raise ParsingError('Invalid MSRP path: not ASCII: %r' % (text,))
        if not isinstance(text, str):
            raise ParsingError('Invalid MSRP path: %r' % (text,))
        stripped = text.strip()
        for prefix in _PATH_PREFIXES:
            if stripped[:len(prefix)].lower() == prefix:
                stripped = stripped[len(prefix):]
                break
        items = stripped.split()
        if not items:
            raise ParsingError('Invalid MSRP path: no URI in %r' % (text,))
        return [cls.parse(item) for item in items]

    def __str__(self):
        text = self._text
        if text is not None and not self.parameters:
            return text
        text = self._format()
        if not self.parameters:
            self.__dict__['_text'] = text
        return text

    def _format(self):
        host = '[%s]' % self.host if ':' in self.host else self.host
        parts = [self.scheme, '://']
        if self.user:
            parts += [self.user, '@']
        parts.append(host)
        if self.port is not None:
            parts += [':', str(self.port)]
        if self.session_id:
            parts += ['/', self.session_id]
        parts += [';', self.transport]
        for name, value in self.parameters.items():
            parts += [';', name] if value is None else [';', name, '=', value]
        return ''.join(parts)

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, str(self))

    def _key(self):
        key = self._cached_key
        if key is None:
            key = self.__dict__['_cached_key'] = (self.use_tls, self.host.lower(), self.port, self.session_id,
                                                  self.transport.lower())
        return key

    def __eq__(self, other):
        if not isinstance(other, URI):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self):
        return hash(self._key())


parse_uri = URI.parse
parse_path = URI.parse_path
_PATH_PREFIXES = ('a=path:', 'path:')


# ---------------------------------------------------------------------------
# Header values and header types
#
# A header type is a class with two static methods, ``decode(text)`` -> value
# and ``encode(value)`` -> text; ``decode`` raises ValueError on bad text.

ByteRange = namedtuple('ByteRange', 'start end total')
ByteRange.__doc__ = 'Value of Byte-Range: 1-based inclusive start and end, total; None stands for "*".'
Status = namedtuple('Status', 'code comment')
Status.__doc__ = 'Value of Status: the 3-digit code (int) and the comment (str or None).'
ContentDisposition = namedtuple('ContentDisposition', 'disposition parameters')
ContentDisposition.__doc__ = 'Value of Content-Disposition: the disposition type and a dict of parameters.'


def _check_text(text):
    # The parser keeps undecodable bytes as lone surrogates so that nothing is lost;
    # a typed header refuses them.
    if text.isascii():
        return text
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        raise ValueError('not valid UTF-8')
    return text


class SimpleHeaderType:
    """A value used as it is written (a str)."""

    @staticmethod
    def decode(encoded):
        return encoded if encoded.isascii() else _check_text(encoded)

    @staticmethod
    def encode(decoded):
        return str(decoded)


class UTF8HeaderType(SimpleHeaderType):
    """A UTF-8 text value (a str)."""


class URIHeaderType:
    """A space-separated list of MSRP URIs (a list of :class:`URI`).

    ``max_uris`` (class attribute, default 32) bounds the URIs of one list:
    a longer one does not decode (``ValueError``; a header reading it raises
    :class:`HeaderParsingError`, and a session answers such a request with
    400).  Each URI object costs far more memory than its text, so without
    a bound a path header within the line-length limit (about 900 short
    URIs) would amplify what a peer sends some 30 times.  RFC 4976 paths
    hold a few relays; raise the bound for deployments with longer ones.
    """

    max_uris = 32

    @classmethod
    def decode(cls, encoded):
        items = encoded.split()
        if not items:
            raise ValueError('empty URI list')
        if len(items) > cls.max_uris:
            raise ValueError('%d URIs, more than max_uris=%d' % (len(items), cls.max_uris))
        try:
            return [URI.parse(item) for item in items]
        except ParsingError as e:
            raise ValueError(str(e))

    @staticmethod
    def encode(decoded):
        return ' '.join(map(str, decoded))


_DIGITS_RE = re.compile(r'[0-9]{1,18}')


class IntegerHeaderType:
    """A non-negative decimal integer (an int)."""

    @staticmethod
    def decode(encoded):
        if not _DIGITS_RE.fullmatch(encoded):
            raise ValueError('not a non-negative integer: %r' % (encoded,))
        return int(encoded)

    @staticmethod
    def encode(decoded):
        return str(int(decoded))


class LimitedChoiceHeaderType(SimpleHeaderType):
    """One of the strings in ``available_values``."""

    available_values = ()

    @classmethod
    def decode(cls, encoded):
        if encoded not in cls.available_values:
            raise ValueError('not one of %s: %r' % ('/'.join(cls.available_values), encoded))
        return encoded


class SuccessReportHeaderType(LimitedChoiceHeaderType):
    """Success-Report: ``yes`` or ``no``."""
    available_values = ('yes', 'no')


class FailureReportHeaderType(LimitedChoiceHeaderType):
    """Failure-Report: ``yes``, ``no`` or ``partial``."""
    available_values = ('yes', 'no', 'partial')


_BYTE_RANGE_RE = re.compile(r'([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)')
_tuple_new = tuple.__new__
_object_new = object.__new__


class ByteRangeHeaderType:
    """``start-end/total`` (a :class:`ByteRange`; ``*`` becomes None).

    Refuses start 0, end before start and total before end.
    """

    @staticmethod
    def decode(encoded):
        start, _, end = encoded.partition('-')
        end, _, total = end.partition('/')
        if len(start) <= 18 and len(end) <= 18 and len(total) <= 18 and start.isdigit() and end.isdigit() and \
                total.isdigit() and encoded.isascii():
            # fast path for the common all-numeric form (no part over 18 digits, as the expression below says)
            start = int(start)
            end = int(end)
            total = int(total)
            if 0 < start <= end + 1 <= total + 1:
                return _tuple_new(ByteRange, (start, end, total))
        match = _BYTE_RANGE_RE.fullmatch(encoded)
        if match is None:
            raise ValueError('not start-end/total: %r' % (encoded,))
        start, end, total = match.groups()
        start = int(start)
        end = None if end == '*' else int(end)
        total = None if total == '*' else int(total)
        if start < 1:
            raise ValueError('start must be at least 1')
        if end is not None and end < start - 1:
            raise ValueError('end before start')
        if total is not None and ((end is not None and total < end) or total < start - 1):
            raise ValueError('total smaller than the range')
        return ByteRange(start, end, total)

    @staticmethod
    def encode(decoded):
        start, end, total = decoded
        return '%d-%s/%s' % (start, '*' if end is None else end, '*' if total is None else total)


_STATUS_RE = re.compile(r'([0-9]{3}) ([0-9]{3})(?: (.*))?', re.DOTALL)


class StatusHeaderType:
    """``000 code [comment]`` (a :class:`Status`)."""

    @staticmethod
    def decode(encoded):
        match = _STATUS_RE.fullmatch(encoded)
        if match is None:
            raise ValueError('not "namespace code [comment]": %r' % (encoded,))
        namespace, code, comment = match.groups()
        if namespace != '000':
            raise ValueError('unknown status namespace %s' % namespace)
        return Status(int(code), _check_text(comment) if comment else None)

    @staticmethod
    def encode(decoded):
        code, comment = decoded
        return '000 %03d %s' % (code, comment) if comment else '000 %03d' % code


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9\-._~!%*+`\'|^]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^\s,;"]*))?\s*')
_TOKEN_RE = re.compile(r'[A-Za-z0-9\-._~!%*+`\'|^]+')


def _parse_parameters(text, separator):
    parameters = {}
    if not text.strip():
        return parameters
    position = 0
    length = len(text)
    while True:
        match = _PARAM_RE.match(text, position)
        if match is None or match.end() == position:
            raise ValueError('malformed parameter list at %r' % text[position:position + 20])
        name, value = match.groups()
        if value is not None and value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        parameters[name.lower() if separator == ',' else name] = value
        position = match.end()
        if position == length:
            return parameters
        if text[position] != separator:
            raise ValueError('expected %r at %r' % (separator, text[position:position + 20]))
        position += 1


def _quote(value):
    return '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')


class ParameterListHeaderType:
    """Comma-separated ``name=value`` pairs, values quoted or not (a dict; names lower-cased)."""

    #: parameters written without quotes
    unquoted = frozenset(['qop', 'nc', 'algorithm', 'stale'])

    @staticmethod
    def decode(encoded):
        return _parse_parameters(_check_text(encoded), ',')

    @classmethod
    def encode(cls, decoded):
        return ', '.join(name if value is None else
                         '%s=%s' % (name, value if name in cls.unquoted and _TOKEN_RE.fullmatch(value) else _quote(value))
                         for name, value in decoded.items())


class DigestHeaderType(ParameterListHeaderType):
    """``Digest`` followed by a parameter list (a dict of the parameters)."""

    @staticmethod
    def decode(encoded):
        scheme, _, rest = _check_text(encoded).strip().partition(' ')
        if scheme.lower() != 'digest':
            raise ValueError('not a Digest value: %r' % (encoded[:40],))
        return _parse_parameters(rest, ',')

    @classmethod
    def encode(cls, decoded):
        return 'Digest ' + super().encode(decoded)


class ContentDispositionHeaderType:
    """``type; name=value; ...`` (a :class:`ContentDisposition`)."""

    @staticmethod
    def decode(encoded):
        disposition, _, rest = _check_text(encoded).partition(';')
        disposition = disposition.strip()
        if not _TOKEN_RE.fullmatch(disposition):
            raise ValueError('invalid disposition type %r' % (disposition,))
        return ContentDisposition(disposition, _parse_parameters(rest, ';'))

    @staticmethod
    def encode(decoded):
        disposition, parameters = decoded
        parts = [disposition]
        for name, value in parameters.items():
            parts.append(name if value is None else
                         '%s=%s' % (name, value if _TOKEN_RE.fullmatch(str(value)) else _quote(str(value))))
        return '; '.join(parts)


# ---------------------------------------------------------------------------
# Headers

_UNSET = object()


class MSRPHeader:
    """One header: ``MSRPHeader(name, encoded=None, decoded=None)``.

    Built with the name of a known header it becomes an instance of that
    header's class (``MSRPHeader('To-Path', text)`` is a
    :class:`ToPathHeader`); any other name gives a generic header whose value
    is kept as text.  ``encoded`` (text) and ``decoded`` (value) are computed
    from each other on first use; reading ``decoded`` raises
    :class:`HeaderParsingError` when the text is not a valid value.
    """

    # ('__dict__' and '__weakref__' are in the layout so that an application's header class, which may
    # leave out __slots__, has the layout of this class: MSRPHeader(name, ...) can become one of those too)
    __slots__ = ('_name', '_encoded', '_decoded', '__dict__', '__weakref__')
    type = SimpleHeaderType

    def __init__(self, name, encoded=None, decoded=None):
        known = _HEADER_CLASSES.get(name.lower()) if type(self) is MSRPHeader else None
        if known is not None:
            self.__class__ = known
            name = known.name
        self._name = name
        self._set(encoded, decoded)

    def _set(self, encoded, decoded):
        if encoded is None and decoded is None:
            raise TypeError('a header needs an encoded or a decoded value')
        if encoded is not None and not isinstance(encoded, str):
            if isinstance(encoded, (bytes, bytearray)):
                encoded = bytes(encoded).decode('utf-8', 'surrogateescape')
            elif decoded is None:
                # the classic API: XHeader(value) takes the text or the value itself
                encoded, decoded = None, encoded
            else:
                raise TypeError('encoded must be text, not %s' % type(encoded).__name__)
        self._encoded = encoded
        self._decoded = _UNSET if decoded is None else decoded

    @property
    def name(self):
        """The header's name as written on the wire."""
        return self._name

    @property
    def encoded(self):
        """The value as text."""
        if self._encoded is None:
            self._encoded = self.type.encode(self._decoded)
        return self._encoded

    @encoded.setter
    def encoded(self, value):
        self._encoded = value
        self._decoded = _UNSET

    @property
    def decoded(self):
        """The typed value; raises :class:`HeaderParsingError` if the text is invalid."""
        decoded = self._decoded
        if decoded is _UNSET:
            try:
                decoded = self._decoded = self.type.decode(self._encoded)
            except ValueError as e:
                raise HeaderParsingError(self.name, str(e))
        return decoded

    @decoded.setter
    def decoded(self, value):
        self._decoded = value
        self._encoded = None

    def __eq__(self, other):
        if not isinstance(other, MSRPHeader):
            return NotImplemented
        return self.name.lower() == other.name.lower() and self.encoded == other.encoded

    __hash__ = None

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, self.encoded)


class MSRPNamedHeader(MSRPHeader):
    """Base of the headers with a fixed name: ``XHeader(encoded=None, decoded=None)``.

    An application defines a header of its own by subclassing it with a
    ``name`` (and a ``type``, :class:`SimpleHeaderType` by default)::

        class OffsetHeader(MSRPNamedHeader):
            name = 'Offset'
            type = IntegerHeaderType

    Defining the class registers it (the name is matched case-insensitively):
    parsed chunks then make their ``Offset`` headers with it, so
    ``chunk.headers['Offset'].decoded`` is an int, and
    ``MSRPHeader('Offset', '5')`` and :func:`header_class` give it too.
    When two application classes claim one name, the one defined last wins.
    The names of the headers this module defines (To-Path, Byte-Range...) stay
    with the built-in classes, whose types the library itself relies on: a
    subclass claiming one of them is a usable class but is not registered.
    A subclass that does not set ``name`` itself (inherits it) registers
    nothing.  A ``name`` that is not an RFC 4975 token raises ValueError.
    """

    __slots__ = ()
    name = None

    def __init__(self, encoded=None, decoded=None):
        self._set(encoded, decoded)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get('name')
        if name is not None and _BUILTIN_HEADER_NAMES is not None:  # (None: this module's own classes)
            _register_header_class(cls, name)


_BUILTIN_HEADER_NAMES = None  # set once this module's header classes are defined


def _named(class_name, header_name, header_type, doc):
    cls = type(class_name, (MSRPNamedHeader,), {'__slots__': (), 'name': header_name, 'type': header_type,
                                                '__doc__': doc, '__module__': __name__})
    return cls


ToPathHeader = _named('ToPathHeader', 'To-Path', URIHeaderType, 'To-Path: list of URI.')
FromPathHeader = _named('FromPathHeader', 'From-Path', URIHeaderType, 'From-Path: list of URI.')
MessageIDHeader = _named('MessageIDHeader', 'Message-ID', SimpleHeaderType, 'Message-ID: str.')
SuccessReportHeader = _named('SuccessReportHeader', 'Success-Report', SuccessReportHeaderType,
                             "Success-Report: 'yes' or 'no'.")
FailureReportHeader = _named('FailureReportHeader', 'Failure-Report', FailureReportHeaderType,
                             "Failure-Report: 'yes', 'no' or 'partial'.")
ByteRangeHeader = _named('ByteRangeHeader', 'Byte-Range', ByteRangeHeaderType, 'Byte-Range: ByteRange.')
StatusHeader = _named('StatusHeader', 'Status', StatusHeaderType, 'Status: Status.')
ExpiresHeader = _named('ExpiresHeader', 'Expires', IntegerHeaderType, 'Expires: int seconds.')
MinExpiresHeader = _named('MinExpiresHeader', 'Min-Expires', IntegerHeaderType, 'Min-Expires: int seconds.')
MaxExpiresHeader = _named('MaxExpiresHeader', 'Max-Expires', IntegerHeaderType, 'Max-Expires: int seconds.')
UsePathHeader = _named('UsePathHeader', 'Use-Path', URIHeaderType, 'Use-Path: list of URI.')
WWWAuthenticateHeader = _named('WWWAuthenticateHeader', 'WWW-Authenticate', DigestHeaderType,
                               'WWW-Authenticate: dict of Digest challenge parameters.')
AuthorizationHeader = _named('AuthorizationHeader', 'Authorization', DigestHeaderType,
                             'Authorization: dict of Digest credentials parameters.')
AuthenticationInfoHeader = _named('AuthenticationInfoHeader', 'Authentication-Info', ParameterListHeaderType,
                                  'Authentication-Info: dict of parameters.')
ContentTypeHeader = _named('ContentTypeHeader', 'Content-Type', SimpleHeaderType, 'Content-Type: str.')
ContentIDHeader = _named('ContentIDHeader', 'Content-ID', SimpleHeaderType, 'Content-ID: str.')
ContentDescriptionHeader = _named('ContentDescriptionHeader', 'Content-Description', UTF8HeaderType,
                                  'Content-Description: str.')
ContentDispositionHeader = _named('ContentDispositionHeader', 'Content-Disposition', ContentDispositionHeaderType,
                                  'Content-Disposition: ContentDisposition.')
UseNicknameHeader = _named('UseNicknameHeader', 'Use-Nickname', UTF8HeaderType, 'Use-Nickname (RFC 7701): str.')

_BUILTIN_HEADER_CLASSES = (
    ToPathHeader, FromPathHeader, MessageIDHeader, SuccessReportHeader, FailureReportHeader, ByteRangeHeader,
    StatusHeader, ExpiresHeader, MinExpiresHeader, MaxExpiresHeader, UsePathHeader, WWWAuthenticateHeader,
    AuthorizationHeader, AuthenticationInfoHeader, ContentTypeHeader, ContentIDHeader, ContentDescriptionHeader,
    ContentDispositionHeader, UseNicknameHeader)
# lower-cased name -> class: the built-in classes, then the application's (MSRPNamedHeader.__init_subclass__)
_HEADER_CLASSES = {cls.name.lower(): cls for cls in _BUILTIN_HEADER_CLASSES}
# exact spelling -> class, for the parser's fast path (the C scanner is given these names too)
_HEADER_CLASSES_EXACT = {cls.name: cls for cls in _HEADER_CLASSES.values()}
# the names no application class may take over (the library's own checks depend on their types)
_BUILTIN_HEADER_NAMES = frozenset(_HEADER_CLASSES)


def _register_header_class(cls, name):
    # MSRPNamedHeader.__init_subclass__: make ``cls`` the class of header ``name`` (see its docstring).
    if not isinstance(name, str) or _HEADER_NAME_RE.fullmatch(name) is None:
        raise ValueError('%s.name: %r is not a header name (an RFC 4975 token)' % (cls.__name__, name))
    key = name.lower()
    if key in _BUILTIN_HEADER_NAMES:
        return
    previous = _HEADER_CLASSES.get(key)
    if previous is not None:
        _HEADER_CLASSES_EXACT.pop(previous.name, None)
    _HEADER_CLASSES[key] = cls
    _HEADER_CLASSES_EXACT[name] = cls
    _configure_cparser()


def header_class(name):
    """Return the header class for ``name`` (case-insensitive), or None for an unknown name.

    Application classes registered by subclassing :class:`MSRPNamedHeader` are included.
    """
    return _HEADER_CLASSES.get(name.lower())


def _make_header(name, encoded):
    # What MSRPHeader(name, encoded) does, without the class swap: the parser's hot path.
    cls = _HEADER_CLASSES_EXACT.get(name)
    if cls is None:
        cls = _HEADER_CLASSES.get(name.lower())
        if cls is None:
            header = MSRPHeader.__new__(MSRPHeader)
            header._name = name
            header._encoded = encoded
            header._decoded = _UNSET
            return header
    header = cls.__new__(cls)
    header._encoded = encoded
    header._decoded = _UNSET
    return header


def _new_header(cls, decoded):
    # cls(decoded=decoded) for a named header class, without the argument checks: for values this
    # library makes itself.
    header = _object_new(cls)
    header._encoded = None
    header._decoded = decoded
    return header


def _copy_header(header):
    # An independent copy: same class and name, and a value that changing the original cannot change.
    cls = type(header)
    new = cls.__new__(cls)
    if not isinstance(header, MSRPNamedHeader):
        new._name = header._name
    decoded = header._decoded
    if isinstance(decoded, list):  # a list of URI
        decoded = list(decoded)
    elif isinstance(decoded, dict):  # Digest parameters
        decoded = dict(decoded)
    elif isinstance(decoded, ContentDisposition):
        decoded = ContentDisposition(decoded.disposition, dict(decoded.parameters))
    new._encoded = header._encoded
    new._decoded = decoded
    return new


# ---------------------------------------------------------------------------
# Chunks

END_LINE_DASHES = '-------'


# MSRPData.memory_estimate(): bytes of a parsed chunk without headers (the object, its dicts); of one
# header (object or text); of one URI object; of one decoded parameter (two str and a dict slot).  Measured
# with tracemalloc on CPython 3.11 and rounded up (test_protocol_data checks they stay upper bounds).
_CHUNK_COST = 1024
_HEADER_COST = 160
_URI_COST = 768
_PARAMETER_COST = 192
_BYTES_OVERHEAD = 64   # a bytes object's header (33 bytes) and the allocator's rounding

# header names whose values decode to many objects (lists of URIs, dicts of parameters), but the paths
# (MSRPData.verify_headers counts those itself)
_AMPLIFYING = frozenset(cls.name for cls in _HEADER_CLASSES.values()
                        if cls.type in (URIHeaderType, ParameterListHeaderType, DigestHeaderType,
                                        ContentDispositionHeaderType)) - {'To-Path', 'From-Path'}


def _held_bytes(data):
    # memory of a bytes object that may be None (e.g. MSRPData.chunk_header): its length and object header
    return 0 if data is None else len(data) + _BYTES_OVERHEAD


def _header_memory(header):
    # What a header object holds beyond the 2 * _HEADER_COST counted for every header: its text and what
    # decoding it made (MSRPData.memory_estimate).
    decoded = header._decoded
    kind = type(decoded)
    encoded = header._encoded
    size = len(encoded) if type(encoded) is str else 0
    if kind is str:
        return size if size else len(decoded)  # (the value is its text, or made from it on demand)
    if kind is list:
        return size + _URI_COST * len(decoded)
    if kind is dict:
        return size + _PARAMETER_COST * len(decoded)
    if kind is ContentDisposition:
        return size + _HEADER_COST + _PARAMETER_COST * len(decoded.parameters)
    return size


# To-Path/From-Path texts known to decode -> their number of URIs (verify_headers skips decoding them again); bounded
_VALID_PATH_TEXTS = {}


# Random hex strings drawn from os.urandom in blocks (one system call per _POOL_BLOCK ids, not one per
# id), keyed by their length in bytes.  list.pop() hands each out once, also between threads; a forked
# child starts with empty pools so that it never repeats its parent's ids.
_RANDOM_POOLS = {}
_POOL_BLOCK = 128


def _random_hex(size):
    pool = _RANDOM_POOLS.get(size)
    if pool is None:
        pool = _RANDOM_POOLS.setdefault(size, [])
    while True:
        try:
            return pool.pop()
        except IndexError:
            block = os.urandom(size * _POOL_BLOCK).hex()
            step = 2 * size
            pool.extend([block[i:i + step] for i in range(0, len(block), step)])


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_RANDOM_POOLS.clear)


def random_transaction_id():
    """A new transaction id: 16 hex digits (64 random bits from os.urandom)."""
    return _random_hex(8)


def random_message_id():
    """A new Message-ID: 20 hex digits (80 random bits from os.urandom)."""
    return _random_hex(10)


def _is_content_type(header):
    return header.name == 'Content-Type'


_END_LINE_START = ('\r\n' + END_LINE_DASHES).encode('ascii')  # encoded_footer: before the transaction id


def _send_head_template(chunk):
    # For OutgoingMessage: the head of SEND ``chunk`` (made the general way) but for its start line, as bytes
    # ``(prefix, suffix)`` around the value of its Byte-Range header: the chunks of one message differ only
    # there.  ``suffix`` ends with the empty line before a body.  None when the chunk has no Byte-Range.
    # Raises what encoding the chunk raises (a line break in a header value).
    text = chunk._header_text()
    line_end = text.find('\r\n')
    at = text.find('\r\nByte-Range: ')  # (no value has a line break: _header_text refuses those)
    if line_end < 0 or at < 0:
        return None
    value_start = at + len('\r\nByte-Range: ')
    value_end = text.find('\r\n', value_start)
    if value_end < 0:
        value_end = len(text)
    return (text[line_end:value_start].encode('utf-8', 'surrogateescape'),
            (text[value_end:] + '\r\n\r\n').encode('utf-8', 'surrogateescape'))


class MSRPData:
    """One MSRP chunk: a request (``method`` set) or a response (``code`` set).

    ``headers`` maps header names to header objects; ``data`` is the body
    (bytes; a str is encoded as UTF-8); ``contflag`` is ``'$'`` (last chunk),
    ``'+'`` (more follow) or ``'#'`` (aborted).  The properties read the
    decoded header values and raise :class:`HeaderParsingError` on invalid
    ones.  A received chunk also has ``chunk_header`` and
    :attr:`chunk_footer`, its bytes as they crossed the wire around ``data``
    (None on chunks made locally).
    """

    segment = None  # set on the "virtual" chunks of MSRPTransport.read_chunk(size)
    # The raw bytes of a received chunk before its body (start line and header lines as received, up to
    # and including the empty line, or the CRLF before the end-line when there is no body): set by the
    # parser; None on chunks made locally.
    chunk_header = None
    _chunk_footer = None  # set on virtual chunks (read_chunk(size)); otherwise chunk_footer is derived
    # Defaults for the attributes __init__ always sets, so that the parser sets only those that differ.
    method = code = comment = _headers = None
    data = b''
    contflag = '$'
    # A parsed chunk keeps its header values as text (_raw: name -> text as after the colon, unstripped,
    # or -> header object for the unusual ones and for those already read) and makes header objects only
    # for what is read: the typed properties below make one (and put it in _raw), ``headers`` makes them
    # all.  A receiver that reads a few headers then pays for those only.
    _raw = None
    # Set by verify_headers() on a parsed chunk: memory_estimate() as of then, counted while checking (a session
    # queueing the chunk right after uses it instead of counting again); None otherwise.
    _verified_size = None
    # Set by OutgoingMessage on the chunks it makes: everything of the head after the method, as bytes (the
    # header lines encoded once per message, the Byte-Range of this chunk), so that the writer does not format
    # the same header lines for every chunk.  Used once, by the first encoding right after the chunk was made
    # (nothing changes the headers in between); add_header() and setting ``headers`` drop it.
    _head_rest = None

    def __init__(self, transaction_id, method=None, code=None, comment=None, headers=None, data=b'', contflag='$'):
        self.transaction_id = transaction_id
        self.method = method
        self.code = code
        self.comment = comment
        self._headers = dict(headers) if headers else {}
        self.data = data.encode('utf-8') if isinstance(data, str) else data
        self.contflag = contflag

    # -- header access

    @property
    def headers(self):
        """The headers: a dict of header name -> header object (:class:`MSRPHeader`), in wire order."""
        headers = self._headers
        if headers is None:
            headers = {}
            for name, value in self._raw.items():
                headers[name] = value if isinstance(value, MSRPHeader) else _make_header(name, value.strip(' \t'))
            self._headers = headers
            self._raw = None
        return headers

    @headers.setter
    def headers(self, value):
        self._headers = value
        self._raw = None
        self._head_rest = None

    def _header(self, name):
        # The header object for ``name`` (or None) without making the others.
        headers = self._headers
        if headers is not None:
            return headers.get(name)
        # a header object made here replaces its text in _raw (made again only if _raw holds text)
        raw = self._raw
        value = raw.get(name)
        if type(value) is not str:
            return value  # None, or a header object
        cls = _HEADER_CLASSES_EXACT[name]  # texts are kept for known names only
        header = raw[name] = _object_new(cls)
        header._encoded = value.strip(' \t')
        header._decoded = _UNSET
        return header

    def _value(self, name, cls):
        # ``self._header(name).decoded`` for a known header (``cls`` its class), or None when absent, in
        # one call: what the typed properties return.
        headers = self._headers
        if headers is None:
            raw = self._raw
            value = raw.get(name)
            if type(value) is str:
                header = raw[name] = _object_new(cls)
                header._encoded = value = value.strip(' \t')
                header._decoded = _UNSET
                try:
                    header._decoded = value = cls.type.decode(value)
                except ValueError as e:
                    raise HeaderParsingError(name, str(e))
                return value
        else:
            value = headers.get(name)
        if value is None:
            return None
        if type(value) is cls:  # (read for every header of every chunk: no property call once decoded)
            decoded = value._decoded
            if decoded is not _UNSET:
                return decoded
        return value.decoded

    def add_header(self, header):
        """Add or replace a header (an :class:`MSRPHeader`)."""
        self.headers[header.name] = header
        self._head_rest = None

    def header_value(self, name, default=None):
        """The decoded value of header ``name``; ``default`` when it is absent or cannot be decoded."""
        header = self._header(name) if name in _HEADER_CLASSES_EXACT else self.headers.get(name)
        if header is None:
            return default
        try:
            return header.decoded
        except HeaderParsingError:
            return default

    @property
    def from_path(self):
        """From-Path as a list of URI (None if absent)."""
        return self._value('From-Path', FromPathHeader)

    @property
    def to_path(self):
        """To-Path as a list of URI (None if absent)."""
        return self._value('To-Path', ToPathHeader)

    @property
    def content_type(self):
        """Content-Type (str) or None."""
        return self._value('Content-Type', ContentTypeHeader)

    @property
    def message_id(self):
        """Message-ID (str) or None."""
        return self._value('Message-ID', MessageIDHeader)

    @property
    def byte_range(self):
        """Byte-Range as a :class:`ByteRange`, or None."""
        return self._value('Byte-Range', ByteRangeHeader)

    @property
    def status(self):
        """Status as a :class:`Status`, or None."""
        return self._value('Status', StatusHeader)

    @property
    def failure_report(self):
        """Failure-Report; ``'yes'`` when absent."""
        value = self._value('Failure-Report', FailureReportHeader)
        return 'yes' if value is None else value

    @property
    def success_report(self):
        """Success-Report; ``'no'`` when absent."""
        value = self._value('Success-Report', SuccessReportHeader)
        return 'no' if value is None else value

    @property
    def chunk_footer(self):
        """The end-line of a received chunk as bytes, with its CRLF (and the CRLF before it after a body).

        ``chunk_header + data + chunk_footer`` is what crossed the wire.  None
        for chunks made locally (see :attr:`encoded_footer` for those).  It is
        made from :attr:`chunk_header` (which tells whether the chunk had a
        body part), the transaction id and the continuation flag as received.
        """
        footer = self._chunk_footer
        if footer is not None:
            return footer
        header = self.chunk_header
        if header is None:
            return None
        tid = header[5:header.index(b' ', 5)]
        return b''.join((b'\r\n-------' if header.endswith(b'\r\n\r\n') else b'-------', tid,
                         self.contflag.encode('ascii'), b'\r\n'))

    @chunk_footer.setter
    def chunk_footer(self, value):
        self._chunk_footer = value

    @property
    def size(self):
        """Length of the body in bytes."""
        return len(self.data)

    @property
    def final(self):
        """True when this is the last chunk of its message (contflag ``'$'``)."""
        return self.contflag == '$'

    def verify_headers(self):
        """Check To-Path and From-Path are present and every header decodes.

        Raises :class:`HeaderParsingError` naming the first bad header.
        """
        if self._headers is None:
            # a parsed chunk: check the header texts without making every header object
            raw = self._raw
            for name in ('To-Path', 'From-Path'):
                if name not in raw:
                    raise HeaderParsingError(name, 'header is missing')
            valid_paths = _VALID_PATH_TEXTS
            known = _HEADER_CLASSES_EXACT
            decode = self._value
            # what memory_estimate() would say once verified, counted on the way (see _verified_size); the
            # header texts are slices of the received head, so twice its length bounds the head and the texts
            # (no len() per header: this runs for every chunk received)
            head = self.chunk_header
            size = _CHUNK_COST + len(self.data) + 2 * _HEADER_COST * len(raw)
            if head:
                size += 2 * _held_bytes(head)
            else:  # (a chunk made by copying a parsed one: no head of its own)
                size += sum(len(value) for value in raw.values() if type(value) is str)
            for name, value in raw.items():
                if type(value) is not str:
                    value.decoded  # a header object: an unusual header, or one already read
                    size += _header_memory(value)
                    continue
                # (texts are kept for known names only; a header already made may have been changed since:
                # only untouched texts use the cache)
                if name == 'To-Path' or name == 'From-Path':
                    uris = valid_paths.get(value)
                    if uris is None:
                        uris = len(decode(name, known[name]))
                        if len(valid_paths) >= 256:
                            valid_paths.clear()
                        valid_paths[value] = uris
                    # else: this text decoded before (decoding is a pure function of the text); its URIs are
                    # counted all the same, as the session or the application may still make them
                    size += _URI_COST * uris
                    continue
                decode(name, known[name])  # makes the header object, decoded, as the typed properties do
                if name in _AMPLIFYING:
                    size += _header_memory(raw[name])  # a list or dict decoded: what it made (and its text again)
            self._verified_size = size
            return
        for name in ('To-Path', 'From-Path'):
            if name not in self.headers:
                raise HeaderParsingError(name, 'header is missing')
        for header in self.headers.values():
            header.decoded

    def memory_estimate(self):
        """An upper estimate of the memory this chunk holds, in bytes.

        The body, the received header bytes (:attr:`chunk_header`), the
        header texts and the objects made from them: a decoded
        list of URIs or dict of parameters costs far more than its text, and
        is counted as such.  Sessions count it against the bytes they buffer
        for the application (``GreenMSRPSession.INCOMING_BUFFER_SIZE``).
        """
        headers = self._headers if self._headers is not None else self._raw
        size = _CHUNK_COST + len(self.data) + _held_bytes(self.chunk_header) + 2 * _HEADER_COST * len(headers)
        for value in headers.values():
            size += len(value) if type(value) is str else _header_memory(value)
        return size

    # -- encoding

    @property
    def first_line(self):
        """The start line, without CRLF."""
        if self.method is not None:
            return 'MSRP %s %s' % (self.transaction_id, self.method)
        if self.comment:
            return 'MSRP %s %03d %s' % (self.transaction_id, self.code, self.comment)
        return 'MSRP %s %03d' % (self.transaction_id, self.code)

    @property
    def encoded_header(self):
        """Start line and headers as bytes (with the empty line when there is a body)."""
        return (self._header_text() + ('\r\n\r\n' if self.data else '\r\n')).encode('utf-8', 'surrogateescape')

    def _header_text(self):
        # The start line and the header lines joined by CRLF (no CRLF after the last one).
        headers = self.headers
        lines = [self.first_line]
        append = lines.append
        header = headers.get('To-Path')
        if header is not None:
            append('To-Path: %s' % (header.encoded,))
        header = headers.get('From-Path')
        if header is not None:
            append('From-Path: %s' % (header.encoded,))
        content = None
        for name, header in headers.items():
            if name.startswith('Content-'):
                if content is None:
                    content = [header]
                else:
                    content.append(header)
            elif name != 'To-Path' and name != 'From-Path':
                append('%s: %s' % (name, header.encoded))
        if content is not None:
            if len(content) > 1:
                content.sort(key=_is_content_type)  # Content-Type is the last header
            for header in content:
                append('%s: %s' % (header.name, header.encoded))
        text = '\r\n'.join(lines)
        if text.count('\r') >= len(lines) or text.count('\n') >= len(lines):
            self._refuse_line_breaks(lines)
        return text

    def _refuse_line_breaks(self, lines):
        # A CR or LF inside the start line or a header would break the framing.
        if '\r' in lines[0] or '\n' in lines[0]:
            raise ParsingError('CR or LF in the start line %r' % (lines[0],))
        for line in lines[1:]:
            if '\r' in line or '\n' in line:
                name = line.partition(':')[0]
                raise HeaderParsingError(name, 'CR or LF in the value %r' % (line[len(name) + 2:],))

    @property
    def encoded_footer(self):
        """The end-line as bytes (preceded by CRLF when there is a body)."""
        return b''.join((_END_LINE_START if self.data else _END_LINE_START[2:], self.transaction_id.encode('ascii'),
                         self.contflag.encode('ascii'), b'\r\n'))

    def encode_start(self):
        """Everything before the body, as bytes (alias of :attr:`encoded_header`)."""
        return self.encoded_header

    def encode(self):
        """The whole chunk as bytes.

        If the body contains this transaction's end-line marker, a new
        transaction id is chosen first (RFC 4975 §7.1) and stored in
        ``transaction_id``.  A CR or LF in a header value raises
        :class:`HeaderParsingError` (in the comment, :class:`ParsingError`).
        """
        head, data, footer = self._encode_parts()
        return b''.join((head, data, footer)) if data else head + footer

    def _encode_parts(self):
        # encode() as (head, body, end-line), for writers that send the parts without joining them.
        data = self.data
        if data:
            while True:
                marker = ('\r\n' + END_LINE_DASHES + self.transaction_id).encode('ascii')
                if (_find_marker(data, marker, 0) if type(data) is bytes else data.find(marker)) < 0:
                    break
                self.transaction_id = random_transaction_id()
        rest = self._head_rest
        if rest is not None:
            self._head_rest = None
            tid = self.transaction_id.encode('ascii')
            return b'MSRP ' + tid + b' SEND' + rest, data, self.encoded_footer
        return self.encoded_header, data, self.encoded_footer

    def copy(self):
        """A new chunk with the same start line, body and flag, and copies of the headers."""
        chunk = MSRPData(self.transaction_id, self.method, self.code, self.comment, None, self.data, self.contflag)
        headers = chunk.headers
        for name, header in self.headers.items():
            headers[name] = _copy_header(header)
        return chunk

    def __str__(self):
        return self.encode().decode('utf-8', 'replace')

    def __repr__(self):
        what = self.method if self.method is not None else '%03d' % (self.code or 0)
        return '<MSRPData %s %s %d bytes %s>' % (self.transaction_id, what, len(self.data), self.contflag)


# ---------------------------------------------------------------------------
# The incremental parser

class ParserEvent(enum.IntEnum):
    """Kinds of event :meth:`MSRPParser.feed` returns, as ``(kind, value)`` tuples."""
    CHUNK_START = 1  #: value: MSRPData with headers and empty data
    BODY = 2         #: value: bytes of body (never empty)
    CHUNK_END = 3    #: value: continuation flag, '$', '+' or '#' (also set as the chunk's contflag)


CHUNK_START = ParserEvent.CHUNK_START
BODY = ParserEvent.BODY
CHUNK_END = ParserEvent.CHUNK_END

_START_LINE_RE = re.compile(
    rb'MSRP ([A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}) (?:([A-Za-z][A-Za-z0-9_]*)|([0-9]{3})(?: ([^\r\n]*))?)\r\n')
# a header name (RFC 4975 §9: token)
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+")
_FLAGS = {36: '$', 43: '+', 35: '#'}
# what may follow the marker of an end-line, and the CHUNK_END event for each flag (by byte value)
_END_LINE_TAILS = (b'$\r\n', b'+\r\n', b'#\r\n')
_END_EVENTS = {36: (CHUNK_END, '$'), 43: (CHUNK_END, '+'), 35: (CHUNK_END, '#')}
# parser states (plain ints: they are compared on the hot path)
_HEAD, _BODY, _FAILED = 0, 1, 2


def _pure_python_requested():
    # True when the environment variable MSRPLIB_PURE_PYTHON is set to anything but '' or '0'.
    return os.environ.get('MSRPLIB_PURE_PYTHON', '') not in ('', '0')


def _load_cparser():
    # The C fast path (msrplib/_cparser.c), configured: (scan_chunks, find), or (None, bytes.find) when the
    # extension was not built.
    try:
        from msrplib import _cparser
    except ImportError:
        return None, bytes.find
    _configure_cparser(_cparser)
    return _cparser.scan_chunks, _cparser.find


def _configure_cparser(module=None):
    # Give the C scanner (when loaded) the classes and the known header names, again after an
    # application header class is registered.  (It takes the first 64 names; a chunk with any other
    # header name is parsed by the Python code, with the same result.)
    if module is None:
        module = sys.modules.get('msrplib._cparser')
        if module is None or getattr(module, 'configure', None) is None:
            return
    module.configure(MSRPData, CHUNK_START, BODY, tuple(_END_EVENTS[ord(flag)] for flag in '$+#'),
                     list(_HEADER_CLASSES_EXACT))


# MSRPParser takes whole, plainly well-formed chunks through _scan_chunks when it is there (see
# msrplib/_cparser.c; the events are the same either way; None: the parser is pure Python), and looks for
# end-lines in bodies with _find_marker (bytes.find without the extension).
_scan_chunks, _find_marker = (None, bytes.find) if _pure_python_requested() else _load_cparser()


class MSRPParser:
    """Incremental MSRP parser: :meth:`feed` bytes in any split, get events back.

    Events are ``(ParserEvent.CHUNK_START, MSRPData)``, then zero or more
    ``(ParserEvent.BODY, bytes)``, then ``(ParserEvent.CHUNK_END, flag)``.
    Limits (each exceeded raises :class:`LimitExceeded`):

    ``max_line_length`` (default 16384)
        bytes in the start line or in one header line.
    ``max_headers`` (default 64)
        header lines in one chunk.
    ``max_header_block`` (default 65536)
        bytes from the start of a chunk to its body or end-line.

    After any :class:`ChunkParseError` the parser is failed and every later
    :meth:`feed` raises the same error.
    """

    # How the buffer works.  Between two feeds the parser keeps
    #  - in HEAD state, the bytes of an incomplete chunk head (start line and
    #    headers) in a bytearray, so that a head arriving in many small pieces
    #    costs amortised linear time: new input is appended in place, and only
    #    the new bytes are searched for the blank line or the end-line and
    #    counted against the limits (``_scanned``, ``_lines``, ``_line_start``)
    #    until one of them arrives; the head is parsed once, when it is whole;
    #  - in BODY state, only a tail shorter than an end-line (everything
    #    before it was handed out as BODY), so the next feed copies a few
    #    bytes, never the body.
    # A feed with whole chunks in it is parsed straight from the bytes given,
    # without copying them.

    def __init__(self, max_line_length=16384, max_headers=64, max_header_block=65536):
        self.max_line_length = max_line_length
        self.max_headers = max_headers
        self.max_header_block = max_header_block
        self._buffer = b''
        self._state = _HEAD
        self._marker = None   # b'\r\n-------<tid>' of the chunk being read
        self._chunk = None    # the MSRPData of the chunk whose body is being read
        self._scanned = 0     # HEAD: bytes of _buffer already searched
        self._lines = -1      # HEAD: complete header lines in _buffer, -1 while the start line is incomplete
        self._line_start = 0  # HEAD: offset in _buffer of the current (incomplete) line
        self._error = None

    @property
    def buffered(self):
        """Number of bytes held while waiting for more input."""
        return len(self._buffer)

    @property
    def in_body(self):
        """True between a CHUNK_START and its CHUNK_END."""
        return self._state == _BODY

    def feed(self, data):
        """Parse ``data`` (bytes-like) and return the list of events it completes.

        Raises :class:`ChunkParseError` (or a subclass) when the input is not
        MSRP.
        """
        if self._error is not None:
            raise self._error
        pending = self._buffer
        try:
            if not pending:
                buffer = data if type(data) is bytes else bytes(data)
            elif self._state == _HEAD:
                pending += data   # a bytearray: extended in place
                if not self._head_may_end(pending):
                    return []
                buffer = bytes(pending)
            else:
                # BODY state: ``pending`` is a tail shorter than an end-line.  When no end-line begins in
                # it, hand it out as body and parse ``data`` alone rather than copying all of it.
                marker = self._marker
                if len(data) > len(marker) + 2 and (pending + data[:len(marker) + 2]).find(marker) < 0:
                    events = [(BODY, pending)]
                    buffer = data if type(data) is bytes else bytes(data)
                    pending = None
                else:
                    buffer = pending + data
            if pending is not None:
                events = []
                position = self._parse(buffer, events)
            else:
                position = self._parse(buffer, events)
                if len(events) > 1 and events[1][0] is BODY:
                    events[0:2] = [(BODY, events[0][1] + events[1][1])]  # the same events as one buffer gives
        except ChunkParseError as e:
            self._error = e
            self._state = _FAILED
            self._buffer = b''
            self._chunk = None
            raise
        if position == len(buffer):
            self._buffer = b''
        elif self._state == _HEAD:
            self._buffer = bytearray(buffer[position:] if position else buffer)
        else:
            self._buffer = buffer[position:] if position else buffer
        return events

    def _head_may_end(self, pending):
        # Called with new input appended to an incomplete head: False when the
        # new bytes surely neither complete it nor break a limit (the state is
        # updated for the next call), True when a full parse must decide.
        scanned = self._scanned
        if self._lines < 0:
            if scanned < 5 or len(pending) > self.max_line_length + 1 or pending.find(b'\r\n', scanned - 1) >= 0:
                return True
        else:
            marker = self._marker
            if (pending.find(b'\r\n\r\n', scanned - 3) >= 0 or
                    pending.find(marker, max(scanned - len(marker) - 2, 0)) >= 0):
                return True
            lines = self._lines + pending.count(b'\r\n', scanned - 1)
            last = pending.rfind(b'\r\n', scanned - 1)
            line_start = self._line_start if last < 0 else last + 2
            # (an incomplete line may hold one byte more: the CR of its CRLF; and when lines were completed,
            # one of them may be too long if they span more than a line can)
            if (lines > self.max_headers or len(pending) - line_start > self.max_line_length + 1 or
                    len(pending) > self.max_header_block or
                    (last >= 0 and len(pending) - self._line_start > self.max_line_length + 2)):
                return True
            self._lines = lines
            self._line_start = line_start
        self._scanned = len(pending)
        return False

    def _parse(self, buffer, events):
        # Parse as many events as ``buffer`` holds; return the position of the first unused byte.
        # The common case, whole chunks in the buffer, is handled here without further calls.
        position = 0
        length = len(buffer)
        find = buffer.find
        startswith = buffer.startswith
        append = events.append
        max_line = self.max_line_length
        max_block = self.max_header_block
        max_headers = self.max_headers
        known = _HEADER_CLASSES_EXACT
        new = object.__new__
        scan = _scan_chunks
        while position < length:
            if self._state != _HEAD:
                position = self._parse_body(buffer, position, events)
                if position < 0:
                    return -position - 1
                continue
            if scan is not None:
                # the C fast path takes what it can; the chunk it stops at (if any) is parsed below
                position = scan(buffer, position, events, max_line, max_block, max_headers)
                if type(position) is tuple:
                    # it stopped in a body that goes on past the buffer
                    position, self._chunk, self._marker = position
                    self._state = _BODY
                    return position
                if position == length:
                    break
            # The start line ends at its first CRLF (no part of it can hold a CR or LF), so a match up to
            # the line length limit finds the same line as searching for the CRLF first.
            match = _START_LINE_RE.match(buffer, position, position + max_line + 2)
            if match is None:
                line_end = find(b'\r\n', position, position + max_line + 2)
                if line_end < 0:
                    self._wait_start_line(buffer, position)  # incomplete, or too long
                    return position
                raise InvalidStartLine('not an MSRP start line: %r' %
                                       bytes(buffer[position:min(line_end, position + 80)]))
            line_end = match.end() - 2
            tid, method, code, comment = match.groups()
            marker = b'\r\n-------' + tid
            limit = position + max_block
            # Look for the blank line and the end-line within a short window first: a chunk without body
            # (a response) has no blank line, and searching up to ``limit`` for one would scan the
            # chunks after it, again for each of them.  The outcome is what the full searches give.
            window = line_end + 4096
            body_end = None  # the end-line after the blank line, when already searched for
            if window < limit:
                blank = find(b'\r\n\r\n', line_end, window)
                if blank >= 0:
                    # one search for both: an end-line that ends by blank + 2 (no body), else the first
                    # one after the blank line (the body's end), unless it overlaps the blank line
                    end_line = find(marker, line_end)
                    if end_line < 0:
                        body_end = -1
                    elif end_line > blank + 2 - len(marker):
                        if end_line >= blank + 4:
                            body_end = end_line
                        end_line = -1
                else:
                    end_line = find(marker, line_end, window)
                    if end_line < 0:
                        blank = find(b'\r\n\r\n', line_end, limit)
                        end_line = find(marker, line_end, blank + 2 if blank >= 0 else limit)
            else:
                blank = find(b'\r\n\r\n', line_end, limit)
                end_line = find(marker, line_end, blank + 2 if blank >= 0 else limit)
            if end_line < 0:
                if blank < 0:
                    self._wait_headers(buffer, position, line_end + 2, marker)
                    return position
                header_end = blank
            else:
                header_end = end_line
            # (method, code, comment, _headers, data and contflag keep their class defaults unless set)
            chunk = new(MSRPData)
            chunk.transaction_id = tid.decode('ascii')
            if method is not None:
                chunk.method = method.decode('ascii')
            else:
                chunk.code = int(code)
                if comment:
                    chunk.comment = comment.decode('utf-8', 'surrogateescape')
            chunk._raw = headers = {}
            if header_end > line_end + 2:
                # the header lines: checked as a block, then one object per line
                block = buffer[line_end + 2:header_end].decode('utf-8', 'surrogateescape')
                lines = block.split('\r\n')
                count = len(lines)
                # a CR or LF left once the CRLFs are taken out is in some line (joining the lines is
                # cheaper than counting the CRs and LFs of the block)
                rest = ''.join(lines)
                if '\r' in rest or '\n' in rest:
                    bad = next(line for line in lines if '\r' in line or '\n' in line)
                    raise InvalidHeaderLine('invalid header line %r in %s' % (bad[:80], chunk.first_line))
                if count > max_headers:
                    raise LimitExceeded('max_headers', max_headers, 'number of headers')
                if header_end - line_end - 2 > max_line and \
                        max(map(len, buffer[line_end + 2:header_end].split(b'\r\n'))) > max_line:
                    raise LimitExceeded('max_line_length', max_line, 'header line')  # counted in bytes
                for line in lines:
                    name, colon, value = line.partition(':')
                    if colon and name in known:
                        headers[name] = value  # made into a header object (and stripped) when read
                        continue
                    header = self._unusual_header(line, chunk)
                    headers[header.name] = header
            if end_line >= 0:
                # no body: the end-line follows the headers
                flag_at = end_line + len(marker)
                if length < flag_at + 3:
                    self._wait_end_line(buffer, position, marker)
                    return position
                if not startswith(_END_LINE_TAILS, flag_at):
                    raise InvalidEndLine('invalid end-line after %r: %r' %
                                         (chunk.first_line, bytes(buffer[end_line + 2:flag_at + 3])))
                chunk.chunk_header = buffer[position:end_line + 2]
                end = _END_EVENTS[buffer[flag_at]]
                chunk.contflag = end[1]
                append((CHUNK_START, chunk))
                append(end)
                position = flag_at + 3
                continue
            chunk.chunk_header = buffer[position:blank + 4]
            append((CHUNK_START, chunk))
            position = blank + 4
            # fast path: the whole body and a valid end-line are in the buffer
            end_line = find(marker, position) if body_end is None else body_end
            if end_line >= 0:
                flag_at = end_line + len(marker)
                if startswith(_END_LINE_TAILS, flag_at):
                    if end_line > position:
                        append((BODY, buffer[position:end_line]))
                    end = _END_EVENTS[buffer[flag_at]]
                    chunk.contflag = end[1]
                    append(end)
                    position = flag_at + 3
                    continue
            self._state = _BODY
            self._marker = marker
            self._chunk = chunk
            if end_line < 0:
                # the body goes on past this buffer: hand out all but a tail that could begin the end-line
                safe_end = length - len(marker) - 2
                if safe_end > position:
                    append((BODY, buffer[position:safe_end]))
                    return safe_end
                return position
        return position

    @staticmethod
    def _unusual_header(line, chunk):
        # A header line whose name is not a known one spelled canonically, or without a colon.
        name, colon, value = line.partition(':')
        if not colon or _HEADER_NAME_RE.fullmatch(name) is None:
            raise InvalidHeaderLine('invalid header line %r in %s' % (line[:80], chunk.first_line))
        return _make_header(name, value.strip(' \t'))

    def _wait_start_line(self, buffer, position):
        # The start line is incomplete: fail early on what cannot become one.
        available = len(buffer) - position
        if not buffer.startswith(b'MSRP '[:available], position):
            raise InvalidStartLine('not an MSRP start line: %r' % bytes(buffer[position:position + 40]))
        if available > self.max_line_length + 1:
            raise LimitExceeded('max_line_length', self.max_line_length, 'start line')
        self._scanned = available
        self._lines = -1
        self._line_start = 0

    def _wait_headers(self, buffer, position, start, marker):
        # The header block is incomplete: enforce the limits on what has come so far.
        if len(buffer) - position > self.max_header_block:
            raise LimitExceeded('max_header_block', self.max_header_block, 'header block')
        lines = buffer.count(b'\r\n', start)
        if lines > self.max_headers:
            raise LimitExceeded('max_headers', self.max_headers, 'number of headers')
        last = buffer.rfind(b'\r\n', start)
        line_start = last + 2 if last >= 0 else start
        if len(buffer) - start > self.max_line_length + 1:
            # a complete line over the limit, or the incomplete last one (which may still get its CR)
            lengths = [len(line) for line in buffer[start:].split(b'\r\n')]
            if max(lengths[:-1], default=0) > self.max_line_length or lengths[-1] > self.max_line_length + 1:
                raise LimitExceeded('max_line_length', self.max_line_length, 'header line')
        self._marker = marker
        self._scanned = len(buffer) - position
        self._lines = lines
        self._line_start = line_start - position

    def _wait_end_line(self, buffer, position, marker):
        # The end-line of a chunk without body is incomplete.  The next feed's
        # search for the marker finds it again and parses the chunk again.
        self._marker = marker
        self._scanned = len(buffer) - position
        self._lines = 0
        self._line_start = self._scanned

    def _parse_body(self, buffer, position, events):
        # BODY state: hand out body bytes up to this chunk's end-line.
        # Returns the new position, or -(position + 1) when more input is needed.
        marker = self._marker
        search_from = position
        find = _find_marker
        while True:
            end_line = find(buffer, marker, search_from)
            if end_line < 0:
                break
            flag_at = end_line + len(marker)
            if len(buffer) < flag_at + 3:
                # possibly the end-line, not complete yet: hand out what is surely body
                if end_line > position:
                    events.append((BODY, buffer[position:end_line]))
                return -end_line - 1
            flag = _FLAGS.get(buffer[flag_at])
            if flag is not None and buffer[flag_at + 1:flag_at + 3] == b'\r\n':
                if end_line > position:
                    events.append((BODY, buffer[position:end_line]))
                self._chunk.contflag = flag
                events.append((CHUNK_END, flag))
                self._state = _HEAD
                self._marker = None
                self._chunk = None
                return flag_at + 3
            search_from = end_line + 1  # the marker followed by something else is body
        # No end-line: everything but a tail that could begin one is body.
        safe_end = len(buffer) - (len(marker) + 2)
        if safe_end > position:
            events.append((BODY, buffer[position:safe_end]))
            return -safe_end - 1
        return -position - 1
