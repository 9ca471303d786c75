"""The relay connector's digest AUTH against a scripted relay: opaque, rspauth and refused challenges.

Kamailio sends neither ``opaque`` nor ``Authentication-Info``; RFC 4976 relays
may send both, so a small relay written here does.
"""

import gevent
import gevent.socket
import pytest

from msrplib import digest
from msrplib.protocol import (
    MSRPData, MSRPParser, CHUNK_START, CHUNK_END, ToPathHeader, FromPathHeader, UsePathHeader, ExpiresHeader,
    MSRPHeader)
from msrplib.relay import ConnectorRelay, MSRPRelaySettings, MSRPRelayAuthError

T = 5


class ScriptedRelay:
    """Answers AUTH like an RFC 4976 relay: 401 with ``challenge``, then 200 with ``auth_info(params)``."""

    def __init__(self, challenge, auth_info=None, password='secret'):
        self.challenge = challenge
        self.auth_info = auth_info
        self.password = password
        self.authorizations = []
        self.listener = gevent.socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.job = gevent.spawn(self._serve)

    def _serve(self):
        sock, _ = self.listener.accept()
        parser = MSRPParser()
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for kind, chunk in parser.feed(data):
                if kind is CHUNK_START:
                    request = chunk
                elif kind is CHUNK_END:
                    sock.sendall(self._answer(request).encode())

    def _answer(self, request):
        response = MSRPData(request.transaction_id, code=401, comment='Unauthorized')
        response.add_header(ToPathHeader(request.headers['From-Path'].encoded))
        response.add_header(FromPathHeader(request.headers['To-Path'].encoded))
        authorization = request.headers.get('Authorization')
        if authorization is None:
            response.add_header(MSRPHeader('WWW-Authenticate', self.challenge))
            return response
        params = digest.parse_authorization(authorization.encoded)
        self.authorizations.append(params)
        if not digest.check_authorization(params, self.password, 'AUTH'):
            response.add_header(MSRPHeader('WWW-Authenticate', self.challenge))
            return response
        response.code, response.comment = 200, 'OK'
        response.add_header(UsePathHeader('msrp://127.0.0.1:%d/reserved;tcp' % self.port))
        response.add_header(ExpiresHeader('600'))
        if self.auth_info is not None:
            response.add_header(MSRPHeader('Authentication-Info', self.auth_info(params)))
        return response

    def settings(self, password='secret'):
        return MSRPRelaySettings('relay.example.com', 'alice', password, host='127.0.0.1', port=self.port,
                                 use_tls=False)

    def close(self):
        self.job.kill()
        self.listener.close()


@pytest.fixture
def relays():
    made = []
    yield made
    for relay in made:
        relay.close()


def test_opaque_is_echoed_and_a_correct_rspauth_is_accepted(relays):
    relay = ScriptedRelay(digest.make_challenge('relay.example.com', opaque='state-42'),
                          auth_info=lambda params: digest.make_authentication_info(params, 'secret'))
    relays.append(relay)
    connector = ConnectorRelay(relay.settings())
    with gevent.Timeout(T):
        path = connector.prepare()
    assert relay.authorizations[-1]['opaque'] == 'state-42'
    assert relay.authorizations[-1]['uri'] == 'msrp://relay.example.com:%d;tcp' % relay.port
    assert str(path[0]) == 'msrp://127.0.0.1:%d/reserved;tcp' % relay.port
    assert connector.expires == 600
    connector.cleanup()


def test_without_opaque_in_the_challenge_none_is_sent(relays):
    relay = ScriptedRelay(digest.make_challenge('relay.example.com'))
    relays.append(relay)
    connector = ConnectorRelay(relay.settings())
    with gevent.Timeout(T):
        connector.prepare()
    assert 'opaque' not in relay.authorizations[-1]
    connector.cleanup()


def test_a_wrong_rspauth_is_refused(relays):
    relay = ScriptedRelay(digest.make_challenge('relay.example.com'),
                          auth_info=lambda params: digest.make_authentication_info(params, 'not the password'))
    relays.append(relay)
    with gevent.Timeout(T), pytest.raises(MSRPRelayAuthError) as error:
        ConnectorRelay(relay.settings()).prepare()
    assert 'rspauth' in str(error.value)


def test_a_challenge_with_another_algorithm_is_refused_clearly(relays):
    relay = ScriptedRelay('Digest realm="relay.example.com", nonce="abc", qop="auth", algorithm=SHA-256')
    relays.append(relay)
    with gevent.Timeout(T), pytest.raises(MSRPRelayAuthError) as error:
        ConnectorRelay(relay.settings()).prepare()
    assert error.value.code == 401 and 'SHA-256' in str(error.value)
    assert not relay.authorizations


def test_wrong_password_fails_after_one_answered_challenge(relays):
    relay = ScriptedRelay(digest.make_challenge('relay.example.com'))
    relays.append(relay)
    with gevent.Timeout(T), pytest.raises(MSRPRelayAuthError) as error:
        ConnectorRelay(relay.settings(password='wrong')).prepare()
    assert error.value.code == 401
    assert len(relay.authorizations) == 1
