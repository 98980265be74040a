"""Bad input over HTTP: 400 at creation for what can be checked at once, ERROR with a summary a
person understands for what needs the image, and never a 500 or a stack trace."""

from __future__ import annotations

import pytest

from uws_helpers import NS, assert_no_trace, create, image_job, text, wait_for


@pytest.mark.parametrize("params, words", [
    ({"MODEL": "no-such-model"}, ["no-such-model"]),
    ({"PRECISION": "fp8"}, ["PRECISION"]),
    ({"CIRCLE": "10 20"}, ["CIRCLE"]),
    ({"CIRCLE": "10 95 0.1"}, ["CIRCLE"]),
    ({"CIRCLE": "ten twenty 0.1"}, ["CIRCLE"]),
    ({"POLYGON": "1 2 3 4 5"}, ["POLYGON"]),
    ({"POS": "BOX 1 2 3 4"}, ["POS"]),
    ({"POS": "RANGE 1 2 3"}, ["RANGE"]),
    ({"PIXELS": "10 5 1 5"}, ["PIXELS"]),
    ({"PIXELS": "0 5 1 5"}, ["PIXELS"]),
    ({"CIRCLE": "0 -30 0.1", "PIXELS": "1 10 1 10"}, ["one region"]),
    ({"THRESHOLD": "high"}, ["THRESHOLD"]),
    ({"THRESHOLD": "1e400"}, ["THRESHOLD"]),
    ({"NMS": "2"}, ["NMS"]),
    ({"MIN_SIZE": "-1"}, ["MIN_SIZE"]),
    ({"HDU": "-1"}, ["HDU"]),
    ({"RESPONSEFORMAT": "pdf"}, ["RESPONSEFORMAT"]),
    ({"COLOUR": "blue"}, ["COLOUR"]),
    ({"EXECUTIONDURATION": "forever"}, ["EXECUTIONDURATION"]),
    ({"EXECUTIONDURATION": "-1"}, ["EXECUTIONDURATION"]),
    ({"DESTRUCTION": "never"}, ["DESTRUCTION"]),
    ({"PHASE": "ABORT"}, ["PHASE"]),
])
def test_bad_parameters_are_400_at_creation(standalone, params, words):
    session = standalone.session("alice")
    response = session.post(f"{standalone.url}/async", data={"IMAGE": "http://example.org/x.fits", **params},
                            allow_redirects=False)
    assert response.status_code == 400, (params, response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain")
    for word in words:
        assert word in response.text, (word, response.text)
    assert_no_trace(response)
    assert b"jobref" not in session.get(f"{standalone.url}/async").content  # no job was made


def test_malformed_fits_upload_ends_in_error(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data={"PHASE": "RUN"},
                 files={"IMAGE": ("notes.txt", b"these are my observing notes, not an image\n" * 100)})
    root = wait_for(session, url)
    assert text(root, "phase") == "ERROR"
    message = root.find("uws:errorSummary/uws:message", NS).text
    assert "not a readable FITS file" in message
    assert "Traceback" not in message and "internal error" not in message
    error = session.get(f"{url}/error")
    assert error.status_code == 200 and b'name="QUERY_STATUS"' in error.content and b'value="ERROR"' in error.content
    assert not any((standalone.context.files.job_dir(url.rsplit("/", 1)[1]) / "results").glob("*"))


@pytest.mark.parametrize("region, words", [
    ({"CIRCLE": "150 60 0.01"}, ["does not overlap"]),
    ({"PIXELS": "1000 2000 1000 2000"}, ["does not overlap", "1..256"]),
    ({"HDU": "7"}, ["HDU"]),
])
def test_what_needs_the_image_ends_in_error_with_a_clear_message(standalone, sky_fits, region, words):
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session, **region)
    root = wait_for(session, url)
    assert text(root, "phase") == "ERROR", region
    message = root.find("uws:errorSummary/uws:message", NS).text
    for word in words:
        assert word in message, (word, message)
    assert "internal error" not in message and "Traceback" not in message


def test_region_inside_the_image_completes(standalone, sky_fits):
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session, PIXELS="1 128 1 128")
    assert text(wait_for(session, url), "phase") == "COMPLETED"


GARBAGE_VALUES = ["", " ", "\t\n", "'; DROP TABLE jobs; --", "<x/>", "&amp;", "%s%s%n", "{}", "[1,2]", "nan", "inf",
                  "-inf", "1e999", "-1e999", "9" * 400, "-" + "9" * 400, "0x1F", "1,5", "ÿ\u202e\u0000", "\u00e9t\u00e9",
                  "x" * 20000]
GARBAGE_NAMES = ["MODEL", "PRECISION", "IMAGE", "HDU", "THRESHOLD", "NMS", "MIN_SIZE", "RESPONSEFORMAT", "CIRCLE",
                 "POLYGON", "POS", "PIXELS", "RUNID", "EXECUTIONDURATION", "DESTRUCTION", "PHASE", "ACTION", "WAIT",
                 "REQUEST", "", "\u00e9", "a b", "../../x"]


@pytest.fixture
def short_wait(service_settings):
    service_settings.max_wait_seconds = 0.05  # garbage WAIT values such as "inf" are valid: keep them short
    return service_settings


def test_garbage_parameters_never_give_500_or_a_trace(short_wait, standalone):
    session = standalone.session("alice")
    pending = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    targets = [(f"{standalone.url}/async", "post"), (pending, "post"), (f"{pending}/parameters", "post"),
               (f"{pending}/phase", "post"), (f"{pending}/executionduration", "post"),
               (f"{pending}/destruction", "post"), (f"{standalone.url}/async", "get")]
    statuses = set()
    for name in GARBAGE_NAMES:
        for value in GARBAGE_VALUES:
            for url, verb in targets:
                if verb == "get":
                    response = session.get(url, params={name: value})
                else:
                    response = session.post(url, data={name: value, "IMAGE": "http://example.org/x.fits"}
                                            if url.endswith("/async") and name != "IMAGE" else {name: value},
                                            allow_redirects=False)
                assert_no_trace(response)
                statuses.add(response.status_code)
    assert 400 in statuses
    # WAIT and PHASE on the job resource
    for value in GARBAGE_VALUES:
        for params in ({"WAIT": value}, {"WAIT": "0", "PHASE": value}):
            response = session.get(pending, params=params)
            assert_no_trace(response)
    # the pending job survived all of that and is still a valid job
    assert session.get(pending).status_code in (200, 404)


def test_non_utf8_and_malformed_bodies_never_give_500(standalone, sky_fits):
    session = standalone.session("alice")
    # tornado closes the connection after refusing a request before reading it (an undecodable
    # path, say), so use a fresh connection for each request
    session.headers["Connection"] = "close"
    pending = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    bodies = [
        b"IMAGE=%FF%FE", b"IMAGE=\xff\xfe\xfd", b"\xff\xfe=1", b"%FF=1", b"IMAGE", b"=", b"&&&", b"RUNID=%C3%28",
        b"THRESHOLD=%00", b"IMAGE=http://example.org/x.fits&RUNID=\xe9",
    ]
    for url in (f"{standalone.url}/async", pending, f"{pending}/parameters", f"{pending}/phase",
                f"{pending}/executionduration", f"{pending}/destruction"):
        for body in bodies:
            response = session.post(url, data=body, headers=form, allow_redirects=False)
            assert_no_trace(response)
    for query in ("PHASE=%FF", "AFTER=%FF%FE", "LAST=%FF", "%FF=1"):
        assert_no_trace(session.get(f"{standalone.url}/async?{query}"))
        assert_no_trace(session.get(f"{pending}?WAIT=0&{query}"))
    assert_no_trace(session.get(f"{standalone.url}/async/%FF%FE"))
    assert_no_trace(session.get(f"{standalone.url}/async/..%2F..%2Fetc"))
    assert_no_trace(session.get(f"{pending}/parameters/%FF"))
    assert_no_trace(session.get(f"{pending}/results/%FF"))
    # multipart oddities: a non-UTF-8 field, a non-UTF-8 file name, a broken multipart body
    response = session.post(f"{standalone.url}/async", files={"IMAGE": ("\xff\xfe.fits", sky_fits.read_bytes())},
                            data={"RUNID": b"\xff\xfe"}, allow_redirects=False)
    assert_no_trace(response)
    broken = {"Content-Type": "multipart/form-data; boundary=XYZ"}
    for body in (b"--XYZ\r\nnonsense\r\n--XYZ--\r\n", b"no boundary here", b"--XYZ\r\nContent-Disposition: form-data;"
                 b' name="IMAGE"; filename="a"\r\n\r\ndata'):
        response = session.post(f"{standalone.url}/async", data=body, headers=broken, allow_redirects=False)
        assert_no_trace(response)
    response = session.post(f"{standalone.url}/async", data=b"\x00\x01\x02", headers={"Content-Type": "application/json"},
                            allow_redirects=False)
    assert_no_trace(response)


def test_request_fields_are_bounded_and_never_echoed(standalone):
    session = standalone.session("alice")
    huge = "x" * 1_000_000
    for data in ({"RUNID": huge}, {"MODEL": huge}, {"IMAGE": huge}, {f"P{i}": "1" for i in range(100)}):
        response = session.post(f"{standalone.url}/async", data=data, allow_redirects=False)
        assert response.status_code == 400, (list(data)[:1], response.status_code)
        assert len(response.content) < 2000 and "x" * 100 not in response.text
    long_model = "y" * 1000
    response = session.post(f"{standalone.url}/async", data={"MODEL": long_model}, allow_redirects=False)
    assert response.status_code == 400 and "y" * 100 not in response.text
    assert session.get(f"{standalone.url}/async").content.count(b"jobref") == 0
