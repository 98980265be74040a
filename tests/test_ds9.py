"""DS9's Analysis menu: ``cianna-otf ds9-analysis`` / ``ds9-run`` and `cianna_otf_server.viewers`.

The unit tests need nothing but Python. The end-to-end test drives the real SAOImage DS9
(Debian's saods9) on a virtual X display (Xvfb) over XPA (xpa-tools): it loads a simulated sky,
draws a circle, runs our Analysis menu entries by their menu index (XPA ``analysis task N``,
exactly what a click does) and reads back the regions DS9 then holds. It skips where DS9,
Xvfb or xpa-tools are missing, unless CIANNA_OTF_REQUIRE_DS9 is set (then it fails).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cianna_otf_server.cli as cli
from cianna_otf_server.errors import RegionError, UserInputError
from cianna_otf_server.viewers import (
    RESULT_TAG,
    analysis_file_text,
    choose_region,
    ds9_to_soda,
    image_reference,
    parse_analysis_file,
    parse_ds9_regions,
    shape_to_soda,
    tag_regions,
)
from cianna_otf_server.viewers._ds9 import REGION_TITLE, WHOLE_IMAGE_TITLE


def _numbers(soda: str) -> tuple[str, list[float]]:
    shape, *values = soda.split()
    return shape, [float(v) for v in values]


def _separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees."""
    a1, d1, a2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(a1 - a2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


# ---------------------------------------------------------------- region conversion


def test_circle_in_degrees_with_arcsec_radius():
    assert ds9_to_soda('icrs;circle(150.5,2.25,36.000")') == "CIRCLE 150.5 2.25 0.01"


@pytest.mark.parametrize("size, degrees", [('36"', 0.01), ("0.6'", 0.01), ("0.01d", 0.01), ("0.01", 0.01)])
def test_circle_radius_units(size, degrees):
    shape, values = _numbers(ds9_to_soda(f"icrs;circle(10,-5,{size})"))
    assert shape == "CIRCLE" and values[:2] == [10, -5]
    assert values[2] == pytest.approx(degrees)


def test_region_file_form_with_header_and_properties():
    text = ("# Region file format: DS9 version 4.1\n"
            'global color=green dashlist=8 3 width=1 font="helvetica 10 normal roman" select=1\n'
            "icrs\n"
            'circle(0.0000000,-30.0000000,36.000") # color=red text={mine}\n')
    assert ds9_to_soda(text) == "CIRCLE 0 -30 0.01"


def test_sexagesimal_coordinates():
    # $regions(ds9,icrs,sexagesimal): RA in hours
    soda = ds9_to_soda('icrs;circle(10:00:00.000,-30:30:00.00,36")')
    assert soda == "CIRCLE 150 -30.5 0.01"
    shape, values = _numbers(ds9_to_soda('icrs;circle(1h30m00s,+2d15m00s,1\')'))
    assert values == pytest.approx([22.5, 2.25, 1 / 60])
    assert ds9_to_soda('icrs;circle(0:00:00,-00:30:00,36")') == "CIRCLE 0 -0.5 0.01"


def test_polygon_keeps_its_vertices():
    soda = ds9_to_soda("icrs;polygon(10,20,10.1,20,10.1,20.1,10,20.1)")
    assert soda == "POLYGON 10 20 10.1 20 10.1 20.1 10 20.1"


def test_polygon_across_ra_zero_stays_in_range():
    shape, values = _numbers(ds9_to_soda("icrs;polygon(359.99,-30,0.01,-30,0.0,-29.99)"))
    assert values == [359.99, -30, 0.01, -30, 0, -29.99]


def test_box_without_rotation_is_its_corners():
    shape, values = _numbers(ds9_to_soda('icrs;box(0,0,72",36")'))
    assert shape == "POLYGON" and len(values) == 8
    ras, decs = values[0::2], values[1::2]
    assert sorted({round(d, 6) for d in decs}) == [-0.005, 0.005]
    assert sorted({round((r + 180) % 360 - 180, 6) for r in ras}) == [-0.01, 0.01]


def test_box_rotation_turns_from_the_ra_axis_towards_north():
    # angle 90: the first side (width) lies north-south
    shape, values = _numbers(ds9_to_soda('icrs;box(0,0,72",36",90)'))
    ras = [round((r + 180) % 360 - 180, 6) for r in values[0::2]]
    decs = [round(d, 6) for d in values[1::2]]
    assert sorted(set(ras)) == [-0.005, 0.005] and sorted(set(decs)) == [-0.01, 0.01]


def test_box_rotated_30_degrees_matches_ds9s_corners():
    """Corners of DS9 8.4's own drawing of this box (its image coordinates through the image WCS)."""
    shape, values = _numbers(ds9_to_soda('icrs;box(0.005,-30.005,40",20",30)'))
    expected = [0.008952, -30.010183, 359.99784, -30.004628, 0.001048, -29.999817, 0.01216, -30.005372]
    assert values == pytest.approx(expected, abs=2e-6)


def test_box_sizes_follow_the_sky_at_high_declination():
    shape, values = _numbers(ds9_to_soda('icrs;box(10,60,36",36")'))
    # an east-west side of 36" spans 36"/cos(60) = 72" of right ascension
    assert max(values[0::2]) - min(values[0::2]) == pytest.approx(0.01 / math.cos(math.radians(60)), rel=1e-3)


def test_ellipse_becomes_a_polygon_inside_its_bounds():
    shape, values = _numbers(ds9_to_soda('icrs;ellipse(0,0,36",18",0)'))
    assert shape == "POLYGON" and len(values) == 2 * 36
    distances = [_separation(0, 0, r, d) * 3600 for r, d in zip(values[0::2], values[1::2])]
    assert max(distances) == pytest.approx(36, rel=1e-4) and min(distances) == pytest.approx(18, rel=1e-4)


def test_fk5_and_galactic_are_converted_to_icrs():
    shape, values = _numbers(ds9_to_soda('fk5;circle(150,2,36")'))
    assert values[:2] == pytest.approx([150, 2], abs=1e-4)  # FK5 J2000 and ICRS differ by ~20 mas
    shape, values = _numbers(ds9_to_soda('galactic;circle(0,0,36")'))
    assert values[:2] == pytest.approx([266.405, -28.936], abs=1e-3)  # the Galactic centre


def test_several_regions_are_refused_unless_one_is_selected():
    text = 'icrs;circle(10,10,36");box(10.1,10,36",36",0)'
    with pytest.raises(RegionError, match="2 regions"):
        ds9_to_soda(text)
    assert ds9_to_soda(text, selected='icrs;box(10.1,10,36",36",0)').startswith("POLYGON")
    with pytest.raises(RegionError, match="2 regions are selected"):
        ds9_to_soda(text, selected=text)


def test_detections_loaded_back_do_not_count_as_the_region():
    text = ('icrs\ncircle(10,10,36")\n'
            f"ellipse(10,10,2\",1\",0) # text={{1}} tag={{{RESULT_TAG}}}\n"
            f"ellipse(10.001,10,2\",1\",0) # tag={{{RESULT_TAG}}} color=red\n")
    assert choose_region(text).name == "circle"


def test_exclusions_points_and_text_are_not_regions():
    text = 'icrs;-circle(10,10,1");point(10,10) # point=cross;# text(10,10) text={hi};circle(10,10,36")'
    assert ds9_to_soda(text) == "CIRCLE 10 10 0.01"


def test_no_region_is_a_clear_error():
    with pytest.raises(RegionError, match="draw a circle, box, ellipse or polygon"):
        ds9_to_soda("")
    with pytest.raises(RegionError, match="point regions do not enclose"):
        ds9_to_soda("icrs;point(10,10)")


@pytest.mark.parametrize("text, message", [
    ("image;circle(100,100,20)", "image coordinates"),
    ("physical;box(100,100,20,20,0)", "physical coordinates"),
    ('icrs;annulus(10,10,10",20")', "annulus regions cannot"),
    ('icrs;box(10,10,10",20",30",40",0)', "annuli are not supported"),
    ("icrs;circle(10,10,5i)", "cannot read the size"),
    ("icrs;circle(10,95,1)", "outside"),
    ("icrs;polygon(10,10,11,11)", "at least 3 vertices"),
])
def test_unusable_shapes_are_refused_with_a_reason(text, message):
    shapes = parse_ds9_regions(text)
    assert len(shapes) == 1
    with pytest.raises(RegionError, match=message):
        shape_to_soda(shapes[0])


def test_soda_text_is_accepted_by_the_job_parameters():
    from cianna_otf_server.jobs._parameters import check_region_syntax, region_parameter

    for text in ('icrs;circle(0,-30,36")', 'icrs;box(0,-30,40",20",30)', 'icrs;ellipse(0,-30,40",20",30)'):
        key, value = region_parameter(ds9_to_soda(text))
        check_region_syntax(key, value)


def test_tag_regions_marks_every_shape_and_nothing_else():
    document = ("# Region file: 2 sources from cianna-otf, model classic\nglobal color=green\nicrs\n"
                "ellipse(0.00225,-29.995,0.0009,0.0008,66.0) # text={1}\n"
                "ellipse(0.0085,-30.0047,0.0002,0.0001,100.4)\n")
    tagged = tag_regions(document)
    shapes = parse_ds9_regions(tagged)
    assert len(shapes) == 2 and all(s.tags == (RESULT_TAG,) for s in shapes)
    assert "text={1} tag={cianna-otf}" in tagged
    assert tagged.splitlines()[:3] == document.splitlines()[:3]


def test_image_reference(tmp_path):
    image = tmp_path / "sky.fits"
    image.write_bytes(b"")
    assert image_reference(str(image)) == (str(image), None)
    assert image_reference(f"{image}[2]") == (str(image), "2")
    assert image_reference("https://example.org/a.fits") == ("https://example.org/a.fits", None)
    with pytest.raises(UserInputError, match="no image"):
        image_reference("")
    with pytest.raises(UserInputError, match="not a file on this computer"):
        image_reference(str(tmp_path / "stdin.fits"))


# ---------------------------------------------------------------- the analysis file


def test_analysis_file_has_our_two_menu_entries():
    text = analysis_file_text(["/opt/venv/bin/cianna-otf"], url="http://127.0.0.1:8750", token="tok-alice",
                              model="classic")
    entries = parse_analysis_file(text)
    assert [e.title for e in entries] == [WHOLE_IMAGE_TITLE, REGION_TITLE]
    for entry in entries:
        assert (entry.template, entry.kind) == ("*", "menu")
        assert entry.command.startswith("/opt/venv/bin/cianna-otf ds9-run ")
        assert entry.command.endswith("| $text")
        for word in ('--image "$filename"', '--xpa "$xpa_method"', "--url http://127.0.0.1:8750",
                     "--token tok-alice", "--model classic"):
            assert word in entry.command
    assert "--regions" not in entries[0].command
    assert '--regions "$regions(ds9,icrs,degrees)"' in entries[1].command


def test_analysis_file_command_splits_as_tcl_splits_it():
    """DS9 opens '| COMMAND' as a Tcl list after expanding its macros: check the words it gets."""
    tkinter = pytest.importorskip("tkinter")
    text = analysis_file_text(["/path with space/cianna-otf"], token="a b$c", url="http://h:1/x?y=1&z=2")
    command = parse_analysis_file(text)[1].command
    # what DS9 does: macros, '$$' -> '$', drop '| $text', quote '"' in region text as \"
    expanded = (command.replace("$xpa_method", "7f000001:4242").replace("$filename", "/data/my sky.fits")
                .replace("$regions(ds9,icrs,degrees)", 'icrs;circle(0,-30,36.000\\")')
                .replace("$$", "$").replace("| $text", ""))
    words = list(tkinter.Tcl().splitlist(expanded))
    assert words == ["/path with space/cianna-otf", "ds9-run", "--xpa", "7f000001:4242", "--image",
                     "/data/my sky.fits", "--regions", 'icrs;circle(0,-30,36.000")', "--url",
                     "http://h:1/x?y=1&z=2", "--token", "a b$c"]


def test_analysis_file_refuses_what_ds9_would_cut():
    with pytest.raises(UserInputError, match="'#'"):
        analysis_file_text(["cianna-otf"], token="abc#def")


def test_cli_prints_the_analysis_file(capsys):
    assert cli.main(["ds9-analysis", "--url", "http://127.0.0.1:9", "--model", "classic"]) == 0
    entries = parse_analysis_file(capsys.readouterr().out)
    assert len(entries) == 2 and "ds9-run" in entries[0].command
    program = entries[0].command.split(" ds9-run", 1)[0]
    assert Path(program).is_absolute() or program.startswith(sys.executable)


def test_cli_install_writes_a_private_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["ds9-analysis", "--install", "--url", "http://127.0.0.1:9", "--token", "secret"]) == 0
    target = tmp_path / ".ds9" / "cianna-otf.ds9.ans"
    assert "--token secret" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    err = capsys.readouterr().err
    assert str(target) in err and "Load Analysis Commands" in err and f"ds9 -analysis {target}" in err
    other = tmp_path / "other.ans"
    assert cli.main(["ds9-analysis", "--output", str(other)]) == 0
    assert len(parse_analysis_file(other.read_text())) == 2


def test_cli_run_errors_are_one_line_and_shown_in_ds9(tmp_path, capsys):
    image = tmp_path / "sky.fits"
    image.write_bytes(b"")
    code = cli.main(["ds9-run", "--image", str(image), "--regions", "", "--xpa", "none",
                     "--url", "http://127.0.0.1:9"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith("CIANNA OTF error: no region to detect in")
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("cianna-otf: error:")


def test_cli_run_unreachable_service(tmp_path, capsys):
    image = tmp_path / "sky.fits"
    image.write_bytes(b"")
    code = cli.main(["ds9-run", "--image", str(image), "--xpa", "none", "--url", "http://127.0.0.1:9"])
    captured = capsys.readouterr()
    assert code == 1
    assert "CIANNA OTF error:" in captured.out and "Traceback" not in captured.out + captured.err
    assert len(captured.err.strip().splitlines()) == 1


@pytest.fixture
def service(tmp_path):
    """The standalone service in-process (over real HTTP), the way DS9's child process reaches it."""
    from cianna_otf_server.server import ServiceConfig
    from cianna_otf_server.testing import ServiceThread

    service = ServiceThread(ServiceConfig(data_dir=tmp_path / "service", reaper_interval_seconds=0.5,
                                          max_wait_seconds=30.0))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def sky(tmp_path_factory) -> Path:
    from cianna_otf_server.sky.simulate import write_simulation

    path = tmp_path_factory.mktemp("ds9sky") / "sky.fits"
    write_simulation(path, 256, seed=11)
    return path


def test_cli_run_print_mode_against_the_service(service, sky, capsys):
    code = cli.main(["ds9-run", "--image", str(sky), "--regions", 'icrs;circle(0,-30,36")', "--print",
                     "--url", service.url, "--token", "tok-alice", "--model", "classic"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    shapes = parse_ds9_regions(captured.out)
    assert shapes and all(RESULT_TAG in s.tags for s in shapes)
    assert "CIRCLE 0 -30 0.01" in captured.err


def test_without_xpa_nor_samp_hub_loading_fails_with_both_reasons(tmp_path, monkeypatch):
    from cianna_otf_server.viewers import Ds9LinkError, load_regions

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SAMP_HUB", raising=False)
    with pytest.raises(Ds9LinkError, match="DS9 has XPA off.*no SAMP hub is running"):
        load_regions("icrs\n", "none", tmp_path / "r.reg")


def test_without_xpa_the_regions_go_to_ds9_over_samp(tmp_path, monkeypatch):
    """A real SAMP hub in-process and a SAMP client taking ds9.set, as DS9 does."""
    import queue

    from cianna_otf_server.samp import samp_module
    from cianna_otf_server.samp._api import offline
    from cianna_otf_server.viewers import load_regions

    samp = samp_module()
    lockfile = tmp_path / "samp.lock"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lockfile.as_uri()}")
    received: queue.Queue = queue.Queue()
    with offline():
        hub = samp.SAMPHubServer(lockfile=str(lockfile), web_profile=False, addr="127.0.0.1")
    hub.start(wait=False)
    viewer = None
    try:
        with offline():
            viewer = samp.SAMPIntegratedClient(name="ds9", addr="127.0.0.1")
            viewer.connect(hub_params=hub.params)
        viewer.bind_receive_notification("ds9.set", lambda *args: received.put(dict(args[4])))
        path = tmp_path / "my regions.reg"
        assert load_regions("icrs\n", "none", path) == "loaded into 1 DS9 over SAMP"
        assert received.get(timeout=30) == {"cmd": f"regions load {{{path}}}"}
    finally:
        if viewer is not None and viewer.is_connected:
            viewer.disconnect()
        hub.stop()


# ---------------------------------------------------------------- the real DS9


@pytest.fixture
def ds9_tools() -> None:
    """Skip (or, with CIANNA_OTF_REQUIRE_DS9 set, fail) where DS9, Xvfb or xpa-tools is missing."""
    missing = [tool for tool in ("ds9", "Xvfb", "xpaset", "xpaget", "xpans") if shutil.which(tool) is None]
    if missing:
        message = (f"needs SAOImage DS9, Xvfb and xpa-tools ({', '.join(missing)} not found; "
                   "apt-get install saods9 xvfb xpa-tools, or 'make install')")
        if os.environ.get("CIANNA_OTF_REQUIRE_DS9"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port_pair() -> int:
    """A port P with P and P+1 free on loopback (xpans listens on both)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("0.0.0.0", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class _Ds9:
    """A DS9 on its own Xvfb display and its own XPA name server, driven over XPA."""

    def __init__(self, workdir: Path) -> None:
        self.name = f"cotftest{os.getpid()}"
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.logs = {n: (workdir / f"{n}.log").open("w+") for n in ("xvfb", "xpans", "ds9")}
        self.env: dict[str, str] = {}

    def start(self, analysis_file: Path, image: Path) -> None:
        """Xvfb, xpans, then DS9 with our analysis file and the image; back once DS9 answers over XPA."""
        workdir = self.workdir
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                                stdout=subprocess.PIPE, stderr=self.logs["xvfb"], text=True)
        self.processes.append(xvfb)
        display = xvfb.stdout.readline().strip()  # Xvfb picks a free display and says which
        if not display.isdigit():
            raise RuntimeError(f"Xvfb did not start: {self._log('xvfb')}")
        port = _free_port_pair()
        # XPA on loopback only ('localhost'), which also opens DS9's 'tcl' access point to us
        self.env = {**os.environ, "DISPLAY": f":{display}", "XPA_METHOD": "localhost",
                    "XPA_NSINET": f"127.0.0.1:{port}", "HOME": str(workdir), "XDG_CACHE_HOME": str(workdir / "cache")}
        self.env.pop("SAMP_HUB", None)
        # our own name server, so the test never meets another DS9 nor leaves an xpans behind
        self.processes.append(subprocess.Popen(["xpans", "-p", str(port), "-l", str(workdir / "xpans.db")],
                                               stdout=self.logs["xpans"], stderr=subprocess.STDOUT, env=self.env))
        time.sleep(0.3)
        ds9 = ["ds9", "-title", self.name, "-analysis", str(analysis_file), str(image)]
        self.processes.append(subprocess.Popen(ds9, stdout=self.logs["ds9"], stderr=subprocess.STDOUT, env=self.env,
                                               cwd=workdir))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.processes[-1].poll() is not None:
                raise RuntimeError(f"ds9 exited: {self._log('ds9')}")
            try:
                if self.get("file").strip() == str(image):
                    return
            except RuntimeError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"DS9 did not answer over XPA: {self._log('ds9')}")

    def _log(self, name: str) -> str:
        handle = self.logs[name]
        handle.flush()
        handle.seek(0)
        return " ".join(handle.read().split())[-2000:]

    def get(self, *words: str) -> str:
        done = subprocess.run(["xpaget", self.name, *words], capture_output=True, text=True, env=self.env, timeout=30)
        if done.returncode or "XPA$ERROR" in done.stdout + done.stderr:
            raise RuntimeError(f"xpaget {' '.join(words)}: {done.stdout} {done.stderr}")
        return done.stdout

    def set(self, *words: str, data: str | None = None) -> None:
        argv = ["xpaset", *(() if data is not None else ("-p",)), self.name, *words]
        done = subprocess.run(argv, input=data, capture_output=True, text=True, env=self.env, timeout=30)
        if done.returncode or "XPA$ERROR" in done.stdout + done.stderr:
            raise RuntimeError(f"xpaset {' '.join(words)}: {done.stdout} {done.stderr}")

    def regions(self, *extra: str) -> str:
        return self.get("regions", *extra, "-format", "ds9", "-system", "wcs", "-sky", "icrs", "-skyformat", "degrees")

    def text_window(self, index: int) -> str:
        """What DS9's text window of Analysis task `index` shows (our stdout), '' before it opens."""
        target = self.workdir / f"text-{index}.txt"
        target.unlink(missing_ok=True)
        widget = f".atmenu{index}txt.text"  # DS9's AnalysisText -> SimpleTextDialog at<which><i>txt
        self.set("tcl", data=f"if {{[winfo exists {widget}]}} {{set f [open {{{target}}} w]; "
                             f"puts -nonewline $f [{widget} get 1.0 end]; close $f}}\n")
        return target.read_text() if target.exists() else ""

    def task_index(self, title: str) -> int:
        for line in self.get("analysis", "task").splitlines():
            index, _, name = line.strip().partition(" ")
            if name.strip() == title:
                return int(index)
        raise AssertionError(f"{title!r} is not in DS9's Analysis menu: {self.get('analysis', 'task')!r}")

    def close(self) -> None:
        for process in reversed(self.processes):
            _stop(process)
        for handle in self.logs.values():
            handle.close()


def _detections(regions: str) -> list:
    return [s for s in parse_ds9_regions(regions) if RESULT_TAG in s.tags]


def _run_task(ds9: _Ds9, title: str, before: int, results: Path) -> list:
    """Click the menu entry (XPA 'analysis task N'); wait for its detections to appear in DS9."""
    saved = set(results.glob("*.reg")) if results.is_dir() else set()
    ds9.set("analysis", "task", str(ds9.task_index(title)))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        new = set(results.glob("*.reg")) - saved if results.is_dir() else set()
        if new:
            expected = before + len(parse_ds9_regions(next(iter(new)).read_text()))
            found = _detections(ds9.regions())
            if len(found) == expected:
                time.sleep(0.5)  # let DS9 see the task end before another starts
                return found
        time.sleep(0.3)
    raise AssertionError(f"no detections came back into DS9 (saved: {sorted(results.glob('*'))}); "
                         f"DS9 log: {ds9._log('ds9')}")


def test_ds9_analysis_menu_end_to_end(ds9_tools, tmp_path, service, sky):
    analysis = tmp_path / "cianna-otf.ans"
    assert cli.main(["ds9-analysis", "-o", str(analysis), "--url", service.url, "--token", "tok-alice",
                     "--model", "classic"]) == 0
    ds9 = _Ds9(tmp_path)
    try:
        ds9.start(analysis, sky)
        results = tmp_path / "cache" / "cianna-otf" / "ds9"
        assert ds9.task_index(WHOLE_IMAGE_TITLE) + 1 == ds9.task_index(REGION_TITLE)

        # the whole image
        everything = _run_task(ds9, WHOLE_IMAGE_TITLE, 0, results)
        assert len(everything) > 0

        # a circle of 36" around the image centre; the detections already loaded do not count
        ds9.set("regions", data='icrs\ncircle(0.0,-30.0,36")\n')
        inside = _run_task(ds9, REGION_TITLE, len(everything), results)[len(everything):]
        assert 0 < len(inside) < len(everything)
        for shape in inside:
            ra, dec = float(shape.params[0]), float(shape.params[1])
            assert _separation(ra, dec, 0.0, -30.0) <= 0.01 + 1e-6, shape.source

        # a rotated box: our polygon is the box DS9 draws (its corners in pixels, through the WCS)
        ds9.set("regions", "delete", "all")
        ds9.set("regions", data='icrs\nbox(0.005,-30.005,40",20",30)\n')
        line = next(l for l in ds9.get("regions", "-format", "ds9", "-system", "image").splitlines()
                    if l.startswith("box("))
        x, y, width, height, angle = (float(v) for v in line[4:line.index(")")].split(","))
        from astropy.io import fits
        from astropy.wcs import WCS

        wcs = WCS(fits.getheader(sky))
        t = math.radians(angle)
        corners = []
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            dx, dy = sx * width / 2, sy * height / 2
            ra, dec = wcs.wcs_pix2world([[x + dx * math.cos(t) - dy * math.sin(t),
                                          y + dx * math.sin(t) + dy * math.cos(t)]], 1)[0]
            corners += [ra % 360, dec]
        _, values = _numbers(ds9_to_soda(ds9.regions()))
        assert values == pytest.approx(corners, abs=2e-6)

        # what DS9's text window of the region entry showed: our lines, then an error as a message
        region_task = ds9.task_index(REGION_TITLE)
        shown = ds9.text_window(region_task)
        assert "CIANNA OTF: detecting sources in sky.fits in CIRCLE 0 -30 0.01" in shown
        assert "loaded into DS9 over XPA" in shown and "Traceback" not in shown
        ds9.set("regions", "delete", "all")
        ds9.set("analysis", "task", str(region_task))
        deadline = time.monotonic() + 60
        while "error" not in shown and time.monotonic() < deadline:
            time.sleep(0.3)
            shown = ds9.text_window(region_task)
        assert "CIANNA OTF error: no region to detect in: draw a circle, box, ellipse or polygon" in shown
        assert "Traceback" not in shown
    finally:
        ds9.close()
