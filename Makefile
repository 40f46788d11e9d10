# The two entry points the README documents: `make run` (the main job) and `make test`.
# Both create .venv from pyproject.toml + constraints.txt on first use, so a fresh machine needs only
# Python 3.11 and make.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where the datasets live. Never hard-coded in the library: passed down as METAAUTO_DATA_DIR.
DATA_DIR ?= $(abspath ../shared/data)
export METAAUTO_DATA_DIR := $(DATA_DIR)
RUN_DIR ?= $(or $(METAAUTO_HOME),$(HOME)/.metaauto)/runs/omniglot-5w1s-protonet-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install browser run test bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The main job: the meta-pipeline Prefect flow (ingest Omniglot 5-way 1-shot, a short Optuna search over
# learners, the best one meta-trained again for 150 s and meta-tested on 600 episodes with both baselines,
# all logged to MLflow; registered and promoted to omniglot-5w1s@champion if it beats the champion).
run: install
	$(BIN)/metaauto pipeline --collection omniglot --data-dir $(DATA_DIR) --ways 5 --shots 1 \
		--register omniglot-5w1s

# The browser tests drive Debian's Chromium (never a downloaded one); install it when it is missing.
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/throughput.py --data-dir $(DATA_DIR)

# Re-resolve the tested set after changing pyproject.toml's ranges.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable --exclude metaauto > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
