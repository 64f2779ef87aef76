"""View models of the app's pages: their controls and defaults, the review page, a round's
progress and outcome, and the lines of text the pages show. Pure functions over plain data."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labeltool.config import ExportConfig
from labeltool.suggest.propose import Suggestion
from labeltool.ui.cards import Button, Card, batch_buttons, suggestion_card
from labeltool.ui.queue import ORDERS, PrecisionEstimate, filter_sort, page_of
from labeltool.ui.settings import Control

ALL_CLASSES = "all classes"
PAGE_SIZES = (12, 24, 48, 96)
DEFAULT_PAGE_SIZE = 48
REVIEW_ORDERS = ORDERS[:2]  # "high first", "low first"
COLOR_BY = ("label", "source", "confidence")
DISPUTE_SPACES = ("embedding", "backbone")
DISPUTE_K, DISPUTE_SHARE = 5, 0.6
DISPUTED_SHOWN = 24
EXPORT_OPTIONS = (("dataset", "Dataset", None), ("model", "Model", None),
                  ("include_pseudo", "Include unreviewed labels", None),
                  ("link", "Hard links", "link instead of copying where possible"), ("overwrite", "Overwrite", None))


# ---------------------------------------------------------------------------- controls
def review_controls(classes: Sequence[str]) -> tuple[Control, ...]:
    """Class filter, sort order and page size of the Review page."""
    return (
        Control("filter_class", "Class", "choice", ALL_CLASSES, choices=(ALL_CLASSES, *classes)),
        Control("order", "Sort by confidence", "radio", REVIEW_ORDERS[0], choices=REVIEW_ORDERS),
        Control("page_size", "Per page", "choice", DEFAULT_PAGE_SIZE, choices=PAGE_SIZES),
    )


def explore_controls() -> tuple[Control, ...]:
    """The Explore page's colouring."""
    return (Control("color_by", "Colour by", "segmented", COLOR_BY[0], choices=COLOR_BY),)


def dataset_controls() -> tuple[Control, ...]:
    """Where neighbours are looked up, how many vote, and the share against a label that disputes it."""
    return (
        Control("dispute_space", "Neighbours in", "radio", DISPUTE_SPACES[0], choices=DISPUTE_SPACES,
                help="the learned embedding, or the pretrained backbone features (never trained on the labels)"),
        Control("dispute_k", "Neighbours that vote", "slider", DISPUTE_K, 3, 15),
        Control("dispute_share", "Share of votes against the label", "slider", DISPUTE_SHARE, 0.5, 1.0, step=0.05),
    )


def export_controls() -> tuple[Control, ...]:
    """The export options, with the defaults of :class:`labeltool.config.ExportConfig`."""
    defaults = ExportConfig()
    return tuple(Control(f"ex_{name}", label, "bool", getattr(defaults, name), help=help_)
                 for name, label, help_ in EXPORT_OPTIONS)


def export_options(values: Mapping[str, Any]) -> dict[str, bool]:
    """Keyword arguments of an export from the values of :func:`export_controls`."""
    return {name: bool(values[f"ex_{name}"]) for name, _, _ in EXPORT_OPTIONS}


# ---------------------------------------------------------------------------- Review
@dataclass(frozen=True)
class ReviewPage:
    """One page of the review queue.

    ``shown``: the page's suggestions; ``waiting``: suggestions that pass the filter; ``page``:
    the page shown (0-based, clamped to ``pages``); ``labeled``: labeled images in the project."""

    shown: list[Suggestion]
    waiting: int
    pages: int
    page: int
    labeled: int
    precision: PrecisionEstimate
    cards: tuple[Card, ...]

    @property
    def precision_text(self) -> str:
        """The estimated precision as a percentage (a dash for an empty page)."""
        return "–" if not self.shown else f"{self.precision.value:.0%}"

    @property
    def metrics(self) -> list[tuple[str, Any, str | None]]:
        """``(label, value, help)`` of the counts above the page."""
        return [("Labeled", self.labeled, None), ("Awaiting review", self.waiting, None),
                ("Estimated precision (shown)", self.precision_text, self.precision.basis)]

    @property
    def buttons(self) -> tuple[Button, ...]:
        """The batch actions on the shown suggestions."""
        return batch_buttons(self.shown)


def class_filter(choice: str | None, classes: Sequence[str]) -> int | None:
    """The class id a filter choice names (None = every class)."""
    return None if choice in (None, ALL_CLASSES) else list(classes).index(choice)


def review_page(pending: Sequence[Suggestion], classes: Sequence[str], values: Mapping[str, Any], page_number: int,
                *, labeled: int, precision: Callable[[list[Suggestion]], PrecisionEstimate]) -> ReviewPage:
    """The page ``page_number`` (1-based, clamped) of ``pending`` under the Review controls' ``values``."""
    queue = filter_sort(pending, class_filter(values.get("filter_class"), classes),
                        values.get("order", REVIEW_ORDERS[0]))
    shown, pages, page = page_of(queue, int(page_number) - 1, int(values.get("page_size", DEFAULT_PAGE_SIZE)))
    return ReviewPage(shown, len(queue), pages, page, labeled, precision(shown),
                      tuple(suggestion_card(s, classes) for s in shown))


# ---------------------------------------------------------------------------- Train
@dataclass
class TrainProgress:
    """Losses of a running round so far, and whether the loss chart is due for a redraw
    (at most every ``redraw_seconds``, and at the last step)."""

    redraw_seconds: float = 0.5
    losses: list[float] = field(default_factory=list)
    last_redraw: float = float("-inf")

    def update(self, step: int, total: int, loss: float, now: float) -> tuple[float, str, bool]:
        """Record one step; returns ``(fraction done, status text, redraw the chart)``."""
        self.losses.append(loss)
        redraw = now - self.last_redraw > self.redraw_seconds or step >= total
        if redraw:
            self.last_redraw = now
        return min(1.0, step / max(total, 1)), f"Training: step {step}/{total} · loss {loss:.4f}", redraw


@dataclass(frozen=True)
class RoundOutcome:
    """What a round of the app did: its metrics and the suggestions it proposed."""

    metrics: dict[str, Any]
    suggestions: list[Suggestion]

    @property
    def message(self) -> str:
        m = self.metrics
        return (f"Round {m['round']}: {m['steps']} steps in {m['train_seconds']:.1f} s, "
                f"final loss {m['final_loss']:.4f}; {len(self.suggestions)} suggestions to review")


# ---------------------------------------------------------------------------- text
@dataclass(frozen=True)
class PageText:
    """The lines of text the pages show, for a project with ``classes``."""

    classes: Sequence[str]

    def other_classes(self, class_id: int) -> list[str]:
        """Classes to assign instead of the suggested one."""
        return [c for i, c in enumerate(self.classes) if i != class_id]

    @staticmethod
    def evidence_thumbs(s: Suggestion) -> list[tuple[int, str]]:
        """``(image_id, caption)`` of the evidence panel's thumbnails: the suggested image, then its evidence."""
        return [(s.image_id, "suggested"), *((i, f"#{i}") for i in s.evidence)]

    def evidence_title(self, s: Suggestion) -> str:
        """Heading of the evidence panel of suggestion ``s``."""
        return (f"**Evidence for image {s.image_id}** → suggested **{self.classes[s.class_id]}** "
                f"({s.confidence:.2f}, {s.source}): its nearest labeled images of that class")

    @staticmethod
    def disputed_caption(count: int) -> str:
        """What the Dataset page lists of ``count`` disputed labels."""
        return (f"{count} labeled image(s) whose nearest labeled neighbours vote for another class "
                f"(first {DISPUTED_SHOWN}, most contested first).")

    @staticmethod
    def project_metrics(stats: Mapping[str, Any]) -> list[tuple[str, int]]:
        """The sidebar's counts, two per row: images, classes, labeled, unlabeled."""
        return [("Images", stats["images"]), ("Classes", len(stats["classes"])), ("Labeled", stats["labeled"]),
                ("Unlabeled", stats["unlabeled"])]

    @staticmethod
    def project_caption(stats: Mapping[str, Any]) -> str:
        """The sidebar's one-line project summary."""
        return (f"{len(stats['broken'])} broken · backbone {stats['backbone']} @ {stats['input_size']} px · "
                f"{stats['device']} · {stats['rounds']} round(s)")

    @staticmethod
    def image_caption(info: Mapping[str, Any]) -> str:
        """Markdown of one image's path, label and pending suggestion."""
        text = (f"**image {info['image_id']}** · `{info['relpath']}`  \nlabel: **{info['label'] or 'unlabeled'}** "
                f"({info['source'] or '–'})")
        if info["suggested"]:
            text += f"  \nsuggested: **{info['suggested']}** ({info['confidence']:.2f})"
        return text

    @staticmethod
    def export_caption(summary: Mapping[str, Any]) -> str:
        """Markdown summary of an export folder (see :func:`labeltool.ui.project_views.export_summary`)."""
        return (f"`{summary['path']}`: {summary['images']} images in {len(summary['per_class'])} class folders; "
                f"model files: {', '.join(summary['model_files']) or 'none'}")


def selected_image(event: Mapping[str, Any] | None) -> int | None:
    """The image id of the first point selected in a scatter chart's event (None: no selection)."""
    points = (event.get("selection") or {}).get("points") if event else None
    return int(points[0]["customdata"][0]) if points else None
