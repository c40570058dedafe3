# make demo : set up .venv, build the tiny model + data, SFT -> GRPO (4-bit base) -> evaluate, print the report path
# make test : set up .venv, run the default test suite (fast; slow tests: make test-slow)
PY      := .venv/bin/python
RUNS    := runs
TINY    := $(RUNS)/tiny-qwen2-vl
SAMPLE  := $(RUNS)/data/sample
export PYTHONPATH := $(CURDIR)
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-slow test-all lint setup clean-runs

setup: .venv/.installed

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(TINY)/config.json: | .venv/.installed
	$(PY) -m qlora_grpo.tiny $(TINY)

$(SAMPLE)/prepare_report.json: | .venv/.installed
	$(PY) -m medvqa_data.prepare --source omnimedvqa --root medvqa_data/sample/omnimedvqa --out $(SAMPLE) --split modality --overwrite

demo: .venv/.installed $(TINY)/config.json $(SAMPLE)/prepare_report.json
	$(PY) train_qlora_grpo.py --config configs/cpu_demo.yaml

test: .venv/.installed
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: .venv/.installed
	$(PY) -m pytest -m "slow and not gpu" -q

test-all: .venv/.installed
	$(PY) -m pytest -m "not gpu" -q

lint: .venv/.installed
	$(PY) -m ruff check .

clean-runs:
	rm -rf $(RUNS)
