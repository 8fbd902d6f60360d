#!/usr/bin/env python3
"""File-serving benchmark: Hearth's `resolve` beside nginx, in one run.

  bench/serve.py [--size-mib 1024] [--seconds 10]

1. Throughput: the same file (default 1 GiB of random bytes) downloaded through Hearth's
   /resolve (an LFS object in the chunk store, checked and copied out of mapped packs) and through nginx serving the file
   from disk (sendfile on). Each is fetched several times with curl to /dev/null; the best run
   of each is compared. Goal: ratio >= 0.95.
2. HEAD requests/s: wrk with 64 connections on HEAD /resolve of a small (empty) file, beside
   nginx answering HEAD on the same static file. Goal: ratio >= 0.5.

Needs: build/hearth (release), nginx and wrk (scripts/deps.sh installs them), curl.
Only loopback addresses are used; every server is stopped at the end.
"""
import argparse, hashlib, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, tries=200):
    for _ in range(tries):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not come up")


def request(method, url, token=None, body=None, ctype="application/json"):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req) as r:
        return r.read()


def upload_lfs(base, token, repo, path, file_path):
    sha = hashlib.sha256()
    size = os.path.getsize(file_path)
    with open(file_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    oid = sha.hexdigest()
    batch = json.loads(request("POST", f"{base}/{repo}.git/info/lfs/objects/batch", token,
                               json.dumps({"operation": "upload", "transfers": ["basic"],
                                           "objects": [{"oid": oid, "size": size}]}).encode()))
    obj = batch["objects"][0]
    if "actions" in obj:
        subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-T", file_path,
                        obj["actions"]["upload"]["href"], "-o", "/dev/null"], check=True)
    lines = [{"key": "header", "value": {"summary": f"add {path}", "description": ""}},
             {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}]
    request("POST", f"{base}/api/models/{repo}/commit/main", token,
            "\n".join(json.dumps(l) for l in lines).encode(), "application/x-ndjson")


def stop_all(procs, work):
    """SIGTERM every server, wait for each (kill after 10 s), remove the work directory."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)


def curl_speed(url, runs):
    best = 0.0
    for _ in range(runs):
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", url],
                             check=True, capture_output=True, text=True).stdout
        best = max(best, float(out))
    return best


def wrk_rate(url, seconds, script):
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "-s", script, url],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit("wrk printed no rate:\n" + out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "curl"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is missing: run scripts/deps.sh")
    hearth = os.path.join(ROOT, "build", "hearth")
    if not os.path.exists(hearth):
        subprocess.run(["make", "-C", ROOT, "build/hearth"], check=True)
    work = tempfile.mkdtemp(prefix="hearth-bench-")
    os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
    procs = []
    try:
        data = os.path.join(work, "data")
        www = os.path.join(work, "www")
        os.makedirs(www)
        big = os.path.join(www, "big.bin")
        with open(big, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        # wrk 4.1 waits for a body after HEAD when Content-Length > 0, so both servers answer
        # HEAD for an empty file: the per-request work (lookup, headers) is the same.
        open(os.path.join(www, "empty.txt"), "w").close()

        subprocess.run([hearth, "admin", "--data", data, "create-user", "bench"], check=True,
                       capture_output=True)
        token = subprocess.run([hearth, "admin", "--data", data, "create-token", "bench", "--write"],
                               check=True, capture_output=True, text=True).stdout.strip()
        hport = free_port()
        # wrk's 64 connections all come from 127.0.0.1, exactly the default per-address limit,
        # beside whatever the set-up left open: no limit here, as nginx has none.
        procs.append(subprocess.Popen([hearth, "serve", "--quiet", "--data", data, "--listen",
                                       f"127.0.0.1:{hport}", "--max-connections-per-ip", "0"],
                                      stdout=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{hport}"
        wait_http(f"{base}/health")
        request("POST", f"{base}/api/repos/create", token,
                json.dumps({"name": "files", "type": "model"}).encode())
        upload_lfs(base, token, "bench/files", "big.bin", big)
        request("POST", f"{base}/api/models/bench/files/commit/main", token,
                (json.dumps({"key": "header", "value": {"summary": "small"}}) + "\n" +
                 json.dumps({"key": "file", "value": {"path": "empty.txt",
                                                      "content": "",
                                                      "encoding": "utf-8"}})).encode(),
                "application/x-ndjson")

        nport = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2; daemon off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {work}/ct; proxy_temp_path {work}/pt; fastcgi_temp_path {work}/ft;
  uwsgi_temp_path {work}/ut; scgi_temp_path {work}/st;
  server {{ listen 127.0.0.1:{nport}; root {www}; }} }}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-c", conf, "-p", work],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{nport}/empty.txt")

        h_url = f"{base}/bench/files/resolve/main/big.bin"
        n_url = f"http://127.0.0.1:{nport}/big.bin"
        curl_speed(n_url, 1)  # warm the page cache for both
        h = curl_speed(h_url, args.runs)
        n = curl_speed(n_url, args.runs)
        print(f"download {args.size_mib} MiB: hearth {h / 2**20:8.0f} MiB/s   nginx {n / 2**20:8.0f} MiB/s"
              f"   ratio {h / n:.2f} (goal >= 0.95)")

        script = os.path.join(work, "head.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "HEAD"\n')
        hr = wrk_rate(f"{base}/bench/files/resolve/main/empty.txt", args.seconds, script)
        nr = wrk_rate(f"http://127.0.0.1:{nport}/empty.txt", args.seconds, script)
        print(f"HEAD resolve, 64 connections: hearth {hr:9.0f} req/s   nginx {nr:9.0f} req/s"
              f"   ratio {hr / nr:.2f} (goal >= 0.5)")
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
