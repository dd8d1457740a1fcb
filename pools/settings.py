"""Operator settings: a YAML file in the state directory, overridden by environment variables.

    $MAHAVISHNU_HOME/settings.yaml      (MAHAVISHNU_HOME defaults to the XDG state dir)

    enabled_task_types: [analyze, echo]   # add shell / python / prompt to allow code execution
    idle_timeout_s: 30                    # a worker idle this long is stopped (down to min_workers)
    retention_days: 30                    # finished tasks older than this are pruned
    default_pool: true                    # create a local pool named "default" when none exists
    prompt_commands:                      # argv templates for the prompt task type, by worker type
      terminal-qwen: [qwen, -p, "{prompt}"]
    task_type_refs:                       # extra task types without packaging (still need enabling)
      resize: my_tasks.images:ResizeTask
    memory_endpoint: http://127.0.0.1:8678/mcp   # where `pools memory sync` pushes task memory
    memory_endpoints: [http://buddy:8678/mcp]   # more Session-Buddies that `pools memory search` asks
    memory_sync_interval_s: 0             # > 0: the server syncs memory this often
    peer_health_interval_s: 2             # how often session-buddy peers are probed
    event_log: /var/log/mahavishnu/events.jsonl   # every event as a JSON line (or "stderr")
    inline_result_max_bytes: 262144       # larger tool answers link their results (resources/read)

Operator-only settings: what a client (an agent) may make the server reach, read and use.
No tool input can change them. SECURITY.md explains each.

    credentials:                          # named secrets and where each may be sent
      buddy-east: {env: BUDDY_EAST_TOKEN, endpoints: ["https://10.0.0.5:8678/"]}
      prod-kube: {file: /etc/mahavishnu/kube-token, kube_contexts: [prod-east]}
      cluster-a: {env: KUBE_TOKEN, endpoints: ["https://10.0.0.1:6443"], ca_file: /etc/mahavishnu/cluster-a-ca.pem}
    allowed_endpoints: [127.0.0.0/8, "::1", localhost]   # client-given endpoints (the default)
    kubeconfig: ~/.kube/config            # the operator's kubeconfig (default KUBECONFIG, then ~/.kube/config)
    kube_contexts: [prod-east]            # contexts of it a client may choose
    file_roots: [/srv/code]               # besides the working directory, where tasks may read files
    max_workers_per_pool: 16              # resource limits; defaults derive from cores and memory

Environment: MAHAVISHNU_ENABLE_TASK_TYPES (comma list, added to the file's list),
MAHAVISHNU_IDLE_TIMEOUT, MAHAVISHNU_RETENTION_DAYS.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pools.errors import InvalidInput, describe_validation_error

DEFAULT_PROMPT_COMMANDS: dict[str, list[str]] = {
    "terminal-qwen": ["qwen", "-p", "{prompt}"],
    "terminal-claude": ["claude", "-p", "{prompt}"],
    "terminal-gemini": ["gemini", "-p", "{prompt}"],
    "terminal-codex": ["codex", "exec", "{prompt}"],
}


def _memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # no psutil figure: assume a small machine
        return 4 << 30


CORES = os.cpu_count() or 2
MEMORY = _memory_bytes()
# A local worker costs ~32 MB of RSS idle; budget 128 MiB each so a busy pool still fits in memory.
DEFAULT_MAX_TOTAL_WORKERS = max(4, min(CORES * 16, MEMORY // (128 << 20)))
# One payload: a thousandth of memory, 4..64 MiB (24 MiB with 24 GiB).
DEFAULT_MAX_PAYLOAD = max(4 << 20, min(64 << 20, MEMORY // 1024))
# Unfinished tasks are held in memory: one per 2 MiB of it (12,288 with 24 GiB).
DEFAULT_MAX_QUEUED = max(1000, min(100_000, MEMORY // (2 << 20)))
# A result is held whole in the server (and a map_reduce reduces them): 1/16 of memory, 64 MiB..1 GiB.
DEFAULT_MAX_RESULT = max(64 << 20, min(1 << 30, MEMORY // 16))
DEFAULT_WORKER_MEMORY = max(2 << 30, min(8 << 30, MEMORY // 4))
SERVER_TOKEN_VARIABLES = frozenset({"MAHAVISHNU_TOKEN", "MAHAVISHNU_PEER_TOKEN"})


class Credential(BaseModel):
    """A named secret the operator lets the server send: from an environment variable or a file,
    and only to the endpoints (URL prefixes) or Kubernetes contexts it is bound to."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = Field(default=None, description="Environment variable holding the secret.")
    file: Path | None = Field(default=None, description="File holding the secret (first line, whitespace "
                                                        "stripped).")
    endpoints: list[str] = Field(default_factory=list, description="URL prefixes it may be sent to.")
    kube_contexts: list[str] = Field(default_factory=list, description="Kubernetes contexts it authenticates.")
    ca_file: Path | None = Field(default=None, description="CA bundle (PEM) that verifies the https endpoints it "
                                                           "is bound to, e.g. a cluster's private CA.")

    @model_validator(mode="after")
    def _one_source(self) -> Credential:
        if (self.env is None) == (self.file is None):
            raise ValueError("a credential takes exactly one of env or file")
        if self.env in SERVER_TOKEN_VARIABLES:
            raise ValueError(f"{self.env} is the server's own token; it is never sent anywhere")
        if not self.endpoints and not self.kube_contexts:
            raise ValueError("a credential needs endpoints (URL prefixes) or kube_contexts it may be used for")
        for prefix in self.endpoints:
            if not re.fullmatch(r"https?://[^/?#@\s]+(/[^?#\s]*)?", prefix):
                raise ValueError(f"endpoint {prefix!r} must be an http:// or https:// URL prefix without "
                                 "user info, query or fragment")
        return self


def default_home() -> Path:
    env = os.environ.get("MAHAVISHNU_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_state_dir

    return Path(user_state_dir("mahavishnu"))


class Settings(BaseModel):
    home: Path = Field(default_factory=default_home)
    enabled_task_types: list[str] = Field(default_factory=lambda: ["analyze", "echo"])
    idle_timeout_s: float = Field(default=30.0, gt=0)
    retention_days: float = Field(default=30.0, gt=0)
    default_pool: bool = True
    crash_window_s: float = Field(default=60.0, gt=0, description="Window in which crashes count.")
    crash_threshold: int = Field(default=3, ge=1, description="Crashes in the window that degrade a pool.")
    prompt_commands: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_PROMPT_COMMANDS))
    memory_endpoint: str = Field(default="http://127.0.0.1:8678/mcp",
                                 description="Session-Buddy endpoint that memory sync pushes to.")
    memory_endpoints: list[str] = Field(
        default_factory=list,
        description="More Session-Buddy MCP URLs that memory search asks (memory_endpoint is asked too when set).")
    memory_sync_interval_s: float = Field(default=0.0, ge=0, description="Periodic memory sync; 0 is off.")
    peer_health_interval_s: float = Field(default=2.0, gt=0, description="How often peers are probed.")
    ecosystem_file: Path | None = Field(default=None, description="Candidate peers for discover; default "
                                                                  "$MAHAVISHNU_HOME/ecosystem.yaml.")
    k8s_poll_interval_s: float = Field(default=0.5, gt=0, description="Kubernetes: the first wait before an API "
                                                                      "call is retried (then doubling), and how often "
                                                                      "stuck Jobs and warm replicas are checked.")
    k8s_job_ttl_s: int = Field(default=300, ge=0, description="Kubernetes: a finished Job (and its pods) is "
                                                             "deleted this long after it ends; its result is "
                                                             "read before.")
    k8s_degraded_after_s: float = Field(default=10.0, gt=0, description="Kubernetes: API errors that persist this "
                                                                        "long turn the pool degraded.")
    k8s_failed_after_s: float = Field(default=120.0, gt=0, description="Kubernetes: API errors that persist this "
                                                                       "long turn the pool failed (it recovers "
                                                                       "by itself when the API answers again).")
    k8s_pending_timeout_s: float = Field(default=120.0, gt=0, description="A Job whose pod has not started by "
                                                                          "then fails with the reason.")
    event_log: str | None = Field(default=None, description="Also write every event as a JSON line to this file "
                                                            "path, or 'stderr'.")
    inline_result_max_bytes: int = Field(
        default=256 * 1024, ge=1024, le=512 * 1024,
        description="A tool answer larger than this carries its task results and payloads as resource links "
                    "(mahavishnu://tasks/{id}/result) instead of inline; at most 512 KiB keeps every "
                    "response under the 1 MiB an SSE client reads.")
    task_type_refs: dict[str, str] = Field(
        default_factory=dict,
        description="Extra task types without packaging: {name: 'module:Class'}, importable by the workers.")

    # -- operator-only: the trust boundary (SECURITY.md) --
    credentials: dict[str, Credential] = Field(default_factory=dict,
                                               description="Named secrets and the endpoints/contexts each may "
                                                           "be sent to.")
    allowed_endpoints: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1", "localhost"],
        description="Where client-given endpoints may point: URL prefixes, hosts, '*.domain' or networks "
                    "(CIDR). Endpoints named in credentials or memory_endpoint are allowed besides.")
    kubeconfig: Path | None = Field(default=None, description="The operator's kubeconfig (default KUBECONFIG, "
                                                              "then ~/.kube/config, then in-cluster).")
    kube_contexts: list[str] = Field(default_factory=list, description="Contexts of the kubeconfig a client may "
                                                                       "choose (its current context always).")
    file_roots: list[Path] = Field(default_factory=list, description="Directories tasks may read besides the "
                                                                     "working directory.")
    max_pools: int = Field(default=64, ge=1, description="Open pools at most.")
    max_workers_per_pool: int = Field(default=DEFAULT_MAX_TOTAL_WORKERS // 2, ge=1,
                                      description="max_workers (and min_workers) of one pool at most.")
    max_total_workers: int = Field(default=DEFAULT_MAX_TOTAL_WORKERS, ge=1,
                                   description="Sum of max_workers over local (mahavishnu) pools at most.")
    max_queued_tasks: int = Field(default=DEFAULT_MAX_QUEUED, ge=1, description="Unfinished tasks at most.")
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD, ge=1, description="A task payload's JSON size "
                                                                                  "at most.")
    max_result_bytes: int = Field(default=DEFAULT_MAX_RESULT, ge=1, description="A task result's JSON size at most.")
    worker_memory_bytes: int = Field(default=DEFAULT_WORKER_MEMORY, ge=0,
                                     description="Address-space limit (RLIMIT_AS) of each local worker; 0: none.")
    max_files_per_task: int = Field(default=10_000, ge=1, description="Files a task may read at most.")
    max_file_bytes: int = Field(default=4 << 20, ge=1, description="Size of one file a task reads at most.")
    max_read_bytes_per_task: int = Field(default=256 << 20, ge=1, description="Bytes a task reads in all at most.")

    @field_validator("file_roots", "kubeconfig", mode="after")
    @classmethod
    def _expand(cls, value: object) -> object:
        if isinstance(value, list):
            return [Path(p).expanduser() for p in value]
        return Path(value).expanduser() if isinstance(value, Path) else value

    @property
    def db_path(self) -> Path:
        return self.home / "mahavishnu.db"

    @property
    def settings_path(self) -> Path:
        return self.home / "settings.yaml"

    @classmethod
    def load(cls, home: Path | None = None, **overrides: object) -> Settings:
        """Read settings.yaml from the home directory, then apply environment and overrides.
        Any problem is one InvalidInput line naming where the bad value came from."""
        home = home or default_home()
        path = home / "settings.yaml"
        data = _read_file(path, set(cls.model_fields) - {"home"})
        source = {key: str(path) for key in data}
        listed = data.get("enabled_task_types")
        if listed is not None and not isinstance(listed, list):
            raise InvalidInput(f"{path}: enabled_task_types must be a list of task type names, "
                               f"not {listed!r}", field="enabled_task_types")
        enabled: list[str] = list(listed) if listed is not None else ["analyze", "echo"]
        extra = os.environ.get("MAHAVISHNU_ENABLE_TASK_TYPES", "")
        enabled += [t.strip() for t in extra.split(",") if t.strip() and t.strip() not in enabled]
        data["enabled_task_types"] = enabled
        for env, key in ENVIRONMENT.items():
            if os.environ.get(env):
                data[key] = os.environ[env]
                source[key] = f"{env}={os.environ[env]!r}"
        data.update(overrides)
        source.update({key: "the caller's override" for key in overrides})
        data["home"] = home
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message, field = describe_validation_error(exc)
            where = source.get((field or "").split(".")[0], str(path))
            raise InvalidInput(f"{where}: {message}", field=field) from exc


RETIRED = {  # settings that were replaced: what to write instead
    "peer_tokens": "was replaced by credentials: declare each token as `credentials: {NAME: {env: VARIABLE, "
                   "endpoints: [URL]}}` (or `file: PATH`), so it is only ever sent to the endpoints listed",
}
ENVIRONMENT = {"MAHAVISHNU_IDLE_TIMEOUT": "idle_timeout_s", "MAHAVISHNU_RETENTION_DAYS": "retention_days"}


def _read_file(path: Path, known: set[str]) -> dict[str, object]:
    """The settings file as a mapping (empty when there is none); a malformed file or an unknown
    key (a typo would otherwise be silently ignored) is one line naming the place."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{where}: not valid YAML: {problem}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InvalidInput(f"{path}: must be a mapping of setting names to values, not a "
                           f"{type(loaded).__name__}")
    for key in loaded:
        if key in RETIRED:
            raise InvalidInput(f"{path}: {key} {RETIRED[key]}", field=str(key))
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"the settings are: {', '.join(sorted(known))}"
            raise InvalidInput(f"{path}: unknown setting {key!r}; {hint}", field=str(key))
    return {str(k): v for k, v in loaded.items()}
