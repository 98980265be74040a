"""The model registry: discovery, precedence, broken cards, checksums, card/weights consistency."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import pytest

from cianna_otf_server.errors import ModelCardError, ModelFileError, UnknownModelError, UserInputError
from cianna_otf_server.models import ModelRegistry, default_registry, file_sha256, load_card

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN_B = SHARED / "cianna_golden" / "B" / "B_yolo_sdc1_small.dat"
DOCS_CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "yolo-sdc1-ref.toml"

CLASSIC_CARD = """
[model]
name = "{name}"
version = "{version}"
family = "classic"
[classic]
threshold_sigma = 4.0
"""

YOLO_CARD = """
[model]
name = "{name}"
version = "1"
family = "yolo-cianna"
[weights]
file = "{file}"
{sha_line}
[input]
channels = {channels}
[tiling]
patch_size = {patch}
shift = 112
[yolo]
nb_box = 9
nb_class = 0
nb_param = {nb_param}
priors_w = {priors_w}
priors_h = [6, 6, 6, 6, 6, 6, 9, 12, 24]
objectness_thresholds = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
"""

GOOD_PRIORS_W = "[6, 6, 6, 6, 6, 6, 12, 9, 24]"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No user models from the machine running the tests."""
    monkeypatch.delenv("CIANNA_OTF_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write_card(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def yolo_card(directory: Path, name: str = "small", *, sha256: str | None = None, channels: int = 1,
              patch: int = 128, nb_param: int = 5, priors_w: str = GOOD_PRIORS_W,
              weights: str = "model.dat") -> Path:
    sha_line = f'sha256 = "{sha256}"' if sha256 else ""
    return write_card(directory, name, YOLO_CARD.format(
        name=name, file=weights, sha_line=sha_line, channels=channels, patch=patch,
        nb_param=nb_param, priors_w=priors_w))


@pytest.fixture()
def golden_model(tmp_path) -> Path:
    if not GOLDEN_B.is_file():
        pytest.skip(f"golden model not found at {GOLDEN_B}")
    target = tmp_path / "models" / "model.dat"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GOLDEN_B, target)
    return target


def test_builtin_models_listed():
    registry = ModelRegistry(use_environment=False)
    entries = registry.list()
    names = [e.name for e in entries]
    assert "classic" in names
    assert names == sorted(names)
    classic = registry.get("classic")
    assert classic.family == "classic" and classic.classic is not None
    assert classic.licence == "Apache-2.0"
    assert registry.verify("classic") is classic  # no weights: nothing to check
    assert all(e.origin == "builtin" for e in entries)


def test_default_registry_is_shared():
    assert default_registry() is default_registry()
    assert "classic" in default_registry()


def test_user_directory_overrides_builtin(tmp_path, caplog):
    user = tmp_path / "user"
    write_card(user, "classic", CLASSIC_CARD.format(name="classic", version="9.9"))
    with caplog.at_level(logging.WARNING, logger="cianna_otf_server"):
        card = ModelRegistry([user], use_environment=False).get("classic")
    assert card.version == "9.9"
    assert card.classic.threshold_sigma == 4.0
    assert any("shadowed" in record.getMessage() for record in caplog.records)


def test_environment_directories_scanned(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    write_card(first, "one", CLASSIC_CARD.format(name="one", version="1"))
    write_card(second, "two", CLASSIC_CARD.format(name="two", version="2"))
    write_card(second, "one-again", CLASSIC_CARD.format(name="one", version="late"))
    monkeypatch.setenv("CIANNA_OTF_MODELS", os.pathsep.join([str(first), str(second)]))
    registry = ModelRegistry()
    assert {"one", "two", "classic"} <= set(registry.names())
    assert registry.get("one").version == "1"  # the first directory listed wins


def test_per_user_directory_scanned(tmp_path, monkeypatch):
    home_models = tmp_path / "xdg" / "cianna-otf" / "models"
    write_card(home_models, "mine", CLASSIC_CARD.format(name="mine", version="1"))
    assert "mine" in ModelRegistry().names()
    assert "mine" not in ModelRegistry(use_environment=False).names()


def test_unknown_model_lists_available_names(tmp_path):
    write_card(tmp_path / "user", "other", CLASSIC_CARD.format(name="other", version="1"))
    registry = ModelRegistry([tmp_path / "user"], use_environment=False)
    with pytest.raises(UnknownModelError) as info:
        registry.get("nope")
    message = str(info.value)
    assert "nope" in message and "classic" in message and "other" in message
    assert isinstance(info.value, UserInputError)


def test_broken_card_reported_not_crashing(tmp_path):
    user = tmp_path / "user"
    write_card(user, "broken", "[model]\nname = 'broken'\nfamily = 'magic'\n")
    write_card(user, "garbage", "this is [not toml")
    write_card(user, "fine", CLASSIC_CARD.format(name="fine", version="1"))
    registry = ModelRegistry([user], use_environment=False)
    entries = {e.name: e for e in registry.list()}
    assert entries["fine"].available
    for name in ("broken", "garbage"):
        assert not entries[name].available
        assert entries[name].status == "unavailable"
        assert entries[name].reason
    assert "family" in entries["broken"].reason
    with pytest.raises(ModelCardError):
        registry.get("garbage")
    assert "broken" not in registry.names()
    assert "broken" in registry.names(available_only=False)


def test_missing_weights_reported(tmp_path):
    user = tmp_path / "user"
    yolo_card(user, "absent", weights="nowhere.dat")
    registry = ModelRegistry([user], use_environment=False)
    entry = registry.entry("absent")
    assert not entry.available and "nowhere.dat" in entry.reason
    with pytest.raises(ModelFileError, match="nowhere.dat"):
        registry.verify("absent")


def test_refresh_picks_up_new_and_changed_cards(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    registry = ModelRegistry([user], use_environment=False)
    assert "late" not in registry.names()
    path = write_card(user, "late", CLASSIC_CARD.format(name="late", version="1"))
    assert registry.get("late").version == "1"  # new card seen without an explicit refresh
    path.write_text(CLASSIC_CARD.format(name="late", version="2.0-longer"))
    assert registry.get("late").version == "2.0-longer"
    path.unlink()
    registry.refresh()
    assert "late" not in registry.names()


def test_sha256_mismatch_refused(tmp_path, golden_model):
    directory = golden_model.parent
    yolo_card(directory, "wrongsum", sha256="0" * 64)
    registry = ModelRegistry([directory], use_environment=False)
    assert registry.entry("wrongsum").available  # listing does not hash
    with pytest.raises(ModelCardError, match="sha256"):
        registry.verify("wrongsum")


def test_sha256_match_accepted_and_cached(tmp_path, golden_model):
    digest = hashlib.sha256(golden_model.read_bytes()).hexdigest()
    assert file_sha256(golden_model) == digest
    directory = golden_model.parent
    yolo_card(directory, "small", sha256=digest)
    registry = ModelRegistry([directory], use_environment=False)
    card = registry.verify("small")
    assert card.sha256 == digest
    assert registry.verify("small") is card


def test_changed_weights_rehashed(tmp_path, golden_model):
    digest = file_sha256(golden_model)
    yolo_card(golden_model.parent, "small", sha256=digest)
    registry = ModelRegistry([golden_model.parent], use_environment=False)
    registry.verify("small")
    with golden_model.open("ab") as handle:
        handle.write(b"\0")
    os.utime(golden_model, ns=(1, 1))  # a different mtime, whatever the file system's resolution
    with pytest.raises(ModelCardError, match="sha256"):
        registry.verify("small")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"channels": 2}, "channels"),
        ({"patch": 136}, "patch_size"),  # a size the strides do not tile (256 would run, as in CIANNA)
        ({"nb_param": 4}, "nb_param"),
        ({"priors_w": "[6, 6, 6, 6, 6, 6, 12, 9, 32]"}, "priors_w"),
    ],
)
def test_card_inconsistent_with_weights_refused(tmp_path, golden_model, changes, field):
    yolo_card(golden_model.parent, "bad", **changes)
    registry = ModelRegistry([golden_model.parent], use_environment=False)
    with pytest.raises(ModelCardError, match=field):
        registry.verify("bad")


def test_card_consistent_with_weights_accepted(tmp_path, golden_model):
    yolo_card(golden_model.parent, "small")  # no sha256: accepted with a warning
    registry = ModelRegistry([golden_model.parent], use_environment=False)
    card = registry.verify("small")
    assert card.weights_file == golden_model.resolve()


def test_sdc1_reference_card_loads():
    card = load_card(DOCS_CARD)
    assert card.name == "yolo-sdc1-ref"
    assert card.is_network
    assert card.weights_file.name == "YOLO_CIANNA_ref_SDC1_s480k_MINERVA_Cornu2024.dat"
    assert card.tiling.patch_size == (512, 512) and card.tiling.shift == (480, 480)
    assert card.yolo.nb_box == len(card.yolo.objectness_thresholds) == 9
    assert card.yolo.nb_param == 5
    assert [p.name for p in card.parameters] == ["flux", "bmaj", "bmin", "pa"]
    registry = ModelRegistry([DOCS_CARD.parent], use_environment=False)
    entry = registry.entry("yolo-sdc1-ref")
    assert not entry.available  # weights are not distributed with the code
    assert "YOLO_CIANNA_ref_SDC1" in entry.reason


def test_unreadable_weights_refused(tmp_path, golden_model):
    golden_model.write_bytes(golden_model.read_bytes()[:1000])  # truncated download
    yolo_card(golden_model.parent, "small")
    with pytest.raises(ModelFileError):
        ModelRegistry([golden_model.parent], use_environment=False).verify("small")


def test_broken_override_does_not_hide_builtin(tmp_path):
    user = tmp_path / "user"
    write_card(user, "classic", "[model]\nname = 'classic'\n")  # no family: broken
    registry = ModelRegistry([user], use_environment=False)
    entries = registry.list()
    assert registry.get("classic").card_path.parent.name == "builtin"
    broken = [e for e in entries if not e.available]
    assert len(broken) == 1 and broken[0].card_path == user / "classic.toml"
    assert "family" in broken[0].reason


def test_weights_added_after_the_card(tmp_path, golden_model):
    directory = golden_model.parent
    yolo_card(directory, "late", weights="late.dat")
    registry = ModelRegistry([directory], use_environment=False)
    assert not registry.entry("late").available
    shutil.copyfile(golden_model, directory / "late.dat")
    assert registry.entry("late").available
    assert registry.verify("late").weights_file.name == "late.dat"
