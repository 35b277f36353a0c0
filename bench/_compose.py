"""The run config of a bench script: `dm3d`'s own Hydra config composed with overrides and validated."""
from __future__ import annotations


def compose(overrides, defaults=("tracking=off", "progress=false")):
    """RunConf of conf/config.yaml with ``defaults`` then ``overrides`` (as the dm3d command line)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from dm3d_exp.pipeline.app import CONF_DIR
    from dm3d_exp.schema import validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(hydra_compose("config", overrides=[*defaults, *overrides]))
