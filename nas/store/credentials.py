"""Passwords are never printed: `redact` masks every form of credential a storage URL can carry, and
`scrub` takes them out of a driver's error message that quotes the URL."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, unquote_plus

# Credentials in storage URLs. Key names that hold a secret: password (libpq, SQLAlchemy's query form),
# sslpassword (libpq: the client key's), passwd and pwd (MySQL, ODBC), anything called a secret or token.
# `passfile`, `sslkey` and the like name files, which are not secrets, and stay visible.
_SECRET_KEY = re.compile(r"(?i)password|passwd|pwd|secret|token")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# ?key=value / &key=value (and ;key=value) in a URL's query: the value runs to the next separator
_QUERY_PAIR = re.compile(r"(?<=[?&;])([^=&;#?\s]*)=([^&;#]*)")
# libpq's keyword/value form: key = value, the value bare (backslash escapes) or single-quoted
_DSN_PAIR = re.compile(r"(?<![^\s'\"(,])([A-Za-z_]+)(\s*=\s*)('(?:\\.|[^'\\])*(?:'|$)|(?:\\.|[^\s'\\])+)")
# user:password@ inside a longer text (an error message): bounded by spaces and quotes
_EMBEDDED_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s'\"@]*@")


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of `scheme://user:password@host...` lies in `url` (start, end), or None.

    As SQLAlchemy reads it, the user ends at the first ':'; the host starts after the last '@' before
    the query ('?'), or after the last '@' of all if none comes before a '?' (a raw '?' in the password)."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    start = scheme.end()
    query = url.find("?", start)
    at = url.rfind("@", start, query if query >= 0 else len(url))
    if at < 0:
        at = url.rfind("@", start)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0 or "/" in url[start:colon]:
        return None
    return colon + 1, at


def raw_at_in_password(url: str) -> bool:
    """Whether the password of `scheme://user:password@host` holds a raw '@' (which SQLAlchemy would
    take for the end of the password: the rest would be read, and printed, as the host)."""
    found = _userinfo(url)
    return found is not None and "@" in url[found[0]:found[1]]


def _is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(unquote_plus(key)))


def redact(url: str) -> str:
    """A storage URL (or any text that holds one, or a libpq `key=value` string) fit to print: every
    password replaced by ***: `user:password@` (a password with ':' or '@' in it too), `?password=`,
    `&sslpassword=` (any case), and libpq's `password=secret` / `password='a b'`."""
    found = _userinfo(url)
    if found is not None:
        url = url[:found[0]] + "***" + url[found[1]:]
    url = _EMBEDDED_USERINFO.sub(r"\1***@", url)
    url = _QUERY_PAIR.sub(lambda m: f"{m[1]}=***" if _is_secret(m[1]) else m[0], url)
    return _DSN_PAIR.sub(lambda m: f"{m[1]}{m[2]}***" if _is_secret(m[1]) else m[0], url)


def _secrets(url: str) -> set[str]:
    """Every secret `url` holds, in each form a driver's message may quote it (as written, decoded, encoded)."""
    found = set()
    userinfo = _userinfo(url)
    if userinfo is not None:
        found.add(url[userinfo[0]:userinfo[1]])
    found.update(m[2] for m in _QUERY_PAIR.finditer(url) if _is_secret(m[1]))
    for m in _DSN_PAIR.finditer(url):
        if _is_secret(m[1]):
            value = m[3]
            found.add(value)
            if value.startswith("'"):
                value = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
            found.add(re.sub(r"\\(.)", r"\1", value))
    forms = set()
    for secret in found:
        forms.update({secret, unquote(secret), unquote_plus(secret), quote(secret, safe="")})
    return {s for s in forms if s}


def scrub(text: str, url: str, *forms: str) -> str:
    """`text` (a driver's error message about `url`) with none of `url`'s secrets in it; `forms`: other
    spellings of the URL the driver may quote (e.g. with its driver's scheme)."""
    for form in (url, *forms):
        text = text.replace(form, redact(url))
    text = redact(text)
    for secret in sorted(_secrets(url), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        else:  # a short one only as a word of its own: it would mask letters all over the message
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text
