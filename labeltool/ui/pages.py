"""View models of the app's pages: their controls and defaults, the review page, a round's
progress and outcome, and the lines of text the pages show. Pure functions over plain data."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labeltool.config import ExportConfig
from labeltool.data.decisions import LabelState
from labeltool.suggest.propose import Suggestion
from labeltool.ui.cards import Button, Card, batch_buttons, decided_card, suggestion_card
from labeltool.ui.messages import low_precision_remedy
from labeltool.ui.queue import ORDERS, PrecisionEstimate, filter_sort, page_of
from labeltool.ui.settings import Control

if TYPE_CHECKING:
    from labeltool.rounds.proposal import Coverage

ALL_CLASSES = "all classes"
PAGE_SIZES = (12, 24, 48, 96)
DEFAULT_PAGE_SIZE = 48
REVIEW_ORDERS = ORDERS[:2]  # "high first", "low first"
COLOR_BY = ("label", "source", "confidence")
DISPUTE_SPACES = ("backbone", "embedding")  # the backbone never saw a label: its neighbours can disagree
DISPUTE_K, DISPUTE_SHARE = 5, 0.6
DISPUTED_SHOWN = 24
OVERWRITE_LABEL = "Overwrite a previous export"
EXPORT_OPTIONS = (
    ("dataset", "Dataset", "the labeled images, one folder per class, with manifest.csv / manifest.parquet"),
    ("model", "Model", "the newest round's model (head, backbone spec, class names)"),
    ("include_pseudo", "Include labels accepted without review",
     "labels the tool accepted on its own (source 'pseudo' in the manifest); seed and reviewed labels are always "
     "exported. Suggestions still waiting in Review are not labels: see the next option"),
    ("include_pending", "Add pending suggestions (unreviewed)",
     "off by default: the newest round's suggestions still waiting in Review are exported too, each with source "
     "'suggested' (not reviewed) and its confidence in the manifest"),
    ("link", "Hard links", "link instead of copying where possible"),
    ("overwrite", OVERWRITE_LABEL, "replace the folder when it holds a previous labeltool export"),
)
EXPORT_DEFAULTS = {"include_pending": False}  # options that are the app's own, not ExportConfig fields


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
    defaults = {**vars(ExportConfig()), **EXPORT_DEFAULTS}
    return tuple(Control(f"ex_{name}", label, "bool", defaults[name], help=help_) for name, label, help_ in EXPORT_OPTIONS)


def export_options(values: Mapping[str, Any]) -> dict[str, bool]:
    """Keyword arguments of an export from the values of :func:`export_controls`."""
    return {name: bool(values[f"ex_{name}"]) for name, _, _ in EXPORT_OPTIONS}


# ---------------------------------------------------------------------------- Review
@dataclass(frozen=True)
class ReviewPage:
    """One page of the review queue.

    ``shown``: the page's suggestions still pending; ``waiting``: pending suggestions that pass
    the filter; ``page``: the page shown (0-based, clamped to ``pages``); ``labeled``: labeled
    images in the project; ``layout``: every suggestion with a card on the page, in order (those
    decided one by one stay in their place, marked, until the page is laid out again)."""

    shown: list[Suggestion]
    waiting: int
    pages: int
    page: int
    labeled: int
    precision: PrecisionEstimate
    cards: tuple[Card, ...]
    layout: tuple[Suggestion, ...] = ()

    @property
    def held(self) -> int:
        """Cards of suggestions decided on this page."""
        return len(self.layout) - len(self.shown)

    @property
    def precision_text(self) -> str:
        """The estimated precision as a percentage (a dash for an empty page)."""
        return "–" if not self.shown else self.precision.text()

    @property
    def metrics(self) -> list[tuple[str, Any, str | None]]:
        """``(label, value, help)`` of the counts above the page."""
        return [("Labeled", self.labeled, None), ("Awaiting review", self.waiting, None),
                ("Estimated precision (shown)", self.precision_text, self.precision.basis)]

    @property
    def buttons(self) -> tuple[Button, ...]:
        """The batch actions on the shown suggestions."""
        return batch_buttons(self.shown, self.held)


def class_filter(choice: str | None, classes: Sequence[str]) -> int | None:
    """The class id a filter choice names (None = every class)."""
    return None if choice in (None, ALL_CLASSES) else list(classes).index(choice)


def decision_mark(s: Suggestion, state: LabelState | None) -> str:
    """How suggestion ``s`` was decided: ``accepted`` (the image has its class), ``rejected``, or ``decided``."""
    if state is None:
        return "decided"
    if state.labels.get(s.image_id) == s.class_id:
        return "accepted"
    return "rejected" if (s.image_id, s.class_id) in state.rejected else "decided"


def review_page(pending: Sequence[Suggestion], classes: Sequence[str], values: Mapping[str, Any], page_number: int,
                *, labeled: int, precision: Callable[[list[Suggestion]], PrecisionEstimate],
                state: LabelState | None = None, name_of: Callable[[int], str] = str,
                layout: Sequence[Suggestion] | None = None) -> ReviewPage:
    """The page ``page_number`` (1-based, clamped) of ``pending`` under the Review controls' ``values``.

    ``layout``: the suggestions the page showed before (None: lay it out afresh from the queue);
    those decided since keep their place as cards marked from ``state`` (the project's labels).
    ``name_of``: image id → file name."""
    queue = filter_sort(pending, class_filter(values.get("filter_class"), classes),
                        values.get("order", REVIEW_ORDERS[0]))
    fresh, pages, page = page_of(queue, int(page_number) - 1, int(values.get("page_size", DEFAULT_PAGE_SIZE)))
    waiting = {s.image_id: s for s in pending}
    cards_of = list(layout) if layout is not None else fresh
    shown = [waiting[s.image_id] for s in cards_of if s.image_id in waiting]
    cards = tuple(suggestion_card(waiting[s.image_id], classes, name_of(s.image_id)) if s.image_id in waiting
                  else decided_card(s, classes, decision_mark(s, state)) for s in cards_of)
    return ReviewPage(shown, len(queue), pages, page, labeled, precision(shown), cards, tuple(cards_of))


def trust_notes(precision: PrecisionEstimate | None, coverage: Coverage | None, flags: Sequence[str],
                warn_below: float, end_to_end: bool = False) -> list[tuple[str, str, float | None]]:
    """``(kind, markdown, value)`` to show above a batch (kind ``meter``, ``warning`` or ``info``).

    The ``meter`` is the coverage line, with the estimated accuracy as its value: how right the
    labels would be if every remaining image took its suggestion unreviewed, and the reviews
    still needed to reach the target. ``end_to_end``: the newest round trained the network end to
    end (the remedy for a low precision then says so instead of advising it)."""
    notes: list[tuple[str, str, float | None]] = []
    if coverage is not None:
        a = coverage.accuracy
        span = "" if math.isnan(a.low) else f" [{a.low:.2f}, {a.high:.2f}]"
        notes.append(("meter", f"**Estimated accuracy of the remaining {coverage.remaining} image(s)** if each took its "
                               f"suggestion unreviewed: **{a.value:.2f}**{span}; target {coverage.target:.0%}: about "
                               f"**{coverage.reviews_needed}** review(s) still needed, least certain first.",
                      min(max(a.value, 0.0), 1.0)))
    if precision is not None and not math.isnan(precision.value) and precision.value < warn_below:
        notes.append(("warning", f"**Check before you accept:** the estimated precision of these suggestions is "
                                 f"{precision.text()}, below {warn_below:.0%}. Accepting them unreviewed would add wrong "
                                 f"labels. {low_precision_remedy(end_to_end, command_line=False)}", None))
    notes += [("warning", f"**Class balance:** {f}", None) for f in flags]
    return notes


def nothing_to_review(rounds: int, filtered: bool, unlabeled: int) -> str:
    """What the Review page says when no card is left on it."""
    if filtered:
        return "No suggestions of this class are waiting. Choose **all classes** to see the others."
    if rounds == 0:
        return ("No suggestions yet: the first round trains on the seed labels and proposes a batch to review. "
                "Run it with the button below (or in the **Train** tab).")
    if unlabeled == 0:
        return "**The project is done:** every image is labeled. Go to the **Export** tab to write the dataset and model."
    return (f"**Nothing left to review.** If the labels are good enough, the project is done: go to the **Export** tab "
            f"to write the dataset and model. Or run another round in **Train** for the next batch "
            f"({unlabeled} image(s) are still unlabeled).")


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
        shown = f"{loss:.4f}" if abs(loss) >= 1e-3 else f"{loss:.3g}"  # a small loss is not "0.0000"
        return min(1.0, step / max(total, 1)), f"Training: step {step}/{total} · loss {shown}", redraw


@dataclass(frozen=True)
class RoundOutcome:
    """What a round of the app did: its metrics and the suggestions it proposed."""

    metrics: dict[str, Any]
    suggestions: list[Suggestion]

    @property
    def message(self) -> str:
        m = self.metrics
        text = (f"Round {m['round']}: {m['steps']} steps in {m['train_seconds']:.1f} s, "
                f"final loss {m['final_loss']:.4g}; {len(self.suggestions)} suggestions to review")
        text += " in the **Review** tab." if self.suggestions else "."
        auto = m.get("auto")
        return text + (f"\n\nMode auto: {auto['reason']}." if auto else "")


# ---------------------------------------------------------------------------- text
@dataclass(frozen=True)
class PageText:
    """The lines of text the pages show, for a project with ``classes``."""

    classes: Sequence[str]
    nothing_to_review = staticmethod(nothing_to_review)
    review_hint = ("Accept or reject each card, or all shown at once; a decided card stays in its place until "
                   "the page is laid out again. Undo takes back the newest click or batch.")

    def other_classes(self, class_id: int) -> list[str]:
        """Classes to assign instead of the suggested one."""
        return [c for i, c in enumerate(self.classes) if i != class_id]

    @staticmethod
    def evidence_thumbs(s: Suggestion, name_of: Callable[[int], str]) -> list[tuple[int, str]]:
        """``(image_id, caption)`` of the evidence panel's thumbnails: the suggested image, then its
        evidence, each captioned with its file name (``name_of``: image id → name)."""
        return [(s.image_id, f"suggested: {name_of(s.image_id)}"), *((i, name_of(i)) for i in s.evidence)]

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
    def no_dispute(space: str) -> str:
        """What the Dataset page says when no label is disputed, in the space it looked in."""
        if space == "embedding":
            return ("No label is disputed in the trained embedding. That space was trained on these very labels, so it "
                    "agrees with wrong ones too: look in the **backbone** space for an independent check.")
        return "No label is disputed in the backbone's own feature space (which never saw the labels)."

    @staticmethod
    def project_metrics(stats: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """The sidebar's counts, two per row: usable images, classes, labeled, unlabeled, as
        ``(label, short count, exact count)``: a half-width sidebar column shows about five
        characters, so ``1000000`` would be cut to ``1000…``."""
        counts = [("Images", int(stats["usable"])), ("Classes", len(stats["classes"])),
                  ("Labeled", int(stats["labeled"])), ("Unlabeled", int(stats["unlabeled"]))]
        return [(label, short_count(n), f"{n:,}") for label, n in counts]

    @staticmethod
    def project_caption(stats: Mapping[str, Any]) -> str:
        """The sidebar's one-line project summary (files that could not be read, apart from the images)."""
        broken = len(stats["broken"])
        files = f"{broken} broken file(s), not counted (see Dataset) · " if broken else ""
        return (f"{files}backbone {stats['backbone']} @ {stats['input_size']} px · "
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


def short_count(n: int) -> str:
    """A count in at most five characters: ``9,999``, ``12.3k``, ``250k``, ``1.00M``, ``12.3M``."""
    if n < 10_000:
        return f"{n:,}"
    for scale, suffix in ((1_000, "k"), (1_000_000, "M"), (1_000_000_000, "B")):
        v = n / scale
        text = f"{v:.2f}" if v < 9.995 else f"{v:.1f}" if v < 99.95 else f"{v:.0f}"
        if float(text) < 1000 or suffix == "B":  # 999,999 would be "1000k": say 1.00M
            return text + suffix
    raise AssertionError("unreachable")


def selected_image(event: Mapping[str, Any] | None) -> int | None:
    """The image id of the first point selected in a scatter chart's event (None: no selection)."""
    points = (event.get("selection") or {}).get("points") if event else None
    return int(points[0]["customdata"][0]) if points else None
