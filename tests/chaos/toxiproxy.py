"""A Toxiproxy server of our own and a small client for its HTTP API.

Toxiproxy (github.com/Shopify/toxiproxy, built by ``scripts/tools.sh``) is a TCP proxy
whose links take *toxics*: latency, bandwidth limits, resets, timeouts, slicing. A
:class:`Link` is one proxy; the clients under test connect to its ``listen`` address.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / ".tools" / "bin" / "toxiproxy-server"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ToxiproxyError(RuntimeError):
    """The Toxiproxy API refused a request."""


class Toxiproxy:
    """One ``toxiproxy-server`` process, its API on ``127.0.0.1:<port>``."""

    def __init__(self, log_path: Path) -> None:
        if not BINARY.exists():
            raise FileNotFoundError(f"{BINARY} is missing: run scripts/tools.sh")
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [str(BINARY), "-host", "127.0.0.1", "-port", str(self.port)],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/version")
                return
            except (OSError, ToxiproxyError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"toxiproxy did not start: see {self.log_path}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                text = reply.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path}: {exc.code} {exc.read()!r}") from None
        return json.loads(text) if text.strip() else None

    def link(self, name: str, upstream: str, listen_host: str = "127.0.0.1", port: int = 0) -> Link:
        """A new proxy ``listen_host:port`` (a free port when 0) -> ``upstream``."""
        listen = f"{listen_host}:{port or free_port(listen_host)}"
        self.request("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream})
        return Link(self, name, listen, upstream)

    def reset(self) -> None:
        """Enable every link and remove every toxic."""
        self.request("POST", "/reset")


@dataclass
class Link:
    """One proxied TCP link."""

    proxy: Toxiproxy
    name: str
    listen: str
    upstream: str

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def add_toxic(self, kind: str, stream: str = "downstream", **attributes: float) -> str:
        """Add a toxic (``latency``, ``bandwidth``, ``timeout``, ``reset_peer``, ``slicer``...);
        return its name."""
        name = f"{kind}_{stream}_{time.monotonic_ns()}"
        body = {"name": name, "type": kind, "stream": stream, "toxicity": 1.0,
                "attributes": attributes}  # fmt: skip
        self.proxy.request("POST", f"/proxies/{self.name}/toxics", body)
        return name

    def remove_toxic(self, name: str) -> None:
        self.proxy.request("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def set_enabled(self, enabled: bool) -> None:
        """Disabling closes every connection and refuses new ones."""
        self.proxy.request("POST", f"/proxies/{self.name}", {"enabled": enabled})
