# Two commands do all the set-up on a fresh machine:
#   make demo   -- the continual-learning demo on the embedded local models
#   make test   -- the whole test suite (includes real-model tests)
# Both create (or reuse) the virtualenv in $(VENV) and install what they need.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ctxopt-installed

.PHONY: demo test bench clean-venv browser postgres

# llama.cpp's AMX matmul segfaults on the first multi-token prompt on some Sapphire Rapids machines
# (ggml-org/llama.cpp#20824); undefining __AMX_INT8__ keeps every other native instruction. The build
# skips pip's wheel cache, which would hand back a wheel built without this setting.
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS=-U__AMX_INT8__ -DCMAKE_CXX_FLAGS=-U__AMX_INT8__

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir 'llama-cpp-python[server]>=0.3.0'
	$(PY) -m pip install -q -e '.[local,test,embed]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ctxopt demo

# Headless Chromium renders the HTML report in one test; installed when we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed (not root); the report screenshot test will skip"; }

# PostgreSQL from Debian runs the parallel-search tests (tests/pg.py starts a server in a temp folder).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "postgresql not installed (not root); the PostgreSQL tests will skip"; }

test: $(STAMP) browser postgres
	CTXOPT_REQUIRE_REAL_LM=1 $(PY) -m pytest

bench: $(STAMP)
	$(PY) experiments/bench_lm.py

clean-venv:
	rm -rf $(VENV)
