"""Tests of msrplib.sdp: the SDP attributes of MSRP media (RFC 4975, 4145/6135, 8122, 5547)."""

import datetime
import hashlib
import io
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from msrplib import MSRPError
from msrplib.protocol import URI, ParsingError
from msrplib import sdp
from msrplib.sdp import (FileHash, FileRange, FileSelector, MSRPMediaAttributes, SDPError,
                         format_accept_types, format_attribute, format_file_date, format_file_range,
                         format_fingerprint, format_max_size, format_path, format_setup, media_line,
                         new_file_transfer_id, parse_accept_types, parse_attribute, parse_file_date,
                         parse_file_range, parse_fingerprint, parse_max_size, parse_media_line, parse_path,
                         parse_setup)

SHA1_HEX = '72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E'

# RFC 4975 §7.1 style offer of a chat session, with the relay path of RFC 4976.
CHAT_OFFER = (
    'v=0\r\n'
    'o=alice 2890844526 2890844527 IN IP4 alice.example.com\r\n'
    's= \r\n'
    'c=IN IP4 alice.example.com\r\n'
    't=0 0\r\n'
    'm=message 7394 TCP/TLS/MSRP *\r\n'
    'a=accept-types:message/cpim text/plain text/html\r\n'
    'a=accept-wrapped-types:*\r\n'
    'a=max-size:131072\r\n'
    'a=path:msrps://relay.example.com:2855/asfd34;tcp msrps://alice.example.com:7394/2s93i93idd;tcp\r\n'
)

# The offer of RFC 5547 §9 in which Alice sends a picture to Bob (the RFC
# folds the file-selector line for print; on the wire it is one line).
FILE_OFFER = (
    'v=0\r\n'
    'o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n'
    's=\r\n'
    'c=IN IP4 host.atlanta.example.com\r\n'
    't=0 0\r\n'
    'm=message 7654 TCP/MSRP *\r\n'
    'i=This is my latest picture\r\n'
    'a=sendonly\r\n'
    'a=accept-types:message/cpim\r\n'
    'a=accept-wrapped-types:*\r\n'
    'a=path:msrp://atlanta.example.com:7654/jshA7we;tcp\r\n'
    'a=file-selector:name:"My cool picture.jpg" type:image/jpeg size:32349 hash:sha-1:' + SHA1_HEX + '\r\n'
    'a=file-transfer-id:vBnG916bdberum2fFEABR1FR3ExZMUrd\r\n'
    'a=file-disposition:render\r\n'
    'a=file-date:creation:"Mon, 15 May 2006 15:01:31 +0300"\r\n'
    'a=file-icon:cid:id2@alicepc.example.com\r\n'
    'a=file-range:1-32349\r\n'
)


# ---------------------------------------------------------------------------
# errors

def test_sdperror_is_a_parsing_error_an_msrp_error_and_a_value_error():
    assert issubclass(SDPError, ParsingError)
    assert issubclass(SDPError, MSRPError)
    assert issubclass(SDPError, ValueError)


def test_module_does_not_import_gevent():
    code = 'import sys, msrplib.sdp; print(any(m.startswith("gevent") for m in sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False'


# ---------------------------------------------------------------------------
# attribute and media lines

def test_attribute_lines():
    assert format_attribute('max-size', 10) == 'a=max-size:10'
    assert format_attribute('sendonly') == 'a=sendonly'
    assert parse_attribute('a=max-size:10\r\n') == ('max-size', '10')
    assert parse_attribute('a=sendonly') == ('sendonly', None)
    assert parse_attribute('a=x:') == ('x', '')
    assert parse_attribute('a=file-icon:cid:x@y') == ('file-icon', 'cid:x@y')


@pytest.mark.parametrize('line', ['m=message 1 TCP/MSRP *', 'a=', 'a=:x', 'a=bad name:x', 'a=x:y\0', 'b=x', ''])
def test_parse_attribute_rejects(line):
    with pytest.raises(SDPError):
        parse_attribute(line)


@pytest.mark.parametrize('name, value', [('bad name', 'x'), ('', 'x'), ('x', 'a\r\nb'), (None, 'x')])
def test_format_attribute_rejects(name, value):
    with pytest.raises(SDPError):
        format_attribute(name, value)


def test_media_line():
    assert media_line(7654) == 'm=message 7654 TCP/MSRP *'
    assert media_line(2855, use_tls=True) == 'm=message 2855 TCP/TLS/MSRP *'
    line = parse_media_line('m=message 2855 TCP/TLS/MSRP *\r\n')
    assert line == ('message', 2855, 'TCP/TLS/MSRP', ['*'])
    assert line.use_tls and str(line) == 'm=message 2855 TCP/TLS/MSRP *'
    assert not parse_media_line(media_line(9)).use_tls


@pytest.mark.parametrize('port', [-1, 65536, '80', None, True])
def test_media_line_rejects_bad_ports(port):
    with pytest.raises(SDPError):
        media_line(port)


@pytest.mark.parametrize('line', ['m=message', 'm=message x TCP/MSRP *', 'm=message 70000 TCP/MSRP *',
                                  'a=message 1 TCP/MSRP *', 'm=message  1 TCP/MSRP *'])
def test_parse_media_line_rejects(line):
    with pytest.raises(SDPError):
        parse_media_line(line)


# ---------------------------------------------------------------------------
# a=path

def test_path_with_relay_and_endpoint_round_trips_through_uri_parse():
    value = 'msrps://relay.example.com:2855/asfd34;tcp msrps://bob.example.com:8888/9di4ea;tcp'
    path = parse_path(value)
    assert path == [URI.parse('msrps://relay.example.com:2855/asfd34;tcp'),
                    URI.parse('msrps://bob.example.com:8888/9di4ea;tcp')]
    assert path[0].host == 'relay.example.com' and path[1].port == 8888 and path[1].session_id == '9di4ea'
    assert format_path(path) == value
    assert [str(uri) for uri in parse_path(format_path(path))] == value.split()


def test_format_path_accepts_text_and_single_uri():
    uri = URI(host='10.0.0.1', port=2855, session_id='abc', use_tls=False)
    assert format_path(uri) == 'msrp://10.0.0.1:2855/abc;tcp'
    assert format_path(['msrp://10.0.0.1:2855/abc;tcp']) == 'msrp://10.0.0.1:2855/abc;tcp'
    assert parse_path('  msrp://[::1]:2855/abc;tcp  ')[0].host == '::1'


@pytest.mark.parametrize('value', ['', '   ', 'http://example.com/', 'msrp://host:2855/abc',
                                   'msrp://h:1/a;tcp msrp://h:99999/b;tcp', b'\xff'])
def test_parse_path_rejects(value):
    with pytest.raises(SDPError) as info:
        parse_path(value)
    assert isinstance(info.value, ParsingError)


def test_format_path_rejects():
    for value in ([], ['not a uri'], [42]):
        with pytest.raises(SDPError):
            format_path(value)


# ---------------------------------------------------------------------------
# accept-types, max-size, setup

def test_accept_types():
    assert parse_accept_types('message/cpim text/plain  *') == ['message/cpim', 'text/plain', '*']
    assert parse_accept_types('text/*') == ['text/*']
    assert parse_accept_types('text/plain;charset=UTF-8') == ['text/plain;charset=UTF-8']
    assert format_accept_types(['text/plain', 'message/*', '*']) == 'text/plain message/* *'
    assert format_accept_types('text/plain message/cpim') == 'text/plain message/cpim'


@pytest.mark.parametrize('value', ['', 'text', 'text/', '/plain', 'text/plain/x', '**', 'text/pl"ain', 'te xt/'])
def test_accept_types_rejects(value):
    with pytest.raises(SDPError):
        parse_accept_types(value)
    if value.strip():
        with pytest.raises(SDPError):
            format_accept_types([value])


def test_max_size():
    assert parse_max_size('131072') == 131072
    assert parse_max_size(' 0 ') == 0
    assert format_max_size(131072) == '131072'
    for bad in ('', '-1', '1.5', 'ten', '1' * 40):
        with pytest.raises(SDPError):
            parse_max_size(bad)
    for bad in (-1, 1.5, '10', True, None):
        with pytest.raises(SDPError):
            format_max_size(bad)


@pytest.mark.parametrize('value', ['active', 'passive', 'actpass', 'holdconn'])
def test_setup_values(value):
    assert parse_setup(value) == value
    assert parse_setup(value.upper()) == value
    assert format_setup(value) == value


@pytest.mark.parametrize('value', ['', 'both', 'activ', 'active passive', None, 1])
def test_setup_rejects(value):
    with pytest.raises(SDPError):
        parse_setup(value)
    with pytest.raises(ValueError):
        format_setup(value)


# ---------------------------------------------------------------------------
# fingerprint

@pytest.fixture(scope='module')
def credentials():
    from msrplib.tls import TLSCredentials
    return TLSCredentials.ephemeral()


def test_fingerprint_from_tls_credentials(credentials):
    from msrplib import tls
    value = format_fingerprint(credentials)
    assert value == credentials.fingerprint
    assert format_fingerprint(credentials.certificate_der) == value
    assert tls.fingerprint_matches(credentials.certificate_der, value)
    assert parse_fingerprint(value) == tls.parse_fingerprint(value)
    assert parse_fingerprint(value)[1] == hashlib.sha256(credentials.certificate_der).digest()
    sha1 = format_fingerprint(credentials, 'SHA-1')
    assert sha1.startswith('sha-1 ') and tls.fingerprint_matches(credentials.certificate_der, sha1)


def test_fingerprint_string_is_normalised():
    value = 'SHA-1 ' + SHA1_HEX.lower()
    assert format_fingerprint(value) == 'sha-1 ' + SHA1_HEX
    assert parse_fingerprint(value) == ('sha-1', bytes.fromhex(SHA1_HEX.replace(':', '')))


@pytest.mark.parametrize('value', ['', 'sha-256', 'sha-256 XY', 'sha-1 ' + SHA1_HEX[:-3], 'sha-256 ' + SHA1_HEX,
                                   'md5 AB:CD', 'sha-1 72245FE8653DDAF371362F86D471913EE4A2CE2E',
                                   'sha-1 72::24'])
def test_fingerprint_rejects(value):
    with pytest.raises(SDPError):
        parse_fingerprint(value)
    with pytest.raises(SDPError):
        format_fingerprint(value)


def test_format_fingerprint_rejects_bad_sources():
    with pytest.raises(SDPError):
        format_fingerprint(b'der', algorithm='sha-3')
    with pytest.raises(SDPError):
        format_fingerprint(12)


# ---------------------------------------------------------------------------
# file-selector

def test_file_selector_of_rfc5547_example():
    selector = FileSelector.parse('name:"My cool picture.jpg" type:image/jpeg size:32349 hash:sha-1:' + SHA1_HEX)
    assert selector.name == 'My cool picture.jpg'
    assert selector.type == 'image/jpeg' and selector.media_type == 'image/jpeg'
    assert selector.size == 32349
    assert selector.hash == FileHash('sha-1', bytes.fromhex(SHA1_HEX.replace(':', '')))
    assert selector.hash == ('sha-1', bytes.fromhex(SHA1_HEX.replace(':', '')))
    assert str(selector.hash) == 'sha-1:' + SHA1_HEX
    assert str(selector) == 'name:"My cool picture.jpg" type:image/jpeg size:32349 hash:sha-1:' + SHA1_HEX


def test_file_selector_any_order_and_each_optional():
    text = 'hash:sha-1:%s size:10 name:"a b"' % SHA1_HEX.lower()
    selector = FileSelector.parse(text)
    assert (selector.name, selector.type, selector.size) == ('a b', None, 10)
    assert str(selector) == 'name:"a b" size:10 hash:sha-1:' + SHA1_HEX
    assert FileSelector.parse('size:0').size == 0
    empty = FileSelector.parse('')
    assert empty == FileSelector() and str(empty) == '' and empty.hash is None
    assert FileSelector.parse('type:text/plain') == FileSelector(type='text/plain')


def test_file_selector_type_parameters():
    selector = FileSelector.parse('type:text/plain;charset="UTF-8";format="flo%22wed x"')
    assert selector.media_type == 'text/plain'
    assert selector.type_parameters == {'charset': 'UTF-8', 'format': 'flo"wed x'}
    assert selector.type == 'text/plain;charset=UTF-8;format="flo\\"wed x"'
    assert str(selector) == 'type:text/plain;charset="UTF-8";format="flo%22wed x"'
    assert FileSelector.parse(str(selector)) == selector
    # unquoted values, as some peers send them, are accepted
    assert FileSelector.parse('type:text/plain;charset=UTF-8').type == 'text/plain;charset=UTF-8'
    built = FileSelector(type='Text/Plain; Charset = "utf-8"')
    assert built.type == 'Text/Plain;charset=utf-8' and str(built) == 'type:Text/Plain;charset="utf-8"'


def test_file_selector_name_encoding():
    selector = FileSelector(name='50% "off"\r\n.txt')
    assert str(selector) == 'name:"50%25 %22off%22%0D%0A.txt"'
    assert FileSelector.parse(str(selector)).name == '50% "off"\r\n.txt'
    assert FileSelector.parse('name:"%c3%a9t%C3%A9.txt"').name == 'été.txt'
    assert str(FileSelector(name='été.txt')) == 'name:"été.txt"'


def test_file_selector_several_hashes():
    sha256 = hashlib.sha256(b'x').digest()
    sha1 = hashlib.sha1(b'x').digest()
    selector = FileSelector.parse('hash:sha-256:%s hash:sha-1:%s' % (sha256.hex(':'), sha1.hex(':')))
    assert selector.hash == ('sha-1', sha1)
    assert selector.hashes == {'sha-256': sha256, 'sha-1': sha1}
    assert selector.verify(b'x') and not selector.verify(b'y')
    assert FileSelector.parse(str(selector)) == selector


def test_file_selector_hash_forms():
    digest = hashlib.sha1(b'abc').digest()
    for value in (('sha-1', digest), ('SHA-1', digest.hex()), 'sha-1:' + digest.hex(':'),
                  'hash:sha-1:' + digest.hex(':'), FileHash('sha-1', digest)):
        assert FileSelector(hash=value).hash == FileHash('sha-1', digest)
    unknown = FileSelector.parse('hash:sha3-256:AB:CD size:3')
    assert unknown.hash == ('sha3-256', b'\xab\xcd')
    assert unknown.verify(b'abc')          # size only: the unknown algorithm is skipped
    with pytest.raises(SDPError):
        unknown.new_hasher()


@pytest.mark.parametrize('text', [
    'name:My picture.jpg', 'name:"unterminated', 'name:""', 'name:"a"b"', 'name:"100%"', 'name:"%zz"',
    'name:"%ff"', 'name:"x" name:"y"', 'size:-1', 'size:big', 'size:', 'size:1 size:2', 'type:image',
    'type:image/jpeg;charset', 'type:a/b c/d', 'hash:sha-1', 'hash:sha-1:XY', 'hash:sha-1:AB:CD',
    'hash:sha-1:%s hash:sha-1:%s' % (SHA1_HEX, SHA1_HEX), 'color:red', 'name', '"x"', 'name:"a\0"',
])
def test_file_selector_rejects(text):
    with pytest.raises(SDPError):
        FileSelector.parse(text)


@pytest.mark.parametrize('kwargs', [
    {'name': ''}, {'name': 5}, {'name': '\ud800'}, {'size': -1}, {'size': 1.5}, {'size': True},
    {'type': 'image'}, {'type': 'a/b;c'}, {'hash': 'sha-1:AB'}, {'hash': ('sha-1', b'')}, {'hash': 42},
    {'hash': ('sha-1', 'zz')},
])
def test_file_selector_constructor_rejects(kwargs):
    with pytest.raises(SDPError):
        FileSelector(**kwargs)


@settings(max_examples=300, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=('Cs',)), min_size=1),
       parameter=st.text(st.characters(blacklist_categories=('Cs',))),
       size=st.integers(0, 2 ** 63 - 1))
def test_file_selector_round_trips_odd_names(name, parameter, size):
    selector = FileSelector(name=name, type=FileSelector(type='text/plain').type, size=size,
                            hash=('sha-1', hashlib.sha1(name.encode()).digest()))
    text = str(selector)
    assert '\r' not in text and '\n' not in text and '\0' not in text
    parsed = FileSelector.parse(text)
    assert parsed == selector and parsed.name == name
    # and through a whole attribute line
    attributes = MSRPMediaAttributes.parse(MSRPMediaAttributes(file_selector=selector).to_lines())
    assert attributes.file_selector.name == name
    # type parameter values get the same encoding
    typed = FileSelector(type='text/plain;x="%s"' % parameter.replace('\\', '\\\\').replace('"', '\\"'))
    assert typed.type_parameters == {'x': parameter}
    assert FileSelector.parse(str(typed)).type_parameters == {'x': parameter}


def test_from_path_and_verify(tmp_path):
    data = bytes(range(256)) * 5000        # more than one hashing block with a small block size
    path = tmp_path / 'My "cool" picture.jpg'
    path.write_bytes(data)
    selector = FileSelector.from_path(path)
    assert selector.name == 'My "cool" picture.jpg'
    assert selector.type == 'image/jpeg'
    assert selector.size == len(data)
    assert selector.hash == ('sha-1', hashlib.sha1(data).digest())
    assert selector.verify(path) and selector.verify(str(path)) and selector.verify(data)
    with open(path, 'rb') as file:
        assert selector.verify(file)
    assert FileSelector.parse(str(selector)).verify(path)

    tampered = bytearray(data)
    tampered[1000] ^= 1
    path.write_bytes(bytes(tampered))
    assert not selector.verify(path)
    assert not selector.verify(bytes(tampered))
    assert not selector.verify(data[:-1]) and not selector.verify(data + b'x')
    assert FileSelector(size=len(data)).verify(path)        # a size-only selector cannot see the change


def test_from_path_reads_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(sdp, 'HASH_BLOCK_SIZE', 1000)
    reads = []

    class CountingFile(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    data = b'z' * 4500
    selector = FileSelector.from_file(CountingFile(data), name='z.bin')
    assert selector.size == 4500 and selector.verify(data)
    assert reads and all(size == 1000 for size in reads)
    path = tmp_path / 'noext'
    path.write_bytes(data)
    assert FileSelector.from_path(path).type == 'application/octet-stream'
    assert FileSelector.from_path(path, type='text/plain', name='other.txt').name == 'other.txt'
    assert FileSelector.from_path(path, algorithm='sha-256').hash == ('sha-256', hashlib.sha256(data).digest())


def test_from_file_describes_the_rest_and_rewinds():
    file = io.BytesIO(b'headerPAYLOAD')
    file.seek(6)
    selector = FileSelector.from_file(file, name='p.txt')
    assert file.tell() == 6
    assert selector.size == 7 and selector.verify(b'PAYLOAD') and selector.type == 'text/plain'
    assert FileSelector.from_file(io.BytesIO(b'')).name is None


def test_verify_needs_something_to_compare():
    with pytest.raises(SDPError):
        FileSelector(name='x').verify(b'')
    with pytest.raises(TypeError):
        FileSelector(size=1).verify(1)
    with pytest.raises(OSError):
        FileSelector(size=1).verify('/nonexistent/file')


def test_new_hasher():
    selector = FileSelector(hash=('sha-1', hashlib.sha1(b'abc').digest()))
    hasher = selector.new_hasher()
    hasher.update(b'abc')
    assert hasher.digest() == selector.hash.digest
    assert FileSelector().new_hasher() is None


# ---------------------------------------------------------------------------
# other RFC 5547 attributes

def test_file_range():
    assert parse_file_range('1-32349') == FileRange(1, 32349)
    assert parse_file_range('1000-*') == (1000, None)
    assert str(FileRange(1000, None)) == '1000-*'
    assert format_file_range(1, 10) == '1-10' and format_file_range(5) == '5-*'
    assert format_file_range(FileRange(2, 2)) == '2-2'
    for bad in ('', '1', '0-10', '10-5', '1-', '-5', 'a-b', '1-2-3', '*-*'):
        with pytest.raises(SDPError):
            parse_file_range(bad)
    for bad in ((0, 1), (5, 4), ('1', None), (None, None)):
        with pytest.raises(SDPError):
            format_file_range(*bad)


def test_file_date():
    dates = parse_file_date('creation:"Mon, 15 May 2006 15:01:31 +0300" modification:"Tue, 16 May 2006 10:00:00 -0000"')
    tz = datetime.timezone(datetime.timedelta(hours=3))
    assert dates['creation'] == datetime.datetime(2006, 5, 15, 15, 1, 31, tzinfo=tz)
    assert dates['creation'].utcoffset() == datetime.timedelta(hours=3)
    assert set(dates) == {'creation', 'modification'}
    assert format_file_date({'creation': dates['creation']}) == 'creation:"Mon, 15 May 2006 15:01:31 +0300"'
    assert parse_file_date(format_file_date(dates)) == dates
    naive = datetime.datetime(2020, 1, 2, 3, 4, 5)
    assert parse_file_date(format_file_date({'read': naive}))['read'] == naive.replace(tzinfo=datetime.timezone.utc)
    for bad in ('', 'creation:Mon', 'creation:"yesterday"', 'birth:"Mon, 15 May 2006 15:01:31 +0300"',
                'creation:"Mon, 15 May 2006 15:01:31 +0300" creation:"Mon, 15 May 2006 15:01:31 +0300"',
                'creation:"Mon, 15 May 2006 15:01:31 +0300" junk'):
        with pytest.raises(SDPError):
            parse_file_date(bad)
    for bad in ({}, {'birth': naive}, {'read': '2020-01-01'}):
        with pytest.raises(SDPError):
            format_file_date(bad)


def test_new_file_transfer_id_is_a_fresh_token():
    first, second = new_file_transfer_id(), new_file_transfer_id()
    assert first != second and len(first) >= 32
    assert MSRPMediaAttributes.parse(['a=file-transfer-id:' + first]).file_transfer_id == first


# ---------------------------------------------------------------------------
# whole media descriptions

def test_parse_chat_offer():
    attributes = MSRPMediaAttributes.parse(CHAT_OFFER)
    assert attributes.accept_types == ['message/cpim', 'text/plain', 'text/html']
    assert attributes.accept_wrapped_types == ['*']
    assert attributes.max_size == 131072
    assert [str(uri) for uri in attributes.path] == ['msrps://relay.example.com:2855/asfd34;tcp',
                                                     'msrps://alice.example.com:7394/2s93i93idd;tcp']
    assert attributes.setup is None and attributes.fingerprints == [] and attributes.file_selector is None
    assert attributes.other == {}
    media = parse_media_line([line for line in CHAT_OFFER.split('\r\n') if line.startswith('m=')][0])
    assert media.use_tls and media.port == attributes.path[-1].port


def test_parse_file_transfer_offer_of_rfc5547():
    attributes = MSRPMediaAttributes.parse(FILE_OFFER.encode('utf-8'))
    assert attributes.direction == 'sendonly'
    assert attributes.accept_types == ['message/cpim'] and attributes.accept_wrapped_types == ['*']
    assert attributes.path == [URI.parse('msrp://atlanta.example.com:7654/jshA7we;tcp')]
    selector = attributes.file_selector
    assert (selector.name, selector.type, selector.size) == ('My cool picture.jpg', 'image/jpeg', 32349)
    assert str(selector.hash) == 'sha-1:' + SHA1_HEX
    assert attributes.file_transfer_id == 'vBnG916bdberum2fFEABR1FR3ExZMUrd'
    assert attributes.file_disposition == 'render'
    assert attributes.file_date['creation'].isoformat() == '2006-05-15T15:01:31+03:00'
    assert attributes.file_icon == 'cid:id2@alicepc.example.com'
    assert attributes.file_range == FileRange(1, 32349)
    # every a= line of the offer comes back, in the same form
    offered = [line for line in FILE_OFFER.split('\r\n') if line.startswith('a=')]
    assert sorted(attributes.to_lines()) == sorted(offered)
    assert MSRPMediaAttributes.parse(attributes.to_lines()) == attributes


def test_build_offer_and_round_trip(credentials):
    path = [URI.parse('msrps://relay.example.com:2855/asfd34;tcp'),
            URI(host='10.0.0.1', port=2855, session_id='s1', use_tls=True)]
    attributes = MSRPMediaAttributes(path=path, accept_types=['text/plain', 'message/cpim'],
                                     accept_wrapped_types=['*'], max_size=1 << 20, setup='actpass',
                                     fingerprints=credentials, direction='sendrecv',
                                     other={'connection': ['new'], 'x-flag': [None]})
    lines = attributes.to_lines()
    assert lines == [
        'a=accept-types:text/plain message/cpim',
        'a=accept-wrapped-types:*',
        'a=max-size:1048576',
        'a=path:msrps://relay.example.com:2855/asfd34;tcp msrps://10.0.0.1:2855/s1;tcp',
        'a=setup:actpass',
        'a=fingerprint:' + credentials.fingerprint,
        'a=sendrecv',
        'a=connection:new',
        'a=x-flag',
    ]
    assert all('\r' not in line and '\n' not in line for line in lines)
    assert str(attributes) == '\r\n'.join(lines) + '\r\n'
    parsed = MSRPMediaAttributes.parse(str(attributes))
    assert parsed == attributes
    assert parsed.fingerprints == [credentials.fingerprint]
    assert parsed.path[0] == path[0] and str(parsed.path[1]) == str(path[1])


def test_file_transfer_attributes_round_trip(tmp_path):
    path = tmp_path / 'report 100%.pdf'
    path.write_bytes(b'%PDF-1.4 ...')
    attributes = MSRPMediaAttributes(
        path=[URI(host='10.0.0.1', port=2855, session_id='s1', use_tls=False)], accept_types=['*'],
        direction='sendonly', file_selector=FileSelector.from_path(path), file_transfer_id=new_file_transfer_id(),
        file_disposition='attachment', file_date={'modification': datetime.datetime(2024, 2, 29, 12, 0, 0)},
        file_icon='cid:icon@example.com', file_range=FileRange(1, None))
    text = str(attributes)
    assert 'a=file-selector:name:"report 100%25.pdf" type:application/pdf size:12 hash:sha-1:' in text
    assert 'a=file-range:1-*\r\n' in text
    parsed = MSRPMediaAttributes.parse(text)
    assert parsed.file_selector.verify(path)
    assert parsed.file_date['modification'] == datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.timezone.utc)
    assert parsed.to_lines() == attributes.to_lines()


def test_multiple_fingerprints_and_unsupported_ones():
    sha1 = 'sha-1 ' + SHA1_HEX
    sha256 = format_fingerprint(b'certificate')
    attributes = MSRPMediaAttributes.parse(['a=fingerprint:' + sha1, 'a=fingerprint:' + sha256.lower(),
                                            'a=fingerprint:md2 AB:CD'])
    assert attributes.fingerprints == [sha1, sha256]
    assert attributes.other == {'fingerprint': ['md2 AB:CD']}
    with pytest.raises(SDPError):
        MSRPMediaAttributes.parse(['a=fingerprint:sha-256 AB:CD'])


def test_unknown_attributes_and_non_attribute_lines():
    attributes = MSRPMediaAttributes.parse('v=0\nm=message 9 TCP/MSRP *\n\na=chatroom:nickname\n'
                                           'a=X-Thing:1\na=X-Thing:2\na=msrp-cema\ni=whatever\n')
    assert attributes.other == {'chatroom': ['nickname'], 'X-Thing': ['1', '2'], 'msrp-cema': [None]}
    assert attributes.to_lines() == ['a=chatroom:nickname', 'a=X-Thing:1', 'a=X-Thing:2', 'a=msrp-cema']
    assert MSRPMediaAttributes.parse('') == MSRPMediaAttributes()
    assert MSRPMediaAttributes().to_lines() == []


@pytest.mark.parametrize('lines', [
    ['a=path:msrp://a.example.com:1/x;tcp', 'a=path:msrp://b.example.com:1/y;tcp'],
    ['a=path:not-a-uri'],
    ['a=path'],
    ['a=accept-types:'],
    ['a=max-size:lots'],
    ['a=setup:both'],
    ['a=fingerprint:sha-256'],
    ['a=sendonly', 'a=recvonly'],
    ['a=file-selector:name:bare'],
    ['a=file-transfer-id:has space'],
    ['a=file-disposition:'],
    ['a=file-date:creation:"never"'],
    ['a=file-icon:http://example.com/icon.png'],
    ['a=file-range:0-10'],
    [b'a=path:\xff'],
    ['a=bad name'],
])
def test_parse_rejects_malformed_known_attributes(lines):
    with pytest.raises(SDPError):
        MSRPMediaAttributes.parse(lines)


@pytest.mark.parametrize('kwargs', [
    {'setup': 'both'}, {'direction': 'sideways'}, {'max_size': -5}, {'accept_types': ['text']},
    {'path': ['nonsense']}, {'file_range': FileRange(0, 1)}, {'file_transfer_id': 'a b'},
    {'file_icon': 'icon.png'}, {'file_selector': 'name:bare'}, {'other': {'x': ['a\nb']}},
])
def test_to_lines_rejects_bad_fields(kwargs):
    with pytest.raises(SDPError):
        MSRPMediaAttributes(**kwargs).to_lines()


def test_constructor_rejects_bad_fingerprints():
    with pytest.raises(SDPError):
        MSRPMediaAttributes(fingerprints=['sha-256 nonsense'])


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=('Cs',)), max_size=200))
def test_parse_never_raises_anything_but_sdperror(text):
    for lines in (text, ['a=file-selector:' + text], ['a=path:' + text], ['a=file-date:' + text],
                  ['a=fingerprint:' + text], ['a=file-range:' + text], ['a=accept-types:' + text]):
        try:
            MSRPMediaAttributes.parse(lines)
        except SDPError:
            pass
