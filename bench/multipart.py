#!/usr/bin/env python3
"""Multipart LFS upload of one large file: wall time and bytes the server writes to disk.

    tests/.venv/bin/python bench/multipart.py [--size-mib 1024] [--order in|reverse] [--bin build/hearth]

Starts `hearth serve` (release build by default) on a fresh data directory, asks the LFS batch
API for a multipart upload (the server's part size), PUTs the parts one at a time (as
huggingface_hub does) in order or in reverse, completes, and prints the time from the first
PUT to the completion's answer, and the server's write_bytes from /proc/<pid>/io over it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import requests  # noqa: E402

from hearth_server import HearthServer  # noqa: E402

LFS_JSON = "application/vnd.git-lfs+json"


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--order", choices=["in", "reverse"], default="in")
    ap.add_argument("--bin", default=str(ROOT / "build" / "hearth"))
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    os.environ["HEARTH_BIN"] = args.bin
    size = args.size_mib << 20
    srv = HearthServer("bench-multipart").start()
    try:
        s = requests.Session()
        auth = {"Authorization": f"Bearer {srv.token}"}
        for run in range(args.runs):
            data = os.urandom(size)  # fresh bytes each run: nothing to deduplicate
            oid = hashlib.sha256(data).hexdigest()
            rid = f"{srv.user}/mp{run}"
            r = s.post(f"{srv.base}/api/repos/create", headers=auth,
                       json={"name": f"mp{run}", "type": "model"})
            r.raise_for_status()
            r = s.post(f"{srv.base}/{rid}.git/info/lfs/objects/batch",
                       headers={**auth, "Accept": LFS_JSON, "Content-Type": LFS_JSON},
                       data=json.dumps({"operation": "upload", "transfers": ["basic", "multipart"],
                                        "hash_algo": "sha256", "objects": [{"oid": oid, "size": size}]}))
            r.raise_for_status()
            up = r.json()["objects"][0]["actions"]["upload"]
            header = up["header"]
            part_size = int(header["chunk_size"])
            keys = sorted(k for k in header if k.isdigit())
            order = keys if args.order == "in" else keys[::-1]
            w0 = write_bytes(srv.proc.pid)
            t0 = time.perf_counter()
            for k in order:
                i = int(k) - 1
                r = s.put(header[k], data=memoryview(data)[i * part_size:(i + 1) * part_size])
                r.raise_for_status()
            r = s.post(up["href"], headers={"Content-Type": LFS_JSON},
                       data=json.dumps({"oid": oid, "parts": [{"partNumber": int(k), "etag": ""} for k in keys]}))
            r.raise_for_status()
            dt = time.perf_counter() - t0
            w1 = write_bytes(srv.proc.pid)
            print(f"run {run}: {len(keys)} parts of {part_size >> 20} MiB, {args.order}: {dt:.2f} s "
                  f"({size / dt / 2**20:.0f} MiB/s), server wrote {(w1 - w0) / 2**20:.0f} MiB", flush=True)
            leftovers = list((srv.data_dir / "uploads").rglob("*"))
            if leftovers:
                print(f"  left under uploads/: {leftovers[:5]}")
    finally:
        srv.stop()
        srv.cleanup()


if __name__ == "__main__":
    main()
