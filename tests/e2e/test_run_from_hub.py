"""`hearth run` on a model that lives on the hub: a repo id with --data (and --revision) runs
the same weights as the local directory they were uploaded from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hearth_server import REPO_ROOT, hearth_bin


def run(*args, timeout=300):
    return subprocess.run([str(hearth_bin()), "run", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_a_repo_id_from_the_hub(hearth, api, uid, tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "infer" / "make_test_model.py"),
                    str(model), "--arch", "llama", "--tokenizer", "llama3"], check=True,
                   capture_output=True, timeout=300)
    repo_id = f"{hearth.user}/tiny-llama-{uid}"
    api.create_repo(repo_id)
    first = api.upload_folder(folder_path=str(model), repo_id=repo_id).oid

    local = run(str(model), "Hello there", "-n", "12", "--seed", "1", "-q")
    assert local.returncode == 0, local.stderr
    hub = run(repo_id, "Hello there", "-n", "12", "--seed", "1", "-q", "--data", str(hearth.data_dir))
    assert hub.returncode == 0, hub.stderr
    assert hub.stdout == local.stdout and hub.stdout.strip()

    # a later commit does not change what an older revision runs
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="notes.json", repo_id=repo_id)
    pinned = run(repo_id, "Hello there", "-n", "12", "--seed", "1", "-q", "--data",
                 str(hearth.data_dir), "--revision", first)
    assert pinned.returncode == 0 and pinned.stdout == local.stdout
    snapshot = Path(hearth.data_dir) / "snapshots" / f"models--{hearth.user}--tiny-llama-{uid}" / first
    assert (snapshot / "config.json").exists()

    missing = run(f"{hearth.user}/no-such-model", "Hi", "--data", str(hearth.data_dir))
    assert missing.returncode != 0 and "no model repo" in missing.stderr
