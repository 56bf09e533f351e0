"""A strict parser of the Prometheus text exposition format 0.0.4, for the
tests of /metrics (tests/e2e/test_demo.py,
tests/integration/test_node_proxy_ops.py): "it parses" must mean a
Prometheus server would take it, so this refuses more than a lenient
scraper would."""

import re


class PrometheusError(ValueError):
    pass


METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
# The sample names of a family of each type, as suffixes of the family's
# name. In format 0.0.4 a counter's TYPE line names its samples exactly
# (http_requests_total); the _total suffix is a naming convention, checked
# apart from the parser.
SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count")}


def _parse_value(text, where):
    if text in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)", text):
        raise PrometheusError("%s: bad value %r" % (where, text))
    return float(text)


def _parse_labels(text, pos, where):
    """Parses '{a="x",b="y"}' from text[pos] == '{'. Returns (dict, end)."""
    labels = {}
    pos += 1
    while True:
        if pos < len(text) and text[pos] == "}":
            return labels, pos + 1
        m = LABEL_NAME.match(text, pos)
        if not m:
            raise PrometheusError("%s: bad label name at column %d" % (where, pos + 1))
        name = m.group(0)
        if name.startswith("__"):
            raise PrometheusError("%s: reserved label name %r" % (where, name))
        if name in labels:
            raise PrometheusError("%s: label %r given twice" % (where, name))
        pos = m.end()
        if text[pos:pos + 2] != '="':
            raise PrometheusError("%s: expected =\" after label %r" % (where, name))
        pos += 2
        value = []
        while True:
            if pos >= len(text):
                raise PrometheusError("%s: unterminated value of label %r" % (where, name))
            c = text[pos]
            if c == "\\":
                esc = text[pos + 1:pos + 2]
                if esc not in ("\\", '"', "n"):
                    raise PrometheusError("%s: bad escape \\%s in label %r" % (where, esc, name))
                value.append("\n" if esc == "n" else esc)
                pos += 2
            elif c == '"':
                pos += 1
                break
            else:
                value.append(c)
                pos += 1
        labels[name] = "".join(value)
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] != "}":
            raise PrometheusError("%s: expected , or } after label %r" % (where, name))


def parse_prometheus(text):
    """Parses a text exposition (format 0.0.4) strictly. Returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}.
    Raises PrometheusError on anything a Prometheus server would refuse or
    that the format forbids: bad names or escapes, a family's metadata
    after its samples or twice, samples of a family split by another
    family, a repeated label set, a negative counter, a missing final
    newline. A sample whose name fits no declared family is untyped."""
    if not text.endswith("\n"):
        raise PrometheusError("the exposition does not end with a newline")
    families = {}
    order = []        # families in the order their lines appear
    closed = set()    # families whose block has ended

    def family_of(sample_name):
        for fam in families.values():
            for suffix in SUFFIXES[fam["type"]]:
                if sample_name == fam["name"] + suffix:
                    return fam
        return None

    def enter(name, where):
        if order and order[-1] != name:
            closed.add(order[-1])
        if name in closed:
            raise PrometheusError("%s: lines of family %r are not together" % (where, name))
        if not order or order[-1] != name:
            order.append(name)

    def new_family(name):
        return families.setdefault(name, {"name": name, "type": "untyped", "help": None,
                                          "typed": False, "samples": [], "label_sets": set()})

    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d" % number
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 3 or not METRIC_NAME.fullmatch(parts[2]):
                    raise PrometheusError("%s: bad metric name in %s" % (where, parts[1]))
                name = parts[2]
                enter(name, where)
                fam = new_family(name)
                if fam["samples"]:
                    raise PrometheusError("%s: %s of %r after its samples" % (where, parts[1], name))
                if parts[1] == "HELP":
                    if fam["help"] is not None:
                        raise PrometheusError("%s: second HELP for %r" % (where, name))
                    help_text = parts[3] if len(parts) > 3 else ""
                    if re.search(r"\\[^\\n]", help_text.replace("\\\\", "")):
                        raise PrometheusError("%s: bad escape in HELP of %r" % (where, name))
                    fam["help"] = help_text
                else:
                    if fam["typed"]:
                        raise PrometheusError("%s: second TYPE for %r" % (where, name))
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise PrometheusError("%s: bad TYPE line for %r" % (where, name))
                    fam["type"], fam["typed"] = parts[3], True
            continue  # any other comment
        m = METRIC_NAME.match(line)
        if not m:
            raise PrometheusError("%s: bad metric name" % where)
        sample_name, pos = m.group(0), m.end()
        labels = {}
        if line[pos:pos + 1] == "{":
            labels, pos = _parse_labels(line, pos, where)
        rest = line[pos:]
        if not rest.startswith(" "):
            raise PrometheusError("%s: expected a space before the value" % where)
        fields = rest.strip(" ").split(" ")
        if len(fields) not in (1, 2):
            raise PrometheusError("%s: expected a value and an optional timestamp" % where)
        value = _parse_value(fields[0], where)
        if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
            raise PrometheusError("%s: bad timestamp %r" % (where, fields[1]))
        fam = family_of(sample_name)
        if fam is None:
            fam = new_family(sample_name)  # an untyped sample on its own
        enter(fam["name"], where)
        key = (sample_name, tuple(sorted(labels.items())))
        if key in fam["label_sets"]:
            raise PrometheusError("%s: duplicate sample %s%s" % (where, sample_name, labels))
        if fam["type"] == "counter" and value < 0:
            raise PrometheusError("%s: counter %s is negative" % (where, sample_name))
        fam["label_sets"].add(key)
        fam["samples"].append((sample_name, labels, value))
    return families


def sample(families, name, **labels):
    """The value of the one sample `name` with exactly `labels`."""
    for fam in families.values():
        for sname, slabels, value in fam["samples"]:
            if sname == name and slabels == labels:
                return value
    raise KeyError("%s%s" % (name, labels))
