"""Blank out Hub tokens in any text zoo prints or writes: ``redact(text)``.

It removes every token the client was given (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the token file,
the stored tokens, a token huggingface_hub holds in memory), raw or URL-encoded, and any run of
6 or more characters of one (a cut-off token), plus what looks like a secret whatever its value:
``hf_...`` tokens, ``Bearer ...``, ``token=...``-style query values and URL passwords.
Redact first, then cut a message to length: a cut never leaves part of a token behind.
The token files are read directly (not with huggingface_hub.get_token(), which may refresh a token
over the network); nothing here imports huggingface_hub.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from pathlib import Path

MASK = "***"
MIN_TOKEN = 8  # shorter values are not treated as tokens (blanking them would blank ordinary words)
MIN_PIECE = 6  # any run of this many characters of a known token is blanked
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_ID_TOKEN")

_PATTERNS = [re.compile(p) for p in (  # the group "s" is the secret
    r"(?P<s>hf_[A-Za-z0-9]{16,})",  # Hub user access tokens: hf_ + 34 letters and digits
    r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?P<s>[^\"'\r\n,;}]+)",  # the header, any scheme
    r"(?i)\bbearer(?:\s+|%20|\+)(?P<s>[A-Za-z0-9._~+/=-]{8,})",
    # token=..., ?access_token=..., password=...; "api_key": "..." (a string: {"token": 0.93} is a class's metric)
    r"(?i)(?:token|api_?key|secret|password|passwd)(?:=|%3D|[\"']\s*:\s*[\"'])(?P<s>[^\s\"'&,;}]+)",
    r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<s>[^/\s@]+)@",  # https://user:SECRET@host
)]


def _token_paths() -> set[Path]:
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    token = Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"))))
    paths = {token, token.parent / "stored_tokens"}
    constants = sys.modules.get("huggingface_hub.constants")  # read at its import: the environment may differ now
    if constants is not None:
        paths |= {Path(constants.HF_TOKEN_PATH), Path(constants.HF_STORED_TOKENS_PATH)}
    return paths


def known_tokens() -> set[str]:
    """Every token value this process could send to the Hub (at least MIN_TOKEN characters)."""
    values = {os.environ.get(name) for name in TOKEN_ENV}
    for path in _token_paths():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 16)  # token files are small
        except OSError:
            continue
        if path.name == "stored_tokens":  # INI: [name] hf_token = ..., refresh_token = ...
            values |= {m.group(1) for m in re.finditer(r"(?m)^\s*(?:hf_token|refresh_token)\s*[=:]\s*(\S+)", text)}
        else:
            values.add(text)
    auth = sys.modules.get("huggingface_hub.utils._auth")  # tokens it holds in memory (OIDC exchange, Colab vault)
    if auth is not None:
        values.add((getattr(auth, "_OIDC_TOKEN_CACHE", None) or {}).get("token"))
        values.add(getattr(auth, "_GOOGLE_COLAB_SECRET", None))
    return {v.strip() for v in values if isinstance(v, str) and len(v.strip()) >= MIN_TOKEN}


def _variants(token: str) -> set[str]:
    from urllib.parse import quote, quote_plus

    return {token, quote(token, safe=""), quote_plus(token)}


def redact(text: str, tokens: set[str] | None = None) -> str:
    """``text`` with every secret replaced by ``***`` (see the module docstring)."""
    text = str(text)
    pieces = {v[i:i + MIN_PIECE] for t in (known_tokens() if tokens is None else tokens) for v in _variants(t)
              for i in range(len(v) - MIN_PIECE + 1)}
    # Mark every character that belongs to a secret (all found in the original text, so that one
    # finding cannot hide another), then replace each marked stretch with one mask.
    hidden = [False] * len(text)
    for i in range(len(text) - MIN_PIECE + 1):
        if text[i:i + MIN_PIECE] in pieces:
            hidden[i:i + MIN_PIECE] = [True] * MIN_PIECE
    for pattern in _PATTERNS:
        for m in pattern.finditer(text):
            hidden[m.start("s"):m.end("s")] = [True] * (m.end("s") - m.start("s"))
    if not any(hidden):
        return text
    return "".join(MASK if masked else "".join(ch for ch, _ in run)
                   for masked, run in itertools.groupby(zip(text, hidden, strict=False), key=lambda x: x[1]))
