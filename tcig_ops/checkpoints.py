"""Reading weight files without ever running code that is stored in them.

``.safetensors`` is read directly. ``.ckpt``/``.pt``/``.pth``/``.bin`` go through
``torch.load(weights_only=True)``; original taming checkpoints were written by old
PyTorch Lightning and also pickle Lightning callback objects next to the weights,
which ``weights_only`` refuses. For those we use a restricted unpickler: tensors and
plain containers are rebuilt as usual, any class from a Lightning module becomes an
inert placeholder that is never called, and any other global (``os.system``,
``builtins.eval``, ...) makes the load fail. Nothing from the file is executed.
"""

from __future__ import annotations

import os
import pickle
import types
import zipfile

import torch

from .errors import TCIGInputError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Module prefixes whose classes may appear in a training checkpoint as metadata.
_INERT_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "torchmetrics.")


def require_file(path: str, what: str) -> str:
    """Return ``path`` if it is an existing file, else raise a message naming ``what``."""
    if not path:
        raise TCIGInputError(f"{what}: no file given")
    if not os.path.isfile(path):
        hint = " (it is a folder)" if os.path.isdir(path) else ""
        raise TCIGInputError(f"{what}: file not found: {path}{hint}")
    return path


class _Inert:
    """Stands in for a pickled metadata object; accepts and ignores any state."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _inert_class(module: str, name: str) -> type:
    return type(name, (_Inert,), {"__module__": "tcig_ops.inert." + module})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if module.startswith(_INERT_MODULE_PREFIXES) or module in ("pytorch_lightning", "lightning"):
            return _inert_class(module, name)
        allowed = _weights_only_allow_list()
        if full in allowed:
            return allowed[full]
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if (module == "torch._utils" and name.startswith("_rebuild_")) or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {full}")


def _weights_only_allow_list() -> dict:
    """torch's own weights_only allow-list (tensors, storages, plain containers), where available."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return _get_allowed_globals()
    except (ImportError, AttributeError):  # private API moved: fall back to the rules below
        return {}


_restricted_pickle = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler, load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(), __name__="restricted_pickle"
)


def _convert_hint(path: str) -> str:
    return (
        f"convert it once in a trusted Python with: import torch, safetensors.torch; "
        f"safetensors.torch.save_file(torch.load('{os.path.basename(path)}', weights_only=False)['state_dict'], "
        f"'model.safetensors') and load the .safetensors file instead"
    )


def _short(exc: Exception) -> str:
    """The first line of an exception's message (torch's can run to pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def load_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """Load the tensors of a checkpoint as a flat ``{name: tensor}`` dict on CPU.

    A Lightning-style checkpoint's ``state_dict`` entry is unwrapped. Raises
    TCIGInputError for missing, truncated or unsafe files.
    """
    require_file(path, what)
    lower = path.lower()
    if lower.endswith(".safetensors"):
        import safetensors.torch

        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as exc:  # safetensors raises several types for bad headers
            raise TCIGInputError(f"{what}: {path} is not a readable .safetensors file ({exc}); re-download it") from None
    if not lower.endswith(PICKLE_SUFFIXES):
        raise TCIGInputError(f"{what}: {path} has an unknown extension; use .safetensors or .ckpt/.pt/.pth/.bin")
    if not zipfile.is_zipfile(path):
        raise TCIGInputError(
            f"{what}: {path} is truncated or not a PyTorch checkpoint (legacy or corrupt format); re-download it or " + _convert_hint(path)
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
        except (pickle.UnpicklingError, AttributeError, TypeError, ImportError) as exc:
            raise TCIGInputError(
                f"{what}: {path} carries pickled code or objects that are not weights ({exc}); it was not loaded. "
                "If you trust its source, " + _convert_hint(path)
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
            raise TCIGInputError(
                f"{what}: {path} could not be read ({_short(exc)}); the file is probably truncated, re-download it"
            ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise TCIGInputError(f"{what}: {path} could not be read ({_short(exc)}); the file is probably truncated, re-download it") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TCIGInputError(f"{what}: {path} does not hold a state dict of tensors")
    return obj
