"""Issue 13, finding 3 and the Xet part of revocation: the Xet CAS gives nothing of a private
file to someone who knows one of its chunk hashes, and its tokens and xorb URLs end with the
access they were issued for.

The victim is the session's user (alice) with a private repo holding a few MB of random bytes
uploaded through hf_xet; the attacker is a second user with a write token and a repo of his
own. What he may know is the worst case: one chunk hash of her file, and even its SHA-256 and
Xet file hash. Every response he gets is checked against what he sent: no chunk hash of hers
he did not send, none of her xorb's other chunk hashes, not her SHA-256 or Xet hash unless he
named it, and no run of her bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from hearth_server import hearth_bin, sha256_hex
from test_security import User, auth, header, lfs_line
from test_xet import (DOWNLOAD, MiB, UPLOAD, LogWindow, _xorb_body, cas_token, make_local_cas,
                      random_bytes, run_py, sha_field)

ZERO_KEY = "0" * 64


# ---- helpers ------------------------------------------------------------------------------------


def xet_cli(*args: str) -> list[str]:
    r = subprocess.run([str(hearth_bin()), "xet", *args], capture_output=True, text=True, check=True)
    return r.stdout.strip().splitlines()


def chunks_of(path: Path) -> tuple[list[dict], dict]:
    """`hearth xet chunks`: the chunks hf_xet cuts the file into, and the summary line."""
    lines = [json.loads(l) for l in xet_cli("chunks", str(path))]
    return lines[:-1], lines[-1]


def raw(xet_hash: str) -> bytes:
    """A Xet hash string as the 32 bytes shards and xorbs hold (four little-endian u64)."""
    return b"".join(bytes.fromhex(xet_hash[i:i + 16])[::-1] for i in range(0, 64, 16))


def string_form(b: bytes) -> str:
    return "".join(b[i:i + 8][::-1].hex() for i in range(0, 32, 8))


def keyed(key: str, hashes: list[str]) -> list[str]:
    return xet_cli("hmac", key, *hashes)


def parse_dedup_shard(body: bytes) -> dict:
    """The parts of a global dedup shard that matter here: file count, xorbs with their chunks
    (hash, length), and the footer's chunk_hash_key and key_expiry."""
    assert body[:14] == b"HFRepoMetaData"
    pos, n_files = 48, 0
    while body[pos:pos + 32] != b"\xff" * 32:  # file-info section
        n_terms = struct.unpack_from("<I", body, pos + 36)[0]
        flags = struct.unpack_from("<I", body, pos + 32)[0]
        pos += 48 * (1 + n_terms * (2 if flags & (1 << 31) else 1) + (1 if flags & (1 << 30) else 0))
        n_files += 1
    pos += 48
    xorbs = []
    while body[pos:pos + 32] != b"\xff" * 32:  # CAS-info section
        n = struct.unpack_from("<I", body, pos + 36)[0]
        chunks = [(string_form(body[pos + 48 * (i + 1):pos + 48 * (i + 1) + 32]),
                   struct.unpack_from("<I", body, pos + 48 * (i + 1) + 36)[0],
                   struct.unpack_from("<I", body, pos + 48 * (i + 1) + 40)[0]) for i in range(n)]
        xorbs.append({"hash": string_form(body[pos:pos + 32]), "chunks": chunks})
        pos += 48 * (n + 1)
    footer = body[-200:]
    return {"files": n_files, "xorbs": xorbs, "key": string_form(footer[72:104]),
            "key_expiry": struct.unpack_from("<Q", footer, 112)[0]}


def upload_shard(file_hash: str, terms: list[tuple[str, int, int, int]], verification: list[bytes] | None,
                 sha: str) -> bytes:
    """An upload shard of one file: terms (xorb, unpacked bytes, chunk start, end), verification
    entries (raw, one per term) or none, and the SHA-256 metadata extension."""
    rec = lambda h, a=0, b=0, c=0, d=0: h + struct.pack("<IIII", a, b, c, d)  # noqa: E731
    flags = (1 << 30) | ((1 << 31) if verification is not None else 0)
    out = bytearray(b"HFRepoMetaData\0" + bytes([85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92,
                                                205, 209, 74, 169]) + struct.pack("<QQ", 2, 0))
    out += rec(raw(file_hash), flags, len(terms))
    for xorb, n_bytes, start, end in terms:
        out += rec(raw(xorb), 0, n_bytes, start, end)
    for v in verification or []:
        out += rec(v)
    out += rec(sha_field(sha))
    out += rec(b"\xff" * 32)
    out += rec(b"\xff" * 32)
    return bytes(out)


class Watch:
    """Every response the attacker gets, checked against what he sent: none may hold a secret
    of the victim's he did not name himself, nor a run of her bytes."""

    def __init__(self, secrets: dict[str, list[bytes]], data: bytes):
        self.secrets = secrets
        # every 4 KiB, 32 bytes of her file (random: any served range holds some)
        self.windows = [data[i:i + 32] for i in range(0, len(data) - 32, 4096)]
        self.seen = 0

    def check(self, sent: bytes | str, r: requests.Response) -> requests.Response:
        sent_b = sent.encode() if isinstance(sent, str) else sent
        body = r.content + "".join(f"{k}: {v}\n" for k, v in r.headers.items()).encode()
        for name, forms in self.secrets.items():
            if any(f in sent_b for f in forms):
                continue
            for f in forms:
                assert f not in body, f"{r.request.method} {r.url} answered {name} ({r.status_code})"
        assert not any(w in r.content for w in self.windows), f"{r.url} served bytes of her file"
        self.seen += 1
        return r


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(hearth):
    return User(hearth.base, hearth.user, hearth.token)


@pytest.fixture(scope="module")
def bob(hearth):
    name = f"bob{uuid.uuid4().hex[:6]}"
    hearth.create_user(name)
    return User(hearth.base, name, hearth.create_token(name))


@pytest.fixture(scope="module")
def xet_on(hearth, alice):
    rid = alice.create(f"xet-sec-probe-{uuid.uuid4().hex[:6]}")
    if cas_token(hearth, rid, write=True).status_code == 501:
        pytest.skip("the store backend has no Xet support (xet-write-token answers 501)")
    return hearth


@pytest.fixture(scope="module")
def victim(xet_on, alice, tmp_path_factory):
    """alice's private repo with 6 MiB of random bytes uploaded through hf_xet."""
    d = tmp_path_factory.mktemp("victim")
    rid = alice.create(f"xet-vault-{uuid.uuid4().hex[:8]}", private=True)
    data = random_bytes(6 * MiB + 1234, 1313)
    src = d / "weights.bin"
    src.write_bytes(data)
    run_py(xet_on, d / "client", UPLOAD.format(path=str(src), name="weights.bin", repo=rid))
    entry = next(e for e in alice.get(f"/api/models/{rid}/tree/main").json() if e["path"] == "weights.bin")
    chunks, summary = chunks_of(src)
    assert entry["xetHash"] == summary["file_hash"], "hearth xet chunks cuts as hf_xet does"
    return {"rid": rid, "data": data, "sha": sha256_hex(data), "xet": entry["xetHash"], "chunks": chunks,
            "dir": d}


def secrets_of(v: dict, xorbs: list[str] = ()) -> dict[str, list[bytes]]:
    out = {f"chunk hash {i}": [c["hash"].encode(), raw(c["hash"])] for i, c in enumerate(v["chunks"])}
    out["her SHA-256"] = [v["sha"].encode(), bytes.fromhex(v["sha"]), sha_field(v["sha"])]
    out["her Xet hash"] = [v["xet"].encode(), raw(v["xet"])]
    return out


def bob_cas(hearth, bob, write=True):
    rid = bob.create(f"xet-own-{uuid.uuid4().hex[:8]}")
    tok = cas_token(hearth, rid, write=write, token=bob.token)
    assert tok.status_code == 200, tok.text
    return rid, {"Authorization": f"Bearer {tok.json()['accessToken']}"}


# ---- finding 3: one chunk hash gives nothing away -------------------------------------------------


def test_chunk_query_answers_keyed_hashes_only(xet_on, bob, victim):
    _, cas = bob_cas(xet_on, bob)
    watch = Watch(secrets_of(victim), victim["data"])
    k = len(victim["chunks"]) // 2
    sent = victim["chunks"][k]["hash"]
    url = f"{xet_on.base}/cas/v1/chunks/default/{sent}"
    r = watch.check(url, requests.get(url, headers=cas, timeout=30))
    assert r.status_code == 200, r.text
    # not even the chunk he sent comes back in clear
    assert sent.encode() not in r.content and raw(sent) not in r.content
    shard = parse_dedup_shard(r.content)
    assert shard["files"] == 0, "no file-info section: nothing to claim a file with"
    assert shard["key"] != ZERO_KEY
    assert len(shard["xorbs"]) == 1 and all(flags == 0 for _, _, flags in shard["xorbs"][0]["chunks"])
    # ... yet a client holding the chunks finds them: its own hashes, keyed with the footer's key
    in_shard = [h for h, _, _ in shard["xorbs"][0]["chunks"]]
    mine = keyed(shard["key"], [c["hash"] for c in victim["chunks"]])
    assert mine[k] in in_shard
    at = in_shard.index(mine[k])
    assert shard["xorbs"][0]["chunks"][at][1] == victim["chunks"][k]["length"]
    # a fresh key per reply: two answers to the same query share no hash
    again = parse_dedup_shard(requests.get(url, headers=cas, timeout=30).content)
    assert again["key"] != shard["key"]
    assert not set(h for h, _, _ in again["xorbs"][0]["chunks"]) & set(in_shard)
    assert again["xorbs"][0]["hash"] == shard["xorbs"][0]["hash"]


def test_one_chunk_hash_registers_and_downloads_nothing(xet_on, bob, victim):
    rid, cas = bob_cas(xet_on, bob)
    watch = Watch(secrets_of(victim), victim["data"])
    k = len(victim["chunks"]) // 2
    sent = victim["chunks"][k]["hash"]
    url = f"{xet_on.base}/cas/v1/chunks/default/{sent}"
    shard = parse_dedup_shard(watch.check(url, requests.get(url, headers=cas, timeout=30)).content)
    xorb = shard["xorbs"][0]
    mine = keyed(shard["key"], [sent])[0]
    at = [h for h, _, _ in xorb["chunks"]].index(mine)
    lengths = [n for _, n, _ in xorb["chunks"]]

    def post_shard(body: bytes) -> requests.Response:
        r = requests.post(f"{xet_on.base}/cas/v1/shards", data=body, headers=cas, timeout=60)
        return watch.check(body, r)

    # 1. the whole pack as her file, by her Xet hash and SHA-256, verification guessed or left out
    terms = [(xorb["hash"], sum(lengths), 0, len(lengths))]
    for verification in ([b"\0" * 32], [raw(victim["xet"])], None):
        r = post_shard(upload_shard(victim["xet"], terms, verification, victim["sha"]))
        assert r.status_code == 400, r.text
    # 2. a file of the one chunk he knows: it verifies (he has its hash), but he must name the
    #    chunk's SHA-256, which only its bytes give, and no answer tells it
    piece = victim["dir"] / "chunk.bin"
    c = victim["chunks"][k]
    piece.write_bytes(victim["data"][c["offset"]:c["offset"] + c["length"]])
    piece_chunks, one = chunks_of(piece)
    assert len(piece_chunks) == 1
    watch.secrets["the chunk's SHA-256"] = [sha256_hex(piece.read_bytes()).encode()]
    for guess in (victim["sha"], hashlib.sha256(b"a guess").hexdigest()):
        r = post_shard(upload_shard(one["file_hash"], [(xorb["hash"], c["length"], at, at + 1)],
                                    [raw(one["verification_hash"])], guess))
        assert r.status_code == 400, r.text
    # 3. nothing of hers is his: reconstructions, file HEAD, batch, commit, resolve
    for path in (f"/cas/v2/reconstructions/{victim['xet']}", f"/cas/v1/reconstructions/{victim['xet']}",
                 f"/cas/v1/reconstructions?file_id={victim['xet']}", f"/cas/v1/files/{victim['xet']}",
                 f"/cas/v1/reconstructions/{one['file_hash']}"):
        r = requests.get(xet_on.base + path, headers=cas, timeout=30)
        assert r.status_code == 404 or r.json().get("files") == {}, (path, r.status_code, r.text)
    r = bob.commit(rid, header("mine now"), lfs_line("w.bin", victim["sha"], len(victim["data"])))
    assert r.status_code != 200, r.text
    r = requests.get(f"{xet_on.base}/{rid}/resolve/main/w.bin", headers=auth(bob.token), timeout=30)
    assert r.status_code == 404 and victim["data"][:64] not in r.content
    assert watch.seen >= 6


def test_hf_xet_of_another_user_still_dedups_a_near_copy(xet_on, alice, bob, tmp_path):
    """Global dedup across users with keyed shards: bob's near-copy of alice's file (a fresh
    client, so only the CAS's answer can tell it what is stored) sends little more than the
    bytes he changed, and downloads byte for byte."""
    a = random_bytes(8 * MiB, 2424)
    b = a[:3 * MiB] + random_bytes(100_000, 2525) + a[3 * MiB:]
    src_a, src_b = tmp_path / "a.bin", tmp_path / "b.bin"
    src_a.write_bytes(a)
    src_b.write_bytes(b)
    ra = alice.create(f"xet-orig-{uuid.uuid4().hex[:8]}", private=True)
    run_py(xet_on, tmp_path / "ca", UPLOAD.format(path=str(src_a), name="a.bin", repo=ra))
    rb = bob.create(f"xet-copy-{uuid.uuid4().hex[:8]}")
    with LogWindow(xet_on) as w:
        run_py(xet_on, tmp_path / "cb", UPLOAD.format(path=str(src_b), name="b.bin", repo=rb), HF_TOKEN=bob.token)
    sent = w.xorb_bytes_stored()
    assert w.count("GET", "/cas/v1/chunks/") >= 1
    assert sent < len(b) // 4, f"bob's client sent {sent} bytes of xorbs for {len(b)} bytes"
    got = run_py(xet_on, tmp_path / "cd", DOWNLOAD.format(repo=rb, name="b.bin", cache=str(tmp_path / "dl")),
                 HF_TOKEN=bob.token)
    assert Path(got["path"]).read_bytes() == b
    # and bob still reads nothing of alice's repo
    r = requests.get(f"{xet_on.base}/{ra}/resolve/main/a.bin", headers=auth(bob.token), timeout=30)
    assert r.status_code == 404 and a[:64] not in r.content


def test_wrong_sha256_is_not_answered_with_the_real_one(xet_on, bob, victim, tmp_path):
    rid, cas = bob_cas(xet_on, bob)
    own = make_local_cas(tmp_path, 77)
    for h, blob in own["xorbs"].items():
        r = requests.post(f"{xet_on.base}/cas/v1/xorbs/default/{h}", data=_xorb_body(blob), headers=cas, timeout=60)
        assert r.status_code == 200, r.text
    shard, real = own["shard"], sha256_hex(own["data"])
    at = shard.index(sha_field(real))

    def claim(sha: str) -> requests.Response:
        body = shard[:at] + sha_field(sha) + shard[at + 32:]
        return requests.post(f"{xet_on.base}/cas/v2/shards", data=body, headers=cas, timeout=60)

    never = hashlib.sha256(b"nobody stored this " + os.urandom(8)).hexdigest()
    answers = {}
    for name, sha in (("never stored", never), ("hers (stored, another size)", victim["sha"])):
        r = claim(sha)
        assert r.status_code == 400, r.text
        assert real not in r.text and real.encode() not in r.content
        answers[name] = r.text.replace(sha, "<sha>")
    # the same words whether or not a file with that SHA-256 exists: no existence oracle
    assert len(set(answers.values())) == 1, answers
    # the true SHA-256 registers, and then the commit line works
    assert claim(real).status_code == 200
    r = bob.commit(rid, header("own"), lfs_line("in.bin", real, len(own["data"])))
    assert r.status_code == 200, r.text


# ---- revocation: tokens and xorb URLs end with the access they were issued for --------------------


def _xet_readable(hearth, alice, private=False):
    rid = alice.create(f"xet-rev-{uuid.uuid4().hex[:8]}", private=private)
    data = os.urandom(2 * MiB + 77)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("w"), lfs_line("w.bin", oid, len(data)))
    entry = next(e for e in alice.get(f"/api/models/{rid}/tree/main").json() if e["path"] == "w.bin")
    return rid, data, entry["xetHash"]


def _first_url(hearth, cas, fh):
    r = requests.get(f"{hearth.base}/cas/v2/reconstructions/{fh}", headers=cas, timeout=30)
    assert r.status_code == 200, r.text
    f = next(iter(r.json()["xorbs"].values()))[0]
    x = f["ranges"][0]["bytes"]
    return f["url"], {"Range": f"bytes={x['start']}-{min(x['end'], x['start'] + 99)}"}


def _cas_works(hearth, cas, fh) -> list[int]:
    """Status of each read a CAS token makes: reconstruction, file HEAD, dedup query."""
    return [requests.get(f"{hearth.base}/cas/v2/reconstructions/{fh}", headers=cas, timeout=30).status_code,
            requests.head(f"{hearth.base}/cas/v1/files/{fh}", headers=cas, timeout=30).status_code,
            requests.get(f"{hearth.base}/cas/v1/chunks/default/{'0' * 64}", headers=cas, timeout=30).status_code]


def _delete(alice, rid):
    r = alice.s.delete(f"{alice.base}/api/repos/delete", headers=auth(alice.token),
                       json={"name": rid.split("/")[1], "organization": alice.name, "type": "model"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("who", ["bob", "anonymous"])
def test_read_token_and_xorb_url_end_when_the_repo_turns_private(xet_on, alice, bob, who):
    rid, data, fh = _xet_readable(xet_on, alice)
    tok = requests.get(f"{xet_on.base}/api/models/{rid}/xet-read-token/main",
                       headers=auth(bob.token if who == "bob" else None), timeout=30)
    assert tok.status_code == 200, tok.text
    cas = {"Authorization": f"Bearer {tok.json()['accessToken']}"}
    assert _cas_works(xet_on, cas, fh) == [200, 200, 404]
    url, rng = _first_url(xet_on, cas, fh)
    assert requests.get(url, headers=rng, timeout=30).status_code == 206
    alice.settings(rid, private=True)
    assert all(s in (401, 403, 404) for s in _cas_works(xet_on, cas, fh)[:2])
    r = requests.get(url, headers=rng, timeout=30)
    assert r.status_code in (401, 403, 404) and len(r.content) < 1000, r.status_code
    # the check is made at each use: public again, the same token and URL work again
    alice.settings(rid, private=False)
    assert _cas_works(xet_on, cas, fh)[:2] == [200, 200]
    assert requests.get(url, headers=rng, timeout=30).status_code == 206


def test_tokens_and_xorb_urls_end_when_the_repo_is_deleted(xet_on, alice, bob):
    rid, data, fh = _xet_readable(xet_on, alice)
    read = {"Authorization": f"Bearer {cas_token(xet_on, rid, token=bob.token).json()['accessToken']}"}
    write = {"Authorization": f"Bearer {cas_token(xet_on, rid, write=True).json()['accessToken']}"}
    url, rng = _first_url(xet_on, read, fh)
    own_url, own_rng = _first_url(xet_on, write, fh)
    _delete(alice, rid)
    for cas in (read, write):
        assert all(s == 404 for s in _cas_works(xet_on, cas, fh)), _cas_works(xet_on, cas, fh)
    r = requests.post(f"{xet_on.base}/cas/v1/xorbs/default/{'1' * 64}", data=b"x", headers=write, timeout=30)
    assert r.status_code == 404
    for u, h in ((url, rng), (own_url, own_rng)):
        r = requests.get(u, headers=h, timeout=30)
        assert r.status_code in (403, 404) and len(r.content) < 1000, r.status_code
    # a new repo under the same name (maybe the same row id) holding the same file is another
    # repo: the old tokens and URLs do not open it, fresh ones do
    alice.create(rid.split("/")[1])
    alice.commit_ok(rid, header("again"), lfs_line("w.bin", alice.upload_lfs(rid, data), len(data)))
    fresh = {"Authorization": f"Bearer {cas_token(xet_on, rid, token=bob.token).json()['accessToken']}"}
    assert _cas_works(xet_on, fresh, fh)[:2] == [200, 200]
    for cas in (read, write):
        assert all(s == 404 for s in _cas_works(xet_on, cas, fh)), _cas_works(xet_on, cas, fh)
    for u, h in ((url, rng), (own_url, own_rng)):
        assert requests.get(u, headers=h, timeout=30).status_code in (403, 404)


def test_xet_token_ends_when_its_hub_token_is_revoked(xet_on, alice):
    rid, data, fh = _xet_readable(xet_on, alice, private=True)
    temp = xet_on.create_token(alice.name)
    cas = {"Authorization": f"Bearer {cas_token(xet_on, rid, token=temp).json()['accessToken']}"}
    url, rng = _first_url(xet_on, cas, fh)
    assert _cas_works(xet_on, cas, fh)[:2] == [200, 200]
    with sqlite3.connect(xet_on.data_dir / "hearth.db", timeout=30) as db:
        db.execute("DELETE FROM tokens WHERE secret_hash = ?", (sha256_hex(temp.encode()),))
    assert _cas_works(xet_on, cas, fh) == [401, 401, 401]
    r = requests.get(url, headers=rng, timeout=30)
    assert r.status_code == 401 and len(r.content) < 1000


def test_xorb_url_is_bound_to_its_caller(xet_on, alice, bob):
    rid, data, fh = _xet_readable(xet_on, alice, private=True)
    cas = {"Authorization": f"Bearer {cas_token(xet_on, rid).json()['accessToken']}"}
    url, rng = _first_url(xet_on, cas, fh)
    assert "&g=" in url and "&u=" in url and "&t=" in url
    assert requests.get(url, headers=rng, timeout=30).status_code == 206
    # someone else's caller, or anonymous, under the same signature: refused
    for old, new in (("&u=", "&u=9"), ("&t=", "&t=9"), ("&g=", "&g=9")):
        assert requests.get(url.replace(old, new, 1), headers=rng, timeout=30).status_code == 403
