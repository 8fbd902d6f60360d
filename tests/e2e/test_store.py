"""The chunk-level dedup store, end to end: near-copies cost only their changes, gc reclaims
what no repo references, and a server killed at random moments during uploads leaves a store
that `hearth admin fsck` calls clean and loses nothing it acknowledged.

Each test runs its own `hearth serve` (build/debug/hearth) on a fresh data directory, so the
storage figures are its alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import threading
import time

import numpy as np
import pytest
import requests

from hearth_server import HearthServer, hearth_bin

MiB = 1024 * 1024


def stats(srv: HearthServer) -> dict:
    return json.loads(srv.admin("stats", "--json"))


def safetensors_model(rng, tensors: int, tensor_bytes: int) -> tuple[bytes, list[np.ndarray]]:
    """A real-looking safetensors file of bf16 tensors (random 16-bit words)."""
    arrays = [rng.integers(0, 2**16, size=tensor_bytes // 2, dtype=np.uint16) for _ in range(tensors)]
    return build_safetensors(arrays), arrays


def build_safetensors(arrays) -> bytes:
    header, offset = {}, 0
    for i, a in enumerate(arrays):
        header[f"layers.{i}.weight"] = {"dtype": "BF16", "shape": [a.size],
                                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(a.tobytes() for a in arrays)


def upload(srv: HearthServer, repo: str, path: str, data: bytes) -> None:
    """batch → PUT → commit with plain HTTP, as the LFS clients do."""
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {srv.token}"}
    r = requests.post(f"{srv.base}/{repo}.git/info/lfs/objects/batch", headers=auth, timeout=60,
                      json={"operation": "upload", "transfers": ["basic"],
                            "objects": [{"oid": oid, "size": len(data)}]})
    r.raise_for_status()
    obj = r.json()["objects"][0]
    if "actions" in obj:
        requests.put(obj["actions"]["upload"]["href"], data=data, timeout=300).raise_for_status()
    body = "\n".join(json.dumps(l) for l in (
        {"key": "header", "value": {"summary": f"add {path}", "description": ""}},
        {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": len(data)}}))
    requests.post(f"{srv.base}/api/models/{repo}/commit/main", headers={**auth, "Content-Type":
                  "application/x-ndjson"}, data=body, timeout=60).raise_for_status()


def create(srv: HearthServer, name: str) -> str:
    r = requests.post(f"{srv.base}/api/repos/create", headers={"Authorization": f"Bearer {srv.token}"},
                      json={"name": name, "type": "model"}, timeout=30)
    assert r.status_code in (200, 409), r.text
    return f"{srv.user}/{name}"


@pytest.fixture
def server():
    srv = HearthServer(f"store-{os.getpid()}-{random.randrange(1 << 30)}").start()
    yield srv
    srv.stop()
    srv.cleanup()


def test_near_copies_share_storage_and_gc_reclaims(server):
    rng = np.random.default_rng(1234)
    model_a, arrays = safetensors_model(rng, tensors=30, tensor_bytes=3 * MiB + 512 * 1024 + 1234)  # ~105 MiB
    changed = [a.copy() for a in arrays]
    for i in (3, 14, 25):  # 10% of the tensors fine-tuned
        changed[i] = rng.integers(0, 2**16, size=arrays[i].size, dtype=np.uint16)
    model_b = build_safetensors(changed)
    assert len(model_a) >= 100 * MiB

    a, b, c = create(server, "base-model"), create(server, "finetune"), create(server, "mirror")
    upload(server, a, "model.safetensors", model_a)
    s0 = stats(server)
    assert s0["storedBytes"] <= s0["logicalBytes"] * 1.001  # random bf16: stored raw, 8-byte headers
    upload(server, b, "model.safetensors", model_b)
    s1 = stats(server)
    growth_b = s1["storedBytes"] - s0["storedBytes"]
    assert growth_b <= 0.12 * len(model_b), f"B added {growth_b} bytes for {len(model_b)}"
    upload(server, c, "model.safetensors", model_b)
    s2 = stats(server)
    assert s2["storedBytes"] - s1["storedBytes"] < MiB
    assert s2["dedupRatio"] > 1.7  # two distinct files (B and C are one) in little more than one

    # deleting A leaves its unique chunks unreferenced: gc reclaims them
    requests.delete(f"{server.base}/api/repos/delete", headers={"Authorization": f"Bearer {server.token}"},
                    json={"name": "base-model", "organization": server.user, "type": "model"},
                    timeout=30).raise_for_status()
    out = subprocess.run([str(hearth_bin()), "admin", "--data", str(server.data_dir), "gc", "--grace", "0",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reclaimed = json.loads(out.stdout)["bytesReclaimed"]
    s3 = stats(server)
    assert reclaimed >= 0.08 * len(model_a)
    assert s3["storedBytes"] <= s2["storedBytes"] - reclaimed + 4096
    for repo in (b, c):
        r = requests.get(f"{server.base}/{repo}/resolve/main/model.safetensors", timeout=120)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).digest() == hashlib.sha256(model_b).digest()
    r = requests.get(f"{server.base}/{b}/resolve/main/model.safetensors",
                     headers={"Range": "bytes=52000000-52999999"}, timeout=60)
    assert r.status_code == 206 and r.content == model_b[52000000:53000000]
    fsck = subprocess.run([str(hearth_bin()), "admin", "--data", str(server.data_dir), "fsck"],
                          capture_output=True, text=True, timeout=300)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_kill9_during_uploads_leaves_a_clean_store(server):
    """20 random kill -9 points during uploads: fsck stays clean, acknowledged files survive."""
    repo = create(server, "crashy")
    rng = random.Random(99)
    acknowledged: dict[str, bytes] = {}
    port = server.port
    for round_ in range(20):
        data = os.urandom(rng.randrange(1, 12) * MiB + rng.randrange(MiB))
        name = f"f{round_}.bin"
        done = threading.Event()

        def work():
            try:
                upload(server, repo, name, data)
                acknowledged[name] = data
            except Exception:
                pass
            finally:
                done.set()

        t = threading.Thread(target=work, daemon=True)
        t.start()
        time.sleep(rng.uniform(0.0, 0.6))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        server.proc = None
        done.wait(timeout=60)
        fsck = subprocess.run([str(hearth_bin()), "admin", "--data", str(server.data_dir), "fsck"],
                              capture_output=True, text=True, timeout=300)
        assert fsck.returncode == 0, f"round {round_}: {fsck.stdout}{fsck.stderr}"
        # restart on the same data directory and port
        server._close_log()
        server._log_fh = open(server.log_path, "ab")
        server.proc = subprocess.Popen([str(server.bin), "serve", "--data", str(server.data_dir),
                                        "--listen", f"127.0.0.1:{port}"], stdout=server._log_fh,
                                       stderr=subprocess.STDOUT)
        server._wait_healthy()
    assert acknowledged, "no upload finished before its kill: the test proves nothing"
    for name, data in acknowledged.items():
        r = requests.get(f"{server.base}/{repo}/resolve/main/{name}", timeout=120)
        assert r.status_code == 200, (name, r.status_code)
        assert r.content == data, name
    fsck = subprocess.run([str(hearth_bin()), "admin", "--data", str(server.data_dir), "fsck"],
                          capture_output=True, text=True, timeout=300)
    assert fsck.returncode == 0, fsck.stdout
