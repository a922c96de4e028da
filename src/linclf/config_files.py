"""Config files: the packaged configs, finding a config by name, and reading a YAML file safely
(a size limit, no alias bombs, no key written twice), every problem one line."""
import math
from pathlib import Path

import yaml

from linclf.util.errors import LinclfError, short_repr
from linclf.util.files import read_text

# A YAML document may name at most this many values once its aliases (*name) are expanded; a config
# needs a few dozen. Aliases nested in aliases ("billion laughs") expand exponentially.
MAX_YAML_VALUES = 10_000
MAX_YAML_BYTES = 1_000_000  # a config or grid file is a few hundred bytes


class _AliasBomb(yaml.YAMLError):
    """The document's aliases expand to more than MAX_YAML_VALUES values."""


def _expanded_size(node, sizes, open_nodes):
    """How many values node stands for once every alias is expanded (capped just above the budget);
    sizes memoizes shared (aliased) nodes, so the work is the size of the text, not of the expansion."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:  # an alias inside its own anchor: expands forever
        return math.inf
    open_nodes.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]  # keys and values
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_YAML_VALUES:
            break
    open_nodes.discard(key)
    sizes[key] = total
    return total


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past MAX_YAML_VALUES values,
    before anything is constructed from it."""

    def construct_document(self, node):
        if _expanded_size(node, {}, set()) > MAX_YAML_VALUES:
            raise _AliasBomb()
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        """A key written twice is refused: YAML would keep the last one silently."""
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {short_repr(key)} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


PACKAGED = Path(__file__).parent / "configs"  # the configs that ship with linclf (grid, quick, kmeans, ...)


def find(name):
    """The config file `name` stands for: a path that exists and is no folder, else a packaged
    config of that name (with or without .yaml: "grid", "kmeans"); a path that is neither is
    returned as is (reading it then says it is missing, with the packaged names). A folder named
    like a packaged config (./grid/) is no config: the packaged one is read."""
    path = Path(name)
    if (path.exists() and not path.is_dir()) or len(path.parts) != 1:
        return path
    packaged = PACKAGED / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return packaged if packaged.is_file() else path


def which_note(name, path):
    """A line saying which config a bare name was read from (`path`, what find(name) gave) when
    a file here and a packaged config share that name, else None: "quick" reads the packaged
    quick.yaml, "quick.yaml" the one here."""
    name = Path(name)
    if len(name.parts) != 1:
        return None
    stem = name.stem if name.suffix == ".yaml" else name.name
    packaged = PACKAGED / f"{stem}.yaml"
    if not packaged.is_file():
        return None
    if Path(path) == packaged:
        local = [p for p in (Path(stem), Path(f"{stem}.yaml")) if p.is_file()]
        return (f"note: reading the packaged config {packaged}, not ./{local[0]}; give ./{local[0]} to read "
                f"yours") if local else None
    return f"note: reading ./{path}, not the packaged config '{stem}' ({packaged})"


def load_yaml(path):
    """Read a YAML file into a dict; a missing file, bad YAML or a document whose aliases expand to
    more than MAX_YAML_VALUES values is a one-line LinclfError."""
    path = Path(path)
    try:
        if not path.is_file():
            if not path.exists():
                raise FileNotFoundError
            raise LinclfError(f"config file {path} is not a regular file")
        if path.stat().st_size > MAX_YAML_BYTES:
            raise LinclfError(f"config file {path} is {path.stat().st_size:,} bytes; a config is at most "
                              f"{MAX_YAML_BYTES:,}")
        text = read_text(path)
    except FileNotFoundError:
        packaged = ", ".join(sorted(p.stem for p in PACKAGED.glob("*.yaml")))
        raise LinclfError(f"config file not found: {path} (packaged configs, usable by name: {packaged})") from None
    except UnicodeDecodeError as error:
        raise LinclfError(f"config file {path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise LinclfError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except _AliasBomb:
        raise LinclfError(f"{path}: YAML aliases expand to more than {MAX_YAML_VALUES} values; "
                          f"write the values out instead of nesting aliases (*name)") from None
    except RecursionError:
        raise LinclfError(f"{path}: bad YAML: nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits, say
        raise LinclfError(f"{path}: bad YAML: {str(error)[:100]}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise LinclfError(f"{path}: bad YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LinclfError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data
