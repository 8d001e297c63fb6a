from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from nlu import ConfigError, load_config
from nlu.config import RoutingPolicy, routing_from_mapping
from nlu.model import Prediction
from nlu.routing import REASONS, ConversationView, Turn, decide, fold, plausible_options

POLICY = RoutingPolicy(answer_threshold=0.5, frustration_threshold=0.5, clarify_min_probability=0.1)
OTHERS = ("factura", "reembolso", "devolucion", "garantia", "metodos_pago", "ofertas", "tiempo_entrega")


def pred(
    intent: str = "estado_pedido",
    confidence: float = 0.9,
    rest: tuple[float, ...] = (),
    sentiment: str = "neutral",
    frustration: float = 0.0,
) -> Prediction:
    """A prediction whose top intent has ``confidence``; ``rest`` are the runners-up.

    The ranking covers 20 intents, like a real one covers every intent of the model: the
    mass left after ``confidence`` and ``rest`` is spread over the remaining intents."""
    rest = rest or ((1 - confidence) / len(OTHERS),) * len(OTHERS)
    labels = [o for o in (*OTHERS, *(f"otro_{i}" for i in range(20))) if o != intent][:19]
    left = max(0.0, 1 - confidence - sum(rest)) / (len(labels) - len(rest))
    ranking = ((intent, confidence), *zip(labels, (*rest, *(left,) * (len(labels) - len(rest))), strict=True))
    return Prediction(intent, confidence, tuple(ranking), sentiment, 0.9, "neutral", 0.9, frustration)


def turn(intent: str = "estado_pedido", confidence: float = 0.9, sentiment: str = "neutral", action: str = "answer") -> Turn:
    return Turn("m0", "texto", intent, confidence, sentiment, "neutral", 0.0, action)


FRESH = ConversationView(consent="granted")
NEG2 = ConversationView(consent="granted", turns=(turn(sentiment="negativo", intent="factura"), turn(sentiment="negativo", intent="reembolso")))
NEG1 = ConversationView(consent="granted", turns=(turn(sentiment="negativo", intent="factura"),))
ANSWERED = ConversationView(consent="granted", turns=(turn("estado_pedido", action="answer"),))
LOW_BEFORE = ConversationView(consent="granted", turns=(turn("factura", 0.3, action="clarify"),))

# (id, prediction, conversation, text, action, reasons, kind)
CASES: list[tuple[str, Prediction, ConversationView, str, str, tuple[str, ...], str | None]] = [
    ("answer", pred(), FRESH, "dónde está mi pedido?", "answer", (), None),
    # the intent alone asks first: "no", "basta", "no me resuelven nada" were read as opt-outs
    ("opt_out_intent_confirms", pred("darse_de_baja"), FRESH, "ya no quiero nada de ustedes", "clarify", ("confirm_opt_out",), "buttons"),
    ("opt_out_intent_before_consent", pred("darse_de_baja"), ConversationView(consent="unknown"), "no", "answer", ("no_consent",), None),
    ("opt_out_keyword", pred("estado_pedido", 0.3), FRESH, "BAJA", "answer", ("opt_out",), None),
    ("opt_out_before_consent", pred("darse_de_baja"), ConversationView(consent="unknown"), "baja", "answer", ("opt_out",), None),
    ("human_before_opt_out_wording", pred("hablar_con_humano"), FRESH, "no me escriban más, quiero hablar con un asesor", "escalate", ("human_requested",), None),
    ("opt_out_wording_before_a_human_guess", pred("hablar_con_humano"), FRESH, "NO ME ESCRIBAN MÁS", "answer", ("opt_out",), None),
    ("legal_before_opt_out_wording", pred("queja"), FRESH, "no me escriban más, los voy a demandar", "escalate", ("legal_threat", "sensitive_intent"), None),
    ("no_consent", pred(), ConversationView(consent="unknown"), "dónde está mi pedido?", "answer", ("no_consent",), None),
    ("no_consent_names_a_human_request", pred("hablar_con_humano"), ConversationView(consent="revoked"), "un humano por favor", "answer", ("no_consent", "human_requested"), None),
    ("no_consent_names_a_legal_threat", pred("queja"), ConversationView(consent="unknown"), "hablaré con mi abogado", "answer", ("no_consent", "legal_threat"), None),
    ("opt_in", pred("suscribirse"), ConversationView(consent="revoked"), "quiero suscribirme", "answer", ("opt_in",), None),
    ("bare_yes_is_no_opt_in", pred("suscribirse"), ConversationView(consent="revoked"), "sí!", "answer", ("no_consent",), None),
    ("human_intent", pred("hablar_con_humano"), FRESH, "me atiende alguien?", "escalate", ("human_requested",), None),
    ("human_asesor", pred("estado_pedido", 0.3), FRESH, "quiero hablar con un asesor", "escalate", ("human_requested",), None),
    ("human_pasame", pred("precio_producto"), FRESH, "pásame con alguien", "escalate", ("human_requested",), None),
    ("human_humano", pred("saludo"), FRESH, "un humano por favor", "escalate", ("human_requested",), None),
    ("human_before_sensitive", pred("cancelar_pedido"), FRESH, "quiero cancelar, pásenme con una persona", "escalate", ("human_requested",), None),
    ("legal_threat", pred("estado_pedido"), FRESH, "si no llega pongo una denuncia en PROFECO", "escalate", ("legal_threat",), None),
    ("legal_sic", pred("factura"), FRESH, "me quejaré ante la SIC", "escalate", ("legal_threat",), None),
    ("legal_and_sensitive", pred("queja"), FRESH, "mi abogado se va a enterar de esto", "escalate", ("legal_threat", "sensitive_intent"), None),
    ("sensitive_queja", pred("queja"), FRESH, "pésimo servicio", "escalate", ("sensitive_intent",), None),
    ("sensitive_cancel", pred("cancelar_pedido"), FRESH, "cancelen mi pedido", "escalate", ("sensitive_intent",), None),
    ("sensitive_before_frustration", pred("queja", frustration=0.9), FRESH, "pésimo servicio", "escalate", ("sensitive_intent",), None),
    ("frustration", pred(frustration=0.8), FRESH, "otra vez no llegó mi pedido", "escalate", ("frustration",), None),
    ("frustration_before_insult", pred(frustration=0.9), FRESH, "son unos inútiles", "escalate", ("frustration",), None),
    ("insult_folded", pred(), FRESH, "son unos INÚTILES", "escalate", ("insult",), None),
    ("insult_elongated", pred(), FRESH, "imbécilesss", "escalate", ("insult",), None),
    ("shouting", pred(), FRESH, "DÓNDE ESTÁ MI PEDIDO!!!", "escalate", ("shouting",), None),
    ("insult_and_shouting", pred(), FRESH, "LADRONES, DEVUELVAN MI PLATA!!!", "escalate", ("insult", "shouting"), None),
    ("caps_without_bangs", pred(), FRESH, "DÓNDE ESTÁ MI PEDIDO", "answer", (), None),
    ("bangs_without_caps", pred(), FRESH, "dónde está mi pedido!!!", "answer", (), None),
    ("negative_streak", pred(sentiment="negativo"), NEG2, "sigue sin llegar", "escalate", ("negative_streak",), None),
    ("negative_two_only", pred(sentiment="negativo"), NEG1, "sigue sin llegar", "answer", (), None),
    ("repeated_intent", pred("estado_pedido"), ANSWERED, "pero dónde está mi pedido?", "escalate", ("repeated_intent",), None),
    ("repeat_exempt", pred("saludo"), ConversationView(consent="granted", turns=(turn("saludo"),)), "hola", "answer", (), None),
    ("repeated_low_confidence", pred("factura", 0.35, (0.3, 0.2)), LOW_BEFORE, "eso no", "escalate", ("repeated_low_confidence",), None),
    ("signals_accumulate", pred(sentiment="negativo"), NEG2, "INÚTILES!!! dónde está", "escalate", ("insult", "negative_streak"), None),
    ("out_of_scope", pred("fuera_de_alcance"), FRESH, "qué hora es en Japón", "answer", ("out_of_scope",), None),
    ("ambiguous_buttons", pred("factura", 0.4, (0.35, 0.2, 0.05)), FRESH, "lo del pago", "clarify", ("ambiguous",), "buttons"),
    ("ambiguous_two", pred("factura", 0.45, (0.4, 0.05, 0.05)), FRESH, "lo del pago", "clarify", ("ambiguous",), "buttons"),
    ("ambiguous_list", pred("factura", 0.3, (0.2, 0.15, 0.15, 0.1, 0.05)), FRESH, "tengo un tema", "clarify", ("ambiguous",), "list"),
    ("low_confidence_single", pred("factura", 0.45, (0.09, 0.09, 0.09)), FRESH, "mmm", "escalate", ("low_confidence",), None),
]


@pytest.mark.parametrize(("prediction", "conversation", "text", "action", "reasons", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_routing_decide_table(
    prediction: Prediction, conversation: ConversationView, text: str, action: str, reasons: tuple[str, ...], kind: str | None
) -> None:
    decision = decide(prediction, conversation, POLICY, text)
    assert (decision.action, decision.reasons, decision.kind) == (action, reasons, kind)
    if action == "clarify" and reasons != ("confirm_opt_out",):  # that one offers the opt-out and a person
        assert 2 <= len(decision.options) <= POLICY.clarify_max_options
        assert decision.options[0] == prediction.intent


def test_routing_table_covers_every_reason_code() -> None:
    seen = {r for case in CASES for r in case[5]}
    assert seen == set(REASONS)


def test_routing_clarify_too_many_options_escalates() -> None:
    policy = dataclasses.replace(POLICY, clarify_max_options=4)
    p = pred("factura", 0.25, (0.2, 0.15, 0.15, 0.15, 0.1))
    assert decide(p, FRESH, policy, "tengo un tema").reasons == ("low_confidence",)


def test_routing_clarify_leaves_out_of_scope_out() -> None:
    ranking = (("factura", 0.4), ("fuera_de_alcance", 0.3), ("reembolso", 0.3), *((f"otro_{i}", 0.0) for i in range(10)))
    p = Prediction("factura", 0.4, ranking, "neutral", 0.9, "neutral", 0.9, 0.0)
    decision = decide(p, FRESH, POLICY, "eso")
    assert decision.options == ("factura", "reembolso")


def test_routing_sensitive_needs_confidence() -> None:
    # A complaint the model is unsure of is asked about, not escalated as a complaint.
    p = pred("queja", 0.35, (0.3, 0.2))
    assert decide(p, FRESH, POLICY, "mmm lo del pedido").action == "clarify"


def test_routing_without_consent_requirement() -> None:
    policy = dataclasses.replace(POLICY, require_consent=False)
    assert decide(pred(), ConversationView(consent="unknown"), policy, "hola").action == "answer"


def test_routing_label_names_are_configurable() -> None:
    policy = dataclasses.replace(POLICY, sensitive_intents=("complaint",), human_intents=("agent",), out_of_scope_intent=None)
    assert decide(pred("complaint"), FRESH, policy, "bad").reasons == ("sensitive_intent",)
    assert decide(pred("agent"), FRESH, policy, "agent").reasons == ("human_requested",)
    assert decide(pred("queja"), FRESH, policy, "x").action == "answer"


def test_routing_model_without_intent_head_escalates() -> None:
    p = Prediction(None, None, (), "neutral", 0.9, None, None, 0.0)
    assert decide(p, FRESH, POLICY, "hola").reasons == ("low_confidence",)


def test_routing_fold() -> None:
    assert fold("  ¿DÓNDE   estáaaa?  ") == "¿donde esta?"
    assert fold("Año") == "año"


def test_routing_policy_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "nlu.toml"
    path.write_text('[routing]\nanswer_threshold = 0.7\nfrustration_threshold = 1\nsensitive_intents = ["complaint"]\n')
    policy = load_config(path).routing
    assert policy.answer_threshold == 0.7 and policy.frustration_threshold == 1.0
    assert policy.sensitive_intents == ("complaint",)
    assert load_config(None).routing == RoutingPolicy()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"answer_threshold": 1.5}, "answer_threshold must be between 0 and 1"),
        ({"frustration_threshold": -0.1}, "frustration_threshold must be between 0 and 1"),
        ({"clarify_max_options": 11}, "clarify_max_options must be 2..10"),
        ({"negative_streak": 0}, "negative_streak must be at least 1"),
        ({"human_patterns": ["("]}, "human_patterns: invalid regular expression"),
        ({"answer_treshold": 0.5}, r"unknown key\(s\) answer_treshold"),
        ({"out_of_scope_intent": "queja"}, "also a sensitive intent"),
    ],
)
def test_routing_policy_validates(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        routing_from_mapping(raw)


def test_routing_policy_round_trips_through_meta() -> None:
    from nlu.config import config_to_dict

    policy = dataclasses.replace(RoutingPolicy(), answer_threshold=0.65, insults=("tonto",))
    assert routing_from_mapping(config_to_dict(policy)) == policy


@pytest.mark.parametrize("n_intents", [3, 5, 8])
def test_routing_near_uniform_ranking_escalates_instead_of_offering_every_intent(n_intents: int) -> None:
    labels = [f"intent_{i}" for i in range(n_intents)]
    share = 1.0 / n_intents
    ranking = tuple((label, share) for label in labels)
    prediction = Prediction(labels[0], share, ranking, "neutral", 0.9, "neutral", 0.9, 0.0)
    decision = decide(prediction, ConversationView(consent="granted"), RoutingPolicy(), "asdfgh qwerty")
    assert decision.action == "escalate"
    assert decision.reasons == ("low_confidence",)


# -- wording rules, on real messages ---------------------------------------------------------
# Each rule is tried with a prediction that cannot fire it by itself (a low-confidence
# order-status intent), so only the wording decides; the false positives carry a confident
# intent of their own, as the model gives them.
UNSURE = pred("estado_pedido", 0.3, (0.3, 0.2))


def reasons_for(text: str, prediction: Prediction = UNSURE, conversation: ConversationView = FRESH) -> tuple[str, ...]:
    return decide(prediction, conversation, POLICY, text).reasons


OPT_OUTS = [
    "BAJA",
    "STOP",
    "darme de baja",
    "no me escriban más",
    "no me escriban más por favor",
    "no me escribas maaas!!!",
    "estoy de luto y me mandan ofertas de día del padre... por favor no me escriban más 😔",
    "NO ME ESCRIBAN MÁS, qué asco!!!",
    "no me escriban más por este medio",
    "no me manden más mensajes",
    "no me manden más publicidad por favor",
    "no me envíen más promociones",
    "no me mandes más ofertas",
    "no me manden más de esas ofertas de colchones",
    "no me manden más notificaciones",
    "no me manden más whatsapps",
    "chamo, no me manden más nada, que ese número ya no es mío",
    "parce ya no me manden más cosas, qué mamera",
    "quiero dejar de recibir mensajes",
    "quiero dejar de recibir publicidad",
    "cómo hago para dejar de recibir sus promociones?",
    "quiero dejar de recibir",
    "se puede dejar de recibir solo los correos y seguir con whatsapp?",
    # opt-outs of the bundled test set that only the intent model caught
    "no quiero recibir más correos ni whatsapps",
    "dejen de escribirme cada hora, es insoportable, su bot no respeta nada",
    "DEJEN DE MANDARME PUBLICIDAD!!! 5 MENSAJES AL DÍA",
    "weón, paren de mandarme mensajes po, nunca me inscribí",
    "quítenme de la lista, gracias",
    "parce, sáqueme de la lista de difusión por favor",
    "tío, dadme de baja de la newsletter, que ya no compro aquí",
    "quiero darme de baja",
    "desuscribir",
]

NOT_OPT_OUTS = [
    "no me manden más productos rotos, quiero un reembolso",
    "no me manden más productos rotos por favor, quiero un reembolso",
    "no me envíen más cobros, ya pagué",
    "quiero dejar de recibir cobros duplicados en mi tarjeta",
    "cómo hago para dejar de recibir cargos en mi tarjeta?",
    "no me manden mas el paquete a la direccion vieja, cambien la direccion",
    "no me manden más pedidos equivocados",
    "no me manden más cosas rotas",
    "es la última vez que compro acá. cancelen mi pedido y no me escriban más con excusas",
    "no me envíen más facturas en papel",
    "dejen de mandarme productos equivocados",
    "quiero dejar de pagar el envío",
    "quiero dar de baja la compra programada del alimento para perros",  # a cancellation
    "no me mandes más menús, quiero un asesor",
    "no me escribas más respuestas automáticas, quiero hablar con una persona",
    "si no me devuelven el dinero los voy a denunciar a Profeco, y no me escriban más con respuestas automáticas",
]


@pytest.mark.parametrize("text", OPT_OUTS)
def test_routing_opt_out_wording(text: str) -> None:
    assert reasons_for(text) == ("opt_out",)


@pytest.mark.parametrize("text", NOT_OPT_OUTS)
def test_routing_opt_out_wording_is_about_messages_only(text: str) -> None:
    # "no me manden más X" is an opt-out only when X is the bot's messages.
    assert "opt_out" not in reasons_for(text, pred("reembolso"))


HUMAN_REQUESTS = [
    "quiero hablar con alguien",
    "¿puedo hablar con alguien?",
    "el reembolso de mi compra no aparece en mi tarjeta, quiero hablar con alguien",
    "sobre mi factura: quiero hablar con alguien de facturación",
    "mi pedido no ha llegado, asesor",
    "mi pedido #12345 no llega, asesor por favor",
    "mi factura salió mal. asesor",
    "factura, asesor por favor",
    "esto no sirve. humano",
    "necesito un asesor para cambiar mi pedido",
    "quiero un asesor para mi factura",
    "ya me cansé del bot, quiero una persona YA",
    "no me sirven tus respuestas automáticas, quiero un agente",
    "prefiero una persona",
    "quiero devolver unos zapatos pero prefiero que me atienda un asesor",
    "mi reembolso no llega, que me atienda una persona",
    "que me llame un asesor por lo de la garantía",
    "factura: necesito que me ayude una persona",
    "quiero que me contacte un ejecutivo",
    "¿me puede atender un asesor? tengo dudas con la garantía",
    "holaa, me atiende una persona? 🙂",
    "buenas, podría atenderme un asesor cuando tenga un momento?",
    "mi pedido no llega, necesito atención humana",
    "busco atención humana para mi reembolso",
    "atención personalizada",
]

NOT_HUMAN_REQUESTS = [
    "la persona que me atendió fue muy amable, gracias",
    "gracias por pasarme con el asesor, ya quedó",
    "¿una persona puede recoger mi pedido por mí?",
    "quiero una persona que recoja el pedido por mí",
    "quiero regalar esto a una persona",
    "quiero regalar esto a una persona, tienen envoltura?",
    "ya pude hablar con alguien, gracias",
    "gracias por la atención personalizada",
    "excelente atención personalizada, gracias",
    "el asesor me dijo que el pedido llega el lunes",
    "la asesora fue muy amable",
]


@pytest.mark.parametrize("text", HUMAN_REQUESTS)
def test_routing_human_request_wording(text: str) -> None:
    assert reasons_for(text) == ("human_requested",)


@pytest.mark.parametrize("text", NOT_HUMAN_REQUESTS)
def test_routing_human_request_wording_leaves_out_people_talked_about(text: str) -> None:
    assert "human_requested" not in reasons_for(text, pred("agradecimiento"))


LEGAL_THREATS = [
    "nos vemos en los tribunales",
    "nos vemos en el juzgado",
    "esto termina en el tribunal de consumo",
    "los voy a llevar a juicio",
    "les voy a poner un juicio",
    "tomaré medidas legales si no me devuelven el dinero",
    "me voy a quejar a la procuraduría",
    "voy a poner una queja en la CONDUSEF",
    "voy a poner una tutela",
    "interpondré una acción de tutela",
    "voy a interponer un derecho de petición",
    "los voy a reportar a la oficina de consumo",
    "iré a la Dirección General de Consumo",
    "los voy a acusar",
]

NOT_LEGAL_THREATS = [
    "a mi juicio el producto es bueno",
    "¿perdieron el juicio? ¿cómo me cobran dos veces?",
    "me sentí juzgado por el vendedor",
    "¿me pueden acusar recibo del pago?",
    "quiero cambiar la dirección de entrega",
    "el consumo de la batería es alto",
    "gracias, nos vemos",
]


@pytest.mark.parametrize("text", LEGAL_THREATS)
def test_routing_legal_wording(text: str) -> None:
    assert reasons_for(text) == ("legal_threat",)


@pytest.mark.parametrize("text", NOT_LEGAL_THREATS)
def test_routing_legal_wording_needs_the_legal_sense(text: str) -> None:
    assert "legal_threat" not in reasons_for(text, pred("estado_pedido"))


def test_routing_court_threat_is_not_a_goodbye() -> None:
    # The model reads "nos vemos en ..." as a goodbye with full confidence.
    decision = decide(pred("despedida", 1.0), FRESH, POLICY, "nos vemos en los tribunales")
    assert (decision.action, decision.reasons) == ("escalate", ("legal_threat",))


INSULTS = [
    "son unos INÚTILES",
    "p*ta madre ya",
    "p*ta madre ya, dónde está mi pedido",
    "pta madre ya",
    "m1erda",
    "servicio de m13rd4",
    "put0s",
    "put@s",
    "m*rda de servicio",
    "qué verga, mi pedido no llega",
    "están de la verga",
    "pinche pedido no llega",
    "este pinche servicio no sirve",
    "la concha de tu madre",
    "la concha de la lora, mi pedido",
    "gonorrea de servicio",
    "estoy emputado",
    "son una basura",
    "esta app es una basura, no sirve",
    "basura de servicio",
    "servicio basura",
    "qué basura!",
    "BASURA",
    "son unas ratas, devuelvan mi plata",
    "ratas!!!",
    "ratas, devuélvanme mi dinero",
    "malditas ratas",
    "son unos payasos",
    "manga de forros",
]

NOT_INSULTS = [
    "¿dónde tiro la basura del embalaje?",
    "¿el empaque se puede tirar a la basura o lo tengo que devolver?",
    "quiero un bote de basura de 20 litros",
    "tienen bolsas de basura?",
    "¿venden trampas para ratas?",
    "tienen ratas de peluche? es para mi hijo",
    "¿son unas ratas de peluche?",
    "¿tienen forros para celular?",
    "busco un disfraz de payasos para un cumpleaños",
    "pinche aquí para ver el pedido",
    "pinché en el enlace y no funciona",
    "ya pinché varias veces",
    "una concha marina de adorno",
    "quiero pagar $500 en 3 cuotas",
    "mi pedido es el A1-34 y la factura 0013",
    "*urgente* mi pedido no llega",
]


@pytest.mark.parametrize("text", INSULTS)
def test_routing_insults(text: str) -> None:
    assert reasons_for(text) == ("insult",)


@pytest.mark.parametrize("text", NOT_INSULTS)
def test_routing_insults_leave_neutral_senses_out(text: str) -> None:
    assert reasons_for(text, pred("stock_producto")) == ()


def test_routing_insult_text_reads_leetspeak_and_censoring_for_insults_only() -> None:
    from nlu.routing import insult_text

    insults = RoutingPolicy().insults
    assert insult_text("servicio de m13rd4", insults) == "servicio de mierda"
    assert insult_text("p*ta madre", insults) == "puta madre"
    assert insult_text("h*la, 20 litros por $500", insults) == "h*la, 20 litros por $500"  # no lexicon word fits


@pytest.mark.parametrize("text", ["MUCHAS GRACIAS POR TODO!!!", "HOLA!!! BUENOS DIAS!!!", "FELIZ NAVIDAD!!!", "ME ENCANTÓ!!! GRACIAS!!!"])
def test_routing_happy_caps_are_not_shouting(text: str) -> None:
    assert reasons_for(text, pred("agradecimiento", sentiment="positivo")) == ()


def test_routing_sarcastic_caps_about_an_order_are_still_shouting() -> None:
    # The model reads it as positive (0.71); only small talk gets the benefit of the doubt.
    assert reasons_for("GENIAL!!! OTRA VEZ SIN MI PEDIDO!!!", pred("estado_pedido", sentiment="positivo")) == ("shouting",)


@pytest.mark.parametrize(
    ("text", "reasons"),
    [
        ("CUANDO LLEGA MI PEDIDO?!?!", ("shouting",)),
        ("DÓNDE ESTÁ MI PEDIDO!?!", ("shouting",)),
        ("¡¡¡DÓNDE ESTÁ MI PEDIDO", ("shouting",)),
        ("CUANDO LLEGA MI PEDIDO???", ()),  # a question, however insistent
        ("CUANDO LLEGA MI PEDIDO?!", ()),  # two marks
    ],
)
def test_routing_shouting_marks(text: str, reasons: tuple[str, ...]) -> None:
    assert reasons_for(text, pred("estado_pedido")) == reasons
    assert reasons_for(text, pred("estado_pedido", sentiment="negativo")) == reasons


def test_routing_unsure_out_of_scope_is_asked_about_not_declined() -> None:
    # "información" scored out of scope at 0.16 used to get "con eso no te puedo ayudar".
    p = pred("fuera_de_alcance", 0.16, (0.15, 0.13, 0.09))
    decision = decide(p, FRESH, POLICY, "información")
    assert (decision.action, decision.reasons, decision.kind) == ("clarify", ("ambiguous",), "buttons")
    assert decision.options == ("factura", "reembolso")
    # ... and escalated when nothing else is plausible either.
    assert decide(pred("fuera_de_alcance", 0.4, (0.05,) * 7), FRESH, POLICY, "y el clima?").reasons == ("low_confidence",)
    # At answer confidence it is still declined.
    assert decide(pred("fuera_de_alcance", 0.5), FRESH, POLICY, "y el clima?").reasons == ("out_of_scope",)


def test_routing_out_of_scope_twice_is_not_a_repeated_intent() -> None:
    # "qué clima hace hoy?" then "quién ganó el partido ayer?" escalated as repeated_intent.
    declined = Turn("m0", "qué clima hace hoy?", "fuera_de_alcance", 0.99, "neutral", "neutral", 0.0, "answer", ("out_of_scope",))
    conversation = ConversationView(consent="granted", turns=(declined,))
    decision = decide(pred("fuera_de_alcance", 0.99), conversation, POLICY, "quién ganó el partido ayer?")
    assert (decision.action, decision.reasons) == ("answer", ("out_of_scope",))


def test_routing_a_topic_picked_by_button_then_asked_in_words_is_not_a_repeat() -> None:
    # Greeting menu -> "Devolución" (answered) -> "quiero devolver unas zapatillas" escalated
    # as repeated_intent: the tap asked nothing, the customer's own words come next.
    picked = Turn("m0", "Devolución", "devolucion", 1.0, "neutral", "neutral", 0.0, "answer", ("button_choice",))
    conversation = ConversationView(consent="granted", turns=(picked,))
    decision = decide(pred("devolucion", 0.95), conversation, POLICY, "quiero devolver unas zapatillas")
    assert (decision.action, decision.reasons) == ("answer", ())
    typed = dataclasses.replace(picked, reasons=())  # asked in words, answered, asked again: a repeat
    assert "repeated_intent" in decide(pred("devolucion", 0.95), ConversationView(consent="granted", turns=(typed,)), POLICY, "otra vez").reasons


def _ranked(*top: tuple[str, float]) -> Prediction:
    """A prediction with the bundled model's top intents for a message (rounded) and the
    rest of its 27 intents sharing what is left."""
    rest = (1 - sum(p for _, p in top)) / (27 - len(top))
    ranking = (*top, *((f"otro_{i}", rest) for i in range(27 - len(top))))
    return Prediction(top[0][0], top[0][1], ranking, "neutral", 0.9, "neutral", 0.9, 0.0)


@pytest.mark.parametrize(
    ("text", "prediction", "options"),
    [
        ("llámenme por favor", _ranked(("darse_de_baja", 0.38), ("hablar_con_humano", 0.27), ("suscribirse", 0.1)), ("hablar_con_humano",)),
        ("tengo una duda", _ranked(("hablar_con_humano", 0.19), ("despedida", 0.18), ("devolucion", 0.15), ("saludo", 0.13)), ("hablar_con_humano", "devolucion")),
        ("ya, entendido", _ranked(("estado_pedido", 0.25), ("agradecimiento", 0.15), ("despedida", 0.11)), ("estado_pedido",)),
        ("😅", _ranked(("saludo", 0.4), ("despedida", 0.13), ("ubicacion_tienda", 0.07)), ()),
    ],
)
def test_routing_clarify_offers_topics_only(text: str, prediction: Prediction, options: tuple[str, ...]) -> None:
    # Small talk (saludo, despedida, agradecimiento) and opt-out/opt-in are no topic to offer.
    assert plausible_options(prediction, POLICY) == options
    decision = decide(prediction, FRESH, POLICY, text)
    if len(options) >= 2:
        assert (decision.action, decision.options) == ("clarify", options)
    else:
        assert (decision.action, decision.reasons) == ("escalate", ("low_confidence",))


@pytest.mark.parametrize(("text", "prediction", "reasons"), [
    ("quiero suscribirme, pásame con un asesor", pred("suscribirse"), ("human_requested",)),
    ("suscríbanme o los demando", pred("suscribirse"), ("legal_threat",)),
    ("quiero suscribirme y nadie me hace caso", pred("suscribirse", frustration=0.9), ("frustration",)),
    ("QUIERO SUSCRIBIRME!!!", pred("suscribirse"), ("shouting",)),
])
def test_routing_without_consent_requirement_an_opt_in_does_not_silence_an_escalation(
    text: str, prediction: Prediction, reasons: tuple[str, ...]
) -> None:
    # Without the consent requirement every new customer's consent is "unknown": an opt-in
    # read first answered "Te suscribimos" to a request for a person, a legal threat, a
    # frustrated customer, where it used to escalate. It is recorded when the bot answers.
    policy = dataclasses.replace(POLICY, require_consent=False)
    for consent in ("unknown", "revoked"):
        decision = decide(prediction, ConversationView(consent=consent), policy, text)  # type: ignore[arg-type]
        assert (decision.action, decision.reasons) == ("escalate", reasons), consent
    assert decide(pred("suscribirse"), ConversationView(consent="unknown"), policy, "quiero suscribirme").reasons == ("opt_in",)
