"""Compose-based config tests: every option of every group composes and validates; bad values fail."""
import os
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from dm3d_exp.errors import InputError
from dm3d_exp.schema import METHODS, validate

CONF = Path(__file__).resolve().parents[2] / "conf"
os.environ.setdefault("DM3D_REPO", str(CONF.parent))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))  # _common: shared keys


def test_every_pruning_method_has_a_config_and_validates():
    assert set(_options("pruning")) == set(METHODS)
    for method in METHODS:
        conf = validate(_compose([f"pruning={method}", "detector.checkpoint=x.pth"]))
        assert conf.pruning.method == method and 0 < conf.pruning.flops_target <= 1


@pytest.mark.parametrize("group", ["calib", "sensitivity", "recovery", "eval", "tracking"])
def test_every_option_of_simple_groups_validates(group):
    for option in _options(group):
        conf = validate(_compose([f"{group}={option}", "detector.checkpoint=x.pth", "tracking.uri=http://127.0.0.1:1"]
                                 if group == "tracking" else [f"{group}={option}", "detector.checkpoint=x.pth"]))
        assert getattr(conf, group) is not None


def test_every_detector_composes_and_real_data_needs_a_root():
    synth = [d for d in _options("detector") if d.endswith("_synth")]
    assert {"pointpillars_synth", "centerpoint_voxel_synth"} <= set(synth)
    for det in synth:
        conf = validate(_compose([f"detector={det}", "detector.checkpoint=x.pth"]))
        assert conf.detector.name == det and conf.detector.mmdet3d_config
    with pytest.raises(InputError, match="dataset.root"):
        validate(_compose(["dataset=kitti", "detector.checkpoint=x.pth"]))
    assert validate(_compose(["dataset=kitti", "dataset.root=/data/kitti", "detector.checkpoint=x.pth"])).dataset.root


@pytest.mark.parametrize("override,match", [
    ("pruning.flops_target=0", r"pruning.flops_target=0.0 is out of range, expected a value in \(0.0, 1.0\]"),
    ("pruning.flops_target=1.5", "pruning.flops_target=1.5 is out of range"),
    ("pruning.flops_target=abc", "pruning.flops_target"),
    ("pruning.method=magic", "pruning.method='magic' is not valid, expected one of: dm3d, rd_measured"),
    ("sensitivity.probe=gaussian", "sensitivity.probe='gaussian' is not valid"),
    ("sensitivity.num_levels=0", "sensitivity.num_levels=0 is out of range"),
    ("sensitivity.normalize=zscore", "sensitivity.normalize='zscore' is not valid, expected one of: none, channel_variance"),
    ("calib.num_frames=-1", "calib.num_frames=-1"),
    ("stage=train", "stage='train' is not valid"),
    ("recovery.method=finetune", "recovery.method='finetune' is not valid, expected one of: none, reconstruct"),
    ("recovery.damping=0", r"recovery.damping=0.0 is out of range, expected a value in \(0.0, inf\]"),
    ("recovery.damping=-1e-3", "recovery.damping=-0.001 is out of range"),
    ("recovery.statistics=bnstats", "recovery.statistics='bnstats' is not valid, expected one of: none, bn_reestimate, statcorr"),
    ("recovery.target=labels", "recovery.target='labels' is not valid"),
    ("recovery.num_frames=64", "recovery.num_frames=64 is larger than calib.num_frames=32"),
    ("recovery.max_sites=0", "recovery.max_sites=0 is out of range"),
    ("sensitivity.perturbation=pruned", "sensitivity.perturbation='pruned' is not valid, expected one of: auto, "
                                        "zeroed, reconstructed"),
    ("sensitivity.perturbation=reconstructed recovery.method=none",
     "sensitivity.perturbation='reconstructed' with recovery.method='none', expected recovery=reconstruct"),
    ("sensitivity.coarse_levels=0", "sensitivity.coarse_levels=0 is out of range"),
    ("eval.max_detections=0", r"eval.max_detections=0 is out of range, expected a value in \[1, 1000000\]"),
    ("threads=0", r"threads=0 is out of range, expected a value in \[1, 1024\]"),
    # a baseline's config has no curve-only keys; added anyway (+key), the schema says who reads them
    ("pruning=lamp +pruning.min_density=0.05", "pruning.min_density=0.05 is not used by pruning.method='lamp', expected 0.0 .only dm3d, rd_measured read it."),
    ("pruning=uniform +pruning.allocator=lagrangian", "pruning.allocator='lagrangian' is not used by pruning.method="
                                                     "'uniform', expected 'dp' .only dm3d, rd_measured"),
])
def test_schema_rejects_bad_values_with_one_line(override, match):
    with pytest.raises(InputError, match=match) as err:
        validate(_compose([*override.split(" "), "detector.checkpoint=x.pth"]))
    assert "\n" not in str(err.value)


def test_unknown_group_option_lists_choices():
    with pytest.raises(MissingConfigException) as err:
        _compose(["detector=yolo"])
    assert "pointpillars_synth" in str(err.value)


@pytest.mark.parametrize("method", ["dm3d", "dense"])
def test_missing_checkpoint_is_a_clear_error(method):
    with pytest.raises(InputError, match=r"detector.checkpoint is missing .*\(make train-reference"):
        validate(_compose(["detector.checkpoint=null", f"pruning={method}"]))


def test_missing_zoo_checkpoint_points_to_the_model_zoo():
    """A model-zoo detector's checkpoint comes from the mmdet3d model zoo, not from our training recipe."""
    with pytest.raises(InputError, match=r"mmdet3d model-zoo \.pth of pointpillars/.*detector.checkpoint=PATH\)$") as e:
        validate(_compose(["detector=pointpillars_kitti", "dataset=kitti", "dataset.root=/data/kitti"]))
    assert "train-reference" not in str(e.value)


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF.parent / "sweeps").glob("*.yaml")))
def test_every_sweep_value_composes_and_validates(sweep):
    """Each ready-made multirun names real config keys/options and only values the schema accepts."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweeps={sweep}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params, f"sweeps/{sweep}.yaml defines no sweep parameters"
    for key, values in params.items():
        for value in str(values).split(","):
            conf = validate(_compose([f"+sweeps={sweep}", f"{key}={value.strip()}", "detector.checkpoint=x.pth"]))
            if "." not in key:  # a config-group choice, e.g. pruning=lamp
                if key == "pruning":  # each pruning option names its method
                    assert conf.pruning.method == value.strip()
                continue
            node = conf
            for part in key.split("."):
                node = getattr(node, part)
            assert node == yaml.safe_load(value)


@pytest.mark.parametrize("overrides,expected", [
    (["recovery=reconstruct"], "reconstructed"),
    (["recovery=none"], "zeroed"),
    (["recovery=bn"], "zeroed"),
    (["recovery=reconstruct", "pruning=rd_measured"], "zeroed"),  # measured curves: no reconstruction model
    (["recovery=reconstruct", "sensitivity.perturbation=zeroed"], "zeroed"),
    (["recovery=reconstruct", "sensitivity.perturbation=reconstructed"], "reconstructed"),
])
def test_auto_perturbation_follows_the_recovery(overrides, expected):
    """sensitivity.perturbation=auto (default): the curves measure what the recover stage will do."""
    from types import SimpleNamespace

    from dm3d_exp.stages.sensitivity import effective_perturbation

    conf = validate(_compose([*overrides, "detector.checkpoint=x.pth"]))
    assert effective_perturbation(SimpleNamespace(conf=conf)) == expected


def test_defaults_recover_and_the_paper_is_one_switch_away():
    """Default: extended D, reconstruction with reconstruction-aware curves; +experiment=paper: the paper's
    D on zeroed weights, no recovery."""
    from types import SimpleNamespace

    from dm3d_exp.stages.sensitivity import effective_perturbation

    default = validate(_compose(["detector.checkpoint=x.pth"]))
    assert default.recovery.method == "reconstruct" and default.sensitivity.foreground_weighting
    assert effective_perturbation(SimpleNamespace(conf=default)) == "reconstructed"
    paper = validate(_compose(["+experiment=paper", "detector.checkpoint=x.pth"]))
    assert paper.recovery.method == "none" and paper.recovery.statistics == "none"
    assert not paper.sensitivity.foreground_weighting and paper.sensitivity.normalize == "none"
    assert effective_perturbation(SimpleNamespace(conf=paper)) == "zeroed"
    assert paper.calib.num_frames == 128 and paper.sensitivity.num_levels == 1000


def test_baseline_allocation_keys_leave_out_what_baselines_do_not_use():
    """pruning.budget_units (and allocator, min_density) only matter to the DP: a baseline's allocate key
    does not change with them, DM3D's does."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from dm3d_exp.store.cache import content_key
    from dm3d_exp.stages.allocate import cache_inputs

    def key(*overrides):
        conf = validate(_compose([*overrides, "detector.checkpoint=x.pth"]))
        ctx = SimpleNamespace(conf=conf, section=lambda name: asdict(getattr(conf, name)))
        return content_key(cache_inputs(ctx, SimpleNamespace(key="calib"), None))

    assert key("pruning=lamp") == key("pruning=lamp", "+pruning.budget_units=500")
    assert key("pruning=lamp") != key("pruning=lamp", "pruning.macs_mode=density")
    assert key("pruning=dm3d") != key("pruning=dm3d", "pruning.budget_units=500")


@pytest.mark.parametrize("argv,match", [
    (["pruning=magic"], "pruning='magic' is not an option, expected one of: dense, dm3d"),
    (["--multirun", "pruning=dm3d,magic"], "pruning='magic' is not an option"),
    (["+experiment=papr"], "experiment='papr' is not an option, expected one of: paper, quick"),
    (["pruning=[bad"], "cannot parse the overrides"),
    (["foo=1"], "the overrides do not fit the config: Could not override 'foo'"),
    (["--multirun", "pruning=dm3d,lamp", "pruning.nosuch=0.1,0.2"], "Could not override 'pruning.nosuch'"),
    (["pruning=lamp", "pruning.min_density=0.05"], "Could not override 'pruning.min_density'. To append to your "
                                                   "config use \\+pruning.min_density=0.05"),
])
def test_cli_refuses_unknown_group_options_before_hydra(argv, match):
    """`dm3d` checks group options itself (Hydra would exit 1): one InputError line, hence exit 2."""
    from dm3d_exp.pipeline.app import check_group_choices

    with pytest.raises(InputError, match=match) as err:
        check_group_choices(argv)
    assert "\n" not in str(err.value)
    check_group_choices(["--multirun", "hydra/launcher=joblib", "pruning=lamp,dm3d", "+experiment=quick",
                         "pruning.flops_target=0.5,0.25", "+sweeps=methods_x_targets"])  # valid: no error


def test_dm3d_outside_a_clone_refuses_with_one_line_or_uses_dm3d_repo(tmp_path):
    """Issue 11.9: the package alone (as a wheel installs it, without conf/) exits 2 naming what is missing
    and the fix; with DM3D_REPO pointing at a clone it composes the config."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src" / "dm3d_exp"
    shutil.copytree(src, tmp_path / "site" / "dm3d_exp", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "DM3D_REPO"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    cmd = [sys.executable, "-c", "import dm3d_exp, sys; assert 'site' in dm3d_exp.__file__; "
           "from dm3d_exp.cli import main; main()", "--cfg", "job"]
    bare = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert bare.returncode == 2 and bare.stderr.strip().count("\n") == 0, bare.stderr[-2000:]
    assert "error: no dm3d config tree at" in bare.stderr and "DM3D_REPO" in bare.stderr
    ok = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        env={**env, "DM3D_REPO": str(src.parents[1])})
    assert ok.returncode == 0 and "pruning:" in ok.stdout, ok.stderr[-2000:]
