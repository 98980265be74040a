"""The client of one service: its models, submitting jobs, listing and finding them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urljoin, urlparse

import requests

from ._config import DEFAULT_TIMEOUT, TOKEN_ENV, URL_ENV, _first, _read_config, config_path
from ._errors import ClientError, ConfigurationError, _raise_for_status
from ._job import _NS, XLINK_NS, Job, JobSummary, ProgressCallback, _format_time, _parse_time, _text, _xml
from ._upload import _streamed_upload

_REGION_SHAPES = ("CIRCLE", "POLYGON", "RANGE", "POS")


def _region_parameter(region: str) -> tuple[str, str]:
    """SODA text ("CIRCLE ra dec r", "POLYGON ...", "RANGE ra1 ra2 dec1 dec2") -> (name, value)."""
    match = re.fullmatch(r"\s*(\w+)\s*[=\s]\s*(.+?)\s*", region, re.S)
    if not match or match.group(1).upper() not in _REGION_SHAPES:
        raise ValueError(f"region {region!r} is not SODA text: use 'CIRCLE ra dec radius', "
                         "'POLYGON ra1 dec1 ra2 dec2 ...' or 'RANGE ra1 ra2 dec1 dec2' (ICRS degrees)")
    shape, value = match.group(1).upper(), match.group(2)
    if shape == "RANGE":
        return "POS", f"RANGE {value}"
    return shape, value


def _is_reference(image: str) -> bool:
    return bool(re.match(r"(?i)https?://", image))


class Client:
    """A client of one CIANNA On-The-Fly service, standalone or inside Jupyter.

    Parameters
    ----------
    url : str, optional
        The service root (``http://host:8750``, or ``{jupyter_url}{base_url}cianna-otf``).
        Else ``$CIANNA_OTF_URL``, else ``url`` in the config file (see `config_path`).
    token : str, optional
        The API token. Else ``$CIANNA_OTF_TOKEN``, else ``token`` in the config file. None with
        a `session` that already carries an ``Authorization`` header keeps that header.
    session : requests.Session, optional
        A session to reuse (proxies, certificates, JupyterHub cookies); one is made otherwise.
    auth_scheme : str, optional
        ``Bearer`` or ``token``. Else ``auth_scheme`` in the config file, else ``token`` when the
        URL path holds ``/cianna-otf`` (Jupyter's own scheme; JupyterHub identity providers may
        accept only it) and ``Bearer`` otherwise (the standalone server accepts both).
    timeout : float
        Seconds for connecting and for ordinary responses; blocking waits add their WAIT time.
    config_file : str or Path, optional
        Another config file than the default, e.g. for tests or several services.

    Raises
    ------
    ConfigurationError
        No URL anywhere, or an unreadable config file.
    """

    def __init__(self, url: str | None = None, token: str | None = None,
                 session: requests.Session | None = None, *, auth_scheme: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, config_file: str | Path | None = None) -> None:
        path = Path(config_file) if config_file is not None else config_path()
        config = _read_config(path) if (url is None or token is None or auth_scheme is None) else {}
        url = _first(url, os.environ.get(URL_ENV), config.get("url"))
        if not url:
            raise ConfigurationError(f"no service URL: pass url=..., set ${URL_ENV}, or put url = \"...\" in {path}")
        self.url = str(url).rstrip("/")
        self.token: str | None = _first(token, os.environ.get(TOKEN_ENV), config.get("token"))
        scheme = _first(auth_scheme, config.get("auth_scheme"))
        if scheme is None:
            scheme = "token" if "/cianna-otf" in urlparse(self.url).path else "Bearer"
        self.auth_scheme = str(scheme)
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"{self.auth_scheme} {self.token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self.session.close()

    # -- HTTP -------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request; HTTP and connection errors become `ClientError` subclasses (never raw requests)."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.Timeout:
            raise ClientError(f"the service at {self.url} did not answer in time ({method} {url})", None, url) from None
        except requests.ConnectionError as exc:
            # requests nests the cause several levels deep; the errno text is what a person needs
            found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
            reason = found.group(1).strip() if found else str(exc)
            raise ClientError(f"cannot reach the service at {self.url}: {reason}", None, url) from None
        except requests.RequestException as exc:
            raise ClientError(f"{method} {url} failed: {exc}", None, url) from None
        _raise_for_status(response)
        return response

    def _job_url(self, job: str) -> str:
        if _is_reference(job):
            return job.rstrip("/")
        return f"{self.url}/async/{quote(job, safe='')}"

    # -- service ----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """The service's Prometheus metrics, as text (for dashboards and monitoring scripts)."""
        return self._request("GET", f"{self.url}/metrics").text

    def info(self) -> dict[str, Any]:
        """The service description: version, endpoints and the user the token authenticates."""
        return self._request("GET", f"{self.url}/").json()

    def models(self) -> list[dict[str, Any]]:
        """The model cards the service offers (name, description, defaults, availability)."""
        return self._request("GET", f"{self.url}/models", headers={"Accept": "application/json"}).json()["models"]

    def model(self, name: str) -> dict[str, Any]:
        """One model card; `NotFoundError` for a model the service does not have."""
        return self._request("GET", f"{self.url}/models/{quote(name, safe='')}",
                             headers={"Accept": "application/json"}).json()

    def match(self, image: str | os.PathLike | bytes | IO[bytes], hdu: int | str | None = None,
              unit: str | None = None, beam: str | None = None, upload: bool | None = None) -> dict[str, Any]:
        """Which of the service's models fits this image? (``POST /models/match``; no job is made.)

        Parameters
        ----------
        image : path, URL, bytes or binary file
            Sent as `submit` sends it: a local file (or bytes, or an open binary file) is
            uploaded; an ``http(s)://`` URL or a path that is not a local file goes by reference
            (the server reads it; paths must lie under one of its data roots). A file of FITS
            header records alone is accepted: the noise is then not measured and the noise
            checks are skipped (the answer's warnings say so).
        hdu : int or str, optional
            HDU index or EXTNAME (default: the first 2-D image, as for a job).
        unit : str, optional
            Brightness unit replacing the header's BUNIT (``"mJy/beam"``, ``"Jy/pixel"``).
        beam : str, optional
            Restoring beam replacing the header's: ``"bmaj bmin pa"`` (arcsec, arcsec, degrees).
        upload : bool, optional
            As in `submit`: False sends a path by reference even where the file is local.

        Returns
        -------
        dict
            ``{"image": {...}, "models": [...], "warnings": [...]}``: the traits the ranking used
            (``beam_pixels``, ``pixel_scale_arcsec``, ``unit``, ``noise_jy_per_beam``, ``size``,
            ``hdu``, ``header_only``), the models best fit first (``model``, ``fit`` 0-1,
            ``reason``, ``warnings``, ``notes``, ``convention``, ``zoom``, ``status``,
            ``default``), and the image reader's warnings.

        Raises
        ------
        ClientError
            With status 400 and the server's reason for an unreadable image, an unknown HDU,
            or a bad unit or beam.
        """
        data: list[tuple[str, str]] = [(key, str(value)) for key, value in
                                       (("HDU", hdu), ("UNIT", unit), ("BEAM", beam)) if value is not None]
        files = None
        if isinstance(image, (bytes, bytearray)):
            files = {"IMAGE": ("image.fits", bytes(image), "application/fits")}
        elif hasattr(image, "read"):
            files = {"IMAGE": (Path(getattr(image, "name", "image.fits")).name, image, "application/fits")}
        else:
            text = os.fspath(image)
            local = Path(text).expanduser()
            if upload is None:
                upload = not _is_reference(text) and local.is_file()
            if upload:
                if not local.is_file():
                    raise FileNotFoundError(f"cannot upload {text}: no such file here")
                files = {"IMAGE": (local.name, local.read_bytes(), "application/fits")}
            else:
                data.append(("IMAGE", text))
        response = self._request("POST", f"{self.url}/models/match", data=data, files=files,
                                 headers={"Accept": "application/json"})
        return response.json()

    def match_models(self, image: str | os.PathLike | bytes | IO[bytes], hdu: int | str | None = None,
                     unit: str | None = None, beam: str | None = None, upload: bool | None = None
                     ) -> list[dict[str, Any]]:
        """The service's models ranked for `image`, best fit first (the ``models`` of `match`).

        Each entry: ``model``, ``fit`` (0-1), ``reason`` (one sentence), ``warnings`` (what
        would make that model's catalogue doubtful on this image), ``notes``, ``convention``
        (``absolute``, ``snr`` or ``native``), ``zoom`` (model pixels per image pixel),
        ``status`` (``available`` or not) and ``default``. Parameters as in `match`.
        """
        return self.match(image, hdu=hdu, unit=unit, beam=beam, upload=upload)["models"]

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, image: str | os.PathLike | bytes | IO[bytes] | None = None, model: str | None = None,
               region: str | None = None, pixels: str | Sequence[int] | None = None,
               precision: str | None = None, threshold: float | None = None, nms: float | None = None,
               min_size: float | None = None, run: bool = True, run_id: str | None = None,
               upload: bool | None = None, upload_progress: ProgressCallback | None = None,
               **extra: Any) -> Job:
        """Create a detection job (UWS POST to ``/async``) and, by default, queue it.

        Parameters
        ----------
        image : path, URL, bytes or binary file, optional
            A local file (or bytes, or an open binary file) is uploaded as multipart form data;
            an ``http(s)://`` URL or a path that is not a local file goes by reference (the
            server reads it; paths must lie under one of its data roots).
        model : str, optional
            Model name (``Client.models``); the service's default model when None.
        region : str, optional
            Region of interest in SODA text, ICRS degrees: ``"CIRCLE ra dec radius"``,
            ``"POLYGON ra1 dec1 ra2 dec2 ..."`` or ``"RANGE ra1 ra2 dec1 dec2"``.
        pixels : str or sequence of 4 int, optional
            Region of interest in pixels ``x1 x2 y1 y2`` (FITS 1-based, inclusive).
        precision : str, optional
            ``fp32``, ``fp16`` or ``bf16``.
        threshold, nms, min_size : float, optional
            Detection knobs (defaults from the model card).
        run : bool
            Queue the job at once (``PHASE=RUN``); False leaves it PENDING for `Job.run`.
        run_id : str, optional
            A label of the caller's choosing (UWS RUNID), shown in job lists.
        upload : bool, optional
            False sends a path by reference even where the file is also visible here: on a shared
            file system the server reads a 4 GB image in place instead of receiving a copy. True
            insists on uploading (an error if the file is not local). None decides by existence.
        upload_progress : callable, optional
            ``upload_progress(sent_bytes, total_bytes)`` is called as an uploaded image goes
            out (first with 0, last with ``sent == total``, the image's size in bytes); the body
            is then streamed 1 MiB at a time instead of read whole into memory. Not called when
            the image goes by reference.
        **extra
            Further job parameters (``hdu=1``, ``responseformat="csv"``, ``executionduration``);
            names are sent upper-case, None values are left out.

        Returns
        -------
        Job
            The new job (QUEUED or later when `run`).
        """
        data: list[tuple[str, str]] = []
        files: dict[str, tuple[str, Any, str]] = {}
        if isinstance(image, (bytes, bytearray)):
            files["IMAGE"] = ("image.fits", bytes(image), "application/fits")
        elif hasattr(image, "read"):
            name = Path(getattr(image, "name", "image.fits")).name
            files["IMAGE"] = (name, image, "application/fits")
        elif image is not None:
            text = os.fspath(image)
            local = Path(text).expanduser()
            if upload is None:
                upload = not _is_reference(text) and local.is_file()
            if upload:
                if not local.is_file():
                    raise FileNotFoundError(f"cannot upload {text}: no such file here")
                files["IMAGE"] = (local.name, local if upload_progress else local.read_bytes(), "application/fits")
            else:
                data.append(("IMAGE", text))
        values: dict[str, Any] = {"MODEL": model, "PRECISION": precision, "THRESHOLD": threshold,
                                  "NMS": nms, "MIN_SIZE": min_size, "RUNID": run_id}
        if region is not None:
            name, value = _region_parameter(region)
            values[name] = value
        if pixels is not None:
            values["PIXELS"] = pixels if isinstance(pixels, str) else " ".join(str(int(p)) for p in pixels)
        for key, value in extra.items():
            values[key.upper()] = value
        data.extend((key, str(value)) for key, value in values.items() if value is not None)
        if run:
            data.append(("PHASE", "RUN"))
        if files and upload_progress is not None:
            filename, source, content_type = files["IMAGE"]
            with _streamed_upload(data, "IMAGE", filename, content_type, source, upload_progress) as stream:
                response = self._request("POST", f"{self.url}/async", data=stream,
                                         headers={"Content-Type": stream.content_type}, allow_redirects=False)
        else:
            response = self._request("POST", f"{self.url}/async", data=data, files=files or None,
                                     allow_redirects=False)
        location = response.headers.get("Location")
        if response.status_code != 303 or not location:
            raise ClientError(f"the service did not answer job creation with 303 See Other "
                              f"(got {response.status_code})", response.status_code, response.url)
        return Job(self, urljoin(response.url, location))

    def job(self, job: str) -> Job:
        """An existing job, by identifier or URL; `NotFoundError` if it does not exist (any more)."""
        return Job(self, self._job_url(job))

    def jobs(self, phase: str | Iterable[str] | None = None, after: datetime | str | None = None,
             last: int | None = None) -> list[JobSummary]:
        """The caller's jobs, newest first when `last` is given, filtered on the server.

        Parameters
        ----------
        phase : str or iterable of str, optional
            Only jobs in these phases (a union). ARCHIVED jobs appear only when asked for.
        after : datetime or str, optional
            Only jobs created after this instant (naive datetimes are taken as UTC).
        last : int, optional
            Only the `last` most recently created jobs.
        """
        params: list[tuple[str, str]] = []
        if phase is not None:
            phases = [phase] if isinstance(phase, str) else list(phase)
            params.extend(("PHASE", p.upper()) for p in phases)
        if after is not None:
            params.append(("AFTER", _format_time(after)))
        if last is not None:
            params.append(("LAST", str(int(last))))
        response = self._request("GET", f"{self.url}/async", params=params)
        root = _xml(response.content, response.url)
        summaries = []
        for ref in root.iterfind("uws:jobref", _NS):
            href = ref.get(f"{{{XLINK_NS}}}href") or f"async/{ref.get('id')}"
            summaries.append(JobSummary(
                job_id=ref.get("id") or "",
                url=urljoin(response.url, href).rstrip("/"),
                phase=(_text(ref, "phase") or "UNKNOWN").strip().upper(),
                run_id=_text(ref, "runId"),
                owner=_text(ref, "ownerId"),
                creation_time=_parse_time(_text(ref, "creationTime")),
                client=self,
            ))
        return summaries
