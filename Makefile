# Two commands on a fresh clone: `make run` and `make test`. Both create .venv if missing.
PY      := .venv/bin/python
STAMP   := .venv/.installed
ARGS    ?=

.PHONY: run test teacher base judge report clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# the main job: no defenses against the full stack, attacked by a hydra; prints the table and
# where the report and its Pareto plot are
run: $(STAMP)
	$(PY) experiments/run.py -m experiment=defense_comparison hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1 $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 $(ARGS)

# retrain the default (scale=small) teacher and ship it in teachers/shipped/
teacher: $(STAMP)
	$(PY) -m experiments.train $(ARGS)

# retrain the public base model every attacker starts from and ship it in students/shipped/
base: $(STAMP)
	$(PY) -m experiments.train base $(ARGS)

# retrain the teacher that also grades (teacher=judge) and ship it in teachers/shipped_judge/
judge: $(STAMP)
	$(PY) -m experiments.train judge $(ARGS)

clean:
	rm -rf runs multirun outputs .cache
