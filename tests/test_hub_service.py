"""`cianna-otf serve --auth hub` as a JupyterHub service, against a real JupyterHub.

A real hub (jupyterhub from PyPI, its proxy from npm) with the service registered as an external
service; users alice and bob get Hub API tokens from the Hub's REST API (as a notebook server's
kernel holds one); carol's token may not use the service. The test checks who may do what:
each user's jobs are theirs alone (list, read, abort, delete, guessing the URL), and a token
the Hub refuses is a 401.

Skipped where jupyterhub or configurable-http-proxy is missing, unless ``CIANNA_OTF_REQUIRE_HUB=1``
(CI; ``make install`` installs both).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REQUIRED = os.environ.get("CIANNA_OTF_REQUIRE_HUB") == "1"
ROOT = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "service-token-0123456789abcdef"
TESTER_TOKEN = "tester-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxy_command() -> str | None:
    """configurable-http-proxy: on PATH, or where `make install` puts it (.venv/hub)."""
    for candidate in (shutil.which("configurable-http-proxy"),
                      str(Path(sys.prefix) / "hub" / "node_modules" / ".bin" / "configurable-http-proxy")):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)  # the hub runs in a folder of its own
    return None


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if REQUIRED:
            pytest.fail(f"{reason} (CIANNA_OTF_REQUIRE_HUB=1)")
        pytest.skip(reason)


def _wait_for(url: str, process: subprocess.Popen, what: str, headers: dict | None = None) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{process.stdout.read() if process.stdout else ''}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{what} did not start:\n{process.stdout.read() if process.stdout else ''}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running hub and the service registered with it.

    (hub API URL, the service's own URL, tokens by user, hub process, the service's URL through the Hub's proxy)
    """
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        _need(False, "jupyterhub is not installed")
    proxy = proxy_command()
    _need(proxy is not None, "configurable-http-proxy is not installed (npm install configurable-http-proxy)")
    from cianna_otf_server.sky.simulate import write_simulation

    folder = tmp_path_factory.mktemp("hub")
    images = folder / "images"
    images.mkdir()
    write_simulation(images / "small.fits", 256, seed=6)
    hub_port, proxy_port, api_port, service_port = (_free_port() for _ in range(4))
    service_url = f"http://127.0.0.1:{service_port}"
    (folder / "jupyterhub_config.py").write_text(f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.db_url = "sqlite:///{folder}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
# users' own notebook servers, started by the Hub as local processes in homes of their own
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{folder}/home/{{username}}"
c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]  # CI runs as root
c.Spawner.environment = {{"CIANNA_OTF_URL": "http://127.0.0.1:{proxy_port}/services/cianna-otf",
                          "XDG_CONFIG_HOME": "{folder}/xdg"}}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [
    {{"name": "cianna-otf", "url": "{service_url}", "api_token": "{SERVICE_TOKEN}", "oauth_no_confirm": True}},
    {{"name": "tester", "api_token": "{TESTER_TOKEN}"}},
]
c.JupyterHub.custom_scopes = {{
    "custom:cianna-otf:admin": {{"description": "Administer the CIANNA On-The-Fly service: every user's jobs, metrics"}},
}}
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=cianna-otf"]}},
    {{"name": "cianna-otf-admin", "scopes": ["custom:cianna-otf:admin"], "users": ["dora"]}},
    # the token the Hub gives each user's server may use the service too (its kernels' jobs)
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server",
                                  "access:services!service=cianna-otf"]}},
    {{"name": "tester", "scopes": ["admin:users", "admin:servers", "tokens"], "services": ["tester"]}},
]
""")
    hub_process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(folder / "jupyterhub_config.py")],
                                   cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = f"http://127.0.0.1:{hub_port}/hub/api"
    service = None
    try:
        _wait_for(api + "/", hub_process, "JupyterHub")
        admin = {"Authorization": f"token {TESTER_TOKEN}"}
        created = requests.post(api + "/users", json={"usernames": ["alice", "bob", "carol", "dora"]}, headers=admin, timeout=10)
        assert created.status_code in (201, 409), created.text
        tokens = {}
        for user, body in (("alice", {"note": "kernel"}), ("bob", {"note": "kernel"}), ("dora", {"note": "operator"}),
                           ("carol", {"note": "no service", "scopes": ["read:users:name!user=carol"]})):
            reply = requests.post(f"{api}/users/{user}/tokens", json=body, headers=admin, timeout=10)
            assert reply.status_code == 201, reply.text
            tokens[user] = reply.json()["token"]
        env = {**os.environ, "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": api,
               "JUPYTERHUB_SERVICE_NAME": "cianna-otf", "JUPYTERHUB_SERVICE_PREFIX": "/services/cianna-otf/",
               # the OAuth client the Hub made for the service (it gives these to services it starts)
               "JUPYTERHUB_CLIENT_ID": "service-cianna-otf",
               "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/cianna-otf/oauth_callback"}
        env.pop("CIANNA_OTF_TOKEN", None)
        service = subprocess.Popen(
            [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--auth", "hub", "--port", str(service_port),
             "--data-dir", str(folder / "service"), "--data-root", str(images), "--workers", "1"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = service_url + "/services/cianna-otf"  # served at the Hub's prefix for it
        _wait_for(root + "/models", service, "cianna-otf serve --auth hub",
                  headers={"Authorization": f"token {tokens['alice']}"})
        yield api, root, tokens, hub_process, f"http://127.0.0.1:{proxy_port}/services/cianna-otf"
    finally:
        for process in (service, hub_process):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_hub_users_own_their_jobs_and_no_one_else_sees_them(hub) -> None:
    _, url, tokens, _, _ = hub
    alice, bob = requests.Session(), requests.Session()
    alice.headers["Authorization"] = f"token {tokens['alice']}"
    bob.headers["Authorization"] = f"Bearer {tokens['bob']}"  # either scheme, as clients send them

    job = alice.post(url + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30)
    assert job.status_code == 200 and "/async/" in job.url
    job_url = job.url
    job_id = job_url.rsplit("/", 1)[1]
    assert "<uws:ownerId>alice</uws:ownerId>" in alice.get(job_url, timeout=10).text
    assert job_id in alice.get(url + "/async", timeout=10).text
    theirs = bob.post(url + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30).url

    # bob: not in his list, not readable, not abortable, not deletable, by API or by guessing the URL
    assert job_id not in bob.get(url + "/async", timeout=10).text
    for method, path, data in (("get", "", None), ("get", "/phase", None), ("get", "/parameters", None),
                               ("post", "/phase", {"PHASE": "ABORT"}), ("post", "", {"ACTION": "DELETE"}),
                               ("delete", "", None)):
        reply = getattr(bob, method)(job_url + path, data=data, timeout=10, allow_redirects=False)
        assert reply.status_code in (403, 404), (method, path, reply.status_code)
    assert alice.get(job_url + "/phase", timeout=10).text.strip() == "PENDING"
    assert theirs.rsplit("/", 1)[1] not in alice.get(url + "/async", timeout=10).text

    # alice runs hers to the end
    alice.post(job_url + "/phase", data={"PHASE": "RUN"}, timeout=10)
    xml = alice.get(job_url + "?WAIT=60", timeout=90).text
    assert "<uws:phase>COMPLETED</uws:phase>" in xml or "EXECUTING" in xml or "QUEUED" in xml
    deadline = time.monotonic() + 120
    while "<uws:phase>COMPLETED" not in xml and time.monotonic() < deadline:
        xml = alice.get(job_url + "?WAIT=30", timeout=60).text
    assert "<uws:phase>COMPLETED" in xml
    assert bob.get(job_url + "/results/result", timeout=10).status_code in (403, 404)
    assert alice.get(job_url + "/results/result", timeout=10).status_code == 200


def test_tokens_the_hub_does_not_vouch_for_are_refused(hub) -> None:
    _, url, tokens, _, _ = hub
    for header in ({"Authorization": f"token {tokens['carol']}"},  # a real token without access to the service
                   {"Authorization": "token not-a-token"}, {}):
        reply = requests.get(url + "/async", headers=header, timeout=10)
        assert reply.status_code == 401, (header, reply.status_code)


def test_an_administrator_reaches_every_users_jobs_and_the_metrics(hub) -> None:
    """dora's role holds the service's admin scope: she lists, reads and aborts others' jobs; others cannot."""
    _, url, tokens, _, _ = hub
    sessions = {}
    for user in ("alice", "bob", "dora"):
        sessions[user] = requests.Session()
        sessions[user].headers["Authorization"] = f"token {tokens[user]}"
    alice_job = sessions["alice"].post(url + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30).url
    bob_job = sessions["bob"].post(url + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30).url
    dora_job = sessions["dora"].post(url + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30).url
    listed = sessions["dora"].get(url + "/async", timeout=10).text
    for job_url in (alice_job, bob_job, dora_job):
        assert job_url.rsplit("/", 1)[1] in listed
    assert "<uws:ownerId>alice</uws:ownerId>" in sessions["dora"].get(alice_job, timeout=10).text
    assert "<uws:ownerId>dora</uws:ownerId>" in sessions["dora"].get(dora_job, timeout=10).text  # hers, in her name
    reply = sessions["dora"].post(bob_job + "/phase", data={"PHASE": "ABORT"}, timeout=10)
    assert reply.status_code in (200, 303), reply.status_code
    assert sessions["bob"].get(bob_job + "/phase", timeout=10).text.strip() == "ABORTED"
    # the others stay in their own lane: no admin job for alice, no metrics for plain users
    assert dora_job.rsplit("/", 1)[1] not in sessions["alice"].get(url + "/async", timeout=10).text
    assert sessions["alice"].get(dora_job, timeout=10).status_code in (403, 404)
    assert sessions["alice"].get(url + "/metrics", timeout=10).status_code == 403
    metrics = sessions["dora"].get(url + "/metrics", timeout=10)
    assert metrics.status_code == 200 and "cianna_otf" in metrics.text
    assert sessions["dora"].delete(alice_job, timeout=10, allow_redirects=False).status_code in (200, 303)
    assert sessions["alice"].get(alice_job, timeout=10).status_code == 404


def test_a_notebook_kernel_of_a_hub_user_submits_to_the_shared_service(hub, tmp_path, monkeypatch) -> None:
    """The widget's client in a spawned server's kernel: the platform's URL, the user's own Hub token."""
    from cianna_otf_jupyter.widget import default_client
    from cianna_otf_server.sky.simulate import write_simulation

    _, url, tokens, _, _ = hub
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no client config file
    monkeypatch.delenv("CIANNA_OTF_TOKEN", raising=False)
    monkeypatch.setenv("CIANNA_OTF_URL", url)  # c.Spawner.environment on the platform
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", tokens["bob"])  # what the Hub gives bob's server
    client = default_client()
    image = tmp_path / "my-field.fits"  # a file in the user's own server: uploaded
    write_simulation(image, 200, seed=8)
    job = client.submit(str(image), model="classic")
    job.wait(timeout=120)
    assert job.phase == "COMPLETED"
    assert "<uws:ownerId>bob</uws:ownerId>" in requests.get(
        job.url, headers={"Authorization": f"token {tokens['bob']}"}, timeout=10).text
    assert requests.get(job.url, headers={"Authorization": f"token {tokens['alice']}"},
                        timeout=10).status_code in (403, 404)


def _run_in_kernel(server: str, token: str, code: str, timeout: float = 180) -> str:
    """Run `code` in a new kernel of a user's notebook server (REST, then the kernel's websocket); its output."""
    import json
    import uuid

    import websocket

    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{server}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    channel = websocket.create_connection(f"{server.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels",
                                          header=[f"Authorization: token {token}"], timeout=timeout)
    msg_id = uuid.uuid4().hex
    channel.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    output: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = json.loads(channel.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "error":
                output.append("\n".join(message["content"]["traceback"]))
            elif kind == "execute_reply":
                return "".join(output)
        raise AssertionError(f"the kernel did not answer in {timeout} s: {''.join(output)}")
    finally:
        channel.close()
        requests.delete(f"{server}/api/kernels/{kernel_id}", headers=headers, timeout=30)


def test_two_users_submit_from_the_kernels_of_their_own_spawned_servers(hub) -> None:
    """The platform as users meet it: each user's notebook server, spawned by the Hub, runs a kernel
    whose client sends a job of a local image to the shared service, with the token the Hub gave
    that server; the jobs are the users' own, and run in one service."""
    api, root, tokens, _, proxied = hub
    admin = {"Authorization": f"token {TESTER_TOKEN}"}
    hub_url = proxied.split("/services/", 1)[0]
    for user in ("alice", "bob"):
        started = requests.post(f"{api}/users/{user}/server", headers=admin, timeout=30)
        assert started.status_code in (201, 202, 400), started.text  # 400: already running
    deadline = time.monotonic() + 180
    for user in ("alice", "bob"):
        while not requests.get(f"{api}/users/{user}", headers=admin, timeout=10).json().get(
                "servers", {}).get("", {}).get("ready"):
            assert time.monotonic() < deadline, f"{user}'s server did not start"
            time.sleep(0.5)
    code = """
import os
from cianna_otf_server.sky.simulate import write_simulation
from cianna_otf_jupyter.widget import default_client
write_simulation("field.fits", 200, seed={seed})  # a file in the user's own server
job = default_client().submit("field.fits", model="classic")
job.wait(timeout=120)
print("PHASE", job.phase, "URL", job.url, "TOKEN-FROM-HUB", os.environ["JUPYTERHUB_API_TOKEN"] != "")
"""
    urls = {}
    try:
        for seed, user in enumerate(("alice", "bob")):
            out = _run_in_kernel(f"{hub_url}/user/{user}", tokens[user], code.format(seed=seed))
            assert "PHASE COMPLETED" in out and "TOKEN-FROM-HUB True" in out, out
            urls[user] = out.split("URL ", 1)[1].split()[0]
    finally:
        for user in ("alice", "bob"):
            requests.delete(f"{api}/users/{user}/server", headers=admin, timeout=60)
        deadline = time.monotonic() + 60
        for user in ("alice", "bob"):  # stopped for good: the next tests meet a quiet Hub
            while requests.get(f"{api}/users/{user}", headers=admin, timeout=10).json().get("servers"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
    for user, other in (("alice", "bob"), ("bob", "alice")):
        mine = requests.get(urls[user], headers={"Authorization": f"token {tokens[user]}"}, timeout=10)
        assert f"<uws:ownerId>{user}</uws:ownerId>" in mine.text
        assert requests.get(urls[user], headers={"Authorization": f"token {tokens[other]}"},
                            timeout=10).status_code in (403, 404)


def test_the_service_answers_through_the_hubs_proxy_at_its_prefix(hub) -> None:
    """Users reach it at https://hub/services/cianna-otf/ (JUPYTERHUB_SERVICE_PREFIX), job URLs included."""
    _, _, tokens, _, proxied = hub
    alice = requests.Session()
    alice.headers["Authorization"] = f"token {tokens['alice']}"
    models = alice.get(proxied + "/models", timeout=10)
    deadline = time.monotonic() + 60
    while models.status_code == 404 and time.monotonic() < deadline:
        # the Hub adds its services' routes to the proxy once it has started, after its API answers
        time.sleep(0.5)
        models = alice.get(proxied + "/models", timeout=10)
    assert models.status_code == 200 and "classic" in models.text, (models.status_code, models.text[:300])
    job = alice.post(proxied + "/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, timeout=30)
    assert job.status_code == 200 and job.url.startswith(proxied + "/async/")
    assert "<uws:ownerId>alice</uws:ownerId>" in job.text


def test_a_browser_logs_in_through_the_hub_and_reads_only_with_its_cookie(hub) -> None:
    """OAuth: a page asked for without credentials goes to the Hub's login and comes back logged in.

    The browser (a requests session keeping cookies, through the Hub's proxy) asks for the job
    list as HTML would; the service sends it to the Hub's OAuth authorisation, the Hub to its
    login form (the dummy authenticator takes any password), then back to the service's
    ``oauth_callback``, which sets the login cookie and returns the browser to the job list.
    The cookie reads (alice's jobs, not bob's) but cannot create a job: that needs a token.
    """
    import re

    _, root, tokens, _, proxied = hub
    alice = {"Authorization": f"token {tokens['alice']}"}
    mine = requests.post(f"{root}/async", data={"IMAGE": "small.fits", "MODEL": "classic"}, headers=alice,
                         allow_redirects=False, timeout=30)
    assert mine.status_code == 303
    mine_id = mine.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    bobs = requests.post(f"{root}/async", data={"IMAGE": "small.fits", "MODEL": "classic"},
                         headers={"Authorization": f"token {tokens['bob']}"}, allow_redirects=False, timeout=30)
    bobs_id = bobs.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    browser = requests.Session()
    browser.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"
    # an API client without credentials still gets the 401 it can act on
    assert requests.get(f"{proxied}/async", timeout=10).status_code == 401
    first = browser.get(f"{proxied}/async", allow_redirects=False, timeout=10)
    assert first.status_code == 302 and "/hub/api/oauth2/authorize" in first.headers["Location"]
    assert "client_id=service-cianna-otf" in first.headers["Location"]
    form = browser.get(f"{proxied}/async", timeout=30)  # follows on to the Hub's login form
    for _ in range(10):  # a Hub still busy with its last spawn answers 503 for a moment
        if form.status_code != 503:
            break
        time.sleep(1.0)
        form = browser.get(f"{proxied}/async", timeout=30)
    assert form.status_code == 200 and "/hub/login" in form.url, (form.status_code, form.url, form.text[:500])
    xsrf = re.search(r'name="_xsrf"[^>]*value="([^"]+)"', form.text)
    login = browser.post(form.url, data={"username": "alice", "password": "any",
                                         **({"_xsrf": xsrf.group(1)} if xsrf else {})}, timeout=30)
    assert login.status_code == 200, login.text[:500]
    assert login.url.rstrip("/").endswith("/services/cianna-otf/async")  # back where the browser began
    assert mine_id in login.text and bobs_id not in login.text  # alice's jobs, only hers
    assert browser.get(f"{proxied}/async/{mine_id}", timeout=10).status_code == 200
    assert browser.get(f"{proxied}/async/{bobs_id}", allow_redirects=False, timeout=10).status_code in (403, 404)
    # the cookie does not change anything: a cross-site form post from a logged-in browser is refused
    forged = browser.post(f"{proxied}/async", data={"IMAGE": "small.fits"}, allow_redirects=False, timeout=10)
    assert forged.status_code == 401
    deleted = browser.post(f"{proxied}/async/{mine_id}", data={"ACTION": "DELETE"}, allow_redirects=False, timeout=10)
    assert deleted.status_code == 401
    assert requests.get(f"{root}/async/{mine_id}", headers=alice, timeout=10).status_code == 200  # still there


def test_a_hub_that_cannot_be_reached_is_a_503_not_a_401(hub) -> None:
    """Runs last: it stops the hub. A token the service has not seen cannot be checked: try again later."""
    _, url, _, hub_process, _ = hub
    hub_process.terminate()
    hub_process.wait(timeout=30)
    reply = requests.get(url + "/async", headers={"Authorization": "token never-seen-before"}, timeout=30)
    assert reply.status_code == 503 and "Retry-After" in reply.headers
    assert "cannot be reached" in reply.text and "Traceback" not in reply.text
