# whatsapp_daemon — the targets an operator and a developer need.
# `make demo` and `make test` create the virtual environment themselves.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
LABEL := com.whatsapp-daemon
AGENT_DIR ?= $(HOME)/Library/LaunchAgents
AGENT := $(AGENT_DIR)/$(LABEL).plist
WEBHOOK_AGENT := $(AGENT_DIR)/$(LABEL).webhook.plist
OLD_PYTHON := import sys; sys.exit(sys.version_info < (3, 11))

.PHONY: install demo run test lint status doctor install-agent load unload
.PHONY: install-unit newsyslog bench clean
.PHONY: webhook install-webhook-agent load-webhook unload-webhook

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c '$(OLD_PYTHON)' || \
	  { echo "whatsapp_daemon needs Python 3.11 or later; $(PYTHON) is older."; \
	    echo "Install it (e.g. brew install python@3.11), then:"; \
	    echo "  make clean; make PYTHON=python3.11 ..."; exit 1; }
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c '$(OLD_PYTHON)'; then \
	  echo "rebuilding $(VENV): it was made with a Python older than 3.11"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed  ## create .venv and install the daemon with its tools
	@mkdir -p var/logs

demo: install  ## drain the example campaign through the local sandbox API
	$(BIN)/python examples/demo.py

run: install  ## run the daemon in this terminal (Ctrl-C stops it cleanly)
	$(BIN)/whatsapp-daemon run

test: install  ## the whole test suite
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff format --check whatsapp_daemon tests examples bench
	$(BIN)/ruff check whatsapp_daemon tests examples bench
	$(BIN)/mypy whatsapp_daemon

status: install  ## the queue and the daemon at a glance
	@$(BIN)/whatsapp-daemon status

doctor: install  ## check the installation before loading the agent
	@$(BIN)/whatsapp-daemon doctor

install-agent: install  ## write the LaunchAgent for this checkout
	mkdir -p var/logs "$(AGENT_DIR)"
	$(BIN)/whatsapp-daemon plist --project-dir "$(CURDIR)" \
	  --python "$(CURDIR)/$(BIN)/python" > "$(AGENT)"
	@echo "wrote $(AGENT); now: make load"

load:  ## start the agent (and at every login)
	launchctl load -w "$(AGENT)"

unload:  ## stop the agent (SIGTERM: sends in flight finish first)
	launchctl unload -w "$(AGENT)"

webhook: install  ## receive Meta's statuses in this terminal (Ctrl-C stops it)
	$(BIN)/whatsapp-daemon webhook

install-webhook-agent: install  ## write the webhook's LaunchAgent for this checkout
	mkdir -p var/logs "$(AGENT_DIR)"
	$(BIN)/whatsapp-daemon plist --webhook --project-dir "$(CURDIR)" \
	  --python "$(CURDIR)/$(BIN)/python" > "$(WEBHOOK_AGENT)"
	@echo "wrote $(WEBHOOK_AGENT); now: make load-webhook"

load-webhook:  ## start the webhook's agent (and at every login)
	launchctl load -w "$(WEBHOOK_AGENT)"

unload-webhook:  ## stop the webhook's agent
	launchctl unload -w "$(WEBHOOK_AGENT)"

newsyslog:  ## render the newsyslog line that rotates the log every night
	@mkdir -p var
	scripts/rotate_whatsapp_logs.sh --newsyslog > var/whatsapp_daemon.newsyslog.conf
	@echo "wrote var/whatsapp_daemon.newsyslog.conf; install it with:"
	@echo "  sudo cp var/whatsapp_daemon.newsyslog.conf /etc/newsyslog.d/whatsapp_daemon.conf"

UNIT_DIR ?= $(HOME)/.config/systemd/user

install-unit: install  ## Linux: write the systemd user unit for this checkout
	mkdir -p var/logs "$(UNIT_DIR)"
	$(BIN)/whatsapp-daemon systemd-unit --project-dir "$(CURDIR)" \
	  --python "$(CURDIR)/$(BIN)/python" > "$(UNIT_DIR)/whatsapp-daemon.service"
	@echo "wrote $(UNIT_DIR)/whatsapp-daemon.service; now:"
	@echo "  systemctl --user daemon-reload && systemctl --user enable --now whatsapp-daemon"

bench: install  ## measure the limiter's bursts, the import's memory, the log's size
	$(BIN)/python bench/limiter_burst.py
	$(BIN)/python bench/import_memory.py
	$(BIN)/python bench/log_volume.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache var/demo var/logs/demo
