"""HTTP Digest authentication for MSRP relay AUTH (RFC 4976 section 5).

An MSRP client reserves a session at its relay with an AUTH request.  The
relay answers ``401`` with a ``WWW-Authenticate: Digest ...`` challenge; the
client repeats the AUTH (new transaction id) with an ``Authorization``
header computed here.  Only what RFC 4976 needs is implemented, exactly as
RFC 2617 section 3.2 / RFC 7616 section 3.4 define it:

* algorithm ``MD5`` (an absent ``algorithm`` parameter means MD5);
  ``MD5-sess``, ``SHA-256`` and the rest are refused;
* ``qop=auth``; a challenge whose qop list lacks ``auth`` (including one
  with no qop at all, the RFC 2069 form) is refused;
* ``opaque`` is echoed when the challenge has one (Kamailio sends none).

The digest::

    HA1      = MD5(username ":" realm ":" password)
    HA2      = MD5(method ":" digest-uri)          (method "" for rspauth)
    response = MD5(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)

All strings are hashed as UTF-8.  For MSRP, method is ``AUTH`` and the
digest-uri is the relay URI the AUTH was sent to (the To-Path URI).

Client side::

    challenge = parse_challenge(www_authenticate_value)
    auth = make_authorization(challenge, 'alice', 'secret', 'AUTH',
                              'msrps://relay.example.com:2855;tcp')
    headers['Authorization'] = auth            # auth is a str
    ...
    # optional: the relay proves it knows the password too
    auth.check_rspauth(authentication_info_value, 'secret')

Server side (for fake relays in tests): :func:`make_challenge`,
:func:`parse_authorization`, :func:`check_authorization`.

Errors are :class:`DigestError` (an MSRPError and a ValueError).
"""

import hashlib
import hmac
import os
import re

from msrplib import MSRPError

__all__ = [
    'DigestError', 'Authorization',
    'parse_challenge', 'parse_authorization', 'parse_authentication_info',
    'compute_response', 'compute_rspauth',
    'make_authorization', 'make_challenge', 'make_authentication_info',
    'check_rspauth', 'check_authorization', 'generate_cnonce',
]


class DigestError(MSRPError, ValueError):
    """A Digest header could not be parsed, or a challenge cannot be
    answered (unsupported algorithm or qop, missing parameters), or the
    inputs to a computation are invalid."""


# RFC 7230 section 3.2.6 token characters
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = ' \t'
_NC_RE = re.compile(r'[0-9a-fA-F]{8}\Z')

#: Parameters sent as quoted-string in Authorization (RFC 7616 section 3.4);
#: the others (algorithm, qop, nc) are tokens.
_QUOTED_AUTHORIZATION_PARAMS = ('username', 'realm', 'nonce', 'uri',
                                'response', 'cnonce', 'opaque')


# -- parsing --------------------------------------------------------------

def _skip_ws(text, pos):
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _read_token(text, pos):
    start = pos
    while pos < len(text) and text[pos] in _TCHARS:
        pos += 1
    return text[start:pos], pos


def _read_quoted(text, pos):
    # text[pos] == '"'; returns (unescaped value, position after closing quote)
    pos += 1
    out = []
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return ''.join(out), pos + 1
        if ch == '\\':
            if pos + 1 >= len(text):
                break
            out.append(text[pos + 1])
            pos += 2
            continue
        if ch in '\r\n':
            raise DigestError('line break inside a quoted string')
        out.append(ch)
        pos += 1
    raise DigestError('unterminated quoted string')


def _parse_params(text, pos=0):
    """Parse ``name=value *( "," name=value )`` from text[pos:] into a dict.

    Names are lower-cased; values are unquoted.  Empty list elements
    (``a=1,,b=2``) are tolerated as RFC 7230 section 7 asks.  Raises
    DigestError on anything else.
    """
    params = {}
    expect_param = True
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text):
            break
        if text[pos] == ',':
            pos += 1
            expect_param = True
            continue
        if not expect_param:
            raise DigestError('expected "," at %r' % text[pos:pos + 20])
        name, pos = _read_token(text, pos)
        if not name:
            raise DigestError('expected a parameter name at %r'
                              % text[pos:pos + 20])
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != '=':
            raise DigestError('parameter %r has no value' % name)
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
        else:
            value, pos = _read_token(text, pos)
            if not value:
                raise DigestError('parameter %r has an empty or invalid value'
                                  % name)
        key = name.lower()
        if key in params:
            raise DigestError('duplicate parameter %r' % name)
        params[key] = value
        expect_param = False
    return params


def _parse_scheme_params(value, what):
    if not isinstance(value, str):
        raise DigestError('%s must be a str, not %s'
                          % (what, type(value).__name__))
    text = value.strip(_WS + '\r\n')
    scheme, pos = _read_token(text, 0)
    if not scheme:
        raise DigestError('%s has no auth scheme: %r' % (what, value))
    if scheme.lower() != 'digest':
        raise DigestError('%s uses scheme %r, not Digest' % (what, scheme))
    if pos < len(text) and text[pos] not in _WS:
        raise DigestError('malformed %s: %r' % (what, value))
    params = _parse_params(text, pos)
    if not params:
        raise DigestError('%s has no parameters' % what)
    return params


def parse_challenge(value):
    """Parse a ``WWW-Authenticate`` value such as
    ``Digest realm="r", nonce="n", qop="auth", opaque="o"``.

    Returns a dict of the parameters with lower-cased names and unquoted
    values (``qop`` keeps its raw comma-separated form, e.g.
    ``"auth,auth-int"``).  The scheme name is case-insensitive; quoted
    values may contain commas and backslash escapes.

    Raises DigestError when the value is not a Digest challenge, is
    malformed, repeats a parameter or lacks ``realm`` or ``nonce``.
    """
    params = _parse_scheme_params(value, 'challenge')
    for required in ('realm', 'nonce'):
        if required not in params:
            raise DigestError('challenge has no %s parameter' % required)
    return params


def parse_authorization(value):
    """Parse an ``Authorization: Digest ...`` value (server side).

    Returns a dict like :func:`parse_challenge`.  Raises DigestError when
    malformed or when any of username, realm, nonce, uri, response is
    missing.
    """
    params = _parse_scheme_params(value, 'authorization')
    for required in ('username', 'realm', 'nonce', 'uri', 'response'):
        if required not in params:
            raise DigestError('authorization has no %s parameter' % required)
    return params


def parse_authentication_info(value):
    """Parse an ``Authentication-Info`` value (a bare parameter list such as
    ``rspauth="...", qop=auth, nc=00000001, cnonce="..."``; no scheme).

    Returns a dict with lower-cased names.  Raises DigestError when
    malformed or empty.
    """
    if not isinstance(value, str):
        raise DigestError('Authentication-Info must be a str, not %s'
                          % type(value).__name__)
    params = _parse_params(value.strip(_WS + '\r\n'))
    if not params:
        raise DigestError('empty Authentication-Info')
    return params


# -- computation ----------------------------------------------------------

def _md5_hex(*parts):
    return hashlib.md5(':'.join(parts).encode('utf-8')).hexdigest()


def _check_algorithm(algorithm):
    if algorithm is None:
        return 'MD5'
    if not isinstance(algorithm, str) or algorithm.upper() != 'MD5':
        raise DigestError('unsupported digest algorithm %r (only MD5)'
                          % (algorithm,))
    return 'MD5'


def _format_nc(nc):
    if isinstance(nc, bool):
        raise DigestError('invalid nonce count %r' % (nc,))
    if isinstance(nc, int):
        if not 0 < nc <= 0xffffffff:
            raise DigestError('nonce count %d out of range' % nc)
        return '%08x' % nc
    if isinstance(nc, str) and _NC_RE.match(nc):
        return nc.lower()
    raise DigestError('invalid nonce count %r (int or 8 hex digits)' % (nc,))


def _check_text(name, value):
    if not isinstance(value, str):
        raise DigestError('%s must be a str, not %s'
                          % (name, type(value).__name__))
    if any(ch in value for ch in '\r\n\0'):
        raise DigestError('%s contains a line break or NUL' % name)
    return value


def compute_response(username, password, realm, nonce, method, uri,
                     qop='auth', nc='00000001', cnonce=None, algorithm='MD5'):
    """Return the 32-hex-digit ``response`` for qop=auth, algorithm MD5.

    `nc` is an int or an 8-hex-digit string; `cnonce` is required.
    Raises DigestError for another qop or algorithm, a missing cnonce or an
    invalid nc.
    """
    _check_algorithm(algorithm)
    if qop != 'auth':
        raise DigestError('unsupported qop %r (only auth)' % (qop,))
    if not cnonce:
        raise DigestError('qop=auth requires a cnonce')
    nc = _format_nc(nc)
    for name, value in (('username', username), ('password', password),
                        ('realm', realm), ('nonce', nonce),
                        ('method', method), ('uri', uri), ('cnonce', cnonce)):
        _check_text(name, value)
    ha1 = _md5_hex(username, realm, password)
    ha2 = _md5_hex(method, uri)
    return _md5_hex(ha1, nonce, nc, cnonce, qop, ha2)


def compute_rspauth(username, password, realm, nonce, uri, qop='auth',
                    nc='00000001', cnonce=None, algorithm='MD5'):
    """Return the ``rspauth`` a server puts in Authentication-Info.

    It is :func:`compute_response` with an empty method (RFC 2617 section
    3.2.3).  Raises DigestError like compute_response.
    """
    return compute_response(username, password, realm, nonce, '', uri,
                            qop=qop, nc=nc, cnonce=cnonce, algorithm=algorithm)


def generate_cnonce():
    """A fresh client nonce: 32 hex digits from os.urandom (128 bits)."""
    return os.urandom(16).hex()


def _quote(value):
    return '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')


def _qop_list(challenge):
    raw = challenge.get('qop')
    if raw is None:
        return []
    return [q.strip().lower() for q in raw.split(',') if q.strip()]


class Authorization(str):
    """The ``Authorization`` header value made by :func:`make_authorization`.

    It is a str (send it as is) that also remembers what went into it:
    ``username``, ``realm``, ``nonce``, ``uri``, ``qop``, ``nc`` (8 hex
    digits), ``cnonce``, ``response``, ``algorithm``, ``opaque`` (or None),
    needed to verify the server's ``rspauth``.
    """

    def check_rspauth(self, auth_info, password):
        """Check an Authentication-Info value (str or parsed dict) against
        these credentials; see :func:`check_rspauth`."""
        return check_rspauth(auth_info, self.username, password, self.realm,
                             self.nonce, self.uri, self.nc, self.cnonce,
                             qop=self.qop, algorithm=self.algorithm)


def make_authorization(challenge, username, password, method, uri, nc=1,
                       cnonce=None):
    """Answer a parsed challenge (the dict from :func:`parse_challenge`).

    Returns an :class:`Authorization` (a str) of the form::

        Digest username="..", realm="..", nonce="..", uri="..",
        response="..", qop=auth, nc=00000001, cnonce="..", algorithm=MD5
        [, opaque=".."]

    `nc` is the nonce count (int or 8 hex digits; use 1 for the first
    answer to a nonce and increase it when reusing the nonce); `cnonce`
    defaults to :func:`generate_cnonce`.

    Raises DigestError when the challenge lacks realm/nonce, names an
    algorithm other than MD5, offers no ``auth`` in its qop list (or no qop
    at all), or when an input contains a line break.
    """
    if not isinstance(challenge, dict):
        raise DigestError('challenge must be a dict from parse_challenge()')
    for required in ('realm', 'nonce'):
        if required not in challenge:
            raise DigestError('challenge has no %s parameter' % required)
    algorithm = _check_algorithm(challenge.get('algorithm'))
    qops = _qop_list(challenge)
    if 'auth' not in qops:
        if not qops:
            raise DigestError('challenge offers no qop; only qop=auth is '
                              'supported (RFC 2069 digest is not)')
        raise DigestError('challenge qop %r does not offer auth'
                          % challenge['qop'])
    if cnonce is None:
        cnonce = generate_cnonce()
    nc = _format_nc(nc)
    realm = challenge['realm']
    nonce = challenge['nonce']
    opaque = challenge.get('opaque')
    response = compute_response(username, password, realm, nonce, method, uri,
                                qop='auth', nc=nc, cnonce=cnonce,
                                algorithm=algorithm)
    values = {'username': username, 'realm': realm, 'nonce': nonce,
              'uri': uri, 'response': response, 'cnonce': cnonce}
    if opaque is not None:
        values['opaque'] = _check_text('opaque', opaque)
    parts = []
    for name in ('username', 'realm', 'nonce', 'uri', 'response'):
        parts.append('%s=%s' % (name, _quote(values[name])))
    parts.append('qop=auth')
    parts.append('nc=%s' % nc)
    parts.append('cnonce=%s' % _quote(cnonce))
    parts.append('algorithm=%s' % algorithm)
    if opaque is not None:
        parts.append('opaque=%s' % _quote(opaque))
    result = Authorization('Digest ' + ', '.join(parts))
    result.username = username
    result.realm = realm
    result.nonce = nonce
    result.uri = uri
    result.qop = 'auth'
    result.nc = nc
    result.cnonce = cnonce
    result.response = response
    result.algorithm = algorithm
    result.opaque = opaque
    return result


def check_rspauth(auth_info, username, password, realm, nonce, uri, nc,
                  cnonce, qop='auth', algorithm='MD5'):
    """Verify the ``rspauth`` of an Authentication-Info value.

    `auth_info` is the header value (str) or the dict from
    :func:`parse_authentication_info`; the other arguments are those of the
    Authorization that was sent.  Returns True when rspauth matches, False
    when it does not.  Raises DigestError when auth_info is malformed, has
    no rspauth, or echoes a cnonce, nc or qop different from ours.
    """
    info = (parse_authentication_info(auth_info)
            if isinstance(auth_info, str) else auth_info)
    if 'rspauth' not in info:
        raise DigestError('Authentication-Info has no rspauth')
    nc = _format_nc(nc)
    if 'cnonce' in info and info['cnonce'] != cnonce:
        raise DigestError('Authentication-Info cnonce does not match ours')
    if 'nc' in info and _format_nc(info['nc']) != nc:
        raise DigestError('Authentication-Info nc does not match ours')
    if 'qop' in info and info['qop'].lower() != qop:
        raise DigestError('Authentication-Info qop does not match ours')
    expected = compute_rspauth(username, password, realm, nonce, uri, qop=qop,
                               nc=nc, cnonce=cnonce, algorithm=algorithm)
    return hmac.compare_digest(expected, info['rspauth'].lower())


# -- server side (fake relays in tests) -------------------------------------

def make_challenge(realm, nonce=None, opaque=None, stale=False):
    """Build a ``WWW-Authenticate`` value offering qop=auth, algorithm MD5.

    `nonce` defaults to 32 random hex digits.  Raises DigestError when a
    value contains a line break.
    """
    if nonce is None:
        nonce = os.urandom(16).hex()
    parts = ['realm=%s' % _quote(_check_text('realm', realm)),
             'nonce=%s' % _quote(_check_text('nonce', nonce)),
             'qop="auth"', 'algorithm=MD5']
    if opaque is not None:
        parts.append('opaque=%s' % _quote(_check_text('opaque', opaque)))
    if stale:
        parts.append('stale=true')
    return 'Digest ' + ', '.join(parts)


def check_authorization(params, password, method, realm=None, nonce=None):
    """Verify a parsed Authorization (dict from :func:`parse_authorization`).

    Returns True when the response is right for `password` and `method` (and
    realm/nonce equal the given ones, when given), False otherwise.  Raises
    DigestError when the credentials are not qop=auth / MD5 or lack
    nc/cnonce.
    """
    if realm is not None and params.get('realm') != realm:
        return False
    if nonce is not None and params.get('nonce') != nonce:
        return False
    qop = params.get('qop', '').lower()
    if qop != 'auth':
        raise DigestError('credentials use qop %r, not auth' % (qop or None,))
    if 'nc' not in params or 'cnonce' not in params:
        raise DigestError('qop=auth credentials lack nc or cnonce')
    expected = compute_response(params['username'], password, params['realm'],
                                params['nonce'], method, params['uri'],
                                qop='auth', nc=params['nc'],
                                cnonce=params['cnonce'],
                                algorithm=params.get('algorithm'))
    return hmac.compare_digest(expected, params['response'].lower())


def make_authentication_info(params, password):
    """Build the ``Authentication-Info`` value answering a parsed, verified
    Authorization (``rspauth``, ``qop``, ``nc``, ``cnonce``).  Raises
    DigestError like :func:`compute_rspauth`."""
    rspauth = compute_rspauth(params['username'], password, params['realm'],
                              params['nonce'], params['uri'], qop='auth',
                              nc=params['nc'], cnonce=params['cnonce'],
                              algorithm=params.get('algorithm'))
    return 'rspauth=%s, qop=auth, nc=%s, cnonce=%s' % (
        _quote(rspauth), _format_nc(params['nc']), _quote(params['cnonce']))
