# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0

.PHONY: demo test setup clean-venv

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH)"
	$(VPY) -m pip install -q -c .ci/constraints.txt -e ".[dev]"
	@if $(VPY) -c "import torchvision" 2>/dev/null; then echo "torchvision got installed: it breaks diffusers here" >&2; exit 1; fi
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VPY) -m diffgeo tour --out figures

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VPY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
