"""Every endpoint and verb of the standalone service, fed random and hostile requests.

A real `cianna-otf serve` process (the server users run, with its own checks of request heads)
answers requests that hypothesis draws: every route of the job service, the models and the
metrics, and paths that do not exist; GET, POST, DELETE, PUT, PATCH, HEAD, OPTIONS and verbs
no server knows; parameters in the query, in a URL-encoded form or in multipart bodies with
junk files; values that are huge (within the service's limits and past them), hold NUL and
control characters, any Unicode, numbers that are not numbers; bodies of the wrong media type.

Whatever arrives, the answer must be an answer: no 5xx, no dropped or reset connection (the
same keep-alive connection must serve the next request), no Python traceback in the body. At
the end the server must still be healthy: a plain job runs to completion and the server
counted no 5xx of its own. The default run sends about a thousand requests; the slow one ten
thousand.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import pytest
import requests
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from cianna_otf_server.testing import parse_xml, uws_text
from test_abuse_kill import RealServer
from uws_helpers import peak_rss_mb

#: Requests drawn by the default and by the slow run (each followed by a check of the connection).
FAST_EXAMPLES = 1000
LONG_EXAMPLES = 10_000
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"\n]+", line \d+')

#: Methods tornado dispatches to a handler (others are refused before any handler runs).
KNOWN_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")
UNKNOWN_METHODS = ("PROPFIND", "TRACE", "CONNECT", "FOO", "get")

JOB_RESOURCES = ("", "phase", "parameters", "results", "error", "quote", "executionduration", "destruction",
                 "owner")
PARAMETER_NAMES = ("MODEL", "PRECISION", "IMAGE", "HDU", "CIRCLE", "POLYGON", "POS", "PIXELS", "THRESHOLD",
                   "NMS", "MIN_SIZE", "UNIT", "BUNIT", "BEAM", "RESPONSEFORMAT", "RUNID", "EXECUTIONDURATION",
                   "DESTRUCTION", "PHASE", "ACTION", "WAIT", "LAST", "AFTER", "image", "hdu", "Phase", "wait",
                   "runId", "_xsrf")
HOSTILE_VALUES = (
    "", " ", "RUN", "ABORT", "DELETE", "run", "SUSPEND", "ARCHIVED", "COMPLETED", "PENDING", "QUEUED",
    "fp32", "fp16", "bf16", "int8", "votable", "csv", "fits", "ds9", "provn", "xml", "json",
    "classic", "yolo-demo", "yolo-demo-sdc1", "../../etc/passwd", "/etc/passwd", "tiny.fits", "broken.fits",
    "tiny.fits/..", "./tiny.fits", "http://127.0.0.1:1/x.fits", "https://example.org/a.fits", "file:///etc/passwd",
    "ftp://x/y", "HTTPS://", "nan", "NaN", "inf", "-inf", "+Infinity", "1e309", "-1e309", "1e-400", "-0", "0",
    "-1", "1", "0.5", "5,5", "0x10", "1_000", "١٢٣", "９", "9" * 400, "-" + "9" * 400, "1e5", "3600", "86401",
    "2026-12-31T00:00:00Z", "2026-13-45T99:99:99Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
    "+275760-09-13T00:00:00Z", "2026-01-01", "yesterday", "10 20 1", "10 -91 1", "10 20 -1", "10 20 nan",
    "1 2 3 4 5", "CIRCLE 10 20 1", "RANGE -inf +inf nan nan", "RANGE 1 2 3", "POLYGON 1 2 3 4 5 6",
    "1 64 1 64", "-Inf +Inf -Inf +Inf", "0 0 0 0", "64 1 64 1", "1.5 2 3 4", "Jy/beam", "mJy/beam", "K",
    "Jy/pixel", "erg/s", "45 45 0", "0 0 0", "-1 -1 0", "nan nan nan", "\x00", "a\x00b", "\x01\x02\x7f",
    "\r\n", "\ufeff", "\u202e", "\ud7ff", "\U0001f4a5", "é" * 100, "<uws:job/>", "]]>", "&amp;", "%00", "%",
    "${jndi:ldap://x}", "'; DROP TABLE jobs; --", "A" * 4095, "A" * 4096, "A" * 4097, "B" * 20000,
)
CONTENT_TYPES = (
    "application/json", "text/xml", "application/xml", "text/plain", "application/octet-stream", "",
    "application/x-www-form-urlencoded; charset=utf-16", "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED", "multipart/form-data; boundary=XYZ", "multipart/form-data; boundary=",
    'multipart/form-data; boundary="a b"', "multipart/form-data; boundary=" + "b" * 300, "multipart/mixed; boundary=a",
    "image/fits", "application/fits", "text/html; charset=utf-8", "*/*", ";;;", "multipart/", "form-data",
)
ACCEPTS = (None, "application/xml", "application/json", "text/plain", "*/*", "application/x-votable+xml",
           "xml, json", "image/*;q=0", "\u00e9")
FITS_START = b"SIMPLE  =                    T" + b" " * 50


def _text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any Unicode text (no lone surrogates, which no client can encode)."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


hostile_values = st.one_of(st.sampled_from(HOSTILE_VALUES), _text(),
                           st.integers(-10**30, 10**30).map(str), st.floats(allow_nan=True).map(repr),
                           st.builds(lambda c, n: c * n, st.sampled_from("x\x00é "), st.integers(0, 6000)))
#: Values a client could mean, so that many requests get past the first check and into the service.
PLAUSIBLE = {
    "MODEL": ["classic", "yolo-demo", "nothing"], "IMAGE": ["tiny.fits", "broken.fits", "missing.fits"],
    "PHASE": ["RUN", "ABORT", "run"], "RUNID": ["hold-fuzz", "fuzz"], "PRECISION": ["fp32", "fp16", "bf16"],
    "HDU": ["0", "1", "PRIMARY"], "PIXELS": ["1 32 1 32", "-Inf +Inf -Inf +Inf"], "CIRCLE": ["0 0 0.1"],
    "THRESHOLD": ["5", "0.5"], "NMS": ["0.3"], "MIN_SIZE": ["2"], "UNIT": ["mJy/beam"], "BEAM": ["10 10 0"],
    "RESPONSEFORMAT": ["votable", "csv", "fits", "ds9", "provn", "xml"], "EXECUTIONDURATION": ["60", "0"],
    "DESTRUCTION": ["2030-01-01T00:00:00Z", "2000-01-01T00:00:00Z"], "ACTION": ["DELETE"], "WAIT": ["0", "-1", "1"],
    "LAST": ["1", "5"], "AFTER": ["2020-01-01T00:00:00Z"],
}
plausible_pairs = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda name: st.tuples(st.sampled_from([name, name.lower()]), st.sampled_from(PLAUSIBLE[name])))
names = st.one_of(st.sampled_from(PARAMETER_NAMES), _text(20).filter(bool), st.just("N" * 65))
hostile_pairs = st.lists(st.one_of(plausible_pairs, plausible_pairs, st.tuples(names, hostile_values)), max_size=6)
pairs = st.one_of(st.lists(plausible_pairs, max_size=5), hostile_pairs, hostile_pairs)
many_pairs = st.lists(st.tuples(names, st.sampled_from(["1", "x"])), min_size=60, max_size=70)  # the 64 cap
junk_bytes = st.one_of(st.binary(max_size=4096), st.sampled_from([b"", FITS_START, FITS_START * 36 + b"\0" * 100,
                                                                    b"\x1f\x8b\x08\x00garbage", b"\x00" * 2880]))

#: Job ids: the pool's (one job per phase, another user's), and ones that are not ids at all.
POOL = ("pending", "held", "completed", "error", "aborted", "uploaded", "bobs")
odd_refs = st.one_of(st.sampled_from(["0" * 16, "ffffffffffffffff", ".", "..", "%00", "%2F", "%ff", "a;b", "~",
                                      "%2e%2e"]),
                     _text(30).filter(bool).map(lambda t: quote(t, safe="")),
                     st.integers(1, 3000).map(lambda n: "x" * n))
job_refs = st.one_of(st.sampled_from(POOL), st.sampled_from(POOL), st.sampled_from(POOL), odd_refs)


@dataclass
class Draw:
    """One drawn request, its job (if any) still symbolic: pool jobs are resolved when it is sent."""

    method: str
    template: str  # a path with {job} and {sub} holes
    job: str | None
    sub: str
    query: list[tuple[str, str]]
    body: str  # none | form | multipart | raw | broken-multipart
    form: list[tuple[str, str]]
    files: list[tuple[str, str, bytes]]
    raw: bytes
    content_type: str
    auth: str | None
    accept: str | None
    trailing: str
    extra_headers: dict[str, str] = field(default_factory=dict)


#: (path template, whether it holds a job, the verbs it answers); {sub} is a result, parameter or model name.
PATHS = [
    ("async/{job}", True, "GET POST DELETE"), ("async/{job}/phase", True, "GET POST"),
    ("async/{job}/parameters", True, "GET POST"), ("async/{job}/results", True, "GET"),
    ("async/{job}/error", True, "GET"), ("async/{job}/quote", True, "GET"), ("async/{job}/owner", True, "GET"),
    ("async/{job}/executionduration", True, "GET POST"), ("async/{job}/destruction", True, "GET POST"),
    ("async/{job}/results/{sub}", True, "GET"), ("async/{job}/parameters/{sub}", True, "GET"),
    ("async", False, "GET POST"), ("async", False, "POST"), ("async", False, "POST"), ("async", False, "POST"),
    ("async/{job}", True, "POST DELETE"), ("async/{job}/phase", True, "POST"), ("sync", False, "GET POST"),
    ("models", False, "GET"), ("models/match", False, "GET POST"), ("models/{sub}", False, "GET"),
    ("metrics", False, "GET"), ("", False, "GET"),
    # nothing is served there
    ("{sub}", False, "GET POST"), ("async/{job}/{sub}", True, "GET POST"),
    ("async/{job}/results/{sub}/{sub}", True, "GET"), ("models/{sub}/{sub}", False, "GET"),
    ("cianna-otf/async", False, "GET"), ("static/../async", False, "GET"),
]
SUBS = st.one_of(st.sampled_from(["result", "regions", "provenance", "votable", "IMAGE", "image", "MODEL",
                                  "RUNID", "classic", "yolo-demo", "match", "nothing", "..", "%00", "%ff",
                                  "a" * 2000]),
                 _text(20).filter(bool).map(lambda t: quote(t, safe="")))
AUTHS = ["alice"] * 16 + ["bob", None, "Bearer wrong", "Basic YWxpY2U6eA==", "token tok-alice",
                          "bearer   tok-alice  ", "Bearer", "Bearer tok-alice tok-bob", "Bearer " + "t" * 5000]


@st.composite
def draws(draw) -> Draw:
    template, has_job, verbs = draw(st.sampled_from(PATHS))
    roll = draw(st.integers(0, 19))
    if roll == 0:  # a verb no server knows
        method = draw(st.sampled_from(UNKNOWN_METHODS))
    elif roll <= 4:  # a verb this resource does not answer, or does
        method = draw(st.sampled_from(KNOWN_METHODS))
    else:
        method = draw(st.sampled_from(verbs.split()))
    body = draw(st.sampled_from(["none", "form", "form", "form", "multipart", "raw", "broken-multipart"]
                                if method != "GET" else ["none"] * 6 + ["form", "raw"]))
    files = draw(st.lists(st.tuples(st.sampled_from(["IMAGE", "image", "MODEL", "junk", "IMAGE"]),
                                    _text(30), junk_bytes), max_size=3)) if body == "multipart" else []
    form = draw(st.one_of(pairs, pairs, pairs, many_pairs)) if body in ("form", "multipart") else []
    return Draw(
        method=method, template=template, job=draw(job_refs) if has_job else None, sub=draw(SUBS),
        query=draw(pairs), body=body, form=form, files=files,
        raw=draw(junk_bytes) if body in ("raw", "broken-multipart") else b"",
        content_type=draw(st.sampled_from(CONTENT_TYPES)), auth=draw(st.sampled_from(AUTHS)),
        accept=draw(st.sampled_from(ACCEPTS)), trailing=draw(st.sampled_from(["", "", "", "/", "//", "?", "#x"])),
        extra_headers=draw(st.sampled_from([{}, {}, {}, {"X-Forwarded-Host": "evil.example"},
                                            {"Host": "evil.example:1"}, {"Expect": "100-continue"},
                                            {"Content-Encoding": "gzip"}, {"Range": "bytes=5-1"}]))
    )


def known_defect(request: Draw) -> str | None:
    """Inputs that hit a defect pinned by an xfail test, or None (none is pinned today).

    ``"closes"``: such a request is sent on a connection of its own and checked, but the
    connection is not used again.
    """
    return None


# -- the server and its jobs --------------------------------------------------------------------------
class Pool:
    """One job of each kind, made again whenever a request has changed or deleted it."""

    def __init__(self, server: RealServer, image: bytes) -> None:
        self.server = server
        self.image = image
        self.ids: dict[str, str] = {}
        self.phases: dict[str, str] = {}
        for kind in POOL:
            self.make(kind)

    def _post(self, user: str, data: dict[str, str], files=None) -> str:
        response = self.server.session(user).post(self.server.url + "/async", data=data, files=files,
                                                  allow_redirects=False, timeout=30)
        assert response.status_code == 303, (data, response.status_code, response.text)
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[1]

    def _settle(self, job_id: str, user: str = "alice") -> str:
        session = self.server.session(user)
        for _ in range(200):
            phase = session.get(f"{self.server.url}/async/{job_id}/phase", timeout=30).text.strip()
            if phase in ("COMPLETED", "ERROR", "ABORTED"):
                return phase
            time.sleep(0.05)
        raise AssertionError(f"pool job {job_id} never finished")

    def make(self, kind: str) -> None:
        tiny = {"MODEL": "classic", "IMAGE": "tiny.fits"}
        if kind == "pending":
            job, phase = self._post("alice", tiny), "PENDING"
        elif kind == "held":  # HoldingExecutor keeps it QUEUED
            job, phase = self._post("alice", {**tiny, "RUNID": "hold-pool", "PHASE": "RUN"}), "QUEUED"
        elif kind == "completed":
            job = self._post("alice", {**tiny, "PHASE": "RUN"})
            phase = self._settle(job)
        elif kind == "error":
            job = self._post("alice", {"MODEL": "classic", "IMAGE": "broken.fits", "PHASE": "RUN"})
            phase = self._settle(job)
        elif kind == "aborted":
            job = self._post("alice", tiny)
            self.server.session().post(f"{self.server.url}/async/{job}/phase", data={"PHASE": "ABORT"},
                                       allow_redirects=False, timeout=30)
            phase = "ABORTED"
        elif kind == "uploaded":
            job = self._post("alice", {"MODEL": "classic"}, files={"IMAGE": ("tiny.fits", self.image)})
            phase = "PENDING"
        else:  # another user's job: alice must never see it
            job, phase = self._post("bob", tiny), "PENDING"
        self.ids[kind], self.phases[kind] = job, phase

    def resolve(self, ref: str) -> str:
        return self.ids.get(ref, ref)

    def refresh(self, ref: str | None) -> None:
        """Make the pool job again if the last request moved it from its phase (or deleted it)."""
        if ref not in self.ids:
            return
        user = "bob" if ref == "bobs" else "alice"
        response = self.server.session(user).get(f"{self.server.url}/async/{self.ids[ref]}/phase", timeout=30)
        if response.status_code != 200 or response.text.strip() != self.phases[ref]:
            self.make(ref)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A real server with HoldingExecutor (RUNID=hold... stays QUEUED), short waits, generous queue limits."""
    from cianna_otf_server.sky.simulate import write_simulation

    root = tmp_path_factory.mktemp("fuzz-images")
    write_simulation(root / "tiny.fits", 64, seed=3)
    (root / "broken.fits").write_bytes(FITS_START + b"and nothing more")
    server = RealServer(tmp_path_factory.mktemp("fuzz") / "data", [
        "--data-root", str(root), "--executor-class", "cianna_otf_server.testing.HoldingExecutor",
        "--max-wait", "0.2", "--sync-timeout-seconds", "0.5", "--max-upload-mb", "4",
        "--max-queued-per-owner", "100000", "--max-queued-total", "100000", "--default-model", "classic",
        "--reaper-interval-seconds", "1",
    ])
    pool = Pool(server, (root / "tiny.fits").read_bytes())
    tokens = {user: token for token, user in server.tokens.items()}
    yield server, pool, tokens
    server.stop()


def _headers(request: Draw, tokens: dict[str, str]) -> dict[str, str]:
    headers = dict(request.extra_headers)
    if request.auth in tokens:
        headers["Authorization"] = f"Bearer {tokens[request.auth]}"
    elif request.auth is not None:
        headers["Authorization"] = request.auth
    if request.accept is not None:
        headers["Accept"] = request.accept
    return headers


def _query(query: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in query)


def _broken_multipart(raw: bytes) -> bytes:
    """A multipart body for the boundary XYZ with torn parts: no headers, no end, junk between."""
    parts = [b"--XYZ\r\nContent-Disposition: form-data; name=\"IMAGE\"; filename=\"a.fits\"\r\n\r\n" + raw,
             b"--XYZ\r\n\r\n" + raw[:10], b"--XYZ\r\nContent-Disposition: nonsense\r\n\r\nx\r\n",
             b"junk before" + raw[:50]]
    return b"\r\n".join(parts[: 1 + len(raw) % 4])


def send(server: RealServer, pool: Pool, tokens: dict[str, str], request: Draw,
         session: requests.Session) -> requests.Response:
    path = request.template.replace("{job}", pool.resolve(request.job or "")).replace("{sub}", request.sub)
    url = f"{server.url}/{path}{request.trailing}"
    if request.query:
        url += ("&" if "?" in url else "?") + _query(request.query)
    headers = _headers(request, tokens)
    kwargs: dict = {}
    if request.body == "form":
        kwargs["data"] = request.form
    elif request.body == "multipart":
        files = [(name, (filename, content)) for name, filename, content in request.files]
        kwargs["data"] = request.form
        kwargs["files"] = files or [("IMAGE", ("empty.fits", b""))]
    elif request.body == "raw":
        kwargs["data"] = request.raw
        headers["Content-Type"] = request.content_type
    elif request.body == "broken-multipart":
        kwargs["data"] = _broken_multipart(request.raw)
        headers["Content-Type"] = "multipart/form-data; boundary=XYZ"
    try:
        return session.request(request.method, url, headers=headers, allow_redirects=False, timeout=30, **kwargs)
    except requests.ConnectionError as exc:  # a reset, a closed socket, a server gone
        raise AssertionError(f"no answer to {request.method} {url[:300]}: {exc}") from None
    except requests.Timeout:
        raise AssertionError(f"no answer within 30 s to {request.method} {url[:300]}") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, requests.exceptions.InvalidSchema,
            UnicodeError, ValueError):
        reject()  # the client itself would not send it
    raise AssertionError("unreachable")


def check(response: requests.Response, request: Draw) -> None:
    assert response.status_code < 500, (request, response.status_code, response.text[:500])
    assert not TRACEBACK.search(response.text), (request, response.text[:2000])


def fuzz(fuzz_server, examples: int) -> None:
    server, pool, tokens = fuzz_server
    session = requests.Session()  # one keep-alive connection for everything, as a client would
    counts = {"sent": 0}
    statuses: dict[int, int] = {}
    errors_before, log_before = _server_errors(server), len(server.log())

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(draws())
    def one(request: Draw) -> None:
        defect = known_defect(request)
        if defect == "closes":
            with requests.Session() as alone:
                check(send(server, pool, tokens, request, alone), request)
            counts["sent"] += 1
            return
        response = send(server, pool, tokens, request, session)
        counts["sent"] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        event(f"status {response.status_code}")
        check(response, request)
        # the same connection serves the next request: nothing was left half-read or closed unannounced
        try:
            follow = session.get(server.url + "/", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
        except requests.RequestException as exc:
            raise AssertionError(f"the connection did not survive the request: {exc}") from None
        assert follow.status_code == 200, (request, follow.status_code, follow.text[:300])
        if request.method not in ("GET", "HEAD", "OPTIONS") or response.status_code == 404:
            pool.refresh(request.job)  # changed, deleted, or reaped after a DESTRUCTION in the past

    one()
    assert counts["sent"] >= examples * 0.9, counts
    # the draws reached the service, not only its doors: jobs were made, read, refused and missed
    assert {200, 303, 400, 404} <= set(statuses), statuses
    assert server.alive(), server.log()[-3000:]
    _assert_healthy(server)
    assert _server_errors(server) == errors_before, (errors_before, _server_errors(server))
    log = server.log()[log_before:]
    assert "Uncaught exception" not in log, log[log.index("Uncaught exception") - 200:][:4000]


def _server_errors(server: RealServer) -> dict[str, float]:
    """The server's own count of the 5xx answers it gave, by endpoint and status."""
    metrics = server.session().get(server.url + "/metrics", timeout=30).text
    found = re.findall(r'^cianna_otf_http_requests_total(\{[^}]*status="5\d\d"[^}]*\}) (\S+)$', metrics, re.M)
    return {labels: float(value) for labels, value in found}


def _assert_healthy(server: RealServer) -> None:
    """After the storm: a plain job completes with a catalogue."""
    session = server.session()
    response = session.post(server.url + "/async", data={"MODEL": "classic", "IMAGE": "tiny.fits", "PHASE": "RUN"},
                            allow_redirects=False, timeout=30)
    assert response.status_code == 303, response.text
    job_url = server.url + response.headers["Location"]
    deadline = time.monotonic() + 60
    while True:
        root = parse_xml(session.get(job_url, params={"WAIT": "5"}, timeout=30).content)
        phase = uws_text(root, "phase")
        if phase in ("COMPLETED", "ERROR", "ABORTED") or time.monotonic() > deadline:
            break
    assert phase == "COMPLETED", phase
    result = session.get(job_url + "/results/result", timeout=30)
    assert result.status_code == 200 and b"<VOTABLE" in result.content


def test_fuzz_every_endpoint(fuzz_server) -> None:
    """About a thousand hostile requests, then a healthy server."""
    fuzz(fuzz_server, FAST_EXAMPLES)


@pytest.mark.slow
def test_fuzz_every_endpoint_long(fuzz_server) -> None:
    """Ten thousand hostile requests, then a healthy server."""
    fuzz(fuzz_server, LONG_EXAMPLES)


# -- defects the fuzzer found, pinned until fixed -------------------------------------------------------
def _exchange(server: RealServer, token: str | None, head: list[str], body: bytes) -> tuple[bytes, bytes]:
    """Send one request on a raw socket (`token` None: without credentials) and read its answer, then a
    second, authenticated request on the same socket; return the two status lines (the second is
    b"<closed>" when the server closed the connection without saying so in the first answer)."""
    credentials = [f"Authorization: Bearer {token}"] if token else []
    length = [f"Content-Length: {len(body)}"] if body or not head[0].startswith(("GET", "OPTIONS")) else []
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall("\r\n".join(head + ["Host: 127.0.0.1", *credentials, *length, "", ""]).encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "no answer at all"
            data += chunk
        status, rest = data.split(b"\r\n", 1)
        head_text, _, content = rest.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head_text.split(b"\r\n") if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        while len(content) < int(fields.get(b"content-length", b"0")):
            content += sock.recv(65536)
        if fields.get(b"connection", b"").lower() == b"close":
            return status, b"<announced close>"
        try:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server_token(server)}"
                         "\r\n\r\n".encode())
            second = sock.recv(65536).split(b"\r\n", 1)[0] or b"<closed>"
        except OSError:
            second = b"<closed>"
        return status, second


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=" + "b" * 300])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_multipart_type_without_a_usable_boundary_is_a_400(fuzz_server, method, content_type) -> None:
    """No boundary, or one over 256 characters, on a POST or a GET: a 400 with the reason, and the
    connection stays usable (the form's error waits for the end of the body, like every other)."""
    server, _, tokens = fuzz_server
    body = b"x" * 100 if method == "POST" else b""
    status, second = _exchange(server, tokens["alice"], [f"{method} /async HTTP/1.1", f"Content-Type: {content_type}"],
                               body)
    assert status.startswith(b"HTTP/1.1 400"), status
    assert second in (b"HTTP/1.1 200 OK", b"<announced close>"), second


def server_token(server: RealServer) -> str:
    return next(token for token, user in server.tokens.items() if user == "alice")


@pytest.mark.parametrize("line, authenticated, body, status", [
    ("GET /async", False, b"", b"401"), ("OPTIONS /models", False, b"", b"401"), ("GET /metrics", False, b"", b"401"),
    ("PROPFIND /async", True, b"", b"405"), ("FOO /async", True, b"x" * 1000, b"405"),
    ("GET /async/%ff", True, b"", b"400"), ("POST /async/%C0%AF/phase", True, b"PHASE=RUN", b"400"),
])
def test_an_early_answer_keeps_the_connection_usable(fuzz_server, line, authenticated, body, status) -> None:
    """A 401 to GET or OPTIONS without credentials, a 405 to a method no handler serves (PROPFIND,
    FOO), a 400 to a path that is not UTF-8 once percent-decoded (/async/%ff): each is answered
    after the (small) request is read, so the client's next request on the same connection is
    served (answered before it, tornado closes the connection unannounced)."""
    server, _, tokens = fuzz_server
    first, second = _exchange(server, tokens["alice"] if authenticated else None, [f"{line} HTTP/1.1"], body)
    assert first.startswith(b"HTTP/1.1 " + status), first
    assert second in (b"HTTP/1.1 200 OK", b"<announced close>"), second


@pytest.mark.parametrize("headers", [{"Content-Type": "multipart/form-data; boundary="},
                                     {"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"}])
def test_an_unknown_path_is_a_plain_404_whatever_its_body(fuzz_server, headers) -> None:
    """Paths no route matches get the plain-text 404 even with a body tornado could not parse (an
    empty multipart boundary, Content-Encoding: gzip on plain bytes): the default handler streams
    and never parses it."""
    server, _, _ = fuzz_server
    response = requests.post(server.url + "/nothing/here", data=b"abc", headers=headers, timeout=30)
    assert (response.status_code, response.headers["Content-Type"]) == (404, "text/plain; charset=UTF-8"), \
        (response.status_code, response.text)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
def test_a_large_body_to_an_unknown_path_is_not_held_in_memory(tmp_path) -> None:
    """A large body sent to an unknown path is not read into memory: the 404 comes at once, with
    ``Connection: close`` (300 MB sent to /nothing raised the server's peak RSS by about 600 MB
    when the default handler buffered bodies)."""
    body = tmp_path / "large.bin"
    with body.open("wb") as handle:  # sparse: quick to make, 300 MB on the wire
        handle.truncate(300 * 1024 * 1024)
    server = RealServer(tmp_path / "data")  # the default upload limit, 1 GiB
    try:
        before = peak_rss_mb(server.process.pid)
        with body.open("rb") as handle:
            try:
                response = requests.post(server.url + "/nothing", data=handle, timeout=120)
            except requests.ConnectionError:
                response = None  # refused before the body was sent: nothing was held
        grown = peak_rss_mb(server.process.pid) - before
    finally:
        server.stop()
    assert response is None or response.status_code in (401, 404, 413), response.status_code
    assert grown < 50.0, f"peak RSS grew by {grown:.0f} MB for a 300 MB body to an unknown path"
