"""msrplib.testing: what a greenlet-based test harness needs to test an application's MSRP side.

- :func:`session_pair`: two bound sessions over loopback (TCP, TLS checked by
  fingerprint, or through a relay), closed when the ``with`` block ends;
- :class:`RawPeer`: a scripted MSRP peer over a real socket (any bytes,
  matchers, chosen answers or none, split writes, resets);
- :class:`KamailioRelay`: a real Kamailio MSRP relay on free loopback ports;
- :class:`WireCapture`: the chunks that cross a transport, with direction;
- :class:`ScriptedWebSocketRelay`: a scripted relay speaking WebSocket
  (RFC 7977) and MSRP, for tests and hostile cases.

Every blocking helper takes a timeout and raises :class:`WaitTimeout` (an
AssertionError) saying what it waited for.  Nothing here needs pytest; the
fixtures of ``msrplib.testing.pytest_plugin`` (installed as a pytest plugin)
wrap these.  See doc/testing.md.
"""

from msrplib.testing._wait import DEFAULT_TIMEOUT, WaitTimeout, waiting_for
from msrplib.testing.kamailio import (
    INSTALL_COMMAND, KamailioRelay, KamailioRelayError, find_kamailio, kamailio_available)
from msrplib.testing.loopback import SessionPair, raw_peer_transport, session_pair, socket_pair
from msrplib.testing.rawpeer import Frame, RawPeer, RawSender, build_chunk
from msrplib.testing.wire import TsharkCapture, WireCapture, WireRecord, tshark_available
from msrplib.testing.wsrelay import RelayClient, ScriptedWebSocketRelay, handshake_answer, ws_frame

__all__ = ['DEFAULT_TIMEOUT', 'WaitTimeout', 'waiting_for', 'INSTALL_COMMAND', 'KamailioRelay',
           'KamailioRelayError', 'find_kamailio', 'kamailio_available', 'SessionPair', 'raw_peer_transport',
           'session_pair', 'socket_pair', 'Frame', 'RawPeer', 'RawSender', 'build_chunk', 'TsharkCapture',
           'WireCapture', 'WireRecord', 'tshark_available', 'ScriptedWebSocketRelay', 'RelayClient',
           'handshake_answer', 'ws_frame']
