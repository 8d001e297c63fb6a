from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlu import ConfigError
from nlu.responses import (
    DEFAULT_CATALOGUE,
    MAX_BUTTON_TITLE,
    MAX_ROW_TITLE,
    Reply,
    catalogue_from_mapping,
    extract_city,
    extract_order,
    load_catalogue,
    to_whatsapp,
)

BUNDLED_INTENTS = ["estado_pedido", "tiempo_entrega", "costo_envio", "cambiar_direccion", "modificar_pedido", "cancelar_pedido", "carrito_abandonado", "precio_producto", "stock_producto", "aviso_reposicion", "ofertas", "metodos_pago", "factura", "garantia", "devolucion", "reembolso", "queja", "hablar_con_humano", "horario_tienda", "ubicacion_tienda", "agendar_cita", "saludo", "agradecimiento", "despedida", "suscribirse", "darse_de_baja", "fuera_de_alcance"]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
    return data


def test_responses_bundled_catalogue_answers_every_bundled_intent() -> None:
    catalogue = load_catalogue(intents=BUNDLED_INTENTS)
    for intent in BUNDLED_INTENTS:
        reply = catalogue.answer(intent, "hola")
        assert reply.text and "{" not in reply.text
        assert len(reply.buttons) <= 3 and all(len(b.title) <= MAX_BUTTON_TITLE for b in reply.buttons)
        assert catalogue.title(intent) and len(catalogue.title(intent)) <= MAX_BUTTON_TITLE
    assert "asistente virtual" in catalogue.system["disclosure"].text
    consent = catalogue.system_reply("consent")
    assert [b.title for b in consent.buttons] == ["Sí, acepto", "No"]
    assert catalogue.system_reply("escalate").text.startswith("Te paso con una persona")


@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("dónde está mi pedido #A-48213?", "#A-48213"),
        ("mi pedido 1029384 no llega", "1029384"),
        ("la orden nº 55-2231 sigue igual", "55-2231"),
        ("compra N° 1109384 del 3 de marzo", "1109384"),
        ("dónde está mi pedido?", None),
        ("pedido de 3 cosas", None),
    ],
)
def test_responses_extract_order(text: str, order: str | None) -> None:
    assert extract_order(text) == order


@pytest.mark.parametrize(
    ("text", "city"),
    [
        ("cuánto tarda el envío a medellin?", "Medellín"),
        ("tienen tienda en Ciudad de México?", "Ciudad de México"),
        ("horario en bogota", "Bogotá"),
        ("tienen tienda en Lima?", "Lima"),
        ("le pongo lima al taco", None),  # an everyday word needs a capital letter
        ("devuélvanme la plata", None),
        ("envían a Barcelona?", "Barcelona"),
        ("hola", None),
    ],
)
def test_responses_extract_city(text: str, city: str | None) -> None:
    assert extract_city(text) == city


def test_responses_long_customer_reference_keeps_the_reply_within_limits() -> None:
    # A pasted "#" + 1,000 characters was taken as the order reference and put into the
    # answer: an interactive body of 1,300+ characters, refused by the Cloud API.
    catalogue = load_catalogue()
    message = "dónde está mi pedido #" + "9" * 1000 + " ??"
    reply = catalogue.answer("estado_pedido", message).prefixed(catalogue.system["disclosure"].text)
    body = to_whatsapp(reply, "5215512345678")["interactive"]["body"]["text"]
    assert len(body) <= 1024 and "tu pedido" in body
    assert extract_order("pedido #1" + "A" * 40) is None and extract_order("pedido #A-48213-" + "7" * 20) == "#A-48213-" + "7" * 20


def test_responses_placeholders_filled_or_fallback() -> None:
    catalogue = load_catalogue()
    assert "tu pedido #A-48213" in catalogue.answer("estado_pedido", "dónde está mi pedido #A-48213").text
    assert "tu pedido" in catalogue.answer("estado_pedido", "dónde está mi pedido").text
    assert "Medellín" in catalogue.answer("tiempo_entrega", "cuánto tarda a medellín").text
    assert "tu ciudad" in catalogue.answer("tiempo_entrega", "cuánto tarda").text


@pytest.mark.parametrize(("n", "kind", "rows"), [(2, "buttons", 3), (3, "buttons", 3), (5, "list", 6), (10, "list", 10)])
def test_responses_clarify_shapes(n: int, kind: str, rows: int) -> None:
    catalogue = load_catalogue()
    options = BUNDLED_INTENTS[:n]
    reply = catalogue.clarify(options, kind)
    assert reply.kind == kind
    if kind == "buttons":
        assert len(reply.buttons) == rows and all(len(b.title) <= MAX_BUTTON_TITLE for b in reply.buttons)
        assert reply.buttons[0].id == f"intent:{options[0]}"
    else:
        assert reply.list is not None and len(reply.list.rows) == rows
        assert all(len(r.title) <= MAX_ROW_TITLE for r in reply.list.rows)
    # "talk to a person" is offered whenever there is room.
    ids = [b.id for b in reply.buttons] + ([r.id for r in reply.list.rows] if reply.list else [])
    assert ("human" in ids) == (n < (3 if kind == "buttons" else 10))


def test_responses_clarify_offers_a_person_once() -> None:
    reply = load_catalogue().clarify(["hablar_con_humano", "factura"], "buttons")
    assert [b.title for b in reply.buttons] == ["Hablar con asesor", "Factura"]


def _edit(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    keys = path.split(".")
    node = out
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return out


_DELETE = object()
ROW = {"id": "intent:factura", "title": "Factura"}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("intents.factura", _DELETE, r"intents: no answer for factura"),
        ("intents.factura.text", "", r"intents\.factura\.text: missing or empty"),
        ("intents.estado_pedido.buttons.0.title", "Ver tiempos de entrega ya", r"intents\.estado_pedido\.buttons\[0\]\.title: .* at most 20"),
        ("intents.estado_pedido.buttons", [ROW, {"id": "human", "title": "A"}, {"id": "intent:queja", "title": "B"}, {"id": "intent:reembolso", "title": "C"}], r"intents\.estado_pedido\.buttons: 4 buttons"),
        ("intents.saludo.list.rows", [{"id": f"intent:{i}", "title": i[:24]} for i in BUNDLED_INTENTS[:11]], r"intents\.saludo\.list\.rows: 11 rows"),
        ("intents.saludo.list.rows.0.title", "Estado de mi pedido en curso", r"intents\.saludo\.list\.rows\[0\]\.title: .* at most 24"),
        ("intents.saludo.list.rows.0.description", "x" * 73, r"intents\.saludo\.list\.rows\[0\]\.description: longer than 72"),
        ("intents.factura.text", "Tu factura de {pedido}", r"intents\.factura\.text: unknown placeholder \{pedido\}"),
        ("intents.factura.text", "Tu factura {order", r"intents\.factura\.text: bad braces"),
        ("intents.factura.title", "Facturas y comprobantes", r"intents\.factura\.title: .* longer than 20"),
        ("intents.factura.buttons", [{"id": "intent:nada", "title": "Nada"}], r"intents\.factura\.buttons\[0\]\.id: 'intent:nada' names an intent"),
        ("intents.factura.buttons", [{"id": "raro", "title": "Raro"}], r"intents\.factura\.buttons\[0\]\.id: 'raro' is not"),
        ("intents.factura.buttons", [ROW, ROW], r"intents\.factura\.buttons: duplicate id"),
        ("intents.factura.color", "rojo", r"intents\.factura: unknown key\(s\) color"),
        ("intents.saludo.buttons", [ROW], r"intents\.saludo: .* buttons or a list, not both"),
        ("system.consent", _DELETE, r"system: missing message\(s\) consent"),
        ("system.clarify.list_button", "Ver todas las opciones posibles", r"system\.clarify\.list_button"),
        # Always sent with the options as buttons or a list: the 1,024 limit of an
        # interactive body, not the 4,096 of a text (Meta refused every clarification).
        ("system.clarify.text", "¿Sobre cuál tema? " + "x" * 900, r"system\.clarify\.text: .* exceeds WhatsApp's 1024"),
        # Fits as written, not once {order} holds a reference (this entry has buttons).
        ("intents.estado_pedido.text", "{order} " + "x" * 880, r"intents\.estado_pedido\.text: .* exceeds WhatsApp's 1024"),
        ("placeholders.producto", {"found": "{value}"}, r"placeholders\.producto: unknown placeholder"),
    ],
)
def test_responses_catalogue_errors_name_the_entry(raw: dict[str, Any], path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        catalogue_from_mapping(_edit(raw, path, value), intents=BUNDLED_INTENTS)


@pytest.mark.parametrize(
    ("intents", "message"),
    [
        # A user's own labels with no titles: both fall back to "consulta estado pedi".
        ({"consulta_estado_pedido_nacional": "A", "consulta_estado_pedido_internacional": "B"}, r"'consulta estado pedi' is also the option title"),
        ({"pedido_a": {"text": "A", "title": "Pedidos"}, "pedido_b": {"text": "B", "title": "Pedidos"}}, r"intents\.pedido_b\.title: 'Pedidos' is also"),
        ({"___": "A"}, r"intents\.___\.title: needed"),
        ({"x" * 194: "A"}, r"do not fit a WhatsApp button or row id"),
    ],
)
def test_responses_catalogue_refuses_options_whatsapp_would_refuse(raw: dict[str, Any], intents: dict[str, Any], message: str) -> None:
    # These loaded, and the first clarifying question offering them was refused by the
    # Cloud API (repeated or blank button titles, a row id over 200 characters).
    with pytest.raises(ConfigError, match=message):
        catalogue_from_mapping({**raw, "intents": {**raw["intents"], **intents}})


def test_responses_clarify_options_are_valid_whatsapp_choices(raw: dict[str, Any]) -> None:
    longest = "y" * 193  # "intent:" + 193 = 200, the row id limit
    catalogue = catalogue_from_mapping({**raw, "intents": {**raw["intents"], longest: "Respuesta", "consulta_estado_pedido_internacional": "B"}})
    for kind in ("buttons", "list"):
        body = to_whatsapp(catalogue.clarify([longest, "consulta_estado_pedido_internacional", "factura"], kind), "5215512345678")
        action = body["interactive"]["action"]
        choices = [b["reply"] for b in action["buttons"]] if kind == "buttons" else action["sections"][0]["rows"]
        assert len({c["title"] for c in choices}) == len(choices) and all(c["title"].strip() for c in choices)
        assert all(len(c["id"]) <= (256 if kind == "buttons" else 200) for c in choices)


def test_responses_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_catalogue(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_catalogue(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_catalogue(bad)


def test_responses_to_whatsapp_shapes() -> None:
    catalogue = load_catalogue()
    text = to_whatsapp(catalogue.answer("despedida"), "5215512345678")
    assert text["type"] == "text" and text["to"] == "5215512345678" and text["text"]["body"]
    buttons = to_whatsapp(catalogue.clarify(["factura", "reembolso"], "buttons"), "34600000000")
    assert buttons["type"] == "interactive" and buttons["interactive"]["type"] == "button"
    assert buttons["interactive"]["action"]["buttons"][0] == {"type": "reply", "reply": {"id": "intent:factura", "title": "Factura"}}
    listed = to_whatsapp(catalogue.clarify(BUNDLED_INTENTS[:5], "list"), "34600000000")
    section = listed["interactive"]["action"]["sections"][0]
    assert listed["interactive"]["type"] == "list" and len(section["rows"]) == 6
    assert all(m["messaging_product"] == "whatsapp" for m in (text, buttons, listed))


def test_responses_reply_round_trips() -> None:
    catalogue = load_catalogue()
    for reply in (catalogue.answer("saludo"), catalogue.system_reply("consent"), catalogue.answer("despedida")):
        assert Reply.from_dict(reply.to_dict()) == reply
