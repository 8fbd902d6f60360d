"""Resource limits of `hearth serve`, attacked the way the security review did, on the wire.

- git request bodies: a 200 KB gzip body that inflates to 200 MiB is refused with 413 and never
  reaches the disk; a push whose Content-Length is over the limit is refused before its body.
- slow clients: a request header must be complete within --header-timeout (also the keep-alive
  idle time), a stalled body or reply is cut after --io-timeout, but a slow transfer that keeps
  moving is not.
- one address holds at most --max-connections-per-ip connections.
- a request with two Content-Length headers (or Content-Length beside Transfer-Encoding) gets a
  400 at once and its connection closed.

The timing tests run their own servers with timeouts of one or two seconds; everything is on
127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
import zlib

import pytest
import requests

from hearth_server import HearthServer

HEADER_TIMEOUT = 1
IO_TIMEOUT = 2
PER_IP = 4


# ---- helpers ------------------------------------------------------------------------------

def connect(srv: HearthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float, bool]:
    """Reads until the server closes (or resets) the connection or `limit` seconds pass.
    Returns (bytes read, seconds waited, closed)."""
    start = time.monotonic()
    data = b""
    while True:
        left = limit - (time.monotonic() - start)
        if left <= 0:
            return data, time.monotonic() - start, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, time.monotonic() - start, False
        except ConnectionResetError:
            return data, time.monotonic() - start, True
        if not chunk:
            return data, time.monotonic() - start, True
        data += chunk


def read_response(sock: socket.socket, limit: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, leaving the connection open."""
    sock.settimeout(limit)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return status, headers, body[:length]


def health_request() -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"git:{token}".encode()).decode()


def own_server(name: str, *serve_args: str):
    srv = HearthServer(name, serve_args=list(serve_args)).start()
    try:
        yield srv
    finally:
        srv.stop()
        errors = srv.sanitizer_errors()
        srv.cleanup()
        assert not errors, f"hearth serve reported sanitizer errors: {errors[:5]}"


@pytest.fixture(scope="module")
def quick():
    """A server with one-second header and two-second I/O timeouts."""
    yield from own_server("limits-quick", "--header-timeout", str(HEADER_TIMEOUT),
                          "--io-timeout", str(IO_TIMEOUT))


@pytest.fixture(scope="module")
def few():
    """A server that takes PER_IP connections from one address."""
    yield from own_server("limits-few", "--max-connections-per-ip", str(PER_IP))


@pytest.fixture(scope="module")
def public_repo(hearth):
    repo = f"{hearth.user}/limits-{uuid.uuid4().hex[:8]}"
    r = requests.post(f"{hearth.base}/api/repos/create", headers={"Authorization": f"Bearer {hearth.token}"},
                      json={"name": repo.split("/")[1], "type": "model"}, timeout=30)
    assert r.status_code == 200, r.text
    return repo


def gzip_of_zeros(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    out = [z.compress(block) for _ in range(size >> 20)]
    out.append(z.flush())
    return b"".join(out)


class UploadSizeSampler:
    """Watches the sizes of the server's open files under DATA/uploads (git bodies in flight
    are unlinked temp files there, so only /proc/PID/fd sees them) and keeps the largest."""

    def __init__(self, srv: HearthServer):
        self.fd_dir = f"/proc/{srv.proc.pid}/fd"
        self.uploads = str(srv.data_dir / "uploads")
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.largest = max(self.largest, self.current())
            time.sleep(0.005)

    def current(self) -> int:
        largest = 0
        try:
            names = os.listdir(self.fd_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            try:
                if os.readlink(f"{self.fd_dir}/{name}").startswith(self.uploads):
                    largest = max(largest, os.stat(f"{self.fd_dir}/{name}").st_size)
            except OSError:
                pass  # closed meanwhile
        return largest

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---- git request bodies ----------------------------------------------------------------------

@pytest.mark.parametrize("who", ["anonymous", "authenticated"])
def test_gzip_bomb_to_upload_pack_is_refused_and_never_hits_the_disk(hearth, public_repo, who):
    bomb = gzip_of_zeros(200 << 20)
    assert len(bomb) < 300_000  # 200 KB on the wire, 200 MiB inflated
    headers = {"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip"}
    if who == "authenticated":
        headers["Authorization"] = basic(hearth.token)
    with UploadSizeSampler(hearth) as sampler:
        start = time.monotonic()
        r = requests.post(f"{hearth.base}/{public_repo}.git/git-upload-pack", data=bomb, headers=headers,
                          timeout=60)
        elapsed = time.monotonic() - start
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert r.headers.get("X-Error-Code") == "ContentTooLarge"
    if who == "anonymous":  # 1 MiB: the size limit comes first
        assert "larger than 1048576 bytes" in r.json()["error"] and "anonymous" in r.json()["error"]
    else:  # 10 MiB: the expansion check comes first
        assert "expands more than 100-fold" in r.json()["error"]
    assert elapsed < 20
    # Never more on disk than the limit (1 MiB anonymous, 10 MiB with a token), and nothing left.
    assert sampler.largest <= (10 << 20), f"{sampler.largest} bytes of request body on disk"
    time.sleep(0.2)
    assert sampler.current() == 0
    assert not os.listdir(hearth.data_dir / "uploads")


def test_gzip_body_that_expands_a_thousandfold_is_refused(hearth, public_repo):
    body = gzip_of_zeros(5 << 20)  # under the 10 MiB limit, but no git request compresses so
    r = requests.post(f"{hearth.base}/{public_repo}.git/git-upload-pack", data=body, timeout=60,
                      headers={"Content-Type": "application/x-git-upload-pack-request",
                               "Content-Encoding": "gzip", "Authorization": basic(hearth.token)})
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert r.headers.get("X-Error-Code") == "ContentTooLarge"
    assert "expands" in r.json()["error"]


def test_fetch_negotiation_over_the_limit_is_refused(hearth, public_repo):
    """12 MiB of have lines (gzip only halves hex): over the 10 MiB a token gets."""
    lines = b"".join(b"0032have %s\n" % os.urandom(20).hex().encode() for _ in range((12 << 20) // 50))
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    body = z.compress(lines) + z.flush()
    with UploadSizeSampler(hearth) as sampler:
        r = requests.post(f"{hearth.base}/{public_repo}.git/git-upload-pack", data=body, timeout=60,
                          headers={"Content-Type": "application/x-git-upload-pack-request",
                                   "Content-Encoding": "gzip", "Authorization": basic(hearth.token)})
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert r.headers.get("X-Error-Code") == "ContentTooLarge"
    assert "larger than 10485760 bytes" in r.json()["error"]
    assert sampler.largest <= (10 << 20)


def test_push_announcing_more_than_the_limit_is_refused_before_its_body(hearth, public_repo):
    sock = connect(hearth)
    sock.sendall((f"POST /{public_repo}.git/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: {basic(hearth.token)}\r\n"
                  "Content-Type: application/x-git-receive-pack-request\r\n"
                  f"Content-Length: {9 << 30}\r\n\r\n").encode() + b"PACK")
    data, elapsed, closed = read_until_closed(sock, 10)
    sock.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"X-Error-Code: ContentTooLarge" in data
    assert closed and elapsed < 5


def test_small_gzip_fetch_request_still_reaches_git(hearth, public_repo):
    """A real (if empty-handed) negotiation under the limit is answered by git, not refused."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = z.compress(b"0000") + z.flush()
    r = requests.post(f"{hearth.base}/{public_repo}.git/git-upload-pack", data=body, timeout=30,
                      headers={"Content-Type": "application/x-git-upload-pack-request",
                               "Content-Encoding": "gzip"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"] == "application/x-git-upload-pack-result"


# ---- request framing ---------------------------------------------------------------------

@pytest.mark.parametrize("framing", [
    b"Content-Length: 50\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\ncontent-length: 5\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
])
def test_ambiguous_body_length_is_400_and_closed(hearth, framing):
    sock = connect(hearth)
    sock.sendall(b"POST /api/repos/create HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing + b"\r\nhello")
    data, elapsed, closed = read_until_closed(sock, 10)
    sock.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert b"X-Error-Code: BadRequest" in data
    assert b"Content-Length" in data.partition(b"\r\n\r\n")[2]  # the message names the problem
    assert closed and elapsed < 5


# ---- slow clients --------------------------------------------------------------------------

def test_half_a_header_then_silence_is_closed(quick):
    sock = connect(quick)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
    data, elapsed, closed = read_until_closed(sock, 10)
    sock.close()
    assert closed and data == b""
    assert HEADER_TIMEOUT * 0.8 <= elapsed < HEADER_TIMEOUT + 3


def test_header_trickled_byte_by_byte_is_closed(quick):
    """Inactivity never passes one second here: the header deadline counts from the start."""
    sock = connect(quick)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    start = time.monotonic()
    cut = False
    while time.monotonic() - start < HEADER_TIMEOUT + 5:
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.2)
    if not cut:
        _, _, cut = read_until_closed(sock, 0.5)
    elapsed = time.monotonic() - start
    sock.close()
    assert cut, "a trickling client kept its connection"
    assert elapsed < HEADER_TIMEOUT + 3


def test_idle_keep_alive_connection_is_closed(quick):
    sock = connect(quick)
    sock.sendall(health_request())
    status, _, _ = read_response(sock)
    assert status == 200
    data, elapsed, closed = read_until_closed(sock, 10)
    sock.close()
    assert closed and data == b""
    assert elapsed < HEADER_TIMEOUT + 3


def test_slow_but_moving_upload_is_not_cut(quick):
    """4 s of body, well past both timeouts, with no pause longer than the I/O timeout."""
    name = f"slow-{uuid.uuid4().hex[:8]}"
    body = (b'{"name": "%s", "type": "model"}' % name.encode()).ljust(80)
    sock = connect(quick)
    sock.sendall(b"POST /api/repos/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (quick.token.encode(), len(body)))
    start = time.monotonic()
    for i in range(0, len(body), 10):
        sock.sendall(body[i:i + 10])
        time.sleep(0.5)
    status, _, reply = read_response(sock)
    sock.close()
    assert time.monotonic() - start > HEADER_TIMEOUT + IO_TIMEOUT
    assert status == 200, reply


def test_slow_but_moving_download_is_not_cut(quick):
    data = os.urandom(8 << 20)
    name = f"dl-{uuid.uuid4().hex[:8]}"
    from huggingface_hub import HfApi

    api = HfApi(endpoint=quick.base, token=quick.token)
    api.create_repo(f"{quick.user}/{name}")
    api.upload_file(path_or_fileobj=data, path_in_repo="big.bin", repo_id=f"{quick.user}/{name}")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # keep the server waiting on us
    sock.connect(("127.0.0.1", quick.port))
    sock.sendall(b"GET /%s/%s/resolve/main/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                 % (quick.user.encode(), name.encode()))
    start = time.monotonic()
    got = b""
    sock.settimeout(10)
    for pause in range(3):  # three pauses of 1.5 s, each under the 2 s I/O timeout
        time.sleep(1.5)
        while len(got) < (pause + 1) * (256 << 10):
            chunk = sock.recv(65536)
            assert chunk, f"download cut after {len(got)} bytes and {time.monotonic() - start:.1f} s"
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    while len(body) < len(data):
        chunk = sock.recv(1 << 20)
        assert chunk, f"download cut after {len(body)} bytes"
        body += chunk
    sock.close()
    assert time.monotonic() - start > 2 * IO_TIMEOUT
    assert body == data


def test_stalled_download_is_cut(quick):
    data = os.urandom(8 << 20)
    name = f"stall-{uuid.uuid4().hex[:8]}"
    from huggingface_hub import HfApi

    api = HfApi(endpoint=quick.base, token=quick.token)
    api.create_repo(f"{quick.user}/{name}")
    api.upload_file(path_or_fileobj=data, path_in_repo="big.bin", repo_id=f"{quick.user}/{name}")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", quick.port))
    sock.sendall(b"GET /%s/%s/resolve/main/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                 % (quick.user.encode(), name.encode()))
    start = time.monotonic()
    # Read nothing: the server must give up within two checks of the I/O timeout.
    while time.monotonic() - start < 2 * IO_TIMEOUT + 6:
        time.sleep(0.5)
        if f"/{name}/resolve/main/big.bin 200" in quick.log_text():
            break
    elapsed = time.monotonic() - start
    sock.close()
    assert f"/{name}/resolve/main/big.bin 200" in quick.log_text(), "a stalled download was never cut"
    assert "(client went away)" in [l for l in quick.log_lines() if f"/{name}/resolve" in l][-1]
    assert elapsed < 2 * IO_TIMEOUT + 4


def test_stalled_body_is_cut_after_the_io_timeout(quick):
    sock = connect(quick)
    sock.sendall(b"POST /api/repos/create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"na")
    data, elapsed, closed = read_until_closed(sock, 15)
    sock.close()
    assert closed
    assert IO_TIMEOUT * 0.8 <= elapsed < IO_TIMEOUT + 4


# ---- connections per address ----------------------------------------------------------------

def test_connections_beyond_the_per_address_limit_are_refused(few):
    held = [connect(few) for _ in range(PER_IP)]
    time.sleep(0.3)  # let the server accept them all
    extra = connect(few)
    data, elapsed, closed = read_until_closed(extra, 5)
    extra.close()
    assert closed and data == b"", "a connection over the limit was kept"
    assert elapsed < 3
    for sock in held:  # the earlier ones are served
        sock.sendall(health_request())
        status, _, _ = read_response(sock)
        assert status == 200
    held.pop().close()
    time.sleep(0.3)
    again = connect(few)  # a freed slot is usable again
    again.sendall(health_request())
    assert read_response(again)[0] == 200
    again.close()
    for sock in held:
        sock.close()
