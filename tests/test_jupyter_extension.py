"""The Jupyter server extension inside a real Jupyter server (pytest-jupyter), base_url /user/alice/.

Each test starts a Jupyter server (~1-2 s), so checks are grouped: pyvo scenarios; the end-to-end
run with provenance, hrefs, data_dir and a restart; security and configuration; and
ownership under a multi-user identity provider.
"""

from __future__ import annotations

import asyncio
import getpass
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pyvo
import requests
from jupyter_server.auth.identity import IdentityProvider, User
from lxml import etree

import pyvo_scenarios
from pyvo_scenarios import HoldingExecutor

pytest_plugins = ["pytest_jupyter.jupyter_server"]

BASE_URL = "/user/alice/"
MAX_UPLOAD = 700_000  # bytes: above the test images (256 and 384 px square, float32), below the oversized upload
UWS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}


class TokensIdentityProvider(IdentityProvider):
    """A multi-user identity provider (as JupyterHub's is): one token per named user."""

    TOKENS = {"alice-token": "alice", "bob-token": "bob"}

    def get_user(self, handler):
        scheme, _, value = handler.request.headers.get("Authorization", "").partition(" ")
        name = self.TOKENS.get(value.strip()) if scheme.lower() == "token" else None
        if name is None:
            return None
        handler._token_authenticated = True  # token clients are exempt from XSRF, as under JupyterHub
        return User(name)


@pytest.fixture
def identity_provider_class():
    """Parametrised by tests that need another identity provider; None keeps Jupyter's own."""
    return None


@pytest.fixture
def jp_server_config(tmp_path, identity_provider_class):
    config = {
        "ServerApp": {"jpserver_extensions": {"cianna_otf_jupyter": True}},
        "CiannaOTF": {
            "data_dir": str(tmp_path / "otf"),
            "max_upload_bytes": MAX_UPLOAD,
            "max_wait_seconds": 20.0,
            "executor_class": HoldingExecutor,  # a class as a trait, as jupyter-scheduler does
            "device": "cpu",
        },
    }
    if identity_provider_class is not None:
        config["ServerApp"]["identity_provider_class"] = identity_provider_class
    return config


@pytest.fixture
def jp_base_url():
    return BASE_URL


@pytest.fixture
def jp_otf(jp_serverapp, http_server, jp_http_port, jp_base_url):
    """(service root URL, token, the CiannaOTF app); ``await start(jp_otf)`` before use.

    pytest-jupyter runs async tests itself but has no async fixtures, hence the two steps.
    ``http_server`` is what makes the bound port serve.
    """
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}cianna-otf"
    (app,) = jp_serverapp.extension_manager.extension_apps["cianna_otf_jupyter"]  # one extension point
    return url, jp_serverapp.identity_provider.token, app, jp_serverapp


async def start(jp_otf):
    """Run the extensions' start hooks (the jp_serverapp fixture does not) and return (url, token, app)."""
    url, token, app, serverapp = jp_otf
    await serverapp.extension_manager.start_all_extensions()
    return url, token, app


def token_session(token: str, scheme: str = "token") -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"{scheme} {token}"
    return session


async def test_pyvo_scenarios(jp_otf, sky_fits):
    """Every pyvo scenario, as a user in another notebook runs it, against the extension."""
    url, token, _ = await start(jp_otf)
    for scenario in pyvo_scenarios.SCENARIOS:
        with token_session(token) as session:
            await asyncio.to_thread(scenario, url, session, sky_fits)


async def test_end_to_end_and_restart(jp_otf, jp_serverapp, tmp_path):
    """Simulated image -> pyvo upload to the extension -> wait -> VOTable with the true sources + PROV.

    Also: result hrefs include the base_url, the SQLite file lives in c.CiannaOTF.data_dir, and
    after the extension stops a fresh service context on the same data_dir still lists the job.
    """
    from prov.model import ProvActivity, ProvDocument

    from cianna_otf_server.sky.quality import match_catalogues
    from cianna_otf_server.server import ServiceContext
    from cianna_otf_server.sky.simulate import write_simulation
    from cianna_otf_server.uws import JobFilter, Phase

    url, token, app = await start(jp_otf)
    image = tmp_path / "simulated.fits"
    truth = write_simulation(image, 384, seed=5)

    def notebook():
        with token_session(token) as session:
            job = pyvo_scenarios.create_job(url, session, image)
            job.wait(timeout=60)
            job.raise_if_error()
            table = job.fetch_result().to_table()
            provenance = session.get(pyvo_scenarios.result_url(job, "provenance"))
            job_xml = session.get(job.url).content
            return job, table, provenance, job_xml

    job, table, provenance, job_xml = await asyncio.to_thread(notebook)
    pyvo_scenarios.check_catalogue(table)
    bright = truth[truth["snr"] >= 10] if "snr" in truth.colnames else truth
    match = match_catalogues(table, bright)
    assert len(match) >= 0.8 * len(bright), f"{len(match)} of {len(bright)} bright sources found"
    reliable = match_catalogues(table, truth)
    assert len(reliable) >= 0.8 * len(table), "most detections are true sources"

    assert provenance.status_code == 200 and provenance.headers["Content-Type"].startswith("application/json")
    document = ProvDocument.deserialize(content=provenance.text, format="json")
    (activity,) = document.get_records(ProvActivity)
    job_urls = {str(v) for k, v in activity.attributes if k.localpart == "jobUrl"}
    # the server's own address (from its configuration, not from the request), base_url included
    (recorded,) = job_urls
    assert urlsplit(recorded).path == urlsplit(job.url).path and urlsplit(recorded).port == urlsplit(job.url).port
    assert urlsplit(recorded).hostname in ("localhost", "127.0.0.1")

    tree = etree.fromstring(job_xml)
    hrefs = {r.get("id"): r.get(f"{{{UWS['xlink']}}}href") for r in tree.iterfind("uws:results/uws:result", UWS)}
    assert set(hrefs) >= {"result", "regions", "provenance"}
    for result_id, href in hrefs.items():
        assert href == f"{BASE_URL}cianna-otf/async/{job.job_id}/results/{result_id}"
    upload = tree.find("uws:parameters/uws:parameter[@id='IMAGE']", UWS)
    assert upload.get("byReference") == "true" and upload.text.startswith(f"{BASE_URL}cianna-otf/")
    assert tree.findtext("uws:ownerId", namespaces=UWS) == getpass.getuser()

    data_dir = tmp_path / "otf"
    assert app.data_dir == str(data_dir)
    assert (data_dir / "jobs.sqlite").is_file()
    assert (data_dir / "jobs" / job.job_id / "results" / "provenance.json").is_file()

    # restart: stop the extension (as the server does at shutdown), then open the same data_dir
    held = await asyncio.to_thread(_create_held_job, url, token, image)
    await jp_serverapp.extension_manager.stop_all_extensions()
    context = ServiceContext(app.service_config())
    try:
        jobs = {j.job_id: j for j in context.service.list_jobs(getpass.getuser(), JobFilter())}
        assert jobs[job.job_id].phase == Phase.COMPLETED
        stored = context.service.get(getpass.getuser(), job.job_id)
        assert {r.result_id for r in stored.results} >= {"result", "provenance"}
        assert jobs[held].phase == Phase.QUEUED  # requeued by the next start()
        path, _ = context.service.result_path(getpass.getuser(), job.job_id, "result")
        assert path.is_file()
    finally:
        context.store.close()


def _create_held_job(url: str, token: str, image: Path) -> str:
    with token_session(token) as session:
        return pyvo_scenarios.create_job(url, session, image, RUNID="hold-restart").job_id


async def test_security_configuration_and_models(jp_otf, jp_serverapp, sky_fits):
    """Extension loaded; 403 without credentials; XSRF kept for cookie-only POSTs; owner stable
    across clients; /models as JSON and XML; c.CiannaOTF.max_upload_bytes gives 413."""
    url, token, app = await start(jp_otf)
    manager = jp_serverapp.extension_manager
    assert "cianna_otf_jupyter" in manager.extensions
    assert manager.extensions["cianna_otf_jupyter"].enabled
    assert "cianna_otf_jupyter" in {name for name, ext in manager.extensions.items() if ext.enabled}
    assert app.max_upload_bytes == MAX_UPLOAD and app.context.config.max_upload_bytes == MAX_UPLOAD
    assert isinstance(app.context.executor, HoldingExecutor)
    assert app.context.root_path == f"{BASE_URL}cianna-otf/"

    def client():
        with token_session(token) as owner_session:
            job = pyvo_scenarios.create_job(url, owner_session, sky_fits, run=False)
            login_cookies = owner_session.cookies.copy()
        job_url = job.url

        # unauthenticated: 403 everywhere, and never the job's contents
        for method, target in [("GET", url), ("GET", f"{url}/async"), ("GET", job_url),
                               ("GET", f"{job_url}/parameters/IMAGE"), ("GET", f"{url}/models"),
                               ("POST", f"{url}/async"), ("POST", f"{job_url}/phase"), ("DELETE", job_url)]:
            response = requests.request(method, target, data={"PHASE": "RUN"} if method == "POST" else None,
                                        allow_redirects=False)
            assert response.status_code == 403, (method, target, response.status_code)
            assert job.job_id.encode() not in response.content and b"SIMPLE" not in response.content
            assert b"<uws:" not in response.content
        wrong = requests.get(job_url, headers={"Authorization": "token not-the-token"})
        assert wrong.status_code == 403 and b"<uws:" not in wrong.content

        # a second client (another notebook, a new session, no cookie) owns the same jobs
        with token_session(token) as other:
            assert other.get(job_url).status_code == 200
            assert job.job_id in {j.jobid for j in pyvo.dal.TAPService(url, session=other)
                                  .get_job_list()}

        # only Jupyter's login cookie, no token and no XSRF header: reading is allowed ...
        with requests.Session() as browser:
            browser.cookies.update(login_cookies)
            assert any(c.name.startswith("username-") for c in browser.cookies), list(browser.cookies)
            assert browser.get(job_url).status_code == 200
            # ... but changing anything is refused (Jupyter's XSRF protection is kept)
            refused = browser.post(f"{job_url}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
            assert refused.status_code == 403, refused.status_code
            refused = browser.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "http://example.org/a.fits"},
                                   allow_redirects=False)
            assert refused.status_code == 403
            assert browser.delete(job_url, allow_redirects=False).status_code == 403
            # with the XSRF cookie echoed in the header (what JupyterLab does) the browser may post
            xsrf = browser.get(url.rsplit("/cianna-otf", 1)[0] + "/login")
            assert "_xsrf" in browser.cookies, (xsrf.status_code, list(browser.cookies))
            if "_xsrf" in browser.cookies:
                allowed = browser.post(f"{job_url}/phase", data={"PHASE": "ABORT"},
                                       headers={"X-XSRFToken": browser.cookies["_xsrf"]}, allow_redirects=False)
                assert allowed.status_code == 303, (allowed.status_code, allowed.text)
            else:  # pragma: no cover - depends on the login page setting the cookie
                assert xsrf.status_code in (200, 302)
        # refused uploads are read before the 403, so clients see the 403, not a connection reset
        for _ in range(3):
            refused = requests.post(f"{url}/async", data={"MODEL": "classic"}, cookies=login_cookies,
                                    files={"IMAGE": ("sky.fits", sky_fits.read_bytes())}, allow_redirects=False)
            assert refused.status_code == 403 and b"_xsrf" in refused.content
            refused = requests.post(f"{url}/async", data={"MODEL": "classic"}, allow_redirects=False,
                                    files={"IMAGE": ("sky.fits", sky_fits.read_bytes())})
            assert refused.status_code == 403 and b"authentication required" in refused.content

        with token_session(token) as session:
            # the token client is unaffected by the refusals above
            assert session.get(f"{job_url}/phase").text in ("PENDING", "ABORTED")
            assert session.delete(job_url, allow_redirects=False).status_code == 303

            models = session.get(f"{url}/models")
            assert models.status_code == 200 and models.headers["Content-Type"].startswith("application/json")
            names = [m["name"] for m in models.json()["models"]]
            assert "classic" in names
            xml = session.get(f"{url}/models", headers={"Accept": "application/xml"})
            assert xml.status_code == 200 and xml.headers["Content-Type"].startswith("application/xml")
            root = etree.fromstring(xml.content)
            assert "classic" in {m.get("name") for m in root.iter("model")}
            card = session.get(f"{url}/models/classic").json()
            assert card["name"] == "classic" and card["version"]
            unknown = session.get(f"{url}/models/no-such-model")  # 404 wanted: see test_pyvo_standalone
            assert unknown.status_code in (400, 404) and "no-such-model" in unknown.text

            info = session.get(url).json()
            assert info["uws"] == f"{BASE_URL}cianna-otf/async" and info["user"] == getpass.getuser()

            before = {j.jobid for j in pyvo.dal.TAPService(url, session=session).get_job_list()}
            too_big = session.post(f"{url}/async", data={"MODEL": "classic"},
                                   files={"IMAGE": ("big.fits", b"\0" * (MAX_UPLOAD + 300_000))},
                                   allow_redirects=False)
            assert too_big.status_code == 413, too_big.status_code
            assert str(MAX_UPLOAD) in too_big.text
            after = {j.jobid for j in pyvo.dal.TAPService(url, session=session).get_job_list()}
            assert after == before, "a refused upload creates no job"

    await asyncio.to_thread(client)


@pytest.mark.parametrize("identity_provider_class", [TokensIdentityProvider])
async def test_multi_user_identity_provider(jp_otf, sky_fits):
    """Under a multi-user identity provider (JupyterHub's kind) the user name is the owner and
    users see only their own jobs."""
    url, _, _ = await start(jp_otf)

    def users():
        alice, bob = token_session("alice-token"), token_session("bob-token")
        job = pyvo_scenarios.create_job(url, alice, sky_fits, run=False)
        assert job.owner == "alice"
        assert job.job_id not in {j.jobid for j in pyvo.dal.TAPService(url, session=bob).get_job_list()}
        for target in (job.url, f"{job.url}/parameters/IMAGE", f"{job.url}/phase"):
            response = bob.get(target)
            assert response.status_code in (403, 404) and b"<uws:" not in response.content
            assert b"SIMPLE" not in response.content
        assert bob.post(f"{job.url}/phase", data={"PHASE": "RUN"}, allow_redirects=False).status_code in (403, 404)
        assert alice.get(f"{job.url}/phase").text == "PENDING"
        assert bob.get(url).json()["user"] == "bob"

    await asyncio.to_thread(users)


def test_extension_listed_by_jupyter():
    """`jupyter server extension list` shows the extension enabled and importable."""
    result = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", "list"],
                            capture_output=True, text=True, timeout=60)
    text = result.stdout + result.stderr
    line = next((l for l in text.splitlines() if "cianna_otf_jupyter" in l and "enabled" in l), None)
    assert line is not None, text
    assert "OK" in text.split("cianna_otf_jupyter", 1)[1][:400], text


async def test_models_match_is_served_by_the_extension(jp_otf, sky_fits):
    """``POST /models/match`` and ``GET /models?image=`` under the Jupyter base_url, with Jupyter's auth."""
    url, token, app = await start(jp_otf)

    def client():
        with token_session(token) as session:
            response = session.post(f"{url}/models/match", files={"IMAGE": ("sky.fits", sky_fits.read_bytes())})
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["image"]["name"] == "sky.fits" and answer["image"]["noise_measured"]
            names = [model["model"] for model in answer["models"]]
            assert "classic" in names and answer["models"][0]["fit"] >= answer["models"][-1]["fit"]
            from astropy.io import fits

            header = fits.getheader(sky_fits).tostring().encode("ascii")
            assert session.post(f"{url}/models/match", files={"IMAGE": ("h.fits", header)}).json()["image"]["header_only"]
            bad = session.post(f"{url}/models/match", files={"IMAGE": ("sky.fits", sky_fits.read_bytes())},
                               data={"HDU": "9"})
            assert bad.status_code == 400 and "HDU 9 does not exist" in bad.text
            # no data root is configured here: a path reference is refused as for a job
            refused = session.get(f"{url}/models", params={"image": str(sky_fits)})
            assert refused.status_code == 400 and "no data directories" in refused.text
            assert session.get(f"{url}").json()["models_match"] == f"{BASE_URL}cianna-otf/models/match"
        unauthenticated = requests.post(f"{url}/models/match", files={"IMAGE": ("sky.fits", b"SIMPLE")})
        assert unauthenticated.status_code == 403

    await asyncio.to_thread(client)
