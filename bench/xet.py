#!/usr/bin/env python3
"""Xet benchmark: huggingface_hub + hf_xet through Hearth's CAS beside the same client over LFS
(HF_HUB_DISABLE_XET=1), in one run.

  bench/xet.py [--size-mib 1024]

Against one release `hearth serve` (fresh data directory, loopback):
  upload    upload_file of a fresh random file through hf_xet (chunking, xorbs, shard), and of
            another fresh random file of the same size with HF_HUB_DISABLE_XET=1 (preupload, LFS
            batch, one PUT streamed into the store, commit)
  download  hf_hub_download of the same file through hf_xet (reconstruction + xorb ranges) and
            with HF_HUB_DISABLE_XET=1 (GET /resolve, sendfile); fresh caches each time
  re-upload the hf_xet file again to a second repo by a fresh client (global dedup: only the
            shard travels)
Each client runs in its own process with its own HF_HOME / HF_XET_CACHE; the time is measured
inside the process around the one call (imports and server start excluded). Prints MB/s and the
ratio hf_xet / LFS for each direction. Needs build/hearth (built if missing) and tests/.venv
(huggingface_hub + hf_xet).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import ROOT, free_port, request, wait_http  # noqa: E402

VENV_PY = os.path.join(ROOT, "tests", ".venv", "bin", "python")

UPLOAD = """
import json, time, huggingface_hub as h
api = h.HfApi()
t0 = time.monotonic()
api.upload_file(path_or_fileobj={path!r}, path_in_repo="big.bin", repo_id={repo!r})
print(json.dumps({{"seconds": time.monotonic() - t0}}))
"""

DOWNLOAD = """
import json, time, huggingface_hub as h
t0 = time.monotonic()
p = h.hf_hub_download({repo!r}, "big.bin", cache_dir={cache!r})
print(json.dumps({{"seconds": time.monotonic() - t0, "path": p}}))
"""


def client(base, token, home, code, xet):
    os.makedirs(home, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=base, HF_TOKEN=token, HF_HOME=os.path.join(home, "home"),
               HF_XET_CACHE=os.path.join(home, "xet"), HF_HUB_CACHE=os.path.join(home, "hub"),
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1,localhost")
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    r = subprocess.run([VENV_PY, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"client failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    if not os.path.exists(VENV_PY):
        raise SystemExit("tests/.venv is missing (it holds huggingface_hub and hf_xet)")
    hearth = os.path.join(ROOT, "build", "hearth")
    subprocess.run(["make", "-s", "-C", ROOT, "build/hearth"], check=True)
    work = tempfile.mkdtemp(prefix="hearth-xetbench-")
    proc = None
    try:
        data = os.path.join(work, "data")
        subprocess.run([hearth, "admin", "--data", data, "create-user", "bench"], check=True,
                       capture_output=True)
        token = subprocess.run([hearth, "admin", "--data", data, "create-token", "bench", "--write"],
                               check=True, capture_output=True, text=True).stdout.strip()
        port = free_port()
        # hf_xet fetches and uploads over many parallel connections, all from 127.0.0.1.
        proc = subprocess.Popen([hearth, "serve", "--quiet", "--data", data, "--listen",
                                 f"127.0.0.1:{port}", "--max-connections-per-ip", "0"],
                                stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health")
        for name in ("xet", "lfs", "again"):
            request("POST", f"{base}/api/repos/create", token,
                    json.dumps({"name": name, "type": "model"}).encode())
        files = {}
        for name in ("xet", "lfs"):
            files[name] = os.path.join(work, f"{name}.bin")
            with open(files[name], "wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(1 << 20))
        size = args.size_mib << 20
        mb = size / 1e6

        t = {}
        t["up_xet"] = client(base, token, os.path.join(work, "c1"),
                             UPLOAD.format(path=files["xet"], repo="bench/xet"), True)["seconds"]
        t["up_lfs"] = client(base, token, os.path.join(work, "c2"),
                             UPLOAD.format(path=files["lfs"], repo="bench/lfs"), False)["seconds"]
        d = client(base, token, os.path.join(work, "c3"),
                   DOWNLOAD.format(repo="bench/xet", cache=os.path.join(work, "dl-xet")), True)
        t["down_xet"] = d["seconds"]
        ok_xet = same_file(d["path"], files["xet"])
        shutil.rmtree(os.path.join(work, "dl-xet"))
        d = client(base, token, os.path.join(work, "c4"),
                   DOWNLOAD.format(repo="bench/xet", cache=os.path.join(work, "dl-lfs")), False)
        t["down_lfs"] = d["seconds"]
        ok_lfs = same_file(d["path"], files["xet"])
        shutil.rmtree(os.path.join(work, "dl-lfs"))
        t["again_xet"] = client(base, token, os.path.join(work, "c5"),
                                UPLOAD.format(path=files["xet"], repo="bench/again"), True)["seconds"]

        print(f"file: {args.size_mib} MiB of random bytes; one run each; MB/s = 10^6 bytes/s")
        print(f"{'':28} {'hf_xet (CAS)':>14} {'LFS (no hf_xet)':>16} {'ratio':>7}")
        for label, x, l in (("upload_file", t["up_xet"], t["up_lfs"]),
                            ("hf_hub_download", t["down_xet"], t["down_lfs"])):
            print(f"{label:28} {mb / x:11.0f} MB/s {mb / l:13.0f} MB/s {l / x:7.2f}")
        print(f"{'upload_file, same bytes':28} {mb / t['again_xet']:11.0f} MB/s "
              f"{'(dedup: second repo, fresh client)':>24}")
        print(f"downloads byte-identical: hf_xet {ok_xet}, LFS {ok_lfs}")
        if not (ok_xet and ok_lfs):
            raise SystemExit(1)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
