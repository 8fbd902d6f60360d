"""Start and stop a real `hearth serve` for the end-to-end tests.

Shared by tests/e2e/conftest.py (pytest) and usable from a plain Python script:

    srv = HearthServer("mytest").start()
    ... srv.base, srv.token, srv.read_token, srv.user ...
    srv.stop()

Extra `hearth serve` flags go in serve_args, e.g. HearthServer("t", serve_args=["--header-timeout", "1"]).

The server gets a fresh data directory, a free loopback port and a log file under
build/test-logs/ (its stderr: one line per request). Only the standard library is used here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = REPO_ROOT / "build" / "test-logs"

# Sanitizer reports that mean the server misbehaved (leaks are reported separately).
_SANITIZER_ERRORS = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer")
_LEAKS = re.compile(r"ERROR: LeakSanitizer")


def hearth_bin() -> Path:
    return Path(os.environ.get("HEARTH_BIN") or (REPO_ROOT / "build" / "debug" / "hearth"))


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data` (what the Hub sends as ETag / oid for a regular file)."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


class HearthServerError(RuntimeError):
    pass


class HearthServer:
    def __init__(self, name: str, port: int | None = None, user: str = "alice",
                 serve_args: list[str] | tuple[str, ...] = ()):
        self.name = name
        self.serve_args = list(serve_args)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.user = user
        self.bin = hearth_bin()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"hearth-e2e-{name}-"))
        self.data_dir = self.tmp / "data"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"hearth-{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_fh = None
        self.token = ""
        self.read_token = ""
        self.exit_code: int | None = None

    # -- admin CLI -------------------------------------------------------------------------
    def admin(self, *args: str) -> str:
        cmd = [str(self.bin), "admin", "--data", str(self.data_dir), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise HearthServerError(
                f"`{' '.join(cmd)}` exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr[-3000:]}"
            )
        return r.stdout

    def create_user(self, name: str) -> None:
        self.admin("create-user", name)

    def create_token(self, name: str, write: bool = True) -> str:
        out = self.admin("create-token", name, "--write" if write else "--read").strip()
        if not out.startswith("hf_") or len(out.split()) != 1:
            raise HearthServerError(f"create-token printed {out!r}, expected a token alone starting with hf_")
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "HearthServer":
        if not self.bin.exists():
            raise HearthServerError(f"{self.bin} does not exist: run `make debug` first (or set HEARTH_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.create_user(self.user)
        self.token = self.create_token(self.user, write=True)
        self.read_token = self.create_token(self.user, write=False)
        self._spawn("wb")
        self._wait_healthy()
        return self

    def restart(self, kill: bool = False) -> "HearthServer":
        """Stop (SIGTERM, or SIGKILL when kill=True) and start again on the same data dir and port."""
        if kill and self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
            self._close_log()
        else:
            self.stop()
        self._spawn("ab")
        self._wait_healthy()
        return self

    def _spawn(self, mode: str) -> None:
        self._log_fh = open(self.log_path, mode)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        supp = REPO_ROOT / "tests" / "lsan.supp"
        if supp.exists():
            env.setdefault("LSAN_OPTIONS", f"suppressions={supp}")
        self.proc = subprocess.Popen(
            [str(self.bin), "serve", "--data", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
             *self.serve_args],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def _wait_healthy(self, tries: int = 200, delay: float = 0.05) -> None:
        url = f"{self.base}/health"
        last = None
        # 200 x 50 ms, plus a little slack for the sanitizer build's start-up
        for _ in range(tries):
            if self.proc.poll() is not None:
                raise HearthServerError(
                    f"hearth serve exited with {self.proc.returncode} before answering /health\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = r.status
            except urllib.error.HTTPError as e:
                last = e.code
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = e
            time.sleep(delay)
        self.stop()
        raise HearthServerError(f"GET {url} never answered 200 (last: {last})\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.exit_code = self.proc.returncode
                self.proc = None
                self._close_log()
                raise HearthServerError(f"hearth serve ignored SIGTERM for {timeout}s (killed)\n{self.tail()}")
        self.exit_code = self.proc.returncode
        self.proc = None
        self._close_log()
        return self.exit_code

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- log -------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def tail(self, n: int = 60) -> str:
        lines = self.log_lines()
        return f"--- last {min(n, len(lines))} lines of {self.log_path} ---\n" + "\n".join(lines[-n:])

    def sanitizer_errors(self) -> list[str]:
        return [l for l in self.log_lines() if _SANITIZER_ERRORS.search(l)]

    def leak_reports(self) -> list[str]:
        return [l for l in self.log_lines() if _LEAKS.search(l)]

    def count_requests(self, method: str, *path_parts: str) -> int:
        """Request log lines naming `method` (a whole word) and containing every one of `path_parts`."""
        word = re.compile(rf"(^|[^A-Z]){re.escape(method)}([^A-Z]|$)")
        return sum(1 for l in self.log_lines() if all(p in l for p in path_parts) and word.search(l))

    def wait_log_quiet(self, settle: float = 0.2, limit: float = 3.0) -> None:
        """Wait until the log stops growing (request lines may be written after the reply)."""
        end = time.time() + limit
        size = -1
        while time.time() < end:
            cur = self.log_path.stat().st_size if self.log_path.exists() else 0
            if cur == size:
                return
            size = cur
            time.sleep(settle)
