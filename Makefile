# Two commands do everything: each creates or updates .venv as needed, then runs.
PYTHON ?= python3
BOOTSTRAP = $(PYTHON) scripts/bootstrap.py

.PHONY: demo test test-quick setup lab docs test-latest budget budget-full fuzz
demo:  ## run every installed route once on the default model
	$(BOOTSTRAP) demo
test:  ## the whole test suite: pytest + nbval over notebooks/
	$(BOOTSTRAP) test $(ARGS)
test-quick:  ## the inner loop: unit and CLI tests, no notebooks or second environments (<10 min)
	$(BOOTSTRAP) test-quick $(ARGS)
setup:  ## only create/update the environment
	$(BOOTSTRAP) setup
lab:  ## JupyterLab on the notebooks
	$(BOOTSTRAP) lab
docs:  ## the site: README, docs/ and every notebook run on the stand-in, in docs/site/ (Sphinx)
	$(BOOTSTRAP) docs $(ARGS)
test-latest:  ## the parity tests and notebooks on the newest route packages, unpinned (not CI)
	$(PYTHON) scripts/test_latest.py $(ARGS)
budget:  ## every notebook's peak memory, disk and time on the 4-layer bench stand-in (minutes)
	$(BOOTSTRAP) budget $(ARGS)
budget-full:  ## the same at full size (7.6 GB, with 10 GB free as on a 16 GB PC; about an hour), writes the table in docs/models.md
	$(BOOTSTRAP) budget --layers 32 --free-gb 10 --write-table $(ARGS)
fuzz:  ## the Hypothesis fuzz tests with many more examples (profile "fuzz"; not CI)
	HYPOTHESIS_PROFILE=fuzz $(BOOTSTRAP) test tests/test_fuzz.py $(ARGS)
