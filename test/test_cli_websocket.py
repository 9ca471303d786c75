"""``msrp ... --relay ws[s]://USER:PASSWORD@HOST:PORT/`` through a real Kamailio WebSocket relay (issue 22).

The processes are ``python -m msrplib`` (test_cli's helpers); the relay is
the session's KamailioRelay (msrplib's pytest plugin), whose ws:// and wss://
listeners speak RFC 7977.  Every process step has a timeout.
"""

import argparse
import hashlib

import pytest

from test_cli import _env, msrp, procs  # noqa: F401  (procs is a fixture)

from msrplib import cli


@pytest.fixture
def relay(msrp_relay):
    return msrp_relay


def _ws_relay_args(relay, secure=True, password=None, user=None):
    url = relay.wss_url if secure else relay.ws_url
    scheme, rest = url.split('://', 1)
    account = user or relay.username
    if password is not False:
        account += ':' + (password or relay.password)
    args = ['--relay', '%s://%s@%s' % (scheme, account, rest)]
    if secure:
        args += ['--relay-ca', relay.ca_file]
    return args


def _tcp_relay_args(relay):
    return ['--relay', '%s:%s@%s' % (relay.username, relay.password, relay.domain),
            '--relay-host', relay.host, '--relay-port', str(relay.port), '--relay-no-tls']


def test_listen_over_wss_and_send_through_the_tcp_face_and_over_ws(procs, relay):  # noqa: F811
    listener = procs('listen', '--count', '3', *_ws_relay_args(relay))
    path = listener.path()
    hops = path.split()
    # the Use-Path on the relay's TLS face, then the listener's own RFC 7977 URI
    assert len(hops) == 2
    assert hops[0].startswith('msrps://%s:%d/' % (relay.host, relay.tls_port)) and hops[0].endswith(';tcp')
    assert hops[1].startswith('msrps://') and '.invalid:' in hops[1] and hops[1].endswith(';ws')
    # a sender without a relay connects to the relay's TLS face
    sent = msrp('send', '--to', path, 'direct to the reservation')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from ').endswith(': direct to the reservation')
    # a sender with a relay of its own over TCP
    sent = msrp('send', '--to', listener.path(), *_tcp_relay_args(relay), 'tcp relay client')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from ').endswith(': tcp relay client')
    # a sender that is itself a WebSocket client (ws://)
    sent = msrp('send', '--to', listener.path(), *_ws_relay_args(relay, secure=False), 'ws to wss')
    assert sent.returncode == 0, sent.stderr
    assert listener.expect('message from ').endswith(': ws to wss')
    assert listener.wait() == 0


def test_sendfile_over_wss_to_a_tcp_relay_listener(procs, relay, tmp_path):  # noqa: F811
    data = bytes(range(256)) * 4096 + b'tail'   # 1 MiB + 4: several relay-sized chunks
    source = tmp_path / 'data.bin'
    source.write_bytes(data)
    save = tmp_path / 'in'
    save.mkdir()
    listener = procs('listen', '--count', '1', '--save-dir', str(save), *_tcp_relay_args(relay))
    sent = msrp('sendfile', '--to', listener.path(), *_ws_relay_args(relay), str(source))
    assert sent.returncode == 0, sent.stderr
    assert listener.wait() == 0
    saved = list(save.iterdir())
    assert len(saved) == 1
    assert hashlib.sha256(saved[0].read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_wrong_password_over_wss_exits_4(relay):
    result = msrp('listen', *_ws_relay_args(relay, password='wrong'))
    assert result.returncode == cli.EXIT_AUTH == 4
    assert 'relay authentication failed' in result.stderr and 'Traceback' not in result.stderr


def test_password_from_the_environment(relay, procs):  # noqa: F811
    env = _env()
    env['MSRP_RELAY_PASSWORD'] = 'wrong'
    result = msrp('listen', *_ws_relay_args(relay, secure=False, password=False), env=env)
    assert result.returncode == 4, result.stderr


def test_a_port_that_does_not_speak_websocket_exits_3(relay):
    # Kamailio's MSRP TCP port answers the upgrade with HTTP 403 (test_relay_websocket_server)
    result = msrp('listen', '--relay', 'ws://%s:%s@%s:%d/' % (relay.username, relay.password, relay.host,
                                                              relay.port))
    assert result.returncode == cli.EXIT_CONNECT == 3
    assert '403' in result.stderr and 'Traceback' not in result.stderr


def _args(relay, relay_host=None, relay_port=None, relay_no_tls=False, relay_ca=None):
    return argparse.Namespace(relay=relay, relay_host=relay_host, relay_port=relay_port,
                              relay_no_tls=relay_no_tls, relay_ca=relay_ca)


def test_relay_settings_from_a_websocket_url(monkeypatch):
    monkeypatch.delenv('MSRP_RELAY_PASSWORD', raising=False)
    settings = cli.relay_settings(_args('wss://alice:s%40cret@relay.example.com:8443/msrp'))
    assert settings.ws_url == 'wss://relay.example.com:8443/msrp'   # no credentials in what is sent
    assert (settings.domain, settings.username, settings.password) == ('relay.example.com', 'alice', 's@cret')
    assert settings.use_tls is True
    settings = cli.relay_settings(_args('WS://bob:pw@127.0.0.1:8080'))
    assert settings.ws_url == 'ws://127.0.0.1:8080' and settings.use_tls is False
    monkeypatch.setenv('MSRP_RELAY_PASSWORD', 'from-env')
    assert cli.relay_settings(_args('wss://carol@relay.example.com/')).password == 'from-env'


@pytest.mark.parametrize('value, extra', [
    ('wss://relay.example.com/', {}),                        # no account
    ('wss://:pw@relay.example.com/', {}),                    # empty user
    ('wss://alice@relay.example.com/', {}),                  # no password, none in the environment
    ('wss://alice:pw@relay.example.com/', {'relay_port': 443}),
    ('wss://alice:pw@relay.example.com/', {'relay_host': '127.0.0.1'}),
    ('ws://alice:pw@relay.example.com/', {'relay_no_tls': True}),
    ('wss://alice:pw@relay.example.com:notaport/', {}),
    ('wss://alice:pw@/', {}),
])
def test_bad_websocket_relay_values_are_usage_errors(monkeypatch, value, extra):
    monkeypatch.delenv('MSRP_RELAY_PASSWORD', raising=False)
    with pytest.raises(cli.CommandError) as info:
        cli.relay_settings(_args(value, **extra))
    assert info.value.status == cli.EXIT_USAGE
