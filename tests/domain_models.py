"""Model cards that declare their domain, for tests that need a deterministic model ranking.

``abs-sdc1`` reads absolute brightness and was "trained" on SDC1-like images (a beam of 2.5
pixels, 2.0 to 3.2 accepted; noise 2e-7 to 5e-7 Jy/beam); ``snr-any`` reads signal-to-noise
(beams of 1.5 to 8 pixels, any unit and noise). Their weights file is a placeholder: present,
so the models are listed as available, but not a network (the tests only rank them).
"""

from __future__ import annotations

from pathlib import Path

CARD = """
[model]
name = "{name}"
version = "1"
family = "yolo-cianna"
description = "a test network"
[weights]
file = "weights.dat"
[input]
channels = 1
[tiling]
patch_size = 128
shift = 112
[yolo]
nb_box = 9
nb_class = 0
nb_param = 5
priors_w = [6, 6, 6, 6, 6, 6, 12, 9, 24]
priors_h = [6, 6, 6, 6, 6, 6, 9, 12, 24]
objectness_thresholds = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]
[domain]
{domain}
"""
ABSOLUTE = 'input = "absolute"\nbeam_pixels = 2.5\nbeam_pixels_range = [2.0, 3.2]\nnoise_range = [2e-7, 5e-7]'
SNR = 'input = "snr"\nbeam_pixels = 3.5\nbeam_pixels_range = [1.5, 8.0]'


def write_domain_models(folder: Path) -> Path:
    """Write the ``abs-sdc1`` and ``snr-any`` cards (and their placeholder weights) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.dat").write_bytes(b"\0" * 16)
    (folder / "abs-sdc1.toml").write_text(CARD.format(name="abs-sdc1", domain=ABSOLUTE))
    (folder / "snr-any.toml").write_text(CARD.format(name="snr-any", domain=SNR))
    return folder
