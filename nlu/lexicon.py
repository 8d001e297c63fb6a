"""A small Spanish sentiment and emotion lexicon, written for this project.

Each word token of a normalised message (lower case, accents folded, ñ kept) may belong
to a few cue classes: ``pos``/``neg`` (polarity) and the six basic emotions of
EmoEvent-style data (``anger``, ``joy``, ``sadness``, ``fear``, ``disgust``,
``surprise``). The featuriser turns each class into a pseudo-word ``lex_<class>``, so
a rare word ("lamentable", "repugnante") shares evidence with its frequent relatives,
and marks it ``lex_neg_<class>`` inside a negation scope ("no me gusta").

Short words are matched exactly and stems (4+ letters) by prefix:
a 3-letter prefix such as "mal" would also match "maleta". Words are drawn from
general Spanish across Spain and Latin America; no data set was used to pick them.
"""

from __future__ import annotations

import functools

CLASSES: tuple[str, ...] = ("pos", "neg", "anger", "joy", "sadness", "fear", "disgust", "surprise")

# class -> (exact words, prefix stems)
_LEXICON: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "pos": (
        frozenset({"bien", "buen", "buena", "buenas", "bueno", "buenos", "mejor", "mejores", "top", "crack", "lindo",
                   "linda", "lindos", "lindas", "amor", "amo", "ame", "gracias", "exito", "bonito", "bonita", "guapo",
                   "guapa", "chido", "chida", "bacan", "chevere", "ok", "xrisa", "feliz", "felices", "rico", "rica"}),
        ("alegr", "encant", "genial", "excelen", "maravill", "fantast", "perfect", "increib", "hermos", "precios",
         "divert", "orgull", "felicit", "disfrut", "recomend", "agradec", "amabl", "esperanz", "ilusion", "emocionan",
         "content", "gusta", "favorit", "estupend", "buenis", "felicid", "celebr", "ganador", "triunf", "apoy",
         "solidari", "admir", "agradab", "eficien", "puntual", "bendic", "orgullo", "espectacul", "impecab"),
    ),
    "neg": (
        frozenset({"mal", "mala", "malo", "malos", "malas", "peor", "peores", "fatal", "asco", "odio", "pena", "nunca",
                   "harto", "harta", "hartos", "dolor", "miedo", "culpa", "crisis", "guerra", "error", "muerte",
                   "muertos", "muerto", "robo", "triste", "tristes", "lento", "lenta", "caro", "cara", "sucio", "sucia"}),
        ("pesim", "horribl", "terribl", "odia", "lament", "problem", "queja", "reclam", "retras", "cancelad",
         "perdid", "perdi", "robar", "robad", "estaf", "verguenz", "desastr", "basura", "mierd", "inutil",
         "incompet", "sufr", "preocup", "fracas", "injust", "abus", "corrup", "violen", "ataque", "asesin",
         "demora", "molest", "cansad", "ridicul", "decepcion", "fraud", "fallo", "fallar", "tristez", "llor",
         "desgraci", "vergonz", "horror", "nefast", "penos", "indign", "enfad", "enoj", "rabia", "maldit",
         "deprim", "peligr", "amenaz", "insult", "denunci", "negligen", "maltrat", "ladron", "mentir", "mentira",
         "engan", "timo", "fallec", "destroz", "grave", "imposib", "overbook", "extravi", "sobrevent"),
    ),
    "anger": (
        frozenset({"odio", "ira", "harto", "harta", "hartos", "hartas", "joder", "carajo", "coño", "cono", "puta",
                   "puto", "putos", "putas", "rabia", "basta", "idiota", "idiotas", "imbecil", "ladrones", "ratas"}),
        ("odia", "furi", "enoj", "enfad", "cabre", "indign", "molest", "mierd", "estupid", "verguenz", "inutil",
         "ladron", "maldit", "gilipoll", "pendej", "cabron", "sinverguenz", "hipocr", "asquer", "impresentab",
         "vergonz", "cansad", "insult", "corrupt", "desgraciad", "incompet", "rabios"),
    ),
    "joy": (
        frozenset({"feliz", "felices", "xrisa", "fiesta", "gracias", "amo", "ame", "amor", "genial", "bien", "yay"}),
        ("alegr", "content", "celebr", "disfrut", "encant", "emocionad", "ilusion", "divert", "felicid", "felicit",
         "orgull", "ganamo", "campeon", "triunf", "maravill", "fantast", "hermos", "precios", "bendic", "guapis",
         "estupend", "espectacul", "buenis"),
    ),
    "sadness": (
        frozenset({"triste", "tristes", "pena", "dolor", "duelo", "luto", "solo", "sola", "rip", "dep", "llorar",
                   "adios", "nostalgia"}),
        ("tristez", "llor", "lament", "fallec", "muert", "perdid", "extran", "deprim", "desol", "dolid", "sufr",
         "desconsol", "melancol", "apenad", "descanse", "condolen", "tragedi", "tragic",
         "victim", "decepcion", "desilusion", "soledad", "vacio"),
    ),
    "fear": (
        frozenset({"miedo", "temo", "temor", "panico", "terror", "susto", "alerta", "nervios"}),
        ("asust", "aterr", "preocup", "angust", "ansied", "nervios", "peligr", "alarm", "amenaz", "insegur",
         "temer", "espant", "horror", "inquiet", "acojon", "pavor", "atentad", "terrorist", "incertidumbr"),
    ),
    "disgust": (
        frozenset({"asco", "puaj", "aj", "agh", "cerdo", "cerdos", "guarro", "cochino", "sucio", "sucia"}),
        ("asquer", "repugn", "vomit", "nause", "porquer", "repulsiv", "indecent", "vergonz", "verguenz", "impresentab",
         "lamentab", "patetic", "despreciab", "hipocr", "nauseabund", "inmund", "miserab", "ruin", "bochorn"),
    ),
    "surprise": (
        frozenset({"wow", "guau", "omg", "ostras", "hala", "anda", "increible", "increibles", "sorpresa", "whoa"}),
        ("sorpre", "sorprend", "increib", "impresion", "asombr", "inesper", "flipa", "alucin", "atonit",
         "boquiabiert", "insolit", "impactad", "imprevist"),
    ),
}

# Emoji -> classes. Matched per character, so "❤️" (heart + variation selector) counts.
_EMOJI: dict[str, tuple[str, ...]] = {}
for _chars, _classes in (
    ("😀😃😄😁😆😊🙂☺😇🥳🎉🎊🙌👏💪✨🤗", ("pos", "joy")),
    ("😂🤣", ("pos", "joy")),
    ("😍🥰😘😻❤♥💕💖💗💓💞💘💙💚💛💜🧡🤍🖤", ("pos", "joy")),
    ("👍👌🙏💯🔝", ("pos",)),
    ("😡😠🤬👿💢😤🖕", ("neg", "anger")),
    ("😢😭😞😔😿🥺💔😥😓😪", ("neg", "sadness")),
    ("😨😱😰😧😬😟", ("neg", "fear")),
    ("🤢🤮😒🙄💩🤦", ("neg", "disgust")),
    ("😩😫😣😖☹🙁😕👎", ("neg",)),
    ("😮😲😯😳🤯😦😵", ("surprise",)),
):
    for _c in _chars:
        _EMOJI[_c] = _classes

_STEM_INDEX: dict[str, tuple[str, ...]] = {}
_EXACT_INDEX: dict[str, tuple[str, ...]] = {}
for _cls, (_words, _stems) in _LEXICON.items():
    for _w in _words:
        _EXACT_INDEX[_w] = (*_EXACT_INDEX.get(_w, ()), _cls)
    for _s in _stems:
        _STEM_INDEX[_s] = (*_STEM_INDEX.get(_s, ()), _cls)
_STEM_LENGTHS = sorted({len(s) for s in _STEM_INDEX})


@functools.lru_cache(maxsize=65_536)
def classes_of(token: str) -> tuple[str, ...]:
    """Lexicon classes of one normalised token, in :data:`CLASSES` order ("" tokens: none)."""
    if not token:
        return ()
    found: set[str] = set(_EXACT_INDEX.get(token, ()))
    for n in _STEM_LENGTHS:
        if n > len(token):
            break
        found.update(_STEM_INDEX.get(token[:n], ()))
    if not token.isascii():
        for ch in token:
            found.update(_EMOJI.get(ch, ()))
    return tuple(c for c in CLASSES if c in found)
