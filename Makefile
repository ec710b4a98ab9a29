# The two commands a fresh clone needs: `make demo` and `make test`.
# Both create .venv if missing and install d2seg with its pinned dependencies.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.d2seg-installed
DEMO_OUT ?= output/demo

.PHONY: install demo demo-mcu system-deps arm-deps browser-deps test bench clean

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
	$(MAKE) -C $(DEMO_OUT)/carvana_cpp prog CXXFLAGS=-O2
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

# The microcontroller path: train the MCU model (configs/edge) on the sample cars, lower it to
# int8 C++ for the STM32H743, build it with arm-none-eabi-g++ for a Cortex-M7, run it in QEMU
# (mps2-an500, semihosting) and print the flash/RAM figures and the mask's agreement with the
# host build of the same code.
MCU_OUT ?= output/demo_mcu
MCU_TRAIN_OPTS ?=  # extra train_net.py overrides, e.g. SOLVER.MAX_ITER 20 for a smoke run
MCU_CONFIG := configs/edge/unet_MNV3_small_gray_128.yaml
# The cars are 3:2: they are letterboxed into the 128x128 input (aspect kept, the rest the
# model's pixel mean, which is what training pads with) for calibration and inference alike.
MCU_PAD = $(shell $(PY) -c 'from d2seg.config import get_cfg; c = get_cfg(); c.merge_from_file("$(MCU_CONFIG)"); print(c.MODEL.PIXEL_MEAN[0])')
demo-mcu: $(STAMP) arm-deps
	rm -rf $(MCU_OUT)
	$(PY) tools/convert_labelme.py --input annotations/carvana --format masks --mask-label car --output $(MCU_OUT)/carvana_coco --split val=0.25 --seed 0
	$(PY) tools/train_net.py --config-file $(MCU_CONFIG) OUTPUT_DIR $(MCU_OUT)/run DATASETS.TRAIN "('$(MCU_OUT)/carvana_coco/annotations/train.json',)" DATASETS.TEST "('$(MCU_OUT)/carvana_coco/annotations/val.json',)" $(MCU_TRAIN_OPTS)
	$(PY) deploy/export_onnx.py --config-file $(MCU_CONFIG) MODEL.WEIGHTS $(MCU_OUT)/run/model_final.pth --output $(MCU_OUT)/onnx --height 128 --width 128
	$(PY) deploy/lower_to_cpp.py $(MCU_OUT)/onnx/model.onnx --output $(MCU_OUT)/m7 --name car_mcu --int8 --calib $(MCU_OUT)/carvana_coco/images --calib-method percentile --calib-keep-aspect $(MCU_PAD) --mask-output --target stm32h743
	$(PY) deploy/to_pnm.py annotations/carvana/carvana_0001.jpg --height 128 --width 128 --keep-aspect $(MCU_PAD) --format L --output $(MCU_OUT)/m7/in.pgm
	$(MAKE) -C $(MCU_OUT)/m7 prog qemu IN=in.pgm OUT=mask_m7.pgm
	cd $(MCU_OUT)/m7 && ./prog in.pgm mask_host.pgm
	$(PY) deploy/mcu_report.py $(MCU_OUT)/m7 --mask mask_m7.pgm --host-mask mask_host.pgm

# Debian packages the tests exercise for real: the Cortex-M7 build and its QEMU run (make
# demo-mcu, tests/export), headless Chromium + its WebDriver (the serving page's browser
# test) and a PostgreSQL server (tools/tune.py --storage postgresql://). apt-get runs only for
# the missing ones: one update, then one install.
ARM_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user
BROWSER_PACKAGES := chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
apt_install = @missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update && $(SUDO) apt-get install -y $$missing; fi
arm-deps:
	$(call apt_install,$(ARM_PACKAGES))
browser-deps:
	$(call apt_install,$(BROWSER_PACKAGES))
system-deps:
	$(call apt_install,$(ARM_PACKAGES) $(BROWSER_PACKAGES) postgresql)

# pytest exits 5 when it collected no test: that is a failure here. The tests run in
# TEST_WORKERS pytest-xdist processes (tests/conftest.py gives each its share of the cores), a
# test file per process at a time so each file's fixtures are built once.
TEST_WORKERS ?= 2
test: $(STAMP) system-deps
	$(PY) -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) output .pytest_cache .hypothesis
