"""Options of a constructor or builder, read from its signature and docstring.

``wsol config show``, ``wsol models`` and ``wsol methods`` list every keyword a model or method
accepts with its default and one line of documentation, so no option is visible only in the
source. The documentation line comes from a Google-style ``Args:`` entry of the docstring
(``name: text``) of the callable or of its class; without one, the type annotation is shown.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "options_of"]


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    annotation: str
    doc: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _arg_docs(*docs: str | None) -> dict[str, str]:
    """``name -> first sentence`` from the ``Args:`` sections of ``docs``."""
    out: dict[str, str] = {}
    for doc in docs:
        if not doc:
            continue
        lines = inspect.cleandoc(doc).splitlines()
        in_args, current = False, None
        for line in lines:
            if re.match(r"^\s*(Args|Arguments|Parameters):\s*$", line):
                in_args = True
                continue
            if in_args and line and not line.startswith(" "):
                in_args = False
            if not in_args:
                continue
            m = re.match(r"^\s{2,8}([\w, ]+?)(?: \([^)]*\))?:\s*(.*)$", line)
            if m and not line.startswith(" " * 9):
                names = [n.strip() for n in m.group(1).split(",")]
                current = names
                for n in names:
                    out.setdefault(n, m.group(2).strip())
            elif current and line.strip():
                for n in current:
                    if not out[n].endswith("."):
                        out[n] = f"{out[n]} {line.strip()}".strip()
    return {k: v.split(". ")[0].rstrip(".") for k, v in out.items()}


def options_of(fn: Callable[..., Any], skip: Iterable[str] = ()) -> list[Option]:
    """Keyword options of ``fn`` (a function or a class) except ``skip`` and ``*args``/``**kw``."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    sources = [getattr(fn, "__doc__", None), getattr(target, "__doc__", None)]
    if inspect.isclass(fn):
        sources += [c.__doc__ for c in inspect.getmro(fn)[1:]]
    docs = _arg_docs(*sources)
    skip = set(skip) | {"self"}
    out = []
    for name, param in inspect.signature(target).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = param.annotation
        ann_text = "" if ann is inspect.Parameter.empty else (ann if isinstance(ann, str)
                                                              else getattr(ann, "__name__", str(ann)))
        out.append(Option(name, param.default, ann_text, docs.get(name, "")))
    return out
