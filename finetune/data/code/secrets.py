"""Secret redaction for code: detect-secrets' plugins and filters, plus plugins of our own.

Every detector is a detect-secrets plugin: its own format detectors (AWS, GitHub, GitLab, Slack,
Stripe, JWT, OpenAI, npm, PyPI, Twilio, basic-auth URLs, private key headers…) and its keyword
detector (``password = "…"`` in code, ``password: …`` in config, by file type), and the
``RegexBasedDetector`` subclasses below for what it lacks: whole private key *blocks* (its
detector only flags the BEGIN line, which would leave the key body in the data), Google,
Hugging Face, fine-grained GitHub and newer OpenAI/Anthropic-style keys, full-length Stripe keys
(its pattern stops after 24 characters), and high-entropy strings assigned in code or config.

Format detectors run over the whole file (one regex pass each, not one call per line and plugin:
detect-secrets' line loop ran at 0.17 MB/s here); the keyword detector runs on the lines that
hold one of its keywords. detect-secrets' false-positive filters (UUIDs, ``${templated}``,
``x = get_secret()``, sequential strings, id-like names) apply to the generic detectors only: an
``AKIA…`` key assigned to ``aws_access_key_id`` is still a key.

A hit is widened to the whole token it sits in (a JWT's signature, the tail of a long key) and
replaced by a typed placeholder such as ``<REDACTED:aws_access_key>``.

Example::

    text, counts = Redactor(pii=False).redact(source_text, "config/settings.py")
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import Counter

from detect_secrets.plugins.base import RegexBasedDetector

# The assignment operator of detect-secrets' `build_assignment_regex`, and the words its names hold.
_ASSIGNMENT = "(?:=|:|:=|=>| +|::)"
_SECRET_WORDS = re.compile(r"key|pw|pass|token|secret|auth|cred")
# A hit grows to the run of these characters around it.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-+/=.~]")


class PrivateKeyBlockDetector(RegexBasedDetector):
    """The whole PEM/OpenSSH/PGP/PuTTY private key, header to footer (also inside a JSON string)."""

    secret_type = "Private Key Block"
    denylist = (
        re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"),
        # A block whose footer is missing: the header and the base64 lines that follow it.
        re.compile(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:(?:\s|\\n)+[A-Za-z0-9+/=:-]{8,})*"),
        re.compile(r"PuTTY-User-Key-File-\d[\s\S]*?Private-MAC: [0-9a-f]+"),
    )


class GoogleKeyDetector(RegexBasedDetector):
    secret_type = "Google API Key"
    denylist = (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), re.compile(r"\bGOCSPX-[0-9A-Za-z_\-]{28}"))


class GitHubFineGrainedDetector(RegexBasedDetector):
    secret_type = "GitHub Fine-grained Token"
    denylist = (re.compile(r"\bgithub_pat_[0-9A-Za-z_]{22,}"),)


class HuggingFaceTokenDetector(RegexBasedDetector):
    secret_type = "Hugging Face Token"
    denylist = (re.compile(r"\bhf_[A-Za-z0-9]{30,}"),)


class ApiKeyDetector(RegexBasedDetector):
    """OpenAI (legacy and project/service/admin keys) and Anthropic style ``sk-`` keys."""

    secret_type = "API Key"
    denylist = (re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_\-]{32,}"),)


class StripeKeyDetector(RegexBasedDetector):
    secret_type = "Stripe Key"
    denylist = (re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"),)


class AssignedHighEntropyDetector(RegexBasedDetector):
    """A high-entropy literal assigned to a name: mixed-alphabet values above 4.2 bits per
    character, or hex values of 32+ digits when the name says key/secret/token/password."""

    secret_type = "High Entropy Assignment"
    # The quoted value is found first (a scan that starts only at quotes: 27x faster than one that
    # starts at every name), then the assignment is checked in the 100 characters before it.
    denylist = (re.compile(r"[\"']([A-Za-z0-9+/=_\-.~]{20,})[\"']"),)
    _ASSIGNED = re.compile(r"([A-Za-z_][\w.\-]*)[\"']?\s*(?:=|:|:=|=>)\s*$")
    _SECRET_NAME = re.compile(r"key|secret|token|pass|pwd|auth|cred|salt|signature|private", re.IGNORECASE)

    def analyze_string(self, string: str):
        for regex in self.denylist:
            for m in regex.finditer(string):
                assigned = self._ASSIGNED.search(string, max(0, m.start() - 100), m.start())
                if assigned is None:
                    continue
                name, value = assigned.group(1), m.group(1)
                hexadecimal = re.fullmatch(r"[0-9a-fA-F]+", value) is not None
                if hexadecimal:
                    if len(value) >= 32 and self._SECRET_NAME.search(name):
                        yield value
                elif re.search(r"\d", value) and re.search(r"[A-Za-z]", value) and entropy(value) > 4.2:
                    yield value


class EmailAddressDetector(RegexBasedDetector):
    """E-mail addresses (PII), except at the reserved example domains."""

    secret_type = "Email Address"
    denylist = (re.compile(r"\b[A-Za-z0-9._%+\-]+@(?!example\.(?:com|org|net)\b)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
                           r"\.[A-Za-z]{2,}\b"),)


OWN_PLUGINS = (PrivateKeyBlockDetector, GoogleKeyDetector, GitHubFineGrainedDetector, HuggingFaceTokenDetector,
               ApiKeyDetector, StripeKeyDetector, AssignedHighEntropyDetector)
PII_PLUGINS = ("IPPublicDetector", EmailAddressDetector)
# Detectors that guess from names and shapes: detect-secrets' false-positive filters apply to them.
GENERIC = ("Secret Keyword", "High Entropy Assignment")
PII_KINDS = ("email_address", "ip_address")
KINDS = {"Private Key": "private_key", "Private Key Block": "private_key", "Secret Keyword": "password",
         "High Entropy Assignment": "high_entropy_secret", "Basic Auth Credentials": "password",
         "Public IP (ipv4)": "ip_address", "GitHub Fine-grained Token": "github_token", "API Key": "api_key",
         "Stripe Access Key": "stripe_key"}


# Values a keyword detector meets that are not secrets: empty markers, environment variable
# names and references (`REMOTE_KEY`, `os.environ/X`, `env:X`), and plain-word phrases.
_NOT_A_SECRET = re.compile(r"(?i:none|null|nil|true|false|changeme|redacted|x+|\*+)$|[A-Z][A-Z0-9_]*$|"
                           r"(?:os\.environ|env)[/:.\[]|[A-Za-z][A-Za-z-]*(?: [A-Za-z][A-Za-z-]*)+$")


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


def kind_of(secret_type: str) -> str:
    return KINDS.get(secret_type) or re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")


class Redactor:
    """Finds secrets (and, with ``pii``, e-mail and public IP addresses) and replaces them."""

    def __init__(self, pii: bool = False):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.keyword import DENYLIST, KeywordDetector

        theirs = [cls for cls in get_mapping_from_secret_type_to_class().values()
                  if issubclass(cls, RegexBasedDetector) and cls.__name__ not in PII_PLUGINS]
        extra = [cls for cls in get_mapping_from_secret_type_to_class().values() if cls.__name__ in PII_PLUGINS]
        pii_plugins = [*extra, EmailAddressDetector] if pii else []
        self.plugins = [cls() for cls in (*theirs, *OWN_PLUGINS, *pii_plugins)]
        self.keyword = KeywordDetector()
        # DENYLIST is lower case: searching the lower-cased text is 15x faster than re.IGNORECASE.
        self._keyword_lines = re.compile("|".join(DENYLIST))

    def _hits(self, text: str, filename: str) -> list[tuple[str, str, tuple[int, int] | None]]:
        """(value, secret type, (start, end) of the one line it may be replaced in, or None: anywhere)."""
        hits: list[tuple[str, str, tuple[int, int] | None]] = []
        lines = text.split("\n")
        lower = text.lower()
        if len(lower) != len(text):  # a character whose lower case is longer: positions would drift
            lower = text
        # detect-secrets' `name = value` detectors (Cloudant, IBM, SoftLayer…) all need a secret word in
        # the name; they run only on the lines that have one (redaction 2x faster on generated code).
        assigning = "\n".join(line for line, low in zip(lines, lower.split("\n"), strict=True)
                               if _SECRET_WORDS.search(low))
        for plugin in self.plugins:
            if type(plugin).analyze_string is not RegexBasedDetector.analyze_string:
                hits += [(v, plugin.secret_type, None) for v in plugin.analyze_string(text) if v]
                continue
            for regex in plugin.denylist:
                for m in regex.findall(assigning if _ASSIGNMENT in regex.pattern else text):
                    hits += [(v, plugin.secret_type, None) for v in (m if isinstance(m, tuple) else (m,)) if v]
        line_starts = list(itertools.accumulate((len(x) + 1 for x in lines[:-1]), initial=0))
        keyword_at = (m.start() for m in self._keyword_lines.finditer(lower))
        for n in sorted({bisect.bisect_right(line_starts, at) - 1 for at in keyword_at}):
            for s in self.keyword.analyze_line(filename=filename, line=lines[n], line_number=n + 1):
                # Config lines are read raw: `key: value  # comment` must not make the comment the value.
                value = re.split(r"\s+#", s.secret_value)[0].strip()
                hits.append((value, s.type, (line_starts[n], line_starts[n] + len(lines[n]))))
        return [h for h in hits if h[0] and not self._false_positive(*h, text)]

    def _false_positive(self, value: str, secret_type: str, where: tuple[int, int] | None, text: str) -> bool:
        from detect_secrets.filters import heuristic as h

        if secret_type not in GENERIC:
            return False
        if where is None:
            at = text.find(value)
            where = (text.rfind("\n", 0, at) + 1, text.find("\n", at) % (len(text) + 1))
        line = text[where[0]:where[1]]
        return (_NOT_A_SECRET.match(value) is not None or h.is_sequential_string(value) or h.is_potential_uuid(value) or h.is_templated_secret(value)
                or h.is_prefixed_with_dollar_sign(value) or h.is_not_alphanumeric_string(value)
                or h.is_likely_id_string(value, line) or h.is_indirect_reference(line))

    def redact(self, text: str, filename: str) -> tuple[str, Counter]:
        """``text`` with every hit replaced by ``<REDACTED:kind>``, and the count per kind."""
        spans: list[tuple[int, int, str]] = []
        for value, secret_type, where in self._hits(text, filename):
            lo, hi = where or (0, len(text))
            at = text.find(value, lo, hi)
            while at != -1:
                start, end = at, at + len(value)
                while start > 0 and _TOKEN_CHARS.match(text[start - 1]):
                    start -= 1
                while end < len(text) and _TOKEN_CHARS.match(text[end]):
                    end += 1
                spans.append((start, end, kind_of(secret_type)))
                at = text.find(value, at + len(value), hi)
        counts: Counter = Counter()
        if not spans:
            return text, counts
        # A PII hit inside a secret (the `user:pass@host` of a URL looks like an e-mail) is the secret's.
        secret_spans = [(a, b) for a, b, k in spans if k not in PII_KINDS]
        spans = [s for s in spans if s[2] not in PII_KINDS or not any(a < s[1] and s[0] < b for a, b in secret_spans)]
        out, pos = [], 0
        for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1])):
            if start < pos:  # inside (or overlapping) a span already replaced
                if end > pos:
                    pos = end
                continue
            out += [text[pos:start], f"<REDACTED:{kind}>"]
            counts[kind] += 1
            pos = end
        out.append(text[pos:])
        return "".join(out), counts
