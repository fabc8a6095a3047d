# The two commands of the quick start:
#   make run   install insmon in .venv and run it on the embedded default config
#   make test  install everything the tests need (Debian packages, .venv) and run them,
#              six at a time (pytest-xdist: the drills wait on timers beside CPU work),
#              then the one that needs this host's CPU to itself (marked host_cpu: six
#              tests at a time keep a 2-core host busy), then the date-dependent ones on
#              moved clocks (make test-dates)
# and, for a hospital's air-gapped host:
#   make bundle  dist/insmon-<version>-<arch>-offline.tar.gz for amd64 and arm64
# and, to show that no test depends on how busy the machine is:
#   make test-under-load  make test beside one CPU burner per core
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# The real tools the tests drive, and the peers the benchmarks compare with,
# as command:Debian package (or file:package: the monthly report's CJK font).
TEST_TOOLS := promtool:prometheus amtool:prometheus-alertmanager snmpd:snmpd chromium:chromium \
	prometheus-node-exporter:prometheus-node-exporter curl:curl victoria-metrics:victoria-metrics \
	gammu-smsd:gammu-smsd fusermount:fuse debootstrap:debootstrap systemd-analyze:systemd \
	systemd-nspawn:systemd-container faketime:faketime \
	/usr/share/fonts/truetype/wqy/wqy-microhei.ttc:fonts-wqy-microhei openssl:openssl
BENCH_TOOLS := prometheus-node-exporter:prometheus-node-exporter fping:fping \
	gammu-smsd:gammu-smsd prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager \
	victoria-metrics:victoria-metrics chromium:chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-dates test-under-load lint bench bench-regional figures bundle clean

run: $(VENV)/.runtime
	$(VENV)/bin/insmon run $(ARGS)

test: $(VENV)/.test lint
	@$(call install-missing,$(TEST_TOOLS))
	@$(MAKE) --no-print-directory figures
	$(VENV)/bin/pytest -n 6 --dist loadgroup --durations=10 -m "not host_cpu"
	$(VENV)/bin/pytest -m host_cpu --durations=3
	@$(MAKE) --no-print-directory test-dates

# The date-dependent tests (marked `dates`) again with the clock of every process moved
# by libfaketime, on a UTC host, to each of tests/moved_clock.py's DATES (Beijing time):
# a working Monday after New Year, the Spring Festival, a leap day, and ten seconds before
# a New Year's midnight, the dates side by side. `make test-dates DATES="2029-10-01T08:00 2031-01-23T09:00"` tries
# others.
DATES ?=
test-dates: $(VENV)/.test
	@$(call install-missing,faketime:faketime)
	$(VENV)/bin/python -m tests.moved_clock $(DATES)

# The whole suite on a busy machine: one busy loop per core at normal priority beside
# `make test`. The burners end with the suite, pass or fail (Ctrl-C too), and by
# themselves after BURN_MINUTES at the most; the suite's exit status is kept.
BURN_MINUTES ?= 60
test-under-load:
	@pids=""; \
	for i in $$(seq "$$(nproc)"); do \
		timeout $$(($(BURN_MINUTES) * 60)) $(PYTHON) -c 'while True: pass' & pids="$$pids $$!"; \
	done; \
	trap 'kill $$pids 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "$$(nproc) CPU burners running (pids$$pids)"; \
	status=0; $(MAKE) --no-print-directory test || status=$$?; \
	exit $$status

# The quick benchmarks, beside node_exporter in the same run: what a scrape and a storage
# probe run cost. They print figures and assert nothing (speed is not a test).
figures: $(VENV)/.test
	$(VENV)/bin/python bench/scrape.py 10
	$(VENV)/bin/python bench/storage_overhead.py 300

bench: $(VENV)/.test
	@$(call install-missing,$(BENCH_TOOLS))
	bench/idle.sh
	$(VENV)/bin/python bench/storage_overhead.py
	$(VENV)/bin/python bench/icmp_fanout.py
	$(VENV)/bin/python bench/fault_to_page.py
	$(VENV)/bin/python bench/fault_to_person.py
	$(VENV)/bin/python bench/pager_storm.py
	$(VENV)/bin/python bench/settlement_cost.py
	$(VENV)/bin/python bench/hostile_input.py
	$(VENV)/bin/python bench/scrape.py
	$(VENV)/bin/python bench/audit_trail.py
	@$(MAKE) --no-print-directory bench-regional

# A regional center at 50, 200 and 500 hospitals, then a line to it cut for 10 minutes
# (about an hour and a half in all; README, "Past one site").
bench-regional: $(VENV)/.test
	@$(call install-missing,$(BENCH_TOOLS))
	$(VENV)/bin/python bench/regional.py $(ARGS)

# The offline install bundles (bundle/build.py: downloads kept in ~/.cache/insmon-bundle).
bundle: $(VENV)/.test
	$(VENV)/bin/python bundle/build.py --out dist $(ARGS)

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

# Installs the Debian packages of the tools that are missing, so a second run does not
# touch apt.
define install-missing
missing=""; \
for tool in $(1); do \
	command -v $${tool%%:*} >/dev/null || [ -e "$${tool%%:*}" ] || missing="$$missing $${tool#*:}"; \
done; \
if [ -n "$$missing" ]; then \
	echo "installing Debian packages:$$missing"; \
	$(SUDO) apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
fi
endef

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info dist
