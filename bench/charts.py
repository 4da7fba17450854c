"""Charts of the benchmark's figures, as PNG files for the README.

`write_charts` draws two figures from the rows `make bench` measures. The first shows
the rate of `POST /api/user/sms` in each configuration beside the bare Flask reference,
with every round as a dot, and the p50 and p99 latencies beside their goal. The second
shows, for each broker and sandbox latency, the worker's hand-off beside a no-op task
and the floor (one POST to the sandbox). Each figure names the machine in a footer, so
that a reader knows where its figures come from.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

API_GOAL = 0.55  # of the reference's rate
P99_GOAL_MS = 50.0
FLOOR_GOAL = 0.80  # of the floor's rate
SIZE = (11, 4.5)
DPI = 110
GOAL_STYLE = {"color": "crimson", "linestyle": "--", "linewidth": 1.2}
# Labels on a white ground, so that a goal line crossing them does not strike them through.
LABEL_STYLE = {"fontsize": 8, "bbox": {"facecolor": "white", "edgecolor": "none", "pad": 1}}


def write_charts(
    api_rows: list[dict], handoff_rows: list[dict], folder: Path, *, machine: str
) -> list[Path]:
    """Write api.png and handoff.png into `folder`, creating it if missing; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw, rows in (
        ("api.png", _api_chart, api_rows),
        ("handoff.png", _handoff_chart, handoff_rows),
    ):
        figure = plt.figure(figsize=SIZE)
        try:
            draw(figure, rows)
            figure.text(0.01, 0.015, machine, fontsize=8, color="dimgray")
            figure.tight_layout(rect=(0, 0.04, 1, 1))
            paths.append(folder / name)
            figure.savefig(paths[-1], dpi=DPI)
        finally:
            plt.close(figure)
    return paths


def _api_chart(figure: Figure, rows: list[dict]) -> None:
    """Draw the rates beside the reference's (left) and the latencies beside their goal."""
    rates, latencies = figure.subplots(1, 2, sharey=True, width_ratios=[3, 2])
    reference = rows[0]["rate"]
    places = range(len(rows))
    rates.barh(places, [row["rate"] for row in rows], color="steelblue", height=0.6)
    for place, row in zip(places, rows, strict=True):
        rates.plot(row["rounds"], [place] * len(row["rounds"]), "o", color="black", markersize=3)
        rates.text(
            max(row["rate"], *row["rounds"]) + reference * 0.02,
            place,
            f"{row['rate']:,.0f} req/s ({row['rate'] / reference:.0%})",
            va="center",
            **LABEL_STYLE,
        )
    rates.plot([], [], "o", color="black", markersize=3, label="rounds")
    rates.axvline(reference * API_GOAL, label="goal: 55% of the reference", **GOAL_STYLE)
    rates.set_xlim(0, max(max(row["rate"], *row["rounds"]) for row in rows) * 1.4)
    rates.set_yticks(list(places), [textwrap.fill(row["what"], 20) for row in rows], fontsize=8)
    rates.invert_yaxis()
    rates.set_xlabel("requests/s (median of the rounds)")

    height = 0.38
    for offset, key, color in (
        (-height / 2, "p50", "lightsteelblue"),
        (height / 2, "p99", "slategray"),
    ):
        bars = latencies.barh(
            [place + offset for place in places],
            [row[key] for row in rows],
            height=height,
            color=color,
            label=key,
        )
        latencies.bar_label(bars, fmt="%.1f", padding=2, **LABEL_STYLE)
    latencies.axvline(P99_GOAL_MS, label="p99 goal: 50 ms", **GOAL_STYLE)
    latencies.set_xlim(0, max(P99_GOAL_MS, *(row["p99"] for row in rows)) * 1.2)
    latencies.set_xlabel("latency, ms")
    for axes in (rates, latencies):
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=3, fontsize=8, frameon=False)


def _handoff_chart(figure: Figure, rows: list[dict]) -> None:
    """Draw, per setting, the no-op task, the floor and the hand-off, with the hand-off's goal.

    The hand-off's rate and its ratio to the floor are written inside its bar, where the
    goal line, drawn near the top of the bar, does not cross them while the bar is tall enough.
    """
    axes = figure.subplots()
    width = 0.26
    kinds = (
        ("noop", "no-op Celery task", "lightgray"),
        ("floor", "floor: one POST to the sandbox", "darkgray"),
        ("send", "gateway hand-off", "sandybrown"),
    )
    for number, (key, label, color) in enumerate(kinds):
        bars = axes.bar(
            [place + (number - 1) * width for place in range(len(rows))],
            [row[key] for row in rows],
            width=width,
            color=color,
            label=label,
        )
        if key != "send":
            axes.bar_label(bars, fmt="{:,.0f}", padding=2, fontsize=8)
    for place, row in enumerate(rows):
        axes.hlines(
            row["floor"] * FLOOR_GOAL,
            place - width / 2,
            place + width * 1.5,
            label="goal: 80% of floor" if place == 0 else None,
            **GOAL_STYLE,
        )
        axes.text(
            place + width,
            row["send"] / 2,
            f"{row['send']:,.0f}\n{row['send'] / row['floor']:.0%}\nof floor",
            ha="center",
            va="center",
            fontsize=8,
        )
    axes.set_xticks(range(len(rows)), [row["what"] for row in rows])
    axes.set_ylim(0, max(max(row["noop"], row["floor"], row["send"]) for row in rows) * 1.12)
    axes.set_ylabel("messages/s")
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=4, fontsize=8, frameon=False)
