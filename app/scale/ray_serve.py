"""Dragoman on Ray Serve: N replicas behind one HTTP/WebSocket address (`dragoman serve --replicas N`).

One replica is one whole Dragoman server minus the listening socket: the model, an Engine that batches its own
sessions, and the ASGI app of app/server/app.py (`create_app`). Ray Serve's proxy owns the port and hands each request
(each WebSocket, for its whole life) to one replica. What is routed is the *connection*, never a session: a session
is minutes of decoder state bound to its socket, so it stays where it started; when its replica dies the client
reconnects and starts a new session elsewhere (the page does this by itself).

Routing, as measured on Ray 2.60 (docs/deploy.md, tests/integration/test_ray_serve.py):
- an open WebSocket is one ongoing request of its replica from the handshake until it closes, so
  `max_ongoing_requests` = `--max-sessions`: Serve's router (power of two choices, retrying while both picks are
  full) sends a new connection only to a replica with a free session slot, and each replica refuses the rest;
- one spare slot per replica, so that a full replica could answer `busy` itself, was measured and dropped: a burst of
  connections sees stale counts, and 5 of 6 bursts of four clients into two empty replicas of two sessions each put
  three on one replica, one of them told `busy` while the other replica had room;
- while every replica is full, a new connection waits in the proxy (the handshake is held) and is served when a slot
  frees; `max_queued_requests` bounds the waiting ones, and beyond it the proxy refuses the handshake with 503
  (app/scale/proxy.py makes it one: Ray's own answer reaches a WebSocket client as HTTP 500). The bound cannot be small:
  Serve counts every request still being assigned as queued, so with a bound of 1, three of four simultaneous
  clients were refused by an empty two-replica cluster.

Ray Serve's own graceful stop waits for ongoing requests *before* it runs the replica's shutdown, which a live
session never ends by itself. So a stop of the whole deployment first tells every replica to end its sessions
(shutting_down, final commits, `end`) through a small named actor, `DrainSignal`, and only then shuts Serve down.

Ray is imported only by app/scale/, and only when `--replicas` is given; it is the optional extra `dragoman[ray]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError

if TYPE_CHECKING:
    from app.server.config import ServerConfig

log = logging.getLogger(__name__)

APP_NAME = "dragoman"  # the Serve application (`serve status`, replica actor names)
DEPLOYMENT_NAME = "Dragoman"
PROXY_CALLBACK = "app.scale.proxy.middlewares"  # app/scale/proxy.py: WebSocket refusals and lost replicas
DRAIN_ACTOR = "dragoman-drain"  # the named DrainSignal actor, in the driver's namespace
NAMESPACE = "dragoman"
# How long a stopping cluster waits for every replica to say its sessions ended, beyond their own flush timeout.
DRAIN_SLACK_S = 10.0


@dataclass(frozen=True)
class ReplicaSpec:
    """What one replica builds in its own process: model, engine and server configuration."""

    server: ServerConfig  # host/port are the proxy's; everything else applies inside the replica as in one server
    model: str | None = None  # None: the embedded Whisper base
    device: str = "auto"  # "cuda" for a GPU replica (with ClusterConfig.gpus_per_replica)
    threads: int = 1  # torch intra-op threads of the replica's engine
    max_sessions: int = 4  # live sessions per replica, and its max_ongoing_requests (see above)
    translation_args: argparse.Namespace | None = None  # `--target ...`: each replica loads its MT models


@dataclass(frozen=True)
class ClusterConfig:
    """Where the replicas run and how many there are."""

    replicas: int  # replicas to start with; the fixed number unless max_replicas is set
    max_replicas: int | None = None  # autoscale between `replicas` and this on open connections (None: fixed)
    address: str | None = None  # an existing Ray cluster ("auto", "ray://head:10001", ...); None starts a local one
    host: str = "127.0.0.1"  # the Serve proxy's address
    port: int = 8000  # the Serve proxy's port (Ray Serve needs a fixed one)
    cpus_per_replica: float = 1.0  # Ray resources each replica reserves
    gpus_per_replica: float = 0.0
    num_cpus: int | None = None  # CPUs a local cluster offers (None: all of this machine's)
    max_queued_requests: int = 64  # connections waiting in the proxy while every replica is full; then refused
    graceful_shutdown_timeout_s: float = 60.0  # Ray's budget to stop one replica (scale-down, redeploy)
    # autoscaling (with max_replicas): the share of a replica's session slots to aim for, how long the load must
    # stay above or below that before replicas are added or removed, and the window the load is averaged over
    target_utilization: float = 0.75
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 15.0  # more than Serve's 10 s metrics interval, as Serve requires

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("--replicas must be at least 1")
        if not 0 < self.port <= 65535:
            raise ConfigError("--port must be a fixed port (1..65535) with --replicas: Ray Serve's proxy binds it")
        if self.max_queued_requests < 1:
            raise ConfigError("max_queued_requests must be at least 1 (Ray Serve refuses every request at 0)")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ConfigError("--max-replicas must be at least --replicas")


def import_ray() -> tuple[Any, Any]:
    """(ray, ray.serve), or a ConfigError that says how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise ConfigError(
            "--replicas needs Ray Serve: pip install 'dragoman[ray]' "
            f"(or scripts/setup.sh --test), then try again ({e})"
        ) from None
    return ray, serve


def replica_name() -> str:
    """This replica's name in `ready` and /healthz: Ray Serve's replica id (as `serve status` and Ray's logs show)."""
    _, serve = import_ray()
    try:
        return str(serve.get_replica_context().replica_tag)
    except Exception:  # not inside a Serve replica (a unit test constructing the class directly)
        return f"pid{os.getpid()}"


class DrainSignal:
    """A named Ray actor that tells every replica to end its sessions, and tells the driver when they have.

    Replicas `register` at start and wait on `wait_for_drain`; the driver calls `drain` and then `drained`, which
    returns once every live registered replica has reported (or at the timeout). A replica that died is no longer
    waited for: its Ray actor name is released when it dies, and `drained` looks the names up.
    """

    def __init__(self) -> None:
        self._go = asyncio.Event()
        self._registered: dict[str, str] = {}  # replica name -> its actor's name in the "serve" namespace
        self._done: set[str] = set()
        self._changed = asyncio.Event()

    def register(self, replica: str, actor_name: str) -> None:
        self._registered[replica] = actor_name

    def _alive(self, replica: str) -> bool:
        import ray

        try:
            ray.get_actor(self._registered[replica], namespace="serve")
        except ValueError:
            return False
        return True

    async def wait_for_drain(self) -> None:
        await self._go.wait()

    def drain(self) -> None:
        self._go.set()

    def report(self, replica: str) -> None:
        self._done.add(replica)
        self._changed.set()

    async def drained(self, timeout_s: float) -> tuple[list[str], list[str]]:
        """(replicas that ended their sessions, replicas that did not say so in time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [r for r in self._registered if r not in self._done and self._alive(r)]
            if not pending or time.monotonic() >= deadline:
                return sorted(self._done), sorted(pending)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # re-check liveness every second
                await asyncio.wait_for(self._changed.wait(), min(1.0, max(0.0, deadline - time.monotonic())))


class DragomanReplica:
    """One replica: model, engine and hub in this Ray worker; `__serve_build_asgi_app__` hands Serve the ASGI app.

    The engine is started by the app's lifespan (create_app), which Serve runs at replica start, and stopped by its
    shutdown after the open connections were ended.
    """

    async def __init__(self, spec: ReplicaSpec) -> None:
        import torch

        from app.runtime import Engine, EngineConfig
        from app.server.hub import DragomanHub
        from engine.backend import make_backend
        from engine.models.loading import load_model

        t0 = time.monotonic()
        torch.set_num_threads(spec.threads)
        self.name = replica_name()
        config = dataclasses.replace(spec.server, replica=self.name)
        if spec.translation_args is not None:
            from app.translation import server_translation

            config = dataclasses.replace(
                config, translation=await asyncio.to_thread(server_translation, spec.translation_args)
            )
        backend = make_backend(await asyncio.to_thread(load_model, spec.model, spec.device))
        self.engine = Engine(backend, EngineConfig(max_sessions=spec.max_sessions, threads=spec.threads))
        self.hub = DragomanHub(self.engine, config)
        self.config = config
        self._drain_task = asyncio.ensure_future(self._watch_drain())
        log.info(
            "replica %s: model %s loaded in %.1f s (pid %d)",
            self.name,
            backend.name,
            time.monotonic() - t0,
            os.getpid(),
        )

    def __serve_build_asgi_app__(self) -> Any:
        from app.server.app import create_app

        return create_app(self.engine, self.config, hub=self.hub)

    async def _watch_drain(self) -> None:
        """Wait for the driver's drain; then end every session here the way one server's SIGTERM does."""
        ray, _ = import_ray()
        try:
            signal = ray.get_actor(DRAIN_ACTOR, namespace=NAMESPACE)
        except ValueError:  # deployed without `dragoman serve` (serve run, a KubeRay RayService): Ray's own stop
            log.info("replica %s: no %s actor; sessions end with Ray Serve's graceful stop", self.name, DRAIN_ACTOR)
            return
        try:
            await signal.register.remote(self.name, ray.get_runtime_context().get_actor_name())
            await signal.wait_for_drain.remote()
        except ray.exceptions.RayError as e:  # the driver is gone without a drain: Ray's own stop applies
            log.warning("replica %s: lost the drain signal (%s)", self.name, type(e).__name__)
            return
        self.hub.closing = True  # /healthz says shutting_down, new sockets get 503
        await self.hub.end_connections(self.config.server_limits.shutdown_timeout_s)
        log.info("replica %s: sessions ended", self.name)
        with contextlib.suppress(ray.exceptions.RayError):  # the driver stopped waiting
            await signal.report.remote(self.name)

    async def check_health(self) -> None:
        """Ray Serve restarts a replica whose engine worker died."""
        thread = getattr(self.engine, "_thread", None)
        if thread is not None and not thread.is_alive():
            raise RuntimeError(f"replica {self.name}: the engine's worker thread died")


def build_application(spec: ReplicaSpec, cluster: ClusterConfig) -> Any:
    """The Serve application: `cluster.replicas` DragomanReplicas, one connection per session slot."""
    _, serve = import_ray()
    actor_options: dict[str, Any] = {"num_cpus": cluster.cpus_per_replica}
    if cluster.gpus_per_replica:
        actor_options["num_gpus"] = cluster.gpus_per_replica
    scaling: dict[str, Any] = {"num_replicas": cluster.replicas}
    if cluster.max_replicas is not None and cluster.max_replicas > cluster.replicas:
        # a replica's ongoing requests are its open sockets (measured), so this scales on sessions; waiting
        # connections count too, so a full cluster grows and the new replica serves them
        scaling = {
            "num_replicas": "auto",
            "autoscaling_config": {
                "min_replicas": cluster.replicas,
                "max_replicas": cluster.max_replicas,
                "target_ongoing_requests": max(1.0, cluster.target_utilization * spec.max_sessions),
                "upscale_delay_s": cluster.upscale_delay_s,
                "downscale_delay_s": cluster.downscale_delay_s,
                "look_back_period_s": cluster.look_back_period_s,
            },
        }
    deployment = serve.deployment(
        serve.ingress()(DragomanReplica),
        name=DEPLOYMENT_NAME,
        **scaling,
        ray_actor_options=actor_options,
        # one open WebSocket = one ongoing request for its whole life (measured)
        max_ongoing_requests=spec.max_sessions,
        max_queued_requests=cluster.max_queued_requests,
        graceful_shutdown_timeout_s=cluster.graceful_shutdown_timeout_s,
        graceful_shutdown_wait_loop_s=1.0,
        health_check_period_s=5.0,
        health_check_timeout_s=30.0,
    )
    return deployment.bind(spec)


@dataclass
class ServeCluster:
    """A running deployment: `start()` connects to (or starts) Ray and deploys; `stop()` drains and tears down."""

    spec: ReplicaSpec
    cluster: ClusterConfig
    _signal: Any = dataclasses.field(default=None, init=False, repr=False)
    _own_ray: bool = dataclasses.field(default=False, init=False, repr=False)
    started_in_s: float | None = dataclasses.field(default=None, init=False)

    @property
    def url(self) -> str:
        host = self.cluster.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else ("[::1]" if host == "::" else host)
        scheme = "https" if self.spec.server.certfile is not None else "http"
        return f"{scheme}://{shown}:{self.cluster.port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :].rstrip("/") + self.spec.server.ws_path

    def start(self) -> None:
        ray, serve = import_ray()
        t0 = time.monotonic()
        if self.cluster.address is None:  # the proxy will bind it here: a taken port fails now, not after Ray started
            try:
                socket.create_server((self.cluster.host, self.cluster.port)).close()
            except OSError as e:
                raise ConfigError(
                    f"cannot listen on {self.cluster.host}:{self.cluster.port}: {e.strerror or e}"
                ) from None
        init: dict[str, Any] = {
            "namespace": NAMESPACE,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if self.cluster.address is None:
            init["address"] = "local"  # a new cluster, even where `ray start` left one running
            # Serve's proxy inherits the environment of the cluster this starts: WebSocket refusals and lost
            # replicas reach clients as a 503 and a close 1012 instead of HTTP 500 and a dropped connection
            os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", PROXY_CALLBACK)
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a self-hosted captioner reports to nobody
            init["num_cpus"] = self.cluster.num_cpus or os.cpu_count() or 1
            if not self.cluster.gpus_per_replica:
                init["num_gpus"] = 0  # CPU replicas: leave the machine's GPUs to others (else Ray detects them)
            self._own_ray = True
        else:
            init["address"] = self.cluster.address
        # replicas import Dragoman as installed on each node (`pip install dragoman[ray]`, same version everywhere)
        ray.init(**init)
        try:
            self._signal = ray.remote(num_cpus=0)(DrainSignal).options(name=DRAIN_ACTOR, namespace=NAMESPACE).remote()
            http: dict[str, Any] = {"host": self.cluster.host, "port": self.cluster.port}
            if self.spec.server.certfile is not None:
                http.update(ssl_certfile=str(self.spec.server.certfile), ssl_keyfile=str(self.spec.server.keyfile))
            serve.start(http_options=http)
            try:
                serve.run(build_application(self.spec, self.cluster), name=APP_NAME, route_prefix="/")
            except RuntimeError as e:  # Serve gave up on the replicas' constructors: say why, not where
                raise ConfigError(f"the replicas did not start: {_replica_failure(serve) or e}") from None
        except BaseException:
            self.close()
            raise
        self.started_in_s = time.monotonic() - t0

    def drain(self) -> tuple[list[str], list[str]]:
        """Every replica ends its sessions (shutting_down, final commits, `end`); returns (done, late) replicas."""
        ray, _ = import_ray()
        if self._signal is None:
            return [], []
        self._signal.drain.remote()
        timeout_s = self.spec.server.server_limits.shutdown_timeout_s + DRAIN_SLACK_S
        return ray.get(self._signal.drained.remote(timeout_s))

    def stop(self) -> None:
        """Drain, then remove the application (and the local cluster this started)."""
        try:
            done, late = self.drain()
            if late:
                log.warning("replicas that did not finish draining in time: %s", ", ".join(late))
        finally:
            self.close()

    def close(self) -> None:
        ray, serve = import_ray()
        if not ray.is_initialized():
            return
        try:
            if self._own_ray:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            ray.shutdown()


def _replica_failure(serve: Any) -> str | None:
    """The last line of the error a replica's constructor raised, from Serve's status (e.g. a model not found)."""
    try:
        message = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME].message
    except Exception:  # noqa: BLE001 - the status is a courtesy; the caller has Serve's own error
        return None
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[-1] if lines else None


def replica_spec(args: argparse.Namespace, server: ServerConfig) -> ReplicaSpec:
    """The ReplicaSpec the serve flags describe."""
    wants_mt = bool(getattr(args, "target", None) or getattr(args, "mt_model", None))
    return ReplicaSpec(
        server=server,
        model=args.model,
        device="cuda" if args.replica_gpus and args.device == "auto" else args.device,
        threads=args.threads or max(1, int(args.replica_cpus)),
        max_sessions=args.max_sessions,
        translation_args=args if wants_mt else None,
    )


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    """The ClusterConfig the serve flags describe (`--replicas` and its companions)."""
    return ClusterConfig(
        replicas=args.replicas,
        max_replicas=args.max_replicas,
        address=args.ray_address,
        host=args.host,
        port=args.port,
        cpus_per_replica=args.replica_cpus,
        gpus_per_replica=args.replica_gpus,
        num_cpus=args.ray_cpus,
        max_queued_requests=args.max_waiting,
        graceful_shutdown_timeout_s=shutdown_budget_s(args),
    )


def shutdown_budget_s(args: argparse.Namespace) -> float:
    """How long Ray may take to stop one replica it decided to stop (scale-down, restart): with autoscaling, long
    enough for its sessions to reach `--max-session-time` and flush (at most an hour); else a minute."""
    if getattr(args, "max_replicas", None) is None:
        return 60.0
    return max(60.0, min(args.max_session_time + args.shutdown_timeout, 3600.0))
