"""Deterministic Sandbox names and label values.

``<group>-<agent>-<index>`` when that is a valid DNS-1035 label of at most 63 characters; otherwise a
shortened readable prefix, a hash of (group, agent) and the index. The index is always the part after
the last ``-`` and agent names are unique, so no two (agent, index) pairs of one group share a name.
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_LABEL = 63
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HASH_LEN = 10


def is_dns1123_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and DNS1123_LABEL.fullmatch(value) is not None


def is_dns1035_label(value: str) -> bool:
    return len(value) <= MAX_LABEL and DNS1035_LABEL.fullmatch(value) is not None


def _digest(*parts: str) -> str:
    """Base32 of SHA-256 over the parts (NUL-separated, so ("a-b", "c") and ("a", "b-c") differ)."""
    raw = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(raw).decode().lower()[:_HASH_LEN]


def sandbox_name(group: str, agent: str, index: int) -> str:
    readable = f"{group}-{agent}-{index}"
    if is_dns1035_label(readable):
        return readable
    suffix = f"-{_digest(group, agent)}-{index}"
    prefix = re.sub(r"[^a-z0-9-]+", "-", readable.rsplit("-", 1)[0].lower())
    prefix = prefix.lstrip("-0123456789")[: MAX_LABEL - len(suffix)].rstrip("-") or "sandbox"
    return prefix + suffix


def label_value(value: str) -> str:
    """``value`` when it is a valid label value, else a shortened form with a stable hash."""
    if len(value) <= MAX_LABEL and _LABEL_VALUE.fullmatch(value):
        return value
    suffix = f"-{_digest(value)}"
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: MAX_LABEL - len(suffix)].strip("-_.")
    return prefix + suffix if prefix else suffix[1:]
