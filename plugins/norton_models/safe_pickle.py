"""Read a torch zip checkpoint (``torch.save`` since torch 1.6) without running any code from it.

``torch.load(weights_only=False)`` executes whatever callables the pickle names; ``weights_only=True`` refuses the
fairseq objects a VideoCLIP checkpoint carries (``argparse.Namespace``, omegaconf configs). This reader resolves
only tensor-rebuild functions (to our own implementations) and plain containers (``OrderedDict``, ``set``, ...);
every other global the pickle names becomes an inert :class:`Placeholder` that records its arguments and state
and runs nothing. Tensors are lazy (:class:`LazyTensor`) until :meth:`LazyTensor.load`, so the optimizer state of
a large checkpoint is never read.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from norton_core.errors import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}


class Placeholder:
    """Stands in for any object the checkpoint pickled; holds what the pickle passed, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"

    qualname = "?"


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    return type(f"Placeholder[{module}.{name}]", (Placeholder,), {"qualname": f"{module}.{name}"})


class StorageType:
    """What the pickle's storage class resolves to: just a dtype name."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class LazyStorage:
    def __init__(self, archive: _Archive, key: str, dtype: str, numel: int) -> None:
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel


class LazyTensor:
    """A tensor of the checkpoint, read from the archive on :meth:`load`."""

    def __init__(self, storage: LazyStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def load(self) -> Any:
        import torch

        flat = self.storage.archive.storage(self.storage.key, self.storage.dtype)
        if not self.size:
            return flat[self.offset].clone()
        return torch.as_strided(flat, self.size, self.stride, self.offset).clone()


def _rebuild_tensor(storage: LazyStorage, offset: int, size: Any, stride: Any, *_: Any) -> LazyTensor:
    if not isinstance(storage, LazyStorage):
        raise CheckpointError("checkpoint tensor without a storage record (not a torch zip checkpoint?)")
    return LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, _type: Any, args: Any, _state: Any) -> Any:
    return func(*args) if func in (_rebuild_tensor, _rebuild_parameter) else Placeholder(func, args)


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError(f"checkpoint pickle asks for the codec {encoding!r}; only latin1/utf-8 are read")
    return text.encode(encoding)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): tuple,
}
# pickle protocol 2 (torch.save's default) names builtins the Python 2 way
_ALLOWED.update({("__builtin__", name): value for (module, name), value in list(_ALLOWED.items())
                 if module == "builtins"})


class _Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path)
        names = self.zip.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a torch zip checkpoint (expected one data.pkl, found {len(pickles)})")
        self.pickle_name = pickles[0]
        self.prefix = self.pickle_name[: -len("data.pkl")]
        self._cache: dict[str, Any] = {}

    def storage(self, key: str, dtype: str) -> Any:
        import torch

        if key not in self._cache:
            raw = self.zip.read(f"{self.prefix}data/{key}")
            self._cache[key] = torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)) if raw else \
                torch.empty(0, dtype=getattr(torch, dtype))
        return self._cache[key]


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.placeholders: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return StorageType(_STORAGE_DTYPES[name])
        self.placeholders.add(f"{module}.{name}")
        return _placeholder_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.archive.path}: unknown persistent record {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        dtype = storage_type.dtype if isinstance(storage_type, StorageType) else None
        if dtype is None:  # torch >= 2 may name the untyped storage and pass the dtype separately
            raise CheckpointError(f"{self.archive.path}: storage {key} of unknown type {storage_type!r}")
        return LazyStorage(self.archive, key, dtype, numel)


def load_checkpoint(path: str | Path) -> tuple[Any, set[str]]:
    """The checkpoint's object tree (tensors as :class:`LazyTensor`) and the names that became placeholders."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch zip checkpoint (legacy pre-1.6 torch.save files are not read)")
    archive = _Archive(path)
    unpickler = _Unpickler(archive.zip.read(archive.pickle_name), archive)
    try:
        obj = unpickler.load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint pickle ({exc})") from exc
    return obj, unpickler.placeholders
