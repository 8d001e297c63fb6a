from __future__ import annotations

import re

import pytest

from nlu.privacy import redact, redact_values

# (message, expected): realistic Spanish customer messages from ES and Latin America.
REDACTED = [
    # e-mail
    ("me puede contactar un ejecutivo por correo? carlos.rios@hotmail.com", "me puede contactar un ejecutivo por correo? [EMAIL]"),
    ("mi correo es juan.perez+tienda@gmail.com.co, gracias", "mi correo es [EMAIL], gracias"),
    # phones: Colombia, México, España, Argentina, Chile, Perú, Ecuador, Venezuela, Panamá
    ("¿Me pueden agregar al WhatsApp de promociones? Mi número es 3104567821", "¿Me pueden agregar al WhatsApp de promociones? Mi número es [TELEFONO]"),
    ("parce, inscríbame a las alertas, el número es 310 555 2211", "parce, inscríbame a las alertas, el número es [TELEFONO]"),
    ("mi número es +57 310 4567821", "mi número es [TELEFONO]"),
    ("Mi número es 55 4412 9087.", "Mi número es [TELEFONO]."),
    ("llámenme al (55) 1234-5678 o al +52 1 55 1234 5678", "llámenme al [TELEFONO] o al [TELEFONO]"),
    ("llámame al +34 612 345 678 o al fijo 91 123 45 67", "llámame al [TELEFONO] o al fijo [TELEFONO]"),
    ("mi móvil 612345678", "mi móvil [TELEFONO]"),
    ("whatsapp 0034 612 345 678", "whatsapp [TELEFONO]"),
    ("cel 11 1234-5678 o 15-1234-5678", "cel [TELEFONO] o [TELEFONO]"),
    ("escribime al +54 9 11 1234-5678 che", "escribime al [TELEFONO] che"),
    ("mi fono es +56 9 8765 4321", "mi fono es [TELEFONO]"),
    ("Perú, cel 987 654 321", "Perú, cel [TELEFONO]"),
    ("mi celular es 0991234567 y el de mi esposo 099 123 4567", "mi celular es [TELEFONO] y el de mi esposo [TELEFONO]"),
    ("mi cel 0414-1234567", "mi cel [TELEFONO]"),
    ("en Panamá me contactan al 6123-4567", "en Panamá me contactan al [TELEFONO]"),
    ("llámame al 5551234", "llámame al [TELEFONO]"),
    ("agrégame: https://wa.me/573104567821", "agrégame: https://wa.me/[TELEFONO]"),
    ("whatsapp 5215512345678", "whatsapp [TELEFONO]"),
    ("pedí 2 310 555 2211", "pedí 2 [TELEFONO]"),
    # cards (Luhn-valid)
    ("pagué con la tarjeta 4111 1111 1111 1111 y no pasó", "pagué con la tarjeta [TARJETA] y no pasó"),
    ("mi visa 4111-1111-1111-1111 vence en 12/27", "mi visa [TARJETA] vence en 12/27"),
    ("la amex 3782 822463 10005", "la amex [TARJETA]"),
    ("cobraron 2 veces a 5500005555555559!!", "cobraron 2 veces a [TARJETA]!!"),
    # documents: España
    ("mi DNI es 12345678Z", "mi DNI es [DOCUMENTO]"),
    ("dni 12345678-z a nombre de Ana", "dni [DOCUMENTO] a nombre de Ana"),
    ("soy extranjero, NIE X1234567L", "soy extranjero, NIE [DOCUMENTO]"),
    ("NIE: Y-1234567-X", "NIE: [DOCUMENTO]"),
    # México
    ("mi curp es GODE561231HDFRRN09", "mi curp es [DOCUMENTO]"),
    ("factura a mi RFC GODE561231GR8 porfa", "factura a mi RFC [DOCUMENTO] porfa"),
    ("RFC de la empresa: ABC010203XY1", "RFC de la empresa: [DOCUMENTO]"),
    # Chile
    ("mi RUT es 12.345.678-9", "mi RUT es [DOCUMENTO]"),
    ("boleta con rut 12345678-5 po", "boleta con rut [DOCUMENTO] po"),
    ("a nombre de 12345678-5", "a nombre de [DOCUMENTO]"),  # check digit right, no keyword needed
    ("rut 7.654.321-k", "rut [DOCUMENTO]"),
    # Colombia / Ecuador cédula, NIT, Perú RUC/DNI, Argentina DNI/CUIT, Venezuela
    ("CC 1020304050 a nombre de Juan", "CC [DOCUMENTO] a nombre de Juan"),
    ("mi cédula de ciudadanía es la 1.020.304.050", "mi cédula de ciudadanía es la [DOCUMENTO]"),
    ("C.C. 79.456.123 de Bogotá", "C.C. [DOCUMENTO] de Bogotá"),
    ("cédula 0912345678, Guayaquil", "cédula [DOCUMENTO], Guayaquil"),
    ("el NIT es 900.456.789-1", "el NIT es [DOCUMENTO]"),
    ("xfa factura con mi RUC 10456789012", "xfa factura con mi RUC [DOCUMENTO]"),
    ("mi DNI 45678912, soy de Lima", "mi DNI [DOCUMENTO], soy de Lima"),
    ("DNI 12.345.678, Buenos Aires", "DNI [DOCUMENTO], Buenos Aires"),
    ("me mandaron la factura con el CUIT mal, es 20-33445566-7", "me mandaron la factura con el CUIT mal, es [DOCUMENTO]"),
    ("documento: 79.456.123", "documento: [DOCUMENTO]"),
    ("mi cédula V-12.345.678", "mi cédula [DOCUMENTO]"),
    # several kinds at once, order reference kept
    (
        "cancelé el pedido 1029384, mi cel 3104567821 y correo ana@mail.com, CC 1020304050",
        "cancelé el pedido 1029384, mi cel [TELEFONO] y correo [EMAIL], CC [DOCUMENTO]",
    ),
]

# Things the agent needs, or that are not personal: order references, prices, dates, sizes.
KEPT = [
    "hola, me pueden decir dónde está mi pedido #A-48213?",
    "Me equivoqué de modelo de cargador, quiero devolverlo. Pedido 1029384",
    "Estimados, necesito cancelar mi pedido N° 4410873.",
    "Número de pedido: 4418273. Muchas gracias",
    "Buenas, hice un pedido el 3 de marzo, número 4410293, a nombre de Carmen Ruiz",
    "por favor anulen la orden CL-22091, me equivoqué de comuna",
    "cambiar de 128gb a 256gb el celular, orden 4471-MX",
    "orden 55-2231 y pedido 33-1098",
    "dirección nueva: Jr. Huallaga 320, Cercado de Lima. Pedido #PE-11209. Gracias",
    "el pedido 7720145 tiene 3 productos por $89.990",
    "pedido 3104567821 no llega",  # an order reference, even if phone-shaped
    "la guía de envío 7700123456789 no aparece",
    "el precio es $1.299.000 en Colombia",
    "cuesta 1299.90 euros, y el otro 45.990 pesos",
    "tengo 1.500.000 de deuda y el carro vale 120.000.000",
    "el carro vale 120 000 000 y la moto 12 500 000",
    "son 12 cuotas de 45.000, me cobraron 2 veces 149.900",
    "te pago 1500000 mañana",
    "el 12/03/2024 a las 10:30",
    "el 2024-03-12 llega? o el 15/04 a las 14:30",
    "talla 42, también 38 40 42 44",
    "zapatillas talla 9.5 y una camisa talla M",
    "batería de 20000mAh, el televisor de 50 pulgadas",
    "entre 5 y 6 pm, compré 3 por 2, gane 500 dólares",
    "el iphone 15 pro de 256 gb modelo SM-A546E",
    "dirección Calle 45 #12-30, código postal 28045",
    "garantía del refrigerador, serie 88213",
    "mi tarjeta termina en 4242",
    "tarjeta 4111-1111-1111-1112 rechazada",  # fails Luhn: not a card number
    "la factura F001-00012345",
    "ya van 3 días!!! y 2 semanas 😡",
    "quiero 2 unidades del 4410293",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED, ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_privacy_redacts_pii(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT, ids=lambda v: v[:40])
def test_privacy_keeps_orders_prices_dates_sizes(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("mi dni 12345678 a mi nombre", "mi dni [DOCUMENTO] a mi nombre"),  # " a" is a word, not a DNI letter
    ("pedido 1029384 3104567821", "pedido 1029384 [TELEFONO]"),  # order kept, phone after it not
    ("orden #A-48213 y mi mail ana.p@x.co", "orden #A-48213 y mi mail [EMAIL]"),
])
def test_privacy_boundaries(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [text for text, _ in REDACTED] + KEPT)
def test_privacy_redact_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize("text", [text for text, _ in REDACTED])
def test_privacy_no_long_digit_run_survives(text: str) -> None:
    # Whatever the tags, no run of 7+ digits of PII is left over, except the order reference.
    leftover = re.findall(r"\d[\d .-]{5,}\d", redact(text).replace("1029384", ""))
    assert all(len(re.sub(r"\D", "", s)) < 7 for s in leftover), leftover


@pytest.mark.parametrize("text", ["", " ", "hola", "\ue000a\ue001 3104567821", "1 " * 5000, "🙂" * 100])
def test_privacy_odd_input_does_not_break(text: str) -> None:
    out = redact(text)
    assert isinstance(out, str)
    assert "\ue000" not in out and "\ue001" not in out
    assert "3104567821" not in out


def test_privacy_redact_values_walks_json_and_keeps_ids() -> None:
    turns = [
        {"role": "user", "text": "mi cel 3104567821", "message_id": "wamid.3104567821", "n": 3},
        {"role": "bot", "reply": {"text": "te escribimos a ana@x.com", "buttons": ["CC 1020304050"]}},
    ]
    assert redact_values(turns) == [
        {"role": "user", "text": "mi cel [TELEFONO]", "message_id": "wamid.3104567821", "n": 3},
        {"role": "bot", "reply": {"text": "te escribimos a [EMAIL]", "buttons": ["CC [DOCUMENTO]"]}},
    ]
