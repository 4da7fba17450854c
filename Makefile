# The gateway's everyday commands; `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint fmt migrate api worker beat flower sandbox bench compose-up

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' || { echo "Python 3.11 is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP) ## Create the virtualenv and install the gateway with its dev tools

run: $(STAMP) ## Run API, worker and Twilio sandbox on embedded defaults (smsgw dev)
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

api: $(STAMP) ## Serve the API with gunicorn
	$(BIN)/gunicorn "api.app:create_app()"

worker: $(STAMP) ## Run a Celery worker
	$(BIN)/celery -A worker.celery_app worker --loglevel INFO

beat: $(STAMP) ## Run the Celery beat scheduler
	$(BIN)/celery -A worker.celery_app beat --loglevel INFO

flower: $(STAMP) ## Run the Flower dashboard on port 5555
	$(BIN)/celery -A worker.celery_app flower --port=5555

sandbox: $(STAMP) ## Run the Twilio sandbox on port 8025
	$(BIN)/smsgw sandbox --port 8025
