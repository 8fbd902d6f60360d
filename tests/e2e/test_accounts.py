"""Issue 15 (accounts), the part that has landed: organisations and member roles, fine-grained
tokens, token management, whoami / overviews as huggingface_hub reads them, auth-check, and a
permission matrix over callers x repos x route families.

Each caller is a real user with a real token made by `hearth admin`, as an operator would make
them; every answer is compared with exactly the status (and X-Error-Code) a user of the Hub
would get. A private repo must answer exactly as a missing one.
"""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
import requests

from hearth_server import sha256_hex
from test_security import User, auth, file_line, header, lfs_line


@pytest.fixture(scope="module")
def alice(hearth):
    return User(hearth.base, hearth.user, hearth.token)


def admin(hearth, *args) -> str:
    return hearth.admin(*args).strip()


@pytest.fixture(scope="module")
def org(hearth):
    """acme-<id>: alice admin; members reader (read), contrib (contributor), writer (write);
    outsider belongs to nothing. Returns (org name, {role: User})."""
    name = f"acme{uuid.uuid4().hex[:6]}"
    users = {}
    for role in ("owner", "reader", "contrib", "writer", "outsider"):
        u = f"{role}{uuid.uuid4().hex[:5]}"
        hearth.create_user(u)
        users[role] = User(hearth.base, u, hearth.create_token(u))
    admin(hearth, "create-org", name, "--owner", users["owner"].name, "--fullname", "Acme Corp")
    for role, member_role in (("reader", "read"), ("contrib", "contributor"), ("writer", "write")):
        admin(hearth, "add-member", name, users[role].name, "--role", member_role)
    return name, users


def org_repo(owner: User, org: str, name: str, private=False, gated=False) -> str:
    r = owner.s.post(f"{owner.base}/api/repos/create", headers=auth(owner.token),
                     json={"name": name, "organization": org, "private": private})
    assert r.status_code == 200, r.text
    rid = f"{org}/{name}"
    owner.commit_ok(rid, header("seed"), file_line("config.json", b'{"model_type": "bert"}'))
    if gated:
        owner.settings(rid, gated="manual")
    return rid


def test_whoami_shows_orgs_and_roles(hearth, org):
    from huggingface_hub import HfApi

    name, users = org
    for who, role in (("owner", "admin"), ("reader", "read"), ("writer", "write")):
        me = HfApi(endpoint=hearth.base, token=users[who].token).whoami()
        mine = [o for o in me["orgs"] if o["name"] == name]
        assert mine and mine[0]["roleInOrg"] == role and mine[0]["type"] == "org", me
        assert mine[0]["fullname"] == "Acme Corp"
    assert HfApi(endpoint=hearth.base, token=users["outsider"].token).whoami()["orgs"] == []


def test_org_overview_members_and_user_overview(hearth, org, alice):
    from huggingface_hub import HfApi

    name, users = org
    api = HfApi(endpoint=hearth.base, token=False)
    ov = api.get_organization_overview(name)
    assert ov.name == name and ov.fullname == "Acme Corp" and ov.num_users == 4
    members = {m.username for m in api.list_organization_members(name)}
    assert members == {users[r].name for r in ("owner", "reader", "contrib", "writer")}
    uo = HfApi(endpoint=hearth.base).get_user_overview(users["reader"].name)
    assert uo.username == users["reader"].name and [o.name for o in uo.orgs] == [name]
    assert requests.get(f"{hearth.base}/api/organizations/{users['reader'].name}/overview").status_code == 404
    assert requests.get(f"{hearth.base}/api/users/{name}/overview").status_code == 404
    # roles are shown to members only
    listed = requests.get(f"{hearth.base}/api/organizations/{name}/members", headers=auth(users["reader"].token)).json()
    assert {m["role"] for m in listed} == {"admin", "read", "contributor", "write"}
    assert "role" not in requests.get(f"{hearth.base}/api/organizations/{name}/members").json()[0]


def test_create_org_through_the_api(hearth, org):
    _, users = org
    u = users["outsider"]
    name = f"new{uuid.uuid4().hex[:6]}"
    r = u.s.post(f"{u.base}/api/organizations/new", headers=auth(u.token), json={"name": name, "fullname": "New"})
    assert r.status_code == 200, r.text
    assert u.s.post(f"{u.base}/api/organizations/new", headers=auth(u.token), json={"name": name}).status_code == 409
    assert requests.post(f"{u.base}/api/organizations/new", json={"name": name + "x"}).status_code == 401
    assert u.s.post(f"{u.base}/api/organizations/new", headers=auth(u.token), json={"name": "api"}).status_code == 400
    # its creator administers it: adds a member through the API, who then sees its private repo
    other = users["reader"]
    r = u.s.put(f"{u.base}/api/organizations/{name}/members/{other.name}", headers=auth(u.token), json={"role": "read"})
    assert r.status_code == 200, r.text
    rid = org_repo(u, name, "inside", private=True)
    assert other.get(f"/api/models/{rid}").status_code == 200
    # a reader may not change members
    r = other.s.put(f"{u.base}/api/organizations/{name}/members/{other.name}", headers=auth(other.token),
                    json={"role": "admin"})
    assert r.status_code == 403
    r = u.s.delete(f"{u.base}/api/organizations/{name}/members/{other.name}", headers=auth(u.token))
    assert r.status_code == 200
    assert other.get(f"/api/models/{rid}").status_code == 404


def test_fine_grained_token_writes_only_where_its_scope_allows(hearth, org):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    name, users = org
    a = org_repo(users["owner"], name, f"fa-{uuid.uuid4().hex[:5]}", private=True)
    b = org_repo(users["owner"], name, f"fb-{uuid.uuid4().hex[:5]}", private=True)
    tok = admin(hearth, "create-token", users["writer"].name, "--scope", f"repo.write:{a}")
    api = HfApi(endpoint=hearth.base, token=tok)
    info = api.whoami()["auth"]["accessToken"]
    assert info["role"] == "fineGrained"
    assert info["fineGrained"]["scoped"][0]["entity"]["name"] == a
    assert info["fineGrained"]["scoped"][0]["permissions"] == ["repo.write"]
    api.upload_file(path_or_fileobj=b"in scope", path_in_repo="a.txt", repo_id=a)
    assert api.hf_hub_download(a, "a.txt", cache_dir=str(hearth.tmp / f"c{uuid.uuid4().hex}")) is not None
    # out of scope: the other private repo does not even exist for this token
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_file(path_or_fileobj=b"out of scope", path_in_repo="b.txt", repo_id=b)
    assert err.value.response.status_code in (403, 404)
    assert requests.get(f"{hearth.base}/api/models/{b}", headers=auth(tok)).status_code == 404
    # a fine-grained token cannot mint tokens, nor manage settings it was not given
    assert requests.get(f"{hearth.base}/api/settings/tokens", headers=auth(tok)).status_code == 403
    r = requests.put(f"{hearth.base}/api/models/{a}/settings", headers=auth(tok), json={"private": False})
    assert r.status_code == 403
    # the same user's full write token reaches both
    assert requests.get(f"{hearth.base}/api/models/{b}", headers=auth(users["writer"].token)).status_code == 200


def test_tokens_created_listed_and_revoked(hearth, alice):
    s = requests.Session()
    r = s.post(f"{hearth.base}/api/settings/tokens", headers=auth(alice.token),
               json={"displayName": "ci", "role": "read"})
    assert r.status_code == 200, r.text
    secret, tid = r.json()["token"], r.json()["id"]
    assert secret.startswith("hf_") and tid > 0
    assert s.get(f"{hearth.base}/api/whoami-v2", headers=auth(secret)).json()["auth"]["accessToken"]["role"] == "read"
    listed = s.get(f"{hearth.base}/api/settings/tokens", headers=auth(alice.token)).json()
    mine = [t for t in listed if t["id"] == tid]
    assert mine and mine[0]["displayName"] == "ci" and mine[0]["lastUsedAt"]
    assert all(secret not in json.dumps(t) for t in listed), "a listing shows a secret"
    r = s.post(f"{hearth.base}/api/settings/tokens", headers=auth(alice.token),
               json={"displayName": "bad", "scopes": "repo.write:no-slash"})
    assert r.status_code == 400
    assert s.delete(f"{hearth.base}/api/settings/tokens/{tid}", headers=auth(alice.token)).status_code == 200
    assert s.get(f"{hearth.base}/api/whoami-v2", headers=auth(secret)).status_code == 401
    assert s.delete(f"{hearth.base}/api/settings/tokens/{tid}", headers=auth(alice.token)).status_code == 404


def test_auth_check_as_huggingface_hub_calls_it(hearth, org):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    name, users = org
    gated = org_repo(users["owner"], name, f"g-{uuid.uuid4().hex[:5]}", gated=True)
    private = org_repo(users["owner"], name, f"p-{uuid.uuid4().hex[:5]}", private=True)
    out = HfApi(endpoint=hearth.base, token=users["outsider"].token)
    with pytest.raises(GatedRepoError):
        out.auth_check(gated)
    with pytest.raises(RepositoryNotFoundError):
        out.auth_check(private)
    HfApi(endpoint=hearth.base, token=users["reader"].token).auth_check(private)
    HfApi(endpoint=hearth.base, token=users["reader"].token).auth_check(gated)
    r = requests.get(f"{hearth.base}/api/models/{private}/auth-check/write", headers=auth(users["reader"].token))
    assert r.status_code == 403
    r = requests.get(f"{hearth.base}/api/models/{private}/auth-check/write", headers=auth(users["writer"].token))
    assert r.status_code == 200


# ---- the matrix -------------------------------------------------------------------------------

ANON, READ_TOKEN = "anonymous", "owner read token"


@pytest.fixture(scope="module")
def matrix(hearth, org):
    """Repos of the org (public, private, gated) with one LFS file and one text file, and every
    kind of caller."""
    name, users = org
    owner = users["owner"]
    repos = {}
    data = os.urandom(3000)
    for kind in ("public", "private", "gated"):
        rid = org_repo(owner, name, f"m-{kind}-{uuid.uuid4().hex[:5]}", private=kind == "private",
                       gated=kind == "gated")
        oid = owner.upload_lfs(rid, data)
        owner.commit_ok(rid, header("w"), lfs_line("w.bin", oid, len(data)))
        repos[kind] = rid
    callers = {ANON: None, READ_TOKEN: admin(hearth, "create-token", owner.name, "--read")}
    for role in ("owner", "reader", "contrib", "writer", "outsider"):
        callers[role] = users[role].token
    callers["fine-grained in scope"] = admin(hearth, "create-token", users["outsider"].name, "--scope",
                                             f"repo.content.read:{name}/*")
    site_admin = f"root{uuid.uuid4().hex[:5]}"
    admin(hearth, "create-user", site_admin, "--admin")
    callers["site admin"] = hearth.create_token(site_admin)
    return {"repos": repos, "callers": callers, "data": data, "oid": sha256_hex(data)}


# Who may see / read files / write each kind of repo. Public: everyone sees and reads files.
SEES_PRIVATE = {"owner", READ_TOKEN, "reader", "contrib", "writer", "site admin"}
WRITES = {"owner", "writer", "site admin"}   # contrib writes only repos they created
# A fine-grained read scope on the org reads private repos? Only if its user is a member: the
# outsider is not, so it sees public metadata only.


def expect_read(caller, kind, files):
    if kind == "public":
        return 200
    if kind == "private":
        return 200 if caller in SEES_PRIVATE else 404
    if not files:  # gated metadata
        return 200
    if caller in SEES_PRIVATE:
        return 200
    return 401 if caller == ANON else 403


@pytest.mark.parametrize("kind", ["public", "private", "gated"])
def test_matrix_reads(hearth, matrix, kind):
    rid = matrix["repos"][kind]
    base = hearth.base
    missing = f"{rid.split('/')[0]}/does-not-exist-{uuid.uuid4().hex[:5]}"
    failures = []
    for caller, token in matrix["callers"].items():
        h = auth(token)
        routes = {
            "info": (requests.get, f"/api/models/{{}}", False),
            "tree": (requests.get, f"/api/models/{{}}/tree/main", False),
            "refs": (requests.get, f"/api/models/{{}}/refs", False),
            "commits": (requests.get, f"/api/models/{{}}/commits/main", False),
            "paths-info": (lambda u, headers: requests.post(u, headers=headers, data={"paths": ["w.bin"]}),
                           f"/api/models/{{}}/paths-info/main", False),
            "resolve": (requests.get, "/{}/resolve/main/w.bin", True),
            "raw": (requests.get, "/{}/raw/main/config.json", True),
            "auth-check": (requests.get, f"/api/models/{{}}/auth-check", True),
            "xet-read-token": (requests.get, f"/api/models/{{}}/xet-read-token/main", True),
            "git info/refs": (requests.get, "/{}.git/info/refs?service=git-upload-pack", True),
        }
        for family, (method, path, files) in routes.items():
            want = expect_read(caller, kind, files)
            r = method(base + path.format(rid), headers=h)
            got = r.status_code
            if family == "xet-read-token" and got == 501:
                continue
            want_set = {want}
            if family == "git info/refs" and caller == ANON and want in (403, 404):
                want_set = {401}  # git asks for credentials on a 401, for the unseen as for the missing
            elif family == "git info/refs" and want in (401, 403):
                want_set = {401, 403}
            if got not in want_set:
                failures.append(f"{caller} / {family}: {got}, want {want}")
            if want in (401, 403) and family not in ("git info/refs",) and r.headers.get("X-Error-Code") != "GatedRepo":
                failures.append(f"{caller} / {family}: X-Error-Code {r.headers.get('X-Error-Code')}")
            if want == 404:
                m = method(base + path.format(missing), headers=h)
                if (r.status_code, r.headers.get("X-Error-Code"), r.text) != (
                        m.status_code, m.headers.get("X-Error-Code"), m.text.replace(missing, rid)):
                    failures.append(f"{caller} / {family}: private differs from missing: {r.text} vs {m.text}")
            if got == 200 and family == "resolve":
                assert r.content == matrix["data"]
    listing = {c: {x["id"] for x in requests.get(f"{base}/api/models", params={"author": rid.split("/")[0], "limit": 1000},
                                                 headers=auth(t)).json()}
               for c, t in matrix["callers"].items()}
    for caller, seen in listing.items():
        if (rid in seen) != (expect_read(caller, kind, False) == 200):
            failures.append(f"{caller} / list: {'sees' if rid in seen else 'misses'} the {kind} repo")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["public", "private", "gated"])
def test_matrix_writes(hearth, matrix, kind):
    rid = matrix["repos"][kind]
    base = hearth.base
    failures = []
    for caller, token in matrix["callers"].items():
        h = {**auth(token), "Content-Type": "application/x-ndjson"}
        sees = expect_read(caller, kind, False) == 200
        writes = caller in WRITES
        want = 200 if writes else (404 if not sees else (401 if token is None else 403))
        body = json.dumps(header("m")).encode() + b"\n" + json.dumps(file_line(f"{uuid.uuid4().hex[:6]}.txt", b"x")).encode()
        r = requests.post(f"{base}/api/models/{rid}/commit/main", headers=h, data=body)
        if r.status_code != want:
            failures.append(f"{caller} / commit: {r.status_code}, want {want}")
        b = requests.post(f"{base}/api/models/{rid}/branch/b-{uuid.uuid4().hex[:6]}", headers=auth(token))
        if b.status_code != want:
            failures.append(f"{caller} / branch: {b.status_code}, want {want}")
        manage = caller in ("owner", "site admin")
        want_settings = 200 if manage else (404 if not sees else (401 if token is None else 403))
        s = requests.put(f"{base}/api/models/{rid}/settings", headers=auth(token),
                         json={"private": kind == "private"})
        if s.status_code != want_settings:
            failures.append(f"{caller} / settings: {s.status_code}, want {want_settings}")
    assert not failures, "\n".join(failures)


def test_contributor_creates_and_writes_own_repos_only(hearth, org, matrix):
    name, users = org
    c = users["contrib"]
    rid = org_repo(c, name, f"mine-{uuid.uuid4().hex[:5]}")
    c.commit_ok(rid, header("mine"), file_line("x.txt", b"x"))
    r = c.commit(matrix["repos"]["public"], header("theirs"), file_line("y.txt", b"y"))
    assert r.status_code == 403
    # a reader may not create repos in the org
    r = users["reader"].s.post(f"{hearth.base}/api/repos/create", headers=auth(users["reader"].token),
                               json={"name": f"no-{uuid.uuid4().hex[:5]}", "organization": name})
    assert r.status_code == 403


# ---- the audit log -----------------------------------------------------------------------------


def test_every_write_is_in_the_audit_log(hearth, org):
    name, users = org
    w = users["writer"]
    rid = org_repo(users["owner"], name, f"audited-{uuid.uuid4().hex[:5]}")
    w.commit_ok(rid, header("audited change"), file_line("a.txt", b"a"))
    users["owner"].settings(rid, private=True)
    r = w.s.post(f"{w.base}/api/settings/tokens", headers=auth(w.token), json={"displayName": "t", "role": "read"})
    tid = r.json()["id"]
    w.s.delete(f"{w.base}/api/settings/tokens/{tid}", headers=auth(w.token))
    root = f"auditor{uuid.uuid4().hex[:5]}"
    admin(hearth, "create-user", root, "--admin")
    root_token = hearth.create_token(root, write=False)
    log = requests.get(f"{hearth.base}/api/admin/audit", headers=auth(root_token),
                       params={"target": f"model:{rid}"}).json()
    actions = [(e["action"], e["actor"]) for e in log]
    assert ("repo.create", users["owner"].name) in actions, log
    assert ("commit", w.name) in actions and ("repo.settings", users["owner"].name) in actions, log
    commit = next(e for e in log if e["action"] == "commit")
    assert commit["address"] == "127.0.0.1" and commit["target"] == f"model:{rid}@main"
    assert len(commit["detail"]["commit"]) == 40
    tokens = requests.get(f"{hearth.base}/api/admin/audit", headers=auth(root_token), params={"user": w.name}).json()
    assert {"token.create", "token.revoke"} <= {e["action"] for e in tokens}
    # administrators only
    assert requests.get(f"{hearth.base}/api/admin/audit", headers=auth(w.token)).status_code == 403
    assert requests.get(f"{hearth.base}/api/admin/audit").status_code == 401
    # the CLI reads the same log, and it cannot be rewritten
    lines = [json.loads(l) for l in admin(hearth, "audit", "--repo", f"model:{rid}").splitlines()]
    assert [l["action"] for l in lines] == [e["action"] for e in log]
    import sqlite3

    with pytest.raises(sqlite3.DatabaseError):
        with sqlite3.connect(hearth.data_dir / "hearth.db", timeout=30) as db:
            db.execute("DELETE FROM audit")


# ---- access requests to gated repos ----------------------------------------------------------


def test_gated_access_requests_as_huggingface_hub_handles_them(hearth, org, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    name, users = org
    owner, out, reader = users["owner"], users["outsider"], users["reader"]
    rid = org_repo(owner, name, f"gate-{uuid.uuid4().hex[:5]}", gated=True)  # manual
    api = HfApi(endpoint=hearth.base, token=owner.token)

    def download(who):
        return hf_hub_download(rid, "config.json", token=who.token, cache_dir=str(tmp_path / uuid.uuid4().hex))

    with pytest.raises(GatedRepoError):
        download(out)
    r = out.s.post(f"{hearth.base}/{rid}/ask-access", headers=auth(out.token),
                   json={"fields": {"company": "Outside Ltd", "use": "research"}})
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    pending = list(api.list_pending_access_requests(rid))
    assert [p.username for p in pending] == [out.name]
    assert pending[0].fields == {"company": "Outside Ltd", "use": "research"}
    with pytest.raises(GatedRepoError):
        download(out)  # still pending
    # only those who may write the repo handle requests
    assert requests.get(f"{hearth.base}/api/models/{rid}/user-access-request/pending",
                        headers=auth(reader.token)).status_code == 403
    api.accept_access_request(rid, out.name)
    assert open(download(out)).read() == '{"model_type": "bert"}'
    assert [a.username for a in api.list_accepted_access_requests(rid)] == [out.name]
    api.reject_access_request(rid, out.name, rejection_reason="no")
    with pytest.raises(GatedRepoError):
        download(out)
    # asking again after a decision changes nothing
    out.s.post(f"{hearth.base}/{rid}/ask-access", headers=auth(out.token), data={"company": "x"})
    assert [a.username for a in api.list_rejected_access_requests(rid)] == [out.name]
    # granting needs no request; a browser form works too
    other = f"late{uuid.uuid4().hex[:5]}"
    hearth.create_user(other)
    late = User(hearth.base, other, hearth.create_token(other))
    api.grant_access(rid, other)
    download(late)
    with pytest.raises(Exception):
        api.grant_access(rid, other)  # already has access: 400


def test_auto_gating_accepts_at_once(hearth, org, tmp_path):
    from huggingface_hub import hf_hub_download

    name, users = org
    rid = org_repo(users["owner"], name, f"auto-{uuid.uuid4().hex[:5]}")
    users["owner"].settings(rid, gated="auto")
    out = users["outsider"]
    r = out.s.post(f"{hearth.base}/{rid}/ask-access", headers=auth(out.token), data="agree=yes",
                   params=None)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    hf_hub_download(rid, "config.json", token=out.token, cache_dir=str(tmp_path))
