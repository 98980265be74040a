"""Training of YOLO-CIANNA networks: targets invert the decode, the loss learns, runs resume, exports load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cianna_otf_server.cianna import decode_yolo, load_network, read_model_file
from cianna_otf_server.models import ModelRegistry, default_registry
from cianna_otf_server.pipeline import decode_patch, decode_settings, detect, parameter_values
from cianna_otf_server.sky.quality import quality_report
from cianna_otf_server.sky.simulate import simulate_sky
from cianna_otf_server.training import (
    DEMO_NORMALISATION,
    DEMO_PARAMETERS,
    ArchitectureConfig,
    DecodeChoice,
    PatchTruth,
    RunOptions,
    TargetConfig,
    TrainConfig,
    YoloLoss,
    activate,
    build_network,
    demo_head,
    demo_spec,
    encode_targets,
    export_model,
    forward_raw,
    inference_spec,
    load_checkpoint,
    make_sample,
    sky_truth,
    train,
    yolo_spec,
)
from cianna_otf_server.training import SNR_NORMALISATION, SNR_PARAMETERS
from cianna_otf_server.training._config import SNR_RECIPE
from cianna_otf_server.training._data import collate, network_input, simulate_training_sky
from cianna_otf_server.training._targets import apparent_shape

TINY = ArchitectureConfig(widths=(8, 8, 16, 16), depth=1, stem=4, head_width=16)
CELL = 16


def _tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(recipe="absolute", patch_size=64, sky_size=192, crops_per_sky=4, batch_size=4,
                       warmup_steps=1, inference_patch=128, inference_shift=112, inference_offset=8,
                       architecture=TINY)
    return replace(base, **changes)


def _perfect_raw(target: np.ndarray, head) -> np.ndarray:
    """The pre-activation head output that reproduces a dense target exactly (objectness 0.99 / 0.01)."""
    nb_box, per_box = head.nb_box, head.channels_per_box
    grid = target.shape[-1]
    slopes = np.asarray(head.slopes)
    raw = np.zeros((nb_box, per_box, grid, grid), np.float32)
    positive = target[:, 0] > 0.5
    logit = np.log(0.99 / 0.01)
    raw[:, 7] = np.where(positive, logit, -logit) / slopes[3, 0]
    position = np.clip(target[:, 1:3], 1e-3, 1 - 1e-3)  # empty boxes hold 0
    raw[:, 0:2] = np.log(position / (1.0 - position)) / slopes[0, 0]
    raw[:, 3:5] = target[:, 3:5] / slopes[1, 0]
    raw[:, 8:] = target[:, 5:] / slopes[5, 0]
    return raw.reshape(1, nb_box * per_box, grid, grid)


def test_targets_round_trip_through_the_real_decode():
    config = TrainConfig(recipe="absolute")
    hdul, truth = simulate_sky(512, seed=77)
    head = demo_head()
    sky = sky_truth(truth, config, head.nb_param)
    sample = make_sample(hdul[0].data, sky, 128, 96, 256, CELL, DEMO_NORMALISATION, head, config)
    net = build_network(demo_spec(TINY, 256))
    activated = activate(net, torch.from_numpy(_perfect_raw(sample.target, head)))
    decoded = decode_yolo(activated, head, (256, 256, 1))[0].numpy()
    yolo = yolo_spec(head, DecodeChoice(threshold=0.5, nms=1.0, second_nms=1.0))
    boxes = decode_patch(decoded, yolo, decode_settings(yolo))

    local = sample.truth
    inside = (local.x >= -0.5) & (local.x < 255.5) & (local.y >= -0.5) & (local.y < 255.5)
    wanted = local.take(np.nonzero(inside & (local.snr >= config.targets.min_snr))[0])
    assert len(wanted) >= 5 and len(boxes) == len(wanted)
    order, expected = np.argsort(boxes.x_center), np.argsort(wanted.x)
    np.testing.assert_allclose(boxes.x_center[order], wanted.x[expected], atol=0.05)
    np.testing.assert_allclose(boxes.y_center[order], wanted.y[expected], atol=0.05)
    np.testing.assert_allclose(boxes.width[order], wanted.width[expected], rtol=1e-4)
    np.testing.assert_allclose(boxes.height[order], wanted.height[expected], rtol=1e-4)

    physical = parameter_values(boxes.params[order], DEMO_PARAMETERS)
    rows = {int(i): k for k, i in enumerate(np.asarray(truth["id"]))}
    # map the patch's sources back to their truth rows through their position
    ids = [rows[int(np.argmin(np.hypot(np.asarray(truth["x"]) - 1 - 128 - x, np.asarray(truth["y"]) - 1 - 96 - y))) + 1]
           for x, y in zip(wanted.x[expected], wanted.y[expected])]
    source = truth[ids]
    np.testing.assert_allclose(physical["flux"], source["flux"], rtol=1e-4)
    np.testing.assert_allclose(physical["bmaj"], source["bmaj"], atol=1e-3)
    np.testing.assert_allclose(physical["bmin"], source["bmin"], atol=1e-3)
    np.testing.assert_allclose(physical["pa"], source["pa"], atol=0.05)


def test_snr_targets_round_trip_to_jy_and_apparent_shapes():
    """Signal-to-noise recipe: the head's targets decode to the truth's flux in Jy (through the noise
    map, as the catalogue does) and to the apparent (beam-convolved) shape in pixels."""
    config = TrainConfig(recipe="snr")
    seed = next(s for s in range(100, 200)
                if not np.isnan(simulate_training_sky(config, s, 512)[0][0].data).any())  # no blanks: all targets
    hdul, truth = simulate_training_sky(config, seed, 512)
    data, noise = network_input(hdul[0].data, config)
    assert noise is not None and abs(np.nanmedian(data)) < 0.2  # background removed, in units of the rms
    head = demo_head(objectness_max=SNR_RECIPE.objectness_max)
    sky = sky_truth(truth, config, head.nb_param, noise)
    sample = make_sample(data, sky, 128, 96, 256, CELL, SNR_RECIPE.normalisation, head, config)
    assert np.isfinite(sample.image).all()
    net = build_network(demo_spec(TINY, 256, objectness_max=SNR_RECIPE.objectness_max))
    activated = activate(net, torch.from_numpy(_perfect_raw(sample.target, head)))
    decoded = decode_yolo(activated, head, (256, 256, 1))[0].numpy()
    yolo = yolo_spec(head, DecodeChoice(threshold=0.5, nms=1.0, second_nms=1.0))
    boxes = decode_patch(decoded, yolo, decode_settings(yolo))
    local = sample.truth
    inside = (local.x >= -0.5) & (local.x < 255.5) & (local.y >= -0.5) & (local.y < 255.5)
    wanted = local.take(np.nonzero(inside & (local.snr >= config.targets.min_snr))[0])
    assert len(wanted) >= 3 and len(boxes) == len(wanted)
    order = np.argsort(boxes.x_center)
    physical = parameter_values(boxes.params[order], SNR_PARAMETERS)
    x, y = boxes.x_center[order] + 128, boxes.y_center[order] + 96
    distance = np.hypot(np.asarray(truth["x"])[:, None] - 1 - x, np.asarray(truth["y"])[:, None] - 1 - y)
    source = truth[np.argmin(distance, axis=0)]
    unclipped = np.asarray(source["flux"]) / noise.at(x, y) < 1e5
    np.testing.assert_allclose((physical["flux"] * noise.at(x, y))[unclipped], np.asarray(source["flux"])[unclipped],
                               rtol=1e-3)
    major, minor, angle = apparent_shape(np.asarray(source["bmaj"]), np.asarray(source["bmin"]),
                                         np.asarray(source["pa"]),
                                         (truth.meta["beam_bmaj"], truth.meta["beam_bmin"], truth.meta["beam_pa"]),
                                         truth.meta["pixel_scale"])
    small = major < 64
    np.testing.assert_allclose(physical["bmaj"][small], major[small], atol=1e-3)
    np.testing.assert_allclose(physical["bmin"][small], minor[small], atol=1e-3)
    round_enough = (major - minor) > 0.05 * major
    turn = np.abs(((physical["pa"] - angle) + 90) % 180 - 90)
    assert np.all(turn[round_enough & small] < 0.1)


def test_snr_recipe_export_declares_its_domain(tmp_path):
    config = _tiny_config(recipe="snr")
    net = build_network(demo_spec(TINY, config.patch_size, seed=2, objectness_max=SNR_RECIPE.objectness_max))
    card = export_model(net, tmp_path, config=config, choice=DecodeChoice(0.5, -0.1, -0.1), version="2.0",
                        description="test", training_data="none", training={"seed": 2})
    assert card.domain.declared and card.domain.input == "snr" and card.domain.angles == "pixel"
    assert card.domain.beam_pixels_range == (1.5, 8.0) and card.domain.beam_pixels == 3.5
    assert card.normalisation == SNR_NORMALISATION and card.normalisation.blank == 0.0
    assert card.parameters == SNR_PARAMETERS and card.parameters[0].unit == "beam"
    assert card.yolo.deblend and card.yolo.measure  # the recipe's post-network steps travel with the card
    assert (card.yolo.rescue_threshold, card.yolo.rescue_snr) == SNR_RECIPE.rescue == (0.3, 6.0)
    loaded = load_network(card.weights_file)
    assert float(np.asarray(loaded.yolo.slopes)[3][1]) == 12.0  # the objectness ceiling is raised


def test_sources_take_the_best_free_prior_and_faint_ones_are_ignored():
    head = demo_head()
    truth = PatchTruth(
        x=np.array([20.0, 21.0, 22.0, 70.0, 100.0]), y=np.array([20.0, 22.0, 19.0, 70.0, 100.0]),
        width=np.array([5.0, 5.0, 24.0, 11.0, 5.0], np.float32), height=np.array([5.0, 5.0, 24.0, 8.0, 5.0], np.float32),
        params=np.full((5, head.nb_param), 0.5, np.float32), snr=np.array([50.0, 10.0, 30.0, 8.0, 1.0]),
        flux=np.array([5e-5, 1e-5, 3e-5, 5e-6, 1e-6]),
    )
    target = encode_targets(truth, head, 128, CELL, TargetConfig())
    state = target[:, 0]
    assert state[0, 1, 1] == 1 and state[1, 1, 1] == 1  # two point sources: the first two 6x6 priors
    assert state[8, 1, 1] == 1  # the 24 px source: the 24x24 prior
    assert state[6, 4, 4] == 1  # 11x8: the 12x9 prior
    assert np.all(state[:, 6, 6] == -1)  # SNR 1: no objectness loss in its cell
    assert (state == 1).sum() == 4
    assert target[0, 1, 1, 1] == pytest.approx(20.5 / 16 - 1)
    assert target[6, 3, 4, 4] == pytest.approx(np.log(11 / 12))


def _fixed_batch(config: TrainConfig, head, n: int = 4):
    hdul, truth = simulate_sky(config.sky_size, seed=5)
    sky = sky_truth(truth, config, head.nb_param)
    size = config.patch_size
    samples = [make_sample(hdul[0].data, sky, 40 * k, 30 * k, size, CELL, DEMO_NORMALISATION, head, config)
               for k in range(n)]
    return collate([(s.image, s.target, s.corners) for s in samples])


def test_loss_decreases_over_a_few_steps():
    torch.manual_seed(0)
    config = _tiny_config()
    net = build_network(demo_spec(TINY, config.patch_size, seed=3))
    loss = YoloLoss(net.yolo, CELL, config.loss)
    images, targets, corners = _fixed_batch(config, net.yolo)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    values = []
    for _ in range(40):
        parts = loss(forward_raw(net, images), targets, corners)
        optimiser.zero_grad()
        parts.total.backward()
        optimiser.step()
        values.append(float(parts.total.detach()))
    assert int(parts.n_targets) > 0
    assert values[-1] < 0.7 * values[0]
    assert all(later < earlier for earlier, later in zip(values[::10], values[10::10]))


def test_training_forward_is_the_inference_forward():
    net = build_network(demo_spec(TINY, 64, seed=1))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ours = activate(net, forward_raw(net, x))
    np.testing.assert_array_equal(ours.numpy(), net.eval().forward(x.numpy()))


@pytest.mark.parametrize("recipe", ["absolute", "snr"])
def test_a_checkpoint_resumes(tmp_path, recipe):
    config = _tiny_config(recipe=recipe)
    options = RunOptions(out=tmp_path, minutes=5, workers=0, max_steps=2, validation_skies=1, export=False,
                         command="first")
    first = train(config, options, log=lambda _: None)
    state = load_checkpoint(first.checkpoint)
    assert state["step"] == 2 and state["segment"] == 0
    saved = {k: v.clone() for k, v in state["model"].items()}

    second = train(config, replace(options, resume=first.checkpoint, max_steps=1, command="second"),
                   log=lambda _: None)
    resumed = load_checkpoint(second.checkpoint)
    assert resumed["step"] == 3 and resumed["segment"] == 1
    assert resumed["commands"] == ["first", "second"]
    assert resumed["patches"] == 3 * config.batch_size
    adam = next(iter(resumed["optimiser"]["state"].values()))
    assert int(adam["step"]) == 3  # the optimiser's moments were restored, not restarted
    changed = [not torch.equal(saved[k], resumed["model"][k]) for k in saved]
    assert any(changed)


def test_export_loads_and_reproduces_the_trained_network(tmp_path):
    config = _tiny_config()
    net = build_network(demo_spec(TINY, config.patch_size, seed=2))
    with torch.no_grad():  # move the weights off their initial values, as training would
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    card = export_model(net, tmp_path, config=config, choice=DecodeChoice(0.4, -0.1, -0.2), version="0.1",
                        description="test", training_data="none", training={"seed": 2, "steps": 0})
    loaded = load_network(card.weights_file)
    assert loaded.in_dims == (128, 128, 1, 1)
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        expected = activate(net, forward_raw(net, x)).numpy()
    np.testing.assert_allclose(loaded.forward(x.numpy()), expected, atol=1e-6, rtol=0)
    assert card.yolo.objectness_thresholds == (0.4,) * 9
    assert (card.yolo.nms_threshold, card.yolo.second_nms_threshold) == (-0.1, -0.2)
    assert card.normalisation == DEMO_NORMALISATION and card.parameters == DEMO_PARAMETERS

    registry = ModelRegistry([tmp_path], use_environment=False, include_builtin=False)
    verified = registry.verify("yolo-demo")
    assert verified.sha256 == card.sha256 and verified.training["seed"] == 2


def test_training_continues_from_an_exported_model_and_counts_its_training(tmp_path):
    config = _tiny_config()
    first = train(config, RunOptions(out=tmp_path / "first", minutes=5, workers=0, max_steps=2, validation_skies=1,
                                     tuning_images=1, tuning_size=192, command="first"), log=lambda _: None)
    shipped = first.card.weights_file
    second = train(config, RunOptions(out=tmp_path / "second", minutes=5, workers=0, max_steps=1,
                                      validation_skies=1, export=False, init_weights=shipped, command="second"),
                   log=lambda _: None)
    state = load_checkpoint(second.checkpoint)
    assert state["step"] == 1 and state["patches"] == config.batch_size  # a new run of its own
    started = state["history"][0]["initialised_from"]
    assert started["patches"] == 2 * config.batch_size and started["commands"] == ["first"]
    # the run started from the model's weights: one small step away from them, not from a fresh draw
    fresh = build_network(demo_spec(TINY, config.patch_size, seed=config.seed))
    loaded = [torch.as_tensor(layer.weights) for layer in read_model_file(shipped).layers if hasattr(layer, "weights")]
    trained = [v for k, v in state["model"].items() if k.endswith("weight_rows")]
    initial = [m.weight_rows.detach() for m in fresh.layers if hasattr(m, "weight_rows")]
    assert len(loaded) == len(trained) == len(initial)
    to_model = sum(float((a - b).abs().sum()) for a, b in zip(loaded, trained))
    to_fresh = sum(float((a - b).abs().sum()) for a, b in zip(initial, trained))
    assert to_model < to_fresh

    from cianna_otf_server.training._train import finish
    average = build_network(demo_spec(TINY, config.patch_size, seed=config.seed))
    average.load_state_dict(state["average"])
    card = finish(config, average, RunOptions(out=tmp_path / "second", tuning_images=1, tuning_size=192),
                  step=state["step"], patches=state["patches"], train_seconds=state["train_seconds"],
                  history=state["history"], commands=state["commands"], device="cpu", log=lambda _: None)
    assert card.training["patches"] == 3 * config.batch_size and card.training["steps"] == 3
    assert card.training["commands"] == ["first", "second"]
    assert card.training["continued_from"]["sha256"] == first.card.sha256


def test_inference_spec_keeps_the_weights():
    net = build_network(demo_spec(TINY, 64, seed=4))
    spec = inference_spec(net, 256)
    assert spec.in_dims == (256, 256, 1, 1)
    for layer, module in zip(spec.layers, net.layers):
        if hasattr(layer, "weights"):
            np.testing.assert_array_equal(layer.weights, module.weight_rows.detach().numpy())


def test_the_shipped_demo_model_detects_simulated_sources():
    registry = default_registry()
    assert "yolo-demo" in registry.names()
    card = registry.verify("yolo-demo")  # sha256 and card/file consistency
    assert card.family == "yolo-cianna" and card.default_precision == "fp32"
    assert card.training["seed"] is not None and card.training["steps"] > 0 and card.training["commands"]
    hdul, truth = simulate_sky(1024, seed=424242)  # a seed no training, validation or tuning run draws
    table = detect(hdul, card, device="cpu")
    report = quality_report(table, truth)
    assert report["overall"]["precision"] >= 0.9
    assert report["above"]["recall"] >= 0.95  # true SNR >= 5
    assert report["median_position_error_arcsec"] < 0.3  # a fifth of the beam
    assert report["median_abs_relative_flux_error_above"] < 0.2
    bmaj, pa = np.asarray(table["bmaj"]), np.asarray(table["pa"])
    fitted = np.asarray(table["fitted"]) == 1  # measured in the image (the card's [yolo] measure)
    assert fitted.mean() > 0.9 and np.all(bmaj[fitted] > 0) and np.all(np.abs(pa[fitted]) <= 90)
    assert card.domain.input == "snr" and card.yolo.measure


@pytest.mark.parametrize(("arguments", "message"), [
    (["--resume", "no-such-checkpoint.pt"], "no checkpoint at"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--minutes", "-1"], "--minutes must be positive"),
    (["--device", "gpu9"], "--device 'gpu9'"),
    (["--export-only"], "--export-only needs --resume"),
    (["--init-weights", "no-such-model.dat"], "needs a model file and its card"),
])
def test_training_command_refuses_bad_arguments_at_once(tmp_path, capsys, arguments, message):
    from cianna_otf_server.training.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "run"), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "nothing written before refusing"
