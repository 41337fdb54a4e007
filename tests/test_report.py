"""topo report: one self-contained HTML file of a recorded run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from topo.api import run
from topo.experiments import find_run
from topo.report import render

STAGES = Path(__file__).resolve().parent / "e2e" / "faults" / "stages.yaml"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.sources += [v or "" for k, v in attrs if k in ("src", "href")]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    runs = tmp_path_factory.mktemp("runs")
    result = run(
        STAGES, ["params.collector_delay=0.03"], runs_dir=runs, quiet=True, output=lambda *a: None
    )
    assert result.ok
    text = render(find_run("last", runs))
    return lambda: text


def test_the_report_holds_every_part_inline(report: Callable[[], str]) -> None:
    text = report()
    tags = _Tags()
    tags.feed(text)
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    assert headings == [
        "Topology",
        "Timeline",
        "Queue depth",
        "Time shares",
        "Results",
        "Final state",
    ]
    charts = tags.tags.count("svg")
    assert charts >= 3  # the timeline, the depths, the shares (and the topology with dot)
    assert tags.tags.count("script") == 0 and not tags.sources  # nothing to fetch
    assert "collector limits this run" in text
    assert "worker[1]" in text and "results" in text


def test_the_report_renders_in_a_browser(report: Callable[[], str], tmp_path: Path) -> None:
    """Chromium (Debian's, installed by .ci/run) lays the page out with its charts and
    logs no error."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium")
    page = tmp_path / "report.html"
    page.write_text(report())
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count("<svg") >= 3 and "Time shares" in dom, dom[:500]
    errors = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert errors == [], errors
    json.dumps(dom[:10])


def test_a_sweep_report_plots_each_number_against_the_swept_parameter(tmp_path: Path) -> None:
    from topo.experiments import run_sweep
    from topo.report import render_sweep

    spec = Path(__file__).resolve().parents[1] / "specs" / "pipeline.yaml"
    sweep = run_sweep(
        spec,
        ["params.workers=1,2"],
        ["params.items=50"],
        repeat=2,
        runs_dir=tmp_path,
        report=["collector"],
        run=lambda plan, **kw: run(plan, quiet=True, output=lambda *a: None, **kw),
    )
    assert sweep.exit_code == 0
    text = render_sweep(sweep.sweep_dir)
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    assert headings == ["duration_s", "collector.count", "collector.sum", "Runs"]
    assert text.count("<svg") == 3
    assert text.count("<tr>") == 1 + 4  # header and 2 points x 2 repeats
