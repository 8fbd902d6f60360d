"""git and git-lfs against Hearth's smart HTTP: clone, pull and push as users do.

Every test drives the real `git` binary (with git-lfs installed in a private HOME) against
the session's `hearth serve`. Tokens travel as the Basic password, as on the Hub.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None and shutil.which("git") is None,
                                reason="git / git-lfs not installed (scripts/deps.sh installs them)")


@pytest.fixture(scope="module")
def git_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("git-home")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Tester", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "Tester", "GIT_COMMITTER_EMAIL": "t@example.org",
        "LC_ALL": "C",
    }
    subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True, capture_output=True)
    subprocess.run(["git", "config", "--global", "init.defaultBranch", "main"], env=env, check=True)
    return env


def git(env, *args, cwd=None, check=True, extra=None):
    e = dict(env, **(extra or {}))
    r = subprocess.run(["git", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def authed(base: str, token: str, path: str) -> str:
    return base.replace("http://", f"http://user:{token}@") + path


@pytest.fixture(scope="module")
def lfs_repo(hearth):
    """A repo made through the API holding a 12 MiB LFS file and a text file."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hearth.base, token=hearth.token)
    repo_id = f"{hearth.user}/git-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    big = os.urandom(12 * 1024 * 1024 + 17)
    api.upload_file(path_or_fileobj=big, path_in_repo="weights.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"# hello\n", path_in_repo="README.md", repo_id=repo_id)
    return repo_id, big


def test_clone_gets_lfs_content(hearth, git_env, lfs_repo, tmp_path):
    repo_id, big = lfs_repo
    git(git_env, "clone", f"{hearth.base}/{repo_id}", str(tmp_path / "c"))
    assert (tmp_path / "c" / "weights.bin").read_bytes() == big
    assert (tmp_path / "c" / "README.md").read_text() == "# hello\n"


def test_clone_with_dot_git_suffix_and_shallow(hearth, git_env, lfs_repo, tmp_path):
    repo_id, _ = lfs_repo
    git(git_env, "clone", "--depth", "1", f"{hearth.base}/{repo_id}.git", str(tmp_path / "s"),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    log = git(git_env, "log", "--oneline", cwd=tmp_path / "s").stdout.strip().splitlines()
    assert len(log) == 1


def test_skip_smudge_gives_pointer_files(hearth, git_env, lfs_repo, tmp_path):
    repo_id, big = lfs_repo
    git(git_env, "clone", f"{hearth.base}/{repo_id}", str(tmp_path / "p"),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    pointer = (tmp_path / "p" / "weights.bin").read_text()
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1\n")
    assert f"oid sha256:{hashlib.sha256(big).hexdigest()}" in pointer
    assert f"size {len(big)}" in pointer


def test_push_lfs_and_text_shows_in_api(hearth, git_env, lfs_repo, tmp_path):
    repo_id, _ = lfs_repo
    work = tmp_path / "w"
    git(git_env, "clone", authed(hearth.base, hearth.token, f"/{repo_id}"), str(work),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    new_big = os.urandom(3 * 1024 * 1024)
    (work / "more.safetensors").write_bytes(new_big)
    (work / "notes.txt").write_text("pushed with git\n")
    git(git_env, "add", ".", cwd=work)
    git(git_env, "commit", "-m", "Add files with git", cwd=work)
    git(git_env, "push", "origin", "main", cwd=work)

    head = git(git_env, "rev-parse", "HEAD", cwd=work).stdout.strip()
    r = requests.get(f"{hearth.base}/{repo_id}/resolve/main/notes.txt")
    assert r.status_code == 200 and r.text == "pushed with git\n"
    assert r.headers["X-Repo-Commit"] == head
    r = requests.get(f"{hearth.base}/{repo_id}/resolve/main/more.safetensors")
    assert r.content == new_big
    tree = requests.get(f"{hearth.base}/api/models/{repo_id}/tree/main").json()
    entry = next(e for e in tree if e["path"] == "more.safetensors")
    assert entry["lfs"]["oid"] == hashlib.sha256(new_big).hexdigest()
    assert entry["size"] == len(new_big)
    info = requests.get(f"{hearth.base}/api/models/{repo_id}").json()
    assert info["sha"] == head
    assert "safetensors" in info["tags"]


def test_anonymous_push_is_refused(hearth, git_env, lfs_repo, tmp_path):
    repo_id, _ = lfs_repo
    work = tmp_path / "anon"
    git(git_env, "clone", f"{hearth.base}/{repo_id}", str(work), extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    (work / "x.txt").write_text("x")
    git(git_env, "add", "x.txt", cwd=work)
    git(git_env, "commit", "-m", "anonymous", cwd=work)
    r = git(git_env, "push", "origin", "main", cwd=work, check=False)
    assert r.returncode != 0
    assert "Username" in r.stderr or "401" in r.stderr or "Authentication" in r.stderr
    r = requests.get(f"{hearth.base}/{repo_id}/info/refs", params={"service": "git-receive-pack"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")


def test_clone_of_missing_repo_fails_clearly(hearth, git_env, tmp_path):
    r = git(git_env, "clone", authed(hearth.base, hearth.token, f"/{hearth.user}/does-not-exist"),
            str(tmp_path / "m"), check=False)
    assert r.returncode != 0
    assert "not found" in r.stderr


def test_push_naming_missing_lfs_object_is_rejected(hearth, git_env, lfs_repo, tmp_path):
    repo_id, _ = lfs_repo
    work = tmp_path / "bad"
    git(git_env, "clone", authed(hearth.base, hearth.token, f"/{repo_id}"), str(work),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    before = git(git_env, "ls-remote", "origin", "refs/heads/main", cwd=work).stdout
    missing = "ab" * 32
    (work / "ghost.txt").write_text(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{missing}\nsize 99\n")
    git(git_env, "add", "ghost.txt", cwd=work)
    git(git_env, "commit", "-m", "pointer to nothing", cwd=work)
    r = git(git_env, "push", "--no-verify", "origin", "main", cwd=work, check=False)
    assert r.returncode != 0
    assert missing in r.stderr
    assert git(git_env, "ls-remote", "origin", "refs/heads/main", cwd=work).stdout == before


def test_protected_refs_and_force_push(hearth, git_env, lfs_repo, tmp_path):
    repo_id, _ = lfs_repo
    work = tmp_path / "f"
    git(git_env, "clone", authed(hearth.base, hearth.token, f"/{repo_id}"), str(work),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    r = git(git_env, "push", "origin", ":main", cwd=work, check=False)
    assert r.returncode != 0 and "main cannot be deleted" in r.stderr
    r = git(git_env, "push", "origin", "HEAD:refs/pr/7", cwd=work, check=False)
    assert r.returncode != 0
    # force-push a rewritten branch
    git(git_env, "checkout", "-b", "topic", cwd=work)
    (work / "t.txt").write_text("one")
    git(git_env, "add", "t.txt", cwd=work)
    git(git_env, "commit", "-m", "one", cwd=work)
    git(git_env, "push", "origin", "topic", cwd=work)
    git(git_env, "commit", "--amend", "-m", "one, amended", cwd=work)
    assert git(git_env, "push", "origin", "topic", cwd=work, check=False).returncode != 0
    git(git_env, "push", "--force", "origin", "topic", cwd=work)
    refs = requests.get(f"{hearth.base}/api/models/{repo_id}/refs").json()
    topic = next(b for b in refs["branches"] if b["name"] == "topic")
    assert topic["targetCommit"] == git(git_env, "rev-parse", "HEAD", cwd=work).stdout.strip()


def test_push_racing_api_commit_loses_nothing(hearth, git_env, lfs_repo, tmp_path):
    """An API commit lands after the clone: the push is rejected as non-fast-forward, the API
    commit survives, and a pull + push then carries both."""
    from huggingface_hub import HfApi

    repo_id, _ = lfs_repo
    work = tmp_path / "race"
    git(git_env, "clone", authed(hearth.base, hearth.token, f"/{repo_id}"), str(work),
        extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    api = HfApi(endpoint=hearth.base, token=hearth.token)
    api.upload_file(path_or_fileobj=b"from the api", path_in_repo="api.txt", repo_id=repo_id)
    (work / "git.txt").write_text("from git")
    git(git_env, "add", "git.txt", cwd=work)
    git(git_env, "commit", "-m", "from git", cwd=work)
    r = git(git_env, "push", "origin", "main", cwd=work, check=False)
    assert r.returncode != 0 and ("rejected" in r.stderr or "fetch first" in r.stderr)
    git(git_env, "pull", "--no-rebase", "origin", "main", cwd=work, extra={"GIT_LFS_SKIP_SMUDGE": "1"})
    git(git_env, "push", "origin", "main", cwd=work)
    files = set(api.list_repo_files(repo_id))
    assert {"api.txt", "git.txt"} <= files
