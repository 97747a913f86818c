"""Leader election through a coordination.k8s.io/v1 Lease: one active controller, with fencing.

The contract:

* Every instance runs a :class:`LeaderElector` on the same Lease (``namespace/name``)
  with an identity of its own (:func:`default_identity`: host name and a UUID, as
  client-go's).  One of them holds the Lease (``spec.holderIdentity``) and renews it
  (``spec.renewTime``) every ``renew_interval`` seconds (default 5 s); the others try
  every ``retry_period`` (2 s) and take it when it is absent, released (no holder) or
  expired.  Defaults as client-go's: lease 15 s, renew deadline 10 s, retry 2 s (its
  leader tries a renewal every retry period; this one renews every ``renew_interval``
  and, after a failed renewal, retries every ``retry_period`` until the deadline).
* **Expiry is judged by the local monotonic clock, never by comparing wall clocks.**
  ``renewTime`` is written by the holder's wall clock, which another machine's may be
  seconds off from; as client-go's leaderelection does, an instance instead remembers
  when *it* last saw the Lease change (its ``resourceVersion``, which every renewal
  changes) and holds it expired only when ``leaseDurationSeconds`` have passed on its
  own monotonic clock since then without a change.  So a candidate that starts (or comes
  back) waits a whole lease duration after its first look before it takes over a silent
  Lease, and a wall-clock step on any machine changes nothing.  ``renewTime`` and
  ``acquireTime`` are written for people and tools only.
* Every write carries the ``resourceVersion`` it was based on, so two instances cannot
  both succeed: the API answers 409 to the one that read an older version.  Two
  candidates racing for an absent Lease both POST it and one gets 409 (AlreadyExists);
  a leader whose renewal gets 409 reads the Lease again, renews if it is still its own
  (someone else touched, say, a label) and steps down if it is not.
* A clean :meth:`LeaderElector.stop` calls ``on_stopped_leading`` first (the caller stops
  writing), then releases the Lease: ``holderIdentity`` cleared, ``leaseDurationSeconds``
  1, so a candidate takes it at its next try instead of waiting for the expiry.
* Callbacks, on the elector's thread (they must not block: the renewals wait for them):
  ``on_started_leading(epoch)`` when a term begins, ``on_stopped_leading()`` when it ends
  (stop, a renewal refused or the renew deadline passed).

  (client-go's package documentation: the client "does not consider timestamps in the
  leader election record to be accurate" and "only uses their change to indicate that
  another client has renewed", so it is "tolerant to arbitrary clock skew, but is not
  tolerant to arbitrary clock skew rate".)

Fencing.  A Lease alone does not fence: client-go's documentation says its
implementation "does not guarantee that only one client is acting as a leader (a.k.a.
fencing)".  A leader paused (the scheduler, a GC, a VM migration) or cut off from the
API can go on acting after its Lease expired and a successor took it.  Here:

* Every term has an **epoch**, the Lease's ``spec.leaseTransitions`` incremented on
  every acquisition (by anyone, a re-acquisition by the same instance included), so the
  epochs of successive terms strictly increase; :attr:`LeaderElector.epoch` gives it.
* :meth:`LeaderElector.still_leader` is false as soon as ``renew_deadline`` has passed
  on the local monotonic clock since the *sending* of the last successful renewal (or
  of the acquisition), whether or not the elector's thread has noticed yet.  The others
  count the lease duration from when they saw that write, which is after it was sent,
  so a leader that checks ``still_leader()`` before each write stops writing
  ``lease_duration - renew_deadline`` seconds (5 s by default) before any successor can
  acquire.
* What remains: (1) the clocks' *rates* must agree to within that margin over a lease
  duration (NTP keeps rates within ~0.05 %; a VM paused and resumed without its
  monotonic clock counting the pause defeats it); (2) a write already sent when the
  check passed can arrive at its target after the successor started, if it was delayed
  for longer than the margin.  Both are closed only at the target: the next piece (the
  controller's NB writes) makes every NB transaction conditional on the epoch: an NB row
  (e.g. ``NB_Global.external_ids:ovn-underlay-epoch``) holds the epoch of the term that
  last wrote, a new leader's first transaction raises it to its own epoch (only
  upwards), and every transaction of a term begins with an OVSDB ``wait`` operation
  (``until: "=="``) on that value, so the transaction of a deposed leader fails as a
  whole once a successor has written its epoch.
"""

from __future__ import annotations

import datetime
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lightkube import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from ovn_underlay.kube.client import KubeClient, KubeError, NotFound, describe, translated

LOG = logging.getLogger(__name__)

LEASE_DURATION = 15
RENEW_DEADLINE = 10.0
RENEW_INTERVAL = 5.0
RETRY_PERIOD = 2.0


class Conflict(KubeError):
    """The API answered 409: the Lease changed (or came to exist) since it was read."""


def default_identity() -> str:
    """A unique identity for this instance: the host name and a random UUID."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class ElectionConfig:
    """Which Lease, who we are, and the timings (seconds).

    ``renew_interval < renew_deadline < lease_duration`` and ``retry_period <
    renew_deadline``; ``lease_duration`` is whole seconds (the Lease's field is).
    """

    namespace: str
    name: str
    identity: str = field(default_factory=default_identity)
    lease_duration: int = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    renew_interval: float = RENEW_INTERVAL
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("the identity must not be empty")
        if not 0 < self.renew_interval < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < renew_interval < renew_deadline < lease_duration")
        if not 0 < self.retry_period < self.renew_deadline:
            raise ValueError("need 0 < retry_period < renew_deadline")


@dataclass(frozen=True)
class _Term:
    epoch: int
    deadline: float
    """Monotonic time after which this instance may no longer act as the leader."""


class LeaderElector:
    """Contends for one Lease on its own thread; :meth:`still_leader` says whether to act."""

    def __init__(self, client: KubeClient, config: ElectionConfig,
                 on_started_leading: Callable[[int], None] = lambda epoch: None,
                 on_stopped_leading: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._lock = threading.Lock()
        self._term: _Term | None = None
        self._lease: Lease | None = None
        """The Lease as this instance last wrote it (while it leads)."""
        self._seen: str | None = None
        self._seen_at = 0.0
        """The resourceVersion last seen, and when (monotonic) it was first seen."""
        self._next_renew = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self.config.identity

    # -- what the caller asks -------------------------------------------------------

    def still_leader(self) -> bool:
        """Whether this instance leads and its renew deadline has not passed: check it
        before every write that must come from the leader only."""
        term = self._term
        return term is not None and time.monotonic() < term.deadline

    @property
    def epoch(self) -> int | None:
        """The epoch of the current term (None when not leading): the fencing token."""
        term = self._term
        return term.epoch if term is not None else None

    @property
    def deadline(self) -> float | None:
        """The monotonic time at which :meth:`still_leader` turns false unless renewed."""
        term = self._term
        return term.deadline if term is not None else None

    # -- the thread -------------------------------------------------------------------

    def start(self) -> None:
        """Start contending on a thread of its own."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        thread = threading.Thread(target=self._run, daemon=True,
                                  name=f"leader-{self.config.name}")
        thread.start()
        self._thread = thread  # only a started thread: another's stop() may join it

    def stop(self, timeout: float = 5.0) -> None:
        """Stop contending: end the term (``on_stopped_leading``), then release the Lease."""
        self._halt(timeout)
        lease = self._lease
        if self._term is not None:
            self._step_down("stopping")
            if lease is not None:
                self._release(lease)

    def abandon(self, timeout: float = 5.0) -> None:
        """Stop renewing at once without releasing or calling back: what the others see of
        a leader that hangs, crashes or is cut off (for tests and drills).
        :meth:`still_leader` turns false at the renew deadline on its own; :meth:`start`
        makes it contend again, as such a leader coming back would."""
        self._halt(timeout)

    def _halt(self, timeout: float) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delay = 0.0
        while not self._stopping.wait(delay):
            try:
                delay = self._tick()
            except Exception:  # the election goes on whatever a callback did
                LOG.exception("leader election on %s/%s", self.config.namespace,
                              self.config.name)
                delay = self.config.retry_period

    def _tick(self) -> float:
        """One step; the seconds until the next."""
        cfg = self.config
        if self._term is None:
            return cfg.renew_interval if self.try_acquire() else cfg.retry_period
        now = time.monotonic()
        if now >= self._term.deadline:
            self._step_down("the renew deadline passed without a renewal")
            return cfg.retry_period
        if now < self._next_renew:
            return min(self._next_renew, self._term.deadline) - now
        if self.renew():
            return cfg.renew_interval
        if self._term is None:
            return cfg.retry_period
        return max(0.0, min(cfg.retry_period, self._term.deadline - time.monotonic()))

    # -- one attempt each (public for tests) ---------------------------------------

    def try_acquire(self) -> bool:
        """Take the Lease if it is absent, released or expired; whether this instance leads."""
        if self._term is not None:
            return True
        cfg = self.config
        try:
            current = self._read()
        except KubeError as exc:
            LOG.warning("cannot read Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        sent = time.monotonic()
        if current is None:
            fresh = Lease(metadata=ObjectMeta(name=cfg.name, namespace=cfg.namespace),
                          spec=self._spec(LeaseSpec(), epoch=1))
            return self._won(lambda: self.client.api.create(fresh, namespace=cfg.namespace),
                             sent, "create")
        spec = current.spec or LeaseSpec()
        holder = spec.holderIdentity or ""
        if holder and holder != cfg.identity and not self._expired(current):
            return False
        epoch = (spec.leaseTransitions or 0) + 1
        current.spec = self._spec(spec, epoch)
        return self._won(lambda: self.client.api.replace(current), sent, "update")

    def renew(self) -> bool:
        """Renew this instance's term; False (and the term ended if it is lost) if not done."""
        term, lease = self._term, self._lease
        if term is None or lease is None:
            return False
        sent = time.monotonic()
        try:
            try:
                written = self._replace(self._renewed(lease))
            except Conflict:
                current = self._read()
                if current is None or not self._ours(current, term.epoch):
                    holder = (current.spec.holderIdentity if current is not None
                              and current.spec is not None else None)
                    self._step_down(f"the Lease is no longer ours (holder {holder!r})")
                    return False
                written = self._replace(self._renewed(current))
        except KubeError as exc:
            LOG.warning("cannot renew Lease %s/%s: %s", self.config.namespace,
                        self.config.name, exc)
            return False
        with self._lock:
            if self._term is not term:
                return False
            self._lease = written
            self._term = _Term(term.epoch, sent + self.config.renew_deadline)
        self._saw(written, sent)
        self._next_renew = sent + self.config.renew_interval
        return True

    # -- the pieces -------------------------------------------------------------------

    def _spec(self, spec: LeaseSpec, epoch: int) -> LeaseSpec:
        now = _now()
        spec.holderIdentity = self.config.identity
        spec.leaseDurationSeconds = self.config.lease_duration
        spec.leaseTransitions = epoch
        spec.acquireTime = now
        spec.renewTime = now
        return spec

    def _renewed(self, lease: Lease) -> Lease:
        spec = lease.spec or LeaseSpec()
        spec.renewTime = _now()
        spec.leaseDurationSeconds = self.config.lease_duration
        lease.spec = spec
        return lease

    def _ours(self, lease: Lease, epoch: int) -> bool:
        spec = lease.spec
        return (spec is not None and spec.holderIdentity == self.config.identity
                and spec.leaseTransitions == epoch)

    def _won(self, write: Callable[[], Lease], sent: float, how: str) -> bool:
        cfg = self.config
        try:
            with translated(self.client.server, f"{how} Lease {cfg.namespace}/{cfg.name}"):
                try:
                    written = write()
                except ApiError as exc:
                    if exc.status.code == 409:
                        raise Conflict(f"{how} Lease: HTTP 409: {exc.status.message}") from exc
                    raise
        except Conflict:
            LOG.debug("Lease %s/%s: another instance wrote first", cfg.namespace, cfg.name)
            return False
        except KubeError as exc:
            LOG.warning("cannot %s Lease %s/%s: %s", how, cfg.namespace, cfg.name, exc)
            return False
        spec = written.spec or LeaseSpec()
        epoch = spec.leaseTransitions or 0
        with self._lock:
            self._lease = written
            self._term = _Term(epoch, sent + cfg.renew_deadline)
        self._saw(written, sent)
        self._next_renew = sent + cfg.renew_interval
        LOG.info("leading on Lease %s/%s as %s, epoch %d", cfg.namespace, cfg.name,
                 cfg.identity, epoch)
        self._on_started(epoch)
        return True

    def _step_down(self, why: str) -> None:
        with self._lock:
            term, self._term = self._term, None
            self._lease = None
        if term is None:
            return
        LOG.info("no longer leading on Lease %s/%s (epoch %d): %s", self.config.namespace,
                 self.config.name, term.epoch, why)
        self._on_stopped()

    def _release(self, lease: Lease) -> None:
        """Clear the holder (leaseDurationSeconds 1): a candidate takes over at its next try."""
        cfg = self.config
        spec = lease.spec or LeaseSpec()
        spec.holderIdentity = None
        spec.leaseDurationSeconds = 1
        spec.renewTime = _now()
        lease.spec = spec
        try:
            self._replace(lease)
        except Conflict:
            LOG.info("Lease %s/%s changed meanwhile: not released", cfg.namespace, cfg.name)
        except KubeError as exc:
            LOG.warning("cannot release Lease %s/%s (it expires on its own): %s",
                        cfg.namespace, cfg.name, describe(exc))

    def _read(self) -> Lease | None:
        cfg = self.config
        try:
            with translated(self.client.server, f"GET Lease {cfg.namespace}/{cfg.name}"):
                lease = self.client.api.get(Lease, cfg.name, namespace=cfg.namespace)
        except NotFound:
            return None
        self._saw(lease, time.monotonic())
        return lease

    def _replace(self, lease: Lease) -> Lease:
        cfg = self.config
        with translated(self.client.server, f"update Lease {cfg.namespace}/{cfg.name}"):
            try:
                return self.client.api.replace(lease)
            except ApiError as exc:
                if exc.status.code == 409:
                    raise Conflict(f"update Lease: HTTP 409: {exc.status.message}") from exc
                raise

    def _saw(self, lease: Lease, when: float) -> None:
        version = lease.metadata.resourceVersion if lease.metadata is not None else None
        if version != self._seen:
            self._seen, self._seen_at = version, when

    def _expired(self, lease: Lease) -> bool:
        """Whether the Lease went unchanged for its duration, by this instance's clock."""
        spec = lease.spec or LeaseSpec()
        duration = spec.leaseDurationSeconds or 0
        return time.monotonic() >= self._seen_at + duration
