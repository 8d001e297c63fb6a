"""Shared fixtures: a tiny hand-written Spanish chat dataset and a model trained on it."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_kit import RecordingSender, in_process_client

from nlu import TrainConfig, load_model, save_model, train
from nlu.data import load_data
from nlu.service import Service
from nlu.testing_pg import MISSING_MESSAGE, TempCluster, find_bindir

# (text, intent, sentiment, emotion): six intents, written like WhatsApp messages.
ROWS: list[tuple[str, str, str, str]] = [
    ("hola buenas tardes", "saludo", "neutral", "neutral"),
    ("holaaa 👋", "saludo", "neutral", "neutral"),
    ("buen día, alguien ahí?", "saludo", "neutral", "neutral"),
    ("qué tal, buenas noches", "saludo", "neutral", "neutral"),
    ("hola hola", "saludo", "positivo", "alegria"),
    ("buenas!! 😊", "saludo", "positivo", "alegria"),
    ("dónde está mi pedido #A-48213?", "estado_pedido", "neutral", "neutral"),
    ("mi pedido no llega, ya van 5 días", "estado_pedido", "negativo", "frustracion"),
    ("cuando llega mi compra??", "estado_pedido", "neutral", "neutral"),
    ("ya enviaron mi orden 55-2231?", "estado_pedido", "neutral", "neutral"),
    ("DONDE ESTA MI PEDIDO!!! SON UNOS INUTILES", "estado_pedido", "negativo", "enojo"),
    ("me pasan el tracking del paquete porfa", "estado_pedido", "neutral", "neutral"),
    ("cuánto cuesta la licuadora oster?", "precio_producto", "neutral", "neutral"),
    ("precio de las zapatillas negras talla 40", "precio_producto", "neutral", "neutral"),
    ("a cuánto está el televisor de 50 pulgadas", "precio_producto", "neutral", "neutral"),
    ("cuanto sale el envío y la campera?", "precio_producto", "neutral", "neutral"),
    ("q precio tiene el colchón king", "precio_producto", "neutral", "neutral"),
    ("el precio subió otra vez, qué robo", "precio_producto", "negativo", "enojo"),
    ("quiero devolver unas zapatillas que me quedaron chicas", "devolucion", "neutral", "neutral"),
    ("cómo hago una devolución?", "devolucion", "neutral", "neutral"),
    ("me llegó roto el florero, lo quiero devolver ya", "devolucion", "negativo", "enojo"),
    ("puedo cambiar la talla de la camisa?", "devolucion", "neutral", "neutral"),
    ("necesito la etiqueta para devolver el paquete", "devolucion", "neutral", "neutral"),
    ("tercera vez que intento devolver esto y nada", "devolucion", "negativo", "frustracion"),
    ("quiero hablar con una persona", "hablar_con_humano", "neutral", "neutral"),
    ("pásame con un asesor por favor", "hablar_con_humano", "neutral", "neutral"),
    ("un humano por favor, el bot no entiende nada", "hablar_con_humano", "negativo", "frustracion"),
    ("me comunican con alguien real?", "hablar_con_humano", "neutral", "neutral"),
    ("QUIERO HABLAR CON UN AGENTE YA!!!", "hablar_con_humano", "negativo", "enojo"),
    ("hay alguna persona que me atienda", "hablar_con_humano", "neutral", "neutral"),
    ("muchas gracias!! 🙏", "agradecimiento", "positivo", "alegria"),
    ("mil gracias por la ayuda", "agradecimiento", "positivo", "alegria"),
    ("gracias, muy amable", "agradecimiento", "positivo", "alegria"),
    ("excelente atención, gracias", "agradecimiento", "positivo", "alegria"),
    ("grax crack", "agradecimiento", "positivo", "alegria"),
    ("ok gracias", "agradecimiento", "neutral", "neutral"),
]


def write_csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("text", "intent", "sentiment", "emotion")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "chats.csv", ROWS)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    return TrainConfig(cv=3, char_min_df=1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_csv: Path, tiny_config: TrainConfig) -> Path:
    model = train(load_data([tiny_csv]), tiny_config)
    return save_model(model, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return load_model(tiny_model_dir)


# -- databases: the queue and conversation suites run on SQLite and on PostgreSQL ----------
# One throwaway PostgreSQL cluster per session (nlu/testing_pg.py: initdb + pg_ctl on
# 127.0.0.1, fsync off), an empty database per test. Skipped when PostgreSQL is not installed.

_pg_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempCluster]:
    if find_bindir() is None:
        pytest.skip(MISSING_MESSAGE)
    with TempCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: TempCluster) -> str:
    """The URL of a fresh, empty PostgreSQL schema (its own search_path; schemas are made in
    milliseconds where CREATE DATABASE takes a checkpoint)."""
    return pg_cluster.create_schema(f"test_{next(_pg_databases)}")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database for the queue and the conversation store: an SQLite path, or a
    postgresql:// URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "var" / "nlu.db")


# -- the HTTP service in-process (tests/http_kit.py has the secrets and settings) ----------


@pytest.fixture
def service(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Service]:
    with Service.from_paths(tiny_model_dir, db=tmp_path / "nlu.db") as svc:
        yield svc


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def client(service: Service, sender: RecordingSender):  # type: ignore[no-untyped-def]
    return in_process_client(service, sender)
