# The README's commands are these targets; .ci/run calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?= models/es-demo
STAMP  := $(VENV)/.installed

.PHONY: install demo train test test-slow lint bench loadtest soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Train the bundled Spanish model, then score a few example messages.
demo: train
	$(BIN)/nlu score --route $(MODEL) \
	  "hola buenas tardes" \
	  "¿dónde está mi pedido #A-48213? ya van 3 días!!" \
	  "cuánto sale el envío a Medellín?" \
	  "QUIERO HABLAR CON UNA PERSONA, SON UNOS INÚTILES" \
	  "me cobraron dos veces y nadie me devuelve la plata 😡"

train: install
	$(BIN)/nlu data check data/chats_train.csv > /dev/null
	$(BIN)/nlu train data/chats_train.csv --out $(MODEL) --force

## One worker per core, at most 4 (each starts its own PostgreSQL cluster and tiny model).
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4

## Full-data runs on ../shared/datasets (skipped when absent).
test-slow: install
	$(BIN)/python -m pytest -m slow

## Benchmark against TF-IDF+LR and fastText on ../shared/datasets; updates docs/BENCHMARKS.md.
bench: install
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python scripts/benchmark.py

## Serve the bundled model on a free loopback port, load /v1/messages and /v1/score at
## concurrency 1 and 16 (bounded by count and time), stop the server whatever happens.
loadtest: install
	test -f $(MODEL)/meta.json || $(MAKE) train
	$(BIN)/python scripts/loadtest.py --serve $(MODEL) --route messages,score --concurrency 1,16 \
	  --requests 3000 --time-limit 30

## Run the real server for 3 minutes at 50 req/s with normal, frustrated, garbage and
## retried-webhook traffic; fail on any 5xx, a ticket lost or doubled, or RSS growth.
soak: install
	$(BIN)/python scripts/soak.py --seconds 180 --rate 50 $(if $(wildcard $(MODEL)/meta.json),--model $(MODEL),)

lint: install
	$(BIN)/ruff check nlu tests scripts
	$(BIN)/mypy nlu

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
