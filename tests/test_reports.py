"""Reports a person can act on: illegal states clustered by cause, readable huge counts, and an
HTML report that renders in a real browser (Debian's chromium, headless).
"""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

import pytest

from blkjournal.crash import explore as ex
from blkjournal.crash.clusters import normalise_check, normalise_role
from blkjournal.crash.report import approx, print_summary, report_doc, write_html, write_json, write_junit



@pytest.fixture(scope="module")
def none_run(tmp_path_factory):
    """The `none` demo's run (blkjournal.crash.explore.demo): 30 ops, seed 1."""
    res, _ = ex.crashtest(str(tmp_path_factory.mktemp("none")), protocol="none", nops=30, seed=1, jobs=2)
    return res


def test_approx_keeps_huge_counts_readable():
    assert approx(12345) == "12,345"
    assert approx(10 ** 15 - 1) == "999,999,999,999,999"
    assert approx(22 * 10 ** 1210 + 12345) == "≈ 2.2e1211"
    assert approx(9996 * 10 ** 30) == "≈ 1.0e34"  # the mantissa rounds up into the exponent
    assert approx(3 * 10 ** 20000) == "≈ 3.0e20000"  # past Python's int->str digit limit, no str() taken


def test_roles_and_checks_normalise_across_instances():
    assert normalise_role("commit of txn 5 [put f1]") == normalise_role("commit of txn 7 [put f3]") == "commit of txn #"
    assert normalise_role("origin of file 0 (slot a, gen 1) [create f0]") == "origin of file #"
    assert normalise_role("data block 3 of file 7") != normalise_role("used list of file 7")
    a = normalise_check("file 'f0': size 78783, expected one of [0] (ops 24..25)")
    assert a == normalise_check("file 'f12': size 4096, expected one of [0, 89227] (ops 7..8)")
    assert a != normalise_check("file 'f1': missing, but it exists after every op 24..25")


def test_none_demo_reports_a_handful_of_causes(none_run, tmp_path):
    res = none_run
    cl = res.clusters
    assert res.illegal > 1000 and 2 <= len(cl) <= 10, [c["key"] for c in cl]
    assert [c["count"] for c in cl] == sorted((c["count"] for c in cl), reverse=True)
    assert sum(c["count"] for c in cl) == res.illegal  # every illegal class in exactly one cluster
    assert sum(c["states"] for c in cl) == res.illegal_states
    assert len({c["key"] for c in cl}) == len(cl)
    for c in cl:
        assert c["explanation"].count(". ") == 0 and c["explanation"].endswith(".")  # one sentence
        assert c["explanation"].startswith(c["check"])


def test_representatives_are_minimal_and_really_fail(none_run):
    """Each cluster's representative fails its check; dropping any of its durable writes does not."""
    res = none_run
    space = res.space
    for c in res.clusters:
        rep = c["representative"]
        st = space.state(rep["state"])
        f = {"at": st.point.index, "point": rep["point"]}
        why = ex.recheck(f, st.combo)
        assert why is not None and normalise_check(why) == c["check"], (c["key"], why)
        for pos, _code in st.combo:
            smaller = tuple(x for x in st.combo if x[0] != pos)
            again = ex.recheck(f, smaller)
            assert again is None or normalise_check(again) != c["check"], (c["key"], pos)
        roles = {normalise_role(space.free_writes(st.point.index)[p].op.role) for p, _ in st.combo}
        assert roles == set(c["durable"])


def test_text_json_junit_give_the_clusters(none_run, tmp_path):
    import io

    buf = io.StringIO()
    print_summary(none_run, out=buf, limit=3)
    text = buf.getvalue()
    assert f"{len(none_run.clusters)} causes" in text and "1. " in text and "smallest: state" in text
    j = tmp_path / "r.json"
    write_json(none_run, str(j))
    doc = json.load(open(j))
    assert doc["clusters"][0]["count"] == none_run.clusters[0]["count"]
    assert doc["states_enumerated"] == none_run.states_enumerated  # exact in JSON
    assert doc["kernel"] == os.uname().release
    x = tmp_path / "r.xml"
    write_junit(doc, str(x))
    suite = ET.parse(x).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(doc["clusters"]) + 1  # a case per cluster, not per state
    assert int(suite.get("failures")) == len(doc["clusters"]) == sum(1 for c in cases if c.find("failure") is not None)


def test_huge_counts_in_text_html_and_exact_json(none_run, tmp_path):
    import io

    doc = report_doc(none_run)
    huge = 22 * 10 ** 5210 + 1  # more digits than Python converts to str by default
    doc["states_enumerated"] = huge
    buf = io.StringIO()
    print_summary(doc, out=buf)
    assert "≈ 2.2e5211 legal crash states" in buf.getvalue().replace("\n", " ")
    h = tmp_path / "r.html"
    write_html(doc, str(h))
    assert "≈ 2.2e5211" in open(h).read()
    j = tmp_path / "r.json"
    write_json(doc, str(j))
    sys.set_int_max_str_digits(0)
    assert json.load(open(j))["states_enumerated"] == huge


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(none_run, tmp_path):
    from blkjournal.crash.browser import dump_dom, screenshot

    page = tmp_path / "report.html"
    write_html(none_run, str(page))
    dom = dump_dom(str(page))
    assert "<html" in dom
    assert re.search(r'<section id="summary">.*every crash state legal|<section id="summary">.*illegal classes', dom,
                     re.S)
    summary_at, causes_at = dom.index('id="summary"'), dom.index('id="causes"')
    assert summary_at < causes_at < dom.index('id="timeline-section"')  # summary first
    for n in range(1, len(none_run.clusters) + 1):
        assert f'id="cause-{n}"' in dom
    import html

    for c in none_run.clusters:
        assert html.escape(c["explanation"], quote=False) in dom
    # the script ran in the browser: it wrote the zoom factor and filter boxes exist per role
    assert re.search(r'<span id="zoomval">1x</span>', dom), "the page's script did not run"
    assert 'value="r-origin"' in dom and 'value="r-cut"' in dom
    assert dom.count("<details>") >= len(none_run.clusters)
    # the cause's button dims every crash point outside the cluster (clicked through a #show-cause-N link)
    c = none_run.clusters[-1]
    shown = dump_dom(str(page), f"show-cause-{len(none_run.clusters)}")
    cuts = re.findall(r'<rect class="r-cut[^"]*?( dim)?" data-pi="(\d+)"', shown)
    assert cuts and {int(pi) for dim, pi in cuts if not dim} == set(c["points"]) & {int(pi) for _d, pi in cuts}
    assert any(dim for dim, _pi in cuts) and 'class="show-cause active"' in shown
    png = tmp_path / "report.png"
    data = open(screenshot(str(page), str(png)), "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000


def test_progress_bar_only_on_a_terminal_and_never_under_ci(monkeypatch):
    import io

    from blkjournal.crash.progress import wanted

    master, slave = os.openpty()
    tty = os.fdopen(slave, "w")
    try:
        monkeypatch.delenv("CI", raising=False)
        assert wanted(tty) and not wanted(io.StringIO())
        monkeypatch.setenv("CI", "true")
        assert not wanted(tty)
    finally:
        tty.close()
        os.close(master)
