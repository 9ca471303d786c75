"""Using msrplib from programs that do not run gevent: OS threads, asyncio and Twisted.

msrplib is gevent-native.  A program whose main thread runs something else
(an asyncio loop, a GUI toolkit, plain threads) uses it through this module:

* The gevent hub runs in a dedicated daemon thread owned by msrplib
  (:func:`hub_thread`), started on first use and stopped at interpreter exit.
  Every msrplib object the bridge makes is created in that thread and only
  ever used there (gevent hubs are per thread).
* :func:`call` runs a callable in that thread as a greenlet and returns a
  :class:`concurrent.futures.Future` carrying its result or exception.
* :class:`ThreadedConnector` / :class:`ThreadedAcceptor` / :class:`ThreadedSession`
  are the classic API for OS threads: their blocking calls block only the
  calling thread; callbacks run on an executor the caller chooses.
* :class:`AsyncConnector` / :class:`AsyncAcceptor` / :class:`AsyncSession`
  are the same as coroutines for asyncio (callbacks on the caller's loop).
* :class:`TwistedConnector` / :class:`TwistedAcceptor` / :class:`TwistedSession`
  are the same returning Deferreds (callbacks in the reactor thread);
  Twisted is imported only when these are used, never required.

Errors are the classic API's exceptions (``MSRPTransactionError``,
``ConnectionDone``, ``MSRPConnectError``...), raised in the caller's thread
or task.  A call that outlives the hub thread (interpreter exit, :func:`stop`)
fails with :class:`BridgeClosed`.  See doc/bridge.md.
"""

import asyncio
import atexit
import collections
import concurrent.futures
import functools
import threading

import gevent
import gevent.event

import msrplib.message  # noqa: F401  (imported now, not lazily in the hub thread: an import holds the GIL for ms)
from msrplib.connect import get_acceptor, get_connector
from msrplib.session import GreenMSRPSession
from msrplib.transport import ConnectionDone

__all__ = ['BridgeClosed', 'BridgeFuture', 'call', 'hub_thread', 'in_hub_thread', 'stop', 'ThreadedConnector', 'ThreadedAcceptor',
           'ThreadedSession', 'ThreadedMessage', 'AsyncConnector', 'AsyncAcceptor', 'AsyncSession',
           'AsyncMessage', 'TwistedConnector', 'TwistedAcceptor', 'TwistedSession', 'TwistedMessage']

STOP_TIMEOUT = 2.0  # seconds stop() waits for the hub thread to end


class BridgeClosed(RuntimeError):
    """The bridge's hub thread is stopped (or stopping): the call did not run or did not finish."""


class BridgeFuture(concurrent.futures.Future):
    """The :class:`concurrent.futures.Future` of a :func:`call`.

    :meth:`cancel` before the call started cancels it (it never runs).  Once
    it runs, ``cancel()`` of an *interruptible* call kills its greenlet (the
    future then ends with :class:`concurrent.futures.CancelledError` as its
    exception); any other running call is detached: it goes on in the hub
    thread and its outcome is dropped.  Returns True in those cases, False
    when the call had already finished.
    """

    def __init__(self, interruptible=False, orphan=None):
        concurrent.futures.Future.__init__(self)
        self._interruptible = interruptible
        self._orphan = orphan        # called in the hub thread with a result nobody will take
        self._greenlet = None        # set in the hub thread once the call runs
        self.abandoned = False

    def cancel(self):
        """Cancel the call (not started), interrupt it (interruptible) or detach it; False once finished."""
        if concurrent.futures.Future.cancel(self):
            return True
        if self.done():
            return False
        self.abandoned = True
        if self._interruptible and _the_bridge is not None and not _the_bridge.closed:
            try:
                _the_bridge.call_soon(self._interrupt)
            except BridgeClosed:
                pass  # the hub thread is ending: it fails the call itself
        return True

    def _interrupt(self):
        # In the hub thread.
        if self._greenlet is not None and not self._greenlet.dead:
            self._greenlet.kill(block=False)


class _Bridge:
    """The hub thread and the queue of work handed to it."""

    def __init__(self):
        self._loop = None            # the hub's loop, once the hub thread made it
        self._early = []             # (function, args) handed over before that (under _guard)
        self._stopping = None        # gevent Event, made in the hub thread
        self._running = set()        # BridgeFutures of running calls (hub thread only)
        self._pending = set()        # BridgeFutures submitted and not finished (any thread, under _guard)
        self._guard = threading.Lock()
        self.closed = False
        # Started without waiting for the hub to be ready (making it takes milliseconds, which a caller's
        # event loop must not spend): work handed over meanwhile waits in _early.
        self.thread = threading.Thread(target=self._main, name='msrplib-hub', daemon=True)
        self.thread.start()

    def _main(self):
        hub = gevent.get_hub()
        self._stopping = gevent.event.Event()
        keepalive = hub.loop.async_()    # an active watcher: the loop never runs out of work while we live
        keepalive.start(lambda: None)
        with self._guard:
            self._loop = hub.loop
            early, self._early = self._early, []
        for function, args in early:
            hub.loop.run_callback(function, *args)
        try:
            self._stopping.wait()
        finally:
            keepalive.stop()
            keepalive.close()
            for future in list(self._running):
                if future._greenlet is not None:
                    future._greenlet.kill(BridgeClosed('msrplib bridge stopped'), block=False)
            gevent.sleep(0)
            gevent.sleep(0)
            self._fail_pending()

    def _post(self, function, *args):
        # Run function(*args) from the hub's loop, from any thread (also before the loop exists).
        with self._guard:
            if self._loop is None:
                self._early.append((function, args))
                return
        self._loop.run_callback_threadsafe(function, *args)

    def _set_stopping(self):
        self._stopping.set()

    def _fail_pending(self):
        # The hub is gone: no submitted call may wait for ever.
        with self._guard:
            self.closed = True
            pending, self._pending = self._pending, set()
        for future in pending:
            if future.done():
                continue
            try:
                future.set_running_or_notify_cancel()
                future.set_exception(BridgeClosed('msrplib bridge stopped'))
            except (RuntimeError, concurrent.futures.InvalidStateError):
                pass  # cancelled or finished meanwhile

    def call_soon(self, function, *args):
        """Run ``function(*args)`` in the hub thread, from the loop (it must not block)."""
        if self.closed:
            raise BridgeClosed('msrplib bridge stopped')
        self._post(function, *args)

    def submit(self, future, function, args, kwargs):
        with self._guard:
            if self.closed:
                raise BridgeClosed('msrplib bridge stopped')
            self._pending.add(future)
        future.add_done_callback(self._forget)
        self.call_soon(self._spawn, future, function, args, kwargs)

    def _forget(self, future):
        with self._guard:
            self._pending.discard(future)

    def _spawn(self, future, function, args, kwargs):
        if future.cancelled():
            return
        future._greenlet = gevent.spawn(self._run, future, function, args, kwargs)

    def _run(self, future, function, args, kwargs):
        if not future.set_running_or_notify_cancel():
            return
        if self.closed:   # stop() came first: what has not started yet does not start
            future.set_exception(BridgeClosed('msrplib bridge stopped'))
            return
        self._running.add(future)
        try:
            result = function(*args, **kwargs)
        except gevent.GreenletExit:
            future.set_exception(concurrent.futures.CancelledError())
        except BaseException as error:  # carried to the caller's thread, which raises it
            future.set_exception(error)
        else:
            if future.abandoned and future._orphan is not None:
                future._orphan(result)
                future.set_exception(concurrent.futures.CancelledError())
            else:
                future.set_result(result)
        finally:
            self._running.discard(future)

    def stop(self):
        with self._guard:
            if self.closed:
                return
            self.closed = True
        self._post(self._set_stopping)
        if threading.current_thread() is not self.thread:
            self.thread.join(STOP_TIMEOUT)
        self._fail_pending()  # (again: also when the thread did not end in time)


_lock = threading.Lock()
_the_bridge = None


def _bridge():
    global _the_bridge
    with _lock:
        if _the_bridge is None or _the_bridge.closed:
            if _the_bridge is not None:
                raise BridgeClosed('msrplib bridge stopped')
            _the_bridge = _Bridge()
            atexit.register(_the_bridge.stop)
        return _the_bridge


def hub_thread():
    """The :class:`threading.Thread` running msrplib's gevent hub (started here when not yet running)."""
    return _bridge().thread


def in_hub_thread():
    """True when called from the bridge's hub thread (where msrplib objects may be used directly)."""
    return _the_bridge is not None and threading.current_thread() is _the_bridge.thread


def stop():
    """Stop the hub thread (also done at interpreter exit): calls not finished fail with :class:`BridgeClosed`.

    Sessions still open are left to the operating system (their sockets
    close with the process).  The bridge cannot be restarted afterwards.
    """
    if _the_bridge is not None:
        _the_bridge.stop()


def call(function, *args, **kwargs):
    """Run ``function(*args, **kwargs)`` as a greenlet in the hub thread; return its :class:`BridgeFuture`.

    The future's result is what the function returned, its exception what
    it raised.  Must not be called from the hub thread itself when the
    caller then waits for the future (that would deadlock: call the
    function directly there).  Raises :class:`BridgeClosed` after :func:`stop`.
    """
    return _call(BridgeFuture(), function, args, kwargs)


def _call(future, function, args, kwargs):
    _bridge().submit(future, function, args, kwargs)
    return future


def _result(future, timeout):
    """Wait for ``future`` in the calling thread; on timeout detach it and raise TimeoutError."""
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError('no outcome within %s seconds (the operation was detached)' % timeout) from None


def _run_on(executor, function):
    """``function`` wrapped to run on ``executor`` (None: call it as is)."""
    if function is None:
        return None

    def submit(*args, **kwargs):
        executor.submit(function, *args, **kwargs)
    return submit


def _default_executor():
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix='msrplib-cb')
        return _executor


_executor = None


# -- OS threads


class _ThreadedConnectBase:
    _factory = None

    def __init__(self, relay=None, logger=None, use_sessmatch=False, executor=None, **session_options):
        self.executor = executor or _default_executor()
        self._session_options = session_options
        self._arguments = (relay, logger, use_sessmatch)
        self._connect_object = None   # made in the hub thread by the first call (constructing never blocks)

    def _connect(self):
        # In the hub thread: the classic connector or acceptor.
        if self._connect_object is None:
            relay, logger, use_sessmatch = self._arguments
            self._connect_object = self._factory(relay, logger=logger, use_sessmatch=use_sessmatch)
        return self._connect_object

    def _prepare(self, local_uri):
        return self._connect().prepare(local_uri)

    def _complete(self, full_remote_path):
        return GreenMSRPSession(self._connect().complete(full_remote_path), **self._session_options)

    def _cleanup(self, sync):
        return self._connect().cleanup(sync)

    def prepare(self, local_uri=None, timeout=None):
        """As the classic ``prepare()``: return the full local path (for SDP ``a=path``)."""
        return _result(call(self._prepare, local_uri), timeout)

    def complete(self, full_remote_path, timeout=None):
        """As the classic ``complete()``; return a :class:`ThreadedSession` over the bound transport.

        Raises what the classic call raises (``MSRPConnectError``,
        ``MSRPIncomingConnectTimeout``...), TimeoutError after ``timeout``
        seconds (the connect attempt is cancelled then).
        """
        future = _call(BridgeFuture(interruptible=True), self._complete, (full_remote_path,), {})
        return ThreadedSession(_result(future, timeout), self.executor)

    def cleanup(self, sync=True, timeout=None):
        """As the classic ``cleanup()``: release what :meth:`prepare` took."""
        return _result(call(self._cleanup, sync), timeout)


class ThreadedConnector(_ThreadedConnectBase):
    """The calling side, for OS threads: ``ThreadedConnector(relay=None, executor=None, **session_options)``.

    Wraps :func:`msrplib.connect.get_connector` (made in the hub thread);
    ``session_options`` go to the :class:`~msrplib.session.GreenMSRPSession`
    that :meth:`complete` makes (``accept_types``, ``automatic_reports``,
    ``assembler``).  ``executor`` runs the callbacks of the sessions made
    (default: a small shared ThreadPoolExecutor).
    """
    _factory = staticmethod(get_connector)


class ThreadedAcceptor(_ThreadedConnectBase):
    """The answering side, for OS threads: as :class:`ThreadedConnector` over :func:`~msrplib.connect.get_acceptor`."""
    _factory = staticmethod(get_acceptor)


class _MessageView:
    """What every facade's message shows of the OutgoingMessage in ``message`` and its outcome Future."""

    def __repr__(self):
        return '<%s %r>' % (type(self).__name__, self.message)

    @property
    def message_id(self):
        """The Message-ID of the message."""
        return self.message.message_id

    @property
    def file_selector(self):
        """The RFC 5547 file-selector (messages made by ``send_file``), else None."""
        return getattr(self.message, 'file_selector', None)

    @property
    def done(self):
        """True once the outcome is known."""
        return self._outcome.done()


class ThreadedMessage(_MessageView):
    """A message being sent (:meth:`ThreadedSession.send_large_message`), seen from another thread.

    ``message`` is the :class:`~msrplib.message.OutgoingMessage` (read its
    counters, do not call it); :meth:`wait` blocks the calling thread.
    """

    def __init__(self, message, future):
        self.message = message
        self._outcome = future

    def wait(self, timeout=None):
        """Block until the message is delivered (returns self) or failed (raises MSRPTransactionError).

        Raises TimeoutError after ``timeout`` seconds (the message goes on).
        """
        try:
            self._outcome.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError('message %s not finished within %s seconds' % (self.message_id, timeout)) from None
        return self

    def abort(self):
        """Stop sending (see ``OutgoingMessage.abort``); the outcome becomes a failure with code 0."""
        call(self.message.abort).result()


def _outcome_future(message):
    # In the hub thread: a Future set when ``message`` ends.  It is marked running at once so that no
    # caller can cancel it (an asyncio wait that is cancelled must not end it for the other waiters).
    future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()

    def ended(outcome):
        if outcome.successful():
            future.set_result(message)
        else:
            future.set_exception(outcome.exception)
    message.outcome.rawlink(ended)
    return future


class _SessionView:
    """What every facade's session shows of the GreenMSRPSession in ``session``."""

    def __repr__(self):
        return '<%s %r>' % (type(self).__name__, self.session)

    @property
    def msrp(self):
        """The bound transport (read its attributes, e.g. ``getPeer()``; do not call its I/O methods)."""
        return self.session.msrp

    @property
    def connected(self):
        """True while the session can send."""
        return self.session.connected


class ThreadedSession(_SessionView):
    """A :class:`~msrplib.session.GreenMSRPSession` used from OS threads.

    Made by ``ThreadedConnector/ThreadedAcceptor.complete()``, or
    ``ThreadedSession(green_session, executor)`` around a session made in
    the hub thread.  Every blocking method blocks only the calling thread
    and takes ``timeout`` (seconds, None: no limit), after which it raises
    TimeoutError and the operation goes on detached (``receive_chunk`` takes
    nothing then).  Callbacks (``response_cb``, ``progress_cb``,
    ``on_incoming``) run on ``executor``.
    """

    def __init__(self, session, executor=None):
        self.session = session
        self.executor = executor or _default_executor()
        self._stash = collections.deque()    # chunks received for callers who had gone (hub thread only)
        self._pump = None

    def _do(self, function, *args, timeout=None, **kwargs):
        return _result(call(function, *args, **kwargs), timeout)

    def make_message(self, msg, content_type, message_id=None):
        """A SEND chunk carrying ``msg`` (see ``MSRPSession.make_message``)."""
        return self._do(self.session.make_message, msg, content_type, message_id)

    def deliver_message(self, msg, content_type, timeout=None):
        """Send ``msg`` as one chunk and wait for its 2xx (returned); MSRPTransactionError otherwise."""
        return self._do(self.session.deliver_message, msg, content_type, timeout=timeout)

    def deliver_chunk(self, chunk, timeout=None):
        """Send ``chunk`` and wait for its 2xx (returned); MSRPTransactionError otherwise."""
        return self._do(self.session.deliver_chunk, chunk, timeout=timeout)

    def send_chunk(self, chunk, response_cb=None, timeout=None):
        """Queue ``chunk``; ``response_cb(response)`` runs on the executor (one outcome per chunk)."""
        return self._do(self.session.send_chunk, chunk, _run_on(self.executor, response_cb), timeout=timeout)

    def send_message(self, msg, content_type, timeout=None):
        """Queue ``msg`` as one SEND chunk; returns the chunk."""
        return self._do(self.session.send_message, msg, content_type, timeout=timeout)

    def _sending(self, method, args, kwargs):
        progress_cb = kwargs.pop('progress_cb', None)
        timeout = kwargs.pop('timeout', None)

        def start():
            message = method(*args, progress_cb=self._progress(progress_cb), **kwargs)
            return message, _outcome_future(message)
        message, future = _result(call(start), timeout)
        return ThreadedMessage(message, future)

    def _progress(self, progress_cb):
        return _run_on(self.executor, progress_cb)

    def send_large_message(self, source, content_type, **kwargs):
        """As ``MSRPSession.send_large_message``; returns a :class:`ThreadedMessage` (``progress_cb`` on the executor).

        ``timeout`` bounds the wait for the message to be queued (the
        session's outgoing queue may be full), not its delivery (see
        :meth:`ThreadedMessage.wait`).

        A file object ``source`` is read in the hub thread as the chunks go out.
        """
        return self._sending(self.session.send_large_message, (source, content_type), kwargs)

    def send_file(self, file, **kwargs):
        """As ``MSRPSession.send_file``; returns a :class:`ThreadedMessage`."""
        return self._sending(self.session.send_file, (file,), kwargs)

    def _receive(self, timeout):
        # In the hub thread: a chunk left by a caller who had gone first, then the queue.
        if self._stash:
            return self._stash.popleft()
        if timeout is None:
            return self.session.receive_chunk()
        with gevent.Timeout(timeout, TimeoutError('no chunk within %s seconds' % timeout)):
            return self.session.receive_chunk()

    def _receive_future(self, timeout=None):
        return _call(BridgeFuture(interruptible=True, orphan=self._stash.append), self._receive, (timeout,), {})

    def receive_chunk(self, timeout=None):
        """Return the next incoming chunk; once the session has ended, raise why (``ConnectionDone``...).

        Raises TimeoutError when none comes within ``timeout`` seconds
        (nothing is lost: a chunk arriving later is for the next call).
        """
        return self._receive_future(timeout).result()

    def __iter__(self):
        """Incoming chunks until the session ends cleanly (``ConnectionDone``); other ends raise."""
        while True:
            try:
                yield self.receive_chunk()
            except ConnectionDone:
                return

    def on_incoming(self, callback):
        """Deliver every incoming chunk as ``callback(chunk)`` on the executor, in order, one at a time.

        The end of the session comes as ``callback(None, error=exception)``.
        The next chunk is taken only once the callback returned, so a slow
        callback holds the peer back (no unbounded buffering).  Use either
        this or :meth:`receive_chunk`, not both.
        """
        executor = self.executor

        def pump():
            while True:
                try:
                    chunk = self._receive(None)
                except gevent.GreenletExit:
                    raise
                except BaseException as error:  # the end of the session: handed to the callback
                    executor.submit(callback, None, error=error)
                    return
                done = gevent.event.Event()
                loop = gevent.get_hub().loop
                executor.submit(callback, chunk).add_done_callback(
                    lambda _: loop.run_callback_threadsafe(done.set))
                done.wait()
        self._pump = call(pump)

    def shutdown(self, sync=True, timeout=None):
        """As ``MSRPSession.shutdown``: flush, wait for the pending responses, close."""
        return self._do(self.session.shutdown, sync, timeout=timeout)


# -- asyncio


async def _await(future):
    # Await a BridgeFuture from asyncio: cancelling the awaiting task cancels (or detaches) the call.
    return await asyncio.wrap_future(future)


class _AsyncConnectBase:
    _threaded = None

    def __init__(self, *args, **kwargs):
        # Never blocks the loop: the classic object is made in the hub thread by the first call.
        self._inner = self._threaded(*args, **kwargs)
        self.executor = self._inner.executor

    async def prepare(self, local_uri=None):
        """As the classic ``prepare()``: the full local path."""
        return await _await(call(self._inner._prepare, local_uri))

    async def complete(self, full_remote_path):
        """As the classic ``complete()``; an :class:`AsyncSession`.  Cancelling the task cancels the attempt."""
        session = await _await(_call(BridgeFuture(interruptible=True), self._inner._complete, (full_remote_path,), {}))
        return AsyncSession(ThreadedSession(session, self.executor))

    async def cleanup(self, sync=True):
        """As the classic ``cleanup()``."""
        return await _await(call(self._inner._cleanup, sync))


class AsyncConnector(_AsyncConnectBase):
    """The calling side, for asyncio: ``AsyncConnector(relay=None, **session_options)``; coroutines."""
    _threaded = ThreadedConnector


class AsyncAcceptor(_AsyncConnectBase):
    """The answering side, for asyncio: as :class:`AsyncConnector` over ``get_acceptor``."""
    _threaded = ThreadedAcceptor


class AsyncMessage(_MessageView):
    """A message being sent (:meth:`AsyncSession.send_large_message`): ``await message.wait()``."""

    def __init__(self, threaded):
        self.message = threaded.message
        self._outcome = threaded._outcome

    async def wait(self):
        """Wait for delivery (returns self) or failure (raises MSRPTransactionError).

        Cancelling the waiting task does not stop the message (use :meth:`abort`).
        """
        await asyncio.wrap_future(self._outcome)
        return self

    async def abort(self):
        """Stop sending; the outcome becomes a failure with code 0."""
        await _await(call(self.message.abort))


class AsyncSession(_SessionView):
    """A :class:`~msrplib.session.GreenMSRPSession` used from asyncio: its methods are coroutines.

    Callbacks (``response_cb``, ``progress_cb``) run on the loop of the
    task that made the call.  ``async for chunk in session`` yields incoming
    chunks until the session ends cleanly.  Cancelling a task that awaits a
    call cancels the call when it can be (``receive_chunk``, ``complete``;
    a chunk that arrives meanwhile is kept for the next receive) and
    detaches it otherwise (the chunk or message still goes out).
    """

    def __init__(self, session):
        self._inner = session if isinstance(session, ThreadedSession) else ThreadedSession(session)
        self.session = self._inner.session

    @staticmethod
    def _on_loop(function):
        if function is None:
            return None
        loop = asyncio.get_running_loop()

        def deliver(*args, **kwargs):
            loop.call_soon_threadsafe(functools.partial(function, *args, **kwargs))
        return deliver

    async def deliver_message(self, msg, content_type):
        """Send ``msg`` as one chunk; the 2xx response, or MSRPTransactionError."""
        return await _await(call(self.session.deliver_message, msg, content_type))

    async def deliver_chunk(self, chunk):
        """Send ``chunk``; the 2xx response, or MSRPTransactionError."""
        return await _await(call(self.session.deliver_chunk, chunk))

    async def make_message(self, msg, content_type, message_id=None):
        """A SEND chunk carrying ``msg``."""
        return await _await(call(self.session.make_message, msg, content_type, message_id))

    async def send_chunk(self, chunk, response_cb=None):
        """Queue ``chunk``; ``response_cb(response)`` runs on this loop."""
        return await _await(call(self.session.send_chunk, chunk, self._on_loop(response_cb)))

    async def _sending(self, method, args, kwargs):
        progress_cb = self._on_loop(kwargs.pop('progress_cb', None))

        def start():
            message = method(*args, progress_cb=progress_cb, **kwargs)
            return message, _outcome_future(message)
        message, future = await _await(call(start))
        return AsyncMessage(ThreadedMessage(message, future))

    async def send_large_message(self, source, content_type, **kwargs):
        """As ``MSRPSession.send_large_message``; an :class:`AsyncMessage` (``progress_cb`` on this loop)."""
        return await self._sending(self.session.send_large_message, (source, content_type), kwargs)

    async def send_file(self, file, **kwargs):
        """As ``MSRPSession.send_file``; an :class:`AsyncMessage`."""
        return await self._sending(self.session.send_file, (file,), kwargs)

    async def receive_chunk(self):
        """The next incoming chunk; once the session has ended, raises why (``ConnectionDone``...)."""
        return await _await(self._inner._receive_future())

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.receive_chunk()
        except ConnectionDone:
            raise StopAsyncIteration from None

    async def shutdown(self, sync=True):
        """Flush, wait for the pending responses, close."""
        return await _await(call(self.session.shutdown, sync))


# -- Twisted (optional: imported only when a Twisted facade is used)


def _twisted_reactor(reactor):
    if reactor is not None:
        return reactor
    from twisted.internet import reactor as installed   # the reactor the program installed (or the default)
    return installed


def _deferred(future, reactor):
    """A Deferred that fires in the reactor thread with ``future``'s outcome.

    Its result is the future's result; its failure wraps the very exception
    the call raised.  Cancelling the Deferred cancels the future (see
    :meth:`BridgeFuture.cancel`: not started, interrupted or detached) and
    fails the Deferred with ``twisted.internet.defer.CancelledError``.
    """
    from twisted.internet import defer
    from twisted.python.failure import Failure

    deferred = defer.Deferred(lambda _: future.cancel())

    def fire(done):
        if deferred.called:      # cancelled meanwhile: the outcome is nobody's
            return
        if done.cancelled():
            deferred.cancel()
            return
        error = done.exception()
        if error is not None:
            deferred.errback(Failure(error, type(error), error.__traceback__))
        else:
            deferred.callback(done.result())
    future.add_done_callback(lambda done: reactor.callFromThread(fire, done))
    return deferred


def _in_reactor(reactor, function):
    """``function`` wrapped to run in the reactor thread (None: None)."""
    if function is None:
        return None

    def deliver(*args, **kwargs):
        reactor.callFromThread(function, *args, **kwargs)
    return deliver


class _TwistedConnectBase:
    _threaded = None

    def __init__(self, relay=None, logger=None, use_sessmatch=False, reactor=None, **session_options):
        self.reactor = _twisted_reactor(reactor)
        self._inner = self._threaded(relay, logger, use_sessmatch, **session_options)

    def prepare(self, local_uri=None):
        """As the classic ``prepare()``: a Deferred firing with the full local path."""
        return _deferred(call(self._inner._prepare, local_uri), self.reactor)

    def complete(self, full_remote_path):
        """As the classic ``complete()``: a Deferred firing with a :class:`TwistedSession`.

        Its failure wraps what the classic call raises (``MSRPConnectError``,
        ``MSRPIncomingConnectTimeout``...).  Cancelling it cancels the
        connect attempt or the wait for the peer (then call :meth:`cleanup`).
        """
        future = _call(BridgeFuture(interruptible=True), self._inner._complete, (full_remote_path,), {})
        deferred = _deferred(future, self.reactor)
        deferred.addCallback(lambda session: TwistedSession(session, self.reactor))
        return deferred

    def cleanup(self, sync=True):
        """As the classic ``cleanup()``: a Deferred."""
        return _deferred(call(self._inner._cleanup, sync), self.reactor)


class TwistedConnector(_TwistedConnectBase):
    """The calling side, for Twisted: ``TwistedConnector(relay=None, reactor=None, **session_options)``.

    As :class:`ThreadedConnector`, with Deferreds that fire in the reactor
    thread (``reactor``: default the installed global reactor).  Raises
    ImportError when Twisted is not installed.
    """
    _threaded = ThreadedConnector


class TwistedAcceptor(_TwistedConnectBase):
    """The answering side, for Twisted: as :class:`TwistedConnector` over ``get_acceptor``."""
    _threaded = ThreadedAcceptor


class TwistedMessage(_MessageView):
    """A message being sent (:meth:`TwistedSession.send_large_message`): ``message.wait()`` is a Deferred."""

    def __init__(self, threaded, reactor):
        self.message = threaded.message
        self._outcome = threaded._outcome
        self.reactor = reactor

    def wait(self):
        """A Deferred firing with this message once delivered; its failure wraps MSRPTransactionError.

        Cancelling it stops only the wait: the message goes on (use :meth:`abort`).
        """
        deferred = _deferred(self._outcome, self.reactor)   # (the outcome future cannot be cancelled)
        deferred.addCallback(lambda _: self)
        return deferred

    def abort(self):
        """Stop sending (a Deferred); the outcome becomes a failure with code 0."""
        return _deferred(call(self.message.abort), self.reactor)


class TwistedSession(_SessionView):
    """A :class:`~msrplib.session.GreenMSRPSession` used from a Twisted reactor: methods return Deferreds.

    Deferreds fire, and callbacks (``response_cb``, ``progress_cb``,
    :meth:`on_incoming`) run, in the reactor thread.  Failures wrap the
    classic exceptions (``MSRPTransactionError``, ``ConnectionDone``,
    ``MSRPSessionError``...).  Cancelling a Deferred cancels the call when
    it can be (``receive_chunk``, ``complete``; a chunk that arrives
    meanwhile is kept for the next receive) and detaches it otherwise (the
    chunk or message still goes out, its outcome is dropped).
    """

    def __init__(self, session, reactor=None):
        self._inner = session if isinstance(session, ThreadedSession) else ThreadedSession(session)
        self.session = self._inner.session
        self.reactor = _twisted_reactor(reactor)

    def _do(self, function, *args):
        return _deferred(call(function, *args), self.reactor)

    def deliver_message(self, msg, content_type):
        """Send ``msg`` as one chunk: a Deferred of the 2xx response; failure: MSRPTransactionError."""
        return self._do(self.session.deliver_message, msg, content_type)

    def deliver_chunk(self, chunk):
        """Send ``chunk``: a Deferred of the 2xx response; failure: MSRPTransactionError."""
        return self._do(self.session.deliver_chunk, chunk)

    def make_message(self, msg, content_type, message_id=None):
        """A Deferred of a SEND chunk carrying ``msg``."""
        return self._do(self.session.make_message, msg, content_type, message_id)

    def send_chunk(self, chunk, response_cb=None):
        """Queue ``chunk`` (a Deferred firing once queued); ``response_cb(response)`` runs in the reactor thread."""
        return self._do(self.session.send_chunk, chunk, _in_reactor(self.reactor, response_cb))

    def send_message(self, msg, content_type):
        """Queue ``msg`` as one SEND chunk: a Deferred of the chunk."""
        return self._do(self.session.send_message, msg, content_type)

    def _sending(self, method, args, kwargs):
        progress_cb = _in_reactor(self.reactor, kwargs.pop('progress_cb', None))

        def start():
            message = method(*args, progress_cb=progress_cb, **kwargs)
            return message, _outcome_future(message)
        deferred = _deferred(call(start), self.reactor)
        deferred.addCallback(lambda started: TwistedMessage(ThreadedMessage(*started), self.reactor))
        return deferred

    def send_large_message(self, source, content_type, **kwargs):
        """As ``MSRPSession.send_large_message``: a Deferred of a :class:`TwistedMessage`.

        ``progress_cb`` runs in the reactor thread.
        """
        return self._sending(self.session.send_large_message, (source, content_type), kwargs)

    def send_file(self, file, **kwargs):
        """As ``MSRPSession.send_file``: a Deferred of a :class:`TwistedMessage`."""
        return self._sending(self.session.send_file, (file,), kwargs)

    def receive_chunk(self):
        """A Deferred of the next incoming chunk; once the session has ended, its failure says why.

        Cancelling it takes nothing: a chunk arriving later is for the next call.
        """
        return _deferred(self._inner._receive_future(), self.reactor)

    def on_incoming(self, callback):
        """Deliver every incoming chunk as ``callback(chunk)`` in the reactor thread, in order.

        The end of the session comes as ``callback(None, error=failure)``
        (a ``Failure`` wrapping ``ConnectionDone``, ``ConnectionLost``...),
        as the classic ``on_incoming_cb``.  The next chunk is taken only
        once the callback returned -- or, when it returns a Deferred, once
        that fired -- so a slow consumer holds the peer back instead of
        buffering without limit.  Use either this or :meth:`receive_chunk`.
        """
        from twisted.internet import defer
        from twisted.python import log
        from twisted.python.failure import Failure
        reactor = self.reactor

        def run(chunk, done):
            # In the reactor thread; ``done`` is called in the hub thread's loop once the chunk is consumed.
            deferred = defer.maybeDeferred(callback, chunk)
            deferred.addErrback(log.err, 'msrplib.bridge: on_incoming callback failed')  # (logged; the flow goes on)
            deferred.addBoth(lambda _: done())

        def pump():
            loop = gevent.get_hub().loop
            while True:
                try:
                    chunk = self._inner._receive(None)
                except gevent.GreenletExit:
                    raise
                except BaseException as error:  # the end of the session: handed to the callback
                    reactor.callFromThread(callback, None, error=Failure(error, type(error), error.__traceback__))
                    return
                consumed = gevent.event.Event()
                reactor.callFromThread(run, chunk, lambda: loop.run_callback_threadsafe(consumed.set))
                consumed.wait()
        self._inner._pump = call(pump)

    def shutdown(self, sync=True):
        """Flush, wait for the pending responses, close: a Deferred."""
        return self._do(self.session.shutdown, sync)
