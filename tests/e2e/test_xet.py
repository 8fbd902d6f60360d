"""The Xet protocol (issue 7): today's huggingface_hub + hf_xet upload and download through
Hearth's CAS with HF_HUB_DISABLE_XET unset, and the CAS refuses bad input.

conftest.py sets HF_HUB_DISABLE_XET=1 for the whole session, so every hf_xet client here runs in
a subprocess with a clean environment (HF_HUB_DISABLE_XET unset, its own HF_HOME / HF_XET_CACHE /
HF_HUB_CACHE). In-process huggingface_hub calls are therefore the plain-HTTP (LFS) client, which
is exactly what the cross-client checks need. Raw CAS calls use `requests`.

Everything here needs a store with Xet support; against one without it the token route answers
501 and the tests skip with that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from hearth_server import sha256_hex

PY = sys.executable
MiB = 1 << 20
HASH64 = re.compile(r"^[0-9a-f]{64}$")


# ---- helpers ------------------------------------------------------------------------------------


def xet_env(hearth, home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hearth.base,
        HF_TOKEN=hearth.token,
        HF_HOME=str(home / "home"),
        HF_HUB_CACHE=str(home / "hub"),
        HF_XET_CACHE=str(home / "xet"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def run_py(hearth, home: Path, code: str, **extra) -> dict:
    """Runs code (which must print one JSON line last) with hf_xet enabled; returns that JSON."""
    home.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([PY, "-c", code], env=xet_env(hearth, home, **extra), capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"hf_xet client failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class LogWindow:
    """Server log lines written between enter and exit."""

    def __init__(self, hearth):
        self.hearth = hearth

    def __enter__(self):
        self.hearth.wait_log_quiet()
        self.start = len(self.hearth.log_lines())
        return self

    def __exit__(self, *exc):
        self.hearth.wait_log_quiet()
        self.lines = self.hearth.log_lines()[self.start:]

    def count(self, method: str, part: str) -> int:
        return sum(1 for l in self.lines if f" {method} " in l and part in l)

    def xorb_bytes_stored(self) -> int:
        """Bytes of xorbs the CAS took in (new or known) in this window."""
        return sum(int(m.group(1)) for l in self.lines for m in [re.search(r"xet: xorb \w+ \((\d+) bytes\)", l)] if m)


def store_bytes(hearth) -> int:
    """Bytes of pack files (the stored chunks), metadata databases excluded."""
    root = hearth.data_dir / "lfs"
    total = 0
    for p in root.rglob("*"):
        if p.is_file() and not re.search(r"\.db(-wal|-shm)?$", p.name) and "tmp" not in p.parts:
            total += p.stat().st_size
    return total


def new_repo(api, user, name) -> str:
    repo_id = f"{user}/{name}"
    api.create_repo(repo_id)
    return repo_id


def cas_token(hearth, repo_id, write=False, token=None, rev="main"):
    kind = "write" if write else "read"
    return requests.get(f"{hearth.base}/api/models/{repo_id}/xet-{kind}-token/{rev}",
                        headers={"Authorization": f"Bearer {token or hearth.token}"}, timeout=30)


@pytest.fixture(scope="module")
def xet(hearth, api, user):
    """Skips the module when the store has no Xet support."""
    repo_id = new_repo(api, user, "xet-probe")
    r = cas_token(hearth, repo_id, write=True)
    if r.status_code == 501:
        pytest.skip("the store backend has no Xet support yet (xet-write-token answers 501)")
    assert r.status_code == 200, r.text
    return hearth


def random_bytes(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


UPLOAD = """
import json, huggingface_hub as h
api = h.HfApi()
info = api.upload_file(path_or_fileobj={path!r}, path_in_repo={name!r}, repo_id={repo!r})
print(json.dumps({{"oid": info.oid}}))
"""

DOWNLOAD = """
import json, huggingface_hub as h
p = h.hf_hub_download({repo!r}, {name!r}, cache_dir={cache!r})
print(json.dumps({{"path": p}}))
"""


# ---- tokens -------------------------------------------------------------------------------------


def test_token_routes(xet, api, anon_api, user, uid):
    repo_id = new_repo(api, user, f"xet-tok-{uid}")
    r = cas_token(xet, repo_id, write=True)
    assert r.status_code == 200
    j = r.json()
    assert j["casUrl"] == f"{xet.base}/cas"
    assert isinstance(j["exp"], int) and j["accessToken"]
    # huggingface_hub reads the same values from headers
    assert r.headers["X-Xet-Cas-Url"] == j["casUrl"]
    assert r.headers["X-Xet-Access-Token"] == j["accessToken"]
    assert int(r.headers["X-Xet-Token-Expiration"]) == j["exp"]
    # read tokens: anyone who can read a public repo; write tokens need write access
    assert requests.get(f"{xet.base}/api/models/{repo_id}/xet-read-token/main", timeout=30).status_code == 200
    assert requests.get(f"{xet.base}/api/models/{repo_id}/xet-write-token/main", timeout=30).status_code == 401
    assert cas_token(xet, repo_id, token=xet.read_token, write=True).status_code == 403
    assert cas_token(xet, repo_id, rev="no-such-branch").status_code == 404
    assert cas_token(xet, f"{user}/no-such-repo-{uid}").status_code == 404
    # Py >= 1.20 asks with the literal revision "None" when opening a pull request
    r = requests.get(f"{xet.base}/api/models/{repo_id}/xet-write-token/None?create_pr=1",
                     headers={"Authorization": f"Bearer {xet.read_token}"}, timeout=30)
    assert r.status_code == 200


def test_cas_refuses_bad_tokens(xet, api, user, uid):
    repo_id = new_repo(api, user, f"xet-auth-{uid}")
    read = cas_token(xet, repo_id).json()["accessToken"]
    h0 = "0" * 64
    url = f"{xet.base}/cas/v1/xorbs/default/{h0}"
    assert requests.post(url, data=b"x", timeout=30).status_code == 401
    assert requests.post(url, data=b"x", headers={"Authorization": "Bearer nonsense"}, timeout=30).status_code == 401
    forged = read[:-1] + ("0" if read[-1] != "0" else "1")
    assert requests.post(url, data=b"x", headers={"Authorization": f"Bearer {forged}"}, timeout=30).status_code == 401
    # a read token cannot write, and a hub token is not a CAS token
    assert requests.post(url, data=b"x", headers={"Authorization": f"Bearer {read}"}, timeout=30).status_code == 403
    assert requests.post(url, data=b"x", headers={"Authorization": f"Bearer {xet.token}"}, timeout=30).status_code == 401
    # an expired token (same format, exp in the past, resigned is impossible without the key)
    parts = read.split("_")  # xet2, scope, repo id, uid, user id, token id, exp, mac
    parts[6] = "1000"
    assert requests.get(f"{xet.base}/cas/v2/reconstructions/{h0}",
                        headers={"Authorization": "Bearer " + "_".join(parts)}, timeout=30).status_code == 401


# ---- the real client ------------------------------------------------------------------------------


def test_upload_file_and_download_every_way(xet, api, user, uid, tmp_path):
    repo_id = new_repo(api, user, f"xet-up-{uid}")
    data = random_bytes(12 * MiB + 12345, 1)
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    with LogWindow(xet) as up:
        out = run_py(xet, tmp_path / "c1", UPLOAD.format(path=str(src), name="model.bin", repo=repo_id))
    assert up.count("POST", "/cas/v1/xorbs/") >= 1, "hf_xet uploaded through the CAS"
    assert up.count("POST", "/cas/v2/shards") + up.count("POST", "/cas/v1/shards") >= 1
    assert up.count("POST", "/info/lfs/objects/batch") == 0
    sha = sha256_hex(data)
    assert out["oid"]

    # tree and paths-info give xetHash; resolve advertises it with the refresh Link
    tree = requests.get(f"{xet.base}/api/models/{repo_id}/tree/main", timeout=30).json()
    entry = next(e for e in tree if e["path"] == "model.bin")
    assert entry["lfs"]["oid"] == sha and HASH64.match(entry["xetHash"])
    pi = requests.post(f"{xet.base}/api/models/{repo_id}/paths-info/main", data={"paths": ["model.bin"]},
                       timeout=30).json()
    assert pi[0]["xetHash"] == entry["xetHash"]
    info = requests.get(f"{xet.base}/api/models/{repo_id}?blobs=true", timeout=30).json()
    assert next(x for x in info["siblings"] if x["rfilename"] == "model.bin")["xetHash"] == entry["xetHash"]
    head = requests.head(f"{xet.base}/{repo_id}/resolve/main/model.bin", timeout=30)
    assert head.headers["X-Xet-Hash"] == entry["xetHash"]
    assert 'rel="xet-auth"' in head.headers["Link"] and "/xet-read-token/" in head.headers["Link"]

    # hf_xet downloads through the CAS only (no GET of resolve)
    with LogWindow(xet) as down:
        got = run_py(xet, tmp_path / "c2", DOWNLOAD.format(repo=repo_id, name="model.bin", cache=str(tmp_path / "dl")))
    assert Path(got["path"]).read_bytes() == data
    assert down.count("GET", "/cas/v2/reconstructions/") + down.count("GET", "/cas/v1/reconstructions/") >= 1
    assert down.count("GET", "/cas/xorb/") >= 1
    assert down.count("GET", f"/{repo_id}/resolve/") == 0

    # the same file over plain HTTP: huggingface_hub without hf_xet (this process) and curl
    from huggingface_hub import hf_hub_download

    p = hf_hub_download(repo_id, "model.bin", cache_dir=str(tmp_path / "plain"))
    assert Path(p).read_bytes() == data
    curl_out = tmp_path / "curl.bin"
    subprocess.run(["curl", "-sf", "-o", str(curl_out), f"{xet.base}/{repo_id}/resolve/main/model.bin"], check=True)
    assert curl_out.read_bytes() == data
    r = requests.get(f"{xet.base}/{repo_id}/resolve/main/model.bin", headers={"Range": "bytes=5000000-5000099"},
                     timeout=30)
    assert r.status_code == 206 and r.content == data[5000000:5000100]


def test_upload_folder_and_snapshot_download(xet, api, user, uid, tmp_path):
    repo_id = new_repo(api, user, f"xet-folder-{uid}")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    files = {"a.bin": random_bytes(12 * MiB, 2), "sub/b.safetensors": random_bytes(13 * MiB + 5, 3),
             "config.json": b'{"hello": "xet"}\n'}
    for name, d in files.items():
        (folder / name).write_bytes(d)
    code = f"""
import json, huggingface_hub as h
h.HfApi().upload_folder(folder_path={str(folder)!r}, repo_id={repo_id!r})
p = h.snapshot_download({repo_id!r}, cache_dir={str(tmp_path / 'snap')!r})
print(json.dumps({{"path": p}}))
"""
    with LogWindow(xet) as w:
        out = run_py(xet, tmp_path / "c", code)
    for name, d in files.items():
        assert (Path(out["path"]) / name).read_bytes() == d, name
    assert w.count("POST", "/cas/v1/xorbs/") >= 1
    assert w.count("GET", "/cas/xorb/") >= 1


def test_lfs_uploaded_file_downloads_through_cas(xet, api, user, uid, tmp_path):
    """A file uploaded over LFS (no hf_xet) is Xet-backed too: hf_xet reads it from the CAS."""
    repo_id = new_repo(api, user, f"xet-lfs-{uid}")
    data = random_bytes(11 * MiB + 3, 4)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    with LogWindow(xet) as w:
        got = run_py(xet, tmp_path / "c", DOWNLOAD.format(repo=repo_id, name="w.bin", cache=str(tmp_path / "dl")))
    assert Path(got["path"]).read_bytes() == data
    assert w.count("GET", "/cas/xorb/") >= 1


def test_same_file_in_second_repo_sends_almost_nothing(xet, api, user, uid, tmp_path):
    data = random_bytes(20 * MiB, 5)
    src = tmp_path / "same.bin"
    src.write_bytes(data)
    first = new_repo(api, user, f"xet-dedup-a-{uid}")
    second = new_repo(api, user, f"xet-dedup-b-{uid}")
    run_py(xet, tmp_path / "c1", UPLOAD.format(path=str(src), name="same.bin", repo=first))
    before = store_bytes(xet)
    # a fresh client (empty xet cache): only the global dedup query can find the chunks
    with LogWindow(xet) as w:
        run_py(xet, tmp_path / "c2", UPLOAD.format(path=str(src), name="same.bin", repo=second))
    grew = store_bytes(xet) - before
    sent = w.xorb_bytes_stored()
    assert grew < MiB, f"store grew by {grew} bytes"
    assert sent < MiB, f"the client sent {sent} bytes of xorbs"
    assert w.count("GET", "/cas/v1/chunks/") >= 1
    got = run_py(xet, tmp_path / "c3", DOWNLOAD.format(repo=second, name="same.bin", cache=str(tmp_path / "dl")))
    assert Path(got["path"]).read_bytes() == data


def test_change_in_the_middle_reuploads_only_nearby_chunks(xet, api, user, uid, tmp_path):
    repo_id = new_repo(api, user, f"xet-edit-{uid}")
    data = bytearray(random_bytes(20 * MiB, 6))
    src = tmp_path / "edit.bin"
    src.write_bytes(data)
    home = tmp_path / "c"  # the same client cache, as a user re-uploading would have
    run_py(xet, home, UPLOAD.format(path=str(src), name="edit.bin", repo=repo_id))
    data[10 * MiB:10 * MiB + 1000] = b"\x00" * 1000
    src.write_bytes(data)
    before = store_bytes(xet)
    with LogWindow(xet) as w:
        run_py(xet, home, UPLOAD.format(path=str(src), name="edit.bin", repo=repo_id))
    sent, grew = w.xorb_bytes_stored(), store_bytes(xet) - before
    assert 0 < sent < MiB, f"sent {sent} bytes of xorbs for a 1000-byte change"
    assert grew < MiB, f"store grew by {grew} bytes"
    got = run_py(xet, tmp_path / "c2", DOWNLOAD.format(repo=repo_id, name="edit.bin", cache=str(tmp_path / "dl")))
    assert Path(got["path"]).read_bytes() == bytes(data)


# ---- raw CAS: reconstructions, ranges, repo scoping ----------------------------------------------


def _upload_with_xet(xet, tmp_path, repo_id, data, name="f.bin"):
    src = tmp_path / name
    src.write_bytes(data)
    run_py(xet, tmp_path / f"c-{name}", UPLOAD.format(path=str(src), name=name, repo=repo_id))
    tree = requests.get(f"{xet.base}/api/models/{repo_id}/tree/main", timeout=30).json()
    return next(e for e in tree if e["path"] == name)["xetHash"]


def _decode_chunks(blob: bytes) -> bytes:
    """Decodes serialized xorb chunks (raw chunks only would do; LZ4 via the lz4 module if any)."""
    out, pos = bytearray(), 0
    while pos < len(blob):
        ver, c0, c1, c2, scheme, u0, u1, u2 = blob[pos:pos + 8]
        clen = c0 | c1 << 8 | c2 << 16
        ulen = u0 | u1 << 8 | u2 << 16
        payload = blob[pos + 8:pos + 8 + clen]
        assert ver == 0
        if scheme == 0:
            out += payload
        else:
            pytest.skip("compressed chunks: no LZ4 decoder in this test")
        assert len(payload) == clen and (scheme != 0 or clen == ulen)
        pos += 8 + clen
    return bytes(out)


def test_reconstruction_ranges_and_signed_urls(xet, api, user, uid, tmp_path):
    repo_id = new_repo(api, user, f"xet-rec-{uid}")
    data = random_bytes(3 * MiB + 777, 7)  # random: chunks are stored raw
    fh = _upload_with_xet(xet, tmp_path, repo_id, data)
    tok = cas_token(xet, repo_id).json()["accessToken"]
    auth = {"Authorization": f"Bearer {tok}"}
    r = requests.get(f"{xet.base}/cas/v2/reconstructions/{fh}", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["offset_into_first_range"] == 0
    assert sum(t["unpacked_length"] for t in rec["terms"]) == len(data)
    # rebuild the file from the signed URLs, one request per xorb with all its ranges
    pieces = {}
    for xorb, fetches in rec["xorbs"].items():
        for f in fetches:
            rng = ",".join(f"{x['bytes']['start']}-{x['bytes']['end']}" for x in f["ranges"])
            resp = requests.get(f["url"], headers={"Range": f"bytes={rng}"}, timeout=60)
            assert resp.status_code == 206
            if len(f["ranges"]) > 1:
                assert resp.headers["Content-Type"].startswith("multipart/byteranges")
                continue
            for x in f["ranges"]:
                pieces[(xorb, x["chunks"]["start"])] = (x["chunks"]["end"], _decode_chunks(resp.content))
    if all((t["hash"], t["range"]["start"]) in pieces for t in rec["terms"]):
        rebuilt = b"".join(pieces[(t["hash"], t["range"]["start"])][1] for t in rec["terms"])
        assert rebuilt == data

    # a byte range of the file
    r = requests.get(f"{xet.base}/cas/v2/reconstructions/{fh}", headers={**auth, "Range": "bytes=1000000-1000999"},
                     timeout=30)
    assert r.status_code == 200
    part = r.json()
    assert part["offset_into_first_range"] <= 1000000
    assert sum(t["unpacked_length"] for t in part["terms"]) - part["offset_into_first_range"] >= 1000
    # past the end: 416
    r = requests.get(f"{xet.base}/cas/v2/reconstructions/{fh}", headers={**auth, "Range": f"bytes={len(data)}-"},
                     timeout=30)
    assert r.status_code == 416
    # v1 shape
    r = requests.get(f"{xet.base}/cas/v1/reconstructions/{fh}", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["fetch_info"]
    # file HEAD
    r = requests.head(f"{xet.base}/cas/v1/files/{fh}", headers=auth, timeout=30)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(data)

    # a signed URL opens only its own ranges and expires with its signature
    xorb, fetches = next(iter(rec["xorbs"].items()))
    f = fetches[0]
    x = f["ranges"][0]
    end = x["bytes"]["end"]
    assert requests.get(f["url"], headers={"Range": f"bytes={end}-{end + 10}"}, timeout=30).status_code == 416
    if len(f["ranges"]) == 1:  # without Range: the whole signed range
        whole = requests.get(f["url"], timeout=60)
        assert whole.status_code == 200 and len(whole.content) == end - x["bytes"]["start"] + 1
    bad = re.sub(r"sig=([0-9a-f])", lambda m: "sig=" + ("1" if m.group(1) == "0" else "0"), f["url"])
    assert requests.get(bad, headers={"Range": f"bytes={x['bytes']['start']}-{end}"}, timeout=30).status_code == 403
    widened = re.sub(r"r=\d+-", "r=0-", f["url"])
    if widened != f["url"]:
        assert requests.get(widened, headers={"Range": "bytes=0-10"}, timeout=30).status_code == 403


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[int, int, bytes]]:
    boundary = content_type.split("boundary=")[1].strip('"').encode()
    parts = []
    for piece in body.split(b"--" + boundary)[1:]:
        if piece.startswith(b"--"):
            break
        head, _, data = piece.partition(b"\r\n\r\n")
        m = re.search(rb"Content-Range: bytes (\d+)-(\d+)/\d+", head)
        assert m, head
        data = data[:-2] if data.endswith(b"\r\n") else data
        parts.append((int(m.group(1)), int(m.group(2)), data))
    return parts


def test_multi_range_xorb_urls(xet, api, user, uid, tmp_path):
    """A file made of two separate pieces of an earlier upload: its reconstruction names two
    ranges of one pack under one URL, which answers both at once as multipart/byteranges."""
    repo_id = new_repo(api, user, f"xet-multi-{uid}")
    a = random_bytes(4 * MiB, 11)
    _upload_with_xet(xet, tmp_path, repo_id, a, "a.bin")
    b = a[:MiB] + random_bytes(MiB, 12) + a[3 * MiB:]
    fh = _upload_with_xet(xet, tmp_path, repo_id, b, "b.bin")
    tok = cas_token(xet, repo_id).json()["accessToken"]
    rec = requests.get(f"{xet.base}/cas/v2/reconstructions/{fh}", headers={"Authorization": f"Bearer {tok}"},
                       timeout=30).json()
    multi = [f for fetches in rec["xorbs"].values() for f in fetches if len(f["ranges"]) > 1]
    if not multi:
        pytest.skip("hf_xet did not reuse two separate pieces of the first upload")
    f = multi[0]
    rng = ",".join(f"{x['bytes']['start']}-{x['bytes']['end']}" for x in f["ranges"])
    r = requests.get(f["url"], headers={"Range": f"bytes={rng}"}, timeout=60)
    assert r.status_code == 206 and r.headers["Content-Type"].startswith("multipart/byteranges")
    parts = _parse_multipart(r.headers["Content-Type"], r.content)
    assert [(p[0], p[1]) for p in parts] == [(x["bytes"]["start"], x["bytes"]["end"]) for x in f["ranges"]]
    for (start, end, data), x in zip(parts, f["ranges"]):
        assert len(data) == end - start + 1
        single = requests.get(f["url"], headers={"Range": f"bytes={start}-{end}"}, timeout=60)
        assert single.status_code == 206 and single.content == data
        assert single.headers["Content-Range"].startswith(f"bytes {start}-{end}/")
    # and hf_xet puts the file back together
    got = run_py(xet, tmp_path / "c-dl", DOWNLOAD.format(repo=repo_id, name="b.bin", cache=str(tmp_path / "dl")))
    assert Path(got["path"]).read_bytes() == b


def test_tokens_are_scoped_to_their_repo(xet, api, user, uid, tmp_path):
    a = new_repo(api, user, f"xet-scope-a-{uid}")
    b = new_repo(api, user, f"xet-scope-b-{uid}")
    fh = _upload_with_xet(xet, tmp_path, a, random_bytes(2 * MiB, 8))
    tok_b = cas_token(xet, b).json()["accessToken"]
    for path in (f"/cas/v2/reconstructions/{fh}", f"/cas/v1/reconstructions/{fh}"):
        r = requests.get(xet.base + path, headers={"Authorization": f"Bearer {tok_b}"}, timeout=30)
        assert r.status_code == 404, path
    r = requests.head(f"{xet.base}/cas/v1/files/{fh}", headers={"Authorization": f"Bearer {tok_b}"}, timeout=30)
    assert r.status_code == 404


# ---- raw CAS: bad xorbs and shards ----------------------------------------------------------------


def make_local_cas(d: Path, seed: int) -> dict:
    """Xorbs and an upload-form shard of 3 MiB of random bytes, written by hf_xet to a local://
    CAS (so that they can be sent to Hearth by hand, whole or damaged)."""
    src = d / "in.bin"
    data = random_bytes(3 * MiB, seed)
    src.write_bytes(data)
    cas = d / "cas"
    script = 'import hf_xet, sys\nhf_xet.upload_files(sys.argv[2:], "local://" + sys.argv[1], None, None, None, "model")'
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_XET_CACHE"] = str(d / "xetcache")
    subprocess.run([PY, "-c", script, str(cas), str(src)], check=True, env=env, capture_output=True)
    xorbs = {p.name.split(".")[-1]: p.read_bytes() for p in cas.rglob("*") if re.search(r"default\.[0-9a-f]{64}$", p.name)}
    shards = [p for p in cas.rglob("*.mdb")]
    assert xorbs and shards
    stored = shards[0].read_bytes()
    file_lookup_offset = struct.unpack_from("<Q", stored, len(stored) - 200 + 24)[0]
    upload = bytearray(stored[:file_lookup_offset])
    struct.pack_into("<Q", upload, 40, 0)
    return {"xorbs": xorbs, "shard": bytes(upload), "data": data}


@pytest.fixture
def local_cas(tmp_path):
    return make_local_cas(tmp_path, 9)


@pytest.fixture
def other_local_cas(tmp_path):
    return make_local_cas(tmp_path, 10)


def sha_field(hexdigest: str) -> bytes:
    """A SHA-256 as a shard stores it: xet-core's DataHash::from_be_bytes, i.e. each 8-byte
    group of the digest reversed."""
    d = bytes.fromhex(hexdigest)
    return b"".join(d[i:i + 8][::-1] for i in range(0, 32, 8))


def _xorb_body(blob: bytes) -> bytes:
    """The xorb as a client uploads it: without the XETBLOB footer a local CAS appends."""
    i = blob.find(b"XETBLOB")
    return blob[:i] if i > 0 else blob


def test_bad_shards_are_refused(xet, api, user, uid, local_cas):
    repo_id = new_repo(api, user, f"xet-bads-{uid}")
    tok = cas_token(xet, repo_id, write=True).json()["accessToken"]
    auth = {"Authorization": f"Bearer {tok}"}
    shard = local_cas["shard"]
    sha = sha256_hex(local_cas["data"])

    def post(b, v="v2"):
        return requests.post(f"{xet.base}/cas/{v}/shards", data=b, headers=auth, timeout=60)

    def committed():
        line = json.dumps({"key": "lfsFile", "value": {"path": "in.bin", "algo": "sha256", "oid": sha}})
        body = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + line + "\n"
        return requests.post(f"{xet.base}/api/models/{repo_id}/commit/main", data=body,
                             headers={"Authorization": f"Bearer {xet.token}", "Content-Type": "application/x-ndjson"},
                             timeout=60).status_code == 200

    assert post(b"garbage").status_code == 400
    assert post(shard[:-10]).status_code == 400
    # its xorbs are not uploaded yet: nothing is registered
    assert post(shard).status_code == 400
    assert post(shard, "v1").status_code == 400
    assert not committed()
    for h, blob in local_cas["xorbs"].items():
        assert requests.post(f"{xet.base}/cas/v1/xorbs/default/{h}", data=_xorb_body(blob), headers=auth,
                             timeout=60).status_code == 200
    # a wrong verification hash: the first verification entry follows the file header and terms
    n_terms = struct.unpack_from("<I", shard, 48 + 36)[0]
    ver_at = 48 + 48 + 48 * n_terms
    bad = bytearray(shard)
    bad[ver_at] ^= 1
    assert post(bytes(bad)).status_code == 400
    bad = bytearray(shard)
    bad[48] ^= 1                                          # the file hash
    assert post(bytes(bad), "v1").status_code == 400
    # the SHA-256 field (metadata extension, each 8-byte group byte-reversed) must be the content's
    sha_at = ver_at + 48 * n_terms
    assert shard[sha_at:sha_at + 32] == sha_field(sha)
    bad = bytearray(shard)
    bad[sha_at:sha_at + 32] = sha_field(hashlib.sha256(b"someone else's file").hexdigest())
    r = post(bytes(bad))
    assert r.status_code == 400 and "SHA-256" in r.text
    # ... and may not name a stored file with other content (that would link it to this repo)
    other = b"\0" * 4096 + os.urandom(64)
    api.upload_file(path_or_fileobj=other, path_in_repo="other.bin", repo_id=f"{user}/xet-probe")
    bad[sha_at:sha_at + 32] = sha_field(sha256_hex(other))
    assert post(bytes(bad)).status_code == 400
    assert not committed()
    # the real shard registers the file for this repo, and the commit line then works
    r = post(shard)
    assert r.status_code == 200
    frames = [json.loads(l) for l in r.text.splitlines() if l.strip()]
    assert frames[-1]["type"] == "result"
    assert post(shard, "v1").json()["result"] in (0, 1)
    assert committed()


def test_bad_xorbs_are_refused(xet, api, user, uid, other_local_cas):
    """Damaged xorbs under a hash the CAS does not know yet. (A xorb already known is answered
    `was_inserted: false` without reading its body: nothing is stored either way.)"""
    repo_id = new_repo(api, user, f"xet-badx-{uid}")
    tok = cas_token(xet, repo_id, write=True).json()["accessToken"]
    auth = {"Authorization": f"Bearer {tok}"}
    name, blob = next(iter(other_local_cas["xorbs"].items()))
    body = _xorb_body(blob)
    other = ("f" if name[0] != "f" else "e") + name[1:]

    def post(h, b):
        return requests.post(f"{xet.base}/cas/v1/xorbs/default/{h}", data=b, headers=auth, timeout=60)

    def known(h):
        return requests.head(f"{xet.base}/cas/v1/xorbs/default/{h}", headers=auth, timeout=30).status_code == 200

    assert post(other, body).status_code == 400           # hash is not the content's
    assert post(name, body[:-5]).status_code == 400       # truncated chunk
    assert post(name, b"").status_code == 400             # empty
    bad_header = bytearray(body)
    bad_header[4] = 7                                     # unknown compression scheme
    assert post(name, bytes(bad_header)).status_code == 400
    big = bytearray(body)
    big[5:8] = (200 * 1024).to_bytes(3, "little")         # uncompressed length beyond 128 KiB
    assert post(name, bytes(big)).status_code == 400
    assert post("xyz", body).status_code == 400           # not a hash
    assert not known(other)
    r = post(name, body)
    assert r.status_code == 200 and isinstance(r.json()["was_inserted"], bool)
    assert known(name)
    assert post(name, body).json()["was_inserted"] is False


def test_lfs_batch_offers_xet_only_when_asked(xet, api, user, uid):
    repo_id = new_repo(api, user, f"xet-batch-{uid}")
    url = f"{xet.base}/{repo_id}.git/info/lfs/objects/batch"
    obj = {"oid": hashlib.sha256(b"nothing here").hexdigest(), "size": 12}
    headers = {"Authorization": f"Bearer {xet.token}", "Accept": "application/vnd.git-lfs+json",
               "Content-Type": "application/vnd.git-lfs+json"}
    body = {"operation": "upload", "transfers": ["basic", "multipart", "xet"], "hash_algo": "sha_256",
            "objects": [obj]}
    j = requests.post(url, json=body, headers=headers, timeout=30).json()
    assert j["transfer"] == "xet"
    up = j["objects"][0]["actions"]["upload"]
    assert "/xet-write-token/" in up["href"]
    assert up["header"]["X-Xet-Cas-Url"] == f"{xet.base}/cas"
    assert up["header"]["X-Xet-Access-Token"] and int(up["header"]["X-Xet-Token-Expiration"]) > 0
    body["transfers"] = ["basic", "multipart"]
    j = requests.post(url, json=body, headers=headers, timeout=30).json()
    assert j["transfer"] == "basic" and "/upload/" in j["objects"][0]["actions"]["upload"]["href"]
