"""Plotly figures of the book: one style, labelled axes, readable in JupyterLab and as HTML.

    from cft_helpers.plots import des_heatmap
    des_heatmap(des_result).show()

A builder's ``layout.width``/``height`` is the PNG/SVG export size; the interactive views (a
notebook after ``use_notebook_renderer``, the HTML files of ``save_figures``) drop the width and
take their container's. The HTML files load plotly.js from a shared ``plotly.min.js`` beside them
by default, so a figures folder opens offline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from cft_helpers.progress import NOTEBOOK_ENV

TEMPLATE = "plotly_white"
OURS, PAPER = "#1f77b4", "#7f7f7f"



class _DroppedMessage(logging.Filter):
    """choreographer 1.4 (kaleido's browser channel) logs a traceback when it reads a message it
    cannot decode, ignores it, and the figure is written all the same. Left in, that traceback
    reads like a failure in the notebooks' output; dropped, and only that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "JSONError decoding message" not in record.getMessage()


_DROPPED = _DroppedMessage()


def _quiet_kaleido() -> None:
    """Add the filter to choreographer's pipe logger, once, after choreographer made it (its
    logger class has methods a plain logging.Logger lacks: asking for the name first breaks it)."""
    try:
        import choreographer.channels.pipe  # noqa: F401  (registers the logger)
    except ImportError:  # no kaleido: nothing to quiet
        return
    logger = logging.getLogger("choreographer.channels.pipe")
    if _DROPPED not in logger.filters:
        logger.addFilter(_DROPPED)


def des_heatmap(result: dict[str, Any], title: str = "Dataset Embedding Similarity (DES)"):
    """The DES matrix of ``similarity.des_matrix`` as an annotated heatmap."""
    import plotly.graph_objects as go

    names = list(result["matrix"])
    z = [[result["matrix"][a][b] for b in names] for a in names]
    sd = result.get("sd", {})
    text = [[f"{z[i][j]:.3f}" + (f"<br>±{sd[a][b]:.3f}" if a != b and a in sd else "")
             for j, b in enumerate(names)] for i, a in enumerate(names)]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}",
                               colorscale="Blues", zmin=min(0.0, min(map(min, z))), zmax=1.0,
                               colorbar={"title": "DES"}))
    fig.update_layout(title=f"{title}<br><sup>{result['embedder']}, n={result['n']}, seed={result['seed']}, "
                            f"± bootstrap sd</sup>", template=TEMPLATE, height=420, width=520,
                      yaxis={"autorange": "reversed"})
    return fig


def similarity_vs_forgetting(ours, paper: Sequence[dict], our_change_label: str):
    """Four panels: DES and MPD (columns) against the change in English after Phase 2, for this
    run (top; ``ours`` from ``similarity.similarity_vs_forgetting``) and the paper (bottom)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    def padded(values):  # room for the point labels on both sides
        v = [float(x) for x in values]
        if not v:
            return None
        span = max(max(v) - min(v), 0.1)
        return [min(v) - 0.35 * span, max(v) + 0.35 * span]

    def sides(values):  # labels point inwards so that none runs off the panel
        v = [float(x) for x in values]
        mid = (min(v) + max(v)) / 2 if v else 0.0
        return ["top left" if x > mid else "top right" for x in v]

    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.12, vertical_spacing=0.18,
                        subplot_titles=["this run: DES", "this run: MPD (normalised)",
                                        "paper: DES (Table 3)", "paper: MPD (Table 4, Mistral-7B)"])
    for col, key in ((1, "des"), (2, "mpd")):
        sub = ours[ours[key].notna()]
        fig.add_trace(go.Scatter(x=sub[key], y=sub["english_change"], mode="markers+text", text=sub["label"],
                                 textposition=sides(sub[key]), textfont={"size": 10},
                                 marker={"size": 11, "color": OURS}, name="this run",
                                 showlegend=col == 1), row=1, col=col)
        pts = [p for p in paper if p[key] is not None]
        fig.add_trace(go.Scatter(x=[p[key] for p in pts], y=[p["ea_change"] for p in pts],
                                 mode="markers+text", text=[f"{p['model'].split('-')[0]}: {p['pair']}" for p in pts],
                                 textposition=sides([p[key] for p in pts]),
                                 textfont={"size": 9}, marker={"size": 10, "color": PAPER, "symbol": "diamond"},
                                 name="paper", showlegend=col == 1), row=2, col=col)
        fig.update_xaxes(title_text="DES (higher: more similar)" if key == "des"
                         else "MPD / max (lower: more similar)", range=padded(sub[key]), row=1, col=col)
        fig.update_xaxes(title_text="DES" if key == "des" else "MPD / max",
                         range=padded([p[key] for p in pts]), row=2, col=col)
    fig.update_yaxes(title_text=our_change_label, row=1, col=1)
    fig.update_yaxes(title_text="change in EA, P2 - P1 (lower: forgot)", row=2, col=1)
    for row in (1, 2):
        for col in (1, 2):
            fig.add_hline(y=0, line={"color": "#cccccc", "dash": "dot"}, row=row, col=col)
    fig.update_layout(template=TEMPLATE, height=720, width=980,
                      title="Does phase-wise similarity predict what Phase 2 costs in English?")
    return fig


# --------------------------------------------------------------------------- representations (07, 08)

PHASE_COLOURS = {"Phase 1": "#1f77b4", "Phase 2": "#d62728"}
KIND_COLOURS = {"start": "#7f7f7f", "phase1": "#1f77b4", "phase2": "#d62728", "mixture": "#2ca02c",
                "reverse": "#9467bd", "mitigation": "#ff7f0e"}


def layer_projection_figure(projections: dict[str, Any], title: str = ""):
    """Figure 1: the layer-mean vectors of a Phase-1 and a Phase-2 model projected together.

    ``projections``: {method: {pair_label: {"p1": name, "p2": name, "p1_xy": [[x, y], ...],
    "p2_xy": ...}}}; one row per method (t-SNE, UMAP), one column per pair."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = list(projections)
    pairs = list(next(iter(projections.values())))
    fig = make_subplots(rows=len(methods), cols=len(pairs), horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=[f"{METHOD_NAMES.get(m, m)}: {p}" for m in methods for p in pairs])
    for r, method in enumerate(methods, start=1):
        for c, pair in enumerate(pairs, start=1):
            d = projections[method][pair]
            for phase, key in (("Phase 1", "p1"), ("Phase 2", "p2")):
                xy = d[f"{key}_xy"]
                fig.add_trace(go.Scatter(
                    x=[p[0] for p in xy], y=[p[1] for p in xy], mode="markers",
                    marker={"color": PHASE_COLOURS[phase], "size": [5 + 9 * i / max(len(xy) - 1, 1) for i in range(len(xy))],
                            "opacity": 0.8, "line": {"width": 0.5, "color": "white"}},
                    name=phase, legendgroup=phase, showlegend=r == 1 and c == 1,
                    text=[f"{d[key]}, layer {i}" for i in range(len(xy))], hoverinfo="text"), row=r, col=c)
            fig.update_xaxes(showticklabels=False, row=r, col=c)
            fig.update_yaxes(showticklabels=False, row=r, col=c)
    fig.update_layout(template=TEMPLATE, height=380 * len(methods) + 60, width=480 * len(pairs) + 80,
                      title=title or "Layer-mean activations on MT-Bench prompts, before and after Phase 2"
                                     "<br><sup>one point per layer; marker size grows with depth</sup>")
    return fig


METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def covariance_change_figure(curves: dict[str, list[float]], title: str, mode: str = "per_layer",
                             highlight: str | None = None):
    """Figure 2 / D3: per layer, ||Σ_P1 - Σ_P2||_F for each arm (lines); ``literal`` mode draws
    one bar per arm. ``highlight`` (e.g. the vanilla arm) is drawn thick and dashed."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    if mode == "literal":
        fig.add_trace(go.Bar(x=list(curves), y=[v[0] for v in curves.values()],
                             marker={"color": [palette[i % len(palette)] for i in range(len(curves))]}))
        fig.update_yaxes(title_text="||Σ_P1 - Σ_P2||_F (paper's formula on X)")
    else:
        for i, (label, ys) in enumerate(curves.items()):
            fig.add_trace(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers", name=label,
                                     line={"color": palette[i % len(palette)],
                                           "width": 4 if label == highlight else 2,
                                           "dash": "dash" if label == highlight else "solid"},
                                     marker={"size": 5}))
        fig.update_xaxes(title_text="layer")
        fig.update_yaxes(title_text="||Σ_P1 - Σ_P2||_F (per-layer covariance over prompts)", type="log")
    fig.update_layout(template=TEMPLATE, height=460, width=860, title=title, legend={"title": "arm"})
    return fig


def cross_lingual_figure(panels: dict[str, dict[str, Any]], title: str = ""):
    """Figure 4: per-sentence activations on parallel sentences, one panel per model, coloured by
    language (English drawn larger, in black). ``panels``: {model: {"xy", "langs", "layer",
    "retrieval": {lang: share}}}."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(panels)
    titles = []
    for n in names:
        r = panels[n].get("retrieval") or {}
        mean = sum(r.values()) / len(r) if r else float("nan")
        titles.append(f"{n}, layer {panels[n]['layer']}: translation retrieval {mean:.2f}")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, horizontal_spacing=0.06)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a"]
    for c, n in enumerate(names, start=1):
        p = panels[n]
        langs = list(dict.fromkeys(p["langs"]))
        others = [lang for lang in langs if lang != "en"]
        for lang in ["en", *others]:
            idx = [i for i, x in enumerate(p["langs"]) if x == lang]
            fig.add_trace(go.Scatter(
                x=[p["xy"][i][0] for i in idx], y=[p["xy"][i][1] for i in idx], mode="markers", name=lang,
                legendgroup=lang, showlegend=c == 1,
                marker={"size": 10 if lang == "en" else 7, "symbol": "diamond" if lang == "en" else "circle",
                        "color": "black" if lang == "en" else palette[others.index(lang) % len(palette)],
                        "opacity": 0.85},
                text=[f"{lang} #{j}" for j in range(len(idx))], hoverinfo="text"), row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
        fig.update_yaxes(showticklabels=False, row=1, col=c)
    fig.update_layout(template=TEMPLATE, height=520, width=560 * len(names) + 120, legend={"title": "language"},
                      title=title or "Parallel sentences: English vs other languages (t-SNE of one layer)")
    return fig


def ability_tradeoff_figure(ours: Sequence[dict], paper: Sequence[dict]):
    """EA against MA for every arm of this run (first panel) and the paper's published points,
    one panel per paper model (their scales differ from ours: compare where the arms fall
    relative to each other, not the values).

    Each point: {"label", "kind" (start, phase1, phase2, mixture, reverse, mitigation), "EA", "MA",
    "from": (EA, MA) of the model it was trained from, or None}; paper points carry "model", and
    a "note" where the paper misprinted them (drawn as crosses, the note in the hover text).
    Arrows join a Phase-2 (or reverse second-phase) model to its Phase-1 model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    models = list(dict.fromkeys(p["model"] for p in paper))
    panels = [("this run", list(ours))] + [(f"paper: {m}", [p for p in paper if p["model"] == m]) for m in models]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.07,
                        subplot_titles=[t for t, _ in panels])
    shown = set()
    for col, (_, points) in enumerate(panels, start=1):
        for kind, colour in KIND_COLOURS.items():
            pts = [p for p in points if p["kind"] == kind]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[p["EA"] for p in pts], y=[p["MA"] for p in pts], mode="markers+text",
                text=[p["label"] for p in pts], textposition="top center", textfont={"size": 9, "color": colour},
                # a point with a "note" (a paper misprint: printed and recomputed) is drawn as a cross
                marker={"color": colour, "size": 10, "line": {"width": 0.5, "color": "white"},
                        "symbol": ["x" if p.get("note") else "circle" for p in pts]},
                hovertext=[f"{p['label']}: EA {p['EA']:.3f}, MA {p['MA']:.3f}"
                           + (f"<br>{p['note']}" if p.get("note") else "") for p in pts], hoverinfo="text",
                name=kind, legendgroup=kind, showlegend=kind not in shown), row=1, col=col)
            shown.add(kind)
        axis = "" if col == 1 else str(col)
        for p in points:
            if p.get("from") and p["kind"] in ("phase2", "reverse"):
                fig.add_annotation(x=p["EA"], y=p["MA"], ax=p["from"][0], ay=p["from"][1], xref=f"x{axis}",
                                   yref=f"y{axis}", axref=f"x{axis}", ayref=f"y{axis}", showarrow=True, text="",
                                   arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#999999")
        fig.update_xaxes(title_text="English Ability (EA)", row=1, col=col)
        fig.update_yaxes(title_text="Multilingual Ability (MA)" if col == 1 else None, row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=520, width=520 * len(panels) + 140, legend={"title": "arm kind"},
                      title="English against multilingual ability for every arm<br><sup>arrows: Phase 1 -> "
                            "Phase 2; mitigations start from the Instruct Phase-1 model</sup>")
    return fig


def representation_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """Figures 1, 2, D3 and 4 from ``representations.save_representation_summary``'s record, by stable name."""
    mode = summary.get("covariance_mode", "per_layer")
    which = "per-layer covariance of per-prompt means" if mode == "per_layer" else "the paper's formula on X"
    figs = {"fig1_layer_projections": layer_projection_figure(summary["projections"])}
    figs["fig2_covariance_change"] = covariance_change_figure(
        summary["phase2_covariance"], mode=mode,
        title=f"Change in representation covariance, Phase 1 -> Phase 2 (MT-Bench prompts)<br><sup>{which}</sup>")
    if summary.get("mitigation_covariance"):
        vanilla = next((k for k in summary["mitigation_covariance"] if k.startswith("vanilla")), None)
        figs["figD3_covariance_change_mitigations"] = covariance_change_figure(
            summary["mitigation_covariance"], mode=mode, highlight=vanilla,
            title=f"Change in representation covariance under each mitigation (Phase 2 from the same start)"
                  f"<br><sup>{which}; dashed: vanilla Phase 2</sup>")
    if summary.get("cross_lingual"):
        figs["fig4_cross_lingual"] = cross_lingual_figure(summary["cross_lingual"])
    return figs


# --------------------------------------------------------------------------- export


def chrome_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium to render PNG and SVG."""
    import shutil

    if os.environ.get("BROWSER_PATH") and Path(os.environ["BROWSER_PATH"]).exists():
        return True
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def interactive_dict(fig) -> dict[str, Any]:
    """The figure as a dict for the interactive views (notebook, HTML): without its fixed width, so
    that it takes its container's width (a fixed one cut the third panel of ``ea_vs_ma_tradeoff``
    off in JupyterLab). The builders' ``layout.width`` stays the PNG/SVG export width."""
    d = fig if isinstance(fig, dict) else fig.to_dict()
    d = {**d, "layout": {k: v for k, v in (d.get("layout") or {}).items() if k != "width"}}
    d["layout"]["autosize"] = True
    return d


def export_size(fig) -> tuple[int, int]:
    """(width, height) of the PNG/SVG export: the builder's layout size, plotly's default else."""
    layout = (fig if isinstance(fig, dict) else fig.to_dict()).get("layout") or {}
    return int(layout.get("width") or 700), int(layout.get("height") or 500)


PLOTLYJS = "plotly.min.js"   # the name plotly's include_plotlyjs="directory" refers to


def write_plotlyjs(directory: Path | str) -> Path:
    """The plotly.js bundle of the installed plotly as ``<directory>/plotly.min.js``, rewritten
    when it differs: plotly's own "directory" mode only writes a missing one, so a copy left by
    an older plotly would silently draw the new figures with an old plotly.js."""
    from plotly.offline import get_plotlyjs

    path = Path(directory) / PLOTLYJS
    bundle = get_plotlyjs().encode("utf-8")
    if not path.exists() or path.read_bytes() != bundle:
        tmp = path.with_name(f".{PLOTLYJS}.tmp")
        tmp.write_bytes(bundle)
        os.replace(tmp, path)
    return path


def save_figures(figures: dict[str, Any], directory: Path | str, formats: Sequence[str] = ("html", "png", "svg"),
                 plotlyjs: str = "directory", scale: float = 2.0) -> dict[str, list[Path]]:
    """Write each figure as ``<directory>/<name>.<format>``; stable names, atomic writes.

    HTML is always written, at the page's width; ``plotlyjs`` "directory" (the default: one
    shared ``plotly.min.js`` beside the HTML files, referenced relatively, rather than its
    ~4.8 MB inlined into each file; the folder opens offline), "inline" or "cdn" (needs network
    to view). PNG and SVG, at the builder's fixed size, need a Chrome (Debian: ``apt-get install
    chromium``); without one they are skipped with a warning, never half-written. Returns
    name -> files (``plotly.min.js`` is not listed: it belongs to no one figure)."""
    import warnings

    import plotly.io as pio

    if plotlyjs not in ("directory", "inline", "cdn"):
        raise ValueError(f"plotlyjs must be 'directory', 'inline' or 'cdn', not {plotlyjs!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {name: [] for name in figures}
    if "html" in formats and figures and plotlyjs == "directory":
        write_plotlyjs(directory)   # before the HTML: plotly then finds it and writes no copy itself
    for name, fig in figures.items():
        if "html" in formats:
            path = directory / f"{name}.html"
            tmp = directory / f".{name}.tmp.html"
            pio.write_html(interactive_dict(fig), tmp, include_plotlyjs=plotlyjs if plotlyjs != "inline" else True,
                           full_html=True)
            os.replace(tmp, path)
            written[name].append(path)
    static = [f for f in formats if f in ("png", "svg")]
    if static and not chrome_available():
        warnings.warn(f"no Chrome/Chromium found: {static} not written (HTML only). Install one "
                      "(Debian: apt-get install chromium) or set BROWSER_PATH.", stacklevel=2)
        return written
    for fmt in static:
        names = list(figures)
        tmps = [directory / f".{n}.tmp.{fmt}" for n in names]
        # one browser session for all figures of a format: much faster than one per figure
        figs = [figures[n] for n in names]
        # the batch writer ignores layout sizes unless given: pass each figure's own
        sizes = [export_size(f) for f in figs]
        _quiet_kaleido()
        pio.write_images(figs, tmps, format=fmt, scale=scale if fmt == "png" else 1,
                         width=[w for w, _ in sizes], height=[h for _, h in sizes])
        for n, tmp in zip(names, tmps):
            os.replace(tmp, directory / f"{n}.{fmt}")
            written[n].append(directory / f"{n}.{fmt}")
    return written


# --------------------------------------------------------------------------- notebook display


NOTEBOOK_RENDERER = "cft_notebook"


def _notebook_renderer_class():
    from plotly.io.base_renderers import MimetypeRenderer, PlotlyRenderer

    class NotebookRenderer(MimetypeRenderer):
        """The interactive figure at its container's width (JupyterLab, VS Code: plotly's own
        mimetype, which they rank first) and, with ``png``, the same figure as a PNG at its
        export size, which viewers without a kernel (GitHub, nbviewer) show instead."""

        def __init__(self, png: bool):
            self.png = png

        def to_mimebundle(self, fig_dict):
            import base64

            import plotly.io as pio

            bundle = PlotlyRenderer().to_mimebundle(interactive_dict(fig_dict))
            if self.png:
                width, height = export_size(fig_dict)
                _quiet_kaleido()
                png = pio.to_image(fig_dict, format="png", width=width, height=height, scale=1, validate=False)
                bundle["image/png"] = base64.b64encode(png).decode("ascii")
            return bundle

    return NotebookRenderer


def use_notebook_renderer(png: bool = True) -> str:
    """Show every plotly figure of this kernel through ``NotebookRenderer``: interactive at the
    container's width, plus a PNG copy with ``png`` (``figures.notebook_png``) where a Chrome is
    found (without one: a warning, interactive only). A notebook calls it once; returns the
    renderer's name, now ``plotly.io.renderers.default``.

    The PNG copy is for the notebooks the book executes (``CFT_NOTEBOOK`` set): their copies in
    the run store are what GitHub and nbviewer show. In JupyterLab it is left out: given both,
    the jupyterlab-plotly extension shows the PNG at export size until the mouse enters it."""
    import warnings

    import plotly.io as pio

    png = png and bool(os.environ.get(NOTEBOOK_ENV))
    if png and not chrome_available():
        warnings.warn("no Chrome/Chromium found: the notebook's figures carry no PNG copy (viewers without "
                      "a kernel show none). Install one (Debian: apt-get install chromium) or set BROWSER_PATH.",
                      stacklevel=2)
        png = False
    pio.renderers[NOTEBOOK_RENDERER] = _notebook_renderer_class()(png)
    pio.renderers.default = NOTEBOOK_RENDERER
    return NOTEBOOK_RENDERER


def written_files(written: dict[str, list[Path]]) -> dict[str, list[str]]:
    """``save_figures``'s result as figure -> file names."""
    return {name: [p.name for p in paths] for name, paths in written.items()}


def written_table(written: dict[str, list[Path]]):
    """``save_figures``'s result as a one-column DataFrame: figure -> formats written."""
    import pandas as pd

    return pd.DataFrame({name: ", ".join(p.suffix[1:] for p in paths) for name, paths in written.items()},
                        index=["written"]).T
