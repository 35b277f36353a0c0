"""``dm3d-train``: train a reference detector on the synthetic benchmark.

Usage: ``dm3d-train detector=pointpillars_synth [max_epochs=N] [threads=1] [data.num_train=...]
[init_from=PATH [trust_checkpoint=true]] ...``
(Hydra-style ``key=value`` overrides of :class:`~dm3d_exp.training.recipe.TrainOptions`).
"""
from __future__ import annotations

import dataclasses
import json
import sys

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import InputError
from .recipe import TrainOptions, train


def parse_options(argv: list[str]) -> TrainOptions:
    """TrainOptions from ``key=value`` tokens; InputError naming a malformed or unknown option."""
    for tok in argv:
        if "=" not in tok:
            raise InputError(f"argument {tok!r} is not key=value; options: "
                             f"{', '.join(f.name for f in dataclasses.fields(TrainOptions))}")
    base = OmegaConf.structured(TrainOptions)
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
    except OmegaConfBaseException as e:
        raise InputError(str(e).splitlines()[0]) from None
    return TrainOptions(**OmegaConf.to_container(merged))


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse options, train, print the manifest summary; 2 on bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        for f in dataclasses.fields(TrainOptions):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            print(f"  {f.name}={default}")
        return 0
    try:
        opts = parse_options(argv)
        manifest = train(opts)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: manifest[k] for k in ("name", "val", "check_subset", "checkpoint")}
    summary["val"] = {k: v for k, v in summary["val"].items() if k != "all"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
