# The README's quick start: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install test-install mariadb-client-library

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[test]'

demo: install
	$(PY) -m dify_pipeline.demo

# The tests cover both export paths: mysqlclient (the `mysql` extra, C, built against the MariaDB client library)
# and PyMySQL, the fallback. The library comes from Debian's packages when it is missing.
test-install: install
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
		|| $(MAKE) --no-print-directory mariadb-client-library
	$(PY) -m pip install --quiet -e '.[test,mysql]'

mariadb-client-library:
	@echo "installing libmariadb-dev and pkg-config (for mysqlclient)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmariadb-dev pkg-config \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmariadb-dev pkg-config)

test: test-install
	$(PY) -m pytest
