"""The message renderer: one behavior per test, on small inline templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from journeyman.messaging.rendering import (
    GSM7,
    SAMPLE_TEXT,
    UCS2,
    Renderer,
    RenderError,
    html_to_text,
    sms_segments,
)

LAYOUT = """<!DOCTYPE html>
<html lang="{% block lang %}en{% endblock %}">
<head>
<title>{% block subject %}{% endblock %}</title>
<style>
  p { color: #333333; }
  .button { background-color: #24513d; }
  @media only screen and (max-width: 620px) { .container { width: 100% !important; } }
</style>
</head>
<body>
<div style="display: none; mso-hide: all;">{% block preheader %}{% endblock %}</div>
<table class="container"><tr><td>{% block content %}{% endblock %}</td></tr></table>
<p>Layout footer</p>
{% if unsubscribe_url is defined %}<a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endif %}
</body>
</html>
"""

EMAIL = """{% extends "_layouts/base.html" %}
{% block subject %}Hi {{ profile.first_name | default("there") }}, your cart{% endblock %}
{% block preheader %}Saved for you{% endblock %}
{% block content %}<p>Hello {{ profile.first_name | default("there") }}</p>{% endblock %}
"""


def names(**profile: Any) -> dict[str, Any]:
    trigger = {"event": "cart_abandoned", "properties": {"cart_id": "c1", "cart_total": 42}}
    return {"event": trigger, "trigger": trigger, "profile": {"id": "u1", **profile}}


def renderer(**files: str) -> Renderer:
    """A renderer over the layout and `files` given as name__file.ext=source."""
    sources = {"_layouts/base.html": LAYOUT}
    for key, source in files.items():
        folder, _, filename = key.partition("__")
        sources[f"{folder}/{filename.replace('_', '.')}"] = source
    return Renderer(sources)


def render_error(render: Renderer, *args: Any) -> str:
    with pytest.raises(RenderError) as caught:
        render.render(*args)
    return str(caught.value)


# -- locale variants ------------------------------------------------------------------


def test_locale_with_region_falls_back_to_language_variant() -> None:
    render = renderer(t__sms_txt="Hello", t__sms_fr_txt="Bonjour")
    message = render.render("t", "sms", names(), "fr-CA")
    assert (message.text, message.source, message.locale) == ("Bonjour", "t/sms.fr.txt", "fr")


def test_region_variant_is_preferred_to_language_variant() -> None:
    render = renderer(t__sms_txt="Hello", t__sms_pt_txt="Olá (pt)", **{"t__sms_pt-BR_txt": "Oi"})
    assert render.render("t", "sms", names(), "pt-BR").text == "Oi"


def test_locale_without_variant_uses_default_file() -> None:
    render = renderer(t__sms_txt="Hello", t__sms_fr_txt="Bonjour")
    message = render.render("t", "sms", names(), "de-DE")
    assert (message.text, message.locale) == ("Hello", None)


def test_posix_locale_spelling_matches_variant_case_insensitively() -> None:
    render = renderer(t__sms_txt="Hello", **{"t__sms_pt-BR_txt": "Oi"})
    assert render.render("t", "sms", names(), "pt_br.UTF-8").text == "Oi"


def test_locales_lists_variants_of_a_channel() -> None:
    render = renderer(t__sms_txt="Hi", t__sms_fr_txt="Salut", **{"t__sms_pt-BR_txt": "Oi"})
    assert render.locales("t", "sms") == ["fr", "pt-BR"]


# -- layouts, escaping, undefined names -------------------------------------------------


def test_email_extends_shared_layout() -> None:
    message = renderer(t__email_html=EMAIL).render("t", "email", names(first_name="Ana"))
    assert "Layout footer" in message.html
    assert "Hello Ana" in message.html


def test_html_escapes_profile_data() -> None:
    render = renderer(t__email_html=EMAIL)
    message = render.render("t", "email", names(first_name="<b>Ana</b>"))
    assert "Hello &lt;b&gt;Ana&lt;/b&gt;" in message.html
    assert "<b>Ana</b>" not in message.html


def test_sms_does_not_escape_profile_data() -> None:
    render = renderer(t__sms_txt="Hi {{ profile.first_name }} & co")
    assert render.render("t", "sms", names(first_name="<Ana>")).text == "Hi <Ana> & co"


def test_undefined_attribute_names_file_line_and_path() -> None:
    render = renderer(t__sms_txt="Hello\n{{ profile.first_name }}")
    assert render_error(render, "t", "sms", names()) == (
        "t/sms.txt:2: 'profile' has no attribute 'first_name'"
    )


def test_undefined_nested_attribute_names_its_full_path() -> None:
    render = renderer(t__sms_txt="{{ trigger.properties.pickup_code }}")
    message = render_error(render, "t", "sms", names())
    assert message.endswith("'trigger.properties' has no attribute 'pickup_code'")


def test_undefined_name_is_an_error() -> None:
    render = renderer(t__sms_txt="{{ cart.total }}")
    assert render_error(render, "t", "sms", names()) == "t/sms.txt:1: 'cart' is undefined"


def test_undefined_inside_email_block_names_the_child_template() -> None:
    source = EMAIL.replace("Hello {{", "Hello {{ profile.nickname }} {{")
    message = render_error(renderer(t__email_html=source), "t", "email", names())
    assert message == "t/email.html:4: 'profile' has no attribute 'nickname'"


def test_python_error_in_a_template_names_file_and_line() -> None:
    render = renderer(t__sms_txt="Total:\n{{ trigger.properties.cart_total + 'x' }}")
    assert render_error(render, "t", "sms", names()) == (
        "t/sms.txt:2: TypeError: unsupported operand type(s) for +: 'int' and 'str'"
    )


def test_default_filter_covers_missing_attribute() -> None:
    render = renderer(t__sms_txt="Hi {{ profile.first_name | default('there') }}")
    assert render.render("t", "sms", names()).text == "Hi there"


def test_syntax_error_names_file_and_line() -> None:
    render = renderer(t__sms_txt="Hi\n{% if profile.first_name %}oops")
    message = render_error(render, "t", "sms", names())
    assert message.startswith("t/sms.txt:2: template does not parse:")


def test_missing_layout_is_reported() -> None:
    render = Renderer({"t/email.html": '{% extends "_layouts/gone.html" %}'})
    message = render_error(render, "t", "email", names())
    assert message == "t/email.html:1: no template '_layouts/gone.html'"


def test_mapping_keys_win_over_dict_methods() -> None:
    render = renderer(
        t__sms_txt="{% for item in trigger.properties.items %}{{ item }} {% endfor %}"
    )
    data = names()
    data["trigger"] = {"properties": {"items": ["mug", "vase"]}}
    assert render.render("t", "sms", data).text == "mug vase"


def test_templates_see_the_history_functions_the_caller_passes() -> None:
    render = renderer(t__sms_txt="Last order {{ last('order_placed').properties.order_id }}")
    data = {**names(), "last": lambda name: {"properties": {"order_id": f"{name}-7"}}}
    assert render.render("t", "sms", data).text == "Last order order_placed-7"


def test_templates_unsafe_attributes_are_refused() -> None:
    render = renderer(t__sms_txt="{{ profile.__class__.__mro__ }}")
    assert render_error(render, "t", "sms", names()).startswith("t/sms.txt:1:")


def test_unsubscribe_link_appears_only_when_the_caller_passes_one() -> None:
    render = renderer(t__email_html=EMAIL)
    without = render.render("t", "email", names())
    with_link = render.render("t", "email", {**names(), "unsubscribe_url": "https://u.example/x"})
    assert "Unsubscribe" not in without.html
    assert '<a href="https://u.example/x">Unsubscribe</a>' in with_link.html


def test_unknown_channel_is_an_error() -> None:
    assert "unknown channel 'fax'" in render_error(renderer(), "t", "fax", names())


def test_missing_channel_file_is_an_error() -> None:
    message = render_error(renderer(t__sms_txt="Hi"), "t", "push", names())
    assert message == "t/push.txt: no such template file"


def test_from_dir_reads_nested_files_but_not_hidden_ones(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "sms.txt").write_text("Hi from disk", encoding="utf-8")
    (tmp_path / "t" / ".sms.txt.swp").write_text("junk", encoding="utf-8")
    render = Renderer.from_dir(tmp_path)
    assert render.render("t", "sms", names()).text == "Hi from disk"
    assert render.locales("t", "sms") == []


# -- email ----------------------------------------------------------------------------


def test_subject_block_is_required() -> None:
    source = "\n".join(line for line in EMAIL.splitlines() if "block subject" not in line)
    message = render_error(renderer(t__email_html=source), "t", "email", names())
    assert message == "t/email.html: the subject block is missing or empty"


def test_empty_subject_is_an_error() -> None:
    source = '{% extends "_layouts/base.html" %}{% block subject %}  {% endblock %}'
    message = render_error(renderer(t__email_html=source), "t", "email", names())
    assert message == "t/email.html: the subject block is missing or empty"


def test_subject_is_plain_text_and_escaped_in_title() -> None:
    message = renderer(t__email_html=EMAIL).render("t", "email", names(first_name="Tom & Jo"))
    assert message.subject == "Hi Tom & Jo, your cart"
    assert "<title>Hi Tom &amp; Jo, your cart</title>" in message.html


def test_preheader_is_optional() -> None:
    source = EMAIL.replace("{% block preheader %}Saved for you{% endblock %}", "")
    message = renderer(t__email_html=source).render("t", "email", names())
    assert message.preheader is None
    assert renderer(t__email_html=EMAIL).render("t", "email", names()).preheader == "Saved for you"


def test_text_is_derived_from_html_with_links_and_without_hidden_preheader() -> None:
    source = EMAIL.replace(
        "<p>Hello",
        '<p>See <a href="https://shop.example.com/cart">your   cart</a>\n now.</p><p>Hello',
    )
    text = renderer(t__email_html=source).render("t", "email", names(first_name="Ana")).text
    assert text == (
        "See your cart (https://shop.example.com/cart) now.\n\nHello Ana\n\nLayout footer"
    )


def test_text_comes_from_email_txt_when_present() -> None:
    render = renderer(t__email_html=EMAIL, t__email_txt="Plain {{ profile.first_name }} & co\n")
    assert render.render("t", "email", names(first_name="<Ana>")).text == "Plain <Ana> & co"


def test_locale_variant_does_not_borrow_the_default_text_part() -> None:
    french = EMAIL.replace("Hello", "Bonjour")
    render = renderer(t__email_html=EMAIL, t__email_fr_html=french, t__email_txt="English text")
    assert "Bonjour there" in render.render("t", "email", names(), "fr").text


def test_css_is_inlined_and_media_queries_kept() -> None:
    html = renderer(t__email_html=EMAIL).render("t", "email", names()).html
    assert '<p style="color: #333333;">Hello there</p>' in html
    assert "@media only screen and (max-width: 620px)" in html
    assert "p { color: #333333; }" not in html


def test_html_to_text_keeps_bare_urls_once_and_image_alt_text() -> None:
    document = (
        '<p><a href="https://x.example/a">https://x.example/a</a></p>'
        '<p><a href="https://x.example/b"><img src="b.png" alt="Shop now"></a></p>'
        "<ul><li>One</li><li>Two &amp; three</li></ul>"
    )
    assert html_to_text(document) == (
        "https://x.example/a\n\nShop now (https://x.example/b)\n\n- One\n- Two & three"
    )


# -- SMS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, GSM7, 1),
        ("a" * 161, GSM7, 2),
        ("a" * 306, GSM7, 2),
        ("a" * 307, GSM7, 3),
        ("é" * 160, GSM7, 1),
        ("€" * 80, GSM7, 1),
        ("€" * 80 + "a", GSM7, 2),
        ("{" * 80 + "[", GSM7, 2),
        ("ê" * 70, UCS2, 1),
        ("ê" * 71, UCS2, 2),
        ("ê" * 134, UCS2, 2),
        ("ê" * 135, UCS2, 3),
        ("a" * 69 + "ç", UCS2, 1),
        ("😀" * 35, UCS2, 1),
        ("😀" * 36, UCS2, 2),
        ("", GSM7, 0),
    ],
    ids=[
        "gsm-160",
        "gsm-161",
        "gsm-306",
        "gsm-307",
        "gsm-accents-in-basic-set",
        "euro-counts-two-80",
        "euro-counts-two-81",
        "brackets-count-two",
        "ucs2-70",
        "ucs2-71",
        "ucs2-134",
        "ucs2-135",
        "lowercase-c-cedilla-is-not-gsm",
        "emoji-counts-two-units-35",
        "emoji-counts-two-units-36",
        "empty",
    ],
)
def test_sms_encoding_and_segments(text: str, encoding: str, segments: int) -> None:
    assert sms_segments(text) == (encoding, segments)


def test_sms_escape_pair_is_never_split_across_segments() -> None:
    # 152 + 2 septets do not fit a 153-septet part, so € starts the second part.
    assert sms_segments("a" * 152 + "€" + "a" * 152) == (GSM7, 3)


def test_rendered_sms_carries_encoding_and_segments() -> None:
    message = renderer(t__sms_txt="{{ 'x' * 200 }} €").render("t", "sms", names())
    assert (message.sms_encoding, message.sms_segments) == (GSM7, 2)


def test_empty_sms_is_an_error() -> None:
    render = renderer(t__sms_txt="{% if false %}never{% endif %}\n")
    assert render_error(render, "t", "sms", names()) == "t/sms.txt: the message is empty"


# -- SMS estimates ----------------------------------------------------------------------


def test_sms_estimate_renders_names_it_lacks_as_the_stand_in() -> None:
    estimate = renderer(t__sms_txt="Hi {{ profile.first_name }}, order {{ trigger.order_id }}")
    assert estimate.sms_estimate("t").text == f"Hi {SAMPLE_TEXT}, order {SAMPLE_TEXT}"


def test_sms_estimate_counts_characters_segments_and_room_left() -> None:
    estimate = renderer(t__sms_txt="a" * 150).sms_estimate("t")
    assert (estimate.path, estimate.characters, estimate.encoding) == ("t/sms.txt", 150, GSM7)
    assert (estimate.segments, estimate.spare, estimate.segment_size) == (1, 10, 160)


def test_sms_estimate_of_a_long_text_counts_parts_of_153() -> None:
    estimate = renderer(t__sms_txt="a" * 400).sms_estimate("t")
    assert (estimate.segments, estimate.segment_size, estimate.spare) == (3, 153, 59)


def test_sms_estimate_uses_a_text_default_longer_than_the_stand_in() -> None:
    source = "{{ trigger.cart_url | default('https://shop.example.com/cart') }}"
    assert renderer(t__sms_txt=source).sms_estimate("t").text == "https://shop.example.com/cart"


def test_sms_estimate_assumes_the_value_present_over_a_shorter_default() -> None:
    source = "{{ profile.first_name | default('Hi', true) }}"
    assert renderer(t__sms_txt=source).sms_estimate("t").text == SAMPLE_TEXT


def test_sms_estimate_takes_the_branch_where_the_value_is_present() -> None:
    source = (
        "{% if profile.first_name %}{{ profile.first_name }}, your{% else %}Your{% endif %} "
        "{% if profile.tier is defined %}order{% endif %}"
    )
    assert renderer(t__sms_txt=source).sms_estimate("t").text == f"{SAMPLE_TEXT}, your order"


def test_sms_estimate_survives_numbers_loops_and_comparisons() -> None:
    source = (
        "{{ '%.2f' | format(trigger.total) }} {{ (trigger.total * 0.9) | round(2) }} "
        "{{ trigger.total | int + 1 }} {{ trigger.products | length }} "
        "{% for p in trigger.products %}{{ p.name }}{% else %}none{% endfor %} "
        "{{ 'big' if trigger.total > 50 else 'small' }} {{ profile.tier == 'gold' }} "
        "{{ profile.name.title() }} {{ range(trigger.count) | list }} {{ now.strftime('%b') }} "
        "{{ 'Hi ' + profile.first_name }} {{ trigger.products | first }} {{ profile | tojson }}"
    )
    text = renderer(t__sms_txt=source).sms_estimate("t").text
    stand_in = SAMPLE_TEXT
    assert text == (
        f"0.00 {stand_in} 1 0 none small False {stand_in} [] {stand_in} "
        f'Hi {stand_in} {stand_in} "{stand_in}"'
    )


def test_sms_estimate_uses_the_names_given() -> None:
    render = renderer(t__sms_txt="{{ journey.name }}: {{ journey.entered_at }}")
    estimate = render.sms_estimate("t", names={"journey": {"name": "Cart rescue"}})
    assert estimate.text == f"Cart rescue: {SAMPLE_TEXT}"


def test_sms_estimate_picks_the_locale_variant() -> None:
    render = renderer(t__sms_txt="Hello", t__sms_fr_txt="Bonjour")
    assert render.sms_estimate("t", "fr-CA").path == "t/sms.fr.txt"


def test_sms_estimate_names_the_first_character_outside_gsm7() -> None:
    estimate = renderer(t__sms_txt="We\u2019ve saved it 😀 " + "a" * 100).sms_estimate("t")
    assert (estimate.encoding, estimate.segments, estimate.first_non_gsm) == (UCS2, 2, "\u2019")
    assert estimate.segments_in_gsm7 == 1


def test_sms_estimate_of_gsm7_text_has_no_offending_character() -> None:
    estimate = renderer(t__sms_txt="Répondez STOP €").sms_estimate("t")
    assert (estimate.encoding, estimate.first_non_gsm, estimate.segments_in_gsm7) == (
        GSM7,
        None,
        None,
    )


def test_sms_estimate_leaves_rendering_strict() -> None:
    render = renderer(t__sms_txt="Hi {{ profile.first_name }}")
    render.sms_estimate("t")
    assert render_error(render, "t", "sms", names()).endswith(
        "'profile' has no attribute 'first_name'"
    )


def test_sms_estimate_of_a_template_that_cannot_render_is_a_render_error() -> None:
    render = renderer(t__sms_txt="Hi\n{{ 1 // 0 }}")
    with pytest.raises(RenderError, match=r"^t/sms.txt:2: ZeroDivisionError"):
        render.sms_estimate("t")


# -- push -----------------------------------------------------------------------------

PUSH = """{% block title %}Your cart{% endblock %}
{% block body %}Hi {{ profile.first_name | default("there") }}, it's still waiting.{% endblock %}
{% block data %}{"deep_link": {{ ("app://c/" ~ trigger.properties.cart_id)|tojson }}}{% endblock %}
"""


def test_push_has_title_body_and_data_from_json() -> None:
    message = renderer(t__push_txt=PUSH).render("t", "push", names(first_name='Ana "A" <b>'))
    assert message.title == "Your cart"
    assert message.body == 'Hi Ana "A" <b>, it\'s still waiting.'
    assert message.data == {"deep_link": "app://c/c1"}


def test_push_data_is_optional() -> None:
    source = PUSH.split("{% block data %}")[0]
    assert renderer(t__push_txt=source).render("t", "push", names()).data is None


def test_push_data_must_be_valid_json() -> None:
    source = PUSH.replace("{% block data %}{", "{% block data %}{oops ")
    message = render_error(renderer(t__push_txt=source), "t", "push", names())
    assert message.startswith("t/push.txt: the data block is not valid JSON: ")


def test_push_data_must_be_an_object_of_strings() -> None:
    source = PUSH.split("{% block data %}")[0] + '{% block data %}{"badge": 3}{% endblock %}'
    message = render_error(renderer(t__push_txt=source), "t", "push", names())
    assert message == "t/push.txt: push data values must be strings; 'badge' is 3"


def test_push_data_must_be_an_object() -> None:
    source = PUSH.split("{% block data %}")[0] + '{% block data %}["a"]{% endblock %}'
    message = render_error(renderer(t__push_txt=source), "t", "push", names())
    assert message.startswith("t/push.txt: the data block must be a JSON object")


def test_push_body_is_required() -> None:
    source = "{% block title %}Hello{% endblock %}"
    message = render_error(renderer(t__push_txt=source), "t", "push", names())
    assert message == "t/push.txt: the body block is missing or empty"
