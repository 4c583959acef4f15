"""The `kubepresence` command: typer commands, each a thin shell over core/ and rpc/.

Every command runs through `command()`, which runs async bodies on uvloop (typer does not
run `async def` commands: it would silently skip them) and turns a `KubepresenceError`
into one line on stderr and the exit code of its category.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec

import typer

from kubepresence.cli import quick
from kubepresence.cli.core import kubeconfig, views
from kubepresence.cli.core.arguments import (
    PathFacts,
    address_problem,
    cidr_problem,
    executable_problem,
    first_problem,
    label_problem,
    unwritable,
    workload_hint,
)
from kubepresence.cli.core.envfiles import SYNTAXES, EnvFileError, render_json, renderer
from kubepresence.cli.core.exits import ExitCode, exit_code
from kubepresence.cli.core.interceptflags import (
    AUTO,
    ROOT_VARIABLE,
    filter_from_options,
    parse_mount,
    parse_port_spec,
    preview_options,
    wants_auto_header,
)
from kubepresence.cli.core.rendering import OutputFormat, render
from kubepresence.cli.core.routingflags import RoutingFlagError, parse_routing
from kubepresence.cli.lazymodules import lazy_module
from kubepresence.cli.sockets import socket_is_live
from kubepresence.cli.terminal import err, fail, plain, say
from kubepresence.cli.unexpected import report_unexpected
from kubepresence.protocol import paths
from kubepresence.protocol.errors import (
    ConfigError,
    InternalError,
    KubepresenceError,
    UserError,
)
from kubepresence.protocol.httpfilter import auto_header
from kubepresence.protocol.logs import LEVELS
from kubepresence.protocol.routing import DEFAULT_VIRTUAL_SUBNET

if TYPE_CHECKING:
    import asyncio

    from kubepresence.cli import starting
    from kubepresence.cli.rpc import daemons
else:
    # The gRPC stack and the event loop load when a command first needs them: `--help`,
    # completion and `version` without daemons stay quick (see cli.lazymodules).
    asyncio = lazy_module("asyncio")
    daemons = lazy_module("kubepresence.cli.rpc.daemons")
    starting = lazy_module("kubepresence.cli.starting")

P = ParamSpec("P")
PROGRESS_POLL = 1.0  # seconds between looks at a waiting intercept's progress
# The caller's variables the user daemon reads (it runs with its own environment).
# KUBEPRESENCE_REGISTRY / _IMAGE_PULL_SECRETS: the image settings of an on-demand install.
FORWARDED_VARIABLES = (
    "KUBECONFIG",
    "KUBEPRESENCE_PORT_FORWARD",
    "KUBEPRESENCE_REGISTRY",
    "KUBEPRESENCE_IMAGE_PULL_SECRETS",
)

app = typer.Typer(
    name="kubepresence",
    help="Join a Kubernetes cluster's network from your workstation and intercept its traffic.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the configuration kubepresence uses.", no_args_is_help=True)
helm_app = typer.Typer(help="Install, upgrade or remove the traffic manager.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(helm_app, name="helm")

OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="text for people, json or yaml for scripts")
]


def command(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async command body on uvloop and map errors to one line and an exit code."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        import uvloop

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(fn(*args, **kwargs))
        except KubepresenceError as error:
            fail(error.message)
            raise typer.Exit(exit_code(error.category)) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as error:  # noqa: BLE001 - the CLI's outermost boundary
            raise typer.Exit(report_unexpected(error)) from None

    return run


def _path_facts(path: Path) -> PathFacts:
    parent = path.parent
    return PathFacts(
        is_dir=path.is_dir(),
        parent_exists=parent.exists(),
        parent_is_dir=parent.is_dir(),
        parent_writable=parent.is_dir() and _can_create_in(parent),
        writable_if_exists=not path.exists() or path.is_dir() or _can_append(path),
    )


# Tried, not asked: os.access says yes to root everywhere (also in /proc, or on a
# read-only mount), and a "yes" here lets the command change the cluster first.
def _can_create_in(directory: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".kubepresence-check-"):
            return True
    except OSError:
        return False


def _can_append(path: Path) -> bool:
    try:
        with path.open("a"):
            return True
    except OSError:
        return False


# --- commands that work -------------------------------------------------------------


@app.command()
def version(output: OutputOption = OutputFormat.TEXT) -> None:
    """Show the versions of the client, the daemons and the traffic manager."""
    raise typer.Exit(quick.run_version(output))


@app.command()
def status(output: OutputOption = OutputFormat.TEXT) -> None:
    """Show whether the daemons run and what they are connected to."""
    raise typer.Exit(quick.run_status(output))


@app.command(name="quit")
@command
async def quit_() -> None:
    """Stop the daemons; the machine is left as it was before `connect`."""
    stopped = await _stop_daemons()
    say(f"Stopped the {' and the '.join(stopped)}." if stopped else "Nothing was running.")


async def _stop_daemons() -> list[str]:
    """End the session and stop both daemons; which ones were running."""
    stopped = []
    if socket_is_live(paths.userd_socket()):
        with contextlib.suppress(KubepresenceError):  # not connected: nothing to end
            await daemons.disconnect(paths.userd_socket())
    if socket_is_live(paths.rootd_socket()):
        await daemons.quit_rootd(paths.rootd_socket())
        await _wait_gone("root daemon", paths.rootd_socket())
        stopped.append("root daemon")
    if socket_is_live(paths.userd_socket()):
        await daemons.quit_userd(paths.userd_socket())
        await _wait_gone("user daemon", paths.userd_socket())
        stopped.append("user daemon")
    return stopped


@app.command()
@command
async def loglevel(
    level: Annotated[str, typer.Argument(help=f"one of {', '.join(LEVELS)}")],
    duration: Annotated[
        int,
        typer.Option("--duration", "-d", min=0, help="seconds until the level reverts; 0: never"),
    ] = 0,
    local_only: Annotated[
        bool, typer.Option("--local-only", "-l", help="only the user and root daemons")
    ] = False,
    remote_only: Annotated[
        bool,
        typer.Option("--remote-only", "-r", help="only the traffic manager and agents"),
    ] = False,
) -> None:
    """Change the log level of the daemons, the traffic manager and its agents."""
    level = level.lower()
    if level not in LEVELS:
        raise UserError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    if local_only and remote_only:
        raise UserError("--local-only and --remote-only exclude each other")
    targets = []
    if not remote_only:
        targets += [
            ("User daemon", paths.userd_socket(), daemons.set_userd_log_level),
            ("Root daemon", paths.rootd_socket(), daemons.set_rootd_log_level),
        ]
    userd_socket = paths.userd_socket()
    connected = socket_is_live(userd_socket) and (
        (await daemons.userd_status(userd_socket)).state == "connected"
    )
    if remote_only and not connected:
        raise ConfigError("not connected: run 'kubepresence connect' first")
    if connected and not local_only:
        targets.append(("Traffic manager and agents", userd_socket, daemons.set_cluster_log_level))
    live = [(name, socket, call) for name, socket, call in targets if socket_is_live(socket)]
    if not live:
        raise ConfigError(
            "the user and root daemons are not running: run 'kubepresence connect' first"
        )
    for name, socket, call in live:
        await call(socket, level, duration)
        say(f"{name} log level: {level}" + (f" for {duration} s" if duration else ""))


@config_app.command("view")
@command
async def config_view(
    output: OutputOption = OutputFormat.TEXT,
    kubeconfig_flag: Annotated[
        str | None, typer.Option("--kubeconfig", help="kubeconfig file (default: as kubectl)")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
) -> None:
    """Show the kubeconfig selection and local paths kubepresence would use."""
    files = kubeconfig.kubeconfig_paths(kubeconfig_flag, os.environ, Path.home())
    documents = [_load_kubeconfig(f) for f in files if f.exists()]
    if not documents:
        raise ConfigError(f"no kubeconfig found (looked at {', '.join(map(str, files))})")
    chosen = kubeconfig.select(documents, context, namespace)
    state = {
        "kubeconfig": [str(f) for f in files],
        "context": chosen.context,
        "cluster": chosen.cluster,
        "server": chosen.server,
        "namespace": chosen.namespace,
        "user_daemon_socket": str(paths.userd_socket()),
        "root_daemon_socket": str(paths.rootd_socket()),
        "log_dir": str(paths.state_dir()),
    }
    say(render(state, output))


@app.command(context_settings={"allow_extra_args": True})
@command
async def connect(
    ctx: typer.Context,
    output: OutputOption = OutputFormat.TEXT,
    context: Annotated[str, typer.Option(help="kubeconfig context (default: current)")] = "",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="default namespace")] = "",
    kubeconfig_flag: Annotated[
        str, typer.Option("--kubeconfig", help="kubeconfig file (default: as kubectl)")
    ] = "",
    manager_namespace: Annotated[
        str, typer.Option(help="namespace of the traffic manager")
    ] = "kubepresence",
    mapped_namespaces: Annotated[
        list[str] | None, typer.Option(help="namespaces whose names resolve without suffix")
    ] = None,
    also_proxy: Annotated[list[str] | None, typer.Option(help="extra CIDR to route")] = None,
    never_proxy: Annotated[list[str] | None, typer.Option(help="CIDR never to route")] = None,
    no_install: Annotated[
        bool, typer.Option(help="fail instead of installing the traffic manager")
    ] = False,
    allow_conflicting_subnets: Annotated[
        list[str] | None,
        typer.Option(help="CIDR to route even where a local route overlaps (own table + rule)"),
    ] = None,
    vnat: Annotated[
        list[str] | None,
        typer.Option(help="CIDR of cluster addresses to reach through virtual addresses"),
    ] = None,
    proxy_via: Annotated[
        list[str] | None,
        typer.Option(
            help="CIDR=WORKLOAD: as --vnat, and the flows leave from WORKLOAD's pods "
            "([NAMESPACE/]WORKLOAD, with a traffic agent)"
        ),
    ] = None,
    virtual_subnet: Annotated[
        str,
        typer.Option(help=f"where virtual addresses come from [default: {DEFAULT_VIRTUAL_SUBNET}]"),
    ] = "",
    dns_exclude_suffix: Annotated[
        list[str] | None, typer.Option(help="names under this suffix never go to the cluster")
    ] = None,
    dns_include_suffix: Annotated[
        list[str] | None, typer.Option(help="names under this suffix always go to the cluster")
    ] = None,
    dns_map: Annotated[
        list[str] | None,
        typer.Option(help="NAME=TARGET: answer NAME with an IP address or another name's answer"),
    ] = None,
) -> None:
    """Join the cluster network: cluster services by name, ClusterIP and pod IP.

    With `-- CMD [ARGS]`: run CMD on the cluster network, then undo what this connect
    started (the session, the daemons), and exit with CMD's exit code."""
    command_line = list(ctx.args)
    problem = first_problem(
        [
            executable_problem(command_line[0], shutil.which(command_line[0]))
            if command_line
            else None,
            label_problem("--manager-namespace", manager_namespace),
            label_problem("--namespace", namespace) if namespace else None,
            *(label_problem("--mapped-namespaces", n) for n in mapped_namespaces or []),
            *(cidr_problem("--also-proxy", c) for c in also_proxy or []),
            *(cidr_problem("--never-proxy", c) for c in never_proxy or []),
        ]
    )
    if problem:
        raise UserError(problem)  # before a daemon starts or anything is installed
    try:
        routing = parse_routing(
            allow_conflicting=allow_conflicting_subnets or [],
            vnat=vnat or [],
            proxy_via=proxy_via or [],
            virtual_subnet=virtual_subnet,
            dns_exclude_suffixes=dns_exclude_suffix or [],
            dns_include_suffixes=dns_include_suffix or [],
            dns_map=dns_map or [],
        )
    except RoutingFlagError as error:
        raise UserError(str(error)) from None
    daemons_were_up = socket_is_live(paths.userd_socket()) and socket_is_live(paths.rootd_socket())
    was_connected = (
        daemons_were_up and (await daemons.userd_status(paths.userd_socket())).state == "connected"
    )
    with err().status("starting the daemons", spinner="dots"):
        socket = await starting.ensure_daemons()
    arguments = daemons.ConnectArguments(
        kubeconfig=kubeconfig_flag,
        context=context,
        namespace=namespace,
        manager_namespace=manager_namespace,
        mapped_namespaces=mapped_namespaces or [],
        also_proxy=also_proxy or [],
        never_proxy=never_proxy or [],
        no_install=no_install,
        environment={k: v for k, v in os.environ.items() if k in FORWARDED_VARIABLES},
        routing=routing,
    )
    try:
        with err().status("connecting", spinner="dots") as spinner:
            info = await daemons.connect(socket, arguments, lambda s: spinner.update(s))
        if output is OutputFormat.TEXT:
            say(
                f"Connected to context {info['context']} ({info['server']}), "
                f"namespace {info['namespace']}."
            )
        else:
            say(render(info, output))
        if command_line:
            raise typer.Exit(await _run_in_foreground(command_line))
    finally:
        if command_line:  # what this connect started ends with its command, whatever happened
            if not daemons_were_up:
                await _stop_daemons()
            elif not was_connected:
                with contextlib.suppress(KubepresenceError):
                    await daemons.disconnect(socket)


@app.command(name="list")
def list_(
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "",
    intercepts_only: Annotated[bool, typer.Option("--intercepts", "-i")] = False,
    output: OutputOption = OutputFormat.TEXT,
) -> None:
    """List the workloads that can be intercepted, with agent and intercept state."""
    raise typer.Exit(quick.run_list(namespace, intercepts_only, output))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@command
async def intercept(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="Deployment, ReplicaSet or StatefulSet")],
    port: Annotated[
        str,
        typer.Option(
            help="LOCAL[:PORT]: local port, and the service port name or number "
            "(the container port when no service selects the workload)"
        ),
    ],
    service: Annotated[
        str, typer.Option(help="the service to intercept, when several select the workload")
    ] = "",
    name: Annotated[str, typer.Option(help="intercept name (default: the workload's)")] = "",
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "",
    address: Annotated[str, typer.Option(help="local address to send traffic to")] = "127.0.0.1",
    env_file: Annotated[
        Path | None, typer.Option(help="write the app's environment (see --env-syntax)")
    ] = None,
    env_syntax: Annotated[
        str,
        typer.Option(
            help=f"the --env-file syntax: {', '.join(SYNTAXES)} (python-dotenv, `. FILE` in "
            "sh, docker run --env-file)"
        ),
    ] = "dotenv",
    env_json: Annotated[
        Path | None, typer.Option(help="write the app's environment (JSON)")
    ] = None,
    http_header: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=VALUE: only requests with this header (repeatable; `auto` makes one)"
        ),
    ] = None,
    http_path_prefix: Annotated[str, typer.Option(help="only requests under this path")] = "",
    http_path_equal: Annotated[str, typer.Option(help="only requests for this path")] = "",
    http_path_regex: Annotated[
        str, typer.Option(help="only requests whose path matches this regex")
    ] = "",
    http_method: Annotated[str, typer.Option(help="only requests with this method")] = "",
    preview_url: Annotated[
        bool, typer.Option(help="a link that shows this intercept through the cluster's ingress")
    ] = False,
    ingress_host: Annotated[
        str, typer.Option(help="the preview's entry: a Service host name in the cluster")
    ] = "",
    ingress_port: Annotated[
        int, typer.Option(help="the ingress port (default 80, or 443 with --ingress-tls)")
    ] = 0,
    ingress_tls: Annotated[bool, typer.Option(help="the ingress speaks TLS")] = False,
    mount: Annotated[
        str,
        typer.Option(
            help="where to mount the app's volumes (sshfs): `true`, a temporary "
            "directory; `false`, none; or a path (an empty or new directory)"
        ),
    ] = "true",
    share_local_port: Annotated[
        bool,
        typer.Option(
            help="allow a local port another intercept already receives on (both mix there)"
        ),
    ] = False,
    output: OutputOption = OutputFormat.TEXT,
) -> None:
    """Send a workload's traffic in the cluster to a process on this machine.

    With `-- CMD ARGS…` the command runs with the app's environment and the intercept
    ends when it exits; its exit code becomes ours. With an `--http-…` filter the
    intercept is personal: only matching HTTP requests come here, the rest go to the app.
    """
    hint = workload_hint(workload)
    if hint:
        raise UserError(hint)
    problem = first_problem(
        [
            label_problem("--name", name) if name else None,
            label_problem("--namespace", namespace) if namespace else None,
            address_problem("--address", address),
        ]
    )
    if problem:
        raise UserError(problem)
    spec = parse_port_spec(port)
    try:
        render_env_file = renderer(env_syntax)
    except EnvFileError as error:
        raise UserError(str(error)) from None
    for option, path in (("--env-file", env_file), ("--env-json", env_json)):
        if path is not None and (why := unwritable(option, str(path), _path_facts(path))):
            raise UserError(why)  # before anything is applied
    socket = quick.connected_socket()
    intercept_name = name or workload
    headers = http_header or []
    preview = preview_options(preview_url, ingress_host, ingress_port, ingress_tls)
    if preview is not None and not headers:
        headers = [AUTO]  # a preview selects its requests by a header of its own
    auto = None
    if wants_auto_header(headers):
        session = (await daemons.userd_info(socket)).get("session", "")
        auto = auto_header(intercept_name, str(session)) if session else None
    http_filter = filter_from_options(
        headers,
        path_prefix=http_path_prefix,
        path_equal=http_path_equal,
        path_regex=http_path_regex,
        method=http_method,
        auto=auto,
    )
    with err().status(f"intercepting {workload}", spinner="dots") as spinner:
        result = await _following_progress(
            socket,
            intercept_name,
            lambda step: spinner.update(plain(f"intercepting {workload}: {step}")),
            daemons.create_intercept(
                socket,
                workload=workload,
                name=intercept_name,
                namespace=namespace,
                port=spec.remote,
                service=service,
                local=(address, spec.local),
                http_filter=http_filter,
                preview=preview,
                mount=parse_mount(mount, str(Path.cwd())),
                share_local_port=share_local_port,
            ),
        )
    try:
        files = [(env_file, render_env_file), (env_json, render_json)]
        try:  # every file rendered before one is written: a variable may not fit a syntax
            texts = [(path, text(result.environment)) for path, text in files if path]
        except EnvFileError as error:
            if not ctx.args:  # (with a command, the handler below removes it)
                await daemons.remove_intercept(socket, intercept_name)
            raise UserError(f"{error}; the intercept was removed") from None
        for path, text in texts:
            try:
                await asyncio.to_thread(path.write_text, text)
            except OSError as error:
                if not ctx.args:  # (with a command, the handler below removes it)
                    await daemons.remove_intercept(socket, intercept_name)
                raise UserError(
                    f"cannot write {path}: {error.strerror}; the intercept was removed"
                ) from None
        if output is not OutputFormat.TEXT:
            say(render(vars(result), output))
        else:
            if result.message:
                err().print(result.message, markup=False)
            via = f"service {result.service} " if result.service else ""
            say(
                f"Intercepting {result.namespace}/{result.workload} {via}port {result.port} "
                f"→ {result.local}"
                + (f", requests with {result.http_filter}" if result.http_filter else "")
            )
            if result.preview_url:
                say(f"Preview URL: {result.preview_url}")
            if result.mount_point:
                say(f"Volumes mounted at {result.mount_point}")
        if result.mount_error:  # the intercept works; only its volumes are missing
            err().print(f"warning: {result.mount_error}", markup=False)
        if ctx.args:
            root = {ROOT_VARIABLE: result.mount_point} if result.mount_point else {}
            code = await _run_with_environment(ctx.args, {**result.environment, **root})
            raise typer.Exit(code)
    except BaseException:
        if ctx.args:  # the command's intercept ends with the command, whatever happened
            await daemons.remove_intercept(socket, intercept_name)
        raise
    # Without a command the intercept stays until `kubepresence leave`.


async def _following_progress(
    socket: Path,
    name: str,
    show: Callable[[str], None],
    creating: Awaitable[views.InterceptResult],
) -> views.InterceptResult:
    """Wait for the intercept's creation, showing the step userd reports it is at."""
    try:
        async with asyncio.TaskGroup() as group:
            work = group.create_task(_awaited(creating), name="create-intercept")
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_POLL)
                if work.done():
                    break
                with contextlib.suppress(KubepresenceError):  # progress only: never fatal
                    for listed in await daemons.intercepts(socket):
                        if listed.name == name and listed.message:
                            show(listed.message)
    except* KubepresenceError as failed:
        raise failed.exceptions[0] from None
    return work.result()


async def _awaited(awaitable: Awaitable[views.InterceptResult]) -> views.InterceptResult:
    return await awaitable


@app.command()
@command
async def leave(name: Annotated[str, typer.Argument(help="intercept name")]) -> None:
    """End an intercept; the workload answers its own traffic again."""
    await daemons.remove_intercept(quick.connected_socket(), name)
    say(f"Left {name}.")


@app.command()
@command
async def uninstall(
    workloads: Annotated[
        list[str] | None, typer.Argument(help="workloads to remove the agent from")
    ] = None,
    all_agents: Annotated[
        bool, typer.Option("--all-agents", help="every workload of the namespace")
    ] = False,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "",
) -> None:
    """Remove traffic agents from workloads (they roll out without the sidecar)."""
    if not workloads and not all_agents:
        raise UserError("name the workloads to remove the agent from, or pass --all-agents")
    await daemons.uninstall(
        quick.connected_socket(),
        workloads=workloads or [],
        namespace=namespace,
        all_agents=all_agents,
    )
    say("Agents removed; the workloads roll out without them.")


@app.command(name="gather-logs")
@command
async def gather_logs(
    output_file: Annotated[Path, typer.Option("--output-file", "-f")] = Path(
        "kubepresence-logs.zip"
    ),
) -> None:
    """Collect the logs of every component, cluster side included, into one archive."""
    why = unwritable("--output-file", str(output_file), _path_facts(output_file))
    if why:
        raise UserError(why)
    socket = await starting.ensure_userd()
    files = await daemons.gather_logs(socket, output_file.resolve())
    say(f"Wrote {output_file} ({len(files)} logs).")


HelmNamespace = Annotated[
    str, typer.Option("--manager-namespace", help="namespace of the traffic manager")
]
HelmContext = Annotated[str, typer.Option(help="kubeconfig context (default: current)")]
HelmKubeconfig = Annotated[str, typer.Option("--kubeconfig", help="kubeconfig file")]


async def _helm(action: str, namespace: str, context: str, kubeconfig_flag: str) -> None:
    problem = label_problem("--manager-namespace", namespace)
    if problem:
        raise UserError(problem)
    socket = await starting.ensure_userd()
    with err().status(f"helm {action}", spinner="dots") as spinner:
        result = await daemons.manage_traffic_manager(
            socket,
            action=action,
            namespace=namespace,
            context=context,
            kubeconfig=kubeconfig_flag,
            environment={k: v for k, v in os.environ.items() if k in FORWARDED_VARIABLES},
            on_step=lambda s: spinner.update(s),
        )
    say(result[:1].upper() + result[1:] + ".")


@helm_app.command("install")
@command
async def helm_install(
    manager_namespace: HelmNamespace = "kubepresence",
    context: HelmContext = "",
    kubeconfig_flag: HelmKubeconfig = "",
) -> None:
    """Install the traffic manager (the same objects as the Helm chart in deploy/helm)."""
    await _helm("install", manager_namespace, context, kubeconfig_flag)


@helm_app.command("upgrade")
@command
async def helm_upgrade(
    manager_namespace: HelmNamespace = "kubepresence",
    context: HelmContext = "",
    kubeconfig_flag: HelmKubeconfig = "",
) -> None:
    """Upgrade the traffic manager to this client's version."""
    await _helm("upgrade", manager_namespace, context, kubeconfig_flag)


@helm_app.command("uninstall")
@command
async def helm_uninstall(
    manager_namespace: HelmNamespace = "kubepresence",
    context: HelmContext = "",
    kubeconfig_flag: HelmKubeconfig = "",
) -> None:
    """Remove the traffic manager and everything its install created."""
    await _helm("uninstall", manager_namespace, context, kubeconfig_flag)


# --- helpers ------------------------------------------------------------------------


async def _run_with_environment(argv: list[str], environment: dict[str, str]) -> int:
    """Run the user's command with the app's environment on top of ours."""
    try:
        process = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **environment})
    except OSError as error:
        raise UserError(f"cannot run {argv[0]}: {error.strerror}") from error
    return await process.wait()


async def _run_in_foreground(argv: list[str]) -> int:
    """Run the user's command as a shell runs a foreground job; its exit code (128 + the
    signal's number when a signal ended it). Ctrl-C reaches it from the terminal: here it
    only waits. A SIGTERM sent to this process is passed on to it."""
    try:
        process = await asyncio.create_subprocess_exec(*argv)
    except OSError as error:
        raise UserError(f"cannot run {argv[0]}: {error.strerror}") from error
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGTERM, process.terminate)
    try:
        code = await process.wait()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    return 128 - code if code < 0 else code


QUIT_TIMEOUT = 15.0


async def _wait_gone(name: str, socket: Path) -> None:
    """A daemon removes its socket last, after undoing what it changed: wait for that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIT_TIMEOUT
    while socket_is_live(socket):
        if loop.time() > deadline:
            raise InternalError(
                f"the {name} did not stop within {QUIT_TIMEOUT:.0f} s; see {paths.state_dir()}"
            )
        await asyncio.sleep(0.05)


def _load_kubeconfig(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read kubeconfig {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"kubeconfig {path} is not a YAML mapping")
    return loaded


# The exit codes are part of the interface: keep the import visible to readers.
__all__ = ["ExitCode", "app"]
