"""`mahavishnu`: the command-line client of the Mahavishnu Pools MCP server.

Every `mahavishnu pools <command>` is generated from the server's tool registry
(mcp_server/registry.py): its options, types, defaults and help are the tool's input
model. A command speaks MCP to, in order: --url / MAHAVISHNU_URL; a server this user
started on the same state directory (its server.json); else a server embedded in this
process. The MCP SDK is imported only when a command really calls a tool, and a command's
options are made only when that command is asked for (see ToolGroup): `--help` imports no
tool model, `pools list` builds one command, not twenty.

Exit codes: 0 success, 1 the task or operation failed, 2 bad usage or input,
3 server unreachable.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import types
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

import typer
import typer.main
from typer.core import TyperGroup
from typer.models import TyperInfo

from cli_words import cli_words, explain

if TYPE_CHECKING:
    import click
    from pydantic.fields import FieldInfo

    from mcp_server.registry import ToolSpec
    from pools.peer_client import PeerReply

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
USAGE_ERRORS = {"invalid_input", "unknown_task_type", "task_type_disabled", "pool_not_found", "task_not_found"}

app = typer.Typer(
    name="mahavishnu", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.1 s of start-up
    help="Mahavishnu Pools: run tasks on pools of workers through one MCP server.",
)


class ToolGroup(TyperGroup):
    """`pools` (and its sub-groups): one command per registry tool, each made into a click command
    only when it is asked for. Building every command's options from its input model at start-up
    imported every tool model and cost every invocation ~30 ms for the twenty commands it did not run."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = ToolCommands("")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the names, without building every command as items() would


class ToolCommands(MutableMapping[str, "click.Command"]):
    """The commands of one tool group by name (registry order, then sub-groups), built on first use."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # "" for `pools`, "memory " for `pools memory`
        self.built: dict[str, click.Command] = {}

    def _names(self) -> list[str]:
        leaves, groups = [], []
        for spec in tools():
            if spec.command.startswith(self.prefix):
                group, _, name = spec.command[len(self.prefix):].rpartition(" ")
                if not group:
                    leaves.append(name)
                elif group.split(" ")[0] not in groups:
                    groups.append(group.split(" ")[0])
        return leaves + groups + [n for n in self.built if n not in leaves and n not in groups]

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.built:
            if name not in self._names():
                raise KeyError(name)
            self.built[name] = self._build(name)
        return self.built[name]

    def _build(self, name: str) -> click.Command:
        spec = by_command().get(self.prefix + name)
        if spec is None:  # a sub-group, made as `add_typer` would
            sub = typer.Typer(cls=ToolGroup, no_args_is_help=True, rich_markup_mode=None,
                              help=GROUP_HELP.get(name, f"{name} commands."))
            group = typer.main.get_group_from_info(
                TyperInfo(sub, name=name), pretty_exceptions_short=app.pretty_exceptions_short,
                suggest_commands=app.suggest_commands, rich_markup_mode=None)
            group.commands = ToolCommands(f"{self.prefix}{name} ")
            return group
        holder = typer.Typer()  # the command as `@group.command(name=..., help=...)` would register it
        holder.command(name=name, help=words(spec, spec.cli_description or spec.description))(make_command(spec))
        return typer.main.get_command_from_info(holder.registered_commands[0],
                                                pretty_exceptions_short=app.pretty_exceptions_short,
                                                rich_markup_mode=None)

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self.built or name in self._names()


def tools() -> tuple[ToolSpec, ...]:
    from mcp_server.registry import TOOLS

    return TOOLS


@functools.cache
def by_command() -> dict[str, ToolSpec]:
    return {spec.command: spec for spec in tools()}


@functools.cache
def by_name() -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in tools()}


pools_app = typer.Typer(cls=ToolGroup, no_args_is_help=True, rich_markup_mode=None,
                        help="Manage pools and run tasks. Each command is one MCP tool.")
app.add_typer(pools_app, name="pools")
app.add_typer(pools_app, name="pool", hidden=True)  # the user docs also say `mahavishnu pool ...`


class CliError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, exit_code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(exit_code)


# -- where the server is ---------------------------------------------------------------------
@dataclass
class Target:
    mode: str  # "url", "running" or "embedded"
    url: str | None = None
    token: str | None = None


def state_home() -> Path:
    from pools.settings import default_home

    return default_home()


def find_target(url: str | None, token: str | None) -> Target:
    if url:
        return Target("url", url, token)
    from mcp_server import runtime

    entry = runtime.read(state_home())
    if entry:
        return Target("running", entry["url"], token or entry.get("token"))
    return Target("embedded")


def import_http_without_trio() -> None:
    """Import the SDK's HTTP stack (httpcore2) without trio. httpcore2 imports trio whenever it is
    installed, to run under a trio event loop too: ~40 ms of a cold start, and this process runs asyncio."""
    if "trio" in sys.modules:
        return
    sys.modules["trio"] = None  # type: ignore[assignment]  # makes `import trio` raise ImportError
    try:
        import httpcore2  # noqa: F401
    except ImportError:  # an SDK without httpcore2: nothing to spare
        pass
    finally:
        del sys.modules["trio"]


async def call_tool(target: Target, name: str, args: dict[str, Any], progress: Any = None,
                    read_timeout: float | None = None) -> PeerReply:
    import_http_without_trio()
    from mcp import Client

    from pools.peer_client import follow_links, read_reply

    if target.mode == "embedded":
        from mcp_server.server import build_server
        from pools.errors import PoolError
        from pools.manager import PoolManager

        try:
            manager = PoolManager()
            await manager.start()
        except PoolError as exc:
            code = {"store_busy": EXIT_UNREACHABLE, "invalid_input": EXIT_USAGE}.get(exc.code, EXIT_FAILED)
            raise CliError(exc.message, code) from exc
        try:
            async with Client(build_server(manager, log_level="WARNING")) as client:
                reply = read_reply(await client.call_tool(name, args, progress_callback=progress))
                if not reply.is_error and reply.data is not None:  # large values came as links
                    reply.linked = await follow_links(client, reply.data)
                return reply
        finally:
            await manager.close()
    else:
        from pools.errors import PoolUnavailable
        from pools.peer_client import PeerClient

        assert target.url is not None
        # A call that starts work speaks the session protocol, whose stream a long execute resumes after
        # a blip. A read-only call has nothing to resume (run it again): the stateless protocol answers
        # it in one round trip, with no session to open, listen on and delete (~12 ms of `pools list`).
        resumable = not by_name()[name].read_only
        try:
            client = PeerClient(target.url, target.token, resumable=resumable)
            reply = await client.call(name, args, read_timeout or 300.0, progress, follow=True)
        except PoolUnavailable as exc:
            raise CliError(unreachable_message(target, exc), EXIT_UNREACHABLE) from exc
        return reply


def _http_status(target: Target) -> int | None:
    """The HTTP status a plain POST gets: tells a refused token apart from a dead server."""
    import urllib.error
    import urllib.request

    assert target.url is not None
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    request = urllib.request.Request(target.url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def unreachable_message(target: Target, exc: Exception) -> str:
    detail = str(exc).removeprefix(f"peer {target.url} ")
    if _http_status(target) == 401:
        told = "the token given was refused" if target.token else "it needs a token"
        return f"the server at {target.url} answered 401: {told}; pass --token or set MAHAVISHNU_TOKEN"
    hint = ("start one with `mahavishnu serve`, or unset MAHAVISHNU_URL to use the embedded server"
            if target.mode == "url" else "its server.json is stale; restart it with `mahavishnu serve`")
    return f"cannot reach the server at {target.url} ({detail}); {hint}"


# -- generating the commands -------------------------------------------------------------------
def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _is_json_field(annotation: Any) -> bool:
    base, _ = _unwrap_optional(annotation)
    return get_origin(base) in (dict, list) or base in (dict, list, Any)


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


@functools.cache
def commands_by_tool() -> dict[str, str]:
    return {name: spec.command for name, spec in by_name().items()}


def words(spec: ToolSpec, text: str) -> str:
    """A tool's description or error, told in this command's options."""
    return cli_words(text, spec.input_model.model_fields, commands_by_tool())


def _one_of(where: str, choices: list[str]) -> Any:
    def parse(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}", param_hint=where)
        return value

    return parse


def cli_parameter(spec: ToolSpec, name: str, info: FieldInfo) -> inspect.Parameter:
    """One typer parameter for one input-model field."""
    base, optional = _unwrap_optional(info.annotation)
    help_text = words(spec, info.description or "")
    default: Any = inspect.Parameter.empty
    choice: list[str] | None = None
    if not info.is_required():
        default = info.get_default(call_default_factory=False) if info.default_factory is None else None
        if isinstance(default, Enum):
            default = default.value
    if _is_json_field(info.annotation):
        annotation: Any = str | None if default is not inspect.Parameter.empty else str
        help_text += " (JSON)"
        if default is not inspect.Parameter.empty:
            default = None
    elif isinstance(base, type) and issubclass(base, Enum):
        # Checked here, in our words, and completed by the shell from the same choices.
        choice = [m.value for m in base]
        annotation = str | None if optional else str
    else:
        annotation = info.annotation
    extra: dict[str, Any] = {} if choice is None else {
        "parser": _one_of(option_name(name) if name not in spec.positional else name.upper(), choice),
        "autocompletion": lambda: choice, "metavar": "[" + "|".join(choice) + "]"}
    if name in spec.positional:
        param: Any = typer.Argument(help=help_text, metavar=name.upper(), show_default=False, **extra)
    else:
        flag = option_name(name)
        if base is bool:
            flag = f"{flag}/--no-{name.replace('_', '-')}" if default is True else flag
        names = [flag] + ([spec.short[name]] if name in spec.short else [])
        param = typer.Option(*names, help=help_text, **extra)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, param])


def common_parameters(spec: ToolSpec) -> list[inspect.Parameter]:
    choices = "|".join(spec.formats)
    params = [
        inspect.Parameter("format", inspect.Parameter.KEYWORD_ONLY, default="table", annotation=Annotated[
            str, typer.Option("--format", "-f", help=f"Output format: {choices}.")]),
        inspect.Parameter("url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option("--url", envvar="MAHAVISHNU_URL",
                                     help="Server URL (e.g. http://127.0.0.1:8680/mcp). Default: the server "
                                          "running on this state directory, else an embedded one.")]),
        inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option("--token", envvar="MAHAVISHNU_TOKEN", help="Bearer token for --url.")]),
    ]
    if spec.result_at is not None:
        params.append(inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Path | None, typer.Option("--output", "-o", help="Also write the whole result (JSON, however large) "
                                                             "to this file.")]))
    if spec.wide:
        params.append(inspect.Parameter("wide", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--wide", help="Full ids in tables (a narrow terminal shows them shortened).")]))
    if spec.name == "pools_watch":
        params.append(inspect.Parameter("refresh", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=Annotated[
            float, typer.Option("--refresh", "-r", min=0.1, help="Seconds between refreshes.")]))
    return params


COMMON = {"format", "url", "token", "refresh", "output", "wide"}


ID_FIELDS = {"task_id", "pool"}  # fields that take an id as a narrow table shows it (`task_1a2b3c4d…`)


def build_arguments(spec: ToolSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Command-line values -> validated tool arguments (exit 2 naming the option when wrong)."""
    from pydantic import BaseModel, ValidationError

    args: dict[str, Any] = {}
    for name, info in spec.input_model.model_fields.items():
        value = values.get(name)
        if value is None and not info.is_required():
            continue
        if _is_json_field(info.annotation) and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise CliError(f"{option_name(name)} is not valid JSON ({exc.msg} at position {exc.pos}): "
                               f"{value[:80]!r}", EXIT_USAGE) from exc
        if name in ID_FIELDS and isinstance(value, str) and value.endswith("…"):
            value = value[:-1]  # an id pasted from a narrow table: its shown part is a prefix
        args[name] = value.value if isinstance(value, Enum) else value
    try:
        model: BaseModel = spec.input_model.model_validate(args)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            head = (loc[0].upper() if loc[0] in spec.positional else option_name(loc[0])) if loc else ""
            where = head + ("." + ".".join(loc[1:]) if len(loc) > 1 else "")
            info = spec.input_model.model_fields.get(loc[0]) if loc else None
            msg = words(spec, explain(dict(err), info.description if info else None))
            problems.append(f"{where}: {msg}" if where else msg)
        raise CliError("; ".join(problems), EXIT_USAGE) from exc
    return model.model_dump(mode="json", include=set(args))


def make_command(spec: ToolSpec) -> Any:
    def command(**values: Any) -> None:
        fmt = values["format"]
        if fmt not in spec.formats:
            raise fail(f"--format must be one of {', '.join(spec.formats)}, not {fmt!r}", EXIT_USAGE)
        try:
            args = build_arguments(spec, values)
            target = find_target(values.get("url"), values.get("token"))
            code = run_command(spec, args, fmt, target, values)
        except CliError as exc:
            if fmt == "json":
                print(json.dumps({"error": {"code": "cli", "message": exc.message}}, indent=2))
            raise fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        raise typer.Exit(code)

    params = [cli_parameter(spec, n, i) for n, i in spec.input_model.model_fields.items()]
    positional = [p for p in params if p.name in spec.positional]
    params = positional + [p for p in params if p.name not in spec.positional] + common_parameters(spec)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = spec.command.replace("-", "_").replace(" ", "_")
    command.__doc__ = words(spec, spec.cli_description or spec.description)
    return command


def run_command(spec: ToolSpec, args: dict[str, Any], fmt: str, target: Target, values: dict[str, Any]) -> int:
    from cli_render import Renderer

    renderer = Renderer("table" if fmt == "progress" else fmt, wide=bool(values.get("wide")))
    if target.mode == "embedded":
        if spec.name == "pools_execute" and args.get("wait") is False:
            raise CliError("--no-wait needs a running server: the task would stop when this command exits. "
                           "Start one with `mahavishnu serve` (or pass --url)", EXIT_USAGE)
        if spec.name == "pools_watch" and fmt == "table":
            raise CliError("watch shows live workers and needs a running server; start one with "
                           "`mahavishnu serve` in another terminal (or pass --url); `-f json` prints one "
                           "snapshot", EXIT_USAGE)
    if spec.name == "pools_watch" and fmt == "table":
        return watch(target, args, renderer, values["refresh"])
    import asyncio

    read_timeout = float(args.get("timeout", 300.0)) + 60.0
    if fmt == "progress":
        result = with_progress(target, spec, args, read_timeout)
    else:
        result = asyncio.run(call_tool(target, spec.name, args, read_timeout=read_timeout))
    if result.is_error:
        code = result.code or "error"
        if fmt == "json":
            renderer.json({"error": result.error or {"code": code, "message": result.message, "field": None}})
        typer.echo(f"Error: {words(spec, result.message)}", err=True)
        return EXIT_USAGE if code in USAGE_ERRORS else EXIT_FAILED
    renderer.render(spec.name, result.data)
    if values.get("output") is not None and spec.result_at is not None:
        write_result(values["output"], result, spec.result_at)
    if spec.name == "pools_distribute":
        return EXIT_OK if result.data["failed"] == 0 else EXIT_FAILED
    if spec.name == "pools_memory_sync":
        return EXIT_OK if not result.data.get("error") else EXIT_FAILED
    if spec.name == "pools_execute":
        task = result.data["task"]
        if result.data["finished"]:
            return EXIT_OK if task["state"] == "completed" else EXIT_FAILED
        return EXIT_OK if args.get("wait") is False else EXIT_FAILED
    return EXIT_OK


def write_result(path: Path, reply: PeerReply, at: tuple[str, ...]) -> None:
    """The result as the server holds it: the linked JSON text byte for byte, or the inline value."""
    holder: Any = reply.data
    for key in at:
        holder = holder[key]
    link = holder.get("result_link") or {}
    text = reply.linked.get(link.get("uri", "")) if link else None
    try:
        path.write_text(text if text is not None else json.dumps(holder.get("result")), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write --output {path}: {exc}", EXIT_FAILED) from exc
    typer.echo(f"Result written to {path}", err=True)


def with_progress(target: Target, spec: ToolSpec, args: dict[str, Any], read_timeout: float) -> PeerReply:
    import asyncio

    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        handle = bar.add_task(f"{args.get('task_type', spec.command)}", total=None)

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            bar.update(handle, completed=done, total=total or 1,
                       description=message or args.get("task_type", spec.command))

        return asyncio.run(call_tool(target, spec.name, args, on_progress, read_timeout))


def watch(target: Target, args: dict[str, Any], renderer: Any, refresh: float) -> int:
    """A live table on a terminal; elsewhere (a pipe, a log) one table per refresh."""
    import asyncio
    import contextlib

    from rich.live import Live

    async def snapshot() -> Any:
        snap = await call_tool(target, "pools_watch", args)
        if snap.is_error:
            raise CliError(snap.text, EXIT_FAILED)
        return renderer.watch_table(snap.data)

    async def loop() -> None:
        # Ctrl-C ends the loop between two snapshots, never in the middle of a call: cancelling an MCP
        # call mid-stream could hang in its cleanup under load. A second Ctrl-C cancels at once.
        import signal

        stop = asyncio.Event()
        main = asyncio.current_task()

        def interrupted() -> None:
            if stop.is_set() and main is not None:
                main.cancel()
            stop.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)

        async def pause() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), refresh)

        if not renderer.console.is_terminal:
            while not stop.is_set():
                renderer.out(await snapshot())
                renderer.console.file.flush()
                await pause()
            return
        with Live(await snapshot(), console=renderer.console, refresh_per_second=8) as live:
            while not stop.is_set():
                await pause()
                if not stop.is_set():
                    live.update(await snapshot())

    try:
        asyncio.run(loop())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_OK
    return EXIT_OK


GROUP_HELP = {"memory": "Pool memory: sync task history to a Session-Buddy, search it across pools."}


# -- the server --------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for MCP (/mcp) and /health.")] = 8680,
    token: Annotated[str | None, typer.Option(envvar="MAHAVISHNU_TOKEN",
                                              help="Bearer token clients must send.")] = None,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); serves https.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP over stdin/stdout (for an IDE).")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    grace: Annotated[float, typer.Option(min=0, help="On SIGTERM/SIGINT, seconds running tasks get to finish "
                                                    "before the server exits (what still runs is re-queued or "
                                                    "failed with the reason at the next start).")] = 5.0,
) -> None:
    """Run the MCP server (streamable HTTP on 127.0.0.1:8680/mcp, or --stdio)."""
    run_server(host, port, token, certfile, keyfile, stdio, log_level, grace, peer=False)


def run_server(host: str, port: int, token: str | None, certfile: Path | None, keyfile: Path | None, stdio: bool,
               log_level: str, grace: float, *, peer: bool) -> None:
    """Serve until told to stop; a stop signal is a clean exit 0 (see mcp_server.http)."""
    import asyncio

    from mcp_server.http import HttpOptions, serve_http, serve_stdio
    from mcp_server.tracing import configure_tracing
    from pools.errors import PoolError
    from pools.settings import Settings

    configure_tracing("mahavishnu-peer" if peer else "mahavishnu")
    if bool(certfile) != bool(keyfile):
        raise fail("--certfile and --keyfile go together", EXIT_USAGE)
    try:
        settings = Settings.load()
        if peer:
            settings = settings.model_copy(update={"home": settings.home / "peers" / str(port),
                                                   "default_pool": False})
        if stdio:
            asyncio.run(serve_stdio(settings, grace))
        else:
            asyncio.run(serve_http(settings, HttpOptions(host=host, port=port, token=token, certfile=certfile,
                                                         keyfile=keyfile, log_level=log_level, grace=grace),
                                   peer=peer))
    except PoolError as exc:
        code = {"invalid_input": EXIT_USAGE, "port_busy": EXIT_UNREACHABLE}.get(exc.code, EXIT_FAILED)
        raise fail(exc.message, code) from None
    except OSError as exc:
        raise fail(f"cannot serve on {host}:{port}: {exc}", EXIT_FAILED) from None
    except KeyboardInterrupt:
        pass


@app.command()
def shell() -> None:
    """A Python prompt with `maha_app` (the pool manager on this machine's state directory) and `await`."""
    from cli_shell import run_shell

    run_shell()


peer_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="A Session-Buddy-compatible peer that runs tasks for other Mahavishnu servers.")
app.add_typer(peer_app, name="peer")


@peer_app.command("serve")
def peer_serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for MCP (/mcp) and /health.")] = 8678,
    token: Annotated[str | None, typer.Option(envvar="MAHAVISHNU_PEER_TOKEN",
                                              help="Bearer token clients must send.")] = None,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); serves https.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    grace: Annotated[float, typer.Option(min=0, help="On SIGTERM/SIGINT, seconds running tasks get to finish "
                                                    "before the server exits (what still runs is re-queued or "
                                                    "failed with the reason at the next start).")] = 5.0,
) -> None:
    """Serve Session-Buddy's pool and memory tools with 3 real workers per pool.

    State lives in $MAHAVISHNU_HOME/peers/PORT; enabled task types follow the same settings
    as the main server."""
    run_server(host, port, token, certfile, keyfile, False, log_level, grace, peer=True)


def version_callback(value: bool) -> None:
    if value:
        from mcp_server import __version__

        typer.echo(f"mahavishnu {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    """Mahavishnu Pools: run tasks on pools of workers through one MCP server."""


def main() -> None:
    # Typer's own usage errors exit 2, as ours do. One program name however it is started
    # (`python cli.py` too): usage lines and shell completion say `mahavishnu`.
    app(prog_name="mahavishnu")


if __name__ == "__main__":
    sys.exit(main())
