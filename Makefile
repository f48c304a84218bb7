# The project's entry points. Each target sets up what it needs first; set-up steps rerun only when
# their lock file changes.

PIPENV_VERSION := 2026.10.3
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_VERBOSITY := -1
# The cdktf CLI and Terraform: no calls to HashiCorp's checkpoint service, and no daily `npm view` of
# cdktf-cli's latest version.
export CHECKPOINT_DISABLE := 1
export DISABLE_VERSION_CHECK := 1

PYTHON := python3.11
PIPENV := $(PYTHON) -m pipenv
CHECKOV_VENV := .cache/checkov-venv
# The tests run on pytest-xdist workers, each given whole files (so that a file's costly fixture is built
# once), in collection order: tests/conftest.py puts the slowest files first, the local end to end first of
# all, so that it runs beside the rest. One more worker than CPUs keeps the CPUs busy while tests wait on
# their servers, and the others finish the rest long before the end to end ends: with one per CPU, the
# last file was often handed to the end to end's worker (xdist gives a worker its next file once two of its
# tests are left) and waited there for the destroy.
WORKERS := $(shell $(PYTHON) -c 'import os; print(os.cpu_count() + 1)')
PYTEST := $(PIPENV) run pytest --dist loadfile --no-loadscope-reorder -n $(WORKERS)

.PHONY: setup synth test test-fast snapshots bench

## Install the locked Python environment, the pinned cdktf CLI and checkov (in its own environment).
setup: .venv/.synced node_modules/.installed $(CHECKOV_VENV)/.installed lazy-provider

.venv/.synced: Pipfile.lock
	$(PYTHON) -m pip --version >/dev/null
	$(PIPENV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "pipenv==$(PIPENV_VERSION)"
	$(PIPENV) sync --dev
	touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# checkov pins versions that conflict with the project's boto3, so it lives in a venv of its own.
$(CHECKOV_VENV)/.installed: security/checkov-requirements.txt
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --no-deps -r security/checkov-requirements.txt
	touch $@

## Fast synth: regenerate the lazy view of the provider bindings when stale, and warm the jsii package
## cache (about a second when current). Phony: the jsii cache lives outside the project.
.PHONY: lazy-provider
lazy-provider: .venv/.synced
	$(PIPENV) run python -m fast_synth build

## Synthesize every environment into cdktf.out/.
synth: setup
	$(PIPENV) run python main.py

## Run every test: unit, snapshots, terraform validate, checkov, functions, worker, the local end to end,
## ruff and mypy.
test: setup
	$(PYTEST)

## The inner loop: every test but the local end to end's deployment (tests/e2e/test_local_environment.py).
test-fast: setup
	$(PYTEST) --ignore=tests/e2e/test_local_environment.py

## Print the benchmarks' figures (synth: stock against fast; functions: throughput and AWS calls; feedback:
## how long the tests and a synth take).
bench: setup
	$(PIPENV) run python -m bench.synth
	$(PIPENV) run python -m bench.functions
	$(PIPENV) run python -m bench.queries
	$(PIPENV) run python -m bench.feedback

## Rewrite the synth snapshots after an intended change (say why in the commit message).
snapshots: setup
	$(PIPENV) run pytest tests/test_snapshots.py --snapshot-update

ENV ?= local

.PHONY: deploy destroy plan

## Deploy ENV (local by default, or any short-lived suffix such as pr-7) to a moto server on this machine,
## send sample readings through it and print what each store holds. The server keeps running until
## `make destroy ENV=...`.
deploy: setup
	$(PIPENV) run python -m tools.local deploy $(ENV)

## Destroy ENV on the moto server, and stop the server and the local data stores.
destroy: setup
	$(PIPENV) run python -m tools.local destroy $(ENV)

## Plan one environment (ENV=dev|staging|prod|local|<suffix>; local by default, on the moto server) into
## cdktf.out/stacks/<stack>/: plan.tfplan, plan.json and plan.md, the summary for reviewers.
plan: setup
	$(PIPENV) run python -m tools.local plan $(ENV)

## Create the S3 bucket ENV's Terraform state lives in (once per account), or check and repair it: versioned,
## encrypted with its own KMS key, TLS-only, public access blocked, old versions expired; print the backend
## settings. Re-running changes nothing. ENV=local works on the emulator at LOCAL_AWS_ENDPOINT.
.PHONY: bootstrap
bootstrap: .venv/.synced
	$(PIPENV) run python -m tools.bootstrap $(ENV)

## Apply the PostgreSQL migrations of a deployed ENV (dev|staging|prod|<suffix>) from outputs/<ENV>.json: runs
## its admin task once on ECS (python -m stream_worker.migrate) and prints its exit code and logs; for ENV=local
## (the default) the same command runs here, against the PostgreSQL `make deploy` started. Re-running changes
## nothing. Devices are registered with `python -m tools.devices register --env ENV --client ...`.
.PHONY: migrate
migrate: .venv/.synced
	$(PIPENV) run python -m tools.migrate --env $(ENV)

## Smoke-test a deployed environment from outputs/<ENV>.json and the caller's AWS credentials: the API
## (a signed POST of two readings, read back within 60 s), the stream mapping, the worker, the alert topic's
## subscriptions. One line per check; fails if any check fails. ENV=local: what the emulator allows.
.PHONY: verify
verify: .venv/.synced
	$(PIPENV) run python -m tools.verify $(ENV)
