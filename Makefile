# The two commands a fresh clone needs: `make demo` and `make test`.
# Both create .venv if missing and install d2seg with its pinned dependencies.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.d2seg-installed
DEMO_OUT ?= output/demo

.PHONY: install demo test bench clean

$(STAMP): requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the shipped sample data (annotations/).
demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(PY) tools/convert_labelme.py --input annotations/balloons --output $(DEMO_OUT)/balloons_coco --split val=0.25 --seed 0
	$(PY) tools/convert_labelme.py --input annotations/chipsets --output $(DEMO_OUT)/chipsets_coco --split val=0.25 --seed 0
	$(PY) tools/convert_labelme.py --input annotations/carvana --format masks --output $(DEMO_OUT)/carvana_coco --seed 0

# pytest exits 5 when it collected no test: that is a failure here.
test: $(STAMP)
	$(PY) -m pytest -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/convert.py

clean:
	rm -rf $(VENV) output .pytest_cache .hypothesis
