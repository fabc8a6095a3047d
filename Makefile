# The two commands of the quick start:
#   make run   install insmon in .venv and run it on the embedded default config
#   make test  install everything the tests need (Debian packages, .venv) and run them
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# The real tools the tests drive, as command:Debian package.
TEST_TOOLS := promtool:prometheus amtool:prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint system-deps clean

run: $(VENV)/.runtime
	$(VENV)/bin/insmon run $(ARGS)

test: system-deps $(VENV)/.test lint
	$(VENV)/bin/pytest

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.test: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.runtime

# Installs only what is missing, so a second `make test` does not touch apt.
system-deps:
	@missing=""; \
	for tool in $(TEST_TOOLS); do \
		command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
