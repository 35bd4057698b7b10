"""JupyterLab in a real browser: the project's environment serves the notebooks, headless
Chromium runs every cell of 01 and 08 on the smoke run store, and what a researcher sees has no
error, its tables and its plotly figures drawn as SVG.

The browser is Debian's chromium (``.ci/run`` installs it), driven by Playwright's Python package
through ``executable_path``: nothing is downloaded (docs/ENGINEERING.md, "The offline world").
The notebooks are copies in the test's folder, so that JupyterLab's autosave never writes outputs
into the repository's stored notebooks; they pick the smoke parameters through ``CFT_PARAMS``
(cft_helpers.params.load_params), with their parameters cell untouched.
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_data_prep.ipynb", "08_paper_figures.ipynb")
SERVER_START_S = 90      # JupyterLab on 2 busy cores starts in ~5-15 s
RUN_ALL_S = 180          # per notebook; measured ~20-60 s on 2 cores (imports, 08's PNG/SVG export)

# What the notebook's model holds after "Run All", read through the lab's own objects (the app
# is exposed to the page with --LabApp.expose_app_in_browser): every code cell, its execution
# count, error outputs, tracebacks printed to stderr, and the outputs that should render as a
# table or a plotly figure (the renderer picks plotly's mime type over its text/html fallback).
NOTEBOOK_STATE_JS = """() => {
  const text = t => Array.isArray(t) ? t.join('') : (t || '');
  const nb = window.jupyterapp.shell.currentWidget;
  const s = {code: 0, unexecuted: [], errors: [], tracebacks: [], plotly: 0, tables: 0};
  nb.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    s.code++;
    if (cell.model.executionCount == null) s.unexecuted.push(i);
    for (const o of cell.model.outputs.toJSON()) {
      if (o.output_type === 'error') s.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
      if (o.output_type === 'stream' && o.name === 'stderr' && text(o.text).includes('Traceback'))
        s.tracebacks.push([i, text(o.text)]);
      const data = o.data || {};
      if (data['application/vnd.plotly.v1+json']) s.plotly++;
      else if (data['text/html']) s.tables += (text(data['text/html']).match(/<table/g) || []).length;
    }
  });
  return s;
}"""


def tracebacks(texts) -> list[str]:
    """The stderr texts that hold a traceback (kaleido's harmless one is filtered out by
    cft_helpers.plots, so none is tolerated here)."""
    return [t[:3000] for t in texts if "Traceback" in t]


@pytest.fixture(scope="session")   # session: set up before the session's smoke book, not after
def chromium() -> str:
    """Debian's chromium, and Playwright to drive it; asked before the smoke book is run."""
    required = os.environ.get("CFT_REQUIRE_CHROME") == "1"   # set by .ci/run, which installs one
    path = shutil.which("chromium")
    if path is None:
        if required:
            pytest.fail("CFT_REQUIRE_CHROME=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (Debian's package; .ci/run installs it): "
                    "the JupyterLab browser test needs it and never downloads a browser")
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root_dir: Path, env: dict[str, str], log: Path):
    """A JupyterLab server of this environment on a free port with a random token; yields
    (base URL, token) once it answers, and stops it (and its kernels) on the way out."""
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
           "--allow-root",                            # CI containers run as root
           "--LabApp.extension_manager=readonly",     # offline: no PyPI queries for extensions
           "--LabApp.expose_app_in_browser=True"]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                if server.poll() is not None:
                    raise AssertionError(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
            yield base, token
        finally:
            # The whole process group: the server and the kernels it started.
            try:
                os.killpg(server.pid, 15)
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait()
            except ProcessLookupError:
                pass


def run_all_cells(page, base: str, token: str, name: str) -> dict:
    """Open ``name`` in a fresh workspace, wait for its kernel, run every cell; the state after."""
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_function(
        """name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                     const k = w && w.context && w.context.path === name && w.sessionContext.session
                               && w.sessionContext.session.kernel;
                     return k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
        arg=name, timeout=SERVER_START_S * 1000)
    # The command's promise resolves when the last cell has run (false if one failed).
    page.evaluate("""() => { window.__runAll = undefined;
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(
            ok => { window.__runAll = ok; }, err => { window.__runAll = String(err); }); }""")
    page.wait_for_function("() => window.__runAll !== undefined", timeout=RUN_ALL_S * 1000, polling=500)
    # Outputs render asynchronously after the kernel's reply: let the page settle.
    page.wait_for_function("""() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                                      return k.status === 'idle'; }""", timeout=30_000)
    state = page.evaluate(NOTEBOOK_STATE_JS)
    state["run_all"] = page.evaluate("() => window.__runAll")
    return state


RENDERED_JS = """() => ({
  tables: document.querySelectorAll('.jp-OutputArea-output.jp-RenderedHTMLCommon table').length,
  plotly: [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('svg.main-svg')).length,
  // A figure wider than its output area is cut off (the notebook's figures take its width).
  too_wide: [...document.querySelectorAll('.js-plotly-plot svg.main-svg')].map(svg => {
      const area = svg.closest('.jp-OutputArea-output');
      return [svg.getBoundingClientRect().width, area ? area.clientWidth : 0];
    }).filter(([w, room]) => w > room + 1),
})"""


def rendered(page, state: dict, timeout_s: float = 30) -> dict:
    """The tables and plotly figures (with their SVG) drawn in the page, once as many as the
    outputs hold are there (or the timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        drawn = page.evaluate(RENDERED_JS)
        if (drawn["tables"] >= state["tables"] and drawn["plotly"] >= state["plotly"]) or time.monotonic() > deadline:
            return drawn
        page.wait_for_timeout(500)


def test_jupyterlab_runs_notebooks_01_and_08_in_chromium(chromium, book_run, tmp_path):
    from playwright.sync_api import sync_playwright

    params, _ = book_run
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)   # the .py pairs too: jupytext reads them
    jupyter_home = tmp_path / "jupyter"              # no user settings, workspaces or kernels
    # what a user's shell has: none of the book's own variables (CFT_NOTEBOOK would add PNG copies)
    env = {**{k: v for k, v in os.environ.items() if k not in ("CFT_NOTEBOOK", "CFT_PROGRESS")},
           "CFT_PARAMS": str(params.source_path),
           "JUPYTER_CONFIG_DIR": str(jupyter_home / "config"), "JUPYTER_DATA_DIR": str(jupyter_home / "data"),
           "JUPYTER_RUNTIME_DIR": str(jupyter_home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(jupyter_home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(jupyter_home / "workspaces")}
    # Offline: never ask to fetch Jupyter news (its toast would also cover the screenshots).
    news = jupyter_home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    stored = {name: (ROOT / "notebooks" / name).read_bytes() for name in NOTEBOOKS}
    started = time.monotonic()
    with jupyterlab(notebooks, env, tmp_path / "jupyterlab.log") as (base, token), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            for name in NOTEBOOKS:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                state = run_all_cells(page, base, token, name)
                assert state["code"] >= 3, state
                printed = tracebacks(text for _, text in state.pop("tracebacks"))
                assert not state["errors"] and not printed, f"{name}: {state['errors']} {printed}"
                assert state["run_all"] is True and not state["unexecuted"], f"{name}: {state}"
                # What the browser drew: every table and every plotly figure of the outputs.
                drawn = rendered(page, state)
                assert state["tables"] >= 1, f"{name}: no table in the outputs: {state}"
                assert drawn["tables"] == state["tables"], f"{name}: tables drawn {drawn}, in the outputs {state}"
                # And on the page: JupyterLab draws error outputs and stderr alike as this mime type.
                stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
                shown = tracebacks(page.locator(stderr, has_text="Traceback").all_inner_texts())
                assert not shown, f"{name}: {shown}"
                if name.startswith("08"):
                    assert state["plotly"] >= 1, state
                    assert drawn["plotly"] == state["plotly"], f"{name}: figures drawn {drawn}, in the outputs {state}"
                    assert not drawn["too_wide"], f"{name}: figures wider than their output area: {drawn}"
                    figure = page.locator(".js-plotly-plot").first
                    figure.scroll_into_view_if_needed()
                    figure.locator("svg.main-svg").first.wait_for(state="visible")
                    page.wait_for_timeout(1000)   # the notebook's windowed list repaints after a scroll
                page.screenshot(path=tmp_path / f"{Path(name).stem}.png")
                assert (tmp_path / f"{Path(name).stem}.png").stat().st_size > 10_000
                page.close()
        finally:
            browser.close()
    elapsed = time.monotonic() - started
    print(f"JupyterLab browser test: {elapsed:.0f} s; screenshots in {tmp_path}")
    assert elapsed < 300, f"took {elapsed:.0f} s, over the 5-minute budget of this test"
    # Only the copies ran: the repository's notebooks stay as stored, without outputs.
    assert stored == {name: (ROOT / "notebooks" / name).read_bytes() for name in NOTEBOOKS}
