# The two entry points the README documents: `make run` (the main job) and `make test`.
# Both create .venv from pyproject.toml + constraints.txt on first use and fetch the datasets when they are
# missing, so a fresh machine (Linux or macOS) needs only Python >= 3.11, make and the internet.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where the datasets live. Never hard-coded in the library: passed down as METAAUTO_DATA_DIR. A checkout
# beside a shared data directory uses it; otherwise `make data` downloads into the project home.
DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(or $(METAAUTO_HOME),$(HOME)/.metaauto)/data)
export METAAUTO_DATA_DIR := $(DATA_DIR)
# On Linux x86_64, PyPI's torch is a multi-GB CUDA build: torch alone comes from PyTorch's CPU wheel index
# (constraints.txt pins its +cpu build there; elsewhere PyPI's torch is the CPU build). TORCH_INDEX= to skip.
TORCH_INDEX ?= $(if $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m)),https://download.pytorch.org/whl/cpu)
RUN_DIR ?= $(or $(METAAUTO_HOME),$(HOME)/.metaauto)/runs/omniglot-5w1s-protonet-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install data browser run test bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
		f"metaauto needs Python >= 3.11, and $(PYTHON) is {v.major}.{v.minor}: run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --retries 1 -c constraints.txt torch $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The public datasets (Omniglot, MovieLens latest-small, UCI heart disease) into DATA_DIR, hashes checked;
# copies already there are checked and kept, so this costs a second when nothing is missing.
data: install
	$(BIN)/metaauto data fetch --data-dir $(DATA_DIR)

# The main job: the meta-pipeline Prefect flow (ingest Omniglot 5-way 1-shot, a short Optuna search over
# learners, the best one meta-trained again for 150 s and meta-tested on 600 episodes with both baselines,
# all logged to MLflow; registered and promoted to omniglot-5w1s@champion if it beats the champion).
run: install data
	$(BIN)/metaauto pipeline --collection omniglot --data-dir $(DATA_DIR) --ways 5 --shots 1 \
		--register omniglot-5w1s

# The browser tests drive Debian's Chromium (never a downloaded one); install it when it is missing.
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install browser data
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/throughput.py --data-dir $(DATA_DIR)

# Re-resolve the tested set after changing pyproject.toml's ranges.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable --exclude metaauto | grep -v '^torch==' > constraints.txt
	echo 'torch==2.13.0+cpu ; platform_system == "Linux" and platform_machine == "x86_64"' >> constraints.txt
	echo 'torch==2.13.0 ; platform_system != "Linux" or platform_machine != "x86_64"' >> constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
