"""Any input to the journey compiler gives a plan or positioned problems, never a crash.

The compiler is driven as `journeyman validate` drives it (`validate([path], templates)`)
with random bytes, random text, random YAML documents, and the shipped journeys mutated
a few times each: keys dropped, duplicated or renamed, values of the wrong type, random
durations, expressions, step ids and jump targets. Every outcome must be either one
compiled plan, which survives the JSON round trip it makes as the workflow's input, or
at least one error, each with a 1-based line and column and a message. Anything else
(another exception, or a compile that does not end) fails the test.

Examples are derandomized, so a run in CI is the run on a laptop; raise `max_examples`
locally to search longer.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeyman.dsl import Plan, validate

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS = sorted((ROOT / "journeys").glob("*.yaml"))
TEMPLATES = ROOT / "templates"
# A compile of a shipped journey takes milliseconds; this long is a hang.
COMPILE_LIMIT_SECONDS = 10

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example's journey file (hypothesis reruns a test body many
    times within one call, so a function-scoped tmp_path would be shared anyway)."""
    return tmp_path_factory.mktemp("fuzz")


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the compiler ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_compiles_or_reports(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with time_limit(COMPILE_LIMIT_SECONDS):
        compiled, problems = validate([path], TEMPLATES)
    for problem in problems:
        assert problem.file == str(path), problem
        assert problem.line >= 1 and problem.column >= 1, problem
        assert problem.message.strip(), problem
        assert problem.severity in ("error", "warning"), problem
    errors = [p for p in problems if p.severity == "error"]
    if compiled:
        assert len(compiled) == 1 and not errors, problems
        plan = compiled[0].plan
        # The plan travels to the workflow as JSON and must arrive whole. (Not `== plan`:
        # a webhook body's `null:` or `1:` key arrives as text, as JSON has it.)
        sent = plan.model_dump_json()
        assert Plan.model_validate_json(sent).model_dump_json() == sent
    else:
        assert errors, "neither a plan nor an error"


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode()


# -- strategies -----------------------------------------------------------------------

FIELDS = [
    *("id", "name", "description", "topic", "entry", "goal", "exit", "settings", "steps"),
    *("event", "when", "key", "reentry", "holdout", "quiet_hours", "frequency_cap"),
    *("wait", "wait_for", "send", "branch", "split", "update_profile", "webhook", "end"),
    *("until", "timeout", "on_event", "on_timeout", "template", "channels", "goto"),
    *("weight", "set", "url", "method", "headers", "body", "priority"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(FIELDS),
    st.dates(),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10), st.integers(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=20,
)

durations = st.one_of(
    st.from_regex(r"\A-?\d{1,25}(\.\d{0,4})?\s?[smhdwy]?\Z"),
    st.from_regex(r"\AP(\d{1,20}W)?(\d{1,20}D)?(T(\d{1,20}H)?(\d{1,20}M)?(\d{1,20}(\.\d+)?S)?)?\Z"),
    st.from_regex(r"\Aafter \S{0,12}\Z"),
    st.from_regex(r"\A\d{1,30} per \S{0,10}\Z"),
    st.from_regex(r"\A\d{1,3}(\.\d{1,20})?%\Z"),
    st.from_regex(r"\A\d{1,3}:\d{1,3}(-\d{1,3}:\d{1,3})?\Z"),
    st.integers(),
    st.floats(),
)

NAMES = ["event", "trigger", "profile", "journey", "now", "profle", "_x", "range", "self"]
CALLS = ["last", "count", "recent", "days", "hours", "minutes", "round", "open"]
FILTERS = ["default", "lower", "length", "round", "int", "attr", "format", "nope"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", " and ", " or "]

atoms = st.one_of(
    st.sampled_from(NAMES),
    st.integers().map(str),
    st.floats(allow_nan=False).map(repr),
    st.from_regex(r"\A\d+(\.\d+)?\Z"),  # any script's digits, not only 0-9
    st.text(max_size=8).map(repr),
    st.sampled_from(["none", "true", "false", "[]", "{}", "'order_placed'"]),
)


def _grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map("".join),
        st.tuples(inner, st.sampled_from(["properties", "cart_id", "__class__", "0"])).map(
            lambda p: f"{p[0]}.{p[1]}"
        ),
        st.tuples(inner, inner).map(lambda p: f"{p[0]}[{p[1]}]"),
        st.tuples(st.sampled_from(CALLS), st.lists(inner, max_size=3)).map(
            lambda p: f"{p[0]}({', '.join(p[1])})"
        ),
        st.tuples(inner, st.sampled_from(FILTERS), st.lists(inner, max_size=2)).map(
            lambda p: f"{p[0]} | {p[1]}({', '.join(p[2])})"
        ),
        st.tuples(inner, st.sampled_from(["defined", "none", "odd", "nope"])).map(
            lambda p: f"{p[0]} is {p[1]}"
        ),
        st.tuples(inner, inner, inner).map(lambda p: f"{p[0]} if {p[1]} else {p[2]}"),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: "{{ " + e + " }}"),
        st.tuples(st.text(max_size=5), inner).map(lambda p: f"{p[0]}{{{{ {p[1]} }}}}"),
        inner.map(lambda e: "{% if " + e + " %}x{% endif %}"),
    )


expressions = st.one_of(
    st.recursive(atoms, _grow, max_leaves=12),
    # Deep nesting of every kind the parser and the tree builder recurse on.
    st.tuples(st.sampled_from(["(", "not ", "-", "[", "{{ "]), st.integers(50, 3000)).map(
        lambda p: p[0] * p[1] + "1"
    ),
    st.tuples(st.sampled_from([" + 1", ".a", " | lower", "[0]"]), st.integers(50, 3000)).map(
        lambda p: "event" + p[0] * p[1]
    ),
)

step_ids = st.one_of(
    st.from_regex(r"\A[a-z0-9_]{1,12}\Z"),
    st.sampled_from(["wait_an_hour", "done", "vip_offer", "completed", "Done", "", "a b"]),
    st.text(max_size=10),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)

replacements = st.one_of(values, durations, expressions, step_ids)


# -- mutations of a parsed journey ----------------------------------------------------


def _places(node: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in the document, the root's children first."""
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        children = []
    for key, child in children:
        found.append((node, key))
        _places(child, found)
    return found


def mutate(data: Any, draw: Any) -> Any:
    places = _places(data, [])
    if not places:
        return data
    container, key = draw(st.sampled_from(places))
    how = draw(st.sampled_from(["drop", "rename", "replace", "duration", "expr", "id", "copy"]))
    if how == "drop":
        del container[key]
    elif how == "rename" and isinstance(container, dict):
        new_key = draw(st.one_of(keys, st.just(str(key)[::-1]), st.just(str(key)[:-1])))
        if new_key not in container:
            container[new_key] = container.pop(key)
    elif how == "replace":
        container[key] = draw(values)
    elif how == "duration":
        container[key] = draw(durations)
    elif how == "expr":
        container[key] = draw(expressions)
    elif how == "id":
        container[key] = draw(step_ids)
    elif how == "copy" and isinstance(container, list):
        container.insert(key, container[key])
    return data


def mutate_text(text: str, draw: Any) -> str:
    """Line-level edits that a parsed document cannot express: a duplicated key, a line
    lost or moved, indentation broken."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    index = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["duplicate", "delete", "indent", "dedent", "swap"]))
    if how == "duplicate":
        lines.insert(index, lines[index])
    elif how == "delete":
        del lines[index]
    elif how == "indent":
        lines[index] = "  " + lines[index]
    elif how == "dedent":
        lines[index] = lines[index].lstrip(" ")
    else:
        other = draw(st.integers(0, len(lines) - 1))
        lines[index], lines[other] = lines[other], lines[index]
    return "".join(lines)


# -- properties -----------------------------------------------------------------------


def test_every_shipped_journey_compiles(folder: Path) -> None:
    """The starting point of the mutations is valid: what breaks is what was mutated."""
    for journey in JOURNEYS:
        assert_compiles_or_reports(folder / journey.name, journey.read_bytes())
        compiled, problems = validate([folder / journey.name], TEMPLATES)
        assert compiled, problems


@settings(FUZZ, max_examples=150)
@given(content=st.binary(max_size=300))
def test_random_bytes_are_reported_or_compiled(folder: Path, content: bytes) -> None:
    assert_compiles_or_reports(folder / "random.yaml", content)


@settings(FUZZ, max_examples=150)
@given(
    content=st.one_of(
        st.text(max_size=300),
        st.text(alphabet=" \t\n-:?[]{},&*!|>'\"%@`#\\abc019", max_size=200),
    )
)
def test_random_text_is_reported_or_compiled(folder: Path, content: str) -> None:
    assert_compiles_or_reports(folder / "random.yaml", content.encode())


@settings(FUZZ, max_examples=150)
@given(data=st.dictionaries(keys, values, max_size=8))
def test_random_yaml_documents_are_reported_or_compiled(folder: Path, data: Any) -> None:
    assert_compiles_or_reports(folder / "random.yaml", dump(data))


@settings(FUZZ, max_examples=250)
@given(journey=st.sampled_from(JOURNEYS), edits=st.integers(1, 4), data=st.data())
def test_mutated_shipped_journeys_are_reported_or_compiled(
    folder: Path, journey: Path, edits: int, data: st.DataObject
) -> None:
    document = yaml.safe_load(journey.read_text())
    for _ in range(edits):
        document = mutate(document, data.draw)
    text = dump(document).decode()
    if data.draw(st.booleans()):
        text = mutate_text(text, data.draw)
    # Named as the journey, so that the id still matches the file name.
    assert_compiles_or_reports(folder / journey.name, text.encode())


@settings(FUZZ, max_examples=150)
@given(
    journey=st.sampled_from(JOURNEYS),
    where=st.sampled_from(["entry_when", "goal_when", "key", "update", "webhook"]),
    expression=expressions,
)
def test_random_expressions_are_reported_or_compiled(
    folder: Path, journey: Path, where: str, expression: str
) -> None:
    document = yaml.safe_load(journey.read_text())
    if where == "entry_when":
        document["entry"]["when"] = expression
    elif where == "goal_when":
        document["goal"] = {"event": "order_placed", "when": expression}
    elif where == "key":
        document["entry"]["key"] = expression
    else:
        action = (
            {"update_profile": {"set": {"trait": expression}}}
            if where == "update"
            else {"webhook": {"url": expression, "body": {"value": [expression]}}}
        )
        document["steps"].insert(0, {"id": "fuzzed", **action})
    assert_compiles_or_reports(folder / journey.name, dump(document))
