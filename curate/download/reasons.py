"""Short, stable names for why a row was not fetched or not kept.

img2dataset records each failure as the exception's message, which embeds URLs and addresses; the pool's
stats group them under these names, and `--retry-failed` selects by them.
"""

from __future__ import annotations

from curate.download import guard

# (phrase in the message, reason): the first phrase found wins
_PHRASES = (
    (guard.PRIVATE_ADDRESS, "private_address"),
    (guard.TOO_LARGE, "too_large"),
    (guard.DEADLINE, "deadline"),
    (guard.SCHEME_REDIRECT, "redirect_refused"),
    ("redirection to url", "redirect_refused"),
    ("http error 404", "http_404"),
    ("http error 403", "http_403"),
    ("http error 429", "http_429"),
    ("http error 5", "http_5xx"),
    ("http error", "http_error"),
    ("timed out", "timeout"),
    ("connection refused", "connection_refused"),
    ("connection reset", "connection_reset"),
    ("remote end closed", "connection_reset"),
    ("image decoding error", "decode_error"),
    ("image area", "too_many_pixels"),
    ("aspect ratio", "aspect_ratio"),
    ("too small", "too_small"),
    ("x-robots-tag", "disallowed_by_robots_tag"),
    ("name or service not known", "dns"),
    ("temporary failure in name resolution", "dns"),
    ("urlopen error", "url_error"),
)
NAMES = tuple(dict.fromkeys(reason for _, reason in _PHRASES))
# failures a later try may not repeat: what `--retry-failed` takes by default
TRANSIENT = ("timeout", "deadline", "http_5xx", "http_429", "connection_refused", "connection_reset", "dns", "url_error")
# a fetch-time refusal: counted with the refusals made before fetching, not as a failed download
REFUSED_AT_FETCH = ("private_address",)


def short_reason(message: str | None) -> str:
    """Group img2dataset's error messages into a few reasons (unknown ones keep their first 80 characters)."""
    text = (message or "").strip()
    lowered = text.lower()
    for needle, reason in _PHRASES:
        if needle.lower() in lowered:
            return reason
    return text.splitlines()[0][:80] if text else "unknown"
