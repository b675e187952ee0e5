"""Credentials masked in text: the one rule every log line, MLflow param / tag and report uses."""
from __future__ import annotations

import re

_URL_SECRET = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_KV_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|token|api_key|secret)(\s*[=:]\s*)([^\s&;,'\"]+)")


def redact(text: str) -> str:
    """``text`` with credentials masked: the password of ``scheme://user:password@host`` URLs and
    ``password=...`` / ``token=...`` pairs (libpq DSNs, query strings). Every MLflow param and tag
    (:mod:`components.tracking.mlflow_tracking`), every started command line (:mod:`components.ops.processes`) and every
    storage URL in a log or report goes through it."""
    if not isinstance(text, str) or not text:
        return text
    text = _URL_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_SECRET.sub(lambda m: f"{m[1]}{m[2]}***", text)
