"""Issue 13, acceptance 2: a property test over mixed operations between two users.

alice keeps secrets in private repos; mallory, with a write token and repos of her own, runs a
random (seeded, bounded) sequence of everything that writes: plain `file` lines with pointer
text, `lfsFile` lines, her own LFS uploads, `copyFile` with and without `srcRevision`, git
pushes of pointer text as regular files and as symlinks, and Xet shard registrations. After
every step the invariant is checked from mallory's side of the wire:

  no response she gets holds a byte of alice's secrets, and no listing, header or error names
  a hash of alice's that mallory did not send herself; alice's repos stay invisible to her.

A failure prints the seed and the step, so the sequence can be replayed with
HEARTH_PROPERTY_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import uuid

import pytest
import requests

from hearth_server import sha256_hex
from test_security import (User, auth, file_line, header, lfs_line, pointer)

STEPS = int(os.environ.get("HEARTH_PROPERTY_STEPS", "60"))
SEED = int(os.environ.get("HEARTH_PROPERTY_SEED", str(random.randrange(1 << 30))))


class World:
    def __init__(self, hearth, alice: User, mallory: User, rng: random.Random, tmp):
        self.hearth, self.alice, self.mallory, self.rng, self.tmp = hearth, alice, mallory, rng, tmp
        self.secrets: list[tuple[str, bytes, str]] = []      # (repo, bytes, oid) of alice
        self.secret_repos: list[str] = []
        self.own: list[tuple[bytes, str]] = []               # mallory's own LFS objects
        self.repos: list[str] = []                           # mallory's repos
        self.commits: dict[str, list[str]] = {}
        self.xet_hashes: set[str] = set()                    # alice's Xet file hashes, when known
        self.pushes = 0
        self.ran: dict[str, int] = {}                        # operations that really ran

    # -- alice --------------------------------------------------------------------------------
    def alice_secret(self):
        if not self.secret_repos or self.rng.random() < 0.3:
            self.secret_repos.append(self.alice.create(f"p-{uuid.uuid4().hex[:8]}", private=True))
        rid = self.rng.choice(self.secret_repos)
        data = b"SECRET" + uuid.uuid4().bytes + os.urandom(self.rng.choice([100, 3000, 70000, 400000]))
        oid = self.alice.upload_lfs(rid, data)
        self.alice.commit_ok(rid, header("secret"), lfs_line(f"s/{oid[:8]}.bin", oid, len(data)))
        tree = self.alice.get(f"/api/models/{rid}/tree/main/s").json()
        for e in tree:
            if e.get("xetHash"):
                self.xet_hashes.add(e["xetHash"])
        self.secrets.append((rid, data, oid))

    # -- mallory ------------------------------------------------------------------------------
    def repo(self) -> str:
        if not self.repos or self.rng.random() < 0.15:
            rid = self.mallory.create(f"m-{uuid.uuid4().hex[:8]}")
            self.repos.append(rid)
            self.commits[rid] = [self.mallory.commit_ok(rid, header("seed"), file_line("README.md", b"# m\n"))]
        return self.rng.choice(self.repos)

    def any_oid(self) -> tuple[str, int]:
        pool = [(o, len(d)) for _, d, o in self.secrets] + [(o, len(d)) for d, o in self.own]
        if not pool or self.rng.random() < 0.1:
            return sha256_hex(os.urandom(8)), 1234
        return self.rng.choice(pool)

    def commit(self, rid, *lines):
        r = self.mallory.commit(rid, header("op"), *lines)
        assert r.status_code < 500, (r.status_code, r.text)
        if r.status_code == 200:
            self.commits[rid].append(r.json()["commitOid"])
        return r

    def op_file_pointer(self):
        oid, size = self.any_oid()
        self.commit(self.repo(), file_line(f"f{self.rng.randrange(5)}.bin", pointer(oid, size)))

    def op_lfs_line(self):
        oid, size = self.any_oid()
        self.commit(self.repo(), lfs_line(f"l{self.rng.randrange(5)}.bin", oid, size))

    def op_own_upload(self):
        rid = self.repo()
        data = b"MINE" + os.urandom(self.rng.choice([50, 5000]))
        oid = self.mallory.upload_lfs(rid, data)
        self.own.append((data, oid))
        self.commit(rid, lfs_line(f"own{self.rng.randrange(3)}.bin", oid, len(data)))

    def op_copy(self):
        rid = self.repo()
        tree = self.mallory.get(f"/api/models/{rid}/tree/main", params={"recursive": "true"}).json()
        files = [e["path"] for e in tree if e["type"] == "file"]
        value = {"path": f"c{self.rng.randrange(5)}.bin", "srcPath": self.rng.choice(files)}
        if self.rng.random() < 0.5:
            value["srcRevision"] = self.rng.choice(self.commits[rid])
        self.commit(rid, {"key": "copyFile", "value": value})

    def op_push(self):
        if self.pushes >= 4:  # git is slow; a few pushes cover the hook
            return self.op_file_pointer()
        self.pushes += 1
        rid = self.repo()
        oid, size = self.any_oid()
        home = self.tmp / f"home{self.pushes}"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1",
               "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@m", "GIT_COMMITTER_NAME": "m",
               "GIT_COMMITTER_EMAIL": "m@m"}
        url = self.mallory.base.replace("://", f"://{self.mallory.name}:{self.mallory.token}@") + f"/{rid}"
        work = self.tmp / f"w{self.pushes}"
        subprocess.run(["git", "clone", "-q", url, str(work)], env=env, check=True, capture_output=True)
        text = pointer(oid, size)
        if self.rng.random() < 0.5:
            os.symlink(text.decode(), work / "p.bin")
        else:
            (work / "p.bin").write_bytes(text)
        subprocess.run(["git", "add", "p.bin"], cwd=work, env=env, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-qm", "p"], cwd=work, env=env, check=True, capture_output=True)
        push = subprocess.run(["git", "push", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
        mine = {o for _, o in self.own}
        if oid not in mine:
            assert push.returncode != 0, f"a push naming an object mallory never uploaded went through:\n{push.stderr}"
        self.check_text(push.stderr, oid)

    def op_batch_download(self):
        oid, size = self.any_oid()
        r = self.mallory.batch(self.repo(), "download", oid, size)
        assert r.status_code == 200, r.text
        obj = r.json()["objects"][0]
        if oid not in {o for _, o in self.own}:
            assert "actions" not in obj, obj
        self.check_text(r.text, oid)

    def op_xet_claim(self):
        """Xet shard registration by what mallory may have learnt of a secret: its SHA-256, its
        Xet file hash, and one chunk hash (of a file of several chunks: knowing every chunk hash
        is what Xet takes as holding the file). She asks the CAS about that chunk, then claims
        the pack's chunks as the file and the chunk alone as a file of its own."""
        from test_security_xet import keyed, parse_dedup_shard, raw, upload_shard
        from test_xet import cas_token

        many = [s for s in self.secrets if len(s[1]) > 200000]
        if not many or not self.xet_hashes:
            return self.op_lfs_line()
        rid, data, oid = self.rng.choice(many)
        path = self.tmp / "secret.bin"
        path.write_bytes(data)
        lines = subprocess.run([str(self.hearth.bin), "xet", "chunks", str(path)], capture_output=True,
                               text=True, check=True).stdout.strip().splitlines()
        chunks, summary = [json.loads(l) for l in lines[:-1]], json.loads(lines[-1])
        if len(chunks) < 2:
            return self.op_lfs_line()
        known = self.rng.choice(chunks)
        sent = {oid, summary["file_hash"], known["hash"]}
        tok = cas_token(self.hearth, self.repo(), write=True, token=self.mallory.token)
        if tok.status_code == 501:
            return self.op_lfs_line()
        cas = {"Authorization": f"Bearer {tok.json()['accessToken']}"}
        base = self.hearth.base
        r = requests.get(f"{base}/cas/v1/chunks/default/{known['hash']}", headers=cas, timeout=30)
        self.check_response(r, sent=sent)
        claims = []
        if r.status_code == 200:
            shard = parse_dedup_shard(r.content)
            xorb = shard["xorbs"][0]
            hashes = [h for h, _, _ in xorb["chunks"]]
            at = hashes.index(keyed(shard["key"], [known["hash"]])[0])
            total = sum(n for _, n, _ in xorb["chunks"])
            claims.append(upload_shard(summary["file_hash"], [(xorb["hash"], total, 0, len(hashes))],
                                       [raw(summary["file_hash"])], oid))
            claims.append(upload_shard(summary["file_hash"], [(xorb["hash"], known["length"], at, at + 1)],
                                       [raw(known["hash"])], oid))
        for body in claims:
            r = requests.post(f"{base}/cas/v1/shards", data=body, headers=cas, timeout=60)
            assert r.status_code == 400, (r.status_code, r.text)
            self.check_response(r, sent=sent)
        self.ran["xet_claim"] = self.ran.get("xet_claim", 0) + 1
        for path in (f"/cas/v1/reconstructions/{summary['file_hash']}", f"/cas/v1/files/{summary['file_hash']}"):
            r = requests.get(base + path, headers=cas, timeout=30)
            assert r.status_code == 404, (path, r.status_code)
            self.check_response(r, sent=sent)

    OPS = ["op_file_pointer", "op_lfs_line", "op_own_upload", "op_copy", "op_push",
           "op_batch_download", "op_xet_claim"]

    # -- the invariant ------------------------------------------------------------------------
    def check_text(self, text: str, sent=None):
        sent = {sent} if isinstance(sent, str) else set(sent or ())
        for _, data, oid in self.secrets:
            if oid not in sent:
                assert oid not in text, f"alice's oid {oid} reached mallory"
        for h in self.xet_hashes - sent:
            assert h not in text, f"alice's Xet hash {h} reached mallory"

    def check_response(self, r: requests.Response, sent=None):
        body = r.content
        for _, data, _ in self.secrets:
            assert data[6:22] not in body, "a byte of alice's secret reached mallory"
        self.check_text(body.decode("latin-1") + " ".join(r.headers.values()), sent)

    def check(self):
        m = self.mallory
        for rid in self.repos:
            tree = m.get(f"/api/models/{rid}/tree/main", params={"recursive": "true", "expand": "true"})
            assert tree.status_code == 200, tree.text
            self.check_response(tree)
            info = m.get(f"/api/models/{rid}", params={"blobs": "true"})
            self.check_response(info)
            for e in tree.json():
                if e["type"] != "file":
                    continue
                for token in (m.token, None):
                    got = requests.get(f"{m.base}/{rid}/resolve/main/{e['path']}", headers=auth(token))
                    assert got.status_code == 200, (e, got.status_code, got.text)
                    # Pointer text she wrote herself may name what she sent; nothing else may.
                    sent = None
                    if got.content.startswith(b"version https://git-lfs"):
                        sent = got.content.split(b"sha256:")[1][:64].decode()
                    self.check_response(got, sent=sent)
        for rid in self.secret_repos:
            for token in (m.token, None):
                assert requests.get(f"{m.base}/api/models/{rid}", headers=auth(token)).status_code == 404


def test_no_user_reads_another_users_private_bytes(hearth, tmp_path):
    rng = random.Random(SEED)
    alice = User(hearth.base, hearth.user, hearth.token)
    name = f"mprop{uuid.uuid4().hex[:6]}"
    hearth.create_user(name)
    mallory = User(hearth.base, name, hearth.create_token(name))
    w = World(hearth, alice, mallory, rng, tmp_path)
    w.alice_secret()
    for step in range(STEPS):
        op = "alice_secret" if rng.random() < 0.2 else rng.choice(World.OPS)
        try:
            getattr(w, op)()
            w.check()
        except AssertionError as e:
            raise AssertionError(f"seed {SEED}, step {step} ({op}): {e}") from e
    print(f"seed {SEED}: {STEPS} steps, Xet claims {w.ran.get('xet_claim', 0)}, pushes {w.pushes}")
