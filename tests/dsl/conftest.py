"""A scratch journeys/ and templates/ folder per test, and ways to compile from it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from journeyman.dsl import Compiled, JourneyError, compile_file

CHANNEL_FILES = {
    "email": (
        "email.html",
        "{% block subject %}Your cart{% endblock %}"
        "{% block preheader %}Still there{% endblock %}<p>Hi {{ profile.first_name }}</p>",
    ),
    "sms": ("sms.txt", "Your cart is waiting, {{ profile.first_name }}"),
    "push": ("push.txt", "{% block title %}Cart{% endblock %}{% block body %}Back?{% endblock %}"),
}

HEADER = """\
id: {id}
name: Test journey
entry:
  event: cart_abandoned
steps:
"""


class Workspace:
    """A project in a temporary folder: `journeys/*.yaml` and `templates/<name>/...`."""

    def __init__(self, root: Path) -> None:
        self.journeys = root / "journeys"
        self.templates = root / "templates"
        self.journeys.mkdir()
        self.templates.mkdir()

    def template(self, name: str, channels: tuple[str, ...] = ("email", "sms", "push")) -> Path:
        """A template folder with a valid file for each channel."""
        folder = self.templates / name
        folder.mkdir(parents=True, exist_ok=True)
        for channel in channels:
            filename, source = CHANNEL_FILES[channel]
            (folder / filename).write_text(source)
        return folder

    def write(self, text: str, stem: str = "test_journey") -> Path:
        """A journey file; the text is dedented, so tests can indent it naturally."""
        path = self.journeys / f"{stem}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def steps(self, steps: str, stem: str = "test_journey") -> Path:
        """A journey entered on `cart_abandoned` with the given steps; its first step is
        on line 6."""
        items = textwrap.indent(textwrap.dedent(steps).strip("\n"), "  ")
        path = self.journeys / f"{stem}.yaml"
        path.write_text(HEADER.format(id=stem) + items + "\n")
        return path

    def compile(self, path: Path) -> Compiled:
        return compile_file(path, self.templates)

    def problems(self, path: Path) -> list[str]:
        """Every problem as `line:col: message`, the file name left out."""
        with pytest.raises(JourneyError) as caught:
            compile_file(path, self.templates)
        return [f"{p.line}:{p.column}: {p.message}" for p in caught.value.problems]


EXAMPLE = Path(__file__).parent / "examples" / "abandoned_cart.yaml"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def example(ws: Workspace) -> Path:
    """The complete example of the journey contract, with the templates it names."""
    ws.template("cart_reminder", ("email", "push", "sms"))
    ws.template("cart_nudge", ("sms",))
    ws.template("vip_offer_a", ("email",))
    ws.template("vip_offer_b", ("email", "sms"))
    return ws.write(EXAMPLE.read_text(), stem="abandoned_cart")
