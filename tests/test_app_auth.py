"""GitHub App authentication, against the emulator and real Redis (and, for the token scan, a
whole DAG run under `airflow dags test` with real Postgres).

- the emulator checks the App's JWT as GitHub does (RS256, iss, exp at most 10 min after iat)
  and answers GitHub's 401 shapes;
- installation tokens are bought, used and renewed before (or, failing that, after) they
  expire, and each installation is its own quota account (``installation:<id>``);
- App tokens may not list stargazers or watchers: App-only, those lists are recorded
  restricted and the rest complete; mixed with a collaborator's PAT, the PAT reads them;
- a revoked installation: App-only, a clear error naming it and nothing partial recorded
  complete; with a PAT beside it, the run goes on with the PAT and completes exactly;
- no installation token the emulator issued is found in Redis, XCom, logs or exception texts.
- the connection test names each installation it tried, and quotes no token or key.
"""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support import MemorySink, diff_against_truth, make_client

from github_collector.app_auth import (
    AppCredentials,
    InstallationToken,
    find_installations,
    make_jwt,
    slot_name,
)
from github_collector.collector import REL_RESTRICTED, Collector, is_finished, new_batch_state
from github_collector.errors import NoUsableToken
from github_collector.hook import parse_settings
from github_collector.queries import RELATIONS, SUMMARY, SUMMARY_INTEGRATION
from github_emulator import AppConfig, EmulatorServer, InstallationConfig, TokenConfig

pytestmark = pytest.mark.integration
APP_ID = 424242
ALL = list(RELATIONS)
# Three owners of the standard dataset (EMU_SPEC), each with the App installed.
REPOS = ["hive-2-org/cloud-ui", "hive-2-org/super-ml", "hive-1-org/awesome-linter", "lukas-0/smart-parser"]
INSTALLATIONS = {"hive-2-org": 9101, "hive-1-org": 9102, "lukas-0": 9103}
PAT = "pat-collab-0c4e1d2a9b77"


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    private, public = _pem_pair()
    other, _ = _pem_pair()
    return {"private": private, "public": public, "wrong": other}


@pytest.fixture
def app_server(emu_server_factory, keys):
    """start(tokens=[], **config) -> an emulator with the App installed on the three owners."""

    def start(tokens: list[TokenConfig] | None = None, **config) -> EmulatorServer:
        app = AppConfig(
            APP_ID,
            keys["public"],
            [InstallationConfig(iid, owner) for owner, iid in INSTALLATIONS.items()],
        )
        return emu_server_factory(tokens=tokens or [], apps=[app], **config)

    return start


def creds(keys, *ids: int) -> AppCredentials:
    return AppCredentials(str(APP_ID), keys["private"], tuple(ids))


def installations(url: str, keys, *ids: int, **kw) -> list[InstallationToken]:
    c = creds(keys, *ids)
    found, missing = find_installations(url, c, REPOS, timeout=(2, 10))
    assert missing == []
    return [InstallationToken(url, c, iid, timeout=(2, 10), backoff_base=0.01, **kw) for iid in found]


def collect(client, repos=REPOS, relations=ALL, page_size: int = 100) -> tuple[MemorySink, dict]:
    sink = MemorySink()
    state = new_batch_state(repos, relations)
    Collector(client, sink, page_size=page_size).run(state)
    return sink, state


def truth(srv: EmulatorServer, collaborator: bool) -> dict:
    ds = srv.app.ds
    return ds.truth(ALL, collaborator_repos=["*"] if collaborator else [], repos=REPOS)


def integration_pages(srv: EmulatorServer) -> list[str]:
    """Stargazer or watcher lists an App token asked for (and GitHub refused)."""
    out = []
    for e in srv.request_log():
        if not (e["token"] or "").startswith("installation-"):
            continue
        pages = [p for p in e.get("pages") or [] if p.endswith(":refused")]
        if pages or e["path"].endswith(("/stargazers", "/subscribers")):
            out.append(f"{e['token']} {e['path']} {pages}")
    return out


# --- the emulator's App endpoints ------------------------------------------------------------


def _post_token(url: str, token: str, iid: int = 9101) -> requests.Response:
    return requests.post(
        f"{url}/app/installations/{iid}/access_tokens",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
        timeout=10,
    )


def test_emulator_checks_the_jwt_as_github_does(app_server, keys):
    srv = app_server()
    now = int(time.time())

    def signed(iat: int, exp: int, key: str = keys["private"], iss: object = str(APP_ID)) -> str:
        return jwt.encode({"iat": iat, "exp": exp, "iss": iss}, key, algorithm="RS256")

    good = _post_token(srv.url, make_jwt(creds(keys)))
    assert good.status_code == 201, good.text
    body = good.json()
    assert body["token"].startswith("ghs_") and body["token"] in srv.issued_tokens
    assert body["expires_at"].endswith("Z")
    cases = {
        "expired": (signed(now - 700, now - 100), "'Expiration time' claim ('exp') must be a numeric value"),
        "too long": (signed(now - 10, now + 660), "'Expiration time' claim ('exp') is too far in the future"),
        "wrong key": (signed(now - 10, now + 500, keys["wrong"]), "A JSON web token could not be decoded"),
        "not a jwt": ("not-a-jwt", "A JSON web token could not be decoded"),
        "bad iss": (signed(now - 10, now + 500, iss="app"), "'Issuer' claim ('iss') must be an Integer"),
    }
    for name, (token, message) in cases.items():
        resp = _post_token(srv.url, token)
        assert resp.status_code == 401, name
        assert resp.json()["message"].startswith(message), (name, resp.json())
        assert resp.json()["documentation_url"].startswith("https://docs.github.com/")
    assert len(srv.issued_tokens) == 1  # no refused JWT bought anything
    # An installation token is no JWT: the App routes refuse it too.
    assert _post_token(srv.url, body["token"]).status_code == 401


def test_emulator_finds_installations_and_refuses_what_app_tokens_may_not_read(app_server, keys):
    srv = app_server()
    headers = {"Authorization": f"Bearer {make_jwt(creds(keys))}"}

    def get(path: str, h=headers) -> requests.Response:
        return requests.get(srv.url + path, headers=h, timeout=10)

    assert get("/repos/hive-2-org/super-ml/installation").json()["id"] == 9101
    assert get("/orgs/hive-1-org/installation").json()["id"] == 9102
    assert get("/users/lukas-0/installation").json()["account"]["login"] == "lukas-0"
    assert get("/repos/heidi-43/tiny-orm/installation").status_code == 404  # not installed there
    assert {i["id"] for i in get("/app/installations").json()} == set(INSTALLATIONS.values())
    token = _post_token(srv.url, make_jwt(creds(keys))).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert get("/repos/hive-2-org/super-ml", auth).status_code == 200
    for path in ("/user", "/repos/hive-2-org/super-ml/stargazers", "/repos/hive-2-org/super-ml/subscribers"):
        resp = get(path, auth)
        assert (resp.status_code, resp.json()["message"]) == (403, "Resource not accessible by integration")
    query = 'query { repository(owner: "hive-2-org", name: "super-ml") { stargazerCount %s } }'
    counts = requests.post(
        srv.url + "/graphql", json={"query": query % "watchers { totalCount }"}, headers=auth, timeout=10
    ).json()
    assert counts["data"]["repository"]["watchers"]["totalCount"] == 5  # counts still answer
    listed = requests.post(
        srv.url + "/graphql",
        json={"query": query % "stargazers(first: 5) { edges { starredAt } }"},
        headers=auth,
        timeout=10,
    ).json()
    assert listed["errors"][0]["type"] == "FORBIDDEN"
    assert listed["errors"][0]["message"] == "Resource not accessible by integration"
    # Revoked: its tokens answer 401 Bad credentials, and no new one is sold.
    srv.revoke_installation(9101)
    assert get("/rate_limit", auth).status_code == 401
    assert get("/repos/hive-2-org/super-ml", auth).json()["message"] == "Bad credentials"
    assert _post_token(srv.url, make_jwt(creds(keys))).status_code == 404
    assert get("/repos/hive-2-org/super-ml/installation").status_code == 404


def test_integration_summary_leaves_out_the_newest_star():
    assert "newestStar" in SUMMARY and "newestStar" not in SUMMARY_INTEGRATION
    assert "watcherTotal" in SUMMARY_INTEGRATION and "stargazerCount" in SUMMARY_INTEGRATION


# --- the product ---------------------------------------------------------------------------------


def test_app_only_run_records_stargazers_and_watchers_restricted_and_the_rest_complete(
    app_server, keys, redis_client, key_prefix
):
    srv = app_server()
    client = make_client(srv.url, [], redis_client, key_prefix, installations=installations(srv.url, keys))
    assert set(client.fingerprints) == {slot_name(str(APP_ID), i) for i in INSTALLATIONS.values()}
    sink, state = collect(client)
    assert is_finished(state)
    assert diff_against_truth(truth(srv, collaborator=False), sink.users, sink.links, sink.repos) == []
    for name in REPOS:
        rec = sink.repos[name]
        assert rec["relation_status"]["stargazers"] == REL_RESTRICTED, rec
        assert rec["relation_status"]["watchers"] == REL_RESTRICTED, rec
        assert {"contributors", "forkers"} <= set(rec["listed_complete"]), rec
    # Never asked: App tokens are known not to read these lists (no request GitHub would refuse).
    assert integration_pages(srv) == []
    log = srv.request_log()
    assert not [e for e in log if e["path"] == "/user"]  # GET /user answers 403 to App tokens
    # Quota per installation: each installation is its own account, in Redis and at GitHub.
    served = {e["account"] for e in log if e["cost"]}
    assert served and served <= {f"installation:{i}" for i in INSTALLATIONS.values()}
    quota_keys = {k.decode() for k in redis_client.scan_iter(match=key_prefix + "*quota:*")}
    assert any(":quota:installation:" in k for k in quota_keys), quota_keys
    for fp in client.fingerprints:
        assert client.quota.account_of(fp) == f"installation:{fp.rsplit('inst', 1)[1]}"


def test_tokens_renewed_before_and_after_expiry_mid_run_give_exact_results(
    app_server, keys, redis_client, key_prefix
):
    # Tokens live 1 s; the run takes several seconds (pages of 5, 100 ms per request).
    srv = app_server(installation_token_seconds=1.0, latency_ms=100)
    early = installations(srv.url, keys, 9101)  # renewed at 3/4 of the life, before expiry
    client = make_client(srv.url, [], redis_client, key_prefix, installations=early)
    started = time.monotonic()
    sink, state = collect(client, page_size=5)
    assert time.monotonic() - started > 3  # the run outlived several tokens
    assert is_finished(state)
    assert diff_against_truth(truth(srv, collaborator=False), sink.users, sink.links, sink.repos) == []
    assert early[0].bought >= 3, early[0].bought
    assert not [e for e in srv.request_log() if e["status"] == 401]  # renewed in time: no 401
    # No margin, and GitHub's clock 1.5 s ahead of the worker's: tokens expire while the worker
    # still thinks them good. GitHub's 401 then buys a fresh one.
    srv2 = app_server(installation_token_seconds=2.0, latency_ms=100)
    srv2.app.acc.clock = lambda: time.time() + 1.5
    late = installations(srv2.url, keys, 9101, refresh_margin=0.0)
    client2 = make_client(
        srv2.url, [], redis_client, key_prefix + "late:", installations=late, unauthorized_recheck_wait=0.01
    )
    sink2, state2 = collect(client2, page_size=5)
    assert is_finished(state2)
    assert diff_against_truth(truth(srv2, collaborator=False), sink2.users, sink2.links, sink2.repos) == []
    expired = [e for e in srv2.request_log() if e["status"] == 401]
    assert expired and late[0].bought >= 2
    assert not client2.stats.rejected_tokens  # an expired token is renewed, not retired


def test_app_and_pat_mixed_serve_one_pool_and_the_pat_reads_stargazers(
    app_server, keys, redis_client, key_prefix
):
    srv = app_server(tokens=[TokenConfig(name="collab", token=PAT, collaborator_repos=("*",))])
    client = make_client(srv.url, [PAT], redis_client, key_prefix, installations=installations(srv.url, keys))
    sink, state = collect(client)
    assert is_finished(state)
    assert diff_against_truth(truth(srv, collaborator=True), sink.users, sink.links, sink.repos) == []
    for name in REPOS:
        assert sink.repos[name]["unavailable_relations"] == [], sink.repos[name]
    log = srv.request_log()
    served_by = {
        ("app" if (e["token"] or "").startswith("installation-") else e["token"]) for e in log if e["cost"]
    }
    assert served_by == {"app", "collab"}  # both kinds spent quota for the run
    assert integration_pages(srv) == []  # the PAT alone read stargazers and watchers


def test_a_revoked_installation_app_only_fails_naming_it_and_records_nothing_partial_as_complete(
    app_server, keys, redis_client, key_prefix
):
    srv = app_server(latency_ms=5)
    insts = installations(srv.url, keys, 9102)
    client = make_client(
        srv.url, [], redis_client, key_prefix, installations=insts, unauthorized_recheck_wait=0.01
    )
    sink = MemorySink()
    state = new_batch_state(REPOS, ALL)
    collector = Collector(client, sink)

    def revoke_after(n: int) -> None:
        while srv.stats()["requests"] < n:
            time.sleep(0.005)
        srv.revoke_installation(9102)

    threading.Thread(target=revoke_after, args=(4,), daemon=True).start()
    with pytest.raises(NoUsableToken) as err:
        collector.run(state)
    assert "9102" in str(err.value) and "installation" in str(err.value)
    assert srv.issued_tokens and not [
        t for t in srv.issued_tokens if t in str(err.value) or t in repr(client)
    ]
    assert not is_finished(state)
    # What was recorded complete is complete: every list it names holds the truth's users.
    want = truth(srv, collaborator=False)
    role = {"contributors": "contributor", "forkers": "forker"}
    for name, rec in sink.repos.items():
        if rec["repo_id"] is None:
            continue
        for rel in set(rec["listed_complete"]) & set(role):
            got = {u for (r, u, x) in sink.links if r == rec["repo_id"] and x == role[rel]}
            need = {
                u
                for (r, u), v in want["repo_users"].items()
                if r == rec["repo_id"] and rel[:-1] in str(v["relations"])
            }
            assert got == need, (name, rel)


def test_a_revoked_installation_beside_a_pat_falls_back_to_the_pat(
    app_server, keys, redis_client, key_prefix, product_log
):
    srv = app_server(tokens=[TokenConfig(name="collab", token=PAT, collaborator_repos=("*",))], latency_ms=5)
    insts = installations(srv.url, keys, 9101)
    client = make_client(
        srv.url, [PAT], redis_client, key_prefix, installations=insts, unauthorized_recheck_wait=0.01
    )

    def revoke_after(n: int) -> None:
        while srv.stats()["requests"] < n:
            time.sleep(0.005)
        srv.revoke_installation(9101)

    threading.Thread(target=revoke_after, args=(6,), daemon=True).start()
    sink, state = collect(client)
    assert is_finished(state)
    assert diff_against_truth(truth(srv, collaborator=True), sink.users, sink.links, sink.repos) == []
    assert slot_name(str(APP_ID), 9101) in client.unavailable_installations
    assert "installation 9101 is unavailable" in product_log.text
    issued = srv.issued_tokens
    assert issued and not [t for t in issued if t in product_log.text or t in json.dumps(sink.states)]


@pytest.mark.unit
def test_app_extras_are_read_checked_and_never_quoted(keys):
    pem = keys["private"]
    s = parse_settings("https://api.github.com", None, {"app_id": "12", "private_key": pem})
    assert s["tokens"] == [] and s["app"].app_id == "12" and s["app"].installation_ids == ()
    one_line = pem.replace("\n", "\\n")  # pasted as one line
    s = parse_settings(
        "https://api.github.com", "tok", {"app_id": 12, "private_key": one_line, "installation_id": "5, 6"}
    )
    assert s["app"].private_key == pem.strip() and s["app"].installation_ids == (5, 6)
    assert "BEGIN" not in repr(s["app"])
    bad = {
        "app_id": ({"private_key": pem}, "'app_id'"),
        "private_key": ({"app_id": "12"}, "'private_key'"),
        "pem": ({"app_id": "12", "private_key": "nope-secret"}, "not a PEM"),
        "id": ({"app_id": "12", "private_key": pem, "installation_id": "x7"}, "'x7'"),
        "app id": ({"app_id": "twelve", "private_key": pem}, "'twelve'"),
    }
    from github_collector.errors import ConfigError

    for name, (extra, named) in bad.items():
        with pytest.raises(ConfigError, match=named) as err:
            parse_settings("https://api.github.com", None, extra)
        assert "PRIVATE KEY" not in str(err.value) and "nope-secret" not in str(err.value), name


# --- the token scan: a whole DAG run with an App and a PAT, one installation revoked ----------


def test_no_installation_token_in_redis_xcom_logs_or_postgres(
    tmp_path, app_server, keys, fresh_db, key_prefix, redis_client, figure
):
    from e2e_harness import airflow_env, dags_test, migrate
    from test_faults_secrets import _postgres_dump, _redis_dump

    srv = app_server(
        tokens=[TokenConfig(name="collab", token=PAT, collaborator_repos=("*",))],
        installation_token_seconds=4,
        latency_ms=5,
    )
    home = tmp_path / "airflow"
    env = airflow_env(home, github_url=srv.url, tokens=[PAT], pg_db=fresh_db[0], prefix=key_prefix)
    env["AIRFLOW_CONN_GITHUB_DEFAULT"] = json.dumps(
        {
            "conn_type": "github_repo_users",
            "host": srv.url,
            "password": PAT,
            "extra": {"reserve": 0, "app_id": str(APP_ID), "private_key": keys["private"]},
        }
    )
    migrate(env)

    def revoke_after(n: int) -> None:
        while len(srv.issued_tokens) < n:
            time.sleep(0.01)
        srv.revoke_installation(9103)

    threading.Thread(target=revoke_after, args=(6,), daemon=True).start()
    proc = dags_test(env, {"repositories": REPOS, "batch_size": 2})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    issued = srv.issued_tokens
    assert len(issued) >= 6  # bought by the plan and fetch tasks, renewed as they expired
    served = [e for e in srv.request_log() if (e["token"] or "").startswith("installation-") and e["cost"]]
    assert served, "no App token served the run: the scan would prove nothing"

    def hits(blob: bytes, where: str) -> list[str]:
        return [
            f"token #{i} in {where}"
            for i, t in enumerate(issued)
            if t.encode() in blob or t[-12:].encode() in blob
        ]

    found = hits((proc.stdout + proc.stderr).encode(), "console")
    files = [p for p in home.rglob("*") if p.is_file()]
    for path in files:  # task logs and the metadata database (XComs, rendered fields...)
        found += hits(path.read_bytes(), str(path.relative_to(home)))
    n_keys, redis_blob = _redis_dump(redis_client, key_prefix)
    found += hits(redis_blob, "Redis")
    n_rows, pg_blob = _postgres_dump(fresh_db[1])
    found += hits(pg_blob, "Postgres")
    assert n_keys > 0 and n_rows > 50 and any(p.suffix == ".db" for p in files)
    assert found == []
    figure("app token scan", issued=len(issued), redis_keys=n_keys, airflow_files=len(files), hits=len(found))


# --- the Airflow UI's connection test with an App ---------------------------------------------


def test_connection_test_with_an_app_names_each_installation_and_quotes_no_secret(
    app_server, keys, monkeypatch
):
    from github_collector.hook import GitHubHook

    srv = app_server()
    conn = {
        "conn_type": "github_repo_users",
        "host": srv.url,
        "extra": {"app_id": str(APP_ID), "private_key": keys["private"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_APP_CONN_TEST", json.dumps(conn))
    ok, message = GitHubHook("app_conn_test").test_connection()
    assert ok is True, message
    assert "3 of 3 token(s) or App installation(s) work" in message
    for iid in INSTALLATIONS.values():
        assert slot_name(str(APP_ID), iid) in message

    srv.revoke_installation(9102)
    # found by listing the App's installations: an uninstalled one is no longer listed
    ok, message = GitHubHook("app_conn_test").test_connection()
    assert ok is True and "2 of 2" in message, message
    assert slot_name(str(APP_ID), 9102) not in message
    # configured by id: the one GitHub no longer serves is named
    conn["extra"]["installation_id"] = "9101, 9102"
    monkeypatch.setenv("AIRFLOW_CONN_APP_CONN_TEST", json.dumps(conn))
    ok, message = GitHubHook("app_conn_test").test_connection()
    assert ok is False, message
    assert "1 of 2" in message and slot_name(str(APP_ID), 9102) in message
    del conn["extra"]["installation_id"]

    conn["extra"]["private_key"] = keys["wrong"]  # a key GitHub does not know for this App
    monkeypatch.setenv("AIRFLOW_CONN_APP_CONN_TEST", json.dumps(conn))
    ok, message = GitHubHook("app_conn_test").test_connection()
    assert ok is False and f"GitHub App {APP_ID}" in message, message

    issued = srv.issued_tokens
    assert issued and not [t for t in issued if t in message]
    assert "PRIVATE KEY" not in message
