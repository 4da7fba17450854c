# The gateway's everyday commands; `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt migrate api worker beat flower sandbox bench compose-up
# Under a prefork pool the worker's children count metrics in files here (worker/metrics.py).
METRICS_DIR ?= /tmp/smsgw-worker-metrics

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' || { echo "Python 3.11 is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP) ## Create the virtualenv and install the gateway with its dev tools

run: $(STAMP) ## Run API, worker, beat, Flower and the Twilio sandbox on embedded defaults (smsgw dev)
	$(BIN)/smsgw dev

test: $(STAMP) ## Run the test suite against the local PostgreSQL and Redis
	$(BIN)/python -m pytest

lint: $(STAMP) ## Check style and types
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared

fmt: $(STAMP) ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## Apply database migrations (DATABASE_URL)
	$(BIN)/smsgw db upgrade

api: $(STAMP) ## Serve the API (smsgw api: granian, worker processes of threads, JSON logs)
	$(BIN)/smsgw api

worker: $(STAMP) ## Run a Celery worker on every queue: single sends, campaigns, callbacks
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) \
	  $(BIN)/celery -A worker.celery_app --quiet worker -Q sms,campaign,callbacks -P threads -c 64 --loglevel INFO

beat: $(STAMP) ## Run the Celery beat scheduler
	$(BIN)/celery -A worker.celery_app --quiet beat --loglevel INFO

flower: $(STAMP) ## Run Flower on port 5555 (FLOWER_BASIC_AUTH=user:password, or SMSGW_DEV=true)
	$(BIN)/celery -A worker.celery_app flower --port=5555

sandbox: $(STAMP) ## Run the Twilio sandbox on port 8025
	$(BIN)/smsgw sandbox --port 8025

bench: $(STAMP) ## Benchmarks beside their baselines: API, hand-off, campaigns (needs wrk)
	@command -v wrk >/dev/null || { echo "make bench needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python -m bench

compose-up: ## Build and start everything with Docker Compose (sandbox without a Twilio SID, RabbitMQ with an amqp BROKER_URL)
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "set FLOWER_BASIC_AUTH=user:password first"; exit 1; }
	docker compose $(if $(TWILIO_ACCOUNT_SID),,--profile sandbox) $(if $(filter amqp%,$(BROKER_URL)),--profile rabbitmq) up --build --detach
