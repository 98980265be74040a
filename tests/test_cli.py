"""The ``cianna-otf`` command line, run as a real process: output, exit codes, error lines."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cianna_otf_server import __version__
from cianna_otf_server.cli import main


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m cianna_otf_server.cli ARGS`` with no user model directories."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CIANNA_OTF_MODELS", "CIANNA_OTF_DEBUG")}
    environment["XDG_DATA_HOME"] = str(Path(cwd or ".").resolve() / "xdg-empty")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cianna_otf_server.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=environment, timeout=300,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cianna-otf: error: ")
    return lines[0]


def has(module: str, attribute: str) -> bool:
    try:
        return hasattr(__import__(module, fromlist=[attribute]), attribute)
    except ImportError:
        return False


def test_version(tmp_path):
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"cianna-otf {__version__}"


def test_models_table(tmp_path):
    result = cli("models", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["NAME", "VERSION", "FAMILY", "PRECISION", "STATUS"]
    classic = [row.split() for row in rows if row.startswith("classic ")]
    assert classic and classic[0][2] == "classic" and classic[0][-1] == "available"


def test_models_json(tmp_path):
    result = cli("models", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models["classic"]["family"] == "classic"
    assert models["classic"]["status"] == "available"
    assert models["classic"]["classic"]["threshold_sigma"] > 0


def test_models_lists_user_directory_and_broken_card(tmp_path):
    user = tmp_path / "cards"
    user.mkdir()
    (user / "broken.toml").write_text("not [toml")
    result = cli("models", "--models-dir", str(user), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["broken"] and "unavailable" in line for line in result.stdout.splitlines())
    assert "broken: " in result.stdout  # the reason, after the table


def test_models_show(tmp_path):
    result = cli("models", "show", "classic", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("classic ")
    for label in ("description", "licence", "threshold", "deblending"):
        assert label in result.stdout
    as_json = cli("models", "show", "classic", "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout)["name"] == "classic"


def test_models_show_sdc1_reference_card(tmp_path):
    docs = Path(__file__).resolve().parents[1] / "docs" / "models"
    result = cli("models", "--models-dir", str(docs), "show", "yolo-sdc1-ref", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unavailable" in result.stdout and "Cornu" in result.stdout


def test_unknown_model_is_one_line_exit_2(tmp_path):
    result = cli("models", "show", "no-such-model", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "no-such-model" in line and "classic" in line


def test_models_for_an_image(tmp_path, sky_fits):
    """``models --for IMAGE``: the installed models ranked for the image (no service needed)."""
    result = cli("models", "--for", str(sky_fits), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sky.fits: 256 x 256 px, 0.6 arcsec/px, beam ")
    header = next(i for i, line in enumerate(lines) if line.startswith("MODEL "))
    assert lines[header].split() == ["MODEL", "FIT", "INPUT", "ZOOM", "REASON"]
    rows = [line.split() for line in lines[header + 1:] if line and not line.startswith(" ")]
    assert {row[0] for row in rows} >= {"classic", "yolo-demo"}
    assert [float(row[1]) for row in rows] == sorted((float(row[1]) for row in rows), reverse=True)
    classic = next(row for row in rows if row[0] == "classic")
    assert classic[2] == "native" and classic[3] == "1"
    as_json = json.loads(cli("models", "--for", str(sky_fits), "--json", cwd=tmp_path).stdout)
    assert as_json["image"]["size"] == [256, 256] and as_json["models"][0]["fit"] >= as_json["models"][-1]["fit"]

    assert one_error_line(cli("models", "--for", "missing.fits", cwd=tmp_path)).endswith("does not exist")
    refused = cli("models", "--hdu", "1", cwd=tmp_path)
    assert refused.returncode == 2 and "--hdu goes with --for IMAGE" in one_error_line(refused)


def test_detect_unknown_model(tmp_path):
    image = tmp_path / "image.fits"
    image.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    result = cli("detect", str(image), "--model", "no-such-model", "-o", "out.vot", cwd=tmp_path)
    assert result.returncode == 2
    assert "classic" in one_error_line(result)


def test_detect_missing_file(tmp_path):
    result = cli("detect", "missing.fits", "--model", "classic", "-o", "out.vot", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.fits" in one_error_line(result)


def test_detect_not_a_fits_file(tmp_path):
    (tmp_path / "notes.fits").write_text("hello, I am not an image\n")
    result = cli("detect", "notes.fits", "--model", "classic", "-o", "out.vot", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a FITS file" in one_error_line(result)
    assert not (tmp_path / "out.vot").exists()


def test_detect_unknown_output_format(tmp_path):
    image = tmp_path / "image.fits"
    image.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    result = cli("detect", str(image), "--model", "classic", "-o", "out.txt", cwd=tmp_path)
    assert result.returncode == 2
    assert "--format" in one_error_line(result)


def test_usage_errors_exit_2(tmp_path):
    for args in (("detect",), ("no-such-command",), ("detect", "x.fits", "--model", "classic", "-o", "o.vot",
                                                      "--region", "CIRCLE 0 0 1", "--pixels", "1 2 1 2"),
                 ("simulate", "x.fits", "--size", "ten"), ()):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        one_error_line(result)


def test_serve_refuses_an_unknown_default_model(tmp_path):
    result = cli("serve", "--default-model", "no-such-model", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--default-model: unknown model 'no-such-model'" in one_error_line(result)
    assert not (tmp_path / "data").exists(), "refused before anything was created"


def test_detect_defaults_to_the_trained_demo_network(tmp_path):
    assert cli("simulate", "sky.fits", "--size", "256", "--seed", "5", cwd=tmp_path).returncode == 0
    result = cli("detect", "sky.fits", "-o", "sources.vot", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model yolo-demo" in result.stderr
    from astropy.io.votable import parse

    resource = parse(str(tmp_path / "sources.vot")).resources[0]
    assert {info.name: info.value for info in resource.infos}.get("model") == "yolo-demo"


def test_main_returns_codes_in_process(capsys):
    assert main(["--version"]) == 0
    assert main(["models", "show", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_internal_error_is_one_line_with_hint(monkeypatch, capsys):
    import cianna_otf_server.cli.models as models_cli

    def boom(args):
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(models_cli, "run_list", boom)
    assert main(["models"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--debug" in err[0] and "something broke over two lines" in err[0]
    assert main(["--debug", "models"]) == 1
    assert "Traceback" in capsys.readouterr().err


# -- end to end, once the simulator, the pipeline and the writers are installed -----------------
needs_pipeline = pytest.mark.skipif(
    not (has("cianna_otf_server.sky.simulate", "write_simulation")
         and has("cianna_otf_server.pipeline", "detect")
         and has("cianna_otf_server.catalogue", "write_catalogue")),
    reason="simulator, pipeline or catalogue writers not available yet",
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    if not has("cianna_otf_server.sky.simulate", "write_simulation"):
        pytest.skip("simulator not available yet")
    folder = tmp_path_factory.mktemp("sim")
    result = cli("simulate", "sky.fits", "--size", "256", "--seed", "3", "--truth", "truth.vot", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "sky.fits" in result.stderr
    return folder


def test_simulate_writes_image_and_truth(simulated):
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(simulated / "sky.fits") as hdul:
        assert hdul[0].data.shape[-2:] == (256, 256)
    truth = Table.read(simulated / "truth.vot")
    assert len(truth) > 0 and {"ra", "dec", "flux"} <= set(truth.colnames)


@needs_pipeline
def test_detect_classic_votable(simulated):
    from astropy.io.votable import parse

    result = cli("detect", "sky.fits", "--model", "classic", "-o", "sources.vot", cwd=simulated)
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert "source" in summary and "sources.vot" in summary
    table = parse(str(simulated / "sources.vot")).get_first_table().to_table()
    assert len(table) > 0
    assert {"ra", "dec", "x", "y", "flux"} <= set(table.colnames)


@needs_pipeline
def test_detect_classic_ds9_and_csv(simulated):
    ds9 = cli("detect", "sky.fits", "--model", "classic", "-o", "sources.reg", cwd=simulated)
    assert ds9.returncode == 0, ds9.stderr
    text = (simulated / "sources.reg").read_text()
    assert "fk5" in text.lower() or "icrs" in text.lower() or "image" in text.lower()
    from regions import Regions

    assert len(Regions.read(str(simulated / "sources.reg"), format="ds9")) > 0

    to_stdout = cli("detect", "sky.fits", "--model", "classic", "-o", "-", "--format", "csv", cwd=simulated)
    assert to_stdout.returncode == 0, to_stdout.stderr
    rows = list(csv.DictReader(to_stdout.stdout.splitlines()))
    assert rows and "ra" in rows[0]


@needs_pipeline
def test_detect_pixels_region(simulated):
    whole = cli("detect", "sky.fits", "--model", "classic", "-o", "all.csv", cwd=simulated)
    part = cli("detect", "sky.fits", "--model", "classic", "-o", "part.csv", "--pixels", "1 128 1 128",
               cwd=simulated)
    assert whole.returncode == 0 and part.returncode == 0, part.stderr
    n_whole = len(list(csv.DictReader((simulated / "all.csv").read_text().splitlines())))
    rows = list(csv.DictReader((simulated / "part.csv").read_text().splitlines()))
    assert len(rows) <= n_whole
    assert all(float(r["x"]) <= 128.5 and float(r["y"]) <= 128.5 for r in rows)


# -- detect's plumbing, with stand-ins for the pipeline and the writers -------------------------
@pytest.fixture()
def fake_pipeline(monkeypatch, tmp_path):
    """Replace pipeline.detect and catalogue.write_catalogue; record what they are given."""
    import cianna_otf_server.catalogue as catalogue
    import cianna_otf_server.pipeline as pipeline
    from astropy.table import Table

    calls: dict = {}

    def detect(image, card, **options):
        calls["detect"] = (image, card, options)
        return Table({"ra": [1.0, 2.0], "dec": [-30.0, -30.1]})

    def write_catalogue(table, path, format="votable"):
        calls.setdefault("write", []).append((path, format))
        Path(path).write_text(f"{format}:{len(table)}\n")

    monkeypatch.setattr(pipeline, "detect", detect, raising=False)
    monkeypatch.setattr(catalogue, "write_catalogue", write_catalogue, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIANNA_OTF_MODELS", raising=False)
    (tmp_path / "sky.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    return calls


@pytest.mark.parametrize("name, fmt", [("c.vot", "votable"), ("c.xml", "votable"), ("c.csv", "csv"),
                                       ("c.fits", "fits"), ("c.reg", "ds9")])
def test_detect_format_from_suffix(fake_pipeline, capsys, name, fmt):
    assert main(["detect", "sky.fits", "--model", "classic", "-o", name]) == 0
    assert Path(name).read_text() == f"{fmt}:2\n"
    assert fake_pipeline["write"][0][1] == fmt
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 sources" in err[0] and name in err[0]
    assert [p.name for p in Path(".").iterdir() if p.name.startswith(".cianna-otf-")] == []


def test_detect_passes_options(fake_pipeline):
    args = ["detect", "sky.fits", "--model", "classic", "-o", "out.csv", "--format", "ds9",
            "--pixels", "1 10 1 20", "--precision", "fp16", "--hdu", "1", "--threshold", "4.5",
            "--nms", "0.1", "--min-size", "3", "--unit", "mJy/beam", "--beam", "6 5 30"]
    assert main(args) == 0
    image, card, options = fake_pipeline["detect"]
    assert Path(image).name == "sky.fits" and card.name == "classic"
    assert options == dict(region=None, pixels="1 10 1 20", precision="fp16", device="cpu",
                           threshold=4.5, nms=0.1, min_size=3.0, hdu=1, unit="mJy/beam", beam="6 5 30")
    assert Path("out.csv").read_text() == "ds9:2\n"  # --format wins over the suffix


def test_detect_to_stdout(fake_pipeline, capfd):
    assert main(["detect", "sky.fits", "--model", "classic", "-o", "-", "--region", "CIRCLE 0 -30 0.1"]) == 0
    out, err = capfd.readouterr()
    assert out == "votable:2\n"
    assert "stdout" in err
    assert fake_pipeline["detect"][2]["region"] == "CIRCLE 0 -30 0.1"


def test_detect_output_folder_missing(fake_pipeline, capsys):
    assert main(["detect", "sky.fits", "--model", "classic", "-o", "nowhere/out.vot"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert "detect" not in fake_pipeline  # refused before any work


GOLDEN_B = Path(__file__).resolve().parents[2] / "shared" / "cianna_golden" / "B" / "B_yolo_sdc1_small.dat"
SMALL_CARD = """
[model]
name = "small"
version = "1"
family = "yolo-cianna"
[weights]
file = "model.dat"
{sha_line}
[tiling]
patch_size = 128
shift = 112
[yolo]
nb_box = 9
nb_class = 0
nb_param = 5
priors_w = [6, 6, 6, 6, 6, 6, 12, 9, 24]
priors_h = [6, 6, 6, 6, 6, 6, 9, 12, 24]
objectness_thresholds = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
[[parameters]]
name = "flux"
channels = [0]
transform = "exp"
min = -13.1
max = -6.2
unit = "Jy"
"""


@pytest.fixture()
def small_model_dir(tmp_path) -> Path:
    if not GOLDEN_B.is_file():
        pytest.skip(f"golden model not found at {GOLDEN_B}")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.dat").write_bytes(GOLDEN_B.read_bytes())
    return folder


@needs_pipeline
def test_detect_with_a_network(simulated, small_model_dir):
    import hashlib

    from astropy.io.votable import parse

    digest = hashlib.sha256((small_model_dir / "model.dat").read_bytes()).hexdigest()
    (small_model_dir / "small.toml").write_text(SMALL_CARD.format(sha_line=f'sha256 = "{digest}"'))
    result = cli("detect", "sky.fits", "--model", "small", "--models-dir", str(small_model_dir),
                 "-o", "net.vot", cwd=simulated)
    assert result.returncode == 0, result.stderr
    table = parse(str(simulated / "net.vot")).get_first_table().to_table()
    assert {"ra", "dec", "score", "flux"} <= set(table.colnames)


def test_detect_refuses_wrong_checksum(tmp_path, small_model_dir):
    (small_model_dir / "small.toml").write_text(SMALL_CARD.format(sha_line=f'sha256 = "{"ab" * 32}"'))
    (tmp_path / "sky.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    result = cli("detect", "sky.fits", "--model", "small", "--models-dir", str(small_model_dir),
                 "-o", "net.vot", cwd=tmp_path)
    assert result.returncode == 2
    assert "sha256" in one_error_line(result)
    assert not (tmp_path / "net.vot").exists()


def test_simulate_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "sky.fits"
    first = cli("simulate", str(target), "--size", "64", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli("simulate", str(target), "--size", "64", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in one_error_line(again)
    forced = cli("simulate", str(target), "--size", "64", "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
