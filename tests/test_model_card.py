"""Model cards: a valid card loads with its defaults; each malformed field is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cianna_otf_server.errors import ModelCardError
from cianna_otf_server.models._card import load_card

YOLO_CARD = """
[model]
name = "tiny-yolo"
version = "2.1"
family = "yolo-cianna"
description = "test network"
default_precision = "fp16"

[weights]
file = "tiny.dat"
sha256 = "{sha}"
input_bias = 0.1

[tiling]
patch_size = 128
shift = [112, 96]
offset = 16

[normalisation]
function = "tanh"
clip_min = 0.4e-6
clip_max = 0.4e-4

[yolo]
nb_box = 2
nb_class = 0
nb_param = 2
priors_w = [6, 12]
priors_h = [6, 9]
objectness_thresholds = [0.5, 0.4]
nms_threshold = 0.1

[[parameters]]
name = "flux"
channels = [0]
transform = "exp"
min = -14.0
max = -6.0
unit = "Jy"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


def test_yolo_card_loads(tmp_path: Path) -> None:
    card = load_card(_write(tmp_path, YOLO_CARD.format(sha="ab" * 32)))
    assert card.name == "tiny-yolo" and card.is_network and card.default_precision == "fp16"
    assert card.weights_file == (tmp_path / "tiny.dat").resolve()
    assert card.tiling.patch_size == (128, 128) and card.tiling.shift == (112, 96) and card.tiling.offset == (16, 16)
    assert card.yolo.objectness_thresholds == (0.5, 0.4)
    assert card.parameters[0].transform == "exp" and card.parameters[0].channels == (0,)
    assert card.normalisation.scale == 3.0  # default
    assert card.to_dict()["weights_file"] == "tiny.dat"


@pytest.mark.parametrize(
    "change,message",
    [
        (("family = \"yolo-cianna\"", "family = \"magic\""), "family must be"),
        (("sha256 = \"" + "ab" * 32 + "\"", "sha256 = \"xyz\""), "sha256 must be 64 hexadecimal"),
        (("objectness_thresholds = [0.5, 0.4]", "objectness_thresholds = [0.5]"), "must have 2 values"),
        (("channels = [0]", "channels = [7]"), "channels must lie in 0..1"),
        (("shift = [112, 96]", "shift = \"far\""), "'shift' must be an integer"),
        (("default_precision = \"fp16\"", "default_precision = \"fp64\""), "default_precision must be one of"),
        (("[tiling]", "[tilings]"), "missing table \\[tiling\\]"),
        (("transform = \"exp\"", "transform = \"cube\""), "transform must be one of"),
        (("clip_max = 0.4e-4", "clip_max = 0.1e-6"), "clip_max must be greater"),
    ],
)
def test_malformed_cards_name_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = YOLO_CARD.format(sha="ab" * 32)
    assert change[0] in text
    path = _write(tmp_path, text.replace(change[0], change[1]))
    with pytest.raises(ModelCardError, match=message) as info:
        load_card(path)
    assert str(path) in str(info.value)


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="not valid TOML"):
        load_card(_write(tmp_path, "[model\nname="))


def test_missing_card(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="cannot read model card"):
        load_card(tmp_path / "absent.toml")


def test_graded_nms_and_box_widening(tmp_path: Path) -> None:
    text = YOLO_CARD.format(sha="ab" * 32).replace(
        "nms_threshold = 0.1",
        "nms_threshold = 0.1\nnms_tiers = [[0.05, 1.0], [-0.1, 0.7]]\nmin_box_size = 5\nedge_penalty = 0.05",
    )
    card = load_card(_write(tmp_path, text))
    assert card.yolo.nms_tiers == ((0.05, 1.0), (-0.1, 0.7))
    assert card.yolo.min_box_size == 5 and card.yolo.edge_penalty == 0.05
    with pytest.raises(ModelCardError, match="pairs"):
        load_card(_write(tmp_path, text.replace("[[0.05, 1.0], [-0.1, 0.7]]", "[0.05, 1.0]")))


def test_significance_rescue_settings(tmp_path: Path) -> None:
    """Absent: off (every card as before); both together, in range, on a measuring card."""
    base = YOLO_CARD.format(sha="ab" * 32)
    off = load_card(_write(tmp_path, base)).yolo
    assert (off.rescue_threshold, off.rescue_snr, off.rescues) == (0.0, 0.0, False)
    text = base.replace("nms_threshold = 0.1", "nms_threshold = 0.1\nmeasure = true\nrescue_threshold = 0.2\n"
                                               "rescue_snr = 10")
    on = load_card(_write(tmp_path, text)).yolo
    assert (on.rescue_threshold, on.rescue_snr, on.rescues) == (0.2, 10, True)
    for wrong, message in (("rescue_snr = 10", "go together"), ("rescue_snr = -1", "must be positive"),
                           ("measure = true", "need measure = true")):
        bad = text.replace(wrong, "") if message != "must be positive" else text.replace("rescue_snr = 10", wrong)
        with pytest.raises(ModelCardError, match=message):
            load_card(_write(tmp_path, bad))
    with pytest.raises(ModelCardError, match=r"in \(0, 1\]"):
        load_card(_write(tmp_path, text.replace("rescue_threshold = 0.2", "rescue_threshold = 1.5")))
