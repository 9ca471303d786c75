"""Run a real Kamailio MSRP relay (RFC 4976) for tests: :class:`KamailioRelay`.

Plain Python, no other msrplib imports, so it can test msrplib from the outside::

    with KamailioRelay() as relay:
        sock = socket.create_connection((relay.host, relay.port), timeout=5)
        ...                                  # msrp://127.0.0.1:<port>;tcp
        ctx = relay.client_ssl_context()     # trusts relay.ca
        tls = ctx.wrap_socket(socket.create_connection(
            (relay.host, relay.tls_port), timeout=5), server_hostname='localhost')
        relay.ws_url                         # 'ws://127.0.0.1:<ws_port>/'  (RFC 7977,
        relay.wss_url                        # 'wss://127.0.0.1:<wss_port>/' subprotocol msrp)

The relay runs ``kamailio -DD -E -f <cfg>`` in the foreground in its own
process group, rendered from ``kamailio.cfg.in`` (package data next to this
module) into a private temporary directory together with a trustme-generated
certificate for 127.0.0.1 / localhost.  test/relay/NOTES.md of the source tree
says what the relay sends.

Kamailio itself is not a Python package; on Debian or Ubuntu::

    sudo apt-get install -y --no-install-recommends kamailio kamailio-tls-modules kamailio-websocket-modules

(:data:`INSTALL_COMMAND`).  The certificates need ``trustme``
(``pip install 'msrplib[testing]'``).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ['KamailioRelay', 'KamailioRelayError', 'kamailio_available',
           'find_kamailio', 'MODULE_DIRS', 'INSTALL_COMMAND', 'TEMPLATE']

HERE = os.path.dirname(os.path.abspath(__file__))
#: The routing script template, shipped as package data of msrplib.testing.
TEMPLATE = os.path.join(HERE, 'kamailio.cfg.in')

#: The one line that installs Kamailio with the modules the relay needs (Debian, Ubuntu).
INSTALL_COMMAND = ('sudo apt-get install -y --no-install-recommends kamailio kamailio-tls-modules '
                   'kamailio-websocket-modules')

#: Where Debian (and a default source build) put kamailio modules.
MODULE_DIRS = (
    '/usr/lib/x86_64-linux-gnu/kamailio/modules',
    '/usr/lib/aarch64-linux-gnu/kamailio/modules',
    '/usr/lib/kamailio/modules',
    '/usr/lib64/kamailio/modules',
    '/usr/local/lib64/kamailio/modules',
    '/usr/local/lib/kamailio/modules',
)

#: Modules the configuration loads.
REQUIRED_MODULES = ('msrp.so', 'tls.so', 'auth.so', 'sl.so', 'tm.so', 'pv.so',
                    'xlog.so', 'htable.so', 'cfgutils.so', 'xhttp.so', 'websocket.so')


class KamailioRelayError(RuntimeError):
    """The relay could not be set up, started or did not come up in time."""


def find_kamailio():
    """Return ``(binary_path, module_dir)``; either may be None if missing."""
    binary = shutil.which('kamailio')
    if binary is None:
        for candidate in ('/usr/sbin/kamailio', '/usr/local/sbin/kamailio'):
            if os.access(candidate, os.X_OK):
                binary = candidate
                break
    module_dir = None
    for directory in MODULE_DIRS:
        if all(os.path.exists(os.path.join(directory, m))
               for m in REQUIRED_MODULES):
            module_dir = directory
            break
    return binary, module_dir


def kamailio_available():
    """True when the kamailio binary and every module it needs are installed."""
    binary, module_dir = find_kamailio()
    return binary is not None and module_dir is not None


def _free_ports(host, count):
    """Return `count` distinct TCP ports that are free on `host` right now.

    The sockets are held open until all ports are picked so the kernel does
    not hand out the same port twice; there is an unavoidable window between
    closing them and kamailio binding them.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class KamailioRelay:
    """A Kamailio MSRP relay on loopback: plain TCP, TLS, WebSocket and secure WebSocket listeners.

    Attributes (valid after construction):
      host, port (plain TCP), tls_port, ws_port, wss_port, domain (== realm), realm,
      username, password, min_expires, max_expires, log_path, config_path,
      workdir, ca (trustme.CA), ca_file (PEM of the CA),
      uri / tls_uri (the relay's own MSRP URIs, no session id),
      ws_url / wss_url (``ws://HOST:WS_PORT/``, ``wss://HOST:WSS_PORT/``: where an
      RFC 7977 client opens its WebSocket, subprotocol ``msrp``; the wss
      listener has the TLS listener's certificate).

    A WebSocket client's AUTH gets a Use-Path naming the TCP (ws) or TLS
    (wss) listener, ``msrp://HOST:PORT/<id>;tcp`` / ``msrps://HOST:TLS_PORT/<id>;tcp``:
    that is where the far peer reaches it; the relay delivers to the client
    over its WebSocket.

    `routing` picks how reservations are stored: 'htable' (default; the
    config script checks Expires and builds Use-Path) or 'cmap' (the msrp
    module's msrp_cmap_save/lookup, which in Kamailio 5.6.3 answers any
    AUTH carrying an Expires header with a broken 423 -- see NOTES.md).
    """

    def __init__(self, host='127.0.0.1', port=None, tls_port=None, ws_port=None, wss_port=None,
                 realm='relay.test', username='alice', password='secret',
                 min_expires=60, max_expires=3600, routing='htable', debug=2,
                 start_timeout=15.0, workdir=None):
        self.binary, self.module_dir = find_kamailio()
        self.host = host
        if None in (port, tls_port, ws_port, wss_port):
            taken = {p for p in (port, tls_port, ws_port, wss_port) if p}
            free = iter(p for p in _free_ports(host, 8) if p not in taken)
            port = port or next(free)
            tls_port = tls_port or next(free)
            ws_port = ws_port or next(free)
            wss_port = wss_port or next(free)
        self.port = port
        self.tls_port = tls_port
        self.ws_port = ws_port
        self.wss_port = wss_port
        self.realm = self.domain = realm
        self.username = username
        self.password = password
        self.min_expires = min_expires
        self.max_expires = max_expires
        if routing not in ('htable', 'cmap'):
            raise ValueError('routing must be htable or cmap')
        self.routing = routing
        self.debug = debug
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix='kamailio-msrp-')
        self.rundir = os.path.join(self.workdir, 'run')
        os.makedirs(self.rundir, exist_ok=True)
        self.config_path = os.path.join(self.workdir, 'kamailio.cfg')
        self.log_path = os.path.join(self.workdir, 'kamailio.log')
        self.cert_path = os.path.join(self.workdir, 'server.pem')
        self.key_path = os.path.join(self.workdir, 'server.key')
        self.ca_file = os.path.join(self.workdir, 'ca.pem')
        self.uri = 'msrp://%s:%d;tcp' % (host, port)
        self.tls_uri = 'msrps://%s:%d;tcp' % (host, tls_port)
        self.ws_url = 'ws://%s:%d/' % (host, ws_port)
        self.wss_url = 'wss://%s:%d/' % (host, wss_port)
        self.process = None
        self._log_file = None
        self._make_certificates()
        self._render_config()

    # -- setup ------------------------------------------------------------

    def _make_certificates(self):
        try:
            import trustme
        except ImportError:
            raise KamailioRelayError("KamailioRelay makes its TLS certificate with trustme: "
                                     "pip install 'msrplib[testing]' (or pip install trustme)") from None
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(self.host, 'localhost', self.domain)
        cert.private_key_pem.write_to_path(self.key_path)
        with open(self.cert_path, 'wb') as f:
            for blob in cert.cert_chain_pems:
                f.write(blob.bytes())
        self.ca.cert_pem.write_to_path(self.ca_file)
        os.chmod(self.key_path, 0o600)

    def _render_config(self):
        try:
            with open(TEMPLATE) as f:
                text = f.read()
        except OSError as error:
            raise KamailioRelayError('the routing script template %s is missing from the installed '
                                     'msrplib.testing package (%s)' % (TEMPLATE, error)) from None
        values = {
            'HOST': self.host,
            'TCP_PORT': str(self.port),
            'TLS_PORT': str(self.tls_port),
            'WS_PORT': str(self.ws_port),
            'WSS_PORT': str(self.wss_port),
            'RUNDIR': self.rundir,
            'TLS_CERT': self.cert_path,
            'TLS_KEY': self.key_path,
            'REALM': self.realm,
            'USERNAME': self.username,
            'PASSWORD': self.password,
            'MIN_EXPIRES': str(int(self.min_expires)),
            'MAX_EXPIRES': str(int(self.max_expires)),
            'DEBUG': str(int(self.debug)),
            'MODULES': self.module_dir or '',
            'ROUTING': '#!define WITH_CMAP' if self.routing == 'cmap' else '',
        }
        for key, value in values.items():
            if '"' in value or '\n' in value:
                raise KamailioRelayError('unsafe value for %s: %r' % (key, value))
            text = text.replace('@@%s@@' % key, value)
        for line in text.splitlines():
            if '@@' in line and not line.lstrip().startswith('#'):
                raise KamailioRelayError('unrendered placeholder: %r' % line)
        with open(self.config_path, 'w') as f:
            f.write(text)

    # -- lifecycle --------------------------------------------------------

    def settings(self, tls=False, ws=False, **kwargs):
        """:class:`~msrplib.relay.MSRPRelaySettings` for this relay's account, over TLS (``tls``) or TCP.

        With ``ws`` the settings reach the relay over WebSocket (RFC 7977):
        ``ws_url`` is :attr:`wss_url` with ``tls``, else :attr:`ws_url`.
        Keyword arguments override the defaults (``host``, ``port``,
        ``ws_url``, ``credentials`` -- over TLS, :meth:`client_ssl_context`
        --, ``domain``, ``username``, ``password``) or add settings (e.g.
        ``chunk_size``).
        """
        from msrplib.relay import MSRPRelaySettings
        if ws:
            kwargs.setdefault('ws_url', self.wss_url if tls else self.ws_url)
        else:
            kwargs.setdefault('host', self.host)
            kwargs.setdefault('port', self.tls_port if tls else self.port)
        kwargs.setdefault('credentials', self.client_ssl_context() if tls else None)
        return MSRPRelaySettings(kwargs.pop('domain', self.domain), kwargs.pop('username', self.username),
                                 kwargs.pop('password', self.password), use_tls=tls, **kwargs)

    def client_ssl_context(self):
        """An ssl.SSLContext for clients that trusts this relay's CA."""
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx

    def start(self):
        """Start kamailio and wait until all four listeners accept connections.

        Raises KamailioRelayError (with the tail of the log) when kamailio
        is not installed, exits early or does not listen in time.
        """
        if self.process is not None:
            raise KamailioRelayError('relay already started')
        if not kamailio_available():
            raise KamailioRelayError(
                'kamailio or one of its modules %s is not installed; install it with: %s'
                % (REQUIRED_MODULES, INSTALL_COMMAND))
        cmd = [self.binary, '-DD', '-E', '-f', self.config_path,
               '-Y', self.rundir, '-P', os.path.join(self.rundir, 'kamailio.pid'),
               '-m', '32', '-M', '8']
        self._log_file = open(self.log_path, 'wb')
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        pending = [self.port, self.tls_port, self.ws_port, self.wss_port]
        while pending:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._cleanup_process()
                raise KamailioRelayError(
                    'kamailio exited with code %s during startup\n%s'
                    % (code, self.log_tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise KamailioRelayError(
                    'kamailio did not listen on %s:%s within %.0fs\n%s'
                    % (self.host, pending, self.start_timeout, self.log_tail()))
            try:
                with socket.create_connection((self.host, pending[0]),
                                              timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
            else:
                pending.pop(0)
        return self

    def stop(self, timeout=10.0):
        """Terminate kamailio (SIGTERM to its process group, then SIGKILL)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout)
        # workers may outlive the main process for a moment
        self._signal_group(signal.SIGKILL)
        self._cleanup_process()

    def kill(self):
        """SIGKILL kamailio and all its workers at once (a relay crash).

        Clients see their connections reset/closed.
        """
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._cleanup_process()

    def close(self):
        """Stop the relay and remove its temp dir (keeps it if KEEP_RELAY_DIR)."""
        self.stop()
        if self._own_workdir and not os.environ.get('KEEP_RELAY_DIR'):
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self):
        """True while the kamailio process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=60):
        """The last `lines` lines of the kamailio log, as text."""
        try:
            with open(self.log_path, 'rb') as f:
                data = f.read()
        except OSError:
            return '<no log>'
        text = data.decode('utf-8', 'replace').splitlines()
        return '\n'.join(text[-lines:])

    def log_text(self):
        """The whole kamailio log so far, as text."""
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def _signal_group(self, sig):
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _cleanup_process(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.process = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return '<KamailioRelay %s:%d tls:%d ws:%d wss:%d %s>' % (
            self.host, self.port, self.tls_port, self.ws_port, self.wss_port,
            'running' if self.running else 'stopped')
