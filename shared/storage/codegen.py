"""Write the typed storage methods from the ``StorageOperations`` Protocol.

``python -m shared.storage.codegen`` (``make codegen``) writes two checked-in
modules, so that the type checker sees every operation with the Protocol's own
signature:

- ``shared/storage/delegation.py``: ``StorageDelegation``, a mixin whose every
  operation delegates to ``self.adapter`` (``AgentRuntime`` inherits it);
- ``shared/storage/remote_operations.py``: ``RemoteStorageOperations``, whose
  every operation is a request to the memory service through ``self.call``
  (``NatsMemoryClient`` inherits it).

Run it after changing the Protocol; a unit test fails while the files are out
of date. ``--check`` only says whether they are.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.storage import StorageOperations

COMMAND = "python -m shared.storage.codegen"
"""How to regenerate the files (also ``make codegen``)."""

HERE = Path(__file__).resolve().parent
DELEGATION = HERE / "delegation.py"
REMOTE = HERE / "remote_operations.py"

_LITERAL_DEFAULTS = (type(None), bool, int, float, str)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the Protocol, ready to be written as source."""

    name: str
    signature: inspect.Signature
    hints: dict[str, object]
    summary: str

    @property
    def parameters(self) -> list[inspect.Parameter]:
        """The operation's parameters, without ``self``."""
        return list(self.signature.parameters.values())[1:]

    @property
    def returns(self) -> object:
        """The evaluated return type."""
        return self.hints["return"]


class _Imports:
    """The names a generated module needs, and where each comes from."""

    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}

    def add(self, module: str, name: str) -> str:
        known = self._by_name.setdefault(name, module)
        if known != module:
            raise TypeError(f"{name} is both {known}.{name} and {module}.{name}")
        return name

    def lines(self) -> Iterator[str]:
        by_module: dict[str, list[str]] = {}
        for name, module in self._by_name.items():
            by_module.setdefault(module, []).append(name)
        for module, names in by_module.items():
            yield f"from {module} import {', '.join(sorted(names))}"


def operations() -> list[Operation]:
    """Return the Protocol's operations, in its order, or raise if one cannot be written."""
    found: list[Operation] = []
    for name, member in vars(StorageOperations).items():
        if name.startswith("_") or not callable(member):
            continue
        if not inspect.iscoroutinefunction(member):
            raise TypeError(f"StorageOperations.{name} must be an async method")
        doc = inspect.getdoc(member)
        if not doc:
            raise TypeError(f"StorageOperations.{name} needs a docstring")
        summary = doc.split("\n\n", 1)[0].strip()
        if '"""' in summary or "\\" in summary:
            raise TypeError(f"StorageOperations.{name}: its docstring cannot be copied as is")
        found.append(
            Operation(name, inspect.signature(member), typing.get_type_hints(member), summary)
        )
    return found


def render_type(hint: object, imports: _Imports) -> str:
    """Write an evaluated type as source, recording the imports it needs."""
    if hint is None or hint is type(None):
        return "None"
    if hint is Ellipsis:
        return "..."
    if hint is Any:
        return imports.add("typing", "Any")
    if typing.get_origin(hint) is not None:
        return _render_generic(hint, imports)
    if isinstance(hint, type):
        if hint.__module__ == "builtins":
            return hint.__qualname__
        return imports.add(hint.__module__, hint.__qualname__)
    raise TypeError(f"cannot write the type {hint!r}")


def _render_generic(hint: object, imports: _Imports) -> str:
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin in {types.UnionType, typing.Union}:
        return " | ".join(render_type(argument, imports) for argument in arguments)
    if origin is typing.Literal:
        imports.add("typing", "Literal")
        return f"Literal[{', '.join(repr(argument) for argument in arguments)}]"
    inner = ", ".join(render_type(argument, imports) for argument in arguments)
    return f"{render_type(origin, imports)}[{inner}]"


def _signature(operation: Operation, imports: _Imports) -> str:
    written = ["self"]
    keyword_only = False
    for parameter in operation.parameters:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            written.append("*")
            keyword_only = True
        elif parameter.kind not in {
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        }:
            raise TypeError(f"{operation.name}: parameter {parameter.name} is {parameter.kind}")
        text = f"{parameter.name}: {render_type(operation.hints[parameter.name], imports)}"
        if parameter.default is not inspect.Parameter.empty:
            if type(parameter.default) not in _LITERAL_DEFAULTS:
                raise TypeError(f"{operation.name}: {parameter.name}'s default is not a literal")
            text += f" = {parameter.default!r}"
        written.append(text)
    returns = render_type(operation.returns, imports)
    return f"async def {operation.name}({', '.join(written)}) -> {returns}:"


def _method(operation: Operation, imports: _Imports, body: str) -> str:
    return (
        f"    {_signature(operation, imports)}\n"
        f'        """{_indent(operation.summary, 8)}"""\n'
        f"        {body}\n"
    )


def _indent(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)


def _delegation_call(operation: Operation) -> str:
    arguments = ", ".join(
        parameter.name
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        else f"{parameter.name}={parameter.name}"
        for parameter in operation.parameters
    )
    call = f"await self.adapter.{operation.name}({arguments})"
    return call if operation.returns in {None, type(None)} else f"return {call}"


def _remote_call(operation: Operation, imports: _Imports) -> str:
    arguments = ", ".join(f'"{p.name}": {p.name}' for p in operation.parameters)
    call = f'await self.call(OPERATIONS["{operation.name}"], {{{arguments}}})'
    if operation.returns in {None, type(None)}:
        return call
    if operation.returns is Any:
        return f"return {call}"
    imports.add("typing", "cast")
    return f'return cast("{render_type(operation.returns, imports)}", {call})'


_HEADER = '''"""{title}

Generated from ``contracts.storage.StorageOperations`` by ``{command}``
(``make codegen``): do not edit it by hand.
"""

from __future__ import annotations

'''


def _module(
    *,
    title: str,
    imports: _Imports,
    class_source: str,
    methods: list[str],
) -> str:
    return (
        _HEADER.format(title=title, command=COMMAND)
        + "\n".join(imports.lines())
        + "\n\n\n"
        + class_source
        + "\n".join(methods)
    )


def delegation_source(ops: list[Operation]) -> str:
    """Return ``shared/storage/delegation.py`` as it should be, before formatting."""
    imports = _Imports()
    imports.add("abc", "ABC")
    imports.add("abc", "abstractmethod")
    imports.add("shared.storage.adapter", "DatabaseAdapter")
    methods = [_method(op, imports, _delegation_call(op)) for op in ops]
    class_source = (
        "class StorageDelegation(ABC):\n"
        '    """Every storage operation, delegated to ``self.adapter``."""\n'
        "\n"
        "    @property\n"
        "    @abstractmethod\n"
        "    def adapter(self) -> DatabaseAdapter:\n"
        '        """The storage every operation goes to."""\n'
        "\n"
    )
    return _module(
        title="``StorageDelegation``: every storage operation, on the object that has the adapter.",
        imports=imports,
        class_source=class_source,
        methods=methods,
    )


def remote_source(ops: list[Operation]) -> str:
    """Return ``shared/storage/remote_operations.py`` as it should be, before formatting."""
    imports = _Imports()
    imports.add("abc", "ABC")
    imports.add("abc", "abstractmethod")
    imports.add("collections.abc", "Mapping")
    imports.add("contracts.memory", "OPERATIONS")
    imports.add("contracts.memory", "MemoryOperation")
    methods = [_method(op, imports, _remote_call(op, imports)) for op in ops]
    class_source = (
        "class RemoteStorageOperations(ABC):\n"
        '    """Every storage operation, as a request to the memory service."""\n'
        "\n"
        "    @abstractmethod\n"
        "    async def call(\n"
        "        self, operation: MemoryOperation, arguments: Mapping[str, object]\n"
        "    ) -> object:\n"
        '        """Send one operation with its arguments by name, and return its value."""\n'
        "\n"
    )
    return _module(
        title="``RemoteStorageOperations``: every storage operation, as a memory-service request.",
        imports=imports,
        class_source=class_source,
        methods=methods,
    )


def _ruff(arguments: list[str], source: str, path: Path) -> str:
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "ruff", *arguments, "--stdin-filename", str(path), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=HERE.parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ruff {' '.join(arguments)} failed on {path}:\n{done.stderr}")
    return done.stdout


def formatted(source: str, path: Path) -> str:
    """Return ``source`` with its imports sorted and ruff-formatted, as if it were ``path``."""
    sorted_imports = _ruff(["check", "--select", "I", "--fix", "--quiet"], source, path)
    return _ruff(["format", "--quiet"], sorted_imports, path)


def generated() -> dict[Path, str]:
    """Return every generated file's path and the text it should have."""
    ops = operations()
    sources: dict[Path, Callable[[list[Operation]], str]] = {
        DELEGATION: delegation_source,
        REMOTE: remote_source,
    }
    return {path: formatted(render(ops), path) for path, render in sources.items()}


def _differs(path: Path, text: str) -> bool:
    return not path.exists() or path.read_text(encoding="utf-8") != text


def stale() -> list[Path]:
    """Return the generated files whose text differs from what the Protocol gives."""
    return [path for path, text in generated().items() if _differs(path, text)]


def main(argv: list[str]) -> int:
    """Write the files that are out of date; with ``--check``, only name them (exit 1)."""
    if argv not in ([], ["--check"]):
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    texts = generated()
    out_of_date = [path for path, text in texts.items() if _differs(path, text)]
    for path in out_of_date:
        if argv:
            print(f"{path} is out of date: run {COMMAND}")
        else:
            path.write_text(texts[path], encoding="utf-8")
            print(f"wrote {path}")
    return 1 if argv and out_of_date else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
