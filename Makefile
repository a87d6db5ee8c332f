# The README's quick start: `make demo` and `make test`, both on the locked set (constraints/locked.txt).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
LOCKED := constraints/locked.txt
MINIMUM := constraints/minimum.txt
MINIMUM_VENV := .venv-minimum
UV_VENV := .venv-uv
UV_VERSION := 0.13.9
RUNTIME_VENV := .venv-runtime

.PHONY: demo test install test-install test-minimum check-runtime-install constraints mariadb-client-library

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -c $(LOCKED) -e '.[test]'

demo: install
	$(PY) -m dify_pipeline_dev.demo

# The tests cover both export paths: mysqlclient (the `mysql` extra, C, built against the MariaDB client library)
# and PyMySQL, the fallback. The library comes from Debian's packages when it is missing.
test-install: install
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
		|| $(MAKE) --no-print-directory mariadb-client-library
	$(PY) -m pip install --quiet -c $(LOCKED) -e '.[test,mysql]'

mariadb-client-library:
	@echo "installing libmariadb-dev and pkg-config (for mysqlclient)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmariadb-dev pkg-config \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmariadb-dev pkg-config)

test: test-install
	$(PY) -m pytest

# The suite again on every lower bound of pyproject.toml (pandas 2, the first dagster 1.13, ...), in a fresh
# virtualenv: the oldest environment the package claims to install into.
test-minimum:
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
		|| $(MAKE) --no-print-directory mariadb-client-library
	rm -rf $(MINIMUM_VENV)
	$(PYTHON) -m venv $(MINIMUM_VENV)
	$(MINIMUM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MINIMUM_VENV)/bin/python -m pip install --quiet -c $(MINIMUM) -e '.[test,mysql]'
	OVERLAPPING_RUN_ROUNDS=3 $(MINIMUM_VENV)/bin/python -m pytest

# The runtime requirements alone, unconstrained, in a fresh virtualenv: they resolve next to the newest dagster
# 1.13 release and the code location loads without any extra. Unpinned on purpose: it fails when a new release
# of a dependency breaks the package, which is what users installing today would meet.
check-runtime-install:
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet .
	$(RUNTIME_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(dagster|pandas|pyarrow|sqlalchemy) '
	# The code location refuses to load without its required variables (naming each): give it a deployment's.
	cd $(RUNTIME_VENV) && env -u DAGSTER_HOME SOURCE_DATABASE_URL=mysql+pymysql://reader:change-me@127.0.0.1:3306/support \
		DIFY_BASE_URL=http://127.0.0.1:5001/v1 DIFY_API_KEY=app-runtime-check ELASTICSEARCH_URL=http://127.0.0.1:9200 \
		OUTPUT_PARQUET_URL=$$PWD/check/out PIPELINE_STORAGE_URL=$$PWD/check/stages \
		RESULT_CACHE_URL=sqlite:///$$PWD/check/cache.sqlite bin/dagster definitions validate -m dify_pipeline.definitions

# Regenerates both constraints files from pyproject.toml, keeping today's pins where they still fit
# (`make constraints UPGRADE=--upgrade` moves the lock to the newest releases). Commit them with the change.
# uv resolves in seconds, and finds the lowest versions, where pip backtracks for many minutes.
UPGRADE ?=
constraints:
	test -x $(UV_VENV)/bin/uv || ($(PYTHON) -m venv $(UV_VENV) && $(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION))
	$(UV_VENV)/bin/uv pip compile --quiet pyproject.toml --extra test --extra mysql --python-version 3.11 \
		$(UPGRADE) -o $(LOCKED)
	$(UV_VENV)/bin/uv pip compile --quiet pyproject.toml --extra test --extra mysql --python-version 3.11 \
		--upgrade --resolution lowest-direct -o $(MINIMUM)
