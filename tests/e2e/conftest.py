"""pytest fixtures for Hearth's end-to-end tests.

One `hearth serve` (build/debug/hearth, or $HEARTH_BIN) serves the whole pytest session on a free
loopback port with a fresh data directory; its log goes to build/test-logs/hearth-pytest.log and
its tail is attached to every failing test's report.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_DISABLE_XET ... when it is imported, so
the environment is set here, at conftest import time, before any test module imports it. The
port is therefore chosen now and the server started on it by the session fixture.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hearth_server import HearthServer, free_port  # noqa: E402

if "huggingface_hub" in sys.modules:  # pragma: no cover - would silently talk to the real Hub
    raise RuntimeError("huggingface_hub was imported before tests/e2e/conftest.py could set HF_ENDPOINT")

_PORT = free_port()
BASE = f"http://127.0.0.1:{_PORT}"
_HF_TMP = Path(tempfile.mkdtemp(prefix="hearth-e2e-hfhome-"))

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGING_FACE_HUB_TOKEN",
             "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DISABLE_SHARED_BLOBS"):
    os.environ.pop(_var, None)
os.environ.update({
    "HF_ENDPOINT": BASE,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
    "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
    "HF_HOME": str(_HF_TMP / "hf_home"),
    "HF_HUB_CACHE": str(_HF_TMP / "hub"),
    "HF_XET_CACHE": str(_HF_TMP / "xet"),
    "HF_ASSETS_CACHE": str(_HF_TMP / "assets"),
    "HF_HUB_ETAG_TIMEOUT": "60",
    "HF_HUB_DOWNLOAD_TIMEOUT": "120",
    "TOKENIZERS_PARALLELISM": "false",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    # The write token is only known once the server's data dir exists; set in the fixture below.
    "HF_TOKEN": "",
})

_SERVER: HearthServer | None = None


@pytest.fixture(scope="session")
def hearth() -> HearthServer:
    """The running server: .base, .token (write), .read_token, .user, .log_path, .count_requests()."""
    global _SERVER
    srv = HearthServer("pytest", port=_PORT)
    _SERVER = srv
    srv.start()
    os.environ["HF_TOKEN"] = srv.token
    yield srv
    code = srv.stop()
    errors = srv.sanitizer_errors()
    leaks = srv.leak_reports()
    if leaks:
        sys.stderr.write(f"\nwarning: hearth serve reported memory leaks at exit, see {srv.log_path}\n")
    srv.cleanup()
    if errors:
        raise AssertionError(f"hearth serve reported sanitizer errors: {errors[:5]}\n{srv.tail(80)}")
    if code not in (0, None) and not leaks:
        raise AssertionError(f"hearth serve exited {code} after SIGTERM\n{srv.tail(40)}")


@pytest.fixture(scope="session")
def base(hearth) -> str:
    return hearth.base


@pytest.fixture(scope="session")
def token(hearth) -> str:
    return hearth.token


@pytest.fixture(scope="session")
def user(hearth) -> str:
    return hearth.user


@pytest.fixture(scope="session")
def api(hearth):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hearth.base, token=hearth.token)


@pytest.fixture(scope="session")
def anon_api(hearth):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hearth.base, token=False)


@pytest.fixture
def uid() -> str:
    """A short unique suffix for repo names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def fresh_cache(tmp_path) -> Path:
    d = tmp_path / "hf-cache"
    d.mkdir()
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _SERVER is not None:
        rep.sections.append(("hearth serve log", _SERVER.tail(40)))


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_HF_TMP, ignore_errors=True)
