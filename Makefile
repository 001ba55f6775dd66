# The only place that knows about the virtual environment.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
DEMO_DIR ?= work/demo

.PHONY: install browser demo hpt-chain test clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	$(PYTHON) -m pip install --quiet --no-deps tidecv==1.0.1  # test reference; see pyproject.toml
	touch $@

install: $(VENV)/.installed

# Pretrain MoCo v2 on the built-in data, transfer to Mask R-CNN R50-C4 on the built-in COCO-format set.
# Both steps resume if a previous demo was interrupted; `make clean-demo` starts over.
demo: install
	$(PYTHON) tools/pretrain.py --config configs/pretrain/demo.yaml --output $(DEMO_DIR)/pretrain --resume
	$(PYTHON) tools/transfer.py --task coco_maskrcnn --weights $(DEMO_DIR)/pretrain/last.pth \
		--output $(DEMO_DIR)/coco_maskrcnn --resume

# HPT's three stages on the built-in data (HPT §3): base = the demo's MoCo v2 checkpoint (pretrained first if
# missing) -> source = generated domain A -> target = generated domain B with BN-only; then the target's lineage.
hpt-chain: install
	$(PYTHON) tools/pretrain.py --config configs/pretrain/demo.yaml --output $(DEMO_DIR)/pretrain --resume
	$(PYTHON) tools/pretrain.py --config configs/pretrain/hpt_demo.yaml --init $(DEMO_DIR)/pretrain/last.pth \
		--output $(DEMO_DIR)/hpt_source --resume DATA.BUILTIN domain_a
	$(PYTHON) tools/pretrain.py --config configs/pretrain/hpt_demo.yaml --init $(DEMO_DIR)/hpt_source/last.pth \
		--output $(DEMO_DIR)/hpt_target --resume DATA.BUILTIN domain_b HPT.TRAIN_BN_ONLY True
	$(PYTHON) tools/convert.py --inspect $(DEMO_DIR)/hpt_target/last.pth

# Debian's chromium and chromedriver for tests/test_report_html.py: installed when missing and run as root; otherwise
# this says what to install and the test fails with the same words (never skipped).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "make browser: tests/test_report_html.py needs /usr/bin/chromium and /usr/bin/chromedriver:" \
		"sudo apt-get install chromium chromium-driver" >&2; fi

test: install browser
	$(PYTHON) -m pytest -q

clean-demo:
	rm -rf $(DEMO_DIR)
