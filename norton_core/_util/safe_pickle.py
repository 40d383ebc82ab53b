"""Reading plain-data pickles that someone else wrote, without running code from them and without blowing up.

- :func:`load_plain` reads plain-data pickles (MMPT's ``{split}_meta.pkl``, YouCook2's ``youcook_val.pkl``): only
  dicts, lists, tuples, strings, ints, floats, booleans and None. Any other opcode (a class or function lookup,
  a call, ``__setstate__``, bytes, sets, persistent ids, out-of-band buffers) is refused **before any object is
  built**.
- :func:`scan`, the guard, is shared with :mod:`norton_core._util.safe_checkpoint` (torch zip checkpoints such as
  VideoCLIP's, read without ``torch.load``).

The guard walks the opcodes without building objects and simulates the pickle machine's stack on a skeleton of
node ids, itself bounded: the containers and entries it records are counted as they appear, and the scan stops as
soon as they pass ``max_items`` (memory stays proportional to the limit, not to the file). That gives, before
loading, the *logical* size of the result: the number of values a consumer walking it would visit, where a
sub-structure referenced n times (through the pickle memo) counts n times. A 756-byte pickle whose levels each
reference the previous one 60 times describes 60**k values; it is refused here instead of hanging whoever walks
(or hashes) it later. Bounding the logical size bounds every later walk of the result too, so callers need no
defensive walkers of their own.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any, cast

from norton_core.errors import DataError

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

    held = 0  # containers built plus entries placed in them: never more than the logical size of what is kept

    def grow(n: int) -> None:
        # The skeleton costs memory per container and per entry: bounded here, while it is being built, so that a
        # small file of nested empty lists is refused after max_items steps instead of after gigabytes.
        nonlocal held
        held += n
        if held > max_items:
            raise _refuse(source, f"the pickle builds more than {max_items} values (the limit for this file); "
                                  "refusing to build it")

    def node(items: list[int]) -> int:
        grow(1 + len(items))
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
        grow(len(items))
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
                if len(stack) > max_items:
                    raise _refuse(source, f"pickle byte {pos}: more than {max_items} open marks")
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
                memo[int(cast("int", arg))] = top()  # the memo opcodes' argument is an index
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                key = int(cast("int", arg))
                if key not in memo:
                    raise _refuse(source, f"pickle byte {pos}: reference to memo entry {arg} that was never stored")
                stack.append(memo[key])
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
                    grow(1)
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
    count, nesting = _measure(root, children, max_items, source, plain)
    if count > max_items:
        raise _refuse(source, f"the pickle describes more than {max_items} values (shared sub-structures count each "
                              "time they are referenced); refusing to build it")
    if nesting > max_depth:
        raise _refuse(source, f"the pickle nests {nesting} containers deep, more than the {max_depth} expected")
    return count, nesting


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
