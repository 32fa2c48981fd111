"""What compiling shares between journeys and recompiles (journeyman/dsl/template_checks.py
`_checked_tree` and `TemplateChecker`, journeyman/dsl/expressions.py's trees by text,
journeyman/dsl/loader.py `_compose`): the results are those of a compile that shares
nothing. Templates are cached by their text, so an edited template is checked again; the
journeys of one compile share one look at the templates folder; YAML composed by libyaml
gives the same values and positions as PyYAML's composer, and whatever libyaml refuses or
nests too deep goes to PyYAML's."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from journeyman.dsl import loader
from journeyman.dsl.loader import MAX_DEPTH, YamlSyntaxError, load_with_positions
from tests.dsl.conftest import Workspace

SEND = """\
- id: remind
  send:
    template: cart_reminder
    channels: [email]
"""


def test_an_edited_template_is_checked_again(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    path = ws.steps(SEND)
    assert ws.compile(path).plan.journey.id == "test_journey"
    email = ws.templates / "cart_reminder" / "email.html"
    good = email.read_text()
    email.write_text(good.replace("profile.first_name", "profile.first_name | titel"))
    (problem,) = ws.problems(path)
    assert "template does not parse" in problem and "titel" in problem
    email.write_text(good.replace("profile.first_name", "profle.first_name"))
    (problem,) = ws.problems(path)
    assert "unknown name 'profle'" in problem
    email.write_text(good)
    assert ws.compile(path).plan.journey.id == "test_journey"


def test_two_journeys_sharing_a_broken_template_each_report_it(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    (ws.templates / "cart_reminder" / "email.html").write_text("{% block subject %}x")
    for stem in ("one", "two"):
        (problem,) = ws.problems(ws.steps(SEND, stem=stem))
        assert f"{ws.templates}/cart_reminder/email.html:1: template does not parse" in problem


def _document(rng: random.Random, depth: int = 0) -> str:
    """A random YAML value, block style, of mappings, lists and scalars."""
    scalars = ["1", "2.5", "yes", "null", "'quoted: x'", "plain text", "2026-12-07", '"é"']
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(scalars)
    pad = "  " * depth
    if rng.random() < 0.5:
        keys = rng.sample(["a", "b", "steps", "send", "when", "x1", "é"], rng.randint(1, 4))
        return "".join(f"\n{pad}{key}: {_document(rng, depth + 1)}" for key in keys)
    return "".join(f"\n{pad}- {_document(rng, depth + 1)}" for _ in range(rng.randint(1, 3)))


def _both(text: str) -> tuple[object, object]:
    def run() -> object:
        try:
            return load_with_positions(text)
        except YamlSyntaxError as exc:
            return ("error", exc.line, exc.column, exc.message)

    fast = run()
    saved, loader._FAST = loader._FAST, None
    try:
        slow = run()
    finally:
        loader._FAST = saved
    return fast, slow


@pytest.mark.skipif(loader._FAST is None, reason="PyYAML without libyaml")
def test_libyaml_composes_what_pyyaml_does_with_the_same_positions() -> None:
    rng = random.Random(19)
    texts = [_document(rng).lstrip("\n") or "a: 1" for _ in range(200)]
    texts += ["a: [1, 2", "a: 1\na: 2", "- a\nb: 1", "a: !!python/object:os.system x", ""]
    texts += ["a:\n\tb: 1", "x: &a [1, *a]", "a: 2026-13-45", "a: \ud83d", "a: \x00", "\ufeffa: 1"]
    for text in texts:
        fast, slow = _both(text)
        assert fast == slow, text


def test_nesting_near_the_limit_is_reported_as_before() -> None:
    for depth in (MAX_DEPTH - 2, MAX_DEPTH, MAX_DEPTH + 5, 5_000):
        text = "[" * depth + "]" * depth
        fast, slow = _both(text)
        assert fast == slow
    fast, _ = _both("[" * 5_000 + "]" * 5_000)
    assert isinstance(fast, tuple) and "nested more than" in str(fast[3])


def test_journeys_compiled_together_share_one_look_at_the_templates(ws: Workspace) -> None:
    """validate() gives one TemplateChecker to all its journeys: each still gets every
    problem of its templates, and the plan it would get compiled alone."""
    from journeyman.dsl import validate

    folder = ws.template("cart_reminder", ("email",))
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")  # not text
    for stem in ("one", "two"):
        ws.steps(SEND, stem=stem)
    together, problems = validate([ws.journeys], ws.templates)
    assert not problems
    for compiled in together:
        alone = ws.compile(compiled.path)
        assert compiled.plan == alone.plan and compiled.templates == alone.templates
        assert set(compiled.templates) == {"cart_reminder/email.html"}
    (folder / "email.html").write_text("{{ profle.first_name }}{% block subject %}x{% endblock %}")
    together, problems = validate([ws.journeys], ws.templates)
    assert not together
    assert sorted(Path(p.file).stem for p in problems) == ["one", "two"]
    assert all("unknown name 'profle'" in p.message for p in problems)


def test_an_expression_compiled_again_is_a_tree_of_its_own() -> None:
    """Trees are kept by their text; each caller gets a copy it may change."""
    from journeyman.dsl.expressions import compile_expression, compile_value

    first = compile_expression("count('order_placed', within=days(30)) > 0")
    first[1][3]["within"].append("changed")
    assert compile_expression(" count('order_placed', within=days(30)) > 0 ") != first
    value = compile_value("Hi {{ profile.first_name }}!")
    value[1].clear()
    assert compile_value("Hi {{ profile.first_name }}!")[1]
