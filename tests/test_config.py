"""params.yaml validation: the shipped profiles load, and every kind of bad input is a one-line ConfigError
naming the file and the key."""

from __future__ import annotations

import pytest

from synthaug.core.config import prepared_fractions, real_curve_fractions, ConfigError, Params, load_params

from conftest import REPO, SMOKE


def test_shipped_params_and_smoke_profile_load():
    p = load_params(REPO / "params.yaml")
    assert isinstance(p, Params)
    assert p.dataset.name == "fashion_mnist"
    assert isinstance(p.beta, float) and p.beta == 1.0
    assert p.fid.num_images > p.fid.dims
    assert all(0 < f <= 1 for f in p.fractions)

    s = load_params(SMOKE)
    assert s.dataset.name == "digits" and s.device == "cpu"
    assert s.vae.base_channels == 8 and s.fid.dims == 64 and s.fid.num_images > 64
    assert s.classify.model.arch == "resnet8" and s.classify.seeds == [0, 1]
    assert s.generator_fraction == 0.5 and min(s.fractions) >= s.generator_fraction


@pytest.mark.parametrize("profile", ["cifar10", "cub200"])
def test_gpu_profiles_are_complete_and_valid(profile):
    p = load_params(REPO / "configs" / f"{profile}.yaml")
    assert p.dataset.name == profile and p.device == "cuda"
    # the answer issue's design: whole chains as replicates, classifier seeds inside each
    assert len(p.study_seeds) >= 3 and len(p.classify.seeds) >= 10
    assert p.fid.dims == 2048 and p.fid.num_images > 2048
    # Complete files: every top-level section of the laptop default is spelled out, none left to defaults.
    import yaml

    default_keys = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert default_keys <= set(yaml.safe_load((REPO / "configs" / f"{profile}.yaml").read_text()))


def test_int_is_accepted_where_float_is_expected(write_params):
    p = load_params(write_params({"beta": 1, "vae.lr": 1}))
    assert p.beta == 1.0 and isinstance(p.beta, float)
    assert isinstance(p.vae.lr, float)


def _error(path) -> str:
    with pytest.raises(ConfigError) as ei:
        load_params(path)
    msg = str(ei.value)
    assert "\n" not in msg, f"error must be one line: {msg!r}"
    assert str(path) in msg, f"error must name the file: {msg!r}"
    return msg


@pytest.mark.parametrize("changes, expected", [
    # unknown keys, with the did-you-mean hint at the right depth
    ({"betta": 0.5}, ["unknown key 'betta'", "did you mean 'beta'"]),
    ({"vae.latnt_dim": 4}, ["unknown key 'vae.latnt_dim'", "did you mean 'vae.latent_dim'"]),
    ({"classify.model.arhc": "resnet20"}, ["unknown key 'classify.model.arhc'", "'classify.model.arch'"]),
    # wrong types
    ({"vae.epochs": "ten"}, ["vae.epochs", "expected int", "'ten'"]),
    ({"vae.batch_size": True}, ["vae.batch_size", "expected int", "bool"]),
    ({"vae.epochs": 2.5}, ["vae.epochs", "expected int"]),
    ({"beta": "high"}, ["beta", "expected float"]),
    ({"fractions": 0.5}, ["fractions", "expected a list"]),
    ({"classify.seeds": 0}, ["classify.seeds", "expected a list"]),
    ({"vae": 3}, ["vae", "expected a mapping"]),
    # ranges and choices
    ({"fractions": [0, 1.0]}, ["fractions[0]", "(0, 1]"]),
    ({"fractions": [0.5, 1.5]}, ["fractions[1]", "1.5"]),
    ({"fractions": [0.5, 0.5]}, ["fractions", "distinct"]),
    ({"beta": -0.1}, ["beta", ">= 0", "-0.1"]),
    ({"classify.synthetic_ratio": 1.2}, ["classify.synthetic_ratio", "<= 1"]),
    ({"vae.lr": 0}, ["vae.lr", "> 0"]),
    ({"fid.num_images": 64}, ["fid.num_images", "65"]),
    ({"fid.num_images": 10}, ["fid.num_images"]),
    ({"fid.dims": 100}, ["fid.dims", "must be one of"]),
    ({"sources": ["vae", "nope"]}, ["sources[1]", "unknown source 'nope'"]),
    ({"device": "gpu"}, ["device", "'gpu'"]),
    ({"dataset.name": "mnist"}, ["dataset.name", "'mnist'"]),
    ({"classify.seeds": [1, 1]}, ["classify.seeds", "distinct"]),
    ({"study_seeds": [0, 0]}, ["study_seeds", "distinct"]),
    ({"study_seeds": []}, ["study_seeds: give at least one study seed"]),
    ({"study_seeds": [-1]}, ["study_seeds[0]: must be >= 0"]),
    ({"classify.seeds": []}, ["classify.seeds"]),
    ({"classify.model.augment": "mixup"}, ["classify.model.augment", "'mixup'"]),
    ({"real_fractions": [0.1, 0.1]}, ["real_fractions", "distinct"]),
    ({"real_fractions": [2.0]}, ["real_fractions[0]", "(0, 1]"]),
    ({"generator_fraction": 0}, ["generator_fraction", "> 0"]),
    ({"analysis.nearest_k": 0}, ["analysis.nearest_k", ">= 1"]),
    ({"analysis.orientation_bins": 1}, ["analysis.orientation_bins", ">= 2"]),
    # seeds numpy accepts (sample derives seed * 1_000_003 + batch from them, still inside int64)
    ({"seed": 2**64}, ["seed: must be < 4294967296", str(2**64)]),
    ({"seed": -1}, ["seed: must be >= 0"]),
    ({"classify.seeds": [0, 2**32]}, ["classify.seeds[1]: must be < 4294967296"]),
    # an image size some generator cannot take (their nets would raise at `train`)
    ({"dataset.image_size": 28}, ["dataset.image_size: 28", "vae needs a multiple of 8", "power of two"]),
    ({"dataset.image_size": 24}, ["dataset.image_size: 24", "power of two"]),
    ({"dataset.image_size": 16, "diffusion.channel_mult": [1, 2, 2, 2, 2, 2]}, ["diffusion", "multiple of 32"]),
    # non-finite numbers (YAML .inf, .nan; 1e309 overflows to inf)
    ({"beta": float("inf")}, ["beta: must be a finite number, got inf"]),
    ({"vae.lr": float("nan")}, ["vae.lr: must be a finite number, got nan"]),
    ({"gan.ema_decay": "1e309"}, ["gan.ema_decay: must be a finite number"]),
    # mixed arms at a fraction below the generators' subset would leak real images the classifier never had
    ({"fractions": [0.25, 1.0]}, ["fractions: 0.25 is below generator_fraction 0.5", "generator_fraction: 1.0"]),
    # inversion starting at its groups' codes on a U-Net without codes: refused before train_diffusion runs
    ({"diffusion.code_dim": 0}, ["invert.init: group", "diffusion.code_dim: 0", "invert.init: class"]),
])
def test_bad_params_give_one_line_error_naming_the_key(write_params, changes, expected):
    msg = _error(write_params(changes))
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_invalid_yaml_names_file_and_line(write_params):
    path = write_params(text="seed: 0\nbeta: [1.0,\nvae:\n  epochs: 2\n")
    msg = _error(path)
    assert "not valid YAML" in msg and "line" in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just a string\n"])
def test_non_mapping_file_is_refused(write_params, text):
    assert "mapping" in _error(write_params(text=text))


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nope.yaml")
    assert "not found" in msg


def test_leak_is_allowed_only_as_the_explicit_all_data_setting(write_params):
    p = load_params(write_params({"fractions": [0.1, 0.25], "generator_fraction": 1.0}))
    assert p.generator_fraction == 1.0 and p.fractions == [0.1, 0.25]
    p = load_params(write_params({"fractions": [0.25, 0.5], "generator_fraction": 0.25, "real_fractions": [0.01]}))
    assert real_curve_fractions(p) == [0.01, 0.25, 0.5] and prepared_fractions(p) == [0.01, 0.25, 0.5]
    p = load_params(write_params({"fractions": [0.5], "generator_fraction": 0.3}))
    assert prepared_fractions(p) == [0.25, 0.3, 0.5]  # real_fractions 0.25 of the smoke profile, and 0.3


def test_processes_must_split_every_training_batch_evenly(write_params):
    assert load_params(write_params({"processes": 2})).processes == 2  # the smoke batches are even
    msg = _error(write_params({"processes": 2, "diffusion.batch_size": 33}))
    assert "diffusion.batch_size: 33 does not split evenly over processes: 2" in msg
    assert "classify.model.batch_size" in _error(write_params({"processes": 3, "vae.batch_size": 63,
                                                               "gan.batch_size": 63, "lsgan.batch_size": 63,
                                                               "wgan_gp.batch_size": 63,
                                                               "diffusion.batch_size": 63,
                                                               "invert.batch_size": 63}))
    assert "processes: must be" in _error(write_params({"processes": 0}))


def test_float_in_exponent_notation_is_a_number(write_params):
    """`lr: 1e-3` is a string to PyYAML (YAML 1.1) but the number a user (and DVC, YAML 1.2) means."""
    text = SMOKE.read_text().replace("lr: 0.002", "lr: 1e-3").replace("beta: 1.0", "beta: 5E-1")
    p = load_params(write_params(text=text))
    assert p.vae.lr == 0.001 and p.beta == 0.5
    assert "beta: must be a finite number" in _error(write_params(text=text.replace("beta: 5E-1", "beta: 1e309")))
    assert "expected float, got str '1e-3x'" in _error(write_params(text=text.replace("1e-3", "1e-3x")))


@pytest.mark.parametrize("section", ["vae", "wgan_gp", "classify.model"])
def test_a_missing_section_is_named(write_params, smoke_dict, section):
    """Without a whole section a stage would silently run on the code's defaults."""
    *parents, last = section.split(".")
    d = smoke_dict
    for key in parents:
        d = d[key]
    del d[last]
    import yaml

    msg = _error(write_params(text=yaml.safe_dump(smoke_dict)))
    assert f"missing section '{section}'" in msg, msg
