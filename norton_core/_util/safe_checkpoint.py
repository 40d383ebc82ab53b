"""Reading a torch zip checkpoint (``torch.save`` since torch 1.6, such as fairseq's VideoCLIP
``checkpoint_best.pt``) without running code from it and without trusting its sizes.

:func:`load_checkpoint` unpickles ``data.pkl`` after the opcode guard of :mod:`norton_core._util.safe_pickle` has bounded
it: tensor-rebuild functions resolve to our own implementations, plain containers to themselves, and every other
global to an inert :class:`Placeholder` that records its arguments and runs nothing. Tensors stay lazy
(:class:`LazyTensor`) until :meth:`LazyTensor.load`; every storage record and every view is checked against the
bytes the archive actually holds before anything is read or allocated.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from norton_core._util.safe_pickle import PickleRefused, scan
from norton_core.errors import CheckpointError, NortonError

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1}
#: bounds of the checkpoint pickle's object tree (fairseq checkpoints: tens of thousands of values, depth ~12)
CHECKPOINT_MAX_DEPTH = 64


def _checkpoint_max_items(pickle_bytes: int) -> int:
    return 8 * pickle_bytes + 100_000


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
    """A storage record whose element count matches the bytes its archive member holds (checked on creation)."""

    def __init__(self, archive: _Archive, key: str, dtype: str, numel: int) -> None:
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel


class LazyTensor:
    """A tensor of the checkpoint, read from the archive on :meth:`load`; its view fits its storage."""

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


def _as_ints(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        return None
    return tuple(value)


def _check_view(storage: LazyStorage, offset: Any, size: Any, stride: Any) -> tuple[int, tuple[int, ...],
                                                                                     tuple[int, ...]]:
    """Refuse a view that reads outside its storage or repeats elements (a stride-0 or overlapping view would make
    ``clone()`` allocate more than the archive holds)."""
    where = f"{storage.archive.path}: tensor on storage {storage.key!r}"
    shape, steps = _as_ints(size), _as_ints(stride)
    if type(offset) is not int or shape is None or steps is None or len(shape) != len(steps):
        raise CheckpointError(f"{where}: malformed view (offset {offset!r:.40}, size {size!r:.60}, "
                              f"stride {stride!r:.60})")
    if offset < 0:
        raise CheckpointError(f"{where}: negative storage offset {offset}")
    if any(n < 0 for n in shape) or any(s < 0 for s in steps):
        raise CheckpointError(f"{where}: negative size or stride (size {shape}, stride {steps})")
    for dim, (n, s) in enumerate(zip(shape, steps, strict=True)):
        if n > 1 and s == 0:
            raise CheckpointError(f"{where}: stride 0 in dimension {dim} (a broadcast view, size {shape}); stored "
                                  "weights never repeat elements")
    count = 1
    for n in shape:
        count *= n
    if count == 0:
        if offset > storage.numel:
            raise CheckpointError(f"{where}: offset {offset} past the storage's {storage.numel} elements")
        return offset, shape, steps
    last = offset + sum((n - 1) * s for n, s in zip(shape, steps, strict=True))
    if count > storage.numel or last >= storage.numel:
        raise CheckpointError(f"{where}: view of size {shape} (stride {steps}, offset {offset}) needs "
                              f"{max(count, last + 1)} elements, the storage holds {storage.numel}")
    return offset, shape, steps


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> LazyTensor:
    if not isinstance(storage, LazyStorage):
        raise CheckpointError("checkpoint tensor without a storage record (not a torch zip checkpoint?)")
    return LazyTensor(storage, *_check_view(storage, offset, size, stride))


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
    """The zip members of a torch checkpoint; only uncompressed members (all torch.save writes) are read, so
    every size is bounded by the bytes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size_on_disk = path.stat().st_size
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable zip archive ({exc})") from None
        names = self.zip.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: not a torch zip checkpoint (expected one data.pkl, found {len(pickles)})")
        self.pickle_name = pickles[0]
        self.prefix = self.pickle_name[: -len("data.pkl")]
        self._cache: dict[str, Any] = {}

    def member(self, name: str) -> zipfile.ZipInfo:
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: archive member {name} is missing") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{self.path}: archive member {name} is compressed; torch.save stores members "
                                  "uncompressed, so this is not a torch checkpoint")
        if info.file_size > self.size_on_disk:
            raise CheckpointError(f"{self.path}: archive member {name} claims {info.file_size} bytes, more than the "
                                  f"whole file's {self.size_on_disk}")
        return info

    def read(self, name: str) -> bytes:
        self.member(name)
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: archive member {name} is unreadable ({exc})") from None

    def storage_record(self, key: str, dtype: str, numel: Any) -> LazyStorage:
        name = f"{self.prefix}data/{key}"
        info = self.member(name)
        if type(numel) is not int or numel < 0 or numel * _ITEMSIZE[dtype] != info.file_size:
            raise CheckpointError(f"{self.path}: storage {key!r} claims {numel!r:.40} {dtype} elements, but its "
                                  f"archive member holds {info.file_size} bytes")
        return LazyStorage(self, key, dtype, numel)

    def storage(self, key: str, dtype: str) -> Any:
        import torch

        if key not in self._cache:
            raw = self.read(f"{self.prefix}data/{key}")
            self._cache[key] = torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)) if raw else \
                torch.empty(0, dtype=getattr(torch, dtype))
        return self._cache[key]


class _CheckpointUnpickler(pickle.Unpickler):
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
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        dtype = storage_type.dtype if isinstance(storage_type, StorageType) else None
        if dtype is None:  # torch >= 2 may name the untyped storage and pass the dtype separately
            raise CheckpointError(f"{self.archive.path}: storage {key} of unknown type {storage_type!r:.60}")
        return self.archive.storage_record(key, dtype, numel)


def load_checkpoint(path: str | Path) -> tuple[Any, set[str]]:
    """The checkpoint's object tree (tensors as :class:`LazyTensor`) and the names that became placeholders."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch zip checkpoint (legacy pre-1.6 torch.save files are not read)")
    archive = _Archive(path)
    data = archive.read(archive.pickle_name)
    source = f"{path} ({archive.pickle_name})"
    try:
        scan(data, source=source, plain=False, max_items=_checkpoint_max_items(len(data)),
             max_depth=CHECKPOINT_MAX_DEPTH)
    except PickleRefused as exc:
        raise CheckpointError(str(exc)) from None
    unpickler = _CheckpointUnpickler(data, archive)
    try:
        obj = unpickler.load()
    except NortonError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, RecursionError, MemoryError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint pickle ({type(exc).__name__}: {exc})") from exc
    return obj, unpickler.placeholders
