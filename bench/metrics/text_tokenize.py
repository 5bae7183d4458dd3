"""PTB-style tokenisation for the caption/report metrics (pycocoevalcap conventions), in pure Python.

pycocoevalcap tokenises with Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` (a Java
subprocess) and then drops the tokens ``'' ' `` ` . ? ! , : - -- ... ;`` (its list also names
``-LRB- -RRB- -LCB- -RCB-``, but in upper case: after ``-lowerCase`` the escapes read ``-lrb-`` etc. and
survive — a quirk kept here).

This module re-implements the behaviour of that lexer that matters for report text as a longest-match
scanner (ties go to the earlier rule, as in JFlex) over whitespace-separated chunks:

* words: a letter, then letters/digits, optionally continued by ``.``/``!``/``?`` + letter
  (``apex.There`` stays one token); hyphen/underscore-joined words (``left-sided``, ``2.5-cm``); up to three
  slash-joined words (``and/or``, ``xxxx/xxxx/sob``; a fourth is split off); fractions and dates;
* numbers with internal ``.``, ``,``, ``:`` and an optional sign (``1.5``, ``22,007``, ``12:30``, ``.5``, ``-5``);
* abbreviations keep their period (``Dr.``, ``p.m.``, ``e.g.``, ``Ct.``; the CoreNLP 3.4.1 list, case-
  insensitive except ``Mass Ill La Del Ore Wash Ark Miss Pa`` which need a capital first letter); ``No.``,
  ``Fig.``, ``ca.`` … only before a number; a single letter keeps its period unless a sentence-starting
  word follows (``vitamin D. The`` → ``d .``, but ``hepatitis C. Hepatocellular`` → ``c.``); any word or
  number keeps a period directly followed by ``,``, ``;`` or ``:`` (``2.,`` → ``2.``);
* ``cannot`` → ``can not``; clitics split (``patient's`` → ``patient 's``, ``don't`` → ``do n't``);
* brackets become ``-lrb-``/``-rrb-``/``-lsb-``/``-rsb-``/``-lcb-``/``-rcb-``; ``&amp; &lt; &gt;`` are decoded;
  SGML tags (``<BR>``) are one token; ``1 1/2`` is one token joined by a no-break space (as in CoreNLP).

Each text is tokenised on its own. (pycocoevalcap joins all captions with newlines before calling the
tokenizer, so a caption ending in a single letter + period is split there only when the *next* caption starts
with a capital — an artefact not reproduced.) The test suite checks this module against the real
PTBTokenizer on the IU X-ray reports when Java is available. Results are memoised per chunk, so tokenising
thousands of reports takes a fraction of a second and needs no JVM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["PTB_PUNCTUATION", "ptb_tokenize", "ptb_tokenize_many", "ptb_tokens"]

# Removed after tokenisation (pycocoevalcap's list; its upper-case bracket escapes never match).
PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"])

_W = r"[^\W_]"  # letter or digit
_L = r"[^\W\d_]"  # letter
_NBSP_MARK = "\ue000"  # stands for the space inside "1 1/2" while scanning (not whitespace for str.split)

_ABMONTH = "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
_ABDAYS = "mon|tue|tues|wed|thu|thurs|fri"
_ABSTATE_ANYCASE = "calif|conn|fla|mich|va|ariz|tenn|md|mo|wis|ala|ky|ga|colo|okla|kan|neb|nev|minn|ind|ct|mont|wyo|vt"
_ABSTATE_CAPITAL = "M(?i:ass)|I(?i:ll)|L(?i:a)|D(?i:el)|O(?i:re)|W(?i:ash)|A(?i:rk)|M(?i:iss)|P(?i:a)"
_ABCOMP = "inc|cos?|corp|pp?t[ye]s?|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys|invt|elec|natl|m[ft]g"
_ABOTHER = (
    r"tel|est|ext|sq|jr|sr|bros|(?:ed|ph)\.d|esq|etc|al|seq|bldg|vs|alex|wm|jos|cie|a\.k\.a|cf|treas"
    r"|mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|mt|capt"
    r"|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mme|mlle"
)
_ABBREV = rf"(?:(?i:{_ABMONTH}|{_ABDAYS}|{_ABSTATE_ANYCASE}|{_ABCOMP}|{_ABOTHER})|{_ABSTATE_CAPITAL})\."
_ABBREV_BEFORE_NUMBER = r"(?i:ca|figs?|prop|nos?|art|pp|op)\."
_ACRO = r"[A-Za-z](?:\.[A-Za-z])+"
_FILE_EXT = (
    "3gp|avi|bat|bmp|bz2|class|com|cpp|css|csv|c|dat|dll|docx|doc|exe|gif|gz|html|htm|h|ico|jar|java|jpeg|jpg"
    "|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|xml|x|zip"
)
_THING = rf"{_W}+(?:[-_]{_W}+)*"

# (name, token pattern, trailing context that must follow, or None). The scanner takes the longest
# token+context; on equal length the earlier rule wins.
_RULES: list[tuple[str, str, str | None]] = [
    ("sgml", r"</?[A-Za-z!?][^>\r\n]*>", None),
    ("entity", r"&(?:amp|lt|gt|quot|apos|nbsp);", None),
    ("cannot", r"(?i:cannot)", None),
    ("sword", r"[A-Za-z]*[A-MO-Za-mo-z]", r"[nN]'[tT]"),
    (
        "apoword",
        r"[lLdDjJ]'|'[nN]'?|'(?i:em|cause|till?)|'[2-9]0s|[A-HJ-XZa-hj-xz]'[A-Za-z]{2,}"
        r"|[A-Za-z]+[aeiouyAEIOUY]'[aeiouA-Z][A-Za-z]*",
        None,
    ),
    ("word", rf"{_L}{_W}*(?:[.!?]{_L}{_W}*)*", None),
    ("redaux", r"'(?:[msdMSD]|(?i:re|ve|ll))", r"(?![A-Za-z])|$"),
    ("sredaux", r"[nN]'[tT]", None),
    ("date", r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", None),
    ("number", r"[-+]?(?:\d*(?:[.:,]\d+)+|\d+)", None),
    ("frac", rf"(?:\d{{1,4}}[-{_NBSP_MARK}])?\d{{1,4}}\\?/\d{{1,4}}", None),
    ("filename", rf"{_W}+(?:[-._/]{_W}+)*\.(?i:{_FILE_EXT})", rf"(?!{_W})"),
    ("letter_abbrev", r"[A-Za-z]\.", None),  # refused before a capitalised word (see _scan)
    ("abbrev", _ABBREV, None),
    ("abbrev_num", _ABBREV_BEFORE_NUMBER, None),  # only before a number (see _scan)
    ("acronym", rf"{_ACRO}\.?", None),
    ("period_before_comma", rf"{_THING}\.", r"[,;:]"),
    ("url", r"https?://[^\s\"<>|()]*[^\s\"<>|.!?(){},-]|(?:www\.)?(?:[^\W_][\w-]*\.)+(?i:com|net|org|edu)", None),
    ("email", r"[A-Za-z0-9][^\s\"<>|(){}]*@(?:[^\s\"<>|(){}.]+\.)*[^\s\"<>|(){}\[\].,;:]+", None),
    ("handle", r"[@#][A-Za-z_][A-Za-z_0-9]*", None),
    ("slashed", rf"{_W}+(?:-{_L}+){{0,2}}(?:\\?/{_W}+(?:-{_L}+){{0,2}}){{1,2}}", None),
    ("thing", _THING, None),
    ("hthing", rf"{_W}[A-Za-z0-9.,]*(?:-(?:[A-Za-z0-9]+|{_ACRO}\.))+", None),
    ("amp_caps", r"[A-Z]+(?:[+&][A-Z]+)+", None),
    ("dollar", r"[A-Z]*\$", None),
    ("ldots", r"\.\.\.+", None),
    ("dashes", r"--+", None),
    ("bangs", r"[?!]+", None),
    ("stars", r"\*+", None),
    ("quotes", r"``|''", None),
    ("any", r".", None),
]
_COMPILED = [(name, re.compile(pat), re.compile(ctx) if ctx else None) for name, pat, ctx in _RULES]

_REWRITE = {
    "(": "-lrb-",
    ")": "-rrb-",
    "[": "-lsb-",
    "]": "-rsb-",
    "{": "-lcb-",
    "}": "-rcb-",
    "&amp;": "&",
    "&lt;": "<",
    "&gt;": ">",
    "&quot;": "''",
    "&apos;": "'",
    '"': "''",
    "`": "`",
}
_CHAR_MAP = str.maketrans(
    {
        "\u2018": "`",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "--",
        "\u2014": "--",
        "\u2026": "...",
        "\u00bd": "1/2",
        "\u00bc": "1/4",
        "\u00be": "3/4",
    }
)
_FRAC_SPACE = re.compile(r"(?:(?<=\s)|^)(\d{1,4}) (\d{1,4}\\?/\d{1,4})")
_FAST = re.compile(rf"({_L}+)([,;:]?)")
_CHUNK = re.compile(r"\S+")


def _scan(chunk: str, next_class: str) -> list[str]:
    """Longest-match scan of one whitespace-free chunk into lower-cased tokens (punctuation kept).

    ``next_class`` describes the next chunk of the text: "U" (a sentence-starting word or a tag), "D" (starts
    with a digit or sign), "O" (anything else) or "" (end of text).
    """
    out: list[str] = []
    pos, end = 0, len(chunk)
    while pos < end:
        best_len, best_end, best_name = 0, pos, ""
        for name, rx, ctx in _COMPILED:
            m = rx.match(chunk, pos)
            if m is None or m.end() == pos:
                continue
            tok_end = m.end()
            total = tok_end - pos
            if ctx is not None:
                c = ctx.match(chunk, tok_end)
                if c is None:
                    continue
                total = c.end() - pos
            if name == "letter_abbrev" and tok_end == end and next_class == "U":
                continue  # "vitamin D. The": a sentence end, the period is split off
            if name == "abbrev_num" and not (tok_end == end and next_class == "D"):
                continue
            if total > best_len:
                best_len, best_end, best_name = total, tok_end, name
        tok = chunk[pos:best_end]
        pos = best_end
        if best_name == "cannot":
            out.extend((tok[:3].lower(), tok[3:].lower()))
        elif best_name == "entity" and tok == "&nbsp;":
            continue
        elif best_name == "dashes":
            out.append("--")
        elif best_name == "ldots":
            out.append("...")
        else:
            out.append(_REWRITE.get(tok, tok).lower().replace(_NBSP_MARK, "\u00a0"))
    return out


# After "c." CoreNLP 3.4.1 splits the period off only when one of these words follows (any case, then
# whitespace or the end); found by probing its lexer with 30,000 capitalised words.
_SENTENCE_START_WORDS = (
    "a about according additionally after an as at but earlier he her here however if in it last many more now once"
    " one other our she since so some such that the their then there these they this we what when while yet you"
)
_SENTENCE_STARTS = frozenset(_SENTENCE_START_WORDS.split())


def _next_class(chunk: str) -> str:
    if chunk.lower() in _SENTENCE_STARTS or chunk[0] == "<":
        return "U"
    if chunk[0].isdigit() or chunk[0] in "+-.":
        return "D"
    return "O"


@lru_cache(maxsize=262_144)
def _chunk_tokens(chunk: str, next_class: str) -> tuple[str, ...]:
    m = _FAST.fullmatch(chunk)
    if m is not None and m.group(1).lower() != "cannot":
        word, punct = m.group(1).lower(), m.group(2)
        return (word, punct) if punct else (word,)
    return tuple(_scan(chunk, next_class))


def ptb_tokens(text: str) -> list[str]:
    """All PTB tokens of ``text``, lower-cased, punctuation included."""
    text = text.translate(_CHAR_MAP)
    if "/" in text:
        text = _FRAC_SPACE.sub(rf"\1{_NBSP_MARK}\2", text)
    out: list[str] = []
    matches = list(_CHUNK.finditer(text))
    for i, m in enumerate(matches):
        chunk = m.group()
        nxt = _next_class(matches[i + 1].group()) if (chunk[-1] == "." and i + 1 < len(matches)) else ""
        out.extend(_chunk_tokens(chunk, nxt))
    return out


def ptb_tokenize(text: str) -> str:
    """pycocoevalcap's tokenised form of ``text``: lower-cased PTB tokens without punctuation, space-joined."""
    return " ".join(t for t in ptb_tokens(text) if t not in PTB_PUNCTUATION)


def ptb_tokenize_many(texts: Iterable[str]) -> list[str]:
    """:func:`ptb_tokenize` of each text."""
    return [ptb_tokenize(t) for t in texts]
