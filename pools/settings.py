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
    memory_sync_interval_s: 0             # > 0: the server syncs memory this often
    peer_health_interval_s: 2             # how often session-buddy peers are probed
    peer_tokens: {"https://buddy.example:8678/mcp": "..."}   # bearer tokens for peers
    event_log: /var/log/mahavishnu/events.jsonl   # every event as a JSON line (or "stderr")
    inline_result_max_bytes: 262144       # larger tool answers link their results (resources/read)

Environment: MAHAVISHNU_ENABLE_TASK_TYPES (comma list, added to the file's list),
MAHAVISHNU_IDLE_TIMEOUT, MAHAVISHNU_RETENTION_DAYS.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from pools.errors import InvalidInput, describe_validation_error

DEFAULT_PROMPT_COMMANDS: dict[str, list[str]] = {
    "terminal-qwen": ["qwen", "-p", "{prompt}"],
    "terminal-claude": ["claude", "-p", "{prompt}"],
    "terminal-gemini": ["gemini", "-p", "{prompt}"],
    "terminal-codex": ["codex", "exec", "{prompt}"],
}


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
    memory_sync_interval_s: float = Field(default=0.0, ge=0, description="Periodic memory sync; 0 is off.")
    peer_health_interval_s: float = Field(default=2.0, gt=0, description="How often peers are probed.")
    peer_tokens: dict[str, str] = Field(default_factory=dict,
                                        description="Bearer tokens by peer endpoint URL.")
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

    @property
    def db_path(self) -> Path:
        return self.home / "mahavishnu.db"

    @property
    def settings_path(self) -> Path:
        return self.home / "settings.yaml"

    @classmethod
    def load(cls, home: Path | None = None, **overrides: object) -> Settings:
        """Read settings.yaml from the home directory, then apply environment and overrides."""
        home = home or default_home()
        data: dict[str, object] = {}
        path = home / "settings.yaml"
        if path.exists():
            import yaml

            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise InvalidInput(f"{path} is not valid YAML: {exc}") from exc
            if not isinstance(loaded, dict):
                raise InvalidInput(f"{path} must hold a mapping of setting names to values")
            data.update(loaded)
        listed = data.get("enabled_task_types")
        if listed is not None and not isinstance(listed, list):
            raise InvalidInput(f"enabled_task_types in {path} must be a list of task type names",
                               field="enabled_task_types")
        enabled: list[str] = list(listed) if listed is not None else ["analyze", "echo"]
        extra = os.environ.get("MAHAVISHNU_ENABLE_TASK_TYPES", "")
        enabled += [t.strip() for t in extra.split(",") if t.strip() and t.strip() not in enabled]
        data["enabled_task_types"] = enabled
        for env, key in (("MAHAVISHNU_IDLE_TIMEOUT", "idle_timeout_s"),
                         ("MAHAVISHNU_RETENTION_DAYS", "retention_days")):
            if os.environ.get(env):
                data[key] = os.environ[env]
        data.update(overrides)
        data["home"] = home
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message, field = describe_validation_error(exc)
            raise InvalidInput(f"bad setting in {path} or the environment: {message}", field=field) from exc
