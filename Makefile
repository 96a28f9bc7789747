# robust-retrieval: `make help` lists every target. Method targets live in mk/<method>.mk.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA_DIR ?= data
WEIGHTS_DIR ?= weights
ARGS ?=
# `$(call experiments,<method>,<row> ...)` -> <method>/<row>,<method>/<row>,...: one Hydra multirun over rows (one
# process for a whole table; with hydra/launcher=slurm one job per row). MULTIRUN_JOB_DIR names each job's folder
# after its experiment (<sweep dir>/<row>). Hydra reads a nested ${...} only in a quoted value, and the shell must
# leave it alone: such overrides go in single quotes around Hydra's double quotes.
comma := ,
empty :=
space := $(empty) $(empty)
commas = $(subst $(space),$(comma),$(strip $(1)))
experiments = $(call commas,$(addprefix $(1)/,$(2)))
MULTIRUN_JOB_DIR := hydra.sweep.subdir="$${basename:$${experiment_name}}"
# where `make demo` and the demo-* targets write (git-ignored); the committed reference run is results/reference/
DEMO_OUT ?= outputs/demo
DEMO_SEEDS ?= 0,1,2
export PROJECT_ROOT := $(CURDIR)
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1


.PHONY: sweep-summary tables tables-wandb report rehearse rehearse-ci help install test test-slow test-all lint format demo demo-report clean clean-logs wandb-sync

help: ## list every target with one line each
	@grep -hE '^[a-zA-Z0-9_%-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x "$(PY)" || python3 -m venv "$(VENV)"
	"$(PIP)" install -q --upgrade pip
	"$(PIP)" install -q -e '.[dev]'
	touch "$@"

install: $(VENV)/.installed ## create .venv (if needed) and install the project with its dev extras

test: install data-fashion-mnist ## run the fast test suite (not slow, not gpu)
	"$(PY)" -m pytest -m "not slow and not gpu" -q $(ARGS)

test-slow: install data-fashion-mnist ## run only the slow tests
	"$(PY)" -m pytest -m "slow and not gpu" -q $(ARGS)

test-all: install data-fashion-mnist ## run every CPU test, slow included
	"$(PY)" -m pytest -m "not gpu" -q $(ARGS)

lint: install ## ruff check and ruff format --check
	"$(VENV)/bin/ruff" check .
	"$(VENV)/bin/ruff" format --check .

format: install ## apply ruff fixes and formatting
	"$(VENV)/bin/ruff" check --fix .
	"$(VENV)/bin/ruff" format .

demo: install data-fashion-mnist ## the main job: the four methods vs their baselines on Fashion-MNIST (CPU, seeds $(DEMO_SEEDS), two parts at a time) -> $(DEMO_OUT)/, then its report
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} "$(PY)" -m common.demo --out "$(DEMO_OUT)" --seeds $(DEMO_SEEDS) $(ARGS)
	$(DEMO_REPORT)

DEMO_REPORT = "$(PY)" -m common.report.build --demo "$(DEMO_OUT)" --records "$(DEMO_OUT)/records" --out "$(DEMO_OUT)/report"
demo-report: install ## the report of the demo run in $(DEMO_OUT) (beside the reference run, results/reference) -> $(DEMO_OUT)/report/
	$(DEMO_REPORT)

demo-foundation: install data-fashion-mnist ## train a small contrastive baseline on Fashion-MNIST (CPU) and print R@1, mAP@R
	"$(PY)" -m common.launch experiment=demo/fmnist_contrastive $(ARGS)

sweep-%: install ## Hydra multirun of configs/hparams_search/<name>.yaml, e.g. make sweep-demo_seeds ARGS="hydra/launcher=slurm"
	"$(PY)" -m common.launch -m hparams_search=$* $(ARGS)

sweep-summary: install ## mean ± std over seeds of each configuration of a multirun: make sweep-summary [DIR=logs/<task>/multiruns/<run>]
	"$(PY)" -m common.results.sweep_summary $(if $(DIR),"$(DIR)",)

slurm-dryrun: install ## print the sbatch job a SLURM launch would submit: make slurm-dryrun ARGS="experiment=... hydra/launcher=slurm_4gpu"
	"$(PY)" -m common.slurm $(ARGS)

tables: install ## every table of every method: the result records (results/records) beside published.yaml -> results/tables/
	"$(PY)" -m common.results.collect $(ARGS)

tables-wandb: install ## make tables, and log them as wandb Tables (offline unless WANDB_MODE=online; then make wandb-sync)
	"$(PY)" -m common.results.collect --wandb $(ARGS)

report: install ## build results/report/index.html and REPORT.md from the records, the tables and the demo outputs (no wandb needed)
	"$(PY)" -m common.report.build

rehearse: install ## every `make table-*` on tiny synthetic data in every official layout (CPU, 2 lanes, ~5-6 min on 2 cores), then tables + report into outputs/rehearsal; fails naming each empty cell
	"$(PY)" -m common.rehearsal.run $(ARGS)

rehearse-ci: install ## the rehearsal of one table per method (CI): ROADMAP XBM, HAPPIER DyML-Product, HEAT CIFAR-10, GalLoP DG
	"$(PY)" -m common.rehearsal.run --ci --out outputs/rehearsal-ci $(ARGS)

wandb-sync: ## upload offline wandb runs under logs/ (needs `wandb login`)
	"$(PY)" -m common.utils.wandb_sync logs

clean-logs: ## remove logs/
	rm -rf logs

clean: ## remove caches and build files (keeps .venv and data)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -exec rm -rf {} +

-include mk/*.mk
