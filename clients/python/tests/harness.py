"""Real parts for the tests: a nats-server with JetStream and flare-launcher workers,
each a child process in a test's own temporary directory.

Readiness is awaited from the processes' own log lines, read by a thread each.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[3]
#: Generous, for a loaded 2-core machine.
READY_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoggedProcess:
    """A child process whose stderr (with stdout) is collected line by line."""

    def __init__(self, name: str, argv: list[str], env: Optional[dict] = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def await_line(self, text: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Waits until a line containing `text` is printed; fails with the output if it is not."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: any(text in line for line in self.lines) or self.proc.poll() is not None, timeout
            )
            if not found or not any(text in line for line in self.lines):
                raise AssertionError(f"{self.name}: no line with {text!r}; output:\n{''.join(self.lines)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def nats_server_bin() -> str:
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    if not found:
        raise AssertionError("nats-server not found: run `source scripts/ensure-nats-server.sh`")
    return found


def flare_launcher_bin() -> str:
    path = os.environ.get("FLARE_LAUNCHER_BIN") or str(REPO / "target" / "debug" / "flare-launcher")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: build it with `cargo build`")
    return path


class NatsServer:
    """nats-server -js on a free port; `restart()` keeps the port and the store."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.store = workdir / "nats-store"
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: Optional[LoggedProcess] = None

    def start(self) -> None:
        argv = [nats_server_bin(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.process = LoggedProcess("nats-server", argv)
        self.process.await_line("Server is ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class TcpProxy:
    """Forwards connections on a port of its own to `target_port` on localhost.

    `cut()` drops every connection and refuses new ones (the port is closed)
    until `restore()`: a link through it is cut as a network would cut it.
    """

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._target_port = target_port
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._links: list[socket.socket] = []
        self.restore()

    def restore(self) -> None:
        """Opens the port again."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Closes the port and every connection through it."""
        with self._lock:
            listener, self._listener = self._listener, None
            links, self._links = self._links, []
        for s in ([listener] if listener else []) + links:
            _shut(s)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._links += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copies `src` to `dst` until either ends; then ends both."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    _shut(src)
    _shut(dst)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Worker:
    """A flare-launcher worker with the process backend, with a data directory of its own."""

    def __init__(self, nats: NatsServer | TcpProxy, workdir: Path, worker_id: str, *extra: str) -> None:
        data_dir = workdir / f"worker-{worker_id}"
        argv = [
            flare_launcher_bin(),
            "worker",
            "--nats-url",
            nats.url,
            "--data-dir",
            str(data_dir),
            "--worker-id",
            worker_id,
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLARE_")}
        env["RUST_LOG"] = "debug"  # the most a worker ever logs
        self.process = LoggedProcess(f"worker {worker_id}", argv, env=env)
        self.process.await_line("worker ready")

    def stop(self) -> int:
        return self.process.stop()
