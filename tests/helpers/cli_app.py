"""The `mahavishnu pools` command group as click sees it (typer builds it from cli.app)."""

from __future__ import annotations

import typer.main
from typer.core import TyperGroup

import cli


def pools_group() -> TyperGroup:
    root = typer.main.get_command(cli.app)
    assert isinstance(root, TyperGroup)
    group = root.commands["pools"]
    assert isinstance(group, TyperGroup)
    return group
