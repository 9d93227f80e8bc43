"""Pool mode: a long-lived worker that serves task handlers over one gRPC session.

The worker opens ``WorkerService.Session``, attaches with its handlers and slot
count, and the server pushes assignments (never more than the free slots),
cancellations and pings. An assignment is already started on the server, and
the server keeps it alive while the session lives, so the worker sends no
start and no heartbeats. Each attempt runs in its own thread; its log lines
(in batches) and its outcome go back over the same stream as
``SessionReport`` messages, which the server commits together with other
workers' reports and answers one by one. An answer of FAILED_PRECONDITION
means the attempt is no longer ours: the worker stops it and reports nothing
more. When the stream breaks the worker attaches again with backoff; the
server has given the broken session's attempts to others meanwhile, so what
they report later is refused and dropped.

Authentication and TLS: every call carries ``authorization: Bearer TOKEN``
(a worker token from ``ork token create --role worker``) when a token is set;
an ``https://`` server is reached over TLS, trusting a CA file when one is
given. Each setting defaults to the variable every ork client reads:
``ORK_TOKEN``, ``ORK_CA_CERT``, ``ORK_CLIENT_CERT``, ``ORK_CLIENT_KEY`` and
``ORK_TLS_SERVER_NAME``.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import socket
import threading
import time
from datetime import timezone
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from . import _stdio
from ._context import Context
from ._errors import NonRetryable
from ._task import TaskDefinition, definition_of, format_error, normalize_numbers
from ._trace import task_span
from .v1 import worker_pb2, worker_pb2_grpc

__all__ = ["Worker", "WorkerError", "DEFAULT_SERVER"]

#: Where a worker connects when neither ``server`` nor ``ORK_SERVER`` says.
DEFAULT_SERVER = "http://127.0.0.1:7400"

_SDK_VERSION = "0.1.0"

#: Log lines are sent at least this often, in seconds...
_LOG_FLUSH_INTERVAL = 0.2
#: ...or as soon as one attempt has this many waiting.
_LOG_BATCH_LINES = 500

#: Gaps between reconnect attempts grow up to this many seconds.
_MAX_BACKOFF = 5.0
#: How long a draining worker waits for the server to confirm that no more
#: assignments follow, in seconds.
_DRAIN_NOTICE = 10.0
#: How long a draining worker waits for the answers to its last reports.
_REPORTS_SETTLE = 30.0

#: The gRPC code of a report refused because the attempt is no longer current.
_FAILED_PRECONDITION = 9

_log = logging.getLogger("ork.worker")

AttemptKey = Tuple[str, int]
Metadata = Tuple[Tuple[str, str], ...]


class WorkerError(Exception):
    """The worker cannot serve: the server refused the session for good."""


class _Stale(Exception):
    """The server no longer considers the attempt current."""


class _Attempt:
    """One running assignment: its fence, context and log buffers."""

    def __init__(self, ref: worker_pb2.AttemptRef, spec: worker_pb2.TaskSpec, batcher: "_LogBatcher") -> None:
        self.ref = ref
        self.spec = spec
        self.key: AttemptKey = (ref.task_run_id, ref.attempt)
        # Set when the server cancelled it or the attempt went stale: nothing
        # more is reported for it.
        self.abandoned = False
        self.send_lock = threading.Lock()
        self._batcher = batcher
        self._partial: Dict[str, str] = {}
        self._partial_lock = threading.Lock()
        deadline = None
        if spec.HasField("deadline"):
            deadline = spec.deadline.ToDatetime().replace(tzinfo=timezone.utc)
        self.ctx = Context(
            run_id=spec.run_id,
            workflow=spec.workflow,
            task_name=spec.task_name,
            task_run_id=ref.task_run_id,
            attempt=ref.attempt,
            parallel_index=spec.parallel_index if spec.HasField("parallel_index") else None,
            parallel_count=spec.parallel_count if spec.HasField("parallel_count") else None,
            deadline=deadline,
            log_sink=lambda line: batcher.add(self, "stderr", line),
            traceparent=spec.traceparent,
        )

    def abandon(self) -> None:
        """Stops reporting for this attempt and tells the task to stop."""
        self.abandoned = True
        self.ctx._set_cancelled()

    def write(self, stream: str, text: str) -> None:
        """Receives ``print`` output of the task; whole lines go to the log."""
        with self._partial_lock:
            buffered = self._partial.get(stream, "") + text
            *lines, rest = buffered.split("\n")
            self._partial[stream] = rest
        for line in lines:
            self._batcher.add(self, stream, line.rstrip("\r"))

    def flush_partial(self) -> None:
        """Sends what the task printed without a final newline."""
        with self._partial_lock:
            partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            if rest:
                self._batcher.add(self, stream, rest)


class Worker:
    """A long-lived pool worker serving task functions by handler name.

    Example::

        @ork.task
        def resize(ctx, input):
            ...

        if __name__ == "__main__":
            ork.Worker(tasks=[resize], slots=8).run()

    A workflow task reaches it with ``executor: workers`` and
    ``handler: resize``. :meth:`run` blocks until the worker is stopped by
    SIGTERM, SIGINT or :meth:`stop`; it then asks the server for no more work,
    finishes the running tasks and returns.
    """

    def __init__(
        self,
        tasks: Sequence[Callable[..., Any]],
        *,
        server: Optional[str] = None,
        slots: int = 4,
        name: Optional[str] = None,
        token: Optional[str] = None,
        ca_cert: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
        server_name: Optional[str] = None,
    ) -> None:
        """Prepares a worker; nothing connects until :meth:`run`.

        ``tasks`` are functions (decorated with ``@ork.task`` or not; an
        undecorated one is served under its ``__name__``). ``server`` defaults
        to ``$ORK_SERVER``, then ``http://127.0.0.1:7400``. ``slots`` is how many
        tasks run at once. ``name`` shows in the server's view of its workers
        (default ``host:pid``).

        ``token`` is the worker token sent with every call (default
        ``$ORK_TOKEN``). For an ``https://`` server, ``ca_cert`` is a PEM file
        of the CA to trust (default ``$ORK_CA_CERT``, else the system's
        roots), ``client_cert`` and ``client_key`` a client certificate for
        servers that require one (``$ORK_CLIENT_CERT``, ``$ORK_CLIENT_KEY``),
        and ``server_name`` the name to check the server's certificate for
        when it differs from the URL's host (``$ORK_TLS_SERVER_NAME``).
        """
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._tasks: Dict[str, TaskDefinition] = {}
        for fn in tasks:
            definition = fn if isinstance(fn, TaskDefinition) else definition_of(fn)
            if definition.name in self._tasks:
                raise ValueError(f"two tasks are named {definition.name!r}; give one @ork.task(name=...)")
            self._tasks[definition.name] = definition
        if not self._tasks:
            raise ValueError("a worker needs at least one task")
        self.server = server or os.environ.get("ORK_SERVER") or DEFAULT_SERVER
        self._tls = _TlsSettings(
            ca_cert=ca_cert or _env("ORK_CA_CERT"),
            client_cert=client_cert or _env("ORK_CLIENT_CERT"),
            client_key=client_key or _env("ORK_CLIENT_KEY"),
            server_name=server_name or _env("ORK_TLS_SERVER_NAME"),
        )
        self._tls.check(self.server)
        token = token or _env("ORK_TOKEN")
        self._metadata: Metadata = (("authorization", f"Bearer {token.strip()}"),) if token else ()
        self.slots = slots
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running: Dict[AttemptKey, _Attempt] = {}
        self._idle = threading.Condition(self._lock)
        self._stub: Optional[worker_pb2_grpc.WorkerServiceStub] = None
        self._reporter = _Reporter()
        self._batcher = _LogBatcher(self._reporter)
        self.session_id: Optional[str] = None

    @property
    def handlers(self) -> List[str]:
        """The handler names this worker serves."""
        return sorted(self._tasks)

    @property
    def running(self) -> int:
        """How many attempts run now."""
        with self._lock:
            return len(self._running)

    def stop(self) -> None:
        """Asks :meth:`run` to drain: no new work, finish running tasks, return.

        Safe to call from any thread or a signal handler.
        """
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Serves tasks until stopped; reconnects when the session breaks.

        Raises :class:`WorkerError` when the server refuses the session for a
        reason retrying cannot fix (no pool support, invalid attach).
        """
        channel = _open_channel(self.server, self._tls)
        self._stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self._batcher.start()
        restore_signals = self._install_signal_handlers()
        _stdio.install()
        try:
            backoff = 0.2
            while not self._stopping.is_set():
                attached = self._session()
                if self._stopping.is_set():
                    break
                backoff = 0.2 if attached else min(backoff * 2, _MAX_BACKOFF)
                delay = backoff * (0.5 + random.random())
                _log.warning("ork worker: session with %s ended; attaching again in %.1fs", self.server, delay)
                self._wake.clear()
                self._wake.wait(delay)
            self._wait_idle()
        finally:
            _stdio.uninstall()
            self._batcher.close()
            channel.close()
            restore_signals()

    # -- the session ---------------------------------------------------------

    def _session(self) -> bool:
        """Runs one session until it ends; returns whether it attached."""
        assert self._stub is not None
        requests: "queue.Queue[Optional[worker_pb2.SessionRequest]]" = queue.Queue()
        requests.put(
            worker_pb2.SessionRequest(
                attach=worker_pb2.WorkerAttach(
                    name=self.name, handlers=self.handlers, slots=self.slots, sdk=f"python/{_SDK_VERSION}"
                )
            )
        )
        call: Any = self._stub.Session(_drain_queue(requests), metadata=self._metadata)
        state = _SessionState()
        self._reporter.open(requests)
        reader = threading.Thread(
            target=self._read_session, args=(call, requests, state), name="ork-session", daemon=True
        )
        reader.start()
        drain_sent_at: Optional[float] = None
        closed_at: Optional[float] = None
        while reader.is_alive():
            self._wake.wait(0.25)
            self._wake.clear()
            now = time.monotonic()
            if self._stopping.is_set():
                if drain_sent_at is None:
                    requests.put(worker_pb2.SessionRequest(drain=worker_pb2.WorkerDrain()))
                    drain_sent_at = now
                # Assignments sent before the server saw the drain are started
                # on its side: wait for its notice that none follow, for the
                # running tasks, and for the answers to their reports.
                noticed = state.drained or now - drain_sent_at > _DRAIN_NOTICE
                settled = self._reporter.pending() == 0 or now - drain_sent_at > _REPORTS_SETTLE
                if closed_at is None and noticed and self.running == 0 and settled:
                    requests.put(None)  # half-close: we are done
                    closed_at = now
                if closed_at is not None and now - closed_at > 5:
                    call.cancel()
            elif state.silent_for(now) > state.patience():
                _log.warning("ork worker: no message from the server for %.0fs; reconnecting", state.silent_for(now))
                call.cancel()
        reader.join()
        # The server gives a broken session's attempts to others: whatever
        # they report from now on would be refused.
        self._reporter.close()
        if state.fatal is not None:
            raise state.fatal
        return state.attached

    def _read_session(
        self,
        call: Any,
        requests: "queue.Queue[Optional[worker_pb2.SessionRequest]]",
        state: "_SessionState",
    ) -> None:
        try:
            for response in call:
                state.seen()
                kind = response.WhichOneof("message")
                if kind == "attached":
                    if not response.attached.session_reports:
                        state.fatal = WorkerError(
                            f"the server {self.server} does not take reports over the session; upgrade the server"
                        )
                        self._stopping.set()
                        call.cancel()
                        return
                    state.attached = True
                    state.ping_interval = float(response.attached.ping_interval_seconds or 0)
                    self.session_id = response.attached.session_id
                    _log.info(
                        "ork worker %s attached to %s (session %s, handlers %s, %d slots)",
                        self.name, self.server, self.session_id, ", ".join(self.handlers), self.slots,
                    )
                elif kind == "ping":
                    requests.put(worker_pb2.SessionRequest(pong=worker_pb2.WorkerPong(nonce=response.ping.nonce)))
                elif kind == "assignment":
                    self._start_attempt(response.assignment)
                elif kind == "cancel":
                    self._cancel_attempt(response.cancel)
                elif kind == "result":
                    self._reporter.answered(response.result)
                elif kind == "drained":
                    state.drained = True
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.CANCELLED and self._stopping.is_set():
                return
            if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                state.fatal = WorkerError(f"the server {self.server} refused the worker session: {code.name}: {e.details()}")
                self._stopping.set()
                return
            _log.warning("ork worker: session broke: %s: %s", code.name if code else "?", e.details())
        finally:
            requests.put(None)
            self._wake.set()

    def _cancel_attempt(self, cancel: worker_pb2.CancelAssignment) -> None:
        key = (cancel.attempt.task_run_id, cancel.attempt.attempt)
        with self._lock:
            attempt = self._running.get(key)
        if attempt is not None:
            attempt.ctx.log.warning("cancelled by the server: %s", cancel.reason or "no reason given")
            attempt.abandon()

    # -- attempts --------------------------------------------------------------

    def _start_attempt(self, assignment: worker_pb2.Assignment) -> None:
        attempt = _Attempt(assignment.attempt, assignment.spec, self._batcher)
        with self._lock:
            self._running[attempt.key] = attempt
        threading.Thread(
            target=self._run_attempt,
            args=(attempt,),
            name=f"ork-task-{assignment.spec.handler}-{attempt.ref.task_run_id}",
            daemon=True,
        ).start()

    def _run_attempt(self, attempt: _Attempt) -> None:
        try:
            self._execute(attempt)
        except Exception:  # noqa: BLE001 - one attempt must not take the worker down
            _log.exception("ork worker: attempt %s/%d could not be reported", *attempt.key)
        finally:
            with self._lock:
                self._running.pop(attempt.key, None)
                self._idle.notify_all()
            self._wake.set()

    def _execute(self, attempt: _Attempt) -> None:
        spec = attempt.spec
        definition = self._tasks.get(spec.handler)
        error: Optional[str] = None
        non_retryable = False
        output: Any = None
        token = _stdio.current_sink.set(attempt.write)
        try:
            if definition is None:
                raise NonRetryable(
                    f"this worker ({self.name}) has no handler {spec.handler!r}; it serves {', '.join(self.handlers)}"
                )
            raw_input = normalize_numbers(json_format.MessageToDict(spec.input)) if spec.HasField("input") else None
            with task_span(definition.name, spec.traceparent):
                output = definition.call(attempt.ctx, raw_input)
        except NonRetryable as e:
            error, non_retryable = format_error(e), True
        except BaseException as e:  # noqa: BLE001 - SystemExit in a task fails the task, not the worker
            error = format_error(e)
        finally:
            _stdio.current_sink.reset(token)
            attempt.flush_partial()
        if error is not None:
            attempt.ctx.log.error("%s", error)
        # The log lines go first: the server applies an attempt's reports in
        # the order they were sent.
        self._batcher.flush(attempt)
        if attempt.abandoned:
            return
        if error is None:
            value = struct_pb2.Value()
            json_format.ParseDict(output, value)
            self._reporter.send(
                attempt,
                success=worker_pb2.AttemptSuccess(output=value, metrics=attempt.ctx.metrics.snapshot()),
            )
        else:
            self._reporter.send(
                attempt,
                failure=worker_pb2.AttemptFailure(
                    error=error, non_retryable=non_retryable, metrics=attempt.ctx.metrics.snapshot()
                ),
            )

    def _wait_idle(self) -> None:
        with self._idle:
            while self._running:
                self._idle.wait(0.5)

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM and SIGINT drain the worker; a second one exits at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: Optional[FrameType]) -> None:
            if self._stopping.is_set():
                os.write(2, b"ork worker: second signal, exiting without waiting for running tasks\n")
                os._exit(128 + signum)
            os.write(2, b"ork worker: draining: finishing running tasks (signal again to exit now)\n")
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


class _SessionState:
    """What the reader thread learns about one session."""

    def __init__(self) -> None:
        self.attached = False
        self.drained = False
        self.fatal: Optional[WorkerError] = None
        self.ping_interval = 0.0
        self._last_seen = time.monotonic()

    def seen(self) -> None:
        self._last_seen = time.monotonic()

    def silent_for(self, now: float) -> float:
        return now - self._last_seen

    def patience(self) -> float:
        """How long the server may stay silent before the connection counts as dead."""
        if not self.attached:
            return 30.0
        if self.ping_interval <= 0:
            return float("inf")
        return max(3 * self.ping_interval, 5.0)


def _drain_queue(requests: "queue.Queue[Optional[worker_pb2.SessionRequest]]") -> Iterator[worker_pb2.SessionRequest]:
    """The request stream: messages from the queue until ``None``."""
    while True:
        item = requests.get()
        if item is None:
            return
        yield item


class _Reporter:
    """Sends attempts' reports over the current session and routes the answers.

    Reports go into the session's request queue in the order they are made;
    the server applies the reports of one attempt in that order. An answer of
    FAILED_PRECONDITION abandons the attempt.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: "Optional[queue.Queue[Optional[worker_pb2.SessionRequest]]]" = None
        self._next_id = 1
        self._waiting: Dict[int, _Attempt] = {}

    def open(self, requests: "queue.Queue[Optional[worker_pb2.SessionRequest]]") -> None:
        with self._lock:
            self._requests = requests

    def close(self) -> None:
        """The session ended: its reports will not be answered."""
        with self._lock:
            self._requests = None
            self._waiting.clear()

    def pending(self) -> int:
        """How many reports wait for their answer."""
        with self._lock:
            return len(self._waiting)

    def send(
        self,
        attempt: _Attempt,
        logs: Sequence[worker_pb2.LogEntry] = (),
        success: Optional[worker_pb2.AttemptSuccess] = None,
        failure: Optional[worker_pb2.AttemptFailure] = None,
    ) -> None:
        with self._lock:
            if self._requests is None:
                # No session: the server retries the attempt elsewhere.
                attempt.abandoned = True
                return
            report_id = self._next_id
            self._next_id += 1
            self._waiting[report_id] = attempt
            report = worker_pb2.SessionReport(id=report_id, attempt=attempt.ref, logs=list(logs))
            if success is not None:
                report.success.CopyFrom(success)
            elif failure is not None:
                report.failure.CopyFrom(failure)
            self._requests.put(worker_pb2.SessionRequest(report=report))

    def answered(self, result: worker_pb2.SessionReportResult) -> None:
        with self._lock:
            attempt = self._waiting.pop(result.id, None)
        if attempt is None or result.code == 0:
            return
        if result.code == _FAILED_PRECONDITION:
            _log.info("ork worker: attempt %s/%d is no longer current: %s", *attempt.key, result.message)
            attempt.abandon()
        else:
            # E.g. INVALID_ARGUMENT for an output that breaks the task's
            # declared type: the server has failed the attempt itself.
            _log.warning("ork worker: the server refused a report of %s/%d: %s", *attempt.key, result.message)


class _LogBatcher:
    """Sends attempts' log lines in batches: every 200 ms or 500 lines."""

    def __init__(self, reporter: _Reporter) -> None:
        self._reporter = reporter
        self._lock = threading.Lock()
        self._pending: Dict[AttemptKey, Tuple[_Attempt, List[worker_pb2.LogEntry]]] = {}
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ork-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, attempt: _Attempt, stream: str, line: str) -> None:
        if attempt.abandoned:
            return
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        with self._lock:
            _, entries = self._pending.setdefault(attempt.key, (attempt, []))
            entries.append(worker_pb2.LogEntry(stream=stream, line=line, time=now))
            full = len(entries) >= _LOG_BATCH_LINES
        if full:
            self._wake.set()

    def flush(self, attempt: _Attempt) -> None:
        """Sends every waiting line of ``attempt`` before returning."""
        self._send(attempt)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            closing = self._closed.is_set()
            with self._lock:
                attempts = [a for a, _ in self._pending.values()]
            for attempt in attempts:
                self._send(attempt)
            if closing:
                return
            self._wake.wait(_LOG_FLUSH_INTERVAL)
            self._wake.clear()

    def _send(self, attempt: _Attempt) -> None:
        # The per-attempt lock keeps batches in order when the attempt's own
        # flush races the background loop.
        with attempt.send_lock:
            with self._lock:
                found = self._pending.pop(attempt.key, None)
            if found is None or attempt.abandoned:
                return
            entries = found[1]
            for start in range(0, len(entries), _LOG_BATCH_LINES):
                self._reporter.send(attempt, logs=entries[start : start + _LOG_BATCH_LINES])


def _env(name: str) -> Optional[str]:
    """A variable's value; empty counts as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


class _TlsSettings:
    """How to reach an ``https://`` server: CA, client certificate, name."""

    def __init__(
        self,
        ca_cert: Optional[str],
        client_cert: Optional[str],
        client_key: Optional[str],
        server_name: Optional[str],
    ) -> None:
        self.ca_cert = ca_cert
        self.client_cert = client_cert
        self.client_key = client_key
        self.server_name = server_name

    def check(self, server: str) -> None:
        """Refuses settings that cannot work, before anything connects."""
        given = any([self.ca_cert, self.client_cert, self.client_key, self.server_name])
        if given and not server.lower().startswith("https://"):
            raise ValueError(
                f"TLS settings are given (a CA, a client certificate or a server name) but the server URL {server} "
                "is not https://; use https://, or unset ORK_CA_CERT / ORK_CLIENT_CERT / ORK_CLIENT_KEY / ORK_TLS_SERVER_NAME"
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("a client certificate needs its key and the key its certificate: give both")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Optional[str]) -> Optional[bytes]:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_cert),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_cert),
        )


def _open_channel(server: str, tls: Optional[_TlsSettings] = None) -> grpc.Channel:
    """A channel to ``server`` (``http://host:port``, ``https://...`` or ``host:port``)."""
    target = server
    secure = False
    if "://" in server:
        scheme, _, target = server.partition("://")
        secure = scheme.lower() == "https"
    target = target.rstrip("/")
    options: List[Tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        # gRPC's own reconnect backoff grows to two minutes by default; keep it
        # in line with the session's, so a restarted server gets its workers
        # back within seconds.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", int(_MAX_BACKOFF * 1000)),
    ]
    if secure:
        tls = tls or _TlsSettings(None, None, None, None)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.secure_channel(target, tls.credentials(), options=options)
    return grpc.insecure_channel(target, options=options)

