"""llama.cpp as a peer, through node-llama-cpp's prebuilt CPU binaries.

install() copies tests/infer/llamacpp/package.json into build/infer-llamacpp and runs npm there
(once); it returns the directory, or raises Unavailable with the reason (no npm, offline, not
linux-x64), so that tests can skip with a clear message and benchmarks can say why."""
import os
import platform
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEST = os.path.join(ROOT, "build", "infer-llamacpp")


class Unavailable(Exception):
    pass


def install():
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise Unavailable("node-llama-cpp's prebuilt binaries used here are for linux-x64 only")
    if not shutil.which("node") or not shutil.which("npm"):
        raise Unavailable("node/npm are not installed")
    src = os.path.join(HERE, "llamacpp")
    os.makedirs(DEST, exist_ok=True)
    for f in ("package.json", "greedy.mjs", "bench.mjs", "tokenize.mjs"):
        shutil.copyfile(os.path.join(src, f), os.path.join(DEST, f))
    marker = os.path.join(DEST, "node_modules", "@node-llama-cpp", "linux-x64", "package.json")
    if not os.path.exists(marker):
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--omit=optional", "--loglevel=error"],
                           cwd=DEST, capture_output=True, timeout=600)
        if p.returncode != 0 or not os.path.exists(marker):
            raise Unavailable("npm install node-llama-cpp failed: " + p.stderr.decode(errors="replace")[-400:])
    return DEST


def node(script, *args, timeout=600):
    d = install()
    p = subprocess.run(["node", os.path.join(d, script), *map(str, args)], cwd=d, capture_output=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("node %s failed: %s" % (script, p.stderr.decode(errors="replace")[-1000:]))
    return p.stdout.decode()
