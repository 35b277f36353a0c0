"""Checkpoints in the detector's own format, and reading them without running code from the file.

Writing: the file is what mmengine's ``save_checkpoint`` writes (``{'meta', 'state_dict'}``), loadable by
mmdet3d's tools (``load_checkpoint(model, path, strict=True)``) unchanged: no ``weight_orig`` /
``weight_mask`` keys (torch.nn.utils.prune reparametrisations are removed first), fp32 weights only.

Reading: torch's weights-only unpickler, which builds tensors and plain containers only, extended by an
allow-list of data-only types: numpy arrays / scalars / dtypes and mmengine's ``HistoryBuffer`` (the message
hub of training checkpoints). Anything else needs ``trust=True`` (config ``detector.trust_checkpoint``).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InputError
from ..fileio import atomic_write_bytes

TRUST_OPTION = "detector.trust_checkpoint"


def remove_reparametrizations(model: nn.Module) -> None:
    """Bake torch.nn.utils.prune masks into plain weights (``weight = weight_orig * weight_mask``)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model``'s state dict (CPU, detached) with ``meta`` atomically to ``path``."""
    import io

    remove_reparametrizations(model)
    raw = model.state_dict()
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in raw.items())
    # keep the per-module versions: mmdet3d permutes spconv weights of modules saved without version 2
    state._metadata = getattr(raw, "_metadata", OrderedDict())
    bad = [k for k in state if k.endswith(("_orig", "_mask"))]
    if bad:
        raise ValueError(f"state dict still has pruning reparametrisation keys {bad[:3]}")
    buf = io.BytesIO()
    torch.save({"meta": dict(meta or {}), "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def nonzero_report(model: nn.Module, names) -> dict[str, int]:
    """Non-zero and total weights over the given prunable module names."""
    mods = dict(model.named_modules())
    nnz = sum(int(torch.count_nonzero(mods[n].weight)) for n in names)
    total = sum(mods[n].weight.numel() for n in names)
    return {"params_nonzero": nnz, "params_total": total}


def _numpy_globals() -> list:
    """numpy arrays, scalars and dtypes: their constructors only allocate and fill plain data (object
    arrays take their items, as a list, from the same restricted unpickler), under numpy 1's
    ``numpy.core`` and numpy 2's ``numpy._core`` module paths."""
    import numpy as np

    reconstruct, scalar = np.array(0).__reduce__()[0], np.float64(0).__reduce__()[0]
    out = [np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: per-kind dtype classes
    out += [getattr(dtypes, n) for n in getattr(dtypes, "__all__", [])]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(reconstruct, f"{mod}._reconstruct"), (scalar, f"{mod}.scalar")]
    return out


def _mmengine_globals() -> list:
    """mmengine's HistoryBuffer (log scalars in a training checkpoint's message hub) as a data-only subclass,
    and ``getattr`` limited to looking up HistoryBuffer's own public methods (how its pickled
    statistics-method table refers to them); that table is dropped on load, so no pickled callable is kept."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return []

    class LoadedHistoryBuffer(HistoryBuffer):
        """A HistoryBuffer restored from a checkpoint: its arrays and max_length only."""

        def __setstate__(self, state):
            self._set_default_statistics()
            self.__dict__.update({k: v for k, v in state.items() if k != "statistics_methods"})

    def history_buffer_method(owner, name):
        if owner in (HistoryBuffer, LoadedHistoryBuffer) and not name.startswith("_") and name in vars(HistoryBuffer):
            return getattr(HistoryBuffer, name)
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed in a checkpoint")

    return [(LoadedHistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer"),
            (history_buffer_method, "builtins.getattr")]


@functools.lru_cache(maxsize=None)
def safe_globals() -> tuple:
    """The allow-list added to torch's weights-only unpickler when reading checkpoints (data-only types)."""
    return tuple(_numpy_globals() + _mmengine_globals())


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(path: str, err: Exception) -> tuple[bool, str]:
    """(whether the weights-only unpickler refused a class / function, what it refused): the disallowed
    globals the file references, else the unpickler's message (e.g. an unsupported opcode of a non-pickle)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be scanned
        names = []
    if names:
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        return True, "it references " + ", ".join(sorted(names)[:4]) + more
    detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip().split("\n\n")[0]
    refused_global = any(w in detail for w in ("global", "allowlisted", "not allowed"))
    return refused_global, _one_line(detail.split(". ")[0])


def read_checkpoint_file(path: str | os.PathLike, trust: bool = False, option: str = TRUST_OPTION):
    """Contents of a torch checkpoint, unpickled by torch's weights-only loader plus ``safe_globals()``:
    state dicts, mmengine training checkpoints (meta, message hub, optimizer, schedulers) and numpy data
    load; a file that needs any other class or function raises InputError naming ``detector.trust_checkpoint``
    (or ``option``, the opt-in's name where the caller calls it otherwise) unless ``trust=True``, which
    unpickles it without restrictions: arbitrary code execution from the file."""
    p = str(path)
    if not os.path.isfile(p):
        raise InputError(f"checkpoint {p!r} does not exist (expected a .pth file)")
    needs_trust, reason = False, ""
    with torch.serialization.safe_globals(list(safe_globals())):  # also for _refusal's scan of the file
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            needs_trust, reason = _refusal(p, e)
        except Exception as e:
            reason = f"{type(e).__name__}: {_one_line(e, 100)}"
    if not needs_trust:
        raise InputError(f"checkpoint {p!r} is not a readable torch file ({reason}): expected a .pth written "
                         "by torch.save")
    if not trust:
        raise InputError(f"checkpoint {p!r} needs more than weights-only unpickling ({reason}); loading it could "
                         f"run code from the file: set {option}=true only for a file from a trusted source "
                         "(risk: arbitrary code execution)")
    warnings.warn(f"{option}=true: unpickling {p!r} without restrictions ({reason})", stacklevel=2)
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"checkpoint {p!r} is not a readable torch file ({type(e).__name__}: "
                         f"{_one_line(e, 100)})") from None


def weights_sha256(path: str | os.PathLike, trust: bool = False) -> str:
    """Content hash of a checkpoint's weights (its state dict: names, dtypes, shapes and bytes, in name
    order), read like :func:`read_checkpoint_file`: files with the same weights and different metadata
    (training meta, the cache key that wrote them) hash alike."""
    contents = read_checkpoint_file(path, trust=trust)
    state = contents.get("state_dict", contents) if isinstance(contents, Mapping) else None
    if not isinstance(state, Mapping):
        raise InputError(f"checkpoint {str(path)!r} holds a {type(contents).__name__}, not a state dict")
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode() + b"\0")
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _listed(label: str, items: list[str], show: int = 4) -> str:
    more = ", ..." if len(items) > show else ""
    return f"{len(items)} {label} ({', '.join(items[:show])}{more})"


def state_mismatch(model: nn.Module, state: Mapping, shapes: bool = True) -> str:
    """Missing / unexpected keys (and shape mismatches) of ``state`` against ``model``, as mmengine's strict
    loading sees them (``module.`` prefixes stripped, BN ``num_batches_tracked`` may be missing); '' if none."""
    want = model.state_dict()
    have = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    missing = [k for k in want if k not in have and "num_batches_tracked" not in k]
    unexpected = [k for k in have if k not in want]
    parts = [_listed(label, items) for label, items in (("missing keys", missing), ("unexpected keys", unexpected))
             if items]
    if shapes:
        wrong = [f"{k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}" for k in want
                 if k in have and torch.is_tensor(have[k]) and tuple(have[k].shape) != tuple(want[k].shape)]
        if wrong:
            parts.append(_listed("shape mismatches (checkpoint vs model)", wrong, 2))
    return "; ".join(parts)


def load_state_strict(model: nn.Module, contents, path: str | os.PathLike, expected: str) -> None:
    """Load a checkpoint's contents (``{'state_dict': ...}`` or a bare state dict) into ``model`` with
    mmengine's strict loading (per-module versions honoured); a mismatch raises one InputError listing the
    first missing / unexpected keys and ``expected`` (the config the model was built from)."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    state = contents.get("state_dict", contents) if isinstance(contents, Mapping) else None
    if not isinstance(state, Mapping):
        raise InputError(f"checkpoint {str(path)!r} holds a {type(contents).__name__}, not a state dict "
                         f"(expected the weights of {expected})")
    try:
        _load_checkpoint_to_model(model, contents, strict=True, logger="silent")
    except RuntimeError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip() and "do not match exactly" not in ln]
        why = state_mismatch(model, state, shapes="size mismatch" in str(e)) or _one_line(lines[0] if lines else e)
        raise InputError(f"checkpoint {str(path)!r} does not fit {expected}: {why}") from None
