"""msrplib.protocol: header classes, header types and value types."""

import pytest

from msrplib import MSRPError, protocol
from msrplib.protocol import (
    URI, ParsingError, HeaderParsingError, ByteRange, Status, ContentDisposition,
    MSRPHeader, MSRPNamedHeader, header_class, _make_header,
    ToPathHeader, FromPathHeader, MessageIDHeader, SuccessReportHeader, FailureReportHeader, ByteRangeHeader,
    StatusHeader, ExpiresHeader, MinExpiresHeader, MaxExpiresHeader, UsePathHeader, WWWAuthenticateHeader,
    AuthorizationHeader, AuthenticationInfoHeader, ContentTypeHeader, ContentIDHeader, ContentDescriptionHeader,
    ContentDispositionHeader, UseNicknameHeader)

NAMED = {
    'To-Path': ToPathHeader,
    'From-Path': FromPathHeader,
    'Message-ID': MessageIDHeader,
    'Success-Report': SuccessReportHeader,
    'Failure-Report': FailureReportHeader,
    'Byte-Range': ByteRangeHeader,
    'Status': StatusHeader,
    'Expires': ExpiresHeader,
    'Min-Expires': MinExpiresHeader,
    'Max-Expires': MaxExpiresHeader,
    'Use-Path': UsePathHeader,
    'WWW-Authenticate': WWWAuthenticateHeader,
    'Authorization': AuthorizationHeader,
    'Authentication-Info': AuthenticationInfoHeader,
    'Content-Type': ContentTypeHeader,
    'Content-ID': ContentIDHeader,
    'Content-Description': ContentDescriptionHeader,
    'Content-Disposition': ContentDispositionHeader,
    'Use-Nickname': UseNicknameHeader,
}

# a valid wire value and its decoded form, per header
VALID = {
    'To-Path': ('msrp://a.example.com:1/x;tcp msrps://b.example.com:2/y;tcp',
                [URI.parse('msrp://a.example.com:1/x;tcp'), URI.parse('msrps://b.example.com:2/y;tcp')]),
    'From-Path': ('msrp://a.example.com:1/x;tcp', [URI.parse('msrp://a.example.com:1/x;tcp')]),
    'Message-ID': ('87652491', '87652491'),
    'Success-Report': ('yes', 'yes'),
    'Failure-Report': ('partial', 'partial'),
    'Byte-Range': ('1-25/25', ByteRange(1, 25, 25)),
    'Status': ('000 200 OK', Status(200, 'OK')),
    'Expires': ('900', 900),
    'Min-Expires': ('60', 60),
    'Max-Expires': ('3600', 3600),
    'Use-Path': ('msrps://intra.example.com:9000/jui787s2f;tcp',
                 [URI.parse('msrps://intra.example.com:9000/jui787s2f;tcp')]),
    'WWW-Authenticate': ('Digest realm="intra.example.com", qop="auth", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"',
                         {'realm': 'intra.example.com', 'qop': 'auth', 'nonce': 'dcd98b7102dd2f0e8b11d0f600bfb0c093'}),
    'Authorization': ('Digest username="Alice", realm="intra.example.com", nc=00000001',
                      {'username': 'Alice', 'realm': 'intra.example.com', 'nc': '00000001'}),
    'Authentication-Info': ('rspauth="abc", nc=00000001', {'rspauth': 'abc', 'nc': '00000001'}),
    'Content-Type': ('text/plain', 'text/plain'),
    'Content-ID': ('<abc@example.com>', '<abc@example.com>'),
    'Content-Description': ('a picture of the cat \u00e9', 'a picture of the cat \u00e9'),
    'Content-Disposition': ('attachment; filename="cat.jpg"; size=1024',
                            ContentDisposition('attachment', {'filename': 'cat.jpg', 'size': '1024'})),
    'Use-Nickname': ('Alice \u2603', 'Alice \u2603'),
}


def test_every_named_header_has_a_valid_example():
    assert set(VALID) == set(NAMED)


@pytest.mark.parametrize('name', sorted(NAMED))
def test_msrp_header_gives_the_specialised_class(name):
    header = MSRPHeader(name, VALID[name][0])
    assert type(header) is NAMED[name]
    assert isinstance(header, MSRPNamedHeader)
    assert isinstance(header, MSRPHeader)
    assert header.name == name


@pytest.mark.parametrize('name', sorted(NAMED))
@pytest.mark.parametrize('spelling', [str.lower, str.upper, str.swapcase])
def test_msrp_header_name_is_case_insensitive(name, spelling):
    header = MSRPHeader(spelling(name), VALID[name][0])
    assert type(header) is NAMED[name]
    assert header.name == name  # normalised to the canonical spelling


@pytest.mark.parametrize('name', sorted(NAMED))
def test_header_class_lookup(name):
    assert header_class(name) is NAMED[name]
    assert header_class(name.upper()) is NAMED[name]


def test_header_class_unknown_is_none():
    assert header_class('X-Whatever') is None


@pytest.mark.parametrize('name', sorted(NAMED))
def test_named_header_built_directly_from_encoded(name):
    encoded, decoded = VALID[name]
    header = NAMED[name](encoded)
    assert header.name == name
    assert header.encoded == encoded
    assert header.decoded == decoded


@pytest.mark.parametrize('name', sorted(NAMED))
def test_named_header_built_directly_from_decoded(name):
    encoded, decoded = VALID[name]
    header = NAMED[name](decoded=decoded)
    assert header.decoded == decoded
    # the encoding may normalise quoting and spacing, but decodes back to the same value
    assert NAMED[name](header.encoded).decoded == decoded


@pytest.mark.parametrize('name', sorted(NAMED))
def test_named_header_value_given_positionally_in_decoded_form(name):
    # the classic API: XHeader(value) with a decoded (non-str) value
    encoded, decoded = VALID[name]
    header = NAMED[name](decoded)
    assert isinstance(header.encoded, str)
    assert header.decoded == decoded
    assert NAMED[name](header.encoded).decoded == decoded


def test_regression_header_with_decoded_value_given_positionally_encodes_as_text():
    uri = URI.parse('msrp://a.example.com:1/x;tcp')
    assert ToPathHeader([uri]).encoded == 'msrp://a.example.com:1/x;tcp'
    assert ExpiresHeader(300).encoded == '300'
    assert ByteRangeHeader(ByteRange(1, None, None)).encoded == '1-*/*'
    assert MSRPHeader('Expires', 5).encoded == '5'


def test_msrp_header_with_bytes_value():
    header = MSRPHeader('Message-ID', b'abc')
    assert header.encoded == 'abc'
    assert header.decoded == 'abc'


@pytest.mark.parametrize('name', sorted(NAMED))
def test_make_header_matches_msrp_header(name):
    encoded = VALID[name][0]
    for spelling in (name, name.lower()):
        header = _make_header(spelling, encoded)
        assert type(header) is NAMED[name]
        assert header.name == name
        assert header.encoded == encoded
        assert header == MSRPHeader(spelling, encoded)


def test_make_header_unknown():
    header = _make_header('X-Foo', 'bar baz')
    assert type(header) is MSRPHeader
    assert header.name == 'X-Foo'
    assert header.encoded == header.decoded == 'bar baz'


def test_generic_header_for_unknown_name():
    header = MSRPHeader('X-Custom-Thing', 'some value')
    assert type(header) is MSRPHeader
    assert header.name == 'X-Custom-Thing'
    assert header.encoded == 'some value'
    assert header.decoded == 'some value'


def test_header_needs_a_value():
    with pytest.raises(TypeError):
        MSRPHeader('X-Foo')
    with pytest.raises(TypeError):
        ToPathHeader()


def test_header_lazy_decode_happens_once():
    header = ByteRangeHeader('1-10/20')
    assert header._decoded is protocol._UNSET
    first = header.decoded
    assert first == ByteRange(1, 10, 20)
    assert header.decoded is first


def test_header_lazy_encode():
    header = StatusHeader(decoded=Status(413, 'Stop it'))
    assert header._encoded is None
    assert header.encoded == '000 413 Stop it'


def test_header_setters_invalidate_the_other_form():
    header = ExpiresHeader('10')
    assert header.decoded == 10
    header.encoded = '20'
    assert header.decoded == 20
    header.decoded = 30
    assert header.encoded == '30'


def test_header_equality():
    assert MSRPHeader('x-foo', 'a') == MSRPHeader('X-Foo', 'a')
    assert MSRPHeader('X-Foo', 'a') != MSRPHeader('X-Foo', 'b')
    assert ExpiresHeader(decoded=5) == ExpiresHeader('5')
    assert MSRPHeader('X-Foo', 'a') != 'a'
    with pytest.raises(TypeError):
        hash(MSRPHeader('X-Foo', 'a'))


def test_header_repr():
    assert repr(ExpiresHeader('5')) == "ExpiresHeader('5')"


# -- bad values

BAD = [
    ('To-Path', ''),
    ('To-Path', 'not-a-uri'),
    ('To-Path', 'msrp://a.example.com:1/x;tcp http://b.example.com/'),
    ('To-Path', 'msrp://a.example.com:1/x'),
    ('From-Path', 'msrp://a.example.com:99999/x;tcp'),
    ('Use-Path', 'msrps://intra.example.com:9000/jui787s2f'),
    ('Success-Report', 'maybe'),
    ('Success-Report', 'partial'),
    ('Success-Report', 'YES'),
    ('Failure-Report', 'sometimes'),
    ('Failure-Report', ''),
    ('Byte-Range', '10-5/20'),        # end < start
    ('Byte-Range', '0-5/20'),         # start 0
    ('Byte-Range', '1-20/10'),        # total < end
    ('Byte-Range', '5-*/3'),          # total < start - 1
    ('Byte-Range', 'a-b/c'),          # non-numeric
    ('Byte-Range', '1-2'),
    ('Byte-Range', '1/2'),
    ('Byte-Range', ''),
    ('Byte-Range', '-1-2/3'),
    ('Byte-Range', '1-2/3/4'),
    ('Byte-Range', '*-2/3'),
    ('Byte-Range', '1 - 2 / 3'),
    ('Byte-Range', '\u0661-\u0662/\u0663'),  # non-ASCII digits
    ('Byte-Range', '1-2/9999999999999999999999'),
    ('Status', '200 OK'),             # no namespace
    ('Status', '001 200 OK'),         # bad namespace
    ('Status', '000 20 OK'),
    ('Status', '000 abc'),
    ('Status', ''),
    ('Expires', '-5'),
    ('Expires', 'soon'),
    ('Expires', ''),
    ('Expires', '1.5'),
    ('Min-Expires', '99999999999999999999'),
    ('Max-Expires', '\u0663'),
    ('WWW-Authenticate', 'Basic realm="x"'),
    ('WWW-Authenticate', 'Digest realm="x" nonce="y"'),
    ('Authorization', 'Digest username="unterminated'),
    ('Authentication-Info', 'a=b c=d'),
    ('Content-Disposition', '; filename=x'),
    ('Content-Disposition', 'attachment; filename="x'),
]


@pytest.mark.parametrize('name,value', BAD)
def test_bad_value_raises_header_parsing_error(name, value):
    header = MSRPHeader(name, value)
    with pytest.raises(HeaderParsingError) as info:
        header.decoded
    assert info.value.header == name
    assert isinstance(info.value.reason, str) and info.value.reason
    assert isinstance(info.value, ParsingError)
    assert isinstance(info.value, MSRPError)
    assert name in str(info.value)


@pytest.mark.parametrize('name', sorted(n for n in NAMED if n not in ('Content-Type', 'Content-ID')) + ['Message-ID'])
def test_non_utf8_text_is_refused_when_decoded(name):
    # the parser keeps undecodable bytes as lone surrogates; a typed header refuses them
    text = b'caf\xe9'.decode('utf-8', 'surrogateescape')
    header = MSRPHeader(name, text)
    assert header.encoded == text
    with pytest.raises(HeaderParsingError):
        header.decoded


def test_non_utf8_text_round_trips_through_encoded():
    text = b'\xff\xfe'.decode('utf-8', 'surrogateescape')
    header = MSRPHeader('X-Foo', text)
    assert header.encoded.encode('utf-8', 'surrogateescape') == b'\xff\xfe'


def test_header_parsing_error_attributes():
    error = HeaderParsingError('Byte-Range', 'end before start')
    assert error.header == 'Byte-Range'
    assert error.reason == 'end before start'
    assert 'Byte-Range' in str(error) and 'end before start' in str(error)


# -- value types and header types

@pytest.mark.parametrize('text,value', [
    ('1-25/25', ByteRange(1, 25, 25)),
    ('1-*/*', ByteRange(1, None, None)),
    ('1-*/100', ByteRange(1, None, 100)),
    ('101-200/*', ByteRange(101, 200, None)),
    ('1-0/0', ByteRange(1, 0, 0)),  # an empty chunk
    ('5-4/4', ByteRange(5, 4, 4)),
    ('00001-00002/00003', ByteRange(1, 2, 3)),
])
def test_byte_range_values(text, value):
    assert ByteRangeHeader(text).decoded == value


def test_byte_range_encode():
    assert ByteRangeHeader(decoded=ByteRange(1, None, None)).encoded == '1-*/*'
    assert ByteRangeHeader(decoded=ByteRange(3, 4, None)).encoded == '3-4/*'
    assert ByteRangeHeader(decoded=ByteRange(3, 4, 10)).encoded == '3-4/10'


def test_value_types_fields():
    assert ByteRange(1, 2, 3)._fields == ('start', 'end', 'total')
    assert Status(200, None)._fields == ('code', 'comment')
    assert ContentDisposition('inline', {})._fields == ('disposition', 'parameters')
    assert ByteRange(1, 2, 3).end == 2
    assert Status(200, 'OK').comment == 'OK'


@pytest.mark.parametrize('text,value', [
    ('000 200', Status(200, None)),
    ('000 200 OK', Status(200, 'OK')),
    ('000 413 Stop sending, please', Status(413, 'Stop sending, please')),
])
def test_status_values(text, value):
    assert StatusHeader(text).decoded == value
    assert StatusHeader(decoded=value).encoded == text


def test_digest_header_encode_quotes_as_needed():
    encoded = AuthorizationHeader(decoded={'username': 'Alice', 'qop': 'auth', 'nc': '00000001',
                                           'realm': 'a "quoted" realm'}).encoded
    assert encoded.startswith('Digest ')
    assert 'qop=auth' in encoded and 'nc=00000001' in encoded and 'username="Alice"' in encoded
    assert AuthorizationHeader(encoded).decoded['realm'] == 'a "quoted" realm'


def test_digest_parameter_names_are_lower_cased():
    assert WWWAuthenticateHeader('digest Realm="r", NONCE="n"').decoded == {'realm': 'r', 'nonce': 'n'}


def test_content_disposition_values():
    value = ContentDispositionHeader('render').decoded
    assert value == ContentDisposition('render', {})
    value = ContentDispositionHeader('attachment; filename="my file.txt"').decoded
    assert value.parameters == {'filename': 'my file.txt'}
    encoded = ContentDispositionHeader(decoded=value).encoded
    assert encoded == 'attachment; filename="my file.txt"'


def test_header_type_classes_are_importable():
    for name in ('SimpleHeaderType', 'UTF8HeaderType', 'URIHeaderType', 'IntegerHeaderType',
                 'LimitedChoiceHeaderType', 'SuccessReportHeaderType', 'FailureReportHeaderType',
                 'ByteRangeHeaderType', 'StatusHeaderType', 'ContentDispositionHeaderType',
                 'ParameterListHeaderType', 'DigestHeaderType'):
        cls = getattr(protocol, name)
        assert callable(cls.decode) and callable(cls.encode)
        assert name in protocol.__all__


def test_header_types_decode_raise_value_error():
    with pytest.raises(ValueError):
        protocol.IntegerHeaderType.decode('x')
    with pytest.raises(ValueError):
        protocol.SuccessReportHeaderType.decode('x')
    assert protocol.FailureReportHeaderType.available_values == ('yes', 'no', 'partial')
    assert protocol.SuccessReportHeaderType.available_values == ('yes', 'no')


def test_every_public_name_exists():
    for name in protocol.__all__:
        assert hasattr(protocol, name), name


def test_compatibility_names_importable():
    from msrplib.protocol import (URI, ContentTypeHeader, SuccessReportHeader, FailureReportHeader,  # noqa: F401
                                  UseNicknameHeader, IntegerHeaderType, MSRPNamedHeader, HeaderParsingError)


def test_custom_named_header_subclass():
    # how applications (e.g. sipsimple) declare their own headers
    class XCountHeader(MSRPNamedHeader):
        name = 'X-Count'
        type = protocol.IntegerHeaderType

    header = XCountHeader('12')
    assert header.name == 'X-Count'
    assert header.decoded == 12
    assert XCountHeader(decoded=3).encoded == '3'


# -- URIs per path header

def test_a_path_of_more_than_max_uris_does_not_decode(monkeypatch):
    text = ' '.join('msrp://a/%d;tcp' % i for i in range(33))
    assert len(protocol.ToPathHeader(' '.join(text.split()[:32])).decoded) == 32
    with pytest.raises(protocol.HeaderParsingError) as raised:
        protocol.FromPathHeader(text).decoded
    assert raised.value.header == 'From-Path' and '33 URIs' in str(raised.value)
    monkeypatch.setattr(protocol.URIHeaderType, 'max_uris', 40)  # a documented class attribute
    assert len(protocol.UsePathHeader(text).decoded) == 33
