"""How deep a JSON or YAML document nests and how many values it holds, counted in one
linear pass over its bytes before any parser builds an object from them.

Why a pass before the parsers: json and PyYAML turn every value into a Python object, and
what comes after them (the type boundary, the schemas, the checks, the tree copied into
every version directory, its drive checks) walks those objects again and again. A 4 MiB
meta_data.json of ``[{}, {}, ...]`` (a million empty objects) took 27-87 s and 420-566
MiB to build; 40 KB of ``[`` as a network-config kept PyYAML's scanner busy for 64-105 s
(it looks at every open flow level for every token: quadratic in the depth). Counting
costs one regular-expression match per token, and stops at the first value over a limit.

The limits are far beyond any real metadata document and low enough that everything
downstream stays within seconds and a few hundred MiB (docs/THREATS.md, "Documents:
depth and values against bytes"):

- depth 64: nova's documents nest 4 levels (network_data.json: /networks/0/routes/0/...),
  a cloud-config in an ironic object a few more; every walker recurses per level.
- 100,000 values (keys, items and scalars, the containers included) per document: a
  network_data.json with 1,000 links and 1,000 networks, each with routes and DNS, holds
  40,000; a document at the limit is parsed, type-checked, validated and laid out into
  every version directory in a few seconds.
- 500,000 values in the distinct documents of one drive (MAX_DRIVE_VALUES), which
  ``validate`` and ``build`` check one by one: a drive's 64 MiB could hold 55 distinct
  documents at the limit above, a minute of checks.

The scan never counts fewer levels or values than the parser builds (tests/fuzz/
test_docscan.py): JSON levels exactly; YAML a level more where a collection may be a key,
and keys and pairs as values, with the nodes PyYAML fills in where no token shows them (a
pair in a flow sequence is a mapping; a flow mapping's entry may lack its key or value; a
tag or an anchor may stand for an empty scalar). For a broken document it may count more,
or stop at an unterminated string; the parser then reports the syntax error.
"""

from __future__ import annotations

import re

from ..errors import ConfigDriveError

MAX_DEPTH = 64
MAX_VALUES = 100_000
# What the checks of one drive read in all: its distinct documents (each is checked once,
# however many version directories hold a copy), every value walked by jsonschema at about
# 7 us. A build's drive has up to five variants of meta_data.json (version-gated keys).
MAX_DRIVE_VALUES = 5 * MAX_VALUES


def check_json(data: bytes, source: str) -> int:
    """Refuse (one line naming ``source``, the count and the limit) a JSON document that
    nests deeper than MAX_DEPTH or holds more than MAX_VALUES values; else its values."""
    counter = _Counter("JSON", source)
    for match in _JSON_TOKEN.finditer(data):
        at = match.start()
        first = data[at]
        if first in _OPEN:
            counter.open(at)
        elif first in _CLOSE:
            counter.depth -= 1
        elif first == _QUOTE and match.end() - match.start() == 1:
            break           # an unterminated string: the parser names where
        else:
            counter.value(at)
    return counter.values


def check_yaml(data: bytes, source: str) -> None:
    """The same for a YAML document: block collections (by indentation and ``-``, ``?``,
    ``key:``), flow collections (``[`` and ``{``), scalars, aliases; strings, comments and
    block scalars (``|``, ``>``) are skipped as PyYAML skips them."""
    # Two marks at most are skipped, as the reader skips them: the decode (utf-8-sig) takes
    # one and PyYAML's scanner a second at its first character. Taking only one made a
    # second mark the start of a plain scalar running to the end, hiding the document.
    bom = 0
    while bom < 2 * len(_BOM) and data.startswith(_BOM, bom):
        bom += len(_BOM)
    _YamlScan(_line_breaks_as_newlines(data[bom:]), _Counter("YAML", source, bom)).run()


class _Counter:
    """Values and the depth open now; ``deepest`` is what the property tests compare with
    the parsers' results."""

    def __init__(self, language: str, source: str, offset: int = 0):
        self.language, self.source, self.offset = language, source, offset
        self.depth = self.values = self.deepest = 0

    def open(self, at: int) -> None:
        self.depth += 1
        self.value(at)
        self.deep(self.depth, at)

    def deep(self, depth: int, at: int) -> None:
        self.deepest = max(self.deepest, depth)
        if depth > MAX_DEPTH:
            raise ConfigDriveError(f"{self.source}: byte {at + self.offset}: {self.language} nested deeper than {MAX_DEPTH} "
                                   "levels (a metadata document needs a few)")

    def value(self, at: int) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise ConfigDriveError(f"{self.source}: byte {at + self.offset}: more than {MAX_VALUES} {self.language} values "
                                   f"(keys, items and scalars: a metadata document holds at most {MAX_VALUES})")


_OPEN, _CLOSE, _QUOTE = b"[{", b"]}", ord('"')
# A string (escapes included), a bracket, a scalar; a lone quote is a string left open.
# Possessive quantifiers: a 57 MiB string with an escape every 4 bytes is skipped in
# 0.9 s, where the plain form takes 5.4 s keeping the places to backtrack to.
_JSON_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|"|[\[{\]}]|[^\s"\[\]{}:,]++', re.DOTALL)


_BOM = b"\xef\xbb\xbf"


def _line_breaks_as_newlines(data: bytes) -> bytes:
    """PyYAML also breaks lines at CR, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR: a
    scan that missed one would read a nested block mapping as one plain scalar. Each
    becomes a newline after spaces (CR LF two newlines: one more blank line), so that byte
    offsets stay the file's."""
    for other in (b"\r", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9"):
        if other in data:
            data = data.replace(other, b" " * (len(other) - 1) + b"\n")
    return data


_SPACES = re.compile(rb"[ \t]*")
_INDENT = re.compile(rb" *")
# Lines that hold nothing: blank, or only a comment.
_EMPTY_LINES = re.compile(rb"(?:[ \t]*(?:#[^\n]*)?\n)*")
_DOCUMENT_MARKER = re.compile(rb"(?:---|\.\.\.)(?=[ \t\n]|\Z)")
_DIRECTIVE = re.compile(rb"%[^\n]*")
_DOUBLE_QUOTED = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_SINGLE_QUOTED = re.compile(rb"'[^']*+(?:''[^']*+)*+'")
# An anchor, a tag or an alias. An anchor's or alias's name is letters, digits, "-" and
# "_" (scanner.py scan_anchor): "[*x: a]" is a pair, its ":" no part of the name. A tag
# runs to a blank, flow indicators included (scan_tag_uri takes ",[]"; anything else
# before the blank is an error): "[a: !!str, []]" is one pair, its value "[]".
_PROPERTY = re.compile(rb"[&*][0-9A-Za-z_-]*|![^ \t\n]*")
# Where a plain scalar ends: in block context at ": " or " #" or the line's end; in flow
# context at a flow indicator too. Searched for, not matched character by character: 60
# MiB of ":a:a..." took 10 s as an alternation, 1.6 s so.
_BLOCK_PLAIN_END = re.compile(rb":(?=[ \t\n]|\Z)|[ \t]#|\n")
_FLOW_PLAIN_END = re.compile(rb":(?=[ \t\n,\[\]{}]|\Z)|[ \t]#|[\n,\[\]{}]")
_BLOCK_SCALAR_HEADER = re.compile(rb"[|>][-+0-9]*[ \t]*(?:#[^\n]*)?(?=\n|\Z)")


def _block_scalar_end(data: bytes, start: int, parent: int, header: bytes) -> int:
    """Where the block scalar whose content lines begin at ``start`` ends, by PyYAML's rule
    (scanner.py scan_block_scalar): its lines are blank or indented as far as its
    indentation indicator says, or else as far as the furthest of its leading blank lines
    and its first line of text, and at least one column past its parent (at ``parent``)."""
    least = max(parent + 1, 1)
    digits = [c - 0x30 for c in header if 0x31 <= c <= 0x39]
    if digits:
        indent = least + digits[0] - 1
    else:
        leading = _LEADING_SPACES.match(data, start).group()
        indent = max(least, *map(len, leading.split(b"\n")))
    return re.compile(rb"(?:(?: {%d}[^\n]*|[ \t]*)(?:\n|\Z))*" % indent).match(data, start).end()


_LEADING_SPACES = re.compile(rb"[ \n]*")


class _YamlScan:
    """A scan of YAML's structure as PyYAML's scanner sees it. Block collections are a
    stack of (column, kind); flow collections a depth on top of it."""

    def __init__(self, data: bytes, counter: _Counter):
        self.data, self.counter = data, counter
        self.pos = 0
        self.blocks: list[tuple[int, str]] = []

    def run(self) -> None:
        data, end = self.data, len(self.data)
        while self.pos < end:
            line_start = self.pos = _EMPTY_LINES.match(data, self.pos).end()
            if self.pos >= end:
                break
            marker = _DOCUMENT_MARKER.match(data, self.pos) or _DIRECTIVE.match(data, self.pos)
            if marker:
                # a new document, its structure afresh; "---" lines alone are empty documents
                self.blocks.clear()
                self.counter.value(self.pos)
                self.pos = _SPACES.match(data, marker.end()).end()
            else:
                self.pos = _INDENT.match(data, self.pos).end()
            self.line(self.pos - line_start)

    def block(self, column: int, kind: str) -> None:
        """A block collection entry at ``column``: entries at deeper columns are closed, and
        one of the same kind at the same column is its sibling. A sequence may sit at its
        mapping key's column ("key:\\n- a"), so a mapping there stays open for it."""
        blocks = self.blocks
        while blocks and (blocks[-1][0] > column
                          or blocks[-1][0] == column and (kind == "map" or blocks[-1][1] == kind)):
            blocks.pop()
        blocks.append((column, kind))
        self.counter.value(self.pos)
        self.counter.deep(len(blocks), self.pos)

    def line(self, column: int) -> None:
        """One line in block context, from its first character to its end (or, when a flow
        collection or a quoted scalar spans lines, to the end of the line that ends it)."""
        data, end = self.data, len(self.data)
        # "- ", "? " and ": " open block entries, and may repeat ("- - x", "- key: v")
        while data[self.pos:self.pos + 1] in (b"-", b"?", b":") and data[self.pos + 1:self.pos + 2] in _BLANK:
            self.block(column, "seq" if data[self.pos] == ord("-") else "key")
            after = _SPACES.match(data, self.pos + 1).end()
            column += after - self.pos
            self.pos = after
        key_seen = False
        while self.pos < end and data[self.pos] != ord("\n"):
            char = data[self.pos]
            if char == ord("#") and data[self.pos - 1] in b" \t\n":
                newline = data.find(b"\n", self.pos)
                self.pos = newline if newline >= 0 else end
                return
            if char == ord(":") and data[self.pos + 1:self.pos + 2] in _BLANK:
                if not key_seen:
                    self.block(column, "map")
                    key_seen = True
                self.pos += 1
            elif char in b"|>" and (header := _BLOCK_SCALAR_HEADER.match(data, self.pos)):
                self.counter.value(self.pos)
                newline = data.find(b"\n", header.end())
                self.pos = _block_scalar_end(data, end if newline < 0 else newline + 1,
                                             self.blocks[-1][0] if self.blocks else -1, header.group())
                return
            else:
                # before its line's ": ", a flow collection may be a key: one level deeper
                self.node(_BLOCK_PLAIN_END, len(self.blocks) + (not key_seen))
            self.pos = _SPACES.match(data, self.pos).end()

    def node(self, plain_end: re.Pattern, levels: int = 0) -> None:
        """One node at ``pos`` below ``levels`` open collections: a flow collection, a
        quoted or plain scalar, or an anchor, tag or alias before one."""
        data, char = self.data, self.data[self.pos]
        if char in b"[{":
            self.flow(levels)
        elif char in b"\"'":
            match = (_DOUBLE_QUOTED if char == ord('"') else _SINGLE_QUOTED).match(data, self.pos)
            self.counter.value(self.pos)
            self.pos = match.end() if match else len(data)   # left open: the parser says where
        elif char in b"&!*":
            # an alias is a node; an anchor or a tag may stand before nothing ("a: !!str",
            # "[&x , y]"), and PyYAML then builds an empty scalar: each is counted as one
            self.counter.value(self.pos)
            self.pos = _PROPERTY.match(data, self.pos).end()
        else:
            self.counter.value(self.pos)
            self.pos = self.plain_end(plain_end)

    def plain_end(self, plain_end: re.Pattern) -> int:
        """Where the plain scalar at ``pos`` ends. PyYAML goes on with it on the next line
        (scanner.py scan_plain, scan_plain_spaces) unless that line holds only a comment,
        is a document marker, begins with what ends a plain scalar, or (in block context)
        is indented no further than the collection around it. What is more of it there, a
        quote included, is text: taken for a quoted scalar, it would hide what follows."""
        data, flow = self.data, plain_end is _FLOW_PLAIN_END
        least = (self.blocks[-1][0] if self.blocks else -1) + 1
        end = plain_end.search(data, self.pos + 1)
        while end and data[end.start()] == ord("\n"):
            more = _SPACES_AND_BREAKS.match(data, end.start()).end()
            if more >= len(data):
                break
            char, line_start = data[more], data.rfind(b"\n", 0, more) + 1
            if char in b"#\t" or more == line_start and _DOCUMENT_MARKER.match(data, more) \
                    or char == ord(":") and data[more + 1:more + 2] in _BLANK + (_FLOW_INDICATORS if flow else ()) \
                    or (char in b",?[]{}" if flow else more - line_start < least):
                break
            self.counter.value(more)   # a line's worth of work, like any other line
            end = plain_end.search(data, more + 1)
        return end.start() if end else len(data)

    def flow(self, base: int) -> None:
        """A flow collection from its ``[`` or ``{`` to the bracket that closes it, across
        lines, below ``base`` levels; comments and quoted scalars in it are skipped.

        What PyYAML builds that no token of its own shows is counted too. An entry of a
        flow sequence with a ``?`` or a ``:`` (in flow context both are indicators wherever
        a token starts, "[?a]" included) is a mapping of one pair: a level more, and a
        mapping node with a key and a value that may both be empty ("[? , a:]"). Its key
        may be a collection already counted one level too shallow ("[[[x]]: y]"), so the
        deepest level of the entry so far is counted again one deeper when its ``:`` comes.
        Every entry of a flow mapping is a key and a value, either perhaps empty ("{a, ?}"):
        one value more per entry."""
        data, counter = self.data, self.counter
        # one _Flow per open collection, innermost last; ``level`` is the depth of what an
        # entry of the innermost one opens, less one
        frames: list[_Flow] = []
        level = base
        while self.pos < len(data):
            char = data[self.pos]
            if char in b" \t\n":
                self.pos = _FLOW_SPACES.match(data, self.pos).end()
                continue
            if char == ord("#") and data[self.pos - 1] in b" \t\n":
                newline = data.find(b"\n", self.pos)
                self.pos = newline if newline >= 0 else len(data)
                continue
            frame = frames[-1] if frames else None
            if char in b"]},":
                if frame is None:       # a stray closer before any opener: the parser says
                    self.pos += 1
                    return
                if frame.pair:
                    level -= 1
                frame.deepest = max(frame.deepest, frame.entry)
                frame.pair, frame.started, frame.entry = False, False, level
                self.pos += 1
                if char == ord(","):
                    continue
                frames.pop()
                level -= 1
                if not frames:
                    return
                frames[-1].entry = max(frames[-1].entry, frame.deepest)
                continue
            if frame is not None and not frame.started:
                frame.started = True
                if frame.mapping:
                    counter.value(self.pos)     # its key or its value may be empty
            if char in b"[{":
                level += 1
                counter.value(self.pos)
                counter.deep(level, self.pos)
                frames.append(_Flow(char == ord("{"), level))
                self.pos += 1
            elif char in b":?":
                counter.value(self.pos)
                if frame is not None and not frame.mapping and not frame.pair:
                    frame.pair = True
                    frame.entry += 1
                    level += 1
                    counter.deep(frame.entry, self.pos)
                    counter.value(self.pos)     # the mapping,
                    counter.value(self.pos)     # and its key or value, perhaps empty
                self.pos += 1
            else:
                self.node(_FLOW_PLAIN_END)


class _Flow:
    """An open flow collection: a mapping or a sequence; whether the sequence's entry now
    read is a pair; the deepest level reached in that entry and in the whole collection."""

    __slots__ = ("mapping", "started", "pair", "entry", "deepest")

    def __init__(self, mapping: bool, level: int):
        self.mapping, self.started, self.pair = mapping, False, False
        self.entry = self.deepest = level


_BLANK = (b" ", b"\t", b"\n", b"")
_FLOW_INDICATORS = (b",", b"[", b"]", b"{", b"}")
_SPACES_AND_BREAKS = re.compile(rb"[ \n]*")
_FLOW_SPACES = re.compile(rb"[ \t\n]+")
