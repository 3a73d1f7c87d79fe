"""Tolerant parsing of raw model text into a `Critique`.

Constrained decoding makes a model's output valid JSON by construction (docs/generation.md); this
is the second line for backends without grammar support, where a model wraps its JSON in
prose or a Markdown fence, or runs out of tokens mid-object. `parse_critique` tries, in
order: the text as-is, the content of each code fence, each balanced JSON object in the
text, and a repair of a cut-off object. The first candidate that validates wins; otherwise
the problems of the most critique-like candidate are raised as one `CritiqueParseError`.

The parser is tolerant of syntax, not of content: the computed fields (`overall_score`,
`overall_grade`, `expected_score`) are dropped because Mondrian never trusts them, keys and
scores get light normalisation, and everything else must match the schema. Whatever the
input, the only exception that leaves `parse_critique` is `CritiqueParseError`, and the work
is linear in the input, which is capped at `MAX_INPUT_CHARS`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mondrian.errors import InvalidInput
from mondrian.schema import DIMENSIONS, Critique

# A critique is well under 10k characters; 200k leaves room for a chatty model while
# bounding the time a hostile or runaway output can cost.
MAX_INPUT_CHARS = 200_000
# A critique nests three levels deep; anything far deeper is not a critique, and refusing it
# early keeps json and pydantic away from their recursion limits.
MAX_DEPTH = 64
# How many fences and '{' positions are tried: prose may hold stray braces before the JSON,
# but never dozens of them.
MAX_FENCES = 8
MAX_STARTS = 16
# Total scanner/tokenizer steps (a string, a bracket or a token each) for one call. A
# critique takes a few hundred; the cap keeps a hostile input well under a second.
MAX_SCAN_STEPS = 100_000
# Problems shown in the message; `.problems` keeps them all.
MAX_PROBLEMS_SHOWN = 12

_TOP_FIELDS = ("image_description", "dimensions", "strengths", "improvements")
_TOP_COMPUTED = ("overall_score", "overall_grade")
_DIM_FIELDS = ("score", "comment", "recommendation")
_DIM_COMPUTED = ("expected_score",)
_LIST_FIELDS = ("strengths", "improvements")


class CritiqueParseError(InvalidInput):
    """Model output that could not be turned into a valid critique.

    `problems` lists what was wrong or missing, one item each; the message joins them.
    """

    code = "invalid_critique"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems) or ["unparseable output"]
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        message = "; ".join(shown)
        if len(self.problems) > len(shown):
            message += f"; and {len(self.problems) - len(shown)} more"
        super().__init__(message)


def parse_critique(text: str) -> Critique:
    """The critique in `text`, or `CritiqueParseError` saying what was wrong or missing."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise CritiqueParseError([f"expected text, got {type(text).__name__}"])
    if len(text) > MAX_INPUT_CHARS:
        raise CritiqueParseError(
            [f"output too long: {len(text)} characters (limit {MAX_INPUT_CHARS})"]
        )
    if not text.strip():
        raise CritiqueParseError(["empty output"])

    best: tuple[tuple[int, int], list[str]] | None = None
    json_error: str | None = None  # from the first critique-like text that is not JSON
    any_json_error: str | None = None  # from the first object-like one
    budget = _Budget(MAX_SCAN_STEPS)
    unloadable: set[str] = set()
    for candidate in _candidates(text, budget, unloadable):
        try:
            value = _loads(candidate.text)
        except _JSONProblem as exc:
            unloadable.add(candidate.text)
            if json_error is None and _mentions_critique_keys(candidate.text):
                json_error = str(exc)
            if any_json_error is None and candidate.text.startswith("{"):
                any_json_error = str(exc)
            continue
        critique, problems = _validate(value)
        if critique is not None:
            return critique
        likeness = _critique_likeness(value)
        if candidate.truncated:
            # A cut-off object is the likeliest failure, even when cut before its first key.
            likeness = 0
            problems = ["output was cut off before the JSON object ended", *problems]
        rank = (likeness, len(problems))
        if best is None or rank < best[0]:
            best = (rank, problems)

    # A critique-like object beats a syntax error; a syntax error in the critique beats
    # whatever small object could be parsed from inside it.
    if best is not None and (best[0][0] == 0 or json_error is None):
        raise CritiqueParseError(best[1])
    if json_error is not None:
        raise CritiqueParseError([f"no valid JSON object found: {json_error}"])
    if "{" not in text:
        raise CritiqueParseError(["no JSON object found"])
    if budget.exhausted:
        raise CritiqueParseError(["no valid JSON object found within the scanning budget"])
    detail = f": {any_json_error}" if any_json_error else ""
    raise CritiqueParseError([f"no valid JSON object found{detail}"])


# --- candidates --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    text: str
    truncated: bool = False


class _Budget:
    def __init__(self, steps: int) -> None:
        self.left = steps
        self.exhausted = False

    def spend(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.exhausted = True
        return not self.exhausted


# A fence: ``` with an optional language tag on its own line, up to the closing ``` or the
# end of the text (a model that runs out of tokens never closes its fence).
_FENCE = re.compile(r"```[ \t]*(?:[A-Za-z0-9_+.-]+[ \t]*(?=\r?\n))?(.*?)(?:```|\Z)", re.S)


def _candidates(text: str, budget: _Budget, unloadable: set[str]) -> Iterator[_Candidate]:
    """Candidate JSON texts in the order they are tried, without repeats.

    The caller adds to `unloadable` each candidate that is not JSON; a balanced object is
    repaired only then (a trailing comma keeps it balanced but makes it invalid).
    """
    seen: set[str] = set()

    def fresh(candidate: _Candidate) -> bool:
        if not candidate.text or candidate.text in seen:
            return False
        seen.add(candidate.text)
        return True

    stripped = text.strip().lstrip("\ufeff")
    as_is = _Candidate(stripped)
    if fresh(as_is):
        yield as_is

    for n, match in enumerate(_FENCE.finditer(text)):
        if n >= MAX_FENCES:
            break
        fenced = _Candidate(match.group(1).strip())
        if fresh(fenced):
            yield fenced

    # Balanced objects first, repairs after: a repair only when nothing complete worked.
    to_repair: list[tuple[int, int]] = []  # (start, end) of the object
    pos = text.find("{")
    starts = 0
    while pos != -1 and starts < MAX_STARTS and not budget.exhausted:
        starts += 1
        status, end = _scan_object(text, pos, budget)
        if status == "balanced":
            balanced = _Candidate(text[pos:end])
            if fresh(balanced):
                yield balanced
            if balanced.text in unloadable:
                # Not JSON: it may be prose braces around the object, so look inside it.
                to_repair.append((pos, end))
                pos = text.find("{", pos + 1)
            else:
                pos = text.find("{", end)
        else:
            if status == "open":
                to_repair.append((pos, end))
            pos = text.find("{", pos + 1)

    # Once an object is repaired into JSON, the objects inside it are only parts of it.
    covered_until = -1
    for pos, end in to_repair:
        if budget.exhausted:
            break
        if pos < covered_until:
            continue
        repaired = _repair(text, pos, budget)
        if repaired is not None and fresh(repaired):
            yield repaired
            if repaired.text not in unloadable:
                covered_until = end


# Outside strings only quotes and brackets matter.
_OUTSIDE = re.compile(r'["{}\[\]]')
# The rest of a string up to its closing quote; a backslash escapes whatever follows it.
# Written as an unrolled loop so that the regex engine runs it in linear time.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_CLOSER = {"{": "}", "[": "]"}


def _scan_object(text: str, start: int, budget: _Budget) -> tuple[str, int]:
    """Match the '{' at `start` to its '}', respecting strings and escapes.

    Returns ("balanced", end), or ("open", len) when the text ends first, or
    ("mismatch" | "deep" | "budget", where it stopped).
    """
    stack: list[str] = []
    i = start
    while True:
        if not budget.spend():
            return "budget", i
        m = _OUTSIDE.search(text, i)
        if m is None:
            return "open", len(text)
        char, i = m.group(), m.end()
        if char == '"':
            i = _skip_string(text, i, budget)
            if i < 0:
                return ("budget" if budget.exhausted else "open"), len(text)
        elif char in "{[":
            stack.append(char)
            if len(stack) > MAX_DEPTH:
                return "deep", i
        elif not stack or _CLOSER[stack.pop()] != char:
            return "mismatch", i
        elif not stack:
            return "balanced", i


def _skip_string(text: str, i: int, budget: _Budget) -> int:
    """Index just past the closing quote of the string whose body starts at `i`, else -1."""
    if not budget.spend():
        return -1
    m = _STRING_REST.match(text, i)
    return m.end() if m else -1


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERAL = re.compile(r"true|false|null")
_SPACE = re.compile(r"\s*")
# What a number or literal cut off mid-token can look like.
_PARTIAL_TOKEN = re.compile(r"[-+0-9.eE]*|[a-z]*")
# The tail of a string cut off inside an escape: "\u", "\u0", ... and a high surrogate
# whose low half was cut (json would decode it to a lone surrogate).
_PARTIAL_ESCAPE_TAIL = re.compile(r"u(?:[0-9a-fA-F]{0,3}|[dD][89abAB][0-9a-fA-F]{2})\Z")


def _repair(text: str, start: int, budget: _Budget) -> _Candidate | None:
    """Re-emit the JSON object at `start`, closing what a cut left open.

    Tokenizes strictly (garbage means it was not a cut-off JSON object: no repair) with two
    tolerances: trailing commas are dropped, and at the end of the text the output goes
    back to the last point where the document was whole (so a dangling key, a comma, or a
    number that may have lost digits go), then an open string value is closed and the open
    arrays and objects are closed.
    """
    pieces: list[str] = []
    # Each frame is [kind, state]; states say what may come next.
    frames: list[list[str]] = []
    safe_len, safe_closers = 0, ""  # the last point where cutting gives valid JSON
    n = len(text)
    i = start

    def closers() -> str:
        return "".join(_CLOSER[kind] for kind, _ in reversed(frames))

    def in_value_position() -> bool:
        return bool(frames) and frames[-1][1] in ("value", "value_or_end")

    def value_done() -> bool:
        """After a complete value; True when it closed the top-level object."""
        nonlocal safe_len, safe_closers
        if not frames:
            return True
        frames[-1][1] = "comma_or_end"
        safe_len, safe_closers = len(pieces), closers()
        return False

    while True:
        if not budget.spend():
            return None
        i = _SPACE.match(text, i).end()
        if i >= n:
            break
        char = text[i]
        state = frames[-1][1] if frames else "value"

        if char in "{[":
            if frames and not in_value_position():
                return None
            if len(frames) >= MAX_DEPTH:
                return None
            frames.append([char, "key_or_end" if char == "{" else "value_or_end"])
            pieces.append(char)
            i += 1
            safe_len, safe_closers = len(pieces), closers()
        elif char in "}]":
            if not frames or _CLOSER[frames[-1][0]] != char:
                return None
            if state in ("key", "value") and pieces and pieces[-1] == ",":
                pieces.pop()  # trailing comma
            elif state not in ("key_or_end", "value_or_end", "comma_or_end"):
                return None
            frames.pop()
            pieces.append(char)
            i += 1
            if value_done():
                return _Candidate("".join(pieces))
        elif char == ",":
            if state != "comma_or_end":
                return None
            frames[-1][1] = "key" if frames[-1][0] == "{" else "value"
            pieces.append(char)
            i += 1
        elif char == ":":
            if state != "colon":
                return None
            frames[-1][1] = "value"
            pieces.append(char)
            i += 1
        elif char == '"':
            end = _skip_string(text, i + 1, budget)
            is_key = state in ("key", "key_or_end")
            if not is_key and not in_value_position():
                return None
            if end < 0:
                if budget.exhausted:
                    return None
                closed = _close_string(text[i:])
                if is_key or not closed[1:-1].strip():
                    break  # a dangling key or an empty value: back to the last safe point
                pieces.append(closed)
                value_done()
                break
            pieces.append(text[i:end])
            i = end
            if is_key:
                frames[-1][1] = "colon"
            elif value_done():
                return _Candidate("".join(pieces))
        else:
            m = _NUMBER.match(text, i) or _LITERAL.match(text, i)
            if m is None or m.end() >= n:
                if _PARTIAL_TOKEN.fullmatch(text, i):
                    break  # cut inside a number or literal
                return None
            if not in_value_position():
                return None
            pieces.append(m.group())
            i = m.end()
            value_done()

    if not frames or not safe_len:
        return None
    return _Candidate("".join(pieces[:safe_len]) + safe_closers, truncated=True)


def _close_string(body: str) -> str:
    """Close a string value cut off at the end of the text, dropping a half-written escape."""
    m = _PARTIAL_ESCAPE_TAIL.search(body, max(0, len(body) - 5))
    if m and _odd_backslashes_before(body, m.start()):
        body = body[: m.start() - 1]
    if _odd_backslashes_before(body, len(body)):
        body = body[:-1]
    return body + '"'


def _odd_backslashes_before(body: str, end: int) -> bool:
    """Whether body[:end] ends in an escaping backslash (an odd run of them)."""
    prefix = body[:end]
    return (len(prefix) - len(prefix.rstrip("\\"))) % 2 == 1


# --- JSON --------------------------------------------------------------------------------


class _JSONProblem(Exception):
    pass


def _parse_int(digits: str) -> int | float:
    # int() refuses over 4300 digits with ValueError; such a number is no score anyway.
    return int(digits) if len(digits) <= 100 else float(digits)


def _loads(candidate: str) -> Any:
    # Counting is C-fast; the exact scan runs only when the count leaves it possible.
    openers = candidate.count("{") + candidate.count("[")
    if openers > MAX_DEPTH and candidate[:1] in "{[" and _too_deep(candidate):
        raise _JSONProblem(f"nested more than {MAX_DEPTH} levels deep")
    try:
        # strict=False: raw newlines inside strings are common in model output.
        return json.loads(candidate, strict=False, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise _JSONProblem(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _JSONProblem(f"invalid JSON ({type(exc).__name__})") from None


def _too_deep(candidate: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_DEPTH."""
    depth = 0
    i = 0
    budget = _Budget(len(candidate) + 1)  # one step per character at most: linear
    while True:
        m = _OUTSIDE.search(candidate, i)
        if m is None:
            return False
        char, i = m.group(), m.end()
        if char == '"':
            i = _skip_string(candidate, i, budget)
            if i < 0:
                return False
        elif char in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1


# --- validation --------------------------------------------------------------------------


def _validate(value: Any) -> tuple[Critique | None, list[str]]:
    """Normalise a decoded JSON value and validate it as a Critique."""
    if not isinstance(value, dict):
        return None, [f"expected a JSON object, got {_json_type(value)}"]
    problems: list[str] = []
    top = _normalise_keys(value, "", problems)
    top = _unwrap(top, problems)

    data: dict[str, Any] = {}
    for key, item in top.items():
        if key in _TOP_COMPUTED:
            continue  # Mondrian computes these; whatever the model wrote is ignored
        if key in _TOP_FIELDS:
            data[key] = item
        else:
            problems.append(f"unexpected key: {_show_key(key)}")

    if "image_description" in data:
        data["image_description"] = _clean_text(data["image_description"])
    else:
        problems.append("missing image_description")

    if "dimensions" not in data:
        problems.append("missing dimensions")
    elif isinstance(data["dimensions"], dict):
        data["dimensions"] = _check_dimensions(data["dimensions"], problems)
    else:
        problems.append(f"dimensions: must be an object, got {_json_type(data['dimensions'])}")
        del data["dimensions"]

    for key in _LIST_FIELDS:
        if key not in data:
            continue
        items = data[key]
        if items is None:
            items = []
        elif isinstance(items, str):
            items = [items]  # one strength written as a bare string
        if isinstance(items, list):
            items = [_clean_text(item) for item in items]
        data[key] = items

    try:
        critique = Critique.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False, include_context=True):
            # Missing and unknown keys were reported above, in the schema's words.
            if err["type"] in ("missing", "extra_forbidden"):
                continue
            problems.append(f"{_path(err['loc'])}: {_describe(err)}")
        return None, problems or ["does not match the critique schema"]
    if problems:
        return None, problems
    return critique, []


def _check_dimensions(raw: dict, problems: list[str]) -> dict[str, Any]:
    dims = _normalise_keys(raw, "dimensions", problems)
    missing = [key for key in DIMENSIONS if key not in dims]
    unexpected = [key for key in dims if key not in DIMENSIONS]
    if missing:
        problems.append("missing dimensions: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected dimensions: " + ", ".join(_show_key(k) for k in unexpected))

    out: dict[str, Any] = {}
    for key in DIMENSIONS:
        if key not in dims:
            continue
        path = f"dimensions.{key}"
        dim = dims[key]
        if not isinstance(dim, dict):
            problems.append(f"{path}: must be an object, got {_json_type(dim)}")
            continue
        dim = _normalise_keys(dim, path, problems)
        clean: dict[str, Any] = {}
        for field, item in dim.items():
            if field in _DIM_COMPUTED:
                continue
            if field not in _DIM_FIELDS:
                problems.append(f"{path}: unexpected key: {_show_key(field)}")
            elif field == "score":
                score, problem = _normalise_score(item)
                if problem:
                    problems.append(f"{path}.score: {problem}")
                else:
                    clean["score"] = score
            else:
                clean[field] = _clean_text(item)
        absent = [field for field in _DIM_FIELDS if field not in dim]
        if absent:
            problems.append(f"{path}: missing " + ", ".join(absent))
        out[key] = clean
    return out


def _normalise_keys(obj: dict, path: str, problems: list[str]) -> dict[str, Any]:
    """Keys as the schema spells them: 'Focus Sharpness' and 'focus-sharpness' both match."""
    out: dict[str, Any] = {}
    for raw_key, item in obj.items():
        key = raw_key.strip().lower().replace(" ", "_").replace("-", "_")
        if key in out:
            where = f"{path}: " if path else ""
            problems.append(f"{where}duplicate key: {_show_key(key)}")
            continue
        out[key] = item
    return out


def _unwrap(top: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The critique inside a one-key wrapper such as {"critique": {...}}."""
    if "dimensions" in top or len(top) != 1:
        return top
    (inner,) = top.values()
    if isinstance(inner, dict):
        inner_problems: list[str] = []
        normalised = _normalise_keys(inner, "", inner_problems)
        if "dimensions" in normalised:
            problems.extend(inner_problems)
            return normalised
    return top


_SCORE_TEXT = re.compile(r"([+-]?[0-9]{1,6})(?:\.0*)?(?:\s*/\s*10)?")


def _normalise_score(value: Any) -> tuple[int | None, str | None]:
    """An integer score from 7, 7.0, "7" or "7/10"; a problem for anything else."""
    score: int | None = None
    if isinstance(value, bool):
        pass  # a JSON boolean is no score, though Python counts it as an int
    elif isinstance(value, int):
        score = value
    elif isinstance(value, float):
        if value == value and abs(value) != float("inf") and value.is_integer():
            score = int(value)
    elif isinstance(value, str):
        m = _SCORE_TEXT.fullmatch(value.strip())
        if m:
            score = int(m.group(1))
    if score is None:
        return None, f"must be an integer from 0 to 10, got {_show_value(value)}"
    if not 0 <= score <= 10:
        return None, f"must be between 0 and 10, got {_show_value(value)}"
    return score, None


_LINE_BREAKS = re.compile(r"[\t\r\n]+")


def _clean_text(value: Any) -> Any:
    # Line breaks and tabs become spaces; the schema forbids control characters.
    return _LINE_BREAKS.sub(" ", value) if isinstance(value, str) else value


def _mentions_critique_keys(candidate: str) -> bool:
    return '"dimensions"' in candidate or '"image_description"' in candidate


def _critique_likeness(value: Any) -> int:
    """0 for an object with critique keys, 1 for another object, 2 for anything else."""
    if not isinstance(value, dict):
        return 2
    keys = {k.strip().lower() for k in value}
    if keys & {"dimensions", "image_description"}:
        return 0
    inner = next(iter(value.values()), None) if len(value) == 1 else None
    if isinstance(inner, dict) and "dimensions" in inner:
        return 0
    return 1


# --- messages ----------------------------------------------------------------------------


def _describe(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return "must not contain control characters"
    if kind == "string_type":
        return "must be a string"
    if kind == "string_unicode":
        return "must be valid Unicode text"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "list_type":
        return "must be a list of strings"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object"
    return str(err.get("msg", kind))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "critique"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show_key(key: str) -> str:
    # ascii(): a key with lone surrogates or control characters must not break a log line.
    return ascii(key if len(key) <= 40 else key[:40] + "...")


def _show_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # ints are short: _parse_int turns long ones into floats
    if isinstance(value, str):
        return _show_key(value)
    return _json_type(value)
