"""The Serve application built from `dragoman serve` flags, for Serve config files and KubeRay (docs/deploy.md).

Apart from app/scale/ray_serve.py because it reads the serve command's flags, and that command imports
ray_serve.py: one module each way would be an import cycle.
"""

from __future__ import annotations

import shlex
from typing import Any

from app.scale.ray_serve import ClusterConfig, build_application, replica_spec, shutdown_budget_s


def app_builder(args: dict[str, Any]) -> Any:
    """The application for Serve config files and KubeRay's RayService, which run no `dragoman serve`:

        applications:
          - name: dragoman
            route_prefix: /
            import_path: app.scale.builder:app_builder
            args: {flags: "--replicas 2 --max-sessions 4 --replica-gpus 1 --language de"}

    `flags` are `dragoman serve`'s own; the token comes from DRAGOMAN_TOKEN where Serve builds the application (the
    head node) and travels to the replicas with the configuration. Host, port and TLS are the Serve config's
    `http_options`. Without the driver of `dragoman serve` nobody sends the drain signal: a stop is Ray Serve's own
    (docs/deploy.md).
    """
    from app.cli import build_parser
    from app.commands.serve import server_config

    ns = build_parser().parse_args(["serve", *shlex.split(str((args or {}).get("flags", "")))])
    ns.replicas = ns.replicas or 1
    spec = replica_spec(ns, server_config(ns))
    return build_application(
        spec,
        ClusterConfig(
            replicas=ns.replicas,
            max_replicas=ns.max_replicas,
            cpus_per_replica=ns.replica_cpus,
            gpus_per_replica=ns.replica_gpus,
            max_queued_requests=ns.max_waiting,
            graceful_shutdown_timeout_s=shutdown_budget_s(ns),
        ),
    )
