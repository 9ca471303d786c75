"""msrplib.protocol: URI and ConnectInfo (RFC 4975 §6, §9)."""

import pytest

from msrplib import MSRPError
from msrplib.protocol import URI, ConnectInfo, ParsingError, parse_uri


@pytest.mark.parametrize('text', [
    'msrp://example.com:2855/abcd;tcp',
    'msrps://example.com:2855/abcd;tcp',
    'msrp://alice@example.com:2855/s3ss10n;tcp',
    'msrp://192.0.2.1:1/x;tcp',
    'msrp://[2001:db8::1]:2855/abcd;tcp',
    'msrps://bob@[::1]:9/abcd;tcp',
    'msrp://[2001:db8::192.0.2.1]/abcd;tcp',
    'msrp://example.com/abcd;tcp',                      # no port
    'msrps://relay.example.com:2855;tcp',              # no session-id (a relay)
    'msrps://alice@intra.example.com;tcp',             # RFC 4976 AUTH To-Path
    'msrp://example.com:2855/abcd;tcp;foo=bar',
    'msrp://example.com:2855/abcd;tcp;flag',
    'msrp://example.com:2855/abcd;tcp;a=1;b;c=',
    'msrp://example.com:2855/a.b-c_d~e+f=g%20;tcp',      # every session-id character class
    'msrp://example.com:65535/abcd;tcp',
    'msrp://example.com:0/abcd;tcp',
    'msrp://example.com:2855/abcd;TCP',
    'msrp://example.com:2855/abcd;sctp',
])
def test_uri_parse_str_round_trip(text):
    uri = URI.parse(text)
    assert str(uri) == text
    assert URI.parse(str(uri)) == uri
    assert repr(uri) == "URI(%r)" % text


def test_uri_parse_fields():
    uri = URI.parse('msrps://alice@[2001:db8::1]:2855/iau39soe2843z;tcp;a=1;flag')
    assert uri.use_tls is True
    assert uri.scheme == 'msrps'
    assert uri.protocol_name == 'msrps'
    assert uri.user == 'alice'
    assert uri.host == '2001:db8::1'
    assert uri.port == 2855
    assert uri.session_id == 'iau39soe2843z'
    assert uri.transport == 'tcp'
    assert uri.parameters == {'a': '1', 'flag': None}
    assert uri.credentials is None


def test_uri_parse_minimal_fields():
    uri = URI.parse('msrp://relay.example.com;tcp')
    assert uri.use_tls is False
    assert uri.scheme == 'msrp'
    assert uri.user is None
    assert uri.port is None
    assert uri.session_id == ''
    assert uri.parameters == {}


def test_uri_parse_accepts_ascii_bytes():
    assert URI.parse(b'msrp://example.com:2855/abcd;tcp') == URI.parse('msrp://example.com:2855/abcd;tcp')


def test_uri_parse_scheme_is_case_insensitive():
    uri = URI.parse('MSRPS://example.com:2855/abcd;tcp')
    assert uri.use_tls is True
    assert str(uri) == 'msrps://example.com:2855/abcd;tcp'


def test_parse_uri_is_uri_parse():
    assert parse_uri('msrp://h:1/s;tcp') == URI('h', use_tls=False, port=1, session_id='s')


def test_uri_str_brackets_ipv6_host():
    assert str(URI('::1', use_tls=False, port=5, session_id='abc')) == 'msrp://[::1]:5/abc;tcp'


def test_uri_str_from_constructor():
    uri = URI('example.com', use_tls=True, user='bob', port=2855, session_id='xyz', transport='tcp',
              parameters={'p': 'v', 'q': None})
    assert str(uri) == 'msrps://bob@example.com:2855/xyz;tcp;p=v;q'


def test_uri_constructor_copies_parameters():
    parameters = {'a': '1'}
    uri = URI('h', parameters=parameters)
    parameters['b'] = '2'
    assert uri.parameters == {'a': '1'}


# -- defaults

def test_uri_defaults(monkeypatch):
    monkeypatch.setattr('msrplib.protocol._default_host', lambda: '198.51.100.7')
    uri = URI()
    assert uri.use_tls is True
    assert uri.host == '198.51.100.7'
    assert uri.port is None
    assert uri.user is None
    assert uri.transport == 'tcp'
    assert uri.parameters == {}
    assert uri.credentials is None


def test_uri_default_host_is_an_ipv4_address():
    host = URI().host
    parts = host.split('.')
    assert len(parts) == 4 and all(0 <= int(part) <= 255 for part in parts)


def test_uri_default_session_id_is_80_random_bits():
    ids = {URI('h').session_id for _ in range(50)}
    assert len(ids) == 50
    for session_id in ids:
        assert len(session_id) == 20
        int(session_id, 16)


def test_uri_empty_session_id_is_kept():
    uri = URI('relay.example.com', session_id='')
    assert uri.session_id == ''
    assert str(uri) == 'msrps://relay.example.com;tcp'


def test_uri_use_tls_false():
    assert URI('h', use_tls=False).scheme == 'msrp'
    assert URI('h', use_tls=0).use_tls is False


def test_connect_info_defaults(monkeypatch):
    monkeypatch.setattr('msrplib.protocol._default_host', lambda: '203.0.113.9')
    info = ConnectInfo()
    assert (info.host, info.use_tls, info.port, info.credentials) == ('203.0.113.9', True, None, None)
    assert info.scheme == 'msrps'


def test_connect_info_arguments():
    credentials = object()
    info = ConnectInfo('h.example', use_tls=False, port=7, credentials=credentials)
    assert (info.host, info.use_tls, info.port, info.credentials) == ('h.example', False, 7, credentials)
    assert info.scheme == 'msrp'
    assert 'h.example' in repr(info)


def test_uri_is_a_connect_info():
    assert isinstance(URI('h'), ConnectInfo)


# -- RFC 4975 §6.1 comparison

def test_uri_equality_host_is_case_insensitive():
    a = URI.parse('msrp://Example.COM:2855/abcd;tcp')
    b = URI.parse('msrp://example.com:2855/abcd;tcp')
    assert a == b
    assert hash(a) == hash(b)


def test_uri_equality_transport_is_case_insensitive():
    a = URI.parse('msrp://example.com:2855/abcd;TCP')
    b = URI.parse('msrp://example.com:2855/abcd;tcp')
    assert a == b
    assert hash(a) == hash(b)


def test_uri_equality_session_id_is_case_sensitive():
    assert URI.parse('msrp://example.com:2855/abcd;tcp') != URI.parse('msrp://example.com:2855/ABCD;tcp')


def test_uri_equality_scheme_matters():
    assert URI.parse('msrp://example.com:2855/abcd;tcp') != URI.parse('msrps://example.com:2855/abcd;tcp')


def test_uri_equality_port_matters():
    assert URI.parse('msrp://example.com:2855/abcd;tcp') != URI.parse('msrp://example.com:2856/abcd;tcp')
    # an explicit port never equals an absent one
    assert URI.parse('msrp://example.com:2855/abcd;tcp') != URI.parse('msrp://example.com/abcd;tcp')


def test_uri_equality_host_matters():
    assert URI.parse('msrp://a.example.com:2855/abcd;tcp') != URI.parse('msrp://b.example.com:2855/abcd;tcp')


def test_uri_equality_transport_matters():
    assert URI.parse('msrp://example.com:2855/abcd;tcp') != URI.parse('msrp://example.com:2855/abcd;sctp')


def test_uri_equality_ignores_user_and_parameters():
    a = URI.parse('msrp://alice@example.com:2855/abcd;tcp;x=1')
    b = URI.parse('msrp://example.com:2855/abcd;tcp')
    assert a == b
    assert hash(a) == hash(b)


def test_uri_usable_in_sets_and_dicts():
    uris = {URI.parse('msrp://EXAMPLE.com:1/a;tcp'), URI.parse('msrp://example.com:1/a;TCP')}
    assert len(uris) == 1
    assert {URI.parse('msrp://example.com:1/a;tcp'): 1}[URI.parse('msrp://Example.com:1/a;tcp')] == 1


def test_uri_compared_with_other_types():
    uri = URI.parse('msrp://example.com:1/a;tcp')
    assert uri != 'msrp://example.com:1/a;tcp'
    assert not (uri == None)  # noqa: E711
    assert uri != 1
    assert uri == uri
    assert not (uri != uri)


# -- malformed

@pytest.mark.parametrize('text', [
    'msrp://example.com:2855/abcd',            # missing transport
    'msrp://example.com:2855/abcd;',           # empty transport
    'msrp://example.com:99999/abcd;tcp',       # port out of range
    'msrp://example.com:123456/abcd;tcp',      # port too long
    'msrp://example.com:/abcd;tcp',            # empty port
    'msrp://example.com:28a5/abcd;tcp',        # non-numeric port
    'msrp://example.com:-1/abcd;tcp',
    'msrp://exa mple.com:2855/abcd;tcp',       # space in host
    'msrp://example.com:2855/ab cd;tcp',       # space in session-id
    ' msrp://example.com:2855/abcd;tcp',       # leading space
    'msrp://example.com:2855/abcd;tcp ',       # trailing space
    'msrp://example.com:2855/abcd;tcp\r\n',
    'msrp://example.com:2855/abcd;tcp;a=b c',  # space in a parameter
    'http://example.com:2855/abcd;tcp',        # wrong scheme
    'msrpx://example.com:2855/abcd;tcp',
    'msrp:/example.com:2855/abcd;tcp',
    'msrp//example.com:2855/abcd;tcp',
    'msrp://:2855/abcd;tcp',                   # no host
    'msrp://example.com:2855/;tcp',            # empty session-id
    'msrp://[2001:db8::1:2855/abcd;tcp',       # unclosed bracket
    'msrp://2001:db8::1/abcd;tcp',             # IPv6 without brackets
    'msrp://@example.com/abcd;tcp',            # empty user
    'msrp://example.com:2855/abcd;tcp;',       # empty parameter
    'msrp://example.com:2855/abcd;t;cp=;=x',   # parameter without name
    'msrp://example.com/abc#frag;tcp',
    'example.com:2855/abcd;tcp',
    '',
    'garbage',
    '\x00\x01\x02',
    'msrp://exämple.com:2855/abcd;tcp',        # non-ASCII text
])
def test_uri_parse_malformed_raises_parsing_error(text):
    with pytest.raises(ParsingError):
        URI.parse(text)


@pytest.mark.parametrize('value', [
    b'msrp://ex\xc3\xa4mple.com:2855/abcd;tcp',  # bytes that are not ASCII
    b'\xff\xfe',
    None,
    42,
    ['msrp://example.com:2855/abcd;tcp'],
])
def test_uri_parse_non_text_raises_parsing_error(value):
    with pytest.raises(ParsingError):
        URI.parse(value)


def test_parsing_error_is_an_msrp_error():
    with pytest.raises(MSRPError):
        URI.parse('nope')


# ---------------------------------------------------------------------------
# The cached text form and comparison key follow every change

def test_uri_str_and_key_follow_attribute_changes():
    uri = URI(host='a.example', port=1, session_id='s1', use_tls=False)
    assert str(uri) == 'msrp://a.example:1/s1;tcp'
    assert uri == URI(host='A.EXAMPLE', port=1, session_id='s1', use_tls=False)
    for name, value, text in [('port', 2, 'msrp://a.example:2/s1;tcp'),
                              ('host', 'b.example', 'msrp://b.example:2/s1;tcp'),
                              ('use_tls', True, 'msrps://b.example:2/s1;tcp'),
                              ('user', 'bob', 'msrps://bob@b.example:2/s1;tcp'),
                              ('session_id', 's2', 'msrps://bob@b.example:2/s2;tcp'),
                              ('transport', 'ws', 'msrps://bob@b.example:2/s2;ws')]:
        old = URI.parse(str(uri))
        setattr(uri, name, value)
        assert str(uri) == text, name
        assert uri == URI.parse(text) and hash(uri) == hash(URI.parse(text)), name
        if name != 'user':  # (user is not compared, RFC 4975 §6.1)
            assert uri != old, name


def test_uri_str_follows_parameters_changed_in_place():
    uri = URI(host='a.example', port=1, session_id='s1', use_tls=False)
    assert str(uri) == 'msrp://a.example:1/s1;tcp'
    uri.parameters['p'] = 'v'
    assert str(uri) == 'msrp://a.example:1/s1;tcp;p=v'
    uri.parameters['p'] = 'w'
    assert str(uri) == 'msrp://a.example:1/s1;tcp;p=w'
    del uri.parameters['p']
    assert str(uri) == 'msrp://a.example:1/s1;tcp'


def test_uri_copy_has_its_own_cache():
    import copy
    import pickle
    uri = URI(host='a.example', port=1, session_id='s1', use_tls=False)
    str(uri), hash(uri)
    other = copy.copy(uri)
    other.port = 5
    assert str(uri) == 'msrp://a.example:1/s1;tcp' and str(other) == 'msrp://a.example:5/s1;tcp'
    assert uri != other
    assert pickle.loads(pickle.dumps(uri)) == uri


# ---------------------------------------------------------------------------
# URI.parse_path: a whole path, as SDP a=path carries it or a person pastes it


@pytest.mark.parametrize('text', [
    'msrps://relay.example.com:2855/r1;tcp msrp://127.0.0.1:4000/abc;tcp',
    'path: msrps://relay.example.com:2855/r1;tcp msrp://127.0.0.1:4000/abc;tcp',
    'a=path:msrps://relay.example.com:2855/r1;tcp   msrp://127.0.0.1:4000/abc;tcp\r\n',
    'A=PATH: msrps://relay.example.com:2855/r1;tcp\tmsrp://127.0.0.1:4000/abc;tcp',
    b'msrps://relay.example.com:2855/r1;tcp msrp://127.0.0.1:4000/abc;tcp',
])
def test_parse_path_with_or_without_prefix(text):
    from msrplib.protocol import parse_path
    expected = [URI.parse('msrps://relay.example.com:2855/r1;tcp'), URI.parse('msrp://127.0.0.1:4000/abc;tcp')]
    assert URI.parse_path(text) == expected
    assert parse_path(text) == expected
    assert [str(uri) for uri in URI.parse_path(text)] == [str(uri) for uri in expected]


@pytest.mark.parametrize('text', ['', '   ', 'path:', 'a=path: ', 'msrp://127.0.0.1:4000/abc;tcp nonsense',
                                  'http://x/y;tcp', None, 42, b'msrp://\xff/a;tcp'])
def test_parse_path_refuses_bad_text_with_parsing_error(text):
    with pytest.raises(ParsingError):
        URI.parse_path(text)


def test_sdp_and_cli_use_the_same_path_parser():
    from msrplib import cli, sdp
    text = 'msrp://127.0.0.1:4000/abc;tcp'
    assert sdp.parse_path(text) == cli.parse_path('path: ' + text) == URI.parse_path(text)
    with pytest.raises(sdp.SDPError):
        sdp.parse_path('msrp://bad')
