# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed
SYSDEPS := .venv/.sysdeps

.PHONY: demo test bench faults fuzz mutate clean

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian packages the VM tests, the report test and demo need (qemu-system-x86, busybox-static, nbdkit,
# dmsetup, chromium):
# apt-get installs whichever are missing; quick when all are present.
$(SYSDEPS): $(STAMP) blkjournal/vm/deps.py
	$(PY) -m blkjournal.vm.deps
	touch $(SYSDEPS)

demo: $(STAMP) $(SYSDEPS)
	$(PY) -m blkjournal.demo

test: $(STAMP) $(SYSDEPS)
	$(PY) -m pytest -n 2 -q -rs

# The mutation suite (tests/mutants/): every planted crash bug must be caught; ~5 min on 2 cores.
mutate: $(STAMP)
	$(PY) -m tests.mutants --jobs 2

# Fuzzing (tests/fuzz/): every target for FUZZ_SECONDS under atheris, coverage-guided; failing
# inputs land in tests/fuzz/crashes/ and become regression tests.  A bounded run is in `make test`.
FUZZ_SECONDS ?= 600
FUZZSTAMP := .venv/.fuzz

$(FUZZSTAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,fuzz]'
	touch $(FUZZSTAMP)

fuzz: $(FUZZSTAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m tests.fuzz.run

bench: $(STAMP)
	$(PY) -m bench.run

# the fault explorer over 20 seeds x 200 ops, journal and ordered under flush and fua (docs/faults.md)
faults: $(STAMP)
	$(PY) -m bench.faults --seeds 20 --ops 200 --json bench/faults.json

clean:
	rm -rf .venv build *.egg-info
