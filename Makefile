# The two commands a fresh clone needs: `make demo` and `make test`.
# Both create .venv if missing and install d2seg with its pinned dependencies.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.d2seg-installed
DEMO_OUT ?= output/demo

.PHONY: install demo test bench clean browser-deps

$(STAMP): requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the shipped sample data (annotations/): convert to COCO, train tiny models on
# the CPU, evaluate them, and say where each run folder is.
demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(PY) tools/convert_labelme.py --input annotations/balloons --labels annotations/balloons/labels.txt --output $(DEMO_OUT)/balloons_coco --split val=0.25 --seed 0
	$(PY) tools/convert_labelme.py --input annotations/chipsets --labels annotations/chipsets/labels.txt --output $(DEMO_OUT)/chipsets_coco --split val=0.25 --seed 0
	$(PY) tools/convert_labelme.py --input annotations/carvana --format masks --mask-label car --output $(DEMO_OUT)/carvana_coco --split val=0.25 --seed 0
	$(PY) tools/train_net.py --config-file configs/tiny/demo_balloons_mask_rcnn.yaml
	$(PY) tools/train_net.py --config-file configs/tiny/demo_carvana_unet_gray.yaml
	$(PY) deploy/export_onnx.py --config-file configs/tiny/demo_carvana_unet_gray.yaml MODEL.WEIGHTS $(DEMO_OUT)/carvana_run/model_final.pth --output $(DEMO_OUT)/carvana_onnx --height 128 --width 192 --fp16
	$(PY) deploy/lower_to_cpp.py $(DEMO_OUT)/carvana_onnx/model.onnx --output $(DEMO_OUT)/carvana_cpp --name carvana_unet --int8 --calib $(DEMO_OUT)/carvana_coco/images
	g++ -std=c++17 -O2 -I deploy/runtime $(DEMO_OUT)/carvana_cpp/*.cpp -o $(DEMO_OUT)/carvana_cpp/prog
	$(PY) deploy/to_pnm.py $(DEMO_OUT)/carvana_coco/images/carvana_0001.jpg --height 128 --width 192 --format L --output $(DEMO_OUT)/carvana_cpp/in.pgm
	$(DEMO_OUT)/carvana_cpp/prog $(DEMO_OUT)/carvana_cpp/in.pgm $(DEMO_OUT)/carvana_cpp/mask.pgm
	@echo
	$(PY) tools/summarize_run.py $(DEMO_OUT)/balloons_run $(DEMO_OUT)/carvana_run
	@echo "Runs: $(DEMO_OUT)/balloons_run and $(DEMO_OUT)/carvana_run (metrics.json, training_curves.png,"
	@echo "      inference/val/report.md with per-class tables and plots)."
	@echo "Edge: $(DEMO_OUT)/carvana_onnx (ONNX checked in onnxruntime), $(DEMO_OUT)/carvana_cpp"
	@echo "      (int8 C++ model, report.json, prog; mask.pgm is its output for in.pgm)."
	$(PY) tools/predict.py --run $(DEMO_OUT)/balloons_run --input $(DEMO_OUT)/balloons_coco/annotations/val.json --output $(DEMO_OUT)/balloons_predict --save-labelme
	$(PY) tools/predict.py --run $(DEMO_OUT)/carvana_run --input $(DEMO_OUT)/carvana_coco/annotations/val.json --output $(DEMO_OUT)/carvana_predict
	@echo "Predictions on the held-out val images: $(DEMO_OUT)/balloons_predict/overlays and"
	@echo "      $(DEMO_OUT)/carvana_predict/overlays (predictions.json, sem_seg/, labelme/, report.json)."
	@echo "Try the balloon model in a browser (page + API on http://127.0.0.1:8000/): $(PY) tools/serve.py --run $(DEMO_OUT)/balloons_run"

# Headless Chromium + its WebDriver for the serving page's browser test (Debian packages).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; fi

# pytest exits 5 when it collected no test: that is a failure here.
test: $(STAMP) browser-deps
	$(PY) -m pytest -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) output .pytest_cache .hypothesis
