"""The CI pipelines under ci/: linted by the real linters, and run here as `ci/local N`.

`ci/local N` runs the pipelines' own shard command (ci/shard) N times in parallel and their merge
step (ci/merge), so what is proven here is what a CI run does: the merged totals equal an
unsharded run's, an illegal state fails the merge, and shards that do not make one run are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
WORKFLOW = os.path.join(ROOT, "ci", "github", "crashtest.yml")
GITLAB = os.path.join(ROOT, "ci", "gitlab", ".gitlab-ci.yml")
TOTALS = ("crash_points", "states_checked", "illegal", "illegal_states", "states_enumerated", "states_covered",
          "coverage", "failing_points")


def _tool(name: str) -> str:
    path = os.path.join(BIN, name)
    assert os.path.exists(path), f"{name} is a test dependency (pyproject.toml [test])"
    return path


def _env(out, **kw) -> dict:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "BLKJOURNAL_OUT": str(out),
           "BLKJOURNAL_OPS": "40", "BLKJOURNAL_BOUND": "1024", "BLKJOURNAL_SEED": "3"}
    # (bound 1024: format 2's journal replay looks two blocks past the end of the log for a later
    # transaction that says the failed one was durable, so more crash states differ there)
    env.pop("CI", None)
    env.update({f"BLKJOURNAL_{k.upper()}": str(v) for k, v in kw.items()})
    return env


def _run(cmd, env, timeout=600):
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _offline(cmd: list[str]) -> list[str]:
    """Run a linter without a network (root here): proves it needs none."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "-n", *cmd]
    return cmd


def test_github_workflow_passes_actionlint(tmp_path):
    r = subprocess.run(_offline([_tool("actionlint"), WORKFLOW]), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yml"  # the linter can fail: an undefined matrix key and a job needing a missing job
    text = open(WORKFLOW).read().replace("${{ matrix.shard }}\" \"$SHARDS\"", "${{ matrix.shrad }}\" \"$SHARDS\"")
    bad.write_text(text.replace("needs: shard", "needs: shards"))
    r = subprocess.run(_offline([_tool("actionlint"), str(bad)]), capture_output=True, text=True)
    assert r.returncode == 1 and "shrad" in r.stdout and "shards" in r.stdout, r.stdout


def test_gitlab_pipeline_passes_its_schema(tmp_path):
    check = [_tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci"]
    r = subprocess.run(_offline(check + [GITLAB]), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / ".gitlab-ci.yml"
    bad.write_text(open(GITLAB).read().replace("parallel: 4", "parallel: four"))
    r = subprocess.run(_offline(check + [str(bad)]), capture_output=True, text=True)
    assert r.returncode == 1 and "parallel" in r.stdout, r.stdout


def test_pipelines_run_the_same_scripts():
    """Both pipelines call ci/shard, ci/merge and ci/vm, the scripts ci/local runs."""
    for path in (WORKFLOW, GITLAB):
        text = open(path).read()
        for script in ("ci/shard", "ci/merge", "ci/vm"):
            assert script in text, (path, script)
    assert "ci/shard" in open(os.path.join(ROOT, "ci", "local")).read()


@pytest.mark.slow
def test_ci_local_3_equals_the_unsharded_run(tmp_path):
    env = _env(tmp_path / "sharded")
    r = _run([os.path.join(ROOT, "ci", "local"), "3"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = json.load(open(tmp_path / "sharded" / "report.json"))
    assert sorted(os.listdir(tmp_path / "sharded")) == sorted(
        [f"shard-{i}.{x}" for i in range(3) for x in ("json", "xml", "log")] + ["report.json", "report.xml",
                                                                                 "report.html"])
    env1 = _env(tmp_path / "whole")
    r = _run([os.path.join(ROOT, "ci", "shard"), "0", "1"], env1)
    assert r.returncode == 0, r.stdout + r.stderr
    whole = json.load(open(tmp_path / "whole" / "shard-0.json"))
    assert {k: merged[k] for k in TOTALS} == {k: whole[k] for k in TOTALS}
    assert merged["crash_points"] > 50 and merged["coverage"] == 1.0 and merged["run"]["merged_from"] == 3
    shards = [json.load(open(tmp_path / "sharded" / f"shard-{i}.json")) for i in range(3)]
    assert all(s["crash_points"] > 0 for s in shards)  # each shard did a part
    assert sum(s["crash_points"] for s in shards) == whole["crash_points"]
    suite = ET.parse(tmp_path / "sharded" / "report.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0"


@pytest.mark.slow
def test_an_illegal_state_fails_the_merge(tmp_path):
    out = tmp_path / "none"
    r = _run([os.path.join(ROOT, "ci", "local"), "3"], _env(out, protocol="none", ops=30, bound=64))
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.load(open(out / "report.json"))
    assert rep["illegal"] > 0 and rep["clusters"]
    assert sum(c["count"] for c in rep["clusters"]) == rep["illegal"]
    suite = ET.parse(out / "report.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == len(rep["clusters"])
    page = open(out / "report.html").read()
    assert "Causes, largest first" in page and '<svg id="timeline"' in page  # the shards' timelines joined
    cuts = rep["timeline"]["cuts"]
    assert 0 < len(cuts) <= rep["crash_points"]
    assert {pi for _i, pi, legal in cuts if not legal} <= set(rep["failing_points"])


def test_merge_refuses_shards_of_different_runs(tmp_path):
    """Missing, doubled and foreign shards: exit 2 with one line; nothing written."""
    blk = os.path.join(BIN, "blkjournal")
    paths = []
    for i, seed in ((0, 1), (1, 1), (2, 1), (2, 2)):
        p = tmp_path / f"s{i}-{seed}.json"
        r = subprocess.run([blk, "crashtest", "--ops", "12", "--seed", str(seed), "--bound", "32", "--jobs", "1",
                            "--shard", f"{i}/3", "--json", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        paths.append(str(p))
    s0, s1, s2, other = paths
    merged = tmp_path / "m.json"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    deep = tmp_path / "deep.json"  # json.load recurses: a RecursionError, not a traceback
    deep.write_text("[" * 200_000 + "]" * 200_000)
    digits = tmp_path / "digits.json"  # a count past the digit bound: refused, not parsed quadratically
    digits.write_text('{"states_enumerated": ' + "7" * 1_000_000 + "}")
    for args, words in (([s0, s1], "missing shard 2/3"), ([s0, s1, s2, s1], "given twice"),
                        ([s0, s1, other], "another run"), ([s0, s1, str(bad)], "not a JSON report"),
                        ([s0, s1, str(deep)], "not a JSON report"), ([s0, s1, str(digits)], "not a JSON report"),
                        ([s0, s1, str(tmp_path / "nope.json")], "No such file")):
        r = subprocess.run([blk, "report", "merge", *args, "--json", str(merged)], capture_output=True, text=True)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not merged.exists()
    r = subprocess.run([blk, "report", "merge", s2, s0, s1, "--json", str(merged)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.load(open(merged))["run"]["merged_from"] == 3


def test_merge_adds_the_shards_fault_tallies(tmp_path):
    blk = os.path.join(BIN, "blkjournal")
    paths = []
    for i, samples in ((0, 6), (1, 6), (1, 7)):
        p = tmp_path / f"f{i}-{samples}.json"
        r = subprocess.run([blk, "crashtest", "--ops", "16", "--seed", "2", "--bound", "64", "--jobs", "1",
                            "--shard", f"{i}/2", "--faults", "bitrot,lost-write", "--fault-samples", str(samples),
                            "--json", str(p)], capture_output=True, text=True)
        assert r.returncode in (0, 1) and p.exists(), r.stderr
        paths.append(str(p))
    merged = tmp_path / "m.json"
    r = subprocess.run([blk, "report", "merge", paths[0], paths[1], "--json", str(merged)], capture_output=True,
                       text=True)
    shards = [json.load(open(p))["faults"] for p in paths[:2]]
    fx = json.load(open(merged))["faults"]
    for k in ("injected", "candidates", "silent_corruptions", "detected", "harmless", "undetectable", "crashed"):
        assert fx[k] == shards[0][k] + shards[1][k], k
    assert fx["by_kind"]["bitrot"]["injected"] == sum(s["by_kind"]["bitrot"]["injected"] for s in shards)
    assert r.returncode == (1 if fx["silent_corruptions"] or fx["crashed"] else 0), r.stdout + r.stderr
    r = subprocess.run([blk, "report", "merge", paths[0], paths[2]], capture_output=True, text=True)
    assert r.returncode == 2 and "--fault-samples" in r.stderr


def test_ci_scripts_pass_shellcheck():
    """shellcheck (Debian, installed by blkjournal/vm/deps.py) on the scripts the pipelines run."""
    exe = shutil.which("shellcheck")
    assert exe, "shellcheck is installed by `make test` (blkjournal/vm/deps.py)"
    scripts = [os.path.join(ROOT, "ci", n) for n in ("shard", "merge", "local", "vm", "exploration.env")]
    r = subprocess.run([exe, "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
