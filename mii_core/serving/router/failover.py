"""A request in flight through the router: sent to a replica, and to another when the first one
broke the link before starting it. Once a replica reported the start, losing it ends the request
with an error that says so (it cannot be resumed elsewhere)."""
from __future__ import annotations

import logging
from typing import Any, Generator, Iterator, Optional

from mii_core.serving.backend import Request, ResponseStream
from mii_core.serving.errors import RequestCancelled, Unavailable, error_kind
from mii_core.serving.link import LinkBroken
from mii_core.serving.router.admission import Admission
from mii_core.serving.router.metrics import Observers, TokenTimer
from mii_core.serving.router.process_watch import ProcessWatch
from mii_core.serving.router.replicas import ReplicaPool, ReplicaState

log = logging.getLogger("mii_core.serving.router")


class RoutedStream(ResponseStream):
    def __init__(self, request: Request, pool: ReplicaPool, watch: ProcessWatch, admission: Admission,
                 observers: Observers) -> None:
        self._request, self._pool, self._watch = request, pool, watch
        self._admission, self._observers = admission, observers
        self._remote: Optional[ResponseStream] = None
        self._cancelled = False
        self._started = False  # a replica reported the start
        self._timer = TokenTimer(observers)
        self.responses = None

    def cancel(self) -> None:
        self._cancelled = True
        if self._remote is not None:
            self._remote.cancel()

    def events(self, poll_interval: Optional[float] = None) -> Iterator[Any]:
        outcome = "internal"
        try:
            tried: set[int] = set()
            served = False
            while not served:
                replica = self._pool.pick(tried, self._request.count)
                tried.add(replica.index)
                served = yield from self._run_on(replica, poll_interval)
            outcome = "ok"
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, GeneratorExit) else error_kind(exc)
            raise
        finally:
            if not self._started:
                self._admission.started()  # it will never start: it no longer waits
            self._admission.ended(self)
            self._observers.notify("request_ended", outcome)

    def _run_on(self, replica: ReplicaState, poll_interval: Optional[float]) -> Generator[Any, None, bool]:
        """Yields the request's events from ``replica``; returns False when the request should go elsewhere."""
        served, remote, remote_events = False, None, None
        try:
            self._check_cancelled()
            self._remote = remote = replica.backend.submit(self._request)
            self._pool.track(replica, remote)
            remote_events = remote.events(poll_interval)
            for event in remote_events:
                if event is not None and not self._started:
                    self._started = True
                    self._admission.started()
                self._timer.observe(event)
                yield event
            self.responses, served = self._remote.responses, True
            return True
        except RequestCancelled:
            self._check_cancelled()  # during shutdown this says so instead
            raise
        except LinkBroken as exc:
            self._check_cancelled()
            self._watch.link_broke(replica, exc)
            if self._started:
                raise Unavailable(f"{replica.name} was lost while running this request "
                                  f"({replica.lost_reason or exc}); send it again") from None
            log.warning("%s could not run a request (%s); trying another", replica.name, exc)
            self._pool.count_reroute()
            return False
        finally:
            if remote_events is not None:
                remote_events.close()  # closes the link, so the replica drops the request
            if remote is not None:
                self._pool.untrack(replica, remote)
            self._pool.release(replica, self._request.count, served)

    def _check_cancelled(self) -> None:
        if self._cancelled:
            if self._admission.shutting_down:
                raise Unavailable("the deployment is shutting down")
            raise RequestCancelled("the request was cancelled")
