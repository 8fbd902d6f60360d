"""Issue 13: no user may read another repo's private files through the shared store.

Each test replays one finding of the security review end to end. The victim is the session's
user (alice) with a private repo holding an LFS file; the attacker is `mallory`, a second user
with a write token and repos of her own. Every attack must be refused or return nothing of the
victim's: not her bytes, and no response body holding her SHA-256 or Xet hash unless mallory
sent it herself. (The Xet CAS findings are in test_security_xet.py, the resource limits in
test_security_limits.py, the mixed-operation property test in test_security_property.py.)
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import uuid
from urllib.parse import quote

import pytest
import requests

from hearth_server import sha256_hex

LFS_JSON = "application/vnd.git-lfs+json"


def auth(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def ndjson(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def header(summary="commit"):
    return {"key": "header", "value": {"summary": summary, "description": ""}}


def file_line(path, content: bytes):
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode(),
                                     "encoding": "base64"}}


def lfs_line(path, oid, size):
    return {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}


def pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class User:
    """One account on the server, speaking the wire protocol with `requests`."""

    def __init__(self, base, name, token):
        self.base, self.name, self.token = base, name, token
        self.s = requests.Session()

    def create(self, name, private=False):
        r = self.s.post(f"{self.base}/api/repos/create", headers=auth(self.token),
                        json={"name": name, "organization": self.name, "type": "model", "private": private})
        assert r.status_code == 200, (r.status_code, r.text)
        return f"{self.name}/{name}"

    def commit(self, rid, *lines, rev="main"):
        return self.s.post(f"{self.base}/api/models/{rid}/commit/{quote(rev, safe='')}", data=ndjson(*lines),
                           headers={**auth(self.token), "Content-Type": "application/x-ndjson"})

    def commit_ok(self, rid, *lines, rev="main") -> str:
        r = self.commit(rid, *lines, rev=rev)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["commitOid"]

    def batch(self, rid, operation, oid, size):
        r = self.s.post(f"{self.base}/{rid}.git/info/lfs/objects/batch",
                        headers={**auth(self.token), "Accept": LFS_JSON, "Content-Type": LFS_JSON},
                        data=json.dumps({"operation": operation, "transfers": ["basic"], "hash_algo": "sha256",
                                         "objects": [{"oid": oid, "size": size}]}))
        return r

    def upload_lfs(self, rid, data: bytes) -> str:
        oid = sha256_hex(data)
        r = self.batch(rid, "upload", oid, len(data))
        assert r.status_code == 200, (r.status_code, r.text)
        obj = r.json()["objects"][0]
        if "actions" in obj:
            put = requests.put(obj["actions"]["upload"]["href"], data=data)
            assert put.status_code == 200, (put.status_code, put.text)
        return oid

    def settings(self, rid, **values):
        r = self.s.put(f"{self.base}/api/models/{rid}/settings", headers=auth(self.token), json=values)
        assert r.status_code == 200, (r.status_code, r.text)

    def get(self, path, **kw):
        return self.s.get(f"{self.base}{path}", headers=auth(self.token), **kw)


@pytest.fixture(scope="module")
def alice(hearth):
    return User(hearth.base, hearth.user, hearth.token)


@pytest.fixture(scope="module")
def mallory(hearth):
    name = f"mallory{uuid.uuid4().hex[:6]}"
    hearth.create_user(name)
    return User(hearth.base, name, hearth.create_token(name))


@pytest.fixture(scope="module")
def secret(alice):
    """alice's private repo with one LFS file: (repo id, bytes, oid)."""
    rid = alice.create(f"vault-{uuid.uuid4().hex[:8]}", private=True)
    data = b"PRIVATE WEIGHTS " + os.urandom(20000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("weights"), lfs_line("model.bin", oid, len(data)))
    r = alice.get(f"/{rid}/resolve/main/model.bin")
    assert r.status_code == 200 and r.content == data
    return rid, data, oid


def assert_nothing_of(resp: requests.Response, data: bytes, *hashes: str):
    body = resp.content
    assert data[:64] not in body and data[-64:] not in body, "the victim's bytes were served"
    for h in hashes:
        assert h.encode() not in body, f"a response names the victim's hash {h}"
        assert all(h not in v for v in resp.headers.values()), f"a header names the victim's hash {h}"


def repo_uid(user: User, rid: str) -> str:
    r = user.get(f"/api/models/{rid}")
    assert r.status_code == 200, r.text
    return r.json()["_id"]


def plant_commit(hearth, user: User, rid: str, path: str, blob: bytes, mode: str = "100644") -> str:
    """Writes a commit straight into the repo's bare git directory, past every API check: what
    a future write path that forgot the rule, or data from before it, would leave behind. The
    read side must hold on its own."""
    git_dir = hearth.data_dir / "repos" / f"{repo_uid(user, rid)}.git"
    env = {**os.environ, "GIT_DIR": str(git_dir), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args, data=None):
        return subprocess.run(["git", *args], input=data, env=env, capture_output=True, check=True).stdout

    blob_id = git("hash-object", "-w", "--stdin", data=blob).decode().strip()
    parent = git("rev-parse", "refs/heads/main").decode().strip()
    tree = git("mktree", data=f"{mode} blob {blob_id}\t{path}\n".encode()).decode().strip()
    commit = git("commit-tree", tree, "-p", parent, "-m", "planted").decode().strip()
    git("update-ref", "refs/heads/main", commit, parent)
    # The server caches revisions until a ref changes in-process: a branch made through the API
    # tells it (as a push does).
    r = user.s.post(f"{user.base}/api/models/{rid}/branch/planted-{commit[:8]}", headers=auth(user.token))
    assert r.status_code == 200, r.text
    return commit


# ---- finding 1: pointer text in a plain `file` operation --------------------------------------


def test_file_line_with_pointer_text_to_a_foreign_object_is_refused(alice, mallory, secret):
    rid, data, oid = secret
    mine = mallory.create(f"b1-{uuid.uuid4().hex[:8]}")
    r = mallory.commit(mine, header("steal"), file_line("x.bin", pointer(oid, len(data))))
    assert r.status_code == 422, (r.status_code, r.text)
    # The same refusal as for an lfsFile line naming an object never uploaded here.
    r2 = mallory.commit(mine, header("steal"), lfs_line("x.bin", oid, len(data)))
    assert r2.status_code == 422 and r.json()["error"] == r2.json()["error"]
    # And the same as for an object that exists nowhere: no oracle for what the store holds.
    ghost = sha256_hex(os.urandom(32))
    r3 = mallory.commit(mine, header("steal"), file_line("x.bin", pointer(ghost, len(data))))
    assert r3.status_code == 422 and r3.json()["error"] == r.json()["error"].replace(oid, ghost)
    for path in ("x.bin",):
        got = requests.get(f"{mallory.base}/{mine}/resolve/main/{path}")
        assert got.status_code == 404
        assert_nothing_of(got, data, oid)


def test_pointer_text_to_own_object_in_a_file_line_still_works(alice):
    rid = alice.create(f"own-{uuid.uuid4().hex[:8]}")
    data = os.urandom(5000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("pointer by hand"), file_line("w.bin", pointer(oid, len(data))))
    r = alice.get(f"/{rid}/resolve/main/w.bin")
    assert r.status_code == 200 and r.content == data
    # ...but not with a size that is not the object's
    r = alice.commit(rid, header("bad size"), file_line("v.bin", pointer(oid, len(data) + 1)))
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("mode", ["100644", "120000"])
def test_planted_pointer_is_served_as_the_text_it_is(hearth, alice, mallory, secret, mode):
    """The read side alone: a pointer to an object not linked to the repo is a plain small file
    in resolve, tree, paths-info and model info, whatever the entry's mode."""
    rid, data, oid = secret
    mine = mallory.create(f"plant-{uuid.uuid4().hex[:8]}")
    mallory.commit_ok(mine, header("seed"), file_line("README.md", b"# hi\n"))
    text = pointer(oid, len(data))
    plant_commit(hearth, mallory, mine, "x.bin", text, mode)
    for token in (None, mallory.token):
        got = requests.get(f"{mallory.base}/{mine}/resolve/main/x.bin", headers=auth(token))
        assert got.status_code == 200, got.text
        assert got.content == text, "the pointer was followed into the store"
        assert "X-Linked-Etag" not in got.headers and "X-Xet-Hash" not in got.headers
        assert_nothing_of(got, data)
    xet_hash = alice.get(f"/api/models/{rid}/tree/main").json()[0].get("xetHash")
    hashes = [h for h in (xet_hash,) if h]
    tree = mallory.get(f"/api/models/{mine}/tree/main", params={"recursive": "true"})
    entry = next(e for e in tree.json() if e["path"] == "x.bin")
    assert "lfs" not in entry and "xetHash" not in entry and entry["size"] == len(text), entry
    assert_nothing_of(tree, data, *hashes)
    info = mallory.s.post(f"{mallory.base}/api/models/{mine}/paths-info/main", headers=auth(mallory.token),
                          data={"paths": ["x.bin"], "expand": "true"})
    assert info.status_code == 200 and "lfs" not in info.json()[0], info.text
    assert_nothing_of(info, data, *hashes)
    full = mallory.get(f"/api/models/{mine}", params={"blobs": "true"})
    sib = next(s for s in full.json()["siblings"] if s["rfilename"] == "x.bin")
    assert "lfs" not in sib and sib.get("size") == len(text), sib
    assert_nothing_of(full, data, *hashes)
    # The LFS batch API does not hand out a download link for it either.
    b = mallory.batch(mine, "download", oid, len(data))
    assert b.status_code == 200 and "actions" not in b.json()["objects"][0], b.text


# ---- finding 2: a symlink past the push hook ---------------------------------------------------


def test_push_of_a_symlink_holding_pointer_text_is_refused(hearth, mallory, secret, tmp_path):
    rid, data, oid = secret
    mine = mallory.create(f"link-{uuid.uuid4().hex[:8]}")
    mallory.commit_ok(mine, header("seed"), file_line("README.md", b"# hi\n"))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "m",
           "GIT_AUTHOR_EMAIL": "m@m", "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@m"}
    url = mallory.base.replace("://", f"://{mallory.name}:{mallory.token}@") + f"/{mine}"
    work = tmp_path / "w"
    subprocess.run(["git", "clone", "-q", url, str(work)], env=env, check=True, capture_output=True)
    os.symlink(pointer(oid, len(data)).decode(), work / "x.bin")
    subprocess.run(["git", "add", "x.bin"], cwd=work, env=env, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "link"], cwd=work, env=env, check=True, capture_output=True)
    ls = subprocess.run(["git", "ls-files", "-s", "x.bin"], cwd=work, env=env, capture_output=True, text=True)
    assert ls.stdout.startswith("120000"), ls.stdout
    push = subprocess.run(["git", "push", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
    assert push.returncode != 0, push.stderr
    assert "not on the server" in push.stderr or "rejected" in push.stderr, push.stderr
    got = requests.get(f"{mallory.base}/{mine}/resolve/main/x.bin")
    assert got.status_code == 404
    assert_nothing_of(got, data, oid)


# ---- finding 4: copyFile with srcRevision ------------------------------------------------------


def test_copy_file_from_an_older_revision(alice):
    rid = alice.create(f"copy-{uuid.uuid4().hex[:8]}")
    first = alice.commit_ok(rid, header("v1"), file_line("a.txt", b"version one\n"))
    alice.commit_ok(rid, header("v2"), file_line("a.txt", b"version two\n"))
    r = alice.commit(rid, header("restore"), {"key": "copyFile", "value": {
        "path": "old.txt", "srcPath": "a.txt", "srcRevision": first}})
    assert r.status_code == 200, r.text
    assert alice.get(f"/{rid}/resolve/main/old.txt").content == b"version one\n"
    # A revision that does not exist is a clear 404 naming what was sent, nothing else.
    bogus = "deadbeef" * 5
    r = alice.commit(rid, header("bad"), {"key": "copyFile", "value": {
        "path": "x.txt", "srcPath": "a.txt", "srcRevision": bogus}})
    assert r.status_code == 404, r.text
    assert r.json()["error"].isprintable()


# ---- finding 6: gated repos, revocation, names, credentials, base64 ---------------------------


@pytest.fixture(scope="module")
def gated(alice):
    rid = alice.create(f"gated-{uuid.uuid4().hex[:8]}")
    data = os.urandom(4000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("files"), lfs_line("w.bin", oid, len(data)), file_line("config.json", b"{}"))
    alice.settings(rid, gated="auto")
    return rid, data, oid


def test_gated_repo_shows_metadata_but_not_files(alice, mallory, gated):
    rid, data, oid = gated
    for who, token, status in (("anonymous", None, 401), ("another user", mallory.token, 403)):
        info = requests.get(f"{alice.base}/api/models/{rid}", headers=auth(token))
        assert info.status_code == 200 and info.json()["gated"] == "auto", (who, info.text)
        tree = requests.get(f"{alice.base}/api/models/{rid}/tree/main", headers=auth(token))
        assert tree.status_code == 200, (who, tree.text)
        for path in ("w.bin", "config.json"):
            for method in (requests.get, requests.head):
                r = method(f"{alice.base}/{rid}/resolve/main/{path}", headers=auth(token))
                assert r.status_code == status, (who, path, r.status_code)
                assert r.headers.get("X-Error-Code") == "GatedRepo", (who, r.headers)
                assert_nothing_of(r, data)
            raw = requests.get(f"{alice.base}/{rid}/raw/main/{path}", headers=auth(token))
            assert raw.status_code == status
        b = requests.post(f"{alice.base}/{rid}.git/info/lfs/objects/batch",
                          headers={**auth(token), "Accept": LFS_JSON, "Content-Type": LFS_JSON},
                          data=json.dumps({"operation": "download", "objects": [{"oid": oid, "size": len(data)}]}))
        assert b.status_code == status, (who, b.text)
    assert alice.get(f"/{rid}/resolve/main/w.bin").content == data


def test_gated_repo_raises_gated_error_in_huggingface_hub(hearth, mallory, gated, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    rid, _, _ = gated
    with pytest.raises(GatedRepoError):
        hf_hub_download(rid, "config.json", token=mallory.token, cache_dir=tmp_path)


def signed_download(user: User, rid: str, oid: str, size: int) -> str:
    r = user.batch(rid, "download", oid, size)
    assert r.status_code == 200, r.text
    return r.json()["objects"][0]["actions"]["download"]["href"]


def test_signed_download_link_ends_when_the_repo_turns_private_or_is_deleted(alice, mallory):
    rid = alice.create(f"pub-{uuid.uuid4().hex[:8]}")
    data = os.urandom(6000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("w"), lfs_line("w.bin", oid, len(data)))
    link = signed_download(mallory, rid, oid, len(data))
    assert requests.get(link).content == data
    alice.settings(rid, private=True)
    r = requests.get(link)
    assert r.status_code == 404 and data[:64] not in r.content, r.status_code
    alice.settings(rid, private=False)
    assert requests.get(link).content == data
    r = alice.s.delete(f"{alice.base}/api/repos/delete", headers=auth(alice.token),
                       json={"name": rid.split("/")[1], "organization": alice.name, "type": "model"})
    assert r.status_code == 200, r.text
    r = requests.get(link)
    assert r.status_code in (403, 404) and data[:64] not in r.content


def test_signed_link_ends_when_its_token_is_revoked(hearth, alice):
    rid = alice.create(f"rev-{uuid.uuid4().hex[:8]}", private=True)
    data = os.urandom(6000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("w"), lfs_line("w.bin", oid, len(data)))
    temp = User(alice.base, alice.name, hearth.create_token(alice.name))
    link = signed_download(temp, rid, oid, len(data))
    assert requests.get(link).content == data
    # Revocation through the API comes with the accounts issue; the row going is what it does.
    with sqlite3.connect(hearth.data_dir / "hearth.db", timeout=30) as db:
        db.execute("DELETE FROM tokens WHERE secret_hash = ?", (sha256_hex(temp.token.encode()),))
    r = requests.get(link)
    assert r.status_code == 401 and data[:64] not in r.content, r.status_code


def test_a_tampered_link_is_refused(alice):
    rid = alice.create(f"tamper-{uuid.uuid4().hex[:8]}", private=True)
    data = os.urandom(3000)
    oid = alice.upload_lfs(rid, data)
    alice.commit_ok(rid, header("w"), lfs_line("w.bin", oid, len(data)))
    link = signed_download(alice, rid, oid, len(data))
    assert "&u=" in link and "&t=" in link
    for old, new in (("&u=", "&u=9"), ("&t=", "&t=9")):
        assert requests.get(link.replace(old, new, 1)).status_code == 403


def test_names_too_long_or_ending_in_git(alice):
    name = "n" + "x" * 95
    assert len(name) == 96
    rid = alice.create(name)
    alice.commit_ok(rid, header("seed"), file_line("a.txt", b"a"))
    assert alice.get(f"/{rid}/resolve/main/a.txt").status_code == 200
    for longer in (name + "x", name + "xyz" * 30):
        r = alice.get(f"/{alice.name}/{longer}/resolve/main/a.txt")
        assert r.status_code == 404, (len(longer), r.status_code)
        assert alice.get(f"/api/models/{alice.name}/{longer}").status_code == 404
    r = alice.s.post(f"{alice.base}/api/repos/create", headers=auth(alice.token),
                     json={"name": "x.git", "organization": alice.name})
    assert r.status_code == 400, r.text
    assert ".git" in r.json()["error"]


def test_basic_password_with_nul_and_junk_is_refused(alice):
    good = base64.b64encode(f"{alice.name}:{alice.token}".encode()).decode()
    bad = base64.b64encode(f"{alice.name}:{alice.token}\0junk".encode()).decode()
    assert requests.get(f"{alice.base}/api/whoami-v2", headers={"Authorization": f"Basic {good}"}).status_code == 200
    r = requests.get(f"{alice.base}/api/whoami-v2", headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401


@pytest.mark.parametrize("content", ["====", "ab=c", "a===", "YQ==YQ==", "Y Q=", "YQ=\n"])
def test_invalid_base64_content_is_refused(alice, content):
    rid = alice.create(f"b64-{uuid.uuid4().hex[:8]}")
    r = alice.commit(rid, header("b64"), {"key": "file", "value": {"path": "a.txt", "content": content,
                                                                    "encoding": "base64"}})
    assert r.status_code == 400, (content, r.status_code, r.text)
