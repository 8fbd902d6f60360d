"""The official Python client (`huggingface_hub`, plus `transformers`) against a real `hearth serve`.

Issue 3, acceptance item 2 (Python half). Every check compares what a user would see: exact bytes,
commit ids, file lists, card data. The environment (HF_ENDPOINT, HF_HUB_DISABLE_XET=1, a private
HF_HUB_CACHE, ...) is set by conftest.py before huggingface_hub is imported.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from hearth_server import git_blob_sha1, sha256_hex

from huggingface_hub import (  # noqa: E402  (env set by conftest)
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (  # noqa: E402
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

SHA40 = re.compile(r"^[0-9a-f]{40}$")
BIG_SIZE = 12 * 1024 * 1024 + 12345  # >= 12 MiB, not a multiple of anything nice

MODEL_README = """---
license: apache-2.0
tags:
- hearth-e2e
- tiny
pipeline_tag: text-classification
library_name: transformers
---

# Tiny test model

Uploaded by Hearth's end-to-end tests.
"""

DATASET_README = """---
license: mit
tags:
- hearth-e2e-data
task_categories:
- text-classification
---

# Tiny test dataset
"""


def status_of(excinfo) -> int:
    err = excinfo.value
    return err.response.status_code


# ------------------------------------------------------------------------------------------------
# One model repo, filled once by upload_folder, shared by the read-side tests of this file.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_repo(api, user, tmp_path_factory):
    rid = f"{user}/py-model-{os.urandom(4).hex()}"
    url = api.create_repo(rid)
    folder = tmp_path_factory.mktemp("upload-folder")
    files: dict[str, bytes] = {
        "README.md": MODEL_README.encode(),
        "config.json": json.dumps({"model_type": "bert", "hidden_size": 32, "architectures": ["BertModel"]}).encode(),
        "notes.txt": b"hello hearth\n" * 10,
        "sub/dir/nested.txt": b"a nested file, two levels down\n",
        "weights/big.bin": os.urandom(BIG_SIZE),
    }
    for path, data in files.items():
        p = folder / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    info = api.upload_folder(folder_path=str(folder), repo_id=rid, commit_message="Upload tiny model folder")
    return SimpleNamespace(id=rid, url=url, files=files, commit=info, folder=folder)


def test_whoami(api, user, hearth):
    me = api.whoami()
    assert me["name"] == user
    assert me["type"] == "user"
    assert me["auth"]["accessToken"]["role"] == "write"
    ro = HfApi(endpoint=hearth.base, token=hearth.read_token).whoami()
    assert ro["name"] == user
    assert ro["auth"]["accessToken"]["role"] == "read"


def test_create_repo_model_dataset_space_and_conflict(api, user, uid, base):
    m = api.create_repo(f"{user}/py-create-{uid}")
    assert m.repo_id == f"{user}/py-create-{uid}"
    assert m.repo_type == "model"
    assert str(m).startswith(base)

    d = api.create_repo(f"{user}/py-create-ds-{uid}", repo_type="dataset")
    assert d.repo_id == f"{user}/py-create-ds-{uid}"
    assert d.repo_type == "dataset"
    assert "/datasets/" in str(d)

    s = api.create_repo(f"{user}/py-create-sp-{uid}", repo_type="space", space_sdk="static")
    assert s.repo_id == f"{user}/py-create-sp-{uid}"
    assert s.repo_type == "space"
    assert "/spaces/" in str(s)

    # exist_ok=True on an existing repo: no error, same URL (read from the 409 body)
    again = api.create_repo(f"{user}/py-create-{uid}", exist_ok=True)
    assert str(again) == str(m)
    again_ds = api.create_repo(f"{user}/py-create-ds-{uid}", repo_type="dataset", exist_ok=True)
    assert str(again_ds) == str(d)

    # without exist_ok: 409
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo(f"{user}/py-create-{uid}")
    assert status_of(e) == 409

    assert api.repo_exists(f"{user}/py-create-{uid}")
    assert api.repo_exists(f"{user}/py-create-ds-{uid}", repo_type="dataset")
    assert api.repo_exists(f"{user}/py-create-sp-{uid}", repo_type="space")
    # a dataset is not a model
    assert not api.repo_exists(f"{user}/py-create-ds-{uid}")


def test_upload_file_and_download(api, user, uid, fresh_cache):
    rid = f"{user}/py-upload-{uid}"
    api.create_repo(rid)
    data = b"first line\nsecond line\n\x00binary-ish\xff\n"
    ci = api.upload_file(path_or_fileobj=data, path_in_repo="data/hello.bin", repo_id=rid,
                         commit_message="Add hello", commit_description="with a description")
    assert SHA40.match(ci.oid)
    assert "/commit/" in ci.commit_url
    assert ci.commit_url.endswith(ci.oid)
    assert ci.commit_message == "Add hello"
    # the new commit is the branch head
    refs = api.list_repo_refs(rid)
    main = [b for b in refs.branches if b.name == "main"]
    assert main and main[0].target_commit == ci.oid
    path = hf_hub_download(rid, "data/hello.bin", cache_dir=fresh_cache)
    assert Path(path).read_bytes() == data
    commits = api.list_repo_commits(rid)
    assert commits[0].commit_id == ci.oid
    assert commits[0].title == "Add hello"
    assert "with a description" in commits[0].message


def test_upload_folder_is_one_commit_with_lfs(api, model_repo):
    ci = model_repo.commit
    assert SHA40.match(ci.oid)
    commits = api.list_repo_commits(model_repo.id)
    assert commits[0].commit_id == ci.oid
    assert commits[0].title == "Upload tiny model folder"
    # repo creation (initial commit, if any) + exactly one upload commit
    assert len(commits) <= 2
    if len(commits) == 2:
        assert commits[1].commit_id != ci.oid
    files = set(api.list_repo_files(model_repo.id))
    assert set(model_repo.files) <= files
    assert files - set(model_repo.files) <= {".gitattributes"}


def test_list_repo_tree(api, model_repo):
    entries = list(api.list_repo_tree(model_repo.id, recursive=True))
    by_path = {e.path: e for e in entries}
    files = {e.path for e in entries if hasattr(e, "blob_id")}
    dirs = {e.path for e in entries if not hasattr(e, "blob_id")}
    assert set(model_repo.files) <= files
    assert {"sub", "sub/dir", "weights"} <= dirs
    for path, data in model_repo.files.items():
        e = by_path[path]
        assert e.size == len(data), path
        if path == "weights/big.bin":
            assert e.lfs is not None, "a 12 MiB file must be stored in LFS"
            assert e.lfs.sha256 == sha256_hex(data)
            assert e.lfs.size == len(data)
            assert e.lfs.pointer_size > 0
            # oid of an LFS entry is the git sha1 of the pointer file
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(data)}\n"
                       f"size {len(data)}\n").encode()
            assert e.blob_id == git_blob_sha1(pointer)
            assert e.lfs.pointer_size == len(pointer)
        else:
            assert e.lfs is None, path
            assert e.blob_id == git_blob_sha1(data), path

    # non-recursive: immediate children only
    top = {e.path for e in api.list_repo_tree(model_repo.id)}
    assert {"README.md", "config.json", "notes.txt", "sub", "weights"} <= top
    assert "weights/big.bin" not in top and "sub/dir" not in top
    # a sub-folder, recursive: paths stay relative to the repo root
    sub = {e.path for e in api.list_repo_tree(model_repo.id, path_in_repo="sub", recursive=True)}
    assert sub == {"sub/dir", "sub/dir/nested.txt"}

    assert sorted(api.list_repo_files(model_repo.id)) == sorted(files)


def test_model_info(api, model_repo, user):
    info = api.model_info(model_repo.id)
    refs = api.list_repo_refs(model_repo.id)
    head = [b.target_commit for b in refs.branches if b.name == "main"][0]
    assert info.id == model_repo.id
    assert info.author == user
    assert info.sha == head == model_repo.commit.oid
    assert info.private is False
    assert set(model_repo.files) <= {s.rfilename for s in info.siblings}
    assert info.card_data is not None
    assert info.card_data.license == "apache-2.0"
    assert info.card_data.tags == ["hearth-e2e", "tiny"]
    assert info.pipeline_tag == "text-classification"
    assert info.library_name == "transformers"
    assert "hearth-e2e" in info.tags and "tiny" in info.tags
    assert "license:apache-2.0" in info.tags
    assert info.last_modified is not None and info.created_at is not None

    full = api.model_info(model_repo.id, files_metadata=True)
    sib = {s.rfilename: s for s in full.siblings}
    big = model_repo.files["weights/big.bin"]
    assert sib["weights/big.bin"].size == len(big)
    assert sib["weights/big.bin"].lfs is not None
    assert sib["weights/big.bin"].lfs.sha256 == sha256_hex(big)
    assert sib["config.json"].size == len(model_repo.files["config.json"])
    assert sib["config.json"].blob_id == git_blob_sha1(model_repo.files["config.json"])

    # info at an explicit revision
    at = api.model_info(model_repo.id, revision=model_repo.commit.oid)
    assert at.sha == model_repo.commit.oid


def test_dataset_info(api, user, uid, tmp_path):
    rid = f"{user}/py-dataset-{uid}"
    api.create_repo(rid, repo_type="dataset")
    (tmp_path / "data").mkdir()
    (tmp_path / "README.md").write_text(DATASET_README)
    csv = b"text,label\nhello,1\nworld,0\n"
    (tmp_path / "data" / "train.csv").write_bytes(csv)
    ci = api.upload_folder(folder_path=str(tmp_path), repo_id=rid, repo_type="dataset")
    info = api.dataset_info(rid)
    assert info.id == rid
    assert info.sha == ci.oid
    assert {"README.md", "data/train.csv"} <= {s.rfilename for s in info.siblings}
    assert info.card_data.license == "mit"
    assert "hearth-e2e-data" in info.tags
    path = hf_hub_download(rid, "data/train.csv", repo_type="dataset", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == csv


def test_space_static(api, user, uid, tmp_path):
    rid = f"{user}/py-space-{uid}"
    api.create_repo(rid, repo_type="space", space_sdk="static")
    html = b"<!doctype html><title>hearth</title><p>static space</p>\n"
    api.upload_file(path_or_fileobj=html, path_in_repo="index.html", repo_id=rid, repo_type="space")
    path = hf_hub_download(rid, "index.html", repo_type="space", cache_dir=tmp_path)
    assert Path(path).read_bytes() == html
    info = api.space_info(rid)
    assert info.id == rid
    assert "index.html" in {s.rfilename for s in info.siblings}
    assert info.sdk == "static"


def test_list_models_search_and_author(api, model_repo, user):
    name = model_repo.id.split("/")[1]
    found = [m.id for m in api.list_models(search=name)]
    assert found == [model_repo.id]
    mine = [m.id for m in api.list_models(author=user)]
    assert model_repo.id in mine
    assert all(m.startswith(f"{user}/") for m in mine)
    both = [m.id for m in api.list_models(search="py-model-", author=user)]
    assert model_repo.id in both
    assert list(api.list_models(author="nobody-has-this-name")) == []
    assert list(api.list_models(search="no-repo-matches-this-xyzzy")) == []
    # datasets are not models
    assert not any("py-dataset-" in m for m in mine)
    # limit is honoured
    assert len(list(api.list_models(author=user, limit=1))) == 1


def test_get_paths_info(api, model_repo):
    infos = api.get_paths_info(model_repo.id, ["config.json", "weights", "weights/big.bin", "missing.txt"])
    by_path = {i.path: i for i in infos}
    assert set(by_path) == {"config.json", "weights", "weights/big.bin"}
    assert by_path["config.json"].size == len(model_repo.files["config.json"])
    assert by_path["config.json"].blob_id == git_blob_sha1(model_repo.files["config.json"])
    assert not hasattr(by_path["weights"], "blob_id")  # a RepoFolder
    big = model_repo.files["weights/big.bin"]
    assert by_path["weights/big.bin"].lfs.sha256 == sha256_hex(big)
    assert by_path["weights/big.bin"].size == len(big)


def test_file_exists_and_repo_exists(api, model_repo, user):
    assert api.file_exists(model_repo.id, "config.json")
    assert api.file_exists(model_repo.id, "weights/big.bin")
    assert api.file_exists(model_repo.id, "sub/dir/nested.txt")
    assert not api.file_exists(model_repo.id, "nope.json")
    assert not api.file_exists(model_repo.id, "config.json", revision="no-such-branch")
    assert not api.file_exists(f"{user}/no-such-repo-{os.urandom(3).hex()}", "config.json")
    assert api.repo_exists(model_repo.id)
    assert not api.repo_exists(f"{user}/no-such-repo-{os.urandom(3).hex()}")
    assert api.revision_exists(model_repo.id, "main")
    assert not api.revision_exists(model_repo.id, "no-such-branch")


def test_hf_hub_download_byte_identical_and_cached(model_repo, hearth, fresh_cache):
    rid = model_repo.id
    name = rid.split("/")[1]
    data = model_repo.files["config.json"]
    p1 = hf_hub_download(rid, "config.json", cache_dir=fresh_cache)
    assert Path(p1).read_bytes() == data
    # the cache layout: snapshots/<commit>/config.json -> blobs/<git blob sha1>
    assert Path(p1).parent.name == model_repo.commit.oid
    assert Path(p1).resolve().name == git_blob_sha1(data)
    hearth.wait_log_quiet()
    heads = hearth.count_requests("HEAD", f"{name}/resolve/", "config.json")
    gets = hearth.count_requests("GET", f"{name}/resolve/", "config.json")
    assert heads >= 1 and gets >= 1, "the request log should show the HEAD and GET of the first download"
    blob = Path(p1).resolve()
    mtime = blob.stat().st_mtime_ns

    p2 = hf_hub_download(rid, "config.json", cache_dir=fresh_cache)
    assert p2 == p1
    assert Path(p2).resolve() == blob and blob.stat().st_mtime_ns == mtime
    hearth.wait_log_quiet()
    assert hearth.count_requests("GET", f"{name}/resolve/", "config.json") == gets, "second call re-downloaded"
    assert hearth.count_requests("HEAD", f"{name}/resolve/", "config.json") == heads + 1, "expected exactly one HEAD"

    # the LFS file: byte-identical, cached under its sha256
    big = model_repo.files["weights/big.bin"]
    pb = hf_hub_download(rid, "weights/big.bin", cache_dir=fresh_cache)
    assert Path(pb).resolve().name == sha256_hex(big)
    assert Path(pb).read_bytes() == big


def test_snapshot_download(model_repo, fresh_cache):
    folder = Path(snapshot_download(model_repo.id, cache_dir=fresh_cache))
    assert folder.name == model_repo.commit.oid
    for path, data in model_repo.files.items():
        assert (folder / path).read_bytes() == data, path
    got = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert set(model_repo.files) <= got
    assert got - set(model_repo.files) <= {".gitattributes"}
    # allow_patterns
    only = Path(snapshot_download(model_repo.id, cache_dir=fresh_cache / "b", allow_patterns=["*.json"]))
    assert {str(p.relative_to(only)) for p in only.rglob("*") if p.is_file()} == {"config.json"}


def test_branch_tag_and_upload_to_branch(api, user, uid, fresh_cache):
    rid = f"{user}/py-branch-{uid}"
    api.create_repo(rid)
    c1 = api.upload_file(path_or_fileobj=b"v1\n", path_in_repo="version.txt", repo_id=rid)
    api.create_branch(rid, branch="dev")
    api.create_branch(rid, branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_branch(rid, branch="dev")
    assert status_of(e) == 409

    c2 = api.upload_file(path_or_fileobj=b"v2 on dev\n", path_in_repo="version.txt", repo_id=rid, revision="dev")
    c3 = api.upload_file(path_or_fileobj=b"dev only\n", path_in_repo="dev.txt", repo_id=rid, revision="dev")
    assert api.file_exists(rid, "dev.txt", revision="dev")
    assert not api.file_exists(rid, "dev.txt")
    main_v = hf_hub_download(rid, "version.txt", cache_dir=fresh_cache)
    dev_v = hf_hub_download(rid, "version.txt", revision="dev", cache_dir=fresh_cache)
    assert Path(main_v).read_bytes() == b"v1\n"
    assert Path(dev_v).read_bytes() == b"v2 on dev\n"

    api.create_tag(rid, tag="v1.0", tag_message="first release")
    api.create_tag(rid, tag="dev-snapshot", revision="dev")
    api.create_tag(rid, tag="v1.0", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_tag(rid, tag="v1.0")
    assert status_of(e) == 409

    refs = api.list_repo_refs(rid)
    branches = {b.name: b.target_commit for b in refs.branches}
    tags = {t.name: t.target_commit for t in refs.tags}
    assert branches == {"main": c1.oid, "dev": c3.oid}
    assert tags == {"v1.0": c1.oid, "dev-snapshot": c3.oid}
    assert {b.ref for b in refs.branches} == {"refs/heads/main", "refs/heads/dev"}
    assert {t.ref for t in refs.tags} == {"refs/tags/v1.0", "refs/tags/dev-snapshot"}
    assert refs.converts == []

    tag_v = hf_hub_download(rid, "version.txt", revision="v1.0", cache_dir=fresh_cache)
    assert Path(tag_v).read_bytes() == b"v1\n"
    # a short commit id is a revision too
    short_v = hf_hub_download(rid, "version.txt", revision=c2.oid[:7], cache_dir=fresh_cache / "short")
    assert Path(short_v).read_bytes() == b"v2 on dev\n"
    assert [c.commit_id for c in api.list_repo_commits(rid, revision="dev")][:3] == [c3.oid, c2.oid, c1.oid]
    assert api.list_repo_commits(rid)[0].commit_id == c1.oid


def test_branch_with_slash(api, user, uid, fresh_cache):
    rid = f"{user}/py-slash-{uid}"
    api.create_repo(rid)
    api.upload_file(path_or_fileobj=b"main\n", path_in_repo="f.txt", repo_id=rid)
    api.create_branch(rid, branch="feature/x")
    ci = api.upload_file(path_or_fileobj=b"feature\n", path_in_repo="f.txt", repo_id=rid, revision="feature/x")
    p = hf_hub_download(rid, "f.txt", revision="feature/x", cache_dir=fresh_cache)
    assert Path(p).read_bytes() == b"feature\n"
    assert "feature/x" in {b.name for b in api.list_repo_refs(rid).branches}
    assert api.model_info(rid, revision="feature/x").sha == ci.oid
    assert {e.path for e in api.list_repo_tree(rid, revision="feature/x")} >= {"f.txt"}


def test_delete_file_old_revision_still_serves(api, user, uid, fresh_cache):
    rid = f"{user}/py-delete-{uid}"
    api.create_repo(rid)
    data = b"soon gone\n"
    c1 = api.upload_file(path_or_fileobj=data, path_in_repo="gone.txt", repo_id=rid)
    api.upload_file(path_or_fileobj=b"stays\n", path_in_repo="stays.txt", repo_id=rid)
    c3 = api.delete_file("gone.txt", rid, commit_message="Remove gone.txt")
    assert SHA40.match(c3.oid)
    assert not api.file_exists(rid, "gone.txt")
    assert api.file_exists(rid, "stays.txt")
    assert "gone.txt" not in api.list_repo_files(rid)
    assert "gone.txt" in api.list_repo_files(rid, revision=c1.oid)
    old = hf_hub_download(rid, "gone.txt", revision=c1.oid, cache_dir=fresh_cache)
    assert Path(old).read_bytes() == data
    assert api.list_repo_commits(rid)[0].title == "Remove gone.txt"
    # deleting a missing file is an error, and the branch does not move
    with pytest.raises(HfHubHTTPError) as e:
        api.delete_file("gone.txt", rid)
    assert status_of(e) == 404
    assert api.list_repo_commits(rid)[0].commit_id == c3.oid


def test_list_repo_commits_and_refs(api, user, uid):
    rid = f"{user}/py-commits-{uid}"
    api.create_repo(rid)
    oids = []
    for i in range(3):
        ci = api.upload_file(path_or_fileobj=f"{i}\n".encode(), path_in_repo=f"n{i}.txt", repo_id=rid,
                             commit_message=f"commit number {i}", commit_description=f"body {i}")
        oids.append(ci.oid)
    commits = api.list_repo_commits(rid)
    assert [c.commit_id for c in commits[:3]] == oids[::-1]
    assert [c.title for c in commits[:3]] == ["commit number 2", "commit number 1", "commit number 0"]
    assert "body 2" in commits[0].message
    assert all(c.created_at is not None for c in commits)
    assert commits[0].authors, "commit authors should name the uploader"
    assert len({c.commit_id for c in commits}) == len(commits)
    refs = api.list_repo_refs(rid)
    assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", oids[-1])]
    assert refs.tags == [] and refs.converts == []
    # at an older commit, history is shorter
    assert [c.commit_id for c in api.list_repo_commits(rid, revision=oids[0])][0] == oids[0]


def test_hf_file_system_partial_read(api, model_repo, hearth):
    fs = HfFileSystem(endpoint=hearth.base, token=hearth.token, skip_instance_cache=True)
    big = model_repo.files["weights/big.bin"]
    path = f"{model_repo.id}/weights/big.bin"
    assert fs.size(path) == len(big)
    info = fs.info(path)
    assert info["type"] == "file" and info["size"] == len(big)
    assert info["lfs"] is not None and info["lfs"]["sha256"] == sha256_hex(big)
    with fs.open(path, "rb", block_size=64 * 1024) as f:
        f.seek(5_000_003)
        assert f.read(1000) == big[5_000_003:5_001_003]
        f.seek(len(big) - 10)
        assert f.read() == big[-10:]
        f.seek(17)
        assert f.read(3) == big[17:20]
    assert fs.read_text(f"{model_repo.id}/notes.txt") == model_repo.files["notes.txt"].decode()
    names = {p.split(f"{model_repo.id}/", 1)[1] for p in fs.ls(model_repo.id, detail=False)}
    assert {"README.md", "config.json", "weights", "sub"} <= names
    assert fs.cat_file(f"{model_repo.id}/sub/dir/nested.txt", start=2, end=8) == \
        model_repo.files["sub/dir/nested.txt"][2:8]


def _write_tiny_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(["hello hearth world", "the hub serves models", "hello models from the hub"],
                            trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "model_max_length": 128,
    }))


def test_transformers_autoconfig_autotokenizer(api, user, uid, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, BertConfig

    src = tmp_path / "src"
    src.mkdir()
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64).save_pretrained(src)
    _write_tiny_tokenizer(src)
    rid = f"{user}/py-transformers-{uid}"
    api.create_repo(rid)
    api.upload_folder(folder_path=str(src), repo_id=rid)

    cache = tmp_path / "cache"
    cfg = AutoConfig.from_pretrained(rid, cache_dir=cache)
    assert cfg.model_type == "bert"
    assert cfg.hidden_size == 32 and cfg.num_hidden_layers == 2 and cfg.vocab_size == 64

    tok = AutoTokenizer.from_pretrained(rid, cache_dir=cache)
    local = AutoTokenizer.from_pretrained(str(src))
    text = "hello hub world unknownword"
    assert tok.tokenize(text) == local.tokenize(text) == ["hello", "hub", "world", "[UNK]"]
    ids = tok(text)["input_ids"]
    assert ids == local(text)["input_ids"]
    assert ids[-1] == tok.unk_token_id == local.convert_tokens_to_ids("[UNK]")
    assert tok.decode(ids[:3]) == "hello hub world"

    # at an explicit commit
    sha = api.model_info(rid).sha
    cfg2 = AutoConfig.from_pretrained(rid, revision=sha, cache_dir=tmp_path / "cache2")
    assert cfg2.hidden_size == 32


def test_anonymous_writes_refused(anon_api, api, user, uid, model_repo):
    rid = f"{user}/py-anon-{uid}"
    with pytest.raises(HfHubHTTPError) as e:
        anon_api.create_repo(rid)
    assert status_of(e) == 401
    assert not api.repo_exists(rid)

    before = api.list_repo_commits(model_repo.id)[0].commit_id
    with pytest.raises(HfHubHTTPError) as e:
        anon_api.upload_file(path_or_fileobj=b"x", path_in_repo="anon.txt", repo_id=model_repo.id)
    assert status_of(e) == 401
    with pytest.raises(HfHubHTTPError) as e:
        anon_api.delete_file("notes.txt", model_repo.id)
    assert status_of(e) == 401
    with pytest.raises(HfHubHTTPError) as e:
        anon_api.create_branch(model_repo.id, branch="anon-branch")
    assert status_of(e) == 401
    with pytest.raises(HfHubHTTPError) as e:
        anon_api.delete_repo(model_repo.id)
    assert status_of(e) == 401
    assert api.list_repo_commits(model_repo.id)[0].commit_id == before
    assert not api.file_exists(model_repo.id, "anon.txt")
    # public repos stay readable anonymously
    assert anon_api.model_info(model_repo.id).sha == before


def test_read_token_cannot_write(hearth, api, user, uid, model_repo):
    ro = HfApi(endpoint=hearth.base, token=hearth.read_token)
    with pytest.raises(HfHubHTTPError) as e:
        ro.create_repo(f"{user}/py-ro-{uid}")
    assert status_of(e) in (401, 403)
    with pytest.raises(HfHubHTTPError) as e:
        ro.upload_file(path_or_fileobj=b"x", path_in_repo="ro.txt", repo_id=model_repo.id)
    assert status_of(e) in (401, 403)
    assert ro.model_info(model_repo.id).id == model_repo.id


def test_delete_repo(api, user, uid):
    rid = f"{user}/py-gone-{uid}"
    api.create_repo(rid)
    api.upload_file(path_or_fileobj=b"bye\n", path_in_repo="bye.txt", repo_id=rid)
    assert api.repo_exists(rid)
    api.delete_repo(rid)
    assert not api.repo_exists(rid)
    assert not api.file_exists(rid, "bye.txt")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(rid)
    api.delete_repo(rid, missing_ok=True)
    # the name can be reused, and the new repo starts empty
    api.create_repo(rid)
    assert "bye.txt" not in api.list_repo_files(rid)

    did = f"{user}/py-gone-ds-{uid}"
    api.create_repo(did, repo_type="dataset")
    api.delete_repo(did, repo_type="dataset")
    assert not api.repo_exists(did, repo_type="dataset")


def test_move_repo_old_name_redirects(api, user, uid, fresh_cache):
    old, new = f"{user}/py-old-{uid}", f"{user}/py-new-{uid}"
    api.create_repo(old)
    data = b"moved content\n"
    ci = api.upload_file(path_or_fileobj=data, path_in_repo="file.txt", repo_id=old)
    api.move_repo(from_id=old, to_id=new)
    assert api.repo_exists(new)
    assert api.model_info(new).sha == ci.oid
    p = hf_hub_download(new, "file.txt", cache_dir=fresh_cache)
    assert Path(p).read_bytes() == data
    # the old name still works for downloads (307 to the new name)
    p_old = hf_hub_download(old, "file.txt", cache_dir=fresh_cache / "old")
    assert Path(p_old).read_bytes() == data
    # moving onto an existing repo is a conflict
    other = f"{user}/py-other-{uid}"
    api.create_repo(other)
    with pytest.raises(HfHubHTTPError) as e:
        api.move_repo(from_id=new, to_id=other)
    assert status_of(e) == 409


def test_revision_not_found_and_entry_not_found(api, model_repo, fresh_cache):
    from huggingface_hub.errors import RemoteEntryNotFoundError

    with pytest.raises(RevisionNotFoundError):
        api.model_info(model_repo.id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(model_repo.id, "config.json", revision="no-such-branch", cache_dir=fresh_cache)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(model_repo.id, "no-such-file.json", cache_dir=fresh_cache)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(model_repo.id + "-missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(model_repo.id + "-missing", "config.json", cache_dir=fresh_cache)


def test_list_models_filter_and_model_info_expand(api, model_repo, user):
    tagged = [m.id for m in api.list_models(filter="hearth-e2e", author=user)]
    assert model_repo.id in tagged
    assert [m.id for m in api.list_models(filter="no-such-tag-xyzzy", author=user)] == []
    assert model_repo.id in [m.id for m in api.list_models(author=user, sort="lastModified")]
    exp = api.model_info(model_repo.id, expand=["sha", "cardData", "lastModified"])
    assert exp.sha == model_repo.commit.oid
    assert exp.card_data.license == "apache-2.0"
    assert exp.last_modified is not None


def test_tree_expand_last_commit(api, model_repo):
    entries = {e.path: e for e in api.list_repo_tree(model_repo.id, recursive=True, expand=True)}
    e = entries["config.json"]
    assert e.last_commit is not None
    assert e.last_commit.oid == model_repo.commit.oid
    assert e.last_commit.title == "Upload tiny model folder"
    assert e.last_commit.date is not None
    infos = api.get_paths_info(model_repo.id, ["weights/big.bin"], expand=True)
    assert infos[0].last_commit.oid == model_repo.commit.oid


def test_update_repo_settings_private_toggle(api, anon_api, user, uid, fresh_cache):
    rid = f"{user}/py-settings-{uid}"
    api.create_repo(rid)
    api.upload_file(path_or_fileobj=b"s\n", path_in_repo="s.txt", repo_id=rid)
    assert anon_api.repo_exists(rid)
    api.update_repo_settings(rid, private=True)
    assert api.model_info(rid).private is True
    assert not anon_api.repo_exists(rid)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(rid, "s.txt", cache_dir=fresh_cache, token=False)
    assert rid not in [m.id for m in anon_api.list_models(author=user)]
    assert rid in [m.id for m in api.list_models(author=user)]
    api.update_repo_settings(rid, visibility="public")
    assert anon_api.model_info(rid).private is False
    p = hf_hub_download(rid, "s.txt", cache_dir=fresh_cache, token=False)
    assert Path(p).read_bytes() == b"s\n"


def test_delete_branch_and_tag(api, user, uid, fresh_cache):
    rid = f"{user}/py-refs-{uid}"
    api.create_repo(rid)
    api.upload_file(path_or_fileobj=b"x\n", path_in_repo="x.txt", repo_id=rid)
    api.create_branch(rid, branch="tmp")
    api.create_tag(rid, tag="t1")
    api.delete_branch(rid, branch="tmp")
    api.delete_tag(rid, tag="t1")
    refs = api.list_repo_refs(rid)
    assert [b.name for b in refs.branches] == ["main"]
    assert refs.tags == []
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(rid, "x.txt", revision="tmp", cache_dir=fresh_cache)
    with pytest.raises(HfHubHTTPError) as e:
        api.delete_branch(rid, branch="tmp")
    assert status_of(e) == 404
    with pytest.raises(HfHubHTTPError) as e:
        api.delete_branch(rid, branch="main")
    assert 400 <= status_of(e) < 500
    assert [b.name for b in api.list_repo_refs(rid).branches] == ["main"]


def test_copy_files_and_delete_folder(api, model_repo, user, uid, fresh_cache):
    from huggingface_hub import CommitOperationCopy

    rid = f"{user}/py-copy-{uid}"
    api.create_repo(rid)
    small = b"copy me\n"
    big = os.urandom(11 * 1024 * 1024)
    api.upload_folder(folder_path=str(_mkfolder(fresh_cache / "src", {"a/small.txt": small, "a/big.bin": big})),
                      repo_id=rid)
    ci = api.create_commit(rid, operations=[
        CommitOperationCopy(src_path_in_repo="a/small.txt", path_in_repo="b/small-copy.txt"),
        CommitOperationCopy(src_path_in_repo="a/big.bin", path_in_repo="b/big-copy.bin"),
    ], commit_message="copy")
    tree = {e.path: e for e in api.list_repo_tree(rid, recursive=True)}
    assert tree["b/big-copy.bin"].lfs is not None and tree["b/big-copy.bin"].lfs.sha256 == sha256_hex(big)
    assert Path(hf_hub_download(rid, "b/small-copy.txt", cache_dir=fresh_cache)).read_bytes() == small
    assert Path(hf_hub_download(rid, "b/big-copy.bin", cache_dir=fresh_cache)).read_bytes() == big
    api.delete_folder("a", rid, commit_message="rm a")
    files = set(api.list_repo_files(rid))
    assert not any(f.startswith("a/") for f in files)
    assert {"b/small-copy.txt", "b/big-copy.bin"} <= files
    # the copy's LFS object survives the deletion of the original
    assert Path(hf_hub_download(rid, "b/big-copy.bin", cache_dir=fresh_cache / "2")).read_bytes() == big
    assert Path(hf_hub_download(rid, "a/big.bin", revision=ci.oid, cache_dir=fresh_cache / "3")).read_bytes() == big


def _mkfolder(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_super_squash_history(api, user, uid):
    rid = f"{user}/py-squash-{uid}"
    api.create_repo(rid)
    for i in range(3):
        api.upload_file(path_or_fileobj=b"%d" % i, path_in_repo=f"{i}.txt", repo_id=rid)
    files = sorted(api.list_repo_files(rid))
    api.super_squash_history(rid, commit_message="squashed")
    commits = api.list_repo_commits(rid)
    assert len(commits) == 1
    assert commits[0].title == "squashed"
    assert sorted(api.list_repo_files(rid)) == files


def test_hf_hub_download_to_local_dir(model_repo, tmp_path):
    p = hf_hub_download(model_repo.id, "sub/dir/nested.txt", local_dir=tmp_path / "local")
    assert Path(p) == tmp_path / "local" / "sub" / "dir" / "nested.txt"
    assert Path(p).read_bytes() == model_repo.files["sub/dir/nested.txt"]
    big = hf_hub_download(model_repo.id, "weights/big.bin", local_dir=tmp_path / "local")
    assert Path(big).read_bytes() == model_repo.files["weights/big.bin"]
    folder = snapshot_download(model_repo.id, local_dir=tmp_path / "snap")
    for path, data in model_repo.files.items():
        assert (Path(folder) / path).read_bytes() == data, path


ODD_NAMES = ["empty.txt", "dir with space/ünïcødé ✓.txt", "weird#hash.txt", "q?mark.txt", "pct%41.txt",
             "plus+sign.txt", "a'b\"c.txt", "emoji 😀.txt", "semi;colon&amp=.txt"]


def test_odd_file_names_roundtrip(api, user, uid, fresh_cache):
    from huggingface_hub import CommitOperationAdd

    rid = f"{user}/py-names-{uid}"
    api.create_repo(rid)
    content = {n: (b"" if n == "empty.txt" else n.encode()) for n in ODD_NAMES}
    api.create_commit(rid, operations=[CommitOperationAdd(path_in_repo=n, path_or_fileobj=c)
                                       for n, c in content.items()], commit_message="odd names")
    assert set(ODD_NAMES) <= set(api.list_repo_files(rid))
    for name, data in content.items():
        assert Path(hf_hub_download(rid, name, cache_dir=fresh_cache)).read_bytes() == data, name
    infos = {i.path: i.size for i in api.get_paths_info(rid, ODD_NAMES)}
    assert infos == {n: len(c) for n, c in content.items()}
    snap = Path(snapshot_download(rid, cache_dir=fresh_cache / "snap"))
    for name, data in content.items():
        assert (snap / name).read_bytes() == data, name


def test_invalid_readme_yaml_is_refused_by_validate_yaml(api, user, uid):
    rid = f"{user}/py-yaml-{uid}"
    api.create_repo(rid)
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\nhi\n", path_in_repo="README.md", repo_id=rid)
    assert "README.md" not in api.list_repo_files(rid)
    # a README without front matter is fine and yields no card data
    api.upload_file(path_or_fileobj=b"# just a title\n", path_in_repo="README.md", repo_id=rid)
    assert not api.model_info(rid).card_data


def test_shared_lfs_object_survives_deleting_one_repo(api, user, uid, fresh_cache):
    a, b = f"{user}/py-dedup-a-{uid}", f"{user}/py-dedup-b-{uid}"
    big = os.urandom(11 * 1024 * 1024)
    for rid in (a, b):
        api.create_repo(rid)
        api.upload_file(path_or_fileobj=big, path_in_repo="w.bin", repo_id=rid)
    api.delete_repo(a)
    assert Path(hf_hub_download(b, "w.bin", cache_dir=fresh_cache)).read_bytes() == big
    # and the deleted repo's file is gone from the API
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(a, "w.bin", cache_dir=fresh_cache / "a")


def test_datasets_spaces_listing_and_hf_file_system_on_a_dataset(api, hearth, user, uid):
    ds, sp = f"{user}/py-fsds-{uid}", f"{user}/py-fssp-{uid}"
    api.create_repo(ds, repo_type="dataset")
    api.create_repo(sp, repo_type="space", space_sdk="static")
    train = b"a,b\n1,2\n3,4\n"
    api.upload_file(path_or_fileobj=train, path_in_repo="data/train.csv", repo_id=ds, repo_type="dataset")
    assert ds in [d.id for d in api.list_datasets(author=user)]
    assert [d.id for d in api.list_datasets(search=f"py-fsds-{uid}")] == [ds]
    assert ds not in [m.id for m in api.list_models(author=user)]
    assert sp in [s.id for s in api.list_spaces(author=user)]

    fs = HfFileSystem(endpoint=hearth.base, token=hearth.token, skip_instance_cache=True)
    root = f"datasets/{ds}"
    assert f"{root}/data/train.csv" in fs.find(root)
    assert fs.glob(f"{root}/**/*.csv") == [f"{root}/data/train.csv"]
    assert fs.cat(f"{root}/data/train.csv") == train
    # writing through the file system makes a commit; rm makes another
    with fs.open(f"{root}/data/new.csv", "wb") as f:
        f.write(b"x,y\n")
    assert fs.cat(f"{root}/data/new.csv") == b"x,y\n"
    assert "data/new.csv" in api.list_repo_files(ds, repo_type="dataset")
    fs.rm(f"{root}/data/new.csv")
    assert "data/new.csv" not in api.list_repo_files(ds, repo_type="dataset")
    # a branch in an hf:// path
    api.create_branch(ds, branch="dev", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"dev\n", path_in_repo="dev.txt", repo_id=ds, repo_type="dataset", revision="dev")
    fs.invalidate_cache()
    assert fs.cat(f"{root}@dev/dev.txt") == b"dev\n"
    assert f"{root}@dev/dev.txt" in fs.ls(f"{root}@dev", detail=False)
    assert not fs.exists(f"{root}/dev.txt")


def test_client_follows_pagination(api, user, uid):
    """More entries than one page of tree (1000) and of commits (50): the client follows the Link headers."""
    from huggingface_hub import CommitOperationAdd

    rid = f"{user}/py-pages-{uid}"
    api.create_repo(rid)
    api.create_commit(rid, operations=[CommitOperationAdd(path_in_repo=f"many/{i:04d}.txt", path_or_fileobj=b"%d" % i)
                                       for i in range(1100)], commit_message="1100 files")
    tree = [e.path for e in api.list_repo_tree(rid, path_in_repo="many")]
    assert len(tree) == 1100 and len(set(tree)) == 1100
    assert sorted(tree) == [f"many/{i:04d}.txt" for i in range(1100)]
    assert len([f for f in api.list_repo_files(rid) if f.startswith("many/")]) == 1100
    oids = []
    for i in range(55):
        oids.append(api.create_commit(rid, operations=[CommitOperationAdd(path_in_repo="counter.txt",
                                                                          path_or_fileobj=b"%d" % i)],
                                      commit_message=f"count {i}").oid)
    commits = [c.commit_id for c in api.list_repo_commits(rid)]
    assert commits[:55] == oids[::-1]
    assert len(commits) == len(set(commits)) >= 56
