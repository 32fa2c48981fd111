"""Render a message template as the customer gets it: email, SMS or push.

A `Renderer` holds the template sources of one journey version (`Compiled.templates`:
relative posix path -> text), so a run renders the templates it entered with even after
someone edits the files. It is pure: no database, no settings, no network. The send
activity and `journeyman preview` both use it.

Templates run in a sandboxed Jinja2 environment with `StrictUndefined`: a missing name
or attribute is a `RenderError` naming the file and line, never an empty hole in a
message. HTML files are autoescaped, text files (SMS, push, `email.txt`) are not. Mapping
keys win over dict methods (`properties.items` is the cart's items), as in expressions.

Files per channel (`templates/<template>/`):

- email: `email.html` with blocks `subject` (required) and `preheader`; optionally
  `email.txt`, otherwise the text part is derived from the HTML.
- sms: `sms.txt`; the result carries its encoding and segment count.
- push: `push.txt` with blocks `title`, `body` and optionally `data` (a JSON object of
  strings, such as a deep link).
- whatsapp: `whatsapp.txt` (the free-form text, inside the 24-hour window) and
  optionally `whatsapp.yaml`, the approved Content template for outside it
  (`content_sid`, `variables`; see journeyman/messaging/whatsapp.py), rendered into `data`.
- inbox: `inbox.txt` with blocks `title`, `body` and optionally `link` and `image`
  (URLs), the latter two in `data`.

Locale variants (`email.fr.html`, `sms.pt-BR.txt`) are picked by the customer's locale:
for "fr-CA" the renderer tries fr-CA, then fr, then the default file.

`Renderer.sms_estimate` renders an SMS without a customer, for `journeyman validate`:
every name the template reads but the caller does not give is assumed present and
stands in as `SAMPLE_TEXT` (see `_Sample`), so the length is an estimate.
"""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    BaseLoader,
    ChainableUndefined,
    DictLoader,
    StrictUndefined,
    Template,
    TemplateError,
    Undefined,
    select_autoescape,
)
from jinja2.exceptions import TemplateNotFound, TemplateSyntaxError
from jinja2.filters import do_default
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.dsl.evaluate import PURE_FUNCTIONS, ExpressionError
from journeyman.messaging import sms_text
from journeyman.messaging.html_text import html_to_text
from journeyman.messaging.sms_text import (
    GSM7,
    UCS2,
    Encoding,
    SmsEstimate,
    segment_size,
    sms_segments,
)
from journeyman.messaging.whatsapp import WhatsAppContent, parse_whatsapp_content

# Importers of this module's names from before sms_text and html_text were their own.
__all__ = [
    "GSM7",
    "SAMPLE_TEXT",
    "UCS2",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "SmsEstimate",
    "html_to_text",
    "segment_size",
    "sms_segments",
]

SAMPLE_TEXT = "x" * 10
"""What a name the sample does not give renders as: about a first name or an order number."""


class RenderError(Exception):
    """A template that cannot be rendered for this customer; the message names the file."""


@dataclass(frozen=True)
class RenderedMessage:
    """One message ready for a provider. Fields that do not apply to the channel are None."""

    template: str
    channel: str
    source: str
    """The file rendered, e.g. "cart_reminder/email.fr.html"."""
    locale: str | None = None
    """The variant's locale tag ("fr"), None when the default file was used."""
    subject: str | None = None
    preheader: str | None = None
    html: str | None = None
    """email: the whole document, CSS inlined."""
    text: str | None = None
    """email: the plain-text part; sms: the message."""
    title: str | None = None
    body: str | None = None
    data: Mapping[str, str] | None = field(default=None, hash=False)
    """push: the `data` block's JSON object, None without one."""
    sms_segments: int | None = None
    sms_encoding: Encoding | None = None


class Renderer:
    """Renders one set of template sources; cheap to keep per journey version."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self._sources = dict(sources)
        self._loader = DictLoader(self._sources)
        self._env = _environment(self._loader, _Undefined)
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

    @classmethod
    def from_dir(cls, templates_dir: Path | str) -> Renderer:
        """Every file under a templates folder (hidden files aside), read as UTF-8."""
        root = Path(templates_dir)
        sources = {
            path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
            for path in sorted(root.rglob("*"))
            if path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts)
        }
        return cls(sources)

    def locales(self, template: str, channel: str) -> list[str]:
        """The locale tags a template has variants for on a channel, e.g. ["fr", "pt-BR"]."""
        return sorted(self._variants(template, _channel_file(channel)).values())

    def render(
        self, template: str, channel: str, names: Mapping[str, Any], locale: str | None = None
    ) -> RenderedMessage:
        """Render `template` for `channel` with the names templates see.

        `names` holds what expressions see (event, trigger, profile, journey, now, last,
        count, ...) and, when the caller has one, `unsubscribe_url`.
        """
        path, variant = self._resolve(template, _channel_file(channel), locale)
        context = _wrap_names(names)
        message: dict[str, Any] = {
            "template": template,
            "channel": channel,
            "source": path,
            "locale": variant,
        }
        if channel == "email":
            return RenderedMessage(**message, **self._email(path, context))
        if channel == "sms":
            return RenderedMessage(**message, **self._sms(path, context))
        if channel == "whatsapp":
            return RenderedMessage(**message, **self._whatsapp(template, path, context, locale))
        if channel == "inbox":
            return RenderedMessage(**message, **self._inbox(path, context))
        return RenderedMessage(**message, **self._push(path, context))

    def sms_estimate(
        self, template: str, locale: str | None = None, names: Mapping[str, Any] | None = None
    ) -> SmsEstimate:
        """The length, encoding and segments of `template`'s SMS with sample data.

        `locale` picks the file as `render` does. `names` are the values the caller knows
        (such as `journey`); every other name the template reads is assumed present and
        renders as `SAMPLE_TEXT`, ten characters; its `default(...)` is used instead when
        that is longer text or not text (a number, a list). Such a value is true,
        iterates as an empty list, has every attribute (each one such a value again),
        counts as 0 in `int`, `float` and `%` formatting, stays itself through
        arithmetic, and compares false with `<`, `>` and `==`. Real data can make the
        message longer (a long name, a list of items) or switch it to UCS-2 (a name such
        as "Zoë"), hence an estimate.
        """
        path, _ = self._resolve(template, _channel_file("sms"), locale)
        text = self._execute(path, _wrap_names(names or {}), self._sample_env)[0].strip()
        return sms_text.estimate(path, text)

    @cached_property
    def _sample_env(self) -> _Environment:
        env = _environment(self._loader, _Sample)
        env.filters["default"] = env.filters["d"] = _sample_default
        env.tests["defined"] = _sample_defined
        env.tests["undefined"] = lambda value: not _sample_defined(value)
        env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": str}
        return env

    # -- channels -----------------------------------------------------------------------

    def _email(self, path: str, names: dict[str, Any]) -> dict[str, Any]:
        document, context = self._execute(path, names)
        subject = _one_line(html_lib.unescape(self._block(path, context, "subject") or ""))
        if not subject:
            raise RenderError(f"{path}: the subject block is missing or empty")
        preheader = _one_line(html_lib.unescape(self._block(path, context, "preheader") or ""))
        try:
            inlined = self._inliner.inline(document)
        except css_inline.InlineError as exc:
            raise RenderError(f"{path}: CSS could not be inlined: {exc}") from None
        text_path = path.removesuffix(".html") + ".txt"
        if text_path in self._sources:
            text = self._execute(text_path, names)[0].strip()
        else:
            text = html_to_text(inlined)
        return {
            "subject": subject,
            "preheader": preheader or None,
            "html": inlined,
            "text": text,
        }

    def _sms(self, path: str, names: dict[str, Any]) -> dict[str, Any]:
        text = self._execute(path, names)[0].strip()
        if not text:
            raise RenderError(f"{path}: the message is empty")
        encoding, segments = sms_segments(text)
        return {"text": text, "sms_encoding": encoding, "sms_segments": segments}

    def _whatsapp(
        self, template: str, path: str, names: dict[str, Any], locale: str | None
    ) -> dict[str, Any]:
        """The free-form text (`whatsapp.txt`) and, when the template declares one in
        `whatsapp.yaml`, the approved Content template with its variables rendered."""
        text = self._execute(path, names)[0].strip()
        if not text:
            raise RenderError(f"{path}: the message is empty")
        found: dict[str, Any] = {"text": text}
        approved = self.whatsapp_approved(template, locale)
        if approved is not None:
            source, content = approved
            variables = {}
            for key, expression in content.variables.items():
                with self._reporting(source):
                    variables[key] = self._env.from_string(expression).render(names).strip()
            found["data"] = {
                "content_sid": content.content_sid,
                "content_variables": json.dumps(variables, sort_keys=True),
            }
        return found

    def whatsapp_approved(
        self, template: str, locale: str | None = None
    ) -> tuple[str, WhatsAppContent] | None:
        """The template's approved WhatsApp Content (`whatsapp.yaml`, or its locale
        variant), with the file it came from; None when it has none."""
        variants = self._variants(template, "whatsapp.yaml")
        by_tag = {tag.lower(): path for path, tag in variants.items()}
        path = next(
            (by_tag[c.lower()] for c in _locale_candidates(locale) if c.lower() in by_tag),
            f"{template}/whatsapp.yaml",
        )
        if path not in self._sources:
            return None
        try:
            return path, parse_whatsapp_content(self._sources[path])
        except ValueError as exc:
            raise RenderError(f"{path}: {exc}") from None

    def _inbox(self, path: str, names: dict[str, Any]) -> dict[str, Any]:
        context, title, body = self._title_and_body(path, names)
        data = {}
        for name in ("link", "image"):
            value = _one_line(self._block(path, context, name) or "")
            if value:
                if not re.match(r"^(https?://|/)", value):
                    raise RenderError(
                        f"{path}: the {name} block must be an http(s) URL or a path, got {value!r}"
                    )
                data[name] = value
        return {"title": title, "body": body, "data": data or None}

    def _push(self, path: str, names: dict[str, Any]) -> dict[str, Any]:
        context, title, body = self._title_and_body(path, names)
        raw = self._block(path, context, "data")
        return {"title": title, "body": body, "data": _push_data(path, raw) if raw else None}

    def _title_and_body(self, path: str, names: dict[str, Any]) -> tuple[Context, str, str]:
        """The `title` and `body` blocks of a push or inbox file, both required."""
        _, context = self._execute(path, names)
        title = _one_line(self._block(path, context, "title") or "")
        body = (self._block(path, context, "body") or "").strip()
        for name, value in (("title", title), ("body", body)):
            if not value:
                raise RenderError(f"{path}: the {name} block is missing or empty")
        return context, title, body

    # -- Jinja2 -------------------------------------------------------------------------

    def _resolve(self, template: str, filename: str, locale: str | None) -> tuple[str, str | None]:
        variants = self._variants(template, filename)
        by_tag = {tag.lower(): path for path, tag in variants.items()}
        for candidate in _locale_candidates(locale):
            if candidate.lower() in by_tag:
                path = by_tag[candidate.lower()]
                return path, variants[path]
        default = f"{template}/{filename}"
        if default not in self._sources:
            raise RenderError(f"{default}: no such template file")
        return default, None

    def _variants(self, template: str, filename: str) -> dict[str, str]:
        """{path: locale tag} of the locale variants of `<template>/<filename>`."""
        stem, _, suffix = filename.rpartition(".")
        prefix, ending = f"{template}/{stem}.", f".{suffix}"
        found = {}
        for path in self._sources:
            if path.startswith(prefix) and path.endswith(ending):
                tag = path[len(prefix) : -len(ending)]
                if tag and "/" not in tag and "." not in tag:
                    found[path] = tag
        return found

    def _execute(
        self, path: str, names: dict[str, Any], env: _Environment | None = None
    ) -> tuple[str, Context]:
        """The whole template's output, and the context its blocks can be rendered in."""
        with self._reporting(path):
            template: Template = (env or self._env).get_template(path)
            context = template.new_context(names)
            output = "".join(template.root_render_func(context))
        return output, context

    def _block(self, path: str, context: Context, name: str) -> str | None:
        """A block as the rendered template defines it (the child's, else the layout's)."""
        stack = context.blocks.get(name)
        if not stack:
            return None
        with self._reporting(path):
            return "".join(stack[0](context)).strip()

    @contextmanager
    def _reporting(self, path: str) -> Iterator[None]:
        """Template failures as RenderError naming the file and line where they happened."""
        try:
            yield
        except TemplateSyntaxError as exc:
            where = _place(exc.name or path, exc.lineno)
            raise RenderError(f"{where}: template does not parse: {exc.message}") from None
        except TemplateNotFound as exc:
            where = _place(*self._failing_line(exc, path))
            raise RenderError(f"{where}: no template {exc.name!r}") from None
        except (
            TemplateError,
            ExpressionError,
            TypeError,
            ValueError,
            LookupError,
            ArithmeticError,
        ) as exc:
            where = _place(*self._failing_line(exc, path))
            reason = (
                str(exc)
                if isinstance(exc, TemplateError | ExpressionError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise RenderError(f"{where}: {reason}") from None

    def _failing_line(self, exc: BaseException, path: str) -> tuple[str, int | None]:
        """The innermost template frame of a traceback, as (file, template line)."""
        found: tuple[str, int | None] = (path, None)
        tb = exc.__traceback__
        while tb is not None:
            template = tb.tb_frame.f_globals.get("__jinja_template__")
            if template is not None and template.name in self._sources:
                found = (template.name, template.get_corresponding_lineno(tb.tb_lineno))
            tb = tb.tb_next
        return found


class _Environment(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Keys before methods, as in expressions: `properties.items` is data, not dict.items.
        if isinstance(obj, Mapping) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _environment(loader: BaseLoader, undefined: type[Undefined]) -> _Environment:
    env = _Environment(
        loader=loader,
        undefined=undefined,
        autoescape=select_autoescape(
            enabled_extensions=("html",),
            disabled_extensions=(),
            default_for_string=False,
            default=False,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(PURE_FUNCTIONS)
    return env


class _Record(dict[Any, Any]):
    """A mapping from the names, knowing the path templates reach it by ("profile")."""

    __slots__ = ("_jm_path",)
    _jm_path: str


class _Undefined(StrictUndefined):
    """StrictUndefined whose messages say `'profile' has no attribute 'first_name'`."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if self._undefined_hint is None and isinstance(owner, _Record):
            name = self._undefined_name
            what = "attribute" if isinstance(name, str) else "element"
            return f"{owner._jm_path!r} has no {what} {name!r}"
        return super()._undefined_message


# Attributes Jinja2 and its sandbox probe callables for; a sample value has none of them,
# or calling it would be refused as unsafe.
_PROBED = frozenset({"unsafe_callable", "alters_data", "jinja_pass_arg"})


class _Sample(ChainableUndefined):
    """A value the sample lacks, assumed present: it renders as SAMPLE_TEXT and survives
    what templates do with data (see `Renderer.sms_estimate`). Jinja2 types the
    operations it overrides as raising, hence the `type: ignore`s."""

    __slots__ = ()

    def __str__(self) -> str:
        return SAMPLE_TEXT

    def __format__(self, spec: str) -> str:
        return SAMPLE_TEXT

    def __bool__(self) -> bool:
        return True

    def __getattr__(self, name: str) -> _Sample:
        if name in _PROBED:
            raise AttributeError(name)
        return super().__getattr__(name)  # type: ignore[return-value]

    def __call__(self, *args: Any, **kwargs: Any) -> _Sample:  # type: ignore[override]
        return self

    def _same(self, *args: Any) -> _Sample:
        return self

    def _false(self, other: Any) -> bool:
        return False

    def __add__(self, other: Any) -> Any:
        return str(self) + other if isinstance(other, str) else self

    def __radd__(self, other: Any) -> Any:
        return other + str(self) if isinstance(other, str) else self

    def __eq__(self, other: Any) -> bool:
        return other is self

    def __ne__(self, other: Any) -> bool:
        return other is not self

    def __hash__(self) -> int:
        return id(self)

    def __int__(self) -> int:  # type: ignore[override]
        return 0

    def __index__(self) -> int:
        return 0

    def __float__(self) -> float:  # type: ignore[override]
        return 0.0

    __sub__ = __rsub__ = __mul__ = __rmul__ = _same  # type: ignore[assignment]
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _same  # type: ignore[assignment]
    __mod__ = __rmod__ = __pow__ = __rpow__ = _same  # type: ignore[assignment]
    __pos__ = __neg__ = __abs__ = __round__ = _same  # type: ignore[assignment]
    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]


def _sample_defined(value: Any) -> bool:
    return not isinstance(value, Undefined) or isinstance(value, _Sample)


def _sample_default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """`default` for estimates: a missing value is assumed present, unless the default
    is text and longer than the stand-in (a fallback link), or not text at all."""
    if isinstance(value, _Sample):
        if not isinstance(default_value, str) or len(default_value) > len(SAMPLE_TEXT):
            return default_value
        return value
    return do_default(value, default_value, boolean)


def _wrap_names(names: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _wrap(value, name) for name, value in names.items()}


def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        record = _Record(
            (key, _wrap(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]"))
            for key, item in value.items()
        )
        record._jm_path = path
        return record
    if isinstance(value, list | tuple):
        return [_wrap(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def _channel_file(channel: str) -> str:
    try:
        return CHANNEL_FILES[channel]
    except KeyError:
        raise RenderError(
            f"unknown channel {channel!r}; channels are {', '.join(CHANNEL_FILES)}"
        ) from None


def _locale_candidates(locale: str | None) -> list[str]:
    """The tags to try for a locale, most specific first: fr_CA.UTF-8 -> fr-CA, fr."""
    if not locale:
        return []
    tag = re.split(r"[.@]", locale.strip(), maxsplit=1)[0].replace("_", "-")
    parts = [p for p in tag.split("-") if p]
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _place(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _push_data(path: str, raw: str) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RenderError(f"{path}: the data block is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RenderError(f"{path}: the data block must be a JSON object, got {raw!r}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise RenderError(
                f"{path}: push data values must be strings; {key!r} is {json.dumps(value)}"
            )
    return data
