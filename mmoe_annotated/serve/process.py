"""The service as a child process: started on a free loopback port, waited for, stopped cleanly.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``), which starts
the service this way; the tests and the serving benchmark do too.

``with ServiceProcess(folder) as service:`` runs ``python -m mmoe_annotated.serve --model folder
--port 0`` (a port the system chooses, on ``127.0.0.1``), reads the address it prints, waits
until ``GET /health`` answers, and on leaving sends SIGTERM and waits for the exit.
:meth:`ServiceProcess.stop` returns the exit status and what the service wrote on standard error.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ServiceProcess"]

_READY = re.compile(r"^serving \S+ \(\S+, \w+\) on (http://\S+)$")


class ServiceProcess:
    """``python -m mmoe_annotated.serve --model PATH`` in a child process (``args``: more flags)."""

    def __init__(self, model: str | os.PathLike, *args: str, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 120.0, env: dict | None = None):
        self.command = [sys.executable, "-m", "mmoe_annotated.serve", "--model", str(Path(model)),
                        "--host", host, "--port", str(port), *args]
        self.timeout, self.env = timeout, env
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []

    def start(self) -> "ServiceProcess":
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True, env=env)
        ready = threading.Event()
        readers = [threading.Thread(target=self._read, args=(self.process.stdout, self._stdout, ready), daemon=True),
                   threading.Thread(target=self._read, args=(self.process.stderr, self._stderr, None), daemon=True)]
        for t in readers:
            t.start()
        self._readers = readers
        deadline = time.monotonic() + self.timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the service did not start ({' '.join(self.command[1:4])} ...); it said: "
                                   + (self.stderr.strip()[-2000:] or "nothing"))
        self.url = _READY.match(self._stdout[0].strip()).group(1)
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the service never answered GET /health; it said: " + self.stderr[-2000:])
            time.sleep(0.05)
        return self

    @staticmethod
    def _read(stream, lines: list[str], ready: threading.Event | None) -> None:
        for line in stream:
            lines.append(line)
            if ready is not None and _READY.match(line.strip()):
                ready.set()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait; a process that does not end in ``timeout`` seconds is killed.
        Returns the exit status (None if it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for t in getattr(self, "_readers", []):
            t.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()
        return self.process.returncode

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
