"""Reading pickles that someone else wrote, without running code from them and without blowing up.

Two readers share one guard:

- :func:`load_plain` reads plain-data pickles (MMPT's ``{split}_meta.pkl``, YouCook2's ``youcook_val.pkl``): only
  dicts, lists, tuples, strings, ints, floats, booleans and None. Any other opcode (a class or function lookup,
  a call, ``__setstate__``, bytes, sets, persistent ids, out-of-band buffers) is refused **before any object is
  built**.
- :func:`load_checkpoint` reads a torch zip checkpoint (``torch.save`` since torch 1.6) such as fairseq's VideoCLIP
  ``checkpoint_best.pt``: tensor-rebuild functions resolve to our own implementations, plain containers to
  themselves, and every other global to an inert :class:`Placeholder` that records its arguments and runs nothing.
  Tensors stay lazy (:class:`LazyTensor`) until :meth:`LazyTensor.load`; every storage record and every view is
  checked against the bytes the archive actually holds before anything is read or allocated.

The guard (:func:`scan`) walks the opcodes without building objects and simulates the pickle machine's stack on
a skeleton of node ids. That gives, before loading, the *logical* size of the result: the number of values a
consumer walking it would visit, where a sub-structure referenced n times (through the pickle memo) counts n
times. A 756-byte pickle whose levels each reference the previous one 60 times describes 60**k values; it is
refused here instead of hanging whoever walks (or hashes) it later. Bounding the logical size bounds every later
walk of the result too, so callers need no defensive walkers of their own.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError, DataError, NortonError

# -- the opcode guard --------------------------------------------------------------------------------------------

_SCALARS = frozenset({
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
    "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8",
})
_PLAIN = _SCALARS | {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
}
#: opcodes a checkpoint may also use: they build opaque objects (which our checkpoint unpickler resolves to
#: placeholders or to its own tensor rebuilders) or non-container values
_OBJECTS = frozenset({
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4",
    "PERSID", "BINPERSID", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "EMPTY_SET", "ADDITEMS",
    "FROZENSET",
})
_LEAF = -1
_MARK = -2


class PickleRefused(DataError):
    """A pickle holds something the reader does not admit (an object, a call, a bomb); nothing was built."""


def _refuse(source: str, what: str) -> PickleRefused:
    return PickleRefused(f"{source}: {what}")


def scan(data: bytes, *, source: str, plain: bool, max_items: int, max_depth: int) -> tuple[int, int]:
    """Check a pickle's opcodes without building anything; returns ``(items, depth)`` of the result.

    ``items`` counts every value (containers and scalars; a shared sub-structure each time it is referenced),
    ``depth`` the container nesting (a scalar is 0, a list of scalars 1). With ``plain`` only plain-data opcodes
    are admitted. Raises :class:`PickleRefused` naming ``source`` and, for a refused opcode, its byte offset.
    """
    stack: list[int] = []
    memo: dict[int, int] = {}
    children: list[list[int]] = []  # node id -> the entries it holds (node ids, or _LEAF)
    allowed = _PLAIN if plain else _PLAIN | _OBJECTS

    def node(items: list[int]) -> int:
        children.append(items)
        return len(children) - 1

    def pop_mark() -> list[int]:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] == _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise _refuse(source, "malformed pickle (no MARK)")

    def pop() -> int:
        if not stack or stack[-1] == _MARK:
            raise _refuse(source, "malformed pickle (stack underflow)")
        return stack.pop()

    def top() -> int:
        if not stack or stack[-1] == _MARK:
            raise _refuse(source, "malformed pickle (stack underflow)")
        return stack[-1]

    def add_to_top(items: list[int]) -> None:
        if not stack or stack[-1] < 0:
            raise _refuse(source, "malformed pickle (nothing to add items to)")
        children[stack[-1]].extend(items)

    root = None
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name not in allowed:
                what = "an object or a call" if name in _OBJECTS else "a value this reader does not admit"
                raise _refuse(source, f"pickle byte {pos}: opcode {name} ({what}); only dicts, lists, tuples, "
                                      "strings, numbers, booleans and None are read")
            if name in _SCALARS or name in ("GLOBAL", "EXT1", "EXT2", "EXT4", "PERSID", "BINBYTES",
                                            "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                stack.append(_LEAF)
            elif name == "MEMOIZE":  # second most frequent: pickle.dump memoizes every string
                memo[len(memo)] = top()
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET"):
                stack.append(node([]))
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("LIST", "TUPLE", "DICT", "FROZENSET", "INST"):
                stack.append(node(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = [pop() for _ in range(n)][::-1]
                stack.append(node(items))
            elif name == "APPEND":
                item = pop()
                add_to_top([item])
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                items = pop_mark()
                add_to_top(items)
            elif name == "SETITEM":
                value, key = pop(), pop()
                add_to_top([key, value])
            elif name == "POP":
                if stack and stack[-1] == _MARK:
                    stack.pop()
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise _refuse(source, f"pickle byte {pos}: reference to memo entry {arg} that was never stored")
                stack.append(memo[int(arg)])
            elif name == "STACK_GLOBAL":
                pop(), pop()
                stack.append(_LEAF)
            elif name in ("REDUCE", "NEWOBJ"):
                args, func = pop(), pop()
                stack.append(node([func, args]))
            elif name == "NEWOBJ_EX":
                kwargs, args, cls = pop(), pop(), pop()
                stack.append(node([cls, args, kwargs]))
            elif name == "OBJ":
                stack.append(node(pop_mark()))
            elif name == "BINPERSID":
                stack.append(node([pop()]))
            elif name == "BUILD":
                state = pop()
                if stack and stack[-1] >= 0:
                    children[stack[-1]].append(state)
                else:
                    stack.append(node([pop(), state]))
            elif name == "STOP":
                root = pop()
            # PROTO and FRAME change nothing on the stack
    except PickleRefused:
        raise
    except (ValueError, EOFError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        raise _refuse(source, f"not a readable pickle ({exc})") from None
    if root is None:
        raise _refuse(source, "not a readable pickle (no STOP opcode)")
    items, depth = _measure(root, children, max_items, source, plain)
    if items > max_items:
        raise _refuse(source, f"the pickle describes more than {max_items} values (shared sub-structures count each "
                              "time they are referenced); refusing to build it")
    if depth > max_depth:
        raise _refuse(source, f"the pickle nests {depth} containers deep, more than the {max_depth} expected")
    return items, depth


def _measure(root: int, children: list[list[int]], cap: int, source: str, plain: bool) -> tuple[int, int]:
    """Logical size (saturated at ``cap + 1``) and nesting depth of ``root``, by an iterative post-order walk of
    the skeleton: each node is visited once, however often it is referenced."""
    if root == _LEAF:
        return 1, 0
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    todo: list[tuple[int, bool]] = [(root, False)]
    while todo:
        n, done = todo.pop()
        if done:
            on_path.discard(n)
            kids = children[n]
            total, deepest = 1, 0
            for c in kids:
                if c == _LEAF:
                    total += 1
                else:
                    total += size.get(c, 1)  # a back edge (a cycle) counts once
                    deepest = max(deepest, depth.get(c, 0))
                if total > cap:
                    total = cap + 1
            size[n], depth[n] = total, deepest + 1
            continue
        if n in size:
            continue
        on_path.add(n)
        todo.append((n, True))
        for c in children[n]:
            if c >= 0 and c not in size:
                if c in on_path:
                    if plain:
                        raise _refuse(source, "the pickle holds a container that contains itself")
                    continue
                todo.append((c, False))
    return size[root], depth[root]


class _NoGlobals(pickle.Unpickler):
    """Second line of defence behind :func:`scan`: resolves nothing."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to look up {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def load_plain(data: bytes, *, source: str, max_items: int, max_depth: int) -> Any:
    """The value of a plain-data pickle: nested dicts, lists and tuples of str, int, float, bool and None.

    :param data: the pickle's bytes.
    :param source: what the bytes are (usually the file path); every error message starts with it.
    :param max_items: the most values the result may hold, containers and scalars together, a shared
        sub-structure counted each time it is referenced. ``len(data)`` is a natural bound for files written by
        ``pickle.dump`` (each value costs at least a byte unless the file shares sub-structures on purpose).
    :param max_depth: the deepest container nesting admitted (``{0: ["a"]}`` is 2).
    :raises PickleRefused: (a :class:`~norton_core.errors.DataError`) for any other opcode, a result over the
        bounds, or a malformed pickle; nothing has been built when it is raised by the opcode check.
    """
    scan(data, source=source, plain=True, max_items=max_items, max_depth=max_depth)
    try:
        return _NoGlobals(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        # e.g. a list used as a dict key (unhashable): refused by Python while building
        raise _refuse(source, f"not a plain-data pickle ({type(exc).__name__}: {exc})") from None


# -- torch zip checkpoints ---------------------------------------------------------------------------------------

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
