"""`resolve` as curl sees it: headers, Range, and error codes (issue 3, acceptance item 3).

The repo is filled through huggingface_hub (conftest sets it up); every check below is a plain
`curl` command line, so what is asserted is exactly what goes over the wire.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from hearth_server import git_blob_sha1, sha256_hex

SHA40 = re.compile(r"^[0-9a-f]{40}$")
LFS_SIZE = 11 * 1024 * 1024 + 7  # above the Hub's 10 MB LFS threshold
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class Reply(SimpleNamespace):
    status: int
    headers: dict
    body: bytes

    def h(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def curl(url: str, *args: str, head: bool = False, token: str | None = None) -> Reply:
    """Run curl; returns the (last) status line, headers (lower-case names) and body."""
    with tempfile.NamedTemporaryFile(prefix="hearth-curl-") as out:
        cmd = ["curl", "-sS", "--max-time", "60", "-D", "-", "-o", out.name]
        if head:
            cmd.append("-I")
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        cmd += list(args) + [url]
        p = subprocess.run(cmd, capture_output=True, timeout=90)
        assert p.returncode == 0, f"{' '.join(cmd)} -> exit {p.returncode}: {p.stderr.decode(errors='replace')}"
        body = Path(out.name).read_bytes()
    raw = p.stdout.decode("latin-1")
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip().startswith("HTTP/")]
    assert blocks, f"no status line in curl output: {raw!r}"
    lines = blocks[-1].strip().splitlines()
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return Reply(status=status, headers=headers, body=body)


@pytest.fixture(scope="module")
def repo(api, user, base):
    rid = f"{user}/curl-{os.urandom(4).hex()}"
    api.create_repo(rid)
    small = b'{"hello": "hearth", "n": 42}\n' + bytes(range(32, 127)) + b"\n"
    big = os.urandom(LFS_SIZE)
    from huggingface_hub import CommitOperationAdd

    ci = api.create_commit(rid, operations=[
        CommitOperationAdd(path_in_repo=".gitattributes", path_or_fileobj=GITATTRIBUTES),
        CommitOperationAdd(path_in_repo="config.json", path_or_fileobj=small),
        CommitOperationAdd(path_in_repo="weights/model.bin", path_or_fileobj=big),
    ], commit_message="curl fixture")
    api.create_tag(rid, tag="v1")
    entries = {e.path: e for e in api.list_repo_tree(rid, recursive=True)}
    assert entries["weights/model.bin"].lfs is not None, "fixture: model.bin should be an LFS file"
    return SimpleNamespace(id=rid, small=small, big=big, commit=ci.oid, url=f"{base}/{rid}/resolve")


def _check_common(r: Reply, commit: str, size: int):
    assert SHA40.match(r.h("X-Repo-Commit") or ""), r.headers
    assert r.h("X-Repo-Commit") == commit
    assert r.h("Accept-Ranges") == "bytes"
    assert r.h("Content-Encoding") in (None, "identity")
    assert r.h("ETag")


def test_regular_file_head_and_get(repo):
    n = len(repo.small)
    for head in (True, False):
        r = curl(f"{repo.url}/main/config.json", head=head)
        assert r.status == 200, r
        _check_common(r, repo.commit, n)
        assert r.h("ETag") == f'"{git_blob_sha1(repo.small)}"'
        assert int(r.h("Content-Length")) == n
        assert r.h("X-Linked-Etag") is None and r.h("X-Linked-Size") is None
        if not head:
            assert r.body == repo.small


def test_lfs_file_head_and_get(repo):
    n = len(repo.big)
    sha = sha256_hex(repo.big)
    for head in (True, False):
        r = curl(f"{repo.url}/main/weights/model.bin", head=head)
        assert r.status == 200, r
        _check_common(r, repo.commit, n)
        assert r.h("X-Linked-Etag") == f'"{sha}"'
        assert int(r.h("X-Linked-Size")) == n
        assert r.h("ETag").strip('"').removeprefix('W/"') == sha
        assert int(r.h("Content-Length")) == n
        if not head:
            assert r.body == repo.big


def test_resolve_by_commit_tag_short_sha_and_encoded_revision(repo):
    for rev in (repo.commit, repo.commit[:10], "v1", "refs%2Fheads%2Fmain"):
        r = curl(f"{repo.url}/{rev}/config.json")
        assert r.status == 200, (rev, r)
        assert r.body == repo.small
        assert r.h("X-Repo-Commit") == repo.commit


def test_raw_serves_the_lfs_pointer(repo, base):
    r = curl(f"{base}/{repo.id}/raw/main/weights/model.bin")
    assert r.status == 200
    assert r.body == (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(repo.big)}\n"
                      f"size {len(repo.big)}\n").encode()
    r = curl(f"{base}/{repo.id}/raw/main/config.json", head=True)
    assert r.status == 200 and int(r.h("Content-Length")) == len(repo.small)


@pytest.mark.parametrize("which", ["small", "big"])
def test_ranges(repo, which):
    data = getattr(repo, which)
    path = "config.json" if which == "small" else "weights/model.bin"
    n = len(data)
    url = f"{repo.url}/main/{path}"

    def rng(spec, start, end):
        r = curl(url, "-H", f"Range: bytes={spec}")
        assert r.status == 206, (spec, r.status, r.headers)
        assert r.body == data[start:end + 1], spec
        assert r.h("Content-Range") == f"bytes {start}-{end}/{n}", spec
        assert int(r.h("Content-Length")) == end - start + 1, spec
        assert r.h("X-Repo-Commit") == repo.commit
        return r

    rng("10-19", 10, 19)
    rng("0-0", 0, 0)
    rng("-5", n - 5, n - 1)                # suffix
    rng(f"{n - 3}-", n - 3, n - 1)         # open-ended
    rng(f"{n - 2}-{n + 1000}", n - 2, n - 1)  # end clamped to the size
    if which == "big":
        rng("5000000-5999999", 5_000_000, 5_999_999)
    for bad in (f"{n}-", f"{n + 100}-{n + 200}"):
        r = curl(url, "-H", f"Range: bytes={bad}")
        assert r.status == 416, (bad, r.status)
        assert r.h("Content-Range") == f"bytes */{n}", bad


def _check_error(r: Reply, status: int, code: str):
    assert r.status == status, (r.status, r.headers, r.body[:300])
    assert r.h("X-Error-Code") == code, r.headers
    assert r.h("X-Error-Message"), r.headers
    assert (r.h("Content-Type") or "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


def test_missing_repo(repo, base, user):
    r = curl(f"{base}/{user}/no-such-repo-{os.urandom(3).hex()}/resolve/main/config.json")
    _check_error(r, 404, "RepoNotFound")
    r = curl(f"{base}/datasets/{repo.id}/resolve/main/config.json")  # exists as a model, not a dataset
    _check_error(r, 404, "RepoNotFound")
    r = curl(f"{base}/{user}/no-such-repo/resolve/main/config.json", head=True)
    assert r.status == 404 and r.h("X-Error-Code") == "RepoNotFound"


def test_missing_revision(repo):
    for rev in ("no-such-branch", "0123456789abcdef0123456789abcdef01234567"):
        r = curl(f"{repo.url}/{rev}/config.json")
        _check_error(r, 404, "RevisionNotFound")
    r = curl(f"{repo.url}/no-such-branch/config.json", head=True)
    assert r.status == 404 and r.h("X-Error-Code") == "RevisionNotFound"


def test_missing_file(repo):
    r = curl(f"{repo.url}/main/no-such-file.json")
    _check_error(r, 404, "EntryNotFound")
    assert r.h("X-Repo-Commit") == repo.commit
    r = curl(f"{repo.url}/main/no-such-file.json", head=True)
    assert r.status == 404
    assert r.h("X-Error-Code") == "EntryNotFound"
    assert r.h("X-Repo-Commit") == repo.commit
    # a directory is not a file
    r = curl(f"{repo.url}/main/weights")
    assert r.status == 404 and r.h("X-Error-Code") == "EntryNotFound"


def test_api_errors_are_json(repo, base, user):
    r = curl(f"{base}/api/models/{user}/no-such-repo-{os.urandom(3).hex()}")
    _check_error(r, 404, "RepoNotFound")
    r = curl(f"{base}/api/models/{repo.id}/revision/no-such-branch")
    _check_error(r, 404, "RevisionNotFound")
    r = curl(f"{base}/api/models/{repo.id}/tree/no-such-branch")
    _check_error(r, 404, "RevisionNotFound")
    r = curl(f"{base}/api/whoami-v2", "-H", "Authorization: Bearer hf_definitelyNotAValidToken000000")
    assert r.status == 401
    assert r.json().get("error")
