# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m blkjournal.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q -rs

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf .venv build *.egg-info
