# make demo : set up .venv, build the tiny model + data, SFT -> GRPO (4-bit base) -> evaluate, print the report path
# make test : set up .venv, run the default test suite (fast; slow tests: make test-slow)
# make mutants : mutation-test the core modules (mutmut, one module at a time; scores: docs/testing.md)
PY      := .venv/bin/python
RUNS    := runs
TINY    := $(RUNS)/tiny-qwen2-vl
SAMPLE  := $(RUNS)/data/sample
PHRAW   := $(RUNS)/data/phantoms_raw
PHDATA  := $(RUNS)/data/phantoms
DEMO    := $(RUNS)/demo
export PYTHONPATH := $(CURDIR)
export PYTHONUNBUFFERED := 1
# One BLAS/OpenMP thread: on a small CPU the tiny model trains faster so. Override: make demo DEMO_THREADS=4
DEMO_THREADS ?= 1

.PHONY: demo sample test test-slow test-learning test-all test-unsloth gpu-check lint setup clean-runs mutants

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

$(PHDATA)/prepare_report.json: | .venv/.installed
	$(PY) -m medvqa_data.phantoms --out $(PHRAW) --n 4000 --seed 0 --option-order canonical
	$(PY) -m medvqa_data.prepare --source omnimedvqa --root $(PHRAW) --out $(PHDATA) --split modality --overwrite

# The CPU demo: SFT warm start -> GRPO on the 4-bit base -> base/SFT/GRPO report (reruns resume).
demo: export OMP_NUM_THREADS = $(DEMO_THREADS)
demo: .venv/.installed $(TINY)/config.json $(PHDATA)/prepare_report.json
	$(PY) train_sft.py --config configs/cpu_demo_sft.yaml
	$(PY) train_qlora_grpo.py --config configs/cpu_demo.yaml
	$(PY) -m eval.evaluate --model $(TINY) --data $(PHDATA) --split test --template no-think \
		--subset "question_type=Modality Recognition" --quantization nf4 --min-pixels 12544 --max-pixels 12544 \
		--max-new-tokens 12 --batch-size 32 --out $(DEMO)/base
	$(PY) scripts/demo_report.py --runs base=$(DEMO)/base sft=$(DEMO)/sft grpo=$(DEMO)/grpo \
		--heldout Ultrasound --out $(DEMO)/report
	@echo "adapters: $(DEMO)/sft $(DEMO)/grpo   metrics: $(DEMO)/*/eval/metrics.json   report: $(DEMO)/report/report.md"

# GRPO on the bundled real-image sample (CT/MR/US/fundus/microscopy from PyPI wheels).
sample: .venv/.installed $(TINY)/config.json $(SAMPLE)/prepare_report.json
	$(PY) train_qlora_grpo.py --config configs/cpu_sample.yaml

test: .venv/.installed
	$(PY) -m pytest -m "not slow and not gpu and not unsloth" -q

test-slow: .venv/.installed
	$(PY) -m pytest -m "slow and not gpu and not unsloth" -q

# The Unsloth CPU tier: real unsloth (requirements-gpu.txt) in .venv-unsloth, which sees the main
# .venv's packages through a .pth file (so pip never replaces torch/transformers/trl), on CPU.
UPY := .venv-unsloth/bin/python
.venv-unsloth/.installed: requirements-gpu.txt | .venv/.installed
	rm -rf .venv-unsloth
	python3 -m venv .venv-unsloth
	$(PY) -c "import site; print(site.getsitepackages()[0])" > "$$($(UPY) -c 'import site; print(site.getsitepackages()[0])')/main-venv.pth"
	$(UPY) -m pip install -q --no-deps -r requirements-gpu.txt cut_cross_entropy msgspec tyro docstring-parser shtab typeguard torchao
	$(UPY) -c "import os; os.environ['UNSLOTH_ALLOW_CPU'] = '1'; os.environ['UNSLOTH_SKIP_TORCHVISION_CHECK'] = '1'; import unsloth, torch, trl; print('unsloth', unsloth.__version__, 'torch', torch.__version__, 'trl', trl.__version__)"
	touch $@

test-unsloth: .venv-unsloth/.installed
	UNSLOTH_COMPILE_LOCATION=$(CURDIR)/.venv-unsloth/compiled_cache QLORA_UNSLOTH_TIER=1 UNSLOTH_ALLOW_CPU=1 UNSLOTH_SKIP_TORCHVISION_CHECK=1 OMP_NUM_THREADS=1 \
		$(UPY) -m pytest -m unsloth -q -p no:cacheprovider tests/unsloth

# One-command GPU acceptance check (CUDA only; refuses a CPU machine): see bench/gpu_check.sh
gpu-check:
	bash bench/gpu_check.sh

test-learning: .venv/.installed
	$(PY) -m pytest -m learning -q

test-all: .venv/.installed
	$(PY) -m pytest -m "not gpu" -q

# Mutation testing: the core modules one at a time (small pure ones first), each mutant against the fast
# tests that call the mutated function ([tool.mutmut] in pyproject.toml), then the per-module scores.
# Reruns skip finished mutants of unchanged functions. One module: make mutants MUTATE='eval.metrics*'
MUTATE ?= medvqa_data.splits* medvqa_data.templates* eval.metrics* qlora_grpo.parsing* qlora_grpo.rewards* \
	qlora_grpo.rundir* medvqa_data.images* medvqa_data.sources.* eval.scoring*
MUTANT_JOBS ?= 2
mutants: .venv/.installed
	@mkdir -p mutants; set -f; for m in $(MUTATE); do echo "== $$m (log: mutants/last-run.log)"; \
		OMP_NUM_THREADS=1 nice -n 10 .venv/bin/mutmut run --max-children $(MUTANT_JOBS) "$$m" > mutants/last-run.log 2>&1 \
		|| { tail -c 3000 mutants/last-run.log; exit 1; }; done
	$(PY) scripts/mutation_scores.py

lint: .venv/.installed
	$(PY) -m ruff check .

clean-runs:
	rm -rf $(RUNS)
