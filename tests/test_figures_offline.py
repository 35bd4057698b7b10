"""Figures that open anywhere: the HTML figures load no script from the network (the project's
own world is offline: docs/ENGINEERING.md, "The offline world"), interactive views take their
container's width while PNG/SVG keep the builder's size, and a notebook's figures also carry a
PNG for viewers without a kernel."""

from __future__ import annotations

import base64
import os
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cft_helpers.params import Figures
from cft_helpers.plots import (PLOTLYJS, ability_tradeoff_figure, chrome_available, covariance_change_figure,
                               export_size, interactive_dict, save_figures, use_notebook_renderer,
                               write_plotlyjs)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "figures").glob("*.html"))
NEED_CHROME = os.environ.get("CFT_REQUIRE_CHROME") == "1"   # set by .ci/run, which installs one


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script" and dict(attrs).get("src") is not None:
            self.src.append(dict(attrs)["src"])


def scripts(html: Path) -> _Scripts:
    parser = _Scripts()
    parser.feed(html.read_text(encoding="utf-8"))
    return parser


def network_or_missing(html: Path) -> list[str]:
    """Each ``<script src>`` of ``html`` that the network would serve (http(s), protocol-relative)
    or that names a local file that is not there."""
    bad = []
    for src in scripts(html).src:
        if src.startswith(("http:", "https:", "//")) or "://" in src:
            bad.append(f"{src} (network)")
        elif not (html.parent / src).is_file():
            bad.append(f"{src} (missing)")
    return bad


def _figure():
    return covariance_change_figure({"ALPACA -> MULTIALPACA": [1.0, 2.0, 3.0]}, title="test")


def test_the_committed_figures_load_no_script_from_the_network():
    assert len(COMMITTED) >= 7, "figures/ holds the default run's figures (notebook 08)"
    # plotly.min.js (4.6 MB) is not tracked: the installed plotly writes it, as every export does
    write_plotlyjs(COMMITTED[0].parent)
    for html in COMMITTED:
        assert network_or_missing(html) == [], html.name
        assert scripts(html).src == [PLOTLYJS], html.name   # the one shared copy, referenced relatively
        assert '"autosize":true' in html.read_text(encoding="utf-8").replace(" ", ""), html.name   # page width
    assert (ROOT / "figures" / PLOTLYJS).stat().st_size > 1_000_000   # the bundle itself, not a pointer


def test_the_check_sees_a_cdn_script_and_a_missing_local_one(tmp_path):
    save_figures({"fig": _figure()}, tmp_path, formats=["html"], plotlyjs="cdn")
    assert [s.split("/")[2] for s in scripts(tmp_path / "fig.html").src] == ["cdn.plot.ly"]
    assert network_or_missing(tmp_path / "fig.html")[0].endswith("(network)")
    (tmp_path / "local.html").write_text('<script src="plotly.min.js"></script>')
    assert network_or_missing(tmp_path / "local.html") == ["plotly.min.js (missing)"]


def test_a_figure_written_with_the_default_params_is_self_contained(tmp_path):
    import plotly

    default = Figures()
    assert default.plotlyjs == "directory"
    written = save_figures({"a": _figure(), "b": _figure()}, tmp_path, formats=["html"], plotlyjs=default.plotlyjs)
    assert [p.name for p in written["a"]] == ["a.html"]
    assert network_or_missing(tmp_path / "a.html") == [] and scripts(tmp_path / "b.html").src == [PLOTLYJS]
    assert (tmp_path / PLOTLYJS).read_text(encoding="utf-8") == plotly.offline.get_plotlyjs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", PLOTLYJS]   # one copy, no temporaries


def test_a_stale_plotlyjs_beside_the_figures_is_replaced(tmp_path):
    # plotly's own "directory" mode keeps any plotly.min.js it finds: an older plotly's would stay
    (tmp_path / PLOTLYJS).write_text("/* plotly.js of another version */")
    save_figures({"fig": _figure()}, tmp_path, formats=["html"])
    import plotly

    assert (tmp_path / PLOTLYJS).read_text(encoding="utf-8") == plotly.offline.get_plotlyjs()


def test_inline_holds_plotlyjs_in_the_file(tmp_path):
    save_figures({"fig": _figure()}, tmp_path, formats=["html"], plotlyjs="inline")
    assert scripts(tmp_path / "fig.html").src == [] and not (tmp_path / PLOTLYJS).exists()
    assert (tmp_path / "fig.html").stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="plotlyjs"):
        save_figures({"fig": _figure()}, tmp_path, plotlyjs="true")


def test_interactive_views_take_the_container_width_exports_keep_the_size(tmp_path):
    fig = ability_tradeoff_figure(
        [{"label": "start", "kind": "start", "EA": 0.5, "MA": 0.4, "from": None}],
        [{"label": "p", "kind": "phase1", "EA": 0.6, "MA": 0.3, "from": None, "model": m} for m in ("A", "B")])
    assert fig.layout.width == 520 * 3 + 140   # three panels: too wide for a notebook's column
    assert export_size(fig) == (1700, 600)
    view = interactive_dict(fig)
    assert "width" not in view["layout"] and view["layout"]["autosize"] is True and view["layout"]["height"] == 600
    assert fig.layout.width == 1700   # the figure itself is left as built
    save_figures({"fig": fig}, tmp_path, formats=["html"])
    html = (tmp_path / "fig.html").read_text(encoding="utf-8")
    assert '"width":1700' not in html.replace(" ", "") and '"autosize":true' in html.replace(" ", "")
    assert export_size({"layout": {}}) == (700, 500)   # plotly's default for a figure without a size


def _png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def restore_renderer():
    import plotly.io as pio

    before = pio.renderers.default
    yield
    pio.renderers.default = before


def test_notebook_figures_are_interactive_with_a_png_copy(restore_renderer, monkeypatch):
    import plotly.io as pio

    from cft_helpers.progress import NOTEBOOK_ENV

    fig = _figure()
    monkeypatch.delenv(NOTEBOOK_ENV, raising=False)   # JupyterLab: interactive only, no PNG to show instead
    use_notebook_renderer(png=True)
    assert set(fig._repr_mimebundle_()) == {"application/vnd.plotly.v1+json"}
    monkeypatch.setenv(NOTEBOOK_ENV, "08")            # a notebook the book executes: a PNG copy too
    if not chrome_available() and not NEED_CHROME:
        with pytest.warns(UserWarning, match="no PNG copy"):
            name = use_notebook_renderer(png=True)
        bundle = fig._repr_mimebundle_()
        assert set(bundle) == {"application/vnd.plotly.v1+json"}
    else:
        name = use_notebook_renderer(png=True)
        bundle = fig._repr_mimebundle_()   # what IPython stores in the executed notebook
        assert set(bundle) == {"application/vnd.plotly.v1+json", "image/png"}
        assert _png_size(base64.b64decode(bundle["image/png"])) == (860, 460)
    assert pio.renderers.default == name
    layout = bundle["application/vnd.plotly.v1+json"]["layout"]
    assert "width" not in layout and layout["autosize"] is True
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "scatter"
    use_notebook_renderer(png=False)   # figures.notebook_png: false
    assert set(fig._repr_mimebundle_()) == {"application/vnd.plotly.v1+json"}


def test_kaleidos_harmless_traceback_is_dropped_and_nothing_else(caplog):
    """choreographer logs "JSONError decoding message. Ignoring" with a traceback while the figure
    is written anyway; that one record is dropped, every other one of the logger still shows."""
    import logging

    from cft_helpers.plots import _quiet_kaleido

    _quiet_kaleido()
    logger = logging.getLogger("choreographer.channels.pipe")
    assert hasattr(logger, "debug2")  # still choreographer's own logger class
    with caplog.at_level(logging.INFO, logger="choreographer.channels.pipe"):
        logger.error("JSONError decoding message. Ignoring")
        logger.error("the browser closed the pipe")
    assert [r.getMessage() for r in caplog.records] == ["the browser closed the pipe"]
