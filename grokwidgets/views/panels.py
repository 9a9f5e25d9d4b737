"""The panels of widgets and report as Vega-Lite specs (Altair) over named datasets.

Each panel reads named datasets (``{"name": "loss"}``) so the front end can stream rows into
them with Vega changesets; :func:`inline_spec` fills them in for the static forms (PNG and
self-contained HTML). The step axis is :func:`~grokwidgets.views.charts.step_axis`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from grokwidgets.diagnostics.phases import PHASES
from grokwidgets.views.charts import step_axis
from grokwidgets.views.frame import Table
from grokwidgets.views.lazy_altair import alt
from grokwidgets.views.story import SHADED_PHASES, STORY_DATASETS

#: Width and height of one chart, in pixels.
WIDTH, HEIGHT = 360, 200

#: Fill of each phase band (:data:`~grokwidgets.views.story.SHADED_PHASES`).
PHASE_COLORS: dict[str, str] = {
    "memorization": "#f4a261",
    "grokking": "#8e7cc3",
    "generalized": "#2a9d8f",
    "anti-grokking": "#e63946",
}

#: Datasets that annotate a panel (the step cursor, the story) rather than hold its rows.
OVERLAYS: tuple[str, ...] = ("cursor", *STORY_DATASETS)


def _data(name: str) -> alt.Data:
    return alt.Data(name=name)


def _series(name: str, title: str, y: alt.Y, *, interpolate: Any = "linear") -> alt.Chart:
    return (
        alt.Chart(_data(name), title=title)
        .mark_line(interpolate=interpolate, clip=True)
        .encode(
            x=step_axis(),
            y=y,
            color=alt.Color("series:N", title=None),
            tooltip=["step:Q", "series:N", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=WIDTH, height=HEIGHT)
    )


def _cursor(chart: Any, cursor: bool) -> Any:
    if not cursor:
        return chart
    rule = alt.Chart(_data("cursor")).mark_rule(color="#888", strokeDash=[4, 3]).encode(x="step:Q")
    return alt.layer(chart, rule)


def _story(chart: Any) -> alt.TopLevelMixin:
    """``chart`` over the phase bands, with the time-to-grok rule and the labels of both.

    The bands read ``phase_spans`` (columns phase, start, end), the rule ``grok_marks``
    (step, text): the datasets of :mod:`grokwidgets.views.story`. Neither has a legend (an
    empty one would break the static PNG); each band and the rule carry their name as text.
    A band starting at step 0 is drawn from step 1, where the log-step axis starts.
    """
    x = alt.X("x0:Q", scale=alt.Scale(type="log", domainMin=1), title="step (log)")
    spans = (
        alt.Chart(_data("phase_spans"))
        .transform_filter("datum.end >= 1")
        .transform_calculate(x0="max(datum.start, 1)")
    )
    fill = alt.Fill(
        "phase:N",
        scale=alt.Scale(domain=list(SHADED_PHASES), range=[PHASE_COLORS[p] for p in SHADED_PHASES]),
        legend=None,
    )
    bands = spans.mark_rect(opacity=0.2, clip=True).encode(
        x=x,
        x2="end:Q",
        fill=fill,
        tooltip=[
            alt.Tooltip("phase:N"),
            alt.Tooltip("start:Q", format=",d"),
            alt.Tooltip("end:Q", format=",d"),
        ],
    )
    # Rotated to read upwards: a name never spills over the next band's.
    names = spans.mark_text(
        angle=270, align="left", baseline="top", dy=2, y=HEIGHT - 3, fontSize=9, color="#555"
    ).encode(x=x, text="phase:N")
    marks = alt.Chart(_data("grok_marks"))
    rule = marks.mark_rule(color="#333", strokeWidth=1.5).encode(
        x="step:Q", tooltip=[alt.Tooltip("text:N", title="time to grok")]
    )
    text = marks.mark_text(
        angle=270, align="right", baseline="bottom", dy=-2, y=3, fontSize=10, color="#333"
    ).encode(x="step:Q", text="text:N")
    return alt.layer(bands, names, chart, rule, text)


def _log(title: str) -> alt.Y:
    return alt.Y("value:Q", scale=alt.Scale(type="log"), title=title)


def _lin(title: str, domain: list[float] | None = None) -> alt.Y:
    scale = alt.Scale(domain=domain) if domain else alt.Undefined
    return alt.Y("value:Q", scale=scale, title=title)


def loss_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Train and test loss over steps, log–log, over the run's phase bands and time to grok."""
    return _cursor(_story(_series("loss", "loss", _log("loss"))), cursor)


def accuracy_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Train and test accuracy over steps, over the run's phase bands and time to grok."""
    return _cursor(_story(_series("accuracy", "accuracy", _lin("accuracy", [0, 1]))), cursor)


def representation_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Linear-probe test accuracy per layer against the model's, and readout misalignment."""
    probes = _series("probe_acc", "probe accuracy per layer", _lin("test accuracy", [0, 1]))
    mis = _series("misalignment", "readout misalignment", _lin("probe − model accuracy"))
    return alt.hconcat(_cursor(probes, cursor), _cursor(mis, cursor))


def kernel_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Kernel–label alignment and kernel velocity over steps; kernel spectrum now."""
    align = _series("ntk_alignment", "kernel–label alignment", _lin("alignment"))
    vel = _series("ntk_velocity", "kernel velocity", _lin("velocity"))
    spec = (
        alt.Chart(_data("kernel_spectrum"), title="kernel spectrum")
        .mark_line(point=True)
        .encode(
            x=alt.X("rank:Q", scale=alt.Scale(type="log"), title="rank"),
            y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="eigenvalue"),
            color=alt.Color("layer:N", title=None),
            tooltip=["layer:N", "rank:Q", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=WIDTH, height=HEIGHT)
    )
    return alt.hconcat(_cursor(align, cursor), _cursor(vel, cursor), spec)


def spectral_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """HTSR α per layer (α = 2 and α = 6 marked), the current ESD with its fit, trap count."""
    band = (
        alt.Chart(alt.Data(values=[{"lo": 2.0, "hi": 6.0}]))
        .mark_rect(opacity=0.12, color="#2a9d8f")
        .encode(y=alt.Y("lo:Q"), y2="hi:Q")
    )
    rules = (
        alt.Chart(alt.Data(values=[{"a": 2.0}, {"a": 6.0}]))
        .mark_rule(color="#2a9d8f", strokeDash=[2, 2])
        .encode(y="a:Q")
    )
    alpha = alt.layer(
        band, rules, _series("alpha", "HTSR α per layer (band: 2 ≤ α ≤ 6)", _lin("α"))
    )
    esd_x = alt.X("lam:Q", scale=alt.Scale(type="log"), title="eigenvalue λ of WᵀW")
    esd_y = alt.Y("density:Q", scale=alt.Scale(type="log"), title="density")
    hist = (
        alt.Chart(_data("esd"))
        .mark_line(interpolate="step", point=alt.OverlayMarkDef(size=10))
        .encode(x=esd_x, y=esd_y, color=alt.Color("layer:N", title=None))
    )
    fit = (
        alt.Chart(_data("esd_fit"))
        .mark_line(strokeDash=[6, 3])
        .encode(x="lam:Q", y="density:Q", color="layer:N", detail="layer:N")
    )
    marks = (
        alt.Chart(_data("esd_marks"))
        .mark_rule()
        .encode(
            x="x:Q",
            color="layer:N",
            strokeDash=alt.StrokeDash("kind:N", title=None),
            tooltip=["layer:N", "kind:N", alt.Tooltip("x:Q", format=".4g")],
        )
    )
    esd = alt.layer(hist, fit, marks, title="ESD (power law, xmin, MP edge)").properties(
        width=WIDTH, height=HEIGHT
    )
    traps = _series("traps", "correlation traps", _lin("traps"), interpolate="step-after")
    return alt.hconcat(_cursor(alpha, cursor), esd, _cursor(traps, cursor)).resolve_scale(
        color="independent", strokeDash="independent"
    )


def li2_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Li₂ stage (lazy / independent / interactive), G_F structure, Fourier concentration."""
    stage_axis = alt.Axis(
        values=[0, 1, 2],
        labelExpr="['lazy', 'independent', 'interactive'][datum.value] || ''",
    )
    stage = _series(
        "li2_stage",
        "Li₂ stage",
        alt.Y("value:Q", scale=alt.Scale(domain=[0, 2]), axis=stage_axis, title=None),
        interpolate="step-after",
    )
    structure = _series("li2_structure", "back-propagated gradient G_F", _lin("ratio"))
    fourier = _series(
        "fourier", "Fourier concentration (first layer)", _lin("top-frequency share", [0, 1])
    )
    return alt.hconcat(
        _cursor(stage, cursor), _cursor(structure, cursor), _cursor(fourier, cursor)
    ).resolve_scale(color="independent")


def compress_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Compression factor over steps (test rows) and the pruning curves at one step."""
    factor = _series("compression", "compression factor (test)", _log("× fewer parameters"))
    curve = (
        alt.Chart(_data("prune_curve"), title="pruning curves (test loss)")
        .mark_line(point=True)
        .encode(
            x=alt.X("fraction:Q", title="fraction of parameters pruned"),
            y=alt.Y("loss:Q", scale=alt.Scale(type="log"), title="test loss"),
            color=alt.Color("method:N", title=None),
            tooltip=["method:N", alt.Tooltip("fraction:Q", format=".3g"), "loss:Q"],
        )
        .properties(width=WIDTH, height=HEIGHT)
    )
    return alt.hconcat(_cursor(factor, cursor), curve).resolve_scale(color="independent")


def infogeo_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Path length in parameter (Fisher) and output space; straightness of consecutive steps."""
    path = _series("path_length", "path length", _lin("length"))
    straight = _series(
        "straightness", "straightness sᵀFs′ / √(sᵀFs · s′ᵀFs′)", _lin("cosine", [-1, 1])
    )
    return alt.hconcat(_cursor(path, cursor), _cursor(straight, cursor)).resolve_scale(
        color="independent"
    )


def comparative_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """Activation sparsity, normalized absolute weight entropy and circuit complexity."""
    charts = [
        _series("sparsity", "activation sparsity", _lin("share of zero activations", [0, 1])),
        _series("weight_entropy", "absolute weight entropy (normalized)", _lin("entropy / ln n")),
        _series("circuit", "circuit complexity (KL after ablation)", _lin("KL")),
    ]
    return alt.hconcat(*(_cursor(c, cursor) for c in charts))


def phases_chart(cursor: bool = False) -> alt.TopLevelMixin:
    """The online detector's phase (no test data used) and its flags over steps."""
    names = "[" + ", ".join(f"'{p}'" for p in PHASES) + "]"
    phase_axis = alt.Axis(values=list(range(len(PHASES))), labelExpr=f"{names}[datum.value] || ''")
    phase = _series(
        "phase",
        "phase (online detector)",
        alt.Y(
            "value:Q",
            scale=alt.Scale(domain=[0, len(PHASES) - 1]),
            axis=phase_axis,
            title=None,
        ),
        interpolate="step-after",
    )
    flags = _series(
        "phase_flags",
        "detector flags",
        alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(values=[0, 1]), title="on"),
        interpolate="step-after",
    )
    return alt.hconcat(_cursor(phase, cursor), _cursor(flags, cursor)).resolve_scale(
        color="independent"
    )


@dataclass(frozen=True)
class Panel:
    """A panel: its id, title, datasets, the names that make it appear, its chart."""

    id: str
    title: str
    datasets: tuple[str, ...]
    names: tuple[str, ...]  # metric or array names; the panel shows when any is known
    chart: Callable[[bool], alt.TopLevelMixin]


PANELS: tuple[Panel, ...] = (
    Panel("loss", "loss", ("loss", *STORY_DATASETS), ("train_loss", "test_loss"), loss_chart),
    Panel(
        "accuracy",
        "accuracy",
        ("accuracy", *STORY_DATASETS),
        ("train_acc", "test_acc"),
        accuracy_chart,
    ),
    Panel(
        "representation",
        "representation / readout",
        ("probe_acc", "misalignment"),
        ("probe_test_acc", "readout_misalignment"),
        representation_chart,
    ),
    Panel(
        "kernel",
        "kernel",
        ("ntk_alignment", "ntk_velocity", "kernel_spectrum"),
        ("ntk_alignment", "ntk_velocity", "kernel_spectrum"),
        kernel_chart,
    ),
    Panel(
        "spectral",
        "spectral (HTSR)",
        ("alpha", "esd", "esd_fit", "esd_marks", "traps"),
        ("htsr_alpha", "spectrum", "htsr_num_traps"),
        spectral_chart,
    ),
    Panel(
        "li2",
        "feature emergence (Li₂)",
        ("li2_stage", "li2_structure", "fourier"),
        ("li2_stage", "li2_grad_alignment", "fourier_concentration_mean"),
        li2_chart,
    ),
    Panel(
        "compress",
        "compressibility",
        ("compression", "prune_curve"),
        ("test_compression_factor", "fisher_prune_fraction"),
        compress_chart,
    ),
    Panel(
        "infogeo",
        "information geometry",
        ("path_length", "straightness"),
        ("fisher_path_length", "output_path_length", "fisher_straightness"),
        infogeo_chart,
    ),
    Panel(
        "comparative",
        "comparators",
        ("sparsity", "weight_entropy", "circuit"),
        ("activation_sparsity", "abs_weight_entropy_norm", "circuit_complexity"),
        comparative_chart,
    ),
    Panel(
        "phases",
        "phases (online detector)",
        ("phase", "phase_flags"),
        ("phase_code", "phase_collapse_warning"),
        phases_chart,
    ),
)


def panels_for(names: Iterable[str]) -> list[Panel]:
    """The panels that show something of the recorded/declared ``names``."""
    known = set(names)
    return [p for p in PANELS if known.intersection(p.names)]


def panel_spec(panel: Panel, cursor: bool = False) -> dict[str, Any]:
    """Vega-Lite spec (dict) of ``panel``; its datasets are referenced by name, left empty."""
    spec: dict[str, Any] = panel.chart(cursor).to_dict()
    spec["usermeta"] = {
        "panel": panel.id,
        "title": panel.title,
        "overlays": sorted(set(OVERLAYS) & dataset_names(spec)),
    }
    return spec


def inline_spec(spec: dict[str, Any], tables: dict[str, Table]) -> dict[str, Any]:
    """``spec`` with its named datasets filled with ``tables`` (for static rendering)."""
    datasets = dict(spec.get("datasets", {}))
    for name in _names(spec):
        datasets[name] = _records(tables.get(name, {}))
    empty = {name for name in _names(spec) if not datasets[name]}
    out = _without_empty_legends(spec, empty) if empty else dict(spec)
    out["datasets"] = datasets
    return out


def _without_empty_legends(obj: Any, empty: set[str]) -> Any:
    # An empty colour legend makes vl-convert's PNG fail ("SVG has an invalid size").
    if isinstance(obj, list):
        return [_without_empty_legends(v, empty) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _without_empty_legends(v, empty) for k, v in obj.items()}
    data, enc = out.get("data"), out.get("encoding")
    if isinstance(data, dict) and data.get("name") in empty and isinstance(enc, dict):
        for channel in ("color", "strokeDash"):
            if isinstance(enc.get(channel), dict):
                enc[channel] = {**enc[channel], "legend": None}
    return out


def _records(table: Table) -> list[dict[str, Any]]:
    keys = list(table)
    cols = [table[k].tolist() for k in keys]
    return [dict(zip(keys, row, strict=True)) for row in zip(*cols, strict=True)]


def _names(obj: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(obj, dict):
        data = obj.get("data")
        if isinstance(data, dict) and set(data) == {"name"}:
            found.add(str(data["name"]))
        for v in obj.values():
            found |= _names(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _names(v)
    return found


def dataset_names(spec: dict[str, Any]) -> set[str]:
    """Names of the datasets ``spec`` reads."""
    return _names(spec)
