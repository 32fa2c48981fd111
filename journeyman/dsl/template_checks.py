"""The templates a journey's send steps render: checked when the journey is compiled.

Each channel of each send step has its template file; every file that step can render
(locale variants, the plain-text email, the layouts and macros it uses) exists, parses
and reads only names a template can see; an email has a subject, a push and an inbox
message a title and a body. `template_files` gathers every file a plan's messages can
use, which the plan's version hashes and which travel with it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, meta, nodes

from journeyman.dsl.expressions import FUNCTIONS, KNOWN_NAMES
from journeyman.dsl.fields import ID_PATTERN
from journeyman.dsl.model import Journey, SendStep
from journeyman.dsl.problems import At

CHANNEL_FILES = {
    "email": "email.html",
    "sms": "sms.txt",
    "push": "push.txt",
    "whatsapp": "whatsapp.txt",
    "inbox": "inbox.txt",
}
# Blocks the renderer cannot do without (journeyman/messaging/rendering.py).
REQUIRED_BLOCKS = {"email": ("subject",), "push": ("title", "body"), "inbox": ("title", "body")}
LAYOUTS_DIR = "_layouts"


def check_templates(
    steps: list[Any], templates_dir: Path, at: At, checker: TemplateChecker | None = None
) -> None:
    """Each channel of each send step has its template file; every file that step can
    render (locale variants, the plain-text email, layouts and macros it uses) exists
    and parses; an email has a subject, a push a title and a body. `checker` may be
    shared by the journeys of one compile (it reads each file once)."""
    checker = checker or TemplateChecker(templates_dir)
    for index, step in enumerate(steps):
        send = step.get("send") if isinstance(step, dict) else None
        if not isinstance(send, dict):
            continue
        template = send.get("template")
        # A name that is not an id is reported as such; looking it up could leave the
        # templates folder (`../x`).
        if not isinstance(template, str) or not re.fullmatch(ID_PATTERN, template):
            continue
        folder = templates_dir / template
        where = ("steps", index, "send", "template")
        if not checker.is_dir(folder):
            at(where, f"no template {template!r} (expected folder {folder})")
            continue
        listed = send.get("channels")
        channels = listed if isinstance(listed, list) else []
        for n, channel in enumerate(channels):
            filename = CHANNEL_FILES.get(channel) if isinstance(channel, str) else None
            if filename is None:
                continue
            path = folder / filename
            if not checker.is_file(path):
                at(
                    ("steps", index, "send", "channels", n),
                    f"template {template!r} has no {filename} for channel {channel} ({path})",
                )
                continue
            for variant in checker.variants(path):
                for message in checker.problems(variant):
                    at(where, message)
            if channel == "email":
                for plain in checker.variants(folder / "email.txt"):
                    for message in checker.problems(plain):
                        at(where, message)
            for variant in checker.variants(path):
                for block in REQUIRED_BLOCKS.get(channel, ()):
                    if not checker.has_block(variant, block):
                        at(where, f"{variant} has no {{% block {block} %}}: {channel} needs one")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # such as a name longer than the file system allows
        return False


def _variants(path: Path) -> list[Path]:
    """`email.html` and its locale variants such as `email.fr.html`, those that exist."""
    found = sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
    return [path, *found] if path.is_file() else found


_USES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
# What a template may read besides what it sets itself: the names of expressions, the
# link the channel adds, and what Jinja gives every template.
TEMPLATE_NAMES = frozenset(
    {
        *KNOWN_NAMES,
        *FUNCTIONS,
        "unsubscribe_url",
        *Environment().globals,
        *("loop", "self", "super", "caller", "varargs", "kwargs"),
    }
)


def _set_names(tree: nodes.Template) -> set[str]:
    """Every name the template sets: `{% set %}`, `{% for %}` targets, macros, imports."""
    names: set[str] = set()
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock, nodes.For)):
        assert isinstance(node, (nodes.Assign, nodes.AssignBlock, nodes.For))
        names.update(n.name for n in node.target.find_all(nodes.Name))
        if isinstance(node.target, nodes.Name):
            names.add(node.target.name)
    names.update(macro.name for macro in tree.find_all(nodes.Macro))
    names.update(imported.target for imported in tree.find_all(nodes.Import))
    for from_import in tree.find_all(nodes.FromImport):
        names.update(n if isinstance(n, str) else n[1] for n in from_import.names)
    return names


def _template_name(node: nodes.Node) -> str | None:
    """The file a `{% extends %}`, `{% include %}` or `{% import %}` names, when it is
    written as a plain string (a name computed at render time cannot be checked)."""
    template = getattr(node, "template", None)
    if isinstance(template, nodes.Const) and isinstance(template.value, str):
        return template.value
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# Template analyses shared by every compile of this process, keyed by the template's
# text (a `dev` that recompiles on every save, a deploy of many journeys sharing layouts):
# parsing, compiling and walking a template cost far more than reading it.
_ANALYSES = 512
_CHECK_ENV = Environment()


@functools.lru_cache(maxsize=_ANALYSES)
def _checked_tree(text: str) -> nodes.Template | tuple[int | None, str]:
    """The parsed tree of a template's text, compiled once to find what parsing lets
    through (a filter or test Jinja does not have); (line, message) when it fails. The
    tree is shared: nothing here changes it."""
    try:
        tree = _CHECK_ENV.parse(text)
        _CHECK_ENV.compile(tree)
    except TemplateSyntaxError as exc:  # TemplateAssertionError included
        return exc.lineno, exc.message or ""
    return tree


@functools.lru_cache(maxsize=_ANALYSES)
def _used_names(text: str) -> tuple[str, ...] | None:
    """The template files a template's text extends, includes or imports by a plain
    name; None when it does not parse."""
    try:
        tree = _CHECK_ENV.parse(text)
    except TemplateSyntaxError:
        return None
    return tuple(n for n in map(_template_name, tree.find_all(_USES)) if n is not None)


_Analysis = tuple[frozenset[str], frozenset[str], tuple[tuple[str, str], ...]]
_TREE_ANALYSES: dict[int, tuple[nodes.Template, _Analysis]] = {}


def _analysis(tree: nodes.Template) -> _Analysis:
    """(the names the tree reads undeclared, the names it sets, (how, name) of each
    template it extends or uses by a plain name), once per shared tree."""
    cached = _TREE_ANALYSES.get(id(tree))
    if cached is None or cached[0] is not tree:
        if len(_TREE_ANALYSES) >= 4 * _ANALYSES:
            _TREE_ANALYSES.clear()
        used = []
        for node in tree.find_all(_USES):
            name = _template_name(node)
            if name is not None:
                used.append(("extends" if isinstance(node, nodes.Extends) else "uses", name))
        analysis = (
            frozenset(meta.find_undeclared_variables(tree)),
            frozenset(_set_names(tree)),
            tuple(used),
        )
        cached = _TREE_ANALYSES[id(tree)] = (tree, analysis)
    return cached[1]


class TemplateChecker:
    """Parses each template file once and follows `{% extends %}`, `{% include %}` and
    `{% import %}` within the templates folder, so that a broken or missing layout is
    reported by every send step that uses it.

    One checker is one look at the folder: what it found (files, their text, their
    problems) is kept for its life, so the journeys of one compile share it and each
    compile makes its own."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.parsed: dict[Path, nodes.Template | str] = {}
        self._root = templates_dir.resolve()
        self._found: dict[tuple[str, str], Any] = {}
        self._files: dict[frozenset[str], dict[str, bytes]] = {}
        self._contents: dict[tuple[str, bytes], tuple[str | None, bytes]] = {}

    def _once(self, kind: str, path: Path, find: Any) -> Any:
        key = (kind, str(path))  # a Path hashes its parts anew each time; its text is kept
        if key not in self._found:
            self._found[key] = find()
        return self._found[key]

    def is_file(self, path: Path) -> bool:
        return bool(self._once("file", path, path.is_file))

    def is_dir(self, path: Path) -> bool:
        return bool(self._once("dir", path, lambda: _is_dir(path)))

    def variants(self, path: Path) -> list[Path]:
        return list(self._once("variants", path, lambda: _variants(path)))

    def text_of(self, relative: str, data: bytes) -> str | None:
        """A template file's text (None for a binary file such as an image), decoded once."""
        return self._file(relative, data)[0]

    def digest_of(self, relative: str, data: bytes) -> bytes:
        """What a file adds to a plan's version hash: its name and its content's hash."""
        return self._file(relative, data)[1]

    def _file(self, relative: str, data: bytes) -> tuple[str | None, bytes]:
        # Keyed by the content too (the same bytes object, read once, compares at once).
        key = (relative, data)
        if key not in self._contents:
            line = json.dumps([relative, hashlib.sha256(data).hexdigest()]).encode()
            self._contents[key] = (data.decode() if is_text(data) else None, line)
        return self._contents[key]

    def inside(self, path: Path) -> bool:
        """Whether the path, links resolved, is in the templates folder."""
        return bool(self._once("inside", path, lambda: path.resolve().is_relative_to(self._root)))

    def _parse(self, path: Path) -> nodes.Template | str:
        """The template's tree, or why it has none. Compiling it too finds what parsing
        lets through: a filter or test Jinja does not have (`| titel`)."""
        if path not in self.parsed:
            try:
                tree = _checked_tree(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                self.parsed[path] = f"{path}: cannot read the template: {exc}"
            else:
                if isinstance(tree, tuple):
                    lineno, message = tree
                    self.parsed[path] = f"{path}:{lineno}: template does not parse: {message}"
                else:
                    self.parsed[path] = tree
        return self.parsed[path]

    def _used(self, path: Path, tree: nodes.Template) -> list[tuple[str, Path]]:
        """(how, file) for each template this one extends, includes or imports by name."""
        return [(how, self.templates_dir / name) for how, name in _analysis(tree)[2]]

    def problems(self, path: Path) -> list[str]:
        """Why this template, or one it uses, cannot be rendered; empty when it can."""
        return list(self._once("problems", path, lambda: self._problems(path)))

    def _problems(self, path: Path) -> list[str]:
        found: list[str] = []
        seen: set[Path] = set()
        trees: dict[Path, nodes.Template] = {}
        pending = [path]
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            tree = self._parse(current)
            if isinstance(tree, str):
                found.append(tree)
                continue
            trees[current] = tree
            for how, used in self._used(current, tree):
                if not self.inside(used):
                    found.append(f"{current}: {how} {used}, outside the templates folder")
                elif self.is_file(used):
                    pending.append(used)
                else:
                    found.append(f"{current}: {how} {used}, which does not exist")
        # A name set anywhere in the chain (a layout's `{% set %}`, an imported macro)
        # counts as known in all of it: lenient across files, exact about misspellings.
        known = TEMPLATE_NAMES.union(*(_analysis(tree)[1] for tree in trees.values()))
        for current, tree in trees.items():
            unknown = []
            for name in _analysis(tree)[0] - known:
                line = min(
                    (n.lineno for n in tree.find_all(nodes.Name) if n.name == name),
                    default=1,
                )
                hint = difflib.get_close_matches(name, sorted(TEMPLATE_NAMES), n=1)
                also = f"; did you mean {hint[0]!r}?" if hint else ""
                unknown.append((line, f"{name!r} (line {line}{also})"))
            if unknown:
                unknown.sort()
                found.append(
                    f"{current}:{unknown[0][0]}: unknown"
                    f" {'name' if len(unknown) == 1 else 'names'}"
                    f" {', '.join(text for _, text in unknown)}: templates read profile, event,"
                    " trigger, journey, now, today, unsubscribe_url and the expression functions"
                )
        return found

    def has_block(self, path: Path, name: str) -> bool:
        """Whether the template or a layout it extends defines the block."""
        return bool(self._once(f"block {name}", path, lambda: self._has_block(path, name)))

    def _has_block(self, path: Path, name: str) -> bool:
        seen: set[Path] = set()
        current: Path | None = path
        while current is not None and current not in seen:
            seen.add(current)
            tree = self._parse(current)
            if isinstance(tree, str):
                return True  # reported as not parsing
            if any(block.name == name for block in tree.find_all(nodes.Block)):
                return True
            current = next((p for how, p in self._used(current, tree) if how == "extends"), None)
            if current is not None and not (self.is_file(current) and self.inside(current)):
                return True  # reported as missing
        return False


def template_files(
    journey: Journey, templates_dir: Path, checker: TemplateChecker | None = None
) -> dict[str, bytes]:
    """Every file this journey's messages can use: its templates' folders (images
    included), the shared layouts, and any other template they extend, include or import.
    `checker`, shared by the journeys of one compile, reads each set of folders once."""
    names = frozenset(step.send.template for step in journey.steps if isinstance(step, SendStep))
    if checker is None:
        return _template_files(names, templates_dir)
    if names not in checker._files:
        checker._files[names] = _template_files(names, templates_dir)
    return dict(checker._files[names])


def _template_files(names: frozenset[str], templates_dir: Path) -> dict[str, bytes]:
    pending: list[Path] = []
    for folder_name in sorted(names | {LAYOUTS_DIR}):
        folder = templates_dir / folder_name
        if folder.is_dir():
            pending.extend(p for p in sorted(folder.rglob("*")) if p.is_file())
    files: dict[str, bytes] = {}
    while pending:
        path = pending.pop(0)
        relative = path.relative_to(templates_dir).as_posix()
        if path.name.startswith(".") or relative in files:
            continue
        files[relative] = path.read_bytes()
        if not is_text(files[relative]):
            continue
        for name in _used_names(files[relative].decode()) or ():
            used = templates_dir / name
            if used.is_file() and _inside(used, templates_dir):
                pending.append(used)
    return dict(sorted(files.items()))


def is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
