"""stdio transport, the token rule, and bearer-token checking on a real server."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_server.registry import TOOLS
from tests.helpers.fuzz import check_bad_inputs
from tests.helpers.replies import tool_error
from tests.helpers.server import ROOT, cli_env, run_cli, running_server, write_settings


async def test_stdio_server_serves_every_tool(home: Path, tmp_path: Path) -> None:
    write_settings(home)
    params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "cli.py"), "serve", "--stdio"],
                                   env=cli_env(home), cwd=str(tmp_path))
    src = tmp_path / "s.py"
    src.write_text("x = 1\n")
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {t.name for t in TOOLS}  # every tool, and nothing else
        out = await client.call_tool("pools_execute", {"task_type": "analyze", "payload": {"file": str(src)}})
        assert not out.is_error and out.structured_content["task"]["state"] == "completed"
        bad = await client.call_tool("pools_execute", {"task_type": "nope"})
        assert tool_error(bad)["code"] == "unknown_task_type"
        await check_bad_inputs(client)


def test_non_loopback_bind_without_token_is_refused(home: Path) -> None:
    result = run_cli(home, "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr
    assert not (home / "server.json").exists()


TOKEN = "s3cret-s3cret-s3cret"


async def test_token_is_required_when_set(home: Path) -> None:
    write_settings(home)
    with running_server(home, "--token", TOKEN) as (url, _):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=10)
        assert info.value.code == 401
        # health stays public for load balancers and probes
        with urllib.request.urlopen(url.removesuffix("/mcp") + "/health", timeout=10) as r:
            assert r.status == 200
        http = httpx2.AsyncClient(headers={"Authorization": f"bearer {TOKEN}"})  # the scheme in any case
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            listed = await client.call_tool("pools_list", {})
            assert not listed.is_error
        # the CLI finds the token in server.json for a server on its own state directory
        result = run_cli(home, "pools", "list", "-f", "json")
        assert result.returncode == 0, result.stderr
        wrong = run_cli(home, "pools", "list", "--url", url, "--token", "nope-nope-nope-nope")
        assert wrong.returncode == 3 and "answered 401: the token given was refused" in wrong.stderr


@pytest.mark.parametrize("token", ["x", " ", "fifteen-chars-x", " sixteen-chars-x "])
def test_short_or_blank_tokens_are_refused_with_a_command_that_makes_one(home: Path, token: str) -> None:
    result = run_cli(home, "serve", "--host", "127.0.0.1", "--port", "0", "--token", token)
    assert result.returncode == 2, result.stdout
    assert "at least 16 characters" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr
    assert not (home / "server.json").exists()


def _get(url: str, host: str | None = None, origin: str | None = None, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    if origin:
        request.add_header("Origin", origin)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.parametrize("bind", ["127.0.0.2", "127.0.0.1"])
def test_every_loopback_bind_checks_host_and_origin_on_every_path(home: Path, bind: str) -> None:
    """127.0.0.2 is loopback: no token needed, and a DNS-rebinding page gets nowhere, /metrics included."""
    write_settings(home)
    with running_server(home, "--host", bind) as (url, _):
        base = url.removesuffix("/mcp")
        port = base.rsplit(":", 1)[1]
        for path in ("/metrics", "/health", "/healthz"):
            assert _get(base + path) == 200
            assert _get(base + path, host=f"evil.example:{port}") == 403, path
            assert _get(base + path, origin="http://evil.example") == 403, path
            assert _get(base + path, host=f"localhost:{port}", origin=f"http://127.0.0.9:{port}") == 200, path
        request = urllib.request.Request(url, data=b"{}", method="POST", headers={
            "Host": "attacker.example", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 403


def test_tls_with_certificate_and_key(home: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess

    assert shutil.which("openssl"), "openssl is needed to make a test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    write_settings(home)
    with running_server(home, "--certfile", str(cert), "--keyfile", str(key)) as (url, _):
        assert url.startswith("https://127.0.0.1:")
        ok = run_cli(home, "pools", "list", "--url", url, "-f", "json", MAHAVISHNU_CA_CERT=str(cert))
        assert ok.returncode == 0, ok.stderr
        untrusted = run_cli(home, "pools", "list", "--url", url)
        assert untrusted.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr.upper().replace(" ", "_")
