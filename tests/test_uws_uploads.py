"""Images for a job: inline multipart uploads, paths under a data root (and the refusal of
anything outside it), and http URLs fetched by the server."""

from __future__ import annotations

import os
import shutil

import pytest

from uws_helpers import NS, ImageServer, assert_valid, create, text, wait_for


@pytest.fixture
def image_server(sky_fits):
    server = ImageServer(sky_fits.read_bytes())
    yield server
    server.close()


def sources(session, url) -> bytes:
    response = session.get(f"{url}/results/result")
    assert response.status_code == 200
    return response.content


def test_multipart_upload_is_by_reference_and_served_back(standalone, sky_fits, uws_schema):
    session = standalone.session("alice")
    body = sky_fits.read_bytes()
    url = create(standalone, session, data={"MODEL": "classic", "PHASE": "RUN"},
                 files={"image": ("my sky.fits", body, "application/fits")})
    root = wait_for(session, url)
    assert text(root, "phase") == "COMPLETED"
    params = assert_valid(uws_schema, session.get(f"{url}/parameters").content)
    (image,) = [p for p in params if p.get("id") == "IMAGE"]
    assert image.get("byReference") == "true"
    assert image.text == f"{standalone.settings.root_path}async/{url.rsplit('/', 1)[1]}/parameters/IMAGE"
    served = session.get(f"{url}/parameters/IMAGE")
    assert served.status_code == 200 and served.content == body
    assert session.get(f"{url}/parameters/image").content == body
    assert standalone.session("bob").get(f"{url}/parameters/IMAGE").status_code == 404
    in_job = [p for p in root.find("uws:parameters", NS) if p.get("id") == "IMAGE"][0]
    assert in_job.get("byReference") == "true"
    assert sources(session, url).count(b"<TR>") > 0  # the simulated sky has sources


def test_upload_replaces_the_image_while_pending(standalone, sky_fits, tmp_path):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": "http://example.org/old.fits"})
    body = sky_fits.read_bytes()
    response = session.post(f"{url}/parameters", files={"IMAGE": ("sky.fits", body)}, allow_redirects=False)
    assert response.status_code == 303
    assert session.get(f"{url}/parameters/IMAGE").content == body
    session.post(f"{url}/phase", data={"PHASE": "RUN"})
    assert text(wait_for(session, url), "phase") == "COMPLETED"


def test_only_image_may_be_uploaded(standalone, sky_fits):
    session = standalone.session("alice")
    for name in ("MODEL", "HDU", "CIRCLE", "SOMETHING"):
        response = session.post(f"{standalone.url}/async", files={name: ("x", b"data")}, allow_redirects=False)
        assert response.status_code == 400, (name, response.text)
    assert len(os.listdir(standalone.context.files.root / "jobs")) == 0  # nothing left behind


def test_image_by_path_under_a_data_root(standalone, sky_fits, tmp_path):
    session = standalone.session("alice")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sky_fits, data / "field.fits")
    absolute_url = create(standalone, session, data={"IMAGE": str(data / "field.fits"), "PHASE": "RUN"})
    relative_url = create(standalone, session, data={"IMAGE": "data/field.fits", "PHASE": "RUN"})
    file_url = create(standalone, session, data={"IMAGE": f"file://{data / 'field.fits'}", "PHASE": "RUN"})
    results = []
    for url in (absolute_url, relative_url, file_url):
        assert text(wait_for(session, url), "phase") == "COMPLETED"
        results.append(sources(session, url).count(b"<TR>"))
    assert results[0] > 0 and len(set(results)) == 1
    assert session.get(f"{relative_url}/parameters/IMAGE").text == str((data / "field.fits").resolve())


def test_paths_outside_the_data_roots_are_refused(standalone, sky_fits, tmp_path):
    session = standalone.session("alice")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sky_fits, data / "field.fits")
    outside = sky_fits  # the shared (session-scoped) test image lives in another temporary directory
    assert not outside.resolve().is_relative_to(tmp_path.resolve())
    (data / "escape.fits").symlink_to(outside)
    (data / "elsewhere").symlink_to(outside.parent, target_is_directory=True)
    refused = [
        str(outside), "/etc/passwd", f"file://{outside}",
        str(data / ".." / "data" / "field.fits"), "data/../data/field.fits", "../" + outside.name,
        str(data / "escape.fits"), "data/escape.fits", f"data/elsewhere/{outside.name}",
        str(data / "missing.fits"), str(data),  # inside, but not a file
        "ftp://example.org/x.fits", "gopher://x", "http://", "http://[::1", "x" * 5000, "data/\x00.fits", "  ",
    ]
    for value in refused:
        response = session.post(f"{standalone.url}/async", data={"IMAGE": value}, allow_redirects=False)
        assert response.status_code == 400, (value, response.status_code, response.text)
        assert "Traceback" not in response.text
    assert session.get(f"{standalone.url}/async").content.count(b"jobref") == 0


def test_a_file_swapped_for_a_link_after_creation_is_not_read(standalone, sky_fits, tmp_path):
    """The data-root check holds at run time: a file or folder replaced by a link to the outside is refused."""
    session = standalone.session("alice")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    outside_dir = tmp_path.parent / f"{tmp_path.name}-outside"
    outside_dir.mkdir()
    outside = outside_dir / "secret.fits"
    shutil.copy(sky_fits, outside)
    messages = []
    for swap in ("file", "folder", "missing"):
        if (data / "sub").is_symlink():
            (data / "sub").unlink()
        (data / "sub").mkdir(exist_ok=True)
        if (data / "sub" / "field.fits").is_symlink():
            (data / "sub" / "field.fits").unlink()
        shutil.copy(sky_fits, data / "sub" / "field.fits")
        job = create(standalone, session, data={"MODEL": "classic", "IMAGE": str(data / "sub" / "field.fits")})
        if swap == "file":
            (data / "sub" / "field.fits").unlink()
            (data / "sub" / "field.fits").symlink_to(outside)
        elif swap == "folder":
            shutil.rmtree(data / "sub")
            (data / "sub").symlink_to(outside_dir, target_is_directory=True)
            outside.rename(outside_dir / "field.fits")
        else:  # a link to an outside file that does not exist
            (data / "sub" / "field.fits").unlink()
            (data / "sub" / "field.fits").symlink_to(outside_dir / "nothing.fits")
        assert session.post(f"{job}/phase", data={"PHASE": "RUN"}).status_code in (200, 303)
        root = wait_for(session, job)
        assert text(root, "phase") == "ERROR", swap
        messages.append(session.get(f"{job}/error").text)
        provenance = session.get(f"{job}/results/provenance")
        assert provenance.status_code == 404, "nothing of the outside file is recorded"
        if swap == "folder":
            (outside_dir / "field.fits").rename(outside)
    assert all("not available in the data directories" in m for m in messages), messages
    assert len(set(messages)) == 1, "existing and missing outside files read the same"
    assert str(outside_dir) not in "".join(messages)


def test_image_by_http_url(standalone, image_server, sky_fits):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": f"{image_server.url}/sky.fits", "PHASE": "RUN"})
    assert text(wait_for(session, url), "phase") == "COMPLETED"
    assert session.get(f"{url}/parameters/IMAGE").text == f"{image_server.url}/sky.fits"
    # the same sources as the uploaded file
    upload = create(standalone, session, data={"PHASE": "RUN"}, files={"IMAGE": ("sky.fits", sky_fits.read_bytes())})
    assert text(wait_for(session, upload), "phase") == "COMPLETED"
    count = sources(session, url).count(b"<TR>")
    assert count > 0 and count == sources(session, upload).count(b"<TR>")


def test_unreachable_url_ends_in_error_with_a_clear_message(standalone, image_server):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": f"{image_server.url}/missing.fits", "PHASE": "RUN"})
    root = wait_for(session, url)
    assert text(root, "phase") == "ERROR"
    message = root.find("uws:errorSummary/uws:message", NS).text
    assert "could not fetch" in message and "missing.fits" in message and "Traceback" not in message
