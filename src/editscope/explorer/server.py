"""Running the explorer: the port checked before anything loads, uvicorn in the foreground (the
CLI) or in a background thread (tests, notebooks)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from ..errors import InputError

DEFAULT_PORT = 8765


class PortError(InputError):
    """The port cannot be bound (taken, privileged, out of range)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> int:
    """``port`` if it can be bound on ``host`` now (0: a free one, returned), else :class:`PortError`."""
    if not 0 <= port <= 65535:
        raise PortError(f"--port {port}: a port is 0..65535 (0 picks a free one)")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host.strip("[]"), port))
        except PermissionError:
            raise PortError(f"--port {port}: not allowed for this user (ports below 1024 need privileges); pick "
                            f"another, e.g. --port {DEFAULT_PORT}") from None
        except OSError as e:
            if e.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
                raise PortError(f"--port {port}: already in use on {host} (another explorer?); pick another with "
                                "--port N, or --port 0 for any free one") from None
            raise PortError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
        return s.getsockname()[1]


@dataclass
class RunningServer:
    """A server started by :func:`start_in_thread`; :attr:`url` is its address."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` from a daemon thread; returns once it accepts connections."""
    port = check_port(host, port)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="explorer", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the explorer did not start on {host}:{port}")
        time.sleep(0.02)
    return RunningServer(server, thread, f"http://{host}:{port}")


def serve_forever(app: FastAPI, host: str, port: int) -> None:
    """Serve in the foreground until interrupted (Ctrl-C)."""
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="off")


__all__ = ["DEFAULT_PORT", "PortError", "RunningServer", "check_port", "is_loopback", "serve_forever",
           "start_in_thread"]
