"""Tests for msrplib.digest (HTTP Digest for RFC 4976 AUTH)."""

import hashlib

import pytest
from hypothesis import given, strategies as st

from msrplib import digest
from msrplib.digest import (
    DigestError, check_authorization, check_rspauth, compute_response,
    compute_rspauth, make_authentication_info, make_authorization,
    make_challenge, parse_authentication_info, parse_authorization,
    parse_challenge)


# RFC 2617 section 3.5
RFC2617_CHALLENGE = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                     'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                     'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
# RFC 7616 section 3.9.1 (the MD5 challenge; note "Circle of Life" here)
RFC7616_CHALLENGE = ('Digest realm="http-auth@example.org", '
                     'qop="auth, auth-int", algorithm=MD5, '
                     'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                     'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
# What Kamailio 5.6.3 sends (test/relay/NOTES.md): no opaque, no algorithm
KAMAILIO_CHALLENGE = ('Digest realm="relay.test", '
                      'nonce="awXp+2sF6M/DonTW0+0E8c0hm3DGSHvF", qop="auth"')
RELAY_URI = 'msrp://127.0.0.1:2855;tcp'


def test_rfc2617_example():
    assert compute_response(
        'Mufasa', 'Circle Of Life', 'testrealm@host.com',
        'dcd98b7102dd2f0e8b11d0f600bfb0c093', 'GET', '/dir/index.html',
        qop='auth', nc='00000001', cnonce='0a4f113b') == \
        '6629fae49393a05397450978507c4ef1'


def test_rfc7616_md5_example():
    assert compute_response(
        'Mufasa', 'Circle of Life', 'http-auth@example.org',
        '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', 'GET',
        '/dir/index.html', qop='auth', nc=1,
        cnonce='f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ') == \
        '8ca523f5e9506fed4657c9700eebdbec'


def test_rfc2617_example_through_make_authorization():
    challenge = parse_challenge(RFC2617_CHALLENGE)
    auth = make_authorization(challenge, 'Mufasa', 'Circle Of Life', 'GET',
                              '/dir/index.html', nc=1, cnonce='0a4f113b')
    assert auth.response == '6629fae49393a05397450978507c4ef1'
    assert auth == (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", algorithm=MD5, '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    assert isinstance(auth, str)


def test_rfc7616_example_through_make_authorization():
    challenge = parse_challenge(RFC7616_CHALLENGE)
    auth = make_authorization(
        challenge, 'Mufasa', 'Circle of Life', 'GET', '/dir/index.html',
        cnonce='f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ')
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in auth
    assert auth.endswith(
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')


def test_response_formula():
    ha1 = hashlib.md5(b'alice:relay.test:secret').hexdigest()
    ha2 = hashlib.md5(('AUTH:' + RELAY_URI).encode()).hexdigest()
    expected = hashlib.md5(('%s:n:0000000a:c:auth:%s' % (ha1, ha2))
                           .encode()).hexdigest()
    assert compute_response('alice', 'secret', 'relay.test', 'n', 'AUTH',
                            RELAY_URI, nc=10, cnonce='c') == expected


def test_rspauth_uses_empty_method():
    args = ('alice', 'secret', 'relay.test', 'n')
    assert compute_rspauth(*args, RELAY_URI, nc=1, cnonce='c') == \
        compute_response(*args, '', RELAY_URI, nc=1, cnonce='c')
    assert compute_rspauth(*args, RELAY_URI, nc=1, cnonce='c') != \
        compute_response(*args, 'AUTH', RELAY_URI, nc=1, cnonce='c')


# -- parse_challenge ----------------------------------------------------------

def test_parse_kamailio_challenge():
    assert parse_challenge(KAMAILIO_CHALLENGE) == {
        'realm': 'relay.test', 'nonce': 'awXp+2sF6M/DonTW0+0E8c0hm3DGSHvF',
        'qop': 'auth'}


def test_parse_challenge_quoting_and_case():
    c = parse_challenge('  dIgEsT  REALM = "a, \\"b\\"" ,NONCE=to.k~en,, '
                        'Qop="auth-int, auth" ,stale=TRUE  ')
    assert c == {'realm': 'a, "b"', 'nonce': 'to.k~en',
                 'qop': 'auth-int, auth', 'stale': 'TRUE'}


def test_parse_challenge_tabs_and_empty_quoted_value():
    c = parse_challenge('Digest\trealm="",\tnonce="n"')
    assert c == {'realm': '', 'nonce': 'n'}


@pytest.mark.parametrize('value', [
    '', 'Digest', 'Digest ', 'Basic realm="x"', 'Digestrealm="x", nonce="n"',
    'Digest realm="x"',                      # no nonce
    'Digest nonce="n"',                      # no realm
    'Digest realm="x", nonce="n',            # unterminated
    'Digest realm="x" nonce="n"',            # missing comma
    'Digest realm=, nonce="n"',              # empty token value
    'Digest realm, nonce="n"',               # no value
    'Digest realm="x", nonce="n", realm="y"',  # duplicate
    'Digest realm="x", nonce="n", ="v"',     # no name
    'Digest realm="x\r\n", nonce="n"',       # line break in quoted string
    'Digest realm="x", nonce="n\\',          # dangling escape
    'Digest realm="x", nonce=n@n',           # junk after token
])
def test_parse_challenge_rejects(value):
    with pytest.raises(DigestError):
        parse_challenge(value)


def test_parse_challenge_rejects_non_str():
    with pytest.raises(DigestError):
        parse_challenge(b'Digest realm="x", nonce="n"')


def test_digest_error_is_value_error():
    assert issubclass(DigestError, ValueError)


# -- make_authorization -------------------------------------------------------

def test_make_authorization_kamailio_shape():
    auth = make_authorization(parse_challenge(KAMAILIO_CHALLENGE), 'alice',
                              'secret', 'AUTH', RELAY_URI, cnonce='abc')
    assert auth == (
        'Digest username="alice", realm="relay.test", '
        'nonce="awXp+2sF6M/DonTW0+0E8c0hm3DGSHvF", '
        'uri="msrp://127.0.0.1:2855;tcp", response="%s", qop=auth, '
        'nc=00000001, cnonce="abc", algorithm=MD5' % auth.response)
    assert 'opaque' not in auth
    assert (auth.nc, auth.cnonce, auth.qop) == ('00000001', 'abc', 'auth')


def test_make_authorization_generates_cnonce_and_nc():
    challenge = parse_challenge(KAMAILIO_CHALLENGE)
    a1 = make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI)
    a2 = make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI,
                            nc=2)
    assert len(a1.cnonce) == 32 and a1.cnonce != a2.cnonce
    assert a2.nc == '00000002' and 'nc=00000002' in a2


def test_make_authorization_escapes_quotes():
    challenge = {'realm': 'r"x', 'nonce': 'n', 'qop': 'auth'}
    auth = make_authorization(challenge, 'a\\b"c', 'p', 'AUTH', RELAY_URI,
                              cnonce='c')
    assert 'username="a\\\\b\\"c"' in auth and 'realm="r\\"x"' in auth
    parsed = parse_authorization(auth)
    assert parsed['username'] == 'a\\b"c' and parsed['realm'] == 'r"x'
    assert check_authorization(parsed, 'p', 'AUTH')


@pytest.mark.parametrize('algorithm', ['MD5-sess', 'SHA-256', 'SHA-512-256',
                                       'md4'])
def test_make_authorization_refuses_other_algorithms(algorithm):
    challenge = parse_challenge(KAMAILIO_CHALLENGE + ', algorithm=' + algorithm)
    with pytest.raises(DigestError, match='algorithm'):
        make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI)


def test_make_authorization_accepts_md5_any_case():
    challenge = parse_challenge(KAMAILIO_CHALLENGE + ', algorithm="md5"')
    assert 'algorithm=MD5' in make_authorization(challenge, 'alice', 'secret',
                                                 'AUTH', RELAY_URI)


@pytest.mark.parametrize('qop', ['"auth-int"', 'auth-conf', '"authx"', '""'])
def test_make_authorization_refuses_qop_without_auth(qop):
    challenge = parse_challenge('Digest realm="r", nonce="n", qop=' + qop)
    with pytest.raises(DigestError, match='qop'):
        make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI)


def test_make_authorization_refuses_missing_qop():
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    with pytest.raises(DigestError, match='qop'):
        make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI)


@pytest.mark.parametrize('bad', [
    {'nonce': 'n', 'qop': 'auth'},
    {'realm': 'r', 'qop': 'auth'},
    'Digest realm="r", nonce="n", qop="auth"',
])
def test_make_authorization_refuses_bad_challenge(bad):
    with pytest.raises(DigestError):
        make_authorization(bad, 'alice', 'secret', 'AUTH', RELAY_URI)


@pytest.mark.parametrize('nc', [0, -1, 2 ** 32, '1', '0000000g', True, 1.0])
def test_make_authorization_refuses_bad_nc(nc):
    with pytest.raises(DigestError):
        make_authorization(parse_challenge(KAMAILIO_CHALLENGE), 'alice',
                           'secret', 'AUTH', RELAY_URI, nc=nc)


def test_make_authorization_refuses_header_injection():
    with pytest.raises(DigestError):
        make_authorization(parse_challenge(KAMAILIO_CHALLENGE),
                           'alice\r\nX: y', 'secret', 'AUTH', RELAY_URI)


def test_compute_response_refuses():
    args = ('u', 'p', 'r', 'n', 'AUTH', RELAY_URI)
    with pytest.raises(DigestError):
        compute_response(*args, qop='auth-int', cnonce='c')
    with pytest.raises(DigestError):
        compute_response(*args, qop=None, cnonce='c')
    with pytest.raises(DigestError):
        compute_response(*args, cnonce=None)
    with pytest.raises(DigestError):
        compute_response(*args, cnonce='c', algorithm='MD5-sess')


# -- round trips and rspauth ----------------------------------------------------

@pytest.mark.parametrize('opaque', [None, 'op"aque, with comma'])
def test_round_trip(opaque):
    challenge_value = make_challenge('relay.test', opaque=opaque)
    challenge = parse_challenge(challenge_value)
    assert ('opaque' in challenge) == (opaque is not None)
    auth = make_authorization(challenge, 'alice', 'secret', 'AUTH', RELAY_URI)
    assert ('opaque=' in auth) == (opaque is not None)
    params = parse_authorization(auth)
    assert params.get('opaque') == opaque
    assert check_authorization(params, 'secret', 'AUTH', realm='relay.test',
                               nonce=challenge['nonce'])
    assert not check_authorization(params, 'wrong', 'AUTH')
    assert not check_authorization(params, 'secret', 'SEND')
    assert not check_authorization(params, 'secret', 'AUTH', realm='other')
    assert not check_authorization(params, 'secret', 'AUTH', nonce='other')
    info = make_authentication_info(params, 'secret')
    assert auth.check_rspauth(info, 'secret') is True
    assert auth.check_rspauth(parse_authentication_info(info), 'secret')
    assert auth.check_rspauth(info, 'wrong') is False


def test_parse_authentication_info():
    assert parse_authentication_info(
        'rspauth="abc", qop=auth, nc=00000001, cnonce="c", nextnonce="x"') == {
        'rspauth': 'abc', 'qop': 'auth', 'nc': '00000001', 'cnonce': 'c',
        'nextnonce': 'x'}
    for bad in ('', 'rspauth', 'rspauth="x" qop=auth', 'Digest rspauth="x"'):
        with pytest.raises(DigestError):
            parse_authentication_info(bad)


def test_check_rspauth_errors():
    args = ('alice', 'secret', 'relay.test', 'n', RELAY_URI, 1, 'c')
    good = compute_rspauth('alice', 'secret', 'relay.test', 'n', RELAY_URI,
                           nc=1, cnonce='c')
    assert check_rspauth('rspauth="%s"' % good, *args)
    assert check_rspauth('rspauth="%s"' % good.upper(), *args)
    with pytest.raises(DigestError):
        check_rspauth('qop=auth', *args)
    with pytest.raises(DigestError):
        check_rspauth('rspauth="%s", cnonce="other"' % good, *args)
    with pytest.raises(DigestError):
        check_rspauth('rspauth="%s", nc=00000002' % good, *args)
    with pytest.raises(DigestError):
        check_rspauth('rspauth="%s", qop=auth-int' % good, *args)


def test_check_authorization_refuses_non_auth_qop():
    params = parse_authorization(
        'Digest username="u", realm="r", nonce="n", uri="x", response="r"')
    with pytest.raises(DigestError):
        check_authorization(params, 'p', 'AUTH')


def test_parse_authorization_requires_fields():
    with pytest.raises(DigestError):
        parse_authorization('Digest username="u", realm="r", nonce="n"')


def test_public_names_documented():
    for name in digest.__all__:
        assert getattr(digest, name).__doc__, name


_text = st.text(st.characters(blacklist_categories=('Cs',),
                              blacklist_characters='\r\n\0'), max_size=20)


@given(username=_text, password=_text, realm=_text, nonce=_text,
       opaque=st.one_of(st.none(), _text), nc=st.integers(1, 2 ** 32 - 1))
def test_round_trip_property(username, password, realm, nonce, opaque, nc):
    challenge = parse_challenge(make_challenge(realm, nonce=nonce,
                                               opaque=opaque))
    assert challenge['realm'] == realm and challenge['nonce'] == nonce
    auth = make_authorization(challenge, username, password, 'AUTH',
                              RELAY_URI, nc=nc)
    params = parse_authorization(auth)
    assert params['username'] == username
    assert check_authorization(params, password, 'AUTH')
    assert auth.check_rspauth(make_authentication_info(params, password),
                              password)
