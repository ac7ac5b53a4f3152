# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0

.PHONY: demo test setup clean-venv chromium

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "$(TORCH)"
	$(VPY) -m pip install -q -c .ci/constraints.txt -e ".[dev]"
	@if $(VPY) -c "import torchvision" 2>/dev/null; then echo "torchvision got installed: it breaks diffusers here" >&2; exit 1; fi
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VPY) -m diffgeo report --fast --out figures
	@echo "report: $(CURDIR)/figures/report.html"

# The browser test (tests/test_browser.py) drives Debian's chromium through Playwright; it never
# downloads a browser. Install the apt package when missing (root, or passwordless sudo); when that
# is impossible the browser test alone SKIPS, loudly (a skip is not a pass).
chromium:
	@test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; } ) >/dev/null \
	  || echo "WARNING: could not install Debian's chromium: tests/test_browser.py will be SKIPPED" >&2; }

test: $(STAMP) chromium
	$(VENV)/bin/lint-imports --no-logo  # the layers contract in pyproject.toml: no upward import, no cycle
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VPY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
