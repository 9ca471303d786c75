"""Build and parse the SDP attributes of an MSRP media stream; no I/O.

This is not an SDP stack.  It works on attribute lines (``a=name:value``) and
on their values, for the attributes an MSRP endpoint puts in its offer or
answer:

=========================== ===================================================
attribute                   defined in
=========================== ===================================================
``m=message ... TCP/MSRP``  RFC 4975 §8.1 (see :func:`media_line`)
``a=path``                  RFC 4975 §8.2: the endpoint's MSRP URIs, relays first
``a=accept-types``          RFC 4975 §8.6: MIME types the endpoint accepts
``a=accept-wrapped-types``  RFC 4975 §8.6: types accepted inside a wrapper
``a=max-size``              RFC 4975 §8.6: largest message the endpoint takes
``a=setup``                 RFC 4145 / RFC 6135: who opens the connection
``a=fingerprint``           RFC 8122: the certificate of an ``msrps:`` endpoint
``a=file-selector``         RFC 5547 §5: name, type, size and hash of a file
``a=file-transfer-id``      RFC 5547: identifies one file transfer
``a=file-disposition``      RFC 5547: ``render``, ``attachment``...
``a=file-date``             RFC 5547: creation/modification/read dates
``a=file-icon``             RFC 5547: ``cid:`` URL of an icon sent with the SIP body
``a=file-range``            RFC 5547: the byte range of the file to transfer
=========================== ===================================================

For each value there is a ``format_X(value) -> str`` and a
``parse_X(text) -> value`` pair; :class:`MSRPMediaAttributes` gathers them
for a whole media description, and :class:`FileSelector` describes a file.
Every malformed value raises :class:`SDPError`, which is both an
:class:`~msrplib.protocol.ParsingError` (hence an :class:`~msrplib.MSRPError`)
and a :class:`ValueError`.

The module never touches the network.  The only I/O it does is reading a
file, in blocks of :data:`HASH_BLOCK_SIZE` bytes, when asked to describe or
verify one (:meth:`FileSelector.from_path`, :meth:`FileSelector.from_file`,
:meth:`FileSelector.verify`).
"""

import datetime
import email.utils
import hashlib
import hmac
import io
import mimetypes
import os
import re
import secrets
from collections import namedtuple

from msrplib.protocol import URI, ParsingError

__all__ = [
    'SDPError', 'SETUP_VALUES', 'DIRECTIONS', 'FINGERPRINT_ALGORITHMS', 'FILE_HASH_ALGORITHMS',
    'FILE_DATE_KINDS', 'HASH_BLOCK_SIZE',
    'format_attribute', 'parse_attribute',
    'MediaLine', 'media_line', 'parse_media_line',
    'format_path', 'parse_path', 'format_accept_types', 'parse_accept_types',
    'format_max_size', 'parse_max_size', 'format_setup', 'parse_setup',
    'format_fingerprint', 'parse_fingerprint',
    'FileHash', 'FileSelector', 'FileRange', 'format_file_range', 'parse_file_range',
    'format_file_date', 'parse_file_date', 'new_file_transfer_id',
    'MSRPMediaAttributes',
]


class SDPError(ParsingError, ValueError):
    """An SDP attribute or value is malformed (or cannot be built from what was given)."""


#: Values of ``a=setup`` (RFC 4145 §4; RFC 6135 for MSRP).
SETUP_VALUES = ('active', 'passive', 'actpass', 'holdconn')

#: The direction property attributes (RFC 4566 §6); RFC 5547 uses them to
#: tell a file push (``sendonly`` offer) from a pull (``recvonly``).
DIRECTIONS = ('sendrecv', 'sendonly', 'recvonly', 'inactive')

#: IANA "Hash Function Textual Names" accepted in ``a=fingerprint``, to
#: hashlib names (the same set as :data:`msrplib.tls.HASH_ALGORITHMS`).
FINGERPRINT_ALGORITHMS = {
    'sha-1': 'sha1',
    'sha-224': 'sha224',
    'sha-256': 'sha256',
    'sha-384': 'sha384',
    'sha-512': 'sha512',
}

#: Hash algorithms of a file-selector that :meth:`FileSelector.verify` can
#: compute.  RFC 5547 defines only ``sha-1``; the others are accepted for
#: peers that use them.  A selector may carry any token as algorithm; those
#: not listed here are kept but cannot be verified.
FILE_HASH_ALGORITHMS = dict(FINGERPRINT_ALGORITHMS, md5='md5')

#: The kinds of date in ``a=file-date`` (RFC 5547 §6).
FILE_DATE_KINDS = ('creation', 'modification', 'read')

#: Bytes read at a time when hashing a file: large enough that the hash, not
#: the system calls, dominates; small enough to be irrelevant to memory.
HASH_BLOCK_SIZE = 1 << 20

# token of RFC 4566 §9 (SDP) -- also RFC 2045's token for MIME types, minus a
# few characters SDP allows and MIME does not (we accept the SDP superset).
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_TOKEN_RE = re.compile(_TOKEN)
_MIME_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_INTEGER_RE = re.compile(r'[0-9]{1,19}')     # 19 digits: any 63-bit size, bounded parse cost
_HEX_PAIRS_RE = re.compile(r'[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*')


def _check_str(value, what):
    if isinstance(value, bytes):
        try:
            value = value.decode('utf-8')
        except UnicodeDecodeError:
            raise SDPError('%s is not UTF-8: %r' % (what, value)) from None
    if not isinstance(value, str):
        raise SDPError('%s must be text, not %s' % (what, type(value).__name__))
    return value


def _check_utf8(text, what):
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        raise SDPError('%s cannot be encoded in UTF-8: %r' % (what, text)) from None
    return text


def _integer(text, what):
    text = _check_str(text, what).strip()
    if not _INTEGER_RE.fullmatch(text):
        raise SDPError('invalid %s: %r' % (what, text))
    return int(text)


# ---------------------------------------------------------------------------
# Attribute lines and the media line

def format_attribute(name, value=None):
    """Return the attribute line ``a=name:value`` (``a=name`` when value is
    None), without CRLF.  Raises SDPError if the name is not a token or the
    value contains CR, LF or NUL."""
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise SDPError('invalid attribute name: %r' % (name,))
    if value is None:
        return 'a=%s' % name
    value = str(value)
    if any(c in value for c in '\r\n\0'):
        raise SDPError('attribute value contains CR, LF or NUL: %r' % (value,))
    return 'a=%s:%s' % (name, value)


def parse_attribute(line):
    """Split an attribute line ``a=name[:value]`` into ``(name, value)``;
    value is None for a property attribute such as ``a=sendonly``.  A
    trailing CRLF/LF is ignored; the ``a=`` prefix is required.  Raises
    SDPError for anything else."""
    line = _check_str(line, 'attribute line').rstrip('\r\n')
    if not line.startswith('a='):
        raise SDPError('not an attribute line: %r' % (line,))
    name, sep, value = line[2:].partition(':')
    if not _TOKEN_RE.fullmatch(name):
        raise SDPError('invalid attribute name in %r' % (line,))
    if '\0' in value or '\r' in value or '\n' in value:
        raise SDPError('attribute value contains CR, LF or NUL: %r' % (line,))
    return name, (value if sep else None)


class MediaLine(namedtuple('MediaLine', 'media port protocol formats')):
    """A parsed ``m=`` line: media (``'message'``), port (int), protocol
    (``'TCP/MSRP'`` or ``'TCP/TLS/MSRP'``; over WebSocket, RFC 7977,
    ``'TCP/WS/MSRP'`` or ``'TCP/WSS/MSRP'``) and formats (list of str;
    ``['*']`` for MSRP).  ``str()`` gives the line back."""

    __slots__ = ()

    @property
    def use_tls(self):
        """True for ``TCP/TLS/MSRP`` and ``TCP/WSS/MSRP``."""
        return self.protocol.upper() in ('TCP/TLS/MSRP', 'TCP/WSS/MSRP')

    @property
    def websocket(self):
        """True for ``TCP/WS/MSRP`` and ``TCP/WSS/MSRP`` (an endpoint reached over WebSocket, RFC 7977)."""
        return self.protocol.upper() in ('TCP/WS/MSRP', 'TCP/WSS/MSRP')

    def __str__(self):
        return 'm=%s %d %s %s' % (self.media, self.port, self.protocol, ' '.join(self.formats))


def media_line(port, use_tls=False, websocket=False):
    """Return the media line of an MSRP stream (RFC 4975 §8.1):
    ``m=message <port> TCP/MSRP *``, or ``TCP/TLS/MSRP`` with ``use_tls``;
    with ``websocket`` (an endpoint on a WebSocket relay, RFC 7977)
    ``TCP/WS/MSRP`` or ``TCP/WSS/MSRP``.  ``port`` is the port of the
    endpoint's own URI (the last of its path)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SDPError('invalid port for the media line: %r' % (port,))
    if websocket:
        protocol = 'TCP/WSS/MSRP' if use_tls else 'TCP/WS/MSRP'
    else:
        protocol = 'TCP/TLS/MSRP' if use_tls else 'TCP/MSRP'
    return str(MediaLine('message', port, protocol, ['*']))


def parse_media_line(line):
    """Parse ``m=<media> <port>[/<count>] <proto> <fmt> ...`` into a
    :class:`MediaLine` (any media and protocol; the port count, if present,
    is dropped).  Raises SDPError if malformed."""
    line = _check_str(line, 'media line').rstrip('\r\n')
    if not line.startswith('m='):
        raise SDPError('not a media line: %r' % (line,))
    parts = line[2:].split(' ')
    if len(parts) < 4 or not all(parts) or not _TOKEN_RE.fullmatch(parts[0]):
        raise SDPError('malformed media line: %r' % (line,))
    port = _integer(parts[1].partition('/')[0], 'media line port')
    if port > 65535:
        raise SDPError('media line port out of range: %r' % (line,))
    return MediaLine(parts[0], port, parts[2], parts[3:])


# ---------------------------------------------------------------------------
# RFC 4975 attributes

def format_path(path):
    """Value of ``a=path`` for a list of :class:`~msrplib.protocol.URI` (or
    their text): the URIs in order, separated by one space.  Text is checked
    with ``URI.parse``."""
    if isinstance(path, (str, URI)):
        path = [path]
    uris = [uri if isinstance(uri, URI) else _parse_uri(uri) for uri in path]
    if not uris:
        raise SDPError('a path needs at least one URI')
    return ' '.join(str(uri) for uri in uris)


def _parse_uri(text):
    try:
        return URI.parse(text)
    except ParsingError as e:
        raise SDPError('invalid MSRP URI in path: %s' % e) from e


def parse_path(value):
    """Parse the value of ``a=path`` into a list of
    :class:`~msrplib.protocol.URI` (relays first, the endpoint last).
    Raises SDPError (a ParsingError) if it is empty or a URI is invalid."""
    value = _check_str(value, 'path')
    if not value.split():
        raise SDPError('empty path')
    try:
        return URI.parse_path(value)
    except ParsingError as e:
        raise SDPError('invalid MSRP URI in path: %s' % e) from e


_FORMAT_ENTRY_RE = re.compile(r'\*|%s/%s(?:;%s=(?:%s|"[^"]*"))*' % ((_MIME_TOKEN,) * 4))


def format_accept_types(types):
    """Value of ``a=accept-types`` / ``a=accept-wrapped-types``: the MIME
    types (``'text/plain'``, ``'message/*'`` or ``'*'``) separated by spaces."""
    if isinstance(types, str):
        types = types.split()
    types = list(types)
    if not types:
        raise SDPError('an accept-types list needs at least one entry')
    for entry in types:
        if not isinstance(entry, str) or not _FORMAT_ENTRY_RE.fullmatch(entry):
            raise SDPError('invalid MIME type in accept-types: %r' % (entry,))
    return ' '.join(types)


def parse_accept_types(value):
    """Parse the value of ``a=accept-types`` / ``a=accept-wrapped-types``
    into a list of str.  Each entry is ``*``, ``type/subtype`` or
    ``type/*`` (RFC 4975 §8.6), optionally with ``;name=value`` parameters.
    Raises SDPError if empty or an entry is malformed."""
    types = _check_str(value, 'accept-types').split()
    if not types:
        raise SDPError('empty accept-types')
    for entry in types:
        if not _FORMAT_ENTRY_RE.fullmatch(entry):
            raise SDPError('invalid MIME type in accept-types: %r' % (entry,))
    return types


def format_max_size(size):
    """Value of ``a=max-size``: a non-negative integer (bytes)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SDPError('invalid max-size: %r' % (size,))
    return str(size)


def parse_max_size(value):
    """Parse the value of ``a=max-size`` into an int; SDPError if malformed."""
    return _integer(value, 'max-size')


def format_setup(setup):
    """Value of ``a=setup``; one of :data:`SETUP_VALUES`, else SDPError."""
    return parse_setup(setup)


def parse_setup(value):
    """Parse the value of ``a=setup``: ``active``, ``passive``, ``actpass``
    or ``holdconn`` (case-insensitive, returned in lower case).  Anything
    else raises SDPError."""
    setup = _check_str(value, 'setup').strip().lower()
    if setup not in SETUP_VALUES:
        raise SDPError('invalid setup value %r (expected one of %s)' % (value, ', '.join(SETUP_VALUES)))
    return setup


def _split_fingerprint(value):
    """``(algorithm, digest, supported)`` of an RFC 8122 fingerprint value."""
    text = _check_str(value, 'fingerprint')
    parts = text.split(None, 1)
    if len(parts) != 2 or not _TOKEN_RE.fullmatch(parts[0]):
        raise SDPError('malformed fingerprint: %r' % (text,))
    algorithm = parts[0].lower()
    hex_text = parts[1].strip()
    if not _HEX_PAIRS_RE.fullmatch(hex_text):
        raise SDPError('malformed fingerprint: %r' % (text,))
    digest = bytes.fromhex(hex_text.replace(':', ''))
    hash_name = FINGERPRINT_ALGORITHMS.get(algorithm)
    if hash_name is not None and len(digest) != hashlib.new(hash_name).digest_size:
        raise SDPError('wrong digest length for %s in fingerprint: %r' % (algorithm, text))
    return algorithm, digest, hash_name is not None


def _fingerprint_text(algorithm, digest):
    return '%s %s' % (algorithm, digest.hex(':').upper())


def format_fingerprint(source, algorithm='sha-256'):
    """Value of ``a=fingerprint`` (RFC 8122): ``'sha-256 AB:CD:...'``.

    ``source`` is a DER certificate (bytes), an object with a
    ``certificate_der`` attribute (a :class:`msrplib.tls.TLSCredentials`),
    or a fingerprint string, which is checked and normalised (``algorithm``
    is then ignored).  Raises SDPError for an unknown algorithm or a
    malformed string.
    """
    if isinstance(source, str):
        found, digest, supported = _split_fingerprint(source)
        if not supported:
            raise SDPError('unsupported fingerprint hash algorithm: %r' % (found,))
        return _fingerprint_text(found, digest)
    der = getattr(source, 'certificate_der', source)
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise SDPError('a fingerprint is made from a DER certificate, TLSCredentials or a string, not %s'
                       % type(source).__name__)
    algorithm = _check_str(algorithm, 'algorithm').lower()
    hash_name = FINGERPRINT_ALGORITHMS.get(algorithm)
    if hash_name is None:
        raise SDPError('unsupported fingerprint hash algorithm: %r' % (algorithm,))
    return _fingerprint_text(algorithm, hashlib.new(hash_name, bytes(der)).digest())


def parse_fingerprint(value):
    """Parse an ``a=fingerprint`` value into ``(algorithm, digest_bytes)``
    (algorithm in lower case), like :func:`msrplib.tls.parse_fingerprint`.
    Raises SDPError if malformed, if the algorithm is not one of
    :data:`FINGERPRINT_ALGORITHMS`, or if the digest length is wrong."""
    algorithm, digest, supported = _split_fingerprint(value)
    if not supported:
        raise SDPError('unsupported fingerprint hash algorithm: %r' % (algorithm,))
    return algorithm, digest


# ---------------------------------------------------------------------------
# RFC 5547: quoted strings with %-encoding
#
# filename-string = 1*(filename-char / percent-encoded), filename-char being
# any byte but NUL, CR, LF, DQUOTE and "%".  We write those five as %XX and
# every other character as itself (UTF-8 on the wire).

_MUST_ENCODE = {'\0': '%00', '\n': '%0A', '\r': '%0D', '"': '%22', '%': '%25'}
_MUST_ENCODE_RE = re.compile('[\0\n\r"%]')
_PERCENT_RE = re.compile(rb'%([0-9A-Fa-f]{2})')


def _encode_string(text):
    return _MUST_ENCODE_RE.sub(lambda m: _MUST_ENCODE[m.group()], text)


def _decode_string(text, what, allow_empty=False):
    if not text and not allow_empty:
        raise SDPError('empty %s' % what)
    raw = text.encode('utf-8', 'surrogatepass')
    if b'\0' in raw:
        raise SDPError('NUL in %s: %r' % (what, text))
    decoded = _PERCENT_RE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    if b'%' in _PERCENT_RE.sub(b'', raw):
        raise SDPError('bad %%-encoding in %s: %r' % (what, text))
    try:
        return decoded.decode('utf-8')
    except UnicodeDecodeError:
        raise SDPError('%s is not UTF-8 once %%-decoded: %r' % (what, text)) from None


# ---------------------------------------------------------------------------
# RFC 5547: the file-selector

class FileHash(namedtuple('FileHash', 'algorithm digest')):
    """A hash in a file-selector: algorithm (lower case, e.g. ``'sha-1'``)
    and digest (bytes).  ``str()`` gives the selector form
    ``sha-1:72:24:5F:...`` (without the ``hash:`` prefix)."""

    __slots__ = ()

    def __str__(self):
        return '%s:%s' % (self.algorithm, self.digest.hex(':').upper())

    @classmethod
    def parse(cls, text):
        """Parse ``algorithm:XX:XX:...``; SDPError if malformed or the
        digest length is wrong for a known algorithm."""
        text = _check_str(text, 'hash')
        algorithm, _, hex_text = text.partition(':')
        if not _TOKEN_RE.fullmatch(algorithm) or not _HEX_PAIRS_RE.fullmatch(hex_text):
            raise SDPError('malformed file hash: %r' % (text,))
        return cls.make(algorithm, bytes.fromhex(hex_text.replace(':', '')))

    @classmethod
    def make(cls, algorithm, digest):
        """Build from an algorithm name and a digest (bytes, or hex text
        with or without colons), checking both."""
        algorithm = _check_str(algorithm, 'hash algorithm').lower()
        if not _TOKEN_RE.fullmatch(algorithm):
            raise SDPError('invalid hash algorithm: %r' % (algorithm,))
        if isinstance(digest, str):
            try:
                digest = bytes.fromhex(digest.replace(':', ''))
            except ValueError:
                raise SDPError('invalid hex digest: %r' % (digest,)) from None
        if not isinstance(digest, (bytes, bytearray, memoryview)) or not len(digest):
            raise SDPError('invalid digest: %r' % (digest,))
        digest = bytes(digest)
        hash_name = FILE_HASH_ALGORITHMS.get(algorithm)
        if hash_name is not None and len(digest) != hashlib.new(hash_name).digest_size:
            raise SDPError('wrong digest length for %s: %d bytes' % (algorithm, len(digest)))
        return cls(algorithm, digest)

    @classmethod
    def coerce(cls, value):
        """A FileHash from a FileHash, an ``(algorithm, digest)`` pair or the
        text ``algorithm:XX:...`` (a leading ``hash:`` is allowed)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, (str, bytes)):
            value = _check_str(value, 'hash')
            return cls.parse(value[5:] if value.lower().startswith('hash:') else value)
        if isinstance(value, tuple) and len(value) == 2:
            return cls.make(*value)
        raise SDPError('a hash is a FileHash, an (algorithm, digest) pair or text, not %r' % (value,))


# type/subtype *(";" attribute "=" DQUOTE value-string DQUOTE) in the
# selector; we also accept unquoted token values, as some peers send them.
_SDP_TYPE_RE = re.compile(r'(%s/%s)((?:;%s=(?:"[^"]*"|%s))*)' % ((_MIME_TOKEN,) * 4))
_SDP_PARAM_RE = re.compile(r';(%s)=("[^"]*"|%s)' % (_MIME_TOKEN, _MIME_TOKEN))
# The same in Content-Type form (RFC 2045): quoted-string with backslash escapes,
# optional white space around ";" and "=".
_CT_TYPE_RE = re.compile(r'\s*(%s/%s)\s*((?:;\s*%s\s*=\s*(?:"(?:[^"\\]|\\.)*"|%s)\s*)*)'
                         % ((_MIME_TOKEN,) * 4), re.DOTALL)
_CT_PARAM_RE = re.compile(r';\s*(%s)\s*=\s*("(?:[^"\\]|\\.)*"|%s)\s*' % (_MIME_TOKEN, _MIME_TOKEN), re.DOTALL)
_CT_UNESCAPE_RE = re.compile(r'\\(.)', re.DOTALL)


def _split_content_type(text):
    """``('type/subtype', {name: value})`` of a Content-Type form value."""
    match = _CT_TYPE_RE.fullmatch(text)
    if match is None:
        raise SDPError('invalid MIME type: %r' % (text,))
    parameters = {}
    for name, value in _CT_PARAM_RE.findall(match.group(2)):
        if value.startswith('"'):
            value = _CT_UNESCAPE_RE.sub(r'\1', value[1:-1])
        parameters[name.lower()] = value
    return match.group(1), parameters


def _content_type(media_type, parameters):
    parts = [media_type]
    for name, value in parameters.items():
        if not _TOKEN_RE.fullmatch(value):
            value = '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')
        parts.append('%s=%s' % (name, value))
    return ';'.join(parts)


_SELECTOR_ITEM_RE = re.compile(r'(?:[^ "]+|"[^"]*")+')


class FileSelector:
    """The RFC 5547 description of a file: ``name``, ``type``, ``size``,
    ``hash`` (each optional).

    - ``name``: str (any Unicode; on the wire UTF-8, with ``"``, ``%``, CR,
      LF and NUL %-encoded).
    - ``type``: str in Content-Type form, e.g. ``'text/plain;charset=UTF-8'``
      (what goes into the MSRP Content-Type header); in SDP its parameter
      values are quoted and %-encoded as RFC 5547 wants.  ``media_type`` and
      ``type_parameters`` give its parts.
    - ``size``: int, in bytes.
    - ``hash``: a :class:`FileHash` ``(algorithm, digest_bytes)``; the
      constructor also takes an ``(algorithm, digest)`` pair or the text
      ``'sha-1:72:24:...'``, or a list of these when a peer gives several
      algorithms.  ``hash`` is the sha-1 one when present (else the first);
      ``hashes`` maps every algorithm to its digest.

    ``str(selector)`` is the value of ``a=file-selector`` (and of an MSRP
    ``File-Selector`` header), :meth:`parse` reads it back.  Selectors
    compare equal when all their fields are equal.  Bad values raise
    :class:`SDPError`.
    """

    def __init__(self, name=None, type=None, size=None, hash=None):
        if name is not None:
            name = _check_str(name, 'file name')
            if not name:
                raise SDPError('empty file name')
            _check_utf8(name, 'file name')
        self.name = name
        if type is not None:
            type = _content_type(*_split_content_type(_check_utf8(_check_str(type, 'file type'), 'file type')))
        self.type = type
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise SDPError('invalid file size: %r' % (size,))
        self.size = size
        if hash is None:
            hashes = []
        elif isinstance(hash, list):
            hashes = [FileHash.coerce(item) for item in hash]
        else:
            hashes = [FileHash.coerce(hash)]
        self.hashes = {}
        for item in hashes:
            if item.algorithm in self.hashes:
                raise SDPError('two %s hashes in one file-selector' % item.algorithm)
            self.hashes[item.algorithm] = item.digest

    @property
    def hash(self):
        """The :class:`FileHash` to check (sha-1 when present), or None."""
        if not self.hashes:
            return None
        algorithm = 'sha-1' if 'sha-1' in self.hashes else next(iter(self.hashes))
        return FileHash(algorithm, self.hashes[algorithm])

    @property
    def media_type(self):
        """``type`` without parameters (``'text/plain'``), or None."""
        return None if self.type is None else _split_content_type(self.type)[0]

    @property
    def type_parameters(self):
        """The parameters of ``type`` as a dict (names in lower case)."""
        return {} if self.type is None else _split_content_type(self.type)[1]

    # -- text form ----------------------------------------------------------

    def __str__(self):
        items = []
        if self.name is not None:
            items.append('name:"%s"' % _encode_string(self.name))
        if self.type is not None:
            media_type, parameters = _split_content_type(self.type)
            items.append('type:' + media_type + ''.join(';%s="%s"' % (name, _encode_string(value))
                                                         for name, value in parameters.items()))
        if self.size is not None:
            items.append('size:%d' % self.size)
        items.extend('hash:' + str(FileHash(algorithm, digest)) for algorithm, digest in self.hashes.items())
        return ' '.join(items)

    @classmethod
    def parse(cls, text):
        """Parse the value of ``a=file-selector`` (selectors in any order,
        separated by white space; each optional, at most once, except
        ``hash`` once per algorithm).  Raises SDPError if malformed."""
        text = _check_str(text, 'file-selector')
        fields = {}
        hashes = []
        position = 0
        for match in _SELECTOR_ITEM_RE.finditer(text):
            if text[position:match.start()].strip(' \t'):
                raise SDPError('malformed file-selector (unbalanced quotes?): %r' % (text,))
            position = match.end()
            key, sep, value = match.group().partition(':')
            key = key.lower()
            if not sep or key not in ('name', 'type', 'size', 'hash'):
                raise SDPError('unknown selector %r in file-selector %r' % (match.group(), text))
            if key == 'hash':
                hashes.append(FileHash.parse(value))
                continue
            if key in fields:
                raise SDPError('%s given twice in file-selector %r' % (key, text))
            if key == 'name':
                if len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:
                    raise SDPError('file name must be quoted: %r' % (match.group(),))
                fields['name'] = _decode_string(value[1:-1], 'file name')
            elif key == 'type':
                type_match = _SDP_TYPE_RE.fullmatch(value)
                if type_match is None:
                    raise SDPError('invalid file type: %r' % (value,))
                parameters = {}
                for name, param in _SDP_PARAM_RE.findall(type_match.group(2)):
                    parameters[name.lower()] = (_decode_string(param[1:-1], 'type parameter', True)
                                                if param.startswith('"') else param)
                fields['type'] = _content_type(type_match.group(1), parameters)
            else:
                fields['size'] = _integer(value, 'file size')
        if text[position:].strip(' \t'):
            raise SDPError('malformed file-selector (unbalanced quotes?): %r' % (text,))
        return cls(hash=hashes, **fields)

    def __eq__(self, other):
        if not isinstance(other, FileSelector):
            return NotImplemented
        return ((self.name, self.type, self.size, self.hashes)
                == (other.name, other.type, other.size, other.hashes))

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None

    def __repr__(self):
        return '%s.parse(%r)' % (type(self).__name__, str(self))

    # -- describing and checking files --------------------------------------

    @classmethod
    def from_file(cls, file, name=None, type=None, algorithm='sha-1'):
        """Describe the rest of a binary file object, from its current
        position to its end, then seek back to that position (so the same
        object can be sent next).  Size and hash come from reading it in
        blocks of :data:`HASH_BLOCK_SIZE`.  ``type`` defaults to a guess
        from ``name`` (``mimetypes``), else None."""
        hasher = _new_hasher(algorithm)
        start = file.tell()
        size = 0
        try:
            while True:
                block = file.read(HASH_BLOCK_SIZE)
                if not block:
                    break
                hasher.update(block)
                size += len(block)
        finally:
            file.seek(start)
        if type is None and name:
            type = mimetypes.guess_type(name, strict=False)[0]
        return cls(name=name or None, type=type, size=size, hash=(algorithm, hasher.digest()))

    @classmethod
    def from_path(cls, path, type=None, name=None, algorithm='sha-1'):
        """Describe the file at ``path``: name (its base name unless
        ``name`` is given), type (``type``, else guessed from the name, else
        ``application/octet-stream``), size, and its sha-1 hash (or
        ``algorithm``), reading the file in blocks."""
        if name is None:
            name = os.path.basename(os.fsdecode(path))
        if type is None:
            type = mimetypes.guess_type(name, strict=False)[0] or 'application/octet-stream'
        with open(path, 'rb') as file:
            return cls.from_file(file, name=name, type=type, algorithm=algorithm)

    def new_hasher(self):
        """A new hashlib object for ``hash``'s algorithm, to check a file as
        it arrives; None if the selector has no hash.  SDPError if the
        algorithm is not one of :data:`FILE_HASH_ALGORITHMS`."""
        return None if self.hash is None else _new_hasher(self.hash.algorithm)

    def verify(self, data):
        """True if ``data`` matches this selector's size and hash.

        ``data`` is bytes-like, a path (str or os.PathLike; the file is read
        in blocks) or a binary file object (read from its position to its
        end).  Only the fields present are compared; hashes whose algorithm
        is unknown are skipped.  Raises SDPError if there is nothing to
        compare (no size and no known hash); OSError if a path cannot be read.
        """
        known = {algorithm: digest for algorithm, digest in self.hashes.items()
                 if algorithm in FILE_HASH_ALGORITHMS}
        if self.size is None and not known:
            raise SDPError('file-selector %r has no size or usable hash to verify' % str(self))
        if isinstance(data, (bytes, bytearray, memoryview)):
            return self._check(io.BytesIO(data), known)
        if isinstance(data, (str, os.PathLike)):
            with open(data, 'rb') as file:
                return self._check(file, known)
        if hasattr(data, 'read'):
            return self._check(data, known)
        raise TypeError('verify() takes bytes, a path or a binary file, not %s' % type(data).__name__)

    def _check(self, file, known):
        hashers = {algorithm: _new_hasher(algorithm) for algorithm in known}
        size = 0
        while True:
            block = file.read(HASH_BLOCK_SIZE)
            if not block:
                break
            size += len(block)
            if self.size is not None and size > self.size:
                return False
            for hasher in hashers.values():
                hasher.update(block)
        if self.size is not None and size != self.size:
            return False
        return all(hmac.compare_digest(hashers[algorithm].digest(), digest) for algorithm, digest in known.items())


def _new_hasher(algorithm):
    hash_name = FILE_HASH_ALGORITHMS.get(str(algorithm).lower())
    if hash_name is None:
        raise SDPError('unsupported file hash algorithm: %r' % (algorithm,))
    return hashlib.new(hash_name)


# ---------------------------------------------------------------------------
# RFC 5547: the other file attributes

class FileRange(namedtuple('FileRange', 'start stop')):
    """Value of ``a=file-range``: 1-based inclusive ``start`` and ``stop``
    (None for ``*``, the end of the file).  ``str()`` gives ``start-stop``."""

    __slots__ = ()

    def __str__(self):
        return '%d-%s' % (self.start, '*' if self.stop is None else self.stop)


def format_file_range(start, stop=None):
    """Value of ``a=file-range`` (``'1-*'`` by default for stop=None); also
    takes a :class:`FileRange` as ``start``."""
    if isinstance(start, tuple):
        start, stop = start
    for value in (start, stop):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SDPError('invalid file-range bound: %r' % (value,))
    if start is None or start < 1 or (stop is not None and stop < start):
        raise SDPError('invalid file-range: %r-%r' % (start, stop))
    return str(FileRange(start, stop))


def parse_file_range(value):
    """Parse ``start-stop`` (stop may be ``*``) into a :class:`FileRange`;
    SDPError if malformed, if start < 1 or stop < start."""
    text = _check_str(value, 'file-range').strip()
    start, sep, stop = text.partition('-')
    if not sep:
        raise SDPError('invalid file-range: %r' % (text,))
    start = _integer(start, 'file-range start')
    stop = None if stop == '*' else _integer(stop, 'file-range stop')
    if start < 1 or (stop is not None and stop < start):
        raise SDPError('invalid file-range: %r' % (text,))
    return FileRange(start, stop)


_FILE_DATE_RE = re.compile(r'([A-Za-z]+):"([^"]*)"')


def format_file_date(dates):
    """Value of ``a=file-date`` from a dict ``{kind: datetime}``, kind in
    :data:`FILE_DATE_KINDS`: ``creation:"Mon, 15 May 2006 15:01:31 +0300"``.
    Naive datetimes are taken as UTC."""
    items = []
    for kind, when in dict(dates).items():
        if kind not in FILE_DATE_KINDS:
            raise SDPError('invalid file-date kind: %r' % (kind,))
        if not isinstance(when, datetime.datetime):
            raise SDPError('file-date %s must be a datetime, not %r' % (kind, when))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        items.append('%s:"%s"' % (kind, email.utils.format_datetime(when)))
    if not items:
        raise SDPError('a file-date needs at least one date')
    return ' '.join(items)


def parse_file_date(value):
    """Parse the value of ``a=file-date`` into ``{kind: datetime}``
    (timezone-aware; RFC 5322 dates, ``-0000`` read as UTC).  SDPError if
    malformed."""
    text = _check_str(value, 'file-date').strip()
    dates = {}
    position = 0
    for match in _FILE_DATE_RE.finditer(text):
        if text[position:match.start()].strip(' \t'):
            break
        position = match.end()
        kind = match.group(1).lower()
        if kind not in FILE_DATE_KINDS or kind in dates:
            raise SDPError('invalid or repeated file-date kind %r in %r' % (kind, text))
        try:
            when = email.utils.parsedate_to_datetime(match.group(2))
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is None:
            raise SDPError('invalid date in file-date: %r' % (match.group(2),))
        if when.tzinfo is None:             # "-0000": UTC, origin unknown (RFC 5322 §3.3)
            when = when.replace(tzinfo=datetime.timezone.utc)
        dates[kind] = when
    if not dates or text[position:].strip(' \t'):
        raise SDPError('malformed file-date: %r' % (text,))
    return dates


def new_file_transfer_id():
    """A fresh random value for ``a=file-transfer-id`` (a token of 192 bits)."""
    return secrets.token_urlsafe(24)


def _token(value, what):
    text = _check_str(value, what).strip()
    if not _TOKEN_RE.fullmatch(text):
        raise SDPError('invalid %s: %r' % (what, text))
    return text


def _cid_url(value, what='file-icon'):
    text = _check_str(value, what).strip()
    if not re.fullmatch(r'(?i)cid:[^\s"<>]+', text):
        raise SDPError('invalid %s (expected a cid: URL): %r' % (what, text))
    return text


# ---------------------------------------------------------------------------
# A whole media description

# attribute name -> (field, parse, format); the single-valued attributes.
_SINGLE = {
    'path': ('path', parse_path, format_path),
    'accept-types': ('accept_types', parse_accept_types, format_accept_types),
    'accept-wrapped-types': ('accept_wrapped_types', parse_accept_types, format_accept_types),
    'max-size': ('max_size', parse_max_size, format_max_size),
    'setup': ('setup', parse_setup, format_setup),
    'file-selector': ('file_selector', FileSelector.parse,
                      lambda v: str(v if isinstance(v, FileSelector) else FileSelector.parse(v))),
    'file-transfer-id': ('file_transfer_id', lambda v: _token(v, 'file-transfer-id'),
                         lambda v: _token(v, 'file-transfer-id')),
    'file-disposition': ('file_disposition', lambda v: _token(v, 'file-disposition'),
                         lambda v: _token(v, 'file-disposition')),
    'file-date': ('file_date', parse_file_date, format_file_date),
    'file-icon': ('file_icon', _cid_url, _cid_url),
    'file-range': ('file_range', parse_file_range, format_file_range),
}


class MSRPMediaAttributes:
    """The MSRP attributes of one media description.

    Fields (None or empty when absent):

    - ``path``: list of :class:`~msrplib.protocol.URI`, relays first
    - ``accept_types``, ``accept_wrapped_types``: lists of str
    - ``max_size``: int
    - ``setup``: one of :data:`SETUP_VALUES`
    - ``fingerprints``: list of str, ``'sha-256 AB:CD:...'`` (several are
      allowed, RFC 8122 §5); ready for ``ConnectorDirect(expected_fingerprint=...)``.
      The constructor also takes DER certificates or TLSCredentials here.
    - ``direction``: one of :data:`DIRECTIONS`
    - ``file_selector`` (:class:`FileSelector`), ``file_transfer_id`` (str),
      ``file_disposition`` (str), ``file_date`` (dict kind -> datetime),
      ``file_icon`` (str, a ``cid:`` URL), ``file_range`` (:class:`FileRange`)
    - ``other``: dict attribute name -> list of values (None for a property
      attribute) for every other ``a=`` line, in order.

    :meth:`to_lines` gives the ``a=`` lines; :meth:`parse` reads them back.
    """

    def __init__(self, path=None, accept_types=None, accept_wrapped_types=None, max_size=None, setup=None,
                 fingerprints=None, direction=None, file_selector=None, file_transfer_id=None,
                 file_disposition=None, file_date=None, file_icon=None, file_range=None, other=None):
        self.path = list(path) if path is not None else []
        self.accept_types = list(accept_types) if accept_types is not None else None
        self.accept_wrapped_types = list(accept_wrapped_types) if accept_wrapped_types is not None else None
        self.max_size = max_size
        self.setup = setup
        if fingerprints is None:
            fingerprints = []
        elif isinstance(fingerprints, (str, bytes)) or hasattr(fingerprints, 'certificate_der'):
            fingerprints = [fingerprints]
        self.fingerprints = [format_fingerprint(item) for item in fingerprints]
        self.direction = direction
        self.file_selector = file_selector
        self.file_transfer_id = file_transfer_id
        self.file_disposition = file_disposition
        self.file_date = file_date
        self.file_icon = file_icon
        self.file_range = file_range
        self.other = {name: list(values) for name, values in (other or {}).items()}

    def to_lines(self):
        """The attribute lines, ``a=name:value`` without CRLF, in a fixed
        order (the MSRP attributes, the direction, the file attributes, then
        ``other``).  Raises SDPError if a field holds a bad value."""
        lines = []

        def add(name, value):
            if value is not None:
                lines.append(format_attribute(name, _SINGLE[name][2](value)))
        add('accept-types', self.accept_types or None)
        add('accept-wrapped-types', self.accept_wrapped_types or None)
        add('max-size', self.max_size)
        add('path', self.path or None)
        add('setup', self.setup)
        lines.extend(format_attribute('fingerprint', format_fingerprint(item)) for item in self.fingerprints)
        if self.direction is not None:
            if self.direction not in DIRECTIONS:
                raise SDPError('invalid direction: %r' % (self.direction,))
            lines.append(format_attribute(self.direction))
        add('file-selector', self.file_selector)
        add('file-transfer-id', self.file_transfer_id)
        add('file-disposition', self.file_disposition)
        add('file-date', self.file_date or None)
        add('file-icon', self.file_icon)
        add('file-range', self.file_range)
        for name, values in self.other.items():
            lines.extend(format_attribute(name, value) for value in values)
        return lines

    def __str__(self):
        return ''.join(line + '\r\n' for line in self.to_lines())

    @classmethod
    def parse(cls, source):
        """Read the attributes from SDP text (str or UTF-8 bytes; CRLF or LF
        line ends) or from an iterable of lines.

        Lines that are not ``a=`` lines (``v=``, ``m=``, ``c=``...) and empty
        lines are ignored, so a whole SDP body with one ``m=message`` section
        can be given (session-level ``a=`` lines, e.g. a session-level
        ``a=fingerprint``, are then read too).  Give only the lines of the
        MSRP section when the body has several media.  A fingerprint whose
        hash algorithm is not one of :data:`FINGERPRINT_ALGORITHMS` goes to
        ``other['fingerprint']`` (RFC 8122 says to ignore it).  Raises
        SDPError for a malformed known attribute, or one of the
        single-valued ones given twice.
        """
        if isinstance(source, (str, bytes)):
            source = _check_str(source, 'SDP').split('\n')
        result = cls()
        seen = set()
        for line in source:
            line = _check_str(line, 'SDP line').rstrip('\r\n')
            if not line.startswith('a='):
                continue
            name, value = parse_attribute(line)
            key = name.lower()
            if key in _SINGLE:
                if key in seen:
                    raise SDPError('a=%s given twice' % key)
                seen.add(key)
                if value is None:
                    raise SDPError('a=%s needs a value' % key)
                setattr(result, _SINGLE[key][0], _SINGLE[key][1](value))
            elif key == 'fingerprint' and value is not None:
                algorithm, digest, supported = _split_fingerprint(value)
                if supported:
                    result.fingerprints.append(_fingerprint_text(algorithm, digest))
                else:
                    result.other.setdefault(name, []).append(value)
            elif key in DIRECTIONS and value is None:
                if result.direction is not None:
                    raise SDPError('two direction attributes: a=%s and a=%s' % (result.direction, key))
                result.direction = key
            else:
                result.other.setdefault(name, []).append(value)
        return result

    def __eq__(self, other):
        if not isinstance(other, MSRPMediaAttributes):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None

    def __repr__(self):
        return '<%s %r>' % (type(self).__name__, self.to_lines())
