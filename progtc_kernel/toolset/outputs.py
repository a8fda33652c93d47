"""What a script displayed, passed back to the model: ``ScriptOutput``.

A script's ``display(...)`` calls (``display`` is a builtin in the kernel) and the
matplotlib figures it leaves open (the inline backend shows them when the script
ends, as it does for a cell) come back in order, each in the one form a model reads
best: an image (PNG, JPEG, GIF, WebP) as its bytes; else markdown, HTML, SVG, LaTeX
or plain text, as text cut to ``max_output_chars``. Outputs past the byte limits,
each output's and all of a script's, are left out, and the model is told which and
why in words (``ScriptResult.outputs_left_out``): never silently.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from ..host.results import Output
from ..protocol import OUTCOME_MIME

# The limits' defaults. A matplotlib figure at the default dpi is 20-100 kB; 1 MB holds
# a large detailed one. 3 MB keeps a result far below what model APIs take in one
# request (Anthropic 32 MB, OpenAI 50 MB) and what MCP's stdio layer carries quickly.
MAX_OUTPUT_BYTES = 1_000_000
MAX_TOTAL_OUTPUT_BYTES = 3_000_000

# The image types model APIs (and MCP clients) take, best first.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# The text forms a model reads, best first: a DataFrame's HTML before its plain text.
TEXT_TYPES = ("text/markdown", "text/html", "image/svg+xml", "text/latex", "text/plain")


class ScriptOutput(BaseModel):
    """One thing a script displayed, in the form passed to the model.

    Attributes:
        mime_type: ``image/png``, ``image/jpeg``, ``image/gif``, ``image/webp``, or a
            text form: ``text/markdown``, ``text/html``, ``image/svg+xml``,
            ``text/latex``, ``text/plain``.
        data: An image's bytes (empty for a text form).
        text: A text form's text, cut to ``max_output_chars`` (empty for an image).
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    mime_type: str
    data: bytes = b""
    text: str = ""

    @property
    def is_image(self) -> bool:
        """Whether this is an image (``data``) rather than text (``text``)."""
        return self.mime_type in IMAGE_TYPES

    @property
    def size(self) -> int:
        """Its bytes: an image's, or its text's in UTF-8."""
        return len(self.data) if self.is_image else len(self.text.encode())

    def described(self) -> str:
        """A text form as the model reads it, saying what it is (``''`` for an image)."""
        return "" if self.is_image else f"The script displayed ({self.mime_type}):\n{self.text}"


def script_outputs(
    outputs: Iterable[Output], *, max_bytes: int, max_total_bytes: int, max_chars: int
) -> tuple[list[ScriptOutput], str]:
    """A script's display outputs within the limits, and what was left out, said.

    Args:
        outputs: The run's rich outputs (the script's outcome among them is skipped).
        max_bytes: The most one output may have; a bigger one is left out.
        max_total_bytes: The most all of them may have; those past it are left out.
        max_chars: The most characters of a text form kept (the cut is said in it).

    Returns:
        The outputs kept, in order, and the notice of those left out (``''`` if none).
    """
    kept: list[ScriptOutput] = []
    too_big: list[ScriptOutput] = []
    past_total: list[ScriptOutput] = []
    total = 0
    for output in outputs:
        chosen = _chosen(output, max_chars)
        if chosen is None:
            continue
        if chosen.size > max_bytes:
            too_big.append(chosen)
        elif total + chosen.size > max_total_bytes:
            past_total.append(chosen)
        else:
            total += chosen.size
            kept.append(chosen)
    notices = [
        _left_out(
            too_big,
            f"each over the {_size(max_bytes)} limit per output: display smaller ones "
            "(fewer pixels, a lower dpi, fewer rows) or return the data in the dict",
        ),
        _left_out(
            past_total,
            f"past the {_size(max_total_bytes)} limit for all of a script's outputs: "
            "display fewer, or smaller ones",
        ),
    ]
    return kept, "\n".join(notice for notice in notices if notice)


def _chosen(output: Output, max_chars: int) -> ScriptOutput | None:
    """The output's best form for a model, if it has one (the outcome has none)."""
    if OUTCOME_MIME in output.data:
        return None
    for mime_type in IMAGE_TYPES:
        encoded = output.data.get(mime_type)
        if isinstance(encoded, str):
            try:
                return ScriptOutput(mime_type=mime_type, data=base64.b64decode(encoded))
            except (binascii.Error, ValueError):
                continue  # not base64: try the next form
    for mime_type in TEXT_TYPES:
        text = output.data.get(mime_type)
        if isinstance(text, str) and text:
            return ScriptOutput(mime_type=mime_type, text=_cut(text, max_chars))
    return None


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}\n[... {len(text) - limit:,} more characters were displayed and "
        "cut; display less, or return the data in the dict]"
    )


def _left_out(outputs: list[ScriptOutput], why: str) -> str:
    """``[2 images left out: 3.1 MB, each over the 1 MB limit per output: ...]``."""
    if not outputs:
        return ""
    images = sum(output.is_image for output in outputs)
    texts = len(outputs) - images
    counted = " and ".join(
        f"{count} {noun}{'s' if count > 1 else ''}"
        for count, noun in ((images, "image"), (texts, "text output"))
        if count
    )
    size = _size(sum(output.size for output in outputs))
    verb = "was" if len(outputs) == 1 else "were"
    return f"[{counted} the script displayed {verb} left out ({size}), {why}]"


def _size(count: int) -> str:
    """Bytes as a person says them: ``3.1 MB``, ``1 MB``, ``240 kB``, ``12 bytes``."""
    for unit, name in ((1_000_000, "MB"), (1_000, "kB")):
        if count >= unit:
            return f"{round(count / unit, 1):g} {name}"
    return f"{count} bytes"
