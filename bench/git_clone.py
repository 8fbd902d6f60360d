#!/usr/bin/env python3
"""git clone benchmark: Hearth's smart HTTP beside `git http-backend` behind nginx (fcgiwrap).

  bench/git_clone.py [--files 2000] [--lfs-mib 100] [--runs 3]

A repository with N small files and one large LFS file is pushed to Hearth with git + git-lfs.
The same bare repository (copied from Hearth's data directory) is then served by nginx through
fcgiwrap and git http-backend. Both are cloned (GIT_LFS_SKIP_SMUDGE=1, since http-backend has no
LFS server) and the best time of each is compared; the full clone with the LFS object fetched
from Hearth is timed on its own.
"""
import argparse, os, shutil, signal, subprocess, tempfile, time, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import ROOT, stop_all, free_port, wait_http  # noqa: E402


def run(cmd, env, cwd=None):
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def timed_clone(url, dest, env, runs):
    best = None
    for i in range(runs):
        target = f"{dest}-{i}"
        t0 = time.monotonic()
        run(["git", "clone", "-q", url, target], env)
        dt = time.monotonic() - t0
        shutil.rmtree(target)
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--lfs-mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for tool in ("git", "git-lfs", "/usr/sbin/nginx", "/usr/sbin/fcgiwrap"):
        if not shutil.which(tool) and not os.path.exists(tool):
            raise SystemExit(f"{tool} is missing: run `scripts/deps.sh bench`")
    hearth = os.path.join(ROOT, "build", "hearth")
    if not os.path.exists(hearth):
        subprocess.run(["make", "-C", ROOT, "build/hearth"], check=True)
    work = tempfile.mkdtemp(prefix="hearth-gitbench-")
    os.chmod(work, 0o755)
    procs = []
    env = {"PATH": os.environ["PATH"], "HOME": os.path.join(work, "home"), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    try:
        os.makedirs(env["HOME"])
        run(["git", "lfs", "install", "--skip-repo"], env)
        data = os.path.join(work, "data")
        subprocess.run([hearth, "admin", "--data", data, "create-user", "bench"], check=True,
                       capture_output=True)
        token = subprocess.run([hearth, "admin", "--data", data, "create-token", "bench", "--write"],
                               check=True, capture_output=True, text=True).stdout.strip()
        hport = free_port()
        procs.append(subprocess.Popen([hearth, "serve", "--quiet", "--data", data, "--listen",
                                       f"127.0.0.1:{hport}"], stdout=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{hport}"
        wait_http(f"{base}/health")
        import json, urllib.request
        req = urllib.request.Request(f"{base}/api/repos/create", method="POST",
                                     data=json.dumps({"name": "big"}).encode(),
                                     headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(req).read()

        src = os.path.join(work, "src")
        run(["git", "clone", "-q", f"http://b:{token}@127.0.0.1:{hport}/bench/big", src], env)
        for i in range(args.files):
            d = os.path.join(src, f"dir{i % 40:02d}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"file{i:05d}.txt"), "w") as f:
                f.write(f"small file {i}\n" * (1 + i % 7))
        with open(os.path.join(src, "weights.safetensors"), "wb") as f:
            for _ in range(args.lfs_mib):
                f.write(os.urandom(1 << 20))
        run(["git", "add", "."], env, cwd=src)
        run(["git", "commit", "-q", "-m", "bench content"], env, cwd=src)
        t0 = time.monotonic()
        run(["git", "push", "-q", "origin", "main"], env, cwd=src)
        push_s = time.monotonic() - t0

        # The peer serves a copy of the very same bare repository.
        repos = os.path.join(data, "repos")
        bare = os.path.join(repos, os.listdir(repos)[0])
        peer_root = os.path.join(work, "peer")
        os.makedirs(peer_root)
        shutil.copytree(bare, os.path.join(peer_root, "big.git"))
        subprocess.run(["chmod", "-R", "a+rX", work], check=True)
        sock = os.path.join(work, "fcgi.sock")
        procs.append(subprocess.Popen(["/usr/sbin/fcgiwrap", "-s", f"unix:{sock}"]))
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        os.chmod(sock, 0o777)
        nport = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {work}/ct; proxy_temp_path {work}/pt;
  fastcgi_temp_path {work}/ft; uwsgi_temp_path {work}/ut; scgi_temp_path {work}/st;
  client_max_body_size 0;
  server {{ listen 127.0.0.1:{nport};
    location / {{ fastcgi_pass unix:{sock}; include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {peer_root}; fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri; fastcgi_param GIT_PROTOCOL $http_git_protocol; }} }} }}
""")
        procs.append(subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", work],
                                      stderr=subprocess.DEVNULL))
        time.sleep(0.5)

        skip = dict(env, GIT_LFS_SKIP_SMUDGE="1")
        dest = os.path.join(work, "clone")
        h = timed_clone(f"{base}/bench/big", dest + "-h", skip, args.runs)
        n = timed_clone(f"http://127.0.0.1:{nport}/big.git", dest + "-n", skip, args.runs)
        full = timed_clone(f"{base}/bench/big", dest + "-f", env, 1)
        print(f"git push of {args.files} files + {args.lfs_mib} MiB LFS to hearth: {push_s:.2f} s")
        print(f"git clone (no LFS smudge), {args.files} files: hearth {h:.3f} s   "
              f"git http-backend+nginx {n:.3f} s   ratio {n / h:.2f} (speed, >1 = hearth faster)")
        print(f"git clone with the {args.lfs_mib} MiB LFS file from hearth: {full:.2f} s")
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
