"""docscan (configdrive/documents/docscan.py) against the parsers it stands in front of.

- For any document json or PyYAML reads, the scan counts no fewer levels and values than
  the parser builds (JSON: exactly as many levels), so a document the scan lets through
  is within the limits whatever its layout: block or flow style, any indentation and
  width, keys and strings full of YAML's indicators, line breaks only YAML knows.
- Bombs within the caps, shaped by hypothesis (depth, width, container, style), are
  refused or processed by every library entry point that reads a document within 10 s of
  CPU and 400 MiB (a hang guard, not a benchmark: a refusal takes well under a second).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from configdrive.documents import docscan
from configdrive.model.content import Content
from configdrive.drives.drive import Drive
from configdrive.drives.drivecheck import validate_drive
from configdrive.errors import ConfigDriveError
from configdrive.documents.jsondoc import parse_json
from configdrive.model.layout import build_tree
from configdrive.model.nocloud import parse_network_config, seed_problems, summary_fields
from configdrive.documents.schema import parse_checked
from configdrive.documents.validate import validate_bytes

sys.path.insert(0, str(Path(__file__).parents[1] / "hostile"))
import bombs  # noqa: E402

# Characters that mean something to a YAML or JSON scanner, and line breaks only YAML has.
TRICKY = "ab -:#[]{},&*!|>'\"\n\t?%@`\\.\u2028\x85\r"
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(TRICKY, max_size=8))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(TRICKY, max_size=6), inner, max_size=4), max_leaves=40)


def counted(check, data: bytes) -> docscan._Counter:
    """The scan's counter (depth reached, values) with limits out of the way."""
    counters = []
    real = docscan._Counter

    class Spy(real):
        def __init__(self, *args):
            super().__init__(*args)
            counters.append(self)
    docscan._Counter = Spy
    limits = docscan.MAX_DEPTH, docscan.MAX_VALUES
    docscan.MAX_DEPTH = docscan.MAX_VALUES = 10**9
    try:
        check(data, "doc")
    finally:
        docscan._Counter = real
        docscan.MAX_DEPTH, docscan.MAX_VALUES = limits
    return counters[0]


def composed(text: str) -> tuple[int, int]:
    """Levels of collections and nodes (keys included) of what PyYAML composes, over every
    document of the stream."""
    deepest = count = 0
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        depth, nodes = node_depth_and_count(node)
        deepest, count = max(deepest, depth), count + nodes
    return deepest, count


def node_depth_and_count(node) -> tuple[int, int]:
    deepest, count, stack = 0, 0, [(node, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in node.value for part in pair)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest, count


def json_depth(doc) -> int:
    deepest, stack = 0, [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


@settings(max_examples=400, deadline=None)
@given(doc=documents, style=st.sampled_from([None, False, True]), width=st.sampled_from([8, 40, 10**6]),
       indent=st.sampled_from([2, 3, 4]), line_break=st.sampled_from(["\n", "\r\n", "\r"]))
def test_yaml_scan_never_counts_less_than_pyyaml_builds(doc, style, width, indent, line_break):
    text = yaml.safe_dump(doc, default_flow_style=style, width=width, indent=indent, line_break=line_break,
                          allow_unicode=True)
    depth, count = composed(text)
    counter = counted(docscan.check_yaml, text.encode())
    assert counter.deepest >= depth and counter.values >= count, (text, depth, count)


# Flow forms yaml.safe_dump never writes, where PyYAML builds nodes no token shows: a
# pair in a flow sequence is a mapping of its own ("[a: b]", "[? x]", "[?]"), an entry of a
# flow mapping may lack its key or its value ("{a, ? , : b}"), a tag may stand for an
# empty scalar ("[!!str ]"). Texts PyYAML refuses are left out.
flow_scalars = st.sampled_from(["a", "'q:'", '"d,"', "1", "!!str", "!t a", "*x"])
flow_keys = st.sampled_from(["a", "'k'", "!!str", ""])


def _flow_collections(inner):
    pair = st.tuples(st.sampled_from(["{k}: {v}", "? {k} : {v}", "? {k}", "{k}:", "?", "? : {v}", "{k} :{v}"]),
                     inner | flow_keys, inner | flow_keys).map(lambda p: p[0].format(k=p[1], v=p[2]))
    sequence = st.lists(inner | pair, max_size=4).map(lambda items: "[" + ", ".join(items) + "]")
    mapping = st.lists(inner | pair, max_size=4).map(lambda items: "{" + ", ".join(items) + "}")
    return sequence | mapping


flow_texts = st.recursive(flow_scalars, _flow_collections, max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(flow=flow_texts, context=st.sampled_from(["{}\n", "x: {}\n", "- {}\n", "? {}\n: y\n", "a:\n  b: {}\n"]),
       line_break=st.sampled_from([" ", "\n  "]))
def test_yaml_scan_never_counts_less_in_flow_forms_pyyaml_fills_in(flow, context, line_break):
    text = "z: &x z\n" + context.format(flow.replace(" ", line_break) if line_break != " " else flow)
    try:
        depth, count = composed(text)
    except yaml.YAMLError:
        assume(False)
    counter = counted(docscan.check_yaml, text.encode())
    assert counter.deepest >= depth and counter.values >= count, (text, depth, count)


@settings(max_examples=400, deadline=None)
@given(doc=documents, indent=st.sampled_from([None, 0, 2]))
def test_json_scan_counts_depth_exactly(doc, indent):
    data = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    counter = counted(docscan.check_json, data)
    assert counter.deepest == json_depth(doc)
    assert counter.values >= 1 + sum(1 for _ in _values(doc))


def _values(doc):
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield from node          # keys
            stack.extend(node.values())
            yield from node.values()
        elif isinstance(node, list):
            stack.extend(node)
            yield from node


# YAML whose structure hides in places a scan must read as PyYAML does.
HAND_WRITTEN = [
    "a: |\n  [[[[ {{{{ - - - x: y\n  # not a comment\nb: [[1]]\n",
    "a: >-\n    text: [x]\n\n    - more\nb:\n- - - c\n",
    "--- |\n [[[[\n--- [[[x]]]\n",
    "a: 'it''s [not] {a} # flow'\nb: \"esc \\\" [x]\"\nc: [d, 'e]', \"f}\"]\n",
    "key:\n- a\n- b:\n  - c\n  - d: [e, {f: g}]\n",
    "? [complex, key]\n: value\n? - x\n  - y\n: - z\n",
    "a: &anchor [x]\nb: !!seq [y]\nc: !tag {d: e}\n",   # aliases: refused by load_yaml
    "a: b # comment [[[[\n# [[[[[\nc: d#not-a-comment [x]\n",
    "a: [x, # comment ]\n  y, z]\n",
    "%YAML 1.1\n---\na:\n  b:\n    c: [d]\n...\n",
    "\ufeffa:\n  b: [c]\n",
    "a:\r\n  b:\r\n    c: [d]\r\n",
    "a:\u2028  b:\u2028    c: d\n",
    "- - - - [x]\n  - y\n",
    "a: \"multi\n  line [with] {brackets}\"\nb: [c]\n",
    "[a, b]: c\n",
    "a: [fe80::1/64, 'k:v', {x: y}, '::1']\nb: ::1\n",
    # flow forms where PyYAML builds more than the tokens show (an attack's finds)
    "x: " + "[a: " * 63 + "1" + "]" * 63,      # each pair a mapping: 127 levels
    "[" + "? ," * 1000 + "]",                   # 1,000 {null: null}
    "{" + ",".join(["a"] * 1000) + "}",         # 1,000 keys, each with a null value
    "a: [?a, b:, ? : c, !!str ]\nd: {? , e, !!str : , ? : f}\n",
]


@pytest.mark.parametrize("text", HAND_WRITTEN, ids=range(len(HAND_WRITTEN)))
def test_yaml_scan_reads_the_hard_places_as_pyyaml(text):
    depth, count = composed(text)
    counter = counted(docscan.check_yaml, text.encode())
    assert depth <= counter.deepest <= depth + 2 and count <= counter.values <= 3 * count + 3, text


def test_a_block_scalar_ends_where_pyyaml_ends_it():
    """Its leading blank lines set its indentation: a line less indented is structure
    again (PyYAML scans it, then refuses the document), and so counted."""
    counter = counted(docscan.check_yaml, b"a: |\n          \n  b: [[[[x]]]]\n")
    assert counter.deepest == 2 + 4


@pytest.mark.parametrize("text", [
    b"a: b\n  \"\nc: [[[[x]]]]\nd: \"\n",               # the quote is more of the plain 'b'
    b"x: [a\n  \", b, [[[[x]]]], \"c\"]\n",              # the same in flow context
    b"x: [[['\n]]]' , [[[[x]]]]]]]\n",                   # closers inside a quoted scalar
], ids=["block", "flow", "closers-quoted"])
def test_quotes_hide_no_nesting(text):
    """What PyYAML reads as structure after a quote is counted, wherever the quote is."""
    assert counted(docscan.check_yaml, text).deepest >= 4


# -- bombs within the caps, through every entry point that reads a document ------------------

CPU_BOUND = 10.0
RSS_BOUND = 400 << 20


def _json_bomb(shape: str, depth: int, width: int) -> bytes:
    item = {"empty-objects": b"{}", "empty-arrays": b"[]", "numbers": b"0", "strings": b'""'}.get(shape, b"{}")
    if shape == "keys":
        wide = b"{" + b",".join(b'"k%d":0' % i for i in range(width)) + b"}"
    else:
        wide = b"[" + b",".join([item] * width) + b"]"
    return b'{"uuid": "%s", "x": ' % bombs.UUID.encode() + b"[" * depth + wide + b"]" * depth + b"}"


def _yaml_bomb(shape: str, depth: int, width: int) -> bytes:
    if shape == "flow":
        return b"version: 2\nx: " + b"[" * depth + b"[" + b", ".join([b"a"] * width) + b"]" + b"]" * depth + b"\n"
    if shape == "block":
        nested = b"".join(b"  " * i + b"a:\n" for i in range(depth))
        return b"version: 2\n" + nested + b"".join(b"  " * depth + b"k%d: v\n" % i for i in range(width))
    if shape == "compact":
        return b"version: 2\nx:\n" + b"- " * depth + b"x\n" + b"- y\n" * width
    return b"version: 2\nx:\n" + b"".join(b"  " * i + b"-\n" for i in range(depth)) + b"  " * depth + b"- a\n" * width


def _within_bounds(read, data: bytes) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    start = time.process_time()
    try:
        read(data)
    except ConfigDriveError as exc:
        assert "\n" not in str(exc)
    assert time.process_time() - start < CPU_BOUND
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - before < RSS_BOUND


def _drive_reads(kind_file: str):
    def read(data: bytes):
        tree = build_tree(Content(meta_data={"uuid": bombs.UUID}))
        for path in [p for p in tree if p.endswith("/" + kind_file)] or [f"openstack/latest/{kind_file}"]:
            tree[path] = data
        drive = Drive("drive", "directory", "config-2", tree)
        validate_drive(drive)
        drive.summary()
    return read


JSON_READERS = {
    "parse_json": lambda data: parse_json(data, "doc"),
    "parse_checked meta_data": lambda data: parse_checked("meta_data", data, "doc"),
    "parse_checked network_data": lambda data: parse_checked("network_data", data, "doc"),
    "validate_bytes vendor_data": lambda data: validate_bytes("vendor_data", data, "doc"),
    "ironic": lambda data: Content.from_ironic(parse_json(b'{"meta_data": ' + data + b"}", "doc"), "doc"),
    "drive meta_data.json": _drive_reads("meta_data.json"),
    "drive network_data.json": _drive_reads("network_data.json"),
}
YAML_READERS = {
    "parse_network_config": lambda data: parse_network_config(data, "network-config"),
    "seed network-config": lambda data: seed_problems({"meta-data": b"instance-id: i\n", "user-data": b"",
                                                       "network-config": data}, "cidata"),
    "seed meta-data": lambda data: (seed_problems({"meta-data": data, "user-data": b""}, "cidata"),
                                    summary_fields({"meta-data": data, "user-data": b""})),
}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(reader=st.sampled_from(sorted(JSON_READERS)),
       shape=st.sampled_from(["empty-objects", "empty-arrays", "numbers", "strings", "keys"]),
       depth=st.one_of(st.integers(0, 70), st.integers(0, 400_000)), width=st.integers(0, 1_000_000))
def test_json_bombs_are_refused_or_read_within_bounds(reader, shape, depth, width):
    _within_bounds(JSON_READERS[reader], _json_bomb(shape, depth, width))


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(reader=st.sampled_from(sorted(YAML_READERS)), shape=st.sampled_from(["flow", "block", "compact", "indented"]),
       depth=st.one_of(st.integers(0, 70), st.integers(0, 40_000)), width=st.integers(0, 400_000))
def test_yaml_bombs_are_refused_or_read_within_bounds(reader, shape, depth, width):
    data = _yaml_bomb(shape, min(depth, 2_000) if shape in ("block", "indented") else depth, width)
    _within_bounds(YAML_READERS[reader], data)
