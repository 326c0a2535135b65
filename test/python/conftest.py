"""Fixtures of the Python binding's tests (run by test/python/run)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import bus

ROOT = Path(__file__).resolve().parents[2]


def tool(variable: str, default: str) -> str:
    """A helper program built by test/python/run (or by hand)."""
    path = os.environ.get(variable) or str(ROOT / default)
    if not os.access(path, os.X_OK | os.R_OK):
        pytest.fail(f"{path} is missing: build it or set {variable} (test/python/run does)")
    return path


@pytest.fixture
def cli() -> str:
    """The `bus` command."""
    return tool("BUS_CLI", "target/release/bus")


@pytest.fixture
def peer() -> str:
    """The Rust test peer (test/peer.rs)."""
    return tool("BUS_PEER", "target/release/examples/peer")


@pytest.fixture
def libbus() -> str:
    """The C library."""
    return tool("BUS_LIBBUS", "target/release/libbus.so")


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path, monkeypatch):
    """Random buses are made under the test's own directory."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def path(tmp_path):
    """A bus made for the test, removed after it."""
    p = str(tmp_path / "bus")
    bus.Bus(p).create()
    yield p
    try:
        bus.Bus(p).unlink()
    except FileNotFoundError:
        pass


def stat(cli: str, path: str) -> dict:
    out = subprocess.run([cli, "stat", "--json", path], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def await_listeners(cli: str, path: str, n: int) -> None:
    """Waits until `n` processes are counted on the bus (semaphore S)."""
    deadline = time.monotonic() + 30
    while stat(cli, path)["listeners"] != n:
        assert time.monotonic() < deadline, f"never {n} listeners on {path}"
        time.sleep(0.005)
